"""``stfuse train``: pretrain the refiner on simulated scenes, or adapt it to your pairs."""

from __future__ import annotations

from pathlib import Path

import click

from .options import overwrite_opt, quiet_opt
from .progress import progress_reporter


@click.command()
@click.option("--synthetic", is_flag=True, help="Pretrain on simulated scenes (how the shipped weights are made).")
@click.option("--pair", "pairs", nargs=2, multiple=True, type=click.Path(path_type=Path), metavar="FINE COARSE",
              help="Adapt to your data: a fine/coarse pair on one grid (give 2 or more).")
@click.option("--method", default="ensemble", show_default=True,
              help="Prior(s) whose predictions the refiner learns to correct and weigh: ensemble (Fit-FC + FSDAF), "
                   "or one of starfm, fsdaf, fitfc.")
@click.option("--init", type=click.Path(dir_okay=False, path_type=Path), help="Start from this checkpoint (default: shipped weights).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed; the same seed gives the same weights on CPU.")
@click.option("--steps", type=int, help="Training steps (default: the trainer's).")
@click.option("--bands", callback=lambda ctx, param, value: value.split(",") if value else None,
              help="--pair: the bands to train on (names in the files, comma-separated), or the names of files without band names.")
@click.option("--fine-qa", "fine_qa", multiple=True, type=click.Path(dir_okay=False, path_type=Path), metavar="QA",
              help="--pair: the QA_PIXEL file of each fine file, in --pair order (default: the one beside it).")
@click.option("--no-qa", "no_qa", is_flag=True, help="--pair: use no QA file (by default the QA file beside each input masks it).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Checkpoint to write (.pt, with a .json beside it).")
@overwrite_opt
@quiet_opt
def train(synthetic: bool, pairs, method: str, init: Path | None, seed: int, steps: int | None, bands: list[str] | None,
          fine_qa: tuple[Path, ...], no_qa: bool, output: Path, overwrite: bool, quiet: bool) -> None:
    """Train the CNN refiner and write a checkpoint with its metadata.

    Progress (scenes or examples, steps with the training and validation loss, variance
    scales) goes to stderr: a bar on a terminal, else a line at most every 10 s; -q: none.

    \b
      stfuse train --synthetic --seed 0 -o refiner.pt          # = make weights
      stfuse train --pair L1.tif M1.tif --pair L2.tif M2.tif -o mine.pt
    """
    from stfuse.api import train_files
    from stfuse.errors import InputError, OutputError
    from stfuse.fusion.refine import make_shipped_weights

    if synthetic == bool(pairs):
        raise InputError("give either --synthetic or at least two --pair FINE COARSE")
    if synthetic and (bands or fine_qa or no_qa):
        raise InputError("--bands, --fine-qa and --no-qa apply to --pair training, not --synthetic")
    if synthetic:
        if output.exists() and not overwrite:
            raise OutputError(f"{output} already exists; pass --overwrite to replace it")
        with progress_reporter("pretraining:", quiet=quiet, every=10.0) as progress:
            path = make_shipped_weights(output, seed=seed, progress=progress, **({"steps": steps} if steps else {}))
    else:
        with progress_reporter("adapting to the pairs:", quiet=quiet, every=10.0) as progress:
            path = train_files(list(pairs), output, method=method, init=init, seed=seed, steps=steps, overwrite=overwrite,
                               progress=progress, bands=bands, qa=not no_qa, fine_qa=list(fine_qa) or None)
    click.echo(f"wrote {path}")
