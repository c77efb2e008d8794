"""Model of mm/ksm.c: merging identical guest pages on the host, after the fact.

On a KVM host a guest's RAM (page cache included) is anonymous memory of the
VM process, so ksmd can merge the N page-cache copies of one binary, slowly::

    every sleep_millisecs (20 ms) ksmd scans pages_to_scan (100) guest pages:
      content already in the stable tree?      → merge: map the stable frame read-only
      unchanged since the last scan (checksum)?
        an identical page in the unstable tree? → make a stable KSM frame of both
        else                                    → insert into the unstable tree
      changed since last scan                   → volatile, try again next pass
    a full pass over all pages empties the unstable tree (full_scans += 1)

A guest writing a merged page takes a host copy-on-write fault (cow_ksm).
Defaults 100 pages / 20 ms = 5,000 pages/s: 16 GiB takes ≈ 839 s a pass.
Each scanned page costs a 64-byte rmap_item. Not modelled: use_zero_pages,
merge_across_nodes, the smart scan and advisor heuristics of recent kernels.

This file is the reference, page by page. Once no guest runs any more, its passes
are also counted in bulk (ksm_bulk.py: the same counters, tested against this), and
once a full pass changes nothing, the passes after it (settled, settled_counters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.events import EventBus, KsmMerge, KsmScan
from xipmodel.mm.frames import OWNER_HOST, FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.params import PTE_U, PTE_X

__all__ = ["RMAP_ITEM_BYTES", "Ksm", "KsmCounters"]

RMAP_ITEM_BYTES: Final = 64  # sizeof(struct ksm_rmap_item)
_NEVER: Final = 1 << 62
_KSM: Final = int(FrameKind.KSM)
_RO_EPT: Final = PTE_X | PTE_U  # a merged page is mapped read-only: a write faults (cow_ksm)


@dataclass
class KsmCounters:
    """/sys/kernel/mm/ksm/*: the counters ksm.rst documents."""

    pages_shared: int = 0  # stable KSM frames in use
    pages_sharing: int = 0  # further mappings of them: the pages saved
    pages_unshared: int = 0  # unique pages repeatedly checked (in the unstable tree)
    pages_volatile: int = 0  # changing too fast to be put in a tree
    full_scans: int = 0
    pages_scanned: int = 0
    rmap_items: int = 0

    @property
    def profit_bytes(self) -> int:
        """ksm.rst's general profit: pages_sharing × page size − rmap_items × 64 B."""
        return self.pages_sharing * 4096 - self.rmap_items * RMAP_ITEM_BYTES


class Ksm:
    """ksmd: scans the RAM of every registered guest (KVM marks it MADV_MERGEABLE)."""

    def __init__(self, host: HostMemory, guests: list[Guest], *, pages_to_scan: int = 100,
                 sleep_millisecs: int = 20, max_page_sharing: int = 256,
                 bus: EventBus | None = None) -> None:
        for name, value in (("pages_to_scan", pages_to_scan),
                            ("sleep_millisecs", sleep_millisecs),
                            ("max_page_sharing", max_page_sharing)):
            if value < 1 or (name == "max_page_sharing" and value < 2):
                raise ParameterError(f"Ksm: {name} {value} is out of range")
        self.host = host
        self.guests = guests
        self.pages_to_scan = pages_to_scan
        self.sleep_ns = sleep_millisecs * 1_000_000
        self.max_page_sharing = max_page_sharing
        self.bus = bus if bus is not None else EventBus()
        self._counters = KsmCounters()
        self._merges = 0
        self._remaps: list[tuple[int, int, int]] = []  # (guest index, gpfn, stable frame)
        self._extra: dict[int, int] = {}  # stable frame → references still to add
        self._olds: list[int] = []  # frames the chunk's merges release
        self.stable: dict[int, list[int]] = {}  # content → stable KSM frames (a chain)
        self.unstable: dict[int, tuple[int, int]] = {}  # content → (guest index, gpfn)
        self.checksum: dict[tuple[int, int], int] = {}  # rmap_item.oldchecksum
        self.rmap_items: set[tuple[int, int]] = set()  # (guest, gpfn) of every page scanned
        self._pass_guests = np.zeros(0, dtype=np.int64)  # this pass: which guest …
        self._pass_pages = np.zeros(0, dtype=np.int64)  # … and which of its frames
        self._cursor = 0
        self._next_wake = 0
        self.time = 0
        # What this pass changed (merges, checksums, rmap_items, failed allocations), and
        # the pages of the last full pass if it changed nothing (see settled()).
        self._changes = 0
        self._quiet: tuple[np.ndarray, np.ndarray] | None = None

    def copy(self, host: HostMemory, guests: list[Guest]) -> Ksm:
        """ksmd in exactly this state, scanning `guests` on `host` instead: copies of this
        ksmd's guests and host (HostMemory.copy, Guest.copy_frames), same order."""
        assert not (self._remaps or self._extra or self._olds), "copy: a chunk under way"
        new = Ksm.__new__(Ksm)
        new.__dict__.update(self.__dict__)
        new.host, new.guests = host, guests
        new._counters = dataclasses.replace(self._counters)
        new._remaps, new._extra, new._olds = [], {}, []
        new.stable = {content: list(chain) for content, chain in self.stable.items()}
        new.unstable = dict(self.unstable)
        new.checksum = dict(self.checksum)
        new.rmap_items = set(self.rmap_items)
        return new  # the pass's arrays are shared: a pass replaces them, never writes them

    # --- running ---------------------------------------------------------------------------

    @property
    def counters(self) -> KsmCounters:
        """The /sys/kernel/mm/ksm counters now."""
        self._recount()
        return self._counters

    @property
    def next_wake(self) -> int:
        """Model time of ksmd's next wake-up."""
        return self._next_wake

    @property
    def untouched(self) -> bool:
        """Has ksmd looked at no guest page yet (no rmap_item, no tree, no pass under way)?"""
        return not (self.rmap_items or self.stable or self.checksum or len(self._pass_pages)
                    or self._counters.pages_scanned or self._counters.full_scans)

    def run_until(self, time_ns: int) -> int:
        """Wake ksmd every sleep_millisecs up to model time `time_ns`; returns pages scanned.

        Nothing else runs meanwhile, so when no one listens for events the wake-ups'
        pages are scanned in one batch: the same pages in the same order.
        """
        if self._next_wake > time_ns:
            return 0
        wakeups = (time_ns - self._next_wake) // self.sleep_ns + 1
        if self.bus:
            scanned = 0
            for _ in range(wakeups):
                self.time = self._next_wake
                scanned += self.scan(self.pages_to_scan)
                self._next_wake += self.sleep_ns
            return scanned
        self._next_wake += (wakeups - 1) * self.sleep_ns
        self.time = self._next_wake
        self._next_wake += self.sleep_ns
        return self.scan(wakeups * self.pages_to_scan)

    def settled(self) -> bool:
        """Does every later pass repeat the last one? So when that full pass changed
        nothing (no merge, no checksum, no new rmap_item, no failed allocation), and the
        pass under way and every pass after it look at the same pages (no guest started
        since): each starts from the same state. (Only ksmd may run from now on.)"""
        if self._quiet is None or not len(self._pass_pages):
            return False
        resident = self._resident()
        return all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in
                   zip(self._quiet, (self._pass_guests, self._pass_pages), resident,
                       strict=True))

    def settled_counters(self, visits: Sequence[int]) -> list[KsmCounters]:
        """The counters after looking at visits[i] more pages, each pass repeating the
        last (settled()), without scanning them: only the unstable tree changes, filled
        page by page as a pass goes (one entry per content not merged, at its first
        page) and emptied at its end."""
        assert self.settled(), "settled_counters: the passes still change"
        hpfns = self._frames_of(self._pass_guests, self._pass_pages)
        live = np.flatnonzero(self.host.kind[hpfns] != _KSM)
        _, first = np.unique(self.host.content[hpfns[live]], return_index=True)
        inserted = np.zeros(len(hpfns) + 1, dtype=np.int64)
        inserted[live[first] + 1] = 1
        unstable = np.cumsum(inserted)  # the unstable tree after x pages of a pass
        size, now = len(hpfns), self.counters
        assert unstable[self._cursor] == now.pages_unshared, "settled_counters: not a repeat"
        out = []
        for v in visits:
            at = self._cursor + int(v)
            ended = (at - 1) // size if at > size else 0  # passes ended (when the next starts)
            c = dataclasses.replace(now, full_scans=now.full_scans + ended,
                                    pages_scanned=now.pages_scanned + int(v),
                                    pages_unshared=int(unstable[at - ended * size]))
            c.pages_volatile = max(0, c.rmap_items - c.pages_shared - c.pages_sharing
                                   - c.pages_unshared)
            out.append(c)
        return out

    def scan(self, nr_pages: int) -> int:
        """Model of ksm_do_scan: look at the next `nr_pages` guest pages."""
        merges_before = self._merges
        done = 0
        while done < nr_pages:
            if self._cursor >= len(self._pass_pages):
                if len(self._pass_pages):
                    self._end_pass()
                self._start_pass()
                if not len(self._pass_pages):
                    break
            take = min(nr_pages - done, len(self._pass_pages) - self._cursor)
            chunk = slice(self._cursor, self._cursor + take)
            self._cursor += take
            done += take
            self._scan_chunk(self._pass_guests[chunk], self._pass_pages[chunk])
        self._counters.pages_scanned += done
        if self.bus:
            self.bus.emit(KsmScan(self.time, -1, done, self._merges - merges_before,
                                  self._counters.full_scans))
        return done

    def _resident(self) -> tuple[np.ndarray, np.ndarray]:
        """The pages a pass starting now looks at: (guest index, gpfn), in scan order."""
        guests = [np.full(int(np.count_nonzero(g.backing >= 0)), gi, dtype=np.int64)
                  for gi, g in enumerate(self.guests)]
        pages = [np.flatnonzero(g.backing >= 0) for g in self.guests]
        return (np.concatenate(guests) if guests else np.zeros(0, np.int64),
                np.concatenate(pages) if pages else np.zeros(0, np.int64))

    def _start_pass(self) -> None:
        self._pass_guests, self._pass_pages = self._resident()
        self._cursor = 0
        self._changes = 0

    def _end_pass(self) -> None:
        # The unstable tree is rebuilt every pass: its pages may have changed meanwhile.
        self.unstable.clear()
        self._counters.full_scans += 1
        self._quiet = None if self._changes else (self._pass_guests, self._pass_pages)

    def _scan_chunk(self, guest_ids: np.ndarray, gpfns: np.ndarray) -> None:
        """cmp_and_merge_page for a run of pages, their frames gathered in one step."""
        hpfns = self._frames_of(guest_ids, gpfns)
        # get_next_rmap_item: every page ksmd scans has an rmap_item from its first scan on.
        items = len(self.rmap_items)
        self.rmap_items.update(zip(guest_ids.tolist(), gpfns.tolist(), strict=True))
        self._changes += len(self.rmap_items) - items
        # Merged pages (and frames given back meanwhile) need no look.
        live = (hpfns >= 0) & (self.host.kind[np.maximum(hpfns, 0)] != _KSM)
        contents = self.host.content[hpfns[live]].tolist()
        merge_page = self._cmp_and_merge_page
        for gi, gpfn, content in zip(guest_ids[live].tolist(), gpfns[live].tolist(), contents,
                                     strict=True):
            merge_page(gi, gpfn, content)
        self._flush()

    def _frames_of(self, guest_ids: np.ndarray, gpfns: np.ndarray) -> np.ndarray:
        """The host frames behind these guests' pages (-1: none)."""
        hpfns = np.empty(len(gpfns), dtype=np.int64)
        for gi in np.unique(guest_ids).tolist():
            sel = guest_ids == gi
            hpfns[sel] = self.guests[gi].backing[gpfns[sel]]
        return hpfns

    def _flush(self) -> None:
        """Apply the chunk's merges: EPT entries, stable-frame references, freed frames."""
        if not self._remaps:
            return
        by_guest: dict[int, list[tuple[int, int]]] = {}
        for gi, gpfn, kpfn in self._remaps:
            by_guest.setdefault(gi, []).append((gpfn, kpfn))
        for gi, pairs in by_guest.items():
            g = self.guests[gi]
            arr = np.array(pairs, dtype=np.int64)
            g.ept.map_many(arr[:, 0], arr[:, 1], _RO_EPT, replace=True)
        if self._extra:
            frames = np.fromiter(self._extra.keys(), dtype=np.int64, count=len(self._extra))
            counts = np.fromiter(self._extra.values(), dtype=np.int32, count=len(self._extra))
            np.add.at(self.host.refcount, frames, counts)
        self.host.put_many(np.array(self._olds, dtype=np.int64))
        self._remaps.clear()
        self._extra.clear()
        self._olds.clear()

    # --- merging ------------------------------------------------------------------------------

    def _cmp_and_merge_page(self, gi: int, gpfn: int, content: int) -> None:
        """Model of cmp_and_merge_page for one guest page holding `content`."""
        key = (gi, gpfn)
        # We first start with searching the page inside the stable tree.
        host = self.host
        for kpfn in self.stable.get(content, ()):
            if (host.kind[kpfn] == _KSM and host.content[kpfn] == content
                    and host.refcount[kpfn] + self._extra.get(kpfn, 0) < self.max_page_sharing):
                self._merge(gi, gpfn, kpfn)
                return
        # If the page changed since the last scan, it is volatile: don't bother.
        if self.checksum.get(key, _NEVER) != content:
            self.checksum[key] = content
            self._changes += 1
            return
        other = self.unstable.get(content)
        if other is not None and other != key:
            og, ogpfn = other
            oguest = self.guests[og]
            ohpfn = int(oguest.backing[ogpfn])
            if ohpfn >= 0 and host.kind[ohpfn] != _KSM and host.content[ohpfn] == content:
                new = host.alloc(FrameKind.KSM, OWNER_HOST, content)
                if new is None:
                    self._changes += 1  # (conservative: a full host is never settled)
                    return
                self.stable.setdefault(content, []).append(new)
                self._merge(og, ogpfn, new, first=True)
                self._merge(gi, gpfn, new)
                del self.unstable[content]
                return
        self.unstable[content] = key

    def _merge(self, gi: int, gpfn: int, kpfn: int, first: bool = False) -> None:
        """replace_page: point the guest's EPT entry at the stable frame, read-only.

        The guest's backing changes now; the EPT entry and the frames' references are
        updated for the whole chunk at once (_flush).
        """
        guest = self.guests[gi]
        old = int(guest.backing[gpfn])
        if not first:
            self._extra[kpfn] = self._extra.get(kpfn, 0) + 1
        guest.backing[gpfn] = kpfn
        self._remaps.append((gi, gpfn, kpfn))
        self._olds.append(old)
        self._merges += 1
        self._changes += 1
        if self.bus:
            self.bus.emit(KsmMerge(self.time, guest.gid, old, kpfn))

    def _recount(self) -> None:
        c = self._counters
        host = self.host
        top = host.frames
        ksm = host.kind[:top] == FrameKind.KSM
        c.pages_shared = int(np.count_nonzero(ksm))
        c.pages_sharing = int(host.refcount[:top][ksm].sum()) - c.pages_shared
        c.pages_unshared = len(self.unstable)
        c.rmap_items = len(self.rmap_items)
        # As pages_volatile_show computes it: what is in no tree.
        c.pages_volatile = max(0, c.rmap_items - c.pages_shared - c.pages_sharing
                               - c.pages_unshared)
