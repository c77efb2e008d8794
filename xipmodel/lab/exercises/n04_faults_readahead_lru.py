"""The exercises of notebooks/04_faults_readahead_lru.ipynb (faults, readahead, LRU).

    readaround     04.1  the pages mmap read-around reads on a fault (compute)
    ra_windows     04.2  the first sequential readahead windows (predict, then verify)
    fifo_belady    04.3  FIFO misses, and Belady's anomaly (compute)
    policy_misses  04.4  OPT, LRU or CLOCK misses (compute)
    lru_vs_fifo    04.5  a reference string on which LRU misses more than FIFO (construct)
    fault_flags    04.6  what the flags of two faults say (open)

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, app_image, exercise_rng

__all__ = ["EXERCISES"]


def _readaround(seed: int) -> Exercise:
    rng = exercise_rng(seed, "readaround")
    pages = int(rng.integers(40, 160))
    page = int(rng.integers(pages))
    ra_pages = int(rng.choice([16, 32, 64]))

    @cache
    def run(ra: int) -> tuple[tuple[int, ...], list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.params import PAGE_SIZE

        image = app_image(pages, seed)
        bus = EventBus()
        guest = Guest(0, HostMemory(), 1024, image, bus=bus, ra_pages=ra)
        mm = guest.new_process("app")
        assert mm is not None, "exercise: a new guest has room for a process"
        guest.mmap(mm, 0x400000, pages * PAGE_SIZE, "r--", path="/bin/app")
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + page * PAGE_SIZE, "r")
        ino = image.lookup("/bin/app")
        cached = [p for p in range(pages) if guest.cache.find(ino, p) is not None]
        return (min(cached), max(cached)), rec.lines()

    def answer(_: int) -> tuple[int, ...]:
        return run(ra_pages)[0]

    def mistakes(_: int) -> dict[tuple[int, ...], str]:
        return {run(32)[0]: "that is the window of the default ra_pages = 32; this file's "
                            f"ra_pages is {ra_pages}",
                (page, min(pages, page + ra_pages) - 1): "that window starts at the fault, "
                                                          "as exec read-around does; this "
                                                          "mapping is r--, not executable"}

    def explain(_: int) -> str:
        (first, last), lines = run(ra_pages)
        return "\n".join([
            "The explain trace of the fault:", *lines, "",
            f"filemap_fault misses, so do_sync_mmap_readahead reads around the fault: "
            f"ra_pages = {ra_pages} pages centred on page {page} (start = max(0, {page} − "
            f"{ra_pages // 2})), cut at the end of the file ({pages} pages): pages "
            f"{first}–{last}."])

    return Exercise(
        f"/bin/app has {pages} pages, none of them cached, and its disk's ra_pages is "
        f"{ra_pages} (read_ahead_kb = {4 * ra_pages}). A process maps it read-only (r--, not "
        f"executable) and reads page {page}. Which pages does the guest read from its disk? "
        "Give the first and the last page, e.g. '3-34'.",
        answer, explain, seed, name="04.1", mistakes=mistakes,
        hint="Classic mmap read-around: ra_pages pages starting ra_pages / 2 before the "
             "fault, within the file.")


@cache
def _ra_run(ra_pages: int, size: int, seed: int) -> tuple[Any, ...]:
    """The Readahead events of a reader reading `size` pages per read() from page 0."""
    from xipmodel.events import EventBus, Readahead
    from xipmodel.explain import Recorder
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.params import PAGE_SIZE

    image = app_image(4 * ra_pages + 64, seed)
    bus = EventBus()
    guest = Guest(0, HostMemory(), 4096, image, bus=bus, ra_pages=ra_pages)
    with Recorder(bus) as rec:
        for p in range(0, 4 * ra_pages, size):
            guest.read("/bin/app", p * PAGE_SIZE, size * PAGE_SIZE)
    return tuple(e for e in rec.events if isinstance(e, Readahead))


def _ra_windows(seed: int) -> Exercise:
    rng = exercise_rng(seed, "ra_windows")
    ra_pages = int(rng.choice([16, 64, 128, 256, 512]))  # the notebook shows 32
    size = int(rng.choice([1, 2, 4, 8]))
    count = int(rng.integers(3, 6))

    def answer(_: int) -> tuple[int, ...]:
        return tuple(int(e.size) for e in _ra_run(ra_pages, size, seed)[:count])

    def mistakes(_: int) -> dict[tuple[int, ...], str]:
        return {tuple(int(e.size) for e in _ra_run(32, size, seed)[:count]):
                "those are the windows of the default ra_pages = 32",
                tuple(int(e.size) for e in _ra_run(ra_pages, 1, seed)[:count]) if size > 1
                else (): "that ramp starts from a 1-page request; this reader asks "
                         f"{size} pages at a time"}

    def explain(_: int) -> str:
        return "\n".join([
            f"A reader calls read() for {size} page(s) at a time from page 0, ra_pages = "
            f"{ra_pages}. The Readahead events:",
            *(f"  {e.kind:5} window [{e.start}, {e.start + e.size}) size {e.size}, "
              f"async_size {e.async_size}" for e in _ra_run(ra_pages, size, seed)[:count + 1]),
            "get_init_ra_size: the request rounded up to a power of two, ×4 if ≤ max/32, ×2 "
            "if ≤ max/4, else max; get_next_ra_size: ×4 while below max/16, ×2 up to max/2, "
            "then max."])

    return Exercise(
        f"A process reads a file sequentially from its start with read() calls of {size} "
        f"page{'s' if size > 1 else ''} ({4 * size} KiB) each; the file's maximum readahead "
        f"(ra_pages) is {ra_pages} pages. What are the sizes in pages of the first {count} "
        f"readahead windows? ({count} numbers)",
        answer, explain, seed, name="04.2", kind="predict", mistakes=mistakes,
        hint="mm/readahead.c: get_init_ra_size for the first window, then get_next_ra_size "
             "each time the reader reaches the PG_readahead mark.")


_BELADY: Final = (1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5)


def _policy_refs(seed: int, name: str) -> tuple[list[int], int, str]:
    rng = exercise_rng(seed, name)
    if name == "fifo_belady":
        refs = [int(v) for v in rng.integers(1, 6, 12)]
        if tuple(refs) == _BELADY:  # the notebook's own example
            refs.reverse()
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
        unit="misses",
        hint="Write the frames' contents after every reference, as in OSTEP chapter 22.")


def _lru_vs_fifo(seed: int) -> Exercise:
    from xipmodel.policies import simulate

    rng = exercise_rng(seed, "lru_vs_fifo")
    frames = int(rng.integers(2, 5))
    pages = frames + int(rng.integers(1, 4))
    longest = int(rng.integers(8, 17))
    more = 1
    policies = ("lru", "fifo") if rng.integers(3) else ("fifo", "lru")
    worse, better = policies

    def accept(text: str) -> tuple[bool, str]:
        refs = [int(t) for t in re.findall(r"\d+", text)]
        if not 0 < len(refs) <= longest or any(not 1 <= r <= pages for r in refs):
            return False, (f"give at most {longest} references to pages 1–{pages} "
                           f"(read {len(refs)}).")
        a, b = (simulate(refs, frames, p).misses for p in policies)
        if a >= b + more:
            return True, f"{worse.upper()} {a} misses, {better.upper()} {b}."
        return False, f"{worse.upper()} makes {a} misses, {better.upper()} {b}."

    def example() -> tuple[int, ...]:
        # fill the frames, touch page 1 again, bring in a new page (FIFO evicts 1, LRU 2),
        # then come back to the page the loser evicted
        back = 2 if worse == "lru" else 1
        return (*range(1, frames + 1), 1, frames + 1, back)

    def answer(_: int) -> tuple[int, ...]:
        return example()

    def explain(_: int) -> str:
        refs = example()
        out = [f"One string: {', '.join(map(str, refs))}"]
        for p in policies:
            r = simulate(refs, frames, p, trace=True)
            assert r.steps is not None
            out.append(f"{p.upper()}: {r.misses} misses  " + " ".join(
                f"{page}{'' if hit else '*'}" for page, hit, _c in r.steps) + "   (* = miss)")
        out.append("LRU loses when a page is reused just after it became least recently "
                   "used (a loop one page larger than the cache); FIFO loses when a hot page "
                   "is evicted only because it came in first.")
        return "\n".join(out)

    return Exercise(
        f"Write a reference string of at most {longest} references to pages 1–{pages} on "
        f"which {worse.upper()} with {frames} frames (starting empty) makes more misses "
        f"than {better.upper()} with {frames} frames.",
        answer, explain, seed, name="04.5", kind="construct", accept=accept,
        hint=f"simulate(refs, {frames}, 'lru') and simulate(refs, {frames}, 'fifo') check "
             "a candidate.")


def _fault_flags(seed: int) -> Exercise:
    rng = exercise_rng(seed, "fault_flags")
    pages = int(rng.integers(40, 100))
    first = int(rng.integers(pages))
    second = min(pages - 1, max(0, first + int(rng.integers(-20, 21))))
    prot = str(rng.choice(["r-x", "r--"]))
    write = prot == "r--" and bool(rng.integers(2))

    @cache
    def run() -> list[str]:
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
        guest.mmap(mm, 0x400000, pages * PAGE_SIZE, "rw-" if write else prot,
                   path="/bin/app")
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + first * PAGE_SIZE, "x" if prot == "r-x" else "r")
            guest.access(mm, 0x400000 + second * PAGE_SIZE, "w" if write else
                         ("x" if prot == "r-x" else "r"))
        return rec.lines()

    def answer(_: int) -> str:
        flags = [line.split("[", 1)[1].split("]", 1)[0] for line in run() if "[" in line
                 and "page fault" in line]
        return (f"The faults report {', '.join(flags) or 'nothing (no second fault)'}. "
                "MAJOR: the page had to be read from the disk (filemap_fault missed the page "
                "cache); LOCKED: the handler returns the page locked, as filemap_fault does "
                "after reading it; NOPAGE: the handler installed the PTE itself (fault-around "
                "by filemap_map_pages, or dax_iomap_fault) and returns no page; DONE_COW: "
                "do_cow_fault made the private copy; NONE: served without any of these (an "
                "anonymous page). The second access is a minor fault or no fault at all when "
                "the first one's read-around (or fault-around) already brought or mapped its "
                "page.")

    def explain(_: int) -> str:
        return "\n".join(["The explain trace:", *run()])

    second_access = "writes to" if write else ("executes" if prot == "r-x" else "reads")
    return Exercise(
        f"A process maps /bin/app ({pages} pages, nothing cached, ra_pages 32, fault-around "
        f"16 pages) {'rw- (MAP_PRIVATE)' if write else prot}, "
        f"{'executes' if prot == 'r-x' else 'reads'} page {first}, then {second_access} page "
        f"{second}. Which faults happen, with which VM_FAULT flags, and what does each flag "
        "tell you about the path the kernel took?",
        answer, explain, seed, name="04.6", kind="open",
        hint="Run the two accesses under a Recorder and read the [FLAGS] of each fault.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "readaround": _readaround,
    "ra_windows": _ra_windows,
    "fifo_belady": lambda seed: _policy_misses(seed, "fifo_belady"),
    "policy_misses": lambda seed: _policy_misses(seed, "policy_misses"),
    "lru_vs_fifo": _lru_vs_fifo,
    "fault_flags": _fault_flags,
}
