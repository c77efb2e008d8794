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

Left out: try_context_readahead (a cache miss far from the previous position is
treated as a random read) and large folios (every page is order 0).
"""

from __future__ import annotations

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
]

VM_READAHEAD_PAGES: Final = 32  # 128 KiB of 4 KiB pages: the default ra_pages
MMAP_LOTSAMISS: Final = 100  # mmap read-around stops after this many more misses than hits


class Window(NamedTuple):
    """Read pages [start, start + size); mark page start + size - async_size PG_readahead."""

    start: int
    size: int
    async_size: int


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
    prev_pos: int = -1  # byte position of the last read(), -1 before the first

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
