"""The ext2 reader, side by side with e2fsprogs on images `mke2fs -d` made from a known tree.

Each image in IMAGES is built once per session from the same source tree (tests/ext2_trees.py)
with different mke2fs options. Two oracles judge the reader: the source tree itself (contents,
listings, symlink targets) and `debugfs stat` (inode numbers, modes, sizes, link counts,
owners, times and the BLOCKS line that maps every logical block to an image block).
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ext2_trees import (
    DEBUGFS_TYPE,
    GIB,
    MTIME,
    UUID,
    DebugfsStat,
    backup_superblocks,
    block_map_array,
    build_full_tree,
    build_small_tree,
    build_symlink_tree,
    debugfs_stats,
    dumpe2fs_header,
    e2fsck_clean,
    file_digest,
    mke2fs,
    need_tool,
    parse_blocks_line,
    parse_debugfs_stat,
    resolve_in_tree,
    source_entries,
)

from xipmodel.errors import (
    CorruptImageError,
    Ext2Error,
    Ext2FileNotFoundError,
    Ext2IsADirectoryError,
    Ext2NotADirectoryError,
    NotARegularFileError,
    NotASymlinkError,
    SymlinkLoopError,
    UnsupportedFeatureError,
)
from xipmodel.ext2.reader import Ext2Image

pytestmark = pytest.mark.oracle

HUGE_READ_LIMIT = 256 * 1024 * 1024  # files above this are checked by ranges, not whole


@dataclass(frozen=True)
class Config:
    """One image of the matrix: mke2fs options and which source tree it is made from."""

    name: str
    options: tuple[str, ...]
    size: str = "64M"
    fs_type: str = "ext2"
    tree: str = "full"  # "full" (with the TIND file) or "huge" (with a > 2 GiB file)
    htree: bool = False  # index directories afterwards with `e2fsck -fyD`


CONFIGS = [
    Config("b1024", ("-b", "1024", "-I", "256")),
    Config("b2048", ("-b", "2048", "-I", "256")),
    Config("b4096", ("-b", "4096", "-I", "256")),
    Config("b65536", ("-b", "65536", "-I", "256", "-i", "16384"), size="128M"),
    Config("I128", ("-b", "4096", "-I", "128")),
    Config("rev0", ("-r", "0", "-b", "1024")),
    Config("no_sparse_super", ("-b", "1024", "-I", "128", "-O", "^sparse_super,^resize_inode")),
    Config("no_filetype", ("-b", "1024", "-I", "256", "-O", "^filetype")),
    Config("no_dir_index", ("-b", "4096", "-I", "256", "-O", "^dir_index")),
    Config("htree", ("-b", "1024", "-I", "256"), htree=True),
    Config("large_file", ("-b", "4096", "-I", "256", "-O", "large_file"), tree="huge"),
    Config("ext3", ("-b", "1024", "-I", "256"), fs_type="ext3"),
    Config("meta_bg", ("-b", "1024", "-I", "256", "-O", "meta_bg,^resize_inode")),
]


@dataclass
class Built:
    """An image, the tree it was made from, and what debugfs says about every path in it."""

    config: Config
    image: Path
    src: Path
    digest: str
    stats: dict[bytes, DebugfsStat | None]
    entries: list[tuple[str, os.stat_result]]


@pytest.fixture(scope="session")
def source_trees(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The two source trees, built once: the full one and one with a 2.5 GiB sparse file."""
    base = tmp_path_factory.mktemp("ext2-src")
    return {"full": build_full_tree(base / "full", tind=True),
            "huge": build_full_tree(base / "huge", tind=False, huge=True)}


def build_image(config: Config, src: Path, directory: Path) -> Built:
    """mke2fs the tree, check e2fsck is happy, and collect debugfs stat for every path."""
    image = mke2fs(src, directory / f"{config.name}.img", config.size, config.options,
                   config.fs_type)
    if config.htree:
        proc = subprocess.run([need_tool("e2fsck"), "-fyD", str(image)], capture_output=True)
        assert proc.returncode in (0, 1), proc.stdout
    rc, out = e2fsck_clean(image)
    assert rc == 0, f"e2fsck -fn {config.name}: {out}"
    entries = list(source_entries(src))
    paths = [os.fsencode(p) for p, _ in entries] + [b"/lost+found"]
    stats = debugfs_stats(image, paths)
    if config.htree:  # EXT2_INDEX_FL: the big directory really is a hashed tree now
        assert stats[b"/bigdir"] is not None and stats[b"/bigdir"].flags & 0x1000
    return Built(config, image, src, file_digest(image), stats, entries)


@pytest.fixture(scope="session", params=CONFIGS, ids=[c.name for c in CONFIGS])
def built(request: pytest.FixtureRequest, source_trees: dict[str, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Built:
    """One image of the matrix (session-scoped: each is made once)."""
    config: Config = request.param
    return build_image(config, source_trees[config.tree], tmp_path_factory.mktemp(config.name))


@pytest.fixture(scope="session")
def opened(built: Built) -> Iterator[Ext2Image]:
    """The reader open on the image (one per image for the whole session)."""
    with Ext2Image.open(built.image) as img:
        yield img


def host(built: Built, path: str) -> Path:
    return built.src / path.lstrip("/")


def regular_files(built: Built) -> list[tuple[str, os.stat_result]]:
    return [(p, st) for p, st in built.entries if stat.S_ISREG(st.st_mode)]


def dstat(built: Built, path: str) -> DebugfsStat:
    st = built.stats[os.fsencode(path)]
    assert st is not None, f"debugfs found no {path!r}"
    return st


# --- the debugfs BLOCKS parser, checked against real debugfs output ---------------


def test_parse_blocks_line_reads_ranges_and_metadata() -> None:
    """Does the BLOCKS parser turn runs into logical→physical pairs and keep IND/DIND apart?"""
    mapping, meta = parse_blocks_line(
        "(0):17308, (1-11):17309-17319, (IND):2948, (12-14):2949-2951, (DIND):2947, (300):9")
    assert mapping == {0: 17308, **{i: 17308 + i for i in range(1, 12)},
                       12: 2949, 13: 2950, 14: 2951, 300: 9}
    assert meta == [("IND", 2948), ("DIND", 2947)]
    assert list(block_map_array(mapping, 301 * 1024 - 5, 1024)[[0, 11, 12, 15, 299, 300]]) == [
        17308, 17319, 2949, 0, 0, 9]
    with pytest.raises(ValueError):
        parse_blocks_line("(0-3):5-7")


def test_parse_debugfs_stat_on_real_output(tmp_path: Path) -> None:
    """Does the stat parser read what debugfs prints for a file with holes, IND and DIND blocks?

    The file is written with 1 KiB blocks: data in logical blocks 4-7, a hole, block 292
    (past 12 + 256, so under DIND), and a hole at the end. The expected logical blocks come
    from the byte offsets we wrote, not from any reader.
    """
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sp", "wb") as f:
        f.seek(5000)
        f.write(b"x" * 3000)
        f.seek(300_000)
        f.write(b"y")
        f.truncate(400_000)
    os.symlink("sp", src / "fast")
    image = mke2fs(src, tmp_path / "p.img", "8M", ("-b", "1024"))
    stats = debugfs_stats(image, [b"/sp", b"/fast", b"/missing"])
    sp = stats[b"/sp"]
    assert sp is not None and sp.type == "regular" and sp.size == 400_000 and sp.links == 1
    assert sorted(sp.blocks) == [4, 5, 6, 7, 292]
    assert sorted(kind for kind, _ in sp.meta) == ["DIND", "IND"]
    assert len(set(sp.blocks.values()) | {b for _, b in sp.meta}) == 7  # all distinct blocks
    fast = stats[b"/fast"]
    assert fast is not None and fast.type == "symlink" and fast.fast_link == "sp"
    assert stats[b"/missing"] is None
    assert parse_debugfs_stat(b"") is None


# --- every image of the matrix -----------------------------------------------------


def test_superblock_matches_dumpe2fs(built: Built, opened: Ext2Image) -> None:
    """Do the superblock fields the reader decodes equal what `dumpe2fs -h` prints?"""
    h = dumpe2fs_header(built.image)
    sb = opened.superblock
    assert sb.s_magic == 0xEF53
    assert sb.s_inodes_count == int(h["Inode count"])
    assert sb.s_blocks_count == int(h["Block count"])
    assert opened.block_size == int(h["Block size"]) == 1024 << sb.s_log_block_size
    assert sb.s_rev_level == int(h["Filesystem revision #"].split()[0])
    rev0 = sb.s_rev_level == 0
    assert opened.inode_size == (128 if rev0 else int(h["Inode size"]))
    assert opened.first_ino == (11 if rev0 else int(h["First inode"]))
    blocks_per_group = int(h["Blocks per group"])
    first_data_block = int(h["First block"])
    assert opened.groups_count == -(-(sb.s_blocks_count - first_data_block) // blocks_per_group)
    if not rev0:
        assert sb.s_uuid.hex() == UUID.replace("-", "")
        names = set(h["Filesystem features"].split())
        bits = {"has_journal": (sb.s_feature_compat, 0x4), "ext_attr": (sb.s_feature_compat, 0x8),
                "resize_inode": (sb.s_feature_compat, 0x10),
                "dir_index": (sb.s_feature_compat, 0x20),
                "filetype": (sb.s_feature_incompat, 0x2), "meta_bg": (sb.s_feature_incompat, 0x10),
                "sparse_super": (sb.s_feature_ro_compat, 0x1),
                "large_file": (sb.s_feature_ro_compat, 0x2)}
        for name, (mask, bit) in bits.items():
            assert bool(mask & bit) == (name in names), name


def expected_walk(built: Built) -> dict[str, tuple[list[str], list[str]]]:
    """os.walk of the source tree in image paths, plus the lost+found mke2fs adds.

    A symlink goes to dirnames when it resolves *inside the image* to a directory, so an
    absolute target such as "/nested/x" is resolved against the tree, not the host.
    """
    out = {}
    for dirpath, dirnames, filenames in os.walk(built.src):
        rel = os.path.relpath(dirpath, built.src)
        key = "/" if rel == "." else "/" + rel
        dirs, files = [], []
        for name in dirnames + filenames:
            path = os.path.join(key, name)
            real = resolve_in_tree(built.src, path)
            (dirs if real is not None and real.is_dir() else files).append(name)
        out[key] = (sorted(dirs), sorted(files))
    out["/"][0].append("lost+found")
    out["/"][0].sort()
    out["/lost+found"] = ([], [])
    return out


def test_walk_matches_source_tree(built: Built, opened: Ext2Image) -> None:
    """Does walk() visit the same directories with the same dirnames and filenames as os.walk?"""
    got = {}
    for dirpath, dirnames, filenames in opened.walk("/"):
        key = "/" + str(dirpath).strip("/") if str(dirpath).strip("/") else "/"
        assert key not in got, f"walk visited {key!r} twice"
        got[key] = (sorted(dirnames), sorted(filenames))
    want = expected_walk(built)
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key] == value, key


def test_every_listing_matches_source_dir(built: Built, opened: Ext2Image) -> None:
    """Does listdir() of every directory name the source directory's entries, no "." or ".."?"""
    for path, st in built.entries:
        if stat.S_ISDIR(st.st_mode):
            want = sorted(os.listdir(host(built, path)))
            if path == "/":
                want = sorted([*want, "lost+found"])
            assert sorted(opened.listdir(path)) == want, path


def test_every_file_reads_back_like_the_source(built: Built, opened: Ext2Image) -> None:
    """Does every regular file read back byte for byte, holes as zeros, like the source file?"""
    for path, st in regular_files(built):
        if st.st_size > HUGE_READ_LIMIT:
            continue  # test_huge_file_ranges reads it by ranges
        data = opened.read(path)
        assert len(data) == st.st_size, path
        assert hashlib.sha256(data).hexdigest() == file_digest(host(built, path)), path


def test_partial_reads_match_source(built: Built, opened: Ext2Image) -> None:
    """Does read(path, offset, size) return the source's slice at block and IND/DIND edges?"""
    bs = opened.block_size
    p = bs // 4
    for path in ["/dind.bin", "/dind_sparse.bin", "/holes/middle.bin", "/holes/end.bin",
                 "/sizes/size_4097", "/empty"]:
        whole = host(built, path).read_bytes()
        n = len(whole)
        offsets = {0, 1, bs - 1, bs, 12 * bs - 1, 12 * bs, (12 + p) * bs - 3, n - 1, n, n + 7}
        for offset in sorted(o for o in offsets if o >= 0):
            for size in (0, 1, 100, 2 * bs + 3, -1):
                want = whole[offset:] if size < 0 else whole[offset:offset + size]
                assert opened.read(path, offset, size) == want, (path, offset, size)


def test_huge_file_ranges(built: Built, opened: Ext2Image) -> None:
    """Above 2 GiB (large_file, i_size_high): do ranges around 2**31 and the end read right?"""
    for path, st in regular_files(built):
        if st.st_size <= HUGE_READ_LIMIT:
            continue
        assert opened.stat(path).st_size == st.st_size > 2 * GIB
        with open(host(built, path), "rb") as f:
            for offset, size in [(0, 6000), (2 * GIB - 3000, 6000), (2 * GIB - 1, 2),
                                 (GIB, 4096), (st.st_size - 5000, 5000), (st.st_size - 1, 10),
                                 (st.st_size, 10)]:
                f.seek(offset)
                assert opened.read(path, offset, size) == f.read(size), (path, offset)


def test_symlinks_match_os_readlink(built: Built, opened: Ext2Image) -> None:
    """Does readlink() give os.readlink's target for fast, slow, 59/60-byte and dangling links?"""
    links = [p for p, st in built.entries if stat.S_ISLNK(st.st_mode)]
    assert len(links) >= 14
    for path in links:
        target = os.readlink(host(built, path))
        assert opened.readlink(path) == target, path
        assert opened.readlink(os.fsencode(path)) == target, path
        fast = dstat(built, path).fast_link
        assert fast is None or fast == target  # debugfs agrees for the fast ones


def test_reads_follow_symlinks_like_the_kernel(built: Built, opened: Ext2Image) -> None:
    """Do reads through links (chains, absolute, mid-path, 200-byte) reach the right file?"""
    through = [p for p, st in built.entries if stat.S_ISLNK(st.st_mode)]
    through += ["/a/link/b.txt", "/links/todir/file.txt", "/links/todir_abs/y/z/w/deep.txt",
                "/links/todir/x/../file.txt"]
    for path in through:
        real = resolve_in_tree(built.src, path)
        if real is None:
            with pytest.raises(FileNotFoundError) as info:
                opened.read(path)
            assert isinstance(info.value, Ext2FileNotFoundError)
        elif real.is_dir():
            assert sorted(opened.listdir(path)) == sorted(os.listdir(real)), path
        else:
            assert opened.read(path) == real.read_bytes(), path
            assert opened.stat(path).st_ino == dstat(built, "/" + str(
                real.relative_to(built.src))).ino


def test_stat_matches_debugfs_and_source(built: Built, opened: Ext2Image) -> None:
    """Do lstat()'s inode, type, mode, size, links, owner and mtime equal debugfs stat's?"""
    for path, src_st in [*built.entries, ("/lost+found", None)]:
        d = dstat(built, path)
        st = opened.lstat(path)
        got = (st.st_ino, DEBUGFS_TYPE[stat.S_IFMT(st.st_mode)], stat.S_IMODE(st.st_mode),
               st.st_size, st.st_nlink, st.st_uid, st.st_gid, int(st.st_mtime))
        assert got == (d.ino, d.type, d.mode, d.size, d.links, d.uid, d.gid, d.mtime), path
        assert opened.lookup(path, follow_symlinks=False) == d.ino, path
        if src_st is None:
            continue
        # And the source agrees (directories' link counts depend on the host filesystem;
        # mke2fs gives the root directory its own owner and time).
        assert st.st_mode == src_st.st_mode, path
        if path != "/":
            assert (st.st_uid, st.st_gid, int(st.st_mtime)) == (src_st.st_uid, src_st.st_gid,
                                                                MTIME), path
        if not stat.S_ISDIR(src_st.st_mode):
            assert (st.st_size, st.st_nlink) == (src_st.st_size, src_st.st_nlink), path


def test_hard_links_share_one_inode(built: Built, opened: Ext2Image) -> None:
    """Do the four names of one file give one inode number with a link count of 4?"""
    inos = {opened.lookup(p) for p in ["/hard/one", "/hard/two", "/hard/three", "/hard_outside"]}
    assert inos == {dstat(built, "/hard/one").ino}
    assert opened.stat("/hard_outside").st_nlink == 4


def test_block_maps_match_debugfs(built: Built, opened: Ext2Image) -> None:
    """Does block_map() of every file equal debugfs's BLOCKS line, holes (also at the end) as 0?"""
    bs = opened.block_size
    tind_seen = False
    for path, src_st in regular_files(built):
        d = dstat(built, path)
        want = block_map_array(d.blocks, d.size, bs)
        got = opened.block_map(path)
        assert isinstance(got, np.ndarray) and got.dtype == np.int64, path
        assert got.shape == want.shape, (path, got.shape, want.shape)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (path, [(int(i), int(got[i]), int(want[i])) for i in bad[:5]])
        tind_seen |= any(kind == "TIND" for kind, _ in d.meta)
        assert src_st.st_size == d.size
    if built.config.tree == "full" and bs == 1024:
        assert tind_seen, "the 1 KiB image should have a file reaching TIND"


def test_indirect_blocks_match_debugfs(built: Built, opened: Ext2Image) -> None:
    """Are metadata_blocks() the IND/DIND/TIND blocks debugfs lists in brackets?"""
    for path, _ in regular_files(built):
        d = dstat(built, path)
        got = sorted((m.kind, m.block) for m in opened.metadata_blocks(path))
        assert got == sorted(d.meta), path


def test_directory_blocks_match_debugfs(built: Built, opened: Ext2Image) -> None:
    """Does bmap() of every block of a directory (e.g. the 3,000-entry one) equal debugfs's?"""
    bs = opened.block_size
    for path in ["/", "/bigdir", "/empty_dir", "/lost+found", "/names", "/links"]:
        d = dstat(built, path)
        ino = opened.lookup(path)
        want = block_map_array(d.blocks, d.size, bs)
        got = [opened.bmap(ino, i) for i in range(len(want))]
        assert got == want.tolist(), path
        assert opened.bmap(ino, len(want)) == 0  # past the end: no block


def test_image_file_never_modified(built: Built, opened: Ext2Image) -> None:
    """After all the reading above, is the image byte for byte what mke2fs wrote?"""
    for _ in opened.walk("/"):
        pass
    assert file_digest(built.image) == built.digest


# --- one image, many questions ----------------------------------------------------


@pytest.fixture(scope="session")
def b1024(tmp_path_factory: pytest.TempPathFactory, source_trees: dict[str, Path]) -> Built:
    """The 1 KiB-block image of the full tree (its own copy: some tests damage a copy of it)."""
    return build_image(CONFIGS[0], source_trees["full"], tmp_path_factory.mktemp("one"))


def test_error_types_are_the_builtin_ones(b1024: Built) -> None:
    """Do bad paths raise FileNotFound/NotADirectory/IsADirectory errors, as os would?"""
    with Ext2Image.open(b1024.image) as img:
        cases = [
            (lambda: img.read("/missing"), Ext2FileNotFoundError, errno.ENOENT),
            (lambda: img.read("/nested/missing.txt"), Ext2FileNotFoundError, errno.ENOENT),
            (lambda: img.listdir("/nope"), Ext2FileNotFoundError, errno.ENOENT),
            (lambda: img.read("/links/dangling"), Ext2FileNotFoundError, errno.ENOENT),
            (lambda: img.read("/nested"), Ext2IsADirectoryError, errno.EISDIR),
            (lambda: img.read("/links/todir"), Ext2IsADirectoryError, errno.EISDIR),
            (lambda: img.listdir("/small.txt"), Ext2NotADirectoryError, errno.ENOTDIR),
            (lambda: img.read("/small.txt/x"), Ext2NotADirectoryError, errno.ENOTDIR),
            (lambda: img.readlink("/small.txt"), NotASymlinkError, errno.EINVAL),
        ]
        for call, kind, code in cases:
            with pytest.raises(kind) as info:
                call()
            assert isinstance(info.value, Ext2Error) and info.value.errno == code, kind


def test_special_files_are_not_regular_and_not_corruption(b1024: Built) -> None:
    """Reading a FIFO or a device node (valid inodes, e2fsck is happy): EINVAL, not corruption?"""
    special_types = (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK)
    specials = [p for p, st in b1024.entries if stat.S_IFMT(st.st_mode) in special_types]
    assert "/special/fifo" in specials
    with Ext2Image.open(b1024.image) as img:
        for path in specials:
            assert stat.S_IFMT(img.lstat(path).st_mode) == stat.S_IFMT(
                os.lstat(host(b1024, path)).st_mode)
            for call in (img.read, img.block_map):
                with pytest.raises(NotARegularFileError) as info:
                    call(path)
                assert not isinstance(info.value, CorruptImageError), path
                assert info.value.errno == errno.EINVAL, path


def test_dot_and_dotdot_and_bytes_paths(b1024: Built) -> None:
    """Do ".", "..", "/.." and bytes paths resolve as on a mounted filesystem?"""
    src = b1024.src
    with Ext2Image.open(b1024.image) as img:
        assert img.read("/../small.txt") == (src / "small.txt").read_bytes()
        assert img.read("/nested/./x/../file.txt") == (src / "nested/file.txt").read_bytes()
        assert sorted(img.listdir("/nested/x/..")) == sorted(os.listdir(src / "nested"))
        assert img.read(b"/names/bad\xff\xfe.bin") == b"not utf-8\n"
        assert os.fsdecode(b"bad\xff\xfe.bin") in img.listdir("/names")
        assert img.read("/names/" + "n" * 255) == ("n" * 255).encode() + b"\n"
        assert img.lookup("/links/fast") == img.lookup("/small.txt")
        assert img.lookup("/links/fast", follow_symlinks=False) != img.lookup("/small.txt")
        assert img.stat("/links/todir").st_ino == img.lstat("/nested").st_ino


def test_walk_from_a_subdirectory(b1024: Built) -> None:
    """Does walk("/nested") yield what os.walk yields below the source's nested/, top-down?"""
    root = b1024.src / "nested"
    want = [("/nested" + ("" if d == str(root) else "/" + os.path.relpath(d, root)),
             sorted(dn), sorted(fn)) for d, dn, fn in os.walk(root)]
    with Ext2Image.open(b1024.image) as img:
        got = [(d, sorted(dn), sorted(fn)) for d, dn, fn in img.walk("/nested")]
        assert got[0][0] == "/nested"  # top-down: the top comes first
        assert sorted(got) == sorted(want)
        assert list(img.walk("/small.txt")) == []  # os.walk of a file yields nothing


def test_open_from_bytes_buffer_and_read_only_file(b1024: Built, tmp_path: Path) -> None:
    """Do a path, bytes, a read-only mmap and a read-only (0444) file all read the same?"""
    data = b1024.image.read_bytes()
    ro = tmp_path / "ro.img"
    shutil.copyfile(b1024.image, ro)
    os.chmod(ro, 0o444)
    with open(b1024.image, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        for source in [b1024.image, str(b1024.image), data, memoryview(data), m, ro]:
            with Ext2Image.open(source) as img:
                assert img.read("/dind.bin") == (b1024.src / "dind.bin").read_bytes()
                assert sorted(img.listdir("/bigdir")) == sorted(os.listdir(b1024.src / "bigdir"))
    assert hashlib.sha256(data).hexdigest() == b1024.digest == file_digest(ro)


@pytest.mark.parametrize("block_size", [1024, 4096])
def test_backup_superblock_opens_damaged_image(block_size: int, tmp_path: Path,
                                               source_trees: dict[str, Path]) -> None:
    """With the primary superblock zeroed, is the image refused, yet readable from a backup?

    The backup's location comes from dumpe2fs (8193 with 1 KiB blocks, 32768 with 4 KiB);
    `e2fsck -fn -b N -B BS` must accept the damaged image the same way.
    """
    size = "64M" if block_size == 1024 else "160M"  # two groups at least: one backup
    config = Config(f"b{block_size}", ("-b", str(block_size), "-I", "256"), size=size)
    built = build_image(config, source_trees["full"], tmp_path)
    backup = backup_superblocks(built.image)[0]
    assert backup == {1024: 8193, 4096: 32768}[block_size]
    damaged = tmp_path / "damaged.img"
    shutil.copyfile(built.image, damaged)
    with open(damaged, "r+b") as f:
        f.seek(1024)
        f.write(bytes(1024))
    digest = file_digest(damaged)
    with pytest.raises(CorruptImageError):
        Ext2Image.open(damaged)
    proc = subprocess.run([need_tool("e2fsck"), "-fn", "-b", str(backup), "-B", str(block_size),
                           str(damaged)], capture_output=True)
    assert proc.returncode in (0, 4), proc.stdout  # 4: it would rewrite the primary copy
    with Ext2Image.open(damaged, sb_block=backup, block_size=block_size) as img:
        for path, _ in regular_files(built):
            data = img.read(path)
            assert hashlib.sha256(data).hexdigest() == file_digest(host(built, path)), path
        assert sorted(img.listdir("/")) == sorted([*os.listdir(built.src), "lost+found"])
    assert file_digest(damaged) == digest


@pytest.fixture(scope="session")
def symlink_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("symlinks")
    src = build_symlink_tree(base / "src")
    return src, mke2fs(src, base / "links.img", "8M", ("-b", "1024"))


def test_symlink_loops_raise_eloop_like_the_host(symlink_image: tuple[Path, Path]) -> None:
    """Does a loop or a 41-link chain raise ELOOP, and a 40-link chain resolve, as on the host?"""
    src, image = symlink_image
    with Ext2Image.open(image) as img:
        for name in ["loop_a", "self", "bad_1", "dir/dir_loop", "ok_1", "ok_2", "bad_2"]:
            try:
                want: bytes | int = (src / name).read_bytes()  # the host kernel's verdict
            except OSError as e:
                want = e.errno or 0
            if isinstance(want, bytes):
                assert img.read("/" + name) == want, name
            else:
                assert want == errno.ELOOP
                with pytest.raises(SymlinkLoopError) as info:
                    img.read("/" + name)
                assert info.value.errno == errno.ELOOP, name
                with pytest.raises(SymlinkLoopError):
                    img.stat("/" + name)
                assert img.readlink("/" + name) == os.readlink(src / name)
                assert stat.S_ISLNK(img.lstat("/" + name).st_mode)


def ext4_feature_image(tmp_path: Path, fs_type: str, options: tuple[str, ...]) -> Path:
    src = build_small_tree(tmp_path / "src")
    return mke2fs(src, tmp_path / "f.img", "16M", ("-b", "1024", *options), fs_type)


@pytest.mark.parametrize(("fs_type", "options", "names"), [
    ("ext4", (), {"extent": "EXT4_FEATURE_INCOMPAT_EXTENTS",
                  "64bit": "EXT4_FEATURE_INCOMPAT_64BIT",
                  "flex_bg": "EXT4_FEATURE_INCOMPAT_FLEX_BG"}),
    ("ext2", ("-O", "extent"), {"extent": "EXT4_FEATURE_INCOMPAT_EXTENTS"}),
    ("ext2", ("-O", "flex_bg"), {"flex_bg": "EXT4_FEATURE_INCOMPAT_FLEX_BG"}),
    ("ext2", ("-O", "inline_data"), {"inline_data": "EXT4_FEATURE_INCOMPAT_INLINE_DATA"}),
], ids=["ext4", "extent", "flex_bg", "inline_data"])
def test_ext4_features_are_refused_by_name(tmp_path: Path, fs_type: str,
                                           options: tuple[str, ...],
                                           names: dict[str, str]) -> None:
    """Is an image with ext4 incompatible features refused, naming one (e2fsprogs + kernel)?"""
    image = ext4_feature_image(tmp_path, fs_type, options)
    incompat = set(dumpe2fs_header(image)["Filesystem features"].split())
    assert set(names) <= incompat
    with pytest.raises(UnsupportedFeatureError) as info:
        Ext2Image.open(image)
    message = str(info.value)
    assert any(name in message and macro in message for name, macro in names.items()), message
