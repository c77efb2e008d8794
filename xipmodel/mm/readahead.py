"""Model of mm/readahead.c: the readahead window of one open file (struct file_ra_state).

For sequential read() calls the window ramps up: the first read gets
get_init_ra_size(request) pages, and every time the reader reaches the page
marked PG_readahead (the first of the last `async_size` pages) the next window
is read ahead asynchronously, get_next_ra_size() pages long. With the default
maximum of 32 pages (128 KiB), 1-page reads see windows of 4, 8, 16, 32, 32 …::

    read page 0 → window [0, 4)    async 3: mark page 1
    read page 1 → hits the mark → window [4, 12)   mark page 4
    read page 4 → hits the mark → window [12, 28)  mark page 12
    read page 12 →                window [28, 60)  mark page 28 … then 32 at a time

Two generations of the algorithm, chosen by the kernel profile (params.KernelProfile):

* up to 6.9, one function decides both cases, `FileRaState.ondemand`
  (ondemand_readahead);
* since 6.10 a cache miss and a hit on a PG_readahead folio are separate:
  `page_cache_sync_ra` (a miss: the initial window, or a window sized from the
  cached history behind the miss) and `page_cache_async_ra` (the marker: push
  the window forward, raise the folio order by 2 and trim the window's end to
  that alignment). The folio order only matters where the filesystem caches
  large folios (page_cache_ra_order in mm/filemap.py); ext2 never does.

Left out: try_context_readahead of the old algorithm, bdi->io_pages (requests
larger than ra_pages are capped at ra_pages), FMODE_RANDOM (POSIX_FADV_RANDOM)
and cgroup congestion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple

from xipmodel.params import PAGE_SHIFT

__all__ = [
    "MMAP_LOTSAMISS",
    "VM_READAHEAD_PAGES",
    "FileRaState",
    "Window",
    "get_init_ra_size",
    "get_next_ra_size",
    "page_cache_async_ra",
    "page_cache_sync_ra",
]

VM_READAHEAD_PAGES: Final = 32  # 128 KiB of 4 KiB pages: the default ra_pages
MMAP_LOTSAMISS: Final = 100  # mmap read-around stops after this many more misses than hits


class Window(NamedTuple):
    """Read pages [start, start + size); mark page start + size - async_size PG_readahead.

    `order`: the folio order readahead would like (0: single pages).
    """

    start: int
    size: int
    async_size: int
    order: int = 0


def _roundup_pow_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def get_init_ra_size(size: int, max_pages: int) -> int:
    """The first window for a request of `size` pages: ×4 if small, ×2 if medium, else max."""
    newsize = _roundup_pow_of_two(size)
    if newsize <= max_pages // 32:
        return newsize * 4
    if newsize <= max_pages // 4:
        return newsize * 2
    return max_pages


def get_next_ra_size(cur: int, max_pages: int) -> int:
    """The next window after one of `cur` pages: ×4 while small, ×2 up to half of max, then max."""
    if cur < max_pages // 16:
        return 4 * cur
    if cur <= max_pages // 2:
        return 2 * cur
    return max_pages


@dataclass
class FileRaState:
    """struct file_ra_state: one per open file (here: per inode per guest)."""

    ra_pages: int = VM_READAHEAD_PAGES
    start: int = 0
    size: int = 0
    async_size: int = 0
    mmap_miss: int = 0
    prev_pos: int = -1  # where the last read() ended (a byte position), -1 before the first
    order: int = 0  # the folio order of the last window (split readahead)

    def ondemand(self, index: int, req_size: int, hit_marker: bool,
                 next_miss: int | None = None) -> Window:
        """Model of ondemand_readahead: the window to read for a request at page `index`.

        `hit_marker`: the reader hit a page marked PG_readahead (the async path).
        `next_miss`: for a marker hit without matching state, the first uncached page after
        `index` (page_cache_next_miss); ignored otherwise.
        """
        max_pages = self.ra_pages
        if index == 0:
            return self._initial(index, req_size, max_pages)
        # The expected callback index: a sequential reader; push the window forward.
        expected = self.start + self.size - self.async_size
        if index in (expected, self.start + self.size):
            self.start += self.size
            self.size = get_next_ra_size(self.size, max_pages)
            self.async_size = self.size
            return self._readit(index, max_pages)
        if hit_marker:
            # A marked page without valid state (interleaved readers): restart from the miss.
            if next_miss is None or next_miss - index > max_pages:
                return Window(index, 0, 0)
            self.start = next_miss
            self.size = get_next_ra_size(next_miss - index + req_size, max_pages)
            self.async_size = self.size
            return self._readit(index, max_pages)
        if req_size > max_pages:
            return self._initial(index, req_size, max_pages)
        prev_index = self.prev_pos >> PAGE_SHIFT if self.prev_pos >= 0 else -1
        if 0 <= index - prev_index <= 1:
            return self._initial(index, req_size, max_pages)
        # A standalone small random read: read it as is, leave the state alone.
        return Window(index, req_size, 0)

    def _initial(self, index: int, req_size: int, max_pages: int) -> Window:
        self.start = index
        self.size = get_init_ra_size(req_size, max_pages)
        self.async_size = self.size - req_size if self.size > req_size else self.size
        return self._readit(index, max_pages)

    def _readit(self, index: int, max_pages: int) -> Window:
        # Would this read hit the marker it sets itself? Then merge the next window now.
        if index == self.start and self.size == self.async_size:
            add = get_next_ra_size(self.size, max_pages)
            if self.size + add <= max_pages:
                self.async_size = add
                self.size += add
            else:
                self.size = max_pages
                self.async_size = max_pages >> 1
        return Window(self.start, self.size, self.async_size)


# --- Linux 6.10 and later: sync and async readahead apart ------------------------------------

def page_cache_sync_ra(ra: FileRaState, index: int, req_count: int,
                       prev_miss: Callable[[int, int], int]) -> Window:
    """Model of page_cache_sync_ra: a cache miss at page `index` of a `req_count`-page request.

    `prev_miss(index, max_scan)` is page_cache_prev_miss: the first uncached page at or
    below `index` within `max_scan` pages (-1 if all of [0, index] is cached, index -
    max_scan if none is missing). Returns the window to read; a standalone small
    random read leaves the state alone.
    """
    if not ra.ra_pages:
        return Window(index, 1, 0)  # readahead off: force_page_cache_ra of just this page
    max_pages = ra.ra_pages
    prev_index = ra.prev_pos >> PAGE_SHIFT if ra.prev_pos >= 0 else -2
    # A start of file, an oversized read, or a sequential cache miss?
    if not index or req_count > max_pages or 0 <= index - prev_index <= 1:
        ra.start = index
        ra.size = get_init_ra_size(req_count, max_pages)
        ra.async_size = ra.size - req_count if ra.size > req_count else ra.size >> 1
    else:
        # Look for the traces a sequential stream would have left behind the miss.
        miss = prev_miss(index - 1, max_pages)
        contig_count = index - miss - 1
        if contig_count <= req_count:
            return Window(index, req_count, 0)  # standalone, small random read
        if miss < 0:
            contig_count *= 2  # cached from the start: a long-run stream
        ra.start = index
        ra.size = min(contig_count + req_count, max_pages)
        ra.async_size = 1
    ra.order = 0
    return Window(ra.start, ra.size, ra.async_size, 0)


def page_cache_async_ra(ra: FileRaState, index: int, folio_pages: int, req_count: int,
                        next_miss: Callable[[int, int], int | None]) -> Window | None:
    """Model of page_cache_async_ra: the reader hit the PG_readahead folio at `index`.

    `folio_pages` is that folio's size; `next_miss(index, max_scan)` is
    page_cache_next_miss (None: nothing missing within max_scan). None: no readahead.
    """
    if not ra.ra_pages:
        return None
    max_pages = ra.ra_pages
    # The expected callback index: assume sequential access, push the window forward.
    expected = ra.start + ra.size - ra.async_size
    if index == expected - expected % folio_pages:
        ra.start += ra.size
        ra.size = max(ra.size, get_next_ra_size(ra.size, max_pages))
    else:
        # A marked folio without valid state (interleaved reads): rebuild from the cache.
        start = next_miss(index + 1, max_pages)
        if start is None or start - index > max_pages:
            return None
        ra.start = start
        ra.size = get_next_ra_size(start - index + req_count, max_pages)
    ra.order += 2
    align = 1 << min(ra.order, (max_pages & -max_pages).bit_length() - 1)
    end = ra.start + ra.size
    aligned_end = end - end % align
    if aligned_end > ra.start:
        ra.size -= end - aligned_end
    ra.async_size = ra.size
    return Window(ra.start, ra.size, ra.async_size, ra.order)
