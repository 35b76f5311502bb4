"""``python -m stfuse.fusion.refine``: regenerate the shipped weights (``make weights``)."""

from stfuse.fusion.refine.shipped import _main

_main()
