"""Re-saving the segment: a new version of the frozen image, rolled out guest by guest.

A DCSS is updated by populating and saving it again (CP SAVESEG). A guest sees
the new version only when it re-adds the segment: stop its programs, unmount,
remove the dcssblk device (segment_unload), add it again (segment_load), mount,
start the programs again. Until then it keeps the old version's pages, and z/VM
holds both versions; when the last guest has left the old one, it is purged::

    host memory     all on v1 │ guests switch one by one │ all on v2
                              │ v1 resident ───────────┐ │
                              │ v2 resident  ┌─────────┴─┴──
                              t0       t0 + i × interval

    rollout(scenario, new_image, mode="xip") → Rollout   the timeline of the update
    image_version(["/usr/lib/…/libc.so.6"])  → Ext2Image  the distribution with files rebuilt

A new version is new memory: the model does not share a block between versions
even where both hold the same bytes (neither does z/VM: a saved segment is one
unit). Rollout.identical_resident counts what a block-level deduplication could
have saved. In page-cache mode the "update" is a new virtual disk: each guest
drops its cache at umount and reads the new files; its freed RAM stays resident
on the host and is reused, so nothing is held twice. In dax mode the old image
file's host page cache goes when the last guest closes it, and every guest
rebuilds its struct pages for the new device.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from xipmodel.distro import default_image, distro_tree, make_elf, resolve, spec
from xipmodel.errors import ParameterError, XipModelError
from xipmodel.ext2.builder import File, build_image
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import CATEGORIES, Host, RunResult, Scenario
from xipmodel.mm.segment import SharedSegment, segment_load, segment_unload
from xipmodel.mm.truncate import truncate_inode_pages_final
from xipmodel.params import KERNELS, PAGE_SIZE
from xipmodel.workloads.synthetic import PROGRAMS

__all__ = [
    "MAX_ROLLOUT_GUESTS",
    "ROLLOUT_COLUMNS",
    "ROLLOUT_MODES",
    "Rollout",
    "add_arguments",
    "format_rollouts",
    "image_version",
    "rollout",
    "run_command",
]

ROLLOUT_MODES: Final = ("pagecache", "xip", "dax")
# Every guest keeps its processes and page cache (no retiring): about 2 MiB of model
# state and 40 ms of running per guest and version.
MAX_ROLLOUT_GUESTS: Final = 256
# One timeline row per sample: when, which guest moved (-1: the start), how many guests
# use each version, host memory in all and held by each version's shared frames. Each
# guest gives two rows: when it has left the old version, and after it ran on the new.
ROLLOUT_COLUMNS: Final = ("time_ns", "guest", "on_old", "on_new", "host_bytes",
                          "old_bytes", "new_bytes")


@dataclass
class Rollout:
    """An update rolled out guest by guest: host memory before, during and after."""

    mode: str
    scenario: Scenario
    before: RunResult  # every guest ran on the old version
    after: RunResult  # every guest switched and ran on the new one
    timeline: npt.NDArray[np.int64]  # rows: samples; columns: ROLLOUT_COLUMNS
    timeline_bytes: npt.NDArray[np.int64]  # rows: samples; columns: host.CATEGORIES
    old_blocks: int  # resident blocks of the old version when the rollout began
    new_blocks: int  # resident blocks of the new version at the end
    image_blocks: int  # blocks of the new image
    identical_blocks: int  # image blocks with the same bytes in both versions
    identical_resident: int  # of them, resident in both versions at once (not shared)

    def column(self, name: str) -> npt.NDArray[np.int64]:
        """One column of the timeline, by its ROLLOUT_COLUMNS name."""
        return self.timeline[:, ROLLOUT_COLUMNS.index(name)]

    @property
    def peak_bytes(self) -> int:
        """The most host memory in use at any sample of the rollout."""
        return int(self.column("host_bytes").max())

    @property
    def overlap_ns(self) -> int:
        """How long both versions were in use (the first switch to the old one's purge)."""
        both = (self.column("on_old") > 0) & (self.column("on_new") > 0)
        times = self.column("time_ns")[both]
        return int(times[-1] - times[0]) if len(times) else 0

    def as_dict(self) -> dict[str, Any]:
        """Plain values (JSON-ready): the headline numbers and the timeline."""
        return {
            "mode": self.mode, "scenario": dataclasses.asdict(self.scenario),
            "before_bytes": self.before.host_bytes, "after_bytes": self.after.host_bytes,
            "peak_bytes": self.peak_bytes, "overlap_ns": self.overlap_ns,
            "old_blocks": self.old_blocks, "new_blocks": self.new_blocks,
            "image_blocks": self.image_blocks,
            "identical_blocks": self.identical_blocks,
            "identical_resident": self.identical_resident,
            "timeline": {c: self.column(c).tolist() for c in ROLLOUT_COLUMNS},
        }


def image_version(updated: list[str] | tuple[str, ...], version: int = 2) -> Ext2Image:
    """The default distribution with the files `updated` rebuilt: a new image version.

    A rebuilt file keeps its size, headers and dynamic section but every other byte
    changes (make_elf's filler drawn again), as a recompiled library's pages do. Files
    keep their sizes, so the builder places every file at the same blocks: unchanged
    files' blocks are identical in both versions.
    """
    if isinstance(updated, str) or not isinstance(updated, (list, tuple)) or not updated:
        raise ParameterError(f"image_version: updated {updated!r} is not a non-empty list "
                             f"of paths")
    if isinstance(version, bool) or not isinstance(version, int) or not 2 <= version <= 99:
        raise ParameterError(f"image_version: version {version!r} is not in 2..99")
    tree = distro_tree()
    for path in updated:
        try:
            entry = spec(path) if isinstance(path, str) else None
        except KeyError:
            entry = None
        if entry is None:
            raise ParameterError(f"image_version: {path!r} is not an ELF file of the "
                                 f"distribution")
        old = tree[resolve(path)]
        assert isinstance(old, File), f"image_version: {path} is not a regular file"
        rebuilt = make_elf(dataclasses.replace(entry, path=f"{entry.path}@v{version}"))
        tree[entry.path] = dataclasses.replace(old, data=rebuilt)
    return Ext2Image.open(build_image(tree, volume_name="xipmodel-distro", timestamp=0))


def rollout(scenario: Scenario, new_image: Ext2Image, *, mode: str = "xip",
            image: Ext2Image | None = None, start_ms: float = 1000.0,
            interval_ms: float = 1000.0) -> Rollout:
    """Run `scenario` on `image` (default: the distribution), then move every guest to
    `new_image`, one every `interval_ms`, the first `start_ms` after the last guest ran.

    Each guest, at its turn: its processes exit, it unmounts (its page cache of the
    files goes) and leaves the old segment, adds the new one and runs its program
    again (a new seeded run). The old segment is purged when its last guest left.
    """
    if mode not in ROLLOUT_MODES:
        raise ParameterError(f"rollout: mode {mode!r} is not one of {', '.join(ROLLOUT_MODES)}"
                             f" (ksmd's merging over an update is not modelled)")
    if scenario.guests > MAX_ROLLOUT_GUESTS:
        raise ParameterError(f"rollout: guests {scenario.guests} is more than "
                             f"{MAX_ROLLOUT_GUESTS} (every guest keeps its state)")
    for name, value in (("start_ms", start_ms), ("interval_ms", interval_ms)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not 0 <= value <= 1e9:
            raise ParameterError(f"rollout: {name} {value!r} is not a number in [0, 1e9]")
    if not isinstance(new_image, Ext2Image):
        raise ParameterError(f"rollout: new_image {new_image!r} is not an Ext2Image")
    for program, _ in scenario.mix:
        binary = PROGRAMS[program].binary
        try:
            new_image.lookup(binary)
        except XipModelError as exc:
            raise ParameterError(f"rollout: new_image has no {binary} for {program} "
                                 f"({exc})") from exc
    old_image = image if image is not None else default_image()
    host = Host(scenario, mode, old_image, retire_guests=False)
    before = host.run()
    old = host.segment
    new = (SharedSegment(host.memory, new_image, PAGE_SIZE, host.bus,
                         name="XIP2NEW" if old.pfn_only else f"{old.name} (new file)",
                         frame_kind=old.frame_kind)
           if old is not None else None)
    old_blocks = old.resident if old is not None else 0
    start = max(g.time for g in host.guests) + int(start_ms * 1e6)
    rows: list[list[int]] = []
    by_category: list[list[int]] = []

    def sample(time: int, gid: int, on_old: int, on_new: int) -> None:
        bytes_now = host.result().bytes_by_category
        rows.append([time, gid, on_old, on_new, sum(bytes_now.values()),
                     (old.resident if old is not None else 0) * PAGE_SIZE,
                     (new.resident if new is not None else 0) * PAGE_SIZE])
        by_category.append([bytes_now[c] for c in CATEGORIES])

    sample(start, -1, scenario.guests, 0)
    identical_resident = 0
    host.image = new_image
    for i, guest in enumerate(host.guests):
        guest.time = max(guest.time, start + int(i * interval_ms * 1e6))
        for mm in list(guest.procs.values()):
            guest.exit_process(mm)
        truncate_inode_pages_final(guest)  # umount
        if old is not None and new is not None:
            segment_unload(guest)
            if i == scenario.guests - 1:  # the last user left: z/VM purges the old version
                identical_resident = _identical_resident(old, new)
                old.purge()
        sample(guest.time, guest.gid, scenario.guests - i - 1, i)  # between versions
        if new is not None:
            if not segment_load(guest, new):
                raise ParameterError(f"rollout: guest {guest.gid}'s RAM cannot hold the "
                                     f"new device's struct pages")
        else:
            guest.disk = new_image  # a new virtual disk: nothing shared to leave
        program, variant = scenario.program_of(guest.gid), scenario.variant_of(guest.gid)
        for run in range(scenario.runs_per_guest):
            # A new seeded run (the program restarted), the same for guests of one variant.
            entropy = [scenario.seed, variant, run, 2, *program.encode()]
            seed = int(np.random.SeedSequence(entropy).generate_state(1)[0])
            host.run_program(guest, program, seed)
        sample(guest.time, guest.gid, scenario.guests - i - 1, i + 1)
    return Rollout(mode, scenario, before, host.result(), np.array(rows, dtype=np.int64),
                   np.array(by_category, dtype=np.int64), old_blocks,
                   new.resident if new is not None else 0, new_image.superblock.s_blocks_count,
                   _identical_blocks(old_image, new_image), identical_resident)


def _identical_blocks(a: Ext2Image, b: Ext2Image) -> int:
    """Blocks with the same number and the same bytes in both images."""
    n = min(a.superblock.s_blocks_count, b.superblock.s_blocks_count)
    return sum(a.read_block(i) == b.read_block(i) for i in range(n))


def _identical_resident(old: SharedSegment, new: SharedSegment) -> int:
    """Blocks resident in both versions whose bytes are equal: held twice, not shared."""
    n = min(old.blocks, new.blocks)
    both = np.flatnonzero((old.frame_of[:n] >= 0) & (new.frame_of[:n] >= 0))
    return sum(old.image.read_block(int(b)) == new.image.read_block(int(b)) for b in both)


# --- the command line: python -m xipmodel rollout ------------------------------------------

MIB: Final = 1 << 20
DEFAULT_UPDATE: Final = "/usr/lib/x86_64-linux-gnu/libc.so.6"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The rollout command's options (--guests checked in run_command; one line each)."""
    parser.add_argument("--guests", type=int, default=8, metavar="N",
                        help=f"guests (default 8; at most {MAX_ROLLOUT_GUESTS})")
    parser.add_argument("--workload", default="webserver", metavar="NAME",
                        help="the program every guest runs (default webserver)")
    parser.add_argument("--update", action="append", metavar="PATH",
                        help=f"a file the new version rebuilds (repeatable; default "
                        f"{DEFAULT_UPDATE})")
    parser.add_argument("--mode", action="append", choices=ROLLOUT_MODES,
                        help="mode(s) to roll out in (repeatable; default xip and pagecache)")
    parser.add_argument("--interval-ms", type=float, default=1000.0, metavar="MS",
                        help="time between two guests' switches (default 1000)")
    parser.add_argument("--seed", type=int, default=0, metavar="N")
    parser.add_argument("--kernel", default=None, choices=tuple(KERNELS),
                        help="the guests' kernel profile")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run_command(args: argparse.Namespace) -> str:
    """Roll the update out in each mode the options name; the timelines as text or JSON."""
    if not 1 <= args.guests <= MAX_ROLLOUT_GUESTS:
        raise ParameterError(f"--guests {args.guests} is not in 1..{MAX_ROLLOUT_GUESTS}")
    changes: dict[str, Any] = {"guests": args.guests, "workload": args.workload,
                               "seed": args.seed}
    if args.kernel is not None:
        changes["kernel"] = args.kernel
    scenario = Scenario(**changes)
    updated = tuple(args.update or (DEFAULT_UPDATE,))
    new_image = image_version(updated)
    modes = list(dict.fromkeys(args.mode or ("xip", "pagecache")))
    results = [rollout(scenario, new_image, mode=m, interval_ms=args.interval_ms)
               for m in modes]
    if args.json:
        return json.dumps({"updated": updated, "rollouts": [r.as_dict() for r in results]},
                          indent=2)
    return format_rollouts(results, updated)


def format_rollouts(results: list[Rollout], updated: tuple[str, ...]) -> str:
    """Each mode's timeline (MiB, one decimal) and its headline numbers."""
    first = results[0]
    lines = [f"A new image version ({', '.join(p.rsplit('/', 1)[-1] for p in updated)} "
             f"rebuilt) rolled out over {first.scenario.guests} guests, one at a time.",
             f"Blocks identical in both versions: {first.identical_blocks} of "
             f"{first.image_blocks}",
             "(a new version is new memory: the model, like z/VM, shares none of them)."]
    for r in results:
        lines += ["", f"{r.mode}:", f"{'t (s)':>8}{'guest':>7}{'on old':>8}{'on new':>8}"
                  f"{'host MiB':>10}{'old MiB':>9}{'new MiB':>9}"]
        t0 = int(r.column("time_ns")[0])
        for row in r.timeline.tolist():
            time, gid, on_old, on_new, host, old, new = row
            who = "-" if gid < 0 else str(gid)
            lines.append(f"{(time - t0) / 1e9:8.2f}{who:>7}{on_old:>8}{on_new:>8}"
                         f"{host / MIB:10.1f}{old / MIB:9.1f}{new / MIB:9.1f}")
        lines.append(f"  before {r.before.host_bytes / MIB:.1f} MiB, peak "
                     f"{r.peak_bytes / MIB:.1f} MiB, after {r.after.host_bytes / MIB:.1f} MiB; "
                     f"both versions in use {r.overlap_ns / 1e9:.1f} s")
        if r.mode == "pagecache":
            lines.append("  (no segment: each guest's page cache holds its own copies)")
        else:
            lines.append(f"  held twice though identical: {r.identical_resident} blocks "
                         f"({r.identical_resident * PAGE_SIZE / MIB:.1f} MiB)")
    return "\n".join(lines)
