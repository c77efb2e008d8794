"""Model of textbook page replacement: FIFO, LRU, CLOCK, OPT, ARC and a two-list Linux LRU.

A reference string is a sequence of page ids; a cache of ``capacity`` frames
serves it under one replacement policy and reports, per reference, hit or miss.

    simulate(refs, capacity, policy)  → SimResult(hits, misses, hit_mask, steps)
    stack_distances(refs)             → Mattson (1970) LRU stack distance of each reference
    miss_ratio_curve(refs, capacities)→ LRU misses at every capacity, from one pass

Speed, on a 2-core machine (see bench/bench_policies.py for measured numbers):

* ``lru`` decides most references in bulk with numpy (the gaps between a page's
  uses found chunk by chunk, without sorting the whole string) and loops in
  Python over the few left (below);
* ``stack_distances`` / ``miss_ratio_curve`` are O(n log n) and fully numpy;
* ``fifo``, ``clock``, ``clock0``, ``opt``, ``arc`` and ``linux`` are plain
  Python loops over the references (one dict/deque operation per step).

Every policy except ``linux`` is checked reference by reference against
libCacheSim (tests/test_policies.py); ``linux`` has hand-traced cases.
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError

__all__ = [
    "POLICIES",
    "SimResult",
    "miss_ratio_curve",
    "next_uses",
    "previous_uses",
    "simulate",
    "stack_distances",
]

IntArray = npt.NDArray[np.int64]
SignedArray = npt.NDArray[np.signedinteger[Any]]
BoolArray = npt.NDArray[np.bool_]
Steps = list[tuple[int, bool, tuple[int, ...]]]

# A first reference has no previous use; OPT's "never again" is this index.
NEVER = -1


@dataclass(frozen=True)
class SimResult:
    """What one policy did with one reference string.

    ``hit_mask[i]`` is True when reference ``i`` found its page resident.
    ``steps`` (only with ``trace=True``) lists, per reference, OSTEP style:
    (page, hit, cache contents after the reference) — contents in the
    policy's own order, the next victim first where the policy has one.
    """

    policy: str
    capacity: int
    hits: int
    misses: int
    hit_mask: BoolArray
    steps: Steps | None = None

    @property
    def miss_ratio(self) -> float:
        """Misses per reference (0.0 for an empty reference string)."""
        total = self.hits + self.misses
        return self.misses / total if total else 0.0


# ---------------------------------------------------------------------------
# Input checking and the two index arrays everything is built on
# ---------------------------------------------------------------------------


def _as_refs(refs: Sequence[int] | npt.ArrayLike) -> IntArray:
    """Contract: ``refs`` as a 1-D int64 array (``refs`` itself if it is one: read, never
    written); every id a non-negative integer."""
    arr = np.asarray(refs)
    if arr.ndim != 1:
        raise ParameterError(f"refs: expected a 1-D sequence of page ids, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ParameterError(f"refs: page ids must be integers, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.unsignedinteger) and int(arr.max()) >= 2**63:
        raise ParameterError(f"refs: page id {int(arr.max())} does not fit in 63 bits")
    out = arr.astype(np.int64, copy=False)
    low = int(out.min())
    if low < 0:
        raise ParameterError(f"refs: page ids must be non-negative, got {low}")
    return out


def _check_capacity(name: str, capacity: object) -> int:
    if isinstance(capacity, bool) or not isinstance(capacity, int | np.integer):
        raise ParameterError(f"{name}: expected an integer number of frames, got {capacity!r}")
    if int(capacity) < 1:
        raise ParameterError(f"{name}: must be at least 1 frame, got {int(capacity)}")
    return int(capacity)


def _prev_next(ids: IntArray) -> tuple[IntArray, IntArray]:
    """Contract: prev[i] / next[i] = index of the previous / next use of ids[i], or NEVER.

    One sort of (page, index) packed into a single int64 key: numpy's
    vectorised sort of plain integers is several times faster than a stable
    argsort, and packing the index in the low bits makes it stable for free.
    """
    n = ids.size
    prev = np.full(n, NEVER, dtype=np.int64)
    nxt = np.full(n, NEVER, dtype=np.int64)
    if n < 2:
        return prev, nxt
    shift = (n - 1).bit_length()
    # Compress page ids first if packing them beside the index would overflow.
    if int(ids.max()).bit_length() + shift > 62:
        ids = np.unique(ids, return_inverse=True)[1].astype(np.int64)
    key = np.sort((ids << shift) | np.arange(n, dtype=np.int64))
    pos = key & ((1 << shift) - 1)
    page = key >> shift
    same = page[1:] == page[:-1]
    later, earlier = pos[1:][same], pos[:-1][same]
    prev[later] = earlier
    nxt[earlier] = later
    return prev, nxt


def previous_uses(refs: Sequence[int] | npt.ArrayLike) -> IntArray:
    """Index of the previous reference to the same page, -1 for a first reference."""
    return _prev_next(_as_refs(refs))[0]


def next_uses(refs: Sequence[int] | npt.ArrayLike) -> IntArray:
    """Index of the next reference to the same page, -1 if never again (what OPT reads)."""
    return _prev_next(_as_refs(refs))[1]


# ---------------------------------------------------------------------------
# Mattson stack distances, all at once
# ---------------------------------------------------------------------------
#
# The LRU stack distance of reference i (Mattson, Gecsei, Slutz & Traiger 1970)
# is the number of distinct pages referenced since the previous use p = prev[i]:
#
#     d[i] = #{ j in (p, i) : prev[j] < p }        (j is its page's first use after p)
#
# and LRU with C frames hits iff d[i] < C, for every C at once. Every j <= p has
# prev[j] < j <= p, so the window condition folds into one dominance count:
#
#     d[i] = A[i] - p - 1,    A[i] = #{ j < i : prev[j] < prev[i] }
#
# A is "how many smaller values lie to the left", counted here like a merge sort
# run backwards. Start from all indices sorted by prev (free: they are next[]
# in order). At each level, blocks of 2w consecutive indices are split into
# their left and right halves, stably, so each half stays sorted by prev; an
# index in the right half gains the number of left-half indices sorted before
# it. After log2(n) levels every index has counted every smaller prev to its
# left exactly once, and the array is back in index order.
#
#   level k: | block of 2w indices, sorted by prev |  →  | left w sorted | right w sorted |
#             L R R L L R ...   (R gains #L before it)


def _smaller_to_the_left(prev: IntArray, nxt: IntArray) -> IntArray:
    """Contract: A[i] = #{j < i : prev[j] < prev[i]} for every i with prev[i] >= 0."""
    n = prev.size
    levels = max(1, (n - 1).bit_length())
    padded = 1 << levels
    # Padding indices sort last (largest prev): they are never smaller than anything.
    order = np.concatenate(
        (np.flatnonzero(prev < 0), nxt[nxt >= 0], np.arange(n, padded, dtype=np.int64))
    )
    # Carry each count in the high half of the same int64 as its index, so one
    # partition per level moves both.
    key = order.astype(np.int64)
    for k in reversed(range(levels)):
        width = 1 << k
        right = (key >> k) & 1
        before = np.cumsum(right)
        before -= right  # right-half indices sorted before me, counted from row start below
        rows = before.reshape(-1, 2 * width)
        rows -= rows[:, :1].copy()
        # Left-half indices sorted before me = my column minus right ones before me.
        rows *= -1
        rows += np.arange(2 * width, dtype=np.int64)
        before *= right  # only right-half indices gain
        key += before << 32
        is_right = right.astype(np.bool_)
        key = np.concatenate(
            (key[~is_right].reshape(-1, width), key[is_right].reshape(-1, width)), axis=1
        ).ravel()
    return (key >> 32)[:n]


def stack_distances(refs: Sequence[int] | npt.ArrayLike) -> IntArray:
    """Mattson LRU stack distance of every reference; -1 for a first reference.

    Distance 0 means the page was the most recently used one. LRU with C
    frames hits reference i iff ``0 <= d[i] < C``. O(n log n), numpy only.
    """
    ids = _as_refs(refs)
    prev, nxt = _prev_next(ids)
    return _distances(prev, nxt)


def _distances(prev: IntArray, nxt: IntArray) -> IntArray:
    if prev.size == 0:
        return np.zeros(0, dtype=np.int64)
    smaller = _smaller_to_the_left(prev, nxt)
    return np.where(prev >= 0, smaller - prev - 1, NEVER)


def miss_ratio_curve(
    refs: Sequence[int] | npt.ArrayLike, capacities: Iterable[int] | npt.ArrayLike
) -> IntArray:
    """LRU miss count at each capacity, from one pass of Mattson stack distances.

    Returns an int64 array aligned with ``capacities`` (any order, repeats allowed).
    Divide by ``len(refs)`` for miss ratios.
    """
    caps = [_check_capacity("capacities", c) for c in np.asarray(capacities).ravel().tolist()]
    ids = _as_refs(refs)
    if not caps:
        return np.zeros(0, dtype=np.int64)
    dist = stack_distances(ids)
    # One histogram of distances, capped at the largest capacity asked for:
    # misses(C) = first references + references with distance >= C.
    top = max(caps)
    hist = np.bincount(np.minimum(dist[dist >= 0], top), minlength=top + 1)
    at_least = np.cumsum(hist[::-1])[::-1]  # at_least[c] = #{d >= c}
    cold = int(np.count_nonzero(dist < 0))
    return np.array([cold + int(at_least[c]) for c in caps], dtype=np.int64)


# ---------------------------------------------------------------------------
# The policies, one loop each
# ---------------------------------------------------------------------------


def _lru_sweep(prev: IntArray, nxt: IntArray, capacity: int) -> BoolArray:
    """Model of LRU as one eviction pointer sweeping the reference string.

    Every reference is an LRU "timestamp". The least recently used page is
    the oldest position e whose page has not been used again since (its next
    use is still ahead); positions whose page was used again are stale and
    skipped. So a reference hits iff its previous use has not yet been passed
    by the pointer, and each miss with a full cache moves the pointer past one
    live position. The pointer only moves forward: O(n) steps in all.
    """
    n = prev.size
    hit = bytearray(n)
    later = np.where(nxt < 0, n, nxt).tolist()  # never again = live forever
    e = 0
    misses = 0
    for i, p in enumerate(prev.tolist()):
        if p >= e:
            hit[i] = 1
            continue
        misses += 1
        if misses > capacity:
            # Evict: skip positions whose page was referenced again since.
            while later[e] < i:
                e += 1
            e += 1
    return np.frombuffer(bytes(hit), dtype=np.bool_).copy()


# LRU without visiting every reference (what ``simulate(..., "lru")`` runs).
#
# Take the sweep above and look at which of its steps can be decided in bulk.
# Call reference a "short" if its page was used within the last C references
# (a - prev[a] <= C), "first" if never before, and "long" otherwise.
#
# * A short reference always hits: at most C-1 other pages lie in between.
# * A position j whose page is used again within C references (next[j] <= j + C)
#   is never evicted: the pointer reaches j only at a miss at some time
#   t >= j + C, and the reference at next[j] hits, so it is dead by then. The
#   other positions are the candidates; rank(j) counts the candidates before j.
#   The previous use p of a long reference is always a candidate.
# * A first reference always misses.
#
# Only long references are left. The pointer passes candidates in order, each
# either evicted (one per miss, once C pages are resident) or skipped because
# its next use, a long reference, hit. So long reference a (p = prev[a]) hits
# iff the candidates before p not skipped by time a outnumber the evictions
# before a:
#
#     rank(p) - #{long hits a' < a : prev[a'] < p}  >=  (misses before a) - C.
#
# Writing misses = firsts + long references - long hits, the hits before a
# cancel from both sides, leaving
#
#     hit(a)  iff  R(a) >= need(a),
#     need(a) = #{first or long references before a} - C - rank(p)  (numpy),
#     R(a)    = #{long hits a' < a : prev[a'] > p}   (references nested inside).
#
# need(a) <= 0 is a sure hit; since a nested long hit a' lies in (p + C, a),
# need(a) > #{possible long hits there} is a sure miss (narrowed twice, each
# time counting only the survivors). On a Zipf string only a few per cent of
# the references survive to the Python loop, which keeps the prev[] of the
# hits so far in a sorted list to count R(a).


def _gaps(ids: IntArray, c: int, none: int, chunk: int = 1 << 14
          ) -> tuple[SignedArray, BoolArray]:
    """Contract: per reference, the gap since its page's previous use (``none`` if it is
    the first) and whether it is a candidate (its page's next use is more than ``c``
    later, or never); int32 gaps where ``2 * none`` fits. ``chunk`` <= 65536.

    No sort of the whole string: numpy's 64-bit sort is slow where it runs AVX-512 on
    AMD Zen 4 (several times slower than with AVX2), and it was most of LRU's time.
    Chunk by chunk instead, in cache: each page of the chunk is labelled with the chunk
    index of one of its uses (a table written with the chunk's indices: whichever write
    lands, a page's uses all read the same label and other pages other labels); a
    stable argsort of the 16-bit labels (numpy's radix sort) puts each page's uses side
    by side, in order; a table of each page's last use so far links the chunk's first
    uses to the chunks before. Both tables are indexed by page, so ids much sparser
    than the string are first relabelled 0..pages-1 (np.unique).
    """
    assert 1 <= chunk <= 1 << 16, "_gaps: a chunk's labels are 16-bit"
    n = ids.size
    if int(ids.max()) >= 2 * n + chunk:
        ids = np.unique(ids, return_inverse=True)[1].reshape(n)
    pages = int(ids.max()) + 1
    dtype: type[np.signedinteger[Any]] = np.int32 if 2 * none < 2**31 else np.int64
    gap: SignedArray = np.empty(n, dtype=dtype)
    is_cand = np.empty(n, dtype=np.bool_)
    label = np.empty(pages, dtype=np.uint16)
    last = np.full(pages, NEVER, dtype=np.int64)  # each page's latest use so far
    for s in range(0, n, chunk):
        page = ids[s:s + chunk]
        k = page.size
        label[page] = np.arange(k, dtype=np.uint16)
        order = np.argsort(label[page], kind="stable")
        grouped = page[order]
        # first[j]: entry j is its page's first use in the chunk; first[k]: the end.
        first = np.ones(k + 1, dtype=np.bool_)
        np.not_equal(grouped[1:], grouped[:-1], out=first[1:k])
        starts, ends = first[:k], first[1:]
        g = np.empty(k, dtype=np.int64)
        g[1:] = np.diff(order)
        # A first use in the chunk: was the page used in an earlier chunk?
        before = last[grouped[starts]]
        seen = before != NEVER
        back = order[starts] + s - before
        g[starts] = np.where(seen, back, none)
        cand = np.empty(k, dtype=np.bool_)
        np.greater(g[1:], c, out=cand[:-1])
        cand[ends] = True  # no next use in the chunk (yet)
        gap[s:s + k][order] = g
        is_cand[s:s + k][order] = cand
        is_cand[before[seen]] = back[seen] > c  # the earlier use has a next use now
        last[grouped[ends]] = order[ends] + s
    return gap, is_cand


def _lru_fast(ids: IntArray, capacity: int, *, loop_share: float = 0.25) -> BoolArray:
    """Contract: the LRU hit mask of ``ids`` with ``capacity`` frames.

    If more than ``loop_share`` of the first and long references survive to
    the Python loop (strings with few sure answers), the candidate sweep runs
    instead: the eviction pointer of ``_lru_sweep`` over candidates only.
    """
    n = ids.size
    if n < 2:
        return np.zeros(n, dtype=np.bool_)
    c = min(capacity, n)
    none = n + c + 1  # the gap of a first reference
    gap, is_cand = _gaps(ids, c, none)
    dtype = gap.dtype.type
    rank: SignedArray = np.cumsum(is_cand, dtype=dtype)  # candidates up to and including j
    del is_cand
    # Few large temporaries: each fresh one costs page faults on first touch (the
    # kernel's time: up to a few tenths of a second here on a busy machine).
    short = gap <= c  # the sure hits so far; the loop adds the long hits
    count: SignedArray = np.cumsum(~short, dtype=dtype)  # first or long references up to i
    alive = gap > c  # the long references: all possible long hits, for now
    alive &= gap < none
    at = np.flatnonzero(alive)
    prev = at - gap[at]
    need: SignedArray = count[at]
    need -= rank[prev]
    need -= c
    for rounds in range(3):
        # Possible long hits in (p + C, a): first all long references there, then
        # twice only those that survived the previous round.
        if rounds:
            alive[:] = False
            alive[at] = True
        np.cumsum(alive, dtype=dtype, out=count)
        room: SignedArray = np.arange(at.size, dtype=dtype)
        room -= count[c:][prev]  # count[prev + c]
        keep = need <= room
        at, prev, need = at[keep], prev[keep], need[keep]
    del alive, count
    if at.size > loop_share * (n - int(np.count_nonzero(short))):
        return _candidate_sweep(gap, rank, short, c)
    nested: list[int] = []  # prev[] of the long hits so far, sorted
    hits: list[int] = []
    insort, bisect_right = bisect.insort, bisect.bisect_right
    for a, p, k in zip(at.tolist(), prev.tolist(), need.tolist(), strict=True):
        if k <= 0 or len(nested) - bisect_right(nested, p) >= k:
            insort(nested, p)
            hits.append(a)
    short[np.array(hits, dtype=np.int64)] = True
    return short


def _candidate_sweep(gap: SignedArray, rank: SignedArray, short: BoolArray, c: int) -> BoolArray:
    """Model of ``_lru_sweep`` visiting only first and long references, and candidates.

    ``gap``: distance to the previous use (> n if none); ``rank``: candidates up
    to and including each position; ``short``: gap <= c (sure hits, updated).
    """
    n = gap.size
    todo = np.flatnonzero(~short)
    first = gap[todo] > n
    prev = todo - np.where(first, 0, gap[todo])
    slot = rank[prev] - 1  # candidate number of the previous use
    slot[first] = -1  # below every pointer value: a miss
    later = np.full(int(rank[-1]) + 1, n, dtype=np.int64)  # a sentinel past the end
    later[slot[~first]] = todo[~first]  # each candidate's next use (n: none)
    nxt = later.tolist()
    hits: list[int] = []
    e = 0
    misses = 0
    for i, s in zip(todo.tolist(), slot.tolist(), strict=True):
        if s >= e:
            hits.append(i)
            continue
        misses += 1
        if misses > c:
            while nxt[e] < i:
                e += 1
            e += 1
    short[np.array(hits, dtype=np.int64)] = True
    return short


def _lru_loop(ids: list[int], capacity: int, steps: Steps | None) -> bytearray:
    """Model of LRU as a recency list (OrderedDict: LRU first, MRU last); teaching path."""
    hit = bytearray(len(ids))
    cache: OrderedDict[int, None] = OrderedDict()
    for i, page in enumerate(ids):
        if page in cache:
            cache.move_to_end(page)
            hit[i] = 1
        else:
            if len(cache) >= capacity:
                cache.popitem(last=False)
            cache[page] = None
        if steps is not None:
            steps.append((page, bool(hit[i]), tuple(cache)))
    return hit


def _fifo(ids: list[int], capacity: int, steps: Steps | None) -> bytearray:
    """Model of FIFO: evict the page loaded longest ago, hits change nothing."""
    hit = bytearray(len(ids))
    queue: deque[int] = deque()
    resident: set[int] = set()
    for i, page in enumerate(ids):
        if page in resident:
            hit[i] = 1
        else:
            if len(queue) >= capacity:
                resident.discard(queue.popleft())
            queue.append(page)
            resident.add(page)
        if steps is not None:
            steps.append((page, bool(hit[i]), tuple(queue)))
    return hit


def _clock(ids: list[int], capacity: int, steps: Steps | None, bit_on_load: int) -> bytearray:
    """Model of CLOCK (second chance): one reference bit per frame, a hand sweeping the ring.

    The ring is kept as a deque with the hand at its left end: a page whose
    bit is set gets it cleared and goes round again (to the right end); the
    first page found with its bit clear is the victim. ``bit_on_load`` is the
    bit a newly loaded page starts with (1: libCacheSim ``Clock(init_freq=1)``).
    """
    hit = bytearray(len(ids))
    ring: deque[int] = deque()
    ref: dict[int, int] = {}
    for i, page in enumerate(ids):
        if page in ref:
            ref[page] = 1
            hit[i] = 1
        else:
            if len(ring) >= capacity:
                while True:
                    victim = ring.popleft()
                    if ref[victim]:
                        ref[victim] = 0
                        ring.append(victim)
                    else:
                        del ref[victim]
                        break
            ring.append(page)
            ref[page] = bit_on_load
        if steps is not None:
            steps.append((page, bool(hit[i]), tuple(ring)))
    return hit


def _opt(ids: list[int], nxt: list[int], capacity: int, steps: Steps | None) -> bytearray:
    """Model of Belady's OPT (MIN): evict the resident page whose next use is farthest away.

    A max-heap of (next use) with lazy deletion: an entry is stale once its
    page has been used again (a newer entry then holds the page's next use).
    """
    n = len(ids)
    hit = bytearray(n)
    when: dict[int, int] = {}  # resident page → its next use (n = never again)
    heap: list[tuple[int, int]] = []
    for i, page in enumerate(ids):
        far = nxt[i] if nxt[i] >= 0 else n + i  # distinct "never": ties cannot matter
        if page in when:
            hit[i] = 1
        elif len(when) >= capacity:
            while True:
                negnext, victim = heapq.heappop(heap)
                if when.get(victim) == -negnext:
                    del when[victim]
                    break
        when[page] = far
        heapq.heappush(heap, (-far, page))
        if steps is not None:
            order = sorted(when, key=lambda q: -when[q])
            steps.append((page, bool(hit[i]), tuple(order)))
    return hit


def _arc(ids: list[int], capacity: int, steps: Steps | None) -> bytearray:
    """Model of ARC (Megiddo & Modha, FAST 2003), as in the paper's Figure 4.

    T1/T2: resident pages seen once / at least twice recently; B1/B2: their
    ghosts (ids only). ``p`` is the adaptive target size of T1.
    """
    c = capacity
    hit = bytearray(len(ids))
    t1: OrderedDict[int, None] = OrderedDict()
    t2: OrderedDict[int, None] = OrderedDict()
    b1: OrderedDict[int, None] = OrderedDict()
    b2: OrderedDict[int, None] = OrderedDict()
    p = 0.0

    def replace(in_b2: bool) -> None:
        # Evict from T1 if it is over its target (or exactly at it on a B2 hit).
        if t1 and (len(t1) > p or (in_b2 and len(t1) == p)):
            victim, _ = t1.popitem(last=False)
            b1[victim] = None
        else:
            victim, _ = t2.popitem(last=False)
            b2[victim] = None

    for i, x in enumerate(ids):
        if x in t1:  # Case I: a hit, promote to the frequency side.
            del t1[x]
            t2[x] = None
            hit[i] = 1
        elif x in t2:
            t2.move_to_end(x)
            hit[i] = 1
        elif x in b1:  # Case II: a ghost hit in B1 — recency deserves more room.
            p = min(float(c), p + max(len(b2) / len(b1), 1.0))
            replace(False)
            del b1[x]
            t2[x] = None
        elif x in b2:  # Case III: a ghost hit in B2 — frequency deserves more room.
            p = max(0.0, p - max(len(b1) / len(b2), 1.0))
            replace(True)
            del b2[x]
            t2[x] = None
        else:  # Case IV: a complete miss.
            if len(t1) + len(b1) == c:
                if len(t1) < c:
                    b1.popitem(last=False)
                    replace(False)
                else:
                    t1.popitem(last=False)
            elif len(t1) + len(b1) < c:
                total = len(t1) + len(t2) + len(b1) + len(b2)
                if total >= c:
                    if total == 2 * c:
                        b2.popitem(last=False)
                    replace(False)
            t1[x] = None
        if steps is not None:
            steps.append((x, bool(hit[i]), (*t1, *t2)))
    return hit


def _linux(ids: list[int], capacity: int, steps: Steps | None) -> bytearray:
    """Model of mm/vmscan.c's two-list file LRU with mm/swap.c:mark_page_accessed.

    Simplified: no refault distance (mm/workingset.c), no reclaim-time
    reference checks, no per-CPU batching; lists are balanced 1:1.

    New pages enter the inactive head, unreferenced. An access walks the
    ladder inactive,unreferenced → inactive,referenced → active,unreferenced →
    active,referenced. Reclaim takes the inactive tail; whenever the active list
    outgrows the inactive one, its tail is demoted to the inactive head
    (shrink_active_list), reference bit cleared.
    """
    hit = bytearray(len(ids))
    # OrderedDicts in tail → head order (first item = next to be scanned): page → referenced.
    inactive: OrderedDict[int, bool] = OrderedDict()
    active: OrderedDict[int, bool] = OrderedDict()
    for i, page in enumerate(ids):
        if page in active:
            active[page] = True
            hit[i] = 1
        elif page in inactive:
            hit[i] = 1
            if inactive[page]:
                # Second reference while inactive: activate (folio_activate).
                del inactive[page]
                active[page] = False
            else:
                inactive[page] = True
        else:
            if len(inactive) + len(active) >= capacity:
                assert inactive, "_linux: reclaim found the inactive list empty"
                inactive.popitem(last=False)
            inactive[page] = False
        while len(active) > len(inactive):
            demoted, _ = active.popitem(last=False)
            inactive[demoted] = False
        if steps is not None:
            steps.append((page, bool(hit[i]), (*inactive, *active)))
    return hit


_LOOPS: dict[str, Callable[[list[int], int, Steps | None], bytearray]] = {
    "fifo": _fifo,
    "lru": _lru_loop,
    "clock": lambda ids, c, s: _clock(ids, c, s, 1),
    "clock0": lambda ids, c, s: _clock(ids, c, s, 0),
    "arc": _arc,
    "linux": _linux,
}

POLICIES: tuple[str, ...] = ("fifo", "lru", "clock", "clock0", "opt", "arc", "linux")
"""Policy names ``simulate`` accepts. ``clock`` sets the reference bit on load, ``clock0`` not."""

# Above this many references a trace would be too large to be useful.
TRACE_LIMIT = 10_000


def simulate(
    refs: Sequence[int] | npt.ArrayLike, capacity: int, policy: str = "lru", *, trace: bool = False
) -> SimResult:
    """Run one replacement policy over a reference string with ``capacity`` frames.

    ``trace=True`` (at most TRACE_LIMIT references) also records, per
    reference, the page, hit or miss, and the cache contents afterwards.
    """
    capacity = _check_capacity("capacity", capacity)
    if policy not in POLICIES:
        raise ParameterError(f"policy: expected one of {', '.join(POLICIES)}, got {policy!r}")
    ids = _as_refs(refs)
    if trace and ids.size > TRACE_LIMIT:
        raise ParameterError(
            f"trace: at most {TRACE_LIMIT} references can be traced, got {ids.size}"
        )
    steps: Steps | None = [] if trace else None
    if policy == "lru" and steps is None:
        mask = _lru_fast(ids, capacity)
    else:
        if policy == "opt":
            raw = _opt(ids.tolist(), _prev_next(ids)[1].tolist(), capacity, steps)
        else:
            raw = _LOOPS[policy](ids.tolist(), capacity, steps)
        mask = np.frombuffer(bytes(raw), dtype=np.bool_).copy()
    hits = int(np.count_nonzero(mask))
    return SimResult(policy, capacity, hits, int(ids.size) - hits, mask, steps)
