"""This machine's own files in a trace's image, where they are the files the trace recorded.

By default a trace's files are seeded stand-ins of their recorded sizes: the same bytes,
hence the same numbers, on every machine. With `Scenario(real_files=True)` (CLI:
`compare --trace X --real-files`) each file is read from this machine instead, when it
is there as the run saw it, so XIP shares the real bytes and KSM sees real contents
(equal pages of two libraries merge, Ext2Image.equal_blocks). Then the numbers depend
on this machine (and, in a sweep on a cluster, on each worker's files).

    the file at the recorded path                  in the image
    a regular file of the recorded size            its bytes (at most that many read)
    missing, another size, not a regular file      a seeded stand-in, and why
    (directory, FIFO, device, ...), unreadable,
    or under /proc, /sys or /dev (never opened)

The recorded path is followed through this machine's symlinks (a library's soname link),
component by component, never into /proc, /sys or /dev (not even /proc/self/root/...);
only the file it ends at is opened, read-only, after its type and size were checked. The
image is built from copies: the machine's files are never written, nor the frozen image.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, Final

from xipmodel.hostfile import file_type

__all__ = ["SPECIAL_DIRS", "FileReport", "FileSource", "read_host_file"]

# Kernel filesystems whose "files" are not files: never opened, even through a symlink.
SPECIAL_DIRS: Final = ("/proc", "/sys", "/dev")
SHOWN_STAND_INS: Final = 8  # stand-ins FileReport.summary names (the rest are counted)


@dataclass(frozen=True)
class FileSource:
    """Where one file of a trace's image comes from: this machine (`why` empty) or a seed."""

    path: str  # where the image holds it
    recorded: str  # the path the trace recorded (the file of this machine read)
    size: int
    why: str = ""  # why it is a stand-in ("" : this machine's own bytes)

    @property
    def real(self) -> bool:
        return not self.why


@dataclass(frozen=True)
class FileReport:
    """Which of an image's trace files are this machine's own and which are stand-ins."""

    files: tuple[FileSource, ...]

    @property
    def real(self) -> list[str]:
        return [f.path for f in self.files if f.real]

    @property
    def stand_ins(self) -> dict[str, str]:
        """Each stand-in's image path, and why (naming the file read, if it moved aside)."""
        return {f.path: f.why if f.path == f.recorded else f"{f.recorded}: {f.why}"
                for f in self.files if not f.real}

    def summary(self) -> str:
        """"12 of 18 files are this machine's own; 6 stand-ins: /a (missing), ..."."""
        stand_ins = [f"{path} ({why})" for path, why in self.stand_ins.items()]
        head = f"{len(self.real)} of {len(self.files)} files are this machine's own"
        if not stand_ins:
            return head
        more = len(stand_ins) - SHOWN_STAND_INS
        shown = ", ".join(stand_ins[:SHOWN_STAND_INS]) + (f", and {more} more" if more > 0
                                                           else "")
        return f"{head}; {len(stand_ins)} stand-in{'s' if len(stand_ins) != 1 else ''}: {shown}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the real files, the stand-ins with why, and the summary."""
        return {"real": self.real, "stand_ins": self.stand_ins, "summary": self.summary()}


def read_host_file(path: str, size: int) -> tuple[bytes | None, str]:
    """This machine's file `path` if it is a regular file of exactly `size` bytes.

    Returns (its bytes, "") or (None, why not), never raises for the file's sake: the
    caller puts a stand-in there. At most `size` bytes are read; nothing under
    SPECIAL_DIRS is opened, and nothing but a regular file (a FIFO would block, a
    device could act on being opened).
    """
    real, why = _resolve(path)
    if real is None:
        return None, why
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):
            return None, f"a {file_type(st.st_mode)} here, not a regular file"
        if st.st_size != size:
            return None, f"{st.st_size} bytes here, {size} recorded"
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, "missing here"
    except OSError as exc:
        return None, f"unreadable here: {exc.strerror or exc}"
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
            return None, "replaced while read"
        chunks: list[bytes] = []
        left = size
        while left:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                return None, "shorter than its size while read"
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), ""
    except OSError as exc:
        return None, f"unreadable here: {exc.strerror or exc}"
    finally:
        os.close(fd)


def _resolve(path: str) -> tuple[str | None, str]:
    """`path` with this machine's symlinks followed (namei's walk), never into SPECIAL_DIRS:
    (the path, "") or (None, why). A link through /proc (/proc/self/root/...) is refused
    where it enters /proc, before anything there is read."""
    from xipmodel.ext2.builder import follow_links

    entered: list[str] = []

    def readlink(here: str) -> str | None:
        here = os.path.normpath(here)  # ".." of a resolved directory: its real parent
        top = next((d for d in SPECIAL_DIRS if f"{here}/".startswith(f"{d}/")), None)
        if top is not None:
            entered.append(top)
            return None
        try:
            return os.readlink(here)
        except OSError:
            return None  # not a link (or not there: the stat that follows says so)

    resolved = follow_links(path, readlink)
    if entered:
        return None, f"under {entered[0]}: not read"
    if resolved is None:
        return None, "a loop of symlinks here"
    return os.path.normpath(resolved), ""



