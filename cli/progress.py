"""Progress display: a rich bar on terminals, plain log lines otherwise, nothing with --quiet."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator

import click


class _EchoInfo(logging.Handler):
    """Shows stfuse's INFO lines (what a long step is doing) through the progress display."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.write = write
        self.addFilter(lambda record: record.levelno == logging.INFO)  # warnings keep their usual path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write(record.getMessage())
        except Exception:  # a display problem must never stop the work
            self.handleError(record)


@contextlib.contextmanager
def _show_info(write: Callable[[str], None]) -> Iterator[None]:
    """While active, stfuse's INFO log lines are written with ``write`` (unless already shown, --debug)."""
    logger = logging.getLogger("stfuse")
    if logger.isEnabledFor(logging.INFO):  # --debug: the root handler shows them already
        yield
        return
    handler, level = _EchoInfo(write), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _root_quiet() -> bool:
    """``stfuse --quiet COMMAND``: the root group's flag."""
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_root().obj if ctx is not None else None
    return bool(obj and obj.get("quiet"))


@contextlib.contextmanager
def progress_reporter(description: str, *, quiet: bool = False, every: float = 0.0) -> Iterator[Callable[[float, int, str], None] | None]:
    """Yield a ``progress(done, total, label)`` callback (or None when quiet).

    On a terminal: a rich bar with elapsed time and ETA, updated for fractions of a unit (the
    tiles of a day, the steps of training); a new phase (``total`` changes or ``done`` goes
    back) restarts the bar and its ETA. Off a terminal: one line per finished unit, at most one
    every ``every`` seconds (the last one always). While it is active stfuse's INFO log lines
    (what a long step is doing, e.g. the hybrid's preparation) are shown too.
    """
    if quiet or _root_quiet():
        yield None
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
        # on stderr, like the plain lines: stdout stays the command's result
        with Progress(*columns, console=Console(stderr=True), transient=False) as bar, \
                _show_info(lambda text: bar.console.print(text, markup=False, highlight=False)):
            task = bar.add_task(description, total=None)

            def update(done: float, total: int, label: str) -> None:
                current = bar.tasks[0]
                text = f"{description} {label}".rstrip()
                if current.total != total or done < current.completed:  # a new phase: its own ETA
                    bar.reset(task, total=total, completed=done, description=text)
                else:
                    bar.update(task, completed=done, total=total, description=text)

            yield update
        return

    # "at": when the last line was shown; None until the first line of a phase, which is always shown
    # (a clock-based start such as 0.0 hid it for the first `every` seconds of the machine's uptime)
    state: dict = {"done": 0, "total": None, "at": None}

    def log_line(done: float, total: int, label: str) -> None:
        # plain logs: one line per finished unit, not per tile, and not twice when the
        # unit's last tile and the unit itself both report it
        if total != state["total"] or done < state["done"]:  # a new phase
            state.update(done=0, total=total, at=None)
        now = time.monotonic()
        due = state["at"] is None or now - state["at"] >= every
        if float(done).is_integer() and int(done) > state["done"] and (done >= total or due):
            state.update(done=int(done), at=now)
            click.echo(f"[{int(done)}/{total}] {description} {label}".rstrip(), err=True)

    with _show_info(lambda text: click.echo(text, err=True)):
        yield log_line
