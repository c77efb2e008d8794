"""The exceptions xipmodel raises for bad input.

Three kinds of failure are kept apart (see STYLE.md):

* what the *simulated machine* does (TLB miss, page fault, SIGBUS, OOM) is a
  value or an event, never an exception;
* *bad input* (a corrupt image, a missing path, a bad parameter) raises one of
  the classes below, whose message names the structure, the field and the value;
* a broken *model invariant* is a bug and fails loudly (``AssertionError`` /
  ``RuntimeError`` with ``"function: reason"``).

Each class also subclasses the matching builtin, so ``except FileNotFoundError``
works on a path missing from an image just as on a missing host file::

    XipModelError (Exception)
    ├── ParameterError (+ ValueError)               bad argument to the model
    │   ├── DataFileError                           a malformed data file (entry, field, value)
    │   │   └── TraceFileError                      a malformed page-trace .npz (member, value)
    │   └── HostFullError                           more than the simulated host's frames hold
    └── Ext2Error                                   anything wrong with an ext2 image
        ├── CorruptImageError (+ ValueError)        a structure contradicts the format
        │   └── TruncatedImageError                 the image ends before a structure does
        ├── UnsupportedFeatureError (+ ValueError)  a feature a frozen ext2 reader must refuse
        ├── Ext2FileNotFoundError (+ FileNotFoundError)
        ├── Ext2NotADirectoryError (+ NotADirectoryError)
        ├── Ext2IsADirectoryError (+ IsADirectoryError)
        ├── SymlinkLoopError (+ OSError, errno ELOOP)
        ├── NotASymlinkError (+ OSError, errno EINVAL)
        ├── NotARegularFileError (+ OSError, errno EINVAL)   a FIFO, socket or device node
        │                                           (in the image, or as the image's host path)
        ├── FileTooLargeError (+ OSError, errno EFBIG)
        └── ReadOnlyImageError (+ PermissionError)  a write to the frozen image
"""

from __future__ import annotations

import errno

__all__ = [
    "CorruptImageError",
    "DataFileError",
    "Ext2Error",
    "Ext2FileNotFoundError",
    "Ext2IsADirectoryError",
    "Ext2NotADirectoryError",
    "FileTooLargeError",
    "HostFullError",
    "NotARegularFileError",
    "NotASymlinkError",
    "ParameterError",
    "ReadOnlyImageError",
    "SymlinkLoopError",
    "TraceFileError",
    "TruncatedImageError",
    "UnsupportedFeatureError",
    "XipModelError",
]


class XipModelError(Exception):
    """Base of every exception xipmodel raises on bad input."""


class ParameterError(XipModelError, ValueError):
    """A parameter given to the model is out of range or of the wrong kind."""


class DataFileError(ParameterError):
    """A table of facts read from a data file is malformed (file, entry, field and value named)."""


class TraceFileError(DataFileError):
    """A page-trace file (.npz) is malformed: the file, the member or field and the value named.

    Raised before anything its headers claim is allocated (see workloads/trace.py).
    """


class HostFullError(ParameterError):
    """A guest cannot even boot: the simulated host has no frames left (for its EPT, or the
    struct pages of its DAX device). A run asked for more guests than the host holds."""


class Ext2Error(XipModelError):
    """Anything wrong with an ext2 image or a path looked up in it."""


class CorruptImageError(Ext2Error, ValueError):
    """An on-disk structure contradicts the ext2 format (field and value named)."""


class TruncatedImageError(CorruptImageError):
    """The image ends before a structure it describes."""


class UnsupportedFeatureError(Ext2Error, ValueError):
    """The image uses a feature (by its kernel name) a frozen ext2 reader must refuse."""


def _oserror(code: int, message: str, path: str | None) -> tuple[int, str] | tuple[int, str, str]:
    return (code, message) if path is None else (code, message, path)


class Ext2FileNotFoundError(Ext2Error, FileNotFoundError):
    """A path names nothing in the image."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.ENOENT, message, path))


class Ext2NotADirectoryError(Ext2Error, NotADirectoryError):
    """A path component that must be a directory is not one."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.ENOTDIR, message, path))


class Ext2IsADirectoryError(Ext2Error, IsADirectoryError):
    """A file operation was asked of a directory."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.EISDIR, message, path))


class SymlinkLoopError(Ext2Error, OSError):
    """Path lookup followed more symlinks than the kernel allows (MAXSYMLINKS = 40)."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.ELOOP, message, path))


class NotASymlinkError(Ext2Error, OSError):
    """readlink() of something that is not a symlink."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.EINVAL, message, path))


class NotARegularFileError(Ext2Error, OSError):
    """A file operation on a FIFO, socket or device node (valid in the image, but no data).

    Also an image path on the host that is not a regular file (a FIFO would block open(),
    a device would read without end).
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.EINVAL, message, path))


class FileTooLargeError(Ext2Error, OSError):
    """A whole-file operation on a file too large to hold in memory; read a range."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.EFBIG, message, path))


class ReadOnlyImageError(Ext2Error, PermissionError):
    """Something tried to write the frozen image."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(*_oserror(errno.EROFS, message, path))
