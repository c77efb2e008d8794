"""Run one call on hostile input in a child process, under a wall-clock and an address-space limit.

The tests in tests/test_hostile_*.py build a bad input (an image, a trace, an ELF file, a
command line, a Scenario), then ask: does the entry point answer with the project's own
exception, naming what was wrong, within SECONDS and without asking for more than
ADDRESS_SPACE bytes of memory (resource.RLIMIT_AS)? A hang shows as "timeout", a huge
allocation as MemoryError, a crash as the builtin it raised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

SECONDS = 30.0  # generous: the machine is shared; what these inputs used to do took minutes
ADDRESS_SPACE = 1 << 30  # Python, numpy and xipmodel need about 300 MiB of address space
ROOT = Path(__file__).resolve().parent.parent

_CHILD = """\
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
def _report(**fields):
    sys.stdout.flush()
    sys.__stdout__.write("\\n@@outcome@@" + json.dumps(fields) + "\\n")
try:
{setup}
    _value = ({call})
except BaseException as _exc:
    _report(raised=type(_exc).__module__ + "." + type(_exc).__qualname__,
            message=str(_exc), mro=[c.__name__ for c in type(_exc).__mro__])
else:
    _report(returned=repr(_value)[:2000])
"""


@dataclass(frozen=True)
class Outcome:
    """What the call did: raised (exception class and message), returned, or timed out."""

    raised: str | None = None  # "module.Class"
    message: str = ""
    mro: tuple[str, ...] = ()
    returned: str | None = None
    timeout: bool = False
    stderr: str = ""

    def __str__(self) -> str:
        if self.timeout:
            return "timeout"
        if self.raised:
            return f"{self.raised}: {self.message}"
        return f"returned {self.returned}" if self.returned is not None else \
            f"no outcome (stderr: {self.stderr[-2000:]})"


def bounded(call: str, setup: str = "", *, seconds: float = SECONDS,
            address_space: int = ADDRESS_SPACE) -> Outcome:
    """Evaluate the expression `call` (after the statements `setup`) in a limited child."""
    body = textwrap.indent(textwrap.dedent(setup).strip() or "pass", "    ")
    script = _CHILD.format(limit=address_space, setup=body, call=call)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              timeout=seconds, env=env, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return Outcome(timeout=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("@@outcome@@"):
            fields = json.loads(line.removeprefix("@@outcome@@"))
            if "mro" in fields:
                fields["mro"] = tuple(fields["mro"])
            return Outcome(**fields, stderr=proc.stderr)
    return Outcome(stderr=proc.stderr + f" (exit status {proc.returncode})")


def assert_raises(outcome: Outcome, cls: type[BaseException], *names: str) -> None:
    """The call raised exactly `cls`, and its message names each of `names`."""
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    assert outcome.raised == qualified, f"expected {qualified}, got {outcome}"
    for name in names:
        assert name in outcome.message, f"{name!r} is not named in: {outcome.message}"
