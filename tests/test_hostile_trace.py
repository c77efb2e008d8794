"""Hostile page-trace files: PageTrace.load, Prot.parse and trace_image.

A trace file is a zip of .npy members (see workloads/trace.py). Each bad file here is
loaded in a child process under a wall-clock and an address-space limit (tests/_hostile.py):
it must raise TraceFileError (a ParameterError) naming the file and the member or header
field, without allocating what its headers claim. Before issue 10 these escaped as
BadZipFile, zlib.error or EOFError, asked numpy for terabytes, or loaded and failed later.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from _hostile import Outcome, assert_raises, bounded

from xipmodel.errors import ParameterError, TraceFileError
from xipmodel.mm.vma import Prot
from xipmodel.workloads.trace import MapSpec, PageTrace

MAPS = [{"start": 0x400000, "length": 0x2000, "prot": "r-x", "path": "/bin/x", "offset": 0,
         "name": "", "shared": False}]


def _header(name: str = "t", maps: object = MAPS, meta: object | None = None) -> np.ndarray:
    text = json.dumps({"name": name, "maps": maps, "meta": meta or {}})
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _npz(path: Path, **members: np.ndarray) -> str:
    """A trace archive with exactly `members` (name → array), as np.savez_compressed writes."""
    np.savez_compressed(path, **members)  # type: ignore[arg-type]
    return str(path)


def _good(path: Path, n: int = 100) -> str:
    vpns = np.arange(0x400, 0x400 + n, dtype=np.uint64)
    return _npz(path, vpns=vpns, kinds=np.zeros(n, np.uint8), contents=np.zeros(n, np.int64),
                header=_header())


def _load(path: str, **limits: int) -> Outcome:
    extra = "".join(f", {k}={v!r}" for k, v in limits.items())
    return bounded(f"PageTrace.load({path!r}{extra})",
                   "from xipmodel.workloads.trace import PageTrace")


def test_a_good_trace_still_loads(tmp_path: Path) -> None:
    """The control: the archive np.savez_compressed writes loads as before."""
    trace = PageTrace.load(_good(tmp_path / "good.npz"))
    assert len(trace) == 100 and trace.maps == [MapSpec(**MAPS[0])]  # type: ignore[arg-type]
    assert trace.vpns.dtype == np.uint64 and trace.vpns.flags.writeable


# --- damaged archives ----------------------------------------------------------------------

def test_empty_file(tmp_path: Path) -> None:
    """An empty file: not a zip archive (was EOFError)."""
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    assert_raises(_load(str(path)), TraceFileError, str(path), "not a readable .npz")


def test_truncated_archive(tmp_path: Path) -> None:
    """The first half of a trace (was BadZipFile)."""
    good = Path(_good(tmp_path / "good.npz", 5000)).read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(good[:len(good) // 2])
    assert_raises(_load(str(path)), TraceFileError, str(path), "BadZipFile")


def _damage_member(good: bytes, member: str) -> bytes:
    """The archive with one byte of `member`'s compressed data flipped."""
    with zipfile.ZipFile(io.BytesIO(good)) as z:
        info = z.getinfo(member)
    name_len, extra_len = struct.unpack_from("<HH", good, info.header_offset + 26)
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    data = bytearray(good)
    data[at] ^= 0xFF
    return bytes(data)


def test_damaged_deflate_stream_or_crc(tmp_path: Path) -> None:
    """One flipped byte inside vpns.npy's deflate stream (was zlib.error or BadZipFile)."""
    good = Path(_good(tmp_path / "good.npz", 5000)).read_bytes()
    path = tmp_path / "crc.npz"
    path.write_bytes(_damage_member(good, "vpns.npy"))
    assert_raises(_load(str(path)), TraceFileError, str(path), "member vpns.npy: damaged")


def _set_flags(good: bytes, member: bytes, flags: int, name_byte: int | None = None) -> bytes:
    """The archive with general-purpose `flags` ORed into `member`'s local and central
    headers (and the first byte of its name there replaced by `name_byte`, if given)."""
    data = bytearray(good)
    for signature, flag_at, name_at in ((b"PK\x03\x04", 6, 30), (b"PK\x01\x02", 8, 46)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at:at + name_at + len(member)] == member:
                struct.pack_into("<H", data, at + flag_at,
                                 struct.unpack_from("<H", data, at + flag_at)[0] | flags)
                if name_byte is not None:
                    data[at + name_at] = name_byte
            at = data.find(signature, at + 4)
    return bytes(data)


def test_encrypted_member(tmp_path: Path) -> None:
    """A member flagged encrypted (found by fuzzing: zipfile's RuntimeError escaped)."""
    good = Path(_good(tmp_path / "good.npz")).read_bytes()
    path = tmp_path / "enc.npz"
    path.write_bytes(_set_flags(good, b"kinds.npy", 0x1))
    assert_raises(_load(str(path)), TraceFileError, "member kinds.npy", "encrypted")


def test_member_name_flagged_utf8_but_not(tmp_path: Path) -> None:
    """A name flagged UTF-8 (bit 11) that is not UTF-8 (found by fuzzing: UnicodeDecodeError
    escaped from zipfile)."""
    good = Path(_good(tmp_path / "good.npz")).read_bytes()
    path = tmp_path / "utf.npz"
    path.write_bytes(_set_flags(good, b"kinds.npy", 0x800, name_byte=0xFF))
    assert_raises(_load(str(path)), TraceFileError, str(path), "UnicodeDecodeError")


def test_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    """A FIFO given as a trace would block open(): refused, naming it."""
    fifo = tmp_path / "trace.npz"
    os.mkfifo(fifo)
    assert_raises(_load(str(fifo)), TraceFileError, str(fifo), "not a regular file")


# --- headers that lie about sizes ------------------------------------------------------------

def _npy_header(shape: tuple[int, ...], descr: str = "<u8") -> bytes:
    """A .npy version 1.0 header for an array of `shape` and `descr`."""
    text = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()


def _zip(path: Path, members: dict[str, bytes]) -> str:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(name, raw)
    return str(path)


def test_header_claiming_a_trillion_entries(tmp_path: Path) -> None:
    """A few hundred bytes whose vpns.npy header says 10**12 entries (8 TB): refused from
    the header, before any allocation (numpy asked for 7 TiB)."""
    path = _zip(tmp_path / "claim.npz", {
        "header.npy": _npy_header((len(_header()),), "|u1") + _header().tobytes(),
        "vpns.npy": _npy_header((10**12,)), "kinds.npy": _npy_header((10**12,), "|u1")})
    assert Path(path).stat().st_size < 1000
    outcome = _load(path)
    assert_raises(outcome, TraceFileError, "member vpns.npy", f"{10**12} entries",
                  "max_accesses")


@pytest.mark.parametrize("header", ["{'descr': '|u1', 'fortran_order': False, 'shape': (3, ",
                                    "{'descr': '|u1', 'shape': (3,), 'x': " + "'" * 3])
def test_npy_header_that_does_not_tokenize(tmp_path: Path, header: str) -> None:
    """A .npy header dict left open (found by fuzzing: numpy's tokenize.TokenError escaped)."""
    text = header + " " * (-(len(header) + 11) % 64) + "\n"
    raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode()
    path = _zip(tmp_path / "tok.npz", {"header.npy": raw})
    assert_raises(_load(path), TraceFileError, "member header.npy", "not a .npy array",
                  "TokenError")


def test_header_not_matching_the_member(tmp_path: Path) -> None:
    """vpns.npy says 1,000 entries but holds 10: the stated size and the header disagree."""
    path = _zip(tmp_path / "short.npz", {
        "header.npy": _npy_header((len(_header()),), "|u1") + _header().tobytes(),
        "vpns.npy": _npy_header((1000,)) + bytes(80),
        "kinds.npy": _npy_header((10,), "|u1") + bytes(10)})
    assert_raises(_load(path), TraceFileError, "member vpns.npy", "1000 entries")


@pytest.mark.parametrize("entries", [1 << 26])
def test_decompression_bomb(tmp_path: Path, entries: int) -> None:
    """A 0.5 MB archive inflating to 512 MiB of page numbers: beyond the loader's limit, so
    refused from its header; numpy used to inflate it all (MemoryError under the limit)."""
    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr("header.npy", _npy_header((len(_header()),), "|u1") + _header().tobytes())
        with z.open("vpns.npy", "w", force_zip64=True) as member:
            member.write(_npy_header((entries,)))
            chunk = bytes(16 << 20)
            for _ in range(entries * 8 // len(chunk)):
                member.write(chunk)
        z.writestr("kinds.npy", _npy_header((entries,), "|u1"))
    assert path.stat().st_size < 4 << 20
    outcome = bounded(f"PageTrace.load({str(path)!r})",
                      "from xipmodel.workloads.trace import PageTrace",
                      address_space=768 << 20)
    assert_raises(outcome, TraceFileError, "member vpns.npy", "16777216 entries",
                  "max_accesses")


def test_member_inflating_beyond_its_stated_size(tmp_path: Path) -> None:
    """A member that says 80 bytes but whose deflate stream inflates to 64 MiB: only the
    stated bytes are read, and the CRC then fails."""
    raw = _npy_header((10,)) + bytes(80)
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    stream = bomb.compress(raw + bytes(64 << 20)) + bomb.flush()
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("header.npy", _npy_header((len(_header()),), "|u1") + _header().tobytes())
        info = zipfile.ZipInfo("vpns.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        z.writestr(info, raw)  # a correct member first, then its data swapped for the bomb
        z.writestr("kinds.npy", _npy_header((10,), "|u1") + bytes(10))
    data = Path(path).read_bytes()
    with zipfile.ZipFile(path) as z:
        vinfo = z.getinfo("vpns.npy")
    name_len, extra_len = struct.unpack_from("<HH", data, vinfo.header_offset + 26)
    start = vinfo.header_offset + 30 + name_len + extra_len
    # Keep the stated sizes; the member's bytes become the bomb's first compress_size bytes.
    patched = bytearray(data)
    patched[start:start + vinfo.compress_size] = stream[:vinfo.compress_size]
    Path(path).write_bytes(bytes(patched))
    assert_raises(_load(str(path)), TraceFileError, str(path), "member vpns.npy: damaged",
                  "CRC")


# --- wrong dtypes, shapes and values --------------------------------------------------------

@pytest.mark.parametrize(("vpns", "says"), [
    (np.zeros((10, 2), np.uint64), "shape (10, 2) is not one-dimensional"),
    (np.full(20, np.nan), "dtype float64 is not an integer type"),
    (np.array([1, -1] * 10, np.int64), "value -1"),
    (np.array([1 << 60] * 20, np.uint64), f"value {1 << 60}"),
])
def test_bad_page_numbers(tmp_path: Path, vpns: np.ndarray, says: str) -> None:
    """2-D, NaN, negative or beyond-64-bit page numbers: refused at load, naming vpns.npy
    (2-D arrays used to load and fail in replay; NaN and -1 were cast silently)."""
    n = 20
    path = _npz(tmp_path / "bad.npz", vpns=vpns, kinds=np.zeros(n, np.uint8), header=_header())
    assert_raises(_load(path), TraceFileError, "member vpns.npy", says)


def test_bad_access_kind(tmp_path: Path) -> None:
    """An access kind 7 is none of read, write, execute."""
    path = _npz(tmp_path / "k.npz", vpns=np.arange(4, dtype=np.uint64),
                kinds=np.array([0, 1, 2, 7], np.uint8), header=_header())
    assert_raises(_load(path), TraceFileError, "member kinds.npy", "value 7")


def test_columns_of_different_lengths(tmp_path: Path) -> None:
    """kinds.npy shorter than vpns.npy."""
    path = _npz(tmp_path / "len.npz", vpns=np.arange(4, dtype=np.uint64),
                kinds=np.zeros(3, np.uint8), header=_header())
    assert_raises(_load(path), TraceFileError, "member kinds.npy", "3 entries", "has 4")


def test_missing_member(tmp_path: Path) -> None:
    """An archive without kinds.npy is not a trace."""
    path = _npz(tmp_path / "miss.npz", vpns=np.arange(4, dtype=np.uint64), header=_header())
    assert_raises(_load(path), TraceFileError, "no member kinds.npy")


@pytest.mark.parametrize(("maps", "says"), [
    ([{**MAPS[0], "prot": "zzz"}], "maps[0].prot 'zzz'"),
    ([{**MAPS[0], "start": -4096}], "maps[0].start -4096"),
    ([{**MAPS[0], "length": 1.5}], "maps[0].length 1.5"),
    ([{**MAPS[0], "start": 0x400123}], "maps[0]: start 0x400123"),
    ([{**MAPS[0], "bogus": 1}], "unknown field 'bogus'"),
    ([{**MAPS[0], "path": 7}], "maps[0].path 7"),
    ("nope", "maps 'nope' is not a list"),
])
def test_bad_header_fields(tmp_path: Path, maps: object, says: str) -> None:
    """Each field of the JSON header is checked, and named with the value."""
    path = _npz(tmp_path / "h.npz", vpns=np.arange(4, dtype=np.uint64),
                kinds=np.zeros(4, np.uint8), header=_header(maps=maps))
    assert_raises(_load(path), TraceFileError, "member header.npy", says)


GOOD_RESIDENCY = {"after": "the recorded run", "kernel": "6.18",
                  "files": {"/bin/x": {"pages": 8, "resident": [[0, 2], [5, 8]], "evicted": 0}}}


def _residency(**entry: object) -> dict[str, object]:
    return {**GOOD_RESIDENCY, "files": {"/bin/x": {"pages": 8, "resident": [[0, 2]],
                                                   "evicted": None, **entry}}}


def test_a_recording_keeps_the_kernel_residency_it_carries(tmp_path: Path) -> None:
    """meta.residency well formed: it loads, and kernel_residency reads it back."""
    path = _npz(tmp_path / "r.npz", vpns=np.arange(4, dtype=np.uint64),
                kinds=np.zeros(4, np.uint8), header=_header(meta={"residency": GOOD_RESIDENCY}))
    trace = PageTrace.load(path)
    assert trace.kernel_residency("/bin/x") == {0, 1, 5, 6, 7}
    assert trace.kernel_residency("/bin/y") is None
    assert PageTrace.load(_good(tmp_path / "g.npz")).kernel_residency("/bin/x") is None


@pytest.mark.parametrize(("residency", "says"), [
    ([], "meta.residency [] is not an object"),
    ({**GOOD_RESIDENCY, "extra": 1}, "meta.residency has unknown field 'extra'"),
    ({**GOOD_RESIDENCY, "kernel": 6}, "meta.residency.kernel 6 is not a string"),
    ({**GOOD_RESIDENCY, "files": [1]}, "meta.residency.files [1] is not an object"),
    ({**GOOD_RESIDENCY, "files": {"bin/x": {}}}, "'bin/x']: not an absolute path"),
    ({**GOOD_RESIDENCY, "files": {"/bin/x": {"pages": 1}}}, "is not an object of pages"),
    (_residency(pages=-1), ".pages -1 is not an integer in 0..262144"),
    (_residency(pages=1 << 40), f".pages {1 << 40} is not an integer"),
    (_residency(evicted=9), ".evicted 9 is not null or an integer in 0..8"),
    (_residency(resident="0-2"), ".resident '0-2' is not a list"),
    (_residency(resident=[[0, 9]]), "[0, 9] is not a [start, end) run after 0, within 0..8"),
    (_residency(resident=[[3, 4], [1, 2]]), "[1, 2] is not a [start, end) run after 4"),
    (_residency(resident=[[2, 2]]), "[2, 2] is not a [start, end) run"),
    (_residency(resident=[[0, 1.5]]), "[0, 1.5] is not a [start, end) run"),
])
def test_bad_kernel_residency(tmp_path: Path, residency: object, says: str) -> None:
    """The recorder's kernel residency is checked field by field, named with the value."""
    path = _npz(tmp_path / "r.npz", vpns=np.arange(4, dtype=np.uint64),
                kinds=np.zeros(4, np.uint8), header=_header(meta={"residency": residency}))
    assert_raises(_load(path), TraceFileError, "member header.npy", says)


def test_header_not_json(tmp_path: Path) -> None:
    """A header of bytes that are not UTF-8 JSON."""
    path = _npz(tmp_path / "j.npz", vpns=np.arange(4, dtype=np.uint64),
                kinds=np.zeros(4, np.uint8), header=np.frombuffer(b"\xff{", np.uint8))
    assert_raises(_load(path), TraceFileError, "member header.npy", "not UTF-8 JSON")


def test_limit_is_the_callers(tmp_path: Path) -> None:
    """max_accesses is the caller's to lower (or raise, for a trace they trust)."""
    path = _good(tmp_path / "good.npz", 100)
    assert_raises(_load(path, max_accesses=50), TraceFileError, "100 entries", "50")
    assert len(PageTrace.load(path, max_accesses=100)) == 100


# --- the same checks on traces made in Python -----------------------------------------------

@pytest.mark.parametrize(("column", "values", "says"), [
    ("vpns", [1.0, float("nan")], "vpns: dtype float64 is not an integer type"),
    ("vpns", [5, -1], "vpns: value -1"),
    ("vpns", [[1, 2], [3, 4]], "vpns: shape (2, 2)"),
    ("kinds", [0, 3], "kinds: value 3"),
])
def test_pagetrace_checks_its_columns(column: str, values: object, says: str) -> None:
    """PageTrace(...) refuses what it used to cast silently, naming the column."""
    columns: dict[str, object] = {"vpns": [1, 2], "kinds": [0, 0]}
    columns[column] = values
    if column == "vpns" and np.asarray(values).ndim == 2:
        columns["kinds"] = [[0, 0], [0, 0]]
    with pytest.raises(ParameterError, match=r"PageTrace 't': " + says.replace("(", r"\(")
                       .replace(")", r"\)")):
        PageTrace("t", [], columns["vpns"], columns["kinds"])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["zzz", "rwxx", "R-X", "x--", "rw-q", 7])
def test_prot_parse_refuses_what_is_not_a_prot(text: object) -> None:
    """Prot.parse("zzz") used to mean rwx: now a ParameterError naming the value."""
    with pytest.raises(ParameterError, match=r"prot .* is not like 'r-x'"):
        Prot.parse(text)  # type: ignore[arg-type]
    assert Prot.parse("r-x") == Prot.R | Prot.X and Prot.parse("rw") == Prot.R | Prot.W


# --- trace_image: the image a trace's files come from ---------------------------------------

def _trace(name: str = "t", meta: dict[str, object] | None = None) -> PageTrace:
    return PageTrace(name, [MapSpec(0x400000, 0x2000, "r-x", "/bin/x")],
                     np.array([0x400], np.uint64), np.array([2], np.uint8),
                     {"file_sizes": {"/bin/x": 8192}} if meta is None else meta)


@pytest.mark.parametrize(("meta", "says"), [
    ({"file_sizes": {"/bin/x": 100 * 10**9}}, "adds up to more than"),
    ({}, "meta['file_sizes'] is NoneType"),
    ({"file_sizes": [8192]}, "meta['file_sizes'] is list"),
    ({"file_sizes": {}}, "meta['file_sizes']['/bin/x'] is None"),
    ({"file_sizes": {"/bin/x": -1}}, "meta['file_sizes']['/bin/x'] is -1"),
    ({"file_sizes": {"/bin/x": "big"}}, "meta['file_sizes']['/bin/x'] is 'big'"),
])
def test_trace_image_checks_file_sizes(meta: dict[str, object], says: str) -> None:
    """A claim of 100 GB, a missing or malformed file_sizes: ParameterError naming it
    (was a 93 GiB allocation, a KeyError or an AssertionError)."""
    trace = _trace(meta=meta)
    outcome = bounded("trace_image(trace)",
                      "import numpy as np\n"
                      "from xipmodel.workloads.recorded import trace_image\n"
                      "from xipmodel.workloads.trace import MapSpec, PageTrace\n"
                      f"trace = PageTrace('t', [MapSpec(0x400000, 0x2000, 'r-x', '/bin/x')], "
                      f"np.array([0x400], np.uint64), np.array([2], np.uint8), {meta!r})")
    assert_raises(outcome, ParameterError, "trace_image", says)
    assert trace.files() == ["/bin/x"]


@pytest.mark.parametrize("name", ["python3.11-0123456789abcdef", "bash-25c34e130c60",
                                  "x" * 255, "x" + "é" * 127, ""])
def test_trace_image_of_a_long_name(name: str) -> None:
    """A recorded trace is named after its program and a hash, longer than the 16 bytes of
    an ext2 label (any name up to 255 bytes, or none): the image is named with the first
    16 bytes, never half a character (it used to fail to build)."""
    from xipmodel.workloads.recorded import trace_image

    with trace_image(_trace(name)) as img:
        assert name.encode().startswith(img.volume_name.encode())
        assert len(img.volume_name.encode()) == min(16, len(name.encode())) - (
            1 if name.startswith("xé") else 0)
        assert img.stat("/bin/x").st_size == 8192
