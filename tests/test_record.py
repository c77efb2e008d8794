"""Recording real programs with valgrind, and the traces shipped with the package.

Valgrind is slow: only /usr/bin/true is recorded here (about 1.5 s), once per module.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import find_tool

from xipmodel.errors import ParameterError
from xipmodel.ext2 import Ext2Image, File, build_image
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.segment import SharedSegment
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE
from xipmodel.workloads.record import RecordError, main_record, record
from xipmodel.workloads.recorded import TRACES, load_trace
from xipmodel.workloads.trace import EXEC, PageTrace, collapse, replay

TRUE = "/usr/bin/true"
LDSO = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"


@pytest.fixture
def true_trace(recorded: Path) -> PageTrace:
    """/usr/bin/true as `record` saved it (conftest's session recording, made once)."""
    return PageTrace.load(recorded)


def _map_index(trace: PageTrace) -> np.ndarray:
    """Index of the map holding each access (-1: none)."""
    starts = np.array([m.start >> PAGE_SHIFT for m in trace.maps], dtype=np.uint64)
    ends = np.array([(m.start + m.length) >> PAGE_SHIFT for m in trace.maps], dtype=np.uint64)
    idx = np.searchsorted(starts, trace.vpns, side="right").astype(np.int64) - 1
    ok = (idx >= 0) & (trace.vpns < ends[np.maximum(idx, 0)])
    return np.where(ok, idx, -1)


def _check_attributed(trace: PageTrace) -> None:
    idx = _map_index(trace)
    assert (idx >= 0).all(), f"{trace.name}: {(idx < 0).sum()} accesses outside every map"
    ends = [m.start + m.length for m in trace.maps]
    assert all(a <= b for a, b in zip(ends, [m.start for m in trace.maps[1:]], strict=False)), \
        f"{trace.name}: maps overlap"
    for m in trace.maps:
        assert m.start % PAGE_SIZE == 0 and m.length % PAGE_SIZE == 0 and m.offset % PAGE_SIZE == 0
        assert m.path is None or m.path.startswith("/")
    # Every access is allowed by its map's prot: a replay cannot SIGSEGV.
    prots = np.array([[m.prot[k] != "-" for k in range(3)] for m in trace.maps])
    assert prots[idx, trace.kinds].all(), f"{trace.name}: an access its map's prot forbids"


def test_every_access_lies_in_a_map_that_allows_it(true_trace: PageTrace) -> None:
    """Is each recorded page access attributed to a mapping of the trace (no orphans)?"""
    _check_attributed(true_trace)
    assert true_trace.meta["dropped_unmapped"] == 0
    assert true_trace.meta["layout_check"] == [], "replayed layout differs from aspacem's"


def test_nothing_in_the_trace_is_valgrinds(true_trace: PageTrace) -> None:
    """Valgrind's core, tool and preloads share the address space: are they filtered out?"""
    libdir = str(true_trace.meta["valgrind_libdir"])
    assert libdir.startswith("/")
    for m in true_trace.maps:
        assert not (m.path or "").startswith(libdir), f"{m.path} is valgrind's"
    addresses = true_trace.vpns << np.uint64(PAGE_SHIFT)
    ranges = true_trace.meta["valgrind_ranges"]
    assert isinstance(ranges, list) and ranges
    for start, end in ranges:
        assert not ((addresses >= start) & (addresses < end)).any(), f"access in {start:#x}"
        for m in true_trace.maps:
            assert m.start + m.length <= start or m.start >= end, f"map {m} overlaps valgrind"
    assert int(str(true_trace.meta["dropped_valgrind"])) > 0  # its redirected code ran


def _text_load(path: str) -> tuple[int, int]:
    """(p_offset, p_filesz) of the executable PT_LOAD, read from the ELF program headers."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2, "a 64-bit ELF file"
    e_phoff, = struct.unpack_from("<Q", data, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(e_phnum):
        p_type, p_flags, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, e_phoff + i * e_phentsize)
        if p_type == 1 and p_flags & 1:  # PT_LOAD, PF_X
            return p_offset, p_filesz
    raise AssertionError(f"{path}: no executable PT_LOAD")


def test_main_text_executes_at_its_pt_load_offsets(true_trace: PageTrace) -> None:
    """Do /usr/bin/true's executed pages sit at the file offsets of its R E PT_LOAD?"""
    p_offset, p_filesz = _text_load(TRUE)
    readelf = find_tool("readelf")
    if readelf is not None:  # binutils agrees with our reading of the program headers
        out = subprocess.run([readelf, "-lW", TRUE], capture_output=True, text=True,
                             check=True).stdout
        loads = [ln.split() for ln in out.splitlines() if ln.strip().startswith("LOAD")]
        text = [f for f in loads if "E" in f[6:-1]]
        assert [(int(text[0][1], 16), int(text[0][4], 16))] == [(p_offset, p_filesz)]
    path = os.path.realpath(TRUE)
    xmaps = [m for m in true_trace.maps if m.path == path and "x" in m.prot]
    assert len(xmaps) == 1
    xm = xmaps[0]
    assert xm.offset == p_offset & ~(PAGE_SIZE - 1)
    idx = _map_index(true_trace)
    me = true_trace.maps.index(xm)
    run = (idx == me) & (true_trace.kinds == EXEC)
    assert run.any(), "the main binary's text never executed"
    offsets = (true_trace.vpns[run].astype(np.int64) << PAGE_SHIFT) - xm.start + xm.offset
    assert offsets.min() >= p_offset & ~(PAGE_SIZE - 1)
    assert offsets.max() < p_offset + p_filesz
    assert true_trace.meta["program"] == path


def test_ld_so_and_libc_are_mapped_and_executed(true_trace: PageTrace) -> None:
    """The dynamic loader (mapped by valgrind, not by a syscall) and libc are both there."""
    idx = _map_index(true_trace)
    for lib in (LDSO, LIBC):
        path = os.path.realpath(lib)
        assert path in true_trace.files()
        mine = [i for i, m in enumerate(true_trace.maps) if m.path == path and "x" in m.prot]
        assert mine and (np.isin(idx, mine) & (true_trace.kinds == EXEC)).any()
    names = {m.name for m in true_trace.maps}
    assert {"[stack]", "[heap]"} <= names


def test_trace_is_collapsed_and_round_trips(true_trace: PageTrace, tmp_path: Path) -> None:
    """No consecutive repeats; save then load gives the same trace."""
    v, k = true_trace.vpns, true_trace.kinds
    assert not ((v[1:] == v[:-1]) & (k[1:] == k[:-1])).any()
    cv, ck = collapse(v, k)
    assert cv.size == v.size and np.array_equal(ck, k)
    meta = true_trace.meta
    assert int(str(meta["references"])) >= int(str(meta["collapsed_pages"])) == len(true_trace)
    path = tmp_path / "true.npz"
    true_trace.save(path)
    back = PageTrace.load(path)
    assert back.maps == true_trace.maps and back.meta == true_trace.meta
    assert np.array_equal(back.vpns, v) and np.array_equal(back.kinds, k)


def test_a_recording_carries_the_kernels_residency(true_trace: PageTrace,
                                                   tmp_path: Path) -> None:
    """After the run, which pages of each mapped file did the kernel cache?

    Every file page the recorded run executed was read through the kernel's page
    cache, so it is resident afterwards, unless reclaim took some (cachestat's
    evicted count says so). The residency survives save and load.
    """
    residency = true_trace.meta["residency"]
    assert isinstance(residency, dict) and "error" not in residency
    files = residency["files"]
    assert set(files) == set(true_trace.files())
    for path in true_trace.files():
        entry = files[path]
        assert entry["pages"] == -(-os.path.getsize(path) // PAGE_SIZE)
        executed = set()
        for m in true_trace.maps:
            if m.path != path:
                continue
            first, last = m.start >> PAGE_SHIFT, (m.start + m.length) >> PAGE_SHIFT
            hit = true_trace.vpns[(true_trace.kinds == EXEC) & (true_trace.vpns >= first)
                                  & (true_trace.vpns < last)]
            executed |= {int(v) - first + (m.offset >> PAGE_SHIFT) for v in np.unique(hit)}
        cached = true_trace.kernel_residency(path)
        assert cached is not None
        assert executed <= cached or entry["evicted"], (path, sorted(executed - cached))
    assert any(files[p]["resident"] for p in (LIBC, LDSO))
    path = tmp_path / "true.npz"
    true_trace.save(path)
    assert PageTrace.load(path).kernel_residency(LIBC) == true_trace.kernel_residency(LIBC)


def test_record_refuses_a_missing_program(require_tool: Callable[[str], str]) -> None:
    require_tool("valgrind")
    with pytest.raises(RecordError, match="no-such-program"):
        record(["no-such-program-xipmodel"])
    with pytest.raises(ParameterError):
        record([])


def test_main_record_saves_and_summarises(
        require_tool: Callable[[str], str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    require_tool("valgrind")
    out = tmp_path / "t.npz"
    assert main_record(["-o", str(out), "--", TRUE]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("recorded /usr/bin/true:") and "\n" not in line
    assert len(PageTrace.load(out)) > 0


def test_main_record_bad_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """No program, or no valgrind: one clear line and exit status 2."""
    assert main_record([]) == 2
    assert main_record(["--"]) == 2
    assert main_record(["--timeout", "soon", "--", TRUE]) == 2
    monkeypatch.setenv("PATH", str(tmp_path))  # no valgrind on this PATH
    assert main_record(["--", TRUE]) == 2
    err = capsys.readouterr().err
    assert "valgrind is not installed" in err


# --- the shipped traces ------------------------------------------------------------------

def test_shipped_traces_load_and_are_small() -> None:
    """Each shipped trace loads, is under 400 KiB, names its command and is well formed."""
    from xipmodel.workloads import make_traces

    assert set(TRACES) == set(make_traces.WORKLOADS)
    for name in TRACES:
        path = make_traces.OUT_DIR / f"{name}.npz"
        assert path.stat().st_size < 400 << 10, f"{name}: {path.stat().st_size} bytes"
        trace = load_trace(name)
        assert trace.name == name and len(trace) > 10_000
        meta = trace.meta
        assert re.match(r"valgrind-3\.", str(meta["valgrind"]))
        assert meta["command"] and meta["date"] and meta["debian_packages"]
        assert meta["layout_check"] == [] and meta["dropped_unmapped"] == 0
        assert int(str(meta["collapsed_pages"])) == len(trace)
        _check_attributed(trace)
        libdir = str(meta["valgrind_libdir"])
        assert not any((m.path or "").startswith(libdir) for m in trace.maps)
    with pytest.raises(ParameterError, match="no recorded trace"):
        load_trace("nope")


def _image_for(trace: PageTrace) -> Ext2Image:
    """The files the trace names: the host's copies where they match, else stand-ins."""
    sizes = trace.meta["file_sizes"]
    assert isinstance(sizes, dict)
    tree: dict[str, bytes | File] = {}
    for path in trace.files():
        size = int(sizes[path])
        if os.path.isfile(path) and os.path.getsize(path) == size:
            with open(path, "rb") as f:  # read-only use of the host's files
                tree[path] = f.read()
        else:  # another Debian release: same size, so the same pages exist
            tree[path] = File(b"", size=size)
    return Ext2Image.open(build_image(tree))


@pytest.mark.slow
@pytest.mark.parametrize("xip", [True, False], ids=["xip", "pagecache"])
def test_shipped_trace_replays_without_faults(xip: bool) -> None:
    """Replayed in a guest whose image holds its files, does every access complete?"""
    trace = load_trace("httpd")
    img = _image_for(trace)
    host = HostMemory()
    guest = Guest(0, host, 16384, img, segment=SharedSegment(host, img) if xip else None)
    mm, result = replay(guest, trace)
    assert result.accesses == len(trace)
    assert (result.sigsegv, result.sigbus, result.oom) == (0, 0, 0)
    assert guest.stats.sigsegv == guest.stats.sigbus == 0
    assert len(mm.vmas) == len(trace.maps)
    if xip:
        assert guest.stats.major_faults == 0 and guest.dcss_mapped  # text runs in place
    else:
        assert guest.stats.major_faults > 0 and guest.page_counts()["page_cache"] > 0
