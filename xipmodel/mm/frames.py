"""Host physical memory: every 4 KiB frame's owner, kind, reference count and content.

State is raw numpy arrays indexed by host frame number (no object per frame),
grown on demand, so a 64 GiB host (16 M frames) costs about 17 bytes a frame::

    frame      kind        owner            refcount   content
    ───────    ─────────   ──────────────   ────────   ─────────────────────────────
    0          ZERO        OWNER_HOST       many       CONTENT_ZERO  (the shared zero page)
    1          SHARED      OWNER_SEGMENT    1          image block 4711 (+ CONTENT_BLOCK)
    2          PAGECACHE   guest 0          1          image block 4711 (+ CONTENT_BLOCK)
    3          ANON        guest 0          1          unique id (a page nobody else has)
    4          PAGETABLE   guest 3          1          unique id
    5          FREE        -                0          -

Frames hold no bytes: `content` is an identity. Two frames with equal content
hold equal bytes (that is what KSM looks for): a file page is named by the first
image block holding its bytes (block_content: equal pages of two files are one
content, as memcmp sees them), zero-filled pages (an all-zero block, a hole) by
CONTENT_ZERO, and every page written with something new gets a fresh negative id.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError

if TYPE_CHECKING:
    from xipmodel.ext2.reader import Ext2Image

__all__ = [
    "CONTENT_BLOCK",
    "CONTENT_ZERO",
    "OWNER_HOST",
    "OWNER_SEGMENT",
    "FrameKind",
    "HostMemory",
    "block_content",
]


class FrameKind(enum.IntEnum):
    """What a host frame is used for (for guest RAM: what the guest uses it for)."""

    FREE = 0
    ZERO = 1  # the host's shared zero page
    SHARED = 2  # a page of the frozen image in the shared segment
    PAGECACHE = 3  # a guest page-cache page (a copy of an image block)
    ANON = 4  # guest anonymous memory: heap, stack, .bss, data written, CoW copies
    COW = 5  # a private copy made by copy-on-write of a file or shared page
    PAGETABLE = 6  # a guest page table or a host (EPT) table
    KSM = 7  # a stable KSM frame: merged content, mapped read-only by several guests
    GUEST_FREE = 8  # backing guest RAM the guest freed: still resident on the host
    HOSTCACHE = 9  # the host's page cache of the image file (DAX over virtio-fs/pmem)
    MEMMAP = 10  # guest RAM holding the struct pages of a DAX device (memremap_pages)


OWNER_HOST: Final = -1
OWNER_SEGMENT: Final = -2
CONTENT_ZERO: Final = 0
CONTENT_BLOCK: Final = 1  # bytes first held by image block b: CONTENT_BLOCK + b


def block_content(image: Ext2Image, block: int) -> int:
    """The content of a frame read from image `block` (0: a hole, read as zeros).

    CONTENT_BLOCK + the first block with the same bytes (Ext2Image.equal_blocks), or
    CONTENT_ZERO for zeros: KSM merges equal pages of different files, never others.
    """
    first: int = image.equal_blocks().item(block) if block else 0
    return CONTENT_BLOCK + first if first else CONTENT_ZERO


class HostMemory:
    """Model of the host's frames (mm/page_alloc.c + struct page), as parallel arrays."""

    def __init__(self, capacity_frames: int = 1 << 24, initial: int = 1 << 12) -> None:
        """`capacity_frames` bounds the host (64 GiB of 4 KiB frames by default)."""
        if capacity_frames < 2:
            raise ParameterError(f"HostMemory: capacity_frames {capacity_frames} is below 2")
        self.capacity = capacity_frames
        size = min(initial, capacity_frames)
        self.kind = np.zeros(size, dtype=np.uint8)
        self.owner = np.zeros(size, dtype=np.int32)
        self.refcount = np.zeros(size, dtype=np.int32)
        self.content = np.zeros(size, dtype=np.int64)
        self._top = 0  # frames [0, _top) have been handed out at least once
        self._free: list[int] = []
        self._next_unique = -1
        self.allocated = 0
        zero = self.alloc(FrameKind.ZERO, OWNER_HOST, CONTENT_ZERO)
        assert zero is not None
        self.zero_pfn: int = zero

    def _grow(self) -> None:
        size = min(self.capacity, max(2 * len(self.kind), 1 << 12))
        for name in ("kind", "owner", "refcount", "content"):
            old = getattr(self, name)
            new = np.zeros(size, dtype=old.dtype)
            new[: len(old)] = old
            setattr(self, name, new)

    def copy(self) -> HostMemory:
        """Another host in exactly this state (its own arrays and free list): what-if runs
        go on from it, this one unchanged."""
        new = HostMemory.__new__(HostMemory)
        new.__dict__.update(self.__dict__)
        for name in ("kind", "owner", "refcount", "content"):
            setattr(new, name, getattr(self, name).copy())
        new._free = list(self._free)
        return new

    def unique_content(self) -> int:
        """A content id no frame has yet (a page written with something new)."""
        self._next_unique -= 1
        return self._next_unique

    def alloc(self, kind: FrameKind, owner: int, content: int) -> int | None:
        """A free frame with refcount 1, or None when the host is out of memory."""
        if self._free:
            pfn = self._free.pop()
        elif self._top < self.capacity:
            if self._top == len(self.kind):
                self._grow()
            pfn = self._top
            self._top += 1
        else:
            return None
        self.kind[pfn] = kind
        self.owner[pfn] = owner
        self.refcount[pfn] = 1
        self.content[pfn] = content
        self.allocated += 1
        return pfn

    def alloc_many(self, kinds: npt.NDArray[np.uint8], owner: int,
                   contents: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
        """`alloc` for many frames at once (refcount 1 each), or None if the host runs out."""
        n = len(kinds)
        if n > len(self._free) + self.capacity - self._top:
            return None
        reused = [self._free.pop() for _ in range(min(n, len(self._free)))]
        fresh = n - len(reused)
        while self._top + fresh > len(self.kind):
            self._grow()
        pfns = np.concatenate([np.array(reused, dtype=np.int64),
                               np.arange(self._top, self._top + fresh, dtype=np.int64)])
        self._top += fresh
        self.kind[pfns] = kinds
        self.owner[pfns] = owner
        self.refcount[pfns] = 1
        self.content[pfns] = contents
        self.allocated += n
        return pfns

    def unique_contents(self, n: int) -> npt.NDArray[np.int64]:
        """`n` content ids no frame has yet."""
        ids = np.arange(self._next_unique - 1, self._next_unique - 1 - n, -1, dtype=np.int64)
        self._next_unique -= n
        return ids

    def get(self, pfn: int) -> None:
        """Take one more reference to frame `pfn` (get_page)."""
        assert self.refcount[pfn] > 0, f"get: frame {pfn} is free"
        self.refcount[pfn] += 1

    def put_many(self, pfns: npt.NDArray[np.int64]) -> int:
        """`put` for many frames (a frame may appear several times); returns frames freed."""
        if not len(pfns):
            return 0
        np.subtract.at(self.refcount, pfns, 1)
        touched = np.unique(pfns)
        assert (self.refcount[touched] >= 0).all(), "put_many: a refcount went below zero"
        freed = touched[self.refcount[touched] == 0]
        assert self.zero_pfn not in freed, "put_many: the zero page is never freed"
        self.kind[freed] = FrameKind.FREE
        self.owner[freed] = 0
        self.content[freed] = 0
        self._free.extend(freed.tolist())
        self.allocated -= len(freed)
        return len(freed)

    def put(self, pfn: int) -> bool:
        """Drop a reference (put_page); frees the frame at zero. True if it was freed."""
        assert self.refcount[pfn] > 0, f"put: frame {pfn} has refcount {self.refcount[pfn]}"
        self.refcount[pfn] -= 1
        if self.refcount[pfn]:
            return False
        assert pfn != self.zero_pfn, "put: the zero page is never freed"
        self.kind[pfn] = FrameKind.FREE
        self.owner[pfn] = 0
        self.content[pfn] = 0
        self._free.append(pfn)
        self.allocated -= 1
        return True

    def retag(self, pfn: int, kind: FrameKind, content: int | None = None) -> None:
        """Record a new use of an allocated frame (a guest reused its RAM page)."""
        assert self.kind.item(pfn) != FrameKind.FREE, f"retag: frame {pfn} is free"
        self.kind[pfn] = kind
        if content is not None:
            self.content[pfn] = content

    @property
    def frames(self) -> int:
        """Frames handed out so far (the used part of the arrays)."""
        return self._top

    def counts_by_kind(self) -> dict[FrameKind, int]:
        """Allocated frames of each kind."""
        counts = np.bincount(self.kind[: self._top], minlength=len(FrameKind))
        return {k: int(counts[k]) for k in FrameKind if k != FrameKind.FREE}

