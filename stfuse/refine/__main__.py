"""``python -m stfuse.refine``: regenerate the shipped weights (``make weights``)."""

from .shipped import _main

_main()
