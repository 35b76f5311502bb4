"""``python -m stfuse_cli`` runs the ``stfuse`` command."""

from .main import cli

cli()
