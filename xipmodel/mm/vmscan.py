"""Model of mm/vmscan.c for one guest: reclaim of page-cache pages when RAM runs out.

Direct reclaim, as the allocator calls it when no frame is free::

    try_to_free_pages(nr)
      └─ shrink_lruvec
           ├─ shrink_active_list    while inactive_is_low: demote from the active tail
           │                        (referenced executable pages get another trip)
           └─ shrink_inactive_list  from the inactive tail, for each page:
                folio_check_references ─┬─ activate (referenced twice, or exec after first use)
                                        ├─ keep     (referenced once: another round)
                                        └─ reclaim  → shrink_folio: try_to_unmap, leave a
                                                      shadow entry, free_page

Only page-cache pages are reclaimable: there is no swap, so anonymous pages stay.
The textbook policies (FIFO, LRU, CLOCK, ARC, OPT) reclaim exactly the page they
would choose. Not modelled: kswapd and watermarks (reclaim runs only when the free
list is empty), dirty pages and writeback (the frozen image is never written),
memory cgroups, multi-generational LRU, and the priority loop's scan balancing.

mm/vmscan.py and mm/page_alloc.py call each other, as the kernel's files do:
the allocator's direct reclaim calls try_to_free_pages here, and shrink_folio
frees the page through page_alloc's free_page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xipmodel.events import PageCacheEvict
from xipmodel.mm import page_alloc
from xipmodel.mm.rmap import folio_referenced, try_to_unmap
from xipmodel.params import PAGE_SHIFT

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.pagecache import PageCache

__all__ = [
    "folio_check_references",
    "inactive_is_low",
    "shrink_active_list",
    "shrink_folio",
    "shrink_inactive_list",
    "try_to_free_pages",
]


def try_to_free_pages(guest: Guest, nr_to_reclaim: int) -> int:
    """Model of try_to_free_pages → shrink_lruvec for file pages: free up to `nr_to_reclaim`.

    Returns the pages freed. ARC and OPT free exactly one page, the one they choose.
    """
    cache = guest.cache
    if cache.policy in ("arc", "opt"):
        if not len(cache):
            return 0
        if cache.policy == "opt":
            victim = cache.opt_victim()
        else:
            victim = cache.arc_replace(False)
            cache.arc_ghost(victim)
        shrink_folio(guest, victim, shadow=False)
        return 1
    if cache.policy == "linux":
        shrink_active_list(guest)
    return shrink_inactive_list(guest, nr_to_reclaim)


def shrink_inactive_list(guest: Guest, nr_to_reclaim: int) -> int:
    """Model of shrink_inactive_list: scan from the inactive tail, reclaim what may go.

    When the inactive list runs dry, the active list is shrunk into it. Returns the
    pages freed.
    """
    cache = guest.cache
    reclaimed = 0
    budget = 2 * (cache.nr_inactive + cache.nr_active) + 1
    while reclaimed < nr_to_reclaim and budget > 0 and (cache.inactive or cache.active):
        budget -= 1
        if not cache.inactive:
            shrink_active_list(guest, force=True)
            continue
        gpfn = next(iter(cache.inactive))  # the tail: the oldest page
        guest.stats.pgscan += 1
        if gpfn in cache.pinned:
            cache.rotate(gpfn)  # a fault handler holds it
            continue
        verdict = folio_check_references(guest, gpfn)
        if verdict == "activate":
            cache.activate(gpfn)
            continue
        if verdict == "keep":
            cache.rotate(gpfn)
            continue
        shrink_folio(guest, gpfn)
        reclaimed += 1
    return reclaimed


def folio_check_references(guest: Guest, gpfn: int) -> str:
    """Model of folio_check_references: "activate", "keep" or "reclaim"."""
    cache = guest.cache
    if cache.policy in ("fifo", "lru"):
        return "reclaim"
    referenced_folio = bool(cache.referenced[gpfn])
    cache.referenced[gpfn] = False
    if cache.policy == "clock":
        return "keep" if referenced_folio else "reclaim"  # second chance
    referenced_ptes, exec_mapped = folio_referenced(guest, gpfn)
    if referenced_ptes:
        cache.referenced[gpfn] = True
        if referenced_folio or referenced_ptes > 1:
            return "activate"
        # Activate file-backed executable folios after first usage.
        if exec_mapped:
            return "activate"
        return "keep"
    return "reclaim"


def inactive_is_low(cache: PageCache) -> bool:
    """Model of inactive_is_low: is the inactive list short of its share of the file LRU?

    The target ratio active:inactive is sqrt(10 × total GiB), 1 below 1 GiB.
    """
    total_gb = (cache.nr_active + cache.nr_inactive) >> (30 - PAGE_SHIFT)
    ratio = int((10 * total_gb) ** 0.5) if total_gb else 1
    return cache.nr_inactive * ratio < cache.nr_active


def shrink_active_list(guest: Guest, force: bool = False) -> None:
    """Model of shrink_active_list: demote from the active tail while the inactive list is low.

    `force`: demote one page even if the inactive list is not low (it ran dry).
    """
    cache = guest.cache
    moves = cache.nr_active if force else 0
    while cache.active and (moves > 0 or inactive_is_low(cache)):
        moves -= 1
        gpfn = next(iter(cache.active))
        young, exec_mapped = folio_referenced(guest, gpfn)
        if young and exec_mapped and not force:
            cache.rotate(gpfn)  # referenced executable pages get another trip
            continue
        cache.deactivate(gpfn)
        if force:
            break


def shrink_folio(guest: Guest, gpfn: int, shadow: bool = True) -> None:
    """Model of shrink_folio_list for one clean page-cache page: unmap it, drop it, free it.

    `shadow`: leave a workingset shadow entry (Linux's own reclaim does; the textbook
    policies keep their own history).
    """
    try_to_unmap(guest, gpfn)
    key = guest.cache.remove(gpfn, shadow=shadow)
    guest.stats.pgsteal += 1
    if guest.bus:
        guest.bus.emit(PageCacheEvict(guest.time, guest.gid, key[0], key[1], gpfn))
    page_alloc.free_page(guest, gpfn)
