"""The TLB: a small cache of translations, checked against libCacheSim."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xipmodel.errors import ParameterError
from xipmodel.mm.tlb import TLB

Oracle = Callable[[str], ModuleType]


def oracle_hits(lcs: ModuleType, make: Callable[[], Any], keys: list[int], sets: list[int],
                nsets: int) -> list[bool]:
    """Feed each key to the libCacheSim cache of its set, request by request."""
    caches = [make() for _ in range(nsets)]
    hits = []
    for key, s in zip(keys, sets, strict=True):
        r = lcs.Request()
        r.obj_id = key
        r.obj_size = 1
        hits.append(bool(caches[s].get(r)))
    return hits


def tlb_hits_stepwise(tlb: TLB, asids: list[int], vpns: list[int]) -> list[bool]:
    """lookup, and insert on a miss: what a hardware walker does."""
    out = []
    for asid, vpn in zip(asids, vpns, strict=True):
        hit = tlb.lookup(asid, vpn) is not None
        if not hit:
            tlb.insert(asid, vpn, vpn + 1000)
        out.append(hit)
    return out


def zipf_trace(seed: int, n: int, pages: int, nasids: int) -> tuple[list[int], list[int]]:
    """A seeded Zipf(1.2) page trace over `nasids` address spaces."""
    rng = np.random.default_rng(seed)
    vpns = (rng.zipf(1.2, size=n) % pages).tolist()
    asids = rng.integers(0, nasids, size=n).tolist()
    return asids, vpns


TRACES = st.integers(1, 3).flatmap(lambda nasids: st.tuples(
    st.lists(st.integers(0, nasids - 1), min_size=1, max_size=200),
    st.lists(st.integers(0, 40), min_size=200, max_size=200)))
GEOMETRY = st.sampled_from([(1, 1), (4, 4), (8, 8), (16, 16), (8, 2), (16, 4), (12, 3), (64, 4)])


@pytest.mark.oracle
# require_module is stateless, so sharing it between examples is safe.
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(trace=TRACES, geometry=GEOMETRY, bulk=st.booleans())
def test_tlb_matches_libcachesim_lru(require_module: Oracle,
                                     trace: tuple[list[int], list[int]],
                                     geometry: tuple[int, int], bulk: bool) -> None:
    """Is an S-set × E-way LRU TLB exactly S libCacheSim LRU(E) caches indexed by vpn % S?

    Fully associative (S = 1) is the special case LRU(N) fed asid << 36 | vpn.
    The TLB is tagged, so one cache holds every address space's entries.
    """
    lcs = require_module("libcachesim")
    asids_short, vpns = trace
    asids = (asids_short * len(vpns))[: len(vpns)]
    entries, ways = geometry
    tlb = TLB(entries, ways)
    nsets = entries // ways
    keys = [a << 36 | v for a, v in zip(asids, vpns, strict=True)]
    want = oracle_hits(lcs, lambda: lcs.LRU(ways, hashpower=8), keys, [v % nsets for v in vpns],
                       nsets)
    got = tlb.run(asids, vpns).tolist() if bulk else tlb_hits_stepwise(tlb, asids, vpns)
    assert got == want
    assert tlb.hits == sum(want) and tlb.misses == len(want) - sum(want)


@pytest.mark.oracle
@pytest.mark.parametrize("policy", ["lru", "fifo"])
def test_tlb_matches_libcachesim_on_zipf_traces(require_module: Oracle, policy: str) -> None:
    """Thousands of seeded Zipf references, many geometries: hit for hit like libCacheSim."""
    lcs = require_module("libcachesim")
    cls = lcs.LRU if policy == "lru" else lcs.FIFO
    for seed in range(12):
        asids, vpns = zipf_trace(seed, 3000, pages=500, nasids=1 + seed % 3)
        for entries, ways in [(64, 64), (64, 4), (32, 8), (48, 6)]:
            nsets = entries // ways
            keys = [a << 36 | v for a, v in zip(asids, vpns, strict=True)]
            want = oracle_hits(lcs, lambda c=cls, w=ways: c(w, hashpower=10), keys,  # type: ignore[misc]
                               [v % nsets for v in vpns], nsets)
            tlb = TLB(entries, ways, policy=policy)  # type: ignore[arg-type]
            assert tlb.run(asids, vpns).tolist() == want, (seed, entries, ways)


def test_untagged_tlb_is_flushed_on_switch() -> None:
    """Without ASIDs, a context switch loses every entry; with them, other spaces' entries stay."""
    for tagged in (False, True):
        tlb = TLB(8, asid_tagged=tagged)
        tlb.insert(0, 1, 11)
        tlb.insert(0, 2, 12)
        tlb.switch(1)
        tlb.insert(1, 1, 21)
        assert tlb.lookup(1, 1) == (21, 0)
        tlb.switch(0)
        if tagged:
            assert tlb.lookup(0, 1) == (11, 0) and tlb.lookup(0, 2) == (12, 0)
            assert len(tlb) == 3
        else:
            assert tlb.lookup(0, 1) is None and len(tlb) == 0
            with pytest.raises(RuntimeError, match="not current"):
                tlb.lookup(1, 1)
        assert tlb.switches == 2


def test_untagged_run_flushes_at_every_asid_change() -> None:
    """Replaying an alternating trace: untagged, every switch makes the next reference miss."""
    asids = [0, 0, 1, 1, 0, 0, 1, 1]
    vpns = [5, 5, 5, 5, 5, 5, 5, 5]
    assert TLB(4, asid_tagged=False).run(asids, vpns).tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert TLB(4, asid_tagged=True).run(asids, vpns).tolist() == [0, 1, 0, 1, 1, 1, 1, 1]


def test_invalidate_and_flush_by_asid() -> None:
    """After a PTE change (CoW) the stale entry must go: invlpg drops one, flush(asid) a space."""
    tlb = TLB(16, 4)
    for asid in (1, 2):
        for vpn in range(4):
            tlb.insert(asid, vpn, 100 * asid + vpn)
    assert tlb.invalidate(1, 3) and not tlb.invalidate(1, 3)
    assert tlb.invalidations == 1  # only the entry that was there counts
    assert tlb.lookup(1, 3) is None
    tlb.insert(1, 3, 999, flags=1)  # refill with the private copy
    assert tlb.lookup(1, 3) == (999, 1)
    assert tlb.flush(asid=2) == 4 and len(tlb) == 4
    assert all(asid == 1 for _, asid, *_ in tlb.contents())
    assert tlb.flush() == 4 and len(tlb) == 0


def test_eviction_reports_victim_and_set_mapping() -> None:
    """In a 2-set × 2-way TLB, vpns 0, 2, 4 share set 0: the third evicts the LRU one."""
    tlb = TLB(4, 2)
    assert tlb.insert(7, 0, 1) is None and tlb.insert(7, 2, 1) is None
    tlb.lookup(7, 0)  # 0 is now most recent
    assert tlb.insert(7, 4, 1) == (7, 2)
    assert tlb.insert(7, 1, 1) is None  # set 1 is still empty
    assert [(s, v) for s, _, v, _, _ in tlb.contents()] == [(0, 0), (0, 4), (1, 1)]
    assert tlb.evictions == 1


def test_random_policy_is_deterministic() -> None:
    """Random replacement draws from the seed: same seed, same hits."""
    asids, vpns = zipf_trace(3, 2000, pages=200, nasids=2)
    runs = [TLB(32, 8, policy="random", seed=s).run(asids, vpns) for s in (1, 1, 2)]
    assert np.array_equal(runs[0], runs[1])
    assert 0 < runs[0].sum() < len(vpns)


def test_run_equals_stepwise_and_counts() -> None:
    """The fast bulk path and lookup/insert give the same hits, counters and contents."""
    asids, vpns = zipf_trace(5, 4000, pages=300, nasids=3)
    for policy in ("lru", "fifo"):
        a = TLB(32, 4, policy=policy)
        b = TLB(32, 4, policy=policy)
        got = a.run(asids, vpns).tolist()
        want = tlb_hits_stepwise(b, asids, vpns)
        assert got == want and (a.hits, a.misses) == (b.hits, b.misses)
        assert [c[:3] for c in a.contents()] == [c[:3] for c in b.contents()]
        assert a.hit_ratio == sum(want) / len(want)


def test_bad_parameters() -> None:
    """Geometry that cannot be built names the parameter and value."""
    with pytest.raises(ParameterError, match="ways=3"):
        TLB(8, 3)
    with pytest.raises(ParameterError, match="entries=0"):
        TLB(0)
    with pytest.raises(ParameterError, match="policy='mru'"):
        TLB(8, policy="mru")  # type: ignore[arg-type]


def _state(tlb: TLB) -> tuple[Any, ...]:
    """Everything a TLB holds: entries in order per set, counters, the random state."""
    return (tlb.contents(), tlb.asid, tlb.hits, tlb.misses, tlb.evictions, tlb.flushes,
            tlb.invalidations, tlb.switches, tlb.rng.getstate())


@settings(max_examples=100, deadline=None)
@given(trace=TRACES, geometry=GEOMETRY, policy=st.sampled_from(["lru", "fifo", "random"]),
       tagged=st.booleans())
def test_a_copied_tlb_goes_on_as_the_original(trace: tuple[list[int], list[int]],
                                              geometry: tuple[int, int], policy: str,
                                              tagged: bool) -> None:
    """TLB.copy (what a cloned guest gets): the copy holds the same state, and the same
    references afterwards give both the same hits, evictions and random victims; neither
    sees the other's changes."""
    asids_short, vpns = trace
    asids = (asids_short * len(vpns))[: len(vpns)]
    half = len(vpns) // 2
    tlb = TLB(*geometry, policy=policy, asid_tagged=tagged, seed=7)  # type: ignore[arg-type]
    tlb.run(asids[:half], vpns[:half])
    before = _state(tlb)
    twin = tlb.copy()
    assert _state(twin) == before
    assert twin.run(asids[half:], vpns[half:]).tolist() == \
        tlb.run(asids[half:], vpns[half:]).tolist()
    after = _state(tlb)
    assert _state(twin) == after
    twin.flush()
    twin.insert(twin.asid, 1, 2)
    twin.rng.random()
    assert _state(tlb) == after
