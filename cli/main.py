"""Root ``stfuse`` click group: maps library errors to one-line messages and exit codes."""

from __future__ import annotations

import logging
import signal
import sys
import warnings

import click

from stfuse import __version__
from stfuse.errors import StfuseError


class StfuseGroup(click.Group):
    """Turns :class:`stfuse.errors.StfuseError` into ``Error: ...`` and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread (embedded use): leave signals alone
            previous = None
        try:
            with warnings.catch_warnings():  # the filters set for this command end with it (embedded use)
                return super().invoke(ctx)
        except StfuseError as err:
            if _debug(ctx):
                raise
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)
        except (click.exceptions.Exit, click.ClickException, SystemExit, KeyboardInterrupt):
            raise
        except BrokenPipeError:  # output piped into `head`: stop quietly
            sys.stderr.close()
            sys.exit(0)
        except Exception as err:  # a bug: say so in one line, traceback with --debug
            if _debug(ctx):
                raise
            click.echo(f"Error: internal error ({type(err).__name__}: {err}); rerun with --debug and report it", err=True)
            sys.exit(1)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.obj and ctx.obj.get("debug")) or "--debug" in sys.argv


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C so temporary files are removed; finished outputs stay."""
    raise KeyboardInterrupt("terminated (SIGTERM)")


@click.group(cls=StfuseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stfuse")
@click.option("--debug", is_flag=True, help="Show full tracebacks, debug logs and other libraries' warnings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress output from any command (as each command's --quiet).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, quiet: bool) -> None:
    """stfuse: daily 30 m surface reflectance from Landsat + MODIS, with uncertainty.

    Run `stfuse predict -o out/` with no other arguments to fuse the bundled
    sample_scenes offline. `stfuse COMMAND --help` explains each command.
    """
    ctx.obj = {"debug": debug, "quiet": quiet}
    root = logging.getLogger()
    before = list(root.handlers)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not debug:
        quiet_foreign_output()
        for handler in root.handlers:  # stfuse's INFO lines go to the progress display (cli/progress.py), not here
            if handler not in before:
                handler.setLevel(logging.WARNING)


FOREIGN_WARNINGS: tuple[tuple[str, str], ...] = (
    # (message regex, why it is not the user's concern)
    (r"Dataset has no geotransform", "rasterio NotGeoreferencedWarning: odc-stac's internal scratch arrays"),
    (r"Consolidated metadata is currently not part", "zarr: stfuse writes consolidated metadata on purpose"),
    (r"(pkg_resources|setuptools)", "setuptools deprecations raised by dependencies' imports"),
)
"""Warnings of other libraries hidden from normal output (shown with --debug)."""

FOREIGN_LOGGERS: tuple[str, ...] = ("urllib3",)
"""Loggers of other libraries limited to errors unless --debug (urllib3: one WARNING line per
retry of a STAC/COG request; stfuse reports a request that finally fails itself)."""


def quiet_foreign_output() -> None:
    """Hide other libraries' warnings and retry logs that do not concern the user (not with --debug)."""
    from rasterio.errors import NotGeoreferencedWarning

    warnings.filterwarnings("ignore", category=NotGeoreferencedWarning)
    for message, _why in FOREIGN_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in FOREIGN_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


from . import evaluate, info, predict, quicklook, region, sample, search, series, train  # noqa: E402

cli.add_command(predict.predict)
cli.add_command(sample.sample)
cli.add_command(evaluate.evaluate)
cli.add_command(region.region)
cli.add_command(train.train)
cli.add_command(quicklook.quicklook)
cli.add_command(search.search)
cli.add_command(info.info)
cli.add_command(series.series)
