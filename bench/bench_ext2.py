"""How fast does xipmodel's ext2 reader read a frozen image, next to dissect.extfs?

Two workloads, each on an image `mke2fs -t ext2 -b 4096 -d TREE` makes from a deterministic
tree (a seeded numpy generator; built once and cached under the system temp directory):

1. **many files**: ~3,000 files totalling ~78 MB, most of them in one 3,000-entry directory,
   each opened and read whole *by path* (open image → look up → read), as a loader would.
   Goal: ≥ 50× dissect.extfs.
2. **stream**: one 64 MiB file read whole. Goal: ≥ 1 GB/s.

Both readers must return the source tree's bytes (checked by sha256), so speed never hides
a wrong answer. dissect.extfs takes ~48 s for workload 1, so it runs once by default.

    python -m bench ext2 [--quick] [--reps N] [--dissect-reps N] [--cache DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED = 20240607
MB = 1_000_000
MIB = 1 << 20
FAKE_TIME = "1500000000"
UUID = "0b5e55ed-0123-4567-89ab-cdef01234567"


@dataclass(frozen=True)
class Sizes:
    """How big each workload is (full or --quick)."""

    files: int  # files in workload 1
    total: int  # their total size in bytes
    big_dir_share: float  # fraction of the files in the one big directory
    image: str  # mke2fs size of image 1
    stream: int  # bytes of the workload-2 file
    stream_image: str


FULL = Sizes(files=3000, total=78 * MB, big_dir_share=0.95, image="120M", stream=64 * MIB,
             stream_image="80M")
QUICK = Sizes(files=300, total=8 * MB, big_dir_share=0.95, image="16M", stream=8 * MIB,
              stream_image="12M")


def find_tool(name: str) -> str:
    """An e2fsprogs program, also looked for in /usr/sbin and /sbin."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"bench_ext2: {name} (e2fsprogs) is needed to build the images")
    return path


def file_sizes(sizes: Sizes, rng: np.random.Generator) -> np.ndarray:
    """Log-normally spread file sizes summing to exactly `sizes.total`."""
    raw = rng.lognormal(mean=0.0, sigma=1.2, size=sizes.files)
    out = np.floor(raw / raw.sum() * sizes.total).astype(np.int64)
    out[0] += sizes.total - int(out.sum())
    return out


def build_tree(root: Path, sizes: Sizes) -> dict[str, str]:
    """Write workload 1's tree under `root`; return {image path: sha256}."""
    rng = np.random.default_rng(SEED)
    n_big = int(sizes.files * sizes.big_dir_share)
    digests = {}
    for i, size in enumerate(file_sizes(sizes, rng).tolist()):
        rel = f"big/file-{i:05d}.bin" if i < n_big else f"small/d{i % 10}/file-{i:05d}.bin"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        path.write_bytes(data)
        digests["/" + rel] = hashlib.sha256(data).hexdigest()
    return digests


def mke2fs(src: Path, image: Path, size: str) -> None:
    env = {**os.environ, "E2FSPROGS_FAKE_TIME": FAKE_TIME}
    subprocess.run([find_tool("mke2fs"), "-q", "-F", "-t", "ext2", "-b", "4096", "-U", UUID,
                    "-E", "root_owner=0:0", "-d", str(src), str(image), size],
                   check=True, env=env, capture_output=True)


@dataclass
class Workloads:
    many_image: Path
    many: dict[str, str]  # path → sha256
    stream_image: Path
    stream_path: str
    stream_sha: str
    stream_bytes: int


def prepare(sizes: Sizes, cache: Path) -> Workloads:
    """Build (or reuse) both images under `cache`; a marker file records a finished build."""
    tag = f"{sizes.files}-{sizes.total}-{sizes.stream}-{SEED}"
    home = cache / f"xipmodel-bench-ext2-{tag}"
    marker = home / "digests.txt"
    if not marker.exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        print(f"building the benchmark images in {home} ...", file=sys.stderr)
        many = build_tree(home / "tree", sizes)
        mke2fs(home / "tree", home / "many.img", sizes.image)
        stream_src = home / "stream-tree"
        stream_src.mkdir()
        data = np.random.default_rng(SEED + 1).integers(
            0, 256, size=sizes.stream, dtype=np.uint8).tobytes()
        (stream_src / "stream.bin").write_bytes(data)
        mke2fs(stream_src, home / "stream.img", sizes.stream_image)
        lines = [f"{p}\t{d}" for p, d in many.items()]
        lines.append(f"/stream.bin\t{hashlib.sha256(data).hexdigest()}")
        shutil.rmtree(home / "tree")
        shutil.rmtree(stream_src)
        marker.write_text("\n".join(lines) + "\n")
    rows = [line.split("\t") for line in marker.read_text().splitlines()]
    digests = dict(rows[:-1])
    stream_path, stream_sha = rows[-1]
    return Workloads(home / "many.img", digests, home / "stream.img", stream_path, stream_sha,
                     sizes.stream)


# --- the two readers, doing the same thing ------------------------------------------


def xipmodel_read_all(image: Path, paths: list[str]) -> list[bytes]:
    from xipmodel.ext2.reader import Ext2Image

    with Ext2Image.open(image) as img:
        return [img.read(p) for p in paths]


def dissect_read_all(image: Path, paths: list[str]) -> list[bytes]:
    from dissect.extfs import ExtFS

    with open(image, "rb") as f:
        fs = ExtFS(f)
        return [fs.get(p).open().read() for p in paths]


def check(name: str, got: list[bytes], want: list[str]) -> None:
    """Fail loudly if a reader returned anything but the source bytes."""
    for data, digest in zip(got, want, strict=True):
        if hashlib.sha256(data).hexdigest() != digest:
            raise SystemExit(f"bench_ext2: {name} returned wrong bytes")


def timed(fn: Callable[[], list[bytes]], reps: int) -> tuple[list[float], list[bytes]]:
    times = []
    out: list[bytes] = []
    for _ in range(reps):
        out = []  # let the previous repetition's bytes go first
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return times, out


@dataclass
class Row:
    workload: str
    nbytes: int
    ours: list[float]
    peer: list[float] | None
    goal: str

    def cells(self) -> list[str]:
        ours = statistics.median(self.ours)
        cells = [self.workload, f"{self.nbytes / MB:.1f}", f"{ours:.3f}",
                 f"{self.nbytes / ours / MB:,.0f}"]
        if self.peer:
            peer = statistics.median(self.peer)
            cells += [f"{peer:.3f}", f"{self.nbytes / peer / MB:,.0f}", f"{peer / ours:,.1f}×"]
        else:
            cells += ["n/a", "n/a", "n/a"]
        return [*cells, self.goal]


def table(rows: list[Row]) -> str:
    head = ["workload", "MB", "xipmodel s", "MB/s", "dissect s", "MB/s", "speed-up", "goal"]
    body = [r.cells() for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ext2", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions of xipmodel (median)")
    parser.add_argument("--dissect-reps", type=int, default=1,
                        help="repetitions of dissect.extfs on workload 1 (0 skips it)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the images are built and kept")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    work = prepare(sizes, args.cache)
    try:
        import dissect.extfs  # noqa: F401

        have_dissect = True
    except ImportError:
        have_dissect = False
        print("dissect.extfs is not installed: xipmodel alone", file=sys.stderr)

    paths = list(work.many)
    want = list(work.many.values())
    ours, got = timed(lambda: xipmodel_read_all(work.many_image, paths), args.reps)
    check("xipmodel", got, want)
    nbytes = sum(len(d) for d in got)
    peer = None
    if have_dissect and args.dissect_reps > 0:
        print(f"dissect.extfs reading {len(paths)} files (slow) ...", file=sys.stderr)
        peer, got = timed(lambda: dissect_read_all(work.many_image, paths), args.dissect_reps)
        check("dissect.extfs", got, want)
    del got
    rows = [Row(f"{len(paths)} files by path", nbytes, ours, peer, "≥ 50× dissect")]

    stream = [work.stream_path]
    ours, got = timed(lambda: xipmodel_read_all(work.stream_image, stream), args.reps)
    check("xipmodel", got, [work.stream_sha])
    peer = None
    if have_dissect:
        peer, got = timed(lambda: dissect_read_all(work.stream_image, stream),
                          max(1, min(3, args.reps)))
        check("dissect.extfs", got, [work.stream_sha])
    rows.append(Row(f"stream {work.stream_bytes // MIB} MiB", work.stream_bytes, ours, peer,
                    "≥ 1,000 MB/s"))

    print(f"ext2 reader, medians of {args.reps} (xipmodel) / {args.dissect_reps} (dissect, "
          f"workload 1) runs; images in {work.many_image.parent}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
