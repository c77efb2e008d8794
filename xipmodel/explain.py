"""Events to step-by-step text: the "solve" mode of an OSTEP homework simulator.

`explain` reads an event stream and groups it per access. A `TlbLookup`
starts an access; what the stream holds after it decides what the access was::

    TlbLookup ─ WalkStep* ─ (mechanism events)* ─ Fault      an access that faulted
    TlbLookup ─ WalkStep*                                    an access that did not
    anything else                                            a step on its own
                                                             (read(), ksmd, reclaim)

handle_mm_fault always ends with its Fault event, so the events between the
walk and the Fault are what the fault handler did. They are printed under the
Fault line that names the handler::

    [guest 0] VA 0x403000: TLB miss → PML4[0x000] not present (5 references)
        page fault (read) → dax_iomap_fault [NOPAGE]: page 3 is image block 15: ...
        host pages in image block 15 → frame 0xa (first guest to touch it)
        → PTE points into the shared segment, frame 0xa (image block 15)

Runs of events that read as one step are summarised (the pages one readahead
brought in, the neighbours fault-around mapped, ksmd wake-ups that merged
nothing); `verbose=True` prints each of them, and every memory reference of a
nested walk, numbered.

Nothing here prints: lines are returned. Not decoded: the frame a present PTE
holds on a TLB hit or a fault-free walk (the events carry raw entries, and
their format depends on the MMU preset).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from xipmodel.events import (
    Cow,
    DiskRead,
    Event,
    EventBus,
    Fault,
    HostPageIn,
    KsmMerge,
    KsmScan,
    Oom,
    PageCacheEvict,
    PageCacheInsert,
    PteInstall,
    Readahead,
    TlbLookup,
    WalkStep,
)
from xipmodel.mm.memory import VmFault
from xipmodel.params import PAGE_SHIFT

__all__ = ["Recorder", "explain", "fault_flags"]

GuestNames = Mapping[int, str]
_INDENT = "    "


@dataclass
class _Access:
    """One CPU access as the stream tells it: the lookup, the walk, what the fault did."""

    lookup: TlbLookup
    walk: list[WalkStep] = field(default_factory=list)
    steps: list[Event] = field(default_factory=list)  # events after the walk
    fault: Fault | None = None

    def takes(self, event: Event) -> bool:
        """Is `event` part of this access? (A Fault ends it; other guests and ksmd never join.)"""
        if self.fault is not None or event.guest != self.lookup.guest:
            return False
        return not isinstance(event, (TlbLookup, KsmScan, KsmMerge))


def explain(events: Iterable[Event], *, guest_names: GuestNames | None = None,
            verbose: bool = False) -> list[str]:
    """The events as OSTEP-style text: one line per access and per mechanism step.

    `guest_names` maps guest ids to the names lines start with ("guest 3" otherwise);
    `verbose` lists every walk reference and every page of a readahead.
    """
    names = guest_names or {}
    lines: list[str] = []
    access: _Access | None = None
    loose: list[Event] = []  # events outside any access, waiting to be summarised as runs
    for event in events:
        if access is not None and access.takes(event):
            _add_to_access(access, event)
            continue
        if access is not None:
            lines += _access_lines(access, names, verbose)
            loose += _after_access(access)
            access = None
        if isinstance(event, TlbLookup):
            lines += _loose_lines(loose, names, verbose)
            loose = []
            access = _Access(event)
        else:
            loose.append(event)
    if access is not None:
        lines += _access_lines(access, names, verbose)
        loose += _after_access(access)
    return lines + _loose_lines(loose, names, verbose)


def _add_to_access(access: _Access, event: Event) -> None:
    if isinstance(event, WalkStep) and not access.steps:
        access.walk.append(event)
    elif isinstance(event, Fault):
        access.fault = event
    else:
        access.steps.append(event)


def _after_access(access: _Access) -> list[Event]:
    """Events that followed a fault-free access happened after it, not inside it."""
    return access.steps if access.fault is None else []


def _who(gid: int, names: GuestNames) -> str:
    if gid < 0:
        return "[host]"
    return f"[{names.get(gid, f'guest {gid}')}]"


# ── one access ────────────────────────────────────────────────────────────────────────────

def _access_lines(access: _Access, names: GuestNames, verbose: bool) -> list[str]:
    """The access line, the numbered walk (verbose), then the fault and what it did."""
    lookup, fault = access.lookup, access.fault
    va = fault.address if fault is not None else lookup.vpn << PAGE_SHIFT
    lines = [f"{_who(lookup.guest, names)} VA {va:#x}: {_translation(access)}"]
    if verbose:
        lines += [_INDENT + line for line in _walk_references(access.walk)]
    if fault is None:
        return lines
    lines.append(_INDENT + _fault_line(fault))
    fault_vpn = fault.address >> PAGE_SHIFT
    lines += [_INDENT + line for line in _step_lines(access.steps, fault_vpn, names, verbose)]
    return lines + [_INDENT + line for line in _fault_outcome(fault)]


def _translation(access: _Access) -> str:
    """TLB hit, or the guest-table chain of the walk: `PML4[0x000] → … → PT[0x003]`."""
    if access.lookup.hit:
        if access.fault is not None:
            return "TLB hit, but the cached entry does not allow this access"
        return "TLB hit"
    guest_steps = [s for s in access.walk if not s.nested]
    chain = " → ".join(f"{s.level}[{s.index:#05x}]" for s in guest_steps)
    refs = len(access.walk)
    # A walk that stopped at a guest entry ends with that entry: it was not present.
    # (A walk that stops in the host dimension, an EPT violation, cannot happen in this
    # model: the guest backs every frame it uses before mapping it.)
    if _walk_stopped(access.walk):
        return f"TLB miss → {chain} not present ({refs} references)"
    return f"TLB miss → {chain} → page present ({refs} references)"


def _walk_stopped(walk: Sequence[WalkStep]) -> bool:
    return bool(walk) and not walk[-1].nested


def _walk_references(walk: Sequence[WalkStep]) -> list[str]:
    """Every memory reference of the nested walk, numbered (host = the EPT/NPT dimension)."""
    lines = []
    for number, step in enumerate(walk, 1):
        dim = "host " if step.nested else "guest"
        missing = " (not present)" if step is walk[-1] and _walk_stopped(walk) else ""
        lines.append(f"{number:2}. {dim} {step.level}[{step.index:#05x}] of table "
                     f"{step.table:#x} = {step.entry:#x}{missing}")
    return lines


def fault_flags(result: int) -> str:
    """VM_FAULT_* flags by name, `MAJOR|LOCKED`; bits VmFault does not name are shown in hex."""
    flags = VmFault(result)
    named = [f.name for f in VmFault if f in flags and f.name]
    rest = result & ~sum(VmFault(f) for f in VmFault)
    if rest:
        named.append(f"{rest:#x}")
    return "|".join(named) or "NONE"


def _fault_line(fault: Fault) -> str:
    kind = "write" if fault.write else "read"
    detail = f": {fault.detail}" if fault.detail else ""
    return f"page fault ({kind}) → {fault.handler} [{fault_flags(fault.result)}]{detail}"


def _fault_outcome(fault: Fault) -> list[str]:
    """What an error result means for the process (nothing for a fault that was served)."""
    flags = VmFault(fault.result)
    if flags & VmFault.SIGBUS:
        return ["→ SIGBUS: the process is killed, the access cannot complete"]
    if flags & VmFault.SIGSEGV:
        return ["→ SIGSEGV: no mapping allows this access"]
    if flags & VmFault.OOM:
        return ["→ out of memory: the fault cannot be served"]
    return []


# ── mechanism steps, with runs summarised ─────────────────────────────────────────────────

def _loose_lines(events: Sequence[Event], names: GuestNames, verbose: bool) -> list[str]:
    """Steps outside any access, each line naming its guest (runs are one guest's)."""
    lines = []
    for run in _split_by_guest(events):
        who = _who(run[0].guest if not isinstance(run[0], KsmScan) else -1, names)
        lines += [f"{who} {line}" for line in _step_lines(run, None, names, verbose)]
    return lines


def _split_by_guest(events: Sequence[Event]) -> list[list[Event]]:
    runs: list[list[Event]] = []
    for event in events:
        if runs and runs[-1][-1].guest == event.guest:
            runs[-1].append(event)
        else:
            runs.append([event])
    return runs


def _run_kind(event: Event, fault_vpn: int | None) -> str | None:
    """Which run `event` belongs to, or None when it is a step of its own."""
    if isinstance(event, (DiskRead, PageCacheInsert, PageCacheEvict)):
        return "page-cache fill"  # ends with the Readahead that asked for it, if any
    if isinstance(event, PteInstall) and fault_vpn is not None:
        return "PTE installs"  # the faulting page's, and its fault-around neighbours'
    if isinstance(event, KsmScan) and event.merged == 0:
        return "idle ksmd"
    if isinstance(event, KsmMerge):
        return "ksm merges"
    return None


def _step_lines(events: Sequence[Event], fault_vpn: int | None, names: GuestNames,
                verbose: bool) -> list[str]:
    """One line per mechanism step; a run of events that is one step is summarised."""
    lines: list[str] = []
    run: list[Event] = []
    run_kind: str | None = None
    for event in events:
        kind = _run_kind(event, fault_vpn)
        if run and kind != run_kind:
            # A readahead's Readahead event comes after the pages it read: it closes the run.
            if isinstance(event, Readahead) and run_kind == "page-cache fill":
                lines += _readahead_lines(event, run, verbose)
                run = []
                continue
            lines += _run_lines(run_kind, run, fault_vpn, names, verbose)
            run = []
        if kind is None:
            lines += _step_line(event, fault_vpn, verbose)
        else:
            run.append(event)
        run_kind = kind
    return lines + (_run_lines(run_kind, run, fault_vpn, names, verbose) if run else [])


def _step_line(event: Event, fault_vpn: int | None, verbose: bool) -> list[str]:
    """A step that stands alone."""
    if isinstance(event, Readahead):
        return _readahead_lines(event, [], verbose)
    if isinstance(event, PteInstall):
        return [_pte_install(event, with_va=fault_vpn is None)]
    if isinstance(event, HostPageIn):
        return [f"host pages in image block {event.block} → frame {event.hpfn:#x} "
                f"(first guest to touch it)"]
    if isinstance(event, Cow):
        return [_cow(event)]
    if isinstance(event, KsmScan):
        return [f"ksmd scans {event.scanned} pages: {event.merged} more shared "
                f"(full scans so far: {event.full_scans})"]
    if isinstance(event, Oom):
        return [f"out of memory in the {event.where}: nothing left to reclaim"]
    if isinstance(event, Fault):  # handle_mm_fault called without an access (a prefault)
        return [_fault_line(event), *_fault_outcome(event)]
    if isinstance(event, TlbLookup | WalkStep):
        return []  # a walk reference with no lookup before it has nothing to add
    return [f"{type(event).__name__}: {event}"]  # an event this module does not know yet


def _run_lines(kind: str | None, run: Sequence[Event], fault_vpn: int | None,
               names: GuestNames, verbose: bool) -> list[str]:
    """A run of one `kind`: each event (verbose), else a summary."""
    if kind == "page-cache fill":
        return _page_cache_fill(run, verbose)
    if kind == "PTE installs":
        return _pte_installs([e for e in run if isinstance(e, PteInstall)], fault_vpn, verbose)
    if kind == "idle ksmd":
        return _idle_ksmd([e for e in run if isinstance(e, KsmScan)], verbose)
    return _ksm_merges([e for e in run if isinstance(e, KsmMerge)], names, verbose)


# ── page tables ───────────────────────────────────────────────────────────────────────────

_SEGMENT = re.compile(r"shared segment \(image block (\d+)\)")
_PAGE_CACHE = re.compile(r"page cache \(inode (\d+) page (\d+)\)")


def _pte_install(e: PteInstall, with_va: bool = False) -> str:
    """Where a new PTE points: the shared segment, a page-cache copy, the zero page, a copy."""
    mode = "writable" if e.writable else "read-only"
    at = f" for VA {e.vpn << PAGE_SHIFT:#x}" if with_va else ""
    segment = _SEGMENT.fullmatch(e.what)
    if segment:
        return (f"→ PTE{at} points into the shared segment, frame {e.hpfn:#x} "
                f"(image block {segment[1]})")
    cached = _PAGE_CACHE.fullmatch(e.what)
    if cached:
        return (f"→ PTE{at} points at page-cache copy in guest frame {e.gpfn:#x} "
                f"(inode {cached[1]} page {cached[2]}; host frame {e.hpfn:#x}), {mode}")
    if e.what == "zero page":
        return f"→ PTE{at} points at the zero page, {mode}"
    return (f"→ PTE{at} points at the {e.what} in guest frame {e.gpfn:#x} "
            f"(host frame {e.hpfn:#x}), {mode}")


def _pte_installs(installs: Sequence[PteInstall], fault_vpn: int | None,
                  verbose: bool) -> list[str]:
    """The faulting page's PTE, after the cached neighbours filemap_map_pages mapped with it."""
    own = [e for e in installs if e.vpn == fault_vpn]
    neighbours = [e for e in installs if e.vpn != fault_vpn]
    if verbose or not neighbours:
        lines = [_pte_install(e, with_va=True) for e in neighbours]
    else:
        vas = [e.vpn << PAGE_SHIFT for e in neighbours]
        copies = "its page-cache copy" if len(vas) == 1 else "their page-cache copies"
        lines = [f"→ fault-around maps {_count(len(neighbours), 'cached neighbour')} "
                 f"(VA {_ranges(vas, PAGE_SHIFT)}) to {copies}, read-only"]
    return lines + [_pte_install(e) for e in own]


def _cow(e: Cow) -> str:
    source = {"page cache": "the page-cache page", "shared segment": "the shared-segment block",
              "zero page": "the zero page", "ksm": "the KSM-merged page",
              "anonymous": "the anonymous page"}.get(e.source, e.source)
    return (f"copy-on-write: a private copy of {source} for VA {e.vpn << PAGE_SHIFT:#x} "
            f"in guest frame {e.new_gpfn:#x}")


# ── the page cache ───────────────────────────────────────────────────────────────────────

_READAHEAD_NAMES = {"read-around": "read-around", "sync": "readahead",
                    "exec read-around": "exec read-around (from the fault, Linux 6.16+)",
                    "async": "async readahead", "single": "single-page read"}


def _readahead_lines(e: Readahead, fill: Sequence[Event], verbose: bool) -> list[str]:
    """The window, then what filling it cost: disk reads, page-cache inserts, evictions."""
    name = _READAHEAD_NAMES.get(e.kind, e.kind)
    line = (f"{name}: pages [{e.start}, {e.start + e.size}) of inode {e.ino}, "
            f"{e.async_size} async; {_count(e.pages_read, 'page')} read")
    return [line, *_page_cache_fill(fill, verbose)]


def _page_cache_fill(fill: Sequence[Event], verbose: bool) -> list[str]:
    if verbose:
        return [_fill_event(e) for e in fill]
    evicted = [e for e in fill if isinstance(e, PageCacheEvict)]
    reads = [e for e in fill if isinstance(e, DiskRead)]
    inserts = [e for e in fill if isinstance(e, PageCacheInsert)]
    holes = len(inserts) - len(reads)  # a page with no image block is zero-filled, no I/O
    return _evictions(evicted) + _disk_reads(reads) + _inserts(inserts, holes)


def _fill_event(e: Event) -> str:
    if isinstance(e, DiskRead):
        return f"disk read: {e.nbytes} bytes of image block {e.block}"
    if isinstance(e, PageCacheInsert):
        return (f"page cache: inode {e.ino} page {e.pgoff} in guest frame {e.gpfn:#x}"
                f"{_refault_note(int(e.refault), int(e.activated))}")
    assert isinstance(e, PageCacheEvict), f"_fill_event: {type(e).__name__}"
    return f"reclaim evicts inode {e.ino} page {e.pgoff} from guest frame {e.gpfn:#x}"


def _evictions(evicted: Sequence[PageCacheEvict]) -> list[str]:
    if not evicted:
        return []
    frames = [e.gpfn for e in evicted]
    return [f"reclaim evicts {_count(len(evicted), 'page-cache page')} "
            f"({_per_inode(evicted)}) from {_plural(frames, 'guest frame')} "
            f"{_ranges(frames, hex_=True)}"]


def _disk_reads(reads: Sequence[DiskRead]) -> list[str]:
    if not reads:
        return []
    nbytes = sum(e.nbytes for e in reads)
    blocks = [e.block for e in reads]
    return [f"disk read: {nbytes} bytes ({_count(len(reads), 'page')}) from "
            f"{_plural(blocks, 'image block')} {_ranges(blocks)}"]


def _inserts(inserts: Sequence[PageCacheInsert], holes: int) -> list[str]:
    if not inserts:
        return []
    refaults = sum(e.refault for e in inserts)
    activated = sum(e.activated for e in inserts)
    frames = [e.gpfn for e in inserts]
    return [f"page cache: {_count(len(inserts), 'page')} ({_per_inode(inserts)}) in "
            f"{_plural(frames, 'guest frame')} {_ranges(frames, hex_=True)}"
            f"{_refault_note(refaults, activated)}{_holes_note(holes)}"]


def _holes_note(holes: int) -> str:
    return f"; {_count(holes, 'hole')} zero-filled" if holes > 0 else ""


def _refault_note(refaults: int, activated: int) -> str:
    if not refaults and not activated:
        return ""
    return f" ({refaults} refaulted, {activated} activated)"


def _per_inode(pages: Sequence[PageCacheInsert | PageCacheEvict]) -> str:
    """`inode 12 pages 0–31` for each inode, in order of appearance."""
    by_ino: dict[int, list[int]] = {}
    for e in pages:
        by_ino.setdefault(e.ino, []).append(e.pgoff)
    return "; ".join(f"inode {ino} {_plural(p, 'page')} {_ranges(p)}"
                     for ino, p in by_ino.items())


# ── KSM ───────────────────────────────────────────────────────────────────────────────────

def _idle_ksmd(scans: Sequence[KsmScan], verbose: bool) -> list[str]:
    if verbose:
        return [f"ksmd scans {e.scanned} pages: nothing merged (full scans so far: "
                f"{e.full_scans})" for e in scans]
    pages = sum(e.scanned for e in scans)
    return [f"ksmd: {_count(len(scans), 'wake-up')} scan {pages} pages, nothing merged "
            f"(full scans so far: {scans[-1].full_scans})"]


def _ksm_merges(merges: Sequence[KsmMerge], names: GuestNames, verbose: bool) -> list[str]:
    def of(e: KsmMerge) -> str:
        return _who(e.guest, names).strip("[]")

    if verbose:
        return [f"ksmd merges host frame {e.hpfn:#x} of {of(e)} into KSM frame {e.into:#x}"
                for e in merges]
    guests = list(dict.fromkeys(of(e) for e in merges))
    into = sorted({e.into for e in merges})
    return [f"ksmd merges {_count(len(merges), 'page')} of {', '.join(guests)} into "
            f"{_plural(into, 'KSM frame')} {_ranges(into, hex_=True)}"]


# ── numbers ────────────────────────────────────────────────────────────────────────────────

def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _plural(values: Sequence[int], noun: str) -> str:
    """`noun` or `nouns`, as the number of distinct `values` asks."""
    return noun if len(set(values)) == 1 else noun + "s"


def _ranges(values: Sequence[int], shift: int = 0, hex_: bool = False) -> str:
    """Sorted runs: `12–23, 25–44`; with `shift`, runs of consecutive `v >> shift` (hex)."""
    fmt: Callable[[int], str] = (lambda v: f"{v:#x}") if hex_ or shift else str
    keys = sorted(set(values))
    runs: list[tuple[int, int]] = []
    for v in keys:
        if runs and (v >> shift) == (runs[-1][1] >> shift) + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return ", ".join(fmt(a) if a == b else f"{fmt(a)}–{fmt(b)}" for a, b in runs)


# ── recording ────────────────────────────────────────────────────────────────────────────

class Recorder:
    """Records the events of one or more buses while open::

        with Recorder(bus) as rec:
            guest.access(mm, va, "x")
        rec.events, rec.lines(), rec.text()

    Several buses (a guest's, the shared segment's, ksmd's) share one list, in emission order.
    """

    def __init__(self, bus: EventBus, *more: EventBus, guest_names: GuestNames | None = None
                 ) -> None:
        self.buses = (bus, *more)
        self.guest_names = guest_names
        self.events: list[Event] = []
        self._unsubscribe: list[Callable[[], None]] = []

    def __enter__(self) -> Recorder:
        self._unsubscribe = [bus.subscribe(self.events.append) for bus in _unique(self.buses)]
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._unsubscribe = []

    def lines(self, *, verbose: bool = False) -> list[str]:
        """`explain` of what was recorded."""
        return explain(self.events, guest_names=self.guest_names, verbose=verbose)

    def text(self, *, verbose: bool = False) -> str:
        """The lines joined, one per line."""
        return "".join(line + "\n" for line in self.lines(verbose=verbose))


def _unique(buses: Iterable[EventBus]) -> list[EventBus]:
    """Each bus once (the same bus passed twice would record every event twice)."""
    seen: list[EventBus] = []
    for bus in buses:
        if not any(bus is s for s in seen):
            seen.append(bus)
    return seen
