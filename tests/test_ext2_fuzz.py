"""Mutation fuzzing: a damaged ext2 image may only ever raise an Ext2Error.

Real images from `mke2fs -d` (1 KiB and 4 KiB blocks, revision 0 and 1) are damaged by
hypothesis: random bytes in the structures that matter, extreme values in chosen fields of the
superblock, group descriptors, inodes and directory entries, truncation. Then the reader opens
the copy, walks it, reads every file and symlink, maps every file. Where the structures are
comes from e2fsprogs (dumpe2fs, `debugfs imap`, `debugfs stat`), not from the reader.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from ext2_trees import (
    bounded,
    build_small_tree,
    debugfs_batch,
    debugfs_quote,
    debugfs_stats,
    dumpe2fs_header,
    mke2fs,
    read_everything,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from xipmodel.errors import Ext2Error, UnsupportedFeatureError
from xipmodel.ext2.reader import Ext2Image

TIME_LIMIT = 5.0  # seconds per example
MEMORY_LIMIT = 128 * 1024 * 1024  # tracemalloc peak per example
FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
PATHS = [b"/", b"/a.txt", b"/ind.bin", b"/hole.bin", b"/fast", b"/slow", b"/sub",
         b"/sub/f01", b"/sub/f39"]

# Offsets of fields inside the on-disk structures (struct ext2_super_block, ext2_group_desc,
# ext2_inode, ext2_dir_entry_2 in fs/ext2/ext2.h): (name, offset, size in bytes).
SB_FIELDS = [("s_inodes_count", 0, 4), ("s_blocks_count", 4, 4), ("s_first_data_block", 20, 4),
             ("s_log_block_size", 24, 4), ("s_blocks_per_group", 32, 4),
             ("s_inodes_per_group", 40, 4), ("s_magic", 56, 2), ("s_rev_level", 76, 4),
             ("s_first_ino", 84, 4), ("s_inode_size", 88, 2), ("s_feature_compat", 92, 4),
             ("s_feature_incompat", 96, 4), ("s_feature_ro_compat", 100, 4),
             ("s_reserved_gdt_blocks", 206, 2), ("s_desc_size", 254, 2),
             ("s_first_meta_bg", 260, 4)]
GD_FIELDS = [("bg_block_bitmap", 0, 4), ("bg_inode_bitmap", 4, 4), ("bg_inode_table", 8, 4),
             ("bg_used_dirs_count", 16, 2)]
INODE_FIELDS = [("i_mode", 0, 2), ("i_size", 4, 4), ("i_links_count", 26, 2),
                ("i_blocks", 28, 4), ("i_flags", 32, 4), *[(f"i_block[{i}]", 40 + 4 * i, 4)
                                                           for i in range(15)],
                ("i_file_acl", 104, 4), ("i_size_high", 108, 4)]
DIRENT_FIELDS = [("inode", 0, 4), ("rec_len", 4, 2), ("name_len", 6, 1), ("file_type", 7, 1)]


@dataclass(frozen=True)
class Layout:
    """A pristine image and where its structures are, as e2fsprogs reports them."""

    name: str
    data: bytes
    block_size: int
    gdt: int  # byte offset of the group descriptor table
    groups: int
    inodes: dict[bytes, int]  # path → byte offset of its inode
    dirents: list[int]  # byte offsets of directory entries
    regions: list[tuple[int, int]]  # (offset, length) of metadata worth damaging


def layout(name: str, image: Path) -> Layout:
    h = dumpe2fs_header(image)
    bs = int(h["Block size"])
    first = int(h["First block"])
    groups = -(-(int(h["Block count"]) - first) // int(h["Blocks per group"]))
    imaps = debugfs_batch(image, [b"imap " + debugfs_quote(p) for p in PATHS])
    inodes = {}
    for path, out in zip(PATHS, imaps, strict=True):
        m = re.search(rb"located at block (\d+), offset (0x[0-9a-f]+)", out)
        assert m is not None, out
        inodes[path] = int(m.group(1)) * bs + int(m.group(2), 16)
    data = image.read_bytes()
    dirents = []
    stats = debugfs_stats(image, [b"/", b"/sub"])
    for s in stats.values():
        assert s is not None
        for block in s.blocks.values():
            # Follow the rec_len chain of the pristine block (e2fsck said it is clean).
            at = block * bs
            while at < (block + 1) * bs:
                dirents.append(at)
                rec_len = struct.unpack_from("<H", data, at + 4)[0]
                assert rec_len >= 8
                at += rec_len
    gdt = (first + 1) * bs
    inode_size = 128 if h["Filesystem revision #"].startswith("0") else int(h["Inode size"])
    regions = [(1024, 1024), (gdt, 32 * groups)]
    regions += [(off, inode_size) for off in inodes.values()]
    regions += [(b * bs, bs) for s in stats.values() if s for b in s.blocks.values()]
    return Layout(name, data, bs, gdt, groups, inodes, dirents, regions)


@pytest.fixture(scope="session")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> list[Layout]:
    """Three small images of the same tree: 1 KiB rev 1, 4 KiB rev 1, 1 KiB rev 0."""
    base = tmp_path_factory.mktemp("fuzz")
    src = build_small_tree(base / "src")
    out = []
    for name, options in [("b1024", ("-b", "1024", "-I", "128")),
                          ("b4096", ("-b", "4096", "-I", "256")),
                          ("rev0", ("-r", "0", "-b", "1024"))]:
        image = mke2fs(src, base / f"{name}.img", "4M", options)
        out.append(layout(name, image))
    return out


def survive(data: bytes | bytearray) -> None:
    """Open, walk and read the damaged image: only an Ext2Error may escape, within bounds."""
    with bounded(TIME_LIMIT) as report:
        try:
            with Ext2Image.open(bytes(data)) as img:
                read_everything(img)
            event("read completely")
        except Ext2Error as exc:
            event(f"raised {type(exc).__name__}")
    assert report["elapsed"] < TIME_LIMIT
    assert report["peak"] < MEMORY_LIMIT, f"tracemalloc peak {report['peak'] / 2**20:.0f} MiB"


def extreme(size: int) -> st.SearchStrategy[int]:
    top = (1 << (8 * size)) - 1
    values = [0, 1, 2, 3, 7, 11, 12, 255, 1024, 4096, 65535, 1 << 15, top >> 1, top - 1, top]
    return st.sampled_from([v for v in values if v <= top]) | st.integers(0, top)


def test_pristine_images_read_completely(pristine: list[Layout]) -> None:
    """Before damage, does every fuzz image read completely (so damage is what the fuzz adds)?"""
    for lay in pristine:
        with Ext2Image.open(lay.data) as img:
            counts = read_everything(img)
        assert counts["files"] == 44 and counts["links"] == 2, lay.name


@FUZZ
@given(data=st.data())
def test_random_bytes_in_metadata(pristine: list[Layout], data: st.DataObject) -> None:
    """Random bytes over the superblock, descriptors, inodes or directories: Ext2Error only?"""
    lay = data.draw(st.sampled_from(pristine))
    image = bytearray(lay.data)
    for _ in range(data.draw(st.integers(1, 12))):
        if data.draw(st.booleans()):
            offset, length = data.draw(st.sampled_from(lay.regions))
            at = offset + data.draw(st.integers(0, length - 1))
        else:
            at = data.draw(st.integers(0, len(image) - 1))
        image[at] = data.draw(st.integers(0, 255))
    survive(image)


def _poke(image: bytearray, at: int, size: int, value: int) -> None:
    image[at:at + size] = value.to_bytes(size, "little")


@FUZZ
@given(data=st.data())
def test_extreme_field_values(pristine: list[Layout], data: st.DataObject) -> None:
    """Superblock counts, descriptor and inode fields, dirents at extremes: Ext2Error only?"""
    lay = data.draw(st.sampled_from(pristine))
    image = bytearray(lay.data)
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["sb", "gd", "inode", "dirent"]))
        if where == "sb":
            _, off, size = data.draw(st.sampled_from(SB_FIELDS))
            at = 1024 + off
        elif where == "gd":
            _, off, size = data.draw(st.sampled_from(GD_FIELDS))
            at = lay.gdt + 32 * data.draw(st.integers(0, lay.groups - 1)) + off
        elif where == "inode":
            _, off, size = data.draw(st.sampled_from(INODE_FIELDS))
            at = lay.inodes[data.draw(st.sampled_from(PATHS))] + off
        else:
            _, off, size = data.draw(st.sampled_from(DIRENT_FIELDS))
            at = data.draw(st.sampled_from(lay.dirents)) + off
        _poke(image, at, size, data.draw(extreme(size)))
    survive(image)


@FUZZ
@given(data=st.data())
def test_truncated_images(pristine: list[Layout], data: st.DataObject) -> None:
    """An image cut short anywhere (inside the superblock, a table, a file): Ext2Error only?

    Half the time s_blocks_count is shrunk to match, so the cut passes the size check at
    open and the walk meets block pointers past the end instead.
    """
    lay = data.draw(st.sampled_from(pristine))
    cut = data.draw(st.integers(0, 4096) | st.integers(0, len(lay.data) - 1)
                    | st.sampled_from([b * lay.block_size for b in range(1, 300)]))
    image = bytearray(lay.data[:cut])
    if cut >= 2048 and data.draw(st.booleans()):
        _poke(image, 1024 + 4, 4, cut // lay.block_size)
    survive(image)


@pytest.mark.parametrize("path", [b"/a.txt", b"/ind.bin", b"/sub", b"/slow"])
def test_extents_flag_is_refused_by_name(pristine: list[Layout], path: bytes) -> None:
    """An inode with EXT4_EXTENTS_FL (0x80000) in i_flags: refused, naming the flag?"""
    for lay in pristine:
        image = bytearray(lay.data)
        at = lay.inodes[path] + 32
        flags = int.from_bytes(image[at:at + 4], "little") | 0x80000
        _poke(image, at, 4, flags)
        name = path.decode()
        with Ext2Image.open(bytes(image)) as img, pytest.raises(Ext2Error) as info:
            if name == "/sub":
                img.listdir(name)
            elif name == "/slow":
                img.readlink(name)
            else:
                img.read(name)
        assert "EXTENTS_FL" in str(info.value) or "0x80000" in str(info.value)
        assert isinstance(info.value, UnsupportedFeatureError), lay.name
