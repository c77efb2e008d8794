"""The shapes MODEL.md promises, on small scenarios: who pays for what, per guest and per mode.

    XIP host memory = |pages touched on the image| (once) + N × private pages
    page cache      ≈ N × (touched file pages × (1 + over-fetch) + private pages)
    the saving grows linearly in N; KSM gets there only after scan time, and also
    merges identical anonymous pages XIP cannot; two 128 MiB guests on a 100 MiB
    image stay within 128 + 128 + 100 (Firecracker docs/pmem.md)

Identical guests (every guest replays the same seeded run) make the shapes exact:
`Scenario(variants=1)`. Guests get 64 MiB and ksmd a short scan unless the test is
about KSM, so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from xipmodel.distro import default_image
from xipmodel.errors import ParameterError
from xipmodel.events import EventBus, KsmScan
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.host import MODES, Host, RunResult, Scenario, compare, results_table, sweep
from xipmodel.mm.guest import Guest
from xipmodel.params import PAGE_SIZE, STRUCT_PAGE_BYTES

MiB = 1 << 20
SMALL = Scenario(guests=1, workload="shell", guest_ram_mib=64, ksm_seconds=0.05)


def identical(scenario: Scenario) -> Scenario:
    """The scenario with identical guests: every guest replays the same seeded run."""
    return scenario.replace(variants=1)


def run(scenario: Scenario, mode: str) -> RunResult:
    return Host(scenario, mode).run()


def cat(r: RunResult, name: str) -> int:
    return r.bytes_by_category[name]


# ── XIP: shared once, private per guest ──────────────────────────────────────────────────────

def test_xip_adds_exactly_the_private_pages_of_each_guest() -> None:
    """N identical guests execute in place: what does one more guest cost the host?

    The image pages they touch are in the shared segment once, whatever N; each guest
    adds its anonymous pages, its CoW copies and its page tables, and nothing else.
    """
    results = [run(identical(SMALL.replace(guests=n)), "xip") for n in (1, 2, 3, 4)]
    shared = {cat(r, "shared") for r in results}
    assert len(shared) == 1 and shared.pop() > 0
    steps = np.diff([r.host_bytes for r in results])
    assert len(set(steps.tolist())) == 1, steps
    one = results[0]
    private = cat(one, "anon") + cat(one, "cow") + cat(one, "page_tables")
    assert steps[0] == private
    # The guest's own view: its anonymous and CoW pages are all of it but the tables.
    g = one.per_guest[0]
    assert (g["anon_pages"] + g["cow_pages"]) * PAGE_SIZE == cat(one, "anon") + cat(one, "cow")
    for r in results:  # host = shared once + N × private (+ the one zero page)
        n = r.scenario.guests
        assert r.host_bytes == cat(r, "shared") + cat(r, "zero") + n * private


def test_xip_shared_bytes_are_the_union_of_touched_image_pages() -> None:
    """Guests running different seeded runs: is the segment the union of what they touched?"""
    r = run(SMALL.replace(guests=3), "xip")
    touched = [g["xip_mapped_blocks_pages"] for g in r.per_guest]
    assert cat(r, "shared") >= max(touched) * PAGE_SIZE
    assert cat(r, "shared") <= sum(touched) * PAGE_SIZE
    assert r.totals["host_page_ins"] * PAGE_SIZE == cat(r, "shared")
    assert r.totals["major_faults"] == 0 and r.totals["disk_read_bytes"] == 0


# ── the page cache: a copy per guest, with over-fetch ────────────────────────────────────────

def test_page_cache_holds_a_copy_per_guest_with_read_around() -> None:
    """N identical guests read their binaries through their page caches: what does each hold?

    Each holds the file pages it touched plus what read-around fetched around them:
    more than the touched pages, the same for every guest, N copies in all.
    """
    s = identical(SMALL.replace(guests=3))
    pc, xip = run(s, "pagecache"), run(s.replace(guests=1), "xip")
    touched = xip.per_guest[0]["xip_mapped_blocks_pages"]  # distinct image pages one run uses
    per_guest = [g["page_cache_pages"] for g in pc.per_guest]
    assert len(set(per_guest)) == 1
    assert per_guest[0] > touched  # read-around over-fetch
    assert cat(pc, "page_cache") == 3 * per_guest[0] * PAGE_SIZE
    assert pc.totals["disk_read_bytes"] == cat(pc, "page_cache")
    assert pc.totals["major_faults"] > 0


def test_saving_grows_exactly_linearly_in_guests() -> None:
    """Is host_bytes(page cache) − host_bytes(XIP) an exact linear function of N?"""
    points = sweep(identical(SMALL), "guests", [1, 2, 3, 5], modes=("pagecache", "xip"))
    ns = [c.scenario.guests for c in points]
    saving = [c.results["pagecache"].host_bytes - c.results["xip"].host_bytes for c in points]
    slope = (saving[1] - saving[0]) // (ns[1] - ns[0])
    assert slope > 0
    for n, s in zip(ns, saving, strict=True):
        assert s == saving[0] + slope * (n - 1), (n, s)
    assert points[-1].saving("xip") > points[0].saving("xip")


def test_one_guest_xip_costs_no_more_than_page_cache() -> None:
    """With a single guest there is nothing to share: is XIP at least no worse?

    DAX differs from XIP only by the device's struct pages in the guest's RAM: 64 bytes
    per 4 KiB of the whole image (memremap_pages), which the pfn-only DCSS never pays.
    """
    blocks = default_image().superblock.s_blocks_count
    memmap = -(-blocks * STRUCT_PAGE_BYTES // PAGE_SIZE) * PAGE_SIZE
    for workload in ("shell", "webserver"):
        c = compare(SMALL.replace(workload=workload), modes=("pagecache", "xip", "dax"))
        assert c.results["xip"].host_bytes <= c.results["pagecache"].host_bytes
        assert c.results["xip"].bytes_by_category["struct_pages"] == 0
        assert c.results["dax"].bytes_by_category["struct_pages"] == memmap
        assert c.results["dax"].host_bytes == c.results["xip"].host_bytes + memmap


# ── KSM: the same sharing, after the fact ────────────────────────────────────────────────────

def test_ksm_scans_at_its_rate_and_shares_only_after_scan_time() -> None:
    """ksmd scans pages_to_scan pages a wake-up: how much has it saved after 50 ms, after 20 s?

    Every wake-up once guests have memory scans exactly pages_to_scan pages; after a
    short time almost nothing is merged; after enough passes every page-cache page of
    the second guest is merged with the first's, so one more guest costs (nearly)
    only its private pages, as with XIP.
    """
    base = identical(SMALL.replace(guests=2))
    pc = run(base, "pagecache")
    scans: list[KsmScan] = []
    bus = EventBus()
    bus.subscribe(lambda e: scans.append(e) if isinstance(e, KsmScan) else None)
    short = Host(base.replace(ksm_seconds=0.05), "ksm", bus=bus).run()
    assert short.ksm is not None
    wakeups = int(short.timeline_ns[-1]) // (base.ksm_sleep_ms * 1_000_000) + 1
    assert len(scans) == wakeups
    assert [e.scanned for e in scans if e.scanned] == [base.ksm_pages_to_scan] * len(
        [e for e in scans if e.scanned])
    assert sum(e.scanned for e in scans) == short.ksm.pages_scanned
    assert short.ksm.pages_scanned >= (wakeups - 1) * base.ksm_pages_to_scan
    assert short.ksm.pages_sharing == 0
    assert short.host_bytes >= pc.host_bytes  # nothing saved yet (and rmap_items cost)

    long = run(base.replace(ksm_seconds=20.0), "ksm")
    assert long.ksm is not None and long.ksm.full_scans >= 2
    cache_one_guest = pc.per_guest[0]["page_cache_pages"] * PAGE_SIZE
    saved = pc.host_bytes - long.host_bytes
    assert saved >= 0.9 * cache_one_guest  # the second guest's copy is gone
    assert cat(long, "page_cache") == 0  # every page-cache page now sits in a KSM frame
    long3 = run(base.replace(guests=3, ksm_seconds=20.0), "ksm")
    xip2, xip3 = run(base, "xip"), run(base.replace(guests=3), "xip")
    ksm_step = long3.host_bytes - long.host_bytes
    xip_step = xip3.host_bytes - xip2.host_bytes
    rmap_step = cat(long3, "ksm") - cat(long, "ksm")
    assert ksm_step <= xip_step + rmap_step  # file pages free for the next guest, like XIP


def test_ksm_merges_identical_anonymous_pages_xip_cannot() -> None:
    """Identical guests write the same bytes into private CoW copies: who can share those?

    XIP keeps one CoW copy per guest (a private write is private); ksmd finds the
    copies equal and merges them.
    """
    base = identical(SMALL.replace(guests=3))
    xip, ksm = run(base, "xip"), run(base.replace(ksm_seconds=20.0), "ksm")
    assert cat(xip, "cow") > 0
    assert cat(xip, "cow") == 3 * cat(run(base.replace(guests=1), "xip"), "cow")
    assert cat(ksm, "cow") < cat(xip, "cow")
    assert ksm.totals["cow_faults"] == xip.totals["cow_faults"]


# ── Firecracker docs/pmem.md: 128 + 128 + 100 ──────────────────────────────────────────────

@pytest.fixture(scope="module")
def pmem_image() -> tuple[Ext2Image, list[str]]:
    """A 100 MiB image of ten 10 MiB files (4 KiB blocks), seeded bytes."""
    rng = np.random.default_rng(100)
    tree = {f"/data/f{i}": rng.integers(0, 256, 10 * MiB, dtype=np.uint8).tobytes()
            for i in range(10)}
    return Ext2Image.open(build_image(tree, volume_name="pmem")), sorted(tree)


@pytest.mark.slow
def test_firecracker_two_guests_share_one_image(pmem_image: tuple[Ext2Image, list[str]]
                                                 ) -> None:
    """Two 128 MiB guests read the whole 100 MiB image and write 16 MiB of their own:
    does the host stay within 128 + 128 + 100 MiB with XIP and DAX?

    With the page cache each guest holds its own 100 MiB copy inside its RAM. (The
    docs' "2 × 228 unshared" also counts a host copy of the pmem file per VM; the
    model's virtual disk costs the host nothing, so here the unshared case is bounded
    by the guests' RAM: 2 × 128.)
    """
    image, paths = pmem_image
    anon = 16 * MiB
    results: dict[str, RunResult] = {}
    for mode in ("xip", "dax", "pagecache"):
        h = Host(Scenario(guests=2, guest_ram_mib=128), mode, image)
        for gid in range(2):
            g = Guest(gid, h.memory, 128 * MiB // PAGE_SIZE, image, segment=h.segment)
            h.guests.append(g)
            for path in paths:
                g.read(path)
            mm = g.new_process("worker")
            g.mmap(mm, 0x10000000, anon, "rw-")
            for offset in range(0, anon, PAGE_SIZE):
                g.access(mm, 0x10000000 + offset, "w")
        results[mode] = h.result()
    for mode in ("xip", "dax"):
        r = results[mode]
        assert cat(r, "shared") == 100 * MiB  # the image, once
        assert r.host_bytes <= (128 + 128 + 100) * MiB
        assert r.totals["disk_read_bytes"] == 0
    pc = results["pagecache"]
    assert cat(pc, "page_cache") == 2 * 100 * MiB  # a copy per guest
    assert pc.host_bytes - results["xip"].host_bytes >= 100 * MiB - 2 * MiB  # less tables
    assert pc.host_bytes <= 2 * (128 * MiB) + cat(pc, "page_tables")


# ── determinism and executors ────────────────────────────────────────────────────────────────

SCRIPT = """
import json, sys
from xipmodel.mm.guest import Guest
from xipmodel.host import Scenario, compare
s = Scenario(guests=2, workload="shell", guest_ram_mib=64, ksm_seconds=0.5, seed=7)
json.dump(compare(s).as_dict(), sys.stdout)
"""


def _plain(value: Any) -> Any:
    """JSON round trip: tuples become lists, as they do across a process boundary."""
    return json.loads(json.dumps(value))


def test_same_scenario_same_numbers_in_any_process() -> None:
    """Run twice here and once in a fresh interpreter: are the results bit-identical?"""
    s = Scenario(guests=2, workload="shell", guest_ram_mib=64, ksm_seconds=0.5, seed=7)
    first, second = compare(s), compare(s)
    assert first.as_dict() == second.as_dict()
    for mode in first.results:
        assert np.array_equal(first.results[mode].timeline_bytes,
                              second.results[mode].timeline_bytes)
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         check=True).stdout
    assert json.loads(out) == _plain(first.as_dict())
    with ProcessPoolExecutor(max_workers=2) as pool:
        assert compare(s, executor=pool).as_dict() == first.as_dict()


def test_different_seeds_give_different_runs() -> None:
    """Does the seed matter at all (else determinism would be trivially true)?"""
    a = run(SMALL.replace(seed=1), "pagecache")
    b = run(SMALL.replace(seed=2), "pagecache")
    assert a.as_dict() != b.as_dict()


def test_sweep_through_executors_gives_the_same_numbers() -> None:
    """A sweep over guests, serial, on threads and on processes: the same numbers, JSON-ready?"""
    values = [1, 2, 3]
    modes = ("pagecache", "xip", "ksm")
    serial = [c.as_dict() for c in sweep(SMALL, "guests", values, modes=modes)]
    with ThreadPoolExecutor(max_workers=2) as threads:
        threaded = [c.as_dict() for c in sweep(SMALL, "guests", values, modes=modes,
                                               executor=threads)]
    with ProcessPoolExecutor(max_workers=2) as processes:
        forked = [c.as_dict() for c in sweep(SMALL, "guests", values, modes=modes,
                                             executor=processes)]
    assert serial == threaded == forked
    assert [c["scenario"]["guests"] for c in serial] == values
    json.dumps(serial)  # plain values only
    for c in serial:
        for row in c["modes"].values():
            for key in ("host_bytes", "shared_bytes", "page_cache_bytes", "anon_bytes",
                        "cow_bytes", "major_faults", "minor_faults", "disk_read_bytes"):
                assert isinstance(row[key], int)


def test_results_convert_to_a_dataframe() -> None:
    """With pandas installed, do results and tables become DataFrames with one row each?"""
    pandas = pytest.importorskip("pandas")
    c = compare(SMALL.replace(guests=2), modes=("pagecache", "xip"))
    table = pandas.DataFrame(results_table(c))
    assert list(table["mode"]) == ["pagecache", "xip"]
    assert (table["host_bytes"] > 0).all()
    assert len(c.results["xip"].to_dataframe()) == 2


# --- the shortcuts are exact ----------------------------------------------------------------

_MIX = (("webserver", 0.6), ("shell", 0.3), ("python", 0.1))


@pytest.mark.parametrize("mode", MODES)
def test_cloned_and_retired_guests_equal_full_runs(mode: str) -> None:
    """Copying a guest whose seeded run equals an earlier one's (and retiring it) changes
    no number: totals, categories, timelines and every per-guest row are identical."""
    scenario = Scenario(guests=7, workload=_MIX, variants=2, ksm_seconds=3, guest_ram_mib=128)
    full = Host(scenario, mode, clone_guests=False, retire_guests=False).run()
    for retire in (False, True):
        fast = Host(scenario, mode, clone_guests=True, retire_guests=retire).run()
        assert fast.as_dict() == full.as_dict()
        assert fast.per_guest == full.per_guest
        assert (fast.timeline_bytes == full.timeline_bytes).all()
        assert (fast.timeline_ns == full.timeline_ns).all()


@pytest.mark.parametrize("mode", MODES)
def test_distinct_guests_are_retired_not_kept_as_templates(mode: str) -> None:
    """With variants=None no seeded run repeats, so no guest is kept whole for a clone:
    every guest of a big host is retired (its page cache and processes dropped) and
    the numbers are those of a host that keeps everything."""
    scenario = Scenario(guests=5, workload=_MIX, variants=None, ksm_seconds=2,
                        guest_ram_mib=128)
    kept = Host(scenario, mode, retire_guests=False).run()
    host = Host(scenario, mode, retire_guests=True)
    lean = host.run()
    assert all(g.retired is not None and not g.procs and not g.cache.key_of
               for g in host.guests)
    assert lean.as_dict() == kept.as_dict()
    assert lean.per_guest == kept.per_guest
    assert (lean.timeline_bytes == kept.timeline_bytes).all()


@pytest.mark.parametrize("mode", ["pagecache", "xip", "dax"])
def test_prefix_of_a_run_is_the_smaller_run(mode: str) -> None:
    """Without KSM, the first n guests of an N-guest run are exactly an n-guest run."""
    big = Scenario(guests=9, workload=_MIX, guest_ram_mib=128)
    result = Host(big, mode).run()
    for n in (1, 4, 9):
        small = Host(big.replace(guests=n), mode).run()
        assert result.prefix(n).as_dict() == small.as_dict()
        assert result.prefix(n).per_guest == small.per_guest


def test_ksm_results_have_no_prefix() -> None:
    """ksmd keeps scanning after the last start, so a KSM run is not a sum of its guests."""
    result = Host(Scenario(guests=2, workload="shell", ksm_seconds=1), "ksm").run()
    with pytest.raises(ParameterError, match="ksm"):
        result.prefix(1)
    assert result.extra["ksm_timeline"].shape == (len(result.timeline_ns), 6)


def test_mix_is_dealt_by_largest_remainder() -> None:
    """Any first n guests follow the mix as closely as n allows (so prefixes keep the mix)."""
    scenario = Scenario(guests=100, workload=(("webserver", 0.8), ("shell", 0.2)))
    programs = [scenario.program_of(i) for i in range(100)]
    for n in range(1, 101):
        assert abs(programs[:n].count("webserver") - 0.8 * n) < 1
