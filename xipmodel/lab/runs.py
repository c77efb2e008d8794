"""The dashboard's memory of runs: RunResults cached by (scenario, mode), curves by scenario.

A run is deterministic (the same scenario gives the same numbers), so a result
never goes stale::

    RunCache.result(scenario, mode)            one Host(scenario, mode).run(), LRU-cached
    RunCache.comparison(scenario, modes)       the modes not cached yet, run; a Comparison
    RunCache.curve(scenario, modes, guests)    the sweep over "guests", kept per scenario
                                               without its guest count: a point computed
                                               once is never run again

Moving the guests slider therefore runs only the (scenario, mode) pairs never
seen, and the curve only its new points. No plotly or ipywidgets here.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, as_completed

from xipmodel.errors import ParameterError
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import Comparison, Host, RunResult, Scenario

__all__ = ["Progress", "RunCache", "default_curve_guests"]

# progress(guests done, guests to run, what is running)
Progress = Callable[[int, int, str], None]


def _run_default_image(scenario: Scenario, mode: str) -> RunResult:
    """One run on the embedded image (a module-level function, so an executor can pickle it)."""
    return Host(scenario, mode).run()


def default_curve_guests(guests: int) -> list[int]:
    """The points of the guests curve up to `guests`: powers of two, and `guests` itself."""
    out = [1 << i for i in range(guests.bit_length()) if 1 << i < guests]
    return [*out, guests]


class RunCache:
    """RunResults by (scenario, mode), least recently used dropped beyond `maxsize`.

    `executor`: runs the modes of one request in parallel (the embedded image only;
    progress is then reported per finished run instead of per guest).
    """

    def __init__(self, image: Ext2Image | None = None, maxsize: int = 256,
                 executor: Executor | None = None) -> None:
        if maxsize < 1:
            raise ParameterError(f"RunCache: maxsize {maxsize} is below 1")
        self.image = image
        self.maxsize = maxsize
        self.executor = executor if image is None else None
        self._results: OrderedDict[tuple[Scenario, str], RunResult] = OrderedDict()
        self._curves: OrderedDict[tuple[Scenario, tuple[str, ...]],
                                  dict[int, Comparison]] = OrderedDict()
        self.runs = 0  # Host runs made (cache misses)
        self.seconds = 0.0  # time spent in them

    def __contains__(self, key: tuple[Scenario, str]) -> bool:
        return key in self._results

    def cached(self, scenario: Scenario, mode: str) -> RunResult | None:
        """The cached result, or None (marks it recently used)."""
        r = self._results.get((scenario, mode))
        if r is not None:
            self._results.move_to_end((scenario, mode))
        return r

    def _store(self, scenario: Scenario, mode: str, result: RunResult) -> None:
        self._results[(scenario, mode)] = result
        self._results.move_to_end((scenario, mode))
        while len(self._results) > self.maxsize:
            self._results.popitem(last=False)

    def run_many(self, jobs: Sequence[tuple[Scenario, str]],
                 progress: Progress | None = None) -> list[RunResult]:
        """Results of `jobs` in order, running only those not cached."""
        todo = list(dict.fromkeys(j for j in jobs if self.cached(*j) is None))
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
                        progress(base + i, total, f"{m}, {s.guests} guests: guest {i}/{n}")

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
        """Host(scenario, mode).run(), from the cache if it was run before."""
        return self.run_many([(scenario, mode)], progress)[0]

    def comparison(self, scenario: Scenario, modes: Sequence[str],
                   progress: Progress | None = None) -> Comparison:
        """compare(scenario, modes), each (scenario, mode) from the cache if it was run."""
        results = self.run_many([(scenario, m) for m in modes], progress)
        return Comparison(scenario, dict(zip(modes, results, strict=True)))

    def curve(self, scenario: Scenario, modes: Sequence[str], guests: Sequence[int],
              progress: Progress | None = None) -> list[Comparison]:
        """sweep(scenario, "guests", guests, modes), kept per scenario-without-guests.

        Points already on the curve (or in the result cache) are not run again.
        """
        key = (scenario.replace(guests=1), tuple(modes))
        points = self._curves.setdefault(key, {})
        self._curves.move_to_end(key)
        while len(self._curves) > 16:
            self._curves.popitem(last=False)
        missing = sorted({n for n in guests if n not in points})
        jobs = [(scenario.replace(guests=n), m) for n in missing for m in modes]
        results = self.run_many(jobs, progress)
        for i, n in enumerate(missing):
            chunk = results[i * len(modes):(i + 1) * len(modes)]
            points[n] = Comparison(scenario.replace(guests=n),
                                   dict(zip(modes, chunk, strict=True)))
        return [points[n] for n in sorted(set(guests))]
