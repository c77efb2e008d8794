"""The exercises of notebooks/01_xip_vs_pagecache.ipynb (XIP versus the page cache).

    per_guest         01.1  MiB the n-th guest adds (predict, then verify)
    largest_category  01.2  the category holding the most host memory (compute)
    ratio_guests      01.3  a guest count where the page cache needs R × XIP (construct)
    variants_open     01.4  which guests page the image in, and why (open)

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, exercise_rng, mib

__all__ = ["EXERCISES"]

WORKLOADS: Final = ("shell", "webserver", "python")
MAX_GUESTS: Final = 16


@cache
def _same_runs(workload: str, seed: int, mode: str) -> Any:
    """MAX_GUESTS guests making the same run (variants=1): every smaller host is a prefix."""
    from xipmodel.host import Host, Scenario

    return Host(Scenario(guests=MAX_GUESTS, workload=workload, variants=1, seed=seed),
                mode).run()


def _per_guest(seed: int) -> Exercise:
    rng = exercise_rng(seed, "per_guest")
    workload = WORKLOADS[int(rng.integers(3))]
    mode = ("pagecache", "xip")[int(rng.integers(2))]
    n = int(rng.integers(3, 9))

    def host_mib(guests: int) -> float:
        return mib(_same_runs(workload, seed, mode).prefix(guests).host_bytes)

    def answer(_: int) -> float:
        return round(host_mib(n) - host_mib(n - 1), 1)

    def mistakes(_: int) -> dict[Any, str]:
        return {host_mib(1): "that is what the first guest costs; in XIP mode it also pages "
                             "the shared image in, later guests do not",
                host_mib(n): f"that is the whole host with {n} guests"}

    def explain(_: int) -> str:
        rows = [f"  {g} guest{'s' if g > 1 else ''}: {host_mib(g):.1f} MiB"
                for g in range(1, n + 1)]
        return "\n".join([
            f"Host(Scenario(guests={n}, workload={workload!r}, variants=1, seed={seed}), "
            f"{mode!r}).run(), then result.prefix(g) for g = 1 … {n}:", *rows, "",
            f"Guest {n} adds {host_mib(n):.1f} − {host_mib(n - 1):.1f} MiB. Every guest makes "
            "the same run, so each one after the first adds about the same.",
            ("In XIP mode the first guest also pages the shared image in; later guests add "
             "only their private pages and page tables." if mode == "xip" else
             "In page-cache mode every guest holds its own copy of the binaries (and of what "
             "read-around fetched), so a guest costs about as much as the first one.")])

    return Exercise(
        f"Every guest makes the same {workload} run (variants=1, workload seed {seed}) in "
        f"{mode} mode. How many MiB of host memory does guest number {n} add (the host with "
        f"{n} guests minus the host with {n - 1})? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="01.1", unit="MiB", kind="predict",
        mistakes=mistakes,
        hint="RunResult.prefix(g) is the same run with only its first g guests.")


def _largest_category(seed: int) -> Exercise:
    from xipmodel.host import CATEGORIES

    rng = exercise_rng(seed, "largest_category")
    workload = WORKLOADS[int(rng.integers(3))]
    mode = ("pagecache", "xip", "ksm")[int(rng.integers(3))]
    guests = int(rng.integers(2, 7))

    @cache
    def result() -> Any:
        from xipmodel.host import Host, Scenario

        return Host(Scenario(guests=guests, workload=workload, seed=seed, ksm_seconds=30),
                    mode).run()

    def answer(_: int) -> str:
        by = result().bytes_by_category
        return max(CATEGORIES, key=lambda c: by[c])

    def explain(_: int) -> str:
        by = result().bytes_by_category
        rows = [f"  {c:<12}{mib(by[c]):>8.1f} MiB" for c in
                sorted(CATEGORIES, key=lambda c: -by[c]) if by[c]]
        return "\n".join([f"Host(Scenario(guests={guests}, workload={workload!r}, "
                          f"seed={seed}, ksm_seconds=30), {mode!r}).run().bytes_by_category:",
                          *rows])

    return Exercise(
        f"{guests} guests run {workload} in {mode} mode (workload seed {seed}, the default "
        "4 variants, ksmd scanning 30 s after the last start). Which category holds the most "
        "host memory at the end?",
        answer, explain, seed, choices=tuple(CATEGORIES), name="01.2",
        hint="RunResult.bytes_by_category, or the dashboard's stacked bars for that setting.")


_RATIOS: Final = {"shell": (3.6, 3.8, 3.9, 4.0), "webserver": (3.2, 3.4, 3.5, 3.6),
                  "python": (1.8, 1.85, 1.9, 1.95)}


def _ratio_guests(seed: int) -> Exercise:
    rng = exercise_rng(seed, "ratio_guests")
    workload = WORKLOADS[int(rng.integers(3))]
    ratio = float(rng.choice(_RATIOS[workload]))

    def ratio_at(n: int) -> float:
        pc, xip = (_same_runs(workload, seed, m).prefix(n).host_bytes
                   for m in ("pagecache", "xip"))
        return float(pc / xip)

    def accept(text: str) -> tuple[bool, str]:
        m = re.search(r"\d+", text)
        if not m:
            return False, f"could not read {text.strip()!r} as a number of guests."
        n = int(m.group())
        if not 1 <= n <= MAX_GUESTS:
            return False, f"{n} guests is not in 1–{MAX_GUESTS}."
        r = ratio_at(n)
        if r >= ratio:
            return True, f"with {n} guests the page cache needs {r:.3f} × XIP's host memory."
        return False, f"with {n} guests the page cache needs only {r:.3f} × XIP's."

    def answer(_: int) -> int:
        return next(n for n in range(1, MAX_GUESTS + 1) if ratio_at(n) >= ratio)

    def explain(_: int) -> str:
        first = answer(seed)
        return "\n".join([
            f"pagecache / xip host memory, {workload} (variants=1, seed {seed}):",
            *(f"  {n:2} guests: {ratio_at(n):.2f}" for n in range(1, MAX_GUESTS + 1)), "",
            f"Any count from {first} on works: the ratio grows with the guests, towards "
            "(one guest's page-cache copy + private pages) / (its private pages), because "
            "XIP's shared part is paid once."])

    return Exercise(
        f"Every guest makes the same {workload} run (variants=1, workload seed {seed}). Give "
        f"a number of guests (1–{MAX_GUESTS}) at which the page-cache mode needs at least "
        f"{ratio:g} times the host memory XIP needs.",
        answer, explain, seed, name="01.3", kind="construct", accept=accept,
        hint="The ratio grows with the guests: why?")


def _variants_open(seed: int) -> Exercise:
    rng = exercise_rng(seed, "variants_open")
    workload = WORKLOADS[int(rng.integers(3))]
    variants = int(rng.integers(2, 6))
    guests = variants + int(rng.integers(2, 6))

    @cache
    def result() -> Any:
        from xipmodel.host import Host, Scenario

        return Host(Scenario(guests=guests, workload=workload, variants=variants, seed=seed),
                    "xip").run()

    def answer(_: int) -> str:
        paging = [g["guest"] for g in result().per_guest if g["host_page_ins"]]
        return (f"Guests {', '.join(map(str, paging))} page image blocks into host memory; "
                f"the others find every block they touch already there. `variants` is the "
                f"number of distinct seeded runs of each program: guest i makes run "
                f"i mod {variants}, so only the first guest of each run touches blocks no "
                "earlier guest touched (and a later variant can still find a few new ones). "
                "Each guest's private pages (heap, stack, page tables) are paid by every guest.")

    def explain(_: int) -> str:
        rows = [f"  guest {g['guest']}: run {g['guest'] % variants}, {g['host_page_ins']} "
                f"host page-ins, {mib(g['anon_pages'] * 4096):.1f} MiB anon"
                for g in result().per_guest]
        return "\n".join([f"Host(Scenario(guests={guests}, workload={workload!r}, "
                          f"variants={variants}, seed={seed}), 'xip').run().per_guest:", *rows])

    return Exercise(
        f"{guests} guests run {workload} in xip mode with variants={variants} (workload seed "
        f"{seed}). Which guests page image blocks into host memory (host_page_ins > 0), "
        "which do not, and why? Explain what `variants` does.",
        answer, explain, seed, name="01.4", kind="open",
        hint="RunResult.per_guest lists each guest's counters.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "per_guest": _per_guest,
    "largest_category": _largest_category,
    "ratio_guests": _ratio_guests,
    "variants_open": _variants_open,
}
