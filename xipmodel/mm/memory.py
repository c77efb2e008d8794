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

    vma->vm_ops->fault is filemap_fault (page cache, mm/filemap.py) or dax_iomap_fault
    (XIP/DAX, mm/dax.py), chosen when the file was mapped (mm/mmap.py); both call back
    into finish_fault / set_pte_range here, as the kernel's files do. Frames come from
    mm/page_alloc.py, the reverse map is mm/rmap.py.

Handlers return VM_FAULT_* flags as a plain int bitmask (vm_fault_t), never
raise: a SIGBUS or an OOM is a value. `VmFault` names the bits for display.
Not modelled: locking and retries (VM_FAULT_RETRY), huge pages, userfaultfd,
NUMA, and swap.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xipmodel.events import Cow, Fault, PteInstall, TlbLookup, WalkStep
from xipmodel.mm.frames import CONTENT_ZERO, FrameKind, block_content
from xipmodel.mm.page_alloc import alloc_page, free_page
from xipmodel.mm.pagetable import nested_walk
from xipmodel.mm.rmap import folio_add_rmap, folio_mapcount, folio_remove_rmap
from xipmodel.mm.vma import Prot
from xipmodel.params import PAGE_SHIFT, PTE_A, PTE_D, PTE_U, PTE_W, PTE_X

if TYPE_CHECKING:
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct, Vma

__all__ = [
    "PRIVATE_KINDS",
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
    "copy_page_range",
    "count_cow",
    "do_anonymous_page",
    "do_cow_fault",
    "do_fault",
    "do_fault_around",
    "do_read_fault",
    "do_shared_fault",
    "do_wp_page",
    "fill_tlb",
    "finish_fault",
    "handle_mm_fault",
    "set_pte_range",
    "should_fault_around",
    "zap_pte",
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
    vpn: int  # the faulting page (vmf->address & PAGE_MASK, as a page number)
    pgoff: int  # linear_page_index(vma, address): the file page there
    page: int = -1  # the guest frame a ->fault handler found (vmf->page)
    handler: str = ""
    detail: str = ""


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
        # The CPU retries the access after each fault; a handler may resolve it in two
        # steps (2.6's xip_file_fault maps the frame read-only, a write then copies it).
        for _ in range(_MAX_RETRIES):
            if preset.pte_present_p(pte) and _allowed(int(preset.pte_flags(pte)), write, exec_):
                break
            result |= handle_mm_fault(guest, mm, address, write, exec_)
            if result & VM_FAULT_ERROR:
                return result
            pte = mm.pt.lookup_pte(vpn)
        else:
            raise AssertionError(f"access: {address:#x} still faults after {_MAX_RETRIES} tries")
        pte, _, _ = fill_tlb(guest, mm, vpn, pte, write)
        gpfn = preset.pte_pfn(pte)
    if guest.cache.policy != "linux" and gpfn in guest.cache.key_of:
        guest.cache.touch(gpfn)  # what a textbook policy sees (Linux's learns from A bits)
    # The write itself: a private page now holds what was written (unique unless told).
    if write and gpfn < guest.ram_pages and guest.kind.item(gpfn) in PRIVATE_KINDS:
        guest.write_page(gpfn, guest.host.unique_content() if content is None else content)
    return result


PRIVATE_KINDS = (int(FrameKind.ANON), int(FrameKind.COW))  # what a write changes the content of
_MAX_RETRIES = 3  # no fault path here needs more than two faults for one access


def fill_tlb(guest: Guest, mm: MmStruct, vpn: int, pte: int,
             write: bool) -> tuple[int, int, tuple[int, int] | None]:
    """The end of a walk that found `pte` allowing the access: set accessed (and dirty on
    a write) in the PTE and cache the translation.

    Returns the PTE as it is now, the flags cached with it, and the (asid, vpn) the TLB
    evicted (None: none).
    """
    preset = guest.preset
    bits = PTE_A | (PTE_D if write else 0)
    young = preset.pte_accessed | (preset.pte_dirty if write else 0)
    if pte & young != young:  # the MMU writes the entry only to set a bit not yet set
        mm.pt.set_flags(vpn, bits)
        pte |= young
    flags = int(preset.pte_flags(pte)) | bits
    return pte, flags, guest.tlb.insert(mm.asid, vpn, preset.pte_pfn(pte), flags)


def _emit_lookup(guest: Guest, mm: MmStruct, address: int, hit: bool) -> None:
    """Events for one translation: the TLB lookup and, on a miss, every walk reference."""
    guest.bus.emit(TlbLookup(guest.time, guest.gid, mm.asid, address >> PAGE_SHIFT, hit))
    if hit:
        return
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
    vmf = VmFaultInfo(guest, mm, vma, address, write, exec_, address >> PAGE_SHIFT,
                      vma.file_pgoff(address))
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


def __do_fault(vmf: VmFaultInfo) -> int:
    """__do_fault: vma->vm_ops->fault, filemap_fault or dax_iomap_fault."""
    vm_ops = vmf.vma.vm_ops
    assert vm_ops is not None, "__do_fault: a file VMA without vm_ops"
    return vm_ops.fault(vmf)


def do_read_fault(vmf: VmFaultInfo) -> int:
    """Model of do_read_fault: try fault-around, then ->fault, then map the page read-only."""
    # Let's call ->map_pages() first and use ->fault() as fallback if the page is
    # not in the page cache yet (DAX has no map_pages).
    if should_fault_around(vmf) and do_fault_around(vmf):
        vmf.handler = "do_read_fault → filemap_map_pages"
        return VM_FAULT_NOPAGE
    result = __do_fault(vmf)
    if result & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
        return result
    return result | finish_fault(vmf, writable=vmf.vma.shared and vmf.write)


def should_fault_around(vmf: VmFaultInfo) -> bool:
    """Model of should_fault_around: the VMA has ->map_pages and the window is > 1 page."""
    vm_ops = vmf.vma.vm_ops
    return vm_ops is not None and vm_ops.map_pages is not None \
        and vmf.guest.fault_around_pages > 1


def do_fault_around(vmf: VmFaultInfo) -> bool:
    """Model of do_fault_around: map up to fault_around_pages cached neighbours, aligned.

    The window is aligned to fault_around_pages and clipped to the VMA and the leaf
    page table; vma->vm_ops->map_pages maps what is cached. True if the faulting page
    itself got mapped (no ->fault needed).
    """
    guest, vma = vmf.guest, vmf.vma
    assert vma.vm_ops is not None and vma.vm_ops.map_pages is not None
    nr_pages = guest.fault_around_pages
    ptrs_per_pte = guest.preset.entries[-1]
    pte_off = vmf.vpn % ptrs_per_pte
    vma_off = vmf.pgoff - vma.pgoff
    from_pte = max(pte_off - pte_off % nr_pages, pte_off - min(pte_off, vma_off))
    to_pte = min(from_pte + nr_pages, ptrs_per_pte, pte_off + vma.pages - vma_off) - 1
    start = vmf.pgoff + from_pte - pte_off
    end = vmf.pgoff + to_pte - pte_off
    return vma.vm_ops.map_pages(vmf, start, end)


def finish_fault(vmf: VmFaultInfo, writable: bool) -> int:
    """Model of finish_fault: install the PTE for vmf.page."""
    if not set_pte_range(vmf.guest, vmf.mm, vmf.vpn, vmf.page, writable, vmf.vma.exec,
                         dirty=vmf.write):
        return VM_FAULT_OOM
    return 0


def do_cow_fault(vmf: VmFaultInfo) -> int:
    """Model of do_cow_fault: a write to a private file mapping gets a private copy at once."""
    guest = vmf.guest
    result = __do_fault(vmf)
    if result & (VM_FAULT_ERROR | VM_FAULT_NOPAGE | VM_FAULT_DONE_COW):
        # DAX's handler made the copy itself (dax_fault_cow_page); 2.6's xip_file_fault
        # mapped the frame read-only (NOPAGE): the retried write copies it (do_wp_page).
        return result
    copy = alloc_page(guest, FrameKind.COW, guest.host.unique_content())
    if copy is None:
        return result | VM_FAULT_OOM
    vmf.page = copy
    vmf.handler = "do_cow_fault → " + vmf.handler
    count_cow(vmf, "page cache", copy)
    # The page-cache page stays cached; only its private copy is mapped.
    return result | finish_fault(vmf, writable=True) | VM_FAULT_DONE_COW


def do_shared_fault(vmf: VmFaultInfo) -> int:
    """Model of do_shared_fault: a write to a shared file mapping dirties the page-cache page."""
    result = __do_fault(vmf)
    if result & (VM_FAULT_ERROR | VM_FAULT_NOPAGE):
        return result
    vmf.handler = "do_shared_fault → " + vmf.handler
    vmf.guest.write_page(vmf.page, vmf.guest.host.unique_content())
    return result | finish_fault(vmf, writable=True)


def do_wp_page(vmf: VmFaultInfo, gpfn: int) -> int:
    """Model of do_wp_page: a write to a present read-only PTE.

    A page-cache page of a shared mapping is written in place (wp_page_shared); an
    anonymous page mapped only here is reused (wp_page_reuse); anything else (a
    page-cache page of a private mapping, a shared-segment frame, the zero page) is
    copied (wp_page_copy).
    """
    guest = vmf.guest
    in_ram = 0 <= gpfn < guest.ram_pages
    kind = FrameKind(guest.kind.item(gpfn)) if in_ram else FrameKind.SHARED
    if vmf.vma.shared and kind == FrameKind.PAGECACHE:
        # wp_page_shared: a shared mapping writes the page-cache page itself (made dirty),
        # so every process mapping the file sees the write.
        vmf.handler = "do_wp_page → wp_page_shared"
        vmf.page = gpfn
        guest.write_page(gpfn, guest.host.unique_content())
        set_pte_range(guest, vmf.mm, vmf.vpn, gpfn, True, vmf.vma.exec, dirty=True)
        return 0
    if kind in (FrameKind.ANON, FrameKind.COW) and folio_mapcount(guest, gpfn) == 1:
        vmf.handler = "do_wp_page → wp_page_reuse"
        set_pte_range(guest, vmf.mm, vmf.vpn, gpfn, True, vmf.vma.exec, dirty=True)
        return 0
    if not in_ram:
        source, content = "shared segment", block_content(guest.disk, gpfn - guest.dcss_base)
    elif kind == FrameKind.ZERO:
        source, content = "zero page", CONTENT_ZERO
    elif kind == FrameKind.PAGECACHE:
        source, content = "page cache", int(guest.host.content[guest.backing[gpfn]])
    else:
        source, content = "anonymous", int(guest.host.content[guest.backing[gpfn]])
    copy = alloc_page(guest, FrameKind.COW, content)
    if copy is None:
        return VM_FAULT_OOM
    vmf.handler = "do_wp_page → wp_page_copy"
    vmf.page = copy
    count_cow(vmf, source, copy)
    if not set_pte_range(guest, vmf.mm, vmf.vpn, copy, True, vmf.vma.exec, dirty=True):
        return VM_FAULT_OOM
    if kind in (FrameKind.ANON, FrameKind.COW) and in_ram and gpfn not in guest.rmap:
        free_page(guest, gpfn)
    return 0


def do_anonymous_page(vmf: VmFaultInfo) -> int:
    """Model of do_anonymous_page: reads map the zero page, writes get a zeroed private page."""
    guest = vmf.guest
    if not vmf.write:
        vmf.handler = "do_anonymous_page (zero page)"
        ok = set_pte_range(guest, vmf.mm, vmf.vpn, 0, False, vmf.vma.exec)
        return 0 if ok else VM_FAULT_OOM
    vmf.handler = "do_anonymous_page"
    gpfn = alloc_page(guest, FrameKind.ANON, CONTENT_ZERO)
    if gpfn is None:
        return VM_FAULT_OOM
    vmf.page = gpfn
    return finish_fault(vmf, writable=True)


def count_cow(vmf: VmFaultInfo, source: str, new_gpfn: int) -> None:
    """A copy-on-write copy was made of `source`: count it, charge the copy, tell the bus."""
    guest = vmf.guest
    guest.stats.cow_faults += 1
    guest.time += guest.costs.copy_page_ns
    if guest.bus:
        guest.bus.emit(Cow(guest.time, guest.gid, vmf.mm.pid, vmf.vpn, source, new_gpfn))


# --- PTEs: installing, zapping, copying at fork ---------------------------------------------


def set_pte_range(guest: Guest, mm: MmStruct, vpn: int, gpfn: int, writable: bool,
                  exec_: bool, dirty: bool = False) -> bool:
    """Model of set_pte_range for one page: folio_add_*_rmap, then set_pte_at.

    Maps `vpn` → `gpfn` (accessed, and dirty if written) over whatever was there
    (the CoW path swaps in a private copy), flushing the TLB entry. False if no
    frame was left for a page-table page.
    """
    flags = PTE_U | PTE_A
    if writable:
        flags |= PTE_W
    if exec_:
        flags |= PTE_X
    if dirty:
        flags |= PTE_D
    old = mm.pt.exchange(vpn, gpfn, flags)
    if old is None:
        return False  # no memory for a page-table page
    if guest.preset.pte_present_p(old):
        # Over a present PTE (the CoW path swaps in a private copy): the old page loses
        # this mapping and the TLB its copy. (The TLB caches only present PTEs: over a
        # none PTE there is nothing to flush.)
        folio_remove_rmap(guest, guest.preset.pte_pfn(old), mm.pid, vpn)
        guest.tlb.invalidate(mm.asid, vpn)
    if 0 < gpfn < guest.ram_pages and guest.kind.item(gpfn) != FrameKind.ZERO:
        folio_add_rmap(guest, gpfn, mm.pid, vpn, exec_)
    if guest.bus:
        _emit_pte_install(guest, mm, vpn, gpfn, writable)
    return True


def _emit_pte_install(guest: Guest, mm: MmStruct, vpn: int, gpfn: int, writable: bool) -> None:
    kind, block, ino, pgoff = "anon", -1, -1, -1
    if gpfn >= guest.dcss_base and guest.segment is not None:
        kind, block = "segment", gpfn - guest.dcss_base
    elif gpfn == 0:
        kind = "zero"
    elif gpfn in guest.cache.key_of:
        kind = "pagecache"
        ino, pgoff = guest.cache.key_of[gpfn]
    elif guest.kind.item(gpfn) == FrameKind.COW:
        kind = "cow"
    guest.bus.emit(PteInstall(guest.time, guest.gid, mm.pid, vpn, gpfn, guest.host_frame(gpfn),
                              writable, guest.describe_gpfn(gpfn), kind, block, ino, pgoff))


def zap_pte(guest: Guest, mm: MmStruct, vpn: int) -> None:
    """Model of zap_pte_range for one PTE: clear it; free a private page nobody maps now."""
    old = mm.pt.unmap(vpn)
    guest.tlb.invalidate(mm.asid, vpn)
    if not guest.preset.pte_present_p(old):
        return
    gpfn = guest.preset.pte_pfn(old)
    folio_remove_rmap(guest, gpfn, mm.pid, vpn)
    kind = guest.kind.item(gpfn) if 0 <= gpfn < guest.ram_pages else None
    if kind in PRIVATE_KINDS and gpfn not in guest.rmap:
        free_page(guest, gpfn)


def copy_page_range(guest: Guest, dst: MmStruct, src: MmStruct) -> bool:
    """Model of copy_page_range (fork): map every present page of `src` in `dst` too.

    Pages of private writable mappings become copy-on-write in both (their PTEs
    write-protected), so whichever writes first gets a copy (do_wp_page) and the
    other then reuses the page. False if `dst` ran out of memory for its tables.
    """
    preset = guest.preset
    for vpn in src.pt.mapped_vpns().tolist():
        # The child's page table first (copy_pte_range allocates it before it takes any
        # page): allocating may reclaim, and must not free a page already being copied.
        if not dst.pt.pte_alloc(vpn):
            return False
        pte = src.pt.lookup_pte(vpn)
        if not preset.pte_present_p(pte):
            continue
        flags = int(preset.pte_flags(pte))
        vma = src.find_vma(vpn << PAGE_SHIFT)
        cow = vma is not None and not vma.shared and bool(vma.prot & Prot.W)
        writable = bool(flags & PTE_W) and not cow
        if cow and flags & PTE_W:
            src.pt.clear_flags(vpn, PTE_W)  # the parent's copy is write-protected too
            guest.tlb.invalidate(src.asid, vpn)
        if not set_pte_range(guest, dst, vpn, preset.pte_pfn(pte), writable,
                             bool(flags & PTE_X), dirty=bool(flags & PTE_D)):
            return False
    return True
