"""Command-line interface of stfuse (a thin click layer over :mod:`stfuse`)."""
