"""Model of one guest as a whole: its RAM on the host and its EPT, its processes, its page cache.

Nested paging: a process's page table maps guest-virtual to guest-physical
pages; the guest's EPT (a host page table) maps guest-physical to host frames,
filled lazily the first time the guest touches a page (an EPT violation)::

    guest-virtual ──process page table──► guest-physical ──EPT──► host frame
                                           0 .. ram_pages          page cache copy, anon, ...
                                           dcss_base + block  ──►  the shared segment's frame

Guest RAM a guest once touched stays resident on the host even after the guest
frees it (no balloon, no free page reporting): that is FrameKind.GUEST_FREE.
Guest frame 0 is the guest's zero page; it is backed by the host's zero page.

This file holds the guest's state and wires the mechanisms together; each
mechanism is the file named after its Linux counterpart::

    access ─► memory.py (handle_mm_fault → do_fault …) ─► filemap.py / dax.py (vm_ops)
    read() ─► filemap.py (filemap_read) / dax.py (dax_iomap_rw)
    frames: page_alloc.py ─► vmscan.py (reclaim) ─► rmap.py, workingset.py, pagecache.py
    mmap, munmap, mprotect, exit: mmap.py     new process, fork: fork.py
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Final

import numpy as np

from xipmodel.errors import HostFullError, ParameterError
from xipmodel.events import EventBus
from xipmodel.ext2.reader import Ext2Image
from xipmodel.mm import dax, filemap, fork, memory, mmap
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.page_alloc import FreeArea, alloc_page, free_page
from xipmodel.mm.pagecache import PageCache
from xipmodel.mm.pagetable import PageTable, nested_walk_refs
from xipmodel.mm.readahead import VM_READAHEAD_PAGES, FileRaState
from xipmodel.mm.rmap import PteMappers
from xipmodel.mm.segment import SharedSegment, memremap_pages
from xipmodel.mm.tlb import TLB
from xipmodel.mm.vma import MmStruct, Prot, Vma
from xipmodel.params import (
    DEFAULT_COSTS,
    DEFAULT_KERNEL,
    PTE_U,
    PTE_W,
    PTE_X,
    X86_64,
    Costs,
    KernelProfile,
    MMUPreset,
    kernel_profile,
)

__all__ = ["FAULT_AROUND_PAGES", "Guest", "GuestStats"]

FAULT_AROUND_PAGES: Final = 16  # fault_around_bytes = 64 KiB
_INITIAL_FRAMES: Final = 1024  # per-frame arrays start this long and double
ZERO_GPFN: Final = 0
_EPT_RWX: Final = PTE_W | PTE_X | PTE_U  # an EPT entry: guest RAM the guest may write
_EPT_RX: Final = PTE_X | PTE_U  # read-only (a KSM-merged frame, the shared segment)


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
        kernel: KernelProfile | str = DEFAULT_KERNEL,
        large_folios: bool = False,
        tlb_entries: int = 64,
        tlb_ways: int = 4,
        costs: Costs = DEFAULT_COSTS,
    ) -> None:
        """Boot a guest; with `segment`, files of `disk` are mounted -o xip from it.

        `kernel`: the guest kernel's rules (params.KERNELS: "2.6-xip", "6.1", "6.18").
        `large_folios`: the guest's files live on a filesystem whose page cache holds
        large folios under that kernel (ext4 on 6.16+, XFS); the frozen ext2 image never
        does, so this is for comparing with other filesystems (kernelcheck).
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
        self.kernel = kernel_profile(kernel)
        self.large_folios = large_folios
        self.time = 0  # model nanoseconds, advanced by accesses, walks, faults and I/O
        self.page_in_ns = 0  # of which waiting for the host to page in segment blocks
        self.costs = costs
        self.stats = GuestStats()
        self.walk_cost = nested_walk_refs(preset.nlevels, host_preset.nlevels)

        # Guest-physical memory: RAM, then (aligned, above it) the shared segment's window.
        # Frames are handed out lowest first, so the arrays only cover the frames used so far.
        size = min(ram_pages, _INITIAL_FRAMES)
        self.backing = np.full(size, -1, dtype=np.int64)  # gpfn → host frame
        self.kind = np.zeros(size, dtype=np.uint8)  # what the guest uses each gpfn for
        self.dcss_base = 1 << max(ram_pages - 1, 1).bit_length()
        # Booting takes host frames before the guest runs anything: the EPT's root and the
        # tables down to the zero page's entry (a frame per level), and a DAX device's
        # struct pages. A host without them cannot start the guest: HostFullError.
        ept = PageTable.pgd_alloc(host_preset, self._alloc_ept_table, self._free_host_frame)
        if ept is None:
            raise self._host_full("its EPT's root table")
        self.ept = ept
        if not self._map_ept(ZERO_GPFN, host.zero_pfn, writable=False):
            self.ept.free()
            raise self._host_full("the EPT tables mapping its zero page")
        host.get(host.zero_pfn)
        self.kind[ZERO_GPFN] = FrameKind.ZERO
        self.free_area = FreeArea(ram_pages, top=ZERO_GPFN + 1)  # mm/page_alloc.py
        self.dcss_mapped: set[int] = set()  # segment blocks this guest's EPT maps

        self.cache = PageCache(size, policy)
        self.ra: dict[int, FileRaState] = {}
        self.rmap: dict[int, PteMappers] = {}  # mm/rmap.py
        self.procs: dict[int, MmStruct] = {}
        self.tlb = TLB(tlb_entries, tlb_ways)
        self.next_pid = 1
        # A DAX device's struct pages, taken from RAM at boot (none for a DCSS).
        self.memmap: list[int] = []
        if segment is not None and not memremap_pages(self):
            # alloc_page failed either on an empty free list (the guest's RAM is too
            # small) or with a gpfn in hand that the host had no frame for (given back).
            host_full = self.free_pages > 0
            self._unboot()
            memmap = (f"the struct pages of the DAX device "
                      f"({segment.memmap_pages(preset.page_size)} pages)")
            if host_full:
                raise self._host_full(memmap)
            raise ParameterError(f"Guest: ram_pages {ram_pages} cannot hold {memmap}")

    def _host_full(self, what: str) -> HostFullError:
        """The error of a boot that found the host out of frames for `what`."""
        return HostFullError(f"Guest: the host's {self.host.capacity} frames are full: none "
                             f"left to boot guest {self.gid} ({what})")

    def _unboot(self) -> None:
        """Give the host back what a boot that failed took: RAM frames, zero page, EPT."""
        self.host.put_many(self.backing[self.backing >= 0])
        self.host.put(self.host.zero_pfn)
        self.ept.free()

    # --- guest-physical memory on the host ---------------------------------------------

    def _alloc_ept_table(self) -> int | None:
        return self.host.alloc(FrameKind.PAGETABLE, self.gid, self.host.unique_content())

    def _free_host_frame(self, pfn: int) -> None:
        self.host.put(pfn)

    def _map_ept(self, gpfn: int, hpfn: int, writable: bool) -> bool:
        return self.ept.map(gpfn, hpfn, _EPT_RWX if writable else _EPT_RX, replace=True)

    def back_page(self, gpfn: int, kind: FrameKind, content: int) -> bool:
        """Give `gpfn` a host frame on first use (an EPT violation), else retag its frame.

        False if the host is out of frames. The per-frame arrays grow to cover `gpfn`.
        """
        if gpfn >= len(self.backing):
            self._grow(min(self.ram_pages, 2 * len(self.backing)))
        hpfn: int = self.backing.item(gpfn)
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
        hpfn: int = self.backing.item(gpfn)
        if self.host.kind.item(hpfn) != FrameKind.KSM:
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
        return self.free_area.nr_free

    def _grow(self, size: int) -> None:
        old = len(self.backing)
        self.backing = np.concatenate([self.backing, np.full(size - old, -1, np.int64)])
        self.kind = np.concatenate([self.kind, np.zeros(size - old, np.uint8)])
        self.cache.grow(size)

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

    def clone(self, gid: int, retired: bool = False,
              host: HostMemory | None = None) -> Guest | None:
        """A new guest in exactly this guest's state, on host frames of its own.

        What running the same seeded workload in a fresh guest would have produced:
        the same page cache, processes, page tables and counters; RAM pages with the
        same contents (content written fresh gets fresh ids, so clones never look
        identical to KSM where real runs would not); shared-segment blocks mapped
        again. `retired`: make it already retired (nothing but frames and counters
        copied). `host`: on that host's frames instead (a snapshot kept off this host,
        to clone back later; its EPT maps the segment's frames without holding them).
        None if the host is out of frames.
        """
        host = self.host if host is None else host
        backed = np.flatnonzero(self.backing >= 0)
        backed = backed[backed != ZERO_GPFN]
        if len(backed) + self.ept.table_count > host.capacity - host.allocated:
            return None  # its RAM and EPT (at most as many tables as this EPT) do not fit
        contents = self.host.content[self.backing[backed]]
        fresh = contents < 0
        if fresh.any():
            ids, inverse = np.unique(contents[fresh], return_inverse=True)
            contents[fresh] = host.unique_contents(ids.size)[inverse]
        pfns = host.alloc_many(self.kind[backed], gid, contents)
        assert pfns is not None, "clone: the frames were counted"
        new = copy.copy(self)
        new.gid, new.host = gid, host
        new.stats = dataclasses.replace(self.stats)
        new.backing = np.full(len(self.backing), -1, dtype=np.int64)
        new.backing[backed] = pfns
        new.kind = self.kind.copy()
        new.free_area = self.free_area.copy()
        new.dcss_mapped = set(self.dcss_mapped)
        new.memmap = list(self.memmap)
        if retired:
            new.retired = None
            new.retired = self.page_counts()
            new.cache = PageCache(0, self.cache.policy)
            new.ra, new.rmap, new.procs = {}, {}, {}
            new.tlb = TLB(self.tlb.entries, self.tlb.ways)  # never shared with the template
        else:
            new.cache = self.cache.copy()
            new.ra = {ino: dataclasses.replace(ra) for ino, ra in self.ra.items()}
            new.rmap = {gpfn: PteMappers(dict(m.users)) for gpfn, m in self.rmap.items()}
            new.procs = {pid: mm.copy(mm.pt.copy(new.alloc_table_page, new.free_table_page))
                         for pid, mm in self.procs.items()}
            new.tlb = self.tlb.copy()
        # The EPT: RAM writable, the zero page and the segment read-only.
        new.ept = PageTable(self.host_preset, new._alloc_ept_table, new._free_host_frame)
        new._map_ept(ZERO_GPFN, host.zero_pfn, writable=False)
        host.get(host.zero_pfn)
        new.ept.map_many(backed, pfns, _EPT_RWX)
        if self.dcss_mapped:
            assert self.segment is not None
            blocks = np.array(sorted(self.dcss_mapped), dtype=np.int64)
            frames = self.segment.frame_of[blocks]
            new.ept.map_many(new.dcss_base + blocks, frames, _EPT_RX)
            if host is self.segment.host:
                np.add.at(host.refcount, frames, 1)
        return new

    def copy_frames(self, host: HostMemory) -> Guest:
        """This guest on `host`, a copy of its host (HostMemory.copy): its own frame map
        (backing) and EPT, for ksmd to scan and merge there; all else (page cache,
        processes, counters) is shared with this guest, and must not change."""
        new = copy.copy(self)
        new.host = host
        new.backing = self.backing.copy()
        new.ept = self.ept.copy(new._alloc_ept_table, new._free_host_frame)
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
        """An empty address space to exec into (fork.mm_alloc); None: ENOMEM."""
        return fork.mm_alloc(self, name)

    def alloc_table_page(self) -> int | None:
        """A guest frame for one of its processes' page tables (pte_alloc_one)."""
        return alloc_page(self, FrameKind.PAGETABLE, self.host.unique_content())

    def free_table_page(self, gpfn: int) -> None:
        """Give a page-table frame back (pte_free)."""
        free_page(self, gpfn)

    def mmap(self, mm: MmStruct, start: int, length: int, prot: Prot | str, *,
             path: str | None = None, offset: int = 0, shared: bool = False,
             name: str = "", advice: str = "normal") -> Vma:
        """The mmap system call: a VMA for `path` of the image or anonymous memory (do_mmap)."""
        return mmap.do_mmap(self, mm, start, length, prot, path=path, offset=offset,
                            shared=shared, name=name, advice=advice)

    def munmap(self, mm: MmStruct, start: int, length: int) -> None:
        """The munmap system call (mmap.do_munmap)."""
        mmap.do_munmap(self, mm, start, length)

    def mprotect(self, mm: MmStruct, start: int, length: int, prot: Prot | str) -> None:
        """The mprotect system call (mmap.do_mprotect)."""
        mmap.do_mprotect(self, mm, start, length, prot)

    def fork(self, mm: MmStruct) -> MmStruct | None:
        """fork(): a child sharing every page of `mm` (fork.dup_mmap); None: ENOMEM."""
        return fork.dup_mmap(self, mm)

    def exit_process(self, mm: MmStruct) -> None:
        """A process exits (mmap.exit_mmap)."""
        mmap.exit_mmap(self, mm)

    # --- what a frame is ---------------------------------------------------------------

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

    # --- the page cache ---------------------------------------------------------------------

    def ra_state(self, ino: int) -> FileRaState:
        """The file's readahead state (one struct file per inode per guest, a simplification)."""
        ra = self.ra.get(ino)
        if ra is None:
            ra = self.ra[ino] = FileRaState(ra_pages=self.ra_pages)
        return ra

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
            "struct_pages": int(kinds[FrameKind.MEMMAP]),
            "free": self.free_pages,
            "active": self.cache.nr_active,
            "inactive": self.cache.nr_inactive,
            "xip_mapped_blocks": len(self.dcss_mapped),
        }

    # --- running code ---------------------------------------------------------------------

    def access(self, mm: MmStruct, address: int, kind: str = "r",
               content: int | None = None) -> int:
        """One CPU access ("r", "w", "x") by `mm` at `address`; VM_FAULT_* flags (0: none)."""
        return memory.access(self, mm, address, kind, content)

    def read(self, path: str, offset: int = 0, count: int = 1 << 62) -> int:
        """The read() system call on `path`: through the page cache (readahead), or in place."""
        ino = self.disk.lookup(path)
        if self.segment is not None:
            return dax.dax_iomap_rw(self, ino, offset, count)
        return filemap.filemap_read(self, ino, offset, count)
