"""e2fsprogs as the oracle for the ext2 builder: run e2fsck, debugfs and dumpe2fs, parse them.

Nothing here imports xipmodel, so a builder bug cannot hide in an expected value:
the expected side is always the input tree, and the observed side is what e2fsprogs
reads back from the image.

A tree snapshot (`snapshot_host`, `snapshot_mapping`) maps a relative path to::

    ("dir", mode, uid, gid, mtime)
    ("file", mode, uid, gid, mtime, data)
    ("link", target)          (owners and times of symlinks are not compared: rdump
                               does not restore them)
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Snapshot = dict[str, tuple[object, ...]]

_ENV = {**os.environ, "DEBUGFS_PAGER": "__none__", "PAGER": "cat"}
# e2fsck -fn on a clean image says only this (one line per pass, then a summary).
_E2FSCK_OK = re.compile(
    r"^(e2fsck \S+ \(.*\)|Pass [1-5]: .*|\S+: \d+/\d+ files \(.*\), \d+/\d+ blocks)$"
)


@dataclass(frozen=True)
class E2fsprogs:
    """Paths of the e2fsprogs programs the builder tests use."""

    e2fsck_bin: str
    debugfs_bin: str
    dumpe2fs_bin: str
    mke2fs: str

    def fsck(self, image: Path) -> None:
        """Assert that `e2fsck -fn` finds nothing at all to complain about."""
        run = subprocess.run([self.e2fsck_bin, "-fn", str(image)], capture_output=True, text=True,
                             env=_ENV, check=False)
        lines = [ln for ln in (run.stdout + run.stderr).splitlines() if ln.strip()]
        odd = [ln for ln in lines if not _E2FSCK_OK.match(ln)]
        assert run.returncode == 0 and not odd, (
            f"e2fsck -fn {image}: exit {run.returncode}\n" + "\n".join(lines))

    def debugfs(self, image: Path, commands: Sequence[str]) -> str:
        """Run debugfs commands in one batch (-f) and return what they print."""
        script = image.with_suffix(".debugfs")
        script.write_text("\n".join(commands) + "\n", encoding="utf-8")
        run = subprocess.run([self.debugfs_bin, "-f", str(script), str(image)], capture_output=True,
                             env=_ENV, check=True)
        return run.stdout.decode("utf-8", "surrogateescape")

    def stat(self, image: Path, paths: Sequence[str]) -> dict[str, str]:
        """`debugfs stat` of each path: path → the text debugfs printed for it."""
        out = self.debugfs(image, [f'stat "{p}"' for p in paths])
        chunks = re.split(r"^debugfs: stat .*$", out, flags=re.M)[1:]
        assert len(chunks) == len(paths), out
        return dict(zip(paths, chunks, strict=True))

    def rdump(self, image: Path, outdir: Path) -> Path:
        """Copy the image's whole tree into `outdir` with `debugfs rdump /`."""
        outdir.mkdir(parents=True, exist_ok=True)
        subprocess.run([self.debugfs_bin, "-R", f"rdump / {outdir}", str(image)],
                       capture_output=True, env=_ENV, check=True)
        return outdir

    def header(self, image: Path) -> dict[str, str]:
        """`dumpe2fs -h` as {field: value}."""
        run = subprocess.run([self.dumpe2fs_bin, "-h", str(image)], capture_output=True, text=True,
                             env=_ENV, check=True)
        fields = {}
        for line in run.stdout.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        return fields

    def groups(self, image: Path) -> str:
        """The per-group part of `dumpe2fs` (no -h)."""
        run = subprocess.run([self.dumpe2fs_bin, str(image)], capture_output=True, text=True,
                             env=_ENV, check=True)
        return run.stdout


def parse_blocks(stat_text: str) -> list[tuple[str, int, int]]:
    """The BLOCKS: line of `debugfs stat` as (label, first physical, last physical).

    A label is a logical range "(0-11)" → "0-11", or "IND", "DIND", "TIND".
    """
    match = re.search(r"^BLOCKS:\n(.*?)\n(?:TOTAL|$)", stat_text, flags=re.M | re.S)
    if match is None:
        return []
    result = []
    for label, phys in re.findall(r"\(([^)]*)\):(\d+(?:-\d+)?)", match.group(1)):
        first, _, last = phys.partition("-")
        result.append((label, int(first), int(last or first)))
    return result


def mapped_logical(stat_text: str) -> set[int]:
    """Logical blocks the BLOCKS: line maps (holes are simply absent)."""
    blocks: set[int] = set()
    for label, _first, _last in parse_blocks(stat_text):
        if label[0].isdigit():
            lo, _, hi = label.partition("-")
            blocks.update(range(int(lo), int(hi or lo) + 1))
    return blocks


def field(stat_text: str, name: str) -> str:
    """One field of `debugfs stat` ("Links", "Size", "User", "Blockcount", …)."""
    match = re.search(rf"\b{re.escape(name)}:\s*(\S+)", stat_text)
    assert match, f"no {name} in {stat_text}"
    return match.group(1)


def snapshot_host(top: Path, *, skip: Sequence[str] = ("lost+found",)) -> Snapshot:
    """What a host tree holds, path → kind and metadata (see the module docstring)."""
    result: Snapshot = {}
    for dirpath, dirnames, filenames in os.walk(top):
        rel_dir = os.path.relpath(dirpath, top)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            meta = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime))
            if stat.S_ISLNK(st.st_mode):
                result[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                result[rel] = ("dir", *meta)
            else:
                result[rel] = ("file", *meta, Path(path).read_bytes())
        # symlinks to directories show up in dirnames; os.walk does not follow them
    return result


@dataclass(frozen=True)
class Spec:
    """A test tree entry, independent of the builder's own entry types."""

    kind: str  # "dir", "file", "link", "hard"
    data: bytes = b""
    size: int | None = None
    sparse: bool = False
    target: str = ""  # symlink target, or hard link path
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = 0


def snapshot_specs(specs: Mapping[str, Spec]) -> Snapshot:
    """The snapshot rdump should produce for a tree of Specs (parents implied: 0o755)."""
    result: Snapshot = {}
    for path, spec in specs.items():
        rel = path.strip("/")
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            result.setdefault("/".join(parts[:depth]), ("dir", 0o755, 0, 0, 0))
        while spec.kind == "hard":
            spec = specs[spec.target]
        if spec.kind == "dir":
            result[rel] = ("dir", 0o755 if spec.mode is None else spec.mode,
                           spec.uid, spec.gid, spec.mtime)
        elif spec.kind == "link":
            result[rel] = ("link", spec.target)
        else:
            size = len(spec.data) if spec.size is None else spec.size
            result[rel] = ("file", 0o644 if spec.mode is None else spec.mode, spec.uid, spec.gid,
                           spec.mtime, spec.data + bytes(size - len(spec.data)))
    return result
