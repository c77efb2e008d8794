"""Page-level traces: what a program run does to memory, replayable in any guest.

A trace is the address space a run built (its mappings, each a file of the
image or anonymous memory) and the page accesses it made, in order, with
consecutive repeats of the same (page, kind) collapsed::

    maps      start        length   prot  path                          offset
              0x555555554000  0x2000  r--   /usr/bin/dash                 0x0
              0x555555556000  0x14000 r-x   /usr/bin/dash                 0x2000
              0x7ffff7dc2000  0x26000 r--   /usr/lib/x86_64-linux-gnu/libc.so.6 ...
              0x7ffffffde000  0x21000 rw-   (anonymous: [stack])
    accesses  vpn (virtual page number), kind (0 read, 1 write, 2 execute), and for
              writes the content written (0: something new; else a content id that
              equals another write's when the bytes are equal, e.g. relocations)

Synthetic workloads (seeded models of a run) and traces recorded from real
programs with valgrind share this one format; `replay` runs either in a guest.
Traces are saved as compressed .npz files (a few hundred KiB at most).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError
from xipmodel.params import PAGE_SHIFT

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct

__all__ = ["ACCESS_KINDS", "MapSpec", "PageTrace", "ReplayResult", "collapse", "replay"]

ACCESS_KINDS: Final = ("r", "w", "x")
READ, WRITE, EXEC = 0, 1, 2


@dataclass(frozen=True)
class MapSpec:
    """One mapping of the run: [start, start + length) with `prot`, from `path` at `offset`."""

    start: int
    length: int
    prot: str  # "r-x", "rw-", ...
    path: str | None = None  # a file of the image, or None for anonymous memory
    offset: int = 0
    name: str = ""  # [heap], [stack], .bss, ...
    shared: bool = False


def collapse(vpns: npt.ArrayLike, kinds: npt.ArrayLike) -> tuple[npt.NDArray[np.uint64],
                                                                 npt.NDArray[np.uint8]]:
    """Drop consecutive repeats of the same (page, kind)."""
    v = np.asarray(vpns, dtype=np.uint64)
    k = np.asarray(kinds, dtype=np.uint8)
    if v.size == 0:
        return v, k
    keep = np.ones(v.size, dtype=bool)
    keep[1:] = (v[1:] != v[:-1]) | (k[1:] != k[:-1])
    return v[keep], k[keep]


@dataclass
class PageTrace:
    """A program run at page granularity: its mappings and its accesses."""

    name: str
    maps: list[MapSpec]
    vpns: npt.NDArray[np.uint64]
    kinds: npt.NDArray[np.uint8]
    meta: dict[str, object] = field(default_factory=dict)
    contents: npt.NDArray[np.int64] | None = None  # per access; 0 = fresh content

    def __post_init__(self) -> None:
        self.vpns = np.asarray(self.vpns, dtype=np.uint64)
        self.kinds = np.asarray(self.kinds, dtype=np.uint8)
        if self.contents is None:
            self.contents = np.zeros(self.vpns.size, dtype=np.int64)
        self.contents = np.asarray(self.contents, dtype=np.int64)
        if not self.vpns.shape == self.kinds.shape == self.contents.shape:
            raise ParameterError(
                f"PageTrace {self.name!r}: {self.vpns.size} pages, {self.kinds.size} kinds "
                f"and {self.contents.size} contents")
        if self.kinds.size and int(self.kinds.max()) > EXEC:
            raise ParameterError(f"PageTrace {self.name!r}: access kind {self.kinds.max()} "
                                 f"is not 0 (read), 1 (write) or 2 (execute)")

    def __len__(self) -> int:
        return int(self.vpns.size)

    def first_touches(self) -> PageTrace:
        """The trace with only the first access of each (page, kind), in order.

        Without memory pressure a repeated access finds its PTE present and faults no more:
        host memory, faults and disk reads equal the full trace's (TLB counts do not), and
        a replay is about a hundred times faster.
        """
        assert self.contents is not None
        key = self.vpns * np.uint64(len(ACCESS_KINDS)) + self.kinds.astype(np.uint64)
        _, first = np.unique(key, return_index=True)
        first.sort()
        return PageTrace(self.name, self.maps, self.vpns[first], self.kinds[first],
                         dict(self.meta), self.contents[first])

    def files(self) -> list[str]:
        """The image files the run mapped."""
        return sorted({m.path for m in self.maps if m.path})

    def accesses(self) -> Iterator[tuple[int, str, int]]:
        """(address, "r"/"w"/"x", content) for every access, in order."""
        assert self.contents is not None
        for vpn, kind, content in zip(self.vpns.tolist(), self.kinds.tolist(),
                                      self.contents.tolist(), strict=True):
            yield vpn << PAGE_SHIFT, ACCESS_KINDS[kind], content

    # --- files ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the trace as a compressed .npz file."""
        assert self.contents is not None  # __post_init__ fills it
        header = json.dumps({"name": self.name, "maps": [asdict(m) for m in self.maps],
                             "meta": self.meta})
        np.savez_compressed(path, vpns=self.vpns, kinds=self.kinds, contents=self.contents,
                            header=np.frombuffer(header.encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: str | Path) -> PageTrace:
        """Read a trace written by `save` (bad files raise ParameterError naming the file)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                contents = data.get("contents", None)
                return cls(header["name"], [MapSpec(**m) for m in header["maps"]],
                           data["vpns"], data["kinds"], header.get("meta", {}), contents)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ParameterError(f"PageTrace.load: {path} is not a page trace ({exc})") from exc


@dataclass
class ReplayResult:
    """What replaying a trace did: accesses made and those that failed (by VM_FAULT flags)."""

    accesses: int = 0
    sigsegv: int = 0
    sigbus: int = 0
    oom: int = 0


def replay(guest: Guest, trace: PageTrace,
           mm: MmStruct | None = None) -> tuple[MmStruct | None, ReplayResult]:
    """Run `trace` in `guest`: map its files from the guest's image, then make its accesses.

    A write stores the trace's content id for it, or fresh content where that is 0.
    Without `mm`, a new process runs it; if the guest cannot fork one (out of memory),
    nothing runs and the result counts one OOM.
    """
    from xipmodel.mm.memory import VM_FAULT_OOM, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV

    if mm is None:
        mm = guest.new_process(trace.name)
        if mm is None:
            return None, ReplayResult(oom=1)
        for m in trace.maps:
            guest.mmap(mm, m.start, m.length, m.prot, path=m.path, offset=m.offset,
                       shared=m.shared, name=m.name)
    result = ReplayResult()
    access = guest.access
    for address, kind, content in trace.accesses():
        flags = access(mm, address, kind, content or None)
        if flags:
            result.sigsegv += bool(flags & VM_FAULT_SIGSEGV)
            result.sigbus += bool(flags & VM_FAULT_SIGBUS)
            result.oom += bool(flags & VM_FAULT_OOM)
    result.accesses += len(trace)
    return mm, result
