"""The exercises of notebooks/07_recorded_programs.ipynb (recorded programs).

    trace_shared  07.1  SHARED frames of part of a recorded trace under XIP (compute)
    trace_disk    07.2  KiB a recorded trace reads through the page cache (predict, then verify)
    ra_budget     07.3  an ra_pages meeting a disk and a fault budget (construct)
    overfetch_open 07.4  why the page cache holds more than XIP (open)

`first_touches(trace)` is `trace.first_touches()`, kept for notebooks written against it.

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, exercise_rng
from xipmodel.workloads.recorded import trace_image

__all__ = ["EXERCISES", "first_touches"]


def first_touches(trace: Any) -> Any:
    """`trace.first_touches()` (kept here for notebooks written against this name)."""
    return trace.first_touches()


@cache
def _trace_run(name: str, xip: bool, touches: int | None = None, ra_pages: int = 32) -> Any:
    """One guest replaying the first `touches` first touches of trace `name` (all: None)."""
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.segment import SharedSegment
    from xipmodel.workloads.recorded import load_trace
    from xipmodel.workloads.trace import PageTrace, replay

    trace = load_trace(name)
    image = trace_image(trace)
    host = HostMemory()
    guest = Guest(0, host, 16384, image, segment=SharedSegment(host, image) if xip else None,
                  ra_pages=ra_pages)
    short = first_touches(trace)
    if touches is not None:
        short = PageTrace(short.name, short.maps, short.vpns[:touches],
                          short.kinds[:touches], dict(short.meta),
                          None if short.contents is None else short.contents[:touches])
    replay(guest, short)
    return host, guest


@cache
def _touches(name: str) -> int:
    from xipmodel.workloads.recorded import load_trace

    return len(first_touches(load_trace(name)))


def _pick_part(seed: int, name: str) -> tuple[str, int]:
    """A trace, and how many of its first touches to replay (never all: the notebook's)."""
    from xipmodel.workloads.recorded import TRACES

    rng = exercise_rng(seed, name)
    trace = str(TRACES[int(rng.integers(len(TRACES)))])
    return trace, int(rng.integers(30, _touches(trace)))


def _replay_words(trace: str, touches: int) -> str:
    return (f"the first {touches} accesses of first_touches(load_trace({trace!r})) "
            f"(of {_touches(trace)})")


def _trace_shared(seed: int) -> Exercise:
    trace, touches = _pick_part(seed, "trace_shared")

    def answer(_: int) -> int:
        host, _guest = _trace_run(trace, True, touches)
        return int(host.counts_by_kind()[_kind("SHARED")])

    def explain(_: int) -> str:
        host, guest = _trace_run(trace, True, touches)
        counts = {k.name: v for k, v in host.counts_by_kind().items() if v}
        return "\n".join([
            f"replay(guest, first_touches(trace)[:{touches}]) in a guest that mounts "
            "trace_image(trace) -o xip:",
            f"  host frames by kind: {counts}",
            f"  {guest.stats.minor_faults} minor faults, {guest.stats.major_faults} major, "
            f"{guest.stats.disk_read_bytes} bytes read from the disk",
            "Every image page the run touched is paged into the shared segment once: "
            "those are the SHARED frames."])

    return Exercise(
        f"A guest that executes in place (its image trace_image(trace) mounted -o xip) "
        f"replays {_replay_words(trace, touches)}. How many image pages does it bring into "
        "the shared segment (SHARED frames)?",
        answer, explain, seed, name="07.1", unit="frames",
        hint="Replay that slice in an XIP guest and count the host's SHARED frames.")


def _trace_disk(seed: int) -> Exercise:
    trace, touches = _pick_part(seed, "trace_disk")
    ra_pages = int(exercise_rng(seed, "trace_disk ra").choice([8, 16, 64, 128]))

    def answer(_: int) -> int:
        _host, guest = _trace_run(trace, False, touches, ra_pages)
        return int(guest.stats.disk_read_bytes) >> 10

    def mistakes(_: int) -> dict[int, str]:
        _h, default = _trace_run(trace, False, touches, 32)
        xhost, _g = _trace_run(trace, True, touches)
        return {int(default.stats.disk_read_bytes) >> 10: "that is what the default "
                                                          "ra_pages = 32 reads",
                4 * int(xhost.counts_by_kind()[_kind("SHARED")]): "that counts only the "
                                                                  "pages the run touched; "
                                                                  "read-around reads more"}

    def explain(_: int) -> str:
        host, guest = _trace_run(trace, False, touches, ra_pages)
        xhost, _g = _trace_run(trace, True, touches)
        cached = host.counts_by_kind()[_kind("PAGECACHE")]
        used = xhost.counts_by_kind()[_kind("SHARED")]
        return "\n".join([
            f"The same replay through the guest's page cache, ra_pages = {ra_pages}:",
            f"  {guest.stats.major_faults} major faults read "
            f"{guest.stats.disk_read_bytes >> 10} KiB ({guest.stats.readahead_pages} pages "
            f"by read-around), {guest.stats.fault_around_pages} pages mapped by fault-around",
            f"  {cached} page-cache pages for the {used} pages XIP shows were touched: "
            f"over-fetch ×{cached / used:.2f}."])

    return Exercise(
        f"A guest that reads its binaries through its page cache, its disk's ra_pages = "
        f"{ra_pages}, replays {_replay_words(trace, touches)}. How many KiB does it read "
        "from its virtual disk?",
        answer, explain, seed, name="07.2", unit="KiB", kind="predict", mistakes=mistakes,
        hint="Replay that slice in a guest without the shared segment, Guest(..., "
             "ra_pages=…), and read guest.stats.disk_read_bytes (÷ 1024).")


_RA_CHOICES: Final = (1, 2, 4, 8, 16, 32, 64, 128)


def _ra_budget(seed: int) -> Exercise:
    rng = exercise_rng(seed, "ra_budget")
    trace, touches = _pick_part(seed, "ra_budget")
    target = int(rng.choice(_RA_CHOICES[1:-1]))
    _h, g = _trace_run(trace, False, touches, target)
    disk_kib = -(-int(g.stats.disk_read_bytes) // 1024 // 64) * 64  # rounded up to 64 KiB
    majors = int(g.stats.major_faults)

    def meets(ra: int) -> tuple[int, int]:
        _host, guest = _trace_run(trace, False, touches, ra)
        return int(guest.stats.disk_read_bytes) >> 10, int(guest.stats.major_faults)

    def accept(text: str) -> tuple[bool, str]:
        m = re.fullmatch(r"\s*(?:ra_pages\s*=?\s*)?(\d+)\s*(?:pages)?\s*", text.lower())
        if not m or int(m.group(1)) not in _RA_CHOICES:
            return False, f"give ra_pages, one of {', '.join(map(str, _RA_CHOICES))}."
        ra = int(m.group(1))
        kib, faults = meets(ra)
        ok = kib <= disk_kib and faults <= majors
        return ok, (f"ra_pages = {ra}: {kib} KiB read (budget {disk_kib}), {faults} major "
                    f"faults (budget {majors}).")

    def answer(_: int) -> int:
        return target

    def explain(_: int) -> str:
        rows = [f"  ra_pages {ra:3}: {kib:6} KiB, {faults:3} major faults"
                + ("  ✓" if kib <= disk_kib and faults <= majors else "")
                for ra in _RA_CHOICES for kib, faults in [meets(ra)]]
        return "\n".join([f"Replaying {_replay_words(trace, touches)} through the page "
                          "cache:", *rows,
                          "A small window reads less but faults more often; a large one "
                          "faults less but reads pages the program never uses."])

    return Exercise(
        f"A guest reading its binaries through its page cache replays "
        f"{_replay_words(trace, touches)}. Choose its disk's ra_pages (one of "
        f"{', '.join(map(str, _RA_CHOICES))}) so that it reads at most {disk_kib} KiB from "
        f"its disk with at most {majors} major faults.",
        answer, explain, seed, name="07.3", kind="construct", accept=accept,
        hint="Try a few values: each ra_pages trades disk reads against major faults.")


def _overfetch_open(seed: int) -> Exercise:
    trace, touches = _pick_part(seed, "overfetch_open")
    ra_pages = int(exercise_rng(seed, "overfetch_open ra").choice([8, 16, 32, 64, 128]))

    def answer(_: int) -> str:
        host, _guest = _trace_run(trace, False, touches, ra_pages)
        xhost, _g = _trace_run(trace, True, touches)
        cached = host.counts_by_kind()[_kind("PAGECACHE")]
        used = xhost.counts_by_kind()[_kind("SHARED")]
        return (f"The page cache holds {cached} pages, XIP's shared segment {used}: "
                f"over-fetch ×{cached / used:.2f}. XIP maps exactly the blocks the program "
                "touched (no readahead: the block is already in memory), so its count is the "
                f"program's file working set. Read-around (ra_pages = {ra_pages}) reads "
                "windows around each miss, and fault-around maps cached neighbours: pages the "
                "program never used still fill every guest's cache. MADV_RANDOM (or a "
                "smaller ra_pages) would cut the over-fetch at the price of more major "
                "faults; with N guests the page cache pays it N times, XIP once.")

    def explain(_: int) -> str:
        return "Replay the slice in both modes and count PAGECACHE and SHARED frames."

    return Exercise(
        f"Replay {_replay_words(trace, touches)} once through a page cache (ra_pages = "
        f"{ra_pages}) and once in place (-o xip). The page cache ends up holding more pages "
        "than the shared segment. Why? Which of the two counts is the program's working set, "
        "and what would MADV_RANDOM change?",
        answer, explain, seed, name="07.4", kind="open",
        hint="Count PAGECACHE frames in one run and SHARED frames in the other.")


def _kind(name: str) -> Any:
    from xipmodel.mm.frames import FrameKind

    return FrameKind[name]


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "trace_shared": _trace_shared,
    "trace_disk": _trace_disk,
    "ra_budget": _ra_budget,
    "overfetch_open": _overfetch_open,
}
