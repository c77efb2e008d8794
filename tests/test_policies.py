"""Replacement policies: Belady's anomaly by hand, and exact agreement with libCacheSim."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xipmodel.errors import ParameterError
from xipmodel.policies import (
    NEVER,
    POLICIES,
    _gaps,
    _lru_fast,
    _lru_sweep,
    _prev_next,
    miss_ratio_curve,
    simulate,
    stack_distances,
)

BELADY = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5]
NEVER_AGAIN = 2**63 - 1

# xipmodel name → (libcachesim class name, constructor keywords)
ORACLE = {
    "fifo": ("FIFO", {}),
    "lru": ("LRU", {}),
    "clock": ("Clock", {"init_freq": 1}),
    "clock0": ("Clock", {}),
    "opt": ("Belady", {}),
    "arc": ("ARC", {}),
}


def zipf_refs(n: int, pages: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Seeded bounded Zipf reference string, popular pages scattered over the ids."""
    cdf = np.cumsum(1.0 / np.arange(1, pages + 1) ** alpha)
    ranks = np.searchsorted(cdf, rng.random(n) * cdf[-1])
    return rng.permutation(pages)[np.minimum(ranks, pages - 1)]


def oracle_hits(lcs: ModuleType, policy: str, refs: list[int], capacity: int) -> np.ndarray:
    """Hit mask from libCacheSim, request by request, next use attached (Belady needs it)."""
    name, kwargs = ORACLE[policy]
    # A small hash table: the default (2**24 buckets) makes each cache slow to build.
    cache = getattr(lcs, name)(capacity, hashpower=10, **kwargs)
    next_use = [NEVER_AGAIN] * len(refs)
    seen: dict[int, int] = {}
    for i in range(len(refs) - 1, -1, -1):
        next_use[i] = seen.get(refs[i], NEVER_AGAIN)
        seen[refs[i]] = i
    hits = np.zeros(len(refs), dtype=np.bool_)
    for i, page in enumerate(refs):
        req = lcs.Request()
        req.obj_id = page
        req.obj_size = 1
        req.clock_time = i
        req.next_access_vtime = next_use[i]
        hits[i] = bool(cache.get(req))
    return hits


def naive_stack_distances(refs: list[int]) -> list[int]:
    """Mattson's algorithm as written in 1970: search the LRU stack, move to top."""
    stack: list[int] = []
    out = []
    for page in refs:
        if page in stack:
            out.append(stack[::-1].index(page))
            stack.remove(page)
        else:
            out.append(-1)
        stack.append(page)
    return out


# --- Belady's anomaly (OSTEP paging-policy.py numbers), no oracle needed -----------------


@pytest.mark.parametrize(
    ("policy", "misses3", "misses4"), [("fifo", 9, 10), ("lru", 10, 8), ("opt", 7, 6)]
)
def test_belady_anomaly(policy: str, misses3: int, misses4: int) -> None:
    """Does FIFO really miss more with 4 frames than with 3, while LRU and OPT do not?"""
    assert simulate(BELADY, 3, policy).misses == misses3
    assert simulate(BELADY, 4, policy).misses == misses4


@pytest.mark.oracle
def test_belady_anomaly_against_libcachesim(require_module: Callable[[str], ModuleType]) -> None:
    lcs = require_module("libcachesim")
    for policy in ("fifo", "lru", "opt"):
        for frames in (3, 4):
            ours = simulate(BELADY, frames, policy).hit_mask
            assert (ours == oracle_hits(lcs, policy, BELADY, frames)).all(), (policy, frames)


def test_fifo_trace_ostep_style() -> None:
    """The teaching trace shows the queue after every reference, oldest first."""
    steps = simulate([1, 2, 3, 1, 4], 3, "fifo", trace=True).steps
    assert steps == [
        (1, False, (1,)),
        (2, False, (1, 2)),
        (3, False, (1, 2, 3)),
        (1, True, (1, 2, 3)),
        (4, False, (2, 3, 4)),
    ]


def test_traced_lru_equals_fast_lru() -> None:
    rng = np.random.default_rng(7)
    refs = rng.integers(0, 20, 500)
    fast = simulate(refs, 6, "lru")
    slow = simulate(refs, 6, "lru", trace=True)
    assert (fast.hit_mask == slow.hit_mask).all()
    assert slow.steps is not None and slow.steps[-1][2][-1] == refs[-1]



@pytest.mark.oracle
@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    refs=st.lists(st.integers(0, 2), min_size=1, max_size=60),
    capacity=st.integers(1, 3),
    data=st.data(),
)
def test_lru_tiny_alphabets_match_libcachesim(
    require_module: Callable[[str], ModuleType], refs: list[int], capacity: int, data: Any
) -> None:
    """C = 1..3 over 1..3 pages: every boundary of the sure hit / sure miss / candidate tests."""
    lcs = require_module("libcachesim")
    alphabet = data.draw(st.integers(1, 3))
    refs = [x % alphabet for x in refs]
    fast = simulate(refs, capacity, "lru").hit_mask
    assert (fast == simulate(refs, capacity, "lru", trace=True).hit_mask).all()
    assert (fast == oracle_hits(lcs, "lru", refs, capacity)).all()


@settings(max_examples=600, deadline=None)
@given(
    refs=st.lists(st.integers(0, 60), min_size=1, max_size=400),
    capacity=st.integers(1, 40),
    data=st.data(),
)
def test_lru_both_fast_paths_equal_the_sweep(refs: list[int], capacity: int, data: Any) -> None:
    """The nested-hit loop and the candidate sweep (forced either way) equal the plain sweep."""
    # Alphabets around the capacity make the long references undecided.
    alphabet = data.draw(st.integers(1, capacity + 20))
    ids = np.array([x % alphabet for x in refs], dtype=np.int64)
    prev, nxt = _prev_next(ids)
    want = _lru_sweep(prev, nxt, capacity)
    for share in (0.0, float("inf")):
        assert (_lru_fast(ids.copy(), capacity, loop_share=share) == want).all(), share


@settings(max_examples=400, deadline=None)
@given(
    refs=st.lists(st.integers(0, 30), min_size=1, max_size=300),
    capacity=st.integers(1, 40),
    chunk=st.sampled_from([1, 2, 3, 7, 64, 1 << 14]),
    stride=st.sampled_from([1, 2**40 + 3]),
)
def test_chunked_gaps_equal_the_sorted_ones(
    refs: list[int], capacity: int, chunk: int, stride: int
) -> None:
    """LRU's gaps and candidates, found chunk by chunk with page tables (sparse ids
    relabelled first), equal those of one sort of the whole string (_prev_next)."""
    ids = np.array(refs, dtype=np.int64) * stride
    n = ids.size
    c = min(capacity, n)
    none = n + c + 1
    prev, nxt = _prev_next(ids)
    at = np.arange(n)
    gap, is_cand = _gaps(ids, c, none, chunk)
    assert gap.tolist() == np.where(prev == NEVER, none, at - prev).tolist()
    assert is_cand.tolist() == ((nxt == NEVER) | (nxt - at > c)).tolist()


@pytest.mark.parametrize("pages", [300, 5000, 200_000])
def test_lru_over_many_chunks_equals_the_sweep(pages: int) -> None:
    """A Zipf string several chunks long (pages used again across chunks, or not):
    simulate(lru) hits exactly where the eviction-pointer sweep does."""
    rng = np.random.default_rng(pages)
    refs = zipf_refs(60_000, pages, 0.9, rng)
    prev, nxt = _prev_next(refs)
    for capacity in (1, 50, 2000):
        want = _lru_sweep(prev, nxt, capacity)
        assert (simulate(refs, capacity, "lru").hit_mask == want).all(), capacity


# --- the two-list Linux LRU, traced by hand ---------------------------------------------


def test_linux_second_reference_activates() -> None:
    """A page touched twice while inactive is promoted; once is not enough to survive a scan."""
    # 4 frames. 1 is referenced twice more (→ referenced, → active); 2 only once more.
    steps = simulate([1, 2, 1, 1, 2, 3, 4, 5, 6], 4, "linux", trace=True).steps
    assert steps is not None
    # After "1 1": 1 is active; lists kept balanced, contents listed inactive tail→head then active.
    assert steps[3] == (1, True, (2, 1))
    # 2's second touch only sets its referenced bit; 3 and 4 fill the inactive list.
    assert steps[6] == (4, False, (2, 3, 4, 1))
    # 5 forces reclaim from the inactive tail: 2 goes (no reclaim-time bit check), active 1 stays.
    assert steps[7] == (5, False, (3, 4, 5, 1))
    assert steps[8] == (6, False, (4, 5, 6, 1))


def test_linux_ladder_and_demotion() -> None:
    """inactive,unref → inactive,ref → active; the active list never outgrows the inactive."""
    r = simulate([7, 7, 7], 2, "linux", trace=True)
    assert [h for _, h, _ in r.steps or []] == [False, True, True]
    # 7 activated with nothing inactive: balance demotes it straight back to inactive.
    assert r.steps is not None and r.steps[2][2] == (7,)
    # Scan resistance: a one-time scan does not push out a page used twice.
    scan = [1, 2, 1, 1, 2, 2, 3, 4, 5, 6, 7, 1, 2]
    assert simulate(scan, 4, "linux").hits > simulate(scan, 4, "fifo").hits


# --- libCacheSim: every policy with an oracle, thousands of strings ----------------------


@pytest.mark.oracle
# The fixture only imports a module: nothing to reset between examples.
@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    refs=st.lists(st.integers(0, 40), min_size=1, max_size=300),
    capacity=st.integers(1, 24),
    data=st.data(),
)
def test_random_strings_match_libcachesim(
    require_module: Callable[[str], ModuleType], refs: list[int], capacity: int, data: Any
) -> None:
    """For any reference string and capacity, hit for hit, we do what libCacheSim does."""
    lcs = require_module("libcachesim")
    alphabet = data.draw(st.integers(1, 41))
    refs = [x % alphabet for x in refs]
    for policy in ORACLE:
        ours = simulate(refs, capacity, policy).hit_mask
        assert (ours == oracle_hits(lcs, policy, refs, capacity)).all(), policy


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(8))
def test_zipf_strings_match_libcachesim(
    require_module: Callable[[str], ModuleType], seed: int
) -> None:
    """Skewed (Zipf) strings, as real page references are, at several capacities."""
    lcs = require_module("libcachesim")
    rng = np.random.default_rng(seed)
    refs = zipf_refs(3000, int(rng.integers(50, 2000)), float(rng.uniform(0.6, 1.3)), rng)
    for capacity in (1, 7, 64, 300):
        for policy in ORACLE:
            ours = simulate(refs, capacity, policy)
            theirs = oracle_hits(lcs, policy, refs.tolist(), capacity)
            assert (ours.hit_mask == theirs).all(), (policy, capacity)


def write_oracle_general(path: Path, refs: np.ndarray) -> None:
    """libCacheSim's oracleGeneral binary trace: (time, id, size, next access)."""
    rec = np.zeros(refs.size, dtype=[("t", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nxt", "<i8")])
    rec["t"] = np.arange(refs.size)
    rec["id"] = refs
    rec["sz"] = 1
    rec["nxt"] = -1
    rec.tofile(path)


@pytest.mark.oracle
@pytest.mark.parametrize("seed", range(3))
def test_miss_ratio_curve_equals_lru_at_every_capacity(
    require_module: Callable[[str], ModuleType], tmp_path: Path, seed: int
) -> None:
    """One Mattson pass gives LRU's misses at C = 1..64, as 64 separate LRU runs do."""
    lcs = require_module("libcachesim")
    rng = np.random.default_rng(100 + seed)
    refs = zipf_refs(20_000, 5_000, 0.9, rng)
    path = tmp_path / "trace.oracleGeneral"
    write_oracle_general(path, refs)
    curve = miss_ratio_curve(refs, range(1, 65))
    for capacity in range(1, 65):
        reader = lcs.TraceReader(str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
        ratio, _ = lcs.LRU(capacity, hashpower=14).process_trace(reader)
        assert curve[capacity - 1] == round(ratio * refs.size), capacity
        assert curve[capacity - 1] == simulate(refs, capacity, "lru").misses


# --- stack distances against the 1970 algorithm ------------------------------------------


@settings(max_examples=300, deadline=None)
@given(refs=st.lists(st.integers(0, 30), max_size=200))
def test_stack_distances_match_mattson(refs: list[int]) -> None:
    """The bulk numpy count equals walking the LRU stack one reference at a time."""
    assert stack_distances(refs).tolist() == naive_stack_distances(refs)


@settings(max_examples=200, deadline=None)
@given(refs=st.lists(st.integers(0, 30), max_size=200), capacity=st.integers(1, 32))
def test_lru_hits_are_distances_below_capacity(refs: list[int], capacity: int) -> None:
    """LRU is a stack algorithm: hit iff stack distance < C; more frames never hurt."""
    dist = stack_distances(refs)
    result = simulate(refs, capacity, "lru")
    assert (result.hit_mask == ((dist >= 0) & (dist < capacity))).all()
    assert simulate(refs, capacity + 1, "lru").misses <= result.misses
    assert miss_ratio_curve(refs, [capacity]).tolist() == [result.misses]


@settings(max_examples=100, deadline=None)
@given(refs=st.lists(st.integers(0, 12), max_size=120), capacity=st.integers(1, 8))
def test_opt_is_a_lower_bound(refs: list[int], capacity: int) -> None:
    """No policy beats Belady's OPT on the same string and frames."""
    best = simulate(refs, capacity, "opt").misses
    for policy in POLICIES:
        assert simulate(refs, capacity, policy).misses >= best, policy


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("refs", "capacity", "policy", "word"),
    [
        ([1, 2], 0, "lru", "capacity"),
        ([1, 2], 2, "mru", "policy"),
        ([1, -2], 2, "lru", "refs"),
        ([1.5], 2, "lru", "refs"),
        ([[1]], 2, "lru", "refs"),
    ],
)
def test_bad_parameters_name_themselves(refs: Any, capacity: int, policy: str, word: str) -> None:
    with pytest.raises(ParameterError, match=word):
        simulate(refs, capacity, policy)


def test_empty_string_and_bad_curve_capacity() -> None:
    assert simulate([], 3, "arc").misses == 0
    assert stack_distances([]).size == 0
    with pytest.raises(ValueError, match="capacities"):
        miss_ratio_curve([1, 2], [0])
