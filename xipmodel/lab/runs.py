"""The dashboard's memory of runs: one growing run per scenario family and mode.

A run is deterministic (the same scenario gives the same numbers), and a guest never
depends on the guests started after it, so the cache keeps, per *family* (the scenario
without its guest count) and mode, one host grown guest by guest (xipmodel.family's
FamilyRun) and answers every guest count up to its length from it, ksm included::

    RunCache(reach=256)                        families are grown to at least 256
                                               guests (the slider's maximum)
    RunCache.result(scenario, mode)            the answer of the family's run; the run
                                               grows (continues) if it is shorter
    RunCache.comparison(scenario, modes)       the same for several modes: a Comparison
    RunCache.curve(scenario, modes, guests)    the sweep over "guests"
    RunCache.known(scenario, modes)            what is known without running anything
    RunCache.line(scenario, mode, guests)      host bytes per guest count: read off the
                                               family run's timeline (not ksm: its
                                               points are results, a few ms each)

Without KSM an n-guest result is a prefix of the family's run (RunResult.prefix); a
ksm result adds ksmd's scan after the last start, counted in bulk (mm/ksm_bulk.py).
Only ksm scenarios whose guests start apart (start_interval_ms > 0: ksmd scans
between starts) have no family: each (scenario, "ksm") is then answered on demand,
once, by the family's ApartRun (one host grown to the guests asked, ksmd's tail on a
copy: a slider moved up runs no guest twice), and kept among the `maxsize` most
recently used results. No plotly or ipywidgets here.
"""

from __future__ import annotations

import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed

from xipmodel.errors import HostFullError, ParameterError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.family import ApartRun, FamilyRun, has_prefixes
from xipmodel.host import Comparison, Host, RunResult, Scenario

__all__ = ["Progress", "RunCache", "default_curve_guests", "has_prefixes", "line_of_run"]

# progress(guests done, guests to run, what is running)
Progress = Callable[[int, int, str], None]
Job = tuple[Scenario, str]

_FAMILIES = 8  # growing runs kept (each a host: some 25 MiB at 256 guests)
_ANSWERS = 4096  # results answered from them (cheap to make again; kept to skip the work)


@functools.lru_cache(maxsize=4096)
def _family_of(scenario: Scenario) -> Scenario:
    """The scenario's family: the scenario with 1 guest (kept: a replace checks every field)."""
    return scenario.replace(guests=1)


def line_of_run(mode: str) -> bool:
    """Is `mode`'s host memory at every guest count read off one run's timeline? (All but
    ksm, whose n-guest result adds ksmd's scan after the n-th start.)"""
    return mode != "ksm"


def _run_default_image(scenario: Scenario, mode: str) -> RunResult:
    """One run on the embedded image (a module-level function, so an executor can pickle it)."""
    return Host(scenario, mode).run()


def default_curve_guests(guests: int) -> list[int]:
    """The points of the guests curve up to `guests`: powers of two, and `guests` itself."""
    out = [1 << i for i in range(guests.bit_length()) if 1 << i < guests]
    return [*out, guests]


class RunCache:
    """RunResults by (scenario, mode): growing family runs; ksm results without a family, LRU.

    `reach`: a family run is grown to max(guests asked, reach) guests, so the guest
    counts below it cost nothing later (the dashboard sets it to its slider's maximum);
    asked for more, it continues from where it is. `maxsize`: results without a family
    kept. `executor`: runs those results' jobs of one request in parallel (the embedded
    image only; progress is then reported per finished run instead of per guest).
    """

    def __init__(self, image: Ext2Image | None = None, maxsize: int = 256,
                 executor: Executor | None = None, reach: int = 0) -> None:
        if maxsize < 1:
            raise ParameterError(f"RunCache: maxsize {maxsize} is below 1")
        self.image = image
        self.maxsize = maxsize
        self.reach = reach
        self.executor = executor if image is None else None
        self._results: OrderedDict[Job, RunResult] = OrderedDict()  # runs without a family
        self._families: OrderedDict[Job, FamilyRun] = OrderedDict()  # (family, mode) → run
        self._apart: OrderedDict[Scenario, ApartRun] = OrderedDict()  # ksm family → run
        self._answers: OrderedDict[Job, RunResult] = OrderedDict()
        self.runs = 0  # runs made or grown (cache misses)
        self.seconds = 0.0  # time spent in them

    def __contains__(self, key: Job) -> bool:
        scenario, mode = key
        if has_prefixes(mode, scenario):
            run = self.family_run(scenario, mode)
            return run is not None and run.guests >= scenario.guests
        return key in self._results

    def family_run(self, scenario: Scenario, mode: str) -> FamilyRun | None:
        """The growing run of `scenario`'s family in `mode`, if one was made."""
        return self._families.get((_family_of(scenario), mode))

    def cached(self, scenario: Scenario, mode: str) -> RunResult | None:
        """The result if known without running a guest, else None."""
        key = (scenario, mode)
        if not has_prefixes(mode, scenario):
            r = self._results.get(key)
            if r is not None:
                self._results.move_to_end(key)
            return r
        family = (_family_of(scenario), mode)
        run = self._families.get(family)
        if run is None or run.guests < scenario.guests:
            return None
        self._families.move_to_end(family)
        r = self._answers.get(key)
        if r is None:
            r = self._answers[key] = run.result(scenario.guests)
            while len(self._answers) > _ANSWERS:
                self._answers.popitem(last=False)
        else:
            self._answers.move_to_end(key)
        return r

    def _family(self, scenario: Scenario, mode: str) -> FamilyRun:
        """The family run of `scenario` in `mode`, made (empty) if there is none."""
        family = (_family_of(scenario), mode)
        run = self._families.get(family)
        if run is None:
            run = self._families[family] = FamilyRun(scenario, mode, self.image)
            while len(self._families) > _FAMILIES:
                gone, _ = self._families.popitem(last=False)
                for k in [k for k in self._answers if (_family_of(k[0]), k[1]) == gone]:
                    del self._answers[k]
        self._families.move_to_end(family)
        return run

    def _apart_run(self, scenario: Scenario) -> ApartRun:
        """The ksm run of `scenario`'s family, whose guests start apart (made if none)."""
        family = _family_of(scenario)
        run = self._apart.pop(family, None) or ApartRun(scenario, self.image)
        self._apart[family] = run  # the most recently used last
        while len(self._apart) > _FAMILIES:
            self._apart.popitem(last=False)
        return run

    def _store(self, scenario: Scenario, mode: str, result: RunResult) -> None:
        self._results[(scenario, mode)] = result
        self._results.move_to_end((scenario, mode))
        while len(self._results) > self.maxsize:
            self._results.popitem(last=False)

    def plan(self, jobs: Sequence[Job]) -> list[Job]:
        """The runs that `jobs` need: per family and mode, one run (or growth) long enough
        for every job of it (at least `reach` guests); each other job not cached, once."""
        longest, exact = self._needs(jobs)
        return [*(self._reach(family, m, n) for (family, m), n in longest.items()), *exact]

    def _needs(self, jobs: Sequence[Job]) -> tuple[dict[Job, int], list[Job]]:
        """What `jobs` need that is not cached: per family and mode, the most guests a job
        of it asks; the other jobs, once each."""
        longest: dict[Job, int] = {}
        exact: list[Job] = []
        for s, m in jobs:
            if self.cached(s, m) is not None:
                continue
            if has_prefixes(m, s):
                family = (_family_of(s), m)
                longest[family] = max(longest.get(family, 0), s.guests)
            else:
                exact.append((s, m))
        return longest, list(dict.fromkeys(exact))

    def _reach(self, family: Scenario, mode: str, guests: int) -> Job:
        """The run of `family` in `mode` that answers `guests`: grown to the reach too."""
        return family.replace(guests=max(guests, self.reach)), mode

    def run_many(self, jobs: Sequence[Job], progress: Progress | None = None
                 ) -> list[RunResult]:
        """Results of `jobs` in order, running only what `plan(jobs)` says is missing."""
        longest, exact = self._needs(jobs)
        # Each family run to grow (to the reach), with the most guests its jobs ask.
        grow = {self._reach(family, m, n): n for (family, m), n in longest.items()}
        runs = {(s, m): (n, self._family(s, m)) for (s, m), n in grow.items()}
        total = (sum(s.guests - run.guests for (s, _), (_, run) in runs.items())
                 + sum(s.guests for s, _ in exact))
        done = 0
        start = time.perf_counter()
        for (s, m), (asked, run) in runs.items():
            first = run.guests

            def step(i: int, n: int, m: str = m, base: int = done - first) -> None:
                if progress is not None:
                    progress(base + i, total, f"{m}, {n} guests: guest {i}/{n}")

            try:
                run.grow(s.guests, step)
            except HostFullError:
                # Grown past the guests asked only to save later runs (`reach`): a host
                # full before it is no error while those guests fit.
                if run.guests < asked:
                    raise
            self.runs += 1
            done += run.guests - first
        if self.executor is not None and len(exact) > 1:
            futures = {self.executor.submit(_run_default_image, s, m): (s, m) for s, m in exact}
            for f in as_completed(futures):
                s, m = futures[f]
                self._store(s, m, f.result())
                self.runs += 1
                done += s.guests
                if progress is not None:
                    progress(done, total, f"{m}, {s.guests} guests")
        else:
            # Fewest guests first: one ApartRun grown once answers every count of a family.
            for s, m in sorted(exact, key=lambda job: job[0].guests):
                def one(i: int, n: int, s: Scenario = s, m: str = m, base: int = done) -> None:
                    if progress is not None:
                        scanning = "; ksmd scanning" if i == n and m == "ksm" else ""
                        progress(base + i, total,
                                 f"{m}, {s.guests} guests: guest {i}/{n}{scanning}")

                self._store(s, m, self._apart_run(s).result(s.guests, one))
                self.runs += 1
                done += s.guests
        self.seconds += time.perf_counter() - start
        out = []
        for s, m in jobs:
            r = self.cached(s, m)
            assert r is not None, f"run_many: {m} {s} missing after its run"
            out.append(r)
        return out

    def result(self, scenario: Scenario, mode: str, progress: Progress | None = None
               ) -> RunResult:
        """Host(scenario, mode).run(), or what the cache knows equals it."""
        return self.run_many([(scenario, mode)], progress)[0]

    def comparison(self, scenario: Scenario, modes: Sequence[str],
                   progress: Progress | None = None) -> Comparison:
        """compare(scenario, modes), running only what the cache does not know."""
        results = self.run_many([(scenario, m) for m in modes], progress)
        return Comparison(scenario, dict(zip(modes, results, strict=True)))

    def known(self, scenario: Scenario, modes: Sequence[str]) -> Comparison:
        """The modes of compare(scenario, modes) known without a run (maybe none of them)."""
        results = {m: r for m in modes if (r := self.cached(scenario, m)) is not None}
        return Comparison(scenario, results)

    def line(self, scenario: Scenario, mode: str, guests: Sequence[int]
             ) -> tuple[list[int], list[int]]:
        """(guest counts, host bytes) of `mode` at the counts of `guests` known without a run.

        A mode whose line is read off one run (line_of_run) takes it from its family run's
        timeline (host memory after guest n is what an n-guest run ends with), so every
        count up to the run's length costs nothing: no RunResult is made.
        """
        run = self.family_run(scenario, mode) if line_of_run(mode) else None
        if run is not None:
            host = run.whole().timeline_bytes.sum(axis=1)
            xs = sorted({n for n in guests if 1 <= n <= run.guests})
            return xs, [int(host[n]) for n in xs]
        out = [(n, r.host_bytes) for n in sorted(set(guests))
               if (r := self.cached(scenario.replace(guests=n), mode)) is not None]
        return [n for n, _ in out], [b for _, b in out]

    def curve(self, scenario: Scenario, modes: Sequence[str], guests: Sequence[int],
              progress: Progress | None = None, run: bool = True) -> list[Comparison]:
        """sweep(scenario, "guests", guests, modes), sorted by guests.

        A family costs one run (or its growth) for the whole curve, none if its run is
        long enough; ksm without a family one run per point never computed. `run=False`:
        only what is known (a point's Comparison may then lack modes).
        """
        points = sorted(set(guests))
        scenarios = [scenario.replace(guests=n) for n in points]
        if run:
            self.run_many([(s, m) for s in scenarios for m in modes], progress)
        return [self.known(s, modes) for s in scenarios]
