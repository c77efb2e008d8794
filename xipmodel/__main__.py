"""The command line: `python -m xipmodel COMMAND ...` (also installed as `xipmodel`).

    demo                    the story in the terminal: populate, freeze, share, compare
    compare [options]       the same scenario in each mode, side by side (or --json);
                            --trace my.npz replays a recorded program in every guest,
                            --image IMG --program bash execs a program of an image
    image -o IMG PROGRAM…   an image of this machine's programs and what ld.so loads
    rollout [options]       a new version of the frozen image, rolled out guest by guest
    kernelcheck [options]   the running kernel and the model, page for page (root: own fs)
    quiz [--seed N] [--solve]   an OSTEP-style seeded question, and its worked answer
    key --notebook NN --seeds A-B   the teacher's key of a notebook's exercises
    info IMAGE              the superblock and block groups, like `dumpe2fs -h`
    ls IMAGE [PATH]         a directory listing with inode numbers, modes and sizes
    bmap IMAGE PATH         which image block holds each page of a file (holes shown)
    cat IMAGE PATH          a file's bytes to standard output

Bad input gets one clear line on standard error, naming the option (or the file) and
what is allowed, and exit status 2; nothing hangs (an image must be a regular file of at
most MAX_IMAGE_BYTES, a run within host.LIMITS). No traceback ever reaches the user:
an unexpected exception is a bug in xipmodel, reported in one line (exit status 70,
EX_SOFTWARE) that says so and where to report it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from queue import Empty
from typing import TYPE_CHECKING, Any, Final, NoReturn, TextIO

from xipmodel import kernelcheck, rollout
from xipmodel.cliargs import int_in, real_in
from xipmodel.errors import FileTooLargeError, ParameterError, XipModelError
from xipmodel.ext2 import Ext2Image
from xipmodel.ext2 import layout as L
from xipmodel.params import DEFAULT_KERNEL, KERNELS

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from xipmodel.host import Comparison, RunResult, Scenario


def _runs(blocks: Sequence[int]) -> list[tuple[int, int, int]]:
    """(first logical, count, first physical or 0) for each contiguous run of a block map."""
    runs: list[tuple[int, int, int]] = []
    for i, b in enumerate(blocks):
        if runs:
            start, count, phys = runs[-1]
            if (phys == 0 and b == 0) or (phys and b == phys + count):
                runs[-1] = (start, count + 1, phys)
                continue
        runs.append((i, 1, b))
    return runs


def format_block_map(blocks: Sequence[int]) -> str:
    """A block map as debugfs prints it: `(0-11):1234-1245, (12):hole, ...`."""
    parts = []
    for start, count, phys in _runs(blocks):
        logical = f"{start}" if count == 1 else f"{start}-{start + count - 1}"
        physical = "hole" if phys == 0 else (
            f"{phys}" if count == 1 else f"{phys}-{phys + count - 1}")
        parts.append(f"({logical}):{physical}")
    return ", ".join(parts) if parts else "(empty file)"


def cmd_info(img: Ext2Image) -> str:
    sb = img.superblock
    lines = [
        f"Filesystem volume name:   {img.volume_name or '<none>'}",
        f"Filesystem UUID:          {sb.s_uuid.hex()}",
        f"Filesystem magic number:  0x{sb.s_magic:04X}",
        f"Filesystem revision #:    {sb.s_rev_level}",
        "Filesystem features:      " + " ".join(
            L.feature_names(sb.s_feature_compat, L.FEATURE_COMPAT)
            + L.feature_names(sb.s_feature_incompat, L.FEATURE_INCOMPAT)
            + L.feature_names(sb.s_feature_ro_compat, L.FEATURE_RO_COMPAT)),
        f"Inode count:              {sb.s_inodes_count}",
        f"Block count:              {sb.s_blocks_count}",
        f"Free blocks:              {sb.s_free_blocks_count}",
        f"Free inodes:              {sb.s_free_inodes_count}",
        f"First block:              {sb.s_first_data_block}",
        f"Block size:               {img.block_size}",
        f"Blocks per group:         {sb.s_blocks_per_group}",
        f"Inodes per group:         {sb.s_inodes_per_group}",
        f"Inode size:               {img.inode_size}",
        f"First inode:              {img.first_ino}",
        f"Group count:              {img.groups_count}",
    ]
    for g in range(min(img.groups_count, 8)):
        d = img.group_desc(g)
        lines.append(f"Group {g}: block bitmap at {d.bg_block_bitmap}, inode bitmap at "
                     f"{d.bg_inode_bitmap}, inode table at {d.bg_inode_table}")
    if img.groups_count > 8:
        lines.append(f"... and {img.groups_count - 8} more groups")
    return "\n".join(lines)


def cmd_ls(img: Ext2Image, path: str) -> str:
    lines = []
    for name in sorted(img.listdir(path)):
        full = path.rstrip("/") + "/" + name
        st = img.lstat(full)
        extra = f" -> {img.readlink(full)}" if stat.S_ISLNK(st.st_mode) else ""
        lines.append(f"{st.st_ino:>8} {stat.filemode(st.st_mode)} {st.st_nlink:>3} "
                     f"{st.st_size:>10}  {name}{extra}")
    return "\n".join(lines)


def cmd_bmap(img: Ext2Image, path: str) -> str:
    blocks = img.block_map(path).tolist()
    st = img.stat(path)
    meta = ", ".join(f"({m.kind}):{m.block}" for m in img.metadata_blocks(path))
    return "\n".join([
        f"{path}: inode {st.st_ino}, {st.st_size} bytes, {len(blocks)} blocks of {img.block_size}",
        f"BLOCKS: {format_block_map(blocks)}",
        f"indirect: {meta or '(none)'}",
    ])


def cmd_demo(guests: int = 4, with_comparison: bool = True) -> str:
    """Populate and freeze a small image, run `guests` guests in each mode side by side; then
    (`with_comparison`) the `compare` table of a small scenario on the embedded distribution."""
    from xipmodel.ext2 import Symlink, build_image
    from xipmodel.mm.frames import FrameKind, HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.segment import SharedSegment
    from xipmodel.params import PAGE_SIZE

    sh_pages, libc_pages = 240, 460  # about the size of dash and libc.so.6
    tree: dict[str, bytes | Symlink] = {
        "/bin/sh": bytes(range(256)) * (sh_pages * PAGE_SIZE // 256),
        "/lib/libc.so.6": bytes(range(255, -1, -1)) * (libc_pages * PAGE_SIZE // 256),
        "/bin/bash": Symlink("sh"),
    }
    out = ["Populate, freeze, share: a read-only ext2 image, built in pure Python.", ""]
    with Ext2Image.open(build_image(tree, volume_name="xip-demo")) as img:
        out += [repr(img), "", cmd_ls(img, "/bin"), "", cmd_bmap(img, "/bin/sh"), ""]
        rows = []
        for xip in (False, True):
            host = HostMemory()
            segment = SharedSegment(host, img) if xip else None
            for gid in range(guests):
                guest = Guest(gid, host, 16384, img, segment=segment)
                mm = guest.new_process("sh")
                assert mm is not None, "demo: a fresh guest has free frames"
                guest.mmap(mm, 0x400000, sh_pages * PAGE_SIZE, "r-x", path="/bin/sh")
                guest.mmap(mm, 0x7F0000000000, libc_pages * PAGE_SIZE, "r-x",
                           path="/lib/libc.so.6")
                for page in range(0, sh_pages, 2):  # a run touches half of sh's text
                    guest.access(mm, 0x400000 + page * PAGE_SIZE, "x")
                for page in range(0, libc_pages, 3):  # and a third of libc's
                    guest.access(mm, 0x7F0000000000 + page * PAGE_SIZE, "x")
            kinds = host.counts_by_kind()
            file_frames = kinds[FrameKind.PAGECACHE] + kinds[FrameKind.SHARED]
            rows.append((("XIP (shared segment)" if xip else "page cache"),
                         host.allocated, file_frames))
        out.append(f"{guests} guests each run /bin/sh (its text and libc's) once:")
        out.append(f"  {'mode':22} {'host frames':>12} {'of which file pages':>20}")
        for name, total, files in rows:
            out.append(f"  {name:22} {total:>12} {files:>20}")
        saving = 1 - rows[1][1] / rows[0][1]
        out.append(f"  XIP saves {saving:.0%} of host memory: each binary page is held once, in")
        out.append("  the shared segment, instead of once per guest in its page cache. This demo")
        out.append("  has no heaps: real guests also hold private anonymous memory that XIP")
        out.append("  cannot share, so their saving is smaller.")
    if with_comparison:
        from xipmodel.host import MODES

        scenario = demo_scenario()
        out += ["", "The same story with programs exec'd from the embedded distribution, heaps",
                "included (`python -m xipmodel compare` runs any scenario):", "",
                format_comparison(run_comparison(scenario, MODES))]
    return "\n".join(out)


# ── compare: one scenario in each mode ────────────────────────────────────────────────────

MIB = 1 << 20


def parse_workload(text: str) -> str | tuple[tuple[str, float], ...]:
    """`webserver` → "webserver"; `webserver=0.8,shell=0.2` → the mix as (name, share) pairs.

    Each name one of the programs, each share a finite number >= 0, not all 0.
    """
    from xipmodel.workloads.synthetic import PROGRAMS

    programs = ", ".join(PROGRAMS)
    if "=" not in text and "," not in text:
        name = text.strip()
        if name not in PROGRAMS:
            raise ParameterError(f"--workload: {name!r} is not one of {programs} (or a mix "
                                 f"such as webserver=0.8,shell=0.2)")
        return name
    mix: list[tuple[str, float]] = []
    for part in text.split(","):
        name, eq, share = part.partition("=")
        try:
            value = float(share) if eq else 1.0
        except ValueError:
            raise ParameterError(f"--workload: share {share!r} of {name!r} is not a number"
                                 ) from None
        if not name.strip() or not math.isfinite(value) or value < 0:
            raise ParameterError(f"--workload: {part!r} is not NAME=SHARE with SHARE a "
                                 f"finite number >= 0")
        if name.strip() not in PROGRAMS:
            raise ParameterError(f"--workload: {name.strip()!r} is not one of {programs}")
        mix.append((name.strip(), value))
    if not any(share > 0 for _, share in mix):
        raise ParameterError(f"--workload: {text!r} has no share above 0")
    return tuple(mix)


def parse_share(text: str, option: str) -> tuple[str, float]:
    """`NAME|PATH[=SHARE]` → (NAME|PATH, SHARE), SHARE a finite number >= 0 (default 1).

    An "=" followed by something that is not a number belongs to the path.
    """
    spec, eq, share = text.rpartition("=")
    try:
        value = float(share) if eq else 1.0
    except ValueError:  # an "=" in a path, not a share
        eq = ""
    if not eq:
        spec, value = text, 1.0
    if not spec.strip() or not math.isfinite(value) or value < 0:
        raise ParameterError(f"{option}: {text!r} is not NAME|PATH[=SHARE] with SHARE a "
                             f"finite number >= 0")
    return spec, value


def parse_traces(values: Sequence[str]) -> list[tuple[str, float]]:
    """`--trace` values, `NAME|PATH[=SHARE]` each, as (workload name, share) pairs.

    NAME is a shipped trace; anything else is a trace file's path (checked when the
    scenario is made).
    """
    from xipmodel.workloads.recorded import TRACES
    from xipmodel.workloads.sources import TRACE_PREFIX

    out = []
    for text in values:
        spec, value = parse_share(text, "--trace")
        # A shipped name, else a path (even without a slash).
        out.append((TRACE_PREFIX + (spec if spec in TRACES else os.path.abspath(spec)), value))
    return out


IMAGE_PATH: Final = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin",
                     "/bin")  # where --program looks for a name without a slash (Debian's PATH)


def parse_programs(values: Sequence[str], image: bytes | None) -> list[tuple[str, float]]:
    """`--program` values, `NAME|PATH[=SHARE]` each, as ("exec:PATH", share) pairs.

    A NAME is looked up in IMAGE_PATH of the image (default: the embedded distribution);
    a PATH must be in the image. Else ParameterError naming --program and the value.
    """
    from xipmodel.distro import default_image_bytes
    from xipmodel.workloads.sources import EXEC_PREFIX

    out: list[tuple[str, float]] = []
    if not values:
        return out
    with Ext2Image.open(image if image is not None else default_image_bytes()) as img:
        for text in values:
            spec, value = parse_share(text, "--program")
            candidates = [spec] if "/" in spec else [f"{d}/{spec}" for d in IMAGE_PATH]
            found = next((c for c in candidates if img.exists(c)), None)
            if found is None or not found.startswith("/"):
                raise ParameterError(f"--program: {spec!r} is not in the image (looked for "
                                     f"{', '.join(candidates)})")
            out.append((EXEC_PREFIX + os.path.normpath(found), value))
    return out


def parse_modes(text: str) -> tuple[str, ...]:
    """`pagecache,xip` → ("pagecache", "xip"), each checked against host.MODES."""
    from xipmodel.host import MODES

    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    for mode in modes:
        if mode not in MODES:
            raise ParameterError(f"--modes: {mode!r} is not one of {', '.join(MODES)}")
    if not modes:
        raise ParameterError(f"--modes: {text!r} names no mode (choose from "
                             f"{', '.join(MODES)})")
    if len(set(modes)) != len(modes):
        raise ParameterError(f"--modes: {text!r} must name each mode at most once")
    return modes


MAX_IMAGE_BYTES: Final = 1 << 30  # an image `compare --image` loads (or builds) at most


def load_image_bytes(path: str) -> bytes:
    """An ext2 image file's bytes, or a host directory populated and frozen by build_image.

    The file must be a regular file (a FIFO would block, /dev/zero never ends) and the
    image, or the directory's files, at most MAX_IMAGE_BYTES; it is validated before any
    run. Else XipModelError naming --image, the path and the value.
    """
    from xipmodel.ext2 import build_image

    if os.path.isdir(path):
        _check_tree_size(path)
        name = L.fit_volume_name(os.path.basename(os.path.abspath(path)))
        return build_image(path, volume_name=name)
    with Ext2Image.open(path) as img:  # a regular file only, mapped and validated
        if img.size > MAX_IMAGE_BYTES:
            raise FileTooLargeError(f"--image {path}: {img.size} bytes, more than the "
                                    f"{MAX_IMAGE_BYTES} an image may have here", path)
        return bytes(img.buffer)


def _check_tree_size(top: str) -> None:
    """A directory to freeze holds at most MAX_IMAGE_BYTES of files (stops counting there)."""
    total = 0
    for dirpath, _, files in os.walk(top):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
            if total > MAX_IMAGE_BYTES:
                raise FileTooLargeError(f"--image {top}: its files hold more than the "
                                        f"{MAX_IMAGE_BYTES} bytes an image may have here", top)


# A worker process's queue for (mode, guests started) as its run goes (_worker_progress).
_progress_queue: Queue[tuple[str, int]] | None = None


def _worker_progress(queue: Queue[tuple[str, int]] | None) -> None:
    """The ProcessPoolExecutor's initializer: report guests started on `queue` (counts
    still unread when the worker exits are dropped: it never waits for the reader)."""
    global _progress_queue
    _progress_queue = queue
    if queue is not None:
        queue.cancel_join_thread()


def _run_mode(job: tuple[Scenario, str, bytes | None]) -> RunResult:
    """One mode of a comparison (also the ProcessPoolExecutor worker: everything pickles)."""
    from xipmodel.host import Host

    scenario, mode, image = job
    queue = _progress_queue
    tick = None
    if queue is not None:
        def tick(done: int, total: int) -> None:
            queue.put((mode, done))

    return Host(scenario, mode, Ext2Image.open(image) if image is not None
                else None).run(tick, ksmd_in_bulk=True)


class ProgressBar:
    """`\\r[#####     ] 12/32 guests (xip)` on a terminal, once a run has taken `after` seconds.

    Nothing at all when the stream is not a terminal (a log file, a pipe, a test).
    """

    def __init__(self, total: int, unit: str, stream: TextIO | None = None,
                 after: float = 1.0, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty()
        self.total, self.unit, self.after, self.width = max(total, 1), unit, after, width
        self.start = time.monotonic()
        self.shown = False

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled or time.monotonic() - self.start < self.after:
            return
        filled = self.width * min(done, self.total) // self.total
        bar = "#" * filled + " " * (self.width - filled)
        suffix = f" ({label})" if label else ""
        self.stream.write(f"\r[{bar}] {done}/{self.total} {self.unit}{suffix}\x1b[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run_comparison(scenario: Scenario, modes: Sequence[str], image: bytes | None = None,
                   jobs: int = 1, progress_stream: TextIO | None = None) -> Comparison:
    """`host.compare`, with an image of the caller's and a progress bar on a terminal.

    jobs > 1 runs the modes in a ProcessPoolExecutor, longest first (its workers count
    their guests to the bar through a queue).
    """
    from xipmodel.host import Comparison, longest_first

    if jobs < 1:
        raise ParameterError(f"--jobs: {jobs} must be at least 1")
    bar = ProgressBar(scenario.guests * len(modes), "guests", progress_stream)
    try:  # the bar cleared also when a mode fails: its error gets a line of its own
        if jobs > 1 and len(modes) > 1:
            started = dict.fromkeys(modes, 0)
            queue: Queue[tuple[str, int]] | None = multiprocessing.Queue() if bar.enabled else None
            with ProcessPoolExecutor(max_workers=min(jobs, len(modes)),
                                     initializer=_worker_progress, initargs=(queue,)) as pool:
                futures = {mode: pool.submit(_run_mode, (scenario, mode, image))
                           for mode in longest_first(modes)}
                while queue is not None and not all(f.done() for f in futures.values()):
                    with contextlib.suppress(Empty):
                        mode, started[mode] = queue.get(timeout=0.2)
                        bar.update(sum(started.values()), mode)
                results = [futures[mode].result() for mode in modes]
            bar.update(scenario.guests * len(modes))  # the last counts may still be queued
        else:
            from xipmodel.host import Host

            results = []
            for i, mode in enumerate(modes):
                base = i * scenario.guests

                def tick(done: int, total: int, base: int = base, mode: str = mode) -> None:
                    bar.update(base + done, mode)

                # ksmd's scan after the last guest is counted in bulk: the bar ends with it.
                host = Host(scenario, mode, Ext2Image.open(image) if image is not None else None)
                results.append(host.run(tick, ksmd_in_bulk=True))
    finally:
        bar.close()
    return Comparison(scenario, dict(zip(modes, results, strict=True)))


def _mib(n: int) -> str:
    return f"{n / MIB:.1f}"


# (label, how to get the figure from a RunResult as_dict(), format)
_ROWS: list[tuple[str, Callable[[dict[str, Any]], int], Callable[[int], str]]] = [
    ("  page cache (guests)", lambda d: d["page_cache_bytes"], _mib),
    ("  shared (image)", lambda d: d["shared_bytes"], _mib),
    ("  anonymous", lambda d: d["anon_bytes"], _mib),
    ("  CoW copies", lambda d: d["cow_bytes"], _mib),
    ("  page tables", lambda d: d["page_table_bytes"], _mib),
    ("  struct pages (DAX)", lambda d: d["struct_page_bytes"], _mib),
    ("  KSM (frames, rmap)", lambda d: d["ksm_bytes"], _mib),
    ("  other (free, zero)", lambda d: d["host_bytes"] - sum(
        d[k] for k in ("page_cache_bytes", "shared_bytes", "anon_bytes", "cow_bytes",
                       "page_table_bytes", "struct_page_bytes", "ksm_bytes")), _mib),
    ("major faults", lambda d: d["major_faults"], str),
    ("minor faults", lambda d: d["minor_faults"], str),
    ("disk reads (MiB)", lambda d: d["disk_read_bytes"], _mib),
]


def describe_scenario(s: Scenario, image_name: str | None = None) -> str:
    from xipmodel.workloads.sources import is_trace

    work = s.workload if isinstance(s.workload, str) else ", ".join(
        f"{n}={share:g}" for n, share in s.workload)
    variants = "each its own run" if s.variants is None else f"{s.variants} variants"
    traces = sum(is_trace(name) for name, _ in s.mix)
    if traces:
        variants = "traces: one run each" if traces == len(s.mix) else \
            f"{variants} of each program, one run of each trace"
    if image_name is None:
        image_name = "the embedded distribution" if not traces else (
            ("this machine's files (seeded stand-ins where they differ)"
             if s.real_files else "seeded stand-ins of the traces' files")
            + (" and the embedded distribution" if traces < len(s.mix) else ""))
    return (f"{s.guests} guest{'s' if s.guests != 1 else ''} × {work} ({variants}), "
            f"{s.guest_ram_mib} MiB RAM each, seed {s.seed}\n"
            f"ksmd scans {s.ksm_seconds:g} s more; image: {image_name}")


def format_comparison(comparison: Comparison, image_name: str | None = None) -> str:
    """The modes side by side, MiB with one decimal, for an 80-column terminal."""
    modes = list(comparison.results)
    rows = {m: r.as_dict() for m, r in comparison.results.items()}
    label_w, col_w = 22, max(10, *(len(m) + 1 for m in modes))
    if label_w + col_w * len(modes) > 80:
        col_w = max(9, (80 - label_w) // len(modes))

    def line(label: str, cells: Sequence[str]) -> str:
        return f"{label:<{label_w}}" + "".join(f"{c:>{col_w}}" for c in cells)

    files = real_files_report(comparison)
    out = [describe_scenario(comparison.scenario, image_name),
           *([f"files: {files['summary']}"] if files is not None else []), "",
           line("", modes), line("host memory (MiB)", [_mib(rows[m]["host_bytes"])
                                                       for m in modes])]
    if "pagecache" in rows:
        out.append(line("saving vs page cache", [
            "—" if m == "pagecache" else f"{comparison.saving(m):.1%}" for m in modes]))
    for label, get, fmt in _ROWS:
        if label.startswith("major"):
            out.append("")
        out.append(line(label, [fmt(get(rows[m])) for m in modes]))
    return "\n".join(out)


def comparison_json(comparison: Comparison) -> dict[str, Any]:
    """Comparison.as_dict() plus each mode's saving versus the page cache (None without it)."""
    out = comparison.as_dict()
    for mode, row in out["modes"].items():
        row["saving_vs_pagecache"] = (comparison.saving(mode)
                                      if "pagecache" in comparison.results else None)
    files = real_files_report(comparison)
    if files is not None:
        out["real_files"] = files
    return out


def real_files_report(comparison: Comparison) -> dict[str, Any] | None:
    """Which trace files were this machine's own (Scenario.real_files), else None."""
    report: dict[str, Any] | None = next(iter(comparison.results.values())).extra.get(
        "real_files")
    return report


def cmd_compare(args: argparse.Namespace) -> str:
    from xipmodel.host import MODES, Scenario

    if args.real_files and (args.image or not args.trace):
        raise ParameterError("--real-files puts this machine's files in the image built "
                             "for --trace" + (", not in --image's" if args.image else
                                              ", and no --trace is given"))
    modes = parse_modes(args.modes) if args.modes else MODES
    image = load_image_bytes(args.image) if args.image else None
    others = parse_traces(args.trace or []) + parse_programs(args.program or [], image)
    changes: dict[str, Any] = {"guests": args.guests, "seed": args.seed,
                               "workload": combine_workloads(args.workload, others)}
    for name in ("guest_ram_mib", "heap_share", "ksm_seconds", "kernel"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.variants is not None:
        changes["variants"] = args.variants or None
    if args.real_files:
        changes["real_files"] = True
    scenario = Scenario(**changes)
    comparison = run_comparison(scenario, modes, image, jobs=args.jobs)
    if args.json:
        return json.dumps(comparison_json(comparison), indent=2, sort_keys=False)
    return format_comparison(comparison, args.image)


def combine_workloads(workload: str | None, others: Sequence[tuple[str, float]]
                      ) -> str | tuple[tuple[str, float], ...]:
    """--workload and the --trace and --program pairs as one workload: a name, or a mix
    (default webserver)."""
    mix = list(others)
    if workload is not None or not mix:
        programs = parse_workload(workload or "webserver")
        mix = ([(programs, 1.0)] if isinstance(programs, str) else list(programs)) + mix
    if len(mix) == 1:
        return mix[0][0]
    return tuple(mix)


def cmd_image(programs: Sequence[str], output: str) -> str:
    """Write the image of `programs` (sysroot.binaries_image) and say what it holds."""
    from xipmodel.ext2 import File, Symlink, build_image
    from xipmodel.sysroot import binaries_tree

    tree = binaries_tree(programs)
    data = build_image(tree, output, volume_name="xipmodel-host", timestamp=0)
    files = [p for p, e in tree.items() if isinstance(e, File)]
    links = sum(isinstance(e, Symlink) for e in tree.values())
    size = sum(len(e.data) for e in tree.values() if isinstance(e, File))
    return (f"{output}: {len(files)} files ({size / MIB:.1f} MiB) and {links} symlinks, "
            f"image {len(data) / MIB:.1f} MiB\n" + "\n".join(f"  {p}" for p in sorted(files)))


def demo_scenario() -> Scenario:
    """The small scenario `demo` compares: four shell guests, quick in every mode."""
    from xipmodel.host import Scenario

    return Scenario(guests=4, workload="shell", guest_ram_mib=64, ksm_seconds=5.0)


EX_USAGE: Final = 2  # bad input: one line naming what was wrong
EX_SOFTWARE: Final = 70  # an unexpected exception: a bug in xipmodel (sysexits.h)
MAX_JOBS: Final = 64
BUG_REPORT: Final = ("this is a bug in xipmodel: please report it, with the command line "
                     "and this message, on the xipmodel issue tracker")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on standard error (and exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from xipmodel.host import (
        MAX_GUEST_RAM_MIB,
        MAX_GUESTS,
        MAX_HEAP_SHARE,
        MAX_PROGRAM_RUNS,
        MAX_SEED,
        Scenario,
    )
    from xipmodel.workloads.recorded import TRACES
    from xipmodel.workloads.synthetic import PROGRAMS

    max_ksm_seconds = Scenario().max_ksm_seconds  # the CLI keeps ksmd's rate and no spread
    parser = OneLineParser(
        prog="xipmodel", description="Execute-in-place versus the page cache, as a model.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="the story in the terminal")
    sub.add_parser("record", help="record a run with valgrind: record [-o OUT] -- PROG ARGS")
    c = sub.add_parser("compare", help="one scenario in each mode, side by side",
                       description="Run the same scenario in each mode and print host memory, "
                       "faults and disk reads side by side (MiB, one decimal).")
    c.add_argument("--guests", type=int_in(1, MAX_GUESTS), default=8, metavar="N",
                   help=f"guests (default 8; at most {MAX_GUESTS})")
    c.add_argument("--workload", default=None, metavar="NAME|MIX",
                   help=f"a program ({', '.join(PROGRAMS)}) or a mix such as "
                   "webserver=0.8,shell=0.2 (default webserver, unless --trace is given)")
    c.add_argument("--trace", action="append", default=None, metavar="NAME|PATH[=SHARE]",
                   help=f"replay a recorded trace: a shipped one ({', '.join(TRACES)}) or a "
                   ".npz from `xipmodel record`; repeat for a mix (with --workload: "
                   "traces and programs mixed)")
    c.add_argument("--real-files", action="store_true",
                   help="put this machine's own files in the traces' image where they have "
                   "the recorded size (default: seeded stand-ins, the same numbers "
                   "everywhere); says which files are stand-ins")
    c.add_argument("--program", action="append", default=None, metavar="NAME|PATH[=SHARE]",
                   help="exec a program of the image (a name is looked up in /usr/bin, /bin, "
                   "...) in the guests, run by a seeded model; repeat for a mix; see "
                   "`xipmodel image` for an image of this machine's binaries")
    c.add_argument("--modes", default=None, metavar="M,M",
                   help="modes to run, from pagecache,xip,ksm,dax (default all)")
    c.add_argument("--guest-ram", dest="guest_ram_mib", type=int_in(1, MAX_GUEST_RAM_MIB),
                   default=None, metavar="MIB", help="RAM per guest in MiB (default 512)")
    c.add_argument("--heap-share", type=real_in(0.0, MAX_HEAP_SHARE), default=None,
                   metavar="F", help="share of each run's touched memory that is heap, "
                   f"in [0, {MAX_HEAP_SHARE:g}]")
    c.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, metavar="N")
    c.add_argument("--variants", type=int_in(0, MAX_PROGRAM_RUNS), default=None, metavar="K",
                   help="distinct seeded runs per program, guests cycle through them "
                   "(default 4; 0: every guest its own run)")
    c.add_argument("--ksm-seconds", type=real_in(0.0, max_ksm_seconds), default=None,
                   metavar="S", help="how long ksmd keeps scanning after the last guest "
                   f"started (default 120; at most {max_ksm_seconds:g})")
    c.add_argument("--image", default=None, metavar="PATH",
                   help="an ext2 image file, or a directory to populate and freeze "
                   "(it must hold the programs' binaries)")
    c.add_argument("--kernel", default=None, choices=tuple(KERNELS),
                   help=f"the guests' kernel rules (default {DEFAULT_KERNEL.name})")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.add_argument("--jobs", type=int_in(1, MAX_JOBS), default=1, metavar="N",
                   help="run modes in N processes (default 1)")
    i = sub.add_parser("image", help="populate and freeze an image with this machine's "
                       "programs, their interpreter and libraries (as ld.so finds them)",
                       description="Put each program, its PT_INTERP and every DT_NEEDED "
                       "library (resolved as ld.so does; symlinks kept) in a frozen ext2 "
                       "image, for `compare --image IMG --program NAME`.")
    i.add_argument("-o", "--output", required=True, metavar="IMG", help="the image to write")
    i.add_argument("programs", nargs="+", metavar="PROGRAM",
                   help="a program's path, or a name found on PATH")
    k = sub.add_parser("kernelcheck", help="the model against this machine's kernel, "
                       "page for page (as root: loop-device filesystems of its own)",
                       description="Make the same accesses on fresh files of the running "
                       "kernel and in the model, and compare the cached pages (mincore).")
    kernelcheck.add_arguments(k)
    r = sub.add_parser("rollout", help="a new version of the frozen image, guest by guest",
                       description="Save a new version of the image and move the guests to "
                       "it one at a time: host memory while both versions are in use.")
    rollout.add_arguments(r)
    q = sub.add_parser("quiz", help="an OSTEP-style seeded question (--solve: the answer)")
    q.add_argument("--seed", type=int_in(0, MAX_SEED), default=0, metavar="N")
    q.add_argument("--kind", default=None, choices=("translate", "faults", "memory"),
                   help="which kind of question (default: chosen by the seed)")
    q.add_argument("--solve", action="store_true", help="also print the worked answer")
    from xipmodel.lab.exercises import key

    key.add_arguments(sub.add_parser("key", help="the teacher's key of a notebook's exercises "
                                     "(answers, worked solutions, model answers)"))
    for name, help_text, needs_path in [
        ("info", "superblock and groups, like dumpe2fs -h", False),
        ("ls", "list a directory of an image", False),
        ("bmap", "which image block holds each block of a file", True),
        ("cat", "write a file of an image to standard output", True),
    ]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("image", help="an ext2 image file")
        if name == "ls":
            p.add_argument("path", nargs="?", default="/")
        elif needs_path:
            p.add_argument("path")
    return parser


def _one_line(text: str) -> str:
    """A message on one line (a newline inside would look like a second message)."""
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (0, 2 for bad input, 70 for a bug).

    Every failure is one line on standard error, never a traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command = argv[0] if argv else "xipmodel"
    try:
        return _main(argv)
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2), already printed
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    except KeyboardInterrupt:
        print(f"xipmodel {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # not bad input (that is handled in _main): a bug
        where = ""
        tb = exc.__traceback__
        while tb is not None:
            where = f" at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}"
            tb = tb.tb_next
        print(_one_line(f"xipmodel {command}: internal error, {type(exc).__name__}: {exc}"
                        f"{where} ({BUG_REPORT})"), file=sys.stderr)
        return EX_SOFTWARE


def _main(argv: list[str]) -> int:
    """main() without the last-resort handler."""
    if argv and argv[0] == "record":
        # Everything after `--` is the recorded program's: argparse must not see it.
        from xipmodel.workloads.record import main_record

        return main_record(argv[1:], parser_class=OneLineParser)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            print(cmd_demo())
            return 0
        if args.command == "compare":
            print(cmd_compare(args))
            return 0
        if args.command == "image":
            print(cmd_image(args.programs, args.output))
            return 0
        if args.command == "kernelcheck":
            return kernelcheck.run_command(args)
        if args.command == "rollout":
            print(rollout.run_command(args))
            return 0
        if args.command == "key":
            from xipmodel.lab.exercises import key

            return key.run_command(args)
        if args.command == "quiz":
            from xipmodel.quiz import make_question

            print(make_question(args.seed, args.kind).text(solve=args.solve))
            return 0
        with Ext2Image.open(args.image) as img:
            if args.command == "info":
                print(cmd_info(img))
            elif args.command == "ls":
                print(cmd_ls(img, args.path))
            elif args.command == "bmap":
                print(cmd_bmap(img, args.path))
            elif args.command == "cat":
                sys.stdout.buffer.write(img.read(args.path))
    except (XipModelError, OSError) as exc:
        print(_one_line(f"xipmodel {args.command}: {exc}"), file=sys.stderr)
        return EX_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
