"""What a student reads in "solve" mode: explain traces of the XIP and page-cache fault paths.

Each scenario builds a small frozen image, a host with the shared segment, and
guests in XIP and page-cache modes; it records the events of a few accesses and
checks the text against the frames and blocks the model itself holds. One
golden trace (tests/golden/explain_xip_vs_pagecache.txt) is compared exactly;
regenerate it with XIPMODEL_REGEN_GOLDEN=1 and read the diff before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from xipmodel.events import (
    DiskRead,
    Event,
    EventBus,
    Fault,
    KsmScan,
    PageCacheInsert,
    Readahead,
    TlbLookup,
    WalkStep,
)
from xipmodel.explain import Recorder, explain, fault_flags
from xipmodel.ext2 import Ext2Image, File, build_image
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.ksm import Ksm
from xipmodel.mm.memory import VmFault
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.vma import MmStruct
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

GOLDEN = Path(__file__).parent / "golden" / "explain_xip_vs_pagecache.txt"
TEXT = 0x400000
CONF = 0x800000
HEAP = 0x1000000
APP_PAGES = 40
CONF_PAGES = 2  # mapped as 4 pages: pages 2 and 3 lie beyond the end of the file


@pytest.fixture(scope="module")
def image() -> Ext2Image:
    rng = np.random.default_rng(11)
    tree: dict[str, bytes | File] = {
        "/bin/app": rng.integers(0, 256, APP_PAGES * PAGE_SIZE, dtype=np.uint8).tobytes(),
        "/etc/conf": File(b"c" * PAGE_SIZE, size=CONF_PAGES * PAGE_SIZE),  # page 1: a hole
    }
    return Ext2Image.open(build_image(tree, volume_name="explain"))


class World:
    """A host, the shared segment on the same bus as the guests, guests made on demand."""

    def __init__(self, image: Ext2Image) -> None:
        self.image = image
        self.host = HostMemory()
        self.bus = EventBus()
        self.segment = SharedSegment(self.host, image, bus=self.bus)

    def guest(self, gid: int, xip: bool, ram_pages: int = 256, kernel: str = "6.18") -> Guest:
        return Guest(gid, self.host, ram_pages, self.image,
                     segment=self.segment if xip else None, bus=self.bus, kernel=kernel)

    def app(self, guest: Guest) -> MmStruct:
        mm = guest.new_process("app")
        guest.mmap(mm, TEXT, APP_PAGES * PAGE_SIZE, "r-x", path="/bin/app")
        guest.mmap(mm, CONF, 4 * PAGE_SIZE, "rw-", path="/etc/conf")
        guest.mmap(mm, HEAP, 16 * PAGE_SIZE, "rw-")
        return mm

    def block(self, path: str, page: int) -> int:
        return int(self.image.block_map(path)[page])


@pytest.fixture
def world(image: Ext2Image) -> World:
    return World(image)


def run(world: World, guest: Guest, mm: MmStruct, *accesses: tuple[int, str]) -> list[str]:
    """The explain lines of `accesses` (address, kind) by `mm`."""
    with Recorder(world.bus) as rec:
        for address, kind in accesses:
            guest.access(mm, address, kind)
    return rec.lines()


# ── execute in place ─────────────────────────────────────────────────────────────────────────

def test_first_xip_guest_pays_the_host_page_in(world: World) -> None:
    """What does a student see when the first guest executes a page in place?"""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    lines = run(world, guest, mm, (TEXT + 3 * PAGE_SIZE, "x"))
    block = world.block("/bin/app", 3)
    frame = int(world.segment.frame_of[block])
    assert frame >= 0
    assert lines == [
        f"[guest 0] VA {TEXT + 3 * PAGE_SIZE:#x}: TLB miss → PML4[0x000] not present "
        f"({_stopped_refs(guest, 1)} references)",
        f"    page fault (read) → dax_iomap_fault [NOPAGE]: page 3 is image block {block}: "
        f"shared-segment frame {frame:#x}",
        f"    host pages in image block {block} → frame {frame:#x} (first guest to touch it)",
        f"    → PTE points into the shared segment, frame {frame:#x} (image block {block})",
    ]


def test_second_xip_guest_only_installs_a_pte(world: World) -> None:
    """What does a student see when a second guest executes the same page in place?"""
    first, second = world.guest(0, xip=True), world.guest(1, xip=True)
    first.access(world.app(first), TEXT + 3 * PAGE_SIZE, "x")
    block = world.block("/bin/app", 3)
    frame = int(world.segment.frame_of[block])
    mm = world.app(second)
    text = "\n".join(run(world, second, mm, (TEXT + 3 * PAGE_SIZE, "x")))
    assert "host pages in" not in text
    assert "disk read" not in text and "read-around" not in text
    assert f"→ PTE points into the shared segment, frame {frame:#x} (image block {block})" in text
    assert int(world.segment.frame_of[block]) == frame  # the same frame, still one copy


def test_xip_hole_maps_the_zero_page(world: World) -> None:
    """A guest reads a hole of a file on the XIP mount: what does its PTE point at?"""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    assert world.block("/etc/conf", 1) == 0
    lines = run(world, guest, mm, (CONF + PAGE_SIZE, "r"))
    assert lines[1] == ("    page fault (read) → dax_iomap_fault → dax_load_hole [NOPAGE]: "
                        "page 1 is a hole: the zero page")
    assert lines[2:] == ["    → PTE points at the zero page, read-only"]


# ── the page cache ───────────────────────────────────────────────────────────────────────────

def test_page_cache_major_fault_shows_read_around_and_disk_bytes(world: World) -> None:
    """A page-cache guest faults on page 20 of a binary: which window is read, how many bytes?

    (The classic centred read-around that executable mappings had up to Linux 6.15.)
    """
    guest = world.guest(5, xip=False, kernel="6.1")
    mm = world.app(guest)
    lines = run(world, guest, mm, (TEXT + 20 * PAGE_SIZE, "x"))
    ino = world.image.lookup("/bin/app")
    start = 20 - guest.ra_pages // 2  # the window is centred on the fault
    end = min(start + guest.ra_pages, APP_PAGES)
    blocks = [world.block("/bin/app", p) for p in range(start, end)]
    gpfn = guest.cache.find(ino, 20)
    assert gpfn is not None
    assert lines[1].startswith("    page fault (read) → filemap_fault [MAJOR|LOCKED]: ")
    assert lines[2] == (f"    read-around: pages [{start}, {start + guest.ra_pages}) of inode "
                        f"{ino}, {guest.ra_pages // 4} async; {end - start} pages read")
    assert lines[3].startswith(f"    disk read: {len(blocks) * PAGE_SIZE} bytes "
                               f"({len(blocks)} pages) from image blocks {min(blocks)}")
    assert guest.stats.disk_read_bytes == len(blocks) * PAGE_SIZE
    assert lines[4].startswith(f"    page cache: {end - start} pages (inode {ino} pages "
                               f"{start}–{end - 1}) in guest frames")
    assert lines[5] == (f"    → PTE points at page-cache copy in guest frame {gpfn:#x} (inode "
                        f"{ino} page 20; host frame {guest.host_frame(gpfn):#x}), read-only")


def test_page_cache_neighbour_is_mapped_by_fault_around(world: World) -> None:
    """After a major fault, the next page faults again: does it go to the disk?"""
    guest = world.guest(5, xip=False, kernel="6.1")
    mm = world.app(guest)
    guest.access(mm, TEXT + 3 * PAGE_SIZE, "x")
    lines = run(world, guest, mm, (TEXT + 4 * PAGE_SIZE, "x"))
    text = "\n".join(lines)
    assert "disk read" not in text
    assert "do_read_fault → filemap_map_pages [NOPAGE]" in lines[1]
    # fault-around covers the 16-page aligned block 0..15, minus page 3 (mapped) and page 4.
    assert lines[2] == ("    → fault-around maps 14 cached neighbours (VA 0x400000–0x402000, "
                        "0x405000–0x40f000) to their page-cache copies, read-only")
    assert lines[3].startswith("    → PTE points at page-cache copy")


def test_read_outside_an_access_is_explained_on_its_own(world: World) -> None:
    """read() goes through the page cache without any TLB lookup: is it still explained?"""
    guest = world.guest(2, xip=False)
    with Recorder(world.bus, guest_names={2: "pc"}) as rec:
        guest.read("/bin/app", 0, 2 * PAGE_SIZE)
    lines = rec.lines()
    assert lines[0].startswith("[pc] readahead: pages [0, ")
    assert lines[1].startswith("[pc] disk read: ")
    assert lines[2].startswith("[pc] page cache: ")


# ── the TLB, copy-on-write, SIGBUS ────────────────────────────────────────────────────────────

@pytest.mark.parametrize("xip", [True, False])
def test_second_access_is_a_tlb_hit(world: World, xip: bool) -> None:
    """The same page is executed twice: what happens the second time?"""
    guest = world.guest(0, xip=xip)
    mm = world.app(guest)
    lines = run(world, guest, mm, (TEXT, "x"), (TEXT + 8, "x"))
    assert lines[-1] == f"[guest 0] VA {TEXT:#x}: TLB hit"
    assert sum("TLB hit" in line for line in lines) == 1


@pytest.mark.parametrize(("xip", "source"), [(True, "shared-segment block"),
                                             (False, "page-cache page")])
def test_private_write_shows_copy_on_write(world: World, xip: bool, source: str) -> None:
    """A guest writes a private file mapping: who gets a copy, and where is it?"""
    guest = world.guest(0, xip=xip)
    mm = world.app(guest)
    lines = run(world, guest, mm, (CONF, "w"))
    copy = guest.preset.pte_pfn(mm.pt.lookup_pte(CONF >> PAGE_SHIFT))
    assert "[DONE_COW]" in lines[1] or "|DONE_COW]" in lines[1]
    assert f"    copy-on-write: a private copy of the {source} for VA {CONF:#x} in guest frame " \
           f"{copy:#x}" in lines
    assert lines[-1] == (f"    → PTE points at the private copy (CoW) in guest frame {copy:#x} "
                         f"(host frame {guest.host_frame(copy):#x}), writable")


@pytest.mark.parametrize(("xip", "handler"), [(True, "dax_iomap_fault"),
                                              (False, "filemap_fault")])
def test_beyond_eof_is_sigbus(world: World, xip: bool, handler: str) -> None:
    """A process touches its mapping past the end of the file: what does it get?"""
    guest = world.guest(0, xip=xip)
    mm = world.app(guest)
    lines = run(world, guest, mm, (CONF + 3 * PAGE_SIZE, "r"))
    assert lines[1:] == [
        f"    page fault (read) → {handler} [SIGBUS]: page 3 is beyond the end of the file",
        "    → SIGBUS: the process is killed, the access cannot complete",
    ]


def test_verbose_walk_numbers_every_nested_reference(world: World) -> None:
    """A TLB miss on a mapped page under nested paging: how many memory references, which?"""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    guest.access(mm, TEXT, "x")
    guest.tlb.flush(mm.asid)
    with Recorder(world.bus) as rec:
        guest.access(mm, TEXT, "x")
    lines = rec.lines(verbose=True)
    refs = guest.walk_cost
    assert refs == 24
    assert lines[0] == (f"[guest 0] VA {TEXT:#x}: TLB miss → PML4[0x000] → PDPT[0x000] → "
                        f"PD[0x002] → PT[0x000] → page present ({refs} references)")
    numbered = lines[1:]
    assert [int(line.split(".")[0]) for line in numbered] == list(range(1, refs + 1))
    guest_refs = [line for line in numbered if " guest " in line]
    assert [line.split()[2].split("[")[0] for line in guest_refs] == ["PML4", "PDPT", "PD", "PT"]
    # The last host walk translates the data page: its leaf is the segment frame's EPT entry.
    leaf = int(numbered[-1].rsplit("= ", 1)[1], 16)
    frame = int(world.segment.frame_of[world.block("/bin/app", 0)])
    assert guest.host_preset.pte_pfn(leaf) == frame
    assert rec.lines(verbose=False) == lines[:1]


# ── KSM and out of memory ──────────────────────────────────────────────────────────────────

def test_ksm_merges_the_page_cache_copies_of_two_guests(world: World) -> None:
    """Two page-cache guests ran the same binary: what does ksmd say it merged?"""
    guests = [world.guest(10 + i, xip=False, ram_pages=64) for i in range(2)]
    for guest in guests:
        guest.access(world.app(guest), TEXT, "x")
    ksm = Ksm(world.host, guests, bus=world.bus)
    with Recorder(world.bus, guest_names={10: "pc-a", 11: "pc-b"}) as rec:
        for wake in range(6):
            ksm.run_until(wake * ksm.sleep_ns)
    merges = [line for line in rec.lines() if "ksmd merges" in line]
    assert merges, rec.lines()
    assert all(line.startswith("[pc-") for line in merges)
    assert any(line.startswith("[host] ksmd") for line in rec.lines())
    scans = [e for e in rec.events if isinstance(e, KsmScan)]
    assert len(scans) == 6


def test_oom_is_explained(world: World) -> None:
    """A guest writes more anonymous memory than it has RAM: what does the trace say?"""
    guest = world.guest(0, xip=True, ram_pages=64)
    mm = guest.new_process("hog")
    guest.mmap(mm, HEAP, 128 * PAGE_SIZE, "rw-")
    with Recorder(world.bus) as rec:
        for page in range(128):
            if guest.access(mm, HEAP + page * PAGE_SIZE, "w") & VmFault.OOM:
                break
    lines = rec.lines()
    assert lines[-3].startswith("    page fault (write) → do_anonymous_page [OOM]")
    assert lines[-2:] == ["    out of memory in the guest: nothing left to reclaim",
                          "    → out of memory: the fault cannot be served"]


# ── the explain function itself ─────────────────────────────────────────────────────────────

def test_fault_flags_decode_vm_fault_names() -> None:
    """Result flags are shown with VmFault's names, unknown bits in hex."""
    assert fault_flags(0) == "NONE"
    assert fault_flags(VmFault.MAJOR | VmFault.LOCKED) == "MAJOR|LOCKED"
    assert fault_flags(int(VmFault.SIGBUS) | 0x800000) == "SIGBUS|0x800000"


def test_grouping_of_a_hand_made_stream() -> None:
    """Events after a fault-free access are not part of it; a Fault ends its access."""
    events: list[Event] = [
        TlbLookup(0, 3, 1, 0x400, hit=False),
        WalkStep(0, 3, "PML4", 1, 0, 0x2007, nested=True),
        WalkStep(0, 3, "PML4", 1, 0, 0x2007),
        WalkStep(0, 3, "PML4", 1, 0, 0x2007, nested=True),
        DiskRead(1, 3, block=99, nbytes=PAGE_SIZE),
        PageCacheInsert(1, 3, ino=12, pgoff=7, gpfn=0x20),
        Readahead(1, 3, ino=12, start=7, size=1, async_size=0, kind="single", pages_read=1),
        TlbLookup(2, 3, 1, 0x401, hit=True),
        Fault(3, 3, 1, 0x401123, write=True, handler="do_wp_page → wp_page_copy",
              result=0),
        KsmScan(4, -1, scanned=100, merged=0, full_scans=0),
        KsmScan(5, -1, scanned=100, merged=0, full_scans=1),
    ]
    assert explain(events, guest_names={3: "vm3"}) == [
        "[vm3] VA 0x400000: TLB miss → PML4[0x000] → page present (3 references)",
        "[vm3] single-page read: pages [7, 8) of inode 12, 0 async; 1 page read",
        "[vm3] disk read: 4096 bytes (1 page) from image block 99",
        "[vm3] page cache: 1 page (inode 12 page 7) in guest frame 0x20",
        "[vm3] VA 0x401123: TLB hit, but the cached entry does not allow this access",
        "    page fault (write) → do_wp_page → wp_page_copy [NONE]",
        "[host] ksmd: 2 wake-ups scan 200 pages, nothing merged (full scans so far: 1)",
    ]


def test_recorder_unsubscribes(world: World) -> None:
    """A Recorder listens only inside its `with` block, and records each bus once."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    with Recorder(world.bus, world.bus) as rec:
        assert world.bus
        guest.access(mm, TEXT, "x")
    assert not world.bus
    count = len(rec.events)
    assert sum(isinstance(e, Fault) for e in rec.events) == 1
    guest.access(mm, TEXT + PAGE_SIZE, "x")
    assert len(rec.events) == count
    assert rec.text() == "".join(line + "\n" for line in rec.lines())


# ── the golden trace ─────────────────────────────────────────────────────────────────────────

def golden_scenario(image: Ext2Image) -> str:
    """Two XIP guests and one page-cache guest run the same few accesses of one binary."""
    world = World(image)
    names = {0: "xip-a", 1: "xip-b", 2: "pagecache"}
    guests = [world.guest(0, xip=True), world.guest(1, xip=True), world.guest(2, xip=False)]
    with Recorder(world.bus, guest_names=names) as rec:
        for guest in guests:
            mm = world.app(guest)
            guest.access(mm, TEXT + 3 * PAGE_SIZE, "x")  # first touch of a text page
            guest.access(mm, TEXT + 3 * PAGE_SIZE, "x")  # again: the TLB has it
            guest.access(mm, TEXT + 4 * PAGE_SIZE, "x")  # its neighbour
            guest.access(mm, CONF, "w")  # a private write: copy-on-write
            guest.access(mm, CONF + 3 * PAGE_SIZE, "r")  # past the end of the file
    return rec.text()


def test_golden_trace_xip_vs_page_cache(image: Ext2Image) -> None:
    """The full trace of a short XIP-versus-page-cache run reads exactly as reviewed."""
    text = golden_scenario(image)
    if os.environ.get("XIPMODEL_REGEN_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")


def _stopped_refs(guest: Guest, guest_levels: int) -> int:
    """References of a walk that read `guest_levels` guest entries and stopped at the last."""
    host_levels = guest.host_preset.nlevels
    return guest_levels * (host_levels + 1)
