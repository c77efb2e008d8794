"""Page-level traces: what a program run does to memory, replayable in any guest.

A trace is the address space a run built (its mappings, each a file of the
image or anonymous memory) and the page accesses it made, in order, with
consecutive repeats of the same (page, kind) collapsed::

    maps      start        length   prot  path                          offset
              0x555555554000  0x2000  r--   /usr/bin/dash                 0x0
              0x555555556000  0x14000 r-x   /usr/bin/dash                 0x2000
              0x7ffff7dc2000  0x26000 r--   /usr/lib/x86_64-linux-gnu/libc.so.6 ...
              0x7ffffffde000  0x21000 rw-   (anonymous: [stack])
    accesses  vpn (virtual page number), kind (0 read, 1 write, 2 execute), and for
              writes the content written (0: something new; else a content id that
              equals another write's when the bytes are equal, e.g. relocations)

Synthetic workloads (seeded models of a run) and traces recorded from real
programs with valgrind share this one format; `replay` runs either in a guest.
Traces are saved as compressed .npz files (a few hundred KiB at most)::

    trace.npz (a zip archive)
      header.npy     uint8[n]: JSON {"name": str, "maps": [MapSpec fields…], "meta": {…}}
      vpns.npy       uint64[N]  page numbers, each below 2**(64 - PAGE_SHIFT)
      kinds.npy      uint8[N]   0 read, 1 write, 2 execute
      contents.npy   int64[N]   0 or a content id (optional: all 0 when absent)

`PageTrace.load` reads a file it did not write as a hostile one: every member's
.npy header is checked against its stated size and a limit before anything is
allocated, then dtypes, shapes and ranges; a bad file raises `TraceFileError`
naming the file, the member (or header field) and the value.
"""

from __future__ import annotations

import json
import numbers
import os
import re
import stat
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError, TraceFileError
from xipmodel.hostfile import open_regular
from xipmodel.params import PAGE_SHIFT

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct

__all__ = ["ACCESS_KINDS", "ENGINES", "MAX_RESIDENCY_PAGES", "MapSpec", "PageTrace",
           "ReplayResult", "collapse", "replay"]

ACCESS_KINDS: Final = ("r", "w", "x")
READ, WRITE, EXEC = 0, 1, 2
VPN_LIMIT: Final = 1 << (64 - PAGE_SHIFT)  # a page's address must fit in 64 bits
CONTENT_LIMIT: Final = 1 << 63  # content ids are int64
# What PageTrace.load accepts at most (the shipped traces hold about a million accesses);
# `max_accesses` raises the first for a trace you trust.
MAX_TRACE_ACCESSES: Final = 1 << 24
MAX_TRACE_HEADER_BYTES: Final = 16 << 20
# meta.residency describes files of at most 1 GiB (what an image may hold, recorded.py).
MAX_RESIDENCY_PAGES: Final = (1 << 30) >> PAGE_SHIFT
_NPY_HEADER_MAX: Final = 10_000  # numpy's own limit on a .npy header


@dataclass(frozen=True)
class MapSpec:
    """One mapping of the run: [start, start + length) with `prot`, from `path` at `offset`."""

    start: int
    length: int
    prot: str  # "r-x", "rw-", ...
    path: str | None = None  # a file of the image, or None for anonymous memory
    offset: int = 0
    name: str = ""  # [heap], [stack], .bss, ...
    shared: bool = False


def collapse(vpns: npt.ArrayLike, kinds: npt.ArrayLike) -> tuple[npt.NDArray[np.uint64],
                                                                 npt.NDArray[np.uint8]]:
    """Drop consecutive repeats of the same (page, kind)."""
    v = np.asarray(vpns, dtype=np.uint64)
    k = np.asarray(kinds, dtype=np.uint8)
    if v.size == 0:
        return v, k
    keep = np.ones(v.size, dtype=bool)
    keep[1:] = (v[1:] != v[:-1]) | (k[1:] != k[:-1])
    return v[keep], k[keep]


@dataclass
class PageTrace:
    """A program run at page granularity: its mappings and its accesses."""

    name: str
    maps: list[MapSpec]
    vpns: npt.NDArray[np.uint64]
    kinds: npt.NDArray[np.uint8]
    meta: dict[str, object] = field(default_factory=dict)
    contents: npt.NDArray[np.int64] | None = None  # per access; 0 = fresh content

    def __post_init__(self) -> None:
        """Check the columns (one dimension, integers, in range) before converting them.

        A float, negative or out-of-range value is an error, not silently cast.
        """
        who = f"PageTrace {self.name!r}"
        self.vpns = _column(self.vpns, np.uint64, VPN_LIMIT, f"{who}: vpns")
        self.kinds = _column(self.kinds, np.uint8, EXEC + 1, f"{who}: kinds",
                             "is not 0 (read), 1 (write) or 2 (execute)")
        if self.contents is None:
            self.contents = np.zeros(self.vpns.size, dtype=np.int64)
        self.contents = _column(self.contents, np.int64, CONTENT_LIMIT, f"{who}: contents")
        if not self.vpns.shape == self.kinds.shape == self.contents.shape:
            raise ParameterError(
                f"{who}: {self.vpns.size} pages, {self.kinds.size} kinds "
                f"and {self.contents.size} contents")

    def __len__(self) -> int:
        return int(self.vpns.size)

    def first_touches(self) -> PageTrace:
        """The trace with only the first access of each (page, kind), in order.

        Without memory pressure a repeated access finds its PTE present and faults no more:
        host memory, faults and disk reads equal the full trace's (TLB counts do not), and
        a replay is about a hundred times faster.
        """
        assert self.contents is not None
        key = self.vpns * np.uint64(len(ACCESS_KINDS)) + self.kinds.astype(np.uint64)
        _, first = np.unique(key, return_index=True)
        first.sort()
        return PageTrace(self.name, self.maps, self.vpns[first], self.kinds[first],
                         dict(self.meta), self.contents[first])

    def files(self) -> list[str]:
        """The image files the run mapped."""
        return sorted({m.path for m in self.maps if m.path})

    def kernel_residency(self, path: str) -> frozenset[int] | None:
        """The pages of `path` the kernel cached after the recorded run (None: not saved).

        See record.recorded_residency for what that truth includes.
        """
        residency = self.meta.get("residency")
        files = residency.get("files") if isinstance(residency, dict) else None
        entry = files.get(path) if isinstance(files, dict) else None
        if not isinstance(entry, dict):
            return None
        return frozenset(p for start, end in entry["resident"] for p in range(start, end))

    def accesses(self) -> Iterator[tuple[int, str, int]]:
        """(address, "r"/"w"/"x", content) for every access, in order."""
        assert self.contents is not None
        for vpn, kind, content in zip(self.vpns.tolist(), self.kinds.tolist(),
                                      self.contents.tolist(), strict=True):
            yield vpn << PAGE_SHIFT, ACCESS_KINDS[kind], content

    # --- files ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the trace as a compressed .npz file."""
        assert self.contents is not None  # __post_init__ fills it
        header = json.dumps({"name": self.name, "maps": [asdict(m) for m in self.maps],
                             "meta": self.meta})
        np.savez_compressed(path, vpns=self.vpns, kinds=self.kinds, contents=self.contents,
                            header=np.frombuffer(header.encode(), dtype=np.uint8))

    @classmethod
    def load(cls, path: str | os.PathLike[str], *,
             max_accesses: int = MAX_TRACE_ACCESSES) -> PageTrace:
        """Read a trace written by `save`; anything else raises TraceFileError.

        The file must be a regular file (not a FIFO or device) holding the members drawn
        at the top; no member may claim more than `max_accesses` entries, and nothing is
        allocated before its size has been checked against the archive and that limit.
        """
        shown = os.fspath(path)
        try:
            with _open_regular(shown) as raw, zipfile.ZipFile(raw) as archive:
                reader = _NpzReader(archive, shown, max_accesses)
                header = reader.header()
                vpns = reader.column("vpns")
                kinds = reader.column("kinds", vpns.size)
                contents = (reader.column("contents", vpns.size)
                            if "contents.npy" in reader.members else None)
        except TraceFileError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
                NotImplementedError, UnicodeDecodeError) as exc:
            # A truncated or damaged archive, a bad deflate stream, a CRC mismatch, an
            # unsupported compression method, a member name flagged UTF-8 that is not.
            raise TraceFileError(f"PageTrace.load: {shown}: not a readable .npz archive "
                                 f"({type(exc).__name__}: {exc})") from exc
        except OSError as exc:
            raise TraceFileError(f"PageTrace.load: {shown}: {exc.strerror or exc}") from exc
        name, maps, meta = header
        try:
            return cls(name, maps, vpns, kinds, meta, contents)
        except ParameterError as exc:
            raise TraceFileError(f"PageTrace.load: {shown}: {exc}") from exc


def _column(values: npt.ArrayLike, dtype: type[np.generic], limit: int, what: str,
            meaning: str = "") -> npt.NDArray[Any]:
    """`values` as a 1-D array of `dtype`, if they are integers in [0, limit)."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ParameterError(f"{what}: shape {array.shape} is not one-dimensional")
    if array.size == 0:
        return np.zeros(0, dtype=dtype)
    if array.dtype.kind not in "iu":
        raise ParameterError(f"{what}: dtype {array.dtype} is not an integer type")
    low, high = int(array.min()), int(array.max())
    if low < 0 or high >= limit:
        bad = low if low < 0 else high
        raise ParameterError(f"{what}: value {bad} " + (meaning or f"is not in 0..{limit - 1}"))
    return array.astype(dtype, copy=False)


def _open_regular(path: str) -> IO[bytes]:
    """`path` opened for reading if it is a regular file; a FIFO or device is refused."""

    def refuse(mode: int) -> Exception:
        kind = "a directory" if stat.S_ISDIR(mode) else f"not a regular file (mode 0o{mode:o})"
        return TraceFileError(f"PageTrace.load: {path}: is {kind}")

    return open_regular(path, refuse)


class _NpzReader:
    """The members of a trace archive, each checked before it is read (see PageTrace.load)."""

    _DTYPES: Final[dict[str, tuple[type[np.generic], int, str]]] = {
                      "vpns": (np.uint64, VPN_LIMIT, ""),
                      "kinds": (np.uint8, EXEC + 1, "is not 0 (read), 1 (write) or 2 (execute)"),
                      "contents": (np.int64, CONTENT_LIMIT, "")}

    def __init__(self, archive: zipfile.ZipFile, shown: str, max_accesses: int) -> None:
        self.archive = archive
        self.shown = shown
        self.max_accesses = max_accesses
        self.members = {info.filename: info for info in archive.infolist()}

    def _error(self, member: str, what: str) -> TraceFileError:
        return TraceFileError(f"PageTrace.load: {self.shown}: member {member}: {what}")

    def _array(self, name: str, max_items: int, required: bool, only: str | None = None
               ) -> tuple[npt.NDArray[Any] | None, str]:
        """The 1-D integer array in `name`.npy (of dtype `only` if given); None if absent.

        Its .npy header is checked first: dtype, shape, and size against the member's
        size in the archive and `max_items`, so a lying header allocates nothing.
        """
        member = f"{name}.npy"
        info = self.members.get(member)
        if info is None:
            if required:
                raise TraceFileError(f"PageTrace.load: {self.shown}: no member {member}: "
                                     f"not a page trace")
            return None, member
        if info.file_size > _NPY_HEADER_MAX + 16 + max_items * 8:
            raise self._error(member, f"{info.file_size} bytes uncompressed, more than "
                                      f"{max_items} entries need (the limit, PageTrace.load's "
                                      f"max_accesses)")
        if info.flag_bits & 0x1:  # zipfile would ask for a password (a RuntimeError)
            raise self._error(member, "encrypted (general purpose flag bit 0 set)")
        try:
            with self.archive.open(info) as stream:
                assert isinstance(stream, zipfile.ZipExtFile)
                return self._read_npy(stream, info, member, max_items, only), member
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError,
                UnicodeDecodeError) as exc:
            raise self._error(member, f"damaged ({type(exc).__name__}: {exc})") from exc

    def _read_npy(self, stream: zipfile.ZipExtFile, info: zipfile.ZipInfo, member: str,
                  max_items: int, only: str | None) -> npt.NDArray[Any]:
        """The array of one open member (see _array)."""
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"format version {version} is not 1.0 or 2.0")
        except (ValueError, TypeError, SyntaxError, KeyError, tokenize.TokenError) as exc:
            # numpy parses the header's dict with tokenize and ast: either may object.
            raise self._error(member, f"not a .npy array ({type(exc).__name__}: {exc})"
                              ) from exc
        if dtype.hasobject or dtype.kind not in "iu" or dtype.itemsize > 8:
            raise self._error(member, f"dtype {dtype} is not an integer type")
        if only is not None and dtype != np.dtype(only):
            raise self._error(member, f"dtype {dtype} is not {only}")
        if len(shape) != 1:
            raise self._error(member, f"shape {shape} is not one-dimensional")
        count = shape[0]
        if count > max_items:
            raise self._error(member, f"{count} entries, more than the limit "
                                      f"{max_items} (PageTrace.load's max_accesses)")
        size = count * dtype.itemsize
        at = stream.tell()
        if at + size != info.file_size:
            raise self._error(member, f"its header says {count} entries of {dtype} "
                                      f"({size} bytes after a {at}-byte header), but "
                                      f"the member holds {info.file_size} bytes")
        array = np.empty(count, dtype=dtype)  # justified: checked against the limit
        view = memoryview(array.data).cast("B")
        got = 0
        while got < size:
            n = stream.readinto(view[got:])
            if not n:
                break
            got += n
        if got != size or stream.read(1):  # reading to the end checks the CRC
            raise self._error(member, f"holds {got} of the {size} bytes its header says")
        return array

    def header(self) -> tuple[str, list[MapSpec], dict[str, object]]:
        """header.npy: the JSON of the name, the maps and meta, each field checked."""
        raw, member = self._array("header", MAX_TRACE_HEADER_BYTES, required=True,
                                  only="uint8")
        assert raw is not None
        try:
            header = json.loads(raw.tobytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._error(member, f"not UTF-8 JSON ({exc})") from exc
        if not isinstance(header, dict):
            raise self._error(member, f"a JSON {type(header).__name__}, not an object")
        name = header.get("name")
        if not isinstance(name, str):
            raise self._error(member, f"name {name!r} is not a string")
        maps = header.get("maps")
        if not isinstance(maps, list):
            raise self._error(member, f"maps {_short(maps)} is not a list")
        meta = header.get("meta", {})
        if not isinstance(meta, dict):
            raise self._error(member, f"meta {_short(meta)} is not an object")
        if "residency" in meta:
            self._residency(member, meta["residency"])
        return name, [self._map(member, i, m) for i, m in enumerate(maps)], meta

    def _map(self, member: str, i: int, m: object) -> MapSpec:
        """maps[i] as a MapSpec: known fields, of the right types, in range."""
        where = f"maps[{i}]"
        if not isinstance(m, dict):
            raise self._error(member, f"{where} {_short(m)} is not an object")
        known = {f.name for f in fields(MapSpec)}
        unknown = sorted(set(m) - known)
        if unknown:
            raise self._error(member, f"{where} has unknown field {unknown[0]!r}")
        for key in ("start", "length", "prot"):
            if key not in m:
                raise self._error(member, f"{where} has no {key}")
        for key in ("start", "length", "offset"):
            value = m.get(key, 0)
            if not _is_int(value) or not 0 <= value < 1 << 64:
                raise self._error(member, f"{where}.{key} {_short(value)} is not an integer "
                                          f"in 0..2**64-1")
        mask = (1 << PAGE_SHIFT) - 1
        if m["start"] & mask or m.get("offset", 0) & mask or m["length"] <= 0 or \
                m["start"] + m["length"] > 1 << 64:
            raise self._error(member, f"{where}: start {m['start']:#x}, length "
                                      f"{m['length']:#x}, offset {m.get('offset', 0):#x}: "
                                      f"not a page-aligned, non-empty range below 2**64")
        prot = m["prot"]
        if not isinstance(prot, str) or not _PROT_TEXT.fullmatch(prot):
            raise self._error(member, f"{where}.prot {_short(prot)} is not like 'r-x' "
                                      f"(r or -, w or -, x or -)")
        path = m.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise self._error(member, f"{where}.path {_short(path)} is not an absolute path")
        if not isinstance(m.get("name", ""), str):
            raise self._error(member, f"{where}.name {_short(m['name'])} is not a string")
        if not isinstance(m.get("shared", False), bool):
            raise self._error(member, f"{where}.shared {_short(m['shared'])} is not a boolean")
        return MapSpec(**m)

    def _residency(self, member: str, value: object) -> None:
        """meta.residency (the recorder's kernel page cache after the run): well formed.

        {"after": str, "kernel": str, "files": {absolute path: {"pages": n, "resident":
        [[start, end), ...] sorted, disjoint, within 0..n, "evicted": int or null}}} or,
        instead of "files", "error": str.
        """
        where = "meta.residency"
        if not isinstance(value, dict):
            raise self._error(member, f"{where} {_short(value)} is not an object")
        for key, item in value.items():
            if key not in ("after", "kernel", "error", "files"):
                raise self._error(member, f"{where} has unknown field {key!r}")
            if key != "files" and not isinstance(item, str):
                raise self._error(member, f"{where}.{key} {_short(item)} is not a string")
        files = value.get("files", {})
        if not isinstance(files, dict):
            raise self._error(member, f"{where}.files {_short(files)} is not an object")
        for path, entry in files.items():
            at = f"{where}.files[{_short(path)}]"
            if not path.startswith("/"):
                raise self._error(member, f"{at}: not an absolute path")
            if not isinstance(entry, dict) or set(entry) != {"pages", "resident", "evicted"}:
                raise self._error(member, f"{at} {_short(entry)} is not an object of pages, "
                                          f"resident and evicted")
            pages, resident, evicted = entry["pages"], entry["resident"], entry["evicted"]
            if not _is_int(pages) or not 0 <= pages <= MAX_RESIDENCY_PAGES:
                raise self._error(member, f"{at}.pages {_short(pages)} is not an integer in "
                                          f"0..{MAX_RESIDENCY_PAGES}")
            if evicted is not None and (not _is_int(evicted) or not 0 <= evicted <= pages):
                raise self._error(member, f"{at}.evicted {_short(evicted)} is not null or "
                                          f"an integer in 0..{pages}")
            if not isinstance(resident, list):
                raise self._error(member, f"{at}.resident {_short(resident)} is not a list")
            end = 0
            for run in resident:
                if not (isinstance(run, list) and len(run) == 2 and all(map(_is_int, run))
                        and end <= run[0] < run[1] <= pages):
                    raise self._error(member, f"{at}.resident: {_short(run)} is not a "
                                              f"[start, end) run after {end}, within "
                                              f"0..{pages}")
                end = run[1]

    def column(self, name: str, count: int | None = None) -> npt.NDArray[Any]:
        """The access column `name` as its dtype, checked for range and for `count` entries."""
        array, member = self._array(name, self.max_accesses, required=True)
        assert array is not None
        dtype, limit, meaning = self._DTYPES[name]
        if count is not None and array.size != count:
            raise self._error(member, f"{array.size} entries, but vpns.npy has {count}")
        try:
            return _column(array, dtype, limit, "values", meaning)
        except ParameterError as exc:
            raise self._error(member, str(exc).removeprefix("values: ")) from exc


_PROT_TEXT: Final = re.compile(r"[r-][w-][x-]")


def _is_int(value: object) -> bool:
    """An integer that is not a bool (JSON true is not 1 here)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _short(value: object) -> str:
    """repr(value), cut to 60 characters for a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class ReplayResult:
    """What replaying a trace did: accesses made and those that failed (by VM_FAULT flags)."""

    accesses: int = 0
    sigsegv: int = 0
    sigbus: int = 0
    oom: int = 0


ENGINES: Final = ("fast", "reference")


def replay(guest: Guest, trace: PageTrace, mm: MmStruct | None = None, *,
           engine: str = "fast") -> tuple[MmStruct | None, ReplayResult]:
    """Run `trace` in `guest`: map its files from the guest's image, then make its accesses.

    A write stores the trace's content id for it, or fresh content where that is 0.
    Without `mm`, a new process runs it; if the guest cannot fork one (out of memory),
    nothing runs and the result counts one OOM.

    `engine`: "reference" calls Guest.access once per access (the path to step
    through); "fast" (mm/bulk.py) handles runs of TLB hits in bulk and leaves every
    counter, frame and TLB entry exactly as "reference" would. Where it could not
    (event listeners, a textbook page-cache policy, see bulk.exact_for) "fast" is
    the reference loop.
    """
    from xipmodel.mm import bulk
    from xipmodel.mm.memory import VM_FAULT_OOM, VM_FAULT_SIGBUS, VM_FAULT_SIGSEGV

    if engine not in ENGINES:
        raise ParameterError(f"replay: engine {engine!r} is not one of {', '.join(ENGINES)}")
    if mm is None:
        mm = guest.new_process(trace.name)
        if mm is None:
            return None, ReplayResult(oom=1)
        for m in trace.maps:
            guest.mmap(mm, m.start, m.length, m.prot, path=m.path, offset=m.offset,
                       shared=m.shared, name=m.name)
    result = ReplayResult()
    if engine == "fast" and bulk.exact_for(guest):
        assert trace.contents is not None
        failed = bulk.access_many(guest, mm, trace.vpns, trace.kinds, trace.contents)
    else:
        access = guest.access
        failed = [flags for address, kind, content in trace.accesses()
                  if (flags := access(mm, address, kind, content or None))]
    for flags in failed:
        result.sigsegv += bool(flags & VM_FAULT_SIGSEGV)
        result.sigbus += bool(flags & VM_FAULT_SIGBUS)
        result.oom += bool(flags & VM_FAULT_OOM)
    result.accesses += len(trace)
    return mm, result
