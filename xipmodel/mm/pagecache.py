"""Model of a guest's page cache: the i_pages index, the file LRU lists and workingset shadows.

Keyed by (inode, page offset) → guest frame. The default replacement is
Linux's (mm/swap.c, mm/vmscan.c, mm/workingset.c)::

    new page ──► inactive list (head) ··· tail ──► evicted (a shadow entry remembers when)
                    │ second reference                 ▲
                    ▼                                  │ demoted when inactive runs low
                 active list (head) ···· tail ─────────┘

* read() references go through mark_page_accessed: inactive,unreferenced →
  inactive,referenced → active.
* mapped pages are aged by their PTE accessed bits when reclaim looks at them
  (folio_check_references): a second reference activates them, except
  executable file pages, which are activated after their first use.
* an evicted page leaves a shadow entry; a refault whose distance (evictions +
  activations since the eviction) is small enough is activated at once
  (mm/workingset.py).

The textbook policies replace the two lists for teaching, seeing every access
(the idealised, full-knowledge version): FIFO, LRU and CLOCK (reference bit set
on load) keep one list and evict from its tail; ARC (Megiddo–Modha) keeps T1
and T2 in the inactive and active lists and ghosts B1/B2 of evicted keys; OPT
(Belady) evicts the page used farthest in the future, which the caller supplies
with `plan()` (each reference then goes through `reference()`).

Large folios are recorded per page (`order`), so readahead sees their size and
PG_readahead flag; each page is still its own LRU entry. Not modelled: locking,
memory cgroups, writeback of dirty pages (the frozen image is never written),
and anonymous memory on the LRU (there is no swap, so anonymous pages are never
reclaimed).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.mm.workingset import workingset_activation, workingset_eviction, workingset_refault

__all__ = ["CACHE_POLICIES", "LRU_ACTIVE", "LRU_INACTIVE", "LRU_NONE", "PageCache"]

LRU_NONE: Final = 0
LRU_INACTIVE: Final = 1
LRU_ACTIVE: Final = 2
CACHE_POLICIES: Final = ("linux", "fifo", "lru", "clock", "arc", "opt")

Key = tuple[int, int]  # (inode number, page offset)


class PageCache:
    """One guest's page cache over its guest frames (`frames` of them to start with)."""

    def __init__(self, frames: int, policy: str = "linux") -> None:
        if policy not in CACHE_POLICIES:
            raise ParameterError(
                f"PageCache: policy {policy!r} is not one of {', '.join(CACHE_POLICIES)}")
        self.policy = policy
        self.pages: dict[Key, int] = {}  # the xarray: (ino, pgoff) → gpfn
        self.key_of: dict[int, Key] = {}  # gpfn → (ino, pgoff)
        # Per guest frame (struct folio flags): which list, PG_referenced, PG_readahead, exec.
        self.lru = np.zeros(frames, dtype=np.uint8)
        self.referenced = np.zeros(frames, dtype=bool)
        self.readahead = np.zeros(frames, dtype=bool)
        self.order = np.zeros(frames, dtype=np.uint8)  # the folio order of the page's folio
        self.inactive: OrderedDict[int, None] = OrderedDict()  # first = tail (oldest)
        self.active: OrderedDict[int, None] = OrderedDict()
        self.shadows: dict[Key, int] = {}  # workingset_eviction stamps
        self.nonresident_age = 0  # lruvec->nonresident_age: evictions + activations
        self.refaults = 0
        self.refault_activations = 0
        self.evictions = 0
        self.activations = 0
        # ARC: ghosts of keys evicted from T1 (inactive) and T2 (active), T1's target p.
        self.b1: OrderedDict[Key, None] = OrderedDict()
        self.b2: OrderedDict[Key, None] = OrderedDict()
        self.p = 0.0
        self._arc_to_t2 = False
        self.pinned: set[int] = set()  # pages a fault handler holds: reclaim skips them
        # OPT: every future use of each key, in order.
        self.future: dict[Key, list[int]] = {}
        self.position = 0

    def __len__(self) -> int:
        return len(self.pages)

    def copy(self) -> PageCache:
        """An independent copy (a cloned guest's page cache)."""
        new = PageCache.__new__(PageCache)
        new.__dict__.update(self.__dict__)
        new.pages, new.key_of, new.shadows = dict(self.pages), dict(self.key_of), \
            dict(self.shadows)
        new.lru, new.referenced = self.lru.copy(), self.referenced.copy()
        new.readahead, new.order = self.readahead.copy(), self.order.copy()
        new.inactive, new.active = OrderedDict(self.inactive), OrderedDict(self.active)
        return new

    def grow(self, frames: int) -> None:
        """Cover guest frames [0, frames) (the guest's RAM grows into use)."""
        extra = frames - len(self.lru)
        if extra > 0:
            self.lru = np.concatenate([self.lru, np.zeros(extra, np.uint8)])
            self.referenced = np.concatenate([self.referenced, np.zeros(extra, bool)])
            self.readahead = np.concatenate([self.readahead, np.zeros(extra, bool)])
            self.order = np.concatenate([self.order, np.zeros(extra, np.uint8)])

    def __contains__(self, key: Key) -> bool:
        return key in self.pages

    def find(self, ino: int, pgoff: int) -> int | None:
        """filemap_get_folio: the guest frame caching page `pgoff` of `ino`, or None."""
        return self.pages.get((ino, pgoff))

    def folio_nr_pages(self, gpfn: int) -> int:
        """folio_nr_pages: pages in the folio holding `gpfn`."""
        return 1 << int(self.order[gpfn])

    def folio_of(self, gpfn: int) -> list[int]:
        """The frames of the folio holding `gpfn` (those still cached), head first.

        Large folios are naturally aligned in the file; each page has a frame of its own
        here and is reclaimed on its own (the kernel reclaims a folio whole).
        """
        nr = self.folio_nr_pages(gpfn)
        if nr == 1:
            return [gpfn]
        ino, pgoff = self.key_of[gpfn]
        head = pgoff & ~(nr - 1)
        found = (self.pages.get((ino, i)) for i in range(head, head + nr))
        return [g for g in found if g is not None]

    def set_folio_readahead(self, gpfn: int, flag: bool) -> None:
        """folio_set_readahead / folio_clear_readahead on the folio holding `gpfn`."""
        for g in self.folio_of(gpfn):
            self.readahead[g] = flag

    def next_miss(self, ino: int, index: int, max_scan: int) -> int | None:
        """page_cache_next_miss: the first page ≥ index not cached, within max_scan pages."""
        for i in range(index, index + max_scan):
            if (ino, i) not in self.pages:
                return i
        return None

    def prev_miss(self, ino: int, index: int, max_scan: int) -> int:
        """page_cache_prev_miss: the first page ≤ index not cached, within max_scan pages.

        -1 when every page down to 0 is cached; index - max_scan when none is missing.
        """
        for i in range(index, index - max_scan, -1):
            if i < 0:
                return -1
            if (ino, i) not in self.pages:
                return i
        return index - max_scan

    # --- insertion and removal -------------------------------------------------------

    def add(self, ino: int, pgoff: int, gpfn: int,
            active_floor: int) -> tuple[bool, bool]:
        """filemap_add_folio + lru_cache_add: cache `gpfn` as page `pgoff` of `ino`.

        `active_floor` is what a refault distance is compared with (workingset_size).
        Returns (refault, activated).
        """
        key = (ino, pgoff)
        assert key not in self.pages, f"add: {key} is already cached"
        self.pages[key] = gpfn
        self.key_of[gpfn] = key
        self.readahead[gpfn] = False
        self.order[gpfn] = 0
        refault, activate = workingset_refault(self, key, active_floor) if self.shadows \
            else (False, False)  # no page evicted yet: no shadow entry to find
        if self.policy == "arc" and self._arc_to_t2:
            self._arc_to_t2 = False
            self.lru[gpfn] = LRU_ACTIVE  # a ghost hit: straight to T2
            self.active[gpfn] = None
            self.referenced[gpfn] = False
        elif activate:
            self.refault_activations += 1
            self._to_active(gpfn)  # (PG_referenced cleared there)
        else:
            self.lru[gpfn] = LRU_INACTIVE
            self.inactive[gpfn] = None
            # CLOCK sets the reference bit on load (what libCacheSim's Clock(init_freq=1) does).
            self.referenced[gpfn] = self.policy == "clock"
        return refault, activate

    def remove(self, gpfn: int, shadow: bool = True) -> Key:
        """Evict `gpfn` from the cache (__remove_mapping), leaving a shadow entry if asked."""
        key = self.key_of.pop(gpfn)
        del self.pages[key]
        if self.lru[gpfn] == LRU_ACTIVE:
            del self.active[gpfn]
        elif self.lru[gpfn] == LRU_INACTIVE:
            del self.inactive[gpfn]
        self.lru[gpfn] = LRU_NONE
        self.readahead[gpfn] = False
        self.referenced[gpfn] = False
        if shadow:
            workingset_eviction(self, key)
        return key

    def _to_active(self, gpfn: int) -> None:
        if self.lru[gpfn] == LRU_INACTIVE:
            del self.inactive[gpfn]
        self.lru[gpfn] = LRU_ACTIVE
        self.active[gpfn] = None
        self.referenced[gpfn] = False
        workingset_activation(self)

    def activate(self, gpfn: int) -> None:
        """folio_activate: move an inactive page to the active list's head."""
        if self.lru[gpfn] == LRU_INACTIVE:
            self._to_active(gpfn)

    def deactivate(self, gpfn: int) -> None:
        """Move an active page to the inactive list's head (shrink_active_list)."""
        assert self.lru[gpfn] == LRU_ACTIVE, f"deactivate: gpfn {gpfn} is not active"
        del self.active[gpfn]
        self.lru[gpfn] = LRU_INACTIVE
        self.inactive[gpfn] = None

    def rotate(self, gpfn: int) -> None:
        """Put `gpfn` back at the head of its list (kept by reclaim, or a textbook LRU hit)."""
        lst = self.active if self.lru[gpfn] == LRU_ACTIVE else self.inactive
        lst.move_to_end(gpfn)

    # --- references ---------------------------------------------------------------------

    def mark_page_accessed(self, gpfn: int, just_read: bool = False) -> None:
        """Model of mm/swap.c:folio_mark_accessed, the read() path.

        `just_read`: the page was read in for this very access. Linux marks it all the
        same; for a textbook policy its insertion was the use (OPT still counts it).
        """
        if self.policy == "linux":
            if self.lru[gpfn] == LRU_INACTIVE and self.referenced[gpfn]:
                self._to_active(gpfn)  # inactive,referenced → active,unreferenced
            elif not self.referenced[gpfn]:
                self.referenced[gpfn] = True
            return
        if just_read and self.policy != "opt":
            return
        self.touch(gpfn)

    def touch(self, gpfn: int) -> None:
        """A textbook policy sees every access: LRU moves to the head, CLOCK sets the bit,
        ARC promotes a T1 page to T2 (or moves a T2 page to its head), OPT counts a use."""
        if self.policy == "lru":
            self.inactive.move_to_end(gpfn)
        elif self.policy == "clock":
            self.referenced[gpfn] = True
        elif self.policy == "arc":
            if self.lru[gpfn] == LRU_INACTIVE:
                del self.inactive[gpfn]
                self.lru[gpfn] = LRU_ACTIVE
                self.active[gpfn] = None
            else:
                self.active.move_to_end(gpfn)
        elif self.policy == "opt":
            self.reference(self.key_of[gpfn])
        # FIFO ignores hits; "linux" learns of mapped accesses from PTE accessed bits.

    # --- ARC (Megiddo & Modha, FAST 2003, Figure 4) ------------------------------------

    def arc_admit(self, key: Key, capacity: int) -> tuple[int | None, bool]:
        """Adapt p and trim the ghosts for a miss on `key` with room for `capacity` pages.

        Returns (the page to evict first, or None; whether it leaves a ghost in B1/B2).
        """
        t1, t2, b1, b2, c = self.inactive, self.active, self.b1, self.b2, capacity
        # Full: a cached page must go first (none to go when the cache is empty: anonymous
        # memory took the guest, and the allocation reclaims or fails as it would).
        full = bool(t1 or t2) and len(t1) + len(t2) >= c
        if key in b1:  # Case II: recency deserves more room
            self.p = min(float(c), self.p + max(len(b2) / len(b1), 1.0))
            del b1[key]
            self._arc_to_t2 = True
            return (self.arc_replace(False), True) if full else (None, False)
        if key in b2:  # Case III: frequency deserves more room
            self.p = max(0.0, self.p - max(len(b1) / len(b2), 1.0))
            del b2[key]
            self._arc_to_t2 = True
            return (self.arc_replace(True), True) if full else (None, False)
        self._arc_to_t2 = False  # Case IV: a complete miss
        if len(t1) + len(b1) == c:
            if len(t1) < c:
                b1.popitem(last=False)
                return self.arc_replace(False), True
            return next(iter(t1)), False  # T1 is the whole cache: evict, no ghost
        if len(t1) + len(b1) < c and len(t1) + len(t2) + len(b1) + len(b2) >= c:
            if len(t1) + len(t2) + len(b1) + len(b2) == 2 * c:
                b2.popitem(last=False)
            if full:
                return self.arc_replace(False), True
        return None, False

    def arc_replace(self, in_b2: bool) -> int:
        """REPLACE: evict from T1 when it is over its target p, else from T2 (from T1 when
        T2 is empty: reclaim may run before any page was hit twice)."""
        t1, t2 = self.inactive, self.active
        over = len(t1) > self.p or (in_b2 and len(t1) == self.p)
        lst = t1 if t1 and (over or not t2) else t2
        return next((g for g in lst if g not in self.pinned), next(iter(lst)))

    def arc_ghost(self, gpfn: int) -> None:
        """Remember an evicted page's key in B1 (from T1) or B2 (from T2)."""
        key = self.key_of[gpfn]
        (self.b2 if self.lru[gpfn] == LRU_ACTIVE else self.b1)[key] = None

    # --- OPT (Belady) ------------------------------------------------------------------

    def plan(self, keys: list[Key]) -> None:
        """Tell OPT the whole future: the keys every later reference() will name, in order."""
        self.future = {}
        for i, key in enumerate(keys):
            self.future.setdefault(key, []).append(i)
        for uses in self.future.values():
            uses.reverse()  # pop() gives the next use
        self.position = 0

    def reference(self, key: Key) -> None:
        """One reference to `key` happened (OPT's clock)."""
        uses = self.future.get(key)
        if uses and uses[-1] == self.position:
            uses.pop()
        self.position += 1

    def opt_victim(self) -> int:
        """The cached page whose next use is farthest away (never used again: first)."""
        never = 1 << 62
        candidates = [g for g in self.key_of if g not in self.pinned] or list(self.key_of)
        return max(candidates, key=lambda g: (self.future.get(self.key_of[g]) or [never])[-1])

    @property
    def nr_active(self) -> int:
        return len(self.active)

    @property
    def nr_inactive(self) -> int:
        return len(self.inactive)
