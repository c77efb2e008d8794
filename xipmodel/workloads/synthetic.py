"""Seeded models of a program run: which pages it touches, in what order, which it writes.

A run of a program over its address space (the VMAs exec made)::

    startup   the loader and every object's init code: a share of each object's text,
              touched in clusters of neighbouring pages (code has locality), its
              read-only data, and a share of its data pages read and written
    requests  `requests` times: the hot core of the text again (in a shuffled
              order), a few cold paths, some data, and the heap growing
    heap      `heap_pages` written over the run (how much of a guest is heap is the
              knob that shows when XIP's saving shrinks: heaps cannot be shared)

Everything comes from the caller's seed: the same seed gives the same trace.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError
from xipmodel.mm.vma import Prot, Vma
from xipmodel.params import PAGE_SHIFT
from xipmodel.workloads.trace import EXEC, READ, WRITE, MapSpec, PageTrace, collapse

__all__ = ["PROGRAMS", "ProgramModel", "synthesize"]


@dataclass(frozen=True)
class ProgramModel:
    """How a run of one program uses its pages (fractions are of each mapping's pages)."""

    name: str
    binary: str  # the executable's path in the image
    main_text: float = 0.30  # share of the main binary's text a run touches
    lib_text: float = 0.12  # share of each library's text
    hot: float = 0.35  # of the touched text, the share run again by every request
    cluster: float = 4.0  # mean run of consecutive text pages touched together
    rodata: float = 0.25  # share of read-only data pages read
    data_read: float = 0.5  # share of RW file data pages read
    data_write: float = 0.15  # share of RW file data pages written (beyond what exec wrote)
    heap_pages: int = 256  # anonymous heap pages written over the run
    stack_pages: int = 6
    requests: int = 12
    cold: float = 0.02  # share of text touched once, on a rare path, per request

    def __post_init__(self) -> None:
        for name in ("main_text", "lib_text", "hot", "rodata", "data_read", "data_write",
                     "cold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ParameterError(f"ProgramModel {self.name}: {name} {value} is not in 0..1")
        if self.cluster < 1 or self.heap_pages < 0 or self.requests < 0:
            raise ParameterError(f"ProgramModel {self.name}: cluster, heap_pages and "
                                 f"requests must be ≥ 1, ≥ 0, ≥ 0")

    def with_heap_share(self, share: float, file_pages: int) -> ProgramModel:
        """The same program whose heap is `share` of its touched memory (file + heap)."""
        if not 0.0 <= share < 1.0:
            raise ParameterError(f"heap_share {share} is not in [0, 1)")
        return replace(self, heap_pages=round(share / (1.0 - share) * file_pages))


PROGRAMS: Final = {
    # A web server: a big hot core serving every request, modest heap.
    "webserver": ProgramModel("webserver", "/usr/sbin/nginx", main_text=0.35, lib_text=0.15,
                              hot=0.5, heap_pages=384, requests=16),
    # A shell running a script: little text, little heap.
    "shell": ProgramModel("shell", "/usr/bin/dash", main_text=0.45, lib_text=0.08, hot=0.4,
                          heap_pages=48, requests=8),
    # An interpreter starting and running a small program: large text, large heap.
    "python": ProgramModel("python", "/usr/bin/python3.11", main_text=0.18, lib_text=0.12,
                           hot=0.3, heap_pages=1536, requests=6),
    # A tool run from a shell script (ls -lR): most of its small text, a small heap.
    "tools": ProgramModel("tools", "/usr/bin/ls", main_text=0.6, lib_text=0.1, hot=0.3,
                          heap_pages=96, requests=4),
}


def _clusters(rng: np.random.Generator, pages: int, share: float,
              mean_run: float) -> npt.NDArray[np.int64]:
    """About `share` of range(pages), as runs of consecutive pages (sorted, unique)."""
    want = round(share * pages)
    if want <= 0 or pages == 0:
        return np.zeros(0, dtype=np.int64)
    runs = max(1, round(want / mean_run))
    starts = rng.integers(0, pages, runs)
    lengths = rng.geometric(1.0 / mean_run, runs)
    touched = np.unique(np.concatenate([np.arange(s, min(pages, s + n))
                                        for s, n in zip(starts.tolist(), lengths.tolist(),
                                                        strict=True)]))
    return touched[:want] if touched.size > want else touched


def synthesize(model: ProgramModel, vmas: list[Vma], seed: int,
               main_path: str | None = None) -> PageTrace:
    """A seeded page trace of one run of `model` over the VMAs exec made (no accesses yet).

    `main_path`: the main binary's path in the image (default `model.binary`); its
    mappings get `main_text`, every other file `lib_text`.
    """
    rng = np.random.default_rng(seed)
    main = main_path or model.binary
    vpns: list[npt.NDArray[np.int64]] = []
    kinds: list[npt.NDArray[np.int64]] = []

    def emit(pages: npt.NDArray[np.int64], kind: int) -> None:
        vpns.append(pages)
        kinds.append(np.full(pages.size, kind, dtype=np.int64))

    hot_text: list[npt.NDArray[np.int64]] = []
    text: list[npt.NDArray[np.int64]] = []
    data_pages: list[npt.NDArray[np.int64]] = []
    heap: Vma | None = None
    stack: Vma | None = None
    # Startup: each object's init code and data, in the order exec mapped them.
    for vma in vmas:
        first = vma.start >> PAGE_SHIFT
        if vma.anonymous:
            if vma.name == "[heap]":
                heap = vma
            elif vma.name == "[stack]":
                stack = vma
            continue
        is_main = vma.name == main
        if vma.prot & Prot.X:
            share = model.main_text if is_main else model.lib_text
            touched = first + _clusters(rng, vma.pages, share, model.cluster)
            emit(touched, EXEC)
            text.append(touched)
            hot_text.append(rng.permutation(touched)[: round(model.hot * touched.size)])
        elif vma.prot & Prot.W:
            pages = first + np.flatnonzero(rng.random(vma.pages) < model.data_read)
            emit(pages, READ)
            data_pages.append(pages)
            written = first + np.flatnonzero(rng.random(vma.pages) < model.data_write)
            emit(written, WRITE)
        else:
            emit(first + _clusters(rng, vma.pages, model.rodata, model.cluster), READ)
    if stack is not None:
        top = stack.end >> PAGE_SHIFT
        emit(np.arange(top - model.stack_pages, top, dtype=np.int64), WRITE)
    hot = np.concatenate(hot_text) if hot_text else np.zeros(0, np.int64)
    all_text = np.concatenate(text) if text else np.zeros(0, np.int64)
    data = np.concatenate(data_pages) if data_pages else np.zeros(0, np.int64)
    heap_first = (heap.start >> PAGE_SHIFT) if heap is not None else 0
    heap_limit = heap.pages if heap is not None else 0
    heap_total = min(model.heap_pages, heap_limit)
    grown = 0
    # Requests: the hot core again, some cold paths, data, and the heap growing.
    for r in range(model.requests):
        emit(rng.permutation(hot), EXEC)
        if all_text.size:
            cold = round(model.cold * all_text.size)
            emit(rng.choice(all_text, size=cold, replace=False) if cold else all_text[:0],
                 EXEC)
        if data.size:
            emit(rng.choice(data, size=min(data.size, 4), replace=False), READ)
        target = heap_total * (r + 1) // max(1, model.requests)
        if heap is not None and target > grown:
            emit(heap_first + np.arange(grown, target, dtype=np.int64), WRITE)
            grown = target
    if heap is not None and grown < heap_total:
        emit(heap_first + np.arange(grown, heap_total, dtype=np.int64), WRITE)
    v, k = collapse(np.concatenate(vpns) if vpns else np.zeros(0, np.int64),
                    np.concatenate(kinds) if kinds else np.zeros(0, np.int64))
    maps = [MapSpec(v.start, v.end - v.start, str(v.prot), None if v.anonymous else v.name,
                    v.pgoff << PAGE_SHIFT,
                    v.name, v.shared) for v in vmas]
    return PageTrace(model.name, maps, v, k, {"seed": seed, "model": model.name})
