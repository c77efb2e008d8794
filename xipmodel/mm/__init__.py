"""Memory management, one mechanism per file, each named after its file in Linux's mm/.

Start with guest.py (one guest as a whole) and memory.py (the path of one access).
One page fault, file by file::

    memory.py      access → TLB → walk → handle_mm_fault → do_fault → do_read_fault /
                   do_cow_fault / do_shared_fault, do_wp_page, do_anonymous_page;
                   set_pte_range, zap_pte, copy_page_range
    bulk.py        access_many: memory.access for a whole trace, exact, the TLB as a
                   per-set LRU simulation in numpy (replay's fast engine; no mechanism
                   of its own)
    filemap.py     filemap_fault, read-around, fault-around's map_pages, filemap_read
    dax.py         dax_iomap_fault (xip_file_fault): the shared segment's frame, in place
    readahead.py   file_ra_state and the readahead windows
    pagecache.py   the page cache index and its LRU lists (or a textbook policy)
    page_alloc.py  the guest's free frames: alloc_page, free_page, OOM as a value
    vmscan.py      reclaim: shrink_active_list, shrink_inactive_list, folio_check_references
    workingset.py  shadow entries and the refault distance
    rmap.py        who maps a guest frame: folio_referenced, try_to_unmap
    truncate.py    truncate_inode_pages_final: a file system's pages go at umount

Address spaces and the hardware::

    vma.py         vm_area_struct, mm_struct, vm_operations_struct
    mmap.py        do_mmap, do_munmap, do_mprotect, exit_mmap
    fork.py        mm_alloc and fork's dup_mmap (kernel/fork.c in Linux)
    pagetable.py   multi-level page tables as numpy arrays, the nested (EPT/NPT) walk
    tlb.py         a set-associative, ASID-tagged TLB

The host::

    frames.py      host physical memory: every frame's kind, owner, refcount, content
    segment.py     the shared segment (a z/VM DCSS): the frozen image, demand-paged; its
                   size limits, versions, segment_load/unload, a DAX device's struct pages
    guest.py       one guest: its RAM and EPT, processes and page cache, and the wiring
    ksm.py         ksmd merging identical guest pages after the fact
    ksm_bulk.py    ksmd's passes once no guest runs, counted in bulk (ksm.py's counts)

The only import circle is the kernel's own: page_alloc.py ↔ vmscan.py (direct
reclaim frees through the allocator); both files say so at the top.
"""

from __future__ import annotations

from xipmodel.mm.pagetable import (
    Fault,
    NestedStep,
    NestedWalk,
    PageTable,
    TableFrames,
    Translation,
    WalkResult,
    WalkStep,
    nested_walk,
    nested_walk_refs,
)
from xipmodel.mm.tlb import TLB

__all__ = [
    "TLB",
    "Fault",
    "NestedStep",
    "NestedWalk",
    "PageTable",
    "TableFrames",
    "Translation",
    "WalkResult",
    "WalkStep",
    "nested_walk",
    "nested_walk_refs",
]
