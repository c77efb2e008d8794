"""The command line: one clear line and exit status 2 on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xipmodel.__main__ import format_block_map, main
from xipmodel.ext2 import File, build_image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "img"
    path.write_bytes(build_image({"/bin/sh": b"s" * 20_000, "/holes": File(b"x", size=3 * 4096)},
                                 volume_name="cli-test"))
    return path


def test_info_ls_bmap_cat(image: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each subcommand prints what it promises about a real image."""
    assert main(["info", str(image)]) == 0
    assert "Filesystem volume name:   cli-test" in capsys.readouterr().out
    assert main(["ls", str(image), "/bin"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("20000  sh")
    assert main(["bmap", str(image), "/holes"]) == 0
    assert "(1-2):hole" in capsys.readouterr().out


def test_bad_path_is_one_line_and_exit_2(image: Path) -> None:
    """A missing file gives one line on stderr and status 2, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "xipmodel", "cat", str(image), "/nope"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "nope" in proc.stderr


def test_not_an_image_is_one_line(tmp_path: Path) -> None:
    """A file that is no ext2 image says so in one line."""
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(4096))
    proc = subprocess.run([sys.executable, "-m", "xipmodel", "info", str(junk)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "s_magic" in proc.stderr


def test_format_block_map_like_debugfs() -> None:
    """Runs print as debugfs does: (logical range):physical range, holes named."""
    assert format_block_map([5, 6, 7, 0, 0, 9]) == "(0-2):5-7, (3-4):hole, (5):9"


def test_demo_tells_the_story(capsys: pytest.CaptureFixture[str]) -> None:
    """The headless demo builds an image and shows where a binary's pages live."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "BLOCKS: (0-" in out and "XIP saves" in out
