"""xipmodel: execute-in-place (XIP) versus the page cache, as a teachable model.

Many virtual machines run the same programs. Either every guest reads each
binary into its own page cache, or the binaries sit once in a frozen ext2
image in shared host memory and every guest executes them in place.

The model depends on numpy only; the widgets live in ``xipmodel.lab``.
"""

from __future__ import annotations

from xipmodel.errors import Ext2Error, ParameterError, XipModelError

__version__ = "0.1.0"

__all__ = ["Ext2Error", "ParameterError", "XipModelError", "__version__"]
