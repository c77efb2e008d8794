"""An image from this machine's real binaries: the programs, their interpreter and libraries.

    binaries_tree(["/usr/bin/bash", "/usr/bin/python3"]) → {path: File | Symlink}
    binaries_image([...], "my.img")                     → the frozen image (bytes, and a file)
    python -m xipmodel image -o my.img /usr/bin/bash /usr/bin/python3

Each program's PT_INTERP and every DT_NEEDED library are the files ld.so opens
(ldso.map_program: DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH, ld.so.cache, the system
directories). Every path goes into the image as it is on this machine, component by
component: a symlink stays a symlink (Debian's /lib → usr/lib, python3 → python3.11,
/lib64/ld-linux-x86-64.so.2 → /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2), and what it
points to goes in too. Files keep their bytes and permission bits; owners are root and
every time is 0, so the same files give the same image.

Guests exec them with `Scenario(workload="exec:/usr/bin/bash")` on that image, e.g.
`Host(scenario, "xip", Ext2Image.open(binaries_image(["/usr/bin/bash"]))).run()` or
`python -m xipmodel compare --image my.img --program bash` (the model's exec searches
DT_RPATH, DT_RUNPATH and elf.DEFAULT_LIB_PATH of the image). The embedded Debian 12
stand-in (distro.py) stays the default image.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from typing import Final

from xipmodel.errors import FileTooLargeError, ParameterError
from xipmodel.ext2 import layout as L
from xipmodel.ext2.builder import Entry, File, Symlink, build_image, follow_links
from xipmodel.ext2.layout import fit_volume_name
from xipmodel.ldso import map_program

__all__ = ["MAX_BINARIES_BYTES", "binaries_image", "binaries_tree", "find_program"]

MAX_BINARIES_BYTES: Final = 1 << 30  # the files an image of binaries may hold in all


def find_program(name: str) -> str:
    """`name` as a path: as given if it has a slash, else found on $PATH (as a shell)."""
    if "/" in name:
        return name
    found = shutil.which(name)
    if found is None:
        raise ParameterError(f"binaries_tree: program {name!r} is not on PATH")
    return found


def binaries_tree(programs: Sequence[str]) -> dict[str, Entry]:
    """The build_image mapping of `programs` with everything ld.so loads for them."""
    if not programs:
        raise ParameterError("binaries_tree: no program given")
    tree: dict[str, Entry] = {}
    total = [0]
    for name in programs:
        program = os.path.abspath(find_program(name))
        if not os.path.isfile(program):
            raise ParameterError(f"binaries_tree: {program} is not a regular file")
        for path in map_program(program).paths:
            _add(tree, os.path.abspath(path), total)
    return tree


def _add(tree: dict[str, Entry], path: str, total: list[int]) -> None:
    """Put `path` in `tree` as namei walks it: each symlink on the way, then the file."""

    def readlink(here: str) -> str | None:
        here = os.path.normpath(here)
        if not stat.S_ISLNK(os.lstat(here).st_mode):
            return None
        target = os.readlink(here)
        tree[here] = Symlink(target)
        return target

    real = follow_links(path, readlink)
    if real is None:
        raise ParameterError(f"binaries_tree: {path}: more than {L.MAXSYMLINKS} symlinks "
                             f"(a loop?)")
    real = os.path.normpath(real)
    st = os.stat(real)
    if stat.S_ISDIR(st.st_mode):
        return  # a directory: nothing to add
    if not stat.S_ISREG(st.st_mode):
        raise ParameterError(f"binaries_tree: {real} (on the way to {path}) is not a "
                             f"directory or a regular file")
    if real not in tree:
        total[0] += st.st_size
        if total[0] > MAX_BINARIES_BYTES:
            raise FileTooLargeError(f"binaries_tree: the files add up to more than "
                                    f"{MAX_BINARIES_BYTES} bytes (at {real})", real)
        with open(real, "rb") as f:
            tree[real] = File(f.read(), mode=stat.S_IMODE(st.st_mode))


def binaries_image(programs: Sequence[str], target: str | os.PathLike[str] | None = None,
                   volume_name: str = "xipmodel-host") -> bytes:
    """Populate an image with `programs` and what they load, freeze it; also write `target`."""
    return build_image(binaries_tree(programs), target, volume_name=fit_volume_name(volume_name),
                       timestamp=0)
