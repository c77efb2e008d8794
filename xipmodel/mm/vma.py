"""Model of a process address space (struct mm_struct) and its areas (struct vm_area_struct).

A VMA covers [start, end) of the virtual address space with one set of
permissions; a file-backed VMA maps file pages starting at `pgoff`::

    vma.start                                     vma.end
    ├───── page 0 ───┬──── page 1 ───┬── … ───────┤
      file page vma.pgoff + (address - vma.start) >> PAGE_SHIFT

exec (fs/binfmt_elf.c) makes each PT_LOAD segment a *private* file mapping
(text R-X, data RW-), and .bss, heap and stack anonymous ones. A file VMA's
`vm_ops` (struct vm_operations_struct) name its fault handlers: the page cache's
(mm/filemap.py) or DAX's (mm/dax.py); mm/mmap.py picks them when it maps the file.
"""

from __future__ import annotations

import bisect
import dataclasses
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xipmodel.errors import ParameterError
from xipmodel.mm.pagetable import PageTable
from xipmodel.params import PAGE_SHIFT

if TYPE_CHECKING:
    from xipmodel.mm.memory import VmFaultInfo

__all__ = ["MmStruct", "Prot", "VmOperations", "Vma"]


class Prot(enum.IntFlag):
    """PROT_READ / PROT_WRITE / PROT_EXEC of a mapping."""

    NONE = 0
    R = 1
    W = 2
    X = 4

    @classmethod
    def parse(cls, text: str) -> Prot:
        """"r-x" → R|X (the notation of /proc/PID/maps; a short "rw" means "rw-").

        Each position is its letter or "-", and a fourth character, if any, is maps'
        "p" (private) or "s" (shared); anything else is a ParameterError.
        """
        if not isinstance(text, str) or not _PROT_TEXT.fullmatch(text):
            raise ParameterError(f"prot {text!r} is not like 'r-x': r or -, w or -, x or - "
                                 f"(then p or s)")
        prot = cls.NONE
        for ch, bit in zip(text.ljust(3, "-")[:3], (cls.R, cls.W, cls.X), strict=True):
            if ch != "-":
                prot |= bit
        return prot

    def __str__(self) -> str:
        return "".join(c if self & b else "-" for c, b in zip("rwx", (Prot.R, Prot.W, Prot.X),
                                                                strict=True))


_PROT_R, _PROT_W, _PROT_X = int(Prot.R), int(Prot.W), int(Prot.X)  # for the fault path
_PROT_TEXT = re.compile(r"[r-]?|[r-][w-]|[r-][w-][x-][ps]?")
ADVICE = ("normal", "random", "sequential")  # MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL


@dataclass(frozen=True)
class VmOperations:
    """struct vm_operations_struct: what a file VMA's faults call.

    `fault(vmf)` finds or makes the page (VM_FAULT_* flags); `map_pages(vmf, start,
    end)` maps cached pages of [start, end] without I/O for fault-around (None: the
    mapping has none, as DAX has not), True if the faulting page got mapped.
    """

    name: str
    fault: Callable[[VmFaultInfo], int] = field(repr=False)
    map_pages: Callable[[VmFaultInfo, int, int], bool] | None = field(default=None, repr=False)


@dataclass
class Vma:
    """struct vm_area_struct: [start, end) with permissions, maybe backed by file `ino`."""

    start: int
    end: int
    prot: Prot
    shared: bool = False  # MAP_SHARED (else MAP_PRIVATE: writes are copy-on-write)
    ino: int | None = None  # the file's inode number in the image, None if anonymous
    pgoff: int = 0  # file page mapped at `start`
    name: str = ""
    advice: str = "normal"
    dax: bool = False  # the file lives on the XIP/DAX mount (the inode's S_DAX)
    vm_ops: VmOperations | None = None  # a file VMA's fault handlers (None: anonymous)

    def __post_init__(self) -> None:
        mask = (1 << PAGE_SHIFT) - 1
        if self.start & mask or self.end & mask or self.end <= self.start:
            raise ParameterError(
                f"Vma: [{self.start:#x}, {self.end:#x}) is not a page-aligned, non-empty range")
        if self.advice not in ADVICE:
            raise ParameterError(f"Vma: advice {self.advice!r} is not one of {ADVICE}")

    @property
    def anonymous(self) -> bool:
        return self.ino is None

    @property
    def exec(self) -> bool:
        return bool(int(self.prot) & _PROT_X)

    @property
    def pages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    def file_pgoff(self, address: int) -> int:
        """linear_page_index: the file page mapped at `address`."""
        return self.pgoff + ((address - self.start) >> PAGE_SHIFT)

    def permits(self, write: bool, exec_: bool) -> bool:
        """Does the VMA allow this access at all (else SIGSEGV)?"""
        prot = int(self.prot)  # (enum.Flag arithmetic is slow: the bits as a plain int)
        if write:
            return bool(prot & _PROT_W)
        if exec_:
            return bool(prot & _PROT_X)
        return bool(prot & _PROT_R)

    def __str__(self) -> str:
        kind = "s" if self.shared else "p"
        return (f"{self.start:012x}-{self.end:012x} {self.prot}{kind} "
                f"{self.pgoff << PAGE_SHIFT:08x} "
                f"{self.name or ('[anon]' if self.anonymous else '')}")


def _vma_start(vma: Vma) -> int:
    return vma.start


@dataclass
class MmStruct:
    """One process: its VMAs (sorted by start) and its page table; `asid` tags its TLB entries."""

    pid: int
    asid: int
    pt: PageTable
    vmas: list[Vma] = field(default_factory=list)
    name: str = ""

    def find_vma(self, address: int) -> Vma | None:
        """The VMA containing `address`, or None (a SIGSEGV)."""
        i = bisect.bisect_right(self.vmas, address, key=_vma_start) - 1
        if i >= 0 and address < self.vmas[i].end:
            return self.vmas[i]
        return None

    def copy(self, pt: PageTable) -> MmStruct:
        """The same address space with page table `pt` (a cloned guest's process)."""
        return MmStruct(self.pid, self.asid, pt, [dataclasses.replace(v) for v in self.vmas],
                        self.name)

    def insert_vma(self, vma: Vma) -> Vma:
        """Add `vma`; overlapping an existing area is a caller's error."""
        for other in self.vmas:
            if vma.start < other.end and other.start < vma.end:
                raise ParameterError(f"mmap: {vma} overlaps {other}")
        bisect.insort(self.vmas, vma, key=_vma_start)
        return vma
