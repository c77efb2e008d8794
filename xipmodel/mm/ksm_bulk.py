"""ksmd's passes over guests that have stopped running, counted in bulk (mm/ksm.py's, exactly).

Once the last guest has started and run, nothing but ksmd changes guest memory:
every pass looks at the same pages in the same order, and ksm.py's rules
(cmp_and_merge_page) decide each page's fate by its content and its rank among
the pages of that content in scan order::

    pass 1   every page is new to ksmd: its checksum is taken (volatile)
    pass 2   the pages of one content go by blocks of max_page_sharing (256):
             the block's first page waits in the unstable tree, the second
             makes a stable frame of both, the rest join that frame; a block
             of one page waits in the unstable tree until the pass ends
    pass 3…  nothing merges any more: the pages left alone go into the
             unstable tree again, one by one, as the pass reaches them

So given the pages in scan order with, for each, its rank among the pages of
its content and where the next page of that content is (ScanOrder), ksmd's
counters and the frames its merges free after any number of pages scanned are
counts over arrays: no loop over pages. Valid for a ksmd that has looked at
nothing yet (Ksm.untouched) on a host with frames to spare (`fits`); ksm.py is
the reference, and tests/test_ksm_bulk.py checks that both give the same run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.ksm import KsmCounters

__all__ = ["QuietScan", "ScanOrder", "fits", "ksmd_passes", "wakeup_visits"]

Ints = npt.NDArray[np.int64]
_NONE: Final = np.iinfo(np.int64).max  # no next page of the same content


class ScanOrder:
    """The guests' resident pages in ksmd's scan order (guest by guest, gpfn by gpfn).

    Grown guest by guest (`extend`), so the first n guests' pages are a prefix:
    `offsets[n]` pages. Per page: its host `frame`, the frame's `content` and
    `kind`, its `rank` among the pages of its content and the index of the `next`
    page of that content (_NONE: none yet). The frames of guests that have run
    must not change afterwards (no ksmd meanwhile).
    """

    def __init__(self) -> None:
        self.offsets = [0]
        self.frame: Ints = np.zeros(0, np.int64)
        self.content: Ints = np.zeros(0, np.int64)
        self.kind = np.zeros(0, np.uint8)
        self.rank: Ints = np.zeros(0, np.int64)
        self.next: Ints = np.zeros(0, np.int64)
        # Every content seen (sorted): how many pages hold it, the last of them.
        self._contents: Ints = np.zeros(0, np.int64)
        self._count: Ints = np.zeros(0, np.int64)
        self._last: Ints = np.zeros(0, np.int64)

    def __len__(self) -> int:
        """Guests in the order."""
        return len(self.offsets) - 1

    def extend(self, host: HostMemory, backings: Sequence[Ints]) -> None:
        """Append the resident pages of more guests (their EPT backing: gpfn → frame)."""
        base = len(self.frame)
        frames = [backing[backing >= 0] for backing in backings]
        for f in frames:
            self.offsets.append(self.offsets[-1] + len(f))
        frame = np.concatenate(frames) if frames else np.zeros(0, np.int64)
        content = host.content[frame]
        # The new pages of one content, in scan order: a stable sort by content.
        by = np.argsort(content, kind="stable")
        in_order = content[by]
        first = np.ones(len(by), bool)
        first[1:] = in_order[1:] != in_order[:-1]
        starts = np.flatnonzero(first)
        group = np.cumsum(first) - 1
        sizes = np.diff(np.append(starts, len(by)))
        contents = in_order[starts]
        # Which of these contents earlier pages hold: they rank after those, and the
        # last of those pages now has a next one.
        at = np.searchsorted(self._contents, contents)
        seen = at < len(self._contents)
        seen[seen] = self._contents[at[seen]] == contents[seen]
        earlier = np.zeros(len(contents), np.int64)
        earlier[seen] = self._count[at[seen]]
        rank = np.empty(len(by), np.int64)
        rank[by] = earlier[group] + np.arange(len(by)) - starts[group]
        nxt = np.full(len(by), _NONE, np.int64)
        same = ~first[1:]
        nxt[by[:-1][same]] = by[1:][same] + base
        self.next = np.concatenate([self.next, nxt])
        self.next[self._last[at[seen]]] = by[starts[seen]] + base
        last = by[starts + sizes - 1] + base
        self._count[at[seen]] += sizes[seen]
        self._last[at[seen]] = last[seen]
        new = ~seen
        self._contents = np.insert(self._contents, at[new], contents[new])
        self._count = np.insert(self._count, at[new], sizes[new])
        self._last = np.insert(self._last, at[new], last[new])
        self.frame = np.concatenate([self.frame, frame])
        self.content = np.concatenate([self.content, content])
        self.kind = np.concatenate([self.kind, host.kind[frame]])
        self.rank = np.concatenate([self.rank, rank])


def wakeup_visits(times: Sequence[int], next_wake: int, sleep_ns: int, pages_to_scan: int
                  ) -> Ints:
    """Pages ksmd has looked at after run_until(t) for each t of `times` (Ksm.run_until's
    wake-ups: pages_to_scan every sleep_ns from `next_wake` on), cumulated."""
    out = np.zeros(len(times), np.int64)
    visits = 0
    for i, t in enumerate(times):
        if next_wake <= t:
            wakeups = (t - next_wake) // sleep_ns + 1
            next_wake += wakeups * sleep_ns
            visits += wakeups * pages_to_scan
        out[i] = visits
    return out


@dataclass
class QuietScan:
    """What ksmd has done after each number of pages looked at (one row per sample)."""

    counters: list[KsmCounters]  # /sys/kernel/mm/ksm at each sample
    freed: npt.NDArray[np.int64]  # rows: samples; columns: guest frames freed, by FrameKind

    def timeline(self) -> Ints:
        """Rows of KSM_TIMELINE_COLUMNS (host.py), one per sample."""
        return np.array([[c.pages_shared, c.pages_sharing, c.pages_unshared,
                          c.pages_volatile, c.full_scans, c.pages_scanned]
                         for c in self.counters], dtype=np.int64).reshape(-1, 6)


def _before(flags: npt.NDArray[np.bool_]) -> Ints:
    """counts[x] = how many of flags[:x] are set (x = 0 .. len)."""
    return np.concatenate(([0], np.cumsum(flags, dtype=np.int64)))


def ksmd_passes(order: ScanOrder, guests: int, visits: Ints, host: HostMemory,
                max_page_sharing: int = 256) -> QuietScan:
    """ksmd scanning the first `guests` guests of `order`: its state after `visits[i]` pages.

    `host` holds the frames now (maybe with more guests than `guests`: their references
    to the first guests' frames are discounted). See the module docstring for the rules.
    """
    size = order.offsets[guests]
    idx = np.arange(size, dtype=np.int64)
    q = order.rank[:size] % max_page_sharing  # place in its block of max_page_sharing
    nxt = order.next[:size]
    paired = nxt < size
    # Position in pass 2 (1-based) at which each page is merged; 0: never. A block's first
    # page is merged when the second arrives; every other page when it is scanned.
    pos = np.where(q >= 1, idx + 1, np.where(paired, nxt + 1, 0))
    merged_by = np.cumsum(np.bincount(pos, minlength=size + 1)[: size + 1])
    merged_by -= merged_by[0]  # drop the pages never merged
    frames_by = _before(q == 1)  # the second page of a block makes its stable frame
    waiting_by = _before(q == 0) - np.cumsum(np.bincount(pos[(q == 0) & paired],
                                                         minlength=size + 1))
    alone_by = _before((q == 0) & ~paired)  # in the unstable tree from pass 3 on

    # Where each sample is: passes done before the current one, pages looked at in it,
    # and how far pass 2's merges have got (`at`: all of them once pass 2 is over).
    done = np.where((visits > 0) & (size > 0), (visits - 1) // max(size, 1), -1)
    x = np.where(done >= 0, visits - done * size, 0)
    at = np.where(done == 1, x, np.where(done >= 2, size, 0))

    # Guest frames freed by the merges: when the last reference to each goes. Most are
    # one page's own frame (refcount 1); the few that more references hold (the zero
    # page) are counted apart, without the references of the guests after `guests`.
    frame = order.frame[:size]
    multi = host.refcount[frame] != 1
    single = ~multi & (pos > 0)
    free_pos, free_kind = [pos[single]], [order.kind[:size][single]]
    if multi.any():
        frames, inverse = np.unique(frame[multi], return_inverse=True)
        merges = np.bincount(inverse, weights=pos[multi] > 0, minlength=len(frames))
        last = np.zeros(len(frames), np.int64)
        np.maximum.at(last, inverse, pos[multi])
        later = order.frame[size:]
        later = later[np.isin(later, frames)]
        refs = host.refcount[frames] - np.bincount(np.searchsorted(frames, later),
                                                   minlength=len(frames))
        gone = (merges == refs) & (merges > 0)
        free_pos.append(last[gone])
        free_kind.append(host.kind[frames[gone]])
    points = np.unique(at)
    slot = np.searchsorted(points, np.concatenate(free_pos))  # first point at or past it
    kinds = np.concatenate(free_kind).astype(np.int64)
    cells = np.bincount(kinds * (len(points) + 1) + slot,
                        minlength=len(FrameKind) * (len(points) + 1))
    freed_at = np.cumsum(cells.reshape(len(FrameKind), -1), axis=1)
    freed = freed_at[:, np.searchsorted(points, at)].T.copy()

    counters = []
    for v, d, xi, ai in zip(visits.tolist(), done.tolist(), x.tolist(), at.tolist(),
                            strict=True):
        c = KsmCounters(pages_scanned=v if size else 0, rmap_items=min(v, size),
                        full_scans=max(d, 0))
        merged = int(merged_by[ai])
        c.pages_shared = int(frames_by[ai])
        c.pages_sharing = merged - c.pages_shared
        # The unstable tree: pass 2's first pages still waiting, or from pass 3 on the
        # pages left alone, as far as the pass has got.
        c.pages_unshared = int(waiting_by[xi] if d == 1 else alone_by[xi] if d >= 2 else 0)
        c.pages_volatile = max(0, c.rmap_items - merged - c.pages_unshared)
        counters.append(c)
    return QuietScan(counters, freed)


def fits(order: ScanOrder, guests: int, host: HostMemory, max_page_sharing: int = 256) -> bool:
    """Does the host have a free frame for every stable frame ksmd will make? (Else ksm.py's
    failed allocations change the run: use the reference.)"""
    size = order.offsets[guests]
    q = order.rank[:size] % max_page_sharing
    blocks = int(np.count_nonzero((q == 0) & (order.next[:size] < size)))
    return host.allocated + blocks <= host.capacity
