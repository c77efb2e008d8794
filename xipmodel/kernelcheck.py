"""Ask the running kernel: the same accesses on a real file and in the model, page for page.

The kernel of the machine the course runs on is the final judge of readahead and
fault-around. For each pattern (a few mmap faults, a run of read() calls) this
module makes a fresh file, checks that none of it is cached, makes the accesses
on the real file, waits for in-flight readahead to land, and reads which pages
the kernel's page cache holds with mincore(2). Then it makes the same accesses
in a model guest with the same parameters and compares the two sets::

    pattern ──► real file on this kernel ──► mincore ──► resident pages ─┐
           └──► model guest (same ra_pages, same file size) ─────────────┴─► agree?

Where the files live:
* as root, `scratch_filesystem` makes a filesystem of its own on a loop device
  (ext4 with data=journal: order-0 folios; ext4: large folios on 6.16+; ext2),
  sets its read_ahead_kb, and removes it all afterwards;
* otherwise, a directory the user names: its device's read_ahead_kb and its
  filesystem type decide the parameters, and `describe_directory` says which.

What it cannot observe it refuses in one line (KernelCheckError): no mincore, a
filesystem without readahead (tmpfs), a file that stays cached after
POSIX_FADV_DONTNEED. It never reports a pass it did not see.

Something else may reclaim the file's pages while a pattern runs: on machines
whose host runs DAMON with a `pageout` scheme (cloud VMs that overcommit
memory), readahead pages nobody touched are cold, unmapped file pages, and
vanish one by one within a second. mincore cannot tell such a page from one
that was never read, but the eviction leaves a shadow entry, and cachestat(2)
(Linux 6.5+) counts those. A run whose file has any evicted page is discarded
and made again on a fresh file; the table says how many were.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np

from xipmodel import mincore
from xipmodel.cliargs import int_in
from xipmodel.mincore import (
    MAP_PRIVATE,
    PROT_EXEC,
    PROT_READ,
    KernelCheckError,
)
from xipmodel.params import DEFAULT_KERNEL, KERNELS, PAGE_SHIFT, PAGE_SIZE, KernelProfile
from xipmodel.workloads.trace import PageTrace

__all__ = [
    "PATTERNS",
    "CheckResult",
    "FsInfo",
    "KernelCheckError",
    "Pattern",
    "describe_directory",
    "format_table",
    "kernel_residency",
    "model_residency",
    "ranges",
    "run_check",
    "scratch_filesystem",
]

MAP_BASE: Final = 0x7F00_0000_0000  # where the model maps the file (page-table aligned)
FAULT_AROUND_BYTES: Final = 65536  # /sys/kernel/debug/fault_around_bytes by default


@dataclass(frozen=True)
class Pattern:
    """One access pattern over a fresh file of `file_pages` pages.

    kind "mmap": map pages [map_start, map_start + map_pages) (all by default) with
    `prot` ("r--" or "r-x"), madvise `advice`, then read one byte of each page of
    `pages` (file page numbers), in order. kind "read": read() the file from its
    start in `step`-byte calls until `pages[0]` pages have been read.
    """

    name: str
    kind: str
    pages: tuple[int, ...]
    file_pages: int = 256
    prot: str = "r--"
    advice: str = "normal"
    map_start: int = 0
    map_pages: int | None = None
    step: int = PAGE_SIZE

    @property
    def mapped(self) -> tuple[int, int]:
        """The file pages [start, end) the mapping covers."""
        count = self.file_pages - self.map_start if self.map_pages is None else self.map_pages
        return self.map_start, self.map_start + count


def _seeded_pages(seed: int, n: int, file_pages: int) -> tuple[int, ...]:
    rng = np.random.default_rng(seed)
    return tuple(int(p) for p in rng.choice(file_pages, size=n, replace=False))


def _patterns() -> tuple[Pattern, ...]:
    base = [
        Pattern("mmap one page", "mmap", (100,)),
        Pattern("mmap first page", "mmap", (0,)),
        Pattern("mmap sequential 64", "mmap", tuple(range(64))),
        Pattern("mmap strided 16", "mmap", tuple(range(0, 256, 16))),
        Pattern("mmap random 12 (seed 1)", "mmap", _seeded_pages(1, 12, 256)),
        Pattern("mmap part of the file", "mmap", (45, 46, 70), map_start=40, map_pages=40),
    ]
    out = list(base)
    out += [dataclasses.replace(p, name=p.name.replace("mmap", "mmap exec"), prot="r-x")
            for p in base]
    out += [
        Pattern("mmap MADV_RANDOM", "mmap", (10, 100), advice="random"),
        Pattern("mmap exec MADV_RANDOM", "mmap", (10, 100), advice="random", prot="r-x"),
        Pattern("mmap MADV_SEQUENTIAL", "mmap", (0, 1, 2, 40), advice="sequential"),
        Pattern("read() 4 KiB x 5", "read", (5,)),
        Pattern("read() 4 KiB x 20", "read", (20,)),
        Pattern("read() 4 KiB x 64", "read", (64,)),
        Pattern("read() 1 KiB x 80", "read", (20,), step=1024),
    ]
    return tuple(out)


PATTERNS: Final[tuple[Pattern, ...]] = _patterns()


# --- the kernel side ---------------------------------------------------------------------------

MADV = {"normal": 0, "random": 1, "sequential": 2}
_ATTEMPTS: Final = 5


def _cold(libc: ctypes.CDLL, fd: int, pages: int, path: Path) -> None:
    """Drop the file from the page cache; refuse if it will not go."""
    for _ in range(3):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        if not mincore.resident(libc, fd, pages):
            return
        time.sleep(0.05)
    raise KernelCheckError(f"{path} stays cached after POSIX_FADV_DONTNEED; "
                           "this filesystem cannot start cold (tmpfs has no readahead)")


def _undisturbed(libc: ctypes.CDLL, fresh: Callable[[], Path], pages: int,
                 run: Callable[[int], None]) -> tuple[frozenset[int], int]:
    """(pages cached, runs discarded): `run` on a cold fresh file that nothing else evicted from."""
    for discarded in range(_ATTEMPTS):
        path = fresh()
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                _cold(libc, fd, pages, path)
                before = mincore.evicted(libc, fd)
                run(fd)
                seen = mincore.settled(libc, fd, pages)
                after = mincore.evicted(libc, fd)
            finally:
                os.close(fd)
        finally:
            path.unlink()
        if before is None or after is None or before == after == 0:
            return seen, discarded
    raise KernelCheckError(
        f"pages of the test file were evicted while it ran, {_ATTEMPTS} runs in a row: "
        f"something else is reclaiming page cache here ({_reclaimers()})")


def _reclaimers() -> str:
    """What may reclaim page cache behind the check's back, as far as sysfs tells."""
    found = []
    for state in Path("/sys/kernel/mm/damon/admin/kdamonds").glob("*/state"):
        with contextlib.suppress(OSError):
            if state.read_text().strip() == "on":
                actions = {a.read_text().strip() for a in
                           state.parent.glob("contexts/*/schemes/*/action")}
                found.append(f"DAMON kdamond {state.parent.name}: "
                             f"{', '.join(sorted(actions)) or 'monitoring'}")
    return "; ".join(found) or "memory pressure or another cgroup's limit"


def _fresh_file(directory: Path, pattern: Pattern, seed: int) -> Path:
    path = directory / f"xipmodel-kernelcheck-{os.getpid()}-{seed}.bin"
    data = np.random.default_rng(seed).integers(0, 256, pattern.file_pages << PAGE_SHIFT,
                                                 dtype=np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def kernel_residency(directory: str | os.PathLike[str], pattern: Pattern,
                     seed: int = 0) -> tuple[frozenset[int], int]:
    """Run `pattern` on a fresh file in `directory` on this kernel.

    Returns the pages it caches and how many runs were discarded because reclaim from
    outside evicted some of the file's pages meanwhile.
    """
    libc = mincore.libc()

    def run(fd: int) -> None:
        if pattern.kind == "read":
            _kernel_read(fd, pattern)
        else:
            _kernel_mmap(libc, fd, pattern)

    return _undisturbed(libc, lambda: _fresh_file(Path(directory), pattern, seed),
                        pattern.file_pages, run)


def _kernel_read(fd: int, pattern: Pattern) -> None:
    total = pattern.pages[0] << PAGE_SHIFT
    for pos in range(0, total, pattern.step):
        os.pread(fd, pattern.step, pos)


def _kernel_mmap(libc: ctypes.CDLL, fd: int, pattern: Pattern) -> None:
    start, end = pattern.mapped
    prot = PROT_READ | (PROT_EXEC if pattern.prot[2] == "x" else 0)
    addr = mincore.mmap_file(libc, fd, end - start, prot, MAP_PRIVATE, start)
    try:
        if pattern.advice != "normal":
            libc.madvise(ctypes.c_void_p(addr), (end - start) << PAGE_SHIFT,
                         MADV[pattern.advice])
        for page in pattern.pages:
            ctypes.string_at(addr + ((page - start) << PAGE_SHIFT), 1)
    finally:
        libc.munmap(ctypes.c_void_p(addr), (end - start) << PAGE_SHIFT)


# --- the filesystem the kernel side uses ------------------------------------------------------

@dataclass(frozen=True)
class FsInfo:
    """Where the kernel side's files live and what that means for the model's parameters."""

    directory: str
    fstype: str
    options: str
    read_ahead_kb: int
    device: str = ""
    driver: str = ""  # the driver serving it: ext2 may be served by ext4's (EXT4_USE_FOR_EXT2)

    @property
    def ra_pages(self) -> int:
        """bdi->ra_pages: read_ahead_kb in pages."""
        return self.read_ahead_kb * 1024 // PAGE_SIZE

    def large_folios_under(self, kernel: KernelProfile) -> bool:
        """Does the page cache hold large folios here under `kernel`?

        mapping_large_folio_support: ext4's driver since 6.16 unless data=journal (also
        for an ext2 it serves), XFS since 5.18; ext2's own driver never.
        """
        return kernel.large_folios(self.driver or self.fstype) \
            and "data=journal" not in self.options

    @property
    def large_folios(self) -> bool:
        """large_folios_under the newest kernel profile (this machine's, Linux 6.18)."""
        return self.large_folios_under(DEFAULT_KERNEL)

    def describe(self) -> str:
        folios = "large folios" if self.large_folios else "order-0 folios"
        served = f", {self.driver} driver" if self.driver not in ("", self.fstype) else ""
        return (f"{self.directory}: {self.fstype}{served} ({self.options or 'defaults'}) on "
                f"{self.device or 'an unknown device'}, read_ahead_kb {self.read_ahead_kb} "
                f"(ra_pages {self.ra_pages}), {folios}")


def _mount_of(path: Path) -> tuple[str, str, str, str, str]:
    """(mount point, fstype, super options + mount options, major:minor, source) of `path`."""
    best: tuple[str, str, str, str, str] | None = None
    real = str(path.resolve())
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields = left.split()
            point, devno, mount_opts = fields[4], fields[2], fields[5]
            fstype, source, super_opts = ([*right.split(), "", "", ""])[:3]
            inside = real == point or real.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) >= len(best[0])):
                best = (point, fstype, f"{mount_opts},{super_opts}", devno, source)
    if best is None:
        raise KernelCheckError(f"{path} is on no mounted filesystem")
    return best


def _read_ahead_kb(devno: str) -> int | None:
    base = Path("/sys/dev/block") / devno
    for candidate in (base / "queue" / "read_ahead_kb", base / ".." / "queue" / "read_ahead_kb"):
        with contextlib.suppress(OSError, ValueError):
            return int(candidate.read_text())
    return None


def describe_directory(directory: str | os.PathLike[str]) -> FsInfo:
    """The filesystem under `directory` and its device's readahead; refuses what can't be seen."""
    path = Path(directory)
    if not path.is_dir():
        raise KernelCheckError(f"{directory} is not a directory")
    point, fstype, options, devno, source = _mount_of(path)
    if fstype in ("tmpfs", "ramfs", "proc", "sysfs", "overlay", "fuse", "9p", "virtiofs"):
        raise KernelCheckError(
            f"{directory} is on {fstype}, which has no block-device readahead "
            "to compare with; name a directory on ext4, ext2 or xfs")
    kb = _read_ahead_kb(devno)
    if kb is None:
        raise KernelCheckError(f"cannot read read_ahead_kb of device {devno} "
                               f"under {point}")
    # ext2 and ext3 may be served by ext4's driver: its sysfs directory tells.
    driver = fstype
    if fstype in ("ext2", "ext3") and (Path("/sys/fs/ext4") / Path(source).name).is_dir():
        driver = "ext4"
    return FsInfo(str(path), fstype, options, kb, devno, driver)


@contextlib.contextmanager
def scratch_filesystem(fstype: str = "ext4", options: str = "", read_ahead_kb: int = 128,
                       size_mib: int = 64) -> Iterator[FsInfo]:
    """As root: a fresh filesystem on a loop device, mounted, removed again afterwards.

    `fstype` "ext4" or "ext2"; `options` mount options ("data=journal" for order-0
    folios on ext4). The loop device's read_ahead_kb is set explicitly.
    """
    if os.geteuid() != 0:
        raise KernelCheckError("making a loop-device filesystem needs root; "
                               "name a directory instead (--dir)")
    for tool in ("losetup", f"mkfs.{fstype}", "mount", "umount"):
        if shutil.which(tool, path=os.environ.get("PATH", "") + ":/sbin:/usr/sbin") is None:
            raise KernelCheckError(f"{tool} is missing (e2fsprogs, util-linux)")
    work = Path(tempfile.mkdtemp(prefix="xipmodel-kc-"))
    image, mnt = work / "fs.img", work / "mnt"
    mnt.mkdir()
    device = ""
    mounted = False
    env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/sbin:/usr/sbin"}

    def run(*argv: str) -> str:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise KernelCheckError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout.strip()

    try:
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        device = run("losetup", "--find", "--show", str(image))
        run(f"mkfs.{fstype}", "-q", "-F", device)
        run("mount", *(["-o", options] if options else []), device, str(mnt))
        mounted = True
        queue = Path("/sys/block") / Path(device).name / "queue" / "read_ahead_kb"
        queue.write_text(str(read_ahead_kb))
        info = describe_directory(mnt)
        yield dataclasses.replace(info, device=device)
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], env=env, check=False)
        if device:
            subprocess.run(["losetup", "-d", device], env=env, check=False)
        shutil.rmtree(work, ignore_errors=True)


# --- the model side ----------------------------------------------------------------------------

def model_residency(pattern: Pattern, ra_pages: int, kernel: KernelProfile | None = None,
                    large_folios: bool = False, seed: int = 0) -> frozenset[int]:
    """Run `pattern` in a fresh model guest; the file pages its page cache holds."""
    from xipmodel.ext2 import Ext2Image, build_image
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest

    size = pattern.file_pages << PAGE_SHIFT
    data = np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()
    image = Ext2Image.open(build_image({"/f": data}))
    guest = Guest(0, HostMemory(), 4 * pattern.file_pages + 1024, image, ra_pages=ra_pages,
                  fault_around_pages=FAULT_AROUND_BYTES // PAGE_SIZE,
                  kernel=kernel or DEFAULT_KERNEL, large_folios=large_folios)
    if pattern.kind == "read":
        total = pattern.pages[0] << PAGE_SHIFT
        for pos in range(0, total, pattern.step):
            guest.read("/f", pos, pattern.step)
    else:
        mm = guest.new_process("kernelcheck")
        assert mm is not None, "model_residency: no memory for a process"
        start, end = pattern.mapped
        guest.mmap(mm, MAP_BASE, (end - start) << PAGE_SHIFT, pattern.prot, path="/f",
                   offset=start << PAGE_SHIFT, advice=pattern.advice)
        for page in pattern.pages:
            guest.access(mm, MAP_BASE + ((page - start) << PAGE_SHIFT), "r")
    ino = image.lookup("/f")
    return frozenset(pgoff for (i, pgoff) in guest.cache.pages if i == ino)


# --- execve of a real binary ------------------------------------------------------------------

@dataclass(frozen=True)
class ExecPattern:
    """Run a real program (argv[0], copied to a fresh file) and compare its binary's pages.

    The kernel side execs the copy natively. The model side records the same command
    with valgrind (xipmodel record), builds an image of the very files it mapped, and
    replays it after exec's own accesses: the header reads (kernel_read) and padzero's
    write to the last file page of the data segment.
    """

    name: str
    argv: tuple[str, ...]


EXEC_PATTERNS: Final = (ExecPattern("execve bash -c :", ("/usr/bin/bash", "-c", ":")),)
EXEC_ALLOWANCE_PAGES: Final = 4
EXEC_ALLOWANCE_WHY: Final = (
    "valgrind's loader maps the binary and starts the client in ld.so itself, so the "
    "recording lacks a few of the kernel's own first touches and a read-around window "
    "can start a page or two off")


def _exec_copy(fs: FsInfo, pattern: ExecPattern) -> Path:
    path = Path(fs.directory) / f"xipmodel-kernelcheck-{os.getpid()}-{Path(pattern.argv[0]).name}"
    shutil.copyfile(pattern.argv[0], path)
    path.chmod(0o755)
    with open(path, "rb") as f:
        os.fsync(f.fileno())
    return path


def exec_check(fs: FsInfo, pattern: ExecPattern,
               kernel: KernelProfile = DEFAULT_KERNEL) -> CheckResult:
    """The execve pattern on this kernel and in the model (needs valgrind)."""
    from xipmodel.workloads.record import record

    libc = mincore.libc()
    path = _exec_copy(fs, pattern)
    argv = (str(path), *pattern.argv[1:])
    try:
        trace = record(argv, residency=False)  # first: valgrind reading the file caches it too
        pages = -(-path.stat().st_size // PAGE_SIZE)
        model = model_exec_residency(trace, str(path), fs.ra_pages, kernel,
                                     fs.large_folios_under(kernel))
    finally:
        path.unlink()

    def run(_fd: int) -> None:
        subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60, check=False)

    seen, discarded = _undisturbed(libc, lambda: _exec_copy(fs, pattern), pages, run)
    return CheckResult(pattern, seen, model, allowance=EXEC_ALLOWANCE_PAGES,
                       discarded=discarded)


def model_exec_residency(trace: PageTrace, program: str, ra_pages: int,
                         kernel: KernelProfile = DEFAULT_KERNEL,
                         large_folios: bool = False) -> frozenset[int]:
    """Replay a recorded run of `program` as execve would start it; its cached pages."""
    from xipmodel.elf import (
        BINPRM_BUF_SIZE,
        ELF_HEADER_BYTES,
        PF_W,
        PT_LOAD,
        ElfFile,
        kernel_read_headers,
    )
    from xipmodel.ext2 import Ext2Image, build_image
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.workloads.realfiles import read_host_file
    from xipmodel.workloads.trace import replay

    sizes = trace.meta.get("file_sizes", {})
    if not isinstance(sizes, dict):
        raise KernelCheckError(f"the recording of {program} has no file sizes")
    tree = {}
    for name, size in sizes.items():
        data, why = read_host_file(name, size)  # the very files the run mapped
        if data is None:
            raise KernelCheckError(f"{name} changed since it was recorded: {why}")
        tree[name] = data
    image = Ext2Image.open(build_image(tree))
    guest = Guest(0, HostMemory(), 1 << 16, image, ra_pages=ra_pages, kernel=kernel,
                  large_folios=large_folios, fault_around_pages=FAULT_AROUND_BYTES // PAGE_SIZE)
    mm = guest.new_process(trace.name)
    assert mm is not None, "model_exec_residency: no memory for a process"
    for m in trace.maps:
        guest.mmap(mm, m.start, m.length, m.prot, path=m.path, offset=m.offset,
                   shared=m.shared, name=m.name)
    elf = ElfFile.from_image(image, program)
    kernel_read_headers(guest, program, elf, BINPRM_BUF_SIZE, with_interp=True)
    interp = os.path.realpath(elf.interp) if elf.interp else ""
    if interp in sizes:
        kernel_read_headers(guest, interp, ElfFile.from_image(image, interp), ELF_HEADER_BYTES)
    for ph in elf.segments(PT_LOAD):  # padzero: the write that clears the tail of .data
        end = ph.p_offset + ph.p_filesz
        if ph.p_memsz > ph.p_filesz and ph.p_flags & PF_W:
            for m in trace.maps:
                if m.path == program and m.offset <= end < m.offset + m.length:
                    guest.access(mm, m.start + end - m.offset, "w")
    replay(guest, trace, mm)
    ino = image.lookup(program)
    return frozenset(pgoff for (i, pgoff) in guest.cache.pages if i == ino)


# --- both, side by side ------------------------------------------------------------------------

@dataclass
class CheckResult:
    """One pattern on both sides."""

    pattern: Pattern | ExecPattern
    kernel: frozenset[int]
    model: frozenset[int]
    repeats: list[frozenset[int]] = field(default_factory=list)
    allowance: int = 0  # pages the two may differ by, said and explained (execve)
    discarded: int = 0  # kernel runs made again: outside reclaim evicted pages meanwhile

    @property
    def differ(self) -> int:
        """Pages cached on one side only."""
        return len(self.kernel ^ self.model)

    @property
    def agree(self) -> bool:
        return self.differ <= self.allowance

    @property
    def noisy(self) -> bool:
        """Did the kernel cache different pages when the pattern ran again?"""
        return any(r != self.kernel for r in self.repeats)

    def as_dict(self) -> dict[str, object]:
        return {"pattern": self.pattern.name, "kernel": ranges(self.kernel),
                "model": ranges(self.model), "agree": self.agree, "noisy": self.noisy,
                "differ": self.differ, "allowance": self.allowance,
                "discarded": self.discarded}


def ranges(pages: frozenset[int] | Sequence[int]) -> str:
    """Pages as ranges: {0, 1, 2, 5} → "0-2,5" ("-" when empty)."""
    items = sorted(pages)
    if not items:
        return "-"
    out = []
    first = prev = items[0]
    for p in items[1:]:
        if p != prev + 1:
            out.append(f"{first}-{prev}" if prev > first else f"{first}")
            first = p
        prev = p
    out.append(f"{first}-{prev}" if prev > first else f"{first}")
    return ",".join(out)


def run_check(fs: FsInfo, patterns: Sequence[Pattern] = PATTERNS, repeats: int = 1,
              kernel: KernelProfile = DEFAULT_KERNEL,
              execs: Sequence[ExecPattern] = ()) -> list[CheckResult]:
    """Every pattern on this kernel (in `fs`) and in the model with `fs`'s parameters."""
    results = []
    for i, pattern in enumerate(patterns):
        runs = [kernel_residency(fs.directory, pattern, seed=i * 100 + r)
                for r in range(1 + repeats)]
        model = model_residency(pattern, fs.ra_pages, kernel, fs.large_folios_under(kernel),
                                seed=i)
        seen = [pages for pages, _ in runs]
        results.append(CheckResult(pattern, seen[0], model, seen[1:],
                                   discarded=sum(d for _, d in runs)))
    results += [exec_check(fs, pattern, kernel) for pattern in execs]
    return results


def format_table(fs: FsInfo, results: Sequence[CheckResult]) -> str:
    """The results as a plain-text table, one pattern a line."""
    lines = [f"kernel {os.uname().release}; {fs.describe()}", ""]
    width = max(len(r.pattern.name) for r in results)
    for r in results:
        verdict = "agree" if r.agree else "DIFFER"
        lines.append(f"{r.pattern.name:<{width}}  {verdict:<6}  kernel {ranges(r.kernel)}")
        if r.differ:
            lines.append(f"{'':<{width}}          model  {ranges(r.model)}")
        if r.allowance:
            lines.append(f"{'':<{width}}          ({r.differ} pages differ; allowed "
                         f"{r.allowance}: {EXEC_ALLOWANCE_WHY})")
        if r.noisy:
            lines.append(f"{'':<{width}}          (the kernel varied between repeats)")
        if r.discarded:
            lines.append(f"{'':<{width}}          ({r.discarded} kernel run(s) made again: "
                         "reclaim from outside evicted pages of the file meanwhile)")
    agreed = sum(r.agree for r in results)
    lines += ["", f"{agreed} of {len(results)} patterns agree"]
    return "\n".join(lines)


# --- the command line: python -m xipmodel kernelcheck ------------------------------------------

FILESYSTEMS: Final = {"ext4-journal": ("ext4", "data=journal"), "ext4": ("ext4", ""),
                      "ext2": ("ext2", "")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The kernelcheck command's options."""
    parser.add_argument("--dir", help="a directory on the filesystem to test (default, as "
                        "root: a fresh loop-device filesystem of its own)")
    parser.add_argument("--fs", choices=sorted(FILESYSTEMS), action="append",
                        help="as root: the loop-device filesystem(s) to make "
                        "(repeatable; default ext4-journal and ext4)")
    parser.add_argument("--read-ahead-kb", type=int_in(4, 65536), default=128,
                        help="as root: the loop device's read_ahead_kb (default 128)")
    parser.add_argument("--kernel", default=DEFAULT_KERNEL.name, choices=tuple(KERNELS),
                        help="the model's kernel profile (default the newest)")
    parser.add_argument("--repeats", type=int_in(0, 10), default=1,
                        help="run each pattern this many more times to detect noise")
    parser.add_argument("--no-exec", action="store_true",
                        help="leave out the execve pattern (it needs valgrind)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run_command(args: argparse.Namespace) -> int:
    """Run the check as the options say; print the table (or JSON). 1 if anything differs."""
    from xipmodel.params import kernel_profile

    kernel = kernel_profile(args.kernel)
    execs: tuple[ExecPattern, ...] = ()
    if not args.no_exec:
        if shutil.which("valgrind") is None:
            raise KernelCheckError("the execve pattern records the run with "
                                   "valgrind, which is missing (install it, or --no-exec)")
        execs = EXEC_PATTERNS
    reports: list[tuple[FsInfo, list[CheckResult]]] = []
    if args.dir is not None:
        fs = describe_directory(args.dir)
        reports.append((fs, run_check(fs, repeats=args.repeats, kernel=kernel, execs=execs)))
    else:
        for name in args.fs or ["ext4-journal", "ext4"]:
            fstype, options = FILESYSTEMS[name]
            with scratch_filesystem(fstype, options, args.read_ahead_kb) as fs:
                reports.append((fs, run_check(fs, repeats=args.repeats, kernel=kernel,
                                              execs=execs)))
    if args.json:
        print(json.dumps([{"kernel": os.uname().release, "model_kernel": kernel.name,
                           "filesystem": fs.describe(), "ra_pages": fs.ra_pages,
                           "large_folios": fs.large_folios,
                           "patterns": [r.as_dict() for r in results]}
                          for fs, results in reports], indent=1))
    else:
        print(f"model kernel profile: {kernel.name}")
        for fs, results in reports:
            print()
            print(format_table(fs, results))
    return 0 if all(r.agree for _, results in reports for r in results) else 1
