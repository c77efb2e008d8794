"""The exercises of notebooks/06_experiments_at_scale.ipynb (experiments at scale).

    firecracker  06.1  Firecracker's pmem/DAX memory bound
    break_even   06.2  guests from which XIP saves a target MiB

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

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
            f"{vms * (ram + image)} MB. (Firecracker docs/pmem.md: 2 × 128 + 100 ≤ 356 MB.)"])

    return Exercise(
        f"{vms} Firecracker VMs of {ram} MB each share one {image} MB root filesystem image "
        "through virtio-pmem with DAX. At most how many MB of host memory do they use?",
        answer, explain, seed, name="06.1", unit="MB",
        hint="The image is counted once, the VMs' RAM once per VM.")


def _break_even(seed: int) -> Exercise:
    rng = exercise_rng(seed, "break_even")
    workload = ("shell", "webserver")[int(rng.integers(2))]
    target = int(rng.choice([30, 50, 70] if workload == "webserver" else [5, 8, 12]))
    guests = 12

    @cache
    def savings() -> tuple[float, ...]:
        from xipmodel.host import Host, Scenario

        s = Scenario(guests=guests, workload=workload, variants=1, seed=seed)
        pc, xip = Host(s, "pagecache").run(), Host(s, "xip").run()
        return tuple(mib(pc.prefix(n).host_bytes - xip.prefix(n).host_bytes)
                     for n in range(1, guests + 1))

    def answer(_: int) -> int:
        return next(n for n, v in enumerate(savings(), 1) if v >= target)

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
        f"Every guest runs the same {workload} run (variants=1). From how many guests on does "
        f"XIP save at least {target} MiB of host memory over the page cache?",
        answer, explain, seed, name="06.2",
        hint="One run of each mode with enough guests; RunResult.prefix(n) gives every "
             "smaller host.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "firecracker": _firecracker,
    "break_even": _break_even,
}
