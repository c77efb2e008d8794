"""Model of mm/page_alloc.c for one guest: its free frames, alloc_page and free_page.

A guest's RAM is handed out lowest frame first: frames below the high-water mark
`top` have been used at least once, frames above it never were (so the host has
not had to back them yet). Frames given back go on a free list and are reused
first, most recent first::

    gpfn 0      1 ······························ top ··················· ram_pages
    zero page   used once (in use, or on `freed`)     never used: not backed on the host

When nothing is free, the allocator reclaims page cache (direct reclaim,
mm/vmscan.py) and tries again; if that frees nothing, the allocation fails and
the caller sees an OOM as a value (VM_FAULT_OOM, an Oom event), never an
exception. The model's allocator has one free list of single pages: no buddy
orders, zones, per-CPU lists, watermarks or kswapd.

mm/page_alloc.py and mm/vmscan.py call each other, as the kernel's files do:
direct reclaim calls vmscan.try_to_free_pages, and reclaim frees what it took
through free_page here (each imports the other as a module, so either may load
first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from xipmodel.events import Oom
from xipmodel.mm import vmscan
from xipmodel.mm.frames import CONTENT_ZERO, FrameKind

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = ["SWAP_CLUSTER_MAX", "FreeArea", "alloc_page", "free_page"]

SWAP_CLUSTER_MAX: Final = 32  # pages direct reclaim tries to free at once


@dataclass
class FreeArea:
    """The guest's free frames: those never used, [top, ram_pages), and those given back."""

    ram_pages: int
    top: int  # frames [top, ram_pages) were never used
    freed: list[int] = field(default_factory=list)  # frames given back, reused first (LIFO)

    @property
    def nr_free(self) -> int:
        """Frames on the free list (never used or given back)."""
        return len(self.freed) + self.ram_pages - self.top

    def take(self) -> int | None:
        """__rmqueue: a free frame (a given-back one first), None if there is none."""
        if self.freed:
            return self.freed.pop()
        if self.top == self.ram_pages:
            return None
        self.top += 1
        return self.top - 1

    def copy(self) -> FreeArea:
        """An independent copy (for a cloned guest)."""
        return FreeArea(self.ram_pages, self.top, list(self.freed))


def alloc_page(guest: Guest, kind: FrameKind, content: int = CONTENT_ZERO) -> int | None:
    """Model of alloc_pages: a guest frame for `kind`, reclaiming page cache if none is free.

    The frame gets host backing on first use (an EPT violation, Guest.back_page).
    None when neither the guest (after reclaim) nor the host has a frame: an OOM.
    """
    area = guest.free_area
    gpfn = area.take()  # get_page_from_freelist
    if gpfn is None:
        # __alloc_pages_slowpath → __alloc_pages_direct_reclaim, then the free list again.
        # A textbook policy frees exactly the one page it chooses.
        textbook = guest.cache.policy != "linux"
        vmscan.try_to_free_pages(guest, 1 if textbook else SWAP_CLUSTER_MAX)
        gpfn = area.take()
    if gpfn is not None:
        if guest.back_page(gpfn, kind, content):
            return gpfn
        area.freed.append(gpfn)  # the host is out of memory
    guest.stats.oom += 1
    if guest.bus:
        guest.bus.emit(Oom(guest.time, guest.gid, "host" if gpfn is not None else "guest"))
    return None


def free_page(guest: Guest, gpfn: int) -> None:
    """Model of free_unref_page: `gpfn` goes back on the free list (its host frame stays).

    Guest RAM a guest once touched stays resident on the host (no balloon, no free
    page reporting): its frame becomes FrameKind.GUEST_FREE.
    """
    assert 0 < gpfn < guest.ram_pages, f"free_page: gpfn {gpfn} is not guest RAM"
    assert gpfn not in guest.rmap, f"free_page: gpfn {gpfn} is still mapped"
    guest.kind[gpfn] = FrameKind.GUEST_FREE
    hpfn = int(guest.backing[gpfn])
    if guest.host.kind.item(hpfn) != FrameKind.KSM:  # a merged frame keeps serving others
        guest.host.retag(hpfn, FrameKind.GUEST_FREE)
    guest.free_area.freed.append(gpfn)
