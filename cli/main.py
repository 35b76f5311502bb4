"""Root ``stfuse`` click group: maps library errors to one-line messages and exit codes."""

from __future__ import annotations

import logging
import sys

import click

from stfuse import __version__
from stfuse.errors import StfuseError


class StfuseGroup(click.Group):
    """Turns :class:`stfuse.errors.StfuseError` into ``Error: ...`` and its exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except StfuseError as err:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {err}", err=True)
            sys.exit(err.exit_code)


@click.group(cls=StfuseGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stfuse")
@click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """stfuse: daily 30 m surface reflectance from Landsat + MODIS, with uncertainty.

    Run `stfuse predict -o out/` with no other arguments to fuse the bundled
    sample_scenes offline. `stfuse COMMAND --help` explains each command.
    """
    ctx.obj = {"debug": debug}
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


from . import evaluate, predict, region, sample  # noqa: E402

cli.add_command(predict.predict)
cli.add_command(sample.sample)
cli.add_command(evaluate.evaluate)
cli.add_command(region.region)
