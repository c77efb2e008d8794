"""The exercises of notebooks/06_experiments_at_scale.ipynb (experiments at scale).

    firecracker   06.1  Firecracker's pmem/DAX memory bound (compute)
    break_even    06.2  guests from which XIP saves a target MiB (predict, then verify)
    share_target  06.3  a heap share at which XIP saves less than X % (construct)
    fit_open      06.4  what a linear fit of memory against guests says (open)

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import Final

from xipmodel.lab.exercises.core import Exercise, exercise_rng, mib

__all__ = ["EXERCISES"]


def _firecracker(seed: int) -> Exercise:
    rng = exercise_rng(seed, "firecracker")
    vms = int(rng.integers(2, 9))
    ram = int(rng.choice([128, 256, 512]))
    image = int(rng.choice([100, 200, 400]))

    def answer(_: int) -> int:
        return vms * ram + image

    def explain(_: int) -> str:
        return "\n".join([
            f"With DAX each VM maps the one pmem image: the image is at most {image} MB once, "
            f"each VM at most its {ram} MB of RAM: {vms} × {ram} + {image} = "
            f"{vms * ram + image} MB.",
            f"Without sharing every VM may also hold the image in its own page cache, and "
            f"the host a copy per VM: up to {vms} × ({ram} + {image}) = "
            f"{vms * (ram + image)} MB (our arithmetic). Firecracker's docs/pmem.md gives "
            "the shared case: two 128 MB VMs with a shared 100 MB pmem image use at most "
            "128 + 128 + 100 = 356 MB, against 256 MB for the two VMs without pmem."])

    return Exercise(
        f"{vms} Firecracker VMs of {ram} MB each share one {image} MB root filesystem image "
        "through virtio-pmem with DAX. At most how many MB of host memory do they use?",
        answer, explain, seed, name="06.1", unit="MB",
        hint="The image is counted once, the VMs' RAM once per VM.")


_TARGETS: Final = {"shell": (3, 4, 5, 6, 7, 8, 9, 10, 12),
                   "webserver": (10, 20, 30, 40, 50, 60, 70, 80, 90)}


def _break_even(seed: int) -> Exercise:
    rng = exercise_rng(seed, "break_even")
    workload = ("shell", "webserver")[int(rng.integers(2))]
    target = int(rng.choice(_TARGETS[workload]))
    guests = 16

    @cache
    def savings() -> tuple[float, ...]:
        from xipmodel.host import Host, Scenario

        s = Scenario(guests=guests, workload=workload, variants=1, seed=seed)
        pc, xip = Host(s, "pagecache").run(), Host(s, "xip").run()
        return tuple(mib(pc.prefix(n).host_bytes - xip.prefix(n).host_bytes)
                     for n in range(1, guests + 1))

    def answer(_: int) -> int:
        return next(n for n, v in enumerate(savings(), 1) if v >= target)

    def mistakes(_: int) -> dict[int, str]:
        first = savings()[0]
        return {int(-(-target // first)): "that divides by the first guest's saving; the "
                                           "first guest saves less (it pages the image in)"}

    def explain(_: int) -> str:
        n_even = answer(seed)
        return "\n".join([
            f"Host(Scenario(guests={guests}, workload={workload!r}, variants=1, seed={seed}), "
            "mode).run() in both modes; the saving pagecache − xip after n guests "
            "(RunResult.prefix):",
            *(f"  {n:2} guests: {v:6.1f} MiB" for n, v in enumerate(savings(), 1)
              if n <= n_even + 1),
            f"The saving grows linearly in the guests: {target} MiB is reached at "
            f"{n_even} guests."])

    return Exercise(
        f"Every guest makes the same {workload} run (variants=1, workload seed {seed}, "
        f"512 MiB of RAM). From how many guests on does XIP save at least {target} MiB of "
        "host memory over the page cache?",
        answer, explain, seed, name="06.2", unit="guests", kind="predict", mistakes=mistakes,
        hint="One run of each mode with enough guests; RunResult.prefix(n) gives every "
             "smaller host.")


_BELOW: Final = {"shell": (70, 72, 75, 78, 80), "webserver": (60, 65, 68, 70, 72, 75)}


@cache
def _xip_saving_at(guests: int, workload: str, share: float, seed: int) -> float:
    """XIP's saving (%) over the page cache with heaps making up `share` of a run."""
    from xipmodel.host import Scenario, compare

    c = compare(Scenario(guests=guests, workload=workload, heap_share=share, variants=1,
                         guest_ram_mib=64, seed=seed), modes=("pagecache", "xip"))
    return 100 * float(c.saving("xip"))


def _share_target(seed: int) -> Exercise:
    rng = exercise_rng(seed, "share_target")
    guests = int(rng.integers(2, 9))
    workload = ("shell", "webserver")[int(rng.integers(2))]
    below = int(rng.choice(_BELOW[workload]))

    def accept(text: str) -> tuple[bool, str]:
        m = re.search(r"\d*\.?\d+", text)
        if not m:
            return False, f"could not read {text.strip()!r} as a heap share."
        share = float(m.group())
        if "%" in text:
            share /= 100
        if not 0 <= share <= 0.95:
            return False, f"heap_share {share:g} is not in 0 … 0.95."
        got = _xip_saving_at(guests, workload, share, seed)
        if got < below:
            return True, f"with heap_share={share:g} XIP saves {got:.1f} %."
        return False, f"with heap_share={share:g} XIP still saves {got:.1f} %."

    def answer(_: int) -> float:
        # the saving falls as the heap share grows: the smallest share on a 0.05 grid
        lo, hi = 0, 19  # hi * 0.05 = 0.95 is below `below` (the test checks every seed)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if _xip_saving_at(guests, workload, mid / 20, seed) < below \
                else (mid + 1, hi)
        return lo / 20

    def explain(_: int) -> str:
        shares = sorted({0.0, 0.5, answer(seed), 0.95})
        rows = [f"  heap_share {h:.2f}: XIP saves "
                f"{_xip_saving_at(guests, workload, h, seed):.1f} %" for h in shares]
        return "\n".join(["compare(Scenario(guests=..., heap_share=h, variants=1, "
                          "guest_ram_mib=64, seed=...)) for a few h:", *rows,
                          "The heap is private in every mode: the more of a run is heap, the "
                          "smaller the share XIP can save."])

    return Exercise(
        f"{guests} guests with 64 MiB of RAM make the same {workload} run (variants=1, "
        f"workload seed {seed}). Give a heap_share (0 … 0.95) at which XIP saves less than "
        f"{below} % of the page cache's host memory.",
        answer, explain, seed, tolerance=0.01, name="06.3", kind="construct", accept=accept,
        hint="What can XIP not share?")


def _fit_open(seed: int) -> Exercise:
    import numpy as np

    rng = exercise_rng(seed, "fit_open")
    workload = ("shell", "webserver", "python")[int(rng.integers(3))]
    variants = int(rng.choice([1, 2, 4]))
    many = int(rng.choice([100, 200, 500, 1000, 2000]))

    @cache
    def fits() -> dict[str, tuple[float, float]]:
        from xipmodel.host import Host, Scenario

        s = Scenario(guests=16, workload=workload, variants=variants, seed=seed)
        ns = np.arange(1, 17)
        out = {}
        for mode in ("pagecache", "xip"):
            r = Host(s, mode).run()
            ys = np.array([mib(r.prefix(int(n)).host_bytes) for n in ns])
            slope, intercept = np.polyfit(ns, ys, 1)
            out[mode] = (float(slope), float(intercept))
        return out

    def answer(_: int) -> str:
        f = fits()
        (ps, pi), (xs, xi) = f["pagecache"], f["xip"]
        return (f"Fits over 1–16 guests: page cache {ps:.2f} MiB per guest + {pi:.2f} MiB, "
                f"XIP {xs:.2f} MiB per guest + {xi:.2f} MiB. The slope is what each further "
                "guest costs (its private pages, and in page-cache mode its own copy of the "
                "binaries); the intercept is what is paid once (XIP's shared segment). "
                f"Extrapolated to {many} guests: {ps * many + pi:,.0f} against "
                f"{xs * many + xi:,.0f} MiB. With variants={variants} the first {variants} "
                "guests of each program touch new blocks, so the XIP line bends at the "
                "start. The extrapolation assumes nothing else changes: no host memory "
                "pressure (no reclaim, no swapping), each guest's RAM big enough, one image "
                "for all, and the same programs; a real host would also pay each guest's "
                "kernel and its own memory.")

    def explain(_: int) -> str:
        return ("np.polyfit(guests, host MiB, 1) on RunResult.prefix(n) for n = 1 … 16 of "
                "one 16-guest run per mode, as in the notebook's 'Linear in guests' cell.")

    return Exercise(
        f"Fit host memory against the number of guests (1–16) for {workload} with "
        f"variants={variants} (workload seed {seed}), in page-cache and XIP mode. What do the "
        f"slope and the intercept mean? Extrapolate to {many} guests: what would you "
        "trust in that number, and what does the model leave out?",
        answer, explain, seed, name="06.4", kind="open",
        hint="Use RunResult.prefix and np.polyfit, as the notebook does.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "firecracker": _firecracker,
    "break_even": _break_even,
    "share_target": _share_target,
    "fit_open": _fit_open,
}
