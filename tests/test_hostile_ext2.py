"""Hostile ext2 images: bounded work, no hang, one typed error naming the structure and field.

Each image is valid but for one hand-made lie (built with build_image, then patched where
the reader itself says the structure is). Each is opened in a child process under a
wall-clock and an address-space limit (tests/_hostile.py); before the fixes of issue 10
these took minutes or hung: a directory claiming a GiB made of one block repeated, a
symlink walking a directory loop, a FIFO given as the image.
"""

from __future__ import annotations

import hashlib
import os
import struct
from pathlib import Path

import pytest
from _hostile import assert_raises, bounded

from xipmodel.errors import (
    CorruptImageError,
    Ext2FileNotFoundError,
    Ext2IsADirectoryError,
    NotARegularFileError,
    SymlinkLoopError,
)
from xipmodel.ext2 import Ext2Image, Symlink, build_image
from xipmodel.ext2 import layout as L


def _inode_offset(data: bytes | bytearray, ino: int) -> int:
    """Byte offset of inode `ino` in the image, from its group descriptor."""
    with Ext2Image.open(bytes(data)) as img:
        group, index = divmod(ino - 1, img.superblock.s_inodes_per_group)
        return img.group_desc(group).bg_inode_table * img.block_size + index * img.inode_size


def _patch_inode(data: bytearray, ino: int, **fields: object) -> None:
    """Rewrite fields (kernel names) of inode `ino` in place."""
    at = _inode_offset(data, ino)
    data[at:at + L.INODE.size] = L.Inode.unpack(data, at)._replace(**fields).pack()


def _patch_dirent(data: bytearray, directory: str, name: bytes, ino: int, ftype: int) -> None:
    """Point the entry `name` of `directory` at inode `ino` (file type `ftype`)."""
    with Ext2Image.open(bytes(data)) as img:
        bs = img.block_size
        blocks = [img.bmap(img.lookup(directory), i)
                  for i in range(img.stat(directory).st_size // bs)]
    for block in blocks:
        offs = 0
        while offs < bs:
            at = block * bs + offs
            _, rec_len, name_len, _ = L.DIRENT.unpack_from(data, at)
            if data[at + 8:at + 8 + name_len] == name:
                struct.pack_into("<IHBB", data, at, ino, rec_len, name_len, ftype)
                return
            offs += L.rec_len_from_disk(rec_len, bs)
    raise KeyError(name)


def _empty_dir_block(bs: int) -> bytes:
    """A directory block of empty entries (inode 0), 12 bytes each: the most to parse."""
    raw = bytearray(bs)
    n = bs // 12
    for k in range(n):
        rec = 12 if k < n - 1 else bs - 12 * (n - 1)
        struct.pack_into("<IHBB", raw, 12 * k, 0, rec, 0, 0)
    return bytes(raw)


def _save(tmp_path: Path, data: bytes | bytearray, name: str = "hostile.img") -> str:
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return str(path)


def _open_and(path: str, expression: str) -> tuple[str, str]:
    """(setup, call) for a child that opens `path` and evaluates `expression` on `img`."""
    return (f"from xipmodel.ext2 import Ext2Image\nimg = Ext2Image.open({path!r})",
            expression)


# --- work amplification: one block standing for a GiB ------------------------------------

def _repeated_dir(block_size: int, blocks_claimed: int, pad_blocks: int) -> bytearray:
    """/d claims `blocks_claimed` blocks, every pointer (direct and IND) naming one block."""
    data = bytearray(build_image({"/d/x": b"x", "/pad": bytes(pad_blocks * block_size)},
                                 block_size=block_size))
    with Ext2Image.open(bytes(data)) as img:
        d = img.lookup("/d")
        first = img.bmap(d, 0)
        ind = int(img.block_map("/pad")[0])
    per = block_size // 4
    data[ind * block_size:(ind + 1) * block_size] = struct.pack(f"<{per}I", *[first] * per)
    data[first * block_size:(first + 1) * block_size] = _empty_dir_block(block_size)
    _patch_inode(data, d, i_size=blocks_claimed * block_size,
                 i_block=(first,) * 12 + (ind, 0, 0))
    return data


def test_directory_claiming_a_gib_of_one_block(tmp_path: Path) -> None:
    """i_size says 1 GiB (16,384 blocks of 64 KiB), every pointer names one block of empty
    entries: does listdir refuse it instead of parsing 90 million entries?"""
    path = _save(tmp_path, _repeated_dir(65536, 16384, 3))
    outcome = bounded(*reversed(_open_and(path, "img.listdir('/d')")))
    assert_raises(outcome, CorruptImageError, "i_size 1073741824", "s_blocks_count")


def test_directory_repeating_one_block(tmp_path: Path) -> None:
    """Fewer blocks than the image, but one block at every position: a block belongs to one
    place of one file, so the second occurrence is corruption, found before parsing."""
    path = _save(tmp_path, _repeated_dir(4096, 300, 400))
    outcome = bounded(*reversed(_open_and(path, "img.listdir('/d')")))
    assert_raises(outcome, CorruptImageError, "logical blocks 0 and 1 both map to block")


def test_two_directories_sharing_a_block(tmp_path: Path) -> None:
    """Two directories with the same data block: the second to be read is refused, so all
    directories together are parsed in time bounded by the image."""
    data = bytearray(build_image({"/a/x": b"1", "/b/y": b"2"}))
    with Ext2Image.open(bytes(data)) as img:
        a_block = img.bmap(img.lookup("/a"), 0)
        b = img.lookup("/b")
    _patch_inode(data, b, i_block=(a_block,) + (0,) * 14)
    path = _save(tmp_path, data)
    outcome = bounded("(img.listdir('/a'), img.listdir('/b'))",
                      f"from xipmodel.ext2 import Ext2Image\nimg = Ext2Image.open({path!r})")
    assert_raises(outcome, CorruptImageError, f"block {a_block}", "directory inode")


def _repeated_tree(block_size: int = 1024) -> tuple[bytearray, list[int]]:
    """A TIND whose pointers all name one DIND, whose pointers all name one IND: a file
    "sized" 16 GiB from three blocks; also returns the three blocks."""
    data = bytearray(build_image({"/f": b"f", "/g": b"g", "/pad": bytes(8 * block_size)},
                                 block_size=block_size))
    with Ext2Image.open(bytes(data)) as img:
        f = img.lookup("/f")
        pad = img.block_map("/pad").tolist()
        first = img.bmap(f, 0)
    per = block_size // 4
    tind, dind, ind = pad[0], pad[1], pad[2]
    for block, pointer in ((tind, dind), (dind, ind), (ind, first)):
        data[block * block_size:(block + 1) * block_size] = struct.pack(f"<{per}I",
                                                                        *[pointer] * per)
    size = (12 + per + per**2 + 4 * per**2) * block_size  # into TIND, below the map limit
    _patch_inode(data, f, i_size=size & 0xFFFFFFFF, i_dir_acl=size >> 32,
                 i_block=(first,) + (0,) * 13 + (tind,))
    return data, [tind, dind, ind]


def test_indirect_tree_repeating_itself(tmp_path: Path) -> None:
    """An indirect tree whose levels repeat one block each: refused at the second visit of
    the repeated block, not after filling millions of map entries."""
    data, (_, _, ind) = _repeated_tree()
    path = _save(tmp_path, data)
    outcome = bounded(*reversed(_open_and(path, "img.block_map('/f')")))
    assert_raises(outcome, CorruptImageError, "appears twice", f"IND block {ind}")


def test_indirect_block_shared_by_two_files(tmp_path: Path) -> None:
    """Two files with the same IND block: e2fsck's multiply-claimed block, named with both
    inodes, so decoding every file of an image costs at most its blocks."""
    data = bytearray(build_image({"/f": bytes(20 * 1024), "/g": bytes(20 * 1024)},
                                 block_size=1024))
    with Ext2Image.open(bytes(data)) as img:
        f, g = img.lookup("/f"), img.lookup("/g")
        f_ind = L.Inode.unpack(data, _inode_offset(data, f)).i_block[12]
    inode_g = L.Inode.unpack(data, _inode_offset(data, g))
    _patch_inode(data, g, i_block=(*inode_g.i_block[:12], f_ind, 0, 0))
    path = _save(tmp_path, data)
    outcome = bounded("(img.block_map('/f'), img.block_map('/g'))",
                      f"from xipmodel.ext2 import Ext2Image\nimg = Ext2Image.open({path!r})")
    assert_raises(outcome, CorruptImageError, f"IND block for logical block 12 is block "
                  f"{f_ind}", f"inode {f}")


def test_many_sparse_giants_are_not_all_kept(tmp_path: Path) -> None:
    """40 one-byte files each claiming 4 GiB (a 32 MiB block map each, holes): mapping
    them all must not keep 1.25 GiB of maps; beyond what the image justifies, maps are
    decoded again when asked instead of cached (the same answers)."""
    files = {f"/f{i:02d}": b"x" for i in range(40)}
    data = bytearray(build_image(files, block_size=1024))
    size = (1 << 32) - 1024
    with Ext2Image.open(bytes(data)) as img:
        inos = [img.lookup(p) for p in files]
    for ino in inos:
        _patch_inode(data, ino, i_size=size & 0xFFFFFFFF, i_dir_acl=size >> 32)
    path = _save(tmp_path, data)
    outcome = bounded(
        "sum(int(m[0] != 0) + len(m) for m in map(img.block_map, paths))",
        f"from xipmodel.ext2 import Ext2Image\nimg = Ext2Image.open({path!r})\n"
        f"paths = {sorted(files)!r}", address_space=1 << 30)
    assert outcome.returned == str(40 * (1 + size // 1024)), str(outcome)


# --- path lookup through a directory loop -------------------------------------------------

def _loop_image(block_size: int) -> bytearray:
    """An entry /d that is the root again, and a slow symlink /l -> d/d/d/…/d/l (a block)."""
    target = "d/" * ((block_size - 2) // 2 - 1) + "l"
    data = bytearray(build_image({"/l": Symlink(target), "/d": b""}, block_size=block_size))
    _patch_dirent(data, "/", b"d", L.EXT2_ROOT_INO, L.EXT2_FT_DIR)
    return data


@pytest.mark.parametrize("block_size", [4096, 65536])
def test_symlink_through_a_directory_loop(tmp_path: Path, block_size: int) -> None:
    """d is the root, l -> d/d/…/d/l: the lookup walks 40 times round the loop, then ELOOP.
    Linear in the components walked (about 1.3 million at 64 KiB), not quadratic."""
    path = _save(tmp_path, _loop_image(block_size))
    outcome = bounded(*reversed(_open_and(path, "img.lookup('/l')")))
    assert_raises(outcome, SymlinkLoopError, "more than 40 symlinks", "/l")


def test_deep_loop_message_stays_short(tmp_path: Path) -> None:
    """A missing name found 32,000 directories deep (round the loop): the message names the
    name and the last directories, not a 64 KB path."""
    data = _loop_image(4096)
    path = _save(tmp_path, data)
    deep = "/".join(["d"] * 32000) + "/nothing"
    outcome = bounded(f"img.lookup({deep!r})",
                      f"from xipmodel.ext2 import Ext2Image\nimg = Ext2Image.open({path!r})")
    assert_raises(outcome, Ext2FileNotFoundError, "no 'nothing' in /…(31968 more)/d/d")
    said = outcome.message.split(": '", 1)[0]  # then the path asked for, as given
    assert len(said) < 200, said


# --- paths that are not regular files ------------------------------------------------------

def test_fifo_as_image_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO with no writer would block open() for ever: refused, naming the FIFO."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    outcome = bounded(f"Ext2Image.open({str(fifo)!r})", "from xipmodel.ext2 import Ext2Image")
    assert_raises(outcome, NotARegularFileError, str(fifo), "FIFO")


def test_character_device_as_image_is_refused() -> None:
    """/dev/zero never ends: refused as a character device before anything is read."""
    outcome = bounded("Ext2Image.open('/dev/zero')", "from xipmodel.ext2 import Ext2Image")
    assert_raises(outcome, NotARegularFileError, "/dev/zero", "character device")


def test_directory_as_image_is_refused(tmp_path: Path) -> None:
    """A directory given as an image file: IsADirectoryError (an Ext2Error) naming it."""
    outcome = bounded(f"Ext2Image.open({str(tmp_path)!r})",
                      "from xipmodel.ext2 import Ext2Image")
    assert_raises(outcome, Ext2IsADirectoryError, str(tmp_path), "directory")


# --- the frozen image is never written -----------------------------------------------------

def test_hostile_images_are_never_written(tmp_path: Path) -> None:
    """After every hostile image above has been read, each file is byte for byte the same."""
    images = {"repeated": _repeated_dir(4096, 300, 400), "loop": _loop_image(4096),
              "tree": _repeated_tree()[0]}
    paths = {name: _save(tmp_path, data, name) for name, data in images.items()}
    before = {name: hashlib.sha256(Path(p).read_bytes()).hexdigest()
              for name, p in paths.items()}
    for p in paths.values():
        outcome = bounded(
            "[_try(f) for f in (lambda: img.walk('/') and list(img.walk('/')), "
            "lambda: img.lookup('/l'), lambda: img.listdir('/d'), "
            "lambda: img.block_map('/f'))]",
            f"from xipmodel.ext2 import Ext2Image\nfrom xipmodel.errors import Ext2Error\n"
            f"img = Ext2Image.open({p!r})\n"
            f"def _try(f):\n    try:\n        return f()\n    except Ext2Error as e:\n"
            f"        return type(e).__name__")
        assert outcome.returned is not None, str(outcome)
    after = {name: hashlib.sha256(Path(p).read_bytes()).hexdigest()
             for name, p in paths.items()}
    assert after == before
