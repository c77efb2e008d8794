"""The exercises of notebooks/00_start_here.ipynb (the whole story in one run).

    xip_saving  00.1  MiB of host memory XIP saves for N shell guests
    pte_target  00.2  what holds the frame a first access's PTE points at

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, app_image, exercise_rng, mib

__all__ = ["EXERCISES"]


def _xip_saving(seed: int) -> Exercise:
    guests = int(exercise_rng(seed, "xip_saving").integers(2, 7))

    def scenario() -> Any:
        from xipmodel.host import Scenario

        return Scenario(guests=guests, workload="shell", guest_ram_mib=64, variants=1,
                        seed=seed)

    @cache
    def run() -> Any:
        from xipmodel.host import compare

        return compare(scenario(), modes=("pagecache", "xip"))

    def answer(_: int) -> float:
        c = run()
        return round(mib(c.results["pagecache"].host_bytes) - mib(c.results["xip"].host_bytes),
                     1)

    def explain(_: int) -> str:
        from xipmodel.host import CATEGORIES

        c = run()
        lines = [f"compare(Scenario(guests={guests}, workload='shell', guest_ram_mib=64, "
                 f"variants=1, seed={seed}), modes=('pagecache', 'xip'))", "",
                 f"{'category':<12}{'pagecache':>11}{'xip':>9}   (MiB)"]
        for cat in CATEGORIES:
            a, b = (c.results[m].bytes_by_category[cat] for m in ("pagecache", "xip"))
            if a or b:
                lines.append(f"{cat:<12}{mib(a):>11.1f}{mib(b):>9.1f}")
        pc, xip = (mib(c.results[m].host_bytes) for m in ("pagecache", "xip"))
        lines += [f"{'total':<12}{pc:>11.1f}{xip:>9.1f}", "",
                  f"XIP saves {pc:.1f} − {xip:.1f} MiB: the page-cache copies of the binaries "
                  f"({guests} of them) become one shared segment."]
        return "\n".join(lines)

    return Exercise(
        f"{guests} guests (64 MiB each) run the shell workload, every guest the same run "
        "(variants=1):\ncompare(Scenario(guests=" + str(guests) + ", workload='shell', "
        f"guest_ram_mib=64, variants=1, seed={seed}), modes=('pagecache', 'xip')).\n"
        "How many MiB of host memory does XIP save over the page cache? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="00.1", unit="MiB",
        hint="Run the compare(...) call and subtract the two host_bytes (÷ 2**20).")


_FRAME_WORDS: Final = {"SHARED": "shared segment", "PAGECACHE": "page cache",
                       "ANON": "anonymous memory", "COW": "private copy"}


def _pte_target(seed: int) -> Exercise:
    rng = exercise_rng(seed, "pte_target")
    xip = bool(rng.integers(2))
    page = int(rng.integers(16))
    kind = "x" if rng.integers(3) else "r"
    mode = "mounted -o xip (execute in place)" if xip else "read through its page cache"
    verb = "executes" if kind == "x" else "reads"

    @cache
    def run() -> tuple[Any, list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.mm.segment import SharedSegment
        from xipmodel.params import PAGE_SIZE

        image = app_image(16, seed)
        host, bus = HostMemory(), EventBus()
        segment = SharedSegment(host, image, bus=bus) if xip else None
        guest = Guest(0, host, 256, image, segment=segment, bus=bus)
        mm = guest.new_process("app")
        assert mm is not None, "exercise: a new guest has room for a process"
        guest.mmap(mm, 0x400000, 16 * PAGE_SIZE, "r-x", path="/bin/app")
        before = dict(host.counts_by_kind())
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + page * PAGE_SIZE, kind)
        after = host.counts_by_kind()
        grown = [k for k in after if after[k] > before.get(k, 0) and k.name in _FRAME_WORDS]
        return grown, rec.lines()

    def answer(_: int) -> str:
        grown, _lines = run()
        return _FRAME_WORDS[grown[0].name]

    def explain(_: int) -> str:
        grown, lines = run()
        return "\n".join(["The model's explain trace of that access:", *lines, "",
                          "New host frames: " + ", ".join(f"{k.name}" for k in grown)])

    return Exercise(
        f"A guest whose image is {mode} {verb} page {page} of /bin/app for the first time.\n"
        "What holds the frame its page-table entry ends up pointing at?",
        answer, explain, seed, choices=tuple(sorted(_FRAME_WORDS.values())), name="00.2",
        hint="XIP maps the shared frames straight into the page table; the page cache "
             "reads into a guest page.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "xip_saving": _xip_saving,
    "pte_target": _pte_target,
}
