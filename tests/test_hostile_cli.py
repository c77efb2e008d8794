"""The command line on bad input: one line on standard error naming the option (or file) and
what is allowed, exit status 2, quickly, and never a traceback.

Each command runs as `python -m xipmodel` in a child under a wall-clock and an
address-space limit. Before issue 10, `--ksm-seconds inf`, `--seed -1` and
`record --timeout nan` printed tracebacks, `--guest-ram 1000000000` named a VPN,
`--guests 1000000000` ran for minutes, and `info FIFO` or `compare --image /dev/zero`
blocked or read without end.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from _hostile import ADDRESS_SPACE, ROOT

from xipmodel.ext2 import File, build_image

SECONDS = 60.0


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def cli(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m xipmodel ARGS` (or `python -c CODE`) with the limits; a hang fails."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "xipmodel"]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    try:
        return subprocess.run([*command, *args], capture_output=True, text=True, env=env,
                              timeout=SECONDS, preexec_fn=_limits, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"xipmodel {' '.join(args)} did not finish within {SECONDS} s")


def assert_one_line(proc: subprocess.CompletedProcess[str], status: int, *names: str) -> None:
    """Exit `status`, nothing but one line on stderr, which names each of `names`."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert proc.returncode == status, (proc.returncode, proc.stderr)
    for name in names:
        assert name in lines[0], f"{name!r} not in: {lines[0]}"


@pytest.mark.parametrize(("args", "names"), [
    (["--ksm-seconds", "inf"], ["--ksm-seconds", "inf", "[0, 20000]"]),
    (["--ksm-seconds", "nan"], ["--ksm-seconds", "nan", "[0, 20000]"]),
    (["--ksm-seconds", "1e9"], ["--ksm-seconds", "1e9", "[0, 20000]"]),
    (["--ksm-seconds", "-1"], ["--ksm-seconds", "[0, 20000]"]),
    (["--seed", "-1"], ["--seed", "-1", "0..18446744073709551615"]),
    (["--guest-ram", "1000000000"], ["--guest-ram", "1000000000", "1..1048576"]),
    (["--guests", "1000000000"], ["--guests", "1000000000", "1..10000"]),
    (["--guests", "100000"], ["--guests", "100000", "1..10000"]),
    (["--guests", "0"], ["--guests", "1..10000"]),
    (["--guests", "many"], ["--guests", "invalid int value: 'many'", "1..10000"]),
    (["--heap-share", "1"], ["--heap-share", "[0, 0.99]"]),
    (["--heap-share", "nan"], ["--heap-share", "[0, 0.99]"]),
    (["--variants", "-1"], ["--variants", "0..20000"]),
    (["--jobs", "0"], ["--jobs", "1..64"]),
    (["--workload", "foo"], ["--workload", "'foo'", "webserver, shell, python, tools"]),
    (["--workload", "webserver=-1"], ["--workload", "SHARE a finite number >= 0"]),
    (["--workload", "webserver=nan"], ["--workload", "SHARE a finite number >= 0"]),
    (["--workload", "webserver=0,shell=0"], ["--workload", "no share above 0"]),
    (["--modes", ","], ["--modes", "names no mode"]),
    (["--modes", "xip,xip"], ["--modes", "at most once"]),
    (["--modes", "bogus"], ["--modes", "'bogus'", "pagecache"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_compare_options_out_of_range(args: list[str], names: list[str]) -> None:
    """Every option of compare is checked before anything runs, naming its range."""
    assert_one_line(cli("compare", *args), 2, *names)


def test_record_timeout_not_a_number() -> None:
    """record --timeout nan used to reach subprocess and raise ValueError."""
    assert_one_line(cli("record", "--timeout", "nan", "--", "/bin/true"), 2, "timeout nan",
                    "finite number of seconds above 0")
    assert_one_line(cli("record", "--timeout", "x", "--", "/bin/true"), 2, "--timeout",
                    "invalid float value: 'x'")


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A FIFO, a directory holding a FIFO, an image with a 300 MiB sparse file, junk."""
    base = tmp_path_factory.mktemp("cli_hostile")
    fifo = base / "fifo"
    os.mkfifo(fifo)
    tree = base / "tree"
    tree.mkdir()
    os.mkfifo(tree / "pipe")
    big = base / "big.img"
    big.write_bytes(build_image({"/big": File(b"x", size=300 << 20)}))
    junk = base / "junk"
    junk.write_bytes(bytes(8192))
    return {"fifo": str(fifo), "tree": str(tree), "big": str(big), "junk": str(junk)}


@pytest.mark.parametrize(("args", "names"), [
    (["info", "{fifo}"], ["{fifo}", "FIFO, not a regular file"]),
    (["info", "/dev/zero"], ["/dev/zero", "character device"]),
    (["ls", "{tree}"], ["{tree}", "is a directory"]),
    (["compare", "--guests", "1", "--image", "{fifo}"], ["{fifo}", "FIFO"]),
    (["compare", "--guests", "1", "--image", "/dev/zero"], ["/dev/zero", "character device"]),
    (["compare", "--guests", "1", "--image", "{tree}"], ["/pipe", "special file"]),
    (["compare", "--guests", "1", "--image", "{junk}"], ["s_magic"]),
    (["compare", "--guests", "1", "--image", "/no/such/image"], ["/no/such/image"]),
    (["cat", "{big}", "/big"], ["/big", "max_read"]),
])
def test_image_paths_that_are_not_images(special: dict[str, str], args: list[str],
                                         names: list[str]) -> None:
    """FIFOs and devices are refused before open() blocks or read() never ends."""
    proc = cli(*(a.format(**special) for a in args))
    assert_one_line(proc, 2, *(n.format(**special) for n in names))
    assert proc.stdout == ""


def test_an_internal_error_is_one_line_and_status_70(tmp_path: Path) -> None:
    """A bug (here: a RuntimeError planted in cmd_info) is reported as one, in one line,
    saying where to report it: exit status 70, no traceback."""
    image = tmp_path / "img"
    image.write_bytes(build_image({"/f": b"x"}))
    code = ("import sys, xipmodel.__main__ as m\n"
            "def boom(img): raise RuntimeError('cmd_info: planted bug')\n"
            "m.cmd_info = boom\n"
            "sys.exit(m.main(sys.argv[1:]))")
    proc = cli("info", str(image), code=code)
    assert_one_line(proc, 70, "xipmodel info: internal error", "RuntimeError",
                    "planted bug", "this is a bug in xipmodel", "report")


def test_good_commands_still_work(tmp_path: Path) -> None:
    """The control: a valid image and option values run as before."""
    image = tmp_path / "img"
    image.write_bytes(build_image({"/f": b"hello"}, volume_name="ctl"))
    proc = cli("cat", str(image), "/f")
    assert proc.returncode == 0 and proc.stdout == "hello" and proc.stderr == ""
    proc = cli("quiz", "--seed", "3")
    assert proc.returncode == 0 and proc.stderr == ""
