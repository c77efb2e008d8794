"""Populate, then freeze: build an ext2 image from a host directory or a mapping, in pure Python.

This is the "populate" half of XIP2's life cycle (populate → freeze → share): the
caller describes a tree, `build_image` lays it out the way `mke2fs -d` would and
hands back immutable `bytes`, the frozen image nobody can write any more.

The image it produces, block by block (1 KiB blocks shown, so block 0 is the boot
block and s_first_data_block = 1; with larger blocks the superblock sits at byte
1024 inside block 0 and group 0 starts at block 0)::

    group 0                                             group 1 (a backup group)
    ┌──────┬─────┬─────┬────┬────┬──────────┬──────────── … ┬─────┬─────┬────┬────┬──────────┬── …
    │ boot │super│ GDT │ bb │ ib │  inode   │ data          │super│ GDT │ bb │ ib │  inode   │ data
    │      │block│     │    │    │  table   │               │copy │copy │    │    │  table   │
    └──────┴─────┴─────┴────┴────┴──────────┴──────────── … ┴─────┴─────┴────┴────┴──────────┴── …
    bb = block bitmap, ib = inode bitmap; a group holds super + GDT copies only if
    bg_has_super(g) (every group, or with sparse_super groups 0, 1 and powers of 3, 5, 7).
    No reserved GDT blocks (no resize_inode), no journal, no htree, no xattrs: plain ext2.

Inodes are numbered in a sorted pre-order walk (names compared as bytes) and fill the
inode tables from group 0 on::

    1 bad blocks (empty)   2 root   3..10 reserved (zero)   11 lost+found   12… the tree

Data is allocated in the same walk, lowest free block first, so every file's blocks
are contiguous and in logical order (only group metadata can cut a run, as in ext2).
Each indirect block sits right before the first data block it maps, as ext2 writes
them, and a hole (pointer 0) allocates nothing, not even an indirect block whose whole
range is a hole::

    file of 12 + p + 1 blocks (p = block_size / 4 pointers per block):
    │ 0 … 11 │ IND │ 12 … 12+p-1 │ DIND │ IND │ 12+p │
      direct   ↑ i_block[12]       ↑ i_block[13]

Directories are linear (no dir_index): ".", "..", then the names sorted, packed into
blocks whose last entry's rec_len runs to the block's end; lost+found gets the
blocks mke2fs gives it (16 KiB worth, between 2 and 12 blocks).

Everything is deterministic: no clock, no random state. The UUID, unless given, is
the first 16 bytes of the SHA-256 of the image (built with a zero UUID), marked as an
RFC 9562 version 8 ("custom") UUID.

Special files (devices, FIFOs, sockets) found in a host directory are refused with a
`ParameterError`: a frozen XIP image holds programs and their data, nothing else.
Times are 32-bit seconds in [0, 2**31): the extra epoch bits of large inodes are not used.
"""

from __future__ import annotations

import errno
import hashlib
import math
import os
import stat as statmod
import struct
import uuid as uuidlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError
from xipmodel.ext2 import layout as L

__all__ = ["BuildSource", "Directory", "Entry", "File", "HardLink", "Symlink", "build_image"]

Blocks: TypeAlias = npt.NDArray[np.int64]

# --- what the caller describes -------------------------------------------------


def follow_links(path: str, readlink: Callable[[str], str | None]) -> str | None:
    """`path` with every symlink followed, component by component (as fs/namei.c), where
    `readlink(p)` is the target of the link at absolute path p, or None if p is no link.

    None after more than MAXSYMLINKS links (a loop). Used on build mappings and tables
    of links, whose paths are absolute and normalized.
    """
    parts = [p for p in path.split("/") if p]
    done = ""
    for _ in range(L.MAXSYMLINKS):
        while parts:
            here = f"{done}/{parts.pop(0)}"
            target = readlink(here)
            if target is not None:
                parts = [p for p in target.split("/") if p] + parts
                done = "" if target.startswith("/") else done
                break
            done = here
        else:
            return done or "/"
    return None


@dataclass(frozen=True)
class File:
    """A regular file: `data`, then zeros up to `size` (a hole); `sparse`: zero blocks are holes."""

    data: bytes = b""
    _: KW_ONLY
    size: int | None = None
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int | None = None
    sparse: bool = False


@dataclass(frozen=True)
class Directory:
    """A directory; its contents are the mapping's paths below it."""

    mode: int = 0o755
    _: KW_ONLY
    uid: int = 0
    gid: int = 0
    mtime: int | None = None


@dataclass(frozen=True)
class Symlink:
    """A symbolic link to `target` (never followed by the builder)."""

    target: str | bytes
    _: KW_ONLY
    mode: int = 0o777
    uid: int = 0
    gid: int = 0
    mtime: int | None = None


@dataclass(frozen=True)
class HardLink:
    """Another name for the file or symlink at path `to` in the same mapping."""

    to: str


Entry: TypeAlias = bytes | File | Directory | Symlink | HardLink
BuildSource: TypeAlias = str | os.PathLike[str] | Mapping[str, Entry]

# --- private geometry constants (mke2fs / e2fsprogs values not in layout.py) ------

# EXT2_MAX_BLOCKS_PER_GROUP: bg_free_blocks_count is 16 bits, so at most 65528 blocks.
_MAX_BLOCKS_PER_GROUP: Final = (1 << 16) - 8
_LPF_BYTES: Final = 16 * 1024  # mke2fs grows lost+found to 16 KiB (2..12 blocks)
_LAST_GROUP_MIN_DATA: Final = 50  # mke2fs drops a last group with fewer spare blocks
_MAX_TIME: Final = (1 << 31) - 1
_LARGE_FILE_SIZE: Final = 1 << 31  # files from 2 GiB on need i_size_high (large_file)
_EXTRA_ISIZE: Final = 32  # sizeof(ext2_inode_large) - 128, what mke2fs puts in big inodes
_EXT2_ERRORS_CONTINUE: Final = 1
# Superblock fields past the 264 bytes layout.Superblock packs (e2fsprogs' ext2_fs.h).
_S_MKFS_TIME_OFFSET: Final = 0x108
_S_MIN_EXTRA_ISIZE_OFFSET: Final = 0x15C  # then s_want_extra_isize
_S_UUID_OFFSET: Final = 0x68
# struct ext2_inode_large after the first 128 bytes: i_extra_isize, i_checksum_hi,
# i_ctime_extra, i_mtime_extra, i_atime_extra, i_crtime, i_crtime_extra.
_INODE_EXTRA: Final = struct.Struct("<HH5I")

# --- the tree being built ----------------------------------------------------------


@dataclass(eq=False)
class _Node:
    """One inode to be: its metadata, its content, and (once planned) its block map."""

    path: str
    i_mode: int
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    children: dict[bytes, _Node] | None = None  # directories only
    size: int = 0
    extents: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, bytes), sorted
    sparse: bool = False
    link_to: str | None = None  # a HardLink placeholder, resolved after the mapping is read
    explicit: bool = True  # False for directories created because a path went through them
    ino: int = 0
    parent_ino: int = L.EXT2_ROOT_INO  # directories: where ".." points
    links: int = 0
    logical: Blocks = field(default_factory=lambda: np.zeros(0, np.int64))  # mapped blocks
    nblocks: int = 0  # data + indirect blocks to allocate

    @property
    def kind(self) -> int:
        """The file type bits of i_mode (S_IFREG, S_IFDIR, S_IFLNK)."""
        return self.i_mode & L.S_IFMT


def build_image(
    source: BuildSource,
    target: str | os.PathLike[str] | None = None,
    *,
    block_size: int = 4096,
    inode_size: int | None = None,
    size: int | None = None,
    inodes_count: int | None = None,
    volume_name: str = "",
    uuid: uuidlib.UUID | bytes | str | None = None,
    timestamp: int | None = None,
    rev_level: int = L.EXT2_DYNAMIC_REV,
    sparse_super: bool | None = None,
    filetype: bool | None = None,
) -> bytes:
    """Lay out `source` as a valid ext2 image and return it frozen (bytes); also write `target`.

    `source` is a host directory or a mapping {path: bytes | File | Directory | Symlink |
    HardLink}. `inode_size`, `sparse_super` and `filetype` default to 256, on, on for
    revision 1 and to 128, off, off for revision 0 (which has no feature flags).
    `size` (bytes) fixes the image size, else it fits the tree plus some slack;
    `inodes_count` likewise. `uuid` is a uuid.UUID, 16 bytes or a UUID string;
    `timestamp`, if given, is every time in the image, else superblock times are 0 and
    inode times are the entries' mtime. The result depends on nothing but the arguments.
    If `target` is given the image is written there and made read-only (0o444).
    A `size` is rounded down to whole blocks, and a last group too short for its
    metadata and 50 data blocks is dropped, as mke2fs does: the image may be smaller.
    """
    opts = _Options.check(block_size, inode_size, size, inodes_count, volume_name, uuid,
                          timestamp, rev_level, sparse_super, filetype)
    if isinstance(source, (str, os.PathLike)):
        root = _tree_from_host(os.fsencode(source))
    elif isinstance(source, Mapping):
        root = _tree_from_mapping(source)
    else:
        raise ParameterError(
            f"source: expected a directory path or a mapping of paths to entries, "
            f"not {type(source).__name__}"
        )
    order = _number_inodes(root)
    large_file = _plan_blocks(order, opts)
    data_blocks = sum(node.nblocks for node in order)
    last_ino = order[-1].ino if len(order) > 2 else L.EXT2_GOOD_OLD_FIRST_INO
    geo = _geometry(opts, data_blocks, last_ino)
    image = _write_image(order, geo, opts, large_file)
    frozen = bytes(image)
    if target is not None:
        _write_frozen(frozen, target)
    return frozen


# --- checking the arguments -----------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    """The checked arguments of build_image."""

    block_size: int
    inode_size: int
    size: int | None
    inodes_count: int | None
    volume_name: bytes
    uuid: bytes | None
    timestamp: int | None
    rev_level: int
    sparse_super: bool
    filetype: bool

    @property
    def pointers(self) -> int:
        """Block pointers per indirect block (p)."""
        return self.block_size // 4

    @classmethod
    def check(
        cls, block_size: int, inode_size: int | None, size: int | None,
        inodes_count: int | None, volume_name: str, uuid: object, timestamp: int | None,
        rev_level: int, sparse_super: bool | None, filetype: bool | None,
    ) -> _Options:
        """Validate every argument, naming it and its value in the ParameterError."""
        sizes = [1 << k for k in range(L.EXT2_MIN_BLOCK_LOG_SIZE, L.EXT2_MAX_BLOCK_LOG_SIZE + 1)]
        if not _is_int(block_size) or block_size not in sizes:
            raise ParameterError(f"block_size={block_size!r}: must be one of {sizes}")
        if not _is_int(rev_level) or rev_level not in (L.EXT2_GOOD_OLD_REV, L.EXT2_DYNAMIC_REV):
            raise ParameterError(f"rev_level={rev_level!r}: must be 0 or 1")
        dynamic = rev_level == L.EXT2_DYNAMIC_REV
        if inode_size is None:
            inode_size = 256 if dynamic else L.EXT2_GOOD_OLD_INODE_SIZE
        if not _is_int(inode_size) or inode_size < L.EXT2_GOOD_OLD_INODE_SIZE or (
            inode_size & (inode_size - 1)) or inode_size > block_size:
            raise ParameterError(
                f"inode_size={inode_size!r}: must be a power of two from 128 to the "
                f"block size {block_size}"
            )
        if not dynamic:
            # Revision 0 has fixed 128-byte inodes and no feature flags at all.
            for name, value in (("sparse_super", sparse_super), ("filetype", filetype)):
                if value:
                    raise ParameterError(
                        f"{name}={value!r} with rev_level=0: revision 0 has no feature flags"
                    )
            if inode_size != L.EXT2_GOOD_OLD_INODE_SIZE:
                raise ParameterError(
                    f"inode_size={inode_size} with rev_level=0: revision 0 inodes are 128 bytes"
                )
        if size is not None and (not _is_int(size) or size <= 0):
            raise ParameterError(f"size={size!r}: must be a positive number of bytes")
        if inodes_count is not None and (not _is_int(inodes_count) or inodes_count <= 0):
            raise ParameterError(f"inodes_count={inodes_count!r}: must be a positive integer")
        if not isinstance(volume_name, str):
            raise ParameterError(f"volume_name={volume_name!r}: must be a str")
        label = volume_name.encode("utf-8")
        if len(label) > 16:
            raise ParameterError(
                f"volume_name={volume_name!r}: {len(label)} bytes in UTF-8, at most 16 fit"
            )
        if timestamp is not None and (not _is_int(timestamp) or not 0 <= timestamp <= _MAX_TIME):
            raise ParameterError(f"timestamp={timestamp!r}: must be an int in 0..{_MAX_TIME}")
        return cls(block_size, inode_size, size, inodes_count, label, _uuid_bytes(uuid),
                   timestamp, rev_level,
                   dynamic if sparse_super is None else bool(sparse_super),
                   dynamic if filetype is None else bool(filetype))


def _is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def _uuid_bytes(value: object) -> bytes | None:
    """The 16 bytes of a uuid.UUID, a 16-byte string or a UUID in text; None stays None."""
    if value is None:
        return None
    if isinstance(value, uuidlib.UUID):
        return value.bytes
    if isinstance(value, (bytes, bytearray)) and len(value) == 16:
        return bytes(value)
    if isinstance(value, str):
        try:
            return uuidlib.UUID(value).bytes
        except ValueError:
            pass
    raise ParameterError(f"uuid={value!r}: must be a uuid.UUID, 16 bytes or a UUID string")


def _check_meta(path: str, mode: int, uid: int, gid: int, mtime: int | None) -> int:
    """Check an entry's permission bits, owner and mtime; return the mtime (default 0)."""
    if not _is_int(mode) or not 0 <= mode <= 0o7777:
        raise ParameterError(f"{path}: mode={mode!r} must be permission bits in 0..0o7777")
    for name, value in (("uid", uid), ("gid", gid)):
        if not _is_int(value) or not 0 <= value < 1 << 32:
            raise ParameterError(f"{path}: {name}={value!r} must be in 0..2**32-1")
    if mtime is None:
        return 0
    if not _is_int(mtime) or not 0 <= mtime <= _MAX_TIME:
        raise ParameterError(f"{path}: mtime={mtime!r} must be an int in 0..{_MAX_TIME}")
    return mtime


def _check_name(name: bytes, path: str) -> bytes:
    """A directory entry name: 1..255 bytes, no NUL, not "." or ".."."""
    if len(name) > L.EXT2_NAME_LEN:
        raise ParameterError(
            f"{path}: name is {len(name)} bytes, more than EXT2_NAME_LEN ({L.EXT2_NAME_LEN})"
        )
    if name in (b".", b"..") or b"\0" in name or not name:
        raise ParameterError(f"{path}: {name!r} is not a valid file name")
    return name


# --- reading the source: a host directory -----------------------------------------------


def _tree_from_host(top: bytes) -> _Node:
    """Scan a host directory (lstat, symlinks not followed) into a tree of _Node."""
    shown_top = os.fsdecode(top)
    try:
        st = os.lstat(top)
    except OSError as exc:
        raise ParameterError(f"source={shown_top!r}: {exc.strerror}") from exc
    if not statmod.S_ISDIR(st.st_mode):
        raise ParameterError(f"source={shown_top!r}: not a directory")
    root = _host_node(top, "/", st)
    seen: dict[tuple[int, int], _Node] = {}  # hard links: (st_dev, st_ino) → one inode
    stack = [(top, root)]
    while stack:
        dirpath, dirnode = stack.pop()
        assert dirnode.children is not None
        for name in sorted(os.listdir(dirpath)):
            path = os.path.join(dirpath, name)
            shown = dirnode.path.rstrip("/") + "/" + os.fsdecode(name)
            _check_name(name, shown)
            st = os.lstat(path)
            if statmod.S_ISDIR(st.st_mode):
                child = _host_node(path, shown, st)
                stack.append((path, child))
            elif statmod.S_ISREG(st.st_mode) or statmod.S_ISLNK(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen:
                    child = seen[key]
                else:
                    child = seen[key] = _host_node(path, shown, st)
            else:
                raise ParameterError(
                    f"{shown}: special file (mode 0o{st.st_mode:o}) not supported: a frozen "
                    f"image holds regular files, directories and symlinks only"
                )
            dirnode.children[name] = child
    return root


def _host_node(path: bytes, shown: str, st: os.stat_result) -> _Node:
    """A _Node from one host file's lstat, reading its data (holes kept) or link target."""
    mtime = st.st_mtime_ns // 1_000_000_000
    if not 0 <= mtime <= _MAX_TIME:
        raise ParameterError(f"{shown}: mtime {mtime} is outside 0..{_MAX_TIME}")
    node = _Node(shown, statmod.S_IFMT(st.st_mode) | statmod.S_IMODE(st.st_mode),
                 st.st_uid, st.st_gid, mtime)
    if statmod.S_ISDIR(st.st_mode):
        node.children = {}
    elif statmod.S_ISLNK(st.st_mode):
        _set_symlink(node, os.readlink(path))
    else:
        node.size = st.st_size
        node.extents = _read_data_extents(path, st.st_size)
    return node


def _read_data_extents(path: bytes, size: int) -> list[tuple[int, bytes]]:
    """The data ranges of a host file, skipping its holes (lseek SEEK_DATA / SEEK_HOLE)."""
    extents: list[tuple[int, bytes]] = []
    with open(path, "rb") as f:
        fd = f.fileno()
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
                end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after pos: the rest is a hole
                    break
                start, end = pos, size  # no hole support here: everything is data
            f.seek(start)
            data = f.read(end - start)
            if data:
                extents.append((start, data))
            if len(data) < end - start:  # the file shrank under us
                break
            pos = end
    return extents


# --- reading the source: a mapping ------------------------------------------------------


def _split_path(key: object) -> list[bytes]:
    """"/usr/bin/sh" or "usr/bin/sh" → [b"usr", b"bin", b"sh"] (UTF-8); "/" → []."""
    if not isinstance(key, str):
        raise ParameterError(f"path {key!r}: mapping keys must be str paths")
    try:
        parts = [p.encode("utf-8", "surrogateescape") for p in key.split("/") if p]
    except UnicodeEncodeError as exc:
        raise ParameterError(f"{key!r}: cannot be encoded as UTF-8") from exc
    for part in parts:
        _check_name(part, key)
    return parts


def _tree_from_mapping(source: Mapping[str, Entry]) -> _Node:
    """Turn {path: entry} into a tree of _Node; parents are created as needed."""
    root = _Node("/", L.S_IFDIR | 0o755, children={}, explicit=False)
    items = sorted((_split_path(key), key, entry) for key, entry in source.items())
    links: list[_Node] = []
    for i, (parts, key, entry) in enumerate(items):
        if i and items[i - 1][0] == parts:
            raise ParameterError(f"{key!r}: the same path as {items[i - 1][1]!r}")
        node = _mapping_node(key, entry)
        if not parts:  # the root itself
            if node.children is None:
                raise ParameterError(f"{key!r}: the root must be a Directory, not {entry!r}")
            node.children = root.children
            root = node
            continue
        parent = root
        for depth, part in enumerate(parts[:-1]):
            assert parent.children is not None
            child = parent.children.get(part)
            if child is None:
                shown = "/" + b"/".join(parts[:depth + 1]).decode("utf-8", "surrogateescape")
                child = _Node(shown, L.S_IFDIR | 0o755, children={}, explicit=False)
                parent.children[part] = child
            elif child.children is None:
                raise ParameterError(f"{key!r}: {child.path!r} is not a directory")
            parent = child
        assert parent.children is not None
        parent.children[parts[-1]] = node
        if node.link_to is not None:
            links.append(node)
    if links:
        _resolve_hard_links(root, links)
    return root


def _mapping_node(key: str, entry: object) -> _Node:
    """One _Node from one mapping entry (a HardLink stays a placeholder for now)."""
    path = "/" + key.strip("/")
    if isinstance(entry, (bytes, bytearray, memoryview)):
        entry = File(bytes(entry))
    if isinstance(entry, File):
        mtime = _check_meta(path, entry.mode, entry.uid, entry.gid, entry.mtime)
        data = bytes(entry.data)
        size = len(data) if entry.size is None else entry.size
        if not _is_int(size) or size < len(data):
            raise ParameterError(
                f"{path}: size={entry.size!r} is smaller than its {len(data)} bytes of data"
            )
        node = _Node(path, L.S_IFREG | entry.mode, entry.uid, entry.gid, mtime, size=size,
                     sparse=bool(entry.sparse))
        node.extents = [(0, data)] if data else []
        return node
    if isinstance(entry, Directory):
        mtime = _check_meta(path, entry.mode, entry.uid, entry.gid, entry.mtime)
        return _Node(path, L.S_IFDIR | entry.mode, entry.uid, entry.gid, mtime, children={})
    if isinstance(entry, Symlink):
        mtime = _check_meta(path, entry.mode, entry.uid, entry.gid, entry.mtime)
        node = _Node(path, L.S_IFLNK | entry.mode, entry.uid, entry.gid, mtime)
        target = entry.target
        if isinstance(target, str):
            target = target.encode("utf-8", "surrogateescape")
        _set_symlink(node, target)
        return node
    if isinstance(entry, HardLink):
        if not isinstance(entry.to, str):
            raise ParameterError(f"{path}: HardLink(to={entry.to!r}) must name a str path")
        return _Node(path, 0, link_to=entry.to)
    raise ParameterError(
        f"{path}: entry {entry!r} is not bytes, File, Directory, Symlink or HardLink"
    )


def _set_symlink(node: _Node, target: bytes) -> None:
    """Give a symlink node its target (checked later against the block size)."""
    if not target or b"\0" in target:
        raise ParameterError(f"{node.path}: symlink target {target!r} is empty or holds a NUL")
    node.size = len(target)
    node.extents = [(0, target)]


def _resolve_hard_links(root: _Node, links: list[_Node]) -> None:
    """Replace each HardLink placeholder by the node it names (following HardLink chains)."""

    def lookup(to: str, where: str) -> _Node:
        """The node at path `to`, or a ParameterError naming the link at `where`."""
        node = root
        for part in _split_path(to):
            child = None if node.children is None else node.children.get(part)
            if child is None:
                raise ParameterError(f"{where}: HardLink(to={to!r}): no such path in the mapping")
            node = child
        return node

    resolved: dict[int, _Node] = {}
    for link in links:
        node, hops = link, 0
        while node.link_to is not None:
            hops += 1
            if hops > len(links):
                raise ParameterError(f"{link.path}: HardLink chain loops back on itself")
            node = resolved.get(id(node)) or lookup(node.link_to, link.path)
        if node.children is not None:
            raise ParameterError(
                f"{link.path}: HardLink(to={link.link_to!r}) names a directory; ext2 allows "
                f"hard links to files and symlinks only"
            )
        resolved[id(link)] = node
    # Swap every placeholder for its target, wherever it hangs in the tree.
    stack = [root]
    while stack:
        directory = stack.pop()
        assert directory.children is not None
        for name, child in directory.children.items():
            if child.link_to is not None:
                directory.children[name] = resolved[id(child)]
            elif child.children is not None:
                stack.append(child)


# --- inode numbers ----------------------------------------------------------------------


def _number_inodes(root: _Node) -> list[_Node]:
    """Number inodes in sorted pre-order (2 root, 11 lost+found, 12…); count links.

    Returns the nodes in allocation order: root, lost+found, then the walk.
    """
    assert root.children is not None
    lpf = root.children.get(b"lost+found")
    if lpf is None:
        lpf = root.children[b"lost+found"] = _Node("/lost+found", L.S_IFDIR | 0o700,
                                                    children={})
    elif lpf.children is None:
        raise ParameterError("/lost+found: must be a directory (e2fsck needs it)")
    elif not lpf.explicit:
        lpf.i_mode = L.S_IFDIR | 0o700
    root.ino, lpf.ino = L.EXT2_ROOT_INO, L.EXT2_GOOD_OLD_FIRST_INO
    order = [root, lpf]
    next_ino = L.EXT2_GOOD_OLD_FIRST_INO + 1
    stack: list[tuple[_Node, Iterator[tuple[bytes, _Node]]]] = [
        (root, iter(sorted(root.children.items())))]
    while stack:
        directory, entries = stack[-1]
        for _name, child in entries:
            child.links += 1
            if child.links > 1:  # a hard link already numbered
                if child.links > L.EXT2_LINK_MAX:
                    raise ParameterError(
                        f"{child.path}: more than EXT2_LINK_MAX ({L.EXT2_LINK_MAX}) hard links")
                continue
            if child.ino == 0:
                child.ino = next_ino
                next_ino += 1
                order.append(child)
            if child.children is not None:
                child.parent_ino = directory.ino
                stack.append((child, iter(sorted(child.children.items()))))
                break
        else:
            stack.pop()
    for node in order:
        if node.children is not None:
            # A directory's links: its entry in the parent, its own ".", each subdir's "..".
            node.links = 2 + sum(c.children is not None for c in node.children.values())
            if node.links > L.EXT2_LINK_MAX:
                raise ParameterError(
                    f"{node.path}: {node.links - 2} subdirectories exceed EXT2_LINK_MAX "
                    f"({L.EXT2_LINK_MAX}) links (ext2 has no dir_nlink)"
                )
    return order


# --- planning blocks (independent of where they will land) ------------------------------


def _plan_blocks(order: list[_Node], opts: _Options) -> bool:
    """Work out each inode's mapped logical blocks and block count; True if large_file is needed."""
    bs = opts.block_size
    large_file = False
    for node in order:
        if node.children is not None:
            content = _dir_content(node, opts)
            node.extents, node.size = [(0, content)], len(content)
            node.logical = np.arange(len(content) // bs, dtype=np.int64)
        elif node.kind == L.S_IFLNK:
            if node.size >= bs:
                raise ParameterError(
                    f"{node.path}: symlink target is {node.size} bytes; it must be shorter "
                    f"than block_size={bs}"
                )
            # Fast symlinks keep their target in i_block; slow ones get one block.
            fast = node.size < L.FAST_SYMLINK_MAX
            node.logical = np.zeros(0 if fast else 1, dtype=np.int64)
        else:
            limit = L.max_file_blocks(bs) * bs
            if node.size > limit:
                raise ParameterError(
                    f"{node.path}: size {node.size} exceeds the {limit} bytes that "
                    f"i_block can address with block_size={bs}"
                )
            if node.size >= _LARGE_FILE_SIZE:
                if opts.rev_level == L.EXT2_GOOD_OLD_REV:
                    raise ParameterError(
                        f"{node.path}: size {node.size} needs large_file, which rev_level=0 "
                        f"cannot have"
                    )
                large_file = True
            node.logical = _mapped_blocks(node.extents, bs, node.sparse)
        node.nblocks = len(node.logical) + _count_indirect(node.logical, opts.pointers)
    return large_file


def _mapped_blocks(extents: list[tuple[int, bytes]], bs: int, sparse: bool) -> Blocks:
    """Logical blocks touched by the data extents; with `sparse`, all-zero blocks are holes."""
    if len(extents) == 1 and extents[0][0] == 0 and not sparse:
        return np.arange(-(-len(extents[0][1]) // bs), dtype=np.int64)  # the common case
    pieces = []
    for offset, data in extents:
        first, last = offset // bs, (offset + len(data) - 1) // bs
        blocks = np.arange(first, last + 1, dtype=np.int64)
        if sparse:
            head = offset - first * bs
            padded = np.zeros((last - first + 1) * bs, dtype=np.uint8)
            padded[head:head + len(data)] = np.frombuffer(data, dtype=np.uint8)
            blocks = blocks[padded.reshape(-1, bs).any(axis=1)]
        pieces.append(blocks)
    if not pieces:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(pieces))


def _indirect_ids(logical: Blocks, p: int) -> tuple[Blocks, Blocks, Blocks]:
    """For each mapped block, which TIND, DIND and IND block maps it (-1: none).

    IND blocks cover aligned runs of p logical blocks from block 12 on, so
    (L - 12) // p names each one uniquely; likewise (L - 12 - p) // p² for DINDs.
    """
    minus = np.int64(-1)
    ind = np.where(logical >= L.EXT2_NDIR_BLOCKS, (logical - L.EXT2_NDIR_BLOCKS) // p, minus)
    dind_start = L.EXT2_NDIR_BLOCKS + p
    dind = np.where(logical >= dind_start, (logical - dind_start) // (p * p), minus)
    tind = np.where(logical >= dind_start + p * p, np.int64(0), minus)
    return tind, dind, ind


def _opens(ids: Blocks) -> npt.NDArray[np.bool_]:
    """True where a block is the first one mapped through a new indirect block."""
    previous = np.concatenate(([np.int64(-1)], ids[:-1]))
    result: npt.NDArray[np.bool_] = (ids >= 0) & (ids != previous)
    return result


def _count_indirect(logical: Blocks, p: int) -> int:
    """How many IND, DIND and TIND blocks the mapped blocks need."""
    if not len(logical) or logical[-1] < L.EXT2_NDIR_BLOCKS:
        return 0  # the common small file: direct blocks only
    return sum(int(_opens(ids).sum()) for ids in _indirect_ids(logical, p))


# --- directories ------------------------------------------------------------------------


def _lost_found_blocks(bs: int) -> int:
    """mke2fs's lost+found size: 16 KiB, but at least 2 and at most 12 (direct) blocks."""
    return min(L.EXT2_NDIR_BLOCKS, max(2, _LPF_BYTES // bs))


def _dir_content(node: _Node, opts: _Options) -> bytes:
    """A linear directory's blocks: ".", "..", then the names sorted; last entry fills a block."""
    assert node.children is not None
    bs = opts.block_size
    entries = [(b".", node.ino, L.S_IFDIR), (b"..", node.parent_ino, L.S_IFDIR)]
    entries += [(name, child.ino, child.kind) for name, child in sorted(node.children.items())]
    out = bytearray()
    block = bytearray()
    last_at = -1  # offset in `block` of the entry whose rec_len will stretch
    for name, ino, kind in entries:
        need = L.dir_rec_len(len(name))
        if len(block) + need > bs:
            # No room: the previous entry's rec_len swallows the rest of this block.
            _stretch_last(block, last_at, bs)
            out += block
            block = bytearray()
        last_at = len(block)
        if opts.filetype:
            block += L.DIRENT.pack(ino, need, len(name), L.FT_FROM_MODE[kind])
        else:
            block += L.DIRENT_OLD.pack(ino, need, len(name))
        block += name
        block += bytes(need - L.DIRENT_HEADER_SIZE - len(name))
    _stretch_last(block, last_at, bs)
    out += block
    if node.ino == L.EXT2_GOOD_OLD_FIRST_INO:
        # lost+found: empty blocks (one unused entry each) up to mke2fs's size.
        empty = bytearray(bs)
        struct.pack_into("<IH", empty, 0, 0, L.rec_len_to_disk(bs, bs))
        while len(out) < _lost_found_blocks(bs) * bs:
            out += empty
    return bytes(out)


def _stretch_last(block: bytearray, last_at: int, bs: int) -> None:
    """Let the block's last entry's rec_len run to the end of the block, then pad it."""
    rec_len = bs - last_at
    struct.pack_into("<H", block, last_at + 4, L.rec_len_to_disk(rec_len, bs))
    block += bytes(bs - len(block))


# --- geometry: how many groups, blocks and inodes -----------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Where everything of every block group goes (mke2fs's layout without flex_bg)."""

    block_size: int
    inode_size: int
    blocks_count: int
    blocks_per_group: int
    inodes_per_group: int
    groups: int
    sparse_super: bool

    @property
    def first_data_block(self) -> int:
        """1 with 1 KiB blocks (block 0 is the boot block), else 0."""
        return 1 if self.block_size == 1024 else 0

    @property
    def gdt_blocks(self) -> int:
        """Blocks of one copy of the group descriptor table."""
        return -(-self.groups * L.GROUP_DESC_SIZE // self.block_size)

    @property
    def inode_table_blocks(self) -> int:
        """Blocks of one group's inode table."""
        return self.inodes_per_group * self.inode_size // self.block_size

    @property
    def inodes_count(self) -> int:
        """s_inodes_count: every group holds the same number."""
        return self.inodes_per_group * self.groups

    def group_first(self, g: int) -> int:
        """First block of group g."""
        return self.first_data_block + g * self.blocks_per_group

    def group_len(self, g: int) -> int:
        """Blocks in group g (the last group may be short)."""
        return min(self.blocks_per_group, self.blocks_count - self.group_first(g))

    def has_super(self, g: int) -> bool:
        """Does group g hold a superblock and GDT copy?"""
        return L.bg_has_super(g, self.sparse_super)

    def block_bitmap(self, g: int) -> int:
        """bg_block_bitmap: right after the superblock and GDT copies, if any."""
        return self.group_first(g) + (1 + self.gdt_blocks if self.has_super(g) else 0)

    def overhead(self, g: int) -> int:
        """Metadata blocks at the start of group g."""
        return self.block_bitmap(g) - self.group_first(g) + 2 + self.inode_table_blocks

    def total_overhead(self) -> int:
        """Metadata blocks of all groups together."""
        return sum(self.overhead(g) for g in range(self.groups))


def _inodes_per_group(opts: _Options, wanted: int, groups: int) -> int | None:
    """Inodes per group for `wanted` inodes over `groups`: filling whole inode-table blocks
    and a multiple of 8 (as ext2fs_initialize rounds); None if a group cannot hold that many."""
    per_block = opts.block_size // opts.inode_size
    granule = math.lcm(8, per_block)
    ipg = -(-max(wanted, 1) // groups)
    ipg = -(-ipg // granule) * granule
    # EXT2_MAX_INODES_PER_GROUP, and the inode bitmap is one block.
    limit = min(8 * opts.block_size, (1 << 16) - per_block)
    return ipg if ipg <= limit else None


def _geometry(opts: _Options, data_blocks: int, last_ino: int) -> _Geometry:
    """Choose groups and counts: fit the tree (plus slack) or the caller's `size`."""
    wanted_inodes = opts.inodes_count
    if wanted_inodes is None:
        wanted_inodes = last_ino + max(16, last_ino // 8)  # room to spare, as mke2fs leaves
    elif wanted_inodes < last_ino:
        raise ParameterError(
            f"inodes_count={wanted_inodes}: the tree needs {last_ino} inodes "
            f"(10 reserved, lost+found and {last_ino - 11} entries)"
        )
    if opts.size is None:
        return _fit(opts, data_blocks, wanted_inodes, slack=True)
    bs = opts.block_size
    first = 1 if bs == 1024 else 0
    bpg = min(8 * bs, _MAX_BLOCKS_PER_GROUP)
    blocks = min(opts.size // bs, (1 << 32) - 1)
    groups = -(-(blocks - first) // bpg) if blocks > first else 0
    geo = None
    if groups:
        ipg = _inodes_per_group(opts, wanted_inodes, groups)
        if ipg is not None:
            geo = _Geometry(bs, opts.inode_size, blocks, bpg, ipg, groups, opts.sparse_super)
            # Like mke2fs, drop a last group too short for its metadata and some data.
            tail = geo.group_len(groups - 1)
            if groups > 1 and tail < geo.overhead(groups - 1) + _LAST_GROUP_MIN_DATA:
                blocks -= tail
                groups -= 1
                ipg = _inodes_per_group(opts, wanted_inodes, groups)
                geo = None if ipg is None else _Geometry(
                    bs, opts.inode_size, blocks, bpg, ipg, groups, opts.sparse_super)
    if geo is not None and (geo.overhead(geo.groups - 1) > geo.group_len(geo.groups - 1)
                            or blocks - first - geo.total_overhead() < data_blocks):
        geo = None
    if geo is None:
        need = _fit(opts, data_blocks, wanted_inodes, slack=False)
        raise ParameterError(
            f"size={opts.size}: too small for this tree and inodes_count={wanted_inodes}; "
            f"it needs {need.blocks_count * bs} bytes ({need.blocks_count} blocks of {bs})"
        )
    return geo


def _fit(opts: _Options, data_blocks: int, wanted_inodes: int, *, slack: bool) -> _Geometry:
    """The smallest geometry holding `data_blocks` and `wanted_inodes` (plus slack if asked)."""
    bs = opts.block_size
    first = 1 if bs == 1024 else 0
    bpg = min(8 * bs, _MAX_BLOCKS_PER_GROUP)
    groups = 0
    while True:
        groups += 1
        ipg = _inodes_per_group(opts, wanted_inodes, groups)
        if ipg is None:
            continue
        geo = _Geometry(bs, opts.inode_size, 0, bpg, ipg, groups, opts.sparse_super)
        used = first + geo.total_overhead() + data_blocks
        if used - first > groups * bpg:
            continue  # more groups, then
        blocks = used
        if slack:
            # Some free room, and a size in whole 64 KiB (or whole blocks, if larger).
            blocks += max(16, data_blocks // 16)
            align = max(1, 65536 // bs)
            blocks = -(-blocks // align) * align
            blocks = min(blocks, first + groups * bpg)
        last_first = first + (groups - 1) * bpg
        if groups > 1:
            # The last group must hold its metadata and some data (mke2fs's rule).
            last = geo.overhead(groups - 1) + _LAST_GROUP_MIN_DATA
            blocks = max(blocks, min(last_first + last, first + groups * bpg))
        if blocks >= 1 << 32:
            raise ParameterError(
                f"block_size={bs}: the tree needs {blocks} blocks, more than 2**32-1"
            )
        return _Geometry(bs, opts.inode_size, blocks, bpg, ipg, groups, opts.sparse_super)


# --- writing the image ------------------------------------------------------------------


def _write_image(order: list[_Node], geo: _Geometry, opts: _Options, large_file: bool) -> bytearray:
    """Allocate and write data, then the inode tables, bitmaps, descriptors and superblocks."""
    bs = geo.block_size
    image = bytearray(geo.blocks_count * bs)
    used = np.zeros(geo.blocks_count, dtype=bool)
    used[:geo.first_data_block] = True  # the 1 KiB boot block belongs to no group
    for g in range(geo.groups):
        used[geo.group_first(g):geo.group_first(g) + geo.overhead(g)] = True
    free = np.flatnonzero(~used)
    # One pointer per 4 bytes: a writable uint32 view of the whole image for indirect blocks.
    words = np.frombuffer(image, dtype="<u4").reshape(geo.blocks_count, bs // 4)
    cursor = 0
    i_blocks: dict[int, tuple[int, ...]] = {}
    for node in order:
        # Lowest free blocks first: the file's run, indirect blocks interleaved.
        run = free[cursor:cursor + node.nblocks]
        assert len(run) == node.nblocks, "_write_image: geometry left too few blocks"
        cursor += node.nblocks
        i_blocks[node.ino] = _write_file(image, words, node, run, opts)
    used[free[:cursor]] = True
    del words  # release the buffer export before the bytearray is handed on

    itable = bytearray(geo.inodes_count * geo.inode_size)
    for node in order:
        at = (node.ino - 1) * geo.inode_size
        itable[at:at + geo.inode_size] = _pack_inode(node, i_blocks[node.ino], opts)
    last_ino = max(node.ino for node in order)
    inode_used = np.zeros(geo.inodes_count, dtype=bool)
    inode_used[:last_ino] = True  # 1..10 reserved, 11 lost+found, then the tree
    dirs = np.zeros(geo.inodes_count, dtype=bool)
    for node in order:
        if node.children is not None:
            dirs[node.ino - 1] = True

    descs = bytearray()
    ipg = geo.inodes_per_group
    for g in range(geo.groups):
        bb = geo.block_bitmap(g)
        first, length = geo.group_first(g), geo.group_len(g)
        # Bits past the group's end (last group, or a short bitmap) are set, as mke2fs does.
        image[bb * bs:(bb + 1) * bs] = _bitmap(used[first:first + length], bs)
        image[(bb + 1) * bs:(bb + 2) * bs] = _bitmap(inode_used[g * ipg:(g + 1) * ipg], bs)
        table = (bb + 2) * bs
        image[table:table + ipg * geo.inode_size] = itable[
            g * ipg * geo.inode_size:(g + 1) * ipg * geo.inode_size]
        descs += L.GROUP_DESC.pack(
            bb, bb + 1, bb + 2,
            length - int(used[first:first + length].sum()),
            ipg - int(inode_used[g * ipg:(g + 1) * ipg].sum()),
            int(dirs[g * ipg:(g + 1) * ipg].sum()), 0, 0, 0, 0,
        )
    descs += bytes(geo.gdt_blocks * bs - len(descs))

    sb = _superblock(geo, opts, large_file,
                     free_blocks=int((~used[geo.first_data_block:]).sum()),
                     free_inodes=int((~inode_used).sum()))
    for g in range(geo.groups):
        if geo.has_super(g):
            gdt = (geo.group_first(g) + 1) * bs
            image[gdt:gdt + len(descs)] = descs
            # The primary superblock is at byte 1024 whatever the block size.
            at = L.SUPERBLOCK_OFFSET if g == 0 else geo.group_first(g) * bs
            image[at:at + L.SUPERBLOCK_SIZE] = _pack_superblock(sb.replace(s_block_group_nr=g),
                                                                geo, opts)
    # The UUID: the caller's, or one derived from everything else in the image.
    uuid = opts.uuid or _content_uuid(image)
    for g in range(geo.groups):
        if geo.has_super(g):
            at = L.SUPERBLOCK_OFFSET if g == 0 else geo.group_first(g) * bs
            image[at + _S_UUID_OFFSET:at + _S_UUID_OFFSET + 16] = uuid
    return image


def _write_file(image: bytearray, words: npt.NDArray[np.uint32], node: _Node, run: Blocks,
                opts: _Options) -> tuple[int, ...]:
    """Place `node`'s blocks on `run` (data and indirect blocks in ext2 order); return i_block."""
    if node.kind == L.S_IFLNK and len(node.logical) == 0:
        # A fast symlink: the target itself sits in the 60 bytes of i_block.
        raw = node.extents[0][1].ljust(L.FAST_SYMLINK_MAX, b"\0")
        return struct.unpack(f"<{L.EXT2_N_BLOCKS}I", raw)
    data_phys, i_block, pointer_blocks = _block_map(node.logical, opts.pointers, run)
    for phys, pointers in pointer_blocks:
        words[phys] = pointers
    _copy_data(image, node, data_phys, opts.block_size)
    return i_block


def _block_map(logical: Blocks, p: int, run: Blocks,
               ) -> tuple[Blocks, tuple[int, ...], list[tuple[Blocks, npt.NDArray[np.uint32]]]]:
    """Model of ext2's block allocation for sequential writes: map `logical` onto `run`.

    Each indirect block takes the run position just before the first data block it
    maps (TIND, then DIND, then IND). Returns the data blocks' image block numbers,
    i_block, and the indirect blocks as (image blocks, pointer rows).
    """
    n = len(logical)
    if not n or logical[-1] < L.EXT2_NDIR_BLOCKS:
        # Direct blocks only: no indirect block to interleave.
        pointers = [0] * L.EXT2_N_BLOCKS
        for lblk, pblk in zip(logical.tolist(), run.tolist(), strict=True):
            pointers[lblk] = pblk
        return run, tuple(pointers), []
    tind, dind, ind = _indirect_ids(logical, p)
    new_t, new_d, new_i = _opens(tind), _opens(dind), _opens(ind)
    opened = new_t.astype(np.int64) + new_d + new_i
    data_pos = np.arange(n, dtype=np.int64) + np.cumsum(opened)
    data_phys = run[data_pos]
    ind_phys = run[data_pos - 1]
    dind_phys = run[data_pos - 1 - new_i]
    tind_phys = run[data_pos - 1 - new_i - new_d]

    i_block = np.zeros(L.EXT2_N_BLOCKS, dtype=np.int64)
    direct = logical < L.EXT2_NDIR_BLOCKS
    i_block[logical[direct]] = data_phys[direct]
    tops = ((L.EXT2_IND_BLOCK, new_i & (ind == 0), ind_phys),
            (L.EXT2_DIND_BLOCK, new_d & (dind == 0), dind_phys),
            (L.EXT2_TIND_BLOCK, new_t, tind_phys))
    for slot, where, phys in tops:
        if where.any():
            i_block[slot] = phys[where][0]

    rows: list[tuple[Blocks, npt.NDArray[np.uint32]]] = []
    # IND rows point at data blocks.
    sel = ind >= 0
    table = np.zeros((int(new_i.sum()), p), dtype=np.uint32)
    table[(np.cumsum(new_i) - 1)[sel], (logical[sel] - L.EXT2_NDIR_BLOCKS) % p] = data_phys[sel]
    rows.append((ind_phys[new_i], table))
    # DIND rows point at the IND blocks below them.
    sel = new_i & (dind >= 0)
    table = np.zeros((int(new_d.sum()), p), dtype=np.uint32)
    dind_start = L.EXT2_NDIR_BLOCKS + p
    table[(np.cumsum(new_d) - 1)[sel], ((logical[sel] - dind_start) // p) % p] = ind_phys[sel]
    rows.append((dind_phys[new_d], table))
    # The TIND row points at the DIND blocks below it.
    sel = new_d & (tind >= 0)
    table = np.zeros((int(new_t.sum()), p), dtype=np.uint32)
    table[0 * logical[sel], (logical[sel] - dind_start - p * p) // (p * p)] = dind_phys[sel]
    rows.append((tind_phys[new_t], table))
    return data_phys, tuple(int(b) for b in i_block), rows


def _copy_data(image: bytearray, node: _Node, data_phys: Blocks, bs: int) -> None:
    """Copy the node's bytes into its data blocks, one contiguous run at a time."""
    logical = node.logical
    if not len(logical):
        return
    # A run ends wherever either the logical or the physical block sequence jumps.
    breaks = np.flatnonzero((np.diff(logical) != 1) | (np.diff(data_phys) != 1)) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [len(logical)]))
    for s, e in zip(starts.tolist(), stops.tolist(), strict=True):
        lo, hi = int(logical[s]) * bs, (int(logical[e - 1]) + 1) * bs
        dest = int(data_phys[s]) * bs - lo  # image offset of file offset 0 for this run
        for offset, data in node.extents:
            a, b = max(lo, offset), min(hi, offset + len(data))
            if a < b:
                image[dest + a:dest + b] = memoryview(data)[a - offset:b - offset]


def _pack_inode(node: _Node, i_block: tuple[int, ...], opts: _Options) -> bytes:
    """struct ext2_inode for `node` (and the ext2_inode_large fields for big inodes)."""
    t = node.mtime if opts.timestamp is None else opts.timestamp
    sectors = node.nblocks * (opts.block_size // 512)
    size_high = node.size >> 32 if node.kind == L.S_IFREG else 0
    raw = L.Inode(
        i_mode=node.i_mode, i_uid=node.uid & 0xFFFF, i_size=node.size & 0xFFFFFFFF,
        i_atime=t, i_ctime=t, i_mtime=t, i_dtime=0, i_gid=node.gid & 0xFFFF,
        i_links_count=node.links, i_blocks=sectors, i_flags=0, osd1=0, i_block=i_block,
        i_generation=0, i_file_acl=0, i_dir_acl=size_high, i_faddr=0, l_i_frag=0,
        l_i_fsize=0, i_pad1=0, l_i_uid_high=node.uid >> 16, l_i_gid_high=node.gid >> 16,
        l_i_reserved2=0,
    ).pack()
    if opts.inode_size > L.EXT2_GOOD_OLD_INODE_SIZE:
        # i_extra_isize 32 and a creation time, as mke2fs writes large inodes.
        raw += _INODE_EXTRA.pack(_EXTRA_ISIZE, 0, 0, 0, 0, t, 0)
    return raw.ljust(opts.inode_size, b"\0")


def _bitmap(bits: npt.NDArray[np.bool_], bs: int) -> bytes:
    """One bitmap block: `bits` (bit i = item i, little-endian), padding bits set."""
    padded = np.ones(8 * bs, dtype=bool)
    padded[:len(bits)] = bits
    return np.packbits(padded, bitorder="little").tobytes()


def _superblock(geo: _Geometry, opts: _Options, large_file: bool, *,
                free_blocks: int, free_inodes: int) -> L.Superblock:
    """struct ext2_super_block of a clean, never-mounted image (UUID filled in later)."""
    dynamic = opts.rev_level == L.EXT2_DYNAMIC_REV
    t = opts.timestamp or 0
    log = geo.block_size.bit_length() - 1 - L.EXT2_MIN_BLOCK_LOG_SIZE
    ro_compat = (L.RO_COMPAT_SPARSE_SUPER if opts.sparse_super else 0) | (
        L.RO_COMPAT_LARGE_FILE if large_file else 0)
    return L.Superblock(
        s_inodes_count=geo.inodes_count, s_blocks_count=geo.blocks_count,
        s_r_blocks_count=0,  # a frozen image is never written: nothing kept for root
        s_free_blocks_count=free_blocks, s_free_inodes_count=free_inodes,
        s_first_data_block=geo.first_data_block, s_log_block_size=log, s_log_frag_size=log,
        s_blocks_per_group=geo.blocks_per_group, s_frags_per_group=geo.blocks_per_group,
        s_inodes_per_group=geo.inodes_per_group, s_mtime=t, s_wtime=t, s_mnt_count=0,
        s_max_mnt_count=-1, s_magic=L.EXT2_SUPER_MAGIC, s_state=L.EXT2_VALID_FS,
        s_errors=_EXT2_ERRORS_CONTINUE, s_minor_rev_level=0, s_lastcheck=t,
        s_checkinterval=0, s_creator_os=0, s_rev_level=opts.rev_level, s_def_resuid=0,
        s_def_resgid=0,
        s_first_ino=L.EXT2_GOOD_OLD_FIRST_INO if dynamic else 0,
        s_inode_size=geo.inode_size if dynamic else 0, s_block_group_nr=0,
        s_feature_compat=0,
        s_feature_incompat=L.INCOMPAT_FILETYPE if opts.filetype else 0,
        s_feature_ro_compat=ro_compat, s_uuid=bytes(16), s_volume_name=opts.volume_name,
        s_last_mounted=b"", s_algorithm_usage_bitmap=0, s_prealloc_blocks=0,
        s_prealloc_dir_blocks=0, s_padding1=0, s_journal_uuid=bytes(16), s_journal_inum=0,
        s_journal_dev=0, s_last_orphan=0, s_hash_seed=(0, 0, 0, 0), s_def_hash_version=0,
        s_reserved_char_pad=0, s_reserved_word_pad=0, s_default_mount_opts=0,
        s_first_meta_bg=0,
    )


def _pack_superblock(sb: L.Superblock, geo: _Geometry, opts: _Options) -> bytes:
    """The 1024 superblock bytes, with the e2fsprogs fields layout.Superblock leaves out."""
    raw = bytearray(sb.pack())
    struct.pack_into("<I", raw, _S_MKFS_TIME_OFFSET, opts.timestamp or 0)
    if opts.rev_level == L.EXT2_DYNAMIC_REV and geo.inode_size > L.EXT2_GOOD_OLD_INODE_SIZE:
        # s_min_extra_isize, s_want_extra_isize: what the large inodes carry.
        struct.pack_into("<HH", raw, _S_MIN_EXTRA_ISIZE_OFFSET, _EXTRA_ISIZE, _EXTRA_ISIZE)
    return bytes(raw)


def _content_uuid(image: bytearray) -> bytes:
    """A UUID derived from the image (SHA-256), marked RFC 9562 version 8, variant 10."""
    digest = bytearray(hashlib.sha256(image).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x80
    digest[8] = (digest[8] & 0x3F) | 0x80
    return bytes(digest)


def _write_frozen(frozen: bytes, target: str | os.PathLike[str]) -> None:
    """Write the image to `target` atomically and make it read-only (0o444)."""
    path = os.fspath(target)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(frozen)
        os.chmod(temporary, 0o444)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
