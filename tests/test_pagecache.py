"""The guest LRU, readahead arithmetic and KSM, as unit cases with MODEL.md's numbers."""

from __future__ import annotations

import numpy as np
import pytest

from xipmodel.errors import ParameterError
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.ksm import Ksm
from xipmodel.mm.pagecache import LRU_ACTIVE, LRU_INACTIVE, PageCache
from xipmodel.mm.readahead import FileRaState, get_init_ra_size, get_next_ra_size
from xipmodel.mm.segment import SharedSegment
from xipmodel.mm.vmscan import folio_check_references
from xipmodel.params import PAGE_SIZE

# --- readahead arithmetic (mm/readahead.c) --------------------------------------------


@pytest.mark.parametrize(("req", "expected"), [(1, 4), (2, 4), (4, 8), (8, 16), (16, 32),
                                               (32, 32), (64, 32)])
def test_initial_window(req: int, expected: int) -> None:
    """get_init_ra_size with max 32: ×4 up to max/32, ×2 up to max/4, else max."""
    assert get_init_ra_size(req, 32) == expected


def test_window_ramp_for_one_page_reads() -> None:
    """A 1-page sequential reader hitting each PG_readahead mark sees 4, 8, 16, 32, 32, 32."""
    ra = FileRaState()
    window = ra.ondemand(0, 1, hit_marker=False)
    sizes = [window.size]
    for _ in range(5):
        mark = window.start + window.size - window.async_size
        window = ra.ondemand(mark, 1, hit_marker=True)
        sizes.append(window.size)
    assert sizes == [4, 8, 16, 32, 32, 32]
    assert [get_next_ra_size(s, 32) for s in (4, 8, 16, 32)] == [8, 16, 32, 32]


def test_random_read_leaves_state_alone() -> None:
    """A small read far from the previous position reads just itself (no ramp)."""
    ra = FileRaState(prev_pos=10 * PAGE_SIZE)
    window = ra.ondemand(500, 2, hit_marker=False)
    assert (window.start, window.size, window.async_size) == (500, 2, 0)
    assert (ra.start, ra.size) == (0, 0)


# --- the two LRU lists (mm/swap.c, mm/vmscan.c, mm/workingset.c) -----------------------


def test_mark_page_accessed_ladder() -> None:
    """read() references: inactive,unreferenced → inactive,referenced → active,unreferenced."""
    cache = PageCache(16)
    cache.add(1, 0, gpfn=5, active_floor=0)
    assert (cache.lru[5], cache.referenced[5]) == (LRU_INACTIVE, False)
    cache.mark_page_accessed(5)
    assert (cache.lru[5], cache.referenced[5]) == (LRU_INACTIVE, True)
    cache.mark_page_accessed(5)
    assert (cache.lru[5], cache.referenced[5]) == (LRU_ACTIVE, False)
    cache.mark_page_accessed(5)
    assert (cache.lru[5], cache.referenced[5]) == (LRU_ACTIVE, True)


def test_refault_distance_decides_activation() -> None:
    """A page refaulting within (active + anon) evictions goes straight to the active list."""
    cache = PageCache(64)
    for pgoff in range(10):
        cache.add(1, pgoff, gpfn=pgoff + 1, active_floor=0)
    cache.remove(1)  # evict page 0: shadow stamped at age 0
    for gpfn in range(2, 6):
        cache.remove(gpfn)  # four more evictions: age 5
    _, activated = cache.add(1, 0, gpfn=1, active_floor=5)  # distance 5 <= 5
    assert activated and cache.lru[1] == LRU_ACTIVE
    _, activated = cache.add(1, 1, gpfn=2, active_floor=2)  # distance 5 > 2
    assert not activated and cache.lru[2] == LRU_INACTIVE
    assert cache.refaults == 2 and cache.refault_activations == 1


def test_unknown_policy_is_refused() -> None:
    """Only the policies the page cache implements are accepted, by name."""
    with pytest.raises(ParameterError, match="'belady'"):
        PageCache(8, "belady")


@pytest.fixture(scope="module")
def image() -> Ext2Image:
    rng = np.random.default_rng(3)
    return Ext2Image.open(build_image({
        "/bin/tool": rng.integers(0, 256, 40 * PAGE_SIZE, dtype=np.uint8).tobytes(),
        "/etc/table": rng.integers(0, 256, 40 * PAGE_SIZE, dtype=np.uint8).tobytes(),
    }))


def test_exec_pages_activate_after_first_use_data_pages_need_two(image: Ext2Image) -> None:
    """Reclaim activates mapped executable file pages seen once; data pages need a second look."""
    host = HostMemory()
    guest = Guest(0, host, 512, image, fault_around_pages=1)
    mm = guest.new_process()
    guest.mmap(mm, 0x400000, 40 * PAGE_SIZE, "r-x", path="/bin/tool", advice="random")
    guest.mmap(mm, 0x800000, 40 * PAGE_SIZE, "r--", path="/etc/table", advice="random")
    guest.access(mm, 0x400000, "x")
    guest.access(mm, 0x800000, "r")
    text = guest.cache.find(image.lookup("/bin/tool"), 0)
    data = guest.cache.find(image.lookup("/etc/table"), 0)
    assert text is not None and data is not None
    assert folio_check_references(guest, text) == "activate"  # VM_EXEC file page, first use
    assert folio_check_references(guest, data) == "keep"  # referenced once: another round
    assert folio_check_references(guest, data) == "reclaim"  # not referenced since
    guest.access(mm, 0x800000, "r")  # the TLB still holds it: no new accessed bit...
    guest.tlb.flush()
    guest.access(mm, 0x800000, "r")  # ...until a walk sets it again
    assert folio_check_references(guest, data) == "keep"


# --- KSM (mm/ksm.c) -------------------------------------------------------------------


def _page_cache_guests(image: Ext2Image, n: int) -> tuple[HostMemory, list[Guest]]:
    host = HostMemory()
    guests = [Guest(i, host, 1024, image) for i in range(n)]
    for g in guests:
        mm = g.new_process()
        g.mmap(mm, 0x400000, 40 * PAGE_SIZE, "r-x", path="/bin/tool")
        for page in range(40):
            g.access(mm, 0x400000 + page * PAGE_SIZE, "x")
    return host, guests


def test_ksm_merges_page_cache_copies_only_after_scan_time(image: Ext2Image) -> None:
    """ksmd at 100 pages per 20 ms needs two passes before copies merge, then saves N-1 of N."""
    host, guests = _page_cache_guests(image, 4)
    cached = len(guests[0].cache)
    assert host.counts_by_kind()[FrameKind.PAGECACHE] == 4 * cached
    ksm = Ksm(host, guests)
    ksm.run_until(0)  # one wake-up: 100 pages
    assert ksm.counters.pages_scanned == 100 and ksm.counters.pages_sharing == 0
    ksm.run_until(2_000_000_000)  # 2 s: 100 wake-ups
    c = ksm.counters
    assert c.full_scans >= 2
    assert c.pages_sharing >= 3 * cached and c.pages_shared >= cached
    assert host.counts_by_kind()[FrameKind.PAGECACHE] == 0  # all merged into KSM frames
    assert c.profit_bytes == c.pages_sharing * 4096 - c.rmap_items * 64
    assert c.pages_volatile == c.rmap_items - c.pages_shared - c.pages_sharing \
        - c.pages_unshared


def test_writing_a_merged_page_breaks_the_merge(image: Ext2Image) -> None:
    """A guest writing into a KSM-merged frame gets its own copy (cow_ksm); others keep theirs."""
    host, guests = _page_cache_guests(image, 2)
    ksm = Ksm(host, guests)
    ksm.run_until(2_000_000_000)
    gpfn = next(iter(guests[0].cache.key_of))
    shared = int(guests[0].backing[gpfn])
    assert host.kind[shared] == FrameKind.KSM
    guests[0].write_page(gpfn, host.unique_content())
    assert guests[0].stats.cow_ksm == 1
    assert host.kind[guests[0].backing[gpfn]] != FrameKind.KSM
    other = guests[1].cache.pages[guests[0].cache.key_of[gpfn]]
    assert int(guests[1].backing[other]) == shared  # still merged


def test_ksm_does_not_touch_xip_guests_shared_frames(image: Ext2Image) -> None:
    """XIP guests already share one frame per block: KSM finds nothing of it to merge."""
    host = HostMemory()
    segment = SharedSegment(host, image)
    guests = [Guest(i, host, 1024, image, segment=segment) for i in range(3)]
    for g in guests:
        mm = g.new_process()
        g.mmap(mm, 0x400000, 40 * PAGE_SIZE, "r-x", path="/bin/tool")
        for page in range(40):
            g.access(mm, 0x400000 + page * PAGE_SIZE, "x")
    ksm = Ksm(host, guests)
    ksm.run_until(2_000_000_000)
    assert host.counts_by_kind()[FrameKind.SHARED] == 40
    assert all(host.kind[f] == FrameKind.SHARED for f in segment.frame_of if f >= 0)


# --- the guest page cache's textbook policies against the standalone simulator --------


@pytest.fixture(scope="module")
def data_image() -> Ext2Image:
    rng = np.random.default_rng(5)
    return Ext2Image.open(build_image({
        "/data": rng.integers(0, 256, 200 * PAGE_SIZE, dtype=np.uint8).tobytes()}))


@pytest.mark.parametrize("policy", ["fifo", "lru", "clock", "arc", "opt"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_guest_page_cache_policy_equals_simulate(data_image: Ext2Image, policy: str,
                                                 seed: int) -> None:
    """Does a guest reading single pages (no readahead) miss exactly when simulate() says?

    simulate() itself is checked against libCacheSim; the guest's page cache has
    ram_pages - 1 frames (the zero page takes one) and reclaims one page at a time.
    """
    from xipmodel.policies import simulate

    rng = np.random.default_rng(seed)
    refs = (rng.zipf(1.3, 3000) % 200).tolist()
    guest = Guest(0, HostMemory(), 64, data_image, policy=policy, ra_pages=0)
    ino = data_image.lookup("/data")
    if policy == "opt":
        guest.cache.plan([(ino, r) for r in refs])
    for r in refs:
        guest.read("/data", r * PAGE_SIZE, PAGE_SIZE)
    expected = simulate(refs, 63, policy)
    assert guest.stats.disk_reads == expected.misses
    assert len(guest.cache) == min(63, len(set(refs)))


def test_arc_replace_takes_t1_when_t2_is_empty() -> None:
    """REPLACE evicts from T2 unless T1 is over its target p; with T2 empty (no page hit
    twice yet) only T1 has a page to give (it raised StopIteration)."""
    cache = PageCache(8, "arc")
    for i in range(3):
        cache.add(1, i, i + 1, active_floor=0)
    cache.p = 8.0  # T1 under its target: REPLACE would pick T2
    assert not cache.active
    assert cache.arc_replace(False) == 1  # T1's oldest


def test_arc_guest_whose_memory_went_to_anonymous_pages() -> None:
    """A heap that takes the guest leaves ARC an empty cache when a file page comes in
    (a ghost hit included): nothing to replace, the allocation reclaims or fails as it
    would (it raised StopIteration)."""
    from xipmodel.host import Host, Scenario

    s = Scenario(policy="arc", workload="python", guest_ram_mib=8, heap_share=0.9,
                 variants=None, guests=3)
    for mode in ("pagecache", "ksm"):
        r = Host(s, mode).run()
        assert r.totals["accesses"] > 0 and r.totals["major_faults"] > 0
