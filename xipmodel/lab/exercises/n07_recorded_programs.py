"""The exercises of notebooks/07_recorded_programs.ipynb (recorded programs).

    trace_shared  07.1  SHARED frames of a recorded trace under XIP
    trace_disk    07.2  KiB a recorded trace reads through the page cache

`first_touches(trace)` is `trace.first_touches()`, kept for notebooks written against it.

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import Exercise, pick
from xipmodel.workloads.recorded import trace_image

__all__ = ["EXERCISES", "first_touches"]


def first_touches(trace: Any) -> Any:
    """`trace.first_touches()` (kept here for notebooks written against this name)."""
    return trace.first_touches()


@cache
def _trace_run(name: str, xip: bool) -> Any:
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.segment import SharedSegment
    from xipmodel.workloads.recorded import load_trace
    from xipmodel.workloads.trace import replay

    trace = load_trace(name)
    image = trace_image(trace)
    host = HostMemory()
    guest = Guest(0, host, 16384, image, segment=SharedSegment(host, image) if xip else None)
    replay(guest, first_touches(trace))
    return host, guest


def _trace_shared(seed: int) -> Exercise:
    from xipmodel.workloads.recorded import TRACES

    name = str(pick(seed, "trace_shared", TRACES))

    def answer(_: int) -> int:
        host, _guest = _trace_run(name, xip=True)
        return int(host.counts_by_kind()[_kind("SHARED")])

    def explain(_: int) -> str:
        host, guest = _trace_run(name, xip=True)
        counts = {k.name: v for k, v in host.counts_by_kind().items() if v}
        return "\n".join([
            f"replay(guest, first_touches(load_trace({name!r}))) in a guest that mounts "
            "trace_image(trace) -o xip:",
            f"  host frames by kind: {counts}",
            f"  {guest.stats.minor_faults} minor faults, {guest.stats.major_faults} major, "
            f"{guest.stats.disk_read_bytes} bytes read from the disk",
            "Every image page the run touched is paged into the shared segment once: "
            "those are the SHARED frames."])

    return Exercise(
        f"Replay the recorded {name!r} trace once in a guest that executes in place. How many "
        "image pages does it bring into the shared segment (SHARED frames)?",
        answer, explain, seed, name="07.1",
        hint="Build the image with trace_image(trace), replay first_touches(trace) in an "
             "XIP guest and count the host's SHARED frames.")


def _trace_disk(seed: int) -> Exercise:
    from xipmodel.workloads.recorded import TRACES

    name = str(pick(seed, "trace_disk", TRACES))

    def answer(_: int) -> int:
        _host, guest = _trace_run(name, xip=False)
        return int(guest.stats.disk_read_bytes) >> 10

    def explain(_: int) -> str:
        host, guest = _trace_run(name, xip=False)
        xhost, _g = _trace_run(name, xip=True)
        cached = host.counts_by_kind()[_kind("PAGECACHE")]
        used = xhost.counts_by_kind()[_kind("SHARED")]
        return "\n".join([
            f"The same replay of {name!r} through the guest's page cache:",
            f"  {guest.stats.major_faults} major faults read "
            f"{guest.stats.disk_read_bytes >> 10} KiB ({guest.stats.readahead_pages} pages "
            f"by read-around), {guest.stats.fault_around_pages} pages mapped by fault-around",
            f"  {cached} page-cache pages for the {used} pages XIP shows were touched: "
            f"over-fetch ×{cached / used:.2f}."])

    return Exercise(
        f"Replay the recorded {name!r} trace once in a guest that reads its binaries through "
        "its page cache. How many KiB does it read from its virtual disk?",
        answer, explain, seed, name="07.2", unit="KiB",
        hint="Replay it in a guest without the shared segment and read "
             "guest.stats.disk_read_bytes (÷ 1024).")


def _kind(name: str) -> Any:
    from xipmodel.mm.frames import FrameKind

    return FrameKind[name]


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "trace_shared": _trace_shared,
    "trace_disk": _trace_disk,
}
