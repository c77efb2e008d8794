"""Cloning guests (whole runs, and the state right after exec) changes no number.

Host(clone_guests=True) copies what a fresh guest would compute again: a guest whose
seeded run equals an earlier one's, and, for distinct guests, the state right after a
fresh guest execs its program (it does not depend on the seed). These tests run many
seeded scenarios both ways and compare every number a RunResult holds.
"""

from __future__ import annotations

import functools
import random
import re
from typing import Any

import numpy as np
import pytest

from xipmodel import host as host_module
from xipmodel.errors import ParameterError
from xipmodel.events import Event, EventBus
from xipmodel.host import MODES, Host, RunResult, Scenario
from xipmodel.mm.frames import HostMemory

_PROGRAMS = ("webserver", "shell", "python", "tools")
_KERNELS = ("6.18", "6.1", "2.6-xip")


def _random_scenario(k: int) -> Scenario:
    """Scenario number `k`: a few distinct guests, drawn from a generator seeded with k."""
    rng = random.Random(k)
    programs = rng.sample(_PROGRAMS, rng.choice((1, 1, 2, 4)))
    workload: Any = (programs[0] if len(programs) == 1 else
                     tuple((p, float(rng.randint(1, 3))) for p in programs))
    return Scenario(guests=rng.randint(2, 5), workload=workload, seed=rng.randrange(1 << 32),
                    variants=rng.choice((None, None, None, 1, 2)),
                    runs_per_guest=rng.choice((1, 1, 3)), kernel=rng.choice(_KERNELS),
                    heap_share=rng.choice((None, None, 0.3, 0.9)),
                    guest_ram_mib=rng.choice((512, 64, 8, 4)),
                    start_interval_ms=rng.choice((0.0, 0.0, 7.0)), ksm_seconds=1.0)


_EDGES = {
    "webserver": Scenario(guests=4, variants=None, ksm_seconds=1),
    "mix, three runs": Scenario(guests=5, workload=tuple((p, 1.0) for p in _PROGRAMS),
                                variants=None, runs_per_guest=3, ksm_seconds=1),
    "reclaim": Scenario(guests=3, workload="python", variants=None, guest_ram_mib=8,
                        heap_share=0.9, ksm_seconds=1),
    "reclaim in exec": Scenario(guests=3, workload="shell", variants=None, guest_ram_mib=1,
                                ksm_seconds=1),
    "oom": Scenario(guests=3, workload="python", variants=None, guest_ram_mib=1,
                    ksm_seconds=1),
    "2.6-xip": Scenario(guests=3, workload="shell", variants=None, kernel="2.6-xip",
                        ksm_seconds=1),
    "started apart": Scenario(guests=4, workload=(("shell", 1.0), ("tools", 1.0)),
                              variants=None, kernel="6.1", start_interval_ms=2000.0,
                              ksm_seconds=1),
    "trace and programs": Scenario(guests=4, workload=(("trace:httpd", 1.0), ("shell", 1.0)),
                                   variants=None, ksm_seconds=1),
}
_SCENARIOS = {**_EDGES, **{f"seeded {k}": _random_scenario(k) for k in range(12)}}


def assert_same(fast: RunResult, full: RunResult) -> None:
    """Every number of the two results is equal."""
    assert fast.as_dict() == full.as_dict()
    assert fast.per_guest == full.per_guest
    assert fast.ksm == full.ksm
    assert np.array_equal(fast.timeline_ns, full.timeline_ns)
    assert np.array_equal(fast.timeline_bytes, full.timeline_bytes)
    assert fast.extra.keys() == full.extra.keys()
    for key, value in full.extra.items():  # ksm_timeline, the saved segments' names
        assert np.array_equal(fast.extra[key], value), key


@pytest.mark.parametrize("name", list(_SCENARIOS))
def test_cloned_guests_equal_guests_run_from_scratch(name: str) -> None:
    """In every mode, does a host that clones guests end with exactly the numbers of one
    that runs every guest from scratch (per guest, totals, timelines, KSM)?"""
    scenario = _SCENARIOS[name]
    for mode in MODES:
        full = Host(scenario, mode, clone_guests=False).run()
        assert_same(Host(scenario, mode).run(), full)


def test_xip_page_ins_are_the_first_guests_only() -> None:
    """Distinct xip guests of one program: only the first pages the segment in (its exec
    and its run); the others find the blocks there (and wait for none of them)."""
    result = Host(Scenario(guests=3, workload="webserver", variants=None), "xip").run()
    page_ins = [g["host_page_ins"] for g in result.per_guest]
    assert page_ins[0] > 0
    assert sum(page_ins[1:]) < page_ins[0]


def test_a_host_with_listeners_runs_every_guest() -> None:
    """With an event bus, every guest runs (events need it): each one's exec emits its own
    events, and the numbers are those of a host that clones nothing."""
    scenario = Scenario(guests=3, workload="shell", variants=None, ksm_seconds=1)
    for mode in ("pagecache", "xip"):
        bus = EventBus()
        guests: set[int] = set()

        def seen(event: Event, guests: set[int] = guests) -> None:
            guests.add(event.guest)

        bus.subscribe(seen)
        result = Host(scenario, mode, bus=bus).run()
        assert {0, 1, 2} <= guests
        assert_same(result, Host(scenario, mode, clone_guests=False).run())


@pytest.mark.parametrize("share", [0.05, 0.5, 0.95])
def test_a_host_filling_up_in_the_last_guest_clones_nothing_it_cannot_hold(
        monkeypatch: pytest.MonkeyPatch, share: float) -> None:
    """The simulated host runs out of frames during the last distinct guest (after `share`
    of what it would take): is every number still that of guests run from scratch (the
    copy of an exec'd guest is made only where all of it fits)?"""
    scenario = Scenario(guests=3, workload="shell", variants=None, ksm_seconds=1)
    for mode in MODES:
        host = Host(scenario, mode)
        host.add_guests(2)
        before = host.memory.allocated
        host.add_guests(3)
        capacity = before + int(share * (host.memory.allocated - before))
        monkeypatch.setattr(host_module, "HostMemory",
                            functools.partial(HostMemory, capacity))
        try:
            full = Host(scenario, mode, clone_guests=False).run()
        except ParameterError as exc:  # no frame even to boot the guest: the same refusal
            with pytest.raises(ParameterError, match=re.escape(str(exc))):
                Host(scenario, mode).run()
        else:
            assert full.totals["oom"] > 0
            assert_same(Host(scenario, mode).run(), full)
        monkeypatch.undo()


def test_a_listener_subscribed_after_the_host_was_made_sees_every_guest() -> None:
    """`h = Host(..., bus=bus)`, then a listener, then h.run(): every guest runs (none is
    copied from an exec template), so each emits the events of its own exec."""
    scenario = Scenario(guests=3, workload="shell", variants=None, ksm_seconds=1)
    counts = []
    for late in (False, True):
        bus = EventBus()
        seen: dict[tuple[int, str], int] = {}

        def listen(e: Event, seen: dict[tuple[int, str], int] = seen) -> None:
            key = (e.guest, type(e).__name__)
            seen[key] = seen.get(key, 0) + 1

        if not late:
            bus.subscribe(listen)
        host = Host(scenario, "pagecache", bus=bus)
        if late:
            bus.subscribe(listen)
        host.run()
        counts.append(seen)
    assert counts[1] == counts[0]
    assert all(counts[1].get((g, "PteInstall"), 0) > 0 for g in range(3))
