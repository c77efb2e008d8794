"""Many accesses by one process at once: memory.access, exact, with the TLB hits in bulk.

What one access changes when it hits the TLB with the permission it needs is
small, and a replayed trace is 99% such hits::

    TLB hit, allowed     counters (accesses, TLB hits, model time), the set's LRU
                         order, and for a write to a private page its content
    TLB miss, the walk   the same, plus: the miss and the walk counted, the PTE's
    finds a present PTE  accessed (and dirty) bit set, the TLB filled (its LRU
    that allows it       entry evicted)
    anything else        a fault, or a write through a read-only TLB entry:
                         memory.access itself, one access at a time

`access_many` finds each run of hits with numpy (a table of what the TLB holds
for this process, indexed by the trace's distinct pages), handles the walks
that succeed in Python, and calls memory.access for the rest. What a run of
hits defers is brought up to date before anything that could look at it:

    LRU order     each page's last use is noted; a fill evicts the entry used
                  longest ago by those notes (`lru_key`), and a set's dict order is
                  put right (`TLB.touch`, the entries used since it was last put
                  right, by their last use) before memory.access fills it
    counters      added before memory.access (its handlers read the model time)
    writes        the pages' contents (fresh ids drawn in the accesses' order) are
                  stored before memory.access (its handlers draw ids too)

After memory.access the tables are read back from the TLB: its own set, or all
of them if it dropped entries elsewhere (`TLB.invalidations`, flushes). A run
that mostly misses (first touches) gains nothing from deferring: chunks of
accesses go one at a time (`in_order`: the first two cases above done in place,
in order, the rest through memory.access) until one of them mostly hits.

It applies only where it is exact and simple (see `exact_for`): no event
listeners (every access would be an event), Linux's page-cache policy (a
textbook policy sees every access), an LRU, ASID-tagged TLB, whole-nanosecond
costs. trace.replay falls back to the access-at-a-time loop elsewhere.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from xipmodel.mm import memory
from xipmodel.mm.frames import FrameKind
from xipmodel.mm.tlb import ASID_SHIFT
from xipmodel.params import PAGE_SHIFT, PTE_A, PTE_D, PTE_W, PTE_X

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct

__all__ = ["CHUNK", "access_many", "exact_for"]

_KIND_NAMES = ("r", "w", "x")
_NEEDS = (0, PTE_W, PTE_X)  # the PTE bit each kind (read, write, exec) needs
# What a TLB entry denies, as bits: 1 not cached, 2 not writable, 4 not executable;
# an access stops a run of hits when it needs a denied bit (reads need only the first).
_MISSING, _NO_W, _NO_X = 1, 2, 4
_ASKS = np.array([_MISSING, _MISSING | _NO_W, _MISSING | _NO_X], dtype=np.uint8)
_WRITE = 1
_MIN_WINDOW, _MAX_WINDOW = 64, 1 << 16  # accesses looked at per numpy step
_STREAK = 12  # hits in a row that make numpy worth its cost per call (measured)
CHUNK: Final = 1024  # accesses between looks at the share of hits (see access_many)
_KSM = int(FrameKind.KSM)  # (a numpy scalar against an IntEnum member is slow)


def exact_for(guest: Guest) -> bool:
    """Does access_many give exactly memory.access's results in this guest?"""
    tlb = guest.tlb
    return (not guest.bus and guest.cache.policy == "linux" and tlb.policy == "lru"
            and tlb.asid_tagged and isinstance(guest.time, int)
            and all(isinstance(v, int) for v in dataclasses.astuple(guest.costs)))


class _Run:
    """The state of one access_many call: the trace's pages and what the TLB holds of them."""

    def __init__(self, guest: Guest, mm: MmStruct, vpns: npt.NDArray[np.uint64],
                 kinds: npt.NDArray[np.uint8], contents: npt.NDArray[np.int64]) -> None:
        self.guest, self.mm, self.asid = guest, mm, mm.asid
        self.vpns, self.kinds, self.contents = vpns, kinds, contents
        self.n = int(vpns.size)
        # Each access's page as an index into the trace's distinct pages (sorted): a binary
        # search among the few distinct pages costs far less than np.unique's inverse.
        pages = np.unique(vpns)
        self.page = np.searchsorted(pages, vpns)
        self.page_of = dict(zip(pages.tolist(), range(pages.size), strict=True))
        self.asks = _ASKS[kinds]
        self.writes = np.flatnonzero(kinds == _WRITE)
        # What the TLB holds for this process, by page: what it denies, and its frame.
        self.denies = np.full(pages.size, _MISSING, dtype=np.uint8)
        self.pfn = np.full(pages.size, -1, dtype=np.int64)
        # A set's true LRU order is its dict order with the entries used at or after
        # sorted_from[set] moved to the end by their last use (see sort_sets).
        self.last = np.full(pages.size, -1, dtype=np.int64)  # each page's last use
        self.when = np.arange(self.n, dtype=np.int64)  # each access's index, to note uses
        self.sorted_from = [0] * guest.tlb.nsets
        # PTEs walked since the last memory.access: only fill_tlb changes them meanwhile.
        self.ptes: dict[int, int] = {}
        self.hits = self.walks = 0  # not yet added to the counters
        self.counted = self.stored = 0  # first access not yet counted, whose write not stored
        self.reload(list(range(guest.tlb.nsets)))

    def forget(self, entries: list[tuple[int, int, int]] | None) -> None:
        """Mark these TLB entries (vpn, pfn, flags) of this process as no longer cached;
        None: every entry (before a reload)."""
        if entries is None:
            self.denies.fill(_MISSING)
            return
        for vpn, _, _ in entries:
            k = self.page_of.get(vpn)
            if k is not None:
                self.denies[k] = _MISSING

    def reload(self, sets: list[int]) -> None:
        """Read the TLB's entries of `sets` for this process into the tables (after
        memory.access: see access_many for which sets it changes)."""
        self.ptes.clear()
        denies, pfns, page_of = self.denies, self.pfn, self.page_of
        for n in sets:
            for vpn, pfn, flags in self.guest.tlb.cached(self.asid, n):
                k = page_of.get(vpn)
                if k is not None:
                    denies[k], pfns[k] = _denies(flags), pfn

    def lru_key(self, n: int) -> int:
        """The key of set `n`'s least recently used entry, by the rule of sort_sets: the
        first entry not used since the set was sorted, else the used one used longest ago."""
        since, mask, asid = self.sorted_from[n], (1 << ASID_SHIFT) - 1, self.asid
        oldest = None
        for key in self.guest.tlb.sets[n]:
            k = self.page_of.get(key & mask) if key >> ASID_SHIFT == asid else None
            when = -1 if k is None else self.last.item(k)
            if when < since:
                return key  # in its true place, before every entry used since
            if oldest is None or when < oldest[0]:
                oldest = (when, key)
        assert oldest is not None, "lru_key: an empty set"
        return oldest[1]

    def sort_sets(self, sets: list[int], upto: int) -> None:
        """Put the LRU order of `sets` right (TLB.touch) for the uses before `upto`."""
        tlb, last, page_of = self.guest.tlb, self.last, self.page_of
        for n in sets:
            since = self.sorted_from[n]
            self.sorted_from[n] = upto
            used = []
            for vpn, _, _ in tlb.cached(self.asid, n):
                k = page_of.get(vpn)
                if k is not None and (when := last.item(k)) >= since:
                    used.append((when, vpn))
            if used:
                used.sort()
                tlb.touch(self.asid, [vpn for _, vpn in used])

    def access(self, vpn: int, kind: int, content: int) -> int:
        """memory.access for one access of the trace (its fault flags). Nothing may be
        deferred before it (catch_up), and the tables are stale after (resume)."""
        return memory.access(self.guest, self.mm, vpn << PAGE_SHIFT, _KIND_NAMES[kind],
                             content or None)

    def in_order(self, start: int, end: int) -> list[int]:
        """memory.access for accesses [start, end), one at a time, with its two common
        cases done here: a TLB hit allowed by the entry, and a miss whose walk finds a
        PTE that allows the access (most of a run touching pages for the first time).
        The rest (faults, a write through a read-only entry) go through memory.access.
        Their nonzero fault flags; as for `access`, nothing may be deferred before."""
        guest, asid, tlb, preset = self.guest, self.asid, self.guest.tlb, self.guest.preset
        stats, host, lookup_pte = guest.stats, guest.host, self.mm.pt.lookup_pte
        access_ns, walk_cost = guest.costs.access_ns, guest.walk_cost
        walk_ns = walk_cost * guest.costs.walk_ref_ns
        sets, nsets, present = tlb.sets, tlb.nsets, preset.pte_present
        faults = []
        for vpn, kind, content in zip(self.vpns[start:end].tolist(),
                                      self.kinds[start:end].tolist(),
                                      self.contents[start:end].tolist(), strict=True):
            need = _NEEDS[kind]
            # What memory.access's TLB lookup would find, looked at without counting it.
            key = asid << ASID_SHIFT | vpn
            s = sets[vpn % nsets]
            entry = s.get(key)
            if entry is not None and entry[1] & need == need:  # a hit it allows
                del s[key]  # the most recently used goes last
                s[key] = entry
                tlb.hits += 1
                stats.tlb_hits += 1
                stats.accesses += 1
                guest.time += access_ns
                gpfn = entry[0]
            elif entry is None and (pte := lookup_pte(vpn)) & present \
                    and int(preset.pte_flags(pte)) & need == need:  # a walk that finds it
                tlb.misses += 1
                stats.tlb_misses += 1
                stats.walk_refs += walk_cost
                stats.accesses += 1
                guest.time += access_ns + walk_ns
                _, gpfn, _, _ = self.fill_tlb(vpn, pte, kind == _WRITE)
            else:
                if flags := self.access(vpn, kind, content):
                    faults.append(flags)
                continue
            # The write itself (memory.access's last step).
            if kind == _WRITE and gpfn < guest.ram_pages \
                    and guest.kind.item(gpfn) in memory.PRIVATE_KINDS:
                guest.write_page(gpfn, content or host.unique_content())
        return faults

    def resume(self, at: int) -> None:
        """After memory.access made accesses [.., at): read the TLB back into the tables."""
        every_set = list(range(len(self.sorted_from)))
        self.forget(None)
        self.reload(every_set)
        self.counted = self.stored = at
        self.sorted_from = [at] * len(every_set)

    def hits_in_bulk(self, start: int, end: int) -> list[int]:
        """Accesses [start, end): runs of hits deferred, walks here, the rest through
        memory.access; their nonzero fault flags."""
        tlb = self.guest.tlb
        asks, denies, page, last = self.asks, self.denies, self.page, self.last
        every_set = list(range(tlb.nsets))
        faults: list[int] = []
        i, window = start, _MIN_WINDOW
        # Hits in the current run. After a short run, look at one access at a time (numpy's
        # cost per call would exceed what it saves); after _STREAK hits, numpy takes over.
        streak, single = 0, True
        while i < end:
            if single:
                k = page.item(i)
                if not asks.item(i) & denies.item(k):
                    self.hits += 1
                    last[k] = i
                    i += 1
                    streak += 1
                    single = streak < _STREAK
                    continue
                j = i
            else:
                j, window = self.next_stop(i, end, window)
                self.hits += j - i
                streak += j - i
                if j == end:
                    break
            single, streak = streak < _STREAK, 0
            if denies.item(page.item(j)) & _MISSING and self.walk(j):
                i = j + 1
                continue
            # A fault, or the entry does not allow the access: the one-at-a-time path. Of
            # the TLB's order it needs its own set's (it fills only that set; invalidating
            # an entry elsewhere keeps the rule of sort_sets true).
            own = [int(self.vpns[j]) % tlb.nsets]
            self.catch_up(own, j)
            changed, before = (tlb.invalidations, tlb.flushes), tlb.cached(self.asid, own[0])
            if flags := self.access(self.vpns.item(j), self.kinds.item(j),
                                    self.contents.item(j)):
                faults.append(flags)
            # Its own set's entries changed; others only if it dropped entries (reclaim).
            if changed == (tlb.invalidations, tlb.flushes):
                self.forget(before)
                self.reload(own)
            else:
                self.forget(None)
                self.reload(every_set)
            last[page.item(j)] = j  # its entry (if any) is the newest in its set
            i = self.counted = self.stored = j + 1
        return faults

    def catch_up(self, sets: list[int], upto: int) -> None:
        """Bring everything deferred for the accesses before `upto` up to date."""
        self.count(upto - self.counted)
        self.sort_sets(sets, upto)
        self.store_writes(self.stored, upto)
        self.counted = self.stored = upto

    def count(self, done: int) -> None:
        """Add `done` accesses (the deferred hits and walks among them) to the counters."""
        guest, stats, tlb = self.guest, self.guest.stats, self.guest.tlb
        walk_refs = self.walks * guest.walk_cost
        stats.accesses += done
        stats.tlb_hits += self.hits
        stats.tlb_misses += self.walks
        stats.walk_refs += walk_refs
        tlb.hits += self.hits
        tlb.misses += self.walks
        guest.time += done * guest.costs.access_ns + walk_refs * guest.costs.walk_ref_ns
        self.hits = self.walks = 0

    def store_writes(self, start: int, end: int) -> None:
        """What the writes among accesses [start, end) did to private pages (memory.access's
        last step): fresh content ids in order, each page left holding its last write."""
        guest, host = self.guest, self.guest.host
        lo, hi = np.searchsorted(self.writes, [start, end]).tolist()
        if lo == hi:
            return
        at = self.writes[lo:hi]
        gpfn = self.pfn[self.page[at]]
        private = gpfn < guest.ram_pages
        kind = guest.kind[gpfn[private]]
        anon, cow = memory.PRIVATE_KINDS
        private[private] = (kind == anon) | (kind == cow)
        if not private.any():
            return
        gpfn = gpfn[private]
        content = self.contents[at[private]].copy()
        fresh = content == 0
        if fresh.any():
            content[fresh] = host.unique_contents(int(np.count_nonzero(fresh)))
        if (host.kind[guest.backing[gpfn]] == _KSM).any():
            # A write breaks a KSM merge (a new host frame): one at a time, as memory.access.
            for g, c in zip(gpfn.tolist(), content.tolist(), strict=True):
                guest.write_page(g, c)
            return
        pages, last = np.unique(gpfn[::-1], return_index=True)
        host.content[guest.backing[pages]] = content[::-1][last]

    def next_stop(self, i: int, limit: int, window: int) -> tuple[int, int]:
        """The first access in [i, limit) that is not a TLB hit allowed by the entry's
        flags (limit if none), and the window to use next. The hits before it are noted:
        each page's last use."""
        denies, page, asks, last, when = self.denies, self.page, self.asks, self.last, \
            self.when
        while i < limit:
            end = min(limit, i + window)
            pages = page[i:end]
            stop = (asks[i:end] & denies[pages]).astype(bool)
            k = int(stop.argmax())
            if stop[k]:
                np.maximum.at(last, pages[:k], when[i:i + k])
                return i + k, max(_MIN_WINDOW, 2 * k)
            np.maximum.at(last, pages, when[i:end])
            i, window = end, min(2 * window, _MAX_WINDOW)
        return limit, window

    def walk(self, j: int) -> bool:
        """Access j missed the TLB: if the walk finds a PTE that allows it, fill the TLB as
        memory.access would and return True; False if it would fault."""
        preset = self.guest.preset
        vpn, k = self.vpns.item(j), self.page.item(j)
        pte = self.ptes.get(k)
        if pte is None:
            pte = self.mm.pt.lookup_pte(vpn)
        need = _NEEDS[self.kinds.item(j)]
        if not pte & preset.pte_present or int(preset.pte_flags(pte)) & need != need:
            return False
        pte, gpfn, flags, victim = self.fill_tlb(vpn, pte, need == PTE_W, deferred=True)
        self.ptes[k] = pte
        if victim is not None:
            gone = self.page_of.get(victim)
            if gone is not None:
                self.denies[gone] = _MISSING
        if gpfn != self.pfn.item(k) >= 0:
            # The page's frame changed (the evicted entry was stale): store the writes
            # made through the old one first.
            self.store_writes(self.stored, j)
            self.stored = j
        self.denies[k], self.pfn[k], self.last[k] = _denies(flags), gpfn, j
        self.walks += 1
        return True

    def fill_tlb(self, vpn: int, pte: int, write: bool,
                 deferred: bool = False) -> tuple[int, int, int, int | None]:
        """memory.fill_tlb for a miss, its TLB.insert done here (an LRU, ASID-tagged TLB):
        the PTE as it is now, its frame, the flags cached, and the vpn of this process's
        entry the fill evicted (None: none, or another process's). `deferred`: hits are
        deferred (the set's dict order is not yet its LRU order: see lru_key)."""
        tlb, preset = self.guest.tlb, self.guest.preset
        young = preset.pte_accessed | (preset.pte_dirty if write else 0)
        bits = PTE_A | (PTE_D if write else 0)
        if pte & young != young:  # the MMU writes the entry only to set a bit not yet set
            self.mm.pt.set_flags(vpn, bits)
            pte |= young
        flags = int(preset.pte_flags(pte)) | bits
        gpfn = (pte >> preset.pfn_shift) & preset.pfn_mask
        key = self.asid << ASID_SHIFT | vpn
        s = tlb.sets[vpn % tlb.nsets]
        assert key not in s, "fill_tlb: a miss on a cached entry"
        victim = None
        if len(s) >= tlb.ways:
            victim = self.lru_key(vpn % tlb.nsets) if deferred else next(iter(s))
            del s[victim]
            tlb.evictions += 1
        s[key] = (gpfn, flags)
        if victim is None or victim >> ASID_SHIFT != self.asid:
            return pte, gpfn, flags, None
        return pte, gpfn, flags, victim & ((1 << ASID_SHIFT) - 1)


def _denies(flags: int) -> int:
    """What a TLB entry with PTE `flags` denies (the bits of _ASKS)."""
    return (0 if flags & PTE_W else _NO_W) | (0 if flags & PTE_X else _NO_X)


def access_many(guest: Guest, mm: MmStruct, vpns: npt.NDArray[np.uint64],
                kinds: npt.NDArray[np.uint8], contents: npt.NDArray[np.int64],
                chunk: int = CHUNK) -> list[int]:
    """memory.access for each (vpn, kind, content) in order (content 0: fresh); returns the
    nonzero VM_FAULT_* flags of the accesses that faulted, in order.

    Exactly what calling memory.access for each would leave, where `exact_for(guest)`.
    Chunks of `chunk` accesses go one at a time (in_order) until one of them
    mostly hits the TLB (a run touching pages for the first time gains nothing from
    deferring), and back when one mostly misses.
    """
    run = _Run(guest, mm, vpns, kinds, contents)
    every_set = list(range(guest.tlb.nsets))
    faults: list[int] = []
    i, n, bulk = 0, run.n, False
    while i < n:
        end = min(n, i + chunk)
        hits = guest.stats.tlb_hits + run.hits
        faults += run.hits_in_bulk(i, end) if bulk else run.in_order(i, end)
        wanted = 2 * (guest.stats.tlb_hits + run.hits - hits) >= end - i
        if wanted and not bulk:
            run.resume(end)
        elif bulk and not wanted:
            run.catch_up(every_set, end)
        i, bulk = end, wanted
    if bulk:
        run.catch_up(every_set, n)
    return faults
