"""The ext2 on-disk format: structures, constants and feature flags.

Field names are the kernel's (fs/ext2/ext2.h), so a student can grep for them.
Everything is little-endian. Reader and builder share these definitions.

An ext2 image, block by block (1 KiB blocks shown; with larger blocks the
superblock still sits at byte 1024 but inside block 0, and the group
descriptor table starts in block 1)::

    byte 0   1024     2048
    ┌────────┬────────┬─────────────┬───────────┬────────┬────────┬───────────┬──────────
    │ boot   │ super- │ group       │ (reserved │ block  │ inode  │ inode     │ data …
    │ block  │ block  │ descriptors │ GDT)      │ bitmap │ bitmap │ table     │
    └────────┴────────┴─────────────┴───────────┴────────┴────────┴───────────┴──────────
    block 0   block 1  block 2 …  ← group 0: s_first_data_block .. + s_blocks_per_group

    group g starts at block  s_first_data_block + g * s_blocks_per_group;
    it holds a backup superblock + GDT if bg_has_super(g): every group, or with
    sparse_super only groups 0, 1 and powers of 3, 5 and 7.

An inode's 15 block pointers (i_block) map logical file blocks to image blocks::

    i_block[0..11]  → 12 data blocks
    i_block[12]     → IND:  one block of p = block_size/4 pointers → p data blocks
    i_block[13]     → DIND: p pointers to IND blocks               → p² data blocks
    i_block[14]     → TIND: p pointers to DIND blocks              → p³ data blocks
    a pointer of 0 is a hole (reads as zeros).
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

# --- constants (fs/ext2/ext2.h, include/uapi/linux/magic.h) -------------------

EXT2_SUPER_MAGIC = 0xEF53
SUPERBLOCK_OFFSET = 1024  # bytes; the superblock is always at byte 1024
SUPERBLOCK_SIZE = 1024
EXT2_MIN_BLOCK_LOG_SIZE = 10  # 1 KiB
EXT2_MAX_BLOCK_LOG_SIZE = 16  # 64 KiB, the largest block mke2fs allows
EXT2_GOOD_OLD_REV = 0  # revision 0: fixed 128-byte inodes, first inode 11, no features
EXT2_DYNAMIC_REV = 1
EXT2_GOOD_OLD_INODE_SIZE = 128
EXT2_GOOD_OLD_FIRST_INO = 11
EXT2_BAD_INO = 1
EXT2_ROOT_INO = 2
EXT2_RESIZE_INO = 7
EXT2_JOURNAL_INO = 8  # ext3's journal; a frozen reader never replays it
EXT2_NDIR_BLOCKS = 12
EXT2_IND_BLOCK = 12
EXT2_DIND_BLOCK = 13
EXT2_TIND_BLOCK = 14
EXT2_N_BLOCKS = 15
EXT2_NAME_LEN = 255
EXT2_LINK_MAX = 32000
EXT2_MAX_REC_LEN = 65535  # with 64 KiB blocks, rec_len 65535 (or 0) stands for 65536
FAST_SYMLINK_MAX = EXT2_N_BLOCKS * 4  # a fast symlink's target lives in i_block: 60 bytes
MAXSYMLINKS = 40  # include/linux/namei.h: symlinks followed in one lookup

# s_state
EXT2_VALID_FS = 0x0001
EXT2_ERROR_FS = 0x0002

# i_mode file types (include/uapi/linux/stat.h)
S_IFMT = 0o170000
S_IFSOCK = 0o140000
S_IFLNK = 0o120000
S_IFREG = 0o100000
S_IFBLK = 0o060000
S_IFDIR = 0o040000
S_IFCHR = 0o020000
S_IFIFO = 0o010000

# directory entry file_type (EXT2_FT_*), present with the filetype feature
EXT2_FT_UNKNOWN = 0
EXT2_FT_REG_FILE = 1
EXT2_FT_DIR = 2
EXT2_FT_CHRDEV = 3
EXT2_FT_BLKDEV = 4
EXT2_FT_FIFO = 5
EXT2_FT_SOCK = 6
EXT2_FT_SYMLINK = 7
FT_FROM_MODE = {
    S_IFREG: EXT2_FT_REG_FILE,
    S_IFDIR: EXT2_FT_DIR,
    S_IFCHR: EXT2_FT_CHRDEV,
    S_IFBLK: EXT2_FT_BLKDEV,
    S_IFIFO: EXT2_FT_FIFO,
    S_IFSOCK: EXT2_FT_SOCK,
    S_IFLNK: EXT2_FT_SYMLINK,
}

# i_flags (include/uapi/linux/fs.h and fs/ext4/ext4.h)
EXT2_INDEX_FL = 0x00001000  # htree directory: still readable linearly
EXT4_HUGE_FILE_FL = 0x00040000  # i_blocks counts file-system blocks, not sectors
EXT4_EXTENTS_FL = 0x00080000  # i_block holds an extent tree: refused
EXT4_INLINE_DATA_FL = 0x10000000  # data inside the inode: refused

# --- feature flags ---------------------------------------------------------


class Feature(NamedTuple):
    """One feature bit: its e2fsprogs name (mke2fs -O) and the kernel macro."""

    bit: int
    name: str
    kernel_name: str


def _features(rows: list[tuple[int, str, str]]) -> dict[int, Feature]:
    return {bit: Feature(bit, name, kernel_name) for bit, name, kernel_name in rows}


FEATURE_COMPAT = _features([
    (0x0001, "dir_prealloc", "EXT2_FEATURE_COMPAT_DIR_PREALLOC"),
    (0x0002, "imagic_inodes", "EXT2_FEATURE_COMPAT_IMAGIC_INODES"),
    (0x0004, "has_journal", "EXT3_FEATURE_COMPAT_HAS_JOURNAL"),
    (0x0008, "ext_attr", "EXT2_FEATURE_COMPAT_EXT_ATTR"),
    (0x0010, "resize_inode", "EXT2_FEATURE_COMPAT_RESIZE_INO"),
    (0x0020, "dir_index", "EXT2_FEATURE_COMPAT_DIR_INDEX"),
    (0x0040, "lazy_bg", "EXT2_FEATURE_COMPAT_LAZY_BG"),
    (0x0080, "snapshot_bitmap", "EXT2_FEATURE_COMPAT_EXCLUDE_BITMAP"),
    (0x0200, "sparse_super2", "EXT4_FEATURE_COMPAT_SPARSE_SUPER2"),
    (0x0400, "fast_commit", "EXT4_FEATURE_COMPAT_FAST_COMMIT"),
    (0x0800, "stable_inodes", "EXT4_FEATURE_COMPAT_STABLE_INODES"),
    (0x1000, "orphan_file", "EXT4_FEATURE_COMPAT_ORPHAN_FILE"),
])
FEATURE_RO_COMPAT = _features([
    (0x0001, "sparse_super", "EXT2_FEATURE_RO_COMPAT_SPARSE_SUPER"),
    (0x0002, "large_file", "EXT2_FEATURE_RO_COMPAT_LARGE_FILE"),
    (0x0004, "btree_dir", "EXT2_FEATURE_RO_COMPAT_BTREE_DIR"),
    (0x0008, "huge_file", "EXT4_FEATURE_RO_COMPAT_HUGE_FILE"),
    (0x0010, "uninit_bg", "EXT4_FEATURE_RO_COMPAT_GDT_CSUM"),
    (0x0020, "dir_nlink", "EXT4_FEATURE_RO_COMPAT_DIR_NLINK"),
    (0x0040, "extra_isize", "EXT4_FEATURE_RO_COMPAT_EXTRA_ISIZE"),
    (0x0080, "snapshot", "EXT4_FEATURE_RO_COMPAT_HAS_SNAPSHOT"),
    (0x0100, "quota", "EXT4_FEATURE_RO_COMPAT_QUOTA"),
    (0x0200, "bigalloc", "EXT4_FEATURE_RO_COMPAT_BIGALLOC"),
    (0x0400, "metadata_csum", "EXT4_FEATURE_RO_COMPAT_METADATA_CSUM"),
    (0x0800, "replica", "EXT4_FEATURE_RO_COMPAT_REPLICA"),
    (0x1000, "read-only", "EXT4_FEATURE_RO_COMPAT_READONLY"),
    (0x2000, "project", "EXT4_FEATURE_RO_COMPAT_PROJECT"),
    (0x4000, "shared_blocks", "EXT4_FEATURE_RO_COMPAT_SHARED_BLOCKS"),
    (0x8000, "verity", "EXT4_FEATURE_RO_COMPAT_VERITY"),
    (0x10000, "orphan_present", "EXT4_FEATURE_RO_COMPAT_ORPHAN_PRESENT"),
])
FEATURE_INCOMPAT = _features([
    (0x0001, "compression", "EXT2_FEATURE_INCOMPAT_COMPRESSION"),
    (0x0002, "filetype", "EXT2_FEATURE_INCOMPAT_FILETYPE"),
    (0x0004, "needs_recovery", "EXT3_FEATURE_INCOMPAT_RECOVER"),
    (0x0008, "journal_dev", "EXT3_FEATURE_INCOMPAT_JOURNAL_DEV"),
    (0x0010, "meta_bg", "EXT2_FEATURE_INCOMPAT_META_BG"),
    (0x0040, "extent", "EXT4_FEATURE_INCOMPAT_EXTENTS"),
    (0x0080, "64bit", "EXT4_FEATURE_INCOMPAT_64BIT"),
    (0x0100, "mmp", "EXT4_FEATURE_INCOMPAT_MMP"),
    (0x0200, "flex_bg", "EXT4_FEATURE_INCOMPAT_FLEX_BG"),
    (0x0400, "ea_inode", "EXT4_FEATURE_INCOMPAT_EA_INODE"),
    (0x1000, "dirdata", "EXT4_FEATURE_INCOMPAT_DIRDATA"),
    (0x2000, "metadata_csum_seed", "EXT4_FEATURE_INCOMPAT_CSUM_SEED"),
    (0x4000, "large_dir", "EXT4_FEATURE_INCOMPAT_LARGEDIR"),
    (0x8000, "inline_data", "EXT4_FEATURE_INCOMPAT_INLINE_DATA"),
    (0x10000, "encrypt", "EXT4_FEATURE_INCOMPAT_ENCRYPT"),
    (0x20000, "casefold", "EXT4_FEATURE_INCOMPAT_CASEFOLD"),
])

COMPAT_DIR_INDEX = 0x0020
COMPAT_RESIZE_INO = 0x0010
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_LARGE_FILE = 0x0002
RO_COMPAT_HUGE_FILE = 0x0008
INCOMPAT_FILETYPE = 0x0002
INCOMPAT_META_BG = 0x0010
# The kernel's ext2 mounts nothing else (EXT2_FEATURE_INCOMPAT_SUPP).
EXT2_FEATURE_INCOMPAT_SUPP = INCOMPAT_FILETYPE | INCOMPAT_META_BG


VOLUME_NAME_SIZE = 16  # bytes of s_volume_name


def fit_volume_name(name: str) -> str:
    """`name` as a label s_volume_name holds: its first 16 bytes of UTF-8, never cutting a
    character in two ("?" for what UTF-8 cannot encode, such as a lone surrogate)."""
    raw = name.encode("utf-8", "replace")
    return raw[:VOLUME_NAME_SIZE].decode("utf-8", "ignore")


def feature_names(mask: int, table: dict[int, Feature]) -> list[str]:
    """The e2fsprogs names of the bits set in `mask` (unknown bits as hex)."""
    names = []
    for bit in range(32):
        if mask & (1 << bit):
            feature = table.get(1 << bit)
            names.append(feature.name if feature else f"FEATURE_0x{1 << bit:x}")
    return names


# --- structures ------------------------------------------------------------


@dataclass(frozen=True)
class Superblock:
    """struct ext2_super_block: the first 264 bytes; the rest of the 1024 is reserved."""

    s_inodes_count: int
    s_blocks_count: int
    s_r_blocks_count: int
    s_free_blocks_count: int
    s_free_inodes_count: int
    s_first_data_block: int
    s_log_block_size: int  # block size = 1024 << s_log_block_size
    s_log_frag_size: int
    s_blocks_per_group: int
    s_frags_per_group: int
    s_inodes_per_group: int
    s_mtime: int
    s_wtime: int
    s_mnt_count: int
    s_max_mnt_count: int
    s_magic: int
    s_state: int
    s_errors: int
    s_minor_rev_level: int
    s_lastcheck: int
    s_checkinterval: int
    s_creator_os: int
    s_rev_level: int
    s_def_resuid: int
    s_def_resgid: int
    # EXT2_DYNAMIC_REV superblocks only (zero, and ignored, in revision 0):
    s_first_ino: int
    s_inode_size: int
    s_block_group_nr: int
    s_feature_compat: int
    s_feature_incompat: int
    s_feature_ro_compat: int
    s_uuid: bytes
    s_volume_name: bytes
    s_last_mounted: bytes
    s_algorithm_usage_bitmap: int
    s_prealloc_blocks: int
    s_prealloc_dir_blocks: int
    s_padding1: int  # e2fsprogs: s_reserved_gdt_blocks (resize_inode)
    s_journal_uuid: bytes
    s_journal_inum: int
    s_journal_dev: int
    s_last_orphan: int
    s_hash_seed: tuple[int, int, int, int]
    s_def_hash_version: int
    s_reserved_char_pad: int
    s_reserved_word_pad: int
    s_default_mount_opts: int
    s_first_meta_bg: int

    FORMAT: ClassVar[struct.Struct] = struct.Struct(
        "<13I HhHHHH 4I HH I HH 3I 16s16s64s I BBH 16s 3I 4I BBH I I 760x"
    )

    @classmethod
    def unpack(cls, raw: bytes | memoryview) -> Superblock:
        """Decode 1024 bytes; `raw` must hold at least that many."""
        t = cls.FORMAT.unpack_from(raw)
        return cls(*t[:42], tuple(t[42:46]), *t[46:])  # type: ignore[call-arg]

    def pack(self) -> bytes:
        values = dataclasses.astuple(self)
        return self.FORMAT.pack(*values[:42], *values[42], *values[43:])

    def replace(self, **changes: object) -> Superblock:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


assert Superblock.FORMAT.size == SUPERBLOCK_SIZE


class GroupDesc(NamedTuple):
    """struct ext2_group_desc (32 bytes)."""

    bg_block_bitmap: int
    bg_inode_bitmap: int
    bg_inode_table: int
    bg_free_blocks_count: int
    bg_free_inodes_count: int
    bg_used_dirs_count: int
    bg_pad: int
    bg_reserved0: int
    bg_reserved1: int
    bg_reserved2: int


GROUP_DESC = struct.Struct("<3I4H3I")
GROUP_DESC_SIZE = GROUP_DESC.size
assert GROUP_DESC_SIZE == 32


class Inode(NamedTuple):
    """struct ext2_inode: the first 128 bytes (revision-1 inodes may be larger)."""

    i_mode: int
    i_uid: int
    i_size: int  # low 32 bits; i_dir_acl holds the high 32 for regular files
    i_atime: int
    i_ctime: int
    i_mtime: int
    i_dtime: int
    i_gid: int
    i_links_count: int
    i_blocks: int  # in 512-byte sectors (unless EXT4_HUGE_FILE_FL)
    i_flags: int
    osd1: int
    i_block: tuple[int, ...]  # EXT2_N_BLOCKS pointers, or a fast symlink's target
    i_generation: int
    i_file_acl: int  # extended-attribute block, 0 if none
    i_dir_acl: int  # i_size_high for regular files
    i_faddr: int
    l_i_frag: int
    l_i_fsize: int
    i_pad1: int
    l_i_uid_high: int
    l_i_gid_high: int
    l_i_reserved2: int

    @classmethod
    def unpack(cls, raw: bytes | memoryview, offset: int = 0) -> Inode:
        t = INODE.unpack_from(raw, offset)
        return cls._make((*t[:12], t[12:27], *t[27:]))

    def pack(self) -> bytes:
        return INODE.pack(*self[:12], *self.i_block, *self[13:])


INODE = struct.Struct("<2H5I2H3I15I4IBBHHHI")
assert INODE.size == EXT2_GOOD_OLD_INODE_SIZE
INODE_BLOCKS = struct.Struct("<15I")  # i_block as bytes: where a fast symlink keeps its target

# struct ext2_dir_entry_2: inode, rec_len, name_len, file_type, name[name_len]
# (without the filetype feature, name_len is a 16-bit field and there is no file_type)
DIRENT = struct.Struct("<IHBB")
DIRENT_OLD = struct.Struct("<IHH")
DIRENT_HEADER_SIZE = 8


def dir_rec_len(name_len: int) -> int:
    """EXT2_DIR_REC_LEN: bytes an entry with a name of `name_len` bytes needs (4-aligned)."""
    return (name_len + 8 + 3) & ~3


def rec_len_from_disk(dlen: int, block_size: int) -> int:
    """ext2_rec_len_from_disk: 64 KiB blocks store 65536 as 65535 or 0 (e2fsprogs' rule)."""
    if block_size < 65536:
        return dlen
    if dlen in (EXT2_MAX_REC_LEN, 0):
        return block_size
    return (dlen & 65532) | ((dlen & 3) << 16)


def rec_len_to_disk(length: int, block_size: int) -> int:
    """ext2_rec_len_to_disk, the inverse of rec_len_from_disk."""
    if block_size < 65536:
        return length
    if length == block_size:
        return EXT2_MAX_REC_LEN if block_size == 65536 else 0
    return (length & 65532) | ((length >> 16) & 3)


# --- geometry helpers ------------------------------------------------------


def _is_power_of(n: int, base: int) -> bool:
    while n > 1 and n % base == 0:
        n //= base
    return n == 1


def bg_has_super(group: int, sparse_super: bool) -> bool:
    """ext2_bg_has_super: does block group `group` hold a superblock (and GDT) copy?"""
    if not sparse_super or group <= 1:
        return True
    return _is_power_of(group, 3) or _is_power_of(group, 5) or _is_power_of(group, 7)


def max_file_blocks(block_size: int) -> int:
    """Logical blocks the 15 pointers can address: 12 + p + p² + p³."""
    p = block_size // 4
    return EXT2_NDIR_BLOCKS + p + p * p + p * p * p
