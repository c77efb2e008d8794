"""Model of multi-level page tables and the page walk (xv6 kernel/vm.c, Intel EPT / AMD NPT).

A page table is raw integers: every table is a numpy uint64 array of
`preset.entries[depth]` slots, kept in `PageTable.tables` under the *frame
number* that holds it. Frames come from a caller-supplied `alloc_table()`
(the host frame model accounts page-table pages that way) and go back through
`free_table(frame)`; `TableFrames` is a small kalloc-like default for
standalone and teaching use.

    walk(va, alloc)          the MMU's walk: one memory reference per level
    translate(va, access)    walk + permission check + hardware A/D update
    map / unmap              one page by VPN (mappages / unmappages by byte range)
    map_many / unmap_many / lookup_many     the same over numpy arrays of VPNs
    set_flags / clear_flags  accessed, dirty, writable (write-protect for CoW)
    nested_walk(g, h, gva)   two-dimensional walk, (g+1)(h+1) - 1 references

What the simulated MMU finds (a non-present entry, a write to a read-only
page) is a returned `Fault`, never an exception.

Not modelled: huge pages, freeing empty intermediate tables on unmap (tables
go back only in `free()`, as in xv6), TLB interaction (see tlb.py), locking.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError
from xipmodel.params import DEFAULT_PRESET, PTE_X, MMUPreset, Pte

__all__ = [
    "Access",
    "AllocTable",
    "Fault",
    "FreeTable",
    "NestedStep",
    "NestedWalk",
    "PageTable",
    "TableFrames",
    "Translation",
    "WalkResult",
    "WalkStep",
    "nested_walk",
    "nested_walk_refs",
]

U64 = np.uint64
AllocTable = Callable[[], "int | None"]  # a frame number, or None when memory is exhausted
FreeTable = Callable[[int], object]  # return value ignored (HostMemory.put returns a bool)
Access = Literal["read", "write", "exec"]


class Fault(enum.Enum):
    """Why a translation failed: what the hardware would report as a page fault."""

    NOT_PRESENT = "entry not present"
    WRITE_PROTECT = "write to a read-only page"
    NO_EXEC = "instruction fetch from a non-executable page"
    BAD_ADDRESS = "address outside the virtual address space"


class TableFrames:
    """A kalloc-style frame allocator for standalone page tables: a free list, then a counter.

    `alloc()` returns the most recently freed frame first (like xv6's kfree/kalloc
    list), else the next never-used frame; None once `limit` frames are in use.
    """

    def __init__(self, first: int = 1, limit: int | None = None) -> None:
        if first < 0:
            raise ParameterError(f"TableFrames: first={first!r}: must be >= 0")
        if limit is not None and limit < first:
            raise ParameterError(f"TableFrames: limit={limit!r}: must be >= first={first}")
        self.next = first
        self.limit = limit
        self.freelist: list[int] = []
        self.allocs = 0  # successful alloc() calls, for tests and accounting
        self.frees = 0

    def alloc(self) -> int | None:
        """A free frame number, or None when none is left."""
        if self.freelist:
            frame = self.freelist.pop()
        elif self.limit is None or self.next < self.limit:
            frame = self.next
            self.next += 1
        else:
            return None
        self.allocs += 1
        return frame

    def free(self, frame: int) -> None:
        """Give `frame` back."""
        if frame in self.freelist or frame >= self.next:
            raise RuntimeError(f"TableFrames.free: frame {frame} is not allocated")
        self.freelist.append(frame)
        self.frees += 1

    @property
    def in_use(self) -> int:
        """Frames handed out and not yet freed."""
        return self.allocs - self.frees


@dataclass(frozen=True, slots=True)
class WalkStep:
    """One memory reference of a walk: entry `index` of the `level` table held in frame `table`."""

    level: str
    depth: int
    table: int  # frame number holding the table
    index: int
    addr: int  # physical address of the entry: table * page_size + index * pte_size
    pte: int  # the entry's value (after installing a new table, when walk(alloc=True) did)

    def __str__(self) -> str:
        return f"{self.level}[{self.index}] @ {self.addr:#x} = {self.pte:#x}"


@dataclass(frozen=True)
class WalkResult:
    """What a walk read: its steps, and the slot of the last-level entry if the walk got there."""

    preset: MMUPreset
    va: int
    steps: tuple[WalkStep, ...]
    slot: tuple[int, int] | None  # (table frame, index) of the leaf PTE; None: stopped above

    @property
    def refs(self) -> int:
        """Memory references made (one per step)."""
        return len(self.steps)

    @property
    def pte(self) -> int:
        """The last entry read: the leaf PTE, or the non-present entry the walk stopped at."""
        return self.steps[-1].pte if self.steps else 0

    @property
    def present(self) -> bool:
        """Did the walk find a present leaf PTE?"""
        return self.slot is not None and self.preset.pte_present_p(self.pte)

    @property
    def stopped_at(self) -> str | None:
        """Name of the level whose entry was not present, or None if the leaf is present."""
        return None if self.present or not self.steps else self.steps[-1].level

    @property
    def pa(self) -> int | None:
        """Physical address of `va`, or None when not mapped."""
        if not self.present:
            return None
        p = self.preset
        return p.pte_pfn(self.pte) << p.page_shift | (self.va & p.page_mask)

    def explain(self) -> list[str]:
        """OSTEP-style lines: every entry read, then the result."""
        p = self.preset
        lines = [f"{p.name}: va {self.va:#x} → indices {p.split(self.va)[:-1]} "
                 f"offset {self.va & p.page_mask:#x}"]
        for s in self.steps:
            valid = p.pte_present_p(s.pte)
            lines.append(f"  {s}  (valid {int(valid)}, pfn {p.pte_pfn(s.pte):#x})")
        pa = self.pa
        lines.append(f"  → pa {pa:#x}" if pa is not None else
                     f"  → fault: {self.stopped_at} entry not valid")
        return lines


class Translation(NamedTuple):
    """`translate`'s answer: a physical address, or None and the fault."""

    pa: int | None
    fault: Fault | None


def _check(p: MMUPreset, pte: int, access: Access) -> Fault | None:
    """Permission check of a present leaf entry for one access (no privilege levels modelled)."""
    flags = p.pte_flags(pte)
    if access == "write" and not flags & Pte.W:
        return Fault.WRITE_PROTECT
    if access == "exec" and not flags & Pte.X:
        return Fault.NO_EXEC
    return None


class PageTable:
    """One address space's page table (guest or host) for an `MMUPreset`.

    `alloc_table() -> int | None` supplies a frame for each new table (None: out
    of memory, reported as a failed map, never an exception); `free_table(frame)`
    takes it back in `free()`. Without them a private `TableFrames` is used.
    """

    def __init__(self, preset: MMUPreset = DEFAULT_PRESET,
                 alloc_table: AllocTable | None = None,
                 free_table: FreeTable | None = None) -> None:
        """A page table with its root; RuntimeError if alloc_table gives no frame for it
        (an owner that may run out of frames calls pgd_alloc)."""
        if not self._init_root(preset, alloc_table, free_table):
            raise RuntimeError("PageTable: alloc_table gave no frame for the root table")

    @classmethod
    def pgd_alloc(cls, preset: MMUPreset, alloc_table: AllocTable,
                  free_table: FreeTable | None = None) -> PageTable | None:
        """Model of pgd_alloc: a page table with its root, or None when alloc_table has no
        frame for the root (ENOMEM for the caller: fork, or a guest's boot)."""
        table = cls.__new__(cls)
        return table if table._init_root(preset, alloc_table, free_table) else None

    def _init_root(self, preset: MMUPreset, alloc_table: AllocTable | None,
                   free_table: FreeTable | None) -> bool:
        """Set up an empty table and allocate its root; False if there is no frame for it."""
        if alloc_table is None:
            frames = TableFrames(limit=preset.pfn_mask + 1)
            alloc_table, free_table = frames.alloc, frames.free
            self.frames: TableFrames | None = frames
        else:
            self.frames = None
        self.preset = preset
        self.alloc_table = alloc_table
        self.free_table = free_table
        self.tables: dict[int, npt.NDArray[np.uint64]] = {}
        self._leaves: dict[int, int] = {}  # vpn >> leaf bits → leaf table frame (a cache)
        self._leaf_bits = preset.levels[-1]
        root = self._alloc(0)
        if root is None:
            return False
        self.root = root  # the frame a CR3 / satp / ASCE register would hold
        return True

    def _alloc(self, depth: int) -> int | None:
        """A zeroed table for `depth` in a fresh frame, or None if the allocator has none."""
        frame = self.alloc_table()
        if frame is None:
            return None
        self.preset.check_pfn(frame, "alloc_table")
        if frame in self.tables:
            raise RuntimeError(f"walk: alloc_table returned frame {frame}, already a table")
        self.tables[frame] = np.zeros(self.preset.entries[depth], dtype=U64)
        return frame

    def copy(self, alloc_table: AllocTable, free_table: FreeTable | None = None) -> PageTable:
        """The same tables in the same frames, under new owners' allocator callbacks.

        For a cloned guest: its page tables live at the same guest-physical frames.
        """
        new = PageTable.__new__(PageTable)
        new.preset, new.frames = self.preset, None
        new.alloc_table, new.free_table = alloc_table, free_table
        new.tables = {frame: table.copy() for frame, table in self.tables.items()}
        new._leaves, new._leaf_bits = dict(self._leaves), self._leaf_bits
        new.root = self.root
        return new

    @classmethod
    def from_memory(cls, preset: MMUPreset, memory: bytes | bytearray | npt.NDArray[np.uint8],
                    root: int, alloc_table: AllocTable | None = None,
                    free_table: FreeTable | None = None) -> PageTable:
        """Load the tables reachable from frame `root` out of a flat physical-memory image.

        For replaying OSTEP's paging-multilevel-translate dumps: `root` is its PDBR.
        Entries are read little-endian, `pte_size` bytes each. New tables made later
        come from `alloc_table`, by default frames above every loaded one.
        """
        p = preset
        mem = np.frombuffer(bytes(memory), dtype=np.uint8)
        dtype = np.dtype(f"<u{p.pte_size}")

        def read(frame: int, depth: int) -> npt.NDArray[np.uint64]:
            start = frame * p.page_size
            end = start + p.table_bytes(depth)
            if end > mem.size:
                raise ParameterError(f"from_memory: table frame {frame} at {start:#x} lies "
                                     f"beyond memory of {mem.size} bytes")
            return mem[start:end].view(dtype).astype(U64)

        loaded: dict[int, npt.NDArray[np.uint64]] = {}
        todo = [(root, 0)]
        while todo:
            frame, depth = todo.pop()
            if frame in loaded:
                raise ParameterError(f"from_memory: frame {frame} is reached twice")
            loaded[frame] = read(frame, depth)
            if depth + 1 < p.nlevels:
                for pte in loaded[frame].tolist():
                    if p.pte_present_p(pte):
                        todo.append((p.pte_pfn(pte), depth + 1))
        frames = None
        if alloc_table is None:
            frames = TableFrames(first=max(loaded) + 1, limit=p.pfn_mask + 1)
            alloc_table, free_table = frames.alloc, frames.free
        pt = cls(p, iter([root]).__next__, free_table)  # the root frame: replaced just below
        pt.alloc_table, pt.frames, pt.tables = alloc_table, frames, loaded
        return pt

    # A virtual address as MMUPreset.split cuts it (x86-64 drawn; bit 0 is the least
    # significant, although z/Architecture numbers bits from the other end):
    #
    #   63     48 47     39 38     30 29     21 20     12 11           0
    #  ┌─────────┬─────────┬─────────┬─────────┬─────────┬──────────────┐
    #  │sign ext.│PML4 idx │PDPT idx │ PD idx  │ PT idx  │ byte offset  │
    #  └─────────┴─────────┴─────────┴─────────┴─────────┴──────────────┘
    #                9 bits    9 bits    9 bits    9 bits     12 bits
    #
    #  TINY (OSTEP):  14..10 PD index │ 9..5 PT index │ 4..0 offset
    #  Sv39:          63..39 sign │ 38..30 VPN[2] │ 29..21 VPN[1] │ 20..12 VPN[0] │ 11..0
    #  s390x:         RFX 63..53 │ RSX 52..42 │ RTX 41..31 │ SX 30..20 │ PX 19..12 │ BX 11..0
    #
    # table = root; at each level read entry = tables[table][index], which lives at
    # physical address table * page_size + index * pte_size (one memory reference);
    # a non-present entry ends the walk; otherwise its frame is the next table.
    def walk(self, va: int, alloc: bool = False) -> WalkResult:
        """Walk the tables for `va`, one step per entry read.

        With `alloc`, a missing intermediate table is created (xv6's walk(alloc=1))
        so the result always reaches the last level unless alloc_table has no frame.
        The leaf entry is read but not changed. ParameterError if `va` is outside
        the VA space (the MMU's version of that is `translate`'s BAD_ADDRESS).
        """
        p = self.preset
        if self.root not in self.tables:
            raise RuntimeError("walk: page table already freed")
        *indices, _ = p.split(va)
        last = p.nlevels - 1
        table = self.root
        steps: list[WalkStep] = []
        for depth, index in enumerate(indices):
            entries = self.tables[table]
            pte = int(entries[index])
            addr = table * p.page_size + index * p.pte_size
            if depth == last:
                steps.append(WalkStep(p.level_names[depth], depth, table, index, addr, pte))
                return WalkResult(p, va, tuple(steps), (table, index))
            # Is there a next-level table? If not, make one only when asked to.
            if not p.pte_present_p(pte) and alloc:
                child = self._alloc(depth + 1)
                if child is not None:
                    pte = p.mktable(child)
                    entries[index] = pte
            steps.append(WalkStep(p.level_names[depth], depth, table, index, addr, pte))
            if not p.pte_present_p(pte):
                return WalkResult(p, va, tuple(steps), None)
            table = p.pte_pfn(pte)
            if table not in self.tables:
                raise RuntimeError(f"walk: {p.level_names[depth]} entry {pte:#x} points to "
                                   f"frame {table}, which holds no table")
        raise AssertionError("walk: fell off the last level")

    def translate(self, va: int, access: Access = "read", set_ad: bool = True) -> Translation:
        """The MMU on a TLB miss: walk, check permissions, set accessed (and dirty on a write).

        Returns (pa, None) or (None, fault). A/D are set as x86-64 hardware does
        (formats without those bits record nothing); pass set_ad=False to only look.
        """
        p = self.preset
        if not p.va_ok(va):
            return Translation(None, Fault.BAD_ADDRESS)
        w = self.walk(va)
        if not w.present or w.slot is None:
            return Translation(None, Fault.NOT_PRESENT)
        fault = _check(p, w.pte, access)
        if fault is not None:
            return Translation(None, fault)
        if set_ad:
            bits = p.pte_accessed | (p.pte_dirty if access == "write" else 0)
            table, index = w.slot
            self.tables[table][index] |= U64(bits)
        return Translation(w.pa, None)

    # ── one page at a time, by virtual page number ─────────────────────────
    def _leaf_table(self, prefix: int, alloc: bool) -> int | None:
        """Frame of the last-level table for vpns starting `prefix`, or None if absent.

        `walk` without the record keeping, for the page-at-a-time and bulk verbs.
        """
        leaf = self._leaves.get(prefix)
        if leaf is not None:
            return leaf
        p = self.preset
        tables = self.tables
        table = self.root
        if table not in tables:
            raise RuntimeError("walk: page table already freed")
        below = p.page_shift + p.levels[-1]
        for depth in range(p.nlevels - 1):
            entries = tables[table]
            index = (prefix >> (p.shifts[depth] - below)) & (p.entries[depth] - 1)
            pte = int(entries[index])
            if not pte & p.pte_present:
                if not alloc:
                    return None
                child = self._alloc(depth + 1)
                if child is None:
                    return None
                pte = p.mktable(child)
                entries[index] = pte
            table = (pte >> p.pfn_shift) & p.pfn_mask
        self._leaves[prefix] = table  # tables are only freed all at once, by free()
        return table

    def _leaf_slot(self, vpn: int, alloc: bool) -> tuple[npt.NDArray[np.uint64], int] | None:
        """(leaf table, index) of vpn's leaf PTE, or None without a leaf table."""
        bits = self._leaf_bits
        table = self._leaves.get(vpn >> bits)
        if table is None:  # not walked to yet (a vpn out of range never is)
            p = self.preset
            if vpn < 0 or vpn >> p.vpn_bits:
                raise ParameterError(f"{p.name}: vpn={vpn!r}: must be < 2**{p.vpn_bits}")
            table = self._leaf_table(vpn >> bits, alloc)
            if table is None:
                return None
        return self.tables[table], vpn & ((1 << bits) - 1)

    def pte_alloc(self, vpn: int) -> bool:
        """Make sure the tables down to vpn's leaf exist (Linux's pte_alloc); False if no frame."""
        if vpn >> self._leaf_bits in self._leaves:
            return True  # a leaf table walked to before (pmd_none is false)
        return self._leaf_slot(vpn, alloc=True) is not None

    def map(self, vpn: int, pfn: int, flags: Pte | int = Pte.NONE, *,
            replace: bool = False) -> bool:
        """Map page `vpn` to frame `pfn` with `flags`; False if no frame was left for a table.

        Mapping over a present entry is a caller bug unless `replace` (the CoW
        path swapping in a private copy): "map: remap".
        """
        pte = self.preset.mkpte(pfn, flags)
        slot = self._leaf_slot(vpn, alloc=True)
        if slot is None:
            return False
        entries, index = slot
        if not replace and entries.item(index) & self.preset.pte_present:
            raise RuntimeError(f"map: remap of vpn {vpn:#x}")
        entries[index] = pte
        return True

    def exchange(self, vpn: int, pfn: int, flags: Pte | int = Pte.NONE) -> int | None:
        """Map page `vpn` to frame `pfn` with `flags` over whatever was there (ptep_get,
        then set_pte_at); returns the old entry (0: none), None if no frame was left for
        a table."""
        pte = self.preset.mkpte(pfn, flags)
        slot = self._leaf_slot(vpn, alloc=True)
        if slot is None:
            return None
        entries, index = slot
        old: int = entries.item(index)
        entries[index] = pte
        return old

    def unmap(self, vpn: int) -> int:
        """Clear vpn's PTE; returns the old entry (0 when nothing was mapped)."""
        slot = self._leaf_slot(vpn, alloc=False)
        if slot is None:
            return 0
        entries, index = slot
        old: int = entries.item(index)
        entries[index] = 0
        return old

    def lookup_pte(self, vpn: int) -> int:
        """vpn's leaf PTE as a raw integer (0 when there is none); no side effects."""
        table = self._leaves.get(vpn >> self._leaf_bits)
        if table is not None:  # a leaf table walked to before: the usual case, made short
            return int(self.tables[table].item(vpn & ((1 << self._leaf_bits) - 1)))
        slot = self._leaf_slot(vpn, alloc=False)
        return 0 if slot is None else int(slot[0].item(slot[1]))

    def _flag_masks(self, flags: Pte | int) -> tuple[int, int]:
        """(bits to set, bits to clear) that grant `flags`; swap them to revoke."""
        p = self.preset
        grant = p.flag_bits(flags) & ~p.pte_leaf & ~p.pte_nx
        deny = p.pte_nx if int(flags) & PTE_X else 0
        return grant, deny

    def _update(self, vpn: int, set_bits: int, clear_bits: int) -> int:
        """Set then clear bits of vpn's present PTE; returns the old PTE (0: no leaf table)."""
        slot = self._leaf_slot(vpn, alloc=False)
        if slot is None:
            return 0
        entries, index = slot
        old: int = entries.item(index)
        # Is the page mapped? Flags of a non-present entry mean nothing; leave it.
        if self.preset.pte_present_p(old):
            entries[index] = (old | set_bits) & ~clear_bits
        return old

    def set_flags(self, vpn: int, flags: Pte | int) -> int:
        """Grant `flags` on vpn's present PTE (e.g. Pte.W after CoW); returns the old PTE."""
        grant, deny = self._flag_masks(flags)
        return self._update(vpn, grant, deny)

    def clear_flags(self, vpn: int, flags: Pte | int) -> int:
        """Revoke `flags` (Pte.A to age, Pte.W to write-protect); returns the old PTE.

        A format without the bit cannot revoke it (TINY pages stay writable).
        """
        grant, deny = self._flag_masks(flags)
        return self._update(vpn, deny, grant)

    def mappages(self, va: int, size: int, pa: int, flags: Pte = Pte.NONE) -> bool:
        """xv6's mappages: map `size` bytes at page-aligned `va` to `pa` onwards."""
        p = self.preset
        if va & p.page_mask or pa & p.page_mask:
            raise ParameterError(f"mappages: va={va:#x} pa={pa:#x}: must be page-aligned")
        if size <= 0 or size & p.page_mask:
            raise ParameterError(f"mappages: size={size!r}: must be a positive page multiple")
        n = size >> p.page_shift
        vpn = p.vpn(va)
        return bool(self.map_many(np.arange(vpn, vpn + n), np.arange(n) + (pa >> p.page_shift),
                                  flags).all())

    def unmappages(self, va: int, size: int) -> npt.NDArray[np.uint64]:
        """Unmap `size` bytes at page-aligned `va`; returns the old PTEs (0 where none)."""
        p = self.preset
        if va & p.page_mask or size <= 0 or size & p.page_mask:
            raise ParameterError(f"unmappages: va={va:#x} size={size!r}: must be page-aligned")
        vpn = p.vpn(va)
        return self.unmap_many(np.arange(vpn, vpn + (size >> p.page_shift)))

    # ── many pages at once: one walk per leaf table, numpy inside it ────────
    def _vpn_array(self, vpns: npt.ArrayLike, who: str) -> npt.NDArray[np.int64]:
        """vpns as a flat int64 array; ParameterError (naming `who`) if any is out of range."""
        arr = np.asarray(vpns, dtype=np.int64).reshape(-1)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >> self.preset.vpn_bits):
            raise ParameterError(f"{who}: vpns in [{int(arr.min())}, {int(arr.max())}]: "
                                 f"must be < 2**{self.preset.vpn_bits}")
        return arr

    def _by_leaf(self, vpns: npt.NDArray[np.int64], alloc: bool
                 ) -> list[tuple[int | None, npt.NDArray[np.intp], npt.NDArray[np.int64]]]:
        """Group vpns by leaf table: [(table frame or None, positions in vpns, indices)]."""
        leaf_bits = self.preset.levels[-1]
        prefix = vpns >> leaf_bits
        order = np.argsort(prefix, kind="stable")
        uniq, starts = np.unique(prefix[order], return_index=True)
        bounds = [*starts.tolist(), len(order)]
        groups = []
        for k, pre in enumerate(uniq.tolist()):
            pos = order[bounds[k]:bounds[k + 1]]
            index = vpns[pos] & ((1 << leaf_bits) - 1)
            groups.append((self._leaf_table(pre, alloc), pos, index))
        return groups

    def map_many(self, vpns: npt.ArrayLike, pfns: npt.ArrayLike, flags: Pte | int = Pte.NONE,
                 *, replace: bool = False) -> npt.NDArray[np.bool_]:
        """`map` for arrays of pages; returns which were mapped (False: no frame for a table)."""
        v = self._vpn_array(vpns, "map_many")
        ptes = self.preset.mkpte_array(np.asarray(pfns).reshape(-1), flags)
        if ptes.shape != v.shape:
            raise ParameterError(f"map_many: {v.size} vpns but {ptes.size} pfns")
        if np.unique(v).size != v.size:
            raise ParameterError("map_many: vpns contain duplicates")
        mapped = np.zeros(v.size, dtype=bool)
        present = U64(self.preset.pte_present)
        for table, pos, index in self._by_leaf(v, alloc=True):
            if table is None:
                continue
            entries = self.tables[table]
            if not replace and (entries[index] & present).any():
                raise RuntimeError(f"map_many: remap in the table at frame {table}")
            entries[index] = ptes[pos]
            mapped[pos] = True
        return mapped

    def unmap_many(self, vpns: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """`unmap` for an array of pages; returns the old PTEs (0 where none)."""
        v = self._vpn_array(vpns, "unmap_many")
        old = np.zeros(v.size, dtype=U64)
        for table, pos, index in self._by_leaf(v, alloc=False):
            if table is not None:
                old[pos] = self.tables[table][index]
                self.tables[table][index] = U64(0)
        return old

    def lookup_many(self, vpns: npt.ArrayLike) -> npt.NDArray[np.uint64]:
        """Leaf PTEs of an array of pages (0 where none); no side effects."""
        v = self._vpn_array(vpns, "lookup_many")
        out = np.zeros(v.size, dtype=U64)
        for table, pos, index in self._by_leaf(v, alloc=False):
            if table is not None:
                out[pos] = self.tables[table][index]
        return out

    def mapped_vpns(self) -> npt.NDArray[np.int64]:
        """Every vpn with a present leaf PTE, ascending."""
        p = self.preset
        found: list[npt.NDArray[np.int64]] = []

        def visit(frame: int, depth: int, prefix: int) -> None:
            entries = self.tables[frame]
            live = np.nonzero(entries & U64(p.pte_present))[0]
            if depth == p.nlevels - 1:
                found.append((prefix << p.levels[depth]) + live.astype(np.int64))
                return
            for i in live.tolist():
                visit(p.pte_pfn(int(entries[i])), depth + 1, prefix << p.levels[depth] | i)

        visit(self.root, 0, 0)
        return np.sort(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)

    def free(self) -> None:
        """Give every table frame back through free_table, leaves first (xv6's freewalk).

        Data frames the entries point to belong to the caller and are not touched.
        """
        p = self.preset

        def release(frame: int, depth: int) -> None:
            if depth + 1 < p.nlevels:
                for pte in self.tables[frame].tolist():
                    if p.pte_present_p(pte):
                        release(p.pte_pfn(pte), depth + 1)
            del self.tables[frame]
            if self.free_table is not None:
                self.free_table(frame)

        self._leaves.clear()
        if self.root in self.tables:
            release(self.root, 0)
        if self.tables:
            raise RuntimeError(f"free: {len(self.tables)} tables unreachable from the root")

    @property
    def table_count(self) -> int:
        """Table pages in use (s390x: see MMUPreset.table_bytes for their true size)."""
        return len(self.tables)


# ── the two-dimensional walk ───────────────────────────────────────────────
def nested_walk_refs(g: int, h: int) -> int:
    """Memory references of a nested walk: g guest levels, each entry behind an h-level host walk,
    plus the host walk of the final guest-physical address: g·h + g + h = (g+1)(h+1) − 1."""
    if g < 0 or h < 0:
        raise ParameterError(f"nested_walk_refs: g={g!r} h={h!r}: levels must be >= 0")
    return g * h + g + h


@dataclass(frozen=True)
class NestedStep:
    """One memory reference of a nested walk: a host-table entry or a guest-table entry."""

    dim: Literal["guest", "host"]
    why: str  # what the reference is for
    step: WalkStep  # for a guest step, step.addr is the entry's guest-physical address
    hpa: int  # host-physical address actually read

    def __str__(self) -> str:
        return f"{self.dim:5} {self.step}  (hPA {self.hpa:#x}; {self.why})"


@dataclass(frozen=True)
class NestedWalk:
    """Result of `nested_walk`: every reference in order, the addresses and any fault."""

    gva: int
    steps: tuple[NestedStep, ...]
    gpa: int | None
    hpa: int | None
    fault: Fault | None
    stage: Literal["guest", "host"] | None  # which table faulted (guest #PF or EPT violation)

    @property
    def refs(self) -> int:
        """Memory references made."""
        return len(self.steps)

    def explain(self) -> list[str]:
        """One line per reference, then the outcome."""
        lines = [f"{i + 1:2}. {s}" for i, s in enumerate(self.steps)]
        if self.fault is None:
            lines.append(f"gVA {self.gva:#x} → gPA {self.gpa:#x} → hPA {self.hpa:#x}: "
                         f"{self.refs} references")
        else:
            lines.append(f"gVA {self.gva:#x}: {self.stage} fault: {self.fault.value}")
        return lines


def _host_walk(host: PageTable, gpa: int, why: str, steps: list[NestedStep],
               access: Access) -> tuple[int | None, Fault | None]:
    """Translate one guest-physical address through the host table, recording each reference."""
    if not host.preset.va_ok(gpa):
        return None, Fault.BAD_ADDRESS
    w = host.walk(gpa)
    steps.extend(NestedStep("host", why, s, s.addr) for s in w.steps)
    if not w.present:
        return None, Fault.NOT_PRESENT
    fault = _check(host.preset, w.pte, access)
    return (None, fault) if fault else (w.pa, None)


def nested_walk(guest: PageTable, host: PageTable, gva: int, access: Access = "read"
                ) -> NestedWalk:
    """Model of a two-dimensional (EPT/NPT) walk of guest-virtual `gva`.

    The guest table lives in guest-physical memory: before each guest entry can
    be read, its guest-physical address goes through a full host walk; the final
    guest-physical address does too. Neither table is changed (A/D not set).
    """
    gp = guest.preset
    steps: list[NestedStep] = []

    def done(gpa: int | None, hpa: int | None, fault: Fault | None,
             stage: Literal["guest", "host"] | None) -> NestedWalk:
        return NestedWalk(gva, tuple(steps), gpa, hpa, fault, stage)

    if not gp.va_ok(gva):
        return done(None, None, Fault.BAD_ADDRESS, "guest")
    *indices, offset = gp.split(gva)
    table = guest.root
    pte = 0
    for depth, index in enumerate(indices):
        level = gp.level_names[depth]
        entry_gpa = table * gp.page_size + index * gp.pte_size
        hpa, fault = _host_walk(host, entry_gpa, f"guest {level} entry at gPA {entry_gpa:#x}",
                                steps, "read")
        if hpa is None:
            return done(None, None, fault, "host")
        pte = int(guest.tables[table][index])
        steps.append(NestedStep("guest", f"guest {level} entry", WalkStep(
            level, depth, table, index, entry_gpa, pte), hpa))
        # Guest entry not present: the guest's own page fault, delivered to the guest.
        if not gp.pte_present_p(pte):
            return done(None, None, Fault.NOT_PRESENT, "guest")
        if depth + 1 < gp.nlevels:
            table = gp.pte_pfn(pte)
    fault = _check(gp, pte, access)
    if fault is not None:
        return done(None, None, fault, "guest")
    gpa = gp.pte_pfn(pte) << gp.page_shift | offset
    hpa, fault = _host_walk(host, gpa, f"data at gPA {gpa:#x}", steps, access)
    if hpa is None:
        return done(gpa, None, fault, "host")
    return done(gpa, hpa, None, None)
