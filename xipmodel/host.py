"""A host with guests running programs, in one of the modes; experiments across modes.

The same scenario runs in each mode::

    pagecache   every guest reads binaries from its virtual disk into its own page cache
    xip         the frozen image sits once in host memory (a DCSS); guests execute in place
    ksm         page cache, plus ksmd merging identical guest pages after the fact
    dax         DAX over a host page cache (virtio-fs / virtio-pmem style): shared like
                XIP, but the frames are the host's page cache of the image file

    Host(scenario, mode).run() → RunResult    host memory by category (at the end and over
                                              time), per-guest breakdowns, faults, disk
                                              reads, TLB misses and walk references, KSM
    compare(scenario)          → Comparison   the same scenario in several modes
    sweep(scenario, "guests", [1, 2, 4, …])   a parameter swept, runs spread over any
                                              concurrent.futures.Executor
    (both run Host.run(ksmd_in_bulk=True): ksmd's tail counted in bulk, the same numbers)

Guests run one after another in start order, each from its start time; the
host's clock is the latest guest time, and ksmd scans up to it (then keeps
scanning for `ksm_seconds`). Deterministic: the same scenario gives the same
numbers, in any process (with real_files, on any machine with the same files).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, NamedTuple

import numpy as np

from xipmodel.elf import STACK_TOP, exec_image
from xipmodel.errors import HostFullError, ParameterError
from xipmodel.events import EventBus
from xipmodel.ext2.reader import Ext2Image
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.ksm import RMAP_ITEM_BYTES, Ksm, KsmCounters
from xipmodel.mm.ksm_bulk import ScanOrder, fits, ksmd_passes, wakeup_visits
from xipmodel.mm.pagecache import CACHE_POLICIES
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.vma import MmStruct
from xipmodel.params import (
    DEFAULT_KERNEL,
    PAGE_SHIFT,
    PAGE_SIZE,
    PRESETS,
    MMUPreset,
    kernel_profile,
)
from xipmodel.workloads.sources import is_trace, program_model, workload_name, workload_set
from xipmodel.workloads.synthetic import ProgramModel, synthesize
from xipmodel.workloads.trace import PageTrace, replay

__all__ = [
    "CATEGORIES",
    "KIND_CATEGORY",
    "KSM_TIMELINE_COLUMNS",
    "MODES",
    "Comparison",
    "Host",
    "RunResult",
    "Scenario",
    "compare",
    "longest_first",
    "sweep",
]

MODES: Final = ("pagecache", "xip", "ksm", "dax")
# Host memory categories, in the order figures stack them.
CATEGORIES: Final = ("shared", "page_cache", "anon", "cow", "page_tables", "struct_pages",
                     "ksm", "guest_free", "zero")
KSM_TIMELINE_COLUMNS: Final = ("pages_shared", "pages_sharing", "pages_unshared",
                                "pages_volatile", "full_scans", "pages_scanned")
KIND_CATEGORY: Final = {  # a host frame's kind → its category
    FrameKind.SHARED: "shared", FrameKind.HOSTCACHE: "shared",
    FrameKind.PAGECACHE: "page_cache", FrameKind.ANON: "anon", FrameKind.COW: "cow",
    FrameKind.PAGETABLE: "page_tables", FrameKind.KSM: "ksm",
    FrameKind.GUEST_FREE: "guest_free", FrameKind.ZERO: "zero",
    FrameKind.MEMMAP: "struct_pages",  # a DAX device's memmap in guest RAM (mm/segment.py)
}


# What one run may ask for: measured on a 2-core machine with 24 GiB (see LIMITS below).
MAX_GUESTS: Final = 10_000
MAX_GUEST_RAM_MIB: Final = 1 << 20  # 1 TiB: far beyond the simulated 64 GiB host already
MAX_HEAP_SHARE: Final = 0.99  # a heap 99 times the text a run touches
MAX_SEED: Final = (1 << 64) - 1
MAX_PROGRAM_RUNS: Final = 20_000  # guests that really run (not clones) × runs_per_guest
MAX_KSM_SCAN_PAGES: Final = 100_000_000  # pages ksmd scans in a run: about 30 s of scanning
LIMITS: Final = """\
A run's bounds, refused up front with ParameterError naming the field and the limit:
  guests         1 .. 10,000. Measured on a 2-core machine with 24 GiB, the default
                 web-server scenario, one mode per process: 1,000 guests take 2-6 s and
                 165-380 MiB resident (ksm the most); 10,000 guests take about 1.5 min
                 and 1.0 GiB resident in xip or dax. Time grows faster than the guests
                 (each guest's timeline sample counts every host frame): 100,000 would
                 take hours, and their 220 GB would not fit the simulated host anyway.
  program runs   guests that run their program (not clones of an earlier guest's run)
                 × runs_per_guest: at most 20,000 (a run takes 18-34 ms: some 6-11 min).
  ksmd           at most 10^8 pages scanned in a ksm run (about 30 s at 3-4 million
                 pages/s): ksm_seconds plus the guests' start spread, at
                 ksm_pages_to_scan every ksm_sleep_ms (the defaults allow 20,000 s).
The simulated host holds 64 GiB: a run that fills it (the default scenario near 6,500
guests in pagecache or ksm mode, after a few minutes) stops with a ParameterError naming
guests and how many fitted, when it happens.
"""


def _check_int(name: str, value: object, low: int, high: int) -> None:
    """`value` is an integer (not a bool) in low..high, else ParameterError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ParameterError(f"Scenario: {name} {value!r} is not an integer "
                             f"(allowed: {low}..{high})")
    if not low <= int(value) <= high:
        raise ParameterError(f"Scenario: {name} {value} is not in {low}..{high}")


def _check_real(name: str, value: object, low: float, high: float | None) -> None:
    """`value` is a finite real number in [low, high] (no upper end if None)."""
    allowed = f"[{low:g}, {high:g}]" if high is not None else f">= {low:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ParameterError(f"Scenario: {name} {value!r} is not a number ({allowed})")
    number = float(value)
    if not math.isfinite(number) or number < low or (high is not None and number > high):
        raise ParameterError(f"Scenario: {name} {value!r} is not a finite number {allowed}"
                             if high is None else
                             f"Scenario: {name} {value!r} is not in {allowed}")


def _runs_exec_layout(preset: MMUPreset) -> bool:
    """Can `preset`'s MMU hold the x86-64 process layout exec builds (4 KiB pages)?"""
    return bool(preset.page_shift == PAGE_SHIFT
                and 1 << (preset.vpn_bits + preset.page_shift) >= STACK_TOP)


def _check_workload(workload: object) -> str | tuple[tuple[str, float], ...]:
    """A workload name (workloads/sources.py), or (name, share) pairs with finite shares
    >= 0, not all 0.

    Returns the names in their canonical spelling and the mix as a tuple of tuples (a
    list of lists from JSON becomes one).
    """
    if isinstance(workload, str):
        return workload_name(workload)
    if not isinstance(workload, (tuple, list)) or not workload:
        raise ParameterError(f"Scenario: workload {workload!r} is not a program name or a "
                             f"non-empty tuple of (program, share) pairs")
    mix: list[tuple[str, float]] = []
    for i, pair in enumerate(workload):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ParameterError(f"Scenario: workload[{i}] {pair!r} is not a (program, "
                                 f"share) pair")
        name, share = pair
        name = workload_name(name)
        if isinstance(share, bool) or not isinstance(share, numbers.Real) or \
                not math.isfinite(float(share)) or float(share) < 0:
            raise ParameterError(f"Scenario: workload share {share!r} of {name!r} is not a "
                                 f"finite number >= 0")
        mix.append((name, share))  # type: ignore[arg-type]  # a Real, kept as given
    if not any(share > 0 for _, share in mix):
        raise ParameterError(f"Scenario: workload {workload!r} has no positive share")
    return tuple(mix)


@dataclass(frozen=True)
class Scenario:
    """What to run: guests, their workload mix and memory, and the knobs of the modes."""

    guests: int = 8
    # A program, a trace, or a mix (see workloads/sources.py).
    workload: str | tuple[tuple[str, float], ...] = "webserver"
    guest_ram_mib: int = 512
    heap_share: float | None = None  # share of each run's touched memory that is heap
    seed: int = 0
    start_interval_ms: float = 0.0  # guest i starts at i × this
    ksm_seconds: float = 120.0  # ksmd keeps scanning this long after the last start
    ksm_pages_to_scan: int = 100
    ksm_sleep_ms: int = 20
    policy: str = "linux"
    preset: str = "x86_64"
    runs_per_guest: int = 1
    variants: int | None = 4  # distinct seeded runs per program (None: every guest its own)
    kernel: str = DEFAULT_KERNEL.name  # the guests' kernel rules (params.KERNELS)
    # The traces' files: this machine's own where they match (workloads/realfiles.py);
    # the numbers then depend on the machine. False: seeded stand-ins, the same everywhere.
    real_files: bool = False

    def __post_init__(self) -> None:
        """Check every field (type and range) now, naming the field, the value and the range.

        Besides each field's own range, a scenario must stay within what the model runs in
        bounded time and memory (see LIMITS): at most MAX_GUESTS guests, at most
        MAX_PROGRAM_RUNS program runs, and a ksmd that scans at most MAX_KSM_SCAN_PAGES.
        """
        kernel_profile(self.kernel)  # refuses an unknown profile, naming it
        _check_int("guests", self.guests, 1, MAX_GUESTS)
        _check_int("guest_ram_mib", self.guest_ram_mib, 1, MAX_GUEST_RAM_MIB)
        _check_int("seed", self.seed, 0, MAX_SEED)
        _check_int("ksm_pages_to_scan", self.ksm_pages_to_scan, 1, MAX_KSM_SCAN_PAGES)
        _check_int("ksm_sleep_ms", self.ksm_sleep_ms, 1, 10**9)
        _check_int("runs_per_guest", self.runs_per_guest, 1, MAX_PROGRAM_RUNS)
        if self.variants is not None:
            _check_int("variants", self.variants, 1, MAX_PROGRAM_RUNS)
        _check_real("start_interval_ms", self.start_interval_ms, 0.0, None)
        _check_real("ksm_seconds", self.ksm_seconds, 0.0, None)
        if self.heap_share is not None:
            _check_real("heap_share", self.heap_share, 0.0, MAX_HEAP_SHARE)
        if not isinstance(self.preset, str) or self.preset not in PRESETS:
            raise ParameterError(f"Scenario: preset {self.preset!r} is not one of "
                                 f"{', '.join(PRESETS)}")
        if not _runs_exec_layout(PRESETS[self.preset]):
            space = PRESETS[self.preset].vpn_bits + PRESETS[self.preset].page_shift
            runnable = [n for n, p in PRESETS.items() if _runs_exec_layout(p)]
            raise ParameterError(
                f"Scenario: preset {self.preset!r} ({space}-bit virtual addresses, "
                f"{1 << PRESETS[self.preset].page_shift}-byte pages) cannot hold the x86-64 "
                f"process layout exec builds; use one of {', '.join(runnable)}")
        if not isinstance(self.policy, str) or self.policy not in CACHE_POLICIES:
            raise ParameterError(f"Scenario: policy {self.policy!r} is not one of "
                                 f"{', '.join(CACHE_POLICIES)}")
        object.__setattr__(self, "workload", _check_workload(self.workload))
        if not isinstance(self.real_files, bool):
            raise ParameterError(f"Scenario: real_files {self.real_files!r} is not True or "
                                 f"False")
        if self.real_files and not any(is_trace(name) for name, _ in self.mix):
            raise ParameterError(f"Scenario: real_files puts this machine's files in a "
                                 f"trace's image, and workload {self.workload!r} has no trace")
        runs = self.program_runs
        if runs > MAX_PROGRAM_RUNS:
            raise ParameterError(
                f"Scenario: runs_per_guest {self.runs_per_guest} × {runs // self.runs_per_guest}"
                f" distinct guest runs (guests, variants) = {runs} program runs, more than "
                f"the limit {MAX_PROGRAM_RUNS}")
        scans = self.ksm_scan_pages
        if scans > MAX_KSM_SCAN_PAGES:
            raise ParameterError(
                f"Scenario: ksm_seconds {self.ksm_seconds:g} (after guests {self.guests} "
                f"started start_interval_ms {self.start_interval_ms:g} apart) has ksmd scan "
                f"{scans:.3g} pages ({self.ksm_pages_to_scan} every ksm_sleep_ms "
                f"{self.ksm_sleep_ms}), more than the limit {MAX_KSM_SCAN_PAGES:.0e}: at most "
                f"ksm_seconds {self.max_ksm_seconds:g} for this scenario")

    @property
    def program_runs(self) -> int:
        """How many programs the host runs at most: distinct guests' runs × runs_per_guest.

        Guests whose seeded run equals an earlier guest's are cloned, not run again.
        """
        distinct = self.guests if self.variants is None else min(
            self.guests, self.variants * len(self.mix))
        return distinct * self.runs_per_guest

    @property
    def ksm_scan_pages(self) -> float:
        """About how many pages ksmd scans in a ksm run: every ksm_sleep_ms, ksm_pages_to_scan,
        from the first guest's start until ksm_seconds after the last's."""
        seconds = self._start_spread_s + self.ksm_seconds
        return math.ceil(seconds * 1000 / self.ksm_sleep_ms) * self.ksm_pages_to_scan

    @property
    def max_ksm_seconds(self) -> float:
        """The largest ksm_seconds this scenario may ask for (MAX_KSM_SCAN_PAGES)."""
        return max(0.0, MAX_KSM_SCAN_PAGES / self.ksm_pages_to_scan
                   * self.ksm_sleep_ms / 1000 - self._start_spread_s)

    @property
    def _start_spread_s(self) -> float:
        """Seconds from the first guest's start to the last's."""
        return (self.guests - 1) * self.start_interval_ms / 1000

    @property
    def mix(self) -> tuple[tuple[str, float], ...]:
        """The workload as (program, share) pairs."""
        if isinstance(self.workload, str):
            return ((self.workload, 1.0),)
        return tuple(self.workload)

    def program_of(self, guest: int) -> str:
        """Which program guest `guest` runs: the mix dealt out by largest remainder.

        Guest i gets the program furthest behind its share after i guests, so any first
        n guests follow the mix as closely as n allows, whatever the total: a scenario
        with fewer guests is a prefix of one with more (see RunResult.prefix).
        """
        return _deal(self.mix, guest + 1)[guest]

    def variant_of(self, guest: int) -> int:
        """Which seeded run of its program guest `guest` makes (guests cycle through them).

        A trace has one run: every guest replaying it makes variant 0.
        """
        if is_trace(self.program_of(guest)):
            return 0
        return guest if self.variants is None else guest % self.variants

    def replace(self, **changes: Any) -> Scenario:
        return dataclasses.replace(self, **changes)


@dataclass
class RunResult:
    """What a run in one mode cost the host, and what the guests saw."""

    mode: str
    scenario: Scenario
    bytes_by_category: dict[str, int]
    per_guest: list[dict[str, Any]]
    timeline_ns: np.ndarray
    timeline_bytes: np.ndarray  # rows: samples; columns: CATEGORIES
    totals: dict[str, int]
    ksm: KsmCounters | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def host_bytes(self) -> int:
        """Host memory in use at the end (frames, plus KSM's rmap_items)."""
        return sum(self.bytes_by_category.values())

    def prefix(self, guests: int) -> RunResult:
        """The result of the same scenario with only its first `guests` guests.

        Exact without KSM: a guest's run never depends on the guests started after
        it, so host memory after guest n is what an n-guest host ends with. KSM keeps
        scanning after the last start, so a ksm result has no prefixes (but one taken
        before ksmd scanned anything has: xipmodel.family adds ksmd's tail to them).
        """
        if self.ksm is not None and self.ksm.pages_scanned:
            raise ParameterError("RunResult.prefix: a ksm result depends on the run's end")
        if not 1 <= guests <= len(self.per_guest):
            raise ParameterError(f"RunResult.prefix: guests {guests} is not in "
                                 f"1..{len(self.per_guest)}")
        per_guest = self.per_guest[:guests]
        totals = {k: sum(int(g.get(k, 0)) for g in per_guest) for k in self.totals}
        return RunResult(self.mode, self.scenario.replace(guests=guests),
                         dict(zip(CATEGORIES, self.timeline_bytes[guests].tolist(),
                                  strict=True)),
                         per_guest, self.timeline_ns[:guests + 1],
                         self.timeline_bytes[:guests + 1], totals, self.ksm,
                         {k: v[:guests + 1] if k == "ksm_timeline" else v
                          for k, v in self.extra.items()})

    def as_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready), with the per-mode keys the CLI prints."""
        c = self.bytes_by_category
        out: dict[str, Any] = {
            "mode": self.mode,
            "host_bytes": self.host_bytes,
            "shared_bytes": c["shared"],
            "page_cache_bytes": c["page_cache"],
            "anon_bytes": c["anon"],
            "cow_bytes": c["cow"],
            "page_table_bytes": c["page_tables"],
            "struct_page_bytes": c["struct_pages"],
            "ksm_bytes": c["ksm"],
            "guest_free_bytes": c["guest_free"],
            **self.totals,
        }
        if self.ksm is not None:
            out["ksm"] = dataclasses.asdict(self.ksm)
        return out

    def to_dataframe(self) -> Any:
        """The per-guest breakdown as a pandas DataFrame (needs pandas)."""
        pandas = importlib.import_module("pandas")  # optional dependency
        return pandas.DataFrame(self.per_guest)


@dataclass
class Comparison:
    """The same scenario in several modes."""

    scenario: Scenario
    results: dict[str, RunResult]

    def saving(self, mode: str, baseline: str = "pagecache") -> float:
        """Share of the baseline's host memory that `mode` saves (negative: it costs more)."""
        base = self.results[baseline].host_bytes
        return 1.0 - self.results[mode].host_bytes / base if base else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": dataclasses.asdict(self.scenario),
                "modes": {m: r.as_dict() for m, r in self.results.items()}}

    def to_dataframe(self, prefixes: bool = False) -> Any:
        """A tidy pandas DataFrame: mode, guests, category, bytes (xipmodel.tidy; needs
        pandas). `prefixes`: also every first n guests (not in ksm mode). A sweep's list
        of comparisons: `xipmodel.tidy.tidy_frame(comparisons)`."""
        from xipmodel.tidy import tidy_frame

        return tidy_frame(self, prefixes)


class Host:
    """One host running `scenario` in `mode`, on `image` (default: the embedded distribution,
    or the image built for the scenario's traces: workloads/sources.py)."""

    def __init__(self, scenario: Scenario, mode: str, image: Ext2Image | None = None,
                 bus: EventBus | None = None, clone_guests: bool = True,
                 retire_guests: bool | None = None) -> None:
        """Set up the host.

        `clone_guests` copies a guest whose seeded run equals an earlier guest's instead
        of running it again, and a fresh guest's state after exec'ing its program (the
        same result, faster; nothing is copied while someone listens to `bus`, also one
        who subscribed after the host was made).
        `retire_guests` keeps only frames and counters of guests that have run (None:
        when there are over 16 guests), so a thousand guests fit in memory; their page
        caches and processes are gone.
        """
        if mode not in MODES:
            raise ParameterError(f"Host: mode {mode!r} is not one of {', '.join(MODES)}")
        self.scenario = scenario
        self.mode = mode
        if image is not None and scenario.real_files:
            raise ParameterError("Host: real_files fills the image built for the traces; "
                                 "an image of the caller's was given")
        self.workloads = workload_set([name for name, _ in scenario.mix], image,
                                      scenario.real_files)
        self.image = self.workloads.image
        self.bus = bus if bus is not None else EventBus()
        self.memory = HostMemory()
        self.segment: SharedSegment | None = None
        if mode in ("xip", "dax"):
            self.segment = SharedSegment(self.memory, self.image, PAGE_SIZE, self.bus,
                                         name="XIP2" if mode == "xip" else "host page cache",
                                         frame_kind=FrameKind.SHARED if mode == "xip"
                                         else FrameKind.HOSTCACHE)
        self.clone_guests = clone_guests  # and no one listens (cloning): see _cloning
        self.retire_guests = scenario.guests > 16 if retire_guests is None else retire_guests
        self.guests: list[Guest] = []
        self.ksm = (Ksm(self.memory, self.guests, pages_to_scan=scenario.ksm_pages_to_scan,
                        sleep_millisecs=scenario.ksm_sleep_ms, bus=self.bus)
                    if mode == "ksm" else None)
        self._templates: dict[tuple[str, int], tuple[Guest, int]] = {}
        self._exec_templates: dict[str, _ExecTemplate] = {}  # program → after its exec
        self._samples_ns: list[int] = []
        self._samples: list[list[int]] = []
        # Columns: pages_shared, pages_sharing, pages_unshared, pages_volatile, full_scans,
        # pages_scanned (KSM_TIMELINE_COLUMNS), one row per sample.
        self._ksm_samples: list[list[int]] = []

    # --- running ------------------------------------------------------------------------------

    def run(self, progress: Callable[[int, int], None] | None = None,
            ksmd_in_bulk: bool = False) -> RunResult:
        """Start every guest's program at its start time; return what the host holds.

        `ksmd_in_bulk`: count ksmd's tail after the last start in bulk (ksmd_tail: the
        same result, in milliseconds) when ksmd has scanned nothing before it and no one
        listens for its events; the host's frames are then left unmerged. Else ksm.py
        scans page by page (the reference).
        """
        self.add_guests(self.scenario.guests, progress)
        if self.ksm is None:
            return self.result()
        if ksmd_in_bulk and self.ksm.untouched and not self.bus:
            order = ScanOrder()
            order.extend(self.memory, [g.backing for g in self.guests])
            tail = self.ksmd_tail(self.result(), order)
            if tail is not None:
                return tail
        for t in self.ksmd_times():
            self.ksm.run_until(t)
            self._sample(t)
        return self.result()

    def finish_on_copy(self) -> RunResult:
        """What run() returns for the scenario of the guests started so far, this host
        left as it is (to start more): ksmd's tail after the last start, page by page,
        on a copy of host memory, the guests' frames and ksmd's state (ksm mode).

        Once a full pass changes nothing, every later one repeats it (Ksm.settled): the
        rest of the tail is counted, not scanned (memory no longer changes).
        """
        assert self.ksm is not None, "finish_on_copy: not a ksm host"
        end = copy.copy(self)
        end.scenario = self.scenario.replace(guests=len(self.guests))
        end.memory = self.memory.copy()
        end.guests = [g.copy_frames(end.memory) for g in self.guests]
        ksm = end.ksm = self.ksm.copy(end.memory, end.guests)
        end._samples_ns, end._samples = list(self._samples_ns), list(self._samples)
        end._ksm_samples = list(self._ksm_samples)
        times = end.ksmd_times()
        for i, t in enumerate(times):
            if not end.bus and ksm.settled():
                visits = wakeup_visits(times[i:], ksm.next_wake, ksm.sleep_ns,
                                       ksm.pages_to_scan)
                counters = ksm.settled_counters(visits.tolist())
                for later, c in zip(times[i:], counters, strict=True):
                    end._sample(later, c)
                return dataclasses.replace(end.result(), ksm=counters[-1])
            ksm.run_until(t)
            end._sample(t)
        return end.result()

    def add_guests(self, guests: int,
                   progress: Callable[[int, int], None] | None = None) -> None:
        """Start guests len(self.guests) .. guests-1, as run() does (a run continued).

        Guests never depend on later ones, so a host grown to n guests holds what a
        host of the n-guest scenario holds after its last start (before ksmd's tail).
        """
        if guests > self.scenario.guests:
            self.scenario = self.scenario.replace(guests=guests)  # checks the bounds
        s = self.scenario
        interval = int(s.start_interval_ms * 1_000_000)
        # (program, variant) → the guest that ran it, how long it ran without waiting for
        # segment page-ins (a copy finds the blocks in the segment).
        templates = self._templates
        if not self._samples:
            self._sample(0)
        for i in range(len(self.guests), guests):
            start = i * interval
            if self.ksm is not None:
                self.ksm.run_until(start)
            program, variant = s.program_of(i), s.variant_of(i)
            template = templates.get((program, variant)) if self._cloning() else None
            guest = (template[0].clone(i, retired=self.retire_guests)
                     if template is not None else None)
            if template is not None and guest is not None:
                # The same run again: it takes as long, minus the page-ins already done.
                guest.time = start + template[1]
                guest.page_in_ns = guest.stats.host_page_ins = 0
            else:
                try:
                    guest = self._first_run(i, program, start,
                                            _guest_seed(s.seed, program, variant, 0))
                except HostFullError as exc:
                    # Not even the frames to boot the guest (Guest): the simulated host is
                    # full. A bound the scenario broke, said plainly, not a crash inside.
                    raise HostFullError(
                        f"Scenario: guests {s.guests}: the simulated host's "
                        f"{self.memory.capacity * PAGE_SIZE / (1 << 30):g} GiB are full after "
                        f"{i} guests in {self.mode} mode; run at most {i} guests") from exc
                for run in range(1, s.runs_per_guest):
                    self.run_program(guest, program, seed=_guest_seed(s.seed, program,
                                                                      variant, run))
                if self._cloning() and self._repeats(program, variant):
                    templates[program, variant] = (guest, guest.time - start - guest.page_in_ns)
                elif self.retire_guests:
                    guest.retire()
            self.guests.append(guest)
            self._sample(guest.time)
            if progress is not None:
                progress(i + 1, guests)

    def _cloning(self) -> bool:
        """Copy guests now? Not while someone listens to the bus (a listener subscribed
        after the host was made too): events need every guest to run."""
        return self.clone_guests and not self.bus

    def _repeats(self, program: str, variant: int) -> bool:
        """Is this guest the first to make this seeded run, and may a later guest make it again?
        (Distinct guests, variants=None, never do: keeping each one whole for a clone that
        never comes would hold a thousand guests' page caches.)"""
        if (program, variant) in self._templates:
            return False
        return self.scenario.variants is not None or is_trace(program)

    def ksmd_times(self, guests: int | None = None) -> range:
        """When ksmd's tail is sampled: 50 steps from the end of the last of the first
        `guests` guests (default: all) to ksm_seconds later."""
        assert self.ksm is not None, "ksmd_times: not a ksm host"
        end = max((g.time for g in self.guests[:guests]), default=0)
        stop = end + int(self.scenario.ksm_seconds * 1e9)
        step = max(self.ksm.sleep_ns, (stop - end) // 50)
        return range(end + step, stop + 1, step)

    def ksmd_tail(self, prefix: RunResult, order: ScanOrder) -> RunResult | None:
        """`prefix` (this host's first guests, before ksmd scanned anything) with ksmd's
        tail after their last start, counted in bulk (mm/ksm_bulk.py) from `order` (these
        guests' pages at least); None if the host would fill up (then only ksm.py's page
        by page scan, whose allocations fail, gives the run)."""
        ksm = self.ksm
        assert ksm is not None and ksm.untouched, "ksmd_tail: ksmd has scanned already"
        n = prefix.scenario.guests
        if not fits(order, n, self.memory, ksm.max_page_sharing):
            return None
        times = self.ksmd_times(n)
        visits = wakeup_visits(times, ksm.next_wake, ksm.sleep_ns, ksm.pages_to_scan)
        scan = ksmd_passes(order, n, visits, self.memory, ksm.max_page_sharing)
        rows = np.repeat(prefix.timeline_bytes[-1:], len(times), axis=0)
        for kind in FrameKind:
            if kind != FrameKind.FREE:
                rows[:, CATEGORIES.index(KIND_CATEGORY[kind])] -= scan.freed[:, kind] * PAGE_SIZE
        ksm_column = CATEGORIES.index("ksm")
        for row, c in zip(rows, scan.counters, strict=True):
            row[ksm_column] += c.pages_shared * PAGE_SIZE + c.rmap_items * RMAP_ITEM_BYTES
        extra = dict(prefix.extra)
        extra["ksm_timeline"] = np.vstack([extra["ksm_timeline"], scan.timeline()])
        end = rows[-1] if len(rows) else prefix.timeline_bytes[-1]
        return RunResult("ksm", prefix.scenario,
                         dict(zip(CATEGORIES, end.tolist(), strict=True)), prefix.per_guest,
                         np.concatenate([prefix.timeline_ns, np.array(times, np.int64)]),
                         np.vstack([prefix.timeline_bytes, rows]), prefix.totals,
                         scan.counters[-1] if scan.counters else prefix.ksm, extra)

    def _first_run(self, gid: int, program: str, start: int, seed: int) -> Guest:
        """Guest `gid`, booted at `start`, after the first seeded run of `program`.

        A fresh guest's state right after exec does not depend on the seed: the first
        guest to exec `program` keeps a snapshot of it (off the host), and later ones
        start from a copy of that on frames of their own, then replay their own run.
        The copy's exec took as long, minus the segment page-ins already done (the
        blocks stay in the segment). Only where the host has the frames for the whole
        copy (else exec runs here, and fails where it would).
        """
        template = self._exec_templates.get(program) if self._cloning() else None
        if template is not None and \
                self.memory.capacity - self.memory.allocated >= template.frames:
            guest = template.guest.clone(gid, host=self.memory)
            assert guest is not None, "_first_run: the frames were counted"
            guest.time = start + template.exec_ns
            guest.page_in_ns = guest.stats.host_page_ins = 0
            self._replay_run(guest, program, guest.procs[template.pid], seed)
            return guest
        s = self.scenario
        preset = PRESETS[s.preset]
        guest = Guest(gid, self.memory, (s.guest_ram_mib << 20) >> PAGE_SHIFT, self.image,
                      segment=self.segment, preset=preset, host_preset=preset, bus=self.bus,
                      policy=s.policy, kernel=s.kernel)
        guest.time = start
        if is_trace(program) or not self._cloning():
            self.run_program(guest, program, seed)
            return guest
        mm = self._exec(guest, program)
        if mm is None:
            return guest
        if program not in self._exec_templates:
            scratch = HostMemory()
            snapshot = guest.clone(gid, host=scratch)
            assert snapshot is not None, "_first_run: a scratch host has room"
            self._exec_templates[program] = _ExecTemplate(
                snapshot, mm.pid, guest.time - start - guest.page_in_ns, scratch.allocated - 1)
        self._replay_run(guest, program, mm, seed)
        return guest

    def run_program(self, guest: Guest, program: str, seed: int) -> None:
        """exec `program` in `guest` and replay a seeded run of it (a trace: replay it)."""
        if is_trace(program):
            replay(guest, self.workloads.traces[program])
            return
        mm = self._exec(guest, program)
        if mm is not None:
            self._replay_run(guest, program, mm, seed)

    def _exec(self, guest: Guest, program: str) -> MmStruct | None:
        """A new process in `guest` exec'ing `program`; None if fork failed (the guest is
        out of memory, counted in its stats)."""
        model = program_model(program)
        mm = guest.new_process(program)
        if mm is not None:
            heap_pages = _heap_pages(model, self.scenario.heap_share, self.image)
            exec_image(guest, mm, model.binary, heap_pages=max(heap_pages, 1))
        return mm

    def _replay_run(self, guest: Guest, program: str, mm: MmStruct, seed: int) -> None:
        """Replay the run of seed `seed` in `mm`, which has just exec'd `program`."""
        model = program_model(program)
        heap_pages = _heap_pages(model, self.scenario.heap_share, self.image)
        layout = tuple((v.start, v.end, int(v.prot), v.name, v.anonymous) for v in mm.vmas)
        replay(guest, _trace(model, heap_pages, seed, layout), mm)

    def _sample(self, time_ns: int, ksm: KsmCounters | None = None) -> None:
        """Host memory by category at `time_ns`, and ksmd's counters (`ksm`: these)."""
        self._samples_ns.append(time_ns)
        by = self._bytes_by_category()
        self._samples.append([by[c] for c in CATEGORIES])
        if self.ksm is not None:
            c = self.ksm.counters if ksm is None else ksm
            self._ksm_samples.append([c.pages_shared, c.pages_sharing, c.pages_unshared,
                                      c.pages_volatile, c.full_scans, c.pages_scanned])

    def _bytes_by_category(self) -> dict[str, int]:
        out = dict.fromkeys(CATEGORIES, 0)
        for kind, count in self.memory.counts_by_kind().items():
            out[KIND_CATEGORY[kind]] += count * PAGE_SIZE
        if self.ksm is not None:
            out["ksm"] += len(self.ksm.rmap_items) * RMAP_ITEM_BYTES
        return out

    def result(self) -> RunResult:
        """The host's state now, as a RunResult."""
        per_guest: list[dict[str, Any]] = []
        for g in self.guests:
            counts = g.page_counts()
            per_guest.append({"guest": g.gid, "program": self.scenario.program_of(g.gid),
                              **{f"{k}_pages": v for k, v in counts.items()},
                              **g.stats.as_dict(), "time_ns": g.time,
                              "resident_pages": int(np.count_nonzero(g.backing >= 0))})
        keys = ("major_faults", "minor_faults", "disk_read_bytes", "tlb_misses", "walk_refs",
                "cow_faults", "cow_ksm", "accesses", "sigsegv", "sigbus", "oom",
                "host_page_ins")
        totals = {k: sum(int(p[k]) for p in per_guest) for k in keys}
        extra: dict[str, Any] = {}
        if self.ksm is not None:
            extra["ksm_timeline"] = np.array(self._ksm_samples, dtype=np.int64)
        if self.scenario.real_files and self.workloads.files is not None:
            extra["real_files"] = self.workloads.files.as_dict()  # which files are real
        if self.segment is not None and self.segment.dcss:
            extra["dcss"] = [d.name for d in self.segment.dcss]  # the saved segments
        return RunResult(self.mode, self.scenario, self._bytes_by_category(), per_guest,
                         np.array(self._samples_ns, dtype=np.int64),
                         np.array(self._samples, dtype=np.int64), totals,
                         dataclasses.replace(self.ksm.counters) if self.ksm else None, extra)


class _ExecTemplate(NamedTuple):
    """A fresh guest right after exec'ing a program (Host._first_run)."""

    guest: Guest  # a snapshot on a scratch host of its own
    pid: int  # the process that exec'd
    exec_ns: int  # how long exec took, without waiting for segment page-ins
    frames: int  # host frames a copy takes (RAM and EPT)


@lru_cache(maxsize=64)
def _deal_cached(mix: tuple[tuple[str, float], ...], upto: int) -> tuple[str, ...]:
    total = sum(share for _, share in mix)
    if total <= 0:
        raise ParameterError("Scenario: the workload mix has no positive share")
    counts = [0] * len(mix)
    dealt = []
    for i in range(upto):
        k = max(range(len(mix)), key=lambda j: (mix[j][1] / total * (i + 1) - counts[j], -j))
        counts[k] += 1
        dealt.append(mix[k][0])
    return tuple(dealt)


def _deal(mix: tuple[tuple[str, float], ...], upto: int) -> tuple[str, ...]:
    """The programs of guests 0 .. upto-1 (dealt in chunks of 1024, cached)."""
    return _deal_cached(mix, -(-upto // 1024) * 1024)


def _guest_seed(seed: int, program: str, variant: int, run: int) -> int:
    """The seed of one run: it depends on nothing but these values (not on the process)."""
    name = int.from_bytes(program.encode()[:16].ljust(16, b"\0"), "little")
    return int(np.random.SeedSequence([seed, name, variant, run]).generate_state(1)[0])


def _heap_pages(model: ProgramModel, heap_share: float | None, image: Ext2Image) -> int:
    if heap_share is None:
        return model.heap_pages
    file_pages = -(-image.stat(model.binary).st_size // PAGE_SIZE)
    return model.with_heap_share(heap_share, int(file_pages * model.main_text)).heap_pages


@lru_cache(maxsize=4096)
def _trace(model: ProgramModel, heap_pages: int, seed: int,
           layout: tuple[tuple[int, int, int, str, bool], ...]) -> PageTrace:
    """The seeded trace of one run, shared by every mode that replays the same layout."""
    from xipmodel.mm.vma import Prot, Vma

    vmas = [Vma(start, end, Prot(prot), ino=None if anon else 0, name=name)
            for start, end, prot, name, anon in layout]
    return synthesize(dataclasses.replace(model, heap_pages=heap_pages), vmas, seed)


def _run_one(args: tuple[Scenario, str]) -> RunResult:
    scenario, mode = args
    return Host(scenario, mode).run(ksmd_in_bulk=True)


def compare(scenario: Scenario, modes: Sequence[str] = MODES,
            executor: Executor | None = None,
            progress: Callable[[int, int], None] | None = None) -> Comparison:
    """Run `scenario` in each of `modes` (in parallel through `executor` if given).

    `progress(done, total)` is called as modes finish.
    """
    _check_modes("compare", modes)
    order = longest_first(modes)
    results = _run_jobs([(scenario, m) for m in order], executor, progress)
    by_mode = dict(zip(order, results, strict=True))
    return Comparison(scenario, {m: by_mode[m] for m in modes})


_COST_RANK: Final = {"ksm": 3, "pagecache": 2, "xip": 1, "dax": 1}


def longest_first(modes: Sequence[str]) -> list[str]:
    """`modes` with the longest runs first, so that a pool of workers finishes together."""
    return sorted(modes, key=lambda m: _COST_RANK.get(m, 0), reverse=True)


def _check_modes(who: str, modes: object) -> None:
    """`modes` names one or more of MODES, each once, else ParameterError naming it."""
    if isinstance(modes, str) or not isinstance(modes, Sequence) or not modes:
        raise ParameterError(f"{who}: modes {modes!r} is not a non-empty sequence of "
                             f"{', '.join(MODES)}")
    for mode in modes:
        if mode not in MODES:
            raise ParameterError(f"{who}: mode {mode!r} is not one of {', '.join(MODES)}")
    if len(set(modes)) != len(modes):
        raise ParameterError(f"{who}: modes {tuple(modes)!r} names a mode twice")


def _run_jobs(jobs: list[tuple[Scenario, str]], executor: Executor | None,
              progress: Callable[[int, int], None] | None) -> list[RunResult]:
    """Run (scenario, mode) jobs in order, or on `executor`; results in the jobs' order."""
    if executor is None:
        results = []
        for job in jobs:
            results.append(_run_one(job))
            if progress is not None:
                progress(len(results), len(jobs))
        return results
    futures = [executor.submit(_run_one, job) for job in jobs]
    if progress is not None:
        for done, _ in enumerate(as_completed(futures), 1):
            progress(done, len(jobs))
    return [f.result() for f in futures]


def sweep(scenario: Scenario, parameter: str, values: Iterable[Any],
          modes: Sequence[str] = MODES, executor: Executor | None = None,
          progress: Callable[[int, int], None] | None = None) -> list[Comparison]:
    """`compare` for each value of one Scenario field (e.g. "guests", "heap_share")."""
    if parameter not in {f.name for f in dataclasses.fields(Scenario)}:
        raise ParameterError(f"sweep: {parameter!r} is not a Scenario field")
    _check_modes("sweep", modes)
    scenarios = [scenario.replace(**{parameter: v}) for v in values]
    results = _run_jobs([(s, m) for s in scenarios for m in modes], executor, progress)
    out = []
    for i, s in enumerate(scenarios):
        chunk = results[i * len(modes):(i + 1) * len(modes)]
        out.append(Comparison(s, dict(zip(modes, chunk, strict=True))))
    return out


def results_table(comparison: Comparison) -> list[dict[str, Any]]:
    """One row per mode with the headline numbers (for tables and DataFrames)."""
    rows = []
    for mode, r in comparison.results.items():
        row = r.as_dict()
        row.pop("ksm", None)
        row["saving_vs_pagecache"] = (comparison.saving(mode)
                                      if "pagecache" in comparison.results else None)
        rows.append(row)
    return rows
