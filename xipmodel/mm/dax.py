"""Model of fs/dax.c (and its 2.6 ancestor mm/filemap_xip.c): faults served in place.

dax_iomap_fault (Linux 4.0 on) for page `pgoff`::

    beyond EOF? ─────────────────────────────────────────► VM_FAULT_SIGBUS
    ext2 block map (ext2_get_block via iomap_begin): which image block holds pgoff?
      write, private      → dax_fault_cow_page: read the block (the guest touches the
                            segment) into a private copy
      a hole              → dax_load_hole: map the zero page read-only
      otherwise           → direct_access: the block's frame in the shared segment,
                            vmf_insert_mixed puts it straight into the page table
                            → VM_FAULT_NOPAGE (no page-cache page, nothing on the LRU)

Its ancestor xip_file_fault (Linux 2.6.13–3.19, the "2.6-xip" kernel profile) has
no copy-on-write branch: it maps the frame read-only for a private write too, and
the retried write copies it in do_wp_page (two faults). The kernel profile picks
the handler when the file is mapped (mm/mmap.py).

No readahead, no disk I/O in the guest, no page cache: the only cost is the
host paging the block in the first time any guest touches it. The guest's EPT
window onto the segment is Guest.map_segment_block (mm/guest.py). What the device
costs the guest's RAM at mount, 64 bytes of struct page per 4 KiB for ZONE_DEVICE
DAX and nothing for the pfn-only DCSS, is segment.memremap_pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from xipmodel.mm.frames import FrameKind, block_content
from xipmodel.mm.memory import (
    VM_FAULT_DONE_COW,
    VM_FAULT_NOPAGE,
    VM_FAULT_OOM,
    VM_FAULT_SIGBUS,
    VmFaultInfo,
    count_cow,
    finish_fault,
    set_pte_range,
)
from xipmodel.mm.page_alloc import alloc_page
from xipmodel.mm.vma import VmOperations
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = [
    "dax_fault_cow_page",
    "dax_iomap_fault",
    "dax_iomap_rw",
    "dax_load_hole",
    "dax_vm_ops",
    "xip_file_fault",
    "xip_file_vm_ops",
]


def dax_iomap_fault(vmf: VmFaultInfo) -> int:
    """Model of dax_iomap_fault → dax_fault_iter for one 4 KiB page."""
    block = _iomap_begin(vmf, "dax_iomap_fault")
    if block < 0:
        return VM_FAULT_SIGBUS
    if vmf.write and not vmf.vma.shared:
        return dax_fault_cow_page(vmf, block)
    if block == 0:
        return dax_load_hole(vmf)
    return _insert_block(vmf, block)


def _iomap_begin(vmf: VmFaultInfo, handler: str) -> int:
    """The handler's first steps: beyond EOF (-1)? else the image block of vmf.pgoff (0: hole).

    ext2_iomap_begin / ext2_get_xip_mem: the file page's block from the ext2 block map.
    """
    guest, ino, pgoff = vmf.guest, vmf.vma.ino, vmf.pgoff
    assert ino is not None and guest.segment is not None, f"{handler}: not on XIP"
    vmf.handler = handler
    if pgoff >= -(-guest.disk.file_size(ino) // PAGE_SIZE):
        vmf.detail = f"page {pgoff} is beyond the end of the file"
        return -1
    return guest.disk.bmap(ino, pgoff)


def dax_fault_cow_page(vmf: VmFaultInfo, block: int) -> int:
    """Model of dax_fault_cow_page: a private write gets a copy of the block at once.

    copy_cow_page_dax reads the block through dax_direct_access, so the guest touches
    the shared segment (the host pages the block in for the first guest); a hole is
    copied from zeros.
    """
    guest = vmf.guest
    if block and guest.map_segment_block(block) is None:
        return VM_FAULT_OOM
    copy = alloc_page(guest, FrameKind.COW, block_content(guest.disk, block))
    if copy is None:
        return VM_FAULT_OOM
    vmf.page = copy
    vmf.handler = "do_cow_fault → dax_iomap_fault (dax_fault_cow_page)"
    vmf.detail = f"private copy of image block {block}" if block else "private zero page"
    count_cow(vmf, "shared segment" if block else "zero page", copy)
    return finish_fault(vmf, writable=True) | VM_FAULT_DONE_COW


def dax_load_hole(vmf: VmFaultInfo) -> int:
    """Model of dax_load_hole (xip_sparse_page in 2.6): a hole maps the zero page read-only."""
    vmf.handler += " → dax_load_hole"
    vmf.detail = f"page {vmf.pgoff} is a hole: the zero page"
    ok = set_pte_range(vmf.guest, vmf.mm, vmf.vpn, 0, False, vmf.vma.exec)
    return VM_FAULT_NOPAGE if ok else VM_FAULT_OOM


def _insert_block(vmf: VmFaultInfo, block: int) -> int:
    """direct_access + vmf_insert_mixed: the block's segment frame, mapped read-only."""
    guest = vmf.guest
    gpfn = guest.map_segment_block(block)
    if gpfn is None:
        return VM_FAULT_OOM
    assert guest.segment is not None
    vmf.page = gpfn
    vmf.detail = (f"page {vmf.pgoff} is image block {block}: shared-segment frame "
                  f"{guest.segment.frame_of.item(block):#x}")
    # Never writable, so a later write is copy-on-write (do_wp_page).
    if not set_pte_range(guest, vmf.mm, vmf.vpn, gpfn, False, vmf.vma.exec):
        return VM_FAULT_OOM
    return VM_FAULT_NOPAGE


def xip_file_fault(vmf: VmFaultInfo) -> int:
    """Model of Linux 2.6's mm/filemap_xip.c:xip_file_fault (XIP2 as the seed describes it).

    get_xip_mem (ext2_get_xip_mem → the block's frame in the DCSS) then vm_insert_mixed,
    read-only, for reads and private writes alike: it has no copy-on-write of its own.
    A private write therefore faults twice: this fault maps the shared frame, the
    retried write finds it read-only and do_wp_page copies it. A hole maps the sparse
    (zero) page; a private write to a hole gets its copy at once (__do_fault's anon page).
    """
    block = _iomap_begin(vmf, "xip_file_fault")
    if block < 0:
        return VM_FAULT_SIGBUS
    if block == 0:
        if vmf.write and not vmf.vma.shared:
            return dax_fault_cow_page(vmf, 0)
        return dax_load_hole(vmf)
    return _insert_block(vmf, block)


def dax_iomap_rw(guest: Guest, ino: int, offset: int, count: int) -> int:
    """Model of dax_iomap_rw for read(): copied straight from the shared segment.

    No page cache: each block read is mapped into the guest's segment window (the
    host pages it in for the first guest). Returns the bytes read.
    """
    size = guest.disk.file_size(ino)
    end = min(size, offset + count)
    for index in range(offset >> PAGE_SHIFT, -(-end >> PAGE_SHIFT)):
        block = guest.disk.bmap(ino, index)
        if block:
            guest.map_segment_block(block)
    return max(0, end - offset)


# ext2's vm_operations_struct for DAX files (fs/ext2/file.c: ext2_dax_vm_ops), and
# 2.6's for XIP files (mm/filemap_xip.c: xip_file_vm_ops): no map_pages, so no
# fault-around.
dax_vm_ops = VmOperations("ext2_dax_vm_ops", dax_iomap_fault)
xip_file_vm_ops = VmOperations("xip_file_vm_ops", xip_file_fault)
