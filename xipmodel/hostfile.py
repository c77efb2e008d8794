"""Opening a file of this machine only if it is a regular file (images, traces, ELF files).

A FIFO with no writer blocks open() forever and a device may never end, so a path is
opened without blocking, checked with fstat (what is checked is what was opened), and
only then read. Each caller refuses in its own words, with its own exception.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["file_type", "open_regular"]


def open_regular(path: str | os.PathLike[str],
                 refuse: Callable[[int], Exception]) -> BinaryIO:
    """`path` opened for reading if it is a regular file; else raises refuse(st_mode)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refuse(mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_type(mode: int) -> str:
    """What a file that is not a regular file is, in words (for messages)."""
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return f"file of mode 0o{mode:o}"
