"""Model of mm/memory.c: from a CPU access to a mapped page, through the fault handlers.

The call chain, as in the kernel::

    access ── TLB hit? ── yes ──► done
               │ no: walk the page table (nested: gh + g + h references)
               ▼
    PTE present and allows it? ── yes ──► set accessed/dirty, fill the TLB
               │ no
               ▼
    handle_mm_fault ──► no PTE, anonymous VMA  → do_anonymous_page
                    ──► no PTE, file VMA       → do_fault ─┬─ read              → do_read_fault
                    │                                      ├─ write, private    → do_cow_fault
                    │                                      └─ write, shared     → do_shared_fault
                    └─► PTE read-only, write   → do_wp_page (copy-on-write)

    vma->vm_ops->fault is filemap_fault (page cache) or dax_iomap_fault (XIP/DAX).

Handlers return VM_FAULT_* flags as a plain int bitmask (vm_fault_t), never
raise: a SIGBUS or an OOM is a value. `VmFault` names the bits for display.
Not modelled: locking and retries (VM_FAULT_RETRY), huge pages, userfaultfd,
NUMA, and swap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xipmodel.events import Cow, Fault, TlbLookup, WalkStep
from xipmodel.mm.frames import CONTENT_BLOCK, CONTENT_ZERO, FrameKind
from xipmodel.params import PAGE_SHIFT, PTE_A, PTE_D, PTE_W, PTE_X

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct, Vma

__all__ = [
    "VM_FAULT_DONE_COW",
    "VM_FAULT_ERROR",
    "VM_FAULT_LOCKED",
    "VM_FAULT_MAJOR",
    "VM_FAULT_NOPAGE",
    "VM_FAULT_OOM",
    "VM_FAULT_SIGBUS",
    "VM_FAULT_SIGSEGV",
    "VmFault",
    "VmFaultInfo",
    "access",
    "do_anonymous_page",
    "do_cow_fault",
    "do_fault",
    "do_read_fault",
    "do_shared_fault",
    "do_wp_page",
    "handle_mm_fault",
]


class VmFault(enum.IntFlag):
    """The VM_FAULT_* result flags (include/linux/mm_types.h)."""

    NONE = 0
    OOM = 0x000001
    SIGBUS = 0x000002
    MAJOR = 0x000004
    SIGSEGV = 0x000040
    NOPAGE = 0x000100
    LOCKED = 0x000200
    DONE_COW = 0x001000

    @property
    def error(self) -> bool:
        """VM_FAULT_ERROR: the access cannot complete."""
        return bool(self & VM_FAULT_ERROR)


# The same bits as plain ints: what the handlers compute with (enum arithmetic is slow).
VM_FAULT_OOM = int(VmFault.OOM)
VM_FAULT_SIGBUS = int(VmFault.SIGBUS)
VM_FAULT_MAJOR = int(VmFault.MAJOR)
VM_FAULT_SIGSEGV = int(VmFault.SIGSEGV)
VM_FAULT_NOPAGE = int(VmFault.NOPAGE)
VM_FAULT_LOCKED = int(VmFault.LOCKED)
VM_FAULT_DONE_COW = int(VmFault.DONE_COW)
VM_FAULT_ERROR = VM_FAULT_OOM | VM_FAULT_SIGBUS | VM_FAULT_SIGSEGV


@dataclass
class VmFaultInfo:
    """struct vm_fault: what a handler needs to know about the fault it serves."""

    guest: Guest
    mm: MmStruct
    vma: Vma
    address: int
    write: bool
    exec_: bool
    page: int = -1  # the guest frame a ->fault handler found (vmf->page)
    handler: str = ""
    detail: str = ""

    @property
    def vpn(self) -> int:
        return self.address >> PAGE_SHIFT

    @property
    def pgoff(self) -> int:
        return self.vma.file_pgoff(self.address)


def access(guest: Guest, mm: MmStruct, address: int, kind: str = "r",
           content: int | None = None) -> int:
    """One CPU access ("r", "w" or "x") by process `mm` at `address`; returns fault flags.

    A write stores `content` (None: something no other page holds).
    """
    write, exec_ = kind == "w", kind == "x"
    stats = guest.stats
    stats.accesses += 1
    guest.time += guest.costs.access_ns
    vpn = address >> PAGE_SHIFT
    hit = guest.tlb.lookup(mm.asid, vpn)
    if guest.bus:
        _emit_lookup(guest, mm, address, hit is not None)
    result = 0
    if hit is not None and _allowed(hit[1], write, exec_):
        stats.tlb_hits += 1
        gpfn = hit[0]
    else:
        if hit is None:
            stats.tlb_misses += 1
            stats.walk_refs += guest.walk_cost
            guest.time += guest.walk_cost * guest.costs.walk_ref_ns
        pte = mm.pt.lookup_pte(vpn)
        preset = guest.preset
        if not (preset.pte_present_p(pte) and _allowed(int(preset.pte_flags(pte)), write, exec_)):
            result = handle_mm_fault(guest, mm, address, write, exec_)
            if result & VM_FAULT_ERROR:
                return result
            pte = mm.pt.lookup_pte(vpn)
        bits = PTE_A | (PTE_D if write else 0)
        mm.pt.set_flags(vpn, bits)
        gpfn = preset.pte_pfn(pte)
        guest.tlb.insert(mm.asid, vpn, gpfn, int(preset.pte_flags(pte) | bits))
    if guest.cache.policy != "linux" and gpfn in guest.cache.key_of:
        guest.cache.touch(gpfn)  # what a textbook policy sees (Linux's learns from A bits)
    # The write itself: a private page now holds what was written (unique unless told).
    if write and gpfn < guest.ram_pages and int(guest.kind[gpfn]) in _PRIVATE:
        guest.write_page(gpfn, guest.host.unique_content() if content is None else content)
    return result


_PRIVATE = (int(FrameKind.ANON), int(FrameKind.COW))


def _emit_lookup(guest: Guest, mm: MmStruct, address: int, hit: bool) -> None:
    """Events for one translation: the TLB lookup and, on a miss, every walk reference."""
    guest.bus.emit(TlbLookup(guest.time, guest.gid, mm.asid, address >> PAGE_SHIFT, hit))
    if hit:
        return
    from xipmodel.mm.pagetable import nested_walk

    for step in nested_walk(mm.pt, guest.ept, address).steps:
        s = step.step
        guest.bus.emit(WalkStep(guest.time, guest.gid, s.level, s.table, s.index, s.pte,
                                nested=step.dim == "host"))


def _allowed(flags: int, write: bool, exec_: bool) -> bool:
    if write and not flags & PTE_W:
        return False
    return not (exec_ and not flags & PTE_X)


def handle_mm_fault(guest: Guest, mm: MmStruct, address: int, write: bool,
                    exec_: bool) -> int:
    """Model of handle_mm_fault → handle_pte_fault: dispatch on the VMA and the PTE."""
    vma = mm.find_vma(address)
    if vma is None or not vma.permits(write, exec_):
        guest.stats.sigsegv += 1
        return _report(guest, mm, address, write, "bad_area", VM_FAULT_SIGSEGV,
                       "no VMA allows this access")
    vmf = VmFaultInfo(guest, mm, vma, address, write, exec_)
    # pte_alloc first, as __handle_mm_fault does: once a handler holds a page, nothing
    # may allocate (and so reclaim) before its PTE is in.
    if not mm.pt.pte_alloc(vmf.vpn):
        return _report(guest, mm, address, write, "pte_alloc", VM_FAULT_OOM,
                       "no memory for a page table")
    pte = mm.pt.lookup_pte(vmf.vpn)
    if not guest.preset.pte_present_p(pte):
        # Is there no PTE yet? Anonymous memory is zero-filled, file pages come from ->fault.
        result = do_anonymous_page(vmf) if vma.anonymous else do_fault(vmf)
    elif write and not int(guest.preset.pte_flags(pte)) & PTE_W:
        result = do_wp_page(vmf, guest.preset.pte_pfn(pte))
    else:
        vmf.handler, result = "spurious", 0
    stats = guest.stats
    guest.time += guest.costs.minor_fault_ns
    if result & VM_FAULT_MAJOR:
        stats.major_faults += 1
        guest.time += guest.costs.major_fault_ns
    elif not result & VM_FAULT_ERROR:
        stats.minor_faults += 1
    if result & VM_FAULT_SIGBUS:
        stats.sigbus += 1
    return _report(guest, mm, address, write, vmf.handler, result, vmf.detail)


def _report(guest: Guest, mm: MmStruct, address: int, write: bool, handler: str,
            result: int, detail: str) -> int:
    if guest.bus:
        guest.bus.emit(Fault(guest.time, guest.gid, mm.pid, address, write, handler,
                             int(result), detail))
    return result


def do_fault(vmf: VmFaultInfo) -> int:
    """Model of do_fault: read, private write (copy-on-write) or shared write."""
    if not vmf.write:
        return do_read_fault(vmf)
    if not vmf.vma.shared:
        return do_cow_fault(vmf)
    return do_shared_fault(vmf)


def _vma_fault(vmf: VmFaultInfo) -> int:
    """vma->vm_ops->fault: dax_iomap_fault on the XIP mount, filemap_fault otherwise."""
    if vmf.vma.dax:
        from xipmodel.mm.dax import dax_iomap_fault

        return dax_iomap_fault(vmf)
    from xipmodel.mm.filemap import filemap_fault

    return filemap_fault(vmf)


def do_read_fault(vmf: VmFaultInfo) -> int:
    """Model of do_read_fault: try fault-around, then ->fault, then map the page read-only."""
    guest = vmf.guest
    if not vmf.vma.dax and guest.fault_around_pages > 1:
        # Let's call ->map_pages() first and use ->fault() as fallback if the page is
        # not in the page cache yet (DAX has no map_pages).
        from xipmodel.mm.filemap import do_fault_around

        if do_fault_around(vmf):
            vmf.handler = "do_read_fault → filemap_map_pages"
            return VM_FAULT_NOPAGE
    result = _vma_fault(vmf)
    if result & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
        return result
    return result | finish_fault(vmf, writable=vmf.vma.shared and vmf.write)


def finish_fault(vmf: VmFaultInfo, writable: bool) -> int:
    """Model of finish_fault: install the PTE for vmf.page."""
    guest = vmf.guest
    if not guest.install_pte(vmf.mm, vmf.vpn, vmf.page, writable, vmf.vma.exec,
                             dirty=vmf.write):
        return VM_FAULT_OOM
    return 0


def do_cow_fault(vmf: VmFaultInfo) -> int:
    """Model of do_cow_fault: a write to a private file mapping gets a private copy at once."""
    guest = vmf.guest
    if vmf.vma.dax:
        from xipmodel.mm.dax import dax_iomap_fault

        return dax_iomap_fault(vmf)  # dax_fault_cow_page does the copy itself
    result = _vma_fault(vmf)
    if result & VM_FAULT_ERROR:
        return result
    copy = guest.alloc_page(FrameKind.COW, guest.host.unique_content())
    if copy is None:
        return result | VM_FAULT_OOM
    vmf.page = copy
    vmf.handler = "do_cow_fault → " + vmf.handler
    guest.stats.cow_faults += 1
    _emit_cow(vmf, "page cache", copy)
    # The page-cache page stays cached; only its private copy is mapped.
    return result | finish_fault(vmf, writable=True) | VM_FAULT_DONE_COW


def do_shared_fault(vmf: VmFaultInfo) -> int:
    """Model of do_shared_fault: a write to a shared file mapping dirties the page-cache page."""
    result = _vma_fault(vmf)
    if result & VM_FAULT_ERROR:
        return result
    vmf.handler = "do_shared_fault → " + vmf.handler
    vmf.guest.write_page(vmf.page, vmf.guest.host.unique_content())
    return result | finish_fault(vmf, writable=True)


def do_wp_page(vmf: VmFaultInfo, gpfn: int) -> int:
    """Model of do_wp_page: a write to a present read-only PTE.

    An anonymous page mapped only here is reused (made writable); anything else
    (a page-cache page, a shared-segment frame, the zero page) is copied (wp_page_copy).
    """
    guest = vmf.guest
    in_ram = 0 <= gpfn < guest.ram_pages
    kind = FrameKind(guest.kind[gpfn]) if in_ram else FrameKind.SHARED
    if kind in (FrameKind.ANON, FrameKind.COW) and guest.mapcount(gpfn) == 1:
        vmf.handler = "do_wp_page → wp_page_reuse"
        guest.install_pte(vmf.mm, vmf.vpn, gpfn, True, vmf.vma.exec, dirty=True)
        return 0
    if not in_ram:
        source, content = "shared segment", CONTENT_BLOCK + gpfn - guest.dcss_base
    elif kind == FrameKind.ZERO:
        source, content = "zero page", CONTENT_ZERO
    elif kind == FrameKind.PAGECACHE:
        source, content = "page cache", int(guest.host.content[guest.backing[gpfn]])
    else:
        source, content = "anonymous", int(guest.host.content[guest.backing[gpfn]])
    copy = guest.alloc_page(FrameKind.COW, content)
    if copy is None:
        return VM_FAULT_OOM
    vmf.handler = "do_wp_page → wp_page_copy"
    vmf.page = copy
    guest.stats.cow_faults += 1
    _emit_cow(vmf, source, copy)
    if not guest.install_pte(vmf.mm, vmf.vpn, copy, True, vmf.vma.exec, dirty=True):
        return VM_FAULT_OOM
    if kind in (FrameKind.ANON, FrameKind.COW) and in_ram and gpfn not in guest.rmap:
        guest.free_page(gpfn)
    return 0


def do_anonymous_page(vmf: VmFaultInfo) -> int:
    """Model of do_anonymous_page: reads map the zero page, writes get a zeroed private page."""
    guest = vmf.guest
    if not vmf.write:
        vmf.handler = "do_anonymous_page (zero page)"
        ok = guest.install_pte(vmf.mm, vmf.vpn, 0, False, vmf.vma.exec)
        return 0 if ok else VM_FAULT_OOM
    vmf.handler = "do_anonymous_page"
    gpfn = guest.alloc_page(FrameKind.ANON, CONTENT_ZERO)
    if gpfn is None:
        return VM_FAULT_OOM
    vmf.page = gpfn
    return finish_fault(vmf, writable=True)


def _emit_cow(vmf: VmFaultInfo, source: str, new_gpfn: int) -> None:
    guest = vmf.guest
    guest.time += guest.costs.copy_page_ns
    if guest.bus:
        guest.bus.emit(Cow(guest.time, guest.gid, vmf.mm.pid, vmf.vpn, source, new_gpfn))
