"""Record a real program with valgrind's lackey and turn the run into a page-level trace.

    valgrind --tool=lackey --trace-mem=yes --trace-syscalls=yes -d --vgdb=no
             --child-silent-after-fork=yes --log-fd=PIPE  PROG ARGS

What each part of valgrind's output tells the recorder::

    lackey, on the pipe        I  04001c30,3        instruction fetch → execute
                                L 1ffefffd58,8      load              → read
                                S 1ffefffd50,8      store             → write
                                M 0004a1a018,4      modify            → read, then write
    --trace-syscalls, same     SYSCALL[pid,tid](9) sys_mmap ( addr, len, prot, flags, fd, off )
      pipe, in program order     --> [pre-success] Success(0x4845000)
                               sys_openat ( dirfd, 0x…(PATH), flags ) → which file an fd is
                               sys_munmap, sys_mprotect, sys_mremap, sys_brk, close, dup…
    -d, on standard error      aspacem's segment table at client startup and at shutdown:
                                 "file 0000108000-0000109fff 8192 r---- … o=0 (1,49)"
                               lowercase segments are the client's, uppercase valgrind's
                               own (its core and tool, its heap and stacks); RSVN are
                               reservations. The startup table is the only place that says
                               where valgrind's loader put the main binary, ld.so, the stack
                               and the brk segment (none of that goes through a syscall).

The recorder replays the syscalls over the startup layout, so every access is
attributed to the mapping that held its page at that moment: a file and page
offset, or anonymous memory. Accesses valgrind makes on its own behalf are
dropped: those in its own segments, in its preloaded objects (vgpreload_*.so,
under its library directory) and in the trampoline page of its tool binary where
it redirects a few of ld.so's string functions.

The trace's maps are the run's final layout (checked against aspacem's shutdown
table), with two adjustments so that a replay of the trace faults exactly where
the run could run:

* a map's `prot` also allows what the run did to it before a later mprotect
  (ld.so writes relocations into RELRO before making it read-only);
* pages of a mapping that was unmapped or replaced before exit (a different file
  or offset at the same address) go to a map of their own: in place if that
  range is free at exit, else moved above the layout ("(unmapped before exit)").

Not modelled: an access that straddles two pages counts on both, the rest of
its bytes are ignored; only the main process is recorded (a forked child is
silenced, an exec'd one runs without valgrind); stack growth is the stack's
final extent from the start.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import math
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError, XipModelError
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE
from xipmodel.workloads.trace import (
    EXEC,
    MAX_RESIDENCY_PAGES,
    READ,
    WRITE,
    MapSpec,
    PageTrace,
    collapse,
)

__all__ = [
    "VALGRIND_OPTIONS",
    "RecordError",
    "debian_packages",
    "main_record",
    "parse_valgrind_run",
    "record",
    "recorded_residency",
    "valgrind_version",
]

VALGRIND_OPTIONS: Final = (
    "--tool=lackey",
    "--trace-mem=yes",
    "--trace-syscalls=yes",
    "-d",  # aspacem's segment tables (and a few debug lines) on standard error
    "--vgdb=no",  # no gdbserver pipes and shared memory in /tmp
    "--child-silent-after-fork=yes",  # a forked child must not write into our pipe
)
CHUNK_BYTES: Final = 16 << 20  # lackey text parsed at once
ANON_NAME: Final = "[anon]"
GHOST_NAME: Final = "(unmapped before exit)"
GHOST_BASE: Final = 0x7E00_0000_0000  # where replaced mappings move when their range is taken

Driver = Callable[["subprocess.Popen[bytes]"], None]


class RecordError(XipModelError, RuntimeError):
    """Recording failed: valgrind is missing, the program did not run, or its log is unreadable."""


# --- lackey's memory trace, decoded in bulk ------------------------------------------------

_HEX = np.full(256, 0, dtype=np.uint64)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i
_ADDR_WIDTH: Final = 16  # lackey prints at least 8 and at most 16 hex digits
_SIZE_WIDTH: Final = 4


@dataclass
class _LackeyStream:
    """Decode lackey's output chunk by chunk into page accesses, split at each syscall line.

    `pieces[e]` holds the (collapsed) accesses made between syscall line e-1 and
    syscall line e; `syscalls[e]` is syscall line e.
    """

    pieces: list[list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]]]] = field(
        default_factory=lambda: [[]])
    syscalls: list[str] = field(default_factory=list)
    references: int = 0  # I, L, S and M lines
    page_accesses: int = 0  # after splitting M and page-straddling accesses
    _rest: bytes = b""

    def feed(self, data: bytes) -> None:
        buf = self._rest + data
        cut = buf.rfind(b"\n") + 1
        self._rest = buf[cut:]
        if cut:
            self._decode(buf[:cut])

    def finish(self) -> None:
        if self._rest:
            self._decode(self._rest + b"\n")
            self._rest = b""

    def _decode(self, chunk: bytes) -> None:
        """Decode whole lines: trace lines in numpy, syscall lines one by one."""
        n = len(chunk)
        a = np.frombuffer(chunk + b"\n" * (_ADDR_WIDTH + _SIZE_WIDTH + 4), dtype=np.uint8)
        nl = np.flatnonzero(a[:n] == 10)
        starts = np.empty_like(nl)
        starts[0] = 0
        starts[1:] = nl[:-1] + 1
        c0, c1, c2 = a[starts], a[starts + 1], a[starts + 2]
        is_i = (c0 == ord("I")) & (c1 == 32) & (c2 == 32)
        is_m = (c0 == 32) & (c1 == ord("M")) & (c2 == 32)
        is_d = (c0 == 32) & ((c1 == ord("L")) | (c1 == ord("S"))) & (c2 == 32)
        traced = is_i | is_m | is_d
        # Address: hex digits from column 3 up to the comma; size: decimal up to the newline.
        first = starts[traced] + 3
        win = a[first[:, None] + np.arange(_ADDR_WIDTH + 1)]
        ndig = np.argmax(win == ord(","), axis=1)
        address = np.zeros(first.size, dtype=np.uint64)
        digits = _HEX[win[:, :_ADDR_WIDTH]]
        for j in range(_ADDR_WIDTH):
            address = np.where(j < ndig, address * np.uint64(16) + digits[:, j], address)
        swin = a[(first + ndig + 1)[:, None] + np.arange(_SIZE_WIDTH)]
        size = np.zeros(first.size, dtype=np.uint64)
        more = np.ones(first.size, dtype=bool)
        for j in range(_SIZE_WIDTH):
            d = swin[:, j]
            more &= (d >= 48) & (d <= 57)
            size = np.where(more, size * np.uint64(10) + (d.astype(np.uint64) - np.uint64(48)) *
                            more, size)
        size = np.maximum(size, np.uint64(1))
        kind = np.where(is_i[traced], EXEC, np.where(c1[traced] == ord("S"), WRITE, READ))
        # M → a read then a write of the same bytes.
        twice = is_m[traced]
        row = np.repeat(np.arange(first.size), 1 + twice.astype(np.int64))
        second = np.zeros(row.size, dtype=bool)
        second[1:] = row[1:] == row[:-1]
        kind = np.where(second, WRITE, kind[row]).astype(np.uint8)
        page = address[row] >> np.uint64(PAGE_SHIFT)
        last = (address[row] + size[row] - np.uint64(1)) >> np.uint64(PAGE_SHIFT)
        # An access that straddles a page boundary touches both pages.
        split = last != page
        row2 = np.repeat(np.arange(row.size), 1 + split.astype(np.int64))
        tail = np.zeros(row2.size, dtype=bool)
        tail[1:] = row2[1:] == row2[:-1]
        vpns = np.where(tail, last[row2], page[row2])
        kinds = kind[row2]
        self.references += int(first.size)
        self.page_accesses += int(vpns.size)
        # Where each syscall line falls in the access stream.
        sys_lines = np.flatnonzero(~traced & (c0 == ord("S")))
        if sys_lines.size == 0:
            self._append(vpns, kinds)
            return
        # Accesses each trace line became.
        per_row = np.bincount(row, weights=1 + split.astype(np.int64),
                              minlength=first.size).astype(np.int64)
        cum_rows = np.cumsum(traced)  # trace lines before (and at) each line
        cum_acc = np.concatenate([[0], np.cumsum(per_row)])
        at = 0
        for line in sys_lines.tolist():
            pos = int(cum_acc[cum_rows[line]])
            self._append(vpns[at:pos], kinds[at:pos])
            at = pos
            self.syscalls.append(chunk[starts[line]:nl[line]].decode("utf-8", "replace"))
            self.pieces.append([])
        self._append(vpns[at:], kinds[at:])

    def _append(self, vpns: npt.NDArray[np.uint64], kinds: npt.NDArray[np.uint8]) -> None:
        if vpns.size:
            self.pieces[-1].append(collapse(vpns, kinds))

    def piece(self, e: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint8]]:
        parts = self.pieces[e]
        if not parts:
            return np.zeros(0, np.uint64), np.zeros(0, np.uint8)
        return collapse(np.concatenate([p[0] for p in parts]),
                        np.concatenate([p[1] for p in parts]))


# --- aspacem's segment tables (-d, standard error) ----------------------------------------

@dataclass(frozen=True)
class _Segment:
    """One line of aspacem's table: [start, end) in bytes."""

    kind: str  # file / anon (the client's), FILE / ANON (valgrind's), RSVN, SHMC, ...
    start: int
    end: int
    prot: str
    path: str | None
    offset: int


@dataclass
class _Aspacem:
    """What valgrind's -d output says about the run (one process: the main one)."""

    startup: list[_Segment] = field(default_factory=list)
    shutdown: list[_Segment] = field(default_factory=list)
    libdir: str = "/usr/libexec/valgrind"
    stack_top: int = 0  # cls_end: the last byte of the client's stack


_DEBUG_RE = re.compile(r"--(\d+):\d+:\s*(\S+) (.*)")
_NAME_RE = re.compile(r"\((\d+),\d+,\d+\) (.*)")
_SEG_RE = re.compile(
    r"\s*\d+: (\w{4}|    ) ([0-9a-f]+)-([0-9a-f]+)\s+\S+\s*([-rwxTH]{5})?(.*)")


def _parse_aspacem(text: str, pid: int) -> _Aspacem:
    """The startup and shutdown tables, valgrind's library directory and the stack's top."""
    out = _Aspacem()
    table: list[_Segment] | None = None
    names: dict[int, str] = {}
    for raw in text.splitlines():
        m = _DEBUG_RE.search(raw)
        if m is None or int(m[1]) != pid:
            continue
        who, line = m[2], m[3]
        if who == "main" and line.startswith("VG_(libdir) = "):
            out.libdir = line.split("= ", 1)[1].strip()
        elif who == "sched" and "cls_end=" in line:
            out.stack_top = int(line.split("cls_end=")[1].split(",")[0], 16)
        if who != "aspacem":
            continue
        if line.startswith("<<< SHOW_SEGMENTS"):
            table = out.startup if "client startup" in line else out.shutdown
            names = {}
        elif line.startswith(">>>"):
            table = None
        elif table is not None:
            nm = _NAME_RE.match(line)
            if nm:
                names[int(nm[1])] = nm[2]
                continue
            sm = _SEG_RE.match(line)
            if sm and sm[1].strip():
                rest = sm[5]
                om = re.search(r"o=(\d+)\s+\((\d+),", rest)
                path = names.get(int(om[2])) if om else None
                table.append(_Segment(sm[1], int(sm[2], 16), int(sm[3], 16) + 1,
                                      (sm[4] or "---")[:3], path, int(om[1]) if om else 0))
    return out


# --- the address space, replayed from the syscalls ------------------------------------------

@dataclass(eq=False)
class _Region:
    """What one mmap (or valgrind's loader) put in the address space: a file or anonymous.

    The file page behind `vpn` is `vpn + delta`; mprotect splits keep the region.
    """

    path: str | None
    delta: int
    name: str
    shared: bool = False
    valgrind: bool = False
    rid: int = 0

    def attribution(self, vpn: int) -> tuple[str, int] | None:
        return (self.path, vpn + self.delta) if self.path is not None else None


@dataclass
class _Layout:
    """Non-overlapping intervals [start, end) of pages, sorted, each with its region and prot."""

    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    regions: list[_Region] = field(default_factory=list)
    prots: list[str] = field(default_factory=list)
    version: int = 0

    def _cut(self, start: int, end: int) -> None:
        """Split intervals so that `start` and `end` are boundaries."""
        for at in (start, end):
            for i, (s, e) in enumerate(zip(self.starts, self.ends, strict=True)):
                if s < at < e:
                    self.starts.insert(i + 1, at)
                    self.ends.insert(i, at)
                    self.regions.insert(i + 1, self.regions[i])
                    self.prots.insert(i + 1, self.prots[i])
                    break

    def unmap(self, start: int, end: int) -> None:
        self._cut(start, end)
        keep = [i for i, (s, e) in enumerate(zip(self.starts, self.ends, strict=True))
                if e <= start or s >= end]
        self.starts = [self.starts[i] for i in keep]
        self.ends = [self.ends[i] for i in keep]
        self.regions = [self.regions[i] for i in keep]
        self.prots = [self.prots[i] for i in keep]
        self.version += 1

    def map(self, start: int, end: int, region: _Region, prot: str) -> None:
        self.unmap(start, end)
        i = sum(1 for s in self.starts if s < start)
        self.starts.insert(i, start)
        self.ends.insert(i, end)
        self.regions.insert(i, region)
        self.prots.insert(i, prot)

    def protect(self, start: int, end: int, prot: str) -> None:
        self._cut(start, end)
        for i, (s, e) in enumerate(zip(self.starts, self.ends, strict=True)):
            if s >= start and e <= end:
                self.prots[i] = prot
        self.version += 1

    def pieces(self, start: int, end: int) -> list[tuple[int, int, _Region, str]]:
        return [(max(s, start), min(e, end), r, p) for s, e, r, p in
                zip(self.starts, self.ends, self.regions, self.prots, strict=True)
                if s < end and e > start]

    def region_at(self, vpn: int) -> _Region | None:
        for s, e, r in zip(self.starts, self.ends, self.regions, strict=True):
            if s <= vpn < e:
                return r
        return None

    def lookup(self, vpns: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
        """Index of the interval holding each page, -1 where none does."""
        starts = np.asarray(self.starts, dtype=np.uint64)
        ends = np.asarray(self.ends, dtype=np.uint64)
        idx = np.searchsorted(starts, vpns, side="right").astype(np.int64) - 1
        ok = idx >= 0
        ok[ok] = vpns[ok] < ends[idx[ok]]
        return np.where(ok, idx, -1)


def _prot(value: int) -> str:
    return ("r" if value & 1 else "-") + ("w" if value & 2 else "-") + ("x" if value & 4 else "-")


def _sarg(text: str) -> int:
    """A syscall argument as valgrind prints it (hex, or a 32-bit unsigned -1 for fds)."""
    v = int(text, 0)
    return v - (1 << 32) if (1 << 31) <= v < (1 << 32) else v


_SYSCALL_RE = re.compile(r"SYSCALL\[(\d+),(\d+)\]\(\d+\) (.*)")
_RESULT_RE = re.compile(r"Success\(0x([0-9a-f]+)\)")
_PATH_ARG_RE = re.compile(r"0x[0-9a-f]+\((.*)\)")
MAP_SHARED, MAP_ANONYMOUS = 0x01, 0x20
F_DUPFD, F_DUPFD_CLOEXEC = 0, 1030


def _page_up(n: int) -> int:
    return (n + PAGE_SIZE - 1) >> PAGE_SHIFT


@dataclass
class _Replayer:
    """Replays the run's syscalls over the startup layout; attributes accesses as they come."""

    aspacem: _Aspacem
    cwd: str
    layout: _Layout = field(default_factory=_Layout)
    fds: dict[int, str] = field(default_factory=dict)
    pending: dict[int, tuple[str, str]] = field(default_factory=dict)
    regions: list[_Region] = field(default_factory=list)
    brk_base: int = -1
    brk_end: int = -1  # in pages: the heap is [brk_base, brk_end)
    heap: _Region | None = None
    unknown_fd_maps: int = 0

    def new_region(self, path: str | None, delta: int, name: str, shared: bool = False,
                   valgrind: bool = False) -> _Region:
        if path is not None and (self.is_valgrind(path)):
            valgrind = True
        r = _Region(path, delta, name, shared, valgrind, len(self.regions))
        self.regions.append(r)
        return r

    def is_valgrind(self, path: str) -> bool:
        return path.startswith(self.aspacem.libdir.rstrip("/") + "/")

    def start(self) -> None:
        """The layout valgrind's loader built: main binary, ld.so, stack, brk, its own parts."""
        top = self.aspacem.stack_top
        stack_lo = min((s.start for s in self.aspacem.startup + self.aspacem.shutdown
                        if s.kind == "anon" and s.start <= top < s.end), default=top)
        for seg in self.aspacem.startup:
            if seg.kind not in ("file", "anon", "FILE", "ANON"):
                continue
            lo, hi = seg.start >> PAGE_SHIFT, _page_up(seg.end)
            mine = seg.kind.isupper()
            if seg.kind.lower() == "file" and seg.path is not None:
                path = os.path.realpath(seg.path)
                region = self.new_region(path, (seg.offset >> PAGE_SHIFT) - lo, "",
                                         valgrind=mine)
            elif seg.start <= top < seg.end:
                lo = stack_lo >> PAGE_SHIFT
                region = self.new_region(None, 0, "[stack]", valgrind=mine)
            else:
                region = self.new_region(None, 0, ANON_NAME, valgrind=mine)
            self.layout.map(lo, hi, region, seg.prot)

    def syscall(self, line: str) -> None:
        m = _SYSCALL_RE.match(line)
        if m is None:
            return
        tid, rest = int(m[2]), m[3]
        if rest.startswith("... [async] --> "):
            call = self.pending.pop(tid, None)
            res = _RESULT_RE.search(rest)
            if call is not None:
                self.complete(call[0], call[1], int(res[1], 16) if res else None)
            return
        cut = rest.rfind("--> ")
        if cut < 0:
            return
        left, right = rest[:cut], rest[cut + 4:]
        name = left.split(" ", 1)[0]
        args = left[left.find("( ") + 2: left.rfind(" )")] if "( " in left else ""
        if right.startswith("[async] ..."):
            self.pending[tid] = (name, args)
            return
        res = _RESULT_RE.search(right)
        self.complete(name, args, int(res[1], 16) if res else None)

    def complete(self, name: str, args: str, result: int | None) -> None:
        """Apply one finished syscall to the layout and the fd table (failures change nothing)."""
        if result is None:
            return
        if name in ("sys_openat", "sys_open", "sys_creat", "sys_openat2"):
            pm = _PATH_ARG_RE.search(args)
            if pm is None:
                return
            path = pm[1]
            base = self.cwd
            if name in ("sys_openat", "sys_openat2"):
                dirfd = _sarg(args.split(",", 1)[0])
                if dirfd != -100:
                    base = self.fds.get(dirfd, self.cwd)
            self.fds[result] = os.path.realpath(os.path.join(base, path))
            return
        a = [s.strip() for s in args.split(",")] if args else []
        try:
            if name == "sys_close":
                self.fds.pop(_sarg(a[0]), None)
            elif name in ("sys_dup", "sys_dup2", "sys_dup3") or (
                    name == "sys_fcntl" and len(a) > 1 and _sarg(a[1]) in (F_DUPFD,
                                                                             F_DUPFD_CLOEXEC)):
                old = self.fds.get(_sarg(a[0]))
                if old is not None:
                    self.fds[result] = old
            elif name == "sys_chdir":
                pm = _PATH_ARG_RE.search(args)
                if pm is not None:
                    self.cwd = os.path.realpath(os.path.join(self.cwd, pm[1]))
            elif name == "sys_mmap":
                self.mmap(result, int(a[1], 0), int(a[2], 0), int(a[3], 0), _sarg(a[4]),
                          int(a[5], 0))
            elif name == "sys_munmap":
                start = int(a[0], 0) >> PAGE_SHIFT
                self.layout.unmap(start, _page_up(int(a[0], 0) + int(a[1], 0)))
            elif name == "sys_mprotect":
                start = int(a[0], 0) >> PAGE_SHIFT
                self.layout.protect(start, _page_up(int(a[0], 0) + int(a[1], 0)),
                                    _prot(int(a[2], 0)))
            elif name == "sys_mremap":
                self.mremap(int(a[0], 0), int(a[1], 0), int(a[2], 0), result)
            elif name == "sys_brk":
                self.brk(result)
        except (IndexError, ValueError) as exc:
            raise RecordError(f"record: cannot read valgrind's {name}({args}): {exc}") from exc

    def mmap(self, addr: int, length: int, prot: int, flags: int, fd: int, offset: int) -> None:
        lo, hi = addr >> PAGE_SHIFT, _page_up(addr + length)
        shared = bool(flags & MAP_SHARED)
        if flags & MAP_ANONYMOUS or fd < 0:
            region = self.new_region(None, 0, ANON_NAME, shared)
        elif fd in self.fds:
            region = self.new_region(self.fds[fd], (offset >> PAGE_SHIFT) - lo, "", shared)
        else:
            self.unknown_fd_maps += 1
            region = self.new_region(None, 0, f"{ANON_NAME} fd {fd}", shared)
        self.layout.map(lo, hi, region, _prot(prot))

    def mremap(self, old: int, old_len: int, new_len: int, new: int) -> None:
        """Move or resize: the pieces keep their region (a file keeps its page offsets)."""
        lo, hi = old >> PAGE_SHIFT, _page_up(old + old_len)
        pieces = self.layout.pieces(lo, hi)
        shift = (new >> PAGE_SHIFT) - lo
        self.layout.unmap(lo, hi)
        for s, e, region, prot in pieces:
            moved = region
            if shift and region.path is not None:
                moved = self.new_region(region.path, region.delta - shift, region.name,
                                        region.shared)
            self.layout.map(s + shift, e + shift, moved, prot)
        grow_from = (new >> PAGE_SHIFT) + (hi - lo)
        grow_to = _page_up(new + new_len)
        if grow_to > grow_from and pieces:
            _, _, region, prot = pieces[-1]
            last = self.layout.region_at(grow_from - 1) or region
            self.layout.map(grow_from, grow_to, last, prot)
        elif grow_to < grow_from:
            self.layout.unmap(grow_to, grow_from)

    def brk(self, result: int) -> None:
        """valgrind's brk segment: one page at the base from the start, then what brk asks."""
        if self.brk_base < 0:
            self.brk_base = result >> PAGE_SHIFT
            self.heap = self.layout.region_at(self.brk_base)
            if self.heap is None:
                self.heap = self.new_region(None, 0, "[heap]")
                self.layout.map(self.brk_base, self.brk_base + 1, self.heap, "rw-")
            self.heap.name = "[heap]"
            self.layout.protect(self.brk_base, self.brk_base + 1, "rw-")  # valgrind gives rwx
            self.brk_end = max(self.brk_base + 1, _page_up(result))
            return
        assert self.heap is not None
        end = max(self.brk_base + 1, _page_up(result))
        if end > self.brk_end:
            self.layout.map(self.brk_end, end, self.heap, "rw-")
        elif end < self.brk_end:
            self.layout.unmap(end, self.brk_end)
        self.brk_end = end


# --- from the run to the trace ---------------------------------------------------------------

def parse_valgrind_run(stream: _LackeyStream, debug_text: str, pid: int, cwd: str,
                       name: str) -> PageTrace:
    """Build the trace of one recorded run from lackey's stream and the -d output."""
    aspacem = _parse_aspacem(debug_text, pid)
    if not aspacem.startup:
        raise RecordError("record: valgrind printed no startup memory layout (did it start?)")
    rp = _Replayer(aspacem, cwd)
    rp.start()

    # 1. Every access, attributed to the region holding its page at that moment.
    vp_parts: list[npt.NDArray[np.uint64]] = []
    kd_parts: list[npt.NDArray[np.uint8]] = []
    rid_parts: list[npt.NDArray[np.int64]] = []
    for e in range(len(stream.pieces)):
        vpns, kinds = stream.piece(e)
        if vpns.size:
            idx = rp.layout.lookup(vpns)
            rids = np.array([r.rid for r in rp.layout.regions] + [-1], dtype=np.int64)[idx]
            vp_parts.append(vpns)
            kd_parts.append(kinds)
            rid_parts.append(rids)
        if e < len(stream.syscalls):
            rp.syscall(stream.syscalls[e])
    vpns = np.concatenate(vp_parts) if vp_parts else np.zeros(0, np.uint64)
    kinds = np.concatenate(kd_parts) if kd_parts else np.zeros(0, np.uint8)
    rids = np.concatenate(rid_parts) if rid_parts else np.zeros(0, np.int64)
    regions = rp.regions
    final = rp.layout

    # 2. Drop what is valgrind's, or nobody's.
    is_vg = np.array([r.valgrind for r in regions] + [False], dtype=bool)[rids]
    unmapped = rids < 0
    keep = ~(is_vg | unmapped)
    dropped_valgrind, dropped_unmapped = int(is_vg.sum()), int(unmapped.sum())
    orphans = [f"{v << PAGE_SHIFT:#x}" for v in np.unique(vpns[unmapped])[:10].tolist()]
    vpns, kinds, rids = vpns[keep], kinds[keep], rids[keep]

    # 3. The final layout: the client's intervals, by region and prot.
    client = [i for i, r in enumerate(final.regions) if not r.valgrind]
    fidx = final.lookup(vpns)
    same = np.zeros(vpns.size, dtype=bool)
    for rid in np.unique(rids).tolist():
        sel = rids == rid
        r = regions[rid]
        fi = fidx[sel]
        ok = fi >= 0
        fr = [final.regions[i] if i >= 0 else None for i in np.unique(fi).tolist()]
        fmap = {i: f for i, f in zip(np.unique(fi).tolist(), fr, strict=True)}
        good = np.zeros(fi.size, dtype=bool)
        for i, f in fmap.items():
            if f is None or f.valgrind:
                continue
            here = fi == i
            if r.path is None:
                good[here] = f.path is None  # anonymous memory reused as anonymous memory
            else:
                good[here] = f.path == r.path and f.delta == r.delta
        same[sel] = good & ok

    # 4. Replaced or unmapped before exit: a map of their own, in place or moved up.
    maps: list[tuple[int, int, _Region, str]] = [
        (final.starts[i], final.ends[i], final.regions[i], final.prots[i]) for i in client]
    ghost_rids = np.unique(rids[~same]).tolist()
    top = max((e for _, e, _, _ in maps), default=0)
    next_free = max(top + 256, GHOST_BASE >> PAGE_SHIFT)
    occupied = [(s, e) for s, e, _, _ in maps]
    ghosts = 0
    for rid in ghost_rids:
        sel = (rids == rid) & ~same
        lo, hi = int(vpns[sel].min()), int(vpns[sel].max()) + 1
        r = regions[rid]
        ghost = _Region(r.path, r.delta, GHOST_NAME if r.path else f"{r.name} {GHOST_NAME}",
                        r.shared, False, -1)
        if any(s < hi and e > lo for s, e in occupied):
            shift = next_free - lo
            vpns[sel] += np.uint64(shift)
            ghost.delta -= shift
            lo, hi = lo + shift, hi + shift
            next_free = hi + 256
        occupied.append((lo, hi))
        maps.append((lo, hi, ghost, "---"))
        ghosts += 1
    maps.sort(key=lambda m: m[0])

    # 5. Each map's prot also allows what the run did there (before a later mprotect).
    starts = np.array([m[0] for m in maps], dtype=np.uint64)
    midx = np.searchsorted(starts, vpns, side="right").astype(np.int64) - 1
    assert (midx >= 0).all(), "parse_valgrind_run: an access below every map"
    used = np.zeros((len(maps), 3), dtype=bool)
    used[midx, kinds] = True
    specs: list[MapSpec] = []
    widened: list[list[str]] = []
    for i, (s, e, r, prot) in enumerate(maps):
        want = "".join("rwx"[k] if prot[k] != "-" or used[i, k] else "-" for k in range(3))
        if want != prot and r.rid >= 0:
            widened.append([f"{s << PAGE_SHIFT:#x}", prot, want])
        spec = MapSpec(s << PAGE_SHIFT, (e - s) << PAGE_SHIFT, want, r.path,
                       (s + r.delta) << PAGE_SHIFT if r.path else 0,
                       "" if r.path and r.name == "" else r.name, r.shared)
        prev = specs[-1] if specs else None
        if (prev is not None and prev.start + prev.length == spec.start
                and (prev.path, prev.prot, prev.name, prev.shared)
                == (spec.path, spec.prot, spec.name, spec.shared)
                and (spec.path is None or prev.offset + prev.length == spec.offset)):
            specs[-1] = MapSpec(prev.start, prev.length + spec.length, prev.prot, prev.path,
                                prev.offset, prev.name, prev.shared)
        else:
            specs.append(spec)
    inside = vpns < np.array([(m[1]) for m in maps], dtype=np.uint64)[midx]
    assert inside.all(), "parse_valgrind_run: an access outside its map"

    cv, ck = collapse(vpns, kinds)
    files = sorted({m.path for m in specs if m.path})
    meta: dict[str, object] = {
        "references": stream.references,
        "page_accesses": stream.page_accesses,
        "collapsed_pages": int(cv.size),
        "dropped_valgrind": dropped_valgrind,
        "dropped_unmapped": dropped_unmapped,
        "unmapped_pages": orphans,
        "ghost_maps": ghosts,
        "widened_prot": widened,
        "unknown_fd_maps": rp.unknown_fd_maps,
        "layout_check": _check_layout(specs, aspacem, rp),
        "valgrind_libdir": aspacem.libdir,
        "valgrind_ranges": _valgrind_ranges(aspacem, rp),
        "file_sizes": {p: os.path.getsize(p) for p in files if os.path.isfile(p)},
    }
    return PageTrace(name, specs, cv, ck, meta)


def _valgrind_ranges(aspacem: _Aspacem, rp: _Replayer) -> list[list[int]]:
    """[start, end) of every segment that is valgrind's: its own, its preloads, its tool."""
    out: list[tuple[int, int]] = []
    for seg in aspacem.startup + aspacem.shutdown:
        if seg.kind in ("FILE", "ANON") or (seg.kind == "file" and seg.path
                                            and rp.is_valgrind(seg.path)):
            out.append((seg.start, seg.end))
    return [list(x) for x in sorted({(s, e) for s, e in out})]


def _check_layout(specs: Sequence[MapSpec], aspacem: _Aspacem, rp: _Replayer) -> list[str]:
    """Differences between the replayed final layout and aspacem's shutdown table ([] = none)."""
    problems = []
    for seg in aspacem.shutdown:
        if seg.kind not in ("file", "anon"):
            continue
        if seg.kind == "file" and seg.path and rp.is_valgrind(seg.path):
            continue
        for addr in range(seg.start, seg.end, PAGE_SIZE):
            m = next((m for m in specs if m.start <= addr < m.start + m.length), None)
            if m is None:
                problems.append(f"{addr:#x}: {seg.kind} {seg.path or ''} missing")
                break
            want = (os.path.realpath(seg.path) if seg.kind == "file" and seg.path else None,
                    seg.offset + addr - seg.start if seg.kind == "file" else 0)
            have = (m.path, m.offset + addr - m.start if m.path else 0)
            if want != have:
                problems.append(f"{addr:#x}: {seg.kind} {want} replayed as {have}")
                break
    return problems[:20]


# --- running valgrind ----------------------------------------------------------------------

def valgrind_version(valgrind: str = "valgrind") -> str:
    """`valgrind --version`, e.g. "valgrind-3.19.0"."""
    return subprocess.run([valgrind, "--version"], capture_output=True, text=True,
                          check=True, timeout=30).stdout.strip()


def debian_packages(paths: Iterable[str]) -> dict[str, str]:
    """{path: "package version"} for the host files Debian's dpkg knows (others left out)."""
    out: dict[str, str] = {}
    if shutil.which("dpkg-query") is None:
        return out
    for path in paths:
        candidates = [path, os.path.realpath(path)]
        if path.startswith("/usr/"):
            candidates.append(path[4:])  # merged /usr: dpkg may know /lib/... or /bin/...
        for p in candidates:
            r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True,
                               timeout=30)
            if r.returncode == 0 and ":" in r.stdout:
                pkg = r.stdout.splitlines()[0].split(": ", 1)[0].split(",")[0].strip()
                v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                                   capture_output=True, text=True, timeout=30).stdout
                out[path] = f"{pkg} {v}".strip()
                break
    return out


def _find_program(argv0: str, env: dict[str, str] | None, cwd: str) -> str:
    if "/" in argv0:
        path = os.path.join(cwd, argv0)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return os.path.abspath(path)
        raise RecordError(f"record: program {argv0!r} is not an executable file")
    found = shutil.which(argv0, path=(env or os.environ).get("PATH", os.defpath))
    if found is None:
        raise RecordError(f"record: program {argv0!r} not found on PATH")
    return found


def record(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
           env: dict[str, str] | None = None, timeout: float = 120,
           driver: Driver | None = None, name: str | None = None,
           stdio: int | None = None, residency: bool = True) -> PageTrace:
    """Run `argv` under valgrind's lackey and return its page-level trace.

    `driver`, if given, runs in a thread once the program has started (it gets the
    Popen; e.g. it sends requests to a server and then asks it to stop). The run is
    killed and RecordError raised after `timeout` seconds. Standard input is empty
    and the program's output is discarded, unless `stdio` gives a file descriptor (a
    connected socket, say) to serve as both. `residency`: also save the kernel's page
    cache of each mapped file after the run in meta["residency"] (recorded_residency).
    """
    if not argv:
        raise ParameterError("record: argv is empty")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or \
            not math.isfinite(timeout) or timeout <= 0:
        raise ParameterError(f"record: timeout {timeout!r} is not a finite number of "
                             f"seconds above 0")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RecordError("record: valgrind is not installed (Debian package 'valgrind')")
    workdir = os.path.realpath(cwd if cwd is not None else os.getcwd())
    prog = _find_program(argv[0], env, workdir)
    rfd, wfd = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(rfd, fcntl.F_SETPIPE_SZ, 1 << 20)
    stream = _LackeyStream()
    started = datetime.datetime.now(datetime.UTC)
    with tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(
                [valgrind, *VALGRIND_OPTIONS, f"--log-fd={wfd}", prog, *argv[1:]],
                cwd=workdir, env=env,
                stdin=subprocess.DEVNULL if stdio is None else stdio,
                stdout=subprocess.DEVNULL if stdio is None else stdio,
                stderr=err, pass_fds=(wfd,))
        finally:
            os.close(wfd)
        helper = None
        if driver is not None:
            helper = threading.Thread(target=driver, args=(proc,), daemon=True)
            helper.start()
        deadline = started.timestamp() + timeout
        buf: list[bytes] = []
        held = 0
        try:
            with os.fdopen(rfd, "rb", buffering=0) as pipe:
                while True:
                    left = deadline - datetime.datetime.now(datetime.UTC).timestamp()
                    if left <= 0 or not select.select([pipe], [], [], left)[0]:
                        raise RecordError(f"record: {argv[0]} did not finish within "
                                          f"{timeout} s under valgrind")
                    data = pipe.read(1 << 20)
                    if not data:
                        break
                    buf.append(data)
                    held += len(data)
                    if held >= CHUNK_BYTES:
                        stream.feed(b"".join(buf))
                        buf, held = [], 0
            stream.feed(b"".join(buf))
            stream.finish()
            status = proc.wait(timeout=max(1.0, deadline -
                                           datetime.datetime.now(datetime.UTC).timestamp()))
        except (RecordError, subprocess.TimeoutExpired) as exc:
            proc.kill()
            proc.wait()
            raise RecordError(f"record: {argv[0]} did not finish within {timeout} s "
                              f"under valgrind") from exc
        if helper is not None:
            helper.join(timeout=10)
        err.seek(0)
        debug_text = err.read().decode("utf-8", "replace")
    if not stream.references:
        tail = [ln for ln in debug_text.splitlines() if ln.startswith("valgrind:")]
        raise RecordError(f"record: valgrind recorded nothing for {argv[0]!r} "
                          f"(exit status {status}{': ' + tail[0] if tail else ''})")
    trace = parse_valgrind_run(stream, debug_text, proc.pid, workdir,
                               name or os.path.basename(prog))
    trace.meta = {
        "command": list(argv),
        "program": os.path.realpath(prog),
        "valgrind": valgrind_version(valgrind),
        "valgrind_options": list(VALGRIND_OPTIONS),
        "date": started.strftime("%Y-%m-%d"),
        "exit_status": status,
        **trace.meta,
    }
    if residency:
        trace.meta["residency"] = recorded_residency(trace.files())
    return trace


def recorded_residency(paths: Iterable[str]) -> dict[str, object]:
    """The kernel's page cache of each file after the recorded run: the recording's own truth.

    Taken right after the run (valgrind's, whose loader also reads the files) and with
    whatever else on the machine cached them before: a file other processes use shows
    their pages too. kernelcheck's execve pattern runs a fresh copy natively instead.
    Where the kernel cannot be asked, {"error": why} instead of "files". Files over
    MAX_RESIDENCY_PAGES (1 GiB) are left out, as a trace's loader would refuse them.
    """
    from xipmodel.mincore import KernelCheckError, file_residency

    out: dict[str, object] = {"after": "the recorded run, under valgrind",
                              "kernel": os.uname().release}
    try:
        found = {p: file_residency(p) for p in paths}
        out["files"] = {p: r for p, r in found.items()
                        if int(str(r["pages"])) <= MAX_RESIDENCY_PAGES}
    except (KernelCheckError, OSError) as exc:
        out["error"] = str(exc)
    return out


# --- python -m xipmodel record [-o OUT.npz] -- PROG ARGS -------------------------------------

def main_record(argv: list[str],
                parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    """The `record` command: record PROG ARGS, print a one-line summary, save the trace.

    `parser_class`: the command line's (whose usage errors are one line).
    """
    parser = parser_class(
        prog="xipmodel record",
        description="Record a program with valgrind's lackey into a page-level trace (.npz).")
    parser.add_argument("-o", "--output", help="where to save the trace (default: PROG.npz)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds before the run is killed (default 120)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- PROG ARGS")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if exc.code in (0, None) else 2
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("xipmodel record: no program given (usage: xipmodel record [-o OUT.npz] -- "
              "PROG ARGS)", file=sys.stderr)
        return 2
    out = Path(args.output or f"{os.path.basename(command[0])}.npz")
    try:
        trace = record(command, timeout=args.timeout)
        trace.save(out)
    except (XipModelError, OSError) as exc:
        print(f"xipmodel record: {exc}", file=sys.stderr)
        return 2
    m = trace.meta
    print(f"recorded {' '.join(command)}: {m['references']} references, {len(trace)} page "
          f"accesses, {len(trace.maps)} maps of {len(trace.files())} files → {out}")
    return 0
