"""A run grown guest by guest: the result of every guest count up to its length, in any mode.

A guest never depends on the guests started after it, so one host grown to N
guests answers every n <= N, and grows further without starting over::

    FamilyRun(scenario, mode)      a host of `scenario`'s family (any guest count)
    .grow(guests)                  start the guests it lacks (Host.add_guests)
    .result(n)                     what Host(scenario with n guests, mode).run() returns

Without KSM, result(n) is a prefix of the grown run (RunResult.prefix). With KSM,
ksmd only starts scanning once the guests have all started (start_interval_ms == 0:
they start together), so the host after n guests is the n-guest host before ksmd's
tail, and the tail is counted in bulk (Host.ksmd_tail, mm/ksm_bulk.py) from the
first n guests' pages: a few milliseconds instead of replaying ksmd page by page.
In ksm mode, guests started apart (ksmd scanning between starts) have no such
prefixes (has_prefixes is False): FamilyRun refuses them, and ApartRun answers them::

    ApartRun(scenario)             a ksm host of guests started apart
    .result(n)                     what Host(scenario with n guests, "ksm").run() returns

Up to the n-th start, an n-guest run is every longer run (ksmd's scanning between
starts depends only on the guests already started); only ksmd's tail after it differs.
So result(n) grows one host to n guests and runs the tail on a copy of it
(Host.finish_on_copy: page by page until a full pass changes nothing, then counted):
asked in increasing n (a slider moved up), no guest runs twice.
"""

from __future__ import annotations

from collections.abc import Callable

from xipmodel.errors import HostFullError, ParameterError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import Host, RunResult, Scenario
from xipmodel.mm.ksm_bulk import ScanOrder

__all__ = ["ApartRun", "FamilyRun", "has_prefixes"]


def has_prefixes(mode: str, scenario: Scenario) -> bool:
    """Is every n-guest run of `scenario` in `mode` read off one longer run? (ksm: when
    the guests start together, so that ksmd scans nothing before the last start.)"""
    return mode != "ksm" or scenario.start_interval_ms == 0


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
        try:
            self.host.add_guests(guests, progress)
        finally:  # the guests that ran (all, unless the host filled up: HostFullError)
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
        assert self.order is not None
        tail = self.host.ksmd_tail(prefix, self.order)
        if tail is None:  # the host fills up: ksm.py's scan, page by page
            return Host(prefix.scenario, "ksm", self.host.image).run()
        return tail


class ApartRun:
    """A ksm host of a scenario family (any guest count) grown on demand, each answer
    ended on a copy: for guests started apart, which have no prefixes."""

    def __init__(self, scenario: Scenario, image: Ext2Image | None = None) -> None:
        """No guest runs yet: result(n) starts them."""
        self.scenario = scenario
        self.image = image
        self.host = self._new_host()

    def _new_host(self) -> Host:
        return Host(self.scenario, "ksm", self.image, retire_guests=True)

    @property
    def guests(self) -> int:
        """Guests started so far."""
        return len(self.host.guests)

    def result(self, guests: int, progress: Callable[[int, int], None] | None = None
               ) -> RunResult:
        """Host(the scenario with `guests` guests, "ksm").run(): the host grown to
        `guests` (started over if it has more), ksmd's tail run on a copy of it."""
        self.scenario.replace(guests=guests)  # refuses a count out of range, naming it
        if guests < self.guests:
            self.host = self._new_host()
        try:
            self.host.add_guests(guests, progress)
        except HostFullError:
            # ksmd scanned up to the start that found the host full: this host is no
            # longer the one of its guests before their tail. The next answer starts over.
            self.host = self._new_host()
            raise
        return self.host.finish_on_copy()
