"""The exercises of notebooks/05_cow_ksm_limits.ipynb (copy-on-write, KSM, limits).

    cow_frames     05.1  copy-on-write frames of guests writing the image (compute)
    ksm_pass       05.2  seconds of one full ksmd scan pass (compute)
    heap_share     05.3  XIP's saving (%) for a given heap share (predict, then verify)
    cow_construct  05.4  the pages to write for given CoW and shared counts (construct)
    ksm_open       05.5  why KSM stays above XIP (open)

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Any, Final

from xipmodel.lab.exercises.core import MIB, Exercise, app_image, exercise_rng, mib

__all__ = ["EXERCISES"]


@cache
def _cow_counts(guests: int, read: tuple[int, ...], written: tuple[int, ...], seed: int
                ) -> tuple[dict[str, int], list[str]]:
    """Guests mapping /bin/app (8 pages) private rw from an XIP image, each reading `read`
    then writing `written`: the host's frames by kind, and guest 0's explain trace."""
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


def _cow_frames(seed: int) -> Exercise:
    rng = exercise_rng(seed, "cow_frames")
    guests = int(rng.integers(2, 6))
    written = tuple(sorted(int(p) for p in rng.choice(8, size=int(rng.integers(1, 5)),
                                                      replace=False)))
    read = tuple(sorted(int(p) for p in rng.choice(8, size=3, replace=False)))

    def answer(_: int) -> int:
        return _cow_counts(guests, read, written, seed)[0]["COW"]

    def mistakes(_: int) -> dict[int, str]:
        return {len(written): "that is one guest's copies; every guest writing gets its own",
                guests * len(set(written) - set(read)): "a page read first still gets a copy "
                                                        "when it is written"}

    def explain(_: int) -> str:
        counts, first = _cow_counts(guests, read, written, seed)
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
        answer, explain, seed, name="05.1", unit="frames", mistakes=mistakes,
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
    rng = exercise_rng(seed, "heap_share")
    share = float(rng.choice([0.1, 0.2, 0.4, 0.5, 0.7, 0.8]))  # the notebook sweeps 0, .3, .6, .9
    guests = int(rng.choice([2, 3, 5, 6, 8]))  # and runs 4 guests
    workload = ("shell", "webserver")[int(rng.integers(2))]

    @cache
    def comparison() -> Any:
        from xipmodel.host import Scenario, compare

        return compare(Scenario(guests=guests, workload=workload, heap_share=share,
                                variants=1, guest_ram_mib=64, seed=seed),
                       modes=("pagecache", "xip"))

    def answer(_: int) -> float:
        return round(100 * float(comparison().saving("xip")), 1)

    def explain(_: int) -> str:
        c = comparison()
        pc, xip = c.results["pagecache"], c.results["xip"]
        anon = {m: mib(r.bytes_by_category["anon"]) for m, r in c.results.items()}
        return "\n".join([
            f"compare(Scenario(guests={guests}, workload={workload!r}, heap_share={share}, "
            f"variants=1, guest_ram_mib=64, seed={seed}), modes=('pagecache', 'xip'))",
            f"  pagecache {mib(pc.host_bytes):.1f} MiB (anon {anon['pagecache']:.1f})",
            f"  xip       {mib(xip.host_bytes):.1f} MiB (anon {anon['xip']:.1f})",
            f"saving = 1 − {mib(xip.host_bytes):.1f} / {mib(pc.host_bytes):.1f} = "
            f"{100 * c.saving('xip'):.1f} %. The heap is private in both modes: the larger "
            "its share, the smaller XIP's saving."])

    return Exercise(
        f"{guests} guests with 64 MiB of RAM run the {workload} workload, the same run each "
        f"(variants=1, workload seed {seed}), with heaps making up {share:.0%} of the memory "
        f"a run touches (heap_share={share}). What percentage of host memory does XIP save "
        "over the page cache? (one decimal)",
        answer, explain, seed, tolerance=0.2, name="05.3", unit="%", kind="predict",
        hint="saving = 1 − xip / pagecache host memory; compare the two modes of that "
             "Scenario.")


def _cow_construct(seed: int) -> Exercise:
    rng = exercise_rng(seed, "cow_construct")
    guests = int(rng.integers(2, 6))
    read = tuple(sorted(int(p) for p in rng.choice(8, size=int(rng.integers(2, 5)),
                                                   replace=False)))
    secret = tuple(sorted(int(p) for p in rng.choice(8, size=int(rng.integers(1, 5)),
                                                     replace=False)))
    counts = _cow_counts(guests, read, secret, seed)[0]
    cow, shared = counts["COW"], counts["SHARED"]

    def accept(text: str) -> tuple[bool, str]:
        written = tuple(sorted({int(t) for t in re.findall(r"\d+", text)}))
        if not written or any(p > 7 for p in written):
            return False, "give the pages written, numbers from 0 to 7."
        got = _cow_counts(guests, read, written, seed)[0]
        if (got["COW"], got["SHARED"]) == (cow, shared):
            return True, f"{got['COW']} CoW frames and {got['SHARED']} shared frames."
        return False, (f"writing {', '.join(map(str, written))} leaves {got['COW']} CoW "
                       f"frames and {got['SHARED']} shared frames.")

    def answer(_: int) -> tuple[int, ...]:
        return secret

    def explain(_: int) -> str:
        return (f"Each guest copies every page it writes: {cow} CoW frames = {guests} × "
                f"{cow // guests} pages written. The shared segment holds every image page "
                f"any guest touched, read or written (a copy is made from the shared frame): "
                f"{shared} = |reads ∪ writes|, so {shared - len(read)} written pages lie "
                "outside the pages read.")

    return Exercise(
        f"{guests} guests mount /bin/app -o xip and map its 8 pages (0–7) privately "
        f"read-write. Each reads pages {', '.join(map(str, read))}, then writes the same "
        f"set of pages. Which pages must they write so that the host ends with exactly "
        f"{cow} copy-on-write frames and exactly {shared} shared-segment frames?",
        answer, explain, seed, name="05.4", kind="construct", accept=accept,
        hint="Count copies per guest, and which image pages any guest touched.")


def _ksm_open(seed: int) -> Exercise:
    rng = exercise_rng(seed, "ksm_open")
    guests = int(rng.integers(2, 9))
    workload = ("shell", "webserver")[int(rng.integers(2))]
    seconds = int(rng.choice([10, 20, 30, 60, 120]))
    scan = int(rng.choice([100, 200, 500]))

    @cache
    def runs() -> tuple[Any, Any]:
        from xipmodel.host import Host, Scenario

        s = Scenario(guests=guests, workload=workload, guest_ram_mib=64, seed=seed,
                     ksm_seconds=seconds, ksm_pages_to_scan=scan)
        return Host(s, "ksm").run(), Host(s, "xip").run()

    def answer(_: int) -> str:
        ksm, xip = runs()
        k, x = ksm.bytes_by_category, xip.bytes_by_category
        assert ksm.ksm is not None, "ksm_open: a ksm run has counters"
        return (f"KSM ends at {mib(ksm.host_bytes):.1f} MiB, XIP at {mib(xip.host_bytes):.1f} "
                f"MiB. KSM merges only after guests have read their binaries into their page "
                f"caches, and it merges everything identical, including pages read-around "
                f"fetched that no program used: its merged frames ({mib(k['ksm']):.1f} MiB "
                f"in the ksm category, rmap_items included: {ksm.ksm.rmap_items} × 64 B) hold "
                f"more than XIP's shared segment ({mib(x['shared']):.1f} MiB), which holds "
                f"only blocks some guest touched. Pages still volatile or unscanned stay "
                f"unmerged ({mib(k['page_cache']):.1f} MiB of page cache left). Waiting "
                "longer does not close the gap: over-fetch and rmap metadata remain.")

    def explain(_: int) -> str:
        ksm, xip = runs()
        k, x = ksm.bytes_by_category, xip.bytes_by_category
        rows = [f"  {c:<12}{mib(k[c]):>8.1f}{mib(x[c]):>8.1f}" for c in k if k[c] or x[c]]
        return "\n".join([f"{'category':<14}{'ksm':>8}{'xip':>8}   (MiB)", *rows,
                          f"ksmd: {ksm.ksm}"])

    return Exercise(
        f"{guests} guests with 64 MiB of RAM run {workload} (workload seed {seed}); ksmd "
        f"scans {scan} pages every 20 ms for {seconds} s after the last guest starts. KSM "
        "mode ends above XIP mode in host memory. Why? Which pages does KSM hold that XIP "
        "never does, and would more scanning time close the gap?",
        answer, explain, seed, name="05.5", kind="open",
        hint="Compare the two runs' bytes_by_category and the KSM counters.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "cow_frames": _cow_frames,
    "ksm_pass": _ksm_pass,
    "heap_share": _heap_share,
    "cow_construct": _cow_construct,
    "ksm_open": _ksm_open,
}
