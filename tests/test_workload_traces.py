"""Traces as workloads: a recorded program runs through Scenario, compare, sweep and the CLI.

A trace recorded here with valgrind (`python -m xipmodel record -- /usr/bin/true`, about a
second) is the workload; the shipped traces join it in mixes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from xipmodel.__main__ import comparison_json, main
from xipmodel.errors import ParameterError, TraceFileError
from xipmodel.host import MODES, Comparison, Host, Scenario, compare, sweep
from xipmodel.workloads.recorded import RELOCATED_DIR, load_trace
from xipmodel.workloads.sources import TRACE_PREFIX, workload_name, workload_set
from xipmodel.workloads.trace import MapSpec, PageTrace

SMALL = {"guest_ram_mib": 64, "ksm_seconds": 0.5}


@pytest.fixture(scope="module")
def comparison(recorded: Path) -> Comparison:
    return compare(Scenario(guests=6, workload=str(recorded), **SMALL))


def test_a_recorded_trace_runs_in_every_mode(recorded: Path, comparison: Comparison) -> None:
    """Does a trace of a real program run in all four modes, every access replayed, with XIP
    costing no more than the page cache and its guests reading nothing from disk?"""
    trace = PageTrace.load(recorded)
    assert comparison.scenario.workload == TRACE_PREFIX + str(recorded)
    assert list(comparison.results) == list(MODES)
    for mode, result in comparison.results.items():
        assert result.totals["accesses"] == 6 * len(trace), mode
        assert result.totals["sigsegv"] == result.totals["sigbus"] == 0, mode
        assert result.totals["oom"] == 0, mode
    pc, xip = comparison.results["pagecache"], comparison.results["xip"]
    assert xip.host_bytes <= pc.host_bytes
    assert comparison.saving("xip") > 0.5
    assert pc.totals["disk_read_bytes"] > 0 and xip.totals["disk_read_bytes"] == 0
    assert comparison.results["dax"].host_bytes <= pc.host_bytes


def test_no_page_cache_for_the_image_under_xip(comparison: Comparison) -> None:
    """Under XIP (and DAX) the image's files are never in a guest's page cache: the shared
    frames hold them once; in page-cache mode every guest caches its own copy."""
    pc, xip = comparison.results["pagecache"], comparison.results["xip"]
    for result in (xip, comparison.results["dax"]):
        assert result.bytes_by_category["page_cache"] == 0
        assert all(g["page_cache_pages"] == 0 for g in result.per_guest), result.mode
    assert xip.bytes_by_category["shared"] > 0
    per_guest = [g["page_cache_pages"] for g in pc.per_guest]
    assert len(set(per_guest)) == 1 and per_guest[0] > 0  # the same run in every guest


def test_saving_is_linear_in_the_guests(recorded: Path, comparison: Comparison) -> None:
    """Each guest adds the same: the saving after n guests is a + b·n exactly, and a
    prefix is the run with fewer guests."""
    pc, xip = comparison.results["pagecache"], comparison.results["xip"]
    saving = np.array([pc.prefix(n).host_bytes - xip.prefix(n).host_bytes
                       for n in range(1, 7)])
    steps = np.diff(saving)
    assert (steps == steps[0]).all() and steps[0] > 0, saving
    two = compare(Scenario(guests=2, workload=str(recorded), **SMALL), modes=("pagecache", "xip"))
    for mode in ("pagecache", "xip"):
        assert two.results[mode].bytes_by_category == \
            comparison.results[mode].prefix(2).bytes_by_category


def test_cli_trace_json_equals_the_api(recorded: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`compare --trace my.npz --json` (a relative path) prints what the API computes."""
    monkeypatch.chdir(recorded.parent)
    assert main(["compare", "--trace", recorded.name, "--guests", "3", "--guest-ram", "64",
                 "--ksm-seconds", "0.5", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    api = comparison_json(compare(Scenario(guests=3, workload=str(recorded), **SMALL)))
    assert printed == json.loads(json.dumps(api))


def test_a_mix_of_traces_and_programs_shares_one_image(recorded: Path) -> None:
    """A recorded trace, a shipped one and a program model: one image holds the
    distribution and every trace's files; libc, the same size everywhere, is one file;
    a file of another size at a taken path (ld.so.cache) moves aside with its maps."""
    mix = ((str(recorded), 1.0), ("trace:httpd", 1.0), ("shell", 1.0))
    scenario = Scenario(guests=6, workload=mix, **SMALL)
    names = [name for name, _ in scenario.mix]
    assert names == [TRACE_PREFIX + str(recorded), "trace:httpd", "shell"]
    built = workload_set(names)
    image = built.image
    for name, trace in built.traces.items():
        for path in trace.files():
            assert image.stat(path).st_size == trace.meta["file_sizes"][path], (name, path)
    libc = "/usr/lib/x86_64-linux-gnu/libc.so.6"
    assert all(libc in t.files() for t in built.traces.values())
    assert image.exists("/usr/sbin/nginx") and image.exists("/usr/bin/dash")
    httpd, mine = load_trace("httpd"), PageTrace.load(recorded)
    if httpd.meta["file_sizes"]["/etc/ld.so.cache"] != mine.meta["file_sizes"]["/etc/ld.so.cache"]:
        moved = [p for t in built.traces.values() for p in t.files()
                 if p.startswith(RELOCATED_DIR)]
        assert [p.split("/", 3)[-1] for p in moved] == ["etc/ld.so.cache"]
    c = compare(scenario, modes=("pagecache", "xip", "ksm"))
    for result in c.results.values():
        assert result.totals["sigsegv"] == result.totals["sigbus"] == 0
        assert [g["program"] for g in result.per_guest] == [scenario.program_of(i)
                                                            for i in range(6)]
    assert c.results["xip"].host_bytes < c.results["pagecache"].host_bytes
    assert c.results["xip"].bytes_by_category["page_cache"] == 0


def test_sweep_over_guests_with_a_trace_matches_compare(recorded: Path) -> None:
    """sweep with a trace workload gives, per value, what compare gives."""
    base = Scenario(workload=str(recorded), **SMALL)
    swept = sweep(base, "guests", [1, 3], modes=("pagecache", "xip"))
    for comparison in swept:
        alone = compare(comparison.scenario, modes=("pagecache", "xip"))
        assert {m: r.host_bytes for m, r in comparison.results.items()} == \
            {m: r.host_bytes for m, r in alone.results.items()}


def test_a_shipped_trace_by_name() -> None:
    """A shipped trace is named with trace: (shell is also a program) or alone."""
    assert workload_name("trace:shell") == "trace:shell"
    assert workload_name("shell") == "shell"
    assert workload_name("httpd") == workload_name("trace:httpd") == "trace:httpd"
    result = Host(Scenario(guests=2, workload="httpd", **SMALL), "xip").run()
    assert result.totals["accesses"] == 2 * len(load_trace("httpd"))
    assert result.per_guest[1]["program"] == "trace:httpd"


SIZES = {"file_sizes": {"/bin/x": 8192}}


def _bad_trace(path: Path, meta: dict[str, object], *maps: MapSpec) -> Path:
    PageTrace("bad", list(maps) or [MapSpec(0x400000, 0x2000, "r-x", "/bin/x")],
              np.array([0x400], np.uint64), np.array([2], np.uint8), meta).save(path)
    return path


@pytest.mark.parametrize(("make", "says"), [
    (lambda d: d / "missing.npz", "No such file"),
    (lambda d: d, "is a directory"),
    (lambda d: os.mkfifo(d / "fifo.npz") or d / "fifo.npz", "not a regular file"),
    (lambda d: (d / "text.npz").write_text("no zip") and d / "text.npz", "not a readable .npz"),
    (lambda d: _bad_trace(d / "sizes.npz", {}), "meta['file_sizes']"),
    (lambda d: _bad_trace(d / "far.npz", SIZES, MapSpec(1 << 60, 0x2000, "r-x", "/bin/x")),
     "maps[0] [0x1000000000000000, 0x1000000000002000) ends above the user address space"),
    (lambda d: _bad_trace(d / "overlap.npz", SIZES, MapSpec(0x400000, 0x2000, "r-x", "/bin/x"),
                          MapSpec(0x401000, 0x1000, "rw-")),
     "maps[1] at 0x401000 overlaps maps[0]"),
])
def test_bad_traces_are_one_clear_error(tmp_path: Path, make: Callable[[Path], Path],
                                        says: str) -> None:
    """A missing, unreadable or incomplete trace file, or maps no process could have:
    TraceFileError naming the workload when the Scenario is made (before, maps beyond
    the address space failed inside the run, naming a VPN); the CLI says it in one line
    with exit status 2."""
    path = make(tmp_path)
    with pytest.raises(TraceFileError, match="Scenario: workload") as info:
        Scenario(workload=str(path))
    assert says in str(info.value)
    proc = subprocess.run([sys.executable, "-m", "xipmodel", "compare", "--trace", str(path)],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and says in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [["--trace", "httpd=-1"], ["--trace", "=2"]])
def test_bad_trace_options(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A negative share or no name: one line naming --trace, exit status 2."""
    assert main(["compare", *args]) == 2
    assert capsys.readouterr().err.count("--trace") == 1


def test_unknown_workload_names_every_kind() -> None:
    """A name that is neither a program nor a trace lists what is allowed."""
    with pytest.raises(ParameterError, match=r"webserver.*httpd.*a path to a \.npz"):
        Scenario(workload="nginx")
