"""Benchmark: `compare` of the default web-server scenario in all modes (issue 4's targets).

    python -m bench compare            64, 1,000 and 1,000 distinct guests, 2 worker
                                       processes; then one run per mode at 64 guests, in
                                       this process: ksm with ksmd's tail page by page
                                       (Host.run, ksm.py) and counted in bulk
                                       (Host.run(ksmd_in_bulk=True), what compare runs:
                                       mm/ksm_bulk.py)
    python -m bench compare --quick    64 guests only

Goals: 64 guests in every mode in under 2 s on 2 cores; 1,000 guests in under
30 s and under 2 GiB of memory; 1,000 distinct guests (variants=None: every guest
its own seeded run, none cloned) in under 60 s (issue 11). Wall-clock medians
(this machine is shared and noisy); peak memory is the largest resident set of the
workers and the parent.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from bench.bench_policies import alternated
from xipmodel.host import MODES, Host, Scenario, compare


def _peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _warm() -> None:
    compare(Scenario(guests=1), modes=("xip",))  # builds (or loads) the default image


def measure(guests: int, repeat: int, workers: int = 2,
            variants: int | None = 4) -> tuple[float, float]:
    """Median wall seconds of compare() over `repeat` runs, and peak RSS in MiB."""
    times = []
    scenario = Scenario(guests=guests, workload="webserver", variants=variants)
    for _ in range(repeat):
        with ProcessPoolExecutor(workers, initializer=_warm) as pool:
            list(pool.map(_noop, range(workers)))  # workers started and warm before timing
            start = time.perf_counter()
            compare(scenario, MODES, executor=pool)
            times.append(time.perf_counter() - start)
    return statistics.median(times), _peak_rss_mib()


def mode_times(guests: int, repeat: int) -> dict[str, float]:
    """Median seconds of one run per mode (and ksm with its tail in bulk), alternated."""
    scenario = Scenario(guests=guests, workload="webserver")
    runs = {m: (lambda m=m: Host(scenario, m).run()) for m in MODES}
    runs["ksm, bulk tail"] = lambda: Host(scenario, "ksm").run(ksmd_in_bulk=True)
    timed = alternated(list(runs.values()), repeat)  # warm first: traces made, image open
    return {k: seconds for k, (seconds, _) in zip(runs, timed, strict=True)}


def _noop(i: int) -> int:
    return i


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quick = "--quick" in args
    _warm()
    print("compare, default web-server workload, all modes, 2 worker processes")
    print(f"{'guests':>16} {'median s':>9} {'goal s':>7} {'ratio':>6} {'peak MiB':>9}")
    for guests, variants, repeat, goal in ((64, 4, 5, 2.0), (1000, 4, 1, 30.0),
                                           (1000, None, 1, 60.0)):
        if quick and guests > 64:
            continue
        median, peak = measure(guests, repeat, variants=variants)
        label = f"{guests}" if variants is not None else f"{guests} distinct"
        print(f"{label:>16} {median:>9.2f} {goal:>7.1f} {median / goal:>6.2f} {peak:>9.0f}")
    per_mode = mode_times(64, 3 if quick else 5)
    base = per_mode["pagecache"]
    print("one run per mode, 64 guests, in this process (median s, ratio to pagecache)")
    for k, v in per_mode.items():
        print(f"  {k:<16} {v:>6.2f} s  {v / base:>5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
