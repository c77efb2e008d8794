"""Model of one guest: its RAM on the host, its page allocator and reclaim, its processes.

Nested paging: a process's page table maps guest-virtual to guest-physical
pages; the guest's EPT (a host page table) maps guest-physical to host frames,
filled lazily the first time the guest touches a page (an EPT violation)::

    guest-virtual ──process page table──► guest-physical ──EPT──► host frame
                                           0 .. ram_pages          page cache copy, anon, ...
                                           dcss_base + block  ──►  the shared segment's frame

Guest RAM a guest once touched stays resident on the host even after the guest
frees it (no balloon, no free page reporting): that is FrameKind.GUEST_FREE.
Guest frame 0 is the guest's zero page; it is backed by the host's zero page.

Reclaim (mm/vmscan.c) runs when the free list is empty. Only page-cache pages
are reclaimable: without swap, anonymous pages stay.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from xipmodel.errors import ParameterError, ReadOnlyImageError
from xipmodel.events import EventBus, Oom, PteInstall
from xipmodel.ext2.reader import Ext2Image
from xipmodel.mm.frames import CONTENT_ZERO, FrameKind, HostMemory
from xipmodel.mm.pagecache import PageCache
from xipmodel.mm.pagetable import PageTable, nested_walk_refs
from xipmodel.mm.readahead import VM_READAHEAD_PAGES, FileRaState
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.tlb import TLB
from xipmodel.mm.vma import MmStruct, Prot, Vma
from xipmodel.params import (
    DEFAULT_COSTS,
    PAGE_SHIFT,
    PTE_A,
    PTE_D,
    PTE_U,
    PTE_W,
    PTE_X,
    X86_64,
    Costs,
    MMUPreset,
)

__all__ = ["FAULT_AROUND_PAGES", "Guest", "GuestStats"]

FAULT_AROUND_PAGES: Final = 16  # fault_around_bytes = 64 KiB
_INITIAL_FRAMES: Final = 1024  # per-frame arrays start this long and double
ZERO_GPFN: Final = 0
SWAP_CLUSTER_MAX: Final = 32  # pages reclaim tries to free at once


@dataclass
class GuestStats:
    """Counters a guest keeps (what /proc/vmstat and perf would show)."""

    major_faults: int = 0
    minor_faults: int = 0
    sigbus: int = 0
    sigsegv: int = 0
    oom: int = 0
    cow_faults: int = 0
    disk_read_bytes: int = 0
    disk_reads: int = 0
    tlb_hits: int = 0
    tlb_misses: int = 0
    walk_refs: int = 0
    accesses: int = 0
    readahead_pages: int = 0
    fault_around_pages: int = 0
    ept_violations: int = 0
    cow_ksm: int = 0  # writes that broke a KSM merge (host copy-on-write)
    host_page_ins: int = 0  # shared-segment blocks this guest was first to touch
    pgscan: int = 0
    pgsteal: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class _Mapping:
    """Where a guest frame is mapped: (pid, vpn) → is the mapping executable."""

    users: dict[tuple[int, int], bool] = field(default_factory=dict)


class Guest:
    """A virtual machine: `ram_pages` of RAM, a page cache over `disk`, optionally the XIP mount."""

    def __init__(
        self,
        gid: int,
        host: HostMemory,
        ram_pages: int,
        disk: Ext2Image,
        *,
        segment: SharedSegment | None = None,
        preset: MMUPreset = X86_64,
        host_preset: MMUPreset = X86_64,
        bus: EventBus | None = None,
        policy: str = "linux",
        fault_around_pages: int = FAULT_AROUND_PAGES,
        ra_pages: int = VM_READAHEAD_PAGES,
        exec_aligned_readaround: bool = False,
        tlb_entries: int = 64,
        tlb_ways: int = 4,
        costs: Costs = DEFAULT_COSTS,
    ) -> None:
        """Boot a guest; with `segment`, files of `disk` are mounted -o xip from it.

        `exec_aligned_readaround`: the mid-2025 kernels' read-around for executable
        mappings (an aligned window, no lookahead) instead of the classic centred one.
        """
        if ram_pages < 64:
            raise ParameterError(f"Guest: ram_pages {ram_pages} is too small (at least 64)")
        if segment is not None and segment.image is not disk:
            raise ParameterError("Guest: the shared segment must hold the guest's disk image")
        self.gid = gid
        self.host = host
        self.ram_pages = ram_pages
        self.disk = disk
        self.segment = segment
        self.preset = preset
        self.host_preset = host_preset
        self.bus = bus if bus is not None else EventBus()
        self.fault_around_pages = fault_around_pages
        self.ra_pages = ra_pages
        self.exec_aligned_readaround = exec_aligned_readaround
        self.time = 0  # model nanoseconds, advanced by accesses, walks, faults and I/O
        self.page_in_ns = 0  # of which waiting for the host to page in segment blocks
        self.costs = costs
        self.stats = GuestStats()
        self.walk_cost = nested_walk_refs(preset.nlevels, host_preset.nlevels)

        # Guest-physical memory: RAM, then (aligned, above it) the shared segment's window.
        # Frames are handed out lowest first, so the arrays only cover [0, _top) and grow.
        size = min(ram_pages, _INITIAL_FRAMES)
        self.backing = np.full(size, -1, dtype=np.int64)  # gpfn → host frame
        self.kind = np.zeros(size, dtype=np.uint8)  # what the guest uses each gpfn for
        self.dcss_base = 1 << max(ram_pages - 1, 1).bit_length()
        self.ept = PageTable(host_preset, self._alloc_ept_table, self._free_host_frame)
        self._map_ept(ZERO_GPFN, host.zero_pfn, writable=False)
        host.get(host.zero_pfn)
        self.kind[ZERO_GPFN] = FrameKind.ZERO
        self._top = ZERO_GPFN + 1  # frames [_top, ram_pages) were never used
        self._freed: list[int] = []  # frames given back, reused first (LIFO)
        self.dcss_mapped: set[int] = set()  # segment blocks this guest's EPT maps

        self.cache = PageCache(size, policy)
        self.ra: dict[int, FileRaState] = {}
        self.rmap: dict[int, _Mapping] = {}
        self.procs: dict[int, MmStruct] = {}
        self.tlb = TLB(tlb_entries, tlb_ways)
        self._next_pid = 1

    # --- guest-physical memory on the host ---------------------------------------------

    def _alloc_ept_table(self) -> int | None:
        return self.host.alloc(FrameKind.PAGETABLE, self.gid, self.host.unique_content())

    def _free_host_frame(self, pfn: int) -> None:
        self.host.put(pfn)

    def _map_ept(self, gpfn: int, hpfn: int, writable: bool) -> bool:
        flags = (PTE_W if writable else 0) | PTE_X | PTE_U
        return self.ept.map(gpfn, hpfn, flags, replace=True)

    def _back(self, gpfn: int, kind: FrameKind, content: int) -> bool:
        """Give `gpfn` a host frame on first use (an EPT violation), else retag its frame."""
        hpfn = int(self.backing[gpfn])
        if hpfn < 0:
            new = self.host.alloc(kind, self.gid, content)
            if new is None:
                return False
            self.stats.ept_violations += 1
            self.backing[gpfn] = new
            if not self._map_ept(gpfn, new, writable=True):
                self.host.put(new)
                self.backing[gpfn] = -1
                return False
        else:
            hpfn = self._unshare_host_frame(gpfn)
            if hpfn < 0:
                return False
            self.host.retag(hpfn, kind, content)
        self.kind[gpfn] = kind
        return True

    def _unshare_host_frame(self, gpfn: int) -> int:
        """Before the guest writes `gpfn`: break a KSM merge (cow_ksm). Returns the frame."""
        hpfn = int(self.backing[gpfn])
        if self.host.kind[hpfn] != FrameKind.KSM:
            return hpfn
        new = self.host.alloc(FrameKind(self.kind[gpfn]), self.gid,
                              int(self.host.content[hpfn]))
        if new is None:
            return -1
        self.host.put(hpfn)
        self.backing[gpfn] = new
        self._map_ept(gpfn, new, writable=True)
        self.stats.cow_ksm += 1
        return new

    def write_page(self, gpfn: int, content: int) -> bool:
        """The guest writes `gpfn` with `content` (a KSM-merged frame is copied first)."""
        hpfn = self._unshare_host_frame(gpfn)
        if hpfn < 0:
            return False
        self.host.content[hpfn] = content
        return True

    def remap_backing(self, gpfn: int, hpfn: int) -> None:
        """Point guest frame `gpfn` at host frame `hpfn`, read-only (KSM's replace_page)."""
        self.backing[gpfn] = hpfn
        self._map_ept(gpfn, hpfn, writable=False)

    def host_frame(self, gpfn: int) -> int:
        """The host frame behind guest frame `gpfn` (RAM or the shared segment), -1 if none."""
        if gpfn >= self.dcss_base and self.segment is not None:
            return int(self.segment.frame_of[gpfn - self.dcss_base])
        if gpfn == ZERO_GPFN:
            return self.host.zero_pfn  # mapped by the EPT, but not RAM this guest backs
        return int(self.backing[gpfn]) if 0 <= gpfn < len(self.backing) else -1

    @property
    def free_pages(self) -> int:
        """Guest frames on the free list (never used or given back)."""
        return len(self._freed) + self.ram_pages - self._top

    def _take_free(self) -> int | None:
        if self._freed:
            return self._freed.pop()
        if self._top == self.ram_pages:
            return None
        gpfn = self._top
        self._top += 1
        if gpfn >= len(self.backing):
            self._grow(min(self.ram_pages, 2 * len(self.backing)))
        return gpfn

    def _grow(self, size: int) -> None:
        old = len(self.backing)
        self.backing = np.concatenate([self.backing, np.full(size - old, -1, np.int64)])
        self.kind = np.concatenate([self.kind, np.zeros(size - old, np.uint8)])
        self.cache.grow(size)

    def alloc_page(self, kind: FrameKind, content: int = CONTENT_ZERO) -> int | None:
        """Model of alloc_pages: a guest frame, reclaiming page cache if none is free."""
        if not self.free_pages:
            textbook = self.cache.policy != "linux"
            self.shrink(1 if textbook else SWAP_CLUSTER_MAX)
        gpfn = self._take_free()
        if gpfn is not None:
            if self._back(gpfn, kind, content):
                return gpfn
            self._freed.append(gpfn)  # the host is out of memory
        self.stats.oom += 1
        if self.bus:
            self.bus.emit(Oom(self.time, self.gid, "host" if gpfn is not None else "guest"))
        return None

    def free_page(self, gpfn: int) -> None:
        """Give `gpfn` back to the guest's free list (its host frame stays resident)."""
        assert 0 < gpfn < self.ram_pages, f"free_page: gpfn {gpfn} is not guest RAM"
        assert gpfn not in self.rmap, f"free_page: gpfn {gpfn} is still mapped"
        self.kind[gpfn] = FrameKind.GUEST_FREE
        hpfn = int(self.backing[gpfn])
        if self.host.kind[hpfn] != FrameKind.KSM:  # a merged frame keeps serving others
            self.host.retag(hpfn, FrameKind.GUEST_FREE)
        self._freed.append(gpfn)

    # --- cloning ---------------------------------------------------------------------------

    def retire(self) -> None:
        """Keep only what the host and the results need: frames, EPT, counters, page counts.

        A guest that will run nothing more drops its page cache, reverse map and
        processes (for experiments with a thousand guests); KSM can still scan it.
        """
        if self.retired is None:
            self.retired = self.page_counts()
        self.cache = PageCache(0, self.cache.policy)
        self.rmap, self.procs, self.ra = {}, {}, {}

    retired: dict[str, int] | None = None  # the page counts at retirement

    def clone(self, gid: int, retired: bool = False) -> Guest | None:
        """A new guest in exactly this guest's state, on host frames of its own.

        What running the same seeded workload in a fresh guest would have produced:
        the same page cache, processes, page tables and counters; RAM pages with the
        same contents (content written fresh gets fresh ids, so clones never look
        identical to KSM where real runs would not); shared-segment blocks mapped
        again. `retired`: make it already retired (nothing but frames and counters
        copied). None if the host is out of frames.
        """
        host = self.host
        backed = np.flatnonzero(self.backing >= 0)
        backed = backed[backed != ZERO_GPFN]
        contents = host.content[self.backing[backed]]
        fresh = contents < 0
        if fresh.any():
            ids, inverse = np.unique(contents[fresh], return_inverse=True)
            contents[fresh] = host.unique_contents(ids.size)[inverse]
        pfns = host.alloc_many(self.kind[backed], gid, contents)
        if pfns is None:
            return None
        new = copy.copy(self)
        new.gid = gid
        new.stats = dataclasses.replace(self.stats)
        new.backing = np.full(len(self.backing), -1, dtype=np.int64)
        new.backing[backed] = pfns
        new.kind = self.kind.copy()
        new._freed = list(self._freed)
        new.dcss_mapped = set(self.dcss_mapped)
        if retired:
            new.retired = None
            new.retired = self.page_counts()
            new.cache = PageCache(0, self.cache.policy)
            new.ra, new.rmap, new.procs = {}, {}, {}
            new.tlb = TLB(self.tlb.entries, self.tlb.ways)  # never shared with the template
        else:
            new.cache = self.cache.copy()
            new.ra = {ino: dataclasses.replace(ra) for ino, ra in self.ra.items()}
            new.rmap = {gpfn: _Mapping(dict(m.users)) for gpfn, m in self.rmap.items()}
            new.procs = {pid: mm.copy(mm.pt.copy(new._alloc_table_page, new._free_table_page))
                         for pid, mm in self.procs.items()}
            new.tlb = copy.deepcopy(self.tlb)
        # The EPT: RAM writable, the zero page and the segment read-only.
        new.ept = PageTable(self.host_preset, new._alloc_ept_table, new._free_host_frame)
        new._map_ept(ZERO_GPFN, host.zero_pfn, writable=False)
        host.get(host.zero_pfn)
        new.ept.map_many(backed, pfns, PTE_W | PTE_X | PTE_U)
        if self.dcss_mapped:
            assert self.segment is not None
            blocks = np.array(sorted(self.dcss_mapped), dtype=np.int64)
            frames = self.segment.frame_of[blocks]
            new.ept.map_many(new.dcss_base + blocks, frames, PTE_X | PTE_U)
            np.add.at(host.refcount, frames, 1)
        return new

    # --- the XIP window: segment blocks in guest-physical space ------------------------------

    def map_segment_block(self, block: int) -> int | None:
        """The gpfn of image `block` in the DCSS window, its EPT entry installed read-only.

        The first guest touching the block makes the host page it in.
        """
        assert self.segment is not None, "map_segment_block: no XIP mount"
        if block not in self.dcss_mapped:
            page_ins = self.segment.page_ins
            hpfn = self.segment.direct_access(block, self.time, self.gid)
            if hpfn is None:
                return None
            if self.segment.page_ins != page_ins:  # this guest waited for the host page-in
                self.time += self.costs.host_page_in_ns
                self.page_in_ns += self.costs.host_page_in_ns
                self.stats.host_page_ins += 1
            if not self._map_ept(self.dcss_base + block, hpfn, writable=False):
                return None
            self.host.get(hpfn)  # one reference per guest mapping the frame
            self.dcss_mapped.add(block)
            self.stats.ept_violations += 1
        return self.dcss_base + block

    # --- processes ---------------------------------------------------------------------

    def new_process(self, name: str = "") -> MmStruct | None:
        """fork+exec's empty address space: a root page table in guest RAM, a fresh ASID.

        None when the guest has no frame left for the root table (fork fails: ENOMEM).
        """
        if not self.free_pages and not self.shrink(1):
            self.stats.oom += 1
            return None
        pid = self._next_pid
        self._next_pid += 1
        pt = PageTable(self.preset, self._alloc_table_page, self._free_table_page)
        mm = MmStruct(pid=pid, asid=pid, pt=pt, name=name)
        self.procs[pid] = mm
        return mm

    def _alloc_table_page(self) -> int | None:
        return self.alloc_page(FrameKind.PAGETABLE, self.host.unique_content())

    def _free_table_page(self, gpfn: int) -> None:
        self.free_page(gpfn)

    def mmap(self, mm: MmStruct, start: int, length: int, prot: Prot | str, *,
             path: str | None = None, offset: int = 0, shared: bool = False,
             name: str = "", advice: str = "normal") -> Vma:
        """do_mmap: a VMA for `path` of the image (or anonymous memory); nothing is mapped yet.

        A shared writable mapping of a file on the frozen XIP mount is refused.
        """
        prot = Prot.parse(prot) if isinstance(prot, str) else prot
        mask = (1 << PAGE_SHIFT) - 1
        end = (start + length + mask) & ~mask
        ino = None
        dax = False
        if path is not None:
            ino = self.disk.lookup(path)
            dax = self.segment is not None
            if dax and shared and prot & Prot.W:
                raise ReadOnlyImageError(
                    f"mmap: {path} is on the frozen XIP image: a shared writable mapping "
                    f"would write it", path)
        if offset & mask:
            raise ParameterError(f"mmap: offset {offset:#x} is not page aligned")
        vma = Vma(start & ~mask, end, prot, shared=shared, ino=ino,
                  pgoff=offset >> PAGE_SHIFT, name=name or (path or ""), advice=advice, dax=dax)
        return mm.insert_vma(vma)

    def fork(self, mm: MmStruct) -> MmStruct | None:
        """Model of dup_mmap → copy_page_range: a child sharing every page of `mm`.

        Pages of private writable mappings become copy-on-write in both (their PTEs
        write-protected), so whichever writes first gets a copy (do_wp_page) and the
        other then reuses the page. None if the guest has no memory for the child.
        """
        child = self.new_process(mm.name)
        if child is None:
            return None
        for area in mm.vmas:
            child.insert_vma(dataclasses.replace(area))
        for vpn in mm.pt.mapped_vpns().tolist():
            pte = mm.pt.lookup_pte(vpn)
            if not self.preset.pte_present_p(pte):
                continue
            flags = int(self.preset.pte_flags(pte))
            vma = mm.find_vma(vpn << PAGE_SHIFT)
            cow = vma is not None and not vma.shared and bool(vma.prot & Prot.W)
            writable = bool(flags & PTE_W) and not cow
            if cow and flags & PTE_W:
                mm.pt.clear_flags(vpn, PTE_W)  # the parent's copy is write-protected too
                self.tlb.invalidate(mm.asid, vpn)
            if not self.install_pte(child, vpn, self.preset.pte_pfn(pte), writable,
                                    bool(flags & PTE_X), dirty=bool(flags & PTE_D)):
                self.exit_process(child)  # out of memory for the child's tables
                self.stats.oom += 1
                return None
        return child

    def munmap(self, mm: MmStruct, start: int, length: int) -> None:
        """do_munmap: remove [start, start + length) from `mm`, splitting VMAs at its ends."""
        mask = (1 << PAGE_SHIFT) - 1
        if start & mask:
            raise ParameterError(f"munmap: start {start:#x} is not page aligned")
        end = (start + length + mask) & ~mask
        for vma in self._split(mm, start, end):
            for vpn in range(vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT):
                self.unmap_pte(mm, vpn)
            mm.vmas.remove(vma)

    def mprotect(self, mm: MmStruct, start: int, length: int, prot: Prot | str) -> None:
        """do_mprotect_pkey: new permissions for [start, start + length), splitting VMAs.

        Revoked write or execute rights are taken out of the present PTEs (and the TLB);
        granted ones are left for the next fault to install, as Linux does for private
        file mappings (so a later write still copies).
        """
        prot = Prot.parse(prot) if isinstance(prot, str) else prot
        mask = (1 << PAGE_SHIFT) - 1
        if start & mask:
            raise ParameterError(f"mprotect: start {start:#x} is not page aligned")
        end = (start + length + mask) & ~mask
        inside = self._split(mm, start, end)
        if sum(v.end - v.start for v in inside) != end - start:
            raise ParameterError(f"mprotect: [{start:#x}, {end:#x}) is not all mapped")
        revoke = (0 if prot & Prot.W else PTE_W) | (0 if prot & Prot.X else PTE_X)
        for vma in inside:
            vma.prot = prot
            if not revoke:
                continue
            for vpn in range(vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT):
                if self.preset.pte_present_p(mm.pt.lookup_pte(vpn)):
                    mm.pt.clear_flags(vpn, revoke)
                    self.tlb.invalidate(mm.asid, vpn)

    def _split(self, mm: MmStruct, start: int, end: int) -> list[Vma]:
        """Split VMAs at `start` and `end` (__split_vma); return those inside [start, end)."""
        for cut in (start, end):
            vma = mm.find_vma(cut)
            if vma is not None and vma.start < cut:
                tail = dataclasses.replace(vma, start=cut,
                                           pgoff=vma.pgoff + ((cut - vma.start) >> PAGE_SHIFT)
                                           if vma.ino is not None else 0)
                vma.end = cut
                mm.insert_vma(tail)
        return [v for v in mm.vmas if start <= v.start and v.end <= end]

    def exit_process(self, mm: MmStruct) -> None:
        """exit_mmap: unmap everything, drop anonymous pages, free the page tables."""
        for vpn in mm.pt.mapped_vpns().tolist():
            self.unmap_pte(mm, vpn)
        self.tlb.flush(mm.asid)
        mm.pt.free()
        del self.procs[mm.pid]

    # --- PTEs and the reverse map ---------------------------------------------------------

    def install_pte(self, mm: MmStruct, vpn: int, gpfn: int, writable: bool, exec_: bool,
                    dirty: bool = False) -> bool:
        """set_pte_at: map `vpn` → `gpfn` (accessed, and dirty if written); track the rmap."""
        flags = PTE_U | PTE_A
        if writable:
            flags |= PTE_W
        if exec_:
            flags |= PTE_X
        if dirty:
            flags |= PTE_D
        old = mm.pt.lookup_pte(vpn)
        if self.preset.pte_present_p(old):
            self._rmap_del(self.preset.pte_pfn(old), mm.pid, vpn)
        if not mm.pt.map(vpn, gpfn, flags, replace=True):
            return False  # no memory for a page-table page
        self.tlb.invalidate(mm.asid, vpn)
        if 0 < gpfn < self.ram_pages and self.kind[gpfn] != FrameKind.ZERO:
            self.rmap.setdefault(gpfn, _Mapping()).users[(mm.pid, vpn)] = exec_
        if self.bus:
            self._emit_pte_install(mm, vpn, gpfn, writable)
        return True

    def _emit_pte_install(self, mm: MmStruct, vpn: int, gpfn: int, writable: bool) -> None:
        kind, block, ino, pgoff = "anon", -1, -1, -1
        if gpfn >= self.dcss_base and self.segment is not None:
            kind, block = "segment", gpfn - self.dcss_base
        elif gpfn == ZERO_GPFN:
            kind = "zero"
        elif gpfn in self.cache.key_of:
            kind = "pagecache"
            ino, pgoff = self.cache.key_of[gpfn]
        elif self.kind[gpfn] == FrameKind.COW:
            kind = "cow"
        self.bus.emit(PteInstall(self.time, self.gid, mm.pid, vpn, gpfn, self.host_frame(gpfn),
                                 writable, self.describe_gpfn(gpfn), kind, block, ino, pgoff))

    def describe_gpfn(self, gpfn: int) -> str:
        """What guest frame `gpfn` holds, in words (for events and explanations)."""
        if gpfn >= self.dcss_base and self.segment is not None:
            return f"shared segment (image block {gpfn - self.dcss_base})"
        if gpfn == ZERO_GPFN:
            return "zero page"
        key = self.cache.key_of.get(gpfn)
        if key is not None:
            return f"page cache (inode {key[0]} page {key[1]})"
        return {FrameKind.ANON: "anonymous", FrameKind.COW: "private copy (CoW)",
                FrameKind.PAGETABLE: "page table"}.get(FrameKind(self.kind[gpfn]), "guest RAM")

    def unmap_pte(self, mm: MmStruct, vpn: int) -> None:
        """Clear one PTE (zap_pte_range / try_to_unmap_one), freeing a private anonymous page."""
        old = mm.pt.unmap(vpn)
        self.tlb.invalidate(mm.asid, vpn)
        if not self.preset.pte_present_p(old):
            return
        gpfn = self.preset.pte_pfn(old)
        self._rmap_del(gpfn, mm.pid, vpn)
        kind = self.kind[gpfn] if 0 <= gpfn < self.ram_pages else None
        if kind in (FrameKind.ANON, FrameKind.COW) and gpfn not in self.rmap:
            self.free_page(gpfn)

    def _rmap_del(self, gpfn: int, pid: int, vpn: int) -> None:
        mapping = self.rmap.get(gpfn)
        if mapping is not None:
            mapping.users.pop((pid, vpn), None)
            if not mapping.users:
                del self.rmap[gpfn]

    def mapcount(self, gpfn: int) -> int:
        """page_mapcount: PTEs mapping `gpfn`."""
        mapping = self.rmap.get(gpfn)
        return len(mapping.users) if mapping else 0

    # --- the page cache ---------------------------------------------------------------------

    def ra_state(self, ino: int) -> FileRaState:
        """The file's readahead state (one struct file per inode per guest, a simplification)."""
        ra = self.ra.get(ino)
        if ra is None:
            ra = self.ra[ino] = FileRaState(ra_pages=self.ra_pages)
        return ra

    def active_floor(self) -> int:
        """What a refault distance is compared with: active file + anonymous pages."""
        anon = int(np.count_nonzero((self.kind == FrameKind.ANON) | (self.kind == FrameKind.COW)))
        return self.cache.nr_active + anon

    def shrink(self, nr_to_reclaim: int) -> int:
        """Model of mm/vmscan.c:shrink_lruvec for file pages: free up to `nr_to_reclaim` frames.

        The textbook policies free exactly one page, the one they would choose.
        """
        cache = self.cache
        if cache.policy in ("arc", "opt"):
            if not len(cache):
                return 0
            if cache.policy == "opt":
                victim = cache.opt_victim()
            else:
                victim = cache._arc_replace(False)
                cache.arc_ghost(victim)
            self._reclaim_page(victim, shadow=False)
            return 1
        if cache.policy == "linux":
            self._shrink_active_list()
        reclaimed = 0
        budget = 2 * (cache.nr_inactive + cache.nr_active) + 1
        while reclaimed < nr_to_reclaim and budget > 0 and (cache.inactive or cache.active):
            budget -= 1
            if not cache.inactive:
                self._shrink_active_list(force=True)
                continue
            gpfn = next(iter(cache.inactive))  # the tail: the oldest page
            self.stats.pgscan += 1
            if gpfn in cache.pinned:
                cache.rotate(gpfn)  # a fault handler holds it
                continue
            verdict = self._check_references(gpfn)
            if verdict == "activate":
                cache.activate(gpfn)
                continue
            if verdict == "keep":
                cache.rotate(gpfn)
                continue
            self._reclaim_page(gpfn)
            reclaimed += 1
        return reclaimed

    def _check_references(self, gpfn: int) -> str:
        """Model of folio_check_references: "activate", "keep" or "reclaim"."""
        cache = self.cache
        if cache.policy in ("fifo", "lru"):
            return "reclaim"
        referenced_folio = bool(cache.referenced[gpfn])
        cache.referenced[gpfn] = False
        if cache.policy == "clock":
            return "keep" if referenced_folio else "reclaim"  # second chance
        referenced_ptes, exec_mapped = self._folio_referenced(gpfn)
        if referenced_ptes:
            cache.referenced[gpfn] = True
            if referenced_folio or referenced_ptes > 1:
                return "activate"
            # Activate file-backed executable folios after first usage.
            if exec_mapped:
                return "activate"
            return "keep"
        return "reclaim"

    def _folio_referenced(self, gpfn: int) -> tuple[int, bool]:
        """folio_referenced: count and clear the accessed bits of the PTEs mapping `gpfn`."""
        mapping = self.rmap.get(gpfn)
        if mapping is None:
            return 0, False
        young = 0
        exec_mapped = False
        for (pid, vpn), is_exec in mapping.users.items():
            mm = self.procs[pid]
            old = mm.pt.clear_flags(vpn, PTE_A)
            if int(self.preset.pte_flags(old)) & PTE_A:
                young += 1
                self.tlb.invalidate(mm.asid, vpn)  # ptep_clear_flush_young
            exec_mapped = exec_mapped or is_exec
        return young, exec_mapped

    def _shrink_active_list(self, force: bool = False) -> None:
        """Demote from the active tail while the inactive list is low (inactive_is_low)."""
        cache = self.cache
        total_gb = (cache.nr_active + cache.nr_inactive) >> (30 - PAGE_SHIFT)
        ratio = int((10 * total_gb) ** 0.5) if total_gb else 1
        moves = cache.nr_active if force else 0
        while cache.active and (moves > 0 or cache.nr_inactive * ratio < cache.nr_active):
            moves -= 1
            gpfn = next(iter(cache.active))
            young, exec_mapped = self._folio_referenced(gpfn)
            if young and exec_mapped and not force:
                cache.rotate(gpfn)  # referenced executable pages get another trip
                continue
            cache.deactivate(gpfn)
            if force:
                break

    def _reclaim_page(self, gpfn: int, shadow: bool = True) -> None:
        """shrink_folio_list for one clean page: unmap it everywhere, drop it, free the frame."""
        mapping = self.rmap.get(gpfn)
        if mapping is not None:
            for pid, vpn in list(mapping.users):
                self.unmap_pte(self.procs[pid], vpn)
        key = self.cache.remove(gpfn, shadow=shadow)
        self.stats.pgsteal += 1
        if self.bus:
            from xipmodel.events import PageCacheEvict

            self.bus.emit(PageCacheEvict(self.time, self.gid, key[0], key[1], gpfn))
        self.free_page(gpfn)

    # --- accounting ---------------------------------------------------------------------

    def page_counts(self) -> dict[str, int]:
        """Guest frames by use: what `free` and /proc/meminfo would show."""
        if self.retired is not None:
            return dict(self.retired)
        kinds = np.bincount(self.kind, minlength=len(FrameKind))
        return {
            "page_cache": len(self.cache),
            "anon": int(kinds[FrameKind.ANON]),
            "cow": int(kinds[FrameKind.COW]),
            "page_tables": int(kinds[FrameKind.PAGETABLE]),
            "free": self.free_pages,
            "active": self.cache.nr_active,
            "inactive": self.cache.nr_inactive,
            "xip_mapped_blocks": len(self.dcss_mapped),
        }

    # --- running code ---------------------------------------------------------------------

    def access(self, mm: MmStruct, address: int, kind: str = "r",
               content: int | None = None) -> int:
        """One CPU access ("r", "w", "x") by `mm` at `address`; VM_FAULT_* flags (0: none)."""
        from xipmodel.mm.memory import access

        return int(access(self, mm, address, kind, content))

    def read(self, path: str, offset: int = 0, count: int = 1 << 62) -> int:
        """The read() system call on `path`: through the page cache (readahead), or in place."""
        ino = self.disk.lookup(path)
        if self.segment is not None:
            # dax_iomap_rw: copied straight from the shared segment, no page cache.
            size = self.disk.file_size(ino)
            end = min(size, offset + count)
            for index in range(offset >> PAGE_SHIFT, -(-end >> PAGE_SHIFT)):
                block = self.disk.bmap(ino, index)
                if block:
                    self.map_segment_block(block)
            return max(0, end - offset)
        from xipmodel.mm.filemap import filemap_read

        return filemap_read(self, ino, offset, count)
