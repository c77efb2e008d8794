"""Model of mm/mmap.c and mm/mprotect.c: mapping, unmapping and protecting areas of a process.

    do_mmap        a new VMA; nothing is mapped until the first fault. A file VMA
                   gets its vm_ops here, as ext2_file_mmap gives them: DAX's on the
                   XIP mount (a shared writable mapping of the frozen image is
                   refused), the page cache's otherwise
    do_munmap      split the VMAs at the range's ends, zap their PTEs, drop them
    do_mprotect    split, set the new permissions, take revoked rights out of the PTEs
    exit_mmap      a process ends: every PTE zapped, its page tables freed

Not modelled: merging adjacent VMAs, mremap, MAP_FIXED_NOREPLACE, overcommit
accounting, and mmap_lock.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from xipmodel.errors import ParameterError, ReadOnlyImageError
from xipmodel.mm.dax import dax_vm_ops, xip_file_vm_ops
from xipmodel.mm.filemap import generic_file_vm_ops
from xipmodel.mm.memory import zap_pte
from xipmodel.mm.vma import MmStruct, Prot, Vma
from xipmodel.params import PAGE_SHIFT, PTE_W, PTE_X

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest

__all__ = ["do_mmap", "do_mprotect", "do_munmap", "exit_mmap", "split_vma"]


def do_mmap(guest: Guest, mm: MmStruct, start: int, length: int, prot: Prot | str, *,
            path: str | None = None, offset: int = 0, shared: bool = False,
            name: str = "", advice: str = "normal") -> Vma:
    """Model of do_mmap: a VMA for `path` of the image (or anonymous memory).

    A shared writable mapping of a file on the frozen XIP mount is refused.
    """
    prot = Prot.parse(prot) if isinstance(prot, str) else prot
    mask = (1 << PAGE_SHIFT) - 1
    end = (start + length + mask) & ~mask
    ino = None
    dax = False
    if path is not None:
        ino = guest.disk.lookup(path)
        dax = guest.segment is not None
        if dax and shared and prot & Prot.W:
            raise ReadOnlyImageError(
                f"mmap: {path} is on the frozen XIP image: a shared writable mapping "
                f"would write it", path)
    if offset & mask:
        raise ParameterError(f"mmap: offset {offset:#x} is not page aligned")
    vm_ops = None if ino is None else generic_file_vm_ops
    if ino is not None and dax:
        xip = guest.kernel.dax_fault == "xip_file_fault"
        vm_ops = xip_file_vm_ops if xip else dax_vm_ops
    vma = Vma(start & ~mask, end, prot, shared=shared, ino=ino,
              pgoff=offset >> PAGE_SHIFT, name=name or (path or ""), advice=advice, dax=dax,
              vm_ops=vm_ops)
    return mm.insert_vma(vma)


def split_vma(mm: MmStruct, start: int, end: int) -> list[Vma]:
    """Model of __split_vma at `start` and `end`; returns the VMAs inside [start, end)."""
    for cut in (start, end):
        vma = mm.find_vma(cut)
        if vma is not None and vma.start < cut:
            tail = dataclasses.replace(vma, start=cut,
                                       pgoff=vma.pgoff + ((cut - vma.start) >> PAGE_SHIFT)
                                       if vma.ino is not None else 0)
            vma.end = cut
            mm.insert_vma(tail)
    return [v for v in mm.vmas if start <= v.start and v.end <= end]


def do_munmap(guest: Guest, mm: MmStruct, start: int, length: int) -> None:
    """Model of do_munmap: remove [start, start + length) from `mm`, splitting VMAs at its ends.

    Like unmap_page_range, only present PTEs are zapped (found through the page table,
    ascending), so the time is the pages mapped, not the length of the range.
    """
    mask = (1 << PAGE_SHIFT) - 1
    if start & mask:
        raise ParameterError(f"munmap: start {start:#x} is not page aligned")
    end = (start + length + mask) & ~mask
    inside = split_vma(mm, start, end)
    present = mm.pt.mapped_vpns() if inside else None
    for vma in inside:
        assert present is not None
        lo, hi = np.searchsorted(present, [vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT])
        for vpn in present[lo:hi].tolist():
            zap_pte(guest, mm, vpn)
        mm.vmas.remove(vma)


def do_mprotect(guest: Guest, mm: MmStruct, start: int, length: int, prot: Prot | str) -> None:
    """Model of do_mprotect_pkey: new permissions for [start, start + length), splitting VMAs.

    Revoked write or execute rights are taken out of the present PTEs (and the TLB);
    a granted write is left for the next fault to install, as Linux does for private
    file mappings (so a later write still copies), a granted execute right is not.
    """
    prot = Prot.parse(prot) if isinstance(prot, str) else prot
    mask = (1 << PAGE_SHIFT) - 1
    if start & mask:
        raise ParameterError(f"mprotect: start {start:#x} is not page aligned")
    end = (start + length + mask) & ~mask
    inside = split_vma(mm, start, end)
    if sum(v.end - v.start for v in inside) != end - start:
        raise ParameterError(f"mprotect: [{start:#x}, {end:#x}) is not all mapped")
    revoke = (0 if prot & Prot.W else PTE_W) | (0 if prot & Prot.X else PTE_X)
    for vma in inside:
        vma.prot = prot
        for vpn in range(vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT):
            pte = mm.pt.lookup_pte(vpn)
            if not guest.preset.pte_present_p(pte):
                continue
            if revoke:
                mm.pt.clear_flags(vpn, revoke)
                guest.tlb.invalidate(mm.asid, vpn)
            if prot & Prot.X and not int(guest.preset.pte_flags(pte)) & PTE_X:
                # Execute is granted at once (change_protection's pte_modify): no fault
                # path adds it to a present PTE.
                mm.pt.set_flags(vpn, PTE_X)
                guest.tlb.invalidate(mm.asid, vpn)


def exit_mmap(guest: Guest, mm: MmStruct) -> None:
    """Model of exit_mmap: unmap everything, drop anonymous pages, free the page tables."""
    for vpn in mm.pt.mapped_vpns().tolist():
        zap_pte(guest, mm, vpn)
    guest.tlb.flush(mm.asid)
    mm.pt.free()
    del guest.procs[mm.pid]
