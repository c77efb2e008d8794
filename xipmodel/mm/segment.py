"""Model of a z/VM DCSS (drivers/s390/block/dcssblk.c) holding a frozen ext2 image.

Populate, freeze, share: the image is saved once (CP SAVESEG) and every guest
adds it shared and read-only, mounting it with `-o xip`. The segment sits in
each guest's physical address space *outside* the guest's RAM, so executing
from it costs the guest none of its memory::

    guest-physical address space of one guest
    0                          ram_pages            dcss_base            dcss_base + blocks
    ├──── guest RAM ────────────┤ (hole) ············ ├──── shared segment ───┤
      page cache, anon, tables                          image block b at gpfn dcss_base + b
                                                        ↓ nested paging (EPT/NPT)
    host frames:                                        one host frame per touched block,
                                                        shared by every guest

The host demand-pages the segment: a block has a host frame only once some
guest touched it. The first toucher pays the host page-in; later guests only
install a mapping. No guest mapping of a segment frame is ever writable.

Sizes the platform imposes. z/VM saves a segment of at most 2047 MB (CP DEFSEG
takes page numbers up to X'7FEFF'; extmem.c's old 31-bit DIAG x'64' output,
struct qout64_old, cannot describe more). A larger image spans several DCSSs at
contiguous addresses, added as one dcssblk device ("echo NAME1:NAME2 >
/sys/devices/dcssblk/add": dcssblk_add_store loads each with segment_load, and
dcssblk_is_continuous refuses a gap). The names, 1-8 characters each, go in one
sysfs write of less than a page, so one device concatenates at most 455 of them.
Concatenation changes no address: image block b stays at dcss_base + b.

No struct pages. dcssblk hands out bare pfns (__dcssblk_direct_access:
PFN_DEV|PFN_SPECIAL, the FS_DAX_LIMITED case of fs/dax.c), and segment_load maps
the segment with vmem_add_mapping, which builds no memmap: a DCSS costs the guest
none of its RAM under any kernel. (Recent Linux drops FS_DAX_LIMITED and marks
dcssblk's DAX broken; the model keeps the pfn-only DCSS every earlier kernel had.)
A DAX device of the other kind (frame_kind HOSTCACHE: virtio-fs's DAX window,
virtio-pmem) is ZONE_DEVICE memory: memremap_pages gives it a struct page per
4 KiB, allocated from the guest's RAM (memremap_pages below).

Versions. A DCSS is updated by populating and saving it again: a guest that
re-adds it gets the new version, a guest still using the old one keeps it, and
z/VM holds both until the last user of the old one leaves (then purge frees it).
A new version is new memory: blocks equal in both versions are not shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.events import EventBus, HostPageIn
from xipmodel.ext2.reader import Ext2Image
from xipmodel.mm.frames import OWNER_SEGMENT, FrameKind, HostMemory, block_content
from xipmodel.mm.page_alloc import alloc_page, free_page
from xipmodel.params import STRUCT_PAGE_BYTES

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = [
    "DCSSBLK_MAX_SEGMENTS",
    "DCSS_MAX_BYTES",
    "Dcss",
    "SharedSegment",
    "dcss_layout",
    "memremap_pages",
    "memunmap_pages",
    "segment_load",
    "segment_unload",
]

DCSS_MAX_BYTES: Final = 2047 << 20  # one saved segment: pages 0 .. X'7FEFF' (CP DEFSEG)
# dcssblk_add_store: names of 1-8 characters joined by ':' in one sysfs write (< 4096 bytes).
DCSSBLK_MAX_SEGMENTS: Final = 4096 // 9


@dataclass(frozen=True)
class Dcss:
    """One saved segment of a (possibly concatenated) dcssblk device: image blocks it holds."""

    name: str
    first_block: int
    blocks: int


def dcss_layout(blocks: int, page_size: int, name: str = "XIP2",
                max_bytes: int = DCSS_MAX_BYTES) -> tuple[Dcss, ...]:
    """The DCSSs an image of `blocks` pages needs: one if it fits, else contiguous parts.

    `max_bytes` may lower z/VM's 2047 MB (to show concatenation with a small image),
    never raise it. Refuses an image that needs more parts than dcssblk concatenates.
    """
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or \
            not page_size <= max_bytes <= DCSS_MAX_BYTES or max_bytes % page_size:
        raise ParameterError(
            f"dcss_layout: max_bytes {max_bytes!r} is not a multiple of the page size "
            f"{page_size} in {page_size}..{DCSS_MAX_BYTES} (z/VM saves at most 2047 MB "
            f"per segment)")
    per = max_bytes // page_size
    count = -(-blocks // per)
    if count > DCSSBLK_MAX_SEGMENTS:
        raise ParameterError(
            f"dcss_layout: an image of {blocks * page_size / (1 << 20):.0f} MiB needs {count} "
            f"DCSSs of at most {max_bytes >> 20} MiB; one dcssblk device concatenates at "
            f"most {DCSSBLK_MAX_SEGMENTS}")
    if count == 1:
        return (Dcss(name[:8].upper(), 0, blocks),)
    return tuple(Dcss(f"{name[:4].upper()}{i:04d}", i * per, min(per, blocks - i * per))
                 for i in range(count))


class SharedSegment:
    """A frozen image placed once in host memory, demand-paged, read-only by construction."""

    def __init__(self, host: HostMemory, image: Ext2Image, page_size: int = 4096,
                 bus: EventBus | None = None, name: str = "XIP2",
                 frame_kind: FrameKind = FrameKind.SHARED,
                 dcss_max_bytes: int = DCSS_MAX_BYTES) -> None:
        """Place `image` in a segment of `host`; refuse images whose blocks are not pages.

        XIP needs block size = page size: ext2_get_xip_mem maps a whole block as a page.
        `frame_kind` HOSTCACHE models DAX over the host's page cache of the image file
        (virtio-pmem / virtio-fs) instead of a saved segment: shared the same way, but
        with struct pages in each guest (pfn_only False) and no DCSS size limit.
        `dcss_max_bytes`: the largest DCSS (see dcss_layout).
        """
        if image.block_size != page_size:
            raise ParameterError(
                f"SharedSegment: image block size {image.block_size} is not the page size "
                f"{page_size}: execute-in-place maps one image block per page, so it needs "
                f"{page_size}-byte blocks (build the image with block_size={page_size})")
        self.host = host
        self.image = image
        self.name = name
        self.frame_kind = frame_kind
        self.bus = bus if bus is not None else EventBus()
        self.blocks = image.superblock.s_blocks_count
        self.frame_of = np.full(self.blocks, -1, dtype=np.int64)  # host frame per image block
        self.page_ins = 0
        self.pfn_only = frame_kind == FrameKind.SHARED
        # The saved segments a dcssblk device concatenates (none for a host file).
        self.dcss = (dcss_layout(self.blocks, page_size, name, dcss_max_bytes)
                     if self.pfn_only else ())
        self.purged = False

    def direct_access(self, block: int, time: int = 0, guest: int = -1) -> int | None:
        """Model of dcssblk_direct_access: the host frame holding image `block` (paged in if new).

        Returns None if the host has no free frame left.
        """
        assert 0 < block < self.blocks, f"direct_access: block {block} outside the segment"
        assert not self.purged, f"direct_access: segment {self.name} was purged"
        pfn = int(self.frame_of[block])
        if pfn >= 0:
            return pfn
        # The first guest to touch this block: the host pages it in from the saved segment.
        new = self.host.alloc(self.frame_kind, OWNER_SEGMENT, block_content(self.image, block))
        if new is None:
            return None
        self.frame_of[block] = new
        self.page_ins += 1
        if self.bus:
            self.bus.emit(HostPageIn(time, guest, block, new))
        return new

    @property
    def resident(self) -> int:
        """Blocks of the segment that occupy a host frame."""
        return int(np.count_nonzero(self.frame_of >= 0))

    def purge(self) -> int:
        """z/VM discards an old version once its last user left: free its frames.

        Every guest must have left it (segment_unload); returns the frames freed.
        """
        pfns = self.frame_of[self.frame_of >= 0]
        assert (self.host.refcount[pfns] == 1).all(), f"purge: {self.name} is still mapped"
        freed = self.host.put_many(pfns)
        self.frame_of[:] = -1
        self.purged = True
        return freed

    def memmap_pages(self, page_size: int) -> int:
        """Guest pages a guest spends on this device's struct pages (0 when pfn-only)."""
        return 0 if self.pfn_only else -(-self.blocks * STRUCT_PAGE_BYTES // page_size)


def memremap_pages(guest: Guest) -> bool:
    """Model of mm/memremap.c:memremap_pages for the DAX device behind guest.segment.

    pagemap_range → arch_add_memory with no altmap: the memmap comes from the guest's
    RAM, and memmap_init_zone_device writes every struct page at once, so all of it is
    resident, device pages touched or not (virtio_fs_setup_dax calls
    devm_memremap_pages for its DAX window this way). STRUCT_PAGE_BYTES per 4 KiB.
    Nothing for a pfn-only DCSS or a kernel without ZONE_DEVICE DAX (2.6's XIP).
    False if the guest's RAM cannot hold the memmap.
    """
    segment = guest.segment
    assert segment is not None and not guest.memmap, "memremap_pages: no device or mapped"
    if not guest.kernel.dax_struct_pages:
        return True
    for _ in range(segment.memmap_pages(guest.preset.page_size)):
        gpfn = alloc_page(guest, FrameKind.MEMMAP, guest.host.unique_content())
        if gpfn is None:
            return False
        guest.memmap.append(gpfn)
    return True


def memunmap_pages(guest: Guest) -> None:
    """Model of memunmap_pages: the device's struct pages go back to the guest's free list."""
    for gpfn in guest.memmap:
        free_page(guest, gpfn)
    guest.memmap.clear()


def segment_load(guest: Guest, segment: SharedSegment) -> bool:
    """The guest adds `segment` and mounts it -o xip or -o dax (extmem.c:segment_load).

    For every part: dcssblk_add_store → dcssblk_load_segment → segment_load; for a
    DAX device, its struct pages (memremap_pages). The guest's files are then the
    segment's image. False if the guest's RAM cannot hold the struct pages.
    """
    assert guest.segment is None and not segment.purged, "segment_load: already mounted"
    guest.segment = segment
    guest.disk = segment.image
    return memremap_pages(guest)


def segment_unload(guest: Guest) -> None:
    """The guest unmounts the segment and removes the device (extmem.c:segment_unload).

    Its processes must have exited and its page cache of the files been dropped
    (umount). The EPT entries onto the segment go, with the guest's references to
    the frames; the frames stay with the segment for the guests still using it.
    """
    segment = guest.segment
    assert segment is not None and not guest.procs, "segment_unload: busy or not mounted"
    if guest.dcss_mapped:
        blocks = np.array(sorted(guest.dcss_mapped), dtype=np.int64)
        guest.ept.unmap_many(guest.dcss_base + blocks)
        guest.host.put_many(segment.frame_of[blocks])
        guest.dcss_mapped.clear()
    memunmap_pages(guest)
    guest.segment = None
