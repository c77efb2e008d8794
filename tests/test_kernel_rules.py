"""The kernel's own rules, one test per function the model got wrong before (issue: kernel oracle).

Each test is named after the kernel function whose behaviour it checks, and states
what that function does in Linux 6.18 (or in the profile it names).
"""

from __future__ import annotations

import numpy as np
import pytest

from xipmodel.events import Cow, EventBus, Readahead
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.mm.frames import CONTENT_BLOCK, FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.ksm import Ksm
from xipmodel.mm.memory import VmFault
from xipmodel.mm.pagecache import LRU_INACTIVE
from xipmodel.mm.readahead import FileRaState, page_cache_async_ra
from xipmodel.mm.segment import SharedSegment
from xipmodel.params import KERNELS, PAGE_SIZE

BASE = 0x7F00_0000_0000
FILE_PAGES = 256


@pytest.fixture(scope="module")
def image() -> Ext2Image:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, FILE_PAGES * PAGE_SIZE, dtype=np.uint8).tobytes()
    return Ext2Image.open(build_image({"/f": data, "/g": data[: 10 * PAGE_SIZE]}))


def guest(image: Ext2Image, kernel: str = "6.18", xip: bool = False, **kw: object) -> Guest:
    host = HostMemory()
    segment = SharedSegment(host, image) if xip else None
    return Guest(0, host, 4096, image, segment=segment, kernel=kernel,
                 **kw)  # type: ignore[arg-type]


def cached(g: Guest, image: Ext2Image, path: str = "/f") -> list[int]:
    ino = image.lookup(path)
    return sorted(pgoff for (i, pgoff) in g.cache.pages if i == ino)


def mapped(g: Guest, prot: str, advice: str = "normal", offset: int = 0,
           pages: int = FILE_PAGES, path: str = "/f") -> object:
    mm = g.new_process("t")
    assert mm is not None
    g.mmap(mm, BASE, pages * PAGE_SIZE, prot, path=path, offset=offset * PAGE_SIZE,
           advice=advice)
    return mm


def test_do_sync_mmap_readahead_exec_window_starts_at_the_fault(image: Ext2Image) -> None:
    """Linux 6.16+: a VM_EXEC fault reads [pgoff, pgoff + ra_pages), no PG_readahead mark."""
    g = guest(image)
    mm = mapped(g, "r-x")
    g.access(mm, BASE + 100 * PAGE_SIZE, "x")  # type: ignore[arg-type]
    assert cached(g, image) == list(range(100, 132))
    assert not g.cache.readahead.any()


def test_do_sync_mmap_readahead_exec_window_is_clipped_to_the_vma(image: Ext2Image) -> None:
    """The exec window never reads past the VMA (the pad between sections stays out)."""
    g = guest(image)
    mm = mapped(g, "r-x", offset=40, pages=40)  # file pages [40, 80)
    g.access(mm, BASE + 30 * PAGE_SIZE, "x")  # type: ignore[arg-type]  # file page 70
    assert cached(g, image) == list(range(70, 80))


def test_do_sync_mmap_readahead_exec_ignores_madv_random(image: Ext2Image) -> None:
    """MADV_RANDOM stops read-around, but not the exec rule (it is for random access)."""
    g = guest(image)
    mm = mapped(g, "r-x", advice="random")
    g.access(mm, BASE + 10 * PAGE_SIZE, "x")  # type: ignore[arg-type]
    assert cached(g, image) == list(range(10, 42))
    old = guest(image, kernel="6.1")
    mm = mapped(old, "r-x", advice="random")
    old.access(mm, BASE + 10 * PAGE_SIZE, "x")  # type: ignore[arg-type]
    assert cached(old, image) == [10]  # before 6.16 the page alone


def test_do_sync_mmap_readahead_sequential_reads_ra_pages(image: Ext2Image) -> None:
    """MADV_SEQUENTIAL: page_cache_sync_ra(&ractl, ra->ra_pages), so a miss reads 32 pages."""
    g = guest(image)
    mm = mapped(g, "r--", advice="sequential")
    for page in (0, 1, 2, 40):
        g.access(mm, BASE + page * PAGE_SIZE)  # type: ignore[arg-type]
    assert cached(g, image) == [*range(0, 32), *range(40, 72)]


def test_page_cache_ra_unbounded_marks_inside_a_window_cut_at_eof(image: Ext2Image) -> None:
    """A window cut at the end of the file still gets its PG_readahead mark, counted back
    from the end of what was read (nr_to_read - lookahead_size)."""
    g = guest(image)
    mm = mapped(g, "r--", path="/g", pages=10)
    g.access(mm, BASE + 5 * PAGE_SIZE)  # type: ignore[arg-type]  # window [0, 32) cut at 10
    marked = [p for p in cached(g, image, "/g")
              if g.cache.readahead[g.cache.find(image.lookup("/g"), p)]]
    assert cached(g, image, "/g") == list(range(10))
    assert marked == [10 - 8]


def test_page_cache_async_ra_pushes_only_at_the_expected_index() -> None:
    """6.10+: the window moves forward only at start + size - async_size; a marker hit
    elsewhere rebuilds the window from the cache (page_cache_next_miss)."""
    ra = FileRaState(ra_pages=32, start=0, size=4, async_size=3)
    window = page_cache_async_ra(ra, 1, 1, 1, lambda index, scan: index)
    assert window is not None and (window.start, window.size) == (4, 8)
    ra = FileRaState(ra_pages=32, start=0, size=4, async_size=3)
    window = page_cache_async_ra(ra, 4, 1, 1, lambda index, scan: 6)  # start + size: not it
    assert window is not None and (window.start, window.size) == (6, 6)  # next(2 + 1) = 6


def test_page_cache_ra_order_large_folios(image: Ext2Image) -> None:
    """ext4 on 6.16+: read() of 5, 20 and 64 pages leaves 16, 32 and 96 pages cached."""
    for pages, expect in ((5, 16), (20, 32), (64, 96)):
        g = guest(image, large_folios=True)
        for i in range(pages):
            g.read("/f", i * PAGE_SIZE, PAGE_SIZE)
        assert cached(g, image) == list(range(expect)), pages
        g0 = guest(image)
        for i in range(pages):
            g0.read("/f", i * PAGE_SIZE, PAGE_SIZE)
        assert len(cached(g0, image)) == {5: 28, 20: 60, 64: 124}[pages]


def test_filemap_read_marks_a_folio_accessed_once(image: Ext2Image) -> None:
    """1 KiB sequential reads touch each page four times but mark it accessed once
    (pos_same_folio): a use-once stream stays on the inactive list."""
    g = guest(image)
    for pos in range(0, 16 * PAGE_SIZE, 1024):
        g.read("/f", pos, 1024)
    ino = image.lookup("/f")
    for page in range(16):
        gpfn = g.cache.find(ino, page)
        assert gpfn is not None and g.cache.lru[gpfn] == LRU_INACTIVE, page
    assert g.cache.nr_active == 0


def test_workingset_test_recent_without_swap_counts_active_file_only(image: Ext2Image) -> None:
    """Without swap, the refault distance is compared with the active file list alone:
    anonymous pages cannot make room for file pages, so they do not count."""
    from xipmodel.mm.workingset import workingset_size

    g = guest(image)
    mm = g.new_process("anon")
    assert mm is not None
    g.mmap(mm, BASE, 64 * PAGE_SIZE, "rw-")
    for i in range(64):
        g.access(mm, BASE + i * PAGE_SIZE, "w")
    assert workingset_size(g) == g.cache.nr_active == 0


def test_do_wp_page_shared_mapping_writes_the_page_cache_page(image: Ext2Image) -> None:
    """wp_page_shared: a write through MAP_SHARED dirties the page-cache page itself, so
    another process mapping the file sees it; nothing is copied."""
    g = guest(image)
    a, b = g.new_process("a"), g.new_process("b")
    assert a is not None and b is not None
    for mm in (a, b):
        g.mmap(mm, BASE, 16 * PAGE_SIZE, "rw-", path="/f", shared=True)
    g.access(a, BASE)  # read first: the PTE is read-only
    assert g.access(a, BASE, "w", content=12345) == 0  # do_wp_page → wp_page_shared
    g.access(b, BASE)
    assert g.stats.cow_faults == 0
    pa = g.preset.pte_pfn(a.pt.lookup_pte(BASE >> 12))
    pb = g.preset.pte_pfn(b.pt.lookup_pte(BASE >> 12))
    assert pa == pb and g.kind[pa] == FrameKind.PAGECACHE


def test_dax_fault_cow_page_reads_the_block_from_the_segment(image: Ext2Image) -> None:
    """A first write to a private DAX mapping copies the block through dax_direct_access:
    the host pages the block in, and the copy starts as the block's content."""
    g = guest(image, xip=True)
    events: list[object] = []
    g.bus = EventBus()
    g.bus.subscribe(events.append)
    mm = mapped(g, "rw-")
    assert g.access(mm, BASE + 3 * PAGE_SIZE, "w") & VmFault.DONE_COW  # type: ignore[arg-type]
    block = image.bmap(image.lookup("/f"), 3)
    assert g.segment is not None and g.segment.frame_of[block] >= 0  # paged in
    assert block in g.dcss_mapped
    assert next(e for e in events if isinstance(e, Cow)).source == "shared segment"


def test_xip_file_fault_private_write_faults_twice(image: Ext2Image) -> None:
    """2.6's xip_file_fault maps the frame read-only even for a write; the retried write
    copies it in do_wp_page. dax_iomap_fault copies at once (one fault)."""
    old = guest(image, kernel="2.6-xip", xip=True)
    mm = mapped(old, "rw-")
    old.access(mm, BASE + 3 * PAGE_SIZE, "w")  # type: ignore[arg-type]
    assert old.stats.minor_faults == 2 and old.stats.cow_faults == 1
    new = guest(image, xip=True)
    mm = mapped(new, "rw-")
    new.access(mm, BASE + 3 * PAGE_SIZE, "w")  # type: ignore[arg-type]
    assert new.stats.minor_faults == 1 and new.stats.cow_faults == 1
    assert old.host.content[old.backing[old.preset.pte_pfn(
        mm.pt.lookup_pte((BASE >> 12) + 3))]] != CONTENT_BLOCK  # written since


def test_ksm_rmap_items_one_for_every_scanned_page(image: Ext2Image) -> None:
    """ksmd gives every page it scans an rmap_item (get_next_rmap_item), also one that
    merges with the stable tree the first time it is seen."""
    host = HostMemory()
    guests = [Guest(i, host, 1024, image, kernel="6.18") for i in range(2)]
    for g in guests:
        g.read("/f", 0, 64 * PAGE_SIZE)
    ksm = Ksm(host, guests)

    def backed() -> int:
        return sum(int(np.count_nonzero(g.backing >= 0)) for g in guests)

    for _ in range(3):
        ksm.scan(backed())
    assert ksm.counters.pages_sharing > 0
    late = Guest(2, host, 1024, image, kernel="6.18")  # its pages meet a full stable tree
    late.read("/f", 0, 64 * PAGE_SIZE)
    guests.append(late)
    ksm.scan(backed())
    c = ksm.counters
    assert c.rmap_items == backed()
    assert c.pages_volatile == c.rmap_items - c.pages_shared - c.pages_sharing - c.pages_unshared


def test_kernel_profiles_are_named_and_checked() -> None:
    """The profiles the course uses exist; an unknown one is refused with its name."""
    from xipmodel.errors import ParameterError
    from xipmodel.params import kernel_profile

    assert set(KERNELS) >= {"2.6-xip", "6.1", "6.18"}
    assert kernel_profile("6.18").exec_readaround and not kernel_profile("6.1").exec_readaround
    with pytest.raises(ParameterError, match=r"kernel: name='5\.99'"):
        kernel_profile("5.99")


def test_readahead_events_name_the_exec_window(image: Ext2Image) -> None:
    """The Readahead event shows the exec window as read: from the fault, no async part."""
    g = guest(image)
    events: list[object] = []
    g.bus = EventBus()
    g.bus.subscribe(events.append)
    mm = mapped(g, "r-x")
    g.access(mm, BASE + 100 * PAGE_SIZE, "x")  # type: ignore[arg-type]
    (ra,) = [e for e in events if isinstance(e, Readahead)]
    assert (ra.kind, ra.start, ra.size, ra.async_size, ra.pages_read) == \
        ("exec read-around", 100, 32, 0, 32)


def test_copy_page_range_allocates_the_child_table_first(image: Ext2Image) -> None:
    """fork in a full guest: the child's page table is allocated before any page is taken
    (copy_pte_range), so reclaim cannot free a page the child is about to map.

    Found by the memory state machine: before, mapping into the child could allocate its
    table, that allocation reclaimed the very page-cache page being copied, and the
    child's PTE pointed at a freed frame.
    """
    broken = 0
    for ram in range(70, 140):
        g = Guest(0, HostMemory(), ram, image, kernel="6.1")
        mm = g.new_process("p")
        assert mm is not None
        g.mmap(mm, BASE, FILE_PAGES * PAGE_SIZE, "r--", path="/f")
        for page in range(0, FILE_PAGES, 7):
            g.access(mm, BASE + page * PAGE_SIZE)
        child = g.fork(mm)
        if child is None:
            continue
        for vpn in child.pt.mapped_vpns().tolist():
            gpfn = g.preset.pte_pfn(child.pt.lookup_pte(vpn))
            broken += bool(gpfn and g.kind[gpfn] == FrameKind.GUEST_FREE)
    assert broken == 0


def test_load_elf_binary_reads_the_headers_before_any_fault() -> None:
    """execve reads the ELF header, program headers and PT_INTERP with kernel_read, so
    the first thing a page-cache guest does with a binary is read() readahead from page
    0; ld.so then read()s each library's first 832 bytes the same way."""
    from xipmodel.distro import default_image
    from xipmodel.elf import exec_image

    image = default_image()
    g = Guest(0, HostMemory(), 16384, image)
    events: list[object] = []
    g.bus = EventBus()
    g.bus.subscribe(events.append)
    mm = g.new_process("dash")
    assert mm is not None
    exec_image(g, mm, "/usr/bin/dash")
    first = next(e for e in events if isinstance(e, Readahead))
    assert (first.ino, first.kind, first.start, first.size) == \
        (image.lookup("/usr/bin/dash"), "sync", 0, 4)
    libc = image.lookup("/usr/lib/x86_64-linux-gnu/libc.so.6")
    reads = [e for e in events if isinstance(e, Readahead) and e.ino == libc]
    assert reads[0].kind == "sync" and reads[0].start == 0
