"""The one observation channel: typed events at each mechanism's entry and exit.

The model never prints. Each mechanism emits small frozen records through an
`EventBus`; views, explain-traces and tests subscribe with plain callables::

    bus = EventBus()
    seen = []
    unsubscribe = bus.subscribe(seen.append)
    ...                                  # run the model
    unsubscribe()

Emitting costs nothing when nobody listens: callers test `if bus:` before they
build an event, so large experiments run at full speed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Cow",
    "DiskRead",
    "Event",
    "EventBus",
    "Fault",
    "HostPageIn",
    "KsmMerge",
    "KsmScan",
    "Oom",
    "PageCacheEvict",
    "PageCacheInsert",
    "PteInstall",
    "Readahead",
    "TlbLookup",
    "WalkStep",
]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened at model time `time` in guest `guest` (-1: the host)."""

    time: int
    guest: int


@dataclass(frozen=True, slots=True)
class TlbLookup(Event):
    """A TLB lookup for (asid, vpn): hit or miss."""

    asid: int
    vpn: int
    hit: bool


@dataclass(frozen=True, slots=True)
class WalkStep(Event):
    """One memory reference of a page walk: `level` entry `index` of the table in `table`."""

    level: str
    table: int
    index: int
    entry: int
    nested: bool = False  # a reference of the host (EPT/NPT) dimension


@dataclass(frozen=True, slots=True)
class Fault(Event):
    """A page fault at `address`, served by `handler` (a kernel function), with its flags."""

    pid: int
    address: int
    write: bool
    handler: str
    result: int  # VmFault flags
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PteInstall(Event):
    """A PTE for `vpn` now points at guest frame `gpfn` (host frame `hpfn`)."""

    pid: int
    vpn: int
    gpfn: int
    hpfn: int
    writable: bool
    what: str  # in words: "shared segment (image block 7)", "page cache (inode 12 page 3)", ...
    kind: str = ""  # "segment", "zero", "pagecache", "anon", "cow", "pagetable"
    block: int = -1  # the image block, for a shared-segment frame
    ino: int = -1  # the file page, for a page-cache page
    pgoff: int = -1


@dataclass(frozen=True, slots=True)
class PageCacheInsert(Event):
    """Page `pgoff` of inode `ino` entered the guest's page cache in guest frame `gpfn`."""

    ino: int
    pgoff: int
    gpfn: int
    refault: bool = False
    activated: bool = False


@dataclass(frozen=True, slots=True)
class PageCacheEvict(Event):
    """Page `pgoff` of inode `ino` left the page cache (a shadow entry remembers when)."""

    ino: int
    pgoff: int
    gpfn: int


@dataclass(frozen=True, slots=True)
class Readahead(Event):
    """A readahead window: pages [start, start + size) of `ino`, the last `async_size` marked."""

    ino: int
    start: int
    size: int
    async_size: int
    kind: str  # "read-around", "exec read-around", "sync", "async", "single"
    pages_read: int


@dataclass(frozen=True, slots=True)
class DiskRead(Event):
    """The guest read `nbytes` from its virtual disk (image blocks `block`…)."""

    block: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class HostPageIn(Event):
    """The host paged in image block `block` of the shared segment into host frame `hpfn`."""

    block: int
    hpfn: int


@dataclass(frozen=True, slots=True)
class Cow(Event):
    """Copy-on-write: a private copy of `source` for a write at `vpn`."""

    pid: int
    vpn: int
    source: str  # "page cache", "shared segment", "zero page", "ksm", "anonymous"
    new_gpfn: int


@dataclass(frozen=True, slots=True)
class KsmScan(Event):
    """One ksmd wake-up: `scanned` pages looked at."""

    scanned: int
    merged: int
    full_scans: int


@dataclass(frozen=True, slots=True)
class KsmMerge(Event):
    """ksmd merged host frame `hpfn` into the stable KSM frame `into`."""

    hpfn: int
    into: int


@dataclass(frozen=True, slots=True)
class Oom(Event):
    """Out of memory: nothing left to reclaim (`where`: "guest" or "host")."""

    where: str


Hook = Callable[[Event], None]


class EventBus:
    """Delivers events to subscribed callables, in subscription order."""

    def __init__(self) -> None:
        self._hooks: list[Hook] = []

    def subscribe(self, hook: Hook) -> Callable[[], None]:
        """Call `hook(event)` for every event from now on; returns the unsubscribe function."""
        self._hooks.append(hook)

        def unsubscribe() -> None:
            if hook in self._hooks:
                self._hooks.remove(hook)

        return unsubscribe

    def emit(self, event: Event) -> None:
        for hook in self._hooks:
            hook(event)

    def __bool__(self) -> bool:
        """True when someone listens (build events only then)."""
        return bool(self._hooks)
