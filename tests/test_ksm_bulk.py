"""ksmd counted in bulk (mm/ksm_bulk.py, Host.ksmd_tail, family.py) against ksm.py's scan.

The bulk path is only a shortcut: every counter, every category of host memory and
every timeline row must equal the reference run's, for any guest count, mix, seed and
ksmd parameters. Runs are small (64-128 MiB guests) so that many scenarios fit.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from xipmodel.errors import ParameterError
from xipmodel.family import FamilyRun, has_prefixes
from xipmodel.host import Host, RunResult, Scenario, compare, sweep
from xipmodel.mm.ksm import Ksm
from xipmodel.mm.ksm_bulk import ScanOrder, ksmd_passes, wakeup_visits

_MIX = (("webserver", 0.5), ("shell", 0.3), ("python", 0.2))


def assert_same_run(fast: RunResult, ref: RunResult) -> None:
    """Identical results: counters, categories, per-guest rows, totals, every timeline."""
    assert fast.scenario == ref.scenario
    assert fast.ksm == ref.ksm
    assert fast.bytes_by_category == ref.bytes_by_category
    assert fast.per_guest == ref.per_guest
    assert fast.totals == ref.totals
    np.testing.assert_array_equal(fast.timeline_ns, ref.timeline_ns)
    np.testing.assert_array_equal(fast.timeline_bytes, ref.timeline_bytes)
    np.testing.assert_array_equal(fast.extra["ksm_timeline"], ref.extra["ksm_timeline"])
    assert fast.as_dict() == ref.as_dict()


# Seeded scenarios: each changes what ksmd sees (mix, seed, variants, memory) or how it
# scans (pages per wake-up, sleep, how long): short scans end in pass 1 or 2, long ones
# settle; pages_to_scan 1 and 7 stop mid-pass at odd places.
SCENARIOS = [
    Scenario(guests=6, workload="shell", guest_ram_mib=64, seed=1, ksm_seconds=0.5),
    Scenario(guests=6, workload="shell", guest_ram_mib=64, seed=2, ksm_seconds=3.0,
             ksm_pages_to_scan=7, ksm_sleep_ms=3),
    Scenario(guests=5, workload=_MIX, guest_ram_mib=128, seed=3, ksm_seconds=20.0),
    Scenario(guests=5, workload=_MIX, guest_ram_mib=128, seed=4, variants=None,
             ksm_seconds=6.0, ksm_pages_to_scan=1000),
    Scenario(guests=7, workload=(("webserver", 1.0), ("shell", 1.0)), guest_ram_mib=64,
             seed=5, variants=1, ksm_seconds=60.0, ksm_pages_to_scan=500,
             ksm_sleep_ms=50),
    Scenario(guests=4, workload="python", guest_ram_mib=128, seed=6, heap_share=0.5,
             ksm_seconds=1.0, ksm_pages_to_scan=1),
    Scenario(guests=5, workload="tools", guest_ram_mib=128, seed=7, ksm_seconds=0.0),
    Scenario(guests=4, workload="shell", guest_ram_mib=64, seed=8, runs_per_guest=2,
             variants=2, ksm_seconds=2.0, ksm_sleep_ms=1, ksm_pages_to_scan=13),
    Scenario(guests=20, workload=_MIX, guest_ram_mib=64, seed=9, ksm_seconds=10.0),
    Scenario(guests=3, workload="webserver", seed=10, ksm_seconds=120.0),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: f"seed{s.seed}")
def test_family_ksm_results_equal_the_reference(scenario: Scenario) -> None:
    """A ksm family grown to N guests answers n guests exactly as a ksm run of n guests
    does with ksm.py scanning page by page, for several n up to N."""
    family = FamilyRun(scenario, "ksm")
    family.grow(scenario.guests)
    counts = sorted({1, 2, scenario.guests // 2 + 1, scenario.guests})
    for n in counts:
        assert_same_run(family.result(n), Host(scenario.replace(guests=n), "ksm").run())


def test_family_grown_in_steps_equals_one_grown_at_once() -> None:
    """Growing a family 2 → 5 → 9 guests gives what a host of 9 guests gives, in every mode
    (a run continued, not started over)."""
    scenario = Scenario(guests=9, workload=_MIX, guest_ram_mib=64, seed=11, ksm_seconds=4.0)
    for mode in ("pagecache", "xip", "ksm", "dax"):
        family = FamilyRun(scenario.replace(guests=2), mode)
        for n in (2, 5, 9):
            family.grow(n)
        for n in (3, 9):
            assert_same_run_or_plain(family.result(n), Host(scenario.replace(guests=n),
                                                            mode).run())


def assert_same_run_or_plain(fast: RunResult, ref: RunResult) -> None:
    if ref.mode == "ksm":
        assert_same_run(fast, ref)
    else:
        assert fast.as_dict() == ref.as_dict()
        assert fast.per_guest == ref.per_guest
        np.testing.assert_array_equal(fast.timeline_bytes, ref.timeline_bytes)


@pytest.mark.parametrize("max_page_sharing", [2, 3, 5, 256])
def test_bulk_passes_follow_stable_chains(max_page_sharing: int) -> None:
    """With a small max_page_sharing the pages of one content fill several stable frames
    (a chain), and a block of one waits in the unstable tree: the bulk counts agree with
    ksm.py after every run_until, in the counters and in the frames freed by kind."""
    scenario = Scenario(guests=8, workload="shell", guest_ram_mib=64, seed=12, variants=2)
    sleep_ms, per_wake = 5, 37
    bulk_host = Host(scenario, "pagecache")
    bulk_host.add_guests(scenario.guests)
    order = ScanOrder()
    order.extend(bulk_host.memory, [g.backing for g in bulk_host.guests[:3]])
    order.extend(bulk_host.memory, [g.backing for g in bulk_host.guests[3:]])
    pages = order.offsets[-1]
    times = [int(t) for t in np.linspace(0, 4 * pages / per_wake * sleep_ms * 1e6, 40)]
    visits = wakeup_visits(times, 0, sleep_ms * 1_000_000, per_wake)
    for guests in (1, 5, 8):
        scan = ksmd_passes(order, guests, visits, bulk_host.memory, max_page_sharing)
        ref_host = Host(scenario, "pagecache")
        ref_host.add_guests(guests)
        before = ref_host.memory.counts_by_kind()
        ksm = Ksm(ref_host.memory, ref_host.guests, pages_to_scan=per_wake,
                  sleep_millisecs=sleep_ms, max_page_sharing=max_page_sharing)
        for t, counters, freed in zip(times, scan.counters, scan.freed, strict=True):
            ksm.run_until(t)
            c = ksm.counters
            assert counters == c, (guests, t)
            now = ref_host.memory.counts_by_kind()
            for kind, count in before.items():
                expect = count - now[kind] + (c.pages_shared if kind.name == "KSM" else 0)
                assert freed[kind] == expect, (guests, t, kind)
        assert c.full_scans >= 2  # the scan got past merging
        if guests > 1:
            assert c.pages_sharing > 0


def test_ksm_prefixes_only_when_guests_start_together() -> None:
    """Guests started apart let ksmd scan between starts: no prefixes, said plainly."""
    apart = Scenario(guests=3, start_interval_ms=100.0)
    assert has_prefixes("ksm", Scenario()) and has_prefixes("xip", apart)
    assert not has_prefixes("ksm", apart)
    with pytest.raises(ParameterError, match="no prefixes"):
        FamilyRun(apart, "ksm")
    family = FamilyRun(Scenario(guests=2, workload="shell", guest_ram_mib=64), "xip")
    family.grow(2)
    with pytest.raises(ParameterError, match="guests 3"):
        family.result(3)


@pytest.mark.parametrize("interval", [0.0, 40.0])
def test_run_with_ksmd_in_bulk_equals_the_reference_in_every_mode(interval: float) -> None:
    """Host.run(ksmd_in_bulk=True) (what compare, sweep and the CLI run) gives Host.run's
    page-by-page result in every mode, with guests started together (ksmd's tail in bulk)
    or apart (ksmd scans between starts: page by page)."""
    scenario = Scenario(guests=4, workload=_MIX, guest_ram_mib=64, seed=13, ksm_seconds=2.0,
                        start_interval_ms=interval)
    ticks: list[tuple[int, int]] = []
    for mode in ("pagecache", "xip", "ksm", "dax"):
        fast = Host(scenario, mode).run(lambda done, total: ticks.append((done, total)),
                                        ksmd_in_bulk=True)
        assert_same_run_or_plain(fast, Host(scenario, mode).run())
    assert ticks == [(i, 4) for i in range(1, 5)] * 4


def test_compare_and_sweep_count_ksmd_in_bulk(monkeypatch: pytest.MonkeyPatch) -> None:
    """compare and sweep (here and through a process pool, which pickles the jobs) give
    the reference's numbers, and in this process ksmd never scans page by page."""
    scenario = Scenario(guests=5, workload=_MIX, guest_ram_mib=64, seed=14, ksm_seconds=3.0)
    modes = ("ksm", "xip")
    reference = {n: {m: Host(scenario.replace(guests=n), m).run() for m in modes}
                 for n in (2, 5)}
    with ProcessPoolExecutor(max_workers=1) as pool:
        pooled = sweep(scenario, "guests", [2, 5], modes=modes, executor=pool)
    woken: list[int] = []
    real_run_until = Ksm.run_until

    def run_until(ksm: Ksm, time_ns: int) -> int:
        woken.append(time_ns)
        return real_run_until(ksm, time_ns)

    monkeypatch.setattr(Ksm, "run_until", run_until)
    here = [compare(scenario.replace(guests=2), modes), compare(scenario, modes)]
    assert woken and max(woken) == 0  # only at the guests' start, before any wake-up
    for comparisons in (pooled, here):
        for c in comparisons:
            for mode, result in c.results.items():
                assert_same_run_or_plain(result, reference[c.scenario.guests][mode])
