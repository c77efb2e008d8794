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
"""

from __future__ import annotations

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.events import EventBus, HostPageIn
from xipmodel.ext2.reader import Ext2Image
from xipmodel.mm.frames import CONTENT_BLOCK, OWNER_SEGMENT, FrameKind, HostMemory

__all__ = ["SharedSegment"]


class SharedSegment:
    """A frozen image placed once in host memory, demand-paged, read-only by construction."""

    def __init__(self, host: HostMemory, image: Ext2Image, page_size: int = 4096,
                 bus: EventBus | None = None, name: str = "XIP2",
                 frame_kind: FrameKind = FrameKind.SHARED) -> None:
        """Place `image` in a segment of `host`; refuse images whose blocks are not pages.

        XIP needs block size = page size: ext2_get_xip_mem maps a whole block as a page.
        `frame_kind` HOSTCACHE models DAX over the host's page cache of the image file
        (virtio-pmem / virtio-fs) instead of a saved segment: shared the same way.
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

    def direct_access(self, block: int, time: int = 0, guest: int = -1) -> int | None:
        """Model of dcssblk_direct_access: the host frame holding image `block` (paged in if new).

        Returns None if the host has no free frame left.
        """
        assert 0 < block < self.blocks, f"direct_access: block {block} outside the segment"
        pfn = int(self.frame_of[block])
        if pfn >= 0:
            return pfn
        # The first guest to touch this block: the host pages it in from the saved segment.
        new = self.host.alloc(self.frame_kind, OWNER_SEGMENT, CONTENT_BLOCK + block)
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
