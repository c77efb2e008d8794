"""Model of fs/ext2 reading a frozen image: superblock, groups, inodes, block maps, directories.

The image is only ever read: it is held as a read-only buffer (a memory map of
the file, or the caller's bytes), so a write to it fails by construction.
Validation is eager where it is cheap (the superblock and group descriptors at
open) and lazy inside (an inode, a block map or a directory is decoded, checked
and cached the first time someone asks for it).

Where a structure lives (see layout.py for the picture of a block group)::

    superblock             byte 1024 (or a backup: block sb_block, like `e2fsck -b`)
    group descriptors      the block after the superblock's block;
                           with meta_bg, groups ≥ s_first_meta_bg·(descs per block) keep
                           theirs in the first block(s) of their own meta group
    inode N                group (N-1) // s_inodes_per_group, slot (N-1) % s_inodes_per_group
                           of that group's bg_inode_table, s_inode_size bytes each
    file page → block      i_block[0..11] direct, [12] IND, [13] DIND, [14] TIND

Every way an image can be wrong raises an `Ext2Error` subclass naming the
structure, the field and the value; nothing allocates in proportion to a
corrupt size field, and every walk over on-disk links is bounded.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import mmap
import os
import stat as statmod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import (
    CorruptImageError,
    Ext2FileNotFoundError,
    Ext2IsADirectoryError,
    Ext2NotADirectoryError,
    FileTooLargeError,
    NotARegularFileError,
    NotASymlinkError,
    ReadOnlyImageError,
    SymlinkLoopError,
    TruncatedImageError,
    UnsupportedFeatureError,
)
from xipmodel.ext2 import layout as L
from xipmodel.hostfile import file_type, open_regular

__all__ = ["Ext2Image", "MetadataBlock"]

Source = str | os.PathLike[str] | bytes | bytearray | memoryview
BlockMap = npt.NDArray[np.int64]

# The largest block map (entries) or whole-file read we build for a caller.
# Sparse files may legitimately be huge; beyond these, callers read ranges.
MAX_MAP_ENTRIES: Final = 1 << 22  # 32 MiB of int64
DEFAULT_MAX_READ: Final = 256 << 20
WALKED_SHOWN: Final = 32  # path components a lookup's message shows at most
_INDIRECT_NAMES: Final = {1: "IND", 2: "DIND", 3: "TIND"}
_FILE_TYPES: Final = {L.S_IFIFO: "FIFO", L.S_IFSOCK: "socket", L.S_IFCHR: "character device",
                      L.S_IFBLK: "block device", L.S_IFLNK: "symlink"}


@dataclass(frozen=True)
class MetadataBlock:
    """An indirect block of a file: its kind (IND/DIND/TIND), the first logical block it covers."""

    kind: str
    logical: int
    block: int


@dataclass
class _FileMap:
    """A file's decoded block map: data blocks (0 = hole) and the indirect blocks met."""

    blocks: BlockMap
    metadata: list[MetadataBlock]


def _decode_name(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _encode_path(path: str | bytes | os.PathLike[str]) -> bytes:
    if isinstance(path, bytes):
        return path
    return os.fspath(path).encode("utf-8", "surrogateescape")


def _open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file (an image, not a FIFO or device)."""

    def refuse(mode: int) -> Exception:
        if statmod.S_ISDIR(mode):
            return Ext2IsADirectoryError(f"image {path}: is a directory, not an image file",
                                         str(path))
        return NotARegularFileError(
            f"image {path}: is a {file_type(mode)}, not a regular file", str(path))

    return open_regular(path, refuse)


def _walked_path(walked: list[bytes]) -> str:
    """The directory a lookup has reached, for a message: its last WALKED_SHOWN names at most.

    A lookup through a directory loop can walk very deep; a message stays short.
    """
    if len(walked) > WALKED_SHOWN:
        return f"/…({len(walked) - WALKED_SHOWN} more)/" + _decode_name(
            b"/".join(walked[-WALKED_SHOWN:]))
    return "/" + _decode_name(b"/".join(walked))


class Ext2Image:
    """A frozen ext2 (or ext3, journal ignored) image, read-only, opened with `Ext2Image.open`."""

    _buf: memoryview
    _file: BinaryIO | None
    _mmap: mmap.mmap | None
    _equal_blocks: npt.NDArray[np.int64] | None

    # --- opening and closing ----------------------------------------------

    @classmethod
    def open(
        cls,
        source: Source,
        *,
        sb_block: int | None = None,
        block_size: int | None = None,
        max_read: int = DEFAULT_MAX_READ,
    ) -> Ext2Image:
        """Open an image from a path, bytes or a buffer; never writes it.

        `sb_block` (with `block_size`, or every size tried as e2fsck does) reads a
        backup superblock instead of the primary, like `e2fsck -b SB -B BS`.
        `max_read` bounds whole-file reads; larger files are read in ranges.
        """
        file: BinaryIO | None = None
        mapping: mmap.mmap | None = None
        if isinstance(source, (str, os.PathLike)):
            path = Path(source)
            file = _open_regular(path)
            try:
                length = os.fstat(file.fileno()).st_size
                if length == 0:
                    raise TruncatedImageError(f"image {path}: the file is empty")
                mapping = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            except BaseException:
                file.close()
                raise
            view = memoryview(mapping)
        else:
            try:
                view = memoryview(source).cast("B")
            except TypeError as exc:
                raise TypeError(
                    f"Ext2Image.open: source must be a path or a bytes-like buffer, "
                    f"not {type(source).__name__}"
                ) from exc
        image = cls.__new__(cls)
        image._file, image._mmap = file, mapping
        image._equal_blocks = None
        image._buf = view.toreadonly()
        try:
            image._mount(sb_block, block_size, max_read)
        except CorruptImageError as exc:
            hint = image._backup_hint() if sb_block is None else ""
            image.close()
            if hint:
                raise type(exc)(f"{exc}; {hint}") from exc
            raise
        except BaseException:
            image.close()
            raise
        return image

    def _backup_hint(self) -> str:
        """Where a backup superblock is, probed where e2fsck looks (group 1 at 8 × block size)."""
        for log in range(7):
            size = 1024 << log
            block = 8 * size + (1 if size == 1024 else 0)
            offset = block * size
            if offset + L.SUPERBLOCK_SIZE > len(self._buf):
                continue
            sb = L.Superblock.unpack(self._buf[offset:offset + L.SUPERBLOCK_SIZE])
            if sb.s_magic == L.EXT2_SUPER_MAGIC and sb.s_log_block_size == log:
                return (f"a backup superblock is at block {block}: open with "
                        f"sb_block={block}, block_size={size} (like e2fsck -b {block} -B {size})")
        return ""

    def close(self) -> None:
        """Release the buffer and the file (arrays handed out stay valid: they are copies)."""
        for resource in (getattr(self, "_buf", None), getattr(self, "_mmap", None)):
            if resource is not None:
                # A view may still be exported; the garbage collector frees it later.
                with contextlib.suppress(BufferError):
                    resource.release() if isinstance(resource, memoryview) else resource.close()
        if getattr(self, "_file", None) is not None:
            assert self._file is not None
            self._file.close()
        self._closed = True

    def __enter__(self) -> Ext2Image:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def volume_name(self) -> str:
        """s_volume_name as text ("" when unset)."""
        return _decode_name(self.superblock.s_volume_name.split(b"\0", 1)[0])

    def __repr__(self) -> str:
        sb = self.superblock
        label = self.volume_name or "(no label)"
        return (
            f"<Ext2Image {label} rev {sb.s_rev_level}, {self.block_size}-byte blocks, "
            f"{sb.s_blocks_count} blocks, {sb.s_inodes_count} inodes, {self.groups_count} groups>"
        )

    # --- the superblock and group descriptors (fs/ext2/super.c:ext2_fill_super) --

    def _mount(self, sb_block: int | None, block_size: int | None, max_read: int) -> None:
        """Read and check the superblock and group descriptors, as ext2_fill_super does."""
        self._closed = False
        self._max_read = max_read
        self._inodes: dict[int, L.Inode] = {}
        self._maps: dict[int, _FileMap] = {}
        self._dirs: dict[int, dict[bytes, tuple[int, int]]] = {}
        self._dir_blocks: dict[int, int] = {}  # block → the directory inode decoded from it
        self._map_entries = 0  # entries of the block maps in self._maps
        self._meta_owner: dict[int, int] = {}  # indirect block → the inode whose tree has it
        self._size_bytes = len(self._buf)
        sb, sb_offset = self._find_superblock(sb_block, block_size)
        self.superblock: L.Superblock = sb
        self._sb_offset = sb_offset

        if sb.s_rev_level > L.EXT2_DYNAMIC_REV:
            raise UnsupportedFeatureError(
                f"superblock: s_rev_level {sb.s_rev_level} is newer than EXT2_DYNAMIC_REV (1)"
            )
        unsupported = sb.s_feature_incompat & ~L.EXT2_FEATURE_INCOMPAT_SUPP
        if unsupported:
            names = ", ".join(
                f"{f.name} ({f.kernel_name})" if (f := L.FEATURE_INCOMPAT.get(1 << b)) else
                f"unknown bit 0x{1 << b:x}"
                for b in range(32) if unsupported & (1 << b)
            )
            raise UnsupportedFeatureError(
                f"superblock: s_feature_incompat 0x{sb.s_feature_incompat:x} has incompatible "
                f"feature(s) a frozen ext2 reader does not support: {names}"
            )

        self.block_size: int = L.SUPERBLOCK_SIZE << sb.s_log_block_size
        bs = self.block_size
        if sb.s_rev_level == L.EXT2_GOOD_OLD_REV:
            # Revision 0 has fixed inodes; its superblock may hold 0 in these fields.
            self.inode_size: int = L.EXT2_GOOD_OLD_INODE_SIZE
            self.first_ino: int = L.EXT2_GOOD_OLD_FIRST_INO
        else:
            self.inode_size = sb.s_inode_size
            self.first_ino = sb.s_first_ino
            isz = self.inode_size
            if isz < L.EXT2_GOOD_OLD_INODE_SIZE or isz & (isz - 1) or isz > bs:
                raise CorruptImageError(
                    f"superblock: s_inode_size {isz} is not a power of two "
                    f"between 128 and the block size {bs}"
                )
        if not 0 < sb.s_blocks_per_group <= 8 * bs:
            raise CorruptImageError(
                f"superblock: s_blocks_per_group {sb.s_blocks_per_group} is not in 1..{8 * bs}"
            )
        inodes_per_block = bs // self.inode_size
        if not inodes_per_block <= sb.s_inodes_per_group <= 8 * bs:
            raise CorruptImageError(
                f"superblock: s_inodes_per_group {sb.s_inodes_per_group} is not in "
                f"{inodes_per_block}..{8 * bs}"
            )
        if sb.s_first_data_block >= sb.s_blocks_count:
            raise CorruptImageError(
                f"superblock: s_first_data_block {sb.s_first_data_block} is not below "
                f"s_blocks_count {sb.s_blocks_count}"
            )
        self.groups_count: int = (
            (sb.s_blocks_count - sb.s_first_data_block - 1) // sb.s_blocks_per_group + 1
        )
        if self.groups_count * sb.s_inodes_per_group != sb.s_inodes_count:
            raise CorruptImageError(
                f"superblock: s_inodes_count {sb.s_inodes_count} is not "
                f"{self.groups_count} groups × s_inodes_per_group {sb.s_inodes_per_group}"
            )
        if sb.s_blocks_count * bs > self._size_bytes:
            raise TruncatedImageError(
                f"superblock: s_blocks_count {sb.s_blocks_count} × {bs}-byte blocks needs "
                f"{sb.s_blocks_count * bs} bytes, the image has {self._size_bytes}"
            )
        self._itb_per_group = -(-sb.s_inodes_per_group * self.inode_size // bs)
        self._map_budget = 2 * max(MAX_MAP_ENTRIES, 16 * sb.s_blocks_count)
        self._descs = self._read_group_descriptors()

    def _find_superblock(
        self, sb_block: int | None, block_size: int | None
    ) -> tuple[L.Superblock, int]:
        """Decode the primary superblock, or the backup at `sb_block` (e2fsck -b)."""
        if sb_block is None:
            candidates = [L.SUPERBLOCK_OFFSET]
            what = "the primary superblock"
        else:
            sizes = [block_size] if block_size else [1024 << k for k in range(7)]
            for size in sizes:
                if size not in [1024 << k for k in range(7)]:
                    raise CorruptImageError(
                        f"open: block_size {size} is not 1024 × 2^k up to 64 KiB")
            candidates = [sb_block * size for size in sizes]
            what = f"the backup superblock at block {sb_block}"
        last_error: CorruptImageError | None = None
        for offset in candidates:
            if offset + L.SUPERBLOCK_SIZE > self._size_bytes:
                last_error = TruncatedImageError(
                    f"superblock: the image has {self._size_bytes} bytes, {what} needs bytes "
                    f"{offset}..{offset + L.SUPERBLOCK_SIZE}"
                )
                continue
            sb = L.Superblock.unpack(self._buf[offset:offset + L.SUPERBLOCK_SIZE])
            if sb.s_magic != L.EXT2_SUPER_MAGIC:
                last_error = CorruptImageError(
                    f"superblock: s_magic is 0x{sb.s_magic:04x}, not EXT2_SUPER_MAGIC 0xef53 "
                    f"({what}, byte {offset}): not an ext2 image"
                )
                continue
            if sb.s_log_block_size > L.EXT2_MAX_BLOCK_LOG_SIZE - L.EXT2_MIN_BLOCK_LOG_SIZE:
                last_error = CorruptImageError(
                    f"superblock: s_log_block_size {sb.s_log_block_size} gives a block size "
                    f"above 64 KiB"
                )
                continue
            if sb_block is not None and offset != sb_block * (1024 << sb.s_log_block_size):
                last_error = CorruptImageError(
                    f"superblock: {what} says blocks of {1024 << sb.s_log_block_size} bytes, "
                    f"but was found at byte {offset}"
                )
                continue
            return sb, offset
        assert last_error is not None
        raise last_error

    def _read_group_descriptors(self) -> npt.NDArray[np.uint32]:
        """Read every group descriptor (ext2's descriptor_loc, meta_bg included).

        Returns an array (groups × 3) of bg_block_bitmap, bg_inode_bitmap, bg_inode_table.
        """
        sb, bs = self.superblock, self.block_size
        per_block = bs // L.GROUP_DESC_SIZE
        db_count = -(-self.groups_count // per_block)
        first = self._sb_offset // bs + 1  # the block after the superblock's block
        meta_bg = bool(sb.s_feature_incompat & L.INCOMPAT_META_BG)
        sparse = bool(sb.s_feature_ro_compat & L.RO_COMPAT_SPARSE_SUPER)
        if meta_bg and sb.s_first_meta_bg > db_count:
            raise CorruptImageError(
                f"superblock: s_first_meta_bg {sb.s_first_meta_bg} is beyond the "
                f"{db_count} group descriptor blocks"
            )
        raw = bytearray()
        for nr in range(db_count):
            if not meta_bg or nr < sb.s_first_meta_bg:
                block = first + nr
            else:
                group = nr * per_block
                block = (sb.s_first_data_block + group * sb.s_blocks_per_group
                         + (1 if L.bg_has_super(group, sparse) else 0))
            raw += self._block(block, f"group descriptor block {nr}")
        table = np.frombuffer(bytes(raw), dtype="<u4").reshape(-1, L.GROUP_DESC_SIZE // 4)
        return table[: self.groups_count, :3].astype(np.uint32)

    def group_desc(self, group: int) -> L.GroupDesc:
        """The group descriptor of block group `group`, decoded with the kernel's field names."""
        if not 0 <= group < self.groups_count:
            raise CorruptImageError(f"group {group} is not in 0..{self.groups_count - 1}")
        bs = self.block_size
        per_block = bs // L.GROUP_DESC_SIZE
        nr, slot = divmod(group, per_block)
        sb = self.superblock
        if sb.s_feature_incompat & L.INCOMPAT_META_BG and nr >= sb.s_first_meta_bg:
            first = nr * per_block
            sparse = bool(sb.s_feature_ro_compat & L.RO_COMPAT_SPARSE_SUPER)
            block = (sb.s_first_data_block + first * sb.s_blocks_per_group
                     + (1 if L.bg_has_super(first, sparse) else 0))
        else:
            block = self._sb_offset // bs + 1 + nr
        raw = self._block(block, f"group descriptor block {nr}")
        return L.GroupDesc(*L.GROUP_DESC.unpack_from(raw, slot * L.GROUP_DESC_SIZE))

    # --- blocks ---------------------------------------------------------------

    def _block(self, block: int, what: str) -> memoryview:
        """The bytes of image block `block`; `what` names who asked, for the error."""
        if not 0 <= block < self.superblock.s_blocks_count:
            raise CorruptImageError(
                f"{what}: block {block} is beyond s_blocks_count {self.superblock.s_blocks_count}"
            )
        start = block * self.block_size
        return self._buf[start:start + self.block_size]

    def read_block(self, block: int) -> bytes:
        """A copy of image block `block` (the bytes a frame of the shared segment holds)."""
        return bytes(self._block(block, "read_block"))

    def equal_blocks(self) -> npt.NDArray[np.int64]:
        """For each block, the first block holding the same bytes; 0 where they are all zeros.

        What KSM's memcmp_pages finds equal: two files' pages with the same bytes are one
        content, pages that differ in one byte are two. Computed once and handed out
        read-only: blocks are grouped by a 64-bit fingerprint, and every block put with
        another is compared with it byte for byte (a fingerprint collision stays apart).
        """
        if self._equal_blocks is None:
            bs, n = self.block_size, self.superblock.s_blocks_count
            words = np.frombuffer(self._buf, dtype=np.uint64, count=n * bs // 8).reshape(n, -1)
            odd = np.random.default_rng(0xB10C).integers(1, 1 << 63, words.shape[1],
                                                        dtype=np.uint64) | np.uint64(1)
            prints = np.concatenate([(words[i:i + 4096] * odd).sum(axis=1, dtype=np.uint64)
                                     for i in range(0, n, 4096)])
            prints[0] = 0  # block 0 (boot block, superblock) holds no file's data
            _, first, inverse = np.unique(prints, return_index=True, return_inverse=True)
            equal = first[inverse.reshape(-1)].astype(np.int64)
            equal[prints == 0] = 0
            zeros = bytes(bs)
            for block in np.flatnonzero(equal != np.arange(n)).tolist():
                seen = int(equal[block])
                if bytes(self._block(block, "equal_blocks")) != (
                        bytes(self._block(seen, "equal_blocks")) if seen else zeros):
                    equal[block] = block  # the same fingerprint, not the same bytes
            equal.flags.writeable = False
            self._equal_blocks = equal
        return self._equal_blocks

    @property
    def buffer(self) -> memoryview:
        """The whole image, as a read-only view."""
        return self._buf

    @property
    def size(self) -> int:
        """Bytes in the image."""
        return self._size_bytes

    def sha256(self) -> str:
        """Hex digest of the image, to check that nothing ever wrote it."""
        return hashlib.sha256(self._buf).hexdigest()

    # --- inodes (fs/ext2/inode.c:ext2_iget) --------------------------------------

    def inode(self, ino: int) -> L.Inode:
        """Inode number `ino`, decoded (first 128 bytes) and cached."""
        cached = self._inodes.get(ino)
        if cached is not None:
            return cached
        sb = self.superblock
        if not 1 <= ino <= sb.s_inodes_count:
            raise CorruptImageError(
                f"inode number {ino} is outside 1..s_inodes_count {sb.s_inodes_count}"
            )
        group, index = divmod(ino - 1, sb.s_inodes_per_group)
        table = int(self._descs[group, 2])
        if not (sb.s_first_data_block < table
                and table + self._itb_per_group <= sb.s_blocks_count):
            raise CorruptImageError(
                f"group descriptor {group}: bg_inode_table {table} (+{self._itb_per_group} "
                f"blocks) is outside the image's blocks {sb.s_first_data_block + 1}.."
                f"{sb.s_blocks_count - 1}"
            )
        offset = table * self.block_size + index * self.inode_size
        inode = L.Inode.unpack(self._buf, offset)
        self._inodes[ino] = inode
        return inode

    def _i_size(self, inode: L.Inode) -> int:
        """i_size; i_size_high (i_dir_acl) counts only for regular files, as in ext2_iget."""
        if inode.i_mode & L.S_IFMT == L.S_IFREG:
            return inode.i_size | (inode.i_dir_acl << 32)
        return inode.i_size

    def _check_data_inode(self, ino: int, inode: L.Inode, path: str | None) -> None:
        """Refuse inodes whose i_block is not an ext2 block map."""
        where = f"inode {ino}" + (f" ({path})" if path else "")
        if inode.i_flags & L.EXT4_EXTENTS_FL:
            raise UnsupportedFeatureError(
                f"{where}: i_flags 0x{inode.i_flags:x} has EXT4_EXTENTS_FL (0x80000): "
                f"its blocks are an ext4 extent tree, not an ext2 block map"
            )
        if inode.i_flags & L.EXT4_INLINE_DATA_FL:
            raise UnsupportedFeatureError(
                f"{where}: i_flags 0x{inode.i_flags:x} has EXT4_INLINE_DATA_FL (0x10000000)"
            )

    # --- block maps (fs/ext2/inode.c:ext2_block_to_path / ext2_get_branch) -------

    def _file_map(self, ino: int, path: str | None = None) -> _FileMap:
        """Decode (once) the block map of inode `ino`: one entry per block below i_size."""
        cached = self._maps.get(ino)
        if cached is not None:
            return cached
        inode = self.inode(ino)
        self._check_data_inode(ino, inode, path)
        where = f"inode {ino}" + (f" ({path})" if path else "")
        bs = self.block_size
        size = self._i_size(inode)
        nblocks = -(-size // bs)
        if nblocks > L.max_file_blocks(bs):
            raise CorruptImageError(
                f"{where}: i_size {size} needs {nblocks} blocks, more than the "
                f"{L.max_file_blocks(bs)} that i_block can address with {bs}-byte blocks"
            )
        if nblocks > max(MAX_MAP_ENTRIES, 16 * self.superblock.s_blocks_count):
            raise FileTooLargeError(
                f"{where}: i_size {size} ({nblocks} blocks) is too large to map whole; "
                f"use bmap() for single blocks", path
            )
        blocks = np.zeros(nblocks, dtype=np.int64)
        metadata: list[MetadataBlock] = []
        direct = min(L.EXT2_NDIR_BLOCKS, nblocks)
        blocks[:direct] = inode.i_block[:direct]
        per = bs // 4
        start = L.EXT2_NDIR_BLOCKS
        seen: set[int] = set()  # indirect blocks met in this file's tree
        for depth in (1, 2, 3):
            if start >= nblocks:
                break
            pointer = inode.i_block[L.EXT2_IND_BLOCK + depth - 1]
            if pointer:
                self._fill_indirect(blocks, metadata, start, pointer, depth, where, ino, seen)
            start += per**depth
        self._check_blocks(blocks, metadata, where)
        fmap = _FileMap(blocks, metadata)
        fmap.blocks.flags.writeable = False
        # Cached while the maps held stay within what the image justifies: many sparse
        # files claiming huge sizes are then decoded again when asked, not all kept.
        if self._map_entries + nblocks <= self._map_budget:
            self._maps[ino] = fmap
            self._map_entries += nblocks
        return fmap

    def _fill_indirect(
        self, blocks: BlockMap, metadata: list[MetadataBlock],
        start: int, block: int, depth: int, where: str, ino: int, seen: set[int],
    ) -> None:
        """Fill `blocks[start:]` from the indirect block `block`, `depth` levels above data.

        An indirect block met twice, in this file's tree or in another file's, is refused
        at once (e2fsck's multiply-claimed block), before anything under it is read: so
        the work of decoding every file of the image is bounded by its blocks.
        """
        kind = _INDIRECT_NAMES[depth]
        if block in seen:
            raise CorruptImageError(
                f"{where}: an indirect block appears twice in its own block tree "
                f"({kind} block {block} for logical block {start}): a cycle")
        owner = self._meta_owner.setdefault(block, ino)
        if owner != ino:
            raise CorruptImageError(
                f"{where}: its {kind} block for logical block {start} is block {block}, "
                f"an indirect block of inode {owner} too")
        seen.add(block)
        metadata.append(MetadataBlock(kind, start, block))
        raw = self._block(block, f"{where}: {kind} block for logical block {start}")
        pointers = np.frombuffer(raw, dtype="<u4").astype(np.int64)
        per = self.block_size // 4
        span = per ** (depth - 1)  # logical blocks under each pointer
        needed = min(per, -(-(len(blocks) - start) // span))
        if depth == 1:
            blocks[start:start + needed] = pointers[:needed]
            return
        for i in np.flatnonzero(pointers[:needed]):
            self._fill_indirect(blocks, metadata, start + int(i) * span,
                                int(pointers[i]), depth - 1, where, ino, seen)

    def _check_blocks(self, blocks: BlockMap, metadata: list[MetadataBlock], where: str) -> None:
        """Every mapped block inside the image and used once: as one logical block, or as
        one indirect block (e2fsck's "block claimed twice" within one file).

        So the work any walk over a file's blocks does is bounded by the image's size.
        """
        sb = self.superblock
        bad = np.flatnonzero((blocks != 0) & ((blocks <= sb.s_first_data_block)
                                              | (blocks >= sb.s_blocks_count)))
        if bad.size:
            i = int(bad[0])
            raise CorruptImageError(
                f"{where}: logical block {i} maps to block {int(blocks[i])}, outside the "
                f"data blocks {sb.s_first_data_block + 1}..{sb.s_blocks_count - 1}"
            )
        mapped = np.flatnonzero(blocks)
        if mapped.size > 1:
            order = np.argsort(blocks[mapped], kind="stable")
            ranked = blocks[mapped][order]
            twice = np.flatnonzero(ranked[1:] == ranked[:-1])
            if twice.size:
                first, second = sorted((int(mapped[order[twice[0]]]),
                                        int(mapped[order[twice[0] + 1]])))
                raise CorruptImageError(
                    f"{where}: logical blocks {first} and {second} both map to block "
                    f"{int(blocks[first])}: a block belongs to one place of one file"
                )
        meta = np.array([m.block for m in metadata], dtype=np.int64)
        if meta.size:  # (no block twice among them: _fill_indirect refused that)
            clash = np.flatnonzero(np.isin(blocks, meta))
            if clash.size:
                i = int(clash[0])
                raise CorruptImageError(
                    f"{where}: logical block {i} maps to block {int(blocks[i])}, which is "
                    f"also one of its indirect blocks (points back into itself)"
                )

    # --- directories (fs/ext2/dir.c:ext2_check_folio) ----------------------------

    def _dir_entries(self, ino: int, path: str | None = None) -> dict[bytes, tuple[int, int]]:
        """Name → (inode, file_type) of directory `ino`, in on-disk order, with "." and ".."."""
        cached = self._dirs.get(ino)
        if cached is not None:
            return cached
        where = f"directory inode {ino}" + (f" ({path})" if path else "")
        bs = self.block_size
        size = self._i_size(self.inode(ino))
        if size % bs:
            raise CorruptImageError(
                f"{where}: i_size {size} is not a multiple of the block size {bs}")
        # A directory has no holes and no block twice, so it has no more blocks than the
        # image; and no block of another directory, so all directories together are
        # decoded in time bounded by the image (not by what i_size claims).
        if size // bs > self.superblock.s_blocks_count:
            raise CorruptImageError(
                f"{where}: i_size {size} is {size // bs} blocks, more than the image's "
                f"s_blocks_count {self.superblock.s_blocks_count}")
        fmap = self._file_map(ino, path)
        for lblk, block in enumerate(fmap.blocks.tolist()):
            owner = self._dir_blocks.get(block)
            if owner is not None and owner != ino:
                raise CorruptImageError(
                    f"{where}: logical block {lblk} is block {block}, which directory inode "
                    f"{owner} also holds: a block belongs to one directory")
        filetype = bool(self.superblock.s_feature_incompat & L.INCOMPAT_FILETYPE)
        inodes_count = self.superblock.s_inodes_count
        entries: dict[bytes, tuple[int, int]] = {}
        unpack = (L.DIRENT if filetype else L.DIRENT_OLD).unpack_from
        for lblk, block in enumerate(fmap.blocks.tolist()):
            if block == 0:
                raise CorruptImageError(f"{where}: logical block {lblk} is a hole")
            raw = bytes(self._block(block, where))
            offs = 0
            while offs < bs:
                if filetype:
                    d_ino, d_rec, name_len, ftype = unpack(raw, offs)
                else:
                    d_ino, d_rec, name_len = unpack(raw, offs)
                    ftype = L.EXT2_FT_UNKNOWN
                rec_len = L.rec_len_from_disk(d_rec, bs)
                at = f"{where}: block {block} offset {offs}"
                if rec_len < L.dir_rec_len(1):
                    raise CorruptImageError(f"{at}: rec_len {rec_len} is smaller than minimal (12)")
                if rec_len % 4:
                    raise CorruptImageError(f"{at}: rec_len {rec_len} is not a multiple of 4")
                if rec_len < L.dir_rec_len(name_len):
                    raise CorruptImageError(
                        f"{at}: rec_len {rec_len} is too small for name_len {name_len}")
                if offs + rec_len > bs:
                    raise CorruptImageError(
                        f"{at}: rec_len {rec_len} runs past the end of the {bs}-byte block")
                if d_ino:
                    if d_ino > inodes_count:
                        raise CorruptImageError(
                            f"{at}: inode {d_ino} is beyond s_inodes_count {inodes_count}")
                    name = raw[offs + 8:offs + 8 + name_len]
                    if not name or b"/" in name or b"\0" in name:
                        raise CorruptImageError(f"{at}: invalid name {name!r}")
                    # Like the kernel's lookup, the first of two equal names wins.
                    entries.setdefault(name, (d_ino, ftype))
                offs += rec_len
        self._dirs[ino] = entries
        self._dir_blocks.update(dict.fromkeys(fmap.blocks.tolist(), ino))
        return entries

    # --- path lookup (fs/namei.c:link_path_walk, with MAXSYMLINKS) ---------------

    def lookup(self, path: str | bytes | os.PathLike[str], follow_symlinks: bool = True) -> int:
        """The inode number `path` names, resolving symlinks on the way (at the end if asked).

        Like the kernel's nameidata walk: the state is the current directory's inode and a
        stack of components still to walk; a symlink pushes its target's components and
        costs one of MAXSYMLINKS. Each component is O(1) (directories are decoded once),
        so a lookup is linear in the components walked; a symlink met again inside its own
        expansion, from the same directory, is a loop found at once (ELOOP, as the kernel
        would say after MAXSYMLINKS rounds).
        """
        raw = _encode_path(path)
        shown = _decode_name(raw)
        # A stack, next component last; (directory, symlink) marks where the expansion of
        # that symlink's target ends.
        pending: list[bytes | tuple[int, int]] = list(raw.split(b"/")[::-1])
        current = L.EXT2_ROOT_INO
        walked: list[bytes] = []  # names from the root to `current`: for messages only
        links = 0
        expanding: set[tuple[int, int]] = set()  # symlinks whose targets are being walked
        while pending:
            name = pending.pop()
            if isinstance(name, tuple):
                expanding.discard(name)
                continue
            if name in (b"", b"."):
                continue
            inode = self.inode(current)
            if inode.i_mode & L.S_IFMT != L.S_IFDIR:
                raise Ext2NotADirectoryError(f"{_walked_path(walked)} is not a directory", shown)
            if len(name) > L.EXT2_NAME_LEN:
                raise Ext2FileNotFoundError(f"name too long ({len(name)} bytes)", shown)
            entries = self._dirs.get(current)
            if entries is None:  # decoded once per directory, so the path is built once too
                entries = self._dir_entries(current, _walked_path(walked))
            if name == b".." and current == L.EXT2_ROOT_INO:
                continue  # the root is its own parent
            found = entries.get(name)
            if found is None:
                raise Ext2FileNotFoundError(
                    f"no {_decode_name(name)!r} in {_walked_path(walked)}", shown)
            child = found[0]
            is_link = self.inode(child).i_mode & L.S_IFMT == L.S_IFLNK
            if is_link and (pending or follow_symlinks):
                links += 1
                # The same symlink, met in the same directory while its own target is being
                # walked: the walk would repeat itself until MAXSYMLINKS; say so now.
                if links > L.MAXSYMLINKS or (current, child) in expanding:
                    raise SymlinkLoopError(
                        f"more than {L.MAXSYMLINKS} symlinks followed (a loop?)", shown)
                target = self._readlink_ino(child, shown)
                expanding.add((current, child))
                pending.append((current, child))
                if target.startswith(b"/"):
                    current = L.EXT2_ROOT_INO
                    walked.clear()
                pending.extend(target.split(b"/")[::-1])
                continue
            if name != b"..":
                walked.append(name)
            elif walked:
                walked.pop()
            current = child
        return current

    # --- the public, os-like interface --------------------------------------------

    def stat(self, path: str | bytes | os.PathLike[str]) -> os.stat_result:
        """Like os.stat: the inode `path` names, following symlinks."""
        return self._stat(self.lookup(path, True))

    def lstat(self, path: str | bytes | os.PathLike[str]) -> os.stat_result:
        """Like os.lstat: a symlink itself, not its target."""
        return self._stat(self.lookup(path, False))

    def _stat(self, ino: int) -> os.stat_result:
        i = self.inode(ino)
        blocks = i.i_blocks
        if self.superblock.s_feature_ro_compat & L.RO_COMPAT_HUGE_FILE and (
            i.i_flags & L.EXT4_HUGE_FILE_FL
        ):
            blocks *= self.block_size // 512
        return os.stat_result(
            (i.i_mode, ino, 0, i.i_links_count,
             i.i_uid | (i.l_i_uid_high << 16), i.i_gid | (i.l_i_gid_high << 16),
             self._i_size(i), i.i_atime, i.i_mtime, i.i_ctime),
            {"st_blocks": blocks, "st_blksize": self.block_size},
        )

    def exists(self, path: str | bytes | os.PathLike[str]) -> bool:
        """True if `path` resolves (following symlinks)."""
        try:
            self.lookup(path)
        except (FileNotFoundError, NotADirectoryError, SymlinkLoopError):
            return False
        return True

    def isdir(self, path: str | bytes | os.PathLike[str]) -> bool:
        """True if `path` resolves to a directory."""
        try:
            return statmod.S_ISDIR(self.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError, SymlinkLoopError):
            return False

    def listdir(self, path: str | bytes | os.PathLike[str] = "/") -> list[str]:
        """Names in the directory `path`, in on-disk order, without "." and ".."."""
        shown = _decode_name(_encode_path(path))
        ino = self.lookup(path)
        if self.inode(ino).i_mode & L.S_IFMT != L.S_IFDIR:
            raise Ext2NotADirectoryError(f"{shown} is not a directory", shown)
        return [_decode_name(n) for n in self._dir_entries(ino, shown) if n not in (b".", b"..")]

    def _regular(self, path: str | bytes | os.PathLike[str]) -> tuple[int, L.Inode, str]:
        shown = _decode_name(_encode_path(path))
        ino = self.lookup(path)
        inode = self.inode(ino)
        kind = inode.i_mode & L.S_IFMT
        if kind == L.S_IFDIR:
            raise Ext2IsADirectoryError(f"{shown} is a directory", shown)
        if kind != L.S_IFREG:
            what = _FILE_TYPES.get(kind)
            if what is None:
                raise CorruptImageError(
                    f"{shown}: inode {ino} has i_mode 0o{inode.i_mode:o}, not a known file type")
            raise NotARegularFileError(f"{shown} is a {what}, not a regular file", shown)
        return ino, inode, shown

    def read(
        self, path: str | bytes | os.PathLike[str], offset: int = 0, size: int = -1
    ) -> bytes:
        """The bytes of the file `path` (following symlinks), or `size` bytes from `offset`."""
        ino, inode, shown = self._regular(path)
        return self._read_ino(ino, inode, shown, offset, size)

    def _read_ino(self, ino: int, inode: L.Inode, shown: str, offset: int, size: int) -> bytes:
        file_size = self._i_size(inode)
        if offset < 0:
            raise ValueError(f"read: offset {offset} is negative")
        end = file_size if size < 0 else min(file_size, offset + size)
        if end <= offset:
            return b""
        blocks = self._file_map(ino, shown).blocks  # checks i_size before any allocation
        if end - offset > self._max_read:
            raise FileTooLargeError(
                f"{shown}: reading {end - offset} bytes at once exceeds max_read "
                f"{self._max_read}; read a range (offset=, size=) or open with a larger max_read",
                shown,
            )
        bs = self.block_size
        first, last = offset // bs, -(-end // bs)
        window = blocks[first:last]
        # Runs: a break wherever the next block is not the physical successor (holes join holes).
        mapped = window != 0
        same = np.empty(len(window), dtype=bool)
        same[0] = False
        same[1:] = ((window[1:] == window[:-1] + 1) & mapped[1:] & mapped[:-1]) | (
            ~mapped[1:] & ~mapped[:-1]
        )
        starts = np.flatnonzero(~same)
        stops = np.append(starts[1:], len(window))
        pieces: list[bytes | memoryview] = []
        skip = offset - first * bs
        remaining = end - offset
        for s, e in zip(starts.tolist(), stops.tolist(), strict=True):
            length = (e - s) * bs - skip
            take = min(length, remaining)
            phys = int(window[s])
            if phys:
                at = phys * bs + skip
                pieces.append(self._buf[at:at + take])
            else:
                pieces.append(bytes(take))
            remaining -= take
            skip = 0
        if len(pieces) == 1 and isinstance(pieces[0], memoryview):
            return pieces[0].tobytes()  # one contiguous run: a single copy
        return b"".join(pieces)

    def open_file(
        self, path: str | bytes | os.PathLike[str], mode: str = "rb"
    ) -> io.BufferedReader:
        """A read-only binary file object for `path`; any writing mode is refused."""
        if set(mode) - set("rb") or "r" not in mode:
            raise ReadOnlyImageError(f"the image is frozen: mode {mode!r} would write it",
                                     _decode_name(_encode_path(path)))
        ino, inode, shown = self._regular(path)
        return io.BufferedReader(_FileIO(self, ino, inode, shown))

    def readlink(self, path: str | bytes | os.PathLike[str]) -> str:
        """The target of the symlink `path` (the last component is not followed)."""
        shown = _decode_name(_encode_path(path))
        ino = self.lookup(path, follow_symlinks=False)
        return _decode_name(self._readlink_ino(ino, shown))

    def _readlink_ino(self, ino: int, shown: str) -> bytes:
        """A symlink's target: in i_block if "fast" (kernel block-count rule), else a block."""
        inode = self.inode(ino)
        if inode.i_mode & L.S_IFMT != L.S_IFLNK:
            raise NotASymlinkError(f"{shown}: inode {ino} is not a symlink", shown)
        size = inode.i_size
        where = f"symlink inode {ino} ({shown})"
        # ext2_inode_is_fast_symlink: no data blocks besides an extended-attribute block.
        ea_blocks = self.block_size >> 9 if inode.i_file_acl else 0
        if inode.i_blocks - ea_blocks == 0:
            if not 0 < size <= L.FAST_SYMLINK_MAX:
                raise CorruptImageError(
                    f"{where}: fast symlink i_size {size} is not in 1..{L.FAST_SYMLINK_MAX}")
            target = L.INODE_BLOCKS.pack(*inode.i_block)[:size]
        else:
            if not 0 < size < self.block_size:
                raise CorruptImageError(
                    f"{where}: slow symlink i_size {size} is not in 1..{self.block_size - 1}")
            block = self._file_map(ino, shown).blocks[0]
            if block == 0:
                raise CorruptImageError(f"{where}: its target block is a hole")
            target = bytes(self._block(int(block), where)[:size])
        target = target.split(b"\0", 1)[0]
        if not target:
            raise CorruptImageError(f"{where}: empty target")
        return target

    def block_map(self, path: str | bytes | os.PathLike[str]) -> BlockMap:
        """Image block of every logical block of the file `path` (0 for a hole), read-only."""
        ino, _, shown = self._regular(path)
        return self._file_map(ino, shown).blocks

    def metadata_blocks(self, path: str | bytes | os.PathLike[str]) -> list[MetadataBlock]:
        """The indirect blocks (IND, DIND, TIND) of the file `path`, in tree order."""
        ino, _, shown = self._regular(path)
        return list(self._file_map(ino, shown).metadata)

    def bmap(self, ino: int, lblk: int) -> int:
        """Model of ext2_get_block (reading): the image block of block `lblk` of inode `ino`.

        0 is a hole (the shared zero page in XIP).

        Beyond the end of the file there is no block: that is the caller's SIGBUS.
        """
        blocks = self._file_map(ino).blocks
        return int(blocks.item(lblk)) if 0 <= lblk < len(blocks) else 0

    def file_size(self, ino: int) -> int:
        """i_size of inode `ino`."""
        return self._i_size(self.inode(ino))

    def walk(
        self, top: str | bytes | os.PathLike[str] = "/"
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """Like os.walk(top) (top-down, symlinks not followed): (dirpath, dirnames, filenames).

        A directory reached twice (a cycle or a hard-linked directory) is corruption.
        """
        top_name = _decode_name(_encode_path(top))
        start = self.lookup(top)
        if self.inode(start).i_mode & L.S_IFMT != L.S_IFDIR:
            return
        seen = {start: top_name}
        stack = [(top_name, start)]
        while stack:
            dirpath, ino = stack.pop()
            dirs: list[str] = []
            files: list[str] = []
            children: dict[str, int] = {}
            for raw, (child, _) in self._dir_entries(ino, dirpath).items():
                if raw in (b".", b".."):
                    continue
                name = _decode_name(raw)
                mode = self.inode(child).i_mode & L.S_IFMT
                if mode == L.S_IFDIR:
                    dirs.append(name)
                    children[name] = child
                elif mode == L.S_IFLNK and self._points_to_dir(child, dirpath, name):
                    dirs.append(name)  # os.walk lists it, but does not descend
                else:
                    files.append(name)
            yield dirpath, dirs, files
            for name in reversed(dirs):
                sub = children.get(name)
                if sub is None:
                    continue  # a symlink to a directory: listed, not descended
                path = dirpath.rstrip("/") + "/" + name
                if sub in seen:
                    raise CorruptImageError(
                        f"directory cycle: {path} is inode {sub}, already seen as {seen[sub]}")
                seen[sub] = path
                stack.append((path, sub))

    def _points_to_dir(self, ino: int, dirpath: str, name: str) -> bool:
        """Does the symlink `dirpath/name` resolve to a directory? (os.walk's is_dir())."""
        try:
            return self.isdir(dirpath.rstrip("/") + "/" + name)
        except (FileNotFoundError, NotADirectoryError, SymlinkLoopError):
            return False


class _FileIO(io.RawIOBase):
    """A read-only raw file over one regular file of an image."""

    def __init__(self, image: Ext2Image, ino: int, inode: L.Inode, name: str) -> None:
        super().__init__()
        self._image, self._ino, self._inode, self.name = image, ino, inode, name
        self._pos = 0
        self._size = image.file_size(ino)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._image._read_ino(self._ino, self._inode, self.name, self._pos, len(buffer))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)
