"""Model of mm/truncate.c: dropping a file's pages from the page cache for good.

umount → generic_shutdown_super → evict_inodes → truncate_inode_pages_final: the
file system goes, and with it every page its files had in the guest's page cache.
The guest frames go back to its free list; their host frames stay resident (guest
RAM a guest once touched stays on the host, page_alloc.free_page).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xipmodel.mm.page_alloc import free_page

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = ["truncate_inode_pages_final"]


def truncate_inode_pages_final(guest: Guest, ino: int | None = None) -> int:
    """Drop every cached page of inode `ino` (None: of every inode, as umount does).

    No process may map them any more (they exited first). No shadow entries are left:
    the inode is gone, so nothing can refault. Returns the pages dropped.
    """
    dropped = [gpfn for gpfn, key in guest.cache.key_of.items() if ino in (None, key[0])]
    for gpfn in dropped:
        assert gpfn not in guest.rmap, f"truncate_inode_pages_final: gpfn {gpfn} is mapped"
        guest.cache.remove(gpfn, shadow=False)
        free_page(guest, gpfn)
    if ino is None:
        guest.ra.clear()
    else:
        guest.ra.pop(ino, None)
    return len(dropped)
