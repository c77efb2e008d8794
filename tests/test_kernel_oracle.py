"""Does the model's page cache hold exactly what the running kernel's does? (kernelcheck)

Each pattern runs on a fresh file of a loop-device filesystem this test makes (root, as
in CI) and in a model guest with the same parameters; mincore(2) on the real file and
the guest's page cache must name the same pages. ext4 with data=journal caches order-0
folios; plain ext4 on Linux 6.16+ caches large folios.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need_root, need_tool

from xipmodel import kernelcheck as kc
from xipmodel import mincore
from xipmodel.__main__ import main
from xipmodel.params import DEFAULT_KERNEL

ROOT = Path(__file__).resolve().parent.parent


def _need_loop_devices() -> None:
    need_root("loop devices and mounts")
    for tool in ("losetup", "mkfs.ext4", "mkfs.ext2", "mount", "umount", "valgrind"):
        need_tool(tool)


@pytest.fixture(scope="module", params=sorted(kc.FILESYSTEMS))
def checked(request: pytest.FixtureRequest) -> Iterator[tuple[kc.FsInfo, list[kc.CheckResult]]]:
    _need_loop_devices()
    fstype, options = kc.FILESYSTEMS[request.param]
    with kc.scratch_filesystem(fstype, options, read_ahead_kb=128) as fs:
        yield fs, kc.run_check(fs, repeats=1, execs=kc.EXEC_PATTERNS)


def test_every_pattern_agrees_with_the_kernel(
        checked: tuple[kc.FsInfo, list[kc.CheckResult]]) -> None:
    """mmap faults (read and exec), MADV_RANDOM/SEQUENTIAL and read(): page for page.

    Only the execve of a real binary has an allowance, small and explained: the model
    replays a valgrind recording, which cannot see the kernel's own first touches.
    """
    fs, results = checked
    assert fs.ra_pages == 32
    assert len(results) == len(kc.PATTERNS) + len(kc.EXEC_PATTERNS)
    assert all(r.allowance == 0 for r in results if isinstance(r.pattern, kc.Pattern))
    assert all(r.allowance <= 4 for r in results)
    assert not any(r.noisy for r in results), kc.format_table(fs, results)
    assert all(r.agree for r in results), kc.format_table(fs, results)


def test_the_filesystems_differ_where_the_kernel_says(
        checked: tuple[kc.FsInfo, list[kc.CheckResult]]) -> None:
    """Large folios change sequential read(): 5 pages read leave 0-15 cached, not 0-27.

    An ext2 served by ext4's driver (EXT4_USE_FOR_EXT2, as on this kind of machine) gets
    them too: the driver decides, not the name of the filesystem.
    """
    fs, results = checked
    five = next(r for r in results if r.pattern.name == "read() 4 KiB x 5")
    expect = "0-15" if fs.large_folios_under(DEFAULT_KERNEL) else "0-27"
    assert kc.ranges(five.kernel) == expect


MADV_PAGEOUT = 21


def _page_out(fd: int, page: int) -> None:
    """Reclaim one cached page of the file, as DAMON's pageout scheme does on cloud hosts."""
    libc = mincore.libc()
    addr = mincore.mmap_file(libc, fd, 1, mincore.PROT_READ, mincore.MAP_SHARED, page)
    try:
        ctypes.string_at(addr, 1)  # map it: MADV_PAGEOUT reclaims what the range maps
        assert libc.madvise(ctypes.c_void_p(addr), kc.PAGE_SIZE, MADV_PAGEOUT) == 0
    finally:
        libc.munmap(ctypes.c_void_p(addr), kc.PAGE_SIZE)


def test_a_run_that_outside_reclaim_disturbs_is_made_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A page evicted during the run would read as never cached; cachestat sees the eviction.

    The first run loses a readahead page to reclaim mid-run; kernelcheck must not report
    the hole as the kernel's readahead decision, but run the pattern again on a fresh file.
    """
    _need_loop_devices()
    pattern = next(p for p in kc.PATTERNS if p.name == "mmap one page")
    evicted = pattern.pages[0] + 5
    real = kc._kernel_mmap
    runs = []

    def disturbed(libc: ctypes.CDLL, fd: int, p: kc.Pattern) -> None:
        real(libc, fd, p)
        if not runs:
            _page_out(fd, evicted)
            assert mincore.resident(libc, fd, p.file_pages).isdisjoint({evicted})
        runs.append(fd)

    monkeypatch.setattr(kc, "_kernel_mmap", disturbed)
    with kc.scratch_filesystem("ext4", "data=journal") as fs:
        pages, discarded = kc.kernel_residency(fs.directory, pattern)
        model = kc.model_residency(pattern, fs.ra_pages)
    assert (len(runs), discarded) == (2, 1)
    assert evicted in pages
    assert pages == model


def test_scratch_filesystem_goes_away_also_on_failure() -> None:
    """The loop device, the mount and the image are removed even when the body fails."""
    _need_loop_devices()
    with pytest.raises(RuntimeError, match="boom"), \
            kc.scratch_filesystem("ext2") as fs:
        device, directory = fs.device, fs.directory
        assert Path(directory).is_dir()
        raise RuntimeError("boom")
    losetup = subprocess.run([need_tool("losetup"), "-a"], capture_output=True, text=True,
                             check=True).stdout
    assert device not in {line.split(":", 1)[0] for line in losetup.splitlines()}
    with open("/proc/self/mounts") as f:
        assert directory not in f.read()
    assert not Path(directory).parent.exists()  # the mount point and the image beside it


def test_a_filesystem_without_readahead_is_refused() -> None:
    """tmpfs keeps every page in memory: there is nothing to compare, so it says so."""
    with open("/proc/self/mounts") as f:
        tmpfs = [line.split()[1] for line in f if line.split()[2] == "tmpfs"]
    assert tmpfs, "no tmpfs is mounted (Linux mounts /dev/shm or /run as tmpfs)"
    with pytest.raises(kc.KernelCheckError, match="tmpfs"):
        kc.describe_directory(tmpfs[0])


def test_the_command_line_prints_the_table_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m xipmodel kernelcheck --fs ext4-journal --json`: every pattern, agreeing.

    In this process, so that the scratch filesystem's cleanup runs whatever happens.
    """
    _need_loop_devices()
    status = main(["kernelcheck", "--fs", "ext4-journal", "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    (report,) = json.loads(out)
    assert report["ra_pages"] == 32 and not report["large_folios"]
    assert len(report["patterns"]) == len(kc.PATTERNS) + len(kc.EXEC_PATTERNS)
    assert all(p["agree"] for p in report["patterns"])


def test_ranges_reads_like_the_table() -> None:
    """Pages are printed as ranges, so a student can compare them by eye."""
    assert kc.ranges(frozenset({0, 1, 2, 5, 7, 8})) == "0-2,5,7-8"
    assert kc.ranges(frozenset()) == "-"
