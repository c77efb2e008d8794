"""A run grown guest by guest: the result of every guest count up to its length, in any mode.

A guest never depends on the guests started after it, so one host grown to N
guests answers every n <= N, and grows further without starting over::

    FamilyRun(scenario, mode)      a host of `scenario`'s family (any guest count)
    .grow(guests)                  start the guests it lacks (Host.add_guests)
    .result(n)                     what Host(scenario with n guests, mode).run() returns

Without KSM, result(n) is a prefix of the grown run (RunResult.prefix). With KSM,
ksmd only starts scanning once the guests have all started (start_interval_ms == 0:
they start together), so the host after n guests is the n-guest host before ksmd's
tail, and the tail is counted in bulk (mm/ksm_bulk.py) from the first n guests'
pages: a few milliseconds instead of replaying ksmd page by page. In ksm mode,
guests started apart (ksmd scanning between starts) have no such prefixes
(has_prefixes is False): FamilyRun refuses them, and run() is then Host.run.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import CATEGORIES, KIND_CATEGORY, Host, RunResult, Scenario
from xipmodel.mm.frames import FrameKind
from xipmodel.mm.ksm import RMAP_ITEM_BYTES
from xipmodel.mm.ksm_bulk import ScanOrder, fits, ksmd_passes, wakeup_visits
from xipmodel.params import PAGE_SIZE

__all__ = ["FamilyRun", "has_prefixes", "run"]


def has_prefixes(mode: str, scenario: Scenario) -> bool:
    """Is every n-guest run of `scenario` in `mode` read off one longer run? (ksm: when
    the guests start together, so that ksmd scans nothing before the last start.)"""
    return mode != "ksm" or scenario.start_interval_ms == 0


def run(scenario: Scenario, mode: str, image: Ext2Image | None = None,
        progress: Callable[[int, int], None] | None = None) -> RunResult:
    """Host(scenario, mode, image).run(progress): the same result, with ksmd's scan after
    the last start counted in bulk when the guests start together (no wait after them)."""
    if not has_prefixes(mode, scenario):
        return Host(scenario, mode, image).run(progress)
    family = FamilyRun(scenario, mode, image)
    family.grow(scenario.guests, progress)
    return family.result(scenario.guests)


class FamilyRun:
    """One host of a scenario family (the scenario but its guest count), grown on demand."""

    def __init__(self, scenario: Scenario, mode: str, image: Ext2Image | None = None) -> None:
        """A host for `scenario`'s family; its guest count only sizes the host (retiring
        guests when over 16, as Host does): call grow() to run guests."""
        if not has_prefixes(mode, scenario):
            raise ParameterError(f"FamilyRun: {mode} runs of guests started "
                                 f"{scenario.start_interval_ms} ms apart have no prefixes")
        self.mode = mode
        self.host = Host(scenario, mode, image)
        self.order = ScanOrder() if mode == "ksm" else None
        self._whole: RunResult | None = None

    @property
    def guests(self) -> int:
        """Guests run so far."""
        return len(self.host.guests)

    def grow(self, guests: int, progress: Callable[[int, int], None] | None = None) -> None:
        """Run guests until there are `guests` (nothing if there are already)."""
        if guests <= self.guests:
            return
        self.host.add_guests(guests, progress)
        self._whole = None
        if self.order is not None:
            self.order.extend(self.host.memory,
                              [g.backing for g in self.host.guests[len(self.order):]])

    def whole(self) -> RunResult:
        """The grown host's result (for ksm: before ksmd has scanned anything)."""
        if self._whole is None:
            self._whole = self.host.result()
        return self._whole

    def result(self, guests: int) -> RunResult:
        """Host(the scenario with `guests` guests, mode).run(), from this run's first guests."""
        if not 1 <= guests <= self.guests:
            raise ParameterError(f"FamilyRun: guests {guests} is not in 1..{self.guests}")
        prefix = self.whole().prefix(guests)
        if self.order is None:
            return prefix
        return self._ksmd_tail(prefix)

    def _ksmd_tail(self, prefix: RunResult) -> RunResult:
        """`prefix` (the first guests, before ksmd) with ksmd's scanning after the last start."""
        host, ksm, order = self.host, self.host.ksm, self.order
        assert ksm is not None and order is not None
        assert ksm.untouched, "FamilyRun: ksmd scanned before the last start"
        n = prefix.scenario.guests
        if not fits(order, n, host.memory, ksm.max_page_sharing):
            return Host(prefix.scenario, "ksm", host.image).run()  # the host fills up
        times = host.ksmd_times(n)
        visits = wakeup_visits(times, ksm.next_wake, ksm.sleep_ns, ksm.pages_to_scan)
        scan = ksmd_passes(order, n, visits, host.memory, ksm.max_page_sharing)
        rows = np.repeat(prefix.timeline_bytes[-1:], len(times), axis=0)
        ksm_column = CATEGORIES.index("ksm")
        for kind in FrameKind:
            if kind != FrameKind.FREE:
                rows[:, CATEGORIES.index(KIND_CATEGORY[kind])] -= scan.freed[:, kind] * PAGE_SIZE
        for row, c in zip(rows, scan.counters, strict=True):
            row[ksm_column] += c.pages_shared * PAGE_SIZE + c.rmap_items * RMAP_ITEM_BYTES
        counters = scan.counters[-1] if scan.counters else prefix.ksm
        extra = dict(prefix.extra)
        extra["ksm_timeline"] = np.vstack([extra["ksm_timeline"], scan.timeline()])
        end = rows[-1] if len(rows) else prefix.timeline_bytes[-1]
        return RunResult("ksm", prefix.scenario,
                         dict(zip(CATEGORIES, end.tolist(), strict=True)), prefix.per_guest,
                         np.concatenate([prefix.timeline_ns, np.array(times, np.int64)]),
                         np.vstack([prefix.timeline_bytes, rows]), prefix.totals,
                         counters, extra)
