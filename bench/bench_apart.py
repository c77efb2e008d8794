"""Benchmark: ksm with guests started apart, the dashboard's slider moved up 1, 2, …, N.

    python -m bench apart            N = 16 (3 times) and 32 (once)
    python -m bench apart --quick    N = 16, once

RunCache.result for each guest count in turn (family.ApartRun: one host grown count by
count, ksmd's tail on a copy) against its peer, what RunCache did before: each count's
Host(...).run() from scratch. The default web-server scenario with guests started a
second apart. Wall-clock medians, alternated (this machine is shared and noisy).
"""

from __future__ import annotations

import sys

from bench.bench_policies import alternated
from xipmodel.host import Host, RunResult, Scenario
from xipmodel.lab.runs import RunCache

SCENARIO = Scenario(workload="webserver", start_interval_ms=1000.0)


def slider(guests: int) -> list[RunResult]:
    """RunCache.result over 1..guests, as the slider asks for them."""
    cache = RunCache()
    return [cache.result(SCENARIO.replace(guests=n), "ksm") for n in range(1, guests + 1)]


def from_scratch(guests: int) -> list[RunResult]:
    """The peer: every count run on its own."""
    return [Host(SCENARIO.replace(guests=n), "ksm").run() for n in range(1, guests + 1)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    quick = "--quick" in args
    print("ksm, guests started 1 s apart: the slider moved up 1..N (median s)")
    print(f"{'N':>4} {'from scratch':>13} {'grown (RunCache)':>17} {'ratio':>6}")
    for guests, repeat in ((16, 1 if quick else 3), (32, 1)):
        if quick and guests > 16:
            continue
        (peer, want), (ours, got) = alternated(
            [lambda g=guests: from_scratch(g), lambda g=guests: slider(g)], repeat)
        same = all(a.as_dict() == b.as_dict() for a, b in zip(got, want, strict=True))
        print(f"{guests:>4} {peer:>13.2f} {ours:>17.2f} {ours / peer:>6.2f}"
              f"{'' if same else '  RESULTS DIFFER'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
