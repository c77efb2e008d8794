"""Invariants of the memory model under random operation sequences (hypothesis stateful).

Several guests share one host: some mount the frozen image -o xip from one
`SharedSegment`, the others read it through their own page cache. Their RAM is
small (96–256 pages) so reclaim and OOM happen. Processes map the image's files
the way exec does (private r-x text, private rw- data, anonymous rw-), touch
pages, read files, exit; the guests reclaim; ksmd merges. After every step the
`@invariant` methods check what must always hold: every host frame accounted
once, no writable mapping of anything shared, no write visible to another
guest, the frozen image untouched, guest frames adding up, rmap and TLB
consistent with the page tables.

Bugs the machine found (a page reclaimed between ->fault and its PTE install,
a frame leaked when a page table could not be allocated, fork crashing in a
full guest) are kept as plain scenario tests at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from xipmodel.ext2 import Ext2Image, File, build_image
from xipmodel.mm.frames import (
    CONTENT_BLOCK,
    CONTENT_ZERO,
    OWNER_HOST,
    OWNER_SEGMENT,
    FrameKind,
    HostMemory,
)
from xipmodel.mm.guest import Guest
from xipmodel.mm.ksm import Ksm
from xipmodel.mm.memory import VmFault
from xipmodel.mm.rmap import folio_mapcount
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.vma import MmStruct
from xipmodel.mm.vmscan import try_to_free_pages
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE, Pte

# --- the frozen image ----------------------------------------------------------------------

_rng = np.random.default_rng(2004)


def _random_pages(n: int) -> bytes:
    return _rng.integers(0, 256, n * PAGE_SIZE, dtype=np.uint8).tobytes()


def _sparse_data() -> bytes:
    """Six pages: data, hole, hole, data, hole, data (zero blocks become holes)."""
    zero = bytes(PAGE_SIZE)
    return b"".join(_random_pages(1) if p in (0, 3, 5) else zero for p in range(6))


IMAGE_BYTES = build_image({
    "/bin/app": _random_pages(40),
    "/lib/libc.so": _random_pages(32),
    "/usr/share/big": _random_pages(120),
    "/data/sparse": File(_sparse_data(), sparse=True),
    # Three pages of data, then a hole up to a size that is not a page multiple:
    # pages 3..7 are holes at the end, page 8 onwards is beyond EOF.
    "/data/tail": File(_random_pages(3), size=7 * PAGE_SIZE + 123),
    "/etc/motd": b"frozen, populated, shared\n",
}, block_size=PAGE_SIZE, timestamp=0)
IMAGE = Ext2Image.open(IMAGE_BYTES)
IMAGE_SHA256 = IMAGE.sha256()
FILES = ("/bin/app", "/lib/libc.so", "/usr/share/big", "/data/sparse", "/data/tail",
         "/etc/motd")


def file_pages(path: str) -> int:
    return -(-IMAGE.file_size(IMAGE.lookup(path)) // PAGE_SIZE)


def block_content(path: str, pgoff: int) -> int:
    """What page `pgoff` of `path` holds: its image block's identity, or zeros for a hole."""
    block = IMAGE.bmap(IMAGE.lookup(path), pgoff)
    return CONTENT_BLOCK + block if block else CONTENT_ZERO


# --- what exec maps in every process ------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One mapping of the fixed process layout."""

    name: str
    start: int
    pages: int
    prot: str
    path: str | None = None
    pgoff: int = 0
    shared: bool = False

    def vpn(self, page: int) -> int:
        return (self.start >> PAGE_SHIFT) + page

    def kind(self, pick: int) -> str:
        """Access kind number `pick`: mostly one the mapping allows, 1 in 16 one it refuses."""
        allowed = [k for k, c in zip("wrx", (self.prot[1], self.prot[0], self.prot[2]),
                                     strict=True) if c != "-"]
        if pick % 16 == 15:
            refused = [k for k in "rwx" if k not in allowed]
            return refused[pick // 16 % len(refused)] if refused else "r"
        return allowed[pick % len(allowed)]

    def beyond_eof(self, page: int) -> bool:
        return self.path is not None and self.pgoff + page >= file_pages(self.path)

    def content(self, page: int) -> int:
        """What an unwritten page of the region reads as."""
        if self.path is None:
            return CONTENT_ZERO
        return block_content(self.path, self.pgoff + page)


REGIONS = (
    Region("text", 0x400000, file_pages("/bin/app") + 2, "r-x", "/bin/app"),
    Region("lib", 0x600000, 28 + 2, "r-x", "/lib/libc.so", pgoff=4),
    Region("rodata", 0x700000, 8, "r--", "/lib/libc.so", shared=True),
    Region("big", 0xB00000, file_pages("/usr/share/big"), "r--", "/usr/share/big"),
    Region("data", 0x800000, file_pages("/data/tail") + 2, "rw-", "/data/tail"),
    Region("sparse", 0xA00000, file_pages("/data/sparse") + 1, "rw-", "/data/sparse"),
    Region("anon", 0x1000000, 64, "rw-"),
)
REGION_AT = {r.start: r for r in REGIONS}
SHARED_VALUES = (1_000_001, 1_000_002, 1_000_003)  # contents several guests write: KSM food


def exec_layout(guest: Guest, name: str = "app", advice: str = "normal") -> MmStruct:
    """A process with the fixed layout mapped (nothing touched yet)."""
    mm = guest.new_process(name)
    for r in REGIONS:
        guest.mmap(mm, r.start, r.pages * PAGE_SIZE, r.prot, path=r.path,
                   offset=r.pgoff * PAGE_SIZE, shared=r.shared, name=r.name,
                   advice=advice if r.path else "normal")
    return mm


def region_of(mm: MmStruct, vpn: int) -> tuple[Region, int]:
    vma = mm.find_vma(vpn << PAGE_SHIFT)
    assert vma is not None, f"vpn {vpn:#x} is mapped outside every VMA"
    region = REGION_AT[vma.start]
    return region, vpn - (region.start >> PAGE_SHIFT)


def gpfn_frame(guest: Guest, gpfn: int) -> int:
    """The host frame a guest frame reads from (the zero page has no `backing` entry)."""
    return guest.host.zero_pfn if gpfn == 0 else guest.host_frame(gpfn)


def ptes(guest: Guest, mm: MmStruct) -> list[tuple[int, int, Pte]]:
    """(vpn, gpfn, flags) of every present PTE of `mm`."""
    p = guest.preset
    out = []
    for vpn in mm.pt.mapped_vpns().tolist():
        pte = mm.pt.lookup_pte(vpn)
        out.append((vpn, p.pte_pfn(pte), p.pte_flags(pte)))
    return out


def ept_entries(guest: Guest) -> list[tuple[int, int, Pte]]:
    """(gpfn, host frame, flags) of every present EPT entry."""
    p = guest.host_preset
    out = []
    for gpfn in guest.ept.mapped_vpns().tolist():
        pte = guest.ept.lookup_pte(gpfn)
        out.append((gpfn, p.pte_pfn(pte), p.pte_flags(pte)))
    return out


# --- the checks, shared by the state machine and the scenarios ---------------------------


def check_host_frames(host: HostMemory, guests: list[Guest], segment: SharedSegment | None,
                      ) -> None:
    """Every allocated host frame is accounted exactly once, with the right refcount and kind."""
    top = host.frames
    expected = np.zeros(top, dtype=np.int64)
    source: dict[int, str] = {}

    def claim(pfn: int, who: str, exclusive: bool) -> None:
        assert 0 <= pfn < top, f"{who}: host frame {pfn} was never allocated"
        if exclusive:
            assert pfn not in source, f"host frame {pfn} is claimed by {source[pfn]} and {who}"
        source.setdefault(pfn, who)
        expected[pfn] += 1

    expected[host.zero_pfn] += 1  # the host's own reference
    for g in guests:
        expected[host.zero_pfn] += 1  # each guest's EPT maps it at gpfn 0
        for gpfn in np.flatnonzero(g.backing >= 0).tolist():
            assert gpfn != 0, f"guest {g.gid}: the zero gpfn has a RAM backing"
            pfn = int(g.backing[gpfn])
            ksm = host.kind[pfn] == FrameKind.KSM
            claim(pfn, f"guest {g.gid} gpfn {gpfn}", exclusive=not ksm)
            if ksm:
                assert host.owner[pfn] == OWNER_HOST, f"KSM frame {pfn} not owned by the host"
            else:
                assert host.owner[pfn] == g.gid, (
                    f"guest {g.gid} gpfn {gpfn}: host frame {pfn} owned by {host.owner[pfn]}")
                assert host.kind[pfn] == g.kind[gpfn], (
                    f"guest {g.gid} gpfn {gpfn}: host kind {FrameKind(host.kind[pfn]).name}, "
                    f"guest kind {FrameKind(g.kind[gpfn]).name}")
        for table in g.ept.tables:
            claim(table, f"guest {g.gid} EPT table", exclusive=True)
            assert host.kind[table] == FrameKind.PAGETABLE and host.owner[table] == g.gid
        if g.segment is not None:
            for block in g.dcss_mapped:
                pfn = int(g.segment.frame_of[block])
                assert pfn >= 0, f"guest {g.gid} maps segment block {block}, not resident"
                expected[pfn] += 1
    if segment is not None:
        for block in np.flatnonzero(segment.frame_of >= 0).tolist():
            pfn = int(segment.frame_of[block])
            claim(pfn, f"segment block {block}", exclusive=True)
            assert host.kind[pfn] == FrameKind.SHARED and host.owner[pfn] == OWNER_SEGMENT
    kind = host.kind[:top]
    refcount = host.refcount[:top]
    free = kind == FrameKind.FREE
    assert not refcount[free].any(), "a FREE frame has a nonzero refcount"
    leaked = np.flatnonzero(~free & (expected == 0))
    assert not leaked.size, (
        f"leaked host frames {leaked.tolist()} (kinds "
        f"{[FrameKind(k).name for k in kind[leaked]]})")
    dangling = np.flatnonzero(free & (expected > 0))
    assert not dangling.size, f"FREE host frames still referenced: {dangling.tolist()}"
    wrong = np.flatnonzero(refcount != expected)
    assert not wrong.size, (
        f"refcounts {refcount[wrong].tolist()} != expected {expected[wrong].tolist()} "
        f"for frames {wrong.tolist()}")
    assert host.allocated == int(np.count_nonzero(~free))


def check_no_writable_shared(guest: Guest) -> None:
    """No writable PTE maps the segment, the zero page or a page-cache page; no writable EPT
    entry maps a SHARED or KSM frame or the zero page."""
    host = guest.host
    for mm in guest.procs.values():
        for vpn, gpfn, flags in ptes(guest, mm):
            if not flags & Pte.W:
                continue
            where = f"guest {guest.gid} pid {mm.pid} vpn {vpn:#x} → gpfn {gpfn}"
            assert 0 < gpfn < guest.ram_pages, f"{where}: writable, not private RAM"
            assert gpfn not in guest.cache.key_of, f"{where}: writable page-cache page"
            assert guest.kind[gpfn] in (FrameKind.ANON, FrameKind.COW), (
                f"{where}: writable, kind {FrameKind(guest.kind[gpfn]).name}")
    for gpfn, pfn, flags in ept_entries(guest):
        where = f"guest {guest.gid} EPT gpfn {gpfn} → host frame {pfn}"
        if flags & Pte.W:
            assert host.kind[pfn] not in (FrameKind.SHARED, FrameKind.KSM, FrameKind.ZERO), (
                f"{where}: writable {FrameKind(host.kind[pfn]).name}")
        if gpfn == 0:
            assert pfn == host.zero_pfn, f"{where}: not the zero page"
        elif gpfn < guest.ram_pages:
            assert pfn == guest.backing[gpfn], f"{where}: backing is {guest.backing[gpfn]}"
        else:
            assert guest.segment is not None, f"{where}: beyond RAM without a segment"
            block = gpfn - guest.dcss_base
            assert block in guest.dcss_mapped, f"{where}: block {block} not in dcss_mapped"
            assert pfn == guest.segment.frame_of[block], f"{where}: not the block's frame"
    mapped = {gpfn for gpfn, _, _ in ept_entries(guest)}
    for gpfn in np.flatnonzero(guest.backing >= 0).tolist():
        assert gpfn in mapped, f"guest {guest.gid} gpfn {gpfn} backed but not in the EPT"
    for block in guest.dcss_mapped:
        assert guest.dcss_base + block in mapped, f"guest {guest.gid} block {block} not in EPT"


def check_ptes_point_to_live_pages(guest: Guest) -> None:
    """Every PTE maps a live page of the right kind for its VMA: never a free frame or a
    page table, a file page only from the page cache (its own file page), the segment or
    the zero page."""
    for mm in guest.procs.values():
        for vpn, gpfn, _flags in ptes(guest, mm):
            region, page = region_of(mm, vpn)
            where = (f"guest {guest.gid} pid {mm.pid} {region.name}[{page}] "
                     f"vpn {vpn:#x} → gpfn {gpfn}")
            assert not region.beyond_eof(page), f"{where}: mapped beyond EOF"
            if gpfn == 0:
                continue
            if gpfn >= guest.ram_pages:
                assert guest.segment is not None and gpfn >= guest.dcss_base, where
                block = gpfn - guest.dcss_base
                assert region.path is not None, f"{where}: anonymous page in the segment"
                assert IMAGE.bmap(IMAGE.lookup(region.path), region.pgoff + page) == block, (
                    f"{where}: segment block {block} is not this file page's")
                continue
            kind = FrameKind(guest.kind[gpfn])
            assert kind in (FrameKind.PAGECACHE, FrameKind.ANON, FrameKind.COW), (
                f"{where}: points to a {kind.name} guest frame")
            if kind == FrameKind.PAGECACHE:
                assert region.path is not None
                key = (IMAGE.lookup(region.path), region.pgoff + page)
                assert guest.cache.key_of.get(gpfn) == key, (
                    f"{where}: page cache holds {guest.cache.key_of.get(gpfn)}, want {key}")


def free_list(guest: Guest) -> list[int]:
    """The guest's free gpfns (frames given back, then those never used yet)."""
    area = guest.free_area
    return [*area.freed, *range(area.top, guest.ram_pages)]


def guest_kinds(guest: Guest) -> np.ndarray:
    """FrameKind per gpfn over all of the guest's RAM (the arrays may grow lazily)."""
    kinds = np.zeros(guest.ram_pages, dtype=np.uint8)
    kinds[: len(guest.kind)] = guest.kind[: guest.ram_pages]
    return kinds


def check_guest_frames(guest: Guest) -> None:
    """The guest's frames add up: free + used = ram_pages − 1, and each used frame is
    reachable (a page-cache entry, a process's page table, or mapped anonymous memory)."""
    assert len(guest.cache) <= guest.ram_pages
    free = free_list(guest)
    if hasattr(guest, "free_pages"):
        assert guest.free_pages == len(free), f"guest {guest.gid}: free_pages is off"
    assert len(set(free)) == len(free), f"guest {guest.gid}: free list has duplicates"
    assert 0 not in free, f"guest {guest.gid}: the zero gpfn is on the free list"
    kinds = guest_kinds(guest)
    assert kinds[0] == FrameKind.ZERO
    for gpfn in free:
        assert kinds[gpfn] in (FrameKind.FREE, FrameKind.GUEST_FREE), (
            f"guest {guest.gid}: free gpfn {gpfn} has kind {FrameKind(kinds[gpfn]).name}")
    def of_kind(*wanted: FrameKind) -> set[int]:
        return set(np.flatnonzero(np.isin(kinds, wanted)).tolist())

    used = of_kind(FrameKind.PAGECACHE, FrameKind.ANON, FrameKind.COW, FrameKind.PAGETABLE)
    assert len(free) + len(used) == guest.ram_pages - 1, (
        f"guest {guest.gid}: {len(free)} free + {len(used)} used != {guest.ram_pages - 1}")
    cache = of_kind(FrameKind.PAGECACHE)
    assert cache == set(guest.cache.key_of), f"guest {guest.gid}: page-cache kinds vs index"
    assert len(guest.cache.pages) == len(guest.cache.key_of)
    tables = of_kind(FrameKind.PAGETABLE)
    owned = set().union(*(mm.pt.tables for mm in guest.procs.values()))
    assert tables == owned, (
        f"guest {guest.gid}: page-table frames {sorted(tables - owned)} belong to no process, "
        f"{sorted(owned - tables)} are not PAGETABLE")
    anon = of_kind(FrameKind.ANON, FrameKind.COW)
    assert anon <= set(guest.rmap), (
        f"guest {guest.gid}: anonymous frames {sorted(anon - set(guest.rmap))} are mapped "
        f"by no PTE (leaked)")


def check_rmap(guest: Guest) -> None:
    """rmap: every mapped RAM gpfn (but the zero page) has one entry per PTE mapping it,
    with the PTE's executable bit, and nothing else."""
    want: dict[int, dict[tuple[int, int], bool]] = {}
    for mm in guest.procs.values():
        for vpn, gpfn, _flags in ptes(guest, mm):
            if 0 < gpfn < guest.ram_pages:
                region, _ = region_of(mm, vpn)
                want.setdefault(gpfn, {})[(mm.pid, vpn)] = "x" in region.prot
    got = {gpfn: dict(m.users) for gpfn, m in guest.rmap.items()}
    assert got == want, f"guest {guest.gid}: rmap {got} != PTEs {want}"


def check_tlb(guest: Guest) -> None:
    """Every TLB entry agrees with its process's PTE (same frame, no more write rights)."""
    for _set, asid, vpn, pfn, flags in guest.tlb.contents():
        mm = guest.procs.get(asid)
        assert mm is not None, f"guest {guest.gid}: TLB entry for exited asid {asid}"
        pte = mm.pt.lookup_pte(vpn)
        assert guest.preset.pte_present_p(pte), (
            f"guest {guest.gid}: TLB caches vpn {vpn:#x} of pid {asid}, which is unmapped")
        assert guest.preset.pte_pfn(pte) == pfn, (
            f"guest {guest.gid}: TLB says vpn {vpn:#x} → {pfn}, PTE says "
            f"{guest.preset.pte_pfn(pte)}")
        if flags & Pte.W:
            assert guest.preset.pte_flags(pte) & Pte.W, f"TLB writable, PTE not: vpn {vpn:#x}"


def check_contents(guest: Guest, written: dict[tuple[int, int], int]) -> None:
    """Each process sees what it last wrote, or the file's / zero bytes; page-cache pages
    hold their block; nothing written elsewhere shows through."""
    host = guest.host
    for mm in guest.procs.values():
        for vpn, gpfn, _flags in ptes(guest, mm):
            region, page = region_of(mm, vpn)
            want = written.get((mm.pid, vpn), region.content(page))
            got = int(host.content[gpfn_frame(guest, gpfn)])
            assert got == want, (
                f"guest {guest.gid} pid {mm.pid} {region.name}[{page}] → gpfn {gpfn}: "
                f"content {got}, want {want}")
        for pid_vpn in written:
            pid, vpn = pid_vpn
            if pid == mm.pid:
                assert guest.preset.pte_present_p(mm.pt.lookup_pte(vpn)), (
                    f"guest {guest.gid} pid {pid}: written vpn {vpn:#x} lost its mapping")
    for (ino, pgoff), gpfn in guest.cache.pages.items():
        block = IMAGE.bmap(ino, pgoff)
        want = CONTENT_BLOCK + block if block else CONTENT_ZERO
        got = int(host.content[guest.backing[gpfn]])
        assert got == want, f"guest {guest.gid} page cache ({ino}, {pgoff}): {got} != {want}"


def check_segment(segment: SharedSegment) -> None:
    """Shared-segment frames always hold their image block."""
    host = segment.host
    for block in np.flatnonzero(segment.frame_of >= 0).tolist():
        pfn = int(segment.frame_of[block])
        assert host.content[pfn] == CONTENT_BLOCK + block, f"segment block {block} changed"


def check_all(host: HostMemory, guests: list[Guest], segment: SharedSegment | None,
              written: dict[tuple[int, int, int], int] | None = None) -> None:
    """Every invariant at once (for the scenario tests)."""
    check_host_frames(host, guests, segment)
    for i, g in enumerate(guests):
        check_no_writable_shared(g)
        check_ptes_point_to_live_pages(g)
        check_guest_frames(g)
        check_rmap(g)
        check_tlb(g)
        mine = {(p, v): c for (gi, p, v), c in (written or {}).items() if gi == i}
        check_contents(g, mine)
    if segment is not None:
        check_segment(segment)
    assert IMAGE.sha256() == IMAGE_SHA256


# --- the state machine ----------------------------------------------------------------------


class MmMachine(RuleBasedStateMachine):
    """Two XIP guests on one segment, two page-cache guests, one ksmd, small RAM."""

    advice = "normal"  # of the file mappings ("random": no mmap readahead at all)
    prefault = False  # touch every region at exec, so no page table is allocated later

    def __init__(self) -> None:
        super().__init__()
        self.host = HostMemory()
        self.segment = SharedSegment(self.host, IMAGE)
        self.guests: list[Guest] = []
        self.ksm: Ksm | None = None
        # (guest index, pid, vpn) → the content that process last wrote there.
        self.written: dict[tuple[int, int, int], int] = {}

    @initialize(rams=st.lists(st.sampled_from([96, 100, 128, 192, 256]), min_size=4,
                              max_size=4),
                ksm_all=st.booleans(), fault_around=st.sampled_from([1, 16]))
    def boot(self, rams: list[int], ksm_all: bool, fault_around: int) -> None:
        for i, ram in enumerate(rams):
            xip = i < 2
            self.guests.append(Guest(i, self.host, ram, IMAGE,
                                     segment=self.segment if xip else None,
                                     fault_around_pages=fault_around, tlb_entries=16))
        scanned = self.guests if ksm_all else self.guests[2:]
        self.ksm = Ksm(self.host, scanned, max_page_sharing=4)
        for gi in range(len(self.guests)):
            self._exec(gi)

    def _exec(self, gi: int) -> None:
        mm = exec_layout(self.guests[gi], advice=self.advice)
        if self.prefault:
            for region in REGIONS:
                self._access(gi, mm, region, 0, "r", None)

    def _proc(self, gi: int, pi: int) -> MmStruct | None:
        procs = list(self.guests[gi].procs.values())
        return procs[pi % len(procs)] if procs else None

    @rule(gi=st.integers(0, 3))
    def start_process(self, gi: int) -> None:
        guest = self.guests[gi]
        # exec builds a whole layout: start one only where it has room (a full guest's
        # fork failing with ENOMEM has its own test below).
        if len(guest.procs) < 4 and guest.free_pages > (24 if self.prefault else 0):
            self._exec(gi)

    def _access(self, gi: int, mm: MmStruct, region: Region, page: int, kind: str,
                value: int | None) -> VmFault:
        """One access, checked against what the VMA and the file allow; records writes."""
        guest = self.guests[gi]
        vpn = region.vpn(page)
        result = VmFault(guest.access(mm, vpn << PAGE_SHIFT, kind, content=value))
        vma = mm.find_vma(vpn << PAGE_SHIFT)
        assert vma is not None
        if not vma.permits(kind == "w", kind == "x"):
            assert result & VmFault.SIGSEGV, f"{kind} on {region.name}: {result!r}"
            return result
        if region.beyond_eof(page):
            # The page table comes first (__handle_mm_fault's pte_alloc): in a full guest
            # that can fail with OOM before ->fault ever sees the end of the file.
            assert result & (VmFault.SIGBUS | VmFault.OOM), (
                f"{kind} beyond EOF of {region.name}: {result!r}")
            return result
        assert not result & (VmFault.SIGBUS | VmFault.SIGSEGV), f"{region.name}: {result!r}"
        if result & VmFault.OOM or kind != "w":
            return result
        pte = mm.pt.lookup_pte(vpn)
        got = int(self.host.content[gpfn_frame(guest, guest.preset.pte_pfn(pte))])
        if value is not None:
            assert got == value, f"write of {value} reads back {got}"
        self.written[(gi, mm.pid, vpn)] = got
        return result

    @rule(gi=st.integers(0, 3), pi=st.integers(0, 3),
          accesses=st.lists(st.tuples(st.integers(0, len(REGIONS) - 1), st.integers(0, 200),
                                      st.integers(0, 63),
                                      st.sampled_from((None, *SHARED_VALUES))),
                            min_size=1, max_size=12))
    def access(self, gi: int, pi: int, accesses: list[tuple[int, int, int, int | None]]
               ) -> None:
        """Random pages, random kinds (a wrong kind is a SIGSEGV, beyond EOF a SIGBUS)."""
        mm = self._proc(gi, pi)
        if mm is None:
            return
        for ri, page, kind, value in accesses:
            region = REGIONS[ri]
            self._access(gi, mm, region, page % region.pages, region.kind(kind), value)

    @rule(gi=st.integers(0, 3), pi=st.integers(0, 3), ri=st.integers(0, len(REGIONS) - 1),
          first=st.integers(0, 200), kind=st.integers(0, 63),
          value=st.sampled_from((None, *SHARED_VALUES)))
    def sweep(self, gi: int, pi: int, ri: int, first: int, kind: int, value: int | None
              ) -> None:
        """Touch a region from `first` to its end (beyond EOF included): fills RAM fast."""
        mm = self._proc(gi, pi)
        if mm is None:
            return
        region = REGIONS[ri]
        for page in range(first % region.pages, region.pages):
            self._access(gi, mm, region, page, region.kind(kind), value)

    @rule(gi=st.integers(0, 3), pi=st.integers(0, 3), value=st.sampled_from(SHARED_VALUES))
    def fill_heap(self, gi: int, pi: int, value: int) -> None:
        """Write the whole anonymous region with one value: memory pressure, KSM food."""
        mm = self._proc(gi, pi)
        if mm is None:
            return
        region = REGIONS[-1]
        for page in range(region.pages):
            if self._access(gi, mm, region, page, "w", value) & VmFault.OOM:
                break

    @rule(gi=st.integers(0, 3), path=st.sampled_from(FILES), offset=st.integers(0, 40 * 4096),
          count=st.integers(0, 12 * 4096))
    def read(self, gi: int, path: str, offset: int, count: int) -> None:
        n = self.guests[gi].read(path, offset, count)
        size = IMAGE.file_size(IMAGE.lookup(path))
        assert 0 <= n <= max(0, min(count, size - offset))

    @rule(gi=st.integers(0, 3), n=st.integers(1, 64))
    def shrink(self, gi: int, n: int) -> None:
        try_to_free_pages(self.guests[gi], n)

    @rule(n=st.integers(1, 400))
    def ksm_scan(self, n: int) -> None:
        assert self.ksm is not None
        self.ksm.scan(n)

    @precondition(lambda self: any(g.procs for g in self.guests))
    @rule(gi=st.integers(0, 3), pi=st.integers(0, 3))
    def fork_process(self, gi: int, pi: int) -> None:
        """fork: the child sees everything the parent wrote, and shares it copy-on-write."""
        mm = self._proc(gi, pi)
        if mm is None or len(self.guests[gi].procs) >= 6:
            return
        child = self.guests[gi].fork(mm)
        if child is not None:
            self.written.update({(gi, child.pid, vpn): c for (g, pid, vpn), c
                                 in list(self.written.items()) if (g, pid) == (gi, mm.pid)})

    @precondition(lambda self: any(g.procs for g in self.guests))
    @rule(gi=st.integers(0, 3), pi=st.integers(0, 3))
    def exit_process(self, gi: int, pi: int) -> None:
        mm = self._proc(gi, pi)
        if mm is None:
            return
        self.guests[gi].exit_process(mm)
        self.written = {k: v for k, v in self.written.items() if k[:2] != (gi, mm.pid)}

    # --- invariants ------------------------------------------------------------------

    @invariant()
    def host_frames_accounted(self) -> None:
        """Every allocated host frame is referenced by exactly what its refcount says: guest
        backings, segment frames plus each guest's mapping, EPT tables, KSM sharers, the
        zero page. No leaks, nothing counted twice, FREE frames have refcount 0."""
        check_host_frames(self.host, self.guests, self.segment)

    @invariant()
    def nothing_shared_is_writable(self) -> None:
        """No writable guest PTE maps the segment, the zero page or a page-cache page of a
        privately mapped file; no writable EPT entry maps a SHARED, KSM or zero frame."""
        for g in self.guests:
            check_no_writable_shared(g)

    @invariant()
    def ptes_map_live_pages(self) -> None:
        """Every PTE maps a live frame that holds the page its VMA says (never a freed frame
        or a page-table page), and nothing beyond EOF is mapped."""
        for g in self.guests:
            check_ptes_point_to_live_pages(g)

    @invariant()
    def writes_stay_private(self) -> None:
        """A guest's write is visible only to the process that made it: every mapped page
        reads as that process's last write there, else as its file block or zeros; page-cache
        pages and shared-segment frames always hold their image block."""
        for i, g in enumerate(self.guests):
            mine = {(p, v): c for (gi, p, v), c in self.written.items() if gi == i}
            check_contents(g, mine)
        check_segment(self.segment)

    @invariant()
    def image_is_frozen(self) -> None:
        """The frozen image's bytes never change."""
        assert IMAGE.sha256() == IMAGE_SHA256

    @invariant()
    def guest_frames_add_up(self) -> None:
        """Page cache ≤ RAM; free + used = ram_pages − 1; no used guest frame is unreachable."""
        for g in self.guests:
            check_guest_frames(g)

    @invariant()
    def xip_has_no_page_cache(self) -> None:
        """XIP guests only map/read files of the frozen image: no page-cache page at all."""
        for g in self.guests:
            if g.segment is not None:
                assert len(g.cache) == 0, f"XIP guest {g.gid} caches {len(g.cache)} pages"
                assert not np.any(guest_kinds(g) == FrameKind.PAGECACHE)

    @invariant()
    def rmap_matches_ptes(self) -> None:
        """The rmap has one entry per PTE mapping a RAM gpfn (not the zero page), no more."""
        for g in self.guests:
            check_rmap(g)

    @invariant()
    def tlb_matches_ptes(self) -> None:
        """No TLB entry outlives or exceeds the PTE it caches."""
        for g in self.guests:
            check_tlb(g)


MmMachine.TestCase.settings = settings(
    max_examples=20, stateful_step_count=50, deadline=None, derandomize=True,
    phases=(Phase.explicit, Phase.generate),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestMmInvariants = MmMachine.TestCase


class MmMachineRandomAdvice(MmMachine):
    """The same machine with MADV_RANDOM file mappings (no mmap readahead inside a fault)
    and every page table a process needs allocated at exec, while memory is plentiful."""

    advice = "random"
    prefault = True


MmMachineRandomAdvice.TestCase.settings = MmMachine.TestCase.settings
TestMmInvariantsRandomAdvice = MmMachineRandomAdvice.TestCase


# --- scenarios -----------------------------------------------------------------------------

BIG = 0xB00000  # REGIONS' "big" mapping
LIB = 0x600000
DATA = 0x800000
ANON = 0x1000000


def test_xip_private_write_is_not_seen_by_the_other_guest() -> None:
    """Two guests run the same file in place; one writes its data page: who sees it?"""
    host = HostMemory()
    segment = SharedSegment(host, IMAGE)
    a, b = (Guest(i, host, 128, IMAGE, segment=segment) for i in range(2))
    ma, mb = exec_layout(a), exec_layout(b)
    assert a.access(ma, DATA, "r") == b.access(mb, DATA, "r") == VmFault.NOPAGE
    assert a.access(ma, DATA, "w", content=SHARED_VALUES[0]) & VmFault.DONE_COW == 0
    written = {(0, ma.pid, DATA >> PAGE_SHIFT): SHARED_VALUES[0]}
    check_all(host, [a, b], segment, written)
    frame = b.host_frame(b.preset.pte_pfn(mb.pt.lookup_pte(DATA >> PAGE_SHIFT)))
    assert host.kind[frame] == FrameKind.SHARED
    assert host.content[frame] == block_content("/data/tail", 0)


def test_ksm_merged_page_written_by_one_guest() -> None:
    """ksmd merges two guests' identical heap pages; one writes again: does the other see it?"""
    host = HostMemory()
    a, b = (Guest(i, host, 128, IMAGE) for i in range(2))
    ma, mb = exec_layout(a), exec_layout(b)
    written = {}
    for gi, (g, mm) in enumerate(((a, ma), (b, mb))):
        for page in range(4):
            assert g.access(mm, ANON + page * PAGE_SIZE, "w", content=SHARED_VALUES[1]) == 0
            written[(gi, mm.pid, (ANON >> PAGE_SHIFT) + page)] = SHARED_VALUES[1]
    ksm = Ksm(host, [a, b])
    for _ in range(3):
        ksm.scan(1000)
    assert ksm.counters.pages_sharing > 0
    check_all(host, [a, b], None, written)
    assert a.access(ma, ANON, "w", content=SHARED_VALUES[2]) == 0
    assert a.stats.cow_ksm == 1
    written[(0, ma.pid, ANON >> PAGE_SHIFT)] = SHARED_VALUES[2]
    check_all(host, [a, b], None, written)


@pytest.mark.parametrize("xip", [True, False], ids=["xip", "pagecache"])
def test_access_beyond_eof_is_sigbus(xip: bool) -> None:
    """A mapping longer than its file: reading, executing or writing past EOF is SIGBUS."""
    host = HostMemory()
    segment = SharedSegment(host, IMAGE) if xip else None
    g = Guest(0, host, 96, IMAGE, segment=segment)
    mm = exec_layout(g)
    tail = next(r for r in REGIONS if r.name == "data")
    written = {}
    for page in range(tail.pages):
        for kind in "rw":
            result = VmFault(g.access(mm, tail.start + page * PAGE_SIZE, kind, content=page))
            assert bool(result & VmFault.SIGBUS) == tail.beyond_eof(page), (page, kind)
            if kind == "w" and not result:
                written[(0, mm.pid, tail.vpn(page))] = page
    text = REGIONS[0]
    assert g.access(mm, text.start + (text.pages - 1) * PAGE_SIZE, "x") & VmFault.SIGBUS
    check_all(host, [g], segment, written)


def test_async_readahead_never_reclaims_the_faulting_page() -> None:
    """A sequential reader in a full guest hits a PG_readahead page: does its PTE map it?"""
    host = HostMemory()
    g = Guest(0, host, 96, IMAGE, fault_around_pages=1)
    mm = exec_layout(g)
    big = IMAGE.lookup("/usr/share/big")
    for page in range(33):
        g.access(mm, BIG + page * PAGE_SIZE, "r")
        gpfn = g.preset.pte_pfn(mm.pt.lookup_pte((BIG >> PAGE_SHIFT) + page))
        assert g.cache.key_of.get(gpfn) == (big, page), (
            f"page {page}: PTE maps gpfn {gpfn}, a {FrameKind(g.kind[gpfn]).name} frame")


def test_page_table_allocation_never_reclaims_the_faulting_page() -> None:
    """The first fault in a new 2 MiB area of a full guest: does its PTE map the file page?"""
    host = HostMemory()
    g = Guest(0, host, 96, IMAGE, fault_around_pages=1)
    mm = exec_layout(g, advice="random")
    for page in range(90):  # leaves exactly one free guest frame
        g.access(mm, BIG + page * PAGE_SIZE, "r")
    assert g.free_pages == 1
    assert g.access(mm, LIB, "x") == VmFault.MAJOR | VmFault.LOCKED
    gpfn = g.preset.pte_pfn(mm.pt.lookup_pte(LIB >> PAGE_SHIFT))
    assert g.cache.key_of.get(gpfn) == (IMAGE.lookup("/lib/libc.so"), 4), (
        f"PTE maps gpfn {gpfn}, a {FrameKind(g.kind[gpfn]).name} frame")


def test_oom_in_page_table_allocation_leaks_nothing() -> None:
    """An XIP guest with one free frame writes a data page in a new 2 MiB area: is the
    private copy it allocated given back when the page table cannot be?"""
    host = HostMemory()
    segment = SharedSegment(host, IMAGE)
    g = Guest(0, host, 96, IMAGE, segment=segment)
    a, b = exec_layout(g), exec_layout(g)
    for mm in (a, b):
        for page in range(64):
            if g.free_pages == 1:
                break
            g.access(mm, ANON + page * PAGE_SIZE, "w")
    assert g.free_pages == 1
    result = VmFault(g.access(b, DATA, "w"))
    assert result & VmFault.OOM
    assert result == VmFault.OOM, f"an OOM also reports {result!r}"
    check_guest_frames(g)


def test_new_process_in_a_full_guest_is_enomem() -> None:
    """fork+exec in a guest with no free frame and nothing to reclaim: ENOMEM, not a crash."""
    host = HostMemory()
    segment = SharedSegment(host, IMAGE)
    g = Guest(0, host, 96, IMAGE, segment=segment)
    while g.free_pages:
        mm = exec_layout(g)
        for page in range(REGIONS[-1].pages):
            if g.access(mm, ANON + page * PAGE_SIZE, "w") & VmFault.OOM:
                break
    assert g.free_pages == 0
    oom = g.stats.oom
    assert g.new_process("late") is None
    assert g.stats.oom == oom + 1


def test_after_fork_the_first_writer_copies_and_the_other_reuses() -> None:
    """Parent and child share a written anonymous page: who copies when each writes?"""
    host = HostMemory()
    g = Guest(0, host, 256, IMAGE)
    parent = exec_layout(g)
    g.access(parent, ANON, "w", content=SHARED_VALUES[0])
    shared = g.preset.pte_pfn(parent.pt.lookup_pte(ANON >> PAGE_SHIFT))
    child = g.fork(parent)
    assert child is not None and folio_mapcount(g, shared) == 2
    assert g.access(child, ANON, "r") == 0  # reads share the page
    assert g.preset.pte_pfn(child.pt.lookup_pte(ANON >> PAGE_SHIFT)) == shared
    assert g.access(child, ANON, "w", content=SHARED_VALUES[1]) == 0  # do_wp_page copies
    copy = g.preset.pte_pfn(child.pt.lookup_pte(ANON >> PAGE_SHIFT))
    assert copy != shared and folio_mapcount(g, shared) == 1
    assert g.access(parent, ANON, "w", content=SHARED_VALUES[2]) == 0  # now reused in place
    assert g.preset.pte_pfn(parent.pt.lookup_pte(ANON >> PAGE_SHIFT)) == shared
    assert host.content[g.backing[shared]] == SHARED_VALUES[2]
    assert host.content[g.backing[copy]] == SHARED_VALUES[1]
    check_guest_frames(g)
