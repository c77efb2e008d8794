"""Benchmark: replaying the shipped traces, fast engine against reference engine (issue 11).

    python -m bench replay              pagecache and xip guests, 3 alternated runs each
    python -m bench replay --quick      pagecache guests only, 1 run each

For each shipped trace (xipmodel/data/traces) and each mode, a fresh guest of
64 MiB replays the whole trace with `replay(..., engine="reference")` (Guest.access
one access at a time) and with `engine="fast"` (mm/bulk.py), alternated; each
time is the median of the runs, in CPU seconds of this process (the machine is
shared: CPU time is what others running does not inflate). Both engines must
leave the same counters and TLB; a difference is printed and the exit status is 1.
Goal: fast ≥ 10× reference, ≥ 2.5 M accesses/s.

For scale, libCacheSim's LRU (the C simulator bench_policies checks against)
replays the same page-number sequence with 64 entries, the size of the guest's
TLB: what a bare LRU costs, with no page tables, faults or frames behind it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.bench_policies import lcs_lru_misses, write_oracle_general
from xipmodel.ext2 import Ext2Image
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.segment import SharedSegment
from xipmodel.workloads.recorded import TRACES, load_trace, trace_image
from xipmodel.workloads.trace import PageTrace, replay

RAM_PAGES = 16384  # 64 MiB: every shipped trace runs without reclaim
ENGINES = ("reference", "fast")


def _replay_once(trace: PageTrace, image: Ext2Image, xip: bool,
                 engine: str) -> tuple[float, tuple[Any, ...]]:
    """CPU seconds of one replay in a fresh guest, and what it left (to compare engines)."""
    host = HostMemory()
    guest = Guest(0, host, RAM_PAGES, image,
                  segment=SharedSegment(host, image) if xip else None)
    start = time.process_time()
    replay(guest, trace, engine=engine)
    seconds = time.process_time() - start
    return seconds, (guest.stats.as_dict(), guest.time, guest.tlb.contents(),
                     guest.tlb.hits, guest.tlb.misses, guest.tlb.evictions)


def _lcs_seconds(lcs: ModuleType, trace: PageTrace, entries: int, repeat: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pages.oracleGeneral"
        write_oracle_general(path, trace.vpns)
        times = []
        for _ in range(repeat):
            start = time.process_time()
            lcs_lru_misses(lcs, path, entries, len(trace))
            times.append(time.process_time() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = argv or []
    quick = "--quick" in args
    repeat = 1 if quick else 3
    modes = (False,) if quick else (False, True)
    try:
        import libcachesim as lcs
    except ImportError:
        lcs = None
        print("libcachesim not installed: no LRU comparison")
    ok = True
    print(f"replay of the shipped traces, {RAM_PAGES >> 8} MiB guest, medians of {repeat} "
          f"alternated runs, CPU time")
    print(f"{'trace':12} {'mode':9} {'accesses':>9} {'reference M/s':>13} {'fast M/s':>9} "
          f"{'fast/ref':>8} {'lcs LRU M/s':>11} {'fast/lcs':>8}")
    for name in TRACES:
        trace = load_trace(name)
        image = trace_image(trace)
        lcs_s = _lcs_seconds(lcs, trace, 64, repeat) if lcs is not None else None
        for xip in modes:
            times: dict[str, list[float]] = {e: [] for e in ENGINES}
            left: dict[str, tuple[Any, ...]] = {}
            for _ in range(repeat):
                for engine in ENGINES:
                    seconds, left[engine] = _replay_once(trace, image, xip, engine)
                    times[engine].append(seconds)
            if left["reference"] != left["fast"]:
                ok = False
                print(f"MISMATCH: {name} ({'xip' if xip else 'pagecache'}): the engines "
                      f"left different counters or TLB")
            ref, fast = (statistics.median(times[e]) for e in ENGINES)
            n = len(trace)
            lcs_text = (f"{n / lcs_s / 1e6:>11.2f} {lcs_s / fast:>8.2f}" if lcs_s
                        else f"{'-':>11} {'-':>8}")
            print(f"{name:12} {'xip' if xip else 'pagecache':9} {n:>9,} "
                  f"{n / ref / 1e6:>13.2f} {n / fast / 1e6:>9.2f} {ref / fast:>8.1f} "
                  f"{lcs_text}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
