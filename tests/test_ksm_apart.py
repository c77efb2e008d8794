"""ksm with guests started apart: one grown host, each answer ended on a copy (family.ApartRun).

ksmd scans between starts, so an n-guest run has no prefix in a longer one; but up to
the n-th start it is the same host, and ApartRun runs only ksmd's tail on a copy of it
(Host.finish_on_copy), counting it once a full pass changed nothing (every later
pass repeats it: Ksm.settled). These tests compare every number with the reference, the
n-guest scenario run from scratch (Host(...).run(): ksm.py page by page), over seeded
scenarios (about half of them settle in the tail) and guest counts asked up and down,
as a slider would.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
from test_ksm_bulk import assert_same_run

from xipmodel.errors import ParameterError
from xipmodel.family import ApartRun
from xipmodel.host import Host, Scenario
from xipmodel.lab.runs import RunCache

_PROGRAMS = ("webserver", "shell", "python", "tools", "trace:httpd")


def _scenario(k: int) -> Scenario:
    """Seeded scenario `k`: guests started apart, ksmd scanning fast or slow, short or
    long, so that passes end between starts, in the tail, or settle."""
    rng = random.Random(k)
    programs = rng.sample(_PROGRAMS, rng.choice((1, 2, 3)))
    workload: Any = (programs[0] if len(programs) == 1 else
                     tuple((p, float(rng.randint(1, 3))) for p in programs))
    scenario = Scenario(guests=rng.randint(3, 6), workload=workload,
                        seed=rng.randrange(1 << 32),
                        variants=rng.choice((None, 1, 2, 4)),
                        runs_per_guest=rng.choice((1, 1, 2)),
                        kernel=rng.choice(("6.18", "6.1", "2.6-xip")),
                        guest_ram_mib=rng.choice((512, 64, 8)),
                        start_interval_ms=rng.choice((7.0, 300.0, 2000.0, 5000.0, 30000.0)),
                        ksm_seconds=rng.choice((0.0, 3.0, 20.0, 60.0)),
                        ksm_pages_to_scan=rng.choice((1, 7, 100, 1000)),
                        ksm_sleep_ms=rng.choice((3, 20, 50)))
    while scenario.ksm_scan_pages > 200_000:  # a few passes at most: seconds per test
        scenario = scenario.replace(ksm_pages_to_scan=-(-scenario.ksm_pages_to_scan // 10))
    return scenario


@pytest.mark.parametrize("k", range(12))
def test_answers_off_one_grown_host_equal_runs_from_scratch(k: int) -> None:
    """Guest counts asked 1, 2, …, N (each growing the host), then back down to 2 (a new
    host) and up to N again: is every answer the n-guest run from scratch, counter for
    counter, per guest, in every timeline?"""
    scenario = _scenario(k)
    run = ApartRun(scenario.replace(guests=1))
    asked = [*range(1, scenario.guests + 1), 2, scenario.guests]
    for n in asked:
        assert_same_run(run.result(n), Host(scenario.replace(guests=n), "ksm").run())
        assert run.guests == n


def test_the_grown_host_is_left_as_it_was() -> None:
    """An answer ends a copy: the host goes on to more guests as if none had been asked
    for (its own result after growing equals a host grown without answers)."""
    scenario = _scenario(3).replace(guests=5)
    asked, quiet = ApartRun(scenario), Host(scenario, "ksm", retire_guests=True)
    for n in range(1, 6):
        asked.result(n)
    quiet.add_guests(5)
    assert_same_run(asked.host.result(), quiet.result())


def test_a_guest_count_out_of_range_is_refused() -> None:
    """result(0) names the field and range, as a Scenario does."""
    with pytest.raises(ParameterError, match="guests 0 is not in 1"):
        ApartRun(_scenario(0)).result(0)


def test_the_run_cache_grows_one_host_for_a_slider_moved_up() -> None:
    """RunCache.result over guest counts 1..N in slider order: the answers are the runs
    from scratch, and one host grew to N (each guest started once)."""
    scenario = _scenario(5)
    cache = RunCache()
    started = []
    for n in range(1, scenario.guests + 1):
        s = scenario.replace(guests=n)
        assert_same_run(cache.result(s, "ksm", lambda i, total, what: started.append(i)),
                        Host(s, "ksm").run())
    assert sorted(set(started)) == list(range(1, scenario.guests + 1))
    assert len(started) == scenario.guests  # no guest started twice


SETTLING = Scenario(guests=3, workload="shell", guest_ram_mib=64, seed=2,
                    start_interval_ms=300.0, ksm_seconds=1.0, ksm_sleep_ms=50)


def test_counted_passes_follow_the_scan_page_by_page() -> None:
    """Once ksmd's passes repeat (Ksm.settled), are the counters settled_counters gives
    after v more pages those of scanning them, one page at a time, for every v over two
    passes and more (a pass ended or not when v reaches its last page)?"""
    host = Host(SETTLING, "ksm")
    host.add_guests(SETTLING.guests)
    ksm = host.ksm
    assert ksm is not None
    while not ksm.settled():
        ksm.scan(97)
    size = sum(int(np.count_nonzero(g.backing >= 0)) for g in host.guests)
    counted = ksm.settled_counters(range(2 * size + 3))
    assert counted[-1].full_scans > counted[0].full_scans + 1
    for v, want in enumerate(counted):
        assert ksm.counters == want, v
        ksm.scan(1)
