"""Real files, when they are there: a trace's image holding this machine's own files.

A trace of /usr/bin/true recorded here with valgrind maps this machine's true, ld.so, libc
and ld.so.cache at their recorded sizes; with real_files the image holds those very
bytes, and KSM merges pages by their bytes (Ext2Image.equal_blocks), not by block.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xipmodel.__main__ import comparison_json, main
from xipmodel.errors import ParameterError
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.host import Host, Scenario, compare
from xipmodel.mm.frames import CONTENT_BLOCK, CONTENT_ZERO, block_content
from xipmodel.params import PAGE_SIZE
from xipmodel.workloads import realfiles
from xipmodel.workloads.realfiles import read_host_file
from xipmodel.workloads.sources import workload_set
from xipmodel.workloads.trace import MapSpec, PageTrace

SMALL = {"guest_ram_mib": 64, "ksm_seconds": 0.5}
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
REPO = Path(__file__).resolve().parent.parent


def _with_sizes(trace: PageTrace, path: Path, **sizes: int) -> Path:
    """A copy of `trace` whose meta records other sizes for some files (by path)."""
    meta = dict(trace.meta)
    meta["file_sizes"] = {**trace.meta["file_sizes"], **sizes}  # type: ignore[dict-item]
    dataclasses.replace(trace, meta=meta).save(path)
    return path


def test_the_image_holds_this_machines_files(recorded: Path) -> None:
    """With real_files, is every file the trace maps in the image byte for byte as it is on
    this machine (read back through the ext2 reader), and does the report say all are?"""
    trace = PageTrace.load(recorded)
    scenario = Scenario(guests=2, workload=str(recorded), real_files=True, **SMALL)
    built = workload_set([name for name, _ in scenario.mix], real_files=True)
    assert built.files is not None and len(trace.files()) >= 3
    for path in trace.files():
        assert built.image.read(path) == Path(path).read_bytes(), path
    assert built.files.real == trace.files() and built.files.stand_ins == {}
    n = len(trace.files())
    assert built.files.summary() == f"{n} of {n} files are this machine's own"
    seeded = workload_set([name for name, _ in scenario.mix])
    assert seeded.files is not None and seeded.files.real == []
    assert all(seeded.image.read(p) != Path(p).read_bytes() for p in trace.files())


def test_a_file_of_another_size_is_a_stand_in(recorded: Path, tmp_path: Path) -> None:
    """The trace says libc had another size: libc is a seeded stand-in of the recorded size,
    reported with both sizes; the other files stay this machine's own."""
    trace = PageTrace.load(recorded)
    real_size = os.stat(LIBC).st_size
    other = _with_sizes(trace, tmp_path / "other.npz", **{LIBC: real_size + PAGE_SIZE})
    result = Host(Scenario(guests=1, workload=str(other), real_files=True, **SMALL),
                  "xip").run()
    report = result.extra["real_files"]
    assert report["stand_ins"] == {LIBC: f"{real_size} bytes here, "
                                         f"{real_size + PAGE_SIZE} recorded"}
    assert report["real"] == [p for p in trace.files() if p != LIBC]
    n = len(trace.files())
    assert report["summary"].startswith(f"{n - 1} of {n} files are this machine's own; "
                                        f"1 stand-in: {LIBC} ({real_size} bytes here")
    built = workload_set([f"trace:{other}"], real_files=True)
    stand_in = built.image.read(LIBC)
    assert len(stand_in) == real_size + PAGE_SIZE
    assert stand_in[:real_size] != Path(LIBC).read_bytes()
    assert stand_in == workload_set([f"trace:{other}"]).image.read(LIBC)  # as without
    assert result.totals["sigsegv"] == result.totals["sigbus"] == 0


def test_what_is_never_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing, a directory, a FIFO, under /proc (also through a symlink), unreadable:
    each is a stand-in with its reason, and nothing is opened that is not a regular file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "maps"
    link.symlink_to("/proc/self/maps")
    through = tmp_path / "root"
    through.symlink_to("/proc/self/root")  # a magic link back to / : still /proc
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    libc = Path(LIBC).resolve()
    hop = tmp_path / "lib"
    hop.symlink_to(libc.parent)
    secret = tmp_path / "secret"
    secret.write_bytes(b"x" * 10)
    assert read_host_file(str(tmp_path / "none"), 10) == (None, "missing here")
    assert read_host_file(str(tmp_path), 10)[1] == "a directory here, not a regular file"
    assert read_host_file(str(fifo), 10)[1] == "a FIFO here, not a regular file"
    assert read_host_file(str(link), 10)[1] == "under /proc: not read"
    assert read_host_file("/sys/kernel/mm/ksm/run", 4096)[1] == "under /sys: not read"
    size = libc.stat().st_size
    assert read_host_file(f"{through}{libc}", size)[1] == "under /proc: not read"
    assert read_host_file(f"{hop}/../{libc.parent.name}/{libc.name}", size)[0] == \
        libc.read_bytes()  # ".." after a link: the real parent, as namei
    assert read_host_file(str(loop), 10)[1] == "a loop of symlinks here"
    assert read_host_file(str(secret), 10) == (b"x" * 10, "")
    assert read_host_file(str(secret), 9)[1] == "10 bytes here, 9 recorded"
    opened = os.open

    def denied(path: str, flags: int, mode: int = 0o777) -> int:
        if path == str(secret):
            raise PermissionError(13, "Permission denied", path)
        return opened(path, flags, mode)

    monkeypatch.setattr(realfiles.os, "open", denied)
    assert read_host_file(str(secret), 10) == (None, "unreadable here: Permission denied")


def test_cli_real_files_json_equals_the_api_and_is_the_same_twice(recorded: Path) -> None:
    """`compare --trace X --real-files --json`, run twice in fresh processes, prints the
    same numbers both times and what the API computes, with the file report."""
    argv = [sys.executable, "-m", "xipmodel", "compare", "--trace", str(recorded),
            "--real-files", "--guests", "3", "--guest-ram", "64", "--ksm-seconds", "0.5",
            "--json"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = [subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    printed = [json.loads(r.stdout) for r in runs]
    assert printed[0] == printed[1]
    api = comparison_json(compare(Scenario(guests=3, workload=str(recorded),
                                           real_files=True, **SMALL)))
    assert printed[0] == json.loads(json.dumps(api))
    assert printed[0]["scenario"]["real_files"] is True
    assert printed[0]["real_files"]["stand_ins"] == {}


@pytest.mark.parametrize(("args", "says"), [
    (["--real-files"], "no --trace is given"),
    (["--real-files", "--workload", "shell"], "no --trace is given"),
    (["--real-files", "--trace", "httpd", "--image", "/nonexistent.img"], "not in --image's"),
])
def test_bad_real_files_options(args: list[str], says: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """--real-files without a trace, or with an image of one's own: one line, exit 2."""
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and says in err and "--real-files" in err


def test_bad_real_files_in_the_api(recorded: Path) -> None:
    """real_files must be a bool, needs a trace, and cannot fill an image given to Host."""
    with pytest.raises(ParameterError, match="real_files 1 is not True or False"):
        Scenario(workload="httpd", real_files=1)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="workload 'webserver' has no trace"):
        Scenario(real_files=True)
    scenario = Scenario(workload=str(recorded), real_files=True)
    image = workload_set([name for name, _ in scenario.mix]).image
    with pytest.raises(ParameterError, match="an image of the caller's was given"):
        Host(scenario, "xip", image)


def _pages(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(1, 256, n * PAGE_SIZE, dtype=np.uint8).tobytes()


def test_equal_pages_of_two_files_are_one_content() -> None:
    """A frame's content is the first block with its bytes: /b's pages, copies of /a's,
    share /a's content; /c, one byte off in each page, shares none; zeros are zeros."""
    rng = np.random.default_rng(7)
    a = _pages(rng, 3)
    c = bytes(b ^ 1 if i % PAGE_SIZE == 5 else b for i, b in enumerate(a))
    image = Ext2Image.open(build_image({"/a": a, "/b": a, "/c": c + bytes(PAGE_SIZE)},
                                       timestamp=0))
    blocks = {p: image.block_map(p).tolist() for p in ("/a", "/b", "/c")}
    content = {p: [block_content(image, b) for b in bs] for p, bs in blocks.items()}
    assert content["/a"] == content["/b"] == [CONTENT_BLOCK + b for b in blocks["/a"]]
    assert not set(content["/c"][:3]) & set(content["/a"])
    assert content["/c"][3] == CONTENT_ZERO  # an all-zero block holds what a hole does
    assert block_content(image, 0) == CONTENT_ZERO


@pytest.mark.parametrize("same", [True, False])
def test_ksm_merges_equal_pages_of_two_files(tmp_path: Path, same: bool) -> None:
    """One guest reads /a and /b into its page cache: KSM merges their pages when the
    files hold the same bytes (before, each block was its own content: no merge), and
    not when they differ."""
    rng = np.random.default_rng(11)
    a = _pages(rng, 4)
    b = a if same else _pages(rng, 4)
    image = Ext2Image.open(build_image({"/a": a, "/b": b}, timestamp=0))
    base = 0x10000000
    maps = [MapSpec(base, 4 * PAGE_SIZE, "r--", "/a"),
            MapSpec(base + 8 * PAGE_SIZE, 4 * PAGE_SIZE, "r--", "/b")]
    vpns = [(base >> 12) + i for i in (*range(4), *range(8, 12))]
    trace = tmp_path / "ab.npz"
    PageTrace("ab", maps, np.array(vpns, np.uint64), np.zeros(8, np.uint8),
              {"file_sizes": {"/a": len(a), "/b": len(b)}}).save(trace)
    result = Host(Scenario(guests=1, workload=str(trace), **SMALL), "ksm", image).run()
    assert result.ksm is not None
    assert result.ksm.pages_sharing == (4 if same else 0)


def test_equal_blocks_is_grouping_by_bytes() -> None:
    """Ext2Image.equal_blocks, over a whole image with copied, zero and distinct pages,
    is what grouping every block by its bytes gives (the first of each group; 0: zeros)."""
    rng = np.random.default_rng(3)
    pages = [_pages(rng, 1) for _ in range(5)]
    picks = rng.integers(0, 6, (6, 7))
    tree = {f"/f{i}": b"".join(pages[k] if k < 5 else bytes(PAGE_SIZE) for k in row)
            for i, row in enumerate(picks.tolist())}
    image = Ext2Image.open(build_image(tree, timestamp=0))
    first: dict[bytes, int] = {bytes(PAGE_SIZE): 0}
    expected = [first.setdefault(image.read_block(b), b) if b else 0
                for b in range(image.superblock.s_blocks_count)]
    assert image.equal_blocks().tolist() == expected
    assert len(set(expected)) < len(expected)  # copies were there to find


def test_the_report_names_what_moved_aside_and_counts_the_rest() -> None:
    """A stand-in moved aside (its path taken) names the machine's file it compared; past
    SHOWN_STAND_INS, the summary counts the stand-ins it does not name."""
    moved = realfiles.FileSource("/xipmodel-traces/1/etc/ld.so.cache", "/etc/ld.so.cache",
                                 5, "9 bytes here, 5 recorded")
    many = [realfiles.FileSource(f"/f{i:02}", f"/f{i:02}", 1, "missing here")
            for i in range(realfiles.SHOWN_STAND_INS + 2)]
    report = realfiles.FileReport((realfiles.FileSource("/bin/true", "/bin/true", 3),
                                   moved, *many))
    assert report.real == ["/bin/true"]
    assert report.stand_ins[moved.path] == "/etc/ld.so.cache: 9 bytes here, 5 recorded"
    total = len(many) + 2
    assert report.summary().startswith(f"1 of {total} files are this machine's own; "
                                       f"{total - 1} stand-ins: {moved.path} (/etc/ld.so")
    assert report.summary().endswith(", and 3 more")
    assert report.as_dict()["summary"] == report.summary()
