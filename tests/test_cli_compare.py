"""`python -m xipmodel compare` and `quiz`: what a student types, and what comes back.

Small scenarios (shell guests with 64 MiB and a short ksmd scan) keep each run
under a second or two.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from xipmodel.__main__ import ProgressBar, main, parse_workload
from xipmodel.host import MODES

SMALL = ["--guests", "2", "--workload", "shell", "--guest-ram", "64", "--ksm-seconds", "0.2"]
KEYS = ("host_bytes", "shared_bytes", "page_cache_bytes", "anon_bytes", "cow_bytes",
        "major_faults", "minor_faults", "disk_read_bytes")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xipmodel", *args], capture_output=True,
                          text=True, check=False)


def test_compare_json_has_every_mode_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    """Does --json give, per mode, the host memory by category, the faults and disk reads?"""
    assert main(["compare", *SMALL, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data["modes"]) == list(MODES)
    assert data["scenario"]["guests"] == 2 and data["scenario"]["workload"] == "shell"
    for mode, row in data["modes"].items():
        assert row["mode"] == mode
        for key in KEYS:
            assert isinstance(row[key], int) and row[key] >= 0, (mode, key)
    xip, pc = data["modes"]["xip"], data["modes"]["pagecache"]
    assert xip["host_bytes"] < pc["host_bytes"] and xip["disk_read_bytes"] == 0
    assert pc["saving_vs_pagecache"] == 0.0 and 0 < xip["saving_vs_pagecache"] < 1


def test_compare_table_fits_80_columns_and_shows_all_modes(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Is the table readable in an 80-column terminal, in MiB with one decimal?"""
    assert main(["compare", *SMALL]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    header = next(line for line in lines if "pagecache" in line)
    assert header.split() == list(MODES)
    host = next(line for line in lines if line.startswith("host memory (MiB)"))
    assert len(host.split()[-4:]) == 4
    assert all(cell.count(".") == 1 and len(cell.split(".")[1]) == 1
               for cell in host.split()[-4:])
    for label in ("saving vs page cache", "page cache", "shared", "anonymous", "CoW",
                  "page tables", "KSM", "major faults", "minor faults", "disk reads"):
        assert label in out, label


def test_compare_modes_mix_and_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    """A workload mix, two modes, two processes: the same numbers as one process?"""
    args = ["compare", "--guests", "2", "--workload", "shell=0.5,webserver=0.5",
            "--guest-ram", "64", "--modes", "xip,pagecache", "--json"]
    assert main(args) == 0
    one = json.loads(capsys.readouterr().out)
    assert main([*args, "--jobs", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert one == two and list(one["modes"]) == ["xip", "pagecache"]
    assert one["scenario"]["workload"] == [["shell", 0.5], ["webserver", 0.5]]


@pytest.mark.parametrize("args", [
    ["--workload", "nginx"],
    ["--workload", "shell=a"],
    ["--modes", "xip,zfs"],
    ["--guests", "0"],
    ["--heap-share", "1.5"],
    ["--image", "/nonexistent/image"],
    ["--jobs", "0"],
    ["--kernel", "5.99"],
])
def test_bad_compare_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    """A bad argument to the model: one line on stderr naming it, exit 2, no traceback."""
    proc = cli("compare", "--guests", "1", "--guest-ram", "64", *args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("xipmodel compare: ")
    assert proc.stdout == ""


def test_compare_runs_the_kernel_profile_asked_for(capsys: pytest.CaptureFixture[str]) -> None:
    """--kernel picks the guests' rules: 2.6's XIP (xip_file_fault) and 6.18's differ."""
    assert main(["compare", *SMALL, "--modes", "pagecache", "--json"]) == 0
    new = json.loads(capsys.readouterr().out)
    assert main(["compare", *SMALL, "--modes", "pagecache", "--kernel", "2.6-xip",
                 "--json"]) == 0
    old = json.loads(capsys.readouterr().out)
    assert new["scenario"]["kernel"] == "6.18" and old["scenario"]["kernel"] == "2.6-xip"
    assert new["modes"]["pagecache"]["disk_read_bytes"] != \
        old["modes"]["pagecache"]["disk_read_bytes"]  # exec read-around, split readahead


def test_argparse_errors_exit_non_zero() -> None:
    """A malformed option is argparse's business: usage, an error line, non-zero exit."""
    proc = cli("compare", "--guests", "many")
    assert proc.returncode != 0 and "invalid int value" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_parse_workload() -> None:
    """A name stays a name; a mix becomes (name, share) pairs."""
    assert parse_workload("webserver") == "webserver"
    assert parse_workload("webserver=0.8,shell=0.2") == (("webserver", 0.8), ("shell", 0.2))


def test_compare_image_dir_is_frozen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--image DIR: is the directory populated and frozen into an image the guests run from?

    The directory holds dash, ld.so and libc as the embedded distribution has them, so
    the shell workload can exec from it; the table names the directory.
    """
    from xipmodel.distro import default_image, needed_closure, resolve

    root = tmp_path / "rootfs"
    img = default_image()
    for path in ("/usr/bin/dash", "/lib64/ld-linux-x86-64.so.2",
                 *needed_closure("/usr/bin/dash")):
        real = resolve(path)
        for name in {path, real}:
            target = root / name.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(img.read(real))
    args = ["compare", "--guests", "2", "--workload", "shell", "--guest-ram", "64",
            "--modes", "pagecache,xip", "--image", str(root)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert f"image: {root}" in out
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["modes"]["xip"]["shared_bytes"] > 0
    assert data["modes"]["pagecache"]["disk_read_bytes"] > 0


def test_progress_bar_only_on_a_terminal() -> None:
    """Nothing goes to a non-terminal; a terminal sees `[###   ] k/n guests`."""
    plain = io.StringIO()
    bar = ProgressBar(4, "guests", plain, after=0.0)
    bar.update(2, "xip")
    bar.close()
    assert plain.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    bar = ProgressBar(4, "guests", tty, after=0.0, width=8)
    bar.update(2, "xip")
    assert "\r[####    ] 2/4 guests (xip)" in tty.getvalue()
    bar.close()


def test_a_mode_that_fails_leaves_no_bar_on_the_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The bar is cleared also when a mode raises, so that the CLI's one-line error starts
    a line of its own (it was glued to the bar)."""
    from xipmodel import __main__ as cli_main
    from xipmodel.errors import ParameterError
    from xipmodel.host import Host, Scenario

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    def fail(self: Host, progress: Any = None, ksmd_in_bulk: bool = False) -> Any:
        progress(1, 2)
        raise ParameterError("boom")

    monkeypatch.setattr(Host, "run", fail)
    monkeypatch.setattr(cli_main, "ProgressBar",
                        lambda *a, **k: ProgressBar(*a, **{**k, "after": 0.0}))
    tty = Tty()
    with pytest.raises(ParameterError):
        cli_main.run_comparison(Scenario(guests=2), ("xip",), progress_stream=tty)
    assert "1/2 guests" in tty.getvalue() and tty.getvalue().endswith("\r\x1b[K")


def test_compare_prints_no_progress_when_stderr_is_not_a_terminal() -> None:
    """Run from a pipe (CI, the headless lab job): stderr stays empty."""
    proc = cli("compare", *SMALL, "--modes", "xip")
    assert proc.returncode == 0 and proc.stderr == ""


def on_a_terminal(*args: str) -> tuple[int, str]:
    """Run `python -m xipmodel ARGS` with stderr on a pseudo-terminal: its exit status and
    everything it wrote there."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "xipmodel", *args], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
        while data := os.read(master, 1 << 16):
            chunks.append(data)
    os.close(master)
    return proc.wait(), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_compare_of_distinct_guests_shows_its_progress_on_a_terminal(jobs: str) -> None:
    """A compare of distinct guests takes seconds: does a terminal see guests counted while
    it runs, with one process and with a worker per mode, and the line wiped at the end?"""
    status, stderr = on_a_terminal("compare", "--guests", "60", "--variants", "0",
                                   "--modes", "xip,dax", "--ksm-seconds", "0", "--jobs", jobs)
    assert status == 0
    counts = [int(n) for n in re.findall(r"\] (\d+)/120 guests", stderr)]
    assert counts and counts == sorted(counts) and counts[-1] == 120
    assert stderr.endswith("\r\x1b[K")


# ── the quiz ─────────────────────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("kind", ["translate", "faults", "memory"])
def test_quiz_is_deterministic_and_solve_shows_the_steps(kind: str) -> None:
    """Same seed, same question, in a fresh process each time; --solve adds the worked answer."""
    first = cli("quiz", "--seed", "3", "--kind", kind)
    again = cli("quiz", "--seed", "3", "--kind", kind)
    assert first.returncode == 0 and first.stdout == again.stdout
    solved = cli("quiz", "--seed", "3", "--kind", kind, "--solve")
    assert solved.stdout.startswith(first.stdout.split("(run again")[0].rstrip())
    answer = solved.stdout.split("Solution\n--------\n", 1)[1]
    if kind == "translate":
        assert "PD[" in answer and "→ pa 0x" in answer and "--> Fault" in answer
        assert "(2+1)(2+1) − 1 = 8 references" in answer
    elif kind == "faults":
        assert "dax_iomap_fault" in answer and "filemap_fault [MAJOR" in answer
        assert "read-around" in answer and "In short:" in answer
    else:
        assert "whatever the number of guests" in answer and "XIP saves" in answer


def test_quiz_seed_3_default_kind(capsys: pytest.CaptureFixture[str]) -> None:
    """`quiz --seed 3` with no kind: the seed picks one, the same each time."""
    assert main(["quiz", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert main(["quiz", "--seed", "3"]) == 0
    assert capsys.readouterr().out == out and out.startswith("xipmodel quiz, seed 3 (")
    kinds = set()
    for seed in range(12):
        assert main(["quiz", "--seed", str(seed)]) == 0
        kinds.add(capsys.readouterr().out.split("(", 1)[1].split(")", 1)[0])
    assert kinds == {"translate", "faults", "memory"}


def test_quiz_translation_answers_match_the_memory_dump() -> None:
    """Does every translated address's value come from the dump the question printed?"""
    from xipmodel.quiz import make_question

    q = make_question(5, "translate")
    mem = bytearray()
    for line in q.prompt:
        if line.startswith("page "):
            mem += bytes.fromhex(line.split(":", 1)[1])
    assert len(mem) == 4096
    answers = [line for line in q.answer if "Translates to Physical Address" in line]
    assert answers
    for line in answers:
        pa = int(line.split("Physical Address ")[1].split()[0], 16)
        value = int(line.rsplit("Value: ", 1)[1], 16)
        assert mem[pa] == value
    assert np.count_nonzero(np.frombuffer(bytes(mem), np.uint8)) > 0


def test_quiz_bad_seed_is_one_line() -> None:
    """A negative seed: one line, exit 2."""
    proc = cli("quiz", "--seed", "-1")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1


def test_demo_still_tells_the_story_and_compares(capsys: pytest.CaptureFixture[str]) -> None:
    """The headless demo ends with the compare table of a small scenario."""
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "XIP saves" in out and "host memory (MiB)" in out and "saving vs page cache" in out
