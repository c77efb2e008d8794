"""Scenarios of the fault paths: page cache versus execute-in-place, readahead, CoW, SIGBUS.

Each test builds a small frozen image, a host and guests, runs a few accesses
and checks what the kernel functions the model names would have done.
"""

from __future__ import annotations

import numpy as np
import pytest

from xipmodel.errors import ParameterError, ReadOnlyImageError
from xipmodel.events import Cow, Event, EventBus, Fault, Readahead
from xipmodel.ext2 import Ext2Image, File, build_image
from xipmodel.mm.frames import CONTENT_BLOCK, FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.memory import VmFault
from xipmodel.mm.readahead import MMAP_LOTSAMISS
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.vma import MmStruct
from xipmodel.params import PAGE_SIZE, Pte

TEXT = 0x400000
DATA = 0x800000
HEAP = 0x1000000
APP_PAGES = 100


@pytest.fixture(scope="module")
def image() -> Ext2Image:
    rng = np.random.default_rng(7)
    tree = {
        "/bin/app": rng.integers(0, 256, APP_PAGES * PAGE_SIZE, dtype=np.uint8).tobytes(),
        "/lib/holey": File(b"\x01" * PAGE_SIZE, size=8 * PAGE_SIZE),  # pages 1..7 are a hole
        "/data/big": rng.integers(0, 256, 600 * PAGE_SIZE, dtype=np.uint8).tobytes(),
        "/data/huge": File(b"z" * PAGE_SIZE, size=4000 * PAGE_SIZE),  # sparse
    }
    return Ext2Image.open(build_image(tree, volume_name="faults"))


class World:
    """A host, the shared segment of `image`, and guests made on demand."""

    def __init__(self, image: Ext2Image) -> None:
        self.image = image
        self.host = HostMemory()
        self.bus = EventBus()
        self.segment = SharedSegment(self.host, image, bus=self.bus)
        self.events: list[Event] = []
        self.bus.subscribe(self.events.append)

    def guest(self, gid: int, xip: bool, ram_pages: int = 4096, **kw: object) -> Guest:
        return Guest(gid, self.host, ram_pages, self.image,
                     segment=self.segment if xip else None, bus=self.bus, **kw)  # type: ignore[arg-type]

    def app(self, guest: Guest) -> MmStruct:
        mm = guest.new_process("app")
        guest.mmap(mm, TEXT, APP_PAGES * PAGE_SIZE, "r-x", path="/bin/app")
        guest.mmap(mm, DATA, 8 * PAGE_SIZE, "rw-", path="/lib/holey")
        guest.mmap(mm, HEAP, 64 * PAGE_SIZE, "rw-")
        return mm

    def faults(self) -> list[Fault]:
        return [e for e in self.events if isinstance(e, Fault)]


@pytest.fixture
def world(image: Ext2Image) -> World:
    return World(image)


def block_of(image: Ext2Image, path: str, page: int) -> int:
    return int(image.block_map(path)[page])


def test_xip_guest_maps_the_shared_frame_and_caches_nothing(world: World) -> None:
    """A guest executes a binary in place: does its PTE point at the shared frame, with no copy?"""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    assert guest.access(mm, TEXT + 5 * PAGE_SIZE, "x") == VmFault.NOPAGE
    block = block_of(world.image, "/bin/app", 5)
    pte = mm.pt.lookup_pte((TEXT >> 12) + 5)
    assert guest.preset.pte_pfn(pte) == guest.dcss_base + block
    assert not guest.preset.pte_flags(pte) & Pte.W
    assert guest.host_frame(guest.dcss_base + block) == world.segment.frame_of[block]
    assert len(guest.cache) == 0 and guest.stats.disk_read_bytes == 0
    assert world.faults()[-1].handler == "dax_iomap_fault"


def test_second_guest_pays_no_host_page_in(world: World) -> None:
    """Only the first guest to touch a block makes the host page it in; later guests share it."""
    first, second = world.guest(0, xip=True), world.guest(1, xip=True)
    for g in (first, second):
        mm = world.app(g)
        for page in range(0, APP_PAGES, 3):
            g.access(mm, TEXT + page * PAGE_SIZE, "x")
    touched = len(range(0, APP_PAGES, 3))
    assert world.segment.page_ins == touched == world.segment.resident
    assert world.host.counts_by_kind()[FrameKind.SHARED] == touched
    block = block_of(world.image, "/bin/app", 3)
    assert world.host.refcount[world.segment.frame_of[block]] == 1 + 2  # segment + 2 guests
    assert second.time < first.time  # the second guest never waited for a page-in


def test_page_cache_guests_each_hold_a_copy(world: World) -> None:
    """In page-cache mode, does every guest hold its own copy of the binary's pages?"""
    guests = [world.guest(i, xip=False) for i in range(3)]
    for g in guests:
        mm = world.app(g)
        g.access(mm, TEXT + 50 * PAGE_SIZE, "x")
    per_guest = {len(g.cache) for g in guests}
    assert per_guest == {32}  # one read-around window each
    assert world.host.counts_by_kind()[FrameKind.PAGECACHE] == 3 * 32
    assert world.segment.resident == 0


def test_mmap_miss_reads_32_pages_centred_on_the_fault(world: World) -> None:
    """A major fault at page p reads [p-16, p+16) and marks page p+8 for async readahead.

    The classic read-around, which executable mappings got up to Linux 6.15 (kernel "6.1");
    since 6.16 they read from the fault (test_kernel_rules).
    """
    guest = world.guest(0, xip=False, kernel="6.1")
    mm = world.app(guest)
    result = guest.access(mm, TEXT + 40 * PAGE_SIZE, "x")
    assert result & VmFault.MAJOR
    ino = world.image.lookup("/bin/app")
    cached = sorted(pgoff for (i, pgoff) in guest.cache.pages if i == ino)
    assert cached == list(range(24, 56))
    marked = [pgoff for (i, pgoff), gpfn in guest.cache.pages.items()
              if i == ino and guest.cache.readahead[gpfn]]
    assert marked == [48]
    assert guest.stats.disk_read_bytes == 32 * PAGE_SIZE
    ra = [e for e in world.events if isinstance(e, Readahead)]
    assert (ra[-1].start, ra[-1].size, ra[-1].async_size, ra[-1].kind) == (24, 32, 8,
                                                                         "read-around")


def test_fault_around_maps_cached_neighbours_without_io(world: World) -> None:
    """After read-around, does a neighbouring fault map up to 16 aligned pages with no I/O?"""
    guest = world.guest(0, xip=False, kernel="6.1")
    mm = world.app(guest)
    guest.access(mm, TEXT + 40 * PAGE_SIZE, "x")
    disk = guest.stats.disk_read_bytes
    result = guest.access(mm, TEXT + 33 * PAGE_SIZE, "x")
    assert result == VmFault.NOPAGE and guest.stats.disk_read_bytes == disk
    base = TEXT >> 12
    mapped = {int(v) - base for v in mm.pt.mapped_vpns() if base <= v < base + APP_PAGES}
    assert set(range(32, 48)) <= mapped  # the 16-page aligned window around page 33
    assert world.faults()[-1].handler == "do_read_fault → filemap_map_pages"


def test_async_readahead_fires_on_the_marked_page(world: World) -> None:
    """Touching the PG_readahead page reads the next window before it is needed (classic
    read-around: the 6.16+ exec window has no PG_readahead page)."""
    guest = world.guest(0, xip=False, kernel="6.1")
    mm = world.app(guest)
    guest.access(mm, TEXT + 40 * PAGE_SIZE, "x")
    guest.access(mm, TEXT + 48 * PAGE_SIZE, "x")
    kinds = [e.kind for e in world.events if isinstance(e, Readahead)]
    assert kinds == ["read-around", "async"]
    assert (world.image.lookup("/bin/app"), 56) in guest.cache


def test_read_around_stops_after_mmap_lotsamiss(image: Ext2Image) -> None:
    """After MMAP_LOTSAMISS more misses than hits, a miss reads just its own page."""
    world = World(image)
    guest = world.guest(0, xip=False, fault_around_pages=1)
    mm = guest.new_process()
    guest.mmap(mm, TEXT, 4000 * PAGE_SIZE, "r--", path="/data/huge")
    ino = image.lookup("/data/huge")
    # Faults 33 pages apart never land in a previous 32-page window: every one is a miss.
    for n in range(MMAP_LOTSAMISS + 3):
        guest.access(mm, TEXT + n * 33 * PAGE_SIZE, "r")
        if n < MMAP_LOTSAMISS:
            assert guest.ra_state(ino).mmap_miss == n + 1
    sizes = [e.size for e in world.events if isinstance(e, Readahead)]
    assert sizes[:MMAP_LOTSAMISS] == [32] * MMAP_LOTSAMISS
    assert sizes[MMAP_LOTSAMISS:] == [1, 1, 1]


def test_sequential_read_ramps_the_window(image: Ext2Image) -> None:
    """1-page sequential read() calls see readahead windows of 4, 8, 16, 32, 32 pages."""
    world = World(image)
    guest = world.guest(0, xip=False)
    for page in range(100):
        assert guest.read("/data/big", page * PAGE_SIZE, PAGE_SIZE) == PAGE_SIZE
    windows = [(e.size, e.kind) for e in world.events if isinstance(e, Readahead)]
    assert [s for s, _ in windows[:5]] == [4, 8, 16, 32, 32]
    assert windows[0][1] == "sync" and {k for _, k in windows[1:]} == {"async"}
    assert guest.stats.major_faults == 0  # read() is not a page fault


def test_beyond_eof_is_sigbus_in_both_modes(world: World) -> None:
    """An access past the end of a mapped file (inside the VMA) is SIGBUS, not an exception."""
    for xip in (True, False):
        guest = world.guest(int(xip), xip=xip)
        mm = guest.new_process()
        guest.mmap(mm, TEXT, 2 * APP_PAGES * PAGE_SIZE, "r-x", path="/bin/app")
        result = guest.access(mm, TEXT + (APP_PAGES + 3) * PAGE_SIZE, "x")
        assert result & VmFault.SIGBUS and guest.stats.sigbus == 1


def test_unmapped_address_is_sigsegv(world: World) -> None:
    """An access outside every VMA, or against its permissions, is SIGSEGV."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    assert guest.access(mm, 0x10, "r") & VmFault.SIGSEGV
    assert guest.access(mm, TEXT, "w") & VmFault.SIGSEGV  # text is r-x
    assert guest.stats.sigsegv == 2


def test_xip_hole_maps_the_zero_page(world: World) -> None:
    """A hole in a file on the XIP mount maps the zero page (dax_load_hole), read-only."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    assert guest.access(mm, DATA + 3 * PAGE_SIZE, "r") == VmFault.NOPAGE
    pte = mm.pt.lookup_pte((DATA >> 12) + 3)
    assert guest.preset.pte_pfn(pte) == 0 and not guest.preset.pte_flags(pte) & Pte.W
    assert world.faults()[-1].handler == "dax_iomap_fault → dax_load_hole"


def test_write_to_xip_page_copies_into_the_guest(world: World) -> None:
    """A guest writes a page of a binary it runs in place: who gets a copy?"""
    writer, reader = world.guest(0, xip=True), world.guest(1, xip=True)
    mm_w, mm_r = world.app(writer), world.app(reader)
    for g, mm in ((writer, mm_w), (reader, mm_r)):
        g.access(mm, DATA, "r")
    block = block_of(world.image, "/lib/holey", 0)
    frame = int(world.segment.frame_of[block])
    assert writer.access(mm_w, DATA, "w", content=12345) == VmFault.NONE
    new = writer.preset.pte_pfn(mm_w.pt.lookup_pte(DATA >> 12))
    assert new < writer.ram_pages and writer.kind[new] == FrameKind.COW
    assert world.host.content[writer.backing[new]] == 12345
    # The reader still sees the frozen block, and the shared frame kept its content.
    assert reader.host_frame(reader.preset.pte_pfn(mm_r.pt.lookup_pte(DATA >> 12))) == frame
    assert world.host.content[frame] == CONTENT_BLOCK + block
    cows = [e for e in world.events if isinstance(e, Cow)]
    assert [(c.guest, c.source) for c in cows] == [(0, "shared segment")]


def test_first_write_to_private_file_page_is_do_cow_fault(world: World) -> None:
    """A write fault with no PTE on a private file mapping copies at once (do_cow_fault)."""
    for xip, handler in ((False, "do_cow_fault → filemap_fault"),
                         (True, "do_cow_fault → dax_iomap_fault (dax_fault_cow_page)")):
        guest = world.guest(int(xip), xip=xip)
        mm = world.app(guest)
        result = guest.access(mm, DATA, "w")
        assert result & VmFault.DONE_COW and world.faults()[-1].handler == handler
        assert guest.kind[guest.preset.pte_pfn(mm.pt.lookup_pte(DATA >> 12))] == FrameKind.COW


def test_shared_writable_mapping_of_the_frozen_image_is_refused(world: World) -> None:
    """MAP_SHARED with PROT_WRITE on the XIP mount would write the frozen image: refused."""
    guest = world.guest(0, xip=True)
    mm = guest.new_process()
    with pytest.raises(ReadOnlyImageError, match="frozen"):
        guest.mmap(mm, TEXT, PAGE_SIZE, "rw-", path="/bin/app", shared=True)
    guest.mmap(mm, TEXT, PAGE_SIZE, "r--", path="/bin/app", shared=True)  # read-only is fine


def test_anonymous_read_maps_zero_page_then_write_copies(world: World) -> None:
    """Reading fresh heap maps the zero page; the first write gets a private page."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    guest.access(mm, HEAP, "r")
    assert guest.preset.pte_pfn(mm.pt.lookup_pte(HEAP >> 12)) == 0
    guest.access(mm, HEAP, "w")
    gpfn = guest.preset.pte_pfn(mm.pt.lookup_pte(HEAP >> 12))
    assert gpfn != 0 and guest.kind[gpfn] == FrameKind.COW
    guest.access(mm, HEAP + PAGE_SIZE, "w")
    assert guest.kind[guest.preset.pte_pfn(mm.pt.lookup_pte((HEAP >> 12) + 1))] == FrameKind.ANON


def test_cow_flushes_the_cached_translation_it_replaces(world: World) -> None:
    """set_pte_range over a present PTE the TLB caches (the zero page, read) drops that
    entry, so the retried write caches the private copy; PTEs put where none was find
    nothing to flush (the TLB caches only present PTEs)."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    vpn = HEAP >> 12
    guest.access(mm, HEAP, "r")
    guest.access(mm, TEXT, "x")
    assert guest.tlb.invalidations == 0
    assert guest.tlb.lookup(mm.asid, vpn) is not None
    guest.access(mm, HEAP, "w")
    copy = guest.preset.pte_pfn(mm.pt.lookup_pte(vpn))
    assert copy != 0 and guest.tlb.invalidations == 1
    cached = guest.tlb.lookup(mm.asid, vpn)
    assert cached is not None and cached[0] == copy


def test_tlb_hit_after_fault_and_nested_walk_cost(world: World) -> None:
    """The second access to a page hits the TLB; each miss costs a 24-reference nested walk."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    guest.access(mm, TEXT, "x")
    guest.access(mm, TEXT, "x")
    assert (guest.stats.tlb_misses, guest.stats.tlb_hits) == (1, 1)
    assert guest.stats.walk_refs == 24


def test_page_cache_never_exceeds_guest_ram(image: Ext2Image) -> None:
    """A small guest reading a file larger than its RAM reclaims instead of growing."""
    world = World(image)
    guest = world.guest(0, xip=False, ram_pages=128)
    assert guest.read("/data/big") == 600 * PAGE_SIZE
    assert len(guest.cache) < 128 and guest.stats.pgsteal > 0
    assert guest.cache.evictions == guest.stats.pgsteal


def test_frozen_image_bytes_never_change(image: Ext2Image) -> None:
    """After writes, CoW and reclaim in both modes, the image's bytes are unchanged."""
    before = image.sha256()
    world = World(image)
    for xip in (True, False):
        guest = world.guest(int(xip), xip=xip, ram_pages=256)
        mm = world.app(guest)
        for page in range(0, APP_PAGES, 7):
            guest.access(mm, TEXT + page * PAGE_SIZE, "x")
        for page in range(8):
            guest.access(mm, DATA + page * PAGE_SIZE, "w")
        guest.read("/data/big")
    assert image.sha256() == before
    with pytest.raises(TypeError):
        image.buffer[0] = 0  # type: ignore[index]


def test_block_size_must_equal_page_size_for_xip() -> None:
    """XIP maps one block per page: a 1 KiB-block image is refused with a clear message."""
    small = Ext2Image.open(build_image({"/f": b"x"}, block_size=1024))
    with pytest.raises(ParameterError, match=r"1024.*block_size=4096"):
        SharedSegment(HostMemory(), small)


@pytest.mark.parametrize("policy", ["linux", "fifo", "lru", "clock"])
def test_every_cache_policy_keeps_the_guest_within_ram(image: Ext2Image, policy: str) -> None:
    """Whatever the replacement policy, reclaim keeps a small guest running."""
    world = World(image)
    guest = world.guest(0, xip=False, ram_pages=96, policy=policy)
    mm = world.app(guest)
    for page in list(range(APP_PAGES)) * 2:
        assert not VmFault(guest.access(mm, TEXT + page * PAGE_SIZE, "x")).error
    assert len(guest.cache) < 96




def test_munmap_splits_a_vma_and_drops_its_pages(world: World) -> None:
    """Unmapping the middle of a mapping leaves two VMAs and no PTEs in the hole."""
    guest = world.guest(0, xip=False)
    mm = world.app(guest)
    for page in range(10):
        guest.access(mm, TEXT + page * PAGE_SIZE, "x")
    guest.munmap(mm, TEXT + 3 * PAGE_SIZE, 4 * PAGE_SIZE)
    text = [v for v in mm.vmas if v.name == "/bin/app"]
    assert [(v.start, v.end, v.pgoff) for v in text] == [
        (TEXT, TEXT + 3 * PAGE_SIZE, 0), (TEXT + 7 * PAGE_SIZE, TEXT + APP_PAGES * PAGE_SIZE, 7)]
    assert not guest.preset.pte_present_p(mm.pt.lookup_pte((TEXT >> 12) + 4))
    assert guest.access(mm, TEXT + 4 * PAGE_SIZE, "x") & VmFault.SIGSEGV
    assert guest.access(mm, TEXT + 8 * PAGE_SIZE, "x") == 0  # still mapped, same page


def test_mprotect_revokes_write_from_present_ptes(world: World) -> None:
    """After mprotect(PROT_READ), a page written before faults on the next write (SIGSEGV)."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    guest.access(mm, HEAP, "w")
    guest.mprotect(mm, HEAP, PAGE_SIZE, "r--")
    assert not guest.preset.pte_flags(mm.pt.lookup_pte(HEAP >> 12)) & Pte.W
    assert guest.access(mm, HEAP, "r") == 0
    assert guest.access(mm, HEAP, "w") & VmFault.SIGSEGV
    guest.mprotect(mm, HEAP, PAGE_SIZE, "rw-")
    assert guest.access(mm, HEAP, "w") == 0  # do_wp_page reuses the private page
    with pytest.raises(ParameterError, match="not all mapped"):
        guest.mprotect(mm, 0x10000, PAGE_SIZE, "r--")


def test_mprotect_grants_exec_to_present_ptes(world: World) -> None:
    """mprotect(PROT_READ|PROT_EXEC) on heap written before (a JIT's pattern): Linux's
    change_protection gives the present PTEs the new exec right, so the page runs at once;
    an exec through a PTE left without it would fault forever (raised AssertionError)."""
    guest = world.guest(0, xip=True)
    mm = world.app(guest)
    guest.access(mm, HEAP, "w")
    guest.mprotect(mm, HEAP, PAGE_SIZE, "r-x")
    assert guest.preset.pte_flags(mm.pt.lookup_pte(HEAP >> 12)) & Pte.X
    assert guest.access(mm, HEAP, "x") == 0
    guest.mprotect(mm, HEAP, PAGE_SIZE, "rwx")
    assert guest.access(mm, HEAP, "x") == 0 and guest.access(mm, HEAP, "w") == 0
