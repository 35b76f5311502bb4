"""Progress display: a rich bar on terminals, plain log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

import click


@contextlib.contextmanager
def progress_reporter(description: str, *, quiet: bool = False) -> Iterator[Callable[[int, int, str], None] | None]:
    """Yield a ``progress(done, total, label)`` callback (or None when quiet)."""
    if quiet:
        yield None
        return
    if sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(description, total=None)

            def update(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total, description=f"{description} {label}")

            yield update
        return

    printed = {"done": 0}

    def log_line(done: float, total: int, label: str) -> None:
        # plain logs: one line per finished unit, not per tile, and not twice when the
        # unit's last tile and the unit itself both report it
        if float(done).is_integer() and int(done) > printed["done"]:
            printed["done"] = int(done)
            click.echo(f"[{int(done)}/{total}] {description} {label}", err=True)

    yield log_line
