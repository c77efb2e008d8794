"""The exercises of notebooks/04_faults_readahead_lru.ipynb (faults, readahead, LRU).

    readaround     04.1  the pages mmap read-around reads on a fault
    ra_windows     04.2  the first four sequential readahead windows
    fifo_belady    04.3  FIFO misses (Belady's anomaly)
    policy_misses  04.4  OPT, LRU or CLOCK misses

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, app_image, exercise_rng, pick

__all__ = ["EXERCISES"]


def _readaround(seed: int) -> Exercise:
    rng = exercise_rng(seed, "readaround")
    pages = int(rng.integers(40, 120))
    page = int(rng.integers(pages))

    @cache
    def run() -> tuple[tuple[int, ...], list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.params import PAGE_SIZE

        image = app_image(pages, seed)
        bus = EventBus()
        guest = Guest(0, HostMemory(), 1024, image, bus=bus)
        mm = guest.new_process("app")
        assert mm is not None, "exercise: a new guest has room for a process"
        guest.mmap(mm, 0x400000, pages * PAGE_SIZE, "r--", path="/bin/app")
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + page * PAGE_SIZE, "r")
        ino = image.lookup("/bin/app")
        cached = [p for p in range(pages) if guest.cache.find(ino, p) is not None]
        return (min(cached), max(cached)), rec.lines()

    def answer(_: int) -> tuple[int, ...]:
        return run()[0]

    def explain(_: int) -> str:
        (first, last), lines = run()
        return "\n".join([
            "The explain trace of the fault:", *lines, "",
            f"filemap_fault misses, so do_sync_mmap_readahead reads around the fault: "
            f"ra_pages = 32 pages centred on page {page} (start = max(0, {page} − 16)), "
            f"cut at the end of the file ({pages} pages): pages {first}–{last}."])

    return Exercise(
        f"/bin/app has {pages} pages and nothing of it is cached. A process maps it and reads "
        f"page {page} (a read fault, classic mmap read-around). Which pages does the guest "
        "read from its disk? Give the first and the last page, e.g. '3 34'.",
        answer, explain, seed, name="04.1",
        hint="mmap read-around reads ra_pages = 32 pages starting 16 before the fault, "
             "within the file.")


def _ra_windows(seed: int) -> Exercise:
    ra_pages = int(pick(seed, "ra_windows", (16, 32, 64, 128)))

    @cache
    def run() -> tuple[Any, ...]:
        from xipmodel.events import EventBus, Readahead
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.params import PAGE_SIZE

        image = app_image(4 * ra_pages + 64, seed)
        bus = EventBus()
        guest = Guest(0, HostMemory(), 2048, image, bus=bus, ra_pages=ra_pages)
        with Recorder(bus) as rec:
            for p in range(4 * ra_pages):
                guest.read("/bin/app", p * PAGE_SIZE, PAGE_SIZE)
        return tuple(e for e in rec.events if isinstance(e, Readahead))

    def answer(_: int) -> tuple[int, ...]:
        return tuple(int(e.size) for e in run()[:4])

    def explain(_: int) -> str:
        return "\n".join([
            f"A reader calls read() for 4 KiB at a time from page 0, ra_pages = {ra_pages}. "
            "The Readahead events:",
            *(f"  {e.kind:5} window [{e.start}, {e.start + e.size}) size {e.size}, "
              f"async_size {e.async_size}" for e in run()[:6]),
            "get_init_ra_size: the request (1 page) rounded up to a power of two, ×4 if ≤ "
            "max/32, ×2 if ≤ max/4, else max; get_next_ra_size: ×4 while below max/16, ×2 up "
            "to max/2, then max."])

    return Exercise(
        f"A process reads a file sequentially with read() of one page at a time, and the "
        f"file's maximum readahead (ra_pages) is {ra_pages} pages. What are the sizes of the "
        "first four readahead windows? (four numbers)",
        answer, explain, seed, name="04.2",
        hint="mm/readahead.c: get_init_ra_size for the first window, then get_next_ra_size "
             "each time the reader reaches the PG_readahead mark.")


_BELADY: Final = (1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5)


def _policy_refs(seed: int, name: str) -> tuple[list[int], int, str]:
    rng = exercise_rng(seed, name)
    if name == "fifo_belady":
        refs = list(_BELADY) if seed % 2 == 0 else [int(v) for v in rng.integers(1, 6, 12)]
        return refs, int(rng.choice([3, 4])), "fifo"
    refs = [int(v) for v in rng.integers(1, 7, 14)]
    return refs, int(rng.choice([3, 4])), str(rng.choice(["opt", "lru", "clock"]))


def _policy_misses(seed: int, name: str) -> Exercise:
    from xipmodel.policies import simulate

    refs, capacity, policy = _policy_refs(seed, name)

    def answer(_: int) -> int:
        return int(simulate(refs, capacity, policy).misses)

    def explain(_: int) -> str:
        r = simulate(refs, capacity, policy, trace=True)
        assert r.steps is not None
        lines = [f"simulate({refs}, {capacity}, {policy!r}, trace=True):"]
        lines += [f"  page {p}: {'hit ' if hit else 'miss'}  cache {list(c)}"
                  for p, hit, c in r.steps]
        lines.append(f"{r.misses} misses, {r.hits} hits.")
        if policy == "fifo":
            other = 4 if capacity == 3 else 3
            lines.append(f"With {other} frames FIFO makes "
                         f"{simulate(refs, other, 'fifo').misses} misses"
                         + (" — more frames, more misses: Belady's anomaly."
                            if simulate(refs, 4, "fifo").misses >
                            simulate(refs, 3, "fifo").misses else "."))
        return "\n".join(lines)

    names = {"fifo": "FIFO", "opt": "OPT (Belady's optimal)", "lru": "LRU",
             "clock": "CLOCK (reference bit set on load)"}
    return Exercise(
        f"{names[policy]} with {capacity} frames, starting empty, sees the reference string "
        f"{', '.join(map(str, refs))}. How many misses (cold misses included)?",
        answer, explain, seed, name="04.3" if name == "fifo_belady" else "04.4",
        hint="Write the frames' contents after every reference, as in OSTEP chapter 22.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "readaround": _readaround,
    "ra_windows": _ra_windows,
    "fifo_belady": lambda seed: _policy_misses(seed, "fifo_belady"),
    "policy_misses": lambda seed: _policy_misses(seed, "policy_misses"),
}
