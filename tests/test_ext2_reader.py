"""The reader's own surface: file objects, limits, non-regular files, closing."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path

import numpy as np
import pytest

from xipmodel.errors import (
    FileTooLargeError,
    NotARegularFileError,
    ReadOnlyImageError,
)
from xipmodel.ext2 import Ext2Image, File, Symlink, build_image

DATA = np.random.default_rng(11).integers(0, 256, 50_000, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def frozen() -> bytes:
    return build_image({"/f": DATA, "/sparse": File(b"a", size=10 << 20), "/l": Symlink("f")})


def test_open_file_reads_and_seeks_like_a_host_file(frozen: bytes) -> None:
    """open_file gives a seekable, read-only binary file with the file's bytes."""
    with Ext2Image.open(frozen) as img, img.open_file("/l") as fh:
        assert isinstance(fh, io.BufferedReader)
        assert fh.read(10) == DATA[:10]
        fh.seek(-5, os.SEEK_END)
        assert fh.read() == DATA[-5:]
        fh.seek(1234)
        assert fh.read(4096) == DATA[1234:1234 + 4096]


@pytest.mark.parametrize("mode", ["w", "wb", "rb+", "a", "x"])
def test_every_writing_mode_is_refused(frozen: bytes, mode: str) -> None:
    """The image is frozen: a file object that could write is never handed out."""
    with Ext2Image.open(frozen) as img, pytest.raises(ReadOnlyImageError) as info:
        img.open_file("/f", mode)
    assert info.value.errno == errno.EROFS and repr(mode) in str(info.value)


def test_whole_file_reads_are_bounded(frozen: bytes) -> None:
    """A file larger than max_read is read in ranges, not at once (sparse sizes can be huge)."""
    with Ext2Image.open(frozen, max_read=1 << 20) as img:
        with pytest.raises(FileTooLargeError, match="max_read"):
            img.read("/sparse")
        assert img.read("/sparse", 0, 3) == b"a\0\0"
        assert img.read("/sparse", (10 << 20) - 2) == b"\0\0"


def test_fifo_is_not_a_regular_file_and_not_corruption(tmp_path: Path) -> None:
    """Reading a FIFO stored in an image is refused as such, not reported as corruption."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "data").write_bytes(b"x")
    img_path = tmp_path / "img"
    img_path.write_bytes(build_image({"/data": b"x"}))
    with Ext2Image.open(img_path) as img:
        assert img.read("/data") == b"x"
    try:
        os.mkfifo(src / "fifo")
    except (AttributeError, OSError):
        pytest.skip("this platform cannot make a FIFO")  # only non-POSIX hosts
    from xipmodel.errors import ParameterError

    with pytest.raises(ParameterError, match="fifo"):
        build_image(src)  # the builder stores no special files...
    import shutil
    import subprocess

    mke2fs = shutil.which("mke2fs") or shutil.which("mke2fs", path="/usr/sbin:/sbin")
    if mke2fs is None:
        return  # the reader half is covered by the oracle tests with e2fsprogs
    made = tmp_path / "made.img"
    subprocess.run([mke2fs, "-q", "-F", "-t", "ext2", "-d", str(src), str(made), "4M"],
                   check=True, env={**os.environ, "E2FSPROGS_FAKE_TIME": "1"})
    with Ext2Image.open(made) as img:
        with pytest.raises(NotARegularFileError, match="FIFO") as info:
            img.read("/fifo")
        assert info.value.errno == errno.EINVAL


def test_closing_leaves_handed_out_results_valid(tmp_path: Path, frozen: bytes) -> None:
    """Bytes and block maps from an image stay usable after it is closed."""
    path = tmp_path / "img"
    path.write_bytes(frozen)
    img = Ext2Image.open(path)
    data, blocks = img.read("/f"), img.block_map("/f")
    img.close()
    assert data == DATA and blocks.size == -(-len(DATA) // 4096)
    assert not blocks.flags.writeable  # block maps are read-only views


def test_writable_buffers_are_wrapped_read_only(frozen: bytes) -> None:
    """Given a bytearray, the reader still never writes: its view is read-only."""
    buf = bytearray(frozen)
    with Ext2Image.open(buf) as img:
        assert img.buffer.readonly
        with pytest.raises(TypeError):
            img.buffer[0] = 1
    assert bytes(buf) == frozen
