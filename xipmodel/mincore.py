"""Ask the running kernel which pages of a file its page cache holds: mincore(2), cachestat(2).

The primitives kernelcheck (the model against this kernel) and the recorder (a
recording's own ground truth) share::

    resident(libc, fd, pages)   the cached pages: mincore on a shared read-only
                                mapping that touches nothing
    settled(...)                the same, once in-flight readahead has landed
    evicted(libc, fd)           pages reclaim took from the file (cachestat's
                                nr_evicted, Linux 6.5+; None before)
    file_residency(path)        all three for one file, as plain values

What cannot be asked here raises KernelCheckError (one line).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time
from typing import Final

from xipmodel.errors import XipModelError
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

__all__ = [
    "MAP_PRIVATE",
    "MAP_SHARED",
    "PROT_EXEC",
    "PROT_READ",
    "KernelCheckError",
    "evicted",
    "file_residency",
    "libc",
    "mmap_file",
    "resident",
    "settled",
]

PROT_READ, PROT_EXEC = 0x1, 0x4
MAP_SHARED, MAP_PRIVATE = 0x01, 0x02
_MAP_FAILED: Final = ctypes.c_void_p(-1).value


class KernelCheckError(XipModelError, OSError):
    """The kernel cannot be asked here (no mincore, no readahead, no permission, ...)."""


def libc() -> ctypes.CDLL:
    """The C library with mmap, munmap, mincore and madvise typed; refuses one without mincore."""
    name = ctypes.util.find_library("c")
    lib = ctypes.CDLL(name, use_errno=True)
    if not hasattr(lib, "mincore"):
        raise KernelCheckError("this C library has no mincore(2)")
    lib.mmap.restype = ctypes.c_void_p
    lib.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                         ctypes.c_int, ctypes.c_long]
    lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return lib


def mmap_file(lib: ctypes.CDLL, fd: int, pages: int, prot: int, flags: int, pgoff: int) -> int:
    """mmap(2) `pages` of the file from page `pgoff`; the address."""
    addr = lib.mmap(None, pages << PAGE_SHIFT, prot, flags, fd, pgoff << PAGE_SHIFT)
    if addr in (None, _MAP_FAILED):
        err = ctypes.get_errno()
        raise KernelCheckError(f"mmap failed: {os.strerror(err)}")
    return int(addr)


def resident(lib: ctypes.CDLL, fd: int, pages: int) -> frozenset[int]:
    """The file's pages in the page cache (mincore on a mapping that touches nothing)."""
    addr = mmap_file(lib, fd, pages, PROT_READ, MAP_SHARED, 0)
    try:
        vec = (ctypes.c_ubyte * pages)()
        if lib.mincore(ctypes.c_void_p(addr), pages << PAGE_SHIFT, vec) != 0:
            err = ctypes.get_errno()
            raise KernelCheckError(f"mincore failed: {os.strerror(err)}")
        return frozenset(i for i in range(pages) if vec[i] & 1)
    finally:
        lib.munmap(ctypes.c_void_p(addr), pages << PAGE_SHIFT)


class _CacheStat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in
                ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


class _CacheStatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


_SYS_CACHESTAT: Final = 451  # the same number on every architecture (added in 6.5)


def evicted(lib: ctypes.CDLL, fd: int) -> int | None:
    """Pages of the file evicted by reclaim (cachestat's nr_evicted); None before 6.5."""
    stat, whole = _CacheStat(), _CacheStatRange(0, 0)
    if lib.syscall(_SYS_CACHESTAT, fd, ctypes.byref(whole), ctypes.byref(stat), 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.ENOSYS, errno.EPERM):  # no cachestat, or a seccomp filter
            return None
        raise KernelCheckError(f"cachestat failed: {os.strerror(err)}")
    return int(stat.nr_evicted)


def settled(lib: ctypes.CDLL, fd: int, pages: int, quiet_s: float = 0.15,
            limit_s: float = 5.0) -> frozenset[int]:
    """Residency once in-flight readahead has landed: unchanged for `quiet_s`."""
    deadline = time.monotonic() + limit_s
    last = resident(lib, fd, pages)
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.02)
        now = resident(lib, fd, pages)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= quiet_s:
            return now
    raise KernelCheckError("the page cache did not settle within "
                           f"{limit_s:.0f} s (readahead still in flight?)")


def file_residency(path: str | os.PathLike[str]) -> dict[str, object]:
    """What this kernel's page cache holds of `path` now, as plain values.

    {"pages": the file's pages, "resident": [[start, end), ...] the cached page runs
    (mincore, once in-flight readahead has settled), "evicted": cachestat's nr_evicted,
    pages of the file reclaim took meanwhile (None before Linux 6.5): when it is not 0
    the residency lacks pages that were read}. KernelCheckError if it cannot be asked.
    """
    lib = libc()
    fd = os.open(path, os.O_RDONLY)
    try:
        pages = -(-os.fstat(fd).st_size // PAGE_SIZE)
        seen = sorted(settled(lib, fd, pages)) if pages else []
        taken = evicted(lib, fd)
    finally:
        os.close(fd)
    runs: list[list[int]] = []
    for page in seen:
        if runs and runs[-1][1] == page:
            runs[-1][1] = page + 1
        else:
            runs.append([page, page + 1])
    return {"pages": pages, "resident": runs, "evicted": taken}
