"""Sizes and MMU presets: the one place where page sizes, masks and shifts live.

Every other module derives its geometry from an `MMUPreset`; nothing else
should write 4096, 0xfff or 9 for "bits per level". Four machines are defined:

========  ======  ============  =======  =======  =====  ===============================
preset    page    index bits    VA bits  PA bits  PTE    source
========  ======  ============  =======  =======  =====  ===============================
TINY      32 B    5 + 5         15       12       1 B    OSTEP paging-multilevel-translate
X86_64    4 KiB   9+9+9+9       48       52       8 B    Intel SDM vol. 3, 4-level paging
SV39      4 KiB   9+9+9         39       56       8 B    RISC-V privileged spec, Sv39
S390X     4 KiB   11+11+11+11+8 64       64       8 B    z/Architecture Principles of Op.
========  ======  ============  =======  =======  =====  ===============================

A PTE is a raw integer. The model speaks of permissions with the
preset-independent `Pte` flags (W, X, U, A, D; "present" is implied by a
mapping) and each preset encodes them into its own bit positions with
`mkpte` and decodes them with `pte_flags`. A format without a bit for a
permission grants it to every valid page (TINY has no protection bits at
all: every valid page is readable, writable and executable); a format without
an accessed or dirty bit simply does not record it.

Not modelled: huge pages (a leaf above the last level), global bits, memory
types and protection keys.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from xipmodel.errors import ParameterError

__all__ = [
    "DEFAULT_COSTS",
    "DEFAULT_KERNEL",
    "DEFAULT_PRESET",
    "KERNELS",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "PRESETS",
    "S390X",
    "STRUCT_PAGE_BYTES",
    "SV39",
    "TINY",
    "X86_64",
    "Costs",
    "KernelProfile",
    "MMUPreset",
    "Pte",
    "kernel_profile",
    "preset",
]

U64 = np.uint64


class Pte(enum.IntFlag):
    """Preset-independent PTE permissions and state (xv6's PTE_W, PTE_X, PTE_U; RISC-V A, D).

    Readable is implied by a mapping; `MMUPreset.mkpte` turns these into the
    preset's own bits.
    """

    NONE = 0  # read-only, not executable, kernel-only
    W = 1  # writable (cleared to write-protect a page for copy-on-write)
    X = 2  # executable (x86-64 and s390x store its inverse, NX)
    U = 4  # accessible from user mode
    A = 8  # accessed ("young"): set by the walker on every use
    D = 16  # dirty: set by the walker on a write


# The flags as plain ints, for hot paths (enum arithmetic is slow in Python 3.11).
PTE_W, PTE_X, PTE_U, PTE_A, PTE_D = (int(f) for f in (Pte.W, Pte.X, Pte.U, Pte.A, Pte.D))


@dataclass(frozen=True)
class MMUPreset:
    """The geometry and PTE format of one machine.

    Bit fields are masks (`pte_present = 0x80` means bit 7); 0 means the
    format has no such bit. `pte_nx` is an inverted execute bit: set means
    *not* executable. `pte_leaf` bits are set in every leaf entry (Sv39's R),
    `pte_table` bits in every entry that points to a next-level table.
    The frame number of an entry is `(pte >> pfn_shift) & (2**pfn_bits - 1)`.
    """

    name: str
    page_shift: int
    levels: tuple[int, ...]  # index bits per level, from the top (root) down
    level_names: tuple[str, ...]
    va_bits: int
    pa_bits: int
    pte_size: int  # bytes per entry
    pfn_shift: int
    pfn_bits: int
    pte_present: int
    pte_write: int = 0
    pte_exec: int = 0
    pte_nx: int = 0
    pte_user: int = 0
    pte_accessed: int = 0
    pte_dirty: int = 0
    pte_leaf: int = 0
    pte_table: int = 0
    canonical: bool = False  # upper VA bits must copy bit va_bits-1 (x86-64, Sv39)

    def __post_init__(self) -> None:
        def bad(field: str, value: object, why: str) -> ParameterError:
            return ParameterError(f"MMUPreset {self.name!r}: {field}={value!r}: {why}")

        if self.page_shift < 1:
            raise bad("page_shift", self.page_shift, "must be at least 1")
        if not self.levels or any(b < 1 for b in self.levels):
            raise bad("levels", self.levels, "need at least one level of at least 1 bit")
        if len(self.level_names) != len(self.levels):
            raise bad("level_names", self.level_names, "need one name per level")
        if sum(self.levels) + self.page_shift != self.va_bits:
            raise bad("va_bits", self.va_bits, "must equal the index bits plus page_shift")
        if not 1 <= self.va_bits <= 64:
            raise bad("va_bits", self.va_bits, "must be 1..64")
        if self.pte_size not in (1, 2, 4, 8):
            raise bad("pte_size", self.pte_size, "must be 1, 2, 4 or 8 bytes")
        if self.pfn_bits != self.pa_bits - self.page_shift:
            raise bad("pfn_bits", self.pfn_bits, "must equal pa_bits - page_shift")
        if self.pfn_shift + self.pfn_bits > 8 * self.pte_size:
            raise bad("pfn_bits", self.pfn_bits, "the frame field does not fit in the PTE")
        if self.pte_present == 0:
            raise bad("pte_present", 0, "a PTE format needs a present (valid) bit")
        pfn_field = self.pfn_mask << self.pfn_shift
        for field in ("pte_present", "pte_write", "pte_exec", "pte_nx", "pte_user",
                      "pte_accessed", "pte_dirty", "pte_leaf", "pte_table"):
            bits = getattr(self, field)
            if bits & pfn_field or bits >> (8 * self.pte_size):
                raise bad(field, hex(bits), "overlaps the frame field or lies outside the PTE")

    # ── sizes ──────────────────────────────────────────────────────────────
    @cached_property
    def page_size(self) -> int:
        """Bytes per page: 1 << page_shift."""
        return 1 << self.page_shift

    @cached_property
    def page_mask(self) -> int:
        """Mask of the byte offset within a page."""
        return self.page_size - 1

    @cached_property
    def nlevels(self) -> int:
        """Number of page-table levels = memory references of one walk."""
        return len(self.levels)

    @cached_property
    def entries(self) -> tuple[int, ...]:
        """Entries per table at each level, from the top."""
        return tuple(1 << bits for bits in self.levels)

    @cached_property
    def shifts(self) -> tuple[int, ...]:
        """Right shift of a VA that brings each level's index to bit 0."""
        return tuple(self.page_shift + sum(self.levels[d + 1:]) for d in range(self.nlevels))

    @cached_property
    def va_mask(self) -> int:
        """Mask of the translated VA bits (below any sign extension)."""
        return (1 << self.va_bits) - 1

    @cached_property
    def vpn_bits(self) -> int:
        """Bits of a virtual page number: va_bits - page_shift."""
        return self.va_bits - self.page_shift

    @cached_property
    def pfn_mask(self) -> int:
        """Mask of a frame number (before shifting into a PTE)."""
        return (1 << self.pfn_bits) - 1

    def table_bytes(self, depth: int) -> int:
        """Bytes of one table at `depth` (s390x: 16 KiB region/segment, 2 KiB page tables)."""
        return self.entries[depth] * self.pte_size

    # ── virtual addresses ──────────────────────────────────────────────────
    def va_ok(self, va: int) -> bool:
        """Is `va` an address of this VA space (canonical on x86-64 and Sv39)?"""
        if va < 0 or va >> 64:
            return False
        if not self.canonical:
            return va >> self.va_bits == 0
        upper = va >> (self.va_bits - 1)  # bit va_bits-1 and everything above it
        return upper in (0, (1 << (65 - self.va_bits)) - 1)

    def split(self, va: int) -> tuple[int, ...]:
        """`va` → (index at each level from the top ..., byte offset).

        Raises ParameterError for an address outside the VA space; the MMU
        itself reports that as a fault (see `pagetable.translate`).
        """
        if not self.va_ok(va):
            raise ParameterError(f"{self.name}.split: va={va:#x} is outside the "
                                 f"{self.va_bits}-bit virtual address space")
        return (*((va >> s) & (e - 1) for s, e in zip(self.shifts, self.entries, strict=True)),
                va & self.page_mask)

    def join(self, indices: tuple[int, ...] | list[int], offset: int = 0) -> int:
        """Inverse of `split`: level indices and offset → VA (sign-extended if canonical)."""
        if len(indices) != self.nlevels:
            raise ParameterError(f"{self.name}.join: indices={indices!r}: need {self.nlevels}")
        if not 0 <= offset < self.page_size:
            raise ParameterError(f"{self.name}.join: offset={offset!r}: must be < page size")
        va = offset
        for index, shift, n in zip(indices, self.shifts, self.entries, strict=True):
            if not 0 <= index < n:
                raise ParameterError(f"{self.name}.join: index={index!r}: must be < {n}")
            va |= index << shift
        return self._sign_extend(va)

    def vpn(self, va: int) -> int:
        """Virtual page number of `va`: its translated bits above the offset (no sign bits)."""
        if not self.va_ok(va):
            raise ParameterError(f"{self.name}.vpn: va={va:#x} is outside the VA space")
        return (va & self.va_mask) >> self.page_shift

    def va(self, vpn: int, offset: int = 0) -> int:
        """Address of byte `offset` of virtual page `vpn` (sign-extended if canonical)."""
        if vpn < 0 or vpn >> self.vpn_bits:
            raise ParameterError(f"{self.name}.va: vpn={vpn:#x}: must be < 2**{self.vpn_bits}")
        if not 0 <= offset < self.page_size:
            raise ParameterError(f"{self.name}.va: offset={offset!r}: must be < page size")
        return self._sign_extend(vpn << self.page_shift | offset)

    def _sign_extend(self, va: int) -> int:
        """Copy bit va_bits-1 into the upper bits on canonical machines."""
        if self.canonical and va >> (self.va_bits - 1) & 1:
            va |= ((1 << 64) - 1) ^ self.va_mask
        return va

    # ── PTE encoding ───────────────────────────────────────────────────────
    def check_pfn(self, pfn: int, who: str = "mkpte") -> None:
        """ParameterError unless `pfn` fits the frame-number field."""
        if not 0 <= pfn <= self.pfn_mask:
            raise ParameterError(f"{self.name}.{who}: pfn={pfn!r}: must be < 2**{self.pfn_bits}")

    @cached_property
    def _flag_bits_table(self) -> tuple[int, ...]:
        """flag_bits for every combination of the five Pte flags, indexed by their value."""
        return tuple(self._compute_flag_bits(Pte(v)) for v in range(1 << len(Pte)))

    @cached_property
    def _pte_flags_cache(self) -> dict[int, Pte]:
        return {}

    @cached_property
    def _flag_field(self) -> int:
        """Every bit pte_flags looks at."""
        return (self.pte_write | self.pte_exec | self.pte_nx | self.pte_user
                | self.pte_accessed | self.pte_dirty)

    def flag_bits(self, flags: Pte | int) -> int:
        """The raw bits that encode `flags` in a leaf entry, NX included (present not included)."""
        return self._flag_bits_table[int(flags)]

    def _compute_flag_bits(self, flags: Pte) -> int:
        bits = self.pte_leaf
        if flags & Pte.W:
            bits |= self.pte_write
        if flags & Pte.X:
            bits |= self.pte_exec
        else:
            bits |= self.pte_nx
        if flags & Pte.U:
            bits |= self.pte_user
        if flags & Pte.A:
            bits |= self.pte_accessed
        if flags & Pte.D:
            bits |= self.pte_dirty
        return bits

    def mkpte(self, pfn: int, flags: Pte | int = Pte.NONE) -> int:
        """A present leaf entry for frame `pfn` with `flags` (bits the format lacks are dropped)."""
        if not 0 <= pfn <= self.pfn_mask:
            self.check_pfn(pfn)
        return pfn << self.pfn_shift | self.pte_present | self._flag_bits_table[int(flags)]

    def mkpte_array(self, pfns: npt.ArrayLike,
                    flags: Pte | int = Pte.NONE) -> npt.NDArray[np.uint64]:
        """`mkpte` over an array of frame numbers (uint64 result)."""
        arr = np.asarray(pfns)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > self.pfn_mask):
            raise ParameterError(f"{self.name}.mkpte_array: pfns in [{int(arr.min())}, "
                                 f"{int(arr.max())}]: must be < 2**{self.pfn_bits}")
        bits = U64(self.pte_present | self.flag_bits(flags))
        out: npt.NDArray[np.uint64] = (arr.astype(U64) << U64(self.pfn_shift)) | bits
        return out

    def mktable(self, frame: int) -> int:
        """A non-leaf entry pointing to the table held in `frame`."""
        self.check_pfn(frame, "mktable")
        return frame << self.pfn_shift | self.pte_present | self.pte_table

    def pte_present_p(self, pte: int) -> bool:
        """Is the entry valid (present)?"""
        return bool(pte & self.pte_present)

    def pte_pfn(self, pte: int) -> int:
        """Frame number held in an entry."""
        return (pte >> self.pfn_shift) & self.pfn_mask

    def pte_flags(self, pte: int) -> Pte:
        """What a leaf entry grants, as `Pte` flags (permissions the format lacks are granted)."""
        key = pte & self._flag_field
        cached = self._pte_flags_cache.get(key)
        if cached is None:
            cached = self._pte_flags_cache[key] = self._compute_pte_flags(key)
        return cached

    def _compute_pte_flags(self, pte: int) -> Pte:
        flags = Pte(0)
        if not self.pte_write or pte & self.pte_write:
            flags |= Pte.W
        if self.pte_exec:
            if pte & self.pte_exec:
                flags |= Pte.X
        elif not self.pte_nx or not pte & self.pte_nx:
            flags |= Pte.X
        if not self.pte_user or pte & self.pte_user:
            flags |= Pte.U
        if pte & self.pte_accessed:
            flags |= Pte.A
        if pte & self.pte_dirty:
            flags |= Pte.D
        return flags

    def can_record(self, flags: Pte) -> bool:
        """Can a leaf entry of this format store every flag in `flags` (both set and clear)?"""
        have = {Pte.W: self.pte_write, Pte.X: self.pte_exec | self.pte_nx, Pte.U: self.pte_user,
                Pte.A: self.pte_accessed, Pte.D: self.pte_dirty}
        return all(bits for flag, bits in have.items() if flags & flag)

    def describe(self) -> dict[str, Any]:
        """A plain summary for explanations and notebooks."""
        return {"name": self.name, "page_size": self.page_size, "levels": self.levels,
                "level_names": self.level_names, "entries": self.entries,
                "va_bits": self.va_bits, "pa_bits": self.pa_bits, "pte_size": self.pte_size}


# OSTEP paging-multilevel-translate.py: 32-byte pages, 15-bit VAs (5-bit page-directory
# index, 5-bit page-table index, 5-bit offset), 4 KiB of physical memory = 128 frames,
# 1-byte PDE/PTE = valid bit 0x80 + 7-bit frame number.
TINY = MMUPreset(
    name="tiny", page_shift=5, levels=(5, 5), level_names=("PD", "PT"),
    va_bits=15, pa_bits=12, pte_size=1, pfn_shift=0, pfn_bits=7, pte_present=0x80,
)

# Intel SDM vol. 3 §4.5, 4-level paging: P=bit 0, R/W=1, U/S=2, A=5, D=6, XD(NX)=63,
# frame in bits 12..51. Intermediate entries are made R/W and U/S so the leaf decides.
X86_64 = MMUPreset(
    name="x86_64", page_shift=12, levels=(9, 9, 9, 9), level_names=("PML4", "PDPT", "PD", "PT"),
    va_bits=48, pa_bits=52, pte_size=8, pfn_shift=12, pfn_bits=40,
    pte_present=1 << 0, pte_write=1 << 1, pte_user=1 << 2, pte_accessed=1 << 5,
    pte_dirty=1 << 6, pte_nx=1 << 63, pte_table=(1 << 1) | (1 << 2), canonical=True,
)

# RISC-V privileged spec, Sv39: V=bit 0, R=1, W=2, X=3, U=4, G=5, A=6, D=7, PPN in bits 10..53.
# A leaf has R/W/X not all zero (the model always sets R); a pointer to a table has R=W=X=0.
# Hardware either sets A/D (Svadu) or faults so software does (Svade); the model sets them.
SV39 = MMUPreset(
    name="sv39", page_shift=12, levels=(9, 9, 9), level_names=("L2", "L1", "L0"),
    va_bits=39, pa_bits=56, pte_size=8, pfn_shift=10, pfn_bits=44,
    pte_present=1 << 0, pte_leaf=1 << 1, pte_write=1 << 2, pte_exec=1 << 3, pte_user=1 << 4,
    pte_accessed=1 << 6, pte_dirty=1 << 7, canonical=True,
)

# z/Architecture DAT, 5 levels: region-first/second/third index (RFX, RSX, RTX) 11 bits each,
# segment index SX 11 bits, page index PX 8 bits (page table of 256 entries), byte index 12 bits.
# Region and segment tables hold 2048 entries (16 KiB, four frames) and page tables 256 (2 KiB);
# the model still gives each table one frame number from alloc_table (use table_bytes to account).
# Real PTEs have an *invalid* bit (0x400, set = not present), a protection bit (0x200, set =
# read-only) and keep referenced/changed in the frame's storage key; modelled with Linux's
# software bits instead: present 0x001, young 0x004, dirty 0x008, write 0x020, noexec 0x100.
S390X = MMUPreset(
    name="s390x", page_shift=12, levels=(11, 11, 11, 11, 8),
    level_names=("region-first", "region-second", "region-third", "segment", "page"),
    va_bits=64, pa_bits=64, pte_size=8, pfn_shift=12, pfn_bits=52,
    pte_present=0x001, pte_accessed=0x004, pte_dirty=0x008, pte_write=0x020, pte_nx=0x100,
)

PRESETS: dict[str, MMUPreset] = {p.name: p for p in (TINY, X86_64, SV39, S390X)}

# The model's default machine: 4 KiB pages.
DEFAULT_PRESET = X86_64
PAGE_SHIFT = DEFAULT_PRESET.page_shift
PAGE_SIZE = DEFAULT_PRESET.page_size
# sizeof(struct page) on 64-bit Linux: what each 4 KiB of memory with a memmap costs.
STRUCT_PAGE_BYTES = 64


def preset(name: str) -> MMUPreset:
    """The preset called `name` (tiny, x86_64, sv39, s390x)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ParameterError(f"preset: name={name!r}: expected one of {sorted(PRESETS)}") from None


@dataclass(frozen=True)
class Costs:
    """What model time each event costs, in nanoseconds.

    Orders of magnitude for a teaching model, not measurements: a cached load,
    a page-walk reference that misses the caches, a minor fault's kernel entry
    and exit, a virtio-blk read, a host page-in of a shared-segment block.
    """

    access_ns: int = 1
    walk_ref_ns: int = 20
    minor_fault_ns: int = 1_000
    major_fault_ns: int = 100_000  # the virtual disk's latency per read
    disk_ns_per_page: int = 4_000  # 4 KiB at about 1 GB/s
    host_page_in_ns: int = 50_000
    copy_page_ns: int = 1_000


DEFAULT_COSTS = Costs()


@dataclass(frozen=True)
class KernelProfile:
    """The page-cache and fault rules of one guest kernel version.

    Linux changed how it reads files in over the years; a profile names the rules
    that differ between the versions the course talks about:

    * `readahead`: "ondemand" (ondemand_readahead, up to 6.9) or "split"
      (page_cache_sync_ra / page_cache_async_ra, 6.10 on);
    * `exec_readaround`: mmap read-around of a VM_EXEC mapping starts at the fault
      (rounded down to exec_folio_order), is clipped to the VMA and has no async
      lookahead, even under MADV_RANDOM (6.16 on, commit 3b61a3f08949);
    * `exec_folio_order`: 0 on x86-64 (the page itself), 4 on arm64 (64 KiB);
    * `large_folio_fs`: filesystems whose page cache holds large folios
      (mapping_large_folio_support): XFS since 5.18, ext4 since 6.16. The model's
      frozen images are ext2, which never does; kernelcheck's ext4 files do;
    * `dax_fault`: "xip_file_fault" (2.6.13-3.19, mm/filemap_xip.c: no CoW of its
      own, a private write faults twice) or "dax_iomap_fault" (4.0 on, fs/dax.c);
    * `dax_struct_pages`: a DAX device's memory gets a struct page per 4 KiB
      (ZONE_DEVICE: memremap_pages, 4.3 on; fs/dax.c needs the pages). 2.6's XIP
      inserted bare pfns (vm_insert_mixed) and had none. s390's DCSS stays pfn-only
      under any kernel (dcssblk: PFN_SPECIAL, FS_DAX_LIMITED): see mm/segment.py.
    """

    name: str
    readahead: str
    exec_readaround: bool
    large_folio_fs: frozenset[str]
    dax_fault: str
    exec_folio_order: int = 0
    dax_struct_pages: bool = True

    def large_folios(self, fstype: str) -> bool:
        """Does a file on `fstype` get large folios under this kernel?"""
        return fstype in self.large_folio_fs


KERNELS: dict[str, KernelProfile] = {
    p.name: p for p in (
        KernelProfile("2.6-xip", "ondemand", False, frozenset(), "xip_file_fault",
                      dax_struct_pages=False),
        KernelProfile("6.1", "ondemand", False, frozenset({"xfs"}), "dax_iomap_fault"),
        KernelProfile("6.18", "split", True, frozenset({"xfs", "ext4"}), "dax_iomap_fault"),
    )
}
DEFAULT_KERNEL = KERNELS["6.18"]


def kernel_profile(name: str | KernelProfile) -> KernelProfile:
    """The kernel profile called `name` (2.6-xip, 6.1, 6.18), or `name` itself if a profile."""
    if isinstance(name, KernelProfile):
        return name
    try:
        return KERNELS[name]
    except KeyError:
        raise ParameterError(
            f"kernel: name={name!r}: expected one of {', '.join(KERNELS)}") from None
