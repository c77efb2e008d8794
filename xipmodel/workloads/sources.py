"""What a Scenario's workload names: program models, shipped traces, recorded trace files.

    name                    what guests run                           its files come from
    "webserver", "shell"…   a seeded program model (synthetic.py),    the embedded distribution
                            exec'd from the image, then replayed      (or the image given)
    "trace:httpd"           a shipped recording (recorded.TRACES);    seeded stand-ins of the
                            the prefix may be left out where no       recorded sizes
                            program has the name (not for "shell")
    "trace:/abs/run.npz"    a trace saved by `python -m xipmodel      (the same; with
                            record` or PageTrace.save; a path with    real_files: this
                            a slash or ending .npz needs no prefix    machine's own where
                                                                      they match, realfiles.py)
    "exec:/usr/bin/bash"    any program of the image, exec'd and run  the image (an image of
                            by a seeded model with default shares     this machine's binaries:
                            (synthetic.ProgramModel)                  sysroot.py)

`workload_name` checks a name and returns its canonical spelling (a trace file's path
made absolute, so a scenario means the same in any directory and any worker process);
a trace is loaded and checked then, so a bad file is refused when the Scenario is made.
`workload_set` gives a host what its guests need: the image and the traces as they map
it. Guests replaying the same trace share its image; a scenario with several traces (or
traces and programs) gets one image holding every trace's files (and the distribution),
a file two traces map at the same path and size held once (recorded.traces_image).

Every guest replaying a trace makes the same run (a recording has no seed). A scenario
names a trace file by its path: on a cluster, every worker must see the file there (and,
with real_files, reads its own machine's files: the same files, the same numbers).
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from xipmodel.errors import ParameterError, TraceFileError
from xipmodel.workloads.realfiles import FileReport
from xipmodel.workloads.recorded import TRACES, load_trace, trace_file_sizes, traces_image
from xipmodel.workloads.synthetic import PROGRAMS, ProgramModel
from xipmodel.workloads.trace import PageTrace

if TYPE_CHECKING:
    from xipmodel.ext2.reader import Ext2Image

__all__ = ["EXEC_PREFIX", "TRACE_PREFIX", "WorkloadSet", "check_maps", "is_trace",
           "program_model",
           "workload_name", "workload_set", "workload_trace"]

TRACE_PREFIX: Final = "trace:"
EXEC_PREFIX: Final = "exec:"


def is_trace(name: str) -> bool:
    """Whether the canonical workload `name` is a trace (not a program model)."""
    return name.startswith(TRACE_PREFIX)


def workload_name(name: object) -> str:
    """`name` in its canonical spelling (see the table above), else ParameterError.

    A trace file is loaded and checked now (TraceFileError naming the file, the member
    and the value), and so are its recorded file sizes.
    """
    choices = (f"one of {', '.join(PROGRAMS)}, a shipped trace ({', '.join(TRACES)}) "
               f"or a recorded trace file (a path to a .npz)")
    if not isinstance(name, str):
        raise ParameterError(f"Scenario: workload {name!r} is not {choices}")
    if name in PROGRAMS:
        return name
    if name.startswith(EXEC_PREFIX):
        path = name.removeprefix(EXEC_PREFIX)
        if not path.startswith("/") or posixpath.normpath(path) != path:
            raise ParameterError(f"Scenario: workload {name!r}: {path!r} is not an absolute, "
                                 f"normalized path of the image")
        return name
    spec = name.removeprefix(TRACE_PREFIX)
    if spec in TRACES:
        return TRACE_PREFIX + spec
    if spec and (spec != name or "/" in spec or spec.endswith(".npz")):
        canonical = TRACE_PREFIX + os.path.abspath(spec)
        trace = workload_trace(canonical)
        try:
            trace_file_sizes(trace)
            check_maps(trace)
        except ParameterError as exc:
            raise TraceFileError(f"Scenario: workload {name!r}: {exc}") from exc
        return canonical
    raise ParameterError(f"Scenario: workload {name!r} is not {choices}")


def check_maps(trace: PageTrace) -> None:
    """The trace's maps fit a guest process: inside the user address space below
    elf.STACK_TOP (TASK_SIZE on x86-64) and not overlapping, else ParameterError naming
    the map. (An access outside every map is no error: the guest gets SIGSEGV.)"""
    from xipmodel.elf import STACK_TOP

    end, last = 0, -1
    for i, m in sorted(enumerate(trace.maps), key=lambda item: item[1].start):
        if m.start + m.length > STACK_TOP:
            raise ParameterError(f"trace {trace.name!r}: maps[{i}] [{m.start:#x}, "
                                 f"{m.start + m.length:#x}) ends above the user address "
                                 f"space (TASK_SIZE {STACK_TOP:#x})")
        if m.start < end:
            raise ParameterError(f"trace {trace.name!r}: maps[{i}] at {m.start:#x} overlaps "
                                 f"maps[{last}], which ends at {end:#x}")
        end, last = m.start + m.length, i


def program_model(name: str) -> ProgramModel:
    """The seeded model of a canonical program workload ("exec:PATH": default shares)."""
    if name.startswith(EXEC_PREFIX):
        path = name.removeprefix(EXEC_PREFIX)
        return ProgramModel(posixpath.basename(path), path)
    return PROGRAMS[name]


def workload_trace(name: str) -> PageTrace:
    """The trace a canonical trace workload names (loaded once per file version)."""
    spec = name.removeprefix(TRACE_PREFIX)
    if spec in TRACES:
        return _shipped(spec)
    try:
        st = os.stat(spec)
    except OSError as exc:
        raise TraceFileError(f"Scenario: workload {name!r}: {exc.strerror or exc}") from exc
    try:
        return _load(spec, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except TraceFileError as exc:
        raise TraceFileError(f"Scenario: workload {name!r}: "
                             f"{str(exc).removeprefix('PageTrace.load: ')}") from exc


@lru_cache(maxsize=8)
def _shipped(name: str) -> PageTrace:
    return load_trace(name)


@lru_cache(maxsize=32)
def _load(path: str, dev: int, ino: int, size: int, mtime_ns: int) -> PageTrace:
    """A trace file, once per (device, inode, size, mtime): a rewritten file is read again."""
    return PageTrace.load(path)


@dataclass(frozen=True)
class WorkloadSet:
    """What a host's guests run from: the image, and each trace as it maps that image.

    `files`: where the traces' files in an image built for them come from (this
    machine or a seed: realfiles.FileReport); None when no image was built.
    """

    image: Ext2Image
    traces: dict[str, PageTrace]
    files: FileReport | None = None


def workload_set(names: Sequence[str], image: Ext2Image | None = None,
                 real_files: bool = False) -> WorkloadSet:
    """The image and traces for the canonical workload `names` (a Scenario's mix).

    Without traces: `image`, else the embedded distribution. With traces and no `image`:
    one image built for them (cached per process), holding the distribution as well if a
    program model is in the mix, and this machine's own files where they match with
    `real_files` (read once per process). With an `image` given, the traces map its
    files as recorded (the image must hold them).
    """
    from xipmodel.distro import default_image

    traces = tuple(sorted({n for n in names if is_trace(n)}))
    if image is not None or not traces:
        return WorkloadSet(image if image is not None else default_image(),
                           {n: workload_trace(n) for n in traces})
    with_programs = any(not is_trace(n) for n in names)
    return _built(traces, with_programs, tuple(_stamp(n) for n in traces), real_files)


def _stamp(name: str) -> tuple[int, int]:
    """(inode, mtime) of a trace file (a shipped trace: (0, 0)), so a new file rebuilds."""
    spec = name.removeprefix(TRACE_PREFIX)
    if spec in TRACES:
        return 0, 0
    st = os.stat(spec)
    return st.st_ino, st.st_mtime_ns


@lru_cache(maxsize=8)
def _built(traces: tuple[str, ...], with_programs: bool,
           stamps: tuple[tuple[int, int], ...], real_files: bool) -> WorkloadSet:
    """The image of `traces` (plus the distribution with programs), built once."""
    from xipmodel.distro import distro_tree

    base = distro_tree() if with_programs else None
    built = traces_image([workload_trace(n) for n in traces], base=base,
                         volume_name="xipmodel-distro" if with_programs else None,
                         real_files=real_files)
    return WorkloadSet(built.image, dict(zip(traces, built.traces, strict=True)), built.files)
