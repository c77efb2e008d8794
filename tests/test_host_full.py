"""A simulated host that runs out of frames while a guest starts: one clear error, never a crash.

Booting a guest takes host frames before it runs anything: its EPT's root, the EPT
tables down to the zero page's entry (one per level), and in dax mode the struct pages
of the DAX device. A host without them cannot start the guest (HostFullError, naming
the full host and how many guests fitted); once booted, a guest that finds the host
full is an OOM it counts (fork fails with ENOMEM, a fault gets no frame). These tests
shrink the host (HostMemory's capacity) to just what the first guests take, plus a few.
"""

from __future__ import annotations

import functools
import re

import pytest
from test_clone_exact import assert_same
from test_ksm_bulk import assert_same_run
from test_mm_invariants import check_host_frames

from xipmodel import host as host_module
from xipmodel.errors import HostFullError, ParameterError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.family import ApartRun
from xipmodel.host import MODES, Host, Scenario
from xipmodel.lab.runs import RunCache
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.segment import SharedSegment
from xipmodel.params import PAGE_SIZE, X86_64

SCENARIO = Scenario(guests=3, workload="shell", guest_ram_mib=64, variants=None,
                    ksm_seconds=1)


def _host_of(monkeypatch: pytest.MonkeyPatch, capacity: int) -> None:
    """Every Host made from now on has `capacity` frames."""
    monkeypatch.setattr(host_module, "HostMemory", functools.partial(HostMemory, capacity))


def _dax_device(memory: HostMemory, image: Ext2Image) -> SharedSegment:
    """The image in the host's page cache, as dax mode has it."""
    return SharedSegment(memory, image, PAGE_SIZE, name="host page cache",
                         frame_kind=FrameKind.HOSTCACHE)


def _boot_frames(mode: str) -> int:
    """Host frames a guest of SCENARIO takes at boot (on a roomy host)."""
    host = Host(SCENARIO, mode)
    before = host.memory.allocated
    Guest(9, host.memory, (SCENARIO.guest_ram_mib << 20) // PAGE_SIZE, host.image,
          segment=host.segment)
    return host.memory.allocated - before


@pytest.mark.parametrize("mode", MODES)
def test_a_guest_that_cannot_boot_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                   mode: str) -> None:
    """The host has room for two guests and `spare` frames: with fewer than a boot takes
    (one free frame included, which once raised RuntimeError from the EPT's root, and in
    dax mode blamed the guest's RAM for the struct pages), the run stops with the host
    named full after 2 guests; with a boot's worth, the third guest starts and counts
    its OOM."""
    boot = _boot_frames(mode)
    assert boot > (4 if mode == "dax" else 1)  # the EPT's root and its tables, more for dax
    host = Host(SCENARIO, mode)
    host.add_guests(2)
    fitted = host.memory.allocated
    for spare in sorted({1, 2, boot - 1, boot}):
        _host_of(monkeypatch, fitted + spare)
        if spare < boot:
            with pytest.raises(HostFullError) as info:
                Host(SCENARIO, mode).run()
            message = str(info.value)
            assert message.startswith("Scenario: guests 3: the simulated host's")
            assert f"are full after 2 guests in {mode} mode; run at most 2 guests" in message
            assert "struct pages" not in message
        else:
            result = Host(SCENARIO, mode).run()
            assert result.per_guest[2]["oom"] > 0
            assert result.per_guest[2]["accesses"] == 0  # exec's fork failed: ENOMEM
        monkeypatch.undo()


@pytest.mark.parametrize("mode", ["pagecache", "dax"])
def test_a_failed_boot_gives_its_frames_back(mode: str) -> None:
    """Guest(...) on a host short of a boot's frames raises HostFullError and leaves the
    host as it was (every frame accounted, none held by the guest that never started)."""
    boot = _boot_frames(mode)
    for short in (1, boot // 2, boot - 1):
        memory = HostMemory(capacity_frames=1 + short)
        image = Host(SCENARIO, mode).image
        segment = _dax_device(memory, image) if mode == "dax" else None
        before = memory.allocated
        with pytest.raises(HostFullError, match=r"Guest: the host's \d+ frames are full"):
            Guest(0, memory, 16384, image, segment=segment)
        assert memory.allocated == before
        check_host_frames(memory, [], segment)


def test_a_dax_guest_too_small_for_its_struct_pages_is_still_told_so() -> None:
    """The control of the dax message: on a roomy host, a guest whose RAM cannot hold the
    DAX device's struct pages is told that (a ParameterError, not a full host)."""
    memory = HostMemory()
    image = Host(SCENARIO, "dax").image
    segment = _dax_device(memory, image)
    needed = segment.memmap_pages(X86_64.page_size)
    with pytest.raises(ParameterError, match="cannot hold the struct pages") as info:
        Guest(0, memory, 64, image, segment=segment)
    assert needed > 64 and not isinstance(info.value, HostFullError)


def test_fork_on_a_full_host_is_enomem_not_a_crash() -> None:
    """A booted guest whose host has no frame left for a new process's root table: fork
    fails with ENOMEM (None, an OOM counted), as when the guest's own RAM is out; it
    raised RuntimeError from the page table before."""
    image = Host(SCENARIO, "pagecache").image
    memory = HostMemory()
    Guest(0, memory, 256, image)
    boot = memory.allocated - 1
    memory = HostMemory(capacity_frames=1 + boot)
    guest = Guest(0, memory, 256, image)
    assert guest.new_process("sh") is None
    assert guest.stats.oom == 1 and not guest.procs


@pytest.mark.parametrize("mode", MODES)
def test_a_clone_that_does_not_fit_its_ept_is_run_instead(monkeypatch: pytest.MonkeyPatch,
                                                          mode: str) -> None:
    """Guests 1 and 2 repeat guest 0's run (variants=1: copies of it). With room for the
    copy's RAM but one frame short of its EPT, is the guest run from scratch (the numbers
    of a host that clones nothing), not copied with a broken EPT or a RuntimeError?"""
    scenario = SCENARIO.replace(variants=1)
    host = Host(scenario, mode)
    host.add_guests(1)
    first = host.memory.allocated
    host.add_guests(2)
    copy = host.memory.allocated - first
    _host_of(monkeypatch, first + copy - 1)
    try:
        full = Host(scenario, mode, clone_guests=False).run()
    except HostFullError as exc:
        with pytest.raises(HostFullError, match=re.escape(str(exc))):
            Host(scenario, mode).run()
    else:
        assert_same(Host(scenario, mode).run(), full)


@pytest.mark.parametrize("mode", MODES)
def test_the_dashboards_runs_ask_no_more_than_the_host_holds(
        monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """The dashboard's cache grows a family run past the guests asked (`reach`), to save
    later runs. A host full before `reach` but holding the guests asked: the answer is
    the 2-guest run's, not an error; a run that breaks off there keeps the guests it ran
    (FamilyRun's host and ksm's scan order agree). Asked for 3, the host full is said."""
    host = Host(SCENARIO, mode)
    host.add_guests(2)
    _host_of(monkeypatch, host.memory.allocated + 1)  # short of a third guest's boot
    two = SCENARIO.replace(guests=2)
    cache = RunCache(reach=5)
    assert_same(cache.result(two, mode), Host(two, mode).run())
    assert_same(cache.result(SCENARIO.replace(guests=1), mode),
                Host(SCENARIO.replace(guests=1), mode).run())
    with pytest.raises(HostFullError, match="full after 2 guests"):
        cache.result(SCENARIO, mode)


def test_guests_started_apart_after_a_full_host_are_answered_anew(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ksm, guests started 5 s apart (ApartRun: one host grown to the guests asked). Asked
    for 3 on a host short of the third guest's boot: the host full is said; ksmd scanned
    up to that start first. Asked for 2 then, is the answer the 2-guest run's (ksmd's
    tail from the second guest's end), not ksmd's scan gone on to the third start?"""
    apart = SCENARIO.replace(start_interval_ms=5000.0)
    host = Host(apart, "ksm")
    host.add_guests(2)
    assert host.ksm is not None
    host.ksm.run_until(2 * 5000 * 1_000_000)  # what the third start scans first
    _host_of(monkeypatch, host.memory.allocated + 1)  # short of the third guest's boot
    run = ApartRun(apart)
    with pytest.raises(HostFullError, match="full after 2 guests"):
        run.result(3)
    two = apart.replace(guests=2)
    assert_same_run(run.result(2), Host(two, "ksm").run())
