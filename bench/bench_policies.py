"""Benchmark of xipmodel.policies against libCacheSim's Python binding (medians, ratios).

    python -m bench.bench_policies [--refs 10000000] [--mrc-refs 2000000] [--repeat 5]

* LRU: ``simulate(refs, 1000, "lru")`` versus ``LRU(1000).process_trace`` on a
  binary oracleGeneral trace of the same seeded Zipf(1.0) string over 1 M pages,
  warmed up, then alternated (medians); misses must be identical.
* Miss-ratio curve: one ``miss_ratio_curve`` over 64 capacities versus 64
  libCacheSim LRU runs (each capacity checked).
* The loop policies (FIFO, CLOCK, OPT, ARC, linux): references per second.

A benchmark, not a test: it prints, and exits non-zero only if misses disagree.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from xipmodel.policies import miss_ratio_curve, simulate

FRAMES = 1000
PAGES = 1_000_000
SEED = 42


def zipf_refs(n: int, pages: int = PAGES, alpha: float = 1.0, seed: int = SEED) -> np.ndarray:
    """Seeded bounded Zipf(alpha) page ids, popular pages scattered over the id space."""
    rng = np.random.default_rng(seed)
    cdf = np.cumsum(1.0 / np.arange(1, pages + 1) ** alpha)
    ranks = np.minimum(np.searchsorted(cdf, rng.random(n) * cdf[-1]), pages - 1)
    return rng.permutation(pages)[ranks]


def median_time(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    return alternated([fn], repeat)[0]


def alternated(fns: list[Callable[[], Any]], repeat: int) -> list[tuple[float, Any]]:
    """Median seconds and last result of each of `fns`, run once untimed (warm-up: page
    faults, libCacheSim's first load), then in turn `repeat` times: load that comes and
    goes on a shared machine falls on all of them alike."""
    times: list[list[float]] = [[] for _ in fns]
    outs = [fn() for fn in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            outs[i] = fn()
            times[i].append(time.perf_counter() - start)
    return [(statistics.median(t), out) for t, out in zip(times, outs, strict=True)]


def write_oracle_general(path: Path, refs: np.ndarray) -> None:
    rec = np.zeros(refs.size, dtype=[("t", "<u4"), ("id", "<u8"), ("sz", "<u4"), ("nxt", "<i8")])
    rec["t"] = np.arange(refs.size)
    rec["id"] = refs
    rec["sz"] = 1
    rec["nxt"] = -1
    rec.tofile(path)


def lcs_lru_misses(lcs: ModuleType, path: Path, frames: int, n: int) -> int:
    reader = lcs.TraceReader(str(path), trace_type=lcs.TraceType.ORACLE_GENERAL_TRACE)
    ratio, _ = lcs.LRU(frames).process_trace(reader)
    return round(ratio * n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench_policies", description=__doc__.splitlines()[0])
    ap.add_argument("--refs", type=int, default=10_000_000, help="LRU replay length")
    ap.add_argument("--mrc-refs", type=int, default=2_000_000, help="miss-ratio-curve length")
    ap.add_argument("--loop-refs", type=int, default=1_000_000, help="loop-policy length")
    ap.add_argument("--repeat", type=int, default=5, help="runs per timing (median)")
    args = ap.parse_args(argv)
    try:
        import libcachesim as lcs
    except ImportError:
        lcs = None
        print("libcachesim not installed: xipmodel timings only")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        # --- LRU replay ---------------------------------------------------------
        refs = zipf_refs(args.refs)
        n = refs.size
        path = Path(tmp) / "zipf.oracleGeneral"
        write_oracle_general(path, refs)
        runs: list[Callable[[], Any]] = [lambda: simulate(refs, FRAMES, "lru")]
        if lcs is not None:  # alternated with ours, both warmed up
            runs.append(lambda: lcs_lru_misses(lcs, path, FRAMES, n))
        timed = alternated(runs, args.repeat)
        t_ours, res = timed[0]
        print(f"LRU({FRAMES}) Zipf(1.0) {n:,} refs: miss ratio {res.misses / n:.7f}"
              f" (medians of {args.repeat} alternated runs)")
        print(f"  xipmodel simulate(lru)      {t_ours:7.3f} s  {n / t_ours / 1e6:6.2f} M refs/s")
        if lcs is not None:
            t_lcs, lcs_misses = timed[1]
            print(f"  libcachesim LRU (binary)    {t_lcs:7.3f} s  {n / t_lcs / 1e6:6.2f} M refs/s")
            print(f"  ratio xipmodel/libcachesim time: {t_ours / t_lcs:.2f}"
                  f" (xipmodel {t_lcs / t_ours:.2f}x as fast)")
            if lcs_misses != res.misses:
                ok = False
                print(f"  MISMATCH: libcachesim {lcs_misses} misses, xipmodel {res.misses}")

        # --- miss-ratio curve -----------------------------------------------------
        mrefs = zipf_refs(args.mrc_refs)
        caps = np.unique(np.geomspace(1, 4 * FRAMES, 64).astype(np.int64))
        while caps.size < 64:  # geomspace collides at the small end; fill with distinct sizes
            caps = np.unique(np.append(caps, caps.max() + 1))
        t_mrc, curve = median_time(lambda: miss_ratio_curve(mrefs, caps), args.repeat)
        m = mrefs.size
        print(f"Miss-ratio curve, {caps.size} capacities 1..{caps.max()}, {m:,} refs")
        print(f"  xipmodel miss_ratio_curve   {t_mrc:7.3f} s")
        if lcs is not None:
            path = Path(tmp) / "mrc.oracleGeneral"
            write_oracle_general(path, mrefs)
            start = time.perf_counter()
            theirs = [lcs_lru_misses(lcs, path, int(c), m) for c in caps]
            t_64 = time.perf_counter() - start
            print(f"  libcachesim {caps.size} LRU runs     {t_64:7.3f} s (one pass each)")
            print(f"  speed-up: {t_64 / t_mrc:.1f}x")
            if theirs != curve.tolist():
                ok = False
                print("  MISMATCH between the curve and libcachesim")

        # --- the loop policies ------------------------------------------------------
        lrefs = zipf_refs(args.loop_refs)
        k = lrefs.size
        print(f"Loop policies, {FRAMES} frames, {k:,} refs")
        for policy in ("fifo", "clock", "clock0", "opt", "arc", "linux", "lru"):
            t, r = median_time(lambda p=policy: simulate(lrefs, FRAMES, p), args.repeat)
            print(
                f"  {policy:7s} {t:7.3f} s  {k / t / 1e6:6.2f} M refs/s"
                f"  miss ratio {r.miss_ratio:.4f}"
            )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
