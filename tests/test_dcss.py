"""The sizes the platforms impose, and new versions of the frozen image.

A DCSS holds at most 2047 MB (larger images are several, concatenated by dcssblk);
a DAX device's memory costs each guest 64 bytes of struct page per 4 KiB, the
pfn-only DCSS nothing; a new version of the segment is new memory, held beside
the old one until the old one's last guest left.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from xipmodel.__main__ import main
from xipmodel.distro import default_image
from xipmodel.errors import ParameterError
from xipmodel.ext2 import File, build_image
from xipmodel.ext2.reader import Ext2Image
from xipmodel.host import CATEGORIES, Host, Scenario
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.segment import (
    DCSS_MAX_BYTES,
    DCSSBLK_MAX_SEGMENTS,
    SharedSegment,
    dcss_layout,
    segment_unload,
)
from xipmodel.params import PAGE_SIZE, STRUCT_PAGE_BYTES
from xipmodel.rollout import MAX_ROLLOUT_GUESTS, Rollout, image_version, rollout

LIBC = "/usr/lib/x86_64-linux-gnu/libc.so.6"
SMALL = Scenario(guests=4, workload="shell", guest_ram_mib=64, variants=1)
MIB = 1 << 20


def memmap_pages() -> int:
    """Struct pages of the default image as a DAX device, in guest pages."""
    return -(-default_image().superblock.s_blocks_count * STRUCT_PAGE_BYTES // PAGE_SIZE)


# ── 2047 MB per DCSS ─────────────────────────────────────────────────────────────────────────

def test_dcss_layout_splits_an_image_larger_than_2047_mb_into_contiguous_segments() -> None:
    """How many saved segments does an image need? One up to 2047 MB, then one more per 2047 MB."""
    per = DCSS_MAX_BYTES // PAGE_SIZE
    assert DCSS_MAX_BYTES == 2047 * MIB
    assert len(dcss_layout(per, PAGE_SIZE)) == 1
    parts = dcss_layout(per + 1, PAGE_SIZE)
    assert [(p.first_block, p.blocks) for p in parts] == [(0, per), (per, 1)]
    four_gib = dcss_layout((4 << 30) // PAGE_SIZE, PAGE_SIZE)
    assert len(four_gib) == 3
    # Contiguous, covering the image, each within the limit, names of at most 8 characters.
    assert sum(p.blocks for p in four_gib) == (4 << 30) // PAGE_SIZE
    for a, b in itertools.pairwise(four_gib):
        assert a.first_block + a.blocks == b.first_block
    assert all(p.blocks * PAGE_SIZE <= DCSS_MAX_BYTES and len(p.name) <= 8 for p in four_gib)
    assert len({p.name for p in four_gib}) == 3


def test_dcss_layout_refuses_what_dcssblk_cannot_add() -> None:
    """A limit above z/VM's, or more segments than one dcssblk add takes: a clear refusal."""
    with pytest.raises(ParameterError, match="2047 MB"):
        dcss_layout(10, PAGE_SIZE, max_bytes=DCSS_MAX_BYTES + PAGE_SIZE)
    with pytest.raises(ParameterError, match="multiple of the page size"):
        dcss_layout(10, PAGE_SIZE, max_bytes=PAGE_SIZE + 1)
    most = DCSSBLK_MAX_SEGMENTS * (DCSS_MAX_BYTES // PAGE_SIZE)
    assert len(dcss_layout(most, PAGE_SIZE)) == DCSSBLK_MAX_SEGMENTS
    with pytest.raises(ParameterError, match=f"concatenates at most {DCSSBLK_MAX_SEGMENTS}"):
        dcss_layout(most + 1, PAGE_SIZE)


def test_a_segment_with_a_smaller_limit_spans_several_dcss_and_runs_the_same() -> None:
    """The 20 MiB image with 4 MiB segments: six DCSSs, one device, the same addresses."""
    image = default_image()
    seg = SharedSegment(HostMemory(), image, PAGE_SIZE, dcss_max_bytes=4 * MIB)
    assert len(seg.dcss) == -(-image.superblock.s_blocks_count // 1024)
    assert seg.dcss[-1].first_block + seg.dcss[-1].blocks == seg.blocks
    result = Host(SMALL.replace(guests=1), "xip").run()
    assert result.extra["dcss"] == ["XIP2"]  # the default image fits one segment
    assert "dcss" not in Host(SMALL.replace(guests=1), "dax").run().extra  # a host file


# ── struct pages: where the kernel pays them ────────────────────────────────────────────────

@pytest.mark.parametrize(("kind", "kernel", "expected"), [
    (FrameKind.HOSTCACHE, "6.18", "memmap"),  # virtio-fs / virtio-pmem DAX: ZONE_DEVICE
    (FrameKind.HOSTCACHE, "6.1", "memmap"),
    (FrameKind.HOSTCACHE, "2.6-xip", 0),  # 2.6's XIP inserted bare pfns
    (FrameKind.SHARED, "6.18", 0),  # a DCSS is pfn-only under any kernel
    (FrameKind.SHARED, "2.6-xip", 0),
])
def test_memremap_pages_takes_struct_pages_from_guest_ram(kind: FrameKind, kernel: str,
                                                          expected: int | str) -> None:
    """A guest mounts a DAX device: how much of its RAM goes to struct pages?"""
    image = default_image()
    host = HostMemory()
    seg = SharedSegment(host, image, PAGE_SIZE, frame_kind=kind)
    guest = Guest(0, host, 4096, image, segment=seg, kernel=kernel)
    pages = memmap_pages() if expected == "memmap" else 0
    assert guest.page_counts()["struct_pages"] == pages == len(guest.memmap)
    assert guest.free_pages == Guest(1, host, 4096, image).free_pages - pages
    # All of it resident on the host (memmap_init_zone_device writes every struct page).
    assert np.count_nonzero(host.kind == FrameKind.MEMMAP) == pages


def test_a_guest_too_small_for_its_dax_device_struct_pages_is_refused() -> None:
    """82 pages of struct pages do not fit a 64-page guest: one clear error."""
    image = default_image()
    host = HostMemory()
    seg = SharedSegment(host, image, PAGE_SIZE, frame_kind=FrameKind.HOSTCACHE)
    assert memmap_pages() > 64
    with pytest.raises(ParameterError, match="struct pages"):
        Guest(0, host, 64, image, segment=seg)


def test_each_dax_guest_pays_the_struct_pages_and_clones_do_too() -> None:
    """Four guests (three of them clones): four memmaps in dax mode, none in xip mode."""
    dax = Host(SMALL, "dax").run()
    assert dax.bytes_by_category["struct_pages"] == 4 * memmap_pages() * PAGE_SIZE
    assert all(g["struct_pages_pages"] == memmap_pages() for g in dax.per_guest)
    assert Host(SMALL, "xip").run().bytes_by_category["struct_pages"] == 0
    assert Host(SMALL.replace(kernel="2.6-xip"), "dax").run().bytes_by_category[
        "struct_pages"] == 0


# ── versions of the segment ──────────────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def new_image() -> Ext2Image:
    return image_version([LIBC])


@pytest.fixture(scope="module")
def xip_rollout(new_image: Ext2Image) -> Rollout:
    return rollout(SMALL, new_image, mode="xip")


def test_image_version_rebuilds_only_the_updated_file(new_image: Ext2Image) -> None:
    """libc rebuilt: every block of libc differs, every block of another file is the same."""
    old = default_image()
    assert new_image.stat(LIBC).st_size == old.stat(LIBC).st_size

    def blocks(image: Ext2Image, path: str) -> list[int]:
        ino = image.lookup(path)
        return [image.bmap(ino, i) for i in range(-(-image.file_size(ino) // PAGE_SIZE))]

    libc = blocks(old, LIBC)
    assert libc == blocks(new_image, LIBC)  # the same places
    assert all(old.read_block(b) != new_image.read_block(b) for b in libc)
    bash = blocks(old, "/usr/bin/bash")
    assert all(old.read_block(b) == new_image.read_block(b) for b in bash)
    with pytest.raises(ParameterError, match="not an ELF file"):
        image_version(["/etc/passwd"])
    with pytest.raises(ParameterError, match="non-empty list"):
        image_version(LIBC)  # type: ignore[arg-type]


def test_while_both_versions_are_in_use_the_host_holds_both(xip_rollout: Rollout) -> None:
    """Guests move to the new version one by one: is the host ever cheaper than either alone?

    While some guests use each version, the shared frames are both versions' resident
    blocks, the old one complete, and host memory is at least what every guest on the
    old version cost, and at least what every guest on the new one costs. Blocks with
    the same bytes in both versions are held twice (no sharing across versions).
    """
    r = xip_rollout
    both = (r.column("on_old") > 0) & (r.column("on_new") > 0)
    assert both.sum() == 2 * (SMALL.guests - 1) - 1  # from the first's run to the last's leave
    shared = r.timeline_bytes[:, CATEGORIES.index("shared")]
    assert (shared == r.column("old_bytes") + r.column("new_bytes")).all()
    assert (r.column("old_bytes")[both] == r.old_blocks * PAGE_SIZE).all()
    assert (r.column("new_bytes")[both] > 0).all()
    assert (r.column("host_bytes")[both] >= max(r.before.host_bytes,
                                                 r.after.host_bytes)).all()
    assert 0 < r.identical_resident <= min(r.old_blocks, r.new_blocks)


def test_the_old_version_is_freed_when_its_last_guest_leaves(xip_rollout: Rollout) -> None:
    """The last guest leaves the old version: its frames, and only they, are freed."""
    r = xip_rollout
    last = int(np.flatnonzero(r.column("on_old") == 0)[0])
    assert r.column("guest")[last] == SMALL.guests - 1
    assert (r.column("old_bytes")[:last] == r.old_blocks * PAGE_SIZE).all()
    assert (r.column("old_bytes")[last:] == 0).all()
    # Leaving frees nothing else: the guest's own RAM stays resident on the host.
    drop = r.column("host_bytes")[last - 1] - r.column("host_bytes")[last]
    assert drop == r.old_blocks * PAGE_SIZE
    assert r.after.bytes_by_category["shared"] == r.new_blocks * PAGE_SIZE


def test_in_page_cache_mode_an_update_holds_nothing_twice(xip_rollout: Rollout,
                                                          new_image: Ext2Image) -> None:
    """The same update with page caches: no version held twice, but every guest its copies.

    Each guest's umount drops its cache; the freed RAM stays resident on the host and
    takes the new files, so host memory never falls and never holds a version twice;
    yet XIP at its peak, both versions resident, still costs less.
    """
    pc = rollout(SMALL, new_image, mode="pagecache")
    assert (pc.timeline_bytes[:, CATEGORIES.index("shared")] == 0).all()
    assert (np.diff(pc.column("host_bytes")) >= 0).all()
    assert pc.old_blocks == pc.new_blocks == pc.identical_resident == 0
    assert xip_rollout.peak_bytes < pc.before.host_bytes


def test_a_dax_rollout_rebuilds_each_guest_struct_pages_once(new_image: Ext2Image) -> None:
    """virtio-pmem replaced: each guest frees the old device's struct pages, maps the new."""
    r = rollout(SMALL, new_image, mode="dax")
    per_guest = memmap_pages() * PAGE_SIZE
    assert (r.timeline_bytes[:, CATEGORIES.index("struct_pages")] <= SMALL.guests * per_guest
            ).all()
    assert r.after.bytes_by_category["struct_pages"] == SMALL.guests * per_guest
    assert r.after.bytes_by_category["shared"] == r.new_blocks * PAGE_SIZE


def test_rollout_is_deterministic_and_refuses_bad_input(xip_rollout: Rollout,
                                                         new_image: Ext2Image) -> None:
    """The same rollout twice gives the same timeline; bad input is one clear error."""
    again = rollout(SMALL, new_image, mode="xip")
    assert (again.timeline == xip_rollout.timeline).all()
    with pytest.raises(ParameterError, match="mode 'ksm'"):
        rollout(SMALL, new_image, mode="ksm")
    with pytest.raises(ParameterError, match="guests"):
        rollout(SMALL.replace(guests=MAX_ROLLOUT_GUESTS + 1), new_image)
    with pytest.raises(ParameterError, match="interval_ms"):
        rollout(SMALL, new_image, interval_ms=-1)
    with pytest.raises(ParameterError, match="new_image"):
        rollout(SMALL, b"not an image")  # type: ignore[arg-type]
    empty = Ext2Image.open(build_image({"/x": File(b"hi")}))
    with pytest.raises(ParameterError, match="new_image has no /usr/bin/dash for shell"):
        rollout(SMALL, empty)


def test_segment_unload_drops_the_guest_references_only() -> None:
    """A guest leaves a segment others still use: its EPT entries go, the frames stay."""
    image = default_image()
    host = HostMemory()
    seg = SharedSegment(host, image, PAGE_SIZE)
    a, b = (Guest(i, host, 4096, image, segment=seg) for i in range(2))
    block = image.bmap(image.lookup(LIBC), 0)
    for g in (a, b):
        g.map_segment_block(block)
    pfn = int(seg.frame_of[block])
    assert host.refcount[pfn] == 3  # the segment's own and one per guest
    segment_unload(a)
    assert a.segment is None and not a.dcss_mapped and host.refcount[pfn] == 2
    assert a.host_frame(a.dcss_base + block) == -1
    segment_unload(b)
    assert seg.purge() == 1 and host.kind[pfn] == FrameKind.FREE


def test_cli_rollout(capsys: pytest.CaptureFixture[str]) -> None:
    """python -m xipmodel rollout: a table, JSON, and one line for bad input."""
    assert main(["rollout", "--guests", "2", "--mode", "xip", "--workload", "shell"]) == 0
    out = capsys.readouterr().out
    assert "xip:" in out and "held twice" in out and "on old" in out
    assert main(["rollout", "--guests", "2", "--mode", "xip", "--workload", "shell",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rollouts"][0]["mode"] == "xip"
    assert len(data["rollouts"][0]["timeline"]["host_bytes"]) == 1 + 2 * 2
    assert main(["rollout", "--guests", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--guests 0" in err
