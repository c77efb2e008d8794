"""Model of mm/filemap.c: page-cache faults, mmap read-around, fault-around and read().

filemap_fault, for page `pgoff` of a file mapped by a guest process::

    beyond EOF? ─────────────────────────────────────────────► VM_FAULT_SIGBUS
    in the page cache (filemap_get_folio)?
      yes → minor fault; PG_readahead set? → do_async_mmap_readahead (next window)
      no  → major fault: do_sync_mmap_readahead reads a window from the virtual disk
            (read-around: 32 pages centred on the fault, 8 of lookahead; off once the
            file has MMAP_LOTSAMISS more misses than hits; MADV_RANDOM: just the page.
            A VM_EXEC mapping on Linux 6.16+: 32 pages from the fault, within the VMA,
            no lookahead, also under MADV_RANDOM)

read() (filemap_read) goes through the same page cache with sequential readahead;
where the filesystem caches large folios (ext4 on 6.16+, never ext2), readahead
reads them (page_cache_ra_order) and each async window raises their order.

Pages read into the page cache are copies of image blocks in the guest's own
RAM: N guests running the same binary hold N copies.

Called from mm/memory.py through the VMA's vm_ops (`generic_file_vm_ops`, set by
mm/mmap.py), it calls back into memory.py's set_pte_range to map pages, as
mm/filemap.c calls mm/memory.c; frames come from mm/page_alloc.py, windows from
mm/readahead.py, the cache itself is mm/pagecache.py.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Final

from xipmodel.events import DiskRead, PageCacheInsert, Readahead
from xipmodel.mm.frames import FrameKind, block_content
from xipmodel.mm.memory import (
    VM_FAULT_LOCKED,
    VM_FAULT_MAJOR,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VmFaultInfo,
    set_pte_range,
)
from xipmodel.mm.page_alloc import alloc_page
from xipmodel.mm.readahead import (
    MMAP_LOTSAMISS,
    Window,
    page_cache_async_ra,
    page_cache_sync_ra,
)
from xipmodel.mm.vma import VmOperations
from xipmodel.mm.vmscan import shrink_folio
from xipmodel.mm.workingset import workingset_size
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

MAX_PAGECACHE_ORDER: Final = 9  # a PMD's worth of 4 KiB pages (x86-64)

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
    guest, vma, pgoff = vmf.guest, vmf.vma, vmf.pgoff
    ino = vma.ino
    assert ino is not None
    ra = guest.ra_state(ino)
    exec_rule = vma.exec and guest.kernel.exec_readaround
    # If we don't want any read-ahead, don't bother (the exec rule is meant for random
    # access already, so MADV_RANDOM does not switch it off).
    if (vma.advice == "random" and not exec_rule) or ra.ra_pages == 0:
        return
    if vma.advice == "sequential":
        page_cache_sync_readahead(guest, ino, pgoff, ra.ra_pages)
        return
    # Do we miss much more than hit in this file? If so, stop bothering with read-around.
    if ra.mmap_miss < MMAP_LOTSAMISS * 10:
        ra.mmap_miss += 1
    if ra.mmap_miss > MMAP_LOTSAMISS:
        return
    if exec_rule:
        # Linux >= 6.16: executable memory rarely benefits from readahead: a window from
        # the fault (rounded down to exec_folio_order), within the VMA, no lookahead.
        order = guest.kernel.exec_folio_order
        first, end = vma.pgoff, vma.pgoff + vma.pages
        ra.order = order
        ra.start = max(pgoff >> order << order, first)
        ra_end = min(-(-(ra.start + ra.ra_pages) >> order) << order, end)
        ra.size, ra.async_size = ra_end - ra.start, 0
    else:
        # mmap read-around: a window centred on the fault.
        ra.start = max(0, pgoff - ra.ra_pages // 2)
        ra.size, ra.async_size, ra.order = ra.ra_pages, ra.ra_pages // 4, 0
    page_cache_ra_order(guest, ino, Window(ra.start, ra.size, ra.async_size, ra.order),
                        "exec read-around" if exec_rule else "read-around")


def do_async_mmap_readahead(vmf: VmFaultInfo, gpfn: int) -> None:
    """Model of do_async_mmap_readahead: a hit on a PG_readahead folio reads the next window."""
    guest, ino, pgoff = vmf.guest, vmf.vma.ino, vmf.pgoff
    assert ino is not None
    ra = guest.ra_state(ino)
    if vmf.vma.advice == "random" or ra.ra_pages == 0:
        return
    if ra.mmap_miss > 0:
        ra.mmap_miss -= 1
    if guest.cache.readahead[gpfn]:
        filemap_async_readahead(guest, ino, pgoff, gpfn, ra.ra_pages)


def page_cache_sync_readahead(guest: Guest, ino: int, index: int, req_count: int) -> None:
    """page_cache_sync_readahead: a miss at `index` of a `req_count`-page request.

    The window comes from the kernel profile's algorithm (page_cache_sync_ra since
    6.10, ondemand_readahead before).
    """
    ra = guest.ra_state(ino)
    if guest.kernel.readahead == "split":
        window = page_cache_sync_ra(ra, index, req_count, partial(guest.cache.prev_miss, ino))
    else:
        window = ra.ondemand(index, req_count, hit_marker=False)
    page_cache_ra_order(guest, ino, window, "sync")


def filemap_async_readahead(guest: Guest, ino: int, index: int, gpfn: int,
                            req_count: int) -> None:
    """page_cache_async_readahead: clear the folio's PG_readahead, read the next window."""
    cache = guest.cache
    cache.set_folio_readahead(gpfn, False)
    ra = guest.ra_state(ino)
    if guest.kernel.readahead == "split":
        window = page_cache_async_ra(ra, index, cache.folio_nr_pages(gpfn), req_count,
                                     partial(cache.next_miss, ino))
    else:
        window = ra.ondemand(index, req_count, hit_marker=True,
                             next_miss=cache.next_miss(ino, index + 1, ra.ra_pages))
    if window is not None:
        page_cache_ra_order(guest, ino, window, "async")


def page_cache_ra_order(guest: Guest, ino: int, window: Window, kind: str) -> int:
    """Model of page_cache_ra_order: read `window` in folios of up to window.order pages.

    Where the file's filesystem caches only single pages (ext2, or a kernel without
    large folios) this is page_cache_ra_unbounded. Otherwise folios are naturally
    aligned, shrink at the window's end and the file's end, and the PG_readahead mark
    goes on the folio holding the marked page; a page already cached ends the large
    folios and the rest is read page by page. Returns pages read.
    """
    ra = guest.ra_state(ino)
    if not guest.large_folios:
        ra.order = 0
        return page_cache_ra(guest, ino, window, kind)
    start, size, async_size, order = window
    last = file_pages(guest, ino) - 1
    if size <= 0 or start > last:
        return 0
    limit, mark = start + size - 1, start + size - async_size
    if limit >= last:
        limit, mark = last, -1  # we've reached the end: no readahead marker
    new_order = min(MAX_PAGECACHE_ORDER, order, size.bit_length() - 1)
    ra.order = new_order
    index, read = start, 0
    cached = guest.cache.pages  # the i_pages index
    while index <= limit:
        folio_order = new_order
        if index & ((1 << folio_order) - 1):
            folio_order = (index & -index).bit_length() - 1  # align with smaller folios
        while folio_order > 0 and index + (1 << folio_order) - 1 > limit:
            folio_order -= 1  # don't allocate pages past the end
        pages = 1 << folio_order
        if any((ino, i) in cached for i in range(index, index + pages)):
            break  # filemap_add_folio: -EEXIST
        marked = mark >= 0 and index == mark >> folio_order << folio_order
        got = add_folio_to_page_cache(guest, ino, index, folio_order, marked)
        if got is None:
            break
        read += pages
        index += pages
    else:
        _emit_readahead(guest, ino, window, kind, read)
        return read
    # Pages already cached left gaps: the regular readahead takes care of the rest.
    rest = page_cache_ra(guest, ino, Window(index, size - (index - start), async_size), kind)
    return read + rest


def page_cache_ra(guest: Guest, ino: int, window: Window, kind: str) -> int:
    """Model of do_page_cache_ra → page_cache_ra_unbounded: read the window's uncached pages.

    Stops at the end of the file, and marks the page async_size before the end of what
    it reads (the clipped window) PG_readahead. Holes are zero-filled without disk I/O.
    Returns pages read.
    """
    start, size, async_size = window.start, window.size, window.async_size
    last = file_pages(guest, ino) - 1
    if size <= 0 or start > last:
        return 0
    nr_to_read = min(size, last - start + 1)  # don't read past the last page of the file
    mark = start + nr_to_read - async_size if async_size <= nr_to_read else -1
    read = 0
    pages = guest.cache.pages  # the i_pages index
    for index in range(start, start + nr_to_read):
        if (ino, index) in pages:
            continue
        gpfn = add_to_page_cache(guest, ino, index)  # a folio of one page
        if gpfn is None:
            break
        if index == mark:
            guest.cache.readahead[gpfn] = True  # folio_set_readahead
        read += 1
    _emit_readahead(guest, ino, window, kind, read)
    return read


def _emit_readahead(guest: Guest, ino: int, window: Window, kind: str, read: int) -> None:
    guest.stats.readahead_pages += max(0, read - 1)
    if guest.bus:
        guest.bus.emit(Readahead(guest.time, guest.gid, ino, window.start, window.size,
                                 window.async_size, kind, read))


def add_folio_to_page_cache(guest: Guest, ino: int, index: int, order: int,
                            readahead: bool) -> int | None:
    """A folio of 2**order pages at `index` read into the page cache; its first frame.

    Each page gets a guest frame of its own (add_to_page_cache); a large folio is
    recorded as such, so readahead sees its size and flag. None if out of memory
    (pages of the folio already added stay).
    """
    first = None
    for i in range(index, index + (1 << order)):
        gpfn = add_to_page_cache(guest, ino, i)
        if gpfn is None:
            return None
        # PageCache.add cleared both flags: set only what is not 0 / False.
        if order:
            guest.cache.order[gpfn] = order
        if readahead:
            guest.cache.readahead[gpfn] = True
        first = gpfn if first is None else first
    return first


def add_to_page_cache(guest: Guest, ino: int, index: int) -> int | None:
    """Allocate a guest frame, read page `index` of `ino` into it, put it on the LRU."""
    block = guest.disk.bmap(ino, index)
    content = block_content(guest.disk, block)
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
    refault, activated = cache.add(ino, index, gpfn, workingset_size(guest))
    if guest.bus:
        guest.bus.emit(PageCacheInsert(guest.time, guest.gid, ino, index, gpfn, refault,
                                       activated))
    return gpfn


def filemap_map_pages(vmf: VmFaultInfo, start_pgoff: int, end_pgoff: int) -> bool:
    """Model of filemap_map_pages: map cached, up-to-date pages of [start, end] without I/O.

    Pages marked PG_readahead are left for the real fault (so async readahead fires).
    """
    guest, vma, mm = vmf.guest, vmf.vma, vmf.mm
    ino = vma.ino
    assert ino is not None
    ra = guest.ra_state(ino)
    last = file_pages(guest, ino) - 1
    cache, exec_ = guest.cache, vma.exec
    # Looked up once for the batch: the i_pages index, PG_readahead, the page table.
    pages, readahead, lookup_pte = cache.pages, cache.readahead, mm.pt.lookup_pte
    present = guest.preset.pte_present
    vpn_of_pgoff0 = (vma.start >> PAGE_SHIFT) - vma.pgoff  # linear_page_index, inverted
    mapped = 0
    hit = False
    for pgoff in range(start_pgoff, min(end_pgoff, last) + 1):
        gpfn = pages.get((ino, pgoff))  # next_uptodate_folio
        if gpfn is None or readahead.item(gpfn):
            continue
        vpn = vpn_of_pgoff0 + pgoff
        if lookup_pte(vpn) & present:  # pte_none: a page already mapped is left alone
            continue
        if not set_pte_range(guest, mm, vpn, gpfn, False, exec_):
            break
        mapped += 1
        hit = hit or pgoff == vmf.pgoff
    ra.mmap_miss = max(0, ra.mmap_miss - mapped)
    guest.stats.fault_around_pages += mapped - (1 if hit else 0)
    if hit:
        vmf.detail = f"page {vmf.pgoff} already cached: mapped with {mapped - 1} neighbours"
    return hit


def filemap_read(guest: Guest, ino: int, pos: int, count: int) -> int:
    """Model of filemap_read (the read() system call): copy out, with readahead.

    Like the kernel, it works in batches of cached pages (filemap_get_pages): a miss
    starts synchronous readahead for the rest of the request, a batch ends at a
    PG_readahead folio, which starts the next window asynchronously. Only the first
    folio of a batch is marked accessed, and not when the read starts in the folio the
    previous read ended in (pos_same_folio): a use-once stream stays inactive.
    Returns the bytes read (short at the end of the file).
    """
    size = guest.disk.file_size(ino)
    end = min(pos + count, size)
    if end <= pos:
        return 0
    ra, cache = guest.ra_state(ino), guest.cache
    start, last_pos = pos, ra.prev_pos
    last_index = -(-(pos + count) >> PAGE_SHIFT)
    while pos < end:
        index = pos >> PAGE_SHIFT
        batch = filemap_get_read_batch(guest, ino, index, last_index - 1)
        missed = not batch
        if missed:
            page_cache_sync_readahead(guest, ino, index, last_index - index)
            batch = filemap_get_read_batch(guest, ino, index, last_index - 1)
        if not batch:
            page_cache_ra(guest, ino, Window(index, 1, 0), "single")  # filemap_create_folio
            batch = filemap_get_read_batch(guest, ino, index, index)
        if not batch:
            break  # out of memory: a short read
        tail = batch[-1]
        if cache.readahead[tail]:
            head = cache.key_of[tail][1] & ~(cache.folio_nr_pages(tail) - 1)
            filemap_async_readahead(guest, ino, head, tail, last_index - head)
        if cache.policy == "linux":
            # When a read accesses the same folio several times, mark it accessed only
            # the first time; and only the batch's first folio.
            shift = PAGE_SHIFT + int(cache.order[batch[0]])
            if last_pos < 1 or pos >> shift != (last_pos - 1) >> shift:
                for gpfn in cache.folio_of(batch[0]):
                    cache.mark_page_accessed(gpfn)
        else:
            # A textbook policy sees every page the read copies (the idealised version).
            for gpfn in batch:
                if cache.key_of[gpfn][1] << PAGE_SHIFT < end:
                    cache.mark_page_accessed(gpfn, just_read=missed)
        pos = min(end, (cache.key_of[tail][1] + 1) << PAGE_SHIFT)
        last_pos = pos
    ra.prev_pos = last_pos
    return pos - start


def filemap_get_read_batch(guest: Guest, ino: int, index: int, max_index: int) -> list[int]:
    """Model of filemap_get_read_batch: the cached pages from `index` on, up to max_index.

    Stops at the first page not cached, and after the folio carrying PG_readahead.
    """
    cache = guest.cache
    batch: list[int] = []
    i = index
    while i <= max_index:
        gpfn = cache.find(ino, i)
        if gpfn is None:
            break
        batch.append(gpfn)
        if cache.readahead[gpfn]:
            folio_end = (i | (cache.folio_nr_pages(gpfn) - 1))
            batch += [g for g in (cache.find(ino, j) for j in range(i + 1, folio_end + 1))
                      if g is not None]
            break
        i += 1
    return batch


# The page cache's vm_operations_struct (mm/filemap.c): what a file VMA's faults call.
generic_file_vm_ops = VmOperations("generic_file_vm_ops", filemap_fault, filemap_map_pages)
