"""The ext2 reader on e2fsprogs' own 228 test images, most of them deliberately corrupted.

shared/corpora/e2fsprogs-images/IMAGES.tsv classifies each image (see its README). What the
reader must do with each:

* `ext2-readable` / `ext2-readable-ro-extra` and clean (`e2fsck -fn` exit 0): read completely;
* `unsupported-incompat`: refuse at open with UnsupportedFeatureError naming a feature;
* `no-ext2-magic`: refuse with CorruptImageError;
* anything else: read consistently or raise an Ext2Error — never another exception type,
  never a hang, never unbounded memory.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from ext2_trees import bounded, need_tool, read_everything

from xipmodel.errors import CorruptImageError, Ext2Error, UnsupportedFeatureError
from xipmodel.ext2.reader import Ext2Image

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared/corpora/e2fsprogs-images"
TIME_LIMIT = 10.0  # seconds per image
MEMORY_LIMIT = 256 * 1024 * 1024  # peak per image
# The only incompatible features the kernel's ext2 mounts (EXT2_FEATURE_INCOMPAT_SUPP).
EXT2_INCOMPAT_OK = {"filetype", "meta_bg"}
# A few clean images compared file by file with `debugfs rdump`: htree, revision 0,
# 8 KiB blocks, SELinux xattrs, a sparse file.
RDUMP_IMAGES = ["f_convert_bmap_sparse", "f_selinux", "f_special_ea", "r_min_itable",
                "f_unsorted_EAs", "r_inline_xattr"]
# Images with tens of thousands of entries: tracemalloc would slow their walk fivefold, so
# their memory is bounded by the growth of the process's peak RSS instead.
MANY_ENTRIES = {"f_h_badnode", "f_h_normal", "f_h_reindex", "f_h_unsigned", "f_many_subdirs"}
# Where e2fsck looks for a backup superblock when the primary is unusable (block, block size).
BACKUPS = [(8193, 1024), (16384, 2048), (32768, 4096)]


@dataclass(frozen=True)
class CorpusImage:
    """One row of IMAGES.tsv."""

    test: str
    description: str
    rev: str
    blocksize: str
    compat: str
    incompat: str
    ro_compat: str
    klass: str
    e2fsck_fn_rc: str

    @property
    def clean(self) -> bool:
        return self.e2fsck_fn_rc == "0"

    def data(self, corpus: Path) -> bytes:
        """The unpacked image (decompressed in memory)."""
        for suffix, unpack in ((".img.gz", gzip.decompress), (".img.bz2", bz2.decompress)):
            packed = corpus / (self.test + suffix)
            if packed.exists():
                return unpack(packed.read_bytes())
        raise FileNotFoundError(f"{self.test}: no .img.gz or .img.bz2 in {corpus}")


def load_rows() -> list[CorpusImage]:
    """IMAGES.tsv as rows (empty when the shared folder is absent: the fixture then skips)."""
    tsv = CORPUS / "IMAGES.tsv"
    if not tsv.exists():
        return []
    with open(tsv, newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        return [CorpusImage(r["test"], r["description"], r["rev"], r["blocksize"], r["compat"],
                            r["incompat"], r["ro_compat"], r["class"], r["e2fsck_fn_rc"])
                for r in reader]


ROWS = load_rows()
BY_NAME = {row.test: row for row in ROWS}


@pytest.fixture(scope="session")
def corpus(shared_dir: Path) -> Path:
    path = shared_dir / "corpora/e2fsprogs-images"
    if not (path / "IMAGES.tsv").exists():
        pytest.fail(f"{path}/IMAGES.tsv is missing")
    return path


def open_and_read(data: bytes) -> dict[str, int]:
    with Ext2Image.open(data) as img:
        return read_everything(img)


@pytest.mark.parametrize("name", sorted(BY_NAME))
def test_corpus_image(name: str, corpus: Path) -> None:
    """Does the reader treat this e2fsprogs image as its class demands, fast, in bounded memory?

    Clean readable images must read completely; images with ext4-only features must be
    refused by name; the rest either read or raise an Ext2Error, never anything else.
    """
    row = BY_NAME[name]
    data = row.data(corpus)
    outcome: dict[str, int] | BaseException
    many = name in MANY_ENTRIES  # 30,000-65,000 entries: seconds of honest work, not a hang
    limit = 3 * TIME_LIMIT if many else TIME_LIMIT
    with bounded(limit, trace=not many) as report:
        try:
            outcome = open_and_read(data)
        except Ext2Error as exc:
            outcome = exc
    assert report["elapsed"] < limit
    assert report["peak"] < MEMORY_LIMIT, f"memory peak {report['peak'] / 2**20:.0f} MiB"

    if row.klass in ("ext2-readable", "ext2-readable-ro-extra") and row.clean:
        if isinstance(outcome, CorruptImageError):
            # e2fsck itself falls back to a backup superblock when the primary is unusable
            # (f_zero_inode_size: "Superblock invalid, trying backup blocks..."), and the
            # kernel refuses to mount: refusing is fine if a backup then reads completely.
            outcome = read_from_a_backup(data, outcome)
        assert not isinstance(outcome, BaseException), f"{row.description}: {outcome!r}"
        assert outcome["dirs"] >= 1
    elif row.klass == "unsupported-incompat":
        assert isinstance(outcome, UnsupportedFeatureError), f"{row.description}: {outcome!r}"
        refused = set(row.incompat.split(",")) - EXT2_INCOMPAT_OK
        assert refused, row.incompat
        message = str(outcome)
        assert any(feature in message for feature in refused), (message, refused)
    elif row.klass == "no-ext2-magic":
        assert isinstance(outcome, CorruptImageError), f"{row.description}: {outcome!r}"


def read_from_a_backup(data: bytes, error: BaseException) -> dict[str, int] | BaseException:
    """Try e2fsck's backup superblock locations in turn; the first that opens must read fully."""
    for sb_block, block_size in BACKUPS:
        try:
            img = Ext2Image.open(data, sb_block=sb_block, block_size=block_size)
        except CorruptImageError:
            continue
        with img:
            return read_everything(img)
    return error


def test_corpus_is_complete(corpus: Path) -> None:
    """Is every image the TSV lists present, and are the four classes the README's counts?"""
    assert len(ROWS) == 228
    counts: dict[str, int] = {}
    for row in ROWS:
        counts[row.klass] = counts.get(row.klass, 0) + 1
        assert any((corpus / (row.test + s)).exists() for s in (".img.gz", ".img.bz2")), row.test
    assert counts == {"ext2-readable": 82, "ext2-readable-ro-extra": 9,
                      "unsupported-incompat": 133, "no-ext2-magic": 4}


def host_tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry below `root` as {"/path": (kind, content or link target)}."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            path = "/" + os.path.relpath(full, root)
            if os.path.islink(full):
                out[path] = ("link", os.fsencode(os.readlink(full)))
            elif os.path.isdir(full):
                out[path] = ("dir", b"")
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    out[path] = ("file", f.read())
    return out


def image_tree(img: Ext2Image) -> dict[str, tuple[str, bytes]]:
    out = {}
    for dirpath, dirnames, filenames in img.walk("/"):
        for name in dirnames + filenames:
            path = dirpath.rstrip("/") + "/" + name
            mode = img.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                out[path] = ("link", os.fsencode(img.readlink(path)))
            elif stat.S_ISDIR(mode):
                out[path] = ("dir", b"")
            elif stat.S_ISREG(mode):
                out[path] = ("file", img.read(path))
    return out


@pytest.mark.oracle
@pytest.mark.parametrize("name", RDUMP_IMAGES)
def test_clean_image_matches_debugfs_rdump(name: str, corpus: Path, tmp_path: Path) -> None:
    """Does every file, directory and symlink equal what `debugfs -R 'rdump / DIR'` writes?"""
    debugfs = need_tool("debugfs")
    row = BY_NAME[name]
    image = tmp_path / "image"
    image.write_bytes(row.data(corpus))
    out = tmp_path / "rdump"
    out.mkdir()
    subprocess.run([debugfs, "-R", f"rdump / {out}", str(image)], check=True,
                   capture_output=True)
    want = host_tree(out)
    with Ext2Image.open(image) as img:
        got = image_tree(img)
    assert any(kind == "file" for kind, _ in want.values())
    assert sorted(got) == sorted(want)
    for path, value in want.items():
        assert got[path] == value, path
