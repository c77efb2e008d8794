"""Model of kernel/fork.c's memory half: a new address space, and fork's copy of one.

    mm_alloc     an empty address space: a root page table in guest RAM, a fresh ASID
                 (what exec starts from)
    dup_mmap     fork: the child gets a copy of every VMA, then copy_page_range
                 (mm/memory.py) maps every present page in both, private writable
                 ones copy-on-write

In Linux this is kernel/fork.c (mm_alloc, dup_mm → dup_mmap); it lives beside the
rest of mm/ here. Not modelled: threads, CLONE_VM, vfork, and the rest of a task.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from xipmodel.mm.memory import copy_page_range
from xipmodel.mm.mmap import exit_mmap
from xipmodel.mm.pagetable import PageTable
from xipmodel.mm.vma import MmStruct
from xipmodel.mm.vmscan import try_to_free_pages

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = ["dup_mmap", "mm_alloc"]


def mm_alloc(guest: Guest, name: str = "") -> MmStruct | None:
    """Model of mm_alloc → pgd_alloc: an empty address space with its root table.

    None when the guest, or the host behind its RAM, has no frame left for the root
    table (fork fails: ENOMEM; alloc_page counted a host's OOM).
    """
    if not guest.free_pages and not try_to_free_pages(guest, 1):
        guest.stats.oom += 1
        return None
    pt = PageTable.pgd_alloc(guest.preset, guest.alloc_table_page, guest.free_table_page)
    if pt is None:
        return None
    pid = guest.next_pid
    guest.next_pid += 1
    mm = MmStruct(pid=pid, asid=pid, pt=pt, name=name)
    guest.procs[pid] = mm
    return mm


def dup_mmap(guest: Guest, mm: MmStruct) -> MmStruct | None:
    """Model of dup_mmap: a child with `mm`'s VMAs, sharing every page of `mm`.

    None if the guest has no memory for the child (its tables included).
    """
    child = mm_alloc(guest, mm.name)
    if child is None:
        return None
    for area in mm.vmas:
        child.insert_vma(dataclasses.replace(area))
    if not copy_page_range(guest, child, mm):
        exit_mmap(guest, child)  # out of memory for the child's tables
        guest.stats.oom += 1
        return None
    return child
