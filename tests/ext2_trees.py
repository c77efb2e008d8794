"""Shared helpers for the ext2 reader tests: source trees, e2fsprogs wrappers, debugfs parsing.

Everything here is oracle-side: it builds directory trees on the host, turns them into
images with `mke2fs -d`, and asks `debugfs` what is in them. Nothing here imports the
reader, so a reader bug cannot hide in the expected values.

A source tree (`build_full_tree`) holds every kind of file an ext2 reader must get right::

    /empty, /small.txt, /sizes/size_N        empty, tiny and boundary-sized files
    /ind.bin, /dind.bin, /dind_sparse.bin    cross direct→IND and IND→DIND (1, 2, 4 KiB blocks)
    /tind_sparse.bin                         ~70 MB sparse: reaches TIND with 1 KiB blocks
    /huge_sparse.bin                         2.5 GiB sparse (only with huge=True): large_file
    /holes/{start,middle,end,all}.bin        holes at the start, in the middle, at the end
    /links/…                                 fast, slow, 58/59/60-byte, absolute, dangling, chains
    /a/real/b.txt, /a/link → real            a symlink in the middle of a path
    /hard/{one,two,three}, /hard_outside     hard links
    /bigdir/ (3,000 entries)                 a large directory
    /names/…                                 255-byte, UTF-8, emoji and invalid-UTF-8 names
    /nested/x/y/z/w/deep.txt, /empty_dir     nested and empty directories
    /modes/…, /special/…                     permission bits, owners, a FIFO, a device node
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import resource
import signal
import stat
import subprocess
import tempfile
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from conftest import need_tool

FAKE_TIME = "1500000000"  # E2FSPROGS_FAKE_TIME: mke2fs's own timestamps
UUID = "0b5e55ed-0123-4567-89ab-cdef01234567"
MTIME = 1_400_000_000  # every source file's mtime, so images are reproducible
BIGDIR_ENTRIES = 3000
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

# --- tools ---------------------------------------------------------------------


def _env() -> dict[str, str]:
    return {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME, "DEBUGFS_PAGER": "__none__",
            "PAGER": "cat"}


def mke2fs(src: Path | None, img: Path, size: str, options: Sequence[str] = (),
           fs_type: str = "ext2") -> Path:
    """`mke2fs -q -F -t TYPE OPTIONS [-d SRC] IMG SIZE` with fixed time, UUID and root owner."""
    args = [need_tool("mke2fs"), "-q", "-F", "-t", fs_type, "-U", UUID,
            "-E", "root_owner=0:0", *options]
    if src is not None:
        args += ["-d", str(src)]
    args += [str(img), size]
    subprocess.run(args, check=True, env=_env(), capture_output=True)
    return img


def e2fsck_clean(img: Path) -> tuple[int, str]:
    """`e2fsck -fn IMG`: (exit code, output). 0 means e2fsck found nothing to fix."""
    proc = subprocess.run([need_tool("e2fsck"), "-fn", str(img)], env=_env(),
                          capture_output=True, text=True, errors="replace")
    return proc.returncode, proc.stdout + proc.stderr


def debugfs_quote(path: bytes) -> bytes:
    """A path as one debugfs argument (debugfs splits on blanks unless double-quoted)."""
    assert b'"' not in path and b"\n" not in path, path
    return b'"' + path + b'"'


def debugfs_batch(img: Path, commands: Iterable[bytes]) -> list[bytes]:
    """Run all `commands` in one `debugfs -f CMDFILE IMG`; return each command's stdout.

    debugfs echoes every command as "debugfs: CMD" before its output, which is
    how the output is split back into one chunk per command.
    """
    commands = list(commands)
    with tempfile.NamedTemporaryFile("wb", suffix=".debugfs", delete=False) as f:
        f.write(b"\n".join(commands) + b"\n")
        cmdfile = f.name
    try:
        proc = subprocess.run([need_tool("debugfs"), "-f", cmdfile, str(img)], env=_env(),
                              capture_output=True, check=True)
    finally:
        os.unlink(cmdfile)
    chunks = re.split(rb"^debugfs: .*\n", proc.stdout, flags=re.M)
    out = chunks[1:]
    assert len(out) == len(commands), (len(out), len(commands), proc.stderr[-500:])
    return out


def dumpe2fs_header(img: Path) -> dict[str, str]:
    """`dumpe2fs -h IMG` as {field: value}."""
    proc = subprocess.run([need_tool("dumpe2fs"), "-h", str(img)], env=_env(),
                          capture_output=True, text=True, check=True)
    fields = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def backup_superblocks(img: Path) -> list[int]:
    """Block numbers of the backup superblocks, from `dumpe2fs IMG` ("Backup superblock at N")."""
    proc = subprocess.run([need_tool("dumpe2fs"), str(img)], env=_env(),
                          capture_output=True, text=True, check=True)
    return [int(m) for m in re.findall(r"Backup superblock at (\d+)", proc.stdout)]


# --- debugfs output parsing ------------------------------------------------------

_RUN = re.compile(r"\((\d+)(?:-(\d+))?\):(\d+)(?:-(\d+))?")
_META = re.compile(r"\((IND|DIND|TIND)\):(\d+)")


def parse_blocks_line(line: str) -> tuple[dict[int, int], list[tuple[str, int]]]:
    """Parse a debugfs BLOCKS line into ({logical: physical}, [(IND|DIND|TIND, block)]).

    `(0):17308, (1-11):17309-17319, (IND):2948, (12-267):2949-3204` → logical blocks
    0..267 mapped run by run; the bracketed IND/DIND/TIND entries are the indirect
    blocks themselves, which hold pointers, not file data.
    """
    mapping: dict[int, int] = {}
    meta: list[tuple[str, int]] = []
    for entry in (e.strip() for e in line.split(",")):
        if not entry:
            continue
        m = _META.fullmatch(entry)
        if m:
            meta.append((m.group(1), int(m.group(2))))
            continue
        m = _RUN.fullmatch(entry)
        if m is None:
            raise ValueError(f"parse_blocks_line: cannot parse entry {entry!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        plo = int(m.group(3))
        phi = int(m.group(4)) if m.group(4) else plo
        if hi - lo != phi - plo:
            raise ValueError(f"parse_blocks_line: uneven run {entry!r}")
        for i in range(hi - lo + 1):
            mapping[lo + i] = plo + i
    return mapping, meta


def block_map_array(mapping: dict[int, int], size: int, block_size: int) -> np.ndarray:
    """One int64 per logical block below ceil(size/block_size): physical block, 0 = hole."""
    n = -(-size // block_size)
    out = np.zeros(n, dtype=np.int64)
    for logical, physical in mapping.items():
        if logical < n:  # blocks past i_size (e2fsck complains) are not part of the map
            out[logical] = physical
    return out


@dataclass
class DebugfsStat:
    """What `debugfs stat` says about one inode."""

    ino: int
    type: str  # "regular", "directory", "symlink", "FIFO", "character special", ...
    mode: int  # permission bits incl. setuid/setgid/sticky (debugfs prints 4 octal digits)
    flags: int
    uid: int
    gid: int
    size: int
    links: int
    mtime: int
    blocks: dict[int, int] = field(default_factory=dict)
    meta: list[tuple[str, int]] = field(default_factory=list)
    fast_link: str | None = None


_STAT_HEAD = re.compile(rb"Inode: (\d+)\s+Type: ([\w ]+?)\s+Mode:\s+(\d+)\s+Flags: (0x[0-9a-f]+)")


def parse_debugfs_stat(text: bytes) -> DebugfsStat | None:
    """Parse one `stat` command's output; None when debugfs found no such path."""
    head = _STAT_HEAD.search(text)
    if head is None:
        return None

    def num(pattern: bytes) -> int:
        m = re.search(pattern, text)
        assert m is not None, (pattern, text[:400])
        return int(m.group(1), 0)

    st = DebugfsStat(
        ino=int(head.group(1)), type=head.group(2).decode(), mode=int(head.group(3), 8),
        flags=int(head.group(4), 16),
        uid=num(rb"User:\s+(\d+)"), gid=num(rb"Group:\s+(\d+)"), size=num(rb"Size: (\d+)"),
        links=num(rb"Links: (\d+)"), mtime=num(rb"mtime: (0x[0-9a-f]+)"),
    )
    m = re.search(rb"BLOCKS:\n(.*)\n", text)
    if m:
        st.blocks, st.meta = parse_blocks_line(m.group(1).decode())
    m = re.search(rb'Fast link dest: "(.*)"', text)
    if m:
        st.fast_link = m.group(1).decode("utf-8", "surrogateescape")
    return st


def debugfs_stats(img: Path, paths: Sequence[bytes]) -> dict[bytes, DebugfsStat | None]:
    """`debugfs stat` of every path in one debugfs run."""
    outs = debugfs_batch(img, [b"stat " + debugfs_quote(p) for p in paths])
    return {p: parse_debugfs_stat(o) for p, o in zip(paths, outs, strict=True)}


DEBUGFS_TYPE = {
    stat.S_IFREG: "regular", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "FIFO", stat.S_IFCHR: "character special", stat.S_IFBLK: "block special",
    stat.S_IFSOCK: "socket",
}

# --- source trees -----------------------------------------------------------------


def payload(seed: int, n: int) -> bytes:
    """n deterministic pseudo-random bytes (never all zero, so mke2fs keeps every block)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(1, 256, size=n, dtype=np.uint8)
    return data.tobytes()


def write_sparse(path: Path, size: int, chunks: Iterable[tuple[int, bytes]]) -> None:
    """A file of `size` bytes holding `chunks` at their offsets and holes elsewhere."""
    with open(path, "wb") as f:
        for offset, data in chunks:
            f.seek(offset)
            f.write(data)
        f.truncate(size)


def _symlink_padded(target_tail: str, length: int) -> str:
    """A relative target of exactly `length` bytes: "./././" padding, then `target_tail`."""
    pad = length - len(target_tail.encode())
    assert pad >= 0 and pad % 2 == 0, (target_tail, length)
    return "./" * (pad // 2) + target_tail


def build_full_tree(root: Path, *, tind: bool = True, huge: bool = False) -> Path:
    """Populate `root` with every kind of file (see the module docstring); returns root."""
    root.mkdir(parents=True)
    (root / "empty").write_bytes(b"")
    (root / "small.txt").write_bytes(b"hello, ext2\n")
    sizes = root / "sizes"
    sizes.mkdir()
    for i, n in enumerate([1, 59, 60, 511, 1023, 1024, 1025, 2048, 4095, 4096, 4097,
                           12 * 1024, 12 * 1024 + 1, 12 * 4096 + 1, 65536, 65537]):
        (sizes / f"size_{n}").write_bytes(payload(100 + i, n))
    # Direct → IND for every block size up to 4 KiB; IND → DIND with 1 KiB blocks (268 blocks).
    (root / "ind.bin").write_bytes(payload(1, 13 * 4096 + 100))
    (root / "dind.bin").write_bytes(payload(2, 300_000))
    # IND → DIND with 2 KiB (524 blocks) and 4 KiB (1036 blocks) blocks, mostly holes.
    write_sparse(root / "dind_sparse.bin", 4_500_000, [
        (0, payload(3, 8192)), (1_073_152 - 3000, payload(4, 6000)),
        (4_243_456 - 5000, payload(5, 10_000)), (4_500_000 - 777, payload(6, 777))])
    if tind:
        # 12 + 256 + 65,536 blocks = 67,383,296 bytes with 1 KiB blocks; beyond is TIND.
        write_sparse(root / "tind_sparse.bin", 70_000_000, [
            (0, payload(7, 3000)), (300_000, payload(8, 2000)),
            (67_383_296 - 1500, payload(9, 4000)), (69_000_000, payload(10, 1)),
            (70_000_000 - 2500, payload(11, 2500))])
    if huge:
        # i_size above 2 GiB needs i_size_high (large_file); data straddles 2**31.
        write_sparse(root / "huge_sparse.bin", 2 * GIB + 512 * MIB, [
            (0, payload(12, 5000)), (2 * GIB - 3000, payload(13, 6000)),
            (2 * GIB + 512 * MIB - 4096, payload(14, 4096))])
    holes = root / "holes"
    holes.mkdir()
    write_sparse(holes / "start.bin", 100_000, [(90_000, payload(20, 10_000))])
    write_sparse(holes / "middle.bin", 100_000, [(0, payload(21, 20_000)),
                                                 (80_000, payload(22, 20_000))])
    write_sparse(holes / "end.bin", 100_000, [(0, payload(23, 10_000))])
    write_sparse(holes / "all.bin", 50_000, [])
    write_sparse(holes / "zeros_written.bin", 20_000, [(0, bytes(20_000))])

    # Symlinks: fast (target ≤ 59 bytes, inside i_block) and slow (in a data block).
    deep = root / "deep" / ("d" * 60) / ("e" * 60) / ("f" * 60)
    deep.mkdir(parents=True)
    (deep / "target.txt").write_bytes(b"at the end of a 200-byte symlink\n")
    links = root / "links"
    links.mkdir()
    os.symlink("../small.txt", links / "fast")
    os.symlink("/small.txt", links / "fast_abs")
    os.symlink(f"../deep/{'d' * 60}/{'e' * 60}/{'f' * 60}/target.txt", links / "slow")
    os.symlink(_symlink_padded("../small.txt", 58), links / "len58")
    os.symlink(_symlink_padded("../small.txt", 60), links / "len60")
    os.symlink("." + "/" * 46 + "../small.txt", links / "len59")  # exactly 59 bytes
    os.symlink("does/not/exist", links / "dangling")
    os.symlink("chain2", links / "chain1")
    os.symlink("chain3", links / "chain2")
    os.symlink("../small.txt", links / "chain3")
    os.symlink("../nested", links / "todir")
    os.symlink("/nested/x", links / "todir_abs")
    os.symlink("x" * 300, links / "long_dangling")
    (root / "a" / "real").mkdir(parents=True)
    (root / "a" / "real" / "b.txt").write_bytes(b"reached through /a/link/b.txt\n")
    os.symlink("real", root / "a" / "link")
    # Hard links, also across directories.
    hard = root / "hard"
    hard.mkdir()
    (hard / "one").write_bytes(payload(30, 5000))
    os.link(hard / "one", hard / "two")
    os.link(hard / "one", hard / "three")
    os.link(hard / "one", root / "hard_outside")
    # A large directory: 3,000 names of varying length, every 100th file with data.
    bigdir = root / "bigdir"
    bigdir.mkdir()
    for i in range(BIGDIR_ENTRIES):
        name = f"entry-{i:04d}-" + "x" * (i % 40)
        data = payload(1000 + i, 100 + i) if i % 100 == 0 else b""
        (bigdir / name).write_bytes(data)
    # Names: the longest allowed, UTF-8, emoji, a blank, and bytes that are not UTF-8.
    names = root / "names"
    names.mkdir()
    for name in ["n" * 255, "日" * 85, "héllo", "日本語.txt", "🦀 crab.txt", "with space",
                 "-dash", "a.b.c"]:
        (names / name).write_bytes(name.encode() + b"\n")
    (names / os.fsdecode(b"bad\xff\xfe.bin")).write_bytes(b"not utf-8\n")
    os.mkdir(names / "répertoire")
    (names / "répertoire" / "ï").write_bytes(b"i\n")
    nested = root / "nested" / "x" / "y" / "z" / "w"
    nested.mkdir(parents=True)
    (nested / "deep.txt").write_bytes(b"five levels down\n")
    (root / "nested" / "file.txt").write_bytes(b"nested file\n")
    (root / "empty_dir").mkdir()
    # Permission bits and owners.
    modes = root / "modes"
    modes.mkdir()
    for mode in (0o600, 0o644, 0o755, 0o4755, 0o2755, 0o400, 0o000):
        p = modes / f"mode_{mode:04o}"
        p.write_bytes(b"m\n")
        os.chmod(p, mode)
    sticky = modes / "sticky_dir"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    owned = modes / "owned_1000_100"
    owned.write_bytes(b"owned\n")
    # Not root: the file keeps our own uid/gid, which debugfs then reports.
    with contextlib.suppress(PermissionError):
        os.chown(owned, 1000, 100)
    special = root / "special"
    special.mkdir()
    os.mkfifo(special / "fifo")
    try:
        os.mknod(special / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(special / "loop0", 0o660 | stat.S_IFBLK, os.makedev(7, 0))
    except PermissionError:
        pass  # device nodes need root
    set_mtimes(root)
    return root


def build_symlink_tree(root: Path) -> Path:
    """A loop (loop_a → loop_b → loop_a), a 40-link chain that resolves and a 41-link one."""
    root.mkdir(parents=True)
    (root / "target.txt").write_bytes(b"end of the chain\n")
    os.symlink("loop_b", root / "loop_a")
    os.symlink("loop_a", root / "loop_b")
    os.symlink("self", root / "self")
    for prefix, n in (("ok", 40), ("bad", 41)):
        # prefix_1 → prefix_2 → … → prefix_n → target.txt: n links followed in one lookup.
        for i in range(1, n + 1):
            nxt = f"{prefix}_{i + 1}" if i < n else "target.txt"
            os.symlink(nxt, root / f"{prefix}_{i}")
    os.mkdir(root / "dir")
    os.symlink("dir_loop", root / "dir" / "dir_loop")
    set_mtimes(root)
    return root


def build_small_tree(root: Path) -> Path:
    """A small tree for fuzzing: a few files, holes, an indirect block, symlinks, a subdir."""
    root.mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "ind.bin").write_bytes(payload(40, 14 * 1024 + 5))
    write_sparse(root / "hole.bin", 40_000, [(30_000, payload(41, 500))])
    os.symlink("a.txt", root / "fast")
    os.symlink("sub/" + "s" * 80, root / "slow")
    (root / "sub").mkdir()
    (root / "sub" / ("s" * 80)).write_bytes(b"slow target\n")
    for i in range(40):
        (root / "sub" / f"f{i:02d}").write_bytes(payload(50 + i, i * 37))
    set_mtimes(root)
    return root


def set_mtimes(root: Path) -> None:
    """Give every entry (not following symlinks) the same fixed atime/mtime."""
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
    os.utime(root, (MTIME, MTIME))


def source_entries(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry below `root` as ("/rel/path", lstat), the root itself first."""
    yield "/", os.lstat(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        base = "/" if rel == "." else "/" + rel + "/"
        for name in sorted(dirnames + filenames):
            yield base + name, os.lstat(os.path.join(dirpath, name))


def file_digest(path: Path | str, chunk: int = 8 * MIB) -> str:
    """sha256 of a host file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def resolve_in_tree(root: Path, path: str, max_links: int = 40) -> Path | None:
    """Resolve an image path against the source tree, treating absolute targets as tree-rooted.

    None when the path dangles, loops, or leaves the tree. This is how the *kernel* would
    resolve it inside the image; the host's own resolution of "/small.txt" would escape.
    """
    parts = [p for p in path.split("/") if p]
    stack: list[str] = []
    followed = 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            if stack:
                stack.pop()
            continue
        here = root.joinpath(*stack, name)
        if os.path.islink(here):
            followed += 1
            if followed > max_links:
                return None
            target = os.readlink(here)
            if target.startswith("/"):
                stack = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        if not os.path.lexists(here):
            return None
        stack.append(name)
    return root.joinpath(*stack)


# --- running a reader under bounds ---------------------------------------------------


class Hang(Exception):
    """A reader overran its time limit on one image (raised from a SIGALRM handler)."""


@contextmanager
def bounded(seconds: float, trace: bool = True) -> Iterator[dict[str, float]]:
    """Run the block under a wall-clock alarm; report elapsed seconds and peak memory.

    Peak memory is tracemalloc's peak, or with trace=False the growth of the process's
    peak RSS (coarser, but free).
    """

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if trace:
        tracemalloc.start()
    report: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield report
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        report["elapsed"] = time.perf_counter() - start
        if trace:
            report["peak"] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            report["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before


def read_everything(img: Any) -> dict[str, int]:
    """Walk the whole image, read every file, readlink every symlink, map every file.

    Also checks the answers agree with each other: a read is i_size long, a block map
    has ceil(i_size / block_size) entries. Returns counts of what was visited.
    """
    counts = {"dirs": 0, "files": 0, "links": 0, "other": 0, "bytes": 0}
    bs = img.block_size
    for dirpath, dirnames, filenames in img.walk("/"):
        counts["dirs"] += 1
        listed = img.listdir(dirpath)
        assert sorted(listed) == sorted(dirnames + filenames), dirpath
        for name in dirnames + filenames:
            path = dirpath.rstrip("/") + "/" + name
            st = img.lstat(path)
            if stat.S_ISREG(st.st_mode):
                counts["files"] += 1
                data = img.read(path)
                assert len(data) == st.st_size, path
                counts["bytes"] += len(data)
                block_map = img.block_map(path)
                assert isinstance(block_map, np.ndarray) and len(block_map) == -(-st.st_size // bs)
            elif stat.S_ISLNK(st.st_mode):
                counts["links"] += 1
                assert img.readlink(path)
            elif not stat.S_ISDIR(st.st_mode):
                counts["other"] += 1
    return counts
