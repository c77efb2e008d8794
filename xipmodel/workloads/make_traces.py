"""Regenerate the shipped traces: `python -m xipmodel.workloads.make_traces [NAME ...]`.

    shell        dash runs a small script: a loop, builtins, a here-string, a pipeline
    httpd        busybox httpd in inetd mode answers a GET on a 127.0.0.1 connection
    interpreter  perl starts and prints a line
    compiler     the gcc driver compiles hello.c with -c

Each is one process recorded with valgrind (`record`): a shell's forked
children, and the cc1 and as that gcc starts, run but are not recorded.
Why perl and the gcc driver rather than `python3 -c pass` and cc1: a trace is
shipped only if it stays a few hundred KiB, and with consecutive repeats as the
only compaction python3's start (21 M instructions, 16 M page accesses) and
cc1's (55 M instructions) come to several MiB each; perl's start and the gcc
driver are 1 M to 1.5 M instructions.
Needs valgrind, dash, busybox, perl and gcc on the host; run on Debian 12 (amd64).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from xipmodel.workloads.record import Driver, debian_packages, record
from xipmodel.workloads.recorded import TRACES

__all__ = ["OUT_DIR", "WORKLOADS", "Workload", "main", "make_trace"]

OUT_DIR: Final = Path(__file__).resolve().parent.parent / "data" / "traces"
MAX_BYTES: Final = 400 << 10

SHELL_SCRIPT: Final = (
    'i=0; total=0\n'
    'while [ "$i" -lt 25 ]; do i=$((i + 1)); total=$((total + i * i)); done\n'
    'echo "sum of squares: $total"\n'
    'for word in alpha beta gamma; do case $word in a*) echo "$word starts with a";; '
    '*) printf "%s\\n" "$word";; esac; done\n'
    'read -r host < /etc/hostname; echo "host ${#host} chars"\n'
    'cd /etc && set -- *.conf; echo "$# conf files"; cd /\n'
    'ls / | wc -l\n'
    'cat /etc/os-release > /dev/null\n'
)

HELLO_C: Final = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'


@dataclass(frozen=True)
class Run:
    """What to record: the command, a driver thread and a descriptor for stdin/stdout."""

    argv: list[str]
    driver: Driver | None = None
    stdio: int | None = None


@dataclass(frozen=True)
class Workload:
    """One shipped trace: what it runs, prepared in a scratch directory."""

    name: str
    description: str
    prepare: Callable[[Path], Run]


def _httpd(work: Path) -> Run:
    """busybox httpd in inetd mode, its standard input and output a TCP connection on
    127.0.0.1; the driver sends one GET and reads the answer to its end."""
    www = work / "www"
    www.mkdir()
    (www / "index.html").write_text("<html><body><h1>xipmodel</h1></body></html>\n")
    (www / "hello.txt").write_text("hello from busybox httpd under valgrind\n" * 20)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname(), timeout=60)
        conn, _ = listener.accept()

    def drive(proc: subprocess.Popen[bytes]) -> None:
        conn.close()  # the server's copy is the only one left: EOF when it is done
        with client:
            client.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            while client.recv(65536):
                pass

    return Run(["/usr/bin/busybox", "httpd", "-i", "-h", str(www)], drive, conn.fileno())


def _gcc(work: Path) -> Run:
    (work / "hello.c").write_text(HELLO_C)
    return Run(["/usr/bin/gcc", "-c", "hello.c", "-o", "hello.o"])


WORKLOADS: Final = {
    "shell": Workload("shell", "dash runs a small script (loop, builtins, ls | wc, cat)",
                      lambda work: Run(["/usr/bin/dash", "-c", SHELL_SCRIPT])),
    "httpd": Workload("httpd", "busybox httpd (inetd mode) answers a GET on 127.0.0.1",
                      _httpd),
    "interpreter": Workload("interpreter", "perl starts and prints a line",
                            lambda work: Run(["/usr/bin/perl", "-e", 'print "hello\\n";'])),
    "compiler": Workload("compiler", "the gcc driver compiles hello.c (cc1 and as unrecorded)",
                         _gcc),
}
assert tuple(WORKLOADS) == TRACES, "make_traces: WORKLOADS and recorded.TRACES disagree"


def make_trace(name: str, out_dir: Path = OUT_DIR) -> Path:
    """Record workload `name` in a scratch directory and save it as `out_dir`/NAME.npz."""
    w = WORKLOADS[name]
    with tempfile.TemporaryDirectory(prefix=f"xipmodel-{name}-") as tmp:
        work = Path(tmp)
        run = w.prepare(work)
        trace = record(run.argv, cwd=work, driver=run.driver, stdio=run.stdio, timeout=600,
                       name=name)
    trace.meta["description"] = w.description
    trace.meta["debian_packages"] = debian_packages(
        [str(trace.meta["program"]), *trace.files()])
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.npz"
    trace.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xipmodel.workloads.make_traces",
                                     description="Record the shipped traces again.")
    parser.add_argument("names", nargs="*", help=f"which traces (default: all of "
                                                 f"{', '.join(TRACES)})")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help=f"default {OUT_DIR}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in TRACES]
    if unknown:
        print(f"make_traces: no workload {unknown[0]!r} (have {', '.join(TRACES)})",
              file=sys.stderr)
        return 2
    if shutil.which("valgrind") is None:
        print("make_traces: valgrind is not installed", file=sys.stderr)
        return 2
    for name in args.names or TRACES:
        started = time.monotonic()
        path = make_trace(name, args.out)
        size = path.stat().st_size
        flag = "" if size <= MAX_BYTES else f"  (over {MAX_BYTES >> 10} KiB!)"
        print(f"{name}: {path} {size >> 10} KiB in {time.monotonic() - started:.0f} s{flag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
