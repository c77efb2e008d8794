"""The exercises of notebooks/05_cow_ksm_limits.ipynb (copy-on-write, KSM, limits).

    cow_frames  05.1  copy-on-write frames of guests writing the image
    ksm_pass    05.2  seconds of one full ksmd scan pass
    heap_share  05.3  XIP's saving (%) for a given heap share

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import MIB, Exercise, app_image, exercise_rng, mib, pick

__all__ = ["EXERCISES"]


def _cow_frames(seed: int) -> Exercise:
    rng = exercise_rng(seed, "cow_frames")
    guests = int(rng.integers(2, 6))
    written = sorted(int(p) for p in rng.choice(8, size=int(rng.integers(1, 5)), replace=False))
    read = sorted(int(p) for p in rng.choice(8, size=3, replace=False))

    @cache
    def run() -> tuple[dict[str, int], list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.mm.segment import SharedSegment
        from xipmodel.params import PAGE_SIZE

        image = app_image(8, seed)
        host, bus = HostMemory(), EventBus()
        segment = SharedSegment(host, image, bus=bus)
        first: list[str] = []
        for gid in range(guests):
            g = Guest(gid, host, 256, image, segment=segment, bus=bus)
            mm = g.new_process("app")
            assert mm is not None, "exercise: a new guest has room for a process"
            g.mmap(mm, 0x600000, 8 * PAGE_SIZE, "rw-", path="/bin/app")
            with Recorder(bus) as rec:
                for p in read:
                    g.access(mm, 0x600000 + p * PAGE_SIZE, "r")
                for p in written:
                    g.access(mm, 0x600000 + p * PAGE_SIZE, "w")
            if gid == 0:
                first = rec.lines()
        return {k.name: v for k, v in host.counts_by_kind().items()}, first

    def answer(_: int) -> int:
        return run()[0]["COW"]

    def explain(_: int) -> str:
        counts, first = run()
        return "\n".join([
            "Guest 0's accesses, explained:", *first, "",
            f"Host frames by kind: SHARED {counts['SHARED']}, COW {counts['COW']}.",
            f"Reads map the shared frames; each written page gets a private copy "
            f"(do_cow_fault / wp_page_copy) in each guest: {guests} × {len(written)} = "
            f"{guests * len(written)}. The frozen image itself is never written."])

    return Exercise(
        f"{guests} guests mount /bin/app -o xip and map its 8 pages privately read-write. Each "
        f"reads pages {', '.join(map(str, read))} and then writes pages "
        f"{', '.join(map(str, written))}. How many copy-on-write frames does the host hold "
        "at the end?",
        answer, explain, seed, name="05.1",
        hint="A read maps the shared frame; a write to a private mapping copies the page for "
             "that guest only.")


def _ksm_pass(seed: int) -> Exercise:
    rng = exercise_rng(seed, "ksm_pass")
    guests = int(rng.integers(2, 17))
    ram = int(rng.choice([256, 512, 1024, 2048]))
    pages_to_scan = int(rng.choice([100, 200, 500]))
    sleep = int(rng.choice([10, 20, 50]))

    def ksmd() -> Any:
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.ksm import Ksm

        return Ksm(HostMemory(), [], pages_to_scan=pages_to_scan, sleep_millisecs=sleep)

    def answer(_: int) -> float:
        from xipmodel.params import PAGE_SIZE

        k = ksmd()
        rate = k.pages_to_scan * 1e9 / k.sleep_ns
        return round(float(guests * (ram * MIB // PAGE_SIZE) / rate), 1)

    def explain(_: int) -> str:
        from xipmodel.params import PAGE_SIZE

        k = ksmd()
        rate = k.pages_to_scan * 1e9 / k.sleep_ns
        pages = guests * (ram * MIB // PAGE_SIZE)
        return "\n".join([
            f"ksmd wakes every {sleep} ms and scans {pages_to_scan} pages: "
            f"{rate:,.0f} pages/s.",
            f"{guests} guests × {ram} MiB = {pages:,} pages of 4 KiB.",
            f"{pages:,} / {rate:,.0f} = {pages / rate:.1f} s for one full pass; until then "
            "some duplicates are still unmerged. (Defaults 100 / 20 ms: 16 GiB takes "
            "≈ 839 s.)"])

    return Exercise(
        f"ksmd runs with pages_to_scan = {pages_to_scan} and sleep_millisecs = {sleep}. "
        f"{guests} guests of {ram} MiB are fully backed. How many seconds does one full scan "
        "pass take? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="05.2", unit="s",
        hint="pages per second = pages_to_scan / sleep; a pass covers every guest page once.")


def _heap_share(seed: int) -> Exercise:
    share = float(pick(seed, "heap_share", (0.1, 0.3, 0.5, 0.7, 0.9)))

    @cache
    def comparison() -> Any:
        from xipmodel.host import Scenario, compare

        return compare(Scenario(guests=4, workload="shell", heap_share=share, variants=1,
                                guest_ram_mib=64, seed=seed), modes=("pagecache", "xip"))

    def answer(_: int) -> float:
        return round(100 * float(comparison().saving("xip")), 1)

    def explain(_: int) -> str:
        c = comparison()
        pc, xip = c.results["pagecache"], c.results["xip"]
        anon = {m: mib(r.bytes_by_category["anon"]) for m, r in c.results.items()}
        return "\n".join([
            f"compare(Scenario(guests=4, workload='shell', heap_share={share}, variants=1, "
            f"guest_ram_mib=64, seed={seed}), modes=('pagecache', 'xip'))",
            f"  pagecache {mib(pc.host_bytes):.1f} MiB (anon {anon['pagecache']:.1f})",
            f"  xip       {mib(xip.host_bytes):.1f} MiB (anon {anon['xip']:.1f})",
            f"saving = 1 − {mib(xip.host_bytes):.1f} / {mib(pc.host_bytes):.1f} = "
            f"{100 * c.saving('xip'):.1f} %. The heap is private in both modes: the larger "
            "its share, the smaller XIP's saving."])

    return Exercise(
        f"4 shell guests whose heap is {share:.0%} of the memory a run touches (heap_share="
        f"{share}). What percentage of host memory does XIP save over the page cache? "
        "(one decimal)",
        answer, explain, seed, tolerance=0.2, name="05.3", unit="%",
        hint="compare(Scenario(guests=4, workload='shell', heap_share=…, variants=1, "
             "guest_ram_mib=64, seed=…), modes=('pagecache', 'xip')).saving('xip') × 100.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "cow_frames": _cow_frames,
    "ksm_pass": _ksm_pass,
    "heap_share": _heap_share,
}
