"""The fast replay engine (mm/bulk.py) against the reference one: the same run, to the bit.

Each test makes the same accesses twice, once through Guest.access one at a time
(replay(..., engine="reference")) and once through bulk.access_many (engine="fast"),
and compares everything the runs leave behind: the replay results, the guest's
counters and model time, the TLB's entries in replacement order and its counters,
every PTE of every process, the page cache with its LRU lists and shadow entries,
the reverse map, readahead state, and the host's frames (kind, owner, refcount,
content) down to the next fresh content id.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np
import pytest

import xipmodel.host
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.host import MODES, Host, Scenario
from xipmodel.mm import bulk
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.ksm import Ksm
from xipmodel.mm.segment import SharedSegment
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE, X86_64, Pte
from xipmodel.workloads.recorded import TRACES, load_trace, trace_image
from xipmodel.workloads.trace import MapSpec, PageTrace, replay

ENGINES = ("reference", "fast")


def _plain(value: Any) -> Any:
    """`value` as nested builtins, so that == compares all of it (arrays by dtype and items)."""
    if isinstance(value, np.ndarray):
        return (str(value.dtype), value.tolist())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return [(_plain(k), _plain(v)) for k, v in value.items()]  # in order (LRU lists)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return sorted(value)
    return value


def _state(host: HostMemory, guests: list[Guest]) -> dict[str, Any]:
    """Everything a replay can change, as builtins."""
    out: dict[str, Any] = {
        "host": _plain({k: v for k, v in vars(host).items()}),
        "next_content": host.unique_contents(1).tolist(),
    }
    for g in guests:
        tlb = g.tlb
        out[f"guest {g.gid}"] = {
            "stats": g.stats.as_dict(), "time": g.time, "page_in_ns": g.page_in_ns,
            "tlb": (tlb.contents(), tlb.hits, tlb.misses, tlb.evictions, tlb.flushes,
                    tlb.invalidations, tlb.switches),
            "ptes": {pid: (mm.pt.mapped_vpns().tolist(),
                           mm.pt.lookup_many(mm.pt.mapped_vpns()).tolist(),
                           sorted(mm.pt.tables))
                     for pid, mm in g.procs.items()},
            "ept": (g.ept.mapped_vpns().tolist(), g.ept.lookup_many(g.ept.mapped_vpns()).tolist()),
            "backing": g.backing.tolist(), "kind": g.kind.tolist(),
            "cache": _plain(vars(g.cache)), "free": _plain(vars(g.free_area)),
            "rmap": {gpfn: dict(m.users) for gpfn, m in g.rmap.items()},
            "ra": _plain(g.ra), "dcss_mapped": sorted(g.dcss_mapped),
            "page_counts": g.page_counts(),
        }
    return out


def _assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal states, naming the first part that differs (the whole dicts are huge)."""
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            for part in a[key]:
                assert a[key][part] == b[key][part], f"{key}: {part} differs"
        else:
            assert a[key] == b[key], f"{key} differs"


# --- the shipped traces ------------------------------------------------------------------

@functools.cache
def _shipped(name: str) -> tuple[PageTrace, Ext2Image]:
    trace = load_trace(name)
    return trace, trace_image(trace)


def _replay_shipped(name: str, mode: str, engine: str, ram_pages: int) -> dict[str, Any]:
    trace, image = _shipped(name)
    host, guest = _guest(mode, ram_pages, image=image)
    _, result = replay(guest, trace, engine=engine)
    state = _state(host, [guest])
    state["result"] = dataclasses.asdict(result)
    return state


@pytest.mark.slow
@pytest.mark.parametrize("name", TRACES)
@pytest.mark.parametrize("mode", ["pagecache", "xip"])
def test_shipped_trace_same_in_both_engines(name: str, mode: str) -> None:
    """A whole recorded run replayed by either engine: is every counter and frame the same?"""
    runs = [_replay_shipped(name, mode, engine, 16384) for engine in ENGINES]
    assert runs[0]["guest 0"]["stats"]["tlb_misses"] > 1000  # the TLB really thrashes
    _assert_same(*runs)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "mode"), [("shell", "pagecache"), ("httpd", "pagecache")])
def test_shipped_trace_under_memory_pressure_same_in_both_engines(name: str, mode: str) -> None:
    """In a guest too small for the run, reclaim ages and evicts pages between the hits."""
    runs = [_replay_shipped(name, mode, engine, 160) for engine in ENGINES]
    stats = runs[0]["guest 0"]["stats"]
    assert stats["pgscan"] > 0 and stats["pgsteal"] > 0
    _assert_same(*runs)


# --- seeded synthetic runs in a guest ----------------------------------------------------

_TEXT, _DATA, _LIB, _LIBDATA = 40, 12, 30, 6
_FILES = {"/bin/prog": (_TEXT + _DATA) * PAGE_SIZE,
          "/lib/libx.so": (_LIB + 2 * _LIBDATA) * PAGE_SIZE}


@functools.cache
def _image() -> Ext2Image:
    rng = np.random.default_rng(7)
    return Ext2Image.open(build_image(
        {p: rng.integers(1, 256, size, dtype=np.uint8).tobytes() for p, size in _FILES.items()},
        timestamp=0))


_BASE = 0x5555_0000_0000
_MAPS = [  # (start page, pages, prot, path, file page, shared, what a run mostly does there)
    (0, _TEXT, "r-x", "/bin/prog", 0, False, "x"),
    (_TEXT, _DATA, "rw-", "/bin/prog", _TEXT, False, "rw"),  # written: copy-on-write
    (100, _LIB, "r-x", "/lib/libx.so", 0, False, "x"),
    (100 + _LIB, _LIBDATA, "rw-", "/lib/libx.so", _LIB, True, "rw"),  # MAP_SHARED
    (100 + _LIB + _LIBDATA, _LIBDATA, "r--", "/lib/libx.so", _LIB + _LIBDATA, False, "r"),
    (200, 48, "rw-", None, 0, False, "rw"),  # heap
]


def _synthetic(seed: int, n: int, shared: bool = True) -> PageTrace:
    """A seeded run over _MAPS: a random walk with locality (so the TLB mostly hits),
    writes with repeated content ids (for KSM), and a few accesses no VMA allows.

    Without `shared` the shared mapping is private (the frozen image refuses it).
    """
    rng = np.random.default_rng(seed)
    maps = [MapSpec((_BASE >> PAGE_SHIFT) + start << PAGE_SHIFT, pages * PAGE_SIZE, prot,
                    path, offset * PAGE_SIZE, name=path or "[heap]", shared=shares and shared)
            for start, pages, prot, path, offset, shares, _ in _MAPS]
    vpns, kinds = np.zeros(n, np.uint64), np.zeros(n, np.uint8)
    region, page = 0, 0
    for i in range(n):
        if rng.random() < 0.05:
            region = int(rng.integers(len(_MAPS)))
            page = int(rng.integers(_MAPS[region][1]))
        elif rng.random() < 0.3:
            page = int(np.clip(page + rng.integers(-2, 3), 0, _MAPS[region][1] - 1))
        start, _, _, _, _, _, does = _MAPS[region]
        vpn = (_BASE >> PAGE_SHIFT) + start + page
        kind = "rwx".index(does[int(rng.integers(len(does)))])
        if rng.random() < 0.003:
            kind = int(rng.integers(3))  # a write to text, an exec of data: SIGSEGV
        if rng.random() < 0.001:
            vpn += 5000  # nothing mapped there: SIGSEGV
        vpns[i], kinds[i] = vpn, kind
    contents = np.where((kinds == 1) & (rng.random(n) < 0.5), rng.integers(1, 4, n), 0)
    return PageTrace(f"synthetic-{seed}", maps, vpns, kinds, {}, contents.astype(np.int64))


def _guest(mode: str, ram_pages: int, tlb_entries: int = 64,
           image: Ext2Image | None = None, **options: Any) -> tuple[HostMemory, Guest]:
    """A guest of `mode` (the segment of xip and dax modes as Host makes it) on `image`;
    `options` for Guest (4-way TLB unless told)."""
    host, image = HostMemory(), image or _image()
    segment = (SharedSegment(host, image, frame_kind=FrameKind.SHARED if mode == "xip"
                             else FrameKind.HOSTCACHE) if mode in ("xip", "dax") else None)
    return host, Guest(0, host, ram_pages, image, segment=segment, tlb_entries=tlb_entries,
                       **{"tlb_ways": 4, **options})


@functools.cache  # test_seeded_runs_reach_every_path looks at the same runs
def _scenario(mode: str, seed: int, engine: str,
              options: tuple[tuple[str, Any], ...] = ()) -> dict[str, Any]:
    """Two processes take turns, one forks, and (in ksm mode) ksmd merges between turns.
    `options`: (name, value) pairs for Guest."""
    rng = np.random.default_rng([seed, 1])
    ram_pages = int(rng.choice([64, 80, 120, 4096]))  # small ones reclaim
    host, guest = _guest(mode, ram_pages, int(rng.choice([16, 64])), **dict(options))
    ksm = Ksm(host, [guest], pages_to_scan=500) if mode == "ksm" else None
    in_place = mode in ("xip", "dax")
    trace = _synthetic(seed, 3000, shared=not in_place)
    other = _synthetic(seed + 1000, 3000, shared=not in_place)
    results = []
    first, r = replay(guest, PageTrace(trace.name, trace.maps, trace.vpns[:1000],
                                       trace.kinds[:1000], {}, trace.contents[:1000]),
                      engine=engine)
    results.append(r)
    second, r = replay(guest, other, engine=engine)
    results.append(r)
    if ksm is not None:
        ksm.run_until(guest.time + 10**10)
    assert first is not None and second is not None
    child = guest.fork(first)
    rest = PageTrace(trace.name, trace.maps, trace.vpns[1000:], trace.kinds[1000:], {},
                     trace.contents[1000:])
    for mm in (first, child, second):
        if mm is not None:
            results.append(replay(guest, rest, mm, engine=engine)[1])
            if ksm is not None:
                ksm.run_until(guest.time + 10**10)
    state = _state(host, [guest])
    state["results"] = [dataclasses.asdict(r) for r in results]
    return state


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", range(12))
def test_seeded_runs_same_in_both_engines(mode: str, seed: int) -> None:
    """Seeded runs with forks, faults, SIGSEGVs, reclaim, CoW and KSM: the same, bit for bit?"""
    runs = [_scenario(mode, seed, engine) for engine in ENGINES]
    _assert_same(*runs)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("kernel", "large_folios"),
                         [("2.6-xip", False), ("6.1", False), ("6.18", True)])
@pytest.mark.parametrize("seed", range(3))
def test_seeded_runs_same_for_every_kernel_and_large_folios(mode: str, kernel: str,
                                                            large_folios: bool,
                                                            seed: int) -> None:
    """The other kernels' fault paths (2.6's xip_file_fault maps read-only, a write then
    copies) and large folios in the page cache: still the same, bit for bit?"""
    options = (("kernel", kernel), ("large_folios", large_folios))
    runs = [_scenario(mode, seed, engine, options) for engine in ENGINES]
    _assert_same(*runs)


@pytest.mark.parametrize("mode", ["pagecache", "ksm"])
@pytest.mark.parametrize("seed", range(4))
def test_fully_associative_tlb_same_in_both_engines(mode: str, seed: int) -> None:
    """One set of 16 ways: the simulation counts up to 16 distinct pages between two uses
    of one, and a walk into the full set evicts the least recently used of 16 entries.
    The reference's victims?"""
    options = (("tlb_ways", 16),)
    runs = [_scenario(mode, seed, engine, options) for engine in ENGINES]
    _assert_same(*runs)


def test_first_touches_walk_without_memory_access(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that mostly misses the TLB (first touches): do its hits and the walks that
    find a PTE stay out of memory.access (only faults go there), and is the result
    still the reference's?"""
    from xipmodel.mm import memory

    calls = []
    reference_access = memory.access

    def counted(*args: Any) -> int:
        calls.append(args)
        return reference_access(*args)

    trace = _synthetic(5, 3000)
    states = []
    for engine in ENGINES:
        monkeypatch.setattr(memory, "access", counted if engine == "fast" else reference_access)
        host, guest = _guest("pagecache", 4096, 16)
        mm, _ = replay(guest, PageTrace("empty", trace.maps, trace.vpns[:0], trace.kinds[:0]))
        assert mm is not None
        failed = bulk.access_many(guest, mm, trace.vpns, trace.kinds, trace.contents,
                                  chunk=3000) if engine == "fast" else \
            [f for a, k, c in trace.accesses() if (f := guest.access(mm, a, k, c or None))]
        states.append({**_state(host, [guest]), "failed": failed})
    _assert_same(*states)
    stats = states[0]["guest 0"]["stats"]
    faults = stats["minor_faults"] + stats["major_faults"] + stats["sigsegv"]
    assert stats["tlb_misses"] > 4 * faults  # most misses find their PTE
    assert 0 < len(calls) <= faults + stats["cow_faults"]


def test_seeded_runs_reach_every_path() -> None:
    """Do the seeded runs above make what they are meant to exercise happen at all?"""
    totals: dict[str, int] = {}
    for mode in MODES:
        for seed in range(12):
            stats = _scenario(mode, seed, "fast")["guest 0"]["stats"]
            for key, value in stats.items():
                totals[key] = totals.get(key, 0) + value
    for key in ("tlb_hits", "tlb_misses", "cow_faults", "cow_ksm", "sigsegv", "pgscan",
                "pgsteal", "major_faults", "minor_faults"):
        assert totals[key] > 0, key
    assert totals["tlb_hits"] > 2 * totals["tlb_misses"]


@pytest.mark.parametrize("seed", range(6))
def test_switching_between_bulk_and_in_order_is_exact(seed: int) -> None:
    """access_many goes by windows, the first of `chunk` accesses: with small chunks and a
    run that alternates first touches with loops over a few pages, many windows start
    and end, some early (reclaim), and a guest of 80 pages goes one access at a time
    once its RAM is handed out. Is the result still exactly the reference's?"""
    rng = np.random.default_rng([seed, 2])
    base = _synthetic(seed, 4000)
    _, first = np.unique(base.vpns, return_index=True)
    hot = rng.choice(first, 24, replace=False)  # 24 pages: more than the TLB holds
    picks = []
    for phase in range(10):
        # Phases alternate: the hot pages alone (mostly hits), then the hot pages between
        # pages the run has not touched yet (mostly misses).
        picks.append(rng.choice(hot, 300))
        if phase % 2:
            fresh = np.arange(phase * 400, (phase + 1) * 400)
            picks[-1] = np.stack([fresh[:300], picks[-1]], axis=1).reshape(-1)
    at = np.concatenate(picks)
    trace = PageTrace("phases", base.maps, base.vpns[at], base.kinds[at], {},
                      base.contents[at])
    ram_pages, chunk = int(rng.choice([80, 4096])), int(rng.choice([37, 100]))
    states = []
    for engine in ENGINES:
        host, guest = _guest("pagecache", ram_pages, 16)
        mm, _ = replay(guest, PageTrace("empty", trace.maps, trace.vpns[:0], trace.kinds[:0]))
        assert mm is not None
        if engine == "reference":
            failed = [f for a, k, c in trace.accesses()
                      if (f := guest.access(mm, a, k, c or None))]
        else:
            assert trace.contents is not None
            failed = bulk.access_many(guest, mm, trace.vpns, trace.kinds, trace.contents,
                                      chunk=chunk)
        states.append({**_state(host, [guest]), "failed": failed})
    _assert_same(*states)


def _steps(steps: list[tuple[int, str]]) -> PageTrace:
    """A trace over _MAPS of (page, kind) steps, pages counted from the text's first."""
    base = _synthetic(0, 1)
    vpns = np.array([(_BASE >> PAGE_SHIFT) + page for page, _ in steps], dtype=np.uint64)
    kinds = np.array(["rwx".index(kind) for _, kind in steps], dtype=np.uint8)
    return PageTrace("steps", base.maps, vpns, kinds, {}, np.zeros(len(steps), np.int64))


def _two_phases(first: PageTrace, second: PageTrace, between: Any) -> list[dict[str, Any]]:
    """Each engine's state after `first`, then between(guest, mm), then `second`."""
    states = []
    for engine in ENGINES:
        host, guest = _guest("pagecache", 4096, 16)
        mm, r1 = replay(guest, first, engine=engine)
        assert mm is not None
        between(guest, mm)
        _, r2 = replay(guest, second, mm, engine=engine)
        states.append({**_state(host, [guest]), "results": [dataclasses.asdict(r1),
                                                            dataclasses.asdict(r2)]})
    return states


def test_sigsegv_through_a_cached_entry_again_and_again() -> None:
    """A program writes its own text page, in the TLB, three times in a row (with other
    pages between): each write is a SIGSEGV that leaves the entry the most recently used,
    so the run of writes goes on in the TLB's simulation. Does every one fault?"""
    loop = [(0, "x"), (1, "x"), (100, "x")] * 20
    trace = _steps([*loop, (0, "w"), (1, "x"), (0, "w"), (100, "x"), (0, "w"), *loop])
    states = _two_phases(_steps([]), trace, lambda guest, mm: None)
    _assert_same(*states)
    assert states[0]["results"][1]["sigsegv"] == 3


@pytest.mark.parametrize("seed", range(3))
def test_walks_dirty_a_clean_writable_pte(seed: int) -> None:
    """Writable PTEs whose dirty bit was cleared (their TLB entries dropped): a write that
    walks to one sets it again, a write through an entry filled by a read does not.
    The same PTEs and TLB entries in both engines?"""
    trace = _synthetic(seed, 3000)
    first, rest = (PageTrace(trace.name, trace.maps, trace.vpns[part], trace.kinds[part], {},
                             trace.contents[part]) for part in (slice(1000), slice(1000, None)))
    cleaned: list[int] = []

    def clean(guest: Guest, mm: Any) -> None:
        for vpn in mm.pt.mapped_vpns().tolist():
            if guest.preset.pte_flags(mm.pt.lookup_pte(vpn)) & Pte.W:
                mm.pt.clear_flags(vpn, Pte.D)
                guest.tlb.invalidate(mm.asid, vpn)
                cleaned.append(vpn)

    states = _two_phases(first, rest, clean)
    _assert_same(*states)
    vpns, ptes = states[0]["guest 0"]["ptes"][1][:2]
    dirty = {vpn for vpn, pte in zip(vpns, ptes, strict=True) if pte & X86_64.pte_dirty}
    assert dirty & set(cleaned)  # some walks dirtied a cleaned PTE again


def test_pte_upgraded_behind_the_tlb() -> None:
    """A PTE made writable without a TLB flush (Linux leaves an upgrade to a spurious
    fault): the write meets the read-only entry, walks, and refills it. Both engines?"""
    data = _TEXT  # the first page of the program's data: read, so mapped read-only
    loop = [(data, "r"), (1, "x"), (100, "x")] * 20

    def upgrade(guest: Guest, mm: Any) -> None:
        mm.pt.set_flags((_BASE >> PAGE_SHIFT) + data, Pte.W)

    states = _two_phases(_steps([(data, "r")]), _steps([*loop, (data, "w"), *loop]), upgrade)
    _assert_same(*states)
    stats = states[0]["guest 0"]["stats"]
    assert stats["minor_faults"] + stats["major_faults"] == 3  # the upgrade needed none


def test_fast_engine_falls_back_where_it_would_differ() -> None:
    """With someone listening for events, each access is an event: the fast engine is the
    reference loop, and both deliver the same events."""
    from xipmodel.events import EventBus

    logs = []
    for engine in ENGINES:
        bus = EventBus()
        log: list[object] = []
        bus.subscribe(log.append)
        host, image = HostMemory(), _image()
        guest = Guest(0, host, 4096, image, bus=bus)
        assert not bulk.exact_for(guest)
        replay(guest, _synthetic(3, 400), engine=engine)
        logs.append(log)
    assert logs[0] == logs[1] and len(logs[0]) > 400


def test_unknown_engine_is_refused() -> None:
    from xipmodel.errors import ParameterError

    _, guest = _guest("pagecache", 4096, 64)
    with pytest.raises(ParameterError, match="engine 'turbo'"):
        replay(guest, _synthetic(0, 10), engine="turbo")
    trace = _synthetic(0, 10)
    mm, _ = replay(guest, PageTrace("empty", trace.maps, trace.vpns[:0], trace.kinds[:0]))
    assert mm is not None and trace.contents is not None
    with pytest.raises(ParameterError, match="chunk=0"):
        bulk.access_many(guest, mm, trace.vpns, trace.kinds, trace.contents, chunk=0)


# --- whole hosts: every mode, distinct guests ----------------------------------------------

def _host_run(scenario: Scenario, mode: str, engine: str,
              monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(xipmodel.host, "replay", functools.partial(replay, engine=engine))
    h = Host(scenario, mode, retire_guests=False)
    result = h.run()
    state = _state(h.memory, h.guests)
    state["result"] = _plain({f.name: getattr(result, f.name)
                              for f in dataclasses.fields(result)})
    return state


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("seed", [0, 1])
def test_host_runs_same_in_both_engines(mode: str, seed: int,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Distinct guests (variants=None) in a small guest RAM, as compare() runs them."""
    scenario = Scenario(guests=3, seed=seed, guest_ram_mib=4, variants=None, ksm_seconds=2.0)
    runs = [_host_run(scenario, mode, engine, monkeypatch) for engine in ENGINES]
    if mode == "pagecache":
        assert runs[0]["guest 0"]["stats"]["pgscan"] > 0  # reclaim ran
    _assert_same(*runs)


def test_reclaim_inside_a_window_counts_the_invalidations_of_the_reference() -> None:
    """A guest about to hand out its last frames: a window starts with the heap's entries
    in the TLB, fills it with text pages, then a fault reads ahead and reclaim ages the
    text pages, dropping their entries. Does the TLB count the invalidations the
    reference counts (entries the TLB holds then), not those of its entries as they were
    when the window started?"""
    heap = 200  # the heap's first page, counted from the text's
    first = [(p, "x") for p in range(0, _TEXT, 2)] + [(heap + p, "w") for p in range(16)]
    text = [(p, "x") for p in range(0, _TEXT, 2)] * 3
    rest = _steps([(heap + p, "r") for p in range(16)] * 300 + text + [(100, "x")] + text)
    states = []
    for engine in ENGINES:
        host, guest = _guest("pagecache", 64, 16)
        mm, _ = replay(guest, _steps(first), engine="reference")
        assert mm is not None and guest.free_area.top < guest.ram_pages  # no reclaim yet
        _, result = replay(guest, rest, mm, engine=engine)
        states.append({**_state(host, [guest]), "result": dataclasses.asdict(result)})
    _assert_same(*states)
    stats = states[0]["guest 0"]["stats"]
    assert stats["pgscan"] > 0 and states[0]["guest 0"]["tlb"][5] > 0  # reclaim dropped entries
