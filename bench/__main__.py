"""`python -m bench [NAME ...] [options]`: run the named benchmarks (all when none is named).

    python -m bench              every benchmark
    python -m bench ext2 --quick the ext2 reader against dissect.extfs, small sizes
    python -m bench policies     LRU replay and miss-ratio curves against libCacheSim
    python -m bench compare      all modes for 64 and 1,000 guests
    python -m bench browser      the dashboard slider in Chromium: 8, 64, 256 guests
    python -m bench replay       the shipped traces, fast replay engine against reference
    python -m bench apart        ksm, guests started apart: the slider moved up 1..N
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import (
    bench_apart,
    bench_browser,
    bench_compare,
    bench_ext2,
    bench_policies,
    bench_replay,
)

BENCHMARKS: dict[str, Callable[[list[str]], int]] = {
    "ext2": bench_ext2.main,
    "policies": bench_policies.main,
    "compare": bench_compare.main,
    "browser": bench_browser.main,
    "replay": bench_replay.main,
    "apart": bench_apart.main,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    names = [a for a in args if not a.startswith("-")]
    options = [a for a in args if a.startswith("-")]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown or "-h" in options or "--help" in options:
        if unknown:
            print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        print(__doc__.strip(), file=sys.stderr)
        print(f"benchmarks: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2 if unknown else 0
    status = 0
    for name in names or list(BENCHMARKS):
        status |= BENCHMARKS[name](options)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
