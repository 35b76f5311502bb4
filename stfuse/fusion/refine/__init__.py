"""Learned refinement of a physics prior: a small residual CNN with a heteroscedastic head.

A prior (STARFM-family, :mod:`stfuse.fusion.prior`) predicts the fine image of a target day from
a pair (fine + coarse image of one day) and the coarse image of the target day. The
:class:`Refiner` looks at the prior's prediction together with the inputs and returns

- a **correction** added to the prior's mean, high-passed (its local 9 x 9 mean removed) so
  that the refiner redistributes reflectance within about a coarse pixel but leaves the
  prior's coarse-scale values, which the coarse image anchors, alone; and
- a per-pixel **log-variance** relative to the prior's variance (aleatoric uncertainty,
  trained with a Gaussian NLL),

with channel dropout (``Dropout2d``) usable at inference for Monte Carlo sampling (epistemic
uncertainty)::

    mean     = (1/N) sum_n mu_n                      (N = mc_samples forward passes)
    variance = s * [ (1/N) sum_n exp(logv_n)  +  Var_n(mu_n) ]
                     ^ aleatoric               ^ epistemic
    (s: the model's post-hoc variance scale, see stfuse.fusion.uncertainty.fit_variance_scale)

**Band agnostic.** The network sees one band at a time with shared weights: all inputs of
band ``b`` are standardised by the mean ``m_b`` of that band in the pair's fine image and
the larger of the standard deviations of the fine image and the target coarse image
(``s_b`` clamped to [0.005, 0.5]; channels clipped to +-10), outputs are de-standardised
the same way. Spectral context enters through a DeepSets-style mean over bands of hidden
features, so one set of weights serves 1..N bands in any order (3-band green/red/NIR
benchmarks and 6-band scenes alike). The per-band input channels (:data:`FEATURES`):
prior mean, pair fine, pair coarse, target coarse, coarse change, prior change, log prior
variance, fine detail (fine - 17x17 box mean), coarse-vs-fine residual at the pair date,
local spread of the coarse change, local regression slope of target coarse on pair coarse
(33x33, minus 1) and that slope times the fine detail, the image-wide spread of the coarse
change and of the coarse-vs-fine residual, absolute reflectance, and four validity masks.
NaN inputs are filled (prior -> fine + coarse change -> fine -> coarse target -> band mean)
and flagged in the masks; outputs are NaN where the prior is NaN.

**The hybrid** (:func:`predict_hybrid`, :func:`hybrid_arrays`; what ``stfuse predict --refine``
runs). The prior is an *ensemble* (:data:`ENSEMBLE`: Fit-FC and FSDAF) run once per pair; every
single-pair member prediction is refined, and the P x M members are combined with per-pixel
weights from the refined variances (the refiner judges which prior and which pair to trust
where). The mean keeps the priors' values (:data:`CORRECTION_WEIGHT` = 0: the correction of the
shipped weights made held-out simulated days and the real benchmark tasks worse); the variance
is that of the weighted mixture of the members with their prior variances
(``sum_k w_k (v_k + (mu_k - mu)^2)``), times a post-hoc scale per number of pairs fitted on
held-out simulated days (:func:`fit_hybrid_scales`, stored with the shipped weights). :func:`hybrid_fn` wraps it as a picklable tile function for
:func:`stfuse.output.tiling.predict_tiled` (catalog mode), with :func:`adapt_model` to adapt a model
once per scene.

**Pairs (refine).** The model refines *single-pair* predictions. With P pairs,
:func:`refine` takes one prior per pair (``prior_mean`` of shape (P, B, H, W)), refines each
with its own pair and combines the P refined Gaussians by inverse variance
(:func:`stfuse.fusion.uncertainty.combine_inverse_variance`, with an assumed error correlation,
default 0.4, the median over priors on synthetic scenes, because all members share the
target's coarse image). A single multi-pair prior (B, H, W) with P > 1 pairs is refined
once per pair and the results are averaged as an equal-weight mixture.

**Training.**

- :func:`train_synthetic` pretrains on scenes of :mod:`stfuse.sim.synth` (random land cover,
  phenology, abrupt changes, clouds) with extra MODIS-vs-Landsat effects
  (:func:`stfuse.sim.days._perturb_coarse`: biases, gains, persistent and spatially correlated coarse
  mismatch, noise), random band subsets, and priors drawn from :data:`SYNTHETIC_PRIORS`
  (STARFM, Fit-FC, FSDAF, additive) so that one set of weights serves every prior; the
  variance scale is fitted on validation scenes, overall and per prior. This makes the
  shipped weights ``stfuse/weights/refiner.pt`` (:func:`make_shipped_weights`,
  ``make weights``).
- :func:`train_self_supervised` adapts a model to one scene using only its pairs: with
  pairs at dates A and B the prior predicts B from A (and A from B) and the refiner learns
  from the fine image of B (of A); random 48x48 patches with flips/rotations, early stopping
  on held-out tiles (the initial model counts, so it never ends worse there), and a variance
  scale fitted on the held-out tiles (one per member prior when given several). With one pair there is nothing to learn across time:
  the model is returned unchanged (the shipped weights).
- :func:`train_supervised` trains on explicit (prior, inputs, target) examples.
- :func:`predict_hybrid` does it all for a scene: optional self-supervision (P >= 2, with
  every member prior), then the ensemble hybrid above.
- :func:`make_shipped_weights` = :func:`train_synthetic` + :func:`add_hybrid_calibration`.

Every trainer is bit-for-bit reproducible on CPU for a given seed (deterministic algorithms,
a fixed intra-op thread count :data:`THREADS`, seeded generators).

**Modules** (everything public is importable from ``stfuse.fusion.refine``):

- :mod:`.members`: the stand-in prior, prior names -> functions, the hybrid's :data:`ENSEMBLE`;
- :mod:`.network`: input features, the :class:`Refiner` CNN, :func:`refine` / :func:`mc_predict`,
  checkpoints;
- :mod:`.training`: the training loop, :func:`train_self_supervised`, :func:`train_synthetic` and
  the simulated days that calibrate the variance;
- :mod:`.hybrid`: :func:`hybrid_arrays`, the variance scale (fixed or following the scene),
  :class:`HybridFn` for tiles, :func:`predict_hybrid`;
- :mod:`.shipped`: :func:`make_shipped_weights` with its variance calibration
  (``make weights``);
- :mod:`.series`: ``--refine scene`` on a series: the weights of Fit-FC, FSDAF, ``fine + coarse
  change`` and the hybrid, and the variance scale, fitted on the scene's own dates
  (:func:`~stfuse.fusion.refine.series.fit_series`).
"""

from __future__ import annotations

from stfuse.fusion.refine.hybrid import (
    MIN_SCENE_PIXELS,
    SCENE_WINDOW,
    HybridFn,
    adapt_model,
    calibration_record,
    central_window,
    hybrid_arrays,
    hybrid_fn,
    hybrid_halo,
    hybrid_name,
    hybrid_variance_scale,
    predict_hybrid,
    scene_factor,
    scene_variance_scale,
    uses_scene_calibration,
)
from stfuse.fusion.refine.members import (
    CORRECTION_WEIGHT,
    ENSEMBLE,
    PriorFn,
    additive_prior,
    resolve_members,
    resolve_prior,
)
from stfuse.fusion.refine.network import (
    DEFAULT_WEIGHTS,
    FEATURES,
    Features,
    Refiner,
    band_stats,
    build_features,
    halo,
    load_checkpoint,
    load_model,
    mc_predict,
    refine,
    save_checkpoint,
)
from stfuse.fusion.refine.shipped import (
    HYBRID_CALIBRATION,
    add_hybrid_calibration,
    fit_hybrid_scales,
    make_shipped_weights,
)
from stfuse.fusion.refine.training import (
    deterministic,
    train_self_supervised,
    train_supervised,
    train_synthetic,
)
from stfuse.sim.days import (  # the simulated days, re-exported here where the refiner's users look
    SimulatedDay,
    _synthetic_scene,  # noqa: F401  (named in the shipped weights' metadata)
    calibration_days,
    simulated_days,
)

__all__ = [
    "adapt_model",
    "add_hybrid_calibration",
    "additive_prior",
    "band_stats",
    "build_features",
    "calibration_days",
    "calibration_record",
    "central_window",
    "CORRECTION_WEIGHT",
    "DEFAULT_WEIGHTS",
    "deterministic",
    "ENSEMBLE",
    "FEATURES",
    "Features",
    "fit_hybrid_scales",
    "halo",
    "hybrid_arrays",
    "HYBRID_CALIBRATION",
    "hybrid_fn",
    "hybrid_halo",
    "hybrid_name",
    "hybrid_variance_scale",
    "HybridFn",
    "load_checkpoint",
    "load_model",
    "make_shipped_weights",
    "mc_predict",
    "MIN_SCENE_PIXELS",
    "predict_hybrid",
    "PriorFn",
    "refine",
    "Refiner",
    "resolve_members",
    "resolve_prior",
    "save_checkpoint",
    "scene_factor",
    "scene_variance_scale",
    "SCENE_WINDOW",
    "SimulatedDay",
    "simulated_days",
    "train_self_supervised",
    "train_supervised",
    "train_synthetic",
    "uses_scene_calibration",
]
