"""Many accesses by one process at once: memory.access, exact, the TLB simulated in bulk.

Between two accesses that need memory.access (a fault, a write through a
read-only entry), the TLB changes only by hits (their set's LRU order) and by
the fills of walks that find a present PTE allowing the access; the page table
only by the accessed (and dirty) bits those walks set::

    TLB hit, allowed     counters (accesses, TLB hits, model time), the set's LRU
                         order, and for a write to a private page its content
    TLB miss, the walk   the same, plus: the miss and the walk counted, the PTE's
    finds a present PTE  accessed (and dirty) bit set, the TLB filled (its LRU
    that allows it       entry evicted)
    anything else        a fault, or a write through a read-only TLB entry:
                         memory.access itself, one access at a time (a "stop")

So over a window of the trace each TLB set is an LRU cache of `ways` entries,
its contents at the start the first accesses (`_Window.simulate`): an access
hits iff fewer than `ways` other pages of its set were used since its page's
last use. numpy answers that for every access at once (the set's sequence
without repeats; a sparse table of each position's next use of the same page
counts the distinct pages in between), and what the hits and misses did is
applied in bulk at each stop, before memory.access sees anything:

    counters      hits and misses between two stops, from the sorted misses
    PTEs          accessed/dirty bits of the pages that missed, once per page
    TLB           the stop's own set rebuilt in its simulated LRU order (the
                  entries filled since from their PTEs): memory.access looks at
                  no other set; they are rebuilt when the window ends
    writes        the pages' contents (fresh ids drawn in the accesses' order)

Which accesses stop: those whose PTE does not allow them (a TLB entry of this
process always agrees with its PTE here, see `_Window.agrees`; a page whose
entry does not is stopped at on every access until it does). A PTE that was not
present is read again when the scan meets it (fault-around mapped it meanwhile).
After memory.access its own set must hold what an LRU access of the page gives,
and no other entry may have gone: otherwise (a SIGSEGV leaves the page out,
reclaim drops entries elsewhere) the window ends there, the other sets rebuilt
without what went, and the next one starts from the TLB as it is.

It applies only where it is exact and simple (see `exact_for`): no event
listeners (every access would be an event), Linux's page-cache policy (a
textbook policy sees every access), an LRU, ASID-tagged TLB, whole-nanosecond
costs. trace.replay falls back to the access-at-a-time loop elsewhere. Once a
guest has handed out all its RAM, reclaim may clear accessed bits and unmap
pages inside any fault: access_many then goes one access at a time (`in_order`).
"""

from __future__ import annotations

import dataclasses
import heapq
from bisect import bisect_left
from itertools import accumulate
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError
from xipmodel.mm import memory
from xipmodel.mm.frames import FrameKind
from xipmodel.mm.tlb import ASID_SHIFT
from xipmodel.params import PAGE_SHIFT, PTE_A, PTE_D, PTE_W, PTE_X

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct

__all__ = ["CHUNK", "access_many", "exact_for"]

Ints = npt.NDArray[np.int64]

_KIND_NAMES = ("r", "w", "x")
_NEEDS = (0, PTE_W, PTE_X)  # the PTE bit each kind (read, write, exec) needs
_WRITE = 1
_VPN_MASK = (1 << ASID_SHIFT) - 1
_MIN_SCAN, _MAX_SCAN = 64, 1 << 16  # heads looked at per numpy step of the stop scan
_FEW_WRITES = 16  # fewer writes than this are stored one at a time
_MIN_WINDOW, _MAX_WINDOW = 256, 1 << 20  # accesses of a window (its arrays are that long)
CHUNK: Final = 1 << 16  # accesses of the first window (each next one twice the last)
# Where stops come closer than every _DENSE accesses (a program's first touches), a
# window's set-up per stop costs more than going one access at a time: _IN_ORDER
# accesses go so (in_order), then the stops' density is looked at again.
_DENSE, _IN_ORDER = 256, 4096


def exact_for(guest: Guest) -> bool:
    """Does access_many give exactly memory.access's results in this guest?"""
    tlb = guest.tlb
    return (not guest.bus and guest.cache.policy == "linux" and tlb.policy == "lru"
            and tlb.asid_tagged and isinstance(guest.time, int)
            and all(isinstance(v, int) for v in dataclasses.astuple(guest.costs)))


def _set_of(vpns: npt.NDArray[np.uint64], nsets: int) -> npt.NDArray[np.integer]:
    """Each page's TLB set (vpn % nsets), in the narrowest type (numpy sorts those by radix)."""
    sets = vpns & np.uint64(nsets - 1) if nsets & (nsets - 1) == 0 else vpns % np.uint64(nsets)
    return sets.astype(np.uint8 if nsets <= 1 << 8 else np.uint16 if nsets <= 1 << 16
                       else np.int64)


class _Run:
    """The state of one access_many call: the trace and the process."""

    def __init__(self, guest: Guest, mm: MmStruct, vpns: npt.NDArray[np.uint64],
                 kinds: npt.NDArray[np.uint8], contents: Ints) -> None:
        self.guest, self.mm, self.asid = guest, mm, mm.asid
        self.vpns, self.kinds, self.contents = vpns, kinds, contents
        self.n = int(vpns.size)
        self.writes = np.flatnonzero(kinds == _WRITE)

    def access(self, j: int) -> int:
        """memory.access for access j (its fault flags)."""
        return memory.access(self.guest, self.mm, self.vpns.item(j) << PAGE_SHIFT,
                             _KIND_NAMES[self.kinds.item(j)], self.contents.item(j) or None)

    def reclaim_may_run(self) -> bool:
        """Could a fault reclaim now (age and unmap pages, drop TLB entries anywhere)?
        Only once the guest has handed out every frame (then the free list can run dry)."""
        return self.guest.free_area.top >= self.guest.ram_pages

    def in_order(self, start: int, end: int) -> list[int]:
        """memory.access for accesses [start, end), one at a time, with its two common
        cases done here: a TLB hit allowed by the entry, and a miss whose walk finds a
        PTE that allows the access. The rest (faults, a write through a read-only
        entry) go through memory.access. Their nonzero fault flags."""
        guest, asid, tlb, preset = self.guest, self.asid, self.guest.tlb, self.guest.preset
        stats, host, lookup_pte = guest.stats, guest.host, self.mm.pt.lookup_pte
        access_ns, walk_cost = guest.costs.access_ns, guest.walk_cost
        walk_ns = walk_cost * guest.costs.walk_ref_ns
        sets, nsets, present = tlb.sets, tlb.nsets, preset.pte_present
        faults = []
        for j, (vpn, kind, content) in enumerate(zip(self.vpns[start:end].tolist(),
                                                     self.kinds[start:end].tolist(),
                                                     self.contents[start:end].tolist(),
                                                     strict=True), start):
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
                gpfn = self.fill_tlb(vpn, pte, kind == _WRITE)
            else:
                if flags := self.access(j):
                    faults.append(flags)
                continue
            # The write itself (memory.access's last step).
            if kind == _WRITE and gpfn < guest.ram_pages \
                    and guest.kind.item(gpfn) in memory.PRIVATE_KINDS:
                guest.write_page(gpfn, content or host.unique_content())
        return faults

    def fill_tlb(self, vpn: int, pte: int, write: bool) -> int:
        """memory.fill_tlb for a miss, its TLB.insert done here (an LRU, ASID-tagged
        TLB); the frame cached."""
        tlb, preset = self.guest.tlb, self.guest.preset
        young = preset.pte_accessed | (preset.pte_dirty if write else 0)
        bits = PTE_A | (PTE_D if write else 0)
        if pte & young != young:  # the MMU writes the entry only to set a bit not yet set
            self.mm.pt.set_flags(vpn, bits)
            pte |= young
        gpfn: int = (pte >> preset.pfn_shift) & preset.pfn_mask
        s = tlb.sets[vpn % tlb.nsets]
        if len(s) >= tlb.ways:
            del s[next(iter(s))]
            tlb.evictions += 1
        s[self.asid << ASID_SHIFT | vpn] = (gpfn, int(preset.pte_flags(pte)) | bits)
        return gpfn


class _Window:
    """Accesses [a, b) of a run: the TLB as one LRU simulation per set, memory.access at
    the stops. Everything it defers is up to date at each stop and at its end."""

    def __init__(self, run: _Run, a: int, b: int) -> None:
        guest, tlb = run.guest, run.guest.tlb
        self.run, self.guest, self.tlb, self.a, self.b = run, guest, tlb, a, b
        self.ways, self.nsets, self.asid = tlb.ways, tlb.nsets, run.asid
        vpns, kinds = run.vpns[a:b], run.kinds[a:b]
        # The window's accesses by set, in time order within each; a "run" is a stretch of
        # one page (and kind) in its set: its accesses after the first change nothing the
        # first did not (the page stays the most recently used of its set).
        order = np.argsort(_set_of(vpns, self.nsets), kind="stable")
        by_set, kind_by_set = vpns[order], kinds[order]
        new_page = np.ones(b - a, dtype=bool)
        np.not_equal(by_set[1:], by_set[:-1], out=new_page[1:])
        new_code = new_page.copy()
        new_code[1:] |= kind_by_set[1:] != kind_by_set[:-1]
        heads = np.flatnonzero(new_code)  # the first access of each (page, kind) run
        starts = new_page[heads]  # the heads that start a run of one page
        self.pages, run_page = _distinct(by_set[heads[starts]])  # the window's pages
        self.vpn = self.pages.tolist()
        self.page_of = {vpn: k for k, vpn in enumerate(self.vpn)}
        self.set_of = _set_of(self.pages, self.nsets).tolist()
        self.simulate(run_page, order[heads[starts]] + a)
        head_page = run_page[np.cumsum(starts) - 1]
        # The stop scan walks the heads in time order: a (page, kind) the PTE allows
        # stays allowed until the next stop, so a run stops at its head or not at all.
        by_time = np.argsort(order[heads], kind="stable")
        self.head_at = order[heads][by_time] + a
        self.head_code = (head_page * 3 + kind_by_set[heads])[by_time]
        self.run_order, self.run_heads, self.by_time = order, heads, by_time
        # The window's writes (from first_write on in run.writes) and their pages.
        self.first_write, last_write = np.searchsorted(run.writes, (a, b)).tolist()
        self.write_page = np.searchsorted(self.pages,
                                          run.vpns[run.writes[self.first_write:last_write]])
        self.next_head, self.scan = 0, _MIN_SCAN
        self.pending: list[tuple[int, int]] = []  # (access, code): stops not at a head
        self.read_ptes()
        self.done = a  # accesses before it are up to date (counters, PTEs, writes)
        # By set: the pages filled since it was last rebuilt, whether their last fill wrote.
        self.filled: list[dict[int, bool]] = [{} for _ in range(self.nsets)]

    # --- the simulation ---------------------------------------------------------------

    def simulate(self, pages: Ints, at: Ints) -> None:
        """Hits and misses of the window's page runs (`pages`, set by set, starting at
        accesses `at`), their sets' LRU order starting from the TLB as it is.

        Each set's sequence starts with the entries it holds (least recently used
        first), as if accessed before the window: ids past the window's pages stand for
        pages it does not touch and other processes' entries (`other`).
        """
        ways, npages = self.ways, len(self.vpn)
        self.other: list[int] = []
        before, before_set = [], []
        for n, s in enumerate(self.tlb.sets):
            for key in s:
                k = self.page_of.get(key & _VPN_MASK) if key >> ASID_SHIFT == self.asid \
                    else None
                if k is None:
                    k = npages + len(self.other)
                    self.other.append(key)
                before.append(k)
                before_set.append(n)
        sets = np.asarray(self.set_of, dtype=np.int64)[pages]
        where = np.searchsorted(sets, before_set)
        seq = np.insert(pages, where, before)
        sets = np.insert(sets, where, before_set)
        at = np.insert(at, where, -1)
        # A run may repeat the set's most recently used entry: nothing happens then.
        keep = np.ones(seq.size, dtype=bool)
        np.not_equal(seq[1:], seq[:-1], out=keep[1:])
        seq, sets, at = seq[keep], sets[keep], at[keep]
        m = seq.size
        start = np.searchsorted(sets, np.arange(self.nsets + 1))
        # Each position's previous and next use of the same page (-1, m: none).
        by_page = np.argsort(seq.astype(np.int16 if m and seq.max() < 1 << 15 else np.int64),
                             kind="stable")
        same = seq[by_page[1:]] == seq[by_page[:-1]]
        prev = np.full(m, -1, dtype=np.int64)
        prev[by_page[1:][same]] = by_page[:-1][same]
        nxt = np.full(m, m, dtype=np.int64)
        nxt[by_page[:-1][same]] = by_page[1:][same]
        self.levels = _max_levels(nxt, int(np.diff(start).max(initial=0)))
        # An access with fewer than `ways` positions since its page's last use hits for
        # sure; the others (and first uses) count the distinct pages in between.
        t = np.arange(m)
        first = np.repeat(start[:-1], np.diff(start))  # the first position of t's set
        counted = np.flatnonzero((at >= 0) & ((prev < 0) | (t - prev > ways)))
        lo = np.where(prev[counted] >= 0, prev[counted] + 1, first[counted])
        full = _distinct_in(self.levels, counted, lo, ways) >= ways
        miss = (prev[counted] < 0) | full
        misses = counted[miss]
        by_time = np.argsort(at[misses], kind="stable")
        self.miss_at: list[int] = at[misses][by_time].tolist()
        self.miss_page: list[int] = seq[misses][by_time].tolist()
        self.miss_write = (self.run.kinds[self.miss_at] == _WRITE).tolist()
        # Evictions before each miss (a miss into a full set evicts its LRU entry).
        self.evicted = [0, *accumulate(full[miss][by_time].tolist())]
        self.seq, self.seq_at, self.nxt = seq, at, nxt
        self.start: list[int] = start.tolist()

    def lru(self, n: int, j: int) -> list[int]:
        """Set n's entries just before access j, least recently used first, as ids."""
        lo, hi = self.start[n], self.start[n + 1]
        t = lo + int(np.searchsorted(self.seq_at[lo:hi], j))  # the positions before j
        nxt, p = self.nxt, t
        found: list[int] = []
        while len(found) < self.ways:
            # The last use of a page before j is a position whose next use is at t or later.
            p = p - 1 if p - 1 >= lo and nxt.item(p - 1) >= t else \
                _last_at_least(self.levels, lo, p, t)
            if p < lo:
                break
            found.append(self.seq.item(p))
        return found[::-1]

    def tlb_key(self, k: int) -> int:
        """The TLB's key of an id of `simulate`."""
        return self.asid << ASID_SHIFT | self.vpn[k] if k < len(self.vpn) \
            else self.other[k - len(self.vpn)]

    # --- PTEs and what they allow ---------------------------------------------------

    def read_ptes(self) -> None:
        """Read the PTEs of the window's pages, and which entries of this process
        disagree with theirs (`stale`: stopped at until they agree)."""
        lookup_pte = self.run.mm.pt.lookup_pte
        self.pte = [lookup_pte(vpn) for vpn in self.vpn]
        self.pfn = np.zeros(len(self.vpn), dtype=np.int64)
        self.ok = np.zeros(3 * len(self.vpn), dtype=bool)  # by page * 3 + kind
        self.private = np.zeros(len(self.vpn), dtype=bool)
        self.stale: set[int] = set()
        for s in self.tlb.sets:
            for key, entry in s.items():
                k = self.page_of.get(key & _VPN_MASK) if key >> ASID_SHIFT == self.asid \
                    else None
                if k is not None and not self.agrees(entry, self.pte[k]):
                    self.stale.add(k)
        for k in range(len(self.vpn)):
            self.allow(k)

    def agrees(self, entry: tuple[int, int], pte: int) -> bool:
        """Does a TLB entry allow what its PTE allows, at the same frame? (Any change of a
        PTE's frame or permissions invalidates the entry; this is checked, not assumed.)"""
        preset = self.guest.preset
        return bool(pte & preset.pte_present) and entry[0] == preset.pte_pfn(pte) \
            and not (entry[1] ^ int(preset.pte_flags(pte))) & (PTE_W | PTE_X)

    def allow(self, k: int) -> None:
        """Note what page k's PTE allows (nothing while its entry is stale), its frame, and
        whether a write changes the frame's content (a private page)."""
        guest, pte = self.guest, self.pte[k]
        preset = guest.preset
        self.pfn[k] = gpfn = preset.pte_pfn(pte)
        if k in self.stale or not pte & preset.pte_present:
            self.ok[3 * k:3 * k + 3] = self.private[k] = False
            return
        self.private[k] = gpfn < guest.ram_pages \
            and guest.kind.item(gpfn) in memory.PRIVATE_KINDS
        flags = int(preset.pte_flags(pte))
        self.ok[3 * k:3 * k + 3] = (True, bool(flags & PTE_W), bool(flags & PTE_X))

    # --- the stops ---------------------------------------------------------------------

    def replay(self) -> tuple[int, list[int], bool]:
        """Make the window's accesses. Returns where the next window starts, the nonzero
        fault flags, and whether it ended early (memory.access did something the
        simulation does not foresee: the rest needs a new one)."""
        tlb, faults = self.tlb, []
        while (stop := self.next_stop()) is not None:
            j, code = stop
            vpn, k = self.vpn[code // 3], code // 3
            n = self.set_of[k]
            self.catch_up(j)
            self.rebuild(n, j)
            s = tlb.sets[n]
            key = self.asid << ASID_SHIFT | vpn
            expected, dropped = list(s), (tlb.flushes, tlb.invalidations + (key in s))
            held = [len(other) for other in tlb.sets]
            if flags := self.run.access(j):
                faults.append(flags)
            self.done = j + 1
            # What changed: the page's PTE (and entry), and its set as an LRU access does.
            self.pte[k] = self.run.mm.pt.lookup_pte(vpn)
            entry = s.get(key)
            if entry is None or self.agrees(entry, self.pte[k]):
                self.stale.discard(k)
            else:
                self.stale.add(k)
            self.allow(k)
            if key in expected:
                expected.remove(key)
            elif len(expected) == self.ways:
                del expected[0]
            expected.append(key)
            # Other sets lose entries only by reclaim (it drops the entries of what it ages
            # or unmaps), which can run only once the guest has handed out all its RAM;
            # memory.access drops no other entry (CoW drops the page's own), checked.
            if list(s) != expected or self.run.reclaim_may_run() \
                    or (tlb.flushes, tlb.invalidations) > dropped:
                for m in range(self.nsets):
                    if m != n:
                        self.rebuild(m, j, held[m])
                return j + 1, faults, True
            if not self.ok[code]:
                self.stop_again(j, code)
        self.catch_up(self.b)
        for n in range(self.nsets):
            self.rebuild(n, self.b)
        return self.b, faults, False

    def next_stop(self) -> tuple[int, int] | None:
        """The next access (and its code) that needs memory.access, None at the end."""
        codes, ok, pte, present = self.head_code, self.ok, self.pte, \
            self.guest.preset.pte_present
        while True:
            h = self.next_bad_head()
            j = self.head_at.item(h) if h < codes.size else self.b
            if self.pending and self.pending[0][0] < j:
                return heapq.heappop(self.pending)
            if h == codes.size:
                return None
            self.next_head = h + 1
            code = codes.item(h)
            k = code // 3
            if k not in self.stale and not pte[k] & present:
                # Not present when last read: mapped since (fault-around) or a fault.
                pte[k] = self.run.mm.pt.lookup_pte(self.vpn[k])
                self.allow(k)
                if ok[code]:
                    continue
            return j, code

    def next_bad_head(self) -> int:
        """The first head from next_head on whose (page, kind) the PTE does not allow."""
        ok, codes, h, scan = self.ok, self.head_code, self.next_head, self.scan
        while h < codes.size:
            end = min(codes.size, h + scan)
            allowed = ok[codes[h:end]]
            i = int(allowed.argmin())
            if not allowed[i]:
                self.scan = max(_MIN_SCAN, 2 * i)
                return h + i
            h, scan = end, min(2 * scan, _MAX_SCAN)
        return h

    def stop_again(self, j: int, code: int) -> None:
        """Access j still is not allowed (a SIGSEGV, a stale entry): the rest of its run
        stops too."""
        h = int(np.searchsorted(self.head_at, j))
        if h == self.head_at.size or self.head_at.item(h) != j:
            return  # not a head: its run is pending already
        at = self.run_heads.item(self.by_time.item(h))
        end = self.run_heads.item(self.by_time.item(h) + 1) \
            if self.by_time.item(h) + 1 < self.run_heads.size else self.b - self.a
        for i in (self.run_order[at + 1:end] + self.a).tolist():
            heapq.heappush(self.pending, (i, code))

    # --- catching up -----------------------------------------------------------------

    def catch_up(self, j: int) -> None:
        """Bring accesses [done, j) up to date: counters, PTEs, writes. Their TLB fills are
        noted (`filled`) for the rebuild of their sets."""
        guest, stats, tlb, done = self.guest, self.guest.stats, self.tlb, self.done
        lo, hi = bisect_left(self.miss_at, done), bisect_left(self.miss_at, j)
        walks, hits = hi - lo, j - done - (hi - lo)
        walk_refs = walks * guest.walk_cost
        stats.accesses += j - done
        stats.tlb_hits += hits
        stats.tlb_misses += walks
        stats.walk_refs += walk_refs
        tlb.hits += hits
        tlb.misses += walks
        tlb.evictions += self.evicted[hi] - self.evicted[lo]
        guest.time += (j - done) * guest.costs.access_ns + walk_refs * guest.costs.walk_ref_ns
        # The walks set the accessed bit, and the dirty bit for a write (once per page).
        preset, filled = guest.preset, self.filled
        young_a, young_d = preset.pte_accessed, preset.pte_accessed | preset.pte_dirty
        for k, write in zip(self.miss_page[lo:hi], self.miss_write[lo:hi], strict=True):
            filled[self.set_of[k]][k] = write
            young = young_d if write else young_a
            if self.pte[k] & young != young:  # the MMU writes a PTE only to set a bit
                self.run.mm.pt.set_flags(self.vpn[k], PTE_A | (PTE_D if write else 0))
                self.pte[k] |= young
        self.store_writes(done, j)
        self.done = j

    def rebuild(self, n: int, j: int, held: int | None = None) -> None:
        """Set n as it is just before access j (caught up to j): the entries filled since
        it was last rebuilt from their PTEs, the others as they are.

        `held`: memory.access may have dropped entries (reclaim) from this set, which
        held `held` entries before it: an entry filled since is gone if its PTE changed (a
        PTE changes before its entry is dropped), another if the set no longer holds it.
        The TLB counted an invalidation for each entry the set held then (its entries as
        of its last rebuild); the reference, for each entry of the set just before j.
        """
        preset, s, filled, entries = self.guest.preset, self.tlb.sets[n], self.filled[n], []
        dropped = held is not None
        gone = 0  # entries of the set just before j that are gone
        for k in self.lru(n, j):
            key = self.tlb_key(k)
            if k in filled:
                pte = self.pte[k]
                if dropped and self.run.mm.pt.lookup_pte(self.vpn[k]) != pte:
                    gone += 1
                    continue
                flags = int(preset.pte_flags(pte)) | PTE_A | (PTE_D if filled[k] else 0)
                entries.append((key, (preset.pte_pfn(pte), flags)))
            elif key in s or not dropped:
                entries.append((key, s[key]))
            else:
                gone += 1
        if held is not None:  # (only set n gets an entry in memory.access: none came in)
            self.tlb.invalidations += gone - (held - len(s))
        filled.clear()
        s.clear()
        s.update(entries)

    def store_writes(self, start: int, end: int) -> None:
        """What the writes among accesses [start, end) did to private pages (memory.access's
        last step): fresh content ids in order, each page left holding its last write."""
        guest, host, run = self.guest, self.guest.host, self.run
        lo, hi = (int(i) - self.first_write
                  for i in np.searchsorted(run.writes, (start, end)))
        at, pages = run.writes[self.first_write + lo:self.first_write + hi], \
            self.write_page[lo:hi]
        if hi - lo <= _FEW_WRITES:  # numpy would cost more than it saves
            for w, k in zip(at.tolist(), pages.tolist(), strict=True):
                if self.private.item(k):
                    guest.write_page(self.pfn.item(k), run.contents.item(w)
                                     or host.unique_content())
            return
        private = self.private[pages]
        if not private.any():
            return
        at, pages = at[private], pages[private]
        content = run.contents[at]
        fresh = content == 0
        if fresh.any():
            content[fresh] = host.unique_contents(int(np.count_nonzero(fresh)))
        # Each page keeps its last write (the largest index, plus one, of its writes).
        last = np.zeros(len(self.vpn), dtype=np.int64)
        np.maximum.at(last, pages, np.arange(1, pages.size + 1))
        written = np.flatnonzero(last)
        gpfn = self.pfn[written]
        if (host.kind[guest.backing[gpfn]] == FrameKind.KSM).any():
            # A write breaks a KSM merge (a new host frame): one at a time, as memory.access.
            for g, c in zip(self.pfn[pages].tolist(), content.tolist(), strict=True):
                guest.write_page(g, c)
            return
        host.content[guest.backing[gpfn]] = content[last[written] - 1]


def _distinct(values: npt.NDArray[np.uint64]) -> tuple[npt.NDArray[np.uint64], Ints]:
    """The distinct values (sorted) and each value's index among them: those of a sample
    first, then those it missed (a window holds few distinct pages, np.unique sorts all)."""
    found = np.unique(values[::64])
    at = np.searchsorted(found, values)
    missed = found[np.minimum(at, found.size - 1)] != values
    if missed.any():
        found = np.union1d(found, values[missed])
        at = np.searchsorted(found, values)
    return found, at


def _max_levels(values: npt.NDArray[np.integer], span: int) -> list[npt.NDArray[np.integer]]:
    """A sparse table: level e holds the maximum of values[i : i + 2**e] at i, for the
    levels a range of up to `span` positions needs."""
    levels = [values]
    while 1 << len(levels) <= span:
        half = 1 << (len(levels) - 1)
        levels.append(np.maximum(levels[-1][:-half], levels[-1][half:]))
    return levels


def _last_at_least(levels: list[npt.NDArray[np.integer]], lo: int, p: int, t: int) -> int:
    """The last position in [lo, p) whose value (levels[0]) is at least t; lo - 1 if none."""
    for e in range(len(levels) - 1, -1, -1):
        i = p - (1 << e)
        if i >= lo and levels[e].item(i) < t:
            p = i  # the 2**e positions from i on are all below t
    return p - 1


def _distinct_in(levels: list[npt.NDArray[np.integer]], t: Ints, lo: Ints, cap: int) -> Ints:
    """For each t: how many distinct pages a set's sequence holds at positions [lo, t),
    counted up to `cap`. They are the positions whose next use (levels[0]) is t or later;
    the last two before t always are (no page follows itself)."""
    count: Ints = np.minimum(t - lo, min(2, cap))
    below = t - 2  # where to look for the next one
    alive = np.flatnonzero(count == 2) if cap > 2 else np.zeros(0, dtype=np.int64)
    for _ in range(cap - 2):
        p, lo_, t_ = below[alive], lo[alive], t[alive]
        for e in range(len(levels) - 1, -1, -1):
            i = p - (1 << e)
            inside = i >= lo_
            skip = inside & (levels[e][np.where(inside, i, 0)] < t_)
            p = np.where(skip, i, p)
        found = p > lo_
        count[alive[found]] += 1
        below[alive] = p - 1
        alive = alive[found]
    return count


def access_many(guest: Guest, mm: MmStruct, vpns: npt.NDArray[np.uint64],
                kinds: npt.NDArray[np.uint8], contents: Ints,
                chunk: int = CHUNK) -> list[int]:
    """memory.access for each (vpn, kind, content) in order (content 0: fresh); returns the
    nonzero VM_FAULT_* flags of the accesses that faulted, in order.

    Exactly what calling memory.access for each would leave, where `exact_for(guest)`.
    The trace goes by windows, the first of `chunk` accesses, each next one twice
    the last (up to _MAX_WINDOW), or after one that ended early twice as long as that
    one lasted.
    """
    if chunk < 1:
        raise ParameterError(f"access_many: chunk={chunk!r}: must be >= 1")
    run = _Run(guest, mm, vpns, kinds, contents)
    faults: list[int] = []
    i, length, dense = 0, chunk, True
    while i < run.n:
        if run.reclaim_may_run():
            return faults + run.in_order(i, run.n)
        start = i
        if dense:
            i = min(run.n, i + _IN_ORDER)
            flags = run.in_order(start, i)
        else:
            i, flags, early = _Window(run, i, min(run.n, i + length)).replay()
            length = min(_MAX_WINDOW, max(_MIN_WINDOW, 2 * (i - start)) if early else 2 * length)
        faults += flags
        dense = len(flags) * _DENSE > i - start
    return faults
