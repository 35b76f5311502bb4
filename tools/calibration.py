"""``make calibration``: refit the priors' variance factors (``stfuse/fusion/prior/variance_scales.json``).

    .venv/bin/python tools/calibration.py [PATH]

Bit for bit the committed file when run with the same versions (seeded, deterministic torch);
takes 10-30 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from stfuse.fusion.prior.calibration import SCALES_PATH, SETTINGS, write_scales


def main(argv: Sequence[str] | None = None) -> None:
    """Fit :func:`stfuse.fusion.prior.calibration.fit_scales` with its ``SETTINGS`` and write the JSON."""
    parser = argparse.ArgumentParser(prog="tools/calibration.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", nargs="?", default=str(SCALES_PATH), help=f"JSON to write (default {SCALES_PATH})")
    args = parser.parse_args(argv)
    from stfuse.fusion.refine import deterministic

    with deterministic(SETTINGS["seed"]):
        print(write_scales(args.path))


if __name__ == "__main__":
    main()
