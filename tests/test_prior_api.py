"""The prior dispatcher: method lookup, the documented `auto` rule, halos."""

import numpy as np
import pytest

from stfuse.errors import InputError
from stfuse.fusion.prior import changed_fraction, choose_method, halo, method_for_day, method_function, predict


def test_auto_rule_by_pairs_and_change():
    coarse = np.zeros((1, 2, 10, 10), np.float32)
    target = np.zeros((2, 10, 10), np.float32)
    assert changed_fraction(coarse, target) == 0.0 and choose_method(1, 0.0) == "blend"
    target[1, :3] = 0.3  # 30 % of pixels change by 0.3 in one band
    assert changed_fraction(coarse, target) == pytest.approx(0.3)
    assert choose_method(1, changed_fraction(coarse, target)) == "blend"  # the blend for any change and any pairs
    assert choose_method(2) == "blend"
    # the closest pair counts: a second pair equal to the target means no change
    assert changed_fraction(np.concatenate([coarse, target[None]]), target) == 0.0


def test_auto_equals_the_chosen_method():
    rng = np.random.default_rng(0)
    fine = (0.1 + 0.2 * rng.random((1, 2, 48, 48))).astype(np.float32)
    coarse = fine + 0.01
    target = coarse[0] + 0.02
    auto = predict(fine, coarse, target, method="auto")
    chosen = predict(fine, coarse, target, method="blend")
    np.testing.assert_array_equal(auto[0], chosen[0])


def test_unknown_method_and_halos():
    with pytest.raises(InputError, match="unknown method 'magic'"):
        method_function("magic")
    assert halo("starfm") == 15 and halo("starfm", window=11) == 5
    assert halo("auto") == halo("blend") == max(halo("fsdaf"), halo("fitfc"))


def test_method_for_day_prior_and_hybrid():
    assert method_for_day("auto", 1) == "blend" and method_for_day("auto", 2) == "blend"
    assert method_for_day("estarfm", 2) == "estarfm" and method_for_day("estarfm", 1) == "starfm"
    assert method_for_day("starfm", 1) == "starfm"
    assert method_for_day("auto", 1, hybrid=True) == "ensemble" == method_for_day("estarfm", 2, hybrid=True)
    assert method_for_day("fitfc", 2, hybrid=True) == "fitfc"
