"""The exercises of notebooks/01_xip_vs_pagecache.ipynb (XIP versus the page cache).

    per_guest         01.1  MiB each guest after the second adds
    largest_category  01.2  the category holding the most host memory

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, exercise_rng, mib

__all__ = ["EXERCISES"]


def _per_guest(seed: int) -> Exercise:
    rng = exercise_rng(seed, "per_guest")
    workload = ("shell", "webserver", "python")[int(rng.integers(3))]
    mode = ("pagecache", "xip")[int(rng.integers(2))]

    @cache
    def result() -> Any:
        from xipmodel.host import Host, Scenario

        return Host(Scenario(guests=3, workload=workload, variants=1, seed=seed), mode).run()

    def answer(_: int) -> float:
        r = result()
        return round(mib(r.prefix(3).host_bytes) - mib(r.prefix(2).host_bytes), 1)

    def explain(_: int) -> str:
        r = result()
        rows = [f"  {n} guest{'s' if n > 1 else ''}: {mib(r.prefix(n).host_bytes):.1f} MiB"
                for n in (1, 2, 3)]
        first = mib(r.prefix(1).host_bytes)
        step = answer(seed)
        return "\n".join([
            f"Host(Scenario(guests=3, workload={workload!r}, variants=1, seed={seed}), "
            f"{mode!r}).run(), then result.prefix(n) for n = 1, 2, 3:", *rows, "",
            f"Every guest makes the same run, so each one after the first adds the same: "
            f"{step:.1f} MiB.",
            ("In XIP mode the first guest also pages the shared image in "
             f"({first:.1f} MiB for one guest); later guests add only private pages "
             "and page tables." if mode == "xip" else
             "In page-cache mode every guest holds its own copy of the binaries, "
             "so a guest costs about as much as the first one.")])

    return Exercise(
        f"Every guest runs the same {workload} run (variants=1) in {mode} mode. "
        "How many MiB of host memory does each guest after the second add? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="01.1", unit="MiB",
        hint="Run Host(Scenario(guests=3, workload=…, variants=1, seed=…), mode).run() and "
             "compare result.prefix(2) with result.prefix(3).")


def _largest_category(seed: int) -> Exercise:
    from xipmodel.host import CATEGORIES

    rng = exercise_rng(seed, "largest_category")
    workload = ("shell", "webserver", "python")[int(rng.integers(3))]
    mode = ("pagecache", "xip", "ksm")[int(rng.integers(3))]

    @cache
    def result() -> Any:
        from xipmodel.host import Host, Scenario

        return Host(Scenario(guests=4, workload=workload, seed=seed, ksm_seconds=30), mode
                    ).run()

    def answer(_: int) -> str:
        by = result().bytes_by_category
        return max(CATEGORIES, key=lambda c: by[c])

    def explain(_: int) -> str:
        by = result().bytes_by_category
        rows = [f"  {c:<12}{mib(by[c]):>8.1f} MiB" for c in
                sorted(CATEGORIES, key=lambda c: -by[c]) if by[c]]
        return "\n".join([f"Host(Scenario(guests=4, workload={workload!r}, seed={seed}, "
                          f"ksm_seconds=30), {mode!r}).run().bytes_by_category:", *rows])

    return Exercise(
        f"4 guests run {workload} in {mode} mode (seed {seed}, ksmd scanning 30 s after the "
        "last start). Which category holds the most host memory at the end?",
        answer, explain, seed, choices=tuple(CATEGORIES), name="01.2",
        hint="Look at RunResult.bytes_by_category, or at the dashboard's stacked bars.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "per_guest": _per_guest,
    "largest_category": _largest_category,
}
