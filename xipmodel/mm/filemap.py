"""Model of mm/filemap.c: page-cache faults, mmap read-around, fault-around and read().

filemap_fault, for page `pgoff` of a file mapped by a guest process::

    beyond EOF? ─────────────────────────────────────────────► VM_FAULT_SIGBUS
    in the page cache (filemap_get_folio)?
      yes → minor fault; PG_readahead set? → do_async_mmap_readahead (next window)
      no  → major fault: do_sync_mmap_readahead reads a window from the virtual disk
            (read-around: 32 pages centred on the fault, 8 of lookahead; off once the
            file has MMAP_LOTSAMISS more misses than hits; MADV_RANDOM: just the page)

Pages read into the page cache are copies of image blocks in the guest's own
RAM: N guests running the same binary hold N copies.

Called from mm/memory.py through the VMA's vm_ops (`generic_file_vm_ops`, set by
mm/mmap.py), it calls back into memory.py's set_pte_range to map pages, as
mm/filemap.c calls mm/memory.c; frames come from mm/page_alloc.py, windows from
mm/readahead.py, the cache itself is mm/pagecache.py.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from xipmodel.events import DiskRead, PageCacheInsert, Readahead
from xipmodel.mm.frames import CONTENT_BLOCK, CONTENT_ZERO, FrameKind
from xipmodel.mm.memory import (
    VM_FAULT_LOCKED,
    VM_FAULT_MAJOR,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VmFaultInfo,
    set_pte_range,
)
from xipmodel.mm.page_alloc import alloc_page
from xipmodel.mm.readahead import MMAP_LOTSAMISS, Window
from xipmodel.mm.vma import VmOperations
from xipmodel.mm.vmscan import shrink_folio
from xipmodel.mm.workingset import workingset_size
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = [
    "add_to_page_cache",
    "do_async_mmap_readahead",
    "do_sync_mmap_readahead",
    "filemap_fault",
    "filemap_map_pages",
    "filemap_read",
    "generic_file_vm_ops",
    "page_cache_ra",
]


def file_pages(guest: Guest, ino: int) -> int:
    """Pages of the file (ceil(i_size / PAGE_SIZE))."""
    return -(-guest.disk.file_size(ino) // PAGE_SIZE)


def filemap_fault(vmf: VmFaultInfo) -> int:
    """Model of filemap_fault: find or read the page; sets vmf.page."""
    guest, ino, pgoff = vmf.guest, vmf.vma.ino, vmf.pgoff
    assert ino is not None, "filemap_fault: anonymous VMA"
    vmf.handler = vmf.handler or "filemap_fault"
    if pgoff >= file_pages(guest, ino):
        vmf.detail = f"page {pgoff} is beyond the end of the file"
        return VM_FAULT_SIGBUS
    # Do we have something in the page cache already?
    gpfn = guest.cache.find(ino, pgoff)
    result = VM_FAULT_LOCKED
    if gpfn is not None:
        # We hold the folio (a reference and its lock): readahead's reclaim must skip it.
        guest.cache.pinned.add(gpfn)
        try:
            do_async_mmap_readahead(vmf, gpfn)
        finally:
            guest.cache.pinned.discard(gpfn)
        vmf.detail = f"page {pgoff} found in the page cache (minor)"
    else:
        # No page in the page cache at all: a major fault, read it (and around it).
        result |= VM_FAULT_MAJOR
        do_sync_mmap_readahead(vmf)
        gpfn = guest.cache.find(ino, pgoff)
        if gpfn is None:
            # Readahead was off (or could not allocate): read just this page.
            page_cache_ra(guest, ino, Window(pgoff, 1, 0), "single")
            gpfn = guest.cache.find(ino, pgoff)
        if gpfn is None:
            return VM_FAULT_OOM
        vmf.detail = f"page {pgoff} read from the virtual disk (major)"
    vmf.page = gpfn
    return result


def do_sync_mmap_readahead(vmf: VmFaultInfo) -> None:
    """Model of do_sync_mmap_readahead: decide the window a major fault reads."""
    guest, ino, pgoff = vmf.guest, vmf.vma.ino, vmf.pgoff
    assert ino is not None
    ra = guest.ra_state(ino)
    if vmf.vma.advice == "random" or ra.ra_pages == 0:
        return
    if vmf.vma.advice == "sequential":
        page_cache_ra(guest, ino, ra.ondemand(pgoff, 1, hit_marker=False), "sync")
        return
    # Do we miss much more than hit in this file? If so, stop bothering with read-around.
    if ra.mmap_miss < MMAP_LOTSAMISS * 10:
        ra.mmap_miss += 1
    if ra.mmap_miss > MMAP_LOTSAMISS:
        return
    if vmf.vma.exec and guest.exec_aligned_readaround:
        # Linux ≥ 6.16: executable mappings read an aligned window, no lookahead.
        ra.start, ra.size, ra.async_size = pgoff - pgoff % ra.ra_pages, ra.ra_pages, 0
    else:
        # mmap read-around: a window centred on the fault.
        ra.start = max(0, pgoff - ra.ra_pages // 2)
        ra.size, ra.async_size = ra.ra_pages, ra.ra_pages // 4
    page_cache_ra(guest, ino, Window(ra.start, ra.size, ra.async_size), "read-around")


def do_async_mmap_readahead(vmf: VmFaultInfo, gpfn: int) -> None:
    """Model of do_async_mmap_readahead: a hit on a PG_readahead page reads the next window."""
    guest, ino, pgoff = vmf.guest, vmf.vma.ino, vmf.pgoff
    assert ino is not None
    ra = guest.ra_state(ino)
    if vmf.vma.advice == "random" or ra.ra_pages == 0:
        return
    if ra.mmap_miss > 0:
        ra.mmap_miss -= 1
    if guest.cache.readahead[gpfn]:
        guest.cache.readahead[gpfn] = False
        window = ra.ondemand(pgoff, 1, hit_marker=True,
                             next_miss=guest.cache.next_miss(ino, pgoff + 1, ra.ra_pages))
        page_cache_ra(guest, ino, window, "async")


def page_cache_ra(guest: Guest, ino: int, window: Window, kind: str) -> int:
    """Model of page_cache_ra_unbounded: read the window's uncached pages; mark the lookahead.

    Stops at the end of the file. Holes are zero-filled without disk I/O. Returns pages read.
    """
    start, size, async_size = window
    last = file_pages(guest, ino) - 1
    if size <= 0 or start > last:
        return 0
    end = min(start + size, last + 1)
    mark = start + size - async_size if async_size else -1
    read = 0
    for index in range(start, end):
        if guest.cache.find(ino, index) is not None:
            continue
        gpfn = add_to_page_cache(guest, ino, index)
        if gpfn is None:
            break
        read += 1
        if index == mark:
            guest.cache.readahead[gpfn] = True
    guest.stats.readahead_pages += max(0, read - 1)
    if guest.bus:
        guest.bus.emit(Readahead(guest.time, guest.gid, ino, start, size, async_size, kind,
                                 read))
    return read


def add_to_page_cache(guest: Guest, ino: int, index: int) -> int | None:
    """Allocate a guest frame, read page `index` of `ino` into it, put it on the LRU."""
    block = guest.disk.bmap(ino, index)
    content = CONTENT_BLOCK + block if block else CONTENT_ZERO
    cache = guest.cache
    if cache.policy == "arc":
        # ARC chooses its victim knowing the incoming page (a ghost hit moves p).
        victim, ghost = cache.arc_admit((ino, index), len(cache) + guest.free_pages)
        if victim is not None:
            if ghost:
                cache.arc_ghost(victim)
            shrink_folio(guest, victim, shadow=False)
    gpfn = alloc_page(guest, FrameKind.PAGECACHE, content)
    if gpfn is None:
        return None
    if block:
        guest.stats.disk_read_bytes += PAGE_SIZE
        guest.stats.disk_reads += 1
        guest.time += guest.costs.disk_ns_per_page
        if guest.bus:
            guest.bus.emit(DiskRead(guest.time, guest.gid, block, PAGE_SIZE))
    refault, activated = guest.cache.add(ino, index, gpfn, partial(workingset_size, guest))
    if guest.bus:
        guest.bus.emit(PageCacheInsert(guest.time, guest.gid, ino, index, gpfn, refault,
                                       activated))
    return gpfn


def filemap_map_pages(vmf: VmFaultInfo, start_pgoff: int, end_pgoff: int) -> bool:
    """Model of filemap_map_pages: map cached, up-to-date pages of [start, end] without I/O.

    Pages marked PG_readahead are left for the real fault (so async readahead fires).
    """
    guest, vma, mm = vmf.guest, vmf.vma, vmf.mm
    assert vma.ino is not None
    ra = guest.ra_state(vma.ino)
    last = file_pages(guest, vma.ino) - 1
    mapped = 0
    hit = False
    for pgoff in range(start_pgoff, min(end_pgoff, last) + 1):
        gpfn = guest.cache.find(vma.ino, pgoff)
        if gpfn is None or guest.cache.readahead[gpfn]:
            continue
        vpn = (vma.start >> PAGE_SHIFT) + pgoff - vma.pgoff
        if guest.preset.pte_present_p(mm.pt.lookup_pte(vpn)):
            continue
        if not set_pte_range(guest, mm, vpn, gpfn, False, vma.exec):
            break
        mapped += 1
        hit = hit or pgoff == vmf.pgoff
    ra.mmap_miss = max(0, ra.mmap_miss - mapped)
    guest.stats.fault_around_pages += mapped - (1 if hit else 0)
    if hit:
        vmf.detail = f"page {vmf.pgoff} already cached: mapped with {mapped - 1} neighbours"
    return hit


def filemap_read(guest: Guest, ino: int, pos: int, count: int) -> int:
    """Model of filemap_read (the read() system call): copy out, with sequential readahead.

    Returns the bytes read (short at the end of the file).
    """
    size = guest.disk.file_size(ino)
    end = min(pos + count, size)
    if end <= pos:
        return 0
    ra = guest.ra_state(ino)
    first, last = pos >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
    for index in range(first, last + 1):
        gpfn = guest.cache.find(ino, index)
        missed = gpfn is None
        if gpfn is None:
            page_cache_ra(guest, ino, ra.ondemand(index, last - index + 1, False), "sync")
            gpfn = guest.cache.find(ino, index)
            if gpfn is None:
                page_cache_ra(guest, ino, Window(index, 1, 0), "single")
                gpfn = guest.cache.find(ino, index)
            if gpfn is None:
                return (index << PAGE_SHIFT) - pos if index > first else 0
        elif guest.cache.readahead[gpfn]:
            guest.cache.readahead[gpfn] = False
            window = ra.ondemand(index, last - index + 1, True,
                                 guest.cache.next_miss(ino, index + 1, ra.ra_pages))
            page_cache_ra(guest, ino, window, "async")
        guest.cache.mark_page_accessed(gpfn, just_read=missed)
    ra.prev_pos = end - 1
    return end - pos


# The page cache's vm_operations_struct (mm/filemap.c): what a file VMA's faults call.
generic_file_vm_ops = VmOperations("generic_file_vm_ops", filemap_fault, filemap_map_pages)
