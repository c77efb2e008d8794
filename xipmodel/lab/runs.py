"""The dashboard's memory of runs: one run per scenario family and mode, answered by prefixes.

A run is deterministic (the same scenario gives the same numbers), so a result never
goes stale. Without KSM, the first n guests of an N-guest run are exactly an n-guest
run (RunResult.prefix), so the cache keeps, per *family* (the scenario without its
guest count) and mode, a single run, the longest made, and answers every smaller
guest count from it::

    RunCache(reach=256)                        runs that have prefixes are made with at
                                               least 256 guests (the slider's maximum)
    RunCache.result(scenario, mode)            a prefix of the family's run; a new run
                                               only if it is shorter than `guests`
    RunCache.comparison(scenario, modes)       the same for several modes: a Comparison
    RunCache.curve(scenario, modes, guests)    the sweep over "guests": prefixes too
    RunCache.known(scenario, modes)            what is known without running anything
    RunCache.line(scenario, mode, guests)      host bytes per guest count, read off the
                                               family run's timeline (no RunResults)

KSM has no prefixes (ksmd keeps scanning after the last start, so a ksm result
depends on the run's end): each (scenario, "ksm") is run on demand, once, and kept
among the `maxsize` most recently used results. Moving the guests slider therefore
runs nothing but KSM at guest counts never seen. No plotly or ipywidgets here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed

from xipmodel.errors import ParameterError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import Comparison, Host, RunResult, Scenario

__all__ = ["Progress", "RunCache", "default_curve_guests", "has_prefixes"]

# progress(guests done, guests to run, what is running)
Progress = Callable[[int, int, str], None]
Job = tuple[Scenario, str]

_FAMILIES = 32  # family runs kept (each a few hundred KiB at 256 guests)
_PREFIXES = 4096  # prefixes kept (cheap to make again; kept to skip re-summing totals)


def has_prefixes(mode: str) -> bool:
    """Is every n-guest run of `mode` the first n guests of a longer run? (All but ksm.)"""
    return mode != "ksm"


def _run_default_image(scenario: Scenario, mode: str) -> RunResult:
    """One run on the embedded image (a module-level function, so an executor can pickle it)."""
    return Host(scenario, mode).run()


def default_curve_guests(guests: int) -> list[int]:
    """The points of the guests curve up to `guests`: powers of two, and `guests` itself."""
    out = [1 << i for i in range(guests.bit_length()) if 1 << i < guests]
    return [*out, guests]


class RunCache:
    """RunResults by (scenario, mode): family runs answered by prefixes; ksm results, LRU.

    `reach`: a run of a mode with prefixes is made with max(guests asked, reach, the
    family's longest run so far) guests, so the guest counts below it cost nothing
    later (the dashboard sets it to its slider's maximum). `maxsize`: ksm results kept.
    `executor`: runs the jobs of one request in parallel (the embedded image only;
    progress is then reported per finished run instead of per guest).
    """

    def __init__(self, image: Ext2Image | None = None, maxsize: int = 256,
                 executor: Executor | None = None, reach: int = 0) -> None:
        if maxsize < 1:
            raise ParameterError(f"RunCache: maxsize {maxsize} is below 1")
        self.image = image
        self.maxsize = maxsize
        self.reach = reach
        self.executor = executor if image is None else None
        self._results: OrderedDict[Job, RunResult] = OrderedDict()  # runs without prefixes
        self._families: OrderedDict[Job, RunResult] = OrderedDict()  # (family, mode) → run
        self._prefixes: OrderedDict[Job, RunResult] = OrderedDict()
        self.runs = 0  # Host runs made (cache misses)
        self.seconds = 0.0  # time spent in them

    def __contains__(self, key: Job) -> bool:
        scenario, mode = key
        if has_prefixes(mode):
            run = self._families.get((scenario.replace(guests=1), mode))
            return run is not None and run.scenario.guests >= scenario.guests
        return key in self._results

    def family_run(self, scenario: Scenario, mode: str) -> RunResult | None:
        """The longest run made of `scenario`'s family in `mode` (a mode with prefixes)."""
        return self._families.get((scenario.replace(guests=1), mode))

    def cached(self, scenario: Scenario, mode: str) -> RunResult | None:
        """The result if known without a run (a prefix, or a cached ksm result), else None."""
        key = (scenario, mode)
        if not has_prefixes(mode):
            r = self._results.get(key)
            if r is not None:
                self._results.move_to_end(key)
            return r
        family = (scenario.replace(guests=1), mode)
        run = self._families.get(family)
        if run is None or run.scenario.guests < scenario.guests:
            return None
        self._families.move_to_end(family)
        if run.scenario.guests == scenario.guests:
            return run
        r = self._prefixes.get(key)
        if r is None:
            r = self._prefixes[key] = run.prefix(scenario.guests)
            while len(self._prefixes) > _PREFIXES:
                self._prefixes.popitem(last=False)
        return r

    def _store(self, scenario: Scenario, mode: str, result: RunResult) -> None:
        if has_prefixes(mode):
            family = (scenario.replace(guests=1), mode)
            old = self._families.get(family)
            if old is None or old.scenario.guests < scenario.guests:
                self._families[family] = result
                # Prefixes of a shorter run are prefixes of this one too: nothing to drop.
            self._families.move_to_end(family)
            while len(self._families) > _FAMILIES:
                gone, _ = self._families.popitem(last=False)
                for k in [k for k in self._prefixes if (k[0].replace(guests=1), k[1]) == gone]:
                    del self._prefixes[k]
            return
        self._results[(scenario, mode)] = result
        self._results.move_to_end((scenario, mode))
        while len(self._results) > self.maxsize:
            self._results.popitem(last=False)

    def plan(self, jobs: Sequence[Job]) -> list[Job]:
        """The runs that `jobs` need: per family and mode with prefixes, one run long enough
        for every job of it (at least `reach` guests); each other job not cached, once."""
        longest: dict[Job, int] = {}
        exact: list[Job] = []
        for s, m in jobs:
            if self.cached(s, m) is not None:
                continue
            if has_prefixes(m):
                family = (s.replace(guests=1), m)
                longest[family] = max(longest.get(family, 0), s.guests)
            else:
                exact.append((s, m))
        runs = [(family.replace(guests=max(n, self.reach)), m)
                for (family, m), n in longest.items()]
        return [*runs, *dict.fromkeys(exact)]

    def run_many(self, jobs: Sequence[Job], progress: Progress | None = None
                 ) -> list[RunResult]:
        """Results of `jobs` in order, running only what `plan(jobs)` says is missing."""
        todo = self.plan(jobs)
        total = sum(s.guests for s, _ in todo)
        done = 0
        start = time.perf_counter()
        if self.executor is not None and len(todo) > 1:
            futures = {self.executor.submit(_run_default_image, s, m): (s, m) for s, m in todo}
            for f in as_completed(futures):
                s, m = futures[f]
                self._store(s, m, f.result())
                self.runs += 1
                done += s.guests
                if progress is not None:
                    progress(done, total, f"{m}, {s.guests} guests")
        else:
            for s, m in todo:
                def step(i: int, n: int, s: Scenario = s, m: str = m, base: int = done) -> None:
                    if progress is not None:
                        scanning = "; ksmd scanning" if i == n and m == "ksm" else ""
                        progress(base + i, total,
                                 f"{m}, {s.guests} guests: guest {i}/{n}{scanning}")

                self._store(s, m, Host(s, m, self.image).run(progress=step))
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

        A mode with prefixes reads them off its family run's timeline (host memory after
        guest n is what an n-guest run ends with), so every count up to the run's length
        costs nothing: no RunResult is made.
        """
        if has_prefixes(mode):
            run = self.family_run(scenario, mode)
            if run is None:
                return [], []
            host = run.timeline_bytes.sum(axis=1)
            xs = sorted({n for n in guests if 1 <= n <= run.scenario.guests})
            return xs, [int(host[n]) for n in xs]
        out = [(n, r.host_bytes) for n in sorted(set(guests))
               if (r := self.cached(scenario.replace(guests=n), mode)) is not None]
        return [n for n, _ in out], [b for _, b in out]

    def curve(self, scenario: Scenario, modes: Sequence[str], guests: Sequence[int],
              progress: Progress | None = None, run: bool = True) -> list[Comparison]:
        """sweep(scenario, "guests", guests, modes), sorted by guests.

        Modes with prefixes cost one run for the whole curve (none if the family's run
        is long enough); ksm one run per point never computed. `run=False`: only what is
        known (a point's Comparison may then lack modes).
        """
        points = sorted(set(guests))
        scenarios = [scenario.replace(guests=n) for n in points]
        if run:
            self.run_many([(s, m) for s in scenarios for m in modes], progress)
        return [self.known(s, modes) for s in scenarios]
