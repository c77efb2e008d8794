"""ksmd's tail on a host nearly full: `fits` says when the bulk count (mm/ksm_bulk.py) holds.

ksmd_passes counts ksmd's merges as if every stable frame it makes could be allocated.
On a host without room for them, ksm.py's page-by-page scan fails allocations and
merges less; then Host.ksmd_tail returns None and Host.run(ksmd_in_bulk=True) and
FamilyRun fall back to that scan. These tests shrink the simulated host (HostMemory's
capacity, for every host the test builds) to just what the guests take, plus a few
frames, and compare with the reference Host(...).run().
"""

from __future__ import annotations

import functools

import pytest
from test_ksm_bulk import assert_same_run

from xipmodel import host as host_module
from xipmodel.family import FamilyRun
from xipmodel.host import Host, RunResult, Scenario
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.ksm_bulk import ScanOrder, fits

# Distinct guests of two programs; ksmd runs through its second pass (every merge made).
SCENARIO = Scenario(guests=4, workload=(("shell", 1.0), ("tools", 1.0)), guest_ram_mib=64,
                    seed=3, variants=None, ksm_seconds=5.0, ksm_pages_to_scan=1000)


@functools.lru_cache(maxsize=1)
def _roomy() -> tuple[int, RunResult]:
    """Frames the guests take on the default (64 GiB) host, and its reference run."""
    host = Host(SCENARIO, "ksm")
    host.add_guests(SCENARIO.guests)
    return host.memory.allocated, Host(SCENARIO, "ksm").run()


def _host_of(monkeypatch: pytest.MonkeyPatch, capacity: int) -> None:
    """Every Host made from now on has `capacity` frames."""
    monkeypatch.setattr(host_module, "HostMemory", functools.partial(HostMemory, capacity))


def _fits(guests: int) -> tuple[Host, ScanOrder, bool]:
    """A ksm host of SCENARIO's first `guests` guests, their scan order, and fits()."""
    host = Host(SCENARIO.replace(guests=guests), "ksm")
    host.add_guests(guests)
    order = ScanOrder()
    order.extend(host.memory, [g.backing for g in host.guests])
    assert host.ksm is not None
    return host, order, fits(order, guests, host.memory, host.ksm.max_page_sharing)


@pytest.mark.parametrize("spare", [0, 1, "stable - 1"])
def test_a_host_without_room_for_the_stable_frames_scans_page_by_page(
        monkeypatch: pytest.MonkeyPatch, spare: int | str) -> None:
    """The guests fit, but not every stable frame ksmd would make (`spare` frames left):
    fits() is False, ksmd_tail declines, and the run and FamilyRun's results equal
    ksm.py's scan exactly (with no frame spare, that scan merges nothing)."""
    allocated, roomy = _roomy()
    stable = roomy.ksm.pages_shared if roomy.ksm else 0
    assert stable > 1
    _host_of(monkeypatch, allocated + (stable - 1 if spare == "stable - 1" else int(spare)))
    host, order, fit = _fits(SCENARIO.guests)
    assert not fit
    assert host.ksmd_tail(host.result(), order) is None
    reference = Host(SCENARIO, "ksm").run()
    assert_same_run(Host(SCENARIO, "ksm").run(ksmd_in_bulk=True), reference)
    if spare == 0:  # the bulk count (the roomy host's run) would be wrong here
        assert reference.ksm is not None and reference.ksm.pages_shared == 0
        assert reference.host_bytes != roomy.host_bytes
    family = FamilyRun(SCENARIO, "ksm")
    family.grow(SCENARIO.guests)
    for n in (2, SCENARIO.guests):
        assert_same_run(family.result(n), Host(SCENARIO.replace(guests=n), "ksm").run())


def test_a_host_with_just_room_for_the_stable_frames_counts_in_bulk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With a free frame for each stable frame the roomy run ends with (pass 2 makes them
    all and nothing frees them) and not one more, fits() is True: the bulk tail is used
    and equals ksm.py's scan on that host, and the roomy host's run."""
    allocated, roomy = _roomy()
    assert roomy.ksm is not None and roomy.ksm.full_scans >= 2
    _host_of(monkeypatch, allocated + roomy.ksm.pages_shared)
    host, order, fit = _fits(SCENARIO.guests)
    assert fit
    tail = host.ksmd_tail(host.result(), order)
    assert tail is not None
    reference = Host(SCENARIO, "ksm").run()
    assert_same_run(tail, reference)
    assert_same_run(reference, roomy)
    family = FamilyRun(SCENARIO, "ksm")
    family.grow(SCENARIO.guests)
    assert_same_run(family.result(SCENARIO.guests), reference)
