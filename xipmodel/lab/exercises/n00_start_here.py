"""The exercises of notebooks/00_start_here.ipynb (the whole story in one run).

    xip_saving  00.1  MiB of host memory XIP saves for N guests (compute)
    pte_target  00.2  what holds the frame a first access's PTE points at (compute)

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
    rng = exercise_rng(seed, "xip_saving")
    guests = int(rng.integers(2, 10))
    workload = ("shell", "webserver")[int(rng.integers(2))]
    ram = int(rng.choice([64, 128, 256]))

    @cache
    def run() -> Any:
        from xipmodel.host import Scenario, compare

        return compare(Scenario(guests=guests, workload=workload, guest_ram_mib=ram,
                                variants=1, seed=seed), modes=("pagecache", "xip"))

    def totals() -> tuple[float, float]:
        c = run()
        return mib(c.results["pagecache"].host_bytes), mib(c.results["xip"].host_bytes)

    def answer(_: int) -> float:
        pc, xip = totals()
        return round(pc - xip, 1)

    def mistakes(_: int) -> dict[Any, str]:
        pc, xip = totals()
        return {pc: "that is the page cache's total; subtract what XIP uses",
                xip: "that is what XIP uses; the question asks for the difference",
                round((pc - xip) / guests, 1): "that is the saving per guest; the question "
                                                "asks for all of them"}

    def explain(_: int) -> str:
        from xipmodel.host import CATEGORIES

        c = run()
        lines = [f"compare(Scenario(guests={guests}, workload={workload!r}, "
                 f"guest_ram_mib={ram}, variants=1, seed={seed}), modes=('pagecache', 'xip'))",
                 "", f"{'category':<12}{'pagecache':>11}{'xip':>9}   (MiB)"]
        for cat in CATEGORIES:
            a, b = (c.results[m].bytes_by_category[cat] for m in ("pagecache", "xip"))
            if a or b:
                lines.append(f"{cat:<12}{mib(a):>11.1f}{mib(b):>9.1f}")
        pc, xip = totals()
        lines += [f"{'total':<12}{pc:>11.1f}{xip:>9.1f}", "",
                  f"XIP saves {pc:.1f} − {xip:.1f} MiB: the page-cache copies of the binaries "
                  f"({guests} of them) become one shared segment."]
        return "\n".join(lines)

    return Exercise(
        f"{guests} guests with {ram} MiB of RAM each run the {workload} workload, workload "
        f"seed {seed}, every guest the same run (variants=1).\n"
        "How many MiB of host memory does XIP save over the page cache? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="00.1", unit="MiB", mistakes=mistakes,
        hint="Build that Scenario, compare the two modes, subtract their host_bytes "
             "(÷ 2**20).")


_FRAME_WORDS: Final = {"SHARED": "shared segment", "PAGECACHE": "page cache",
                       "ANON": "anonymous memory", "COW": "private copy"}


def _pte_target(seed: int) -> Exercise:
    rng = exercise_rng(seed, "pte_target")
    xip = bool(rng.integers(2))
    page = int(rng.integers(16))
    kind = "xrw"[int(rng.integers(3))]
    mount = ("mounted with -o xip (execute in place)" if xip else
             "mounted the ordinary way (no -o xip)")
    verb = {"x": "executes", "r": "reads", "w": "writes to"}[kind]
    prot = "rw- (MAP_PRIVATE)" if kind == "w" else "r-x"

    @cache
    def run() -> tuple[str, list[str]]:
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
        guest.mmap(mm, 0x400000, 16 * PAGE_SIZE, prot[:3], path="/bin/app")
        before = dict(host.counts_by_kind())
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + page * PAGE_SIZE, kind)
        after = host.counts_by_kind()
        grown = {k.name for k in after if after[k] > before.get(k, 0)} & set(_FRAME_WORDS)
        # A write to a private mapping ends at its copy, whatever was read to make it.
        target = "COW" if "COW" in grown else min(grown)
        return target, rec.lines()

    def answer(_: int) -> str:
        return _FRAME_WORDS[run()[0]]

    def explain(_: int) -> str:
        target, lines = run()
        return "\n".join(["The model's explain trace of that access:", *lines, "",
                          f"The PTE ends at a {target} frame."])

    return Exercise(
        f"A guest's ext2 image is {mount}. A process maps the 16 pages of /bin/app {prot} "
        f"and {verb} page {page} for the first time.\n"
        "What holds the frame its page-table entry ends up pointing at?",
        answer, explain, seed, choices=tuple(sorted(_FRAME_WORDS.values())), name="00.2",
        hint="XIP maps the image's frames straight into the page table; an ordinary mount "
             "reads into a guest page; a write to a private mapping never touches the "
             "original.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "xip_saving": _xip_saving,
    "pte_target": _pte_target,
}
