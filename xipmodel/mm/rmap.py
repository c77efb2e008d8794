"""Model of mm/rmap.c: the reverse map, which PTEs map a guest frame.

Reclaim starts from a page, not from a process: to age a page-cache page it must
find every PTE that maps it (to read and clear their accessed bits), and to evict
it, clear them all. The reverse map answers "who maps guest frame gpfn?"::

    guest.rmap[gpfn].users = {(pid, vpn): exec_mapped, ...}
                               │     └─ the virtual page in that process
                               └─ the process (guest.procs[pid])

Linux finds the mappers through the folio's anon_vma or the file's i_mmap tree
and counts them in folio->_mapcount; the model keeps the (pid, vpn) pairs of
each frame in a dict instead. The zero page and the shared segment's frames are
not guest RAM and are not tracked (as Linux does not track the zero page).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from xipmodel.params import PTE_A

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = [
    "PteMappers",
    "folio_add_rmap",
    "folio_mapcount",
    "folio_referenced",
    "folio_remove_rmap",
    "try_to_unmap",
]


@dataclass
class PteMappers:
    """Where a guest frame is mapped: (pid, vpn) → is that mapping executable."""

    users: dict[tuple[int, int], bool] = field(default_factory=dict)


def folio_add_rmap(guest: Guest, gpfn: int, pid: int, vpn: int, exec_: bool) -> None:
    """folio_add_file_rmap_ptes / folio_add_anon_rmap_ptes: `pid` maps `gpfn` at `vpn`."""
    mapping = guest.rmap.get(gpfn)
    if mapping is None:
        guest.rmap[gpfn] = PteMappers({(pid, vpn): exec_})  # the first mapping
    else:
        mapping.users[(pid, vpn)] = exec_


def folio_remove_rmap(guest: Guest, gpfn: int, pid: int, vpn: int) -> None:
    """folio_remove_rmap_ptes: `pid` no longer maps `gpfn` at `vpn`."""
    mapping = guest.rmap.get(gpfn)
    if mapping is not None:
        mapping.users.pop((pid, vpn), None)
        if not mapping.users:
            del guest.rmap[gpfn]


def folio_mapcount(guest: Guest, gpfn: int) -> int:
    """folio_mapcount: the PTEs mapping `gpfn`."""
    mapping = guest.rmap.get(gpfn)
    return len(mapping.users) if mapping else 0


def folio_referenced(guest: Guest, gpfn: int) -> tuple[int, bool]:
    """Model of folio_referenced: count and clear the accessed bits of the PTEs mapping `gpfn`.

    Returns (young PTEs, whether any mapping is executable: VM_EXEC in its vm_flags).
    """
    mapping = guest.rmap.get(gpfn)
    if mapping is None:
        return 0, False
    young = 0
    exec_mapped = False
    for (pid, vpn), is_exec in mapping.users.items():
        mm = guest.procs[pid]
        old = mm.pt.clear_flags(vpn, PTE_A)
        if int(guest.preset.pte_flags(old)) & PTE_A:
            young += 1
            guest.tlb.invalidate(mm.asid, vpn)  # ptep_clear_flush_young
        exec_mapped = exec_mapped or is_exec
    return young, exec_mapped


def try_to_unmap(guest: Guest, gpfn: int) -> None:
    """Model of try_to_unmap → try_to_unmap_one: clear every PTE mapping `gpfn`.

    For a clean page-cache page about to be evicted: nothing is written back, the
    page itself is freed by the caller (shrink_folio_list).
    """
    mapping = guest.rmap.get(gpfn)
    if mapping is None:
        return
    for pid, vpn in list(mapping.users):
        mm = guest.procs[pid]
        mm.pt.unmap(vpn)
        guest.tlb.invalidate(mm.asid, vpn)  # ptep_clear_flush
        folio_remove_rmap(guest, gpfn, pid, vpn)
