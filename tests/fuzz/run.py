"""Fuzz the ext2 reader, the ELF parser + exec and the trace loader (not part of the test suite).

    .venv/bin/python tests/fuzz/run.py                     every target, 15 minutes each
    .venv/bin/python tests/fuzz/run.py --minutes 2 ext2    one target, 2 minutes
    .venv/bin/python tests/fuzz/run.py --engine random     without atheris

With atheris installed (`pip install -e '.[fuzz]'`) each target runs under libFuzzer,
coverage-guided over xipmodel's bytecode; without it, a seeded random-mutation loop
(bit flips, interesting integers, block copies, truncation, splicing) runs instead.
Each target runs in a child process limited to --memory MiB of address space, with a
--timeout per input. An exception a target does not allow, a timeout or a MemoryError is
a finding: the input is kept in WORKDIR/TARGET/findings/ and fuzzing goes on. The seed
corpus is made by targets.py (*_seeds) into WORKDIR/TARGET/seeds/ at each start; inputs
that found new coverage accumulate in WORKDIR/TARGET/corpus/. At the end one line per
target: executions, executions per second, coverage, findings.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_WORKDIR = HERE / ".work"
NAMES = ("ext2", "elf", "trace")


class _Timeout(Exception):
    """One input ran longer than --timeout."""


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout


class _Findings:
    """Inputs that escaped a target with an exception it does not allow, kept once per kind."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.kinds: set[str] = {p.name.split("-", 1)[0] for p in folder.glob("*-*")}

    def keep(self, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                      if "xipmodel" in f.filename), "?")
        kind = hashlib.sha1(f"{type(exc).__name__} {where}".encode()).hexdigest()[:10]
        if kind in self.kinds:
            return
        self.kinds.add(kind)
        name = f"{kind}-{hashlib.sha1(data).hexdigest()[:12]}"
        (self.folder / name).write_bytes(data)
        text = "".join(traceback.format_exception(exc))
        (self.folder / f"{name}.txt").write_text(text)
        print(f"FINDING {type(exc).__name__} at {where}: {str(exc)[:200]} -> {name}",
              file=sys.stderr, flush=True)


def _rss_mib() -> int:
    """This process's resident memory, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") >> 20


class _Session:
    """Counts executions; restarts the process (os.execv) when its memory has grown.

    atheris 3.0 leaks under libFuzzer (about 1 MiB per execution of the ext2 target, in
    its hooks, not in xipmodel: the same loop without libFuzzer stays flat), so a child
    re-executes itself with the time that is left once it holds RESTART_MIB; the corpus
    is on disk, so nothing found is lost.
    """

    RESTART_MIB = 768

    def __init__(self, done_before: int, restart: Callable[[int], None]) -> None:
        self.execs = done_before
        self.restart = restart
        print(f"XIPFUZZ session-start executions={done_before}", file=sys.stderr, flush=True)

    def tick(self) -> None:
        self.execs += 1
        if self.execs % 50 == 0 and _rss_mib() > self.RESTART_MIB:
            print(f"XIPFUZZ restart executions={self.execs} rss={_rss_mib()}MiB",
                  file=sys.stderr, flush=True)
            self.restart(self.execs)


def _guarded(one_input: Callable[[bytes], None], findings: _Findings, timeout: int,
             session: _Session | None = None) -> Callable[[bytes], None]:
    """`one_input`, with a per-input alarm; what escapes it is kept, not fatal."""

    def run(data: bytes) -> None:
        signal.alarm(timeout)
        try:
            one_input(data)
        except (_Timeout, MemoryError, RecursionError, Exception) as exc:
            signal.alarm(0)
            findings.keep(data, exc)
        finally:
            signal.alarm(0)
        if session is not None:
            session.tick()

    return run


def child(name: str, deadline: float, workdir: Path, engine: str, timeout: int,
          seed: int, done_before: int) -> int:
    """Fuzz one target in this process (started by `main` with the limits set)."""
    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(ROOT))
    signal.signal(signal.SIGALRM, _alarm)
    base = workdir / name
    seeds_dir, corpus_dir = base / "seeds", base / "corpus"
    findings = _Findings(base / "findings")
    seconds = int(deadline - time.time())
    if seconds < 3:
        return 0
    if engine == "atheris":
        import atheris

        _bypass_numpy_compares(atheris)
        with atheris.instrument_imports(include=["xipmodel", "targets"]):
            import targets
    else:
        import targets
    one_input, seeds = targets.TARGETS[name]
    seed_inputs = list(seeds())
    for d in (seeds_dir, corpus_dir):
        d.mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(seed_inputs):
        (seeds_dir / f"seed-{i:02d}").write_bytes(data)
    if engine == "atheris":

        def restart(execs: int) -> None:
            sys.stderr.flush()
            os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()),
                                      "--child", name, "--deadline", str(deadline),
                                      "--engine", engine, "--timeout", str(timeout),
                                      "--seed", str(seed + 1), "--workdir", str(workdir),
                                      "--done", str(execs)])

        target = _guarded(one_input, findings, timeout, _Session(done_before, restart))
        max_len = max(len(s) for s in seed_inputs)
        atheris.Setup([sys.argv[0], str(corpus_dir), str(seeds_dir),
                       f"-max_total_time={seconds}", f"-max_len={max_len}",
                       "-print_final_stats=1", f"-seed={seed}", "-rss_limit_mb=0",
                       "-timeout=0", f"-artifact_prefix={base}/libfuzzer-"], target)
        atheris.Fuzz()
        return 0
    return _random_loop(_guarded(one_input, findings, timeout), seed_inputs, corpus_dir,
                        seconds, seed)


def _bypass_numpy_compares(atheris: object) -> None:
    """Compare numpy operands in Python, not in atheris's native hook.

    atheris 3.0's _trace_cmp leaks the result of a comparison that is not a bool (a numpy
    array of bools, say: 200 comparisons of million-entry arrays kept 200 MiB); the reader
    compares arrays of block numbers. Comparisons of ints, bytes and str, whose operands
    guide libFuzzer's mutations, still go to the native hook. (A second leak, under
    libFuzzer only, is handled by _Session's restarts.)
    """
    import operator

    import numpy as np
    from atheris.version_dependent import CMP_OP_SHIFT_AMOUNT

    native = atheris._trace_cmp  # type: ignore[attr-defined]
    ops = (operator.lt, operator.le, operator.eq, operator.ne, operator.gt, operator.ge)
    numeric = (np.ndarray, np.generic)

    def trace_cmp(a: object, b: object, op: int, counter: int, is_const: bool) -> object:
        if isinstance(a, numeric) or isinstance(b, numeric):
            return ops[op >> CMP_OP_SHIFT_AMOUNT](a, b)
        return native(a, b, op, counter, is_const)

    atheris._trace_cmp = trace_cmp  # type: ignore[attr-defined]


# Values worth writing over a field: 0, 1, small, powers of two, the edges of signed sizes.
_INTERESTING = [0, 1, 2, 3, 4, 7, 8, 12, 15, 16, 64, 127, 128, 255, 256, 511, 512, 1023, 1024,
                4095, 4096, 32767, 32768, 65535, 65536, 1 << 20, 1 << 24, 0x7FFFFFFF, 0x80000000,
                0xFFFFFFFF, 1 << 32, 1 << 36, 0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF]


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """One random mutation of `data` (a few edits), maybe spliced with another input."""
    out = bytearray(data or b"\0")
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        if not out:
            out = bytearray(b"\0")
        op = rng.randrange(8)
        at = rng.randrange(len(out))
        if op == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at] = rng.randrange(256)
        elif op in (2, 3):
            width = rng.choice((1, 2, 4, 8))
            value = rng.choice(_INTERESTING) & ((1 << 8 * width) - 1)
            raw = value.to_bytes(width, rng.choice(("little", "big")))
            out[at:at + width] = raw[:max(0, len(out) - at)]
        elif op == 4 and len(out) > 1:  # copy a block over another place
            n = rng.randrange(1, min(len(out), 1024) + 1)
            src, dst = rng.randrange(len(out) - n + 1), rng.randrange(len(out) - n + 1)
            out[dst:dst + n] = out[src:src + n]
        elif op == 5:
            del out[rng.randrange(len(out)):]  # truncate
        elif op == 6:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        elif pool:
            other = rng.choice(pool)
            cut = rng.randrange(min(len(out), len(other)) + 1)
            out = out[:cut] + bytearray(other[cut:])
    return bytes(out)


def _random_loop(target: Callable[[bytes], None], seeds: list[bytes], corpus_dir: Path,
                 seconds: int, seed: int) -> int:
    """The fallback engine: mutate the seeds (and kept inputs) at random for `seconds`."""
    rng = random.Random(seed)
    pool = list(seeds) + [p.read_bytes() for p in sorted(corpus_dir.iterdir())][:256]
    start = time.monotonic()
    execs = 0
    while time.monotonic() - start < seconds:
        data = _mutate(rng, rng.choice(pool), pool)
        target(data)
        execs += 1
        if execs % 5000 == 0 and len(pool) < 512:
            pool.append(data)  # a little diversity: no coverage feedback here
    elapsed = time.monotonic() - start
    print(f"stat::number_of_executed_units: {execs}", file=sys.stderr)
    print(f"stat::elapsed_seconds: {elapsed:.0f}", file=sys.stderr)
    return 0


def _limit_memory(mib: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (mib << 20, mib << 20))
        os.nice(19)
    return apply


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tests/fuzz/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", choices=[[], *NAMES], default=[])
    parser.add_argument("--minutes", type=float, default=15.0, help="per target (default 15)")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument("--timeout", type=int, default=10, help="seconds per input")
    parser.add_argument("--memory", type=int, default=2048, help="MiB of address space")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--done", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    seconds = max(1, int(args.minutes * 60))
    if args.child:
        return child(args.child, args.deadline, args.workdir, engine, args.timeout,
                     args.seed, args.done)
    names = list(args.targets) or list(NAMES)
    pending = list(names)
    running: dict[str, tuple[subprocess.Popen[str], float]] = {}
    results: dict[str, str] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = (args.workdir / name).with_suffix(".log")
            log.parent.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name,
                   "--deadline", str(time.time() + seconds), "--engine", engine,
                   "--timeout", str(args.timeout), "--seed", str(args.seed),
                   "--workdir", str(args.workdir)]
            with log.open("w") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True,
                                        preexec_fn=_limit_memory(args.memory), cwd=ROOT)
            running[name] = (proc, time.monotonic())
            print(f"{name}: fuzzing for {seconds} s with {engine} (log {log})", flush=True)
        time.sleep(1)
        for name, (proc, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            results[name] = _summary(name, args.workdir, time.monotonic() - started,
                                     proc.returncode)
            print(results[name], flush=True)
    print(json.dumps({"engine": engine, "results": results}, indent=1))
    return 0


def _summary(name: str, workdir: Path, elapsed: float, status: int) -> str:
    """One line: executions, per second, coverage (atheris: cov/ft), findings kept."""
    text = (workdir / name).with_suffix(".log").read_text(errors="replace")
    # Sessions (see _Session): the last one started after `before` executions.
    last = text.rsplit("XIPFUZZ session-start executions=", 1)
    before = int(last[1].split()[0]) if len(last) == 2 else 0
    execs = re.findall(r"stat::number_of_executed_units: (\d+)", last[-1])
    covs = re.findall(r"cov: (\d+) ft: (\d+)", text)
    corpus = re.findall(r"corp: (\d+)/", text)
    findings = len([p for p in (workdir / name / "findings").glob("*") if p.suffix != ".txt"])
    n = before + (int(execs[-1]) if execs else 0)
    cov = f", coverage {covs[-1][0]} edges / {covs[-1][1]} features" if covs else ""
    corp = f", corpus {corpus[-1]} inputs" if corpus else ""
    return (f"{name}: {n} executions in {elapsed:.0f} s ({n / max(elapsed, 1):.0f}/s){cov}"
            f"{corp}, {findings} finding(s), exit status {status}")


if __name__ == "__main__":
    sys.exit(main())
