"""Model of mm/workingset.c: shadow entries and the refault distance.

When reclaim evicts a page-cache page, a *shadow entry* stays in its slot of the
page cache, remembering the eviction clock (lruvec->nonresident_age, which ticks
on every eviction and every activation). When the page is read in again (a
refault), the distance between the two clocks says how many pages the LRU went
through meanwhile::

    evicted at E ··· (evictions + activations) ··· refault at R
    R − E ≤ the workingset that could have kept it? → activate at once

Which pages count in that workingset is workingset_test_recent's business
(`workingset_size`). The shadows and the clock live in the PageCache (the
kernel keeps them in the mapping's xarray and the lruvec); this file holds the
mechanism. Not modelled: memory cgroups, the eviction clock's bucket order,
multi-generational LRU, and shadow-node shrinking (shadows are never dropped).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.pagecache import Key, PageCache

__all__ = [
    "workingset_activation",
    "workingset_eviction",
    "workingset_refault",
    "workingset_size",
    "workingset_test_recent",
]


def workingset_age_nonresident(cache: PageCache) -> None:
    """workingset_age_nonresident: one eviction or activation happened."""
    cache.nonresident_age += 1


def workingset_eviction(cache: PageCache, key: Key) -> None:
    """Model of workingset_eviction: leave a shadow entry stamped with the eviction clock."""
    cache.shadows[key] = cache.nonresident_age
    workingset_age_nonresident(cache)
    cache.evictions += 1


def workingset_activation(cache: PageCache) -> None:
    """Model of workingset_activation: a page was activated, the clock ticks."""
    workingset_age_nonresident(cache)
    cache.activations += 1


def workingset_size(guest: Guest) -> int:
    """What a file refault's distance is compared with (workingset_test_recent).

    The active file pages, plus the anonymous pages only when swap space exists:
    without swap, anonymous memory cannot make room for the file's pages. The model's
    guests have no swap.
    """
    return guest.cache.nr_active


def workingset_test_recent(cache: PageCache, eviction: int, workingset: int) -> bool:
    """Model of workingset_test_recent: was the page evicted recently enough to stay?"""
    return cache.nonresident_age - eviction <= workingset


def workingset_refault(cache: PageCache, key: Key, workingset: int) -> tuple[bool, bool]:
    """Model of workingset_refault: `key` is being read in again; (refault, activate).

    `workingset` is what the distance is compared with (workingset_size). Only Linux's
    own replacement activates refaults.
    """
    eviction = cache.shadows.pop(key, None)
    if eviction is None:
        return False, False
    cache.refaults += 1
    return True, cache.policy == "linux" and workingset_test_recent(cache, eviction, workingset)
