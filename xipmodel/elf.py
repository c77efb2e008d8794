"""exec: ELF files, their segments as mappings, the interpreter and the libraries.

Two halves. A hand-written ELF reader (ELF32 and ELF64, little and big endian,
field names from the System V ABI, validated eagerly at open, the dynamic section
parsed lazily), and a model of fs/binfmt_elf.c:load_elf_binary plus the part of
ld.so that maps and relocates the DT_NEEDED libraries.

The parts of a file exec reads (ELF64 sizes; ELF32: 52-byte header, 32-byte phdrs)::

    file offset
    0x00  ┌──────────────────────────────┐  ELF header (64 bytes)
          │ e_ident: 7f 'E' 'L' 'F'      │  EI_CLASS 1/2 = ELF32/ELF64, EI_DATA 1/2 = LSB/MSB
          │ e_type e_machine e_entry     │  ET_EXEC / ET_DYN (PIE, shared object, ld.so)
          │ e_phoff e_phentsize e_phnum ─┼──┐
    e_phoff├──────────────────────────────┤◄─┘ program headers, e_phnum × e_phentsize
          │ PT_PHDR  PT_INTERP ──────────┼──► "/lib64/ld-linux-x86-64.so.2\\0"
          │ PT_LOAD r--  PT_LOAD r-x     │
          │ PT_LOAD r--  PT_LOAD rw- ────┼──► p_offset, p_vaddr, p_filesz ≤ p_memsz
          │ PT_DYNAMIC ──────────────────┼──► (d_tag, d_val) … DT_NULL
          │ PT_GNU_RELRO PT_GNU_STACK …  │       DT_NEEDED = offset into the DT_STRTAB table,
          ├──────────────────────────────┤       whose *vaddr* maps back to a file offset
          │ .text .rodata .data …        │       through the PT_LOAD that contains it
          └──────────────────────────────┘

How one PT_LOAD becomes mappings (elf_map and elf_load; B = the load bias)::

    B + p_vaddr                       B + p_vaddr + p_filesz       B + p_vaddr + p_memsz
       │◄────────── file bytes ──────────►│◄─────── zeros (.bss) ───────►│
    ├──┴──────┬─────────┬─────────┬───────┴─┬─────────┬─────────┬────────┴┤
    PAGESTART   private file mapping,         padzero:   anonymous mapping
    (offset PAGESTART(p_offset))              a *write*  [PAGEALIGN(zero_start),
                                              → always   PAGEALIGN(zero_end))
                                              a private copy

Text (R-X) is never written, so it stays shared; data (RW-) pages are copied only
when written: by padzero, by the loader's relocations (GOT, .data.rel.ro before
RELRO), by the program. `.bss`, `[heap]` and `[stack]` are anonymous memory.

ld.so looks for a DT_NEEDED name in the object's DT_RPATH and its loaders' (unless it
has DT_RUNPATH), then its DT_RUNPATH (`search_path`, $ORIGIN being the object's
directory in the image), then `lib_path`, which stands for ld.so.cache and the system
directories.

Not modelled: ASLR (every base is fixed, as with `setarch -R`), the vDSO and vvar
pages, argv/envp/auxv contents (one write to the top stack page stands for them),
RELRO's mprotect (the relocated pages stay writable), $LD_LIBRARY_PATH, DF_1_NODEFLIB,
dlopen, TLS blocks, symbol lookup and lazy binding.
"""

from __future__ import annotations

import hashlib
import math
import os
import posixpath
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Final

from xipmodel.errors import Ext2Error, XipModelError
from xipmodel.hostfile import open_regular
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

if TYPE_CHECKING:
    from xipmodel.ext2.reader import Ext2Image
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.vma import MmStruct, Vma

__all__ = [
    "DEFAULT_LIB_PATH",
    "DT_NAMES",
    "ELF_ET_DYN_BASE",
    "MMAP_BASE",
    "PT_NAMES",
    "RELOC_FRACTION",
    "STACK_TOP",
    "DynamicEntry",
    "ElfError",
    "ElfFile",
    "ElfHeader",
    "ExecResult",
    "LoadedObject",
    "MappedSegment",
    "ProgramHeader",
    "exec_image",
    "reloc_content",
    "search_path",
]


class ElfError(XipModelError, ValueError):
    """A file is not a valid ELF object, or exec cannot load it (file, field and value named)."""


# --- constants of the System V ABI (elf.h) ------------------------------------------------

ELFMAG: Final = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
EV_CURRENT: Final = 1
ET_NONE, ET_REL, ET_EXEC, ET_DYN, ET_CORE = 0, 1, 2, 3, 4
ET_NAMES: Final = {ET_NONE: "NONE", ET_REL: "REL", ET_EXEC: "EXEC", ET_DYN: "DYN",
                   ET_CORE: "CORE"}
EM_386, EM_X86_64, EM_AARCH64, EM_RISCV, EM_S390 = 3, 62, 183, 243, 22

PT_NULL, PT_LOAD, PT_DYNAMIC, PT_INTERP, PT_NOTE, PT_SHLIB, PT_PHDR, PT_TLS = range(8)
PT_GNU_EH_FRAME: Final = 0x6474E550
PT_GNU_STACK: Final = 0x6474E551
PT_GNU_RELRO: Final = 0x6474E552
PT_GNU_PROPERTY: Final = 0x6474E553
PT_NAMES: Final = {
    PT_NULL: "NULL", PT_LOAD: "LOAD", PT_DYNAMIC: "DYNAMIC", PT_INTERP: "INTERP",
    PT_NOTE: "NOTE", PT_SHLIB: "SHLIB", PT_PHDR: "PHDR", PT_TLS: "TLS",
    PT_GNU_EH_FRAME: "GNU_EH_FRAME", PT_GNU_STACK: "GNU_STACK", PT_GNU_RELRO: "GNU_RELRO",
    PT_GNU_PROPERTY: "GNU_PROPERTY",
}
PF_X, PF_W, PF_R = 1, 2, 4

DT_NULL, DT_NEEDED, DT_PLTRELSZ, DT_STRTAB, DT_RELA, DT_RELASZ = 0, 1, 2, 5, 7, 8
DT_STRSZ, DT_SONAME, DT_RPATH, DT_REL, DT_RELSZ, DT_RUNPATH = 10, 14, 15, 17, 18, 29
DT_NAMES: Final = {DT_NULL: "NULL", DT_NEEDED: "NEEDED", DT_PLTRELSZ: "PLTRELSZ",
                   DT_STRTAB: "STRTAB", DT_RELA: "RELA", DT_RELASZ: "RELASZ",
                   DT_STRSZ: "STRSZ", DT_SONAME: "SONAME", DT_RPATH: "RPATH", DT_REL: "REL",
                   DT_RELSZ: "RELSZ", DT_RUNPATH: "RUNPATH"}

# Sizes per class: header, program header, dynamic entry.
_EHDR: Final = {ELFCLASS32: "HHIIIIIHHHHHH", ELFCLASS64: "HHIQQQIHHHHHH"}
_PHDR64: Final = "IIQQQQQQ"  # p_type p_flags p_offset p_vaddr p_paddr p_filesz p_memsz p_align
_PHDR32: Final = "IIIIIIII"  # p_type p_offset p_vaddr p_paddr p_filesz p_memsz p_flags p_align
_DYN: Final = {ELFCLASS32: "iI", ELFCLASS64: "qQ"}
EI_NIDENT: Final = 16
MAX_PHDR_BYTES: Final = 65536  # binfmt_elf.c:elf_read_phdrs refuses a larger table
MAX_DYN_ENTRIES: Final = 4096  # a sanity bound: real objects have a few dozen
MAX_ELF_FILE_BYTES: Final = 1 << 30  # ElfFile.from_path reads at most this
PATH_MAX: Final = 4096  # the longest PT_INTERP binfmt_elf.c accepts


def _endian(ei_data: int) -> str:
    """The struct byte-order prefix for EI_DATA."""
    return "<" if ei_data == ELFDATA2LSB else ">"


@dataclass(frozen=True)
class ElfHeader:
    """Elf32_Ehdr / Elf64_Ehdr, with EI_CLASS and EI_DATA of e_ident as `ei_class`, `ei_data`."""

    ei_class: int
    ei_data: int
    e_type: int
    e_machine: int
    e_version: int
    e_entry: int
    e_phoff: int
    e_shoff: int
    e_flags: int
    e_ehsize: int
    e_phentsize: int
    e_phnum: int
    e_shentsize: int
    e_shnum: int
    e_shstrndx: int

    @property
    def ehsize(self) -> int:
        """sizeof(ElfN_Ehdr) for this class."""
        return 64 if self.ei_class == ELFCLASS64 else 52

    @property
    def phentsize(self) -> int:
        """sizeof(ElfN_Phdr) for this class."""
        return 56 if self.ei_class == ELFCLASS64 else 32

    def pack(self) -> bytes:
        """The header's bytes (e_ident with EI_VERSION = 1, OS ABI 0, then the fields)."""
        ident = ELFMAG + bytes([self.ei_class, self.ei_data, EV_CURRENT]) + bytes(9)
        return ident + struct.pack(
            _endian(self.ei_data) + _EHDR[self.ei_class], self.e_type, self.e_machine,
            self.e_version, self.e_entry, self.e_phoff, self.e_shoff, self.e_flags,
            self.e_ehsize, self.e_phentsize, self.e_phnum, self.e_shentsize, self.e_shnum,
            self.e_shstrndx)


@dataclass(frozen=True)
class ProgramHeader:
    """Elf32_Phdr / Elf64_Phdr: one segment."""

    p_type: int
    p_offset: int
    p_vaddr: int
    p_paddr: int
    p_filesz: int
    p_memsz: int
    p_flags: int
    p_align: int

    @property
    def type_name(self) -> str:
        """readelf's name for p_type (LOAD, GNU_RELRO, …) or its hex value."""
        return PT_NAMES.get(self.p_type, f"{self.p_type:#x}")

    @property
    def prot(self) -> str:
        """The segment's permissions in /proc/PID/maps notation ("r-x")."""
        return "".join(c if self.p_flags & bit else "-"
                       for c, bit in (("r", PF_R), ("w", PF_W), ("x", PF_X)))

    @classmethod
    def unpack(cls, raw: bytes, ei_class: int, ei_data: int) -> ProgramHeader:
        """Decode one program header of the given class and byte order."""
        e = _endian(ei_data)
        if ei_class == ELFCLASS64:
            p_type, p_flags, off, vaddr, paddr, filesz, memsz, align = struct.unpack(
                e + _PHDR64, raw)
        else:
            p_type, off, vaddr, paddr, filesz, memsz, p_flags, align = struct.unpack(
                e + _PHDR32, raw)
        return cls(p_type, off, vaddr, paddr, filesz, memsz, p_flags, align)

    def pack(self, ei_class: int, ei_data: int) -> bytes:
        """Encode for the given class and byte order (the inverse of `unpack`)."""
        e = _endian(ei_data)
        if ei_class == ELFCLASS64:
            return struct.pack(e + _PHDR64, self.p_type, self.p_flags, self.p_offset,
                               self.p_vaddr, self.p_paddr, self.p_filesz, self.p_memsz,
                               self.p_align)
        return struct.pack(e + _PHDR32, self.p_type, self.p_offset, self.p_vaddr, self.p_paddr,
                           self.p_filesz, self.p_memsz, self.p_flags, self.p_align)


@dataclass(frozen=True)
class DynamicEntry:
    """Elf32_Dyn / Elf64_Dyn: a tag and its value (or address)."""

    d_tag: int
    d_val: int

    @property
    def tag_name(self) -> str:
        """readelf's name for d_tag (NEEDED, STRTAB, …) or its hex value."""
        return DT_NAMES.get(self.d_tag, f"{self.d_tag:#x}")


Reader = Callable[[int, int], bytes]  # (offset, size) → bytes, short at the end of the file


class ElfFile:
    """An ELF object: the header and program headers checked at open, the rest read on demand.

    `name` is what error messages call the file (a host path or a path in an image).
    Every problem raises `ElfError` naming the file, the field and its value.
    """

    def __init__(self, name: str, size: int, read: Reader) -> None:
        """Open over `read(offset, size)` of a file of `size` bytes; validate the headers."""
        self.name = name
        self.size = size
        self._read = read
        self.header = self._parse_header()
        self.phdrs: tuple[ProgramHeader, ...] = self._parse_phdrs()
        self._check_segments()

    # --- constructors ----------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> ElfFile:
        """Parse an object held in memory."""
        view = memoryview(data)
        return cls(name, len(data), lambda off, n: bytes(view[off:off + n]))

    @classmethod
    def from_path(cls, path: str | Path) -> ElfFile:
        """Parse a regular file of the host (read whole: executables are a few MiB).

        A FIFO or device is refused before it is read (it could block or never end), as
        is a file larger than MAX_ELF_FILE_BYTES.
        """
        with open_regular(path, lambda mode: ElfError(
                f"{path}: not a regular file (mode 0o{mode:o})")) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_ELF_FILE_BYTES:
                raise ElfError(f"{path}: {size} bytes, larger than the "
                               f"{MAX_ELF_FILE_BYTES} an ELF file may have here")
            data = f.read(MAX_ELF_FILE_BYTES + 1)
        return cls.from_bytes(data, str(path))

    @classmethod
    def from_image(cls, image: Ext2Image, path: str) -> ElfFile:
        """Parse the file `path` of an ext2 image (symlinks followed), reading what it needs."""
        ino = image.lookup(path)
        size = image.file_size(ino)
        return cls(path, size, lambda off, n: image.read(path, off, n))

    # --- eager validation ------------------------------------------------------------------

    def _error(self, what: str) -> ElfError:
        """An ElfError whose message starts with the file's name."""
        return ElfError(f"{self.name}: {what}")

    def _bytes(self, offset: int, size: int, what: str) -> bytes:
        """Exactly `size` bytes at `offset`, else ElfError naming `what`."""
        if offset < 0 or offset + size > self.size:
            raise self._error(f"{what} [{offset:#x}, {offset + size:#x}) lies outside the "
                              f"file ({self.size} bytes)")
        try:
            data = self._read(offset, size)
        except Ext2Error as exc:  # the image holding the file is damaged where we read
            raise self._error(f"{what}: cannot read [{offset:#x}, {offset + size:#x}): "
                              f"{exc}") from exc
        if len(data) != size:
            raise self._error(f"{what}: read {len(data)} of {size} bytes at {offset:#x}")
        return data

    def _parse_header(self) -> ElfHeader:
        """e_ident, then the class's header; the first check that fails raises."""
        if self.size < EI_NIDENT:
            raise self._error(f"not an ELF file: {self.size} bytes, shorter than e_ident")
        ident = self._bytes(0, EI_NIDENT, "e_ident")
        if ident[:4] != ELFMAG:
            raise self._error(f"not an ELF file: e_ident magic {ident[:4]!r}, "
                              f"expected {ELFMAG!r}")
        ei_class, ei_data = ident[4], ident[5]
        if ei_class not in (ELFCLASS32, ELFCLASS64):
            raise self._error(f"EI_CLASS={ei_class}: expected 1 (ELF32) or 2 (ELF64)")
        if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
            raise self._error(f"EI_DATA={ei_data}: expected 1 (LSB) or 2 (MSB)")
        fmt = _endian(ei_data) + _EHDR[ei_class]
        size = EI_NIDENT + struct.calcsize(fmt)
        if self.size < size:
            raise self._error(f"truncated ELF header: file has {self.size} bytes, "
                              f"e_ehsize needs {size}")
        fields = struct.unpack(fmt, self._bytes(EI_NIDENT, size - EI_NIDENT, "ELF header"))
        hdr = ElfHeader(ei_class, ei_data, *fields)
        if hdr.e_version != EV_CURRENT:
            raise self._error(f"e_version={hdr.e_version}: expected {EV_CURRENT}")
        return hdr

    def _parse_phdrs(self) -> tuple[ProgramHeader, ...]:
        """The program header table, checked to lie in the file with a sane size."""
        hdr = self.header
        if hdr.e_phnum == 0:
            return ()
        if hdr.e_phentsize != hdr.phentsize:
            raise self._error(f"e_phentsize={hdr.e_phentsize}: expected {hdr.phentsize} "
                              f"for ELF{32 if hdr.ei_class == ELFCLASS32 else 64}")
        table = hdr.e_phnum * hdr.e_phentsize
        if table > MAX_PHDR_BYTES:
            raise self._error(f"e_phnum={hdr.e_phnum}: a {table}-byte program header table "
                              f"is larger than the kernel accepts ({MAX_PHDR_BYTES})")
        if hdr.e_phoff + table > self.size:
            raise self._error(f"e_phoff={hdr.e_phoff:#x}, e_phnum={hdr.e_phnum}: the program "
                              f"headers end at {hdr.e_phoff + table:#x}, past the end of the "
                              f"file ({self.size} bytes)")
        raw = self._bytes(hdr.e_phoff, table, "program headers")
        n = hdr.e_phentsize
        return tuple(ProgramHeader.unpack(raw[i:i + n], hdr.ei_class, hdr.ei_data)
                     for i in range(0, table, n))

    def _check_segments(self) -> None:
        """Segments exec reads lie in the file; PT_LOADs are sorted, aligned, filesz ≤ memsz."""
        last_vaddr = -1
        for i, ph in enumerate(self.phdrs):
            where = f"program header {i} ({ph.type_name})"
            if ph.p_type in (PT_LOAD, PT_INTERP, PT_DYNAMIC) and \
                    ph.p_offset + ph.p_filesz > self.size:
                raise self._error(f"{where}: p_offset={ph.p_offset:#x} + p_filesz="
                                  f"{ph.p_filesz:#x} runs past the end of the file "
                                  f"({self.size} bytes)")
            if ph.p_type != PT_LOAD:
                continue
            if ph.p_filesz > ph.p_memsz:
                raise self._error(f"{where}: p_filesz={ph.p_filesz:#x} > p_memsz="
                                  f"{ph.p_memsz:#x}")
            if ph.p_align > 1 and (ph.p_align & (ph.p_align - 1) or
                                   (ph.p_vaddr - ph.p_offset) % ph.p_align):
                raise self._error(f"{where}: p_align={ph.p_align:#x}: not a power of two "
                                  f"dividing p_vaddr - p_offset ({ph.p_vaddr:#x} - "
                                  f"{ph.p_offset:#x})")
            if ph.p_vaddr < last_vaddr:
                raise self._error(f"{where}: p_vaddr={ph.p_vaddr:#x}: PT_LOAD entries must "
                                  f"be sorted by p_vaddr")
            last_vaddr = ph.p_vaddr
        interps = self.segments(PT_INTERP)
        if len(interps) > 1:
            raise self._error(f"{len(interps)} PT_INTERP headers: at most one is allowed")

    # --- what exec needs, parsed on demand -------------------------------------------------

    def segments(self, p_type: int) -> tuple[ProgramHeader, ...]:
        """The program headers of one type, in file order."""
        return tuple(ph for ph in self.phdrs if ph.p_type == p_type)

    @property
    def loads(self) -> tuple[ProgramHeader, ...]:
        """The PT_LOAD segments."""
        return self.segments(PT_LOAD)

    @cached_property
    def interp(self) -> str | None:
        """The PT_INTERP path (the dynamic loader), or None for a static object."""
        found = self.segments(PT_INTERP)
        if not found:
            return None
        ph = found[0]
        if not 2 <= ph.p_filesz <= PATH_MAX:  # binfmt_elf.c refuses these, before reading
            raise self._error(f"PT_INTERP at {ph.p_offset:#x}: p_filesz={ph.p_filesz:#x} is "
                              f"not a path of 2..{PATH_MAX} bytes")
        raw = self._bytes(ph.p_offset, ph.p_filesz, "PT_INTERP")
        if raw[-1] != 0 or 0 in raw[:-1]:
            raise self._error(f"PT_INTERP at {ph.p_offset:#x}: {raw[:64]!r} is not one "
                              f"NUL-terminated path")
        return raw[:-1].decode("utf-8", "surrogateescape")

    def vaddr_to_offset(self, vaddr: int, what: str = "address") -> int:
        """The file offset of `vaddr`, through the PT_LOAD whose file bytes contain it."""
        for ph in self.loads:
            if ph.p_vaddr <= vaddr < ph.p_vaddr + ph.p_filesz:
                return ph.p_offset + vaddr - ph.p_vaddr
        raise self._error(f"{what}={vaddr:#x} lies in no PT_LOAD's file bytes")

    @cached_property
    def dynamic(self) -> tuple[DynamicEntry, ...]:
        """The PT_DYNAMIC entries up to (not including) DT_NULL; () without PT_DYNAMIC."""
        found = self.segments(PT_DYNAMIC)
        if not found:
            return ()
        ph = found[0]
        hdr = self.header
        fmt = _endian(hdr.ei_data) + _DYN[hdr.ei_class]
        step = struct.calcsize(fmt)
        count = ph.p_filesz // step
        if count > MAX_DYN_ENTRIES:
            raise self._error(f"PT_DYNAMIC p_filesz={ph.p_filesz:#x}: {count} entries, "
                              f"more than {MAX_DYN_ENTRIES}")
        raw = self._bytes(ph.p_offset, count * step, "PT_DYNAMIC")
        entries = []
        for d_tag, d_val in struct.iter_unpack(fmt, raw):
            if d_tag == DT_NULL:
                break
            entries.append(DynamicEntry(d_tag, d_val))
        return tuple(entries)

    def dt(self, d_tag: int) -> int | None:
        """The value of the first dynamic entry with `d_tag`, or None."""
        return next((e.d_val for e in self.dynamic if e.d_tag == d_tag), None)

    def _dynstr(self, offset: int, what: str) -> str:
        """The NUL-terminated string at `offset` of the DT_STRTAB table."""
        strtab = self.dt(DT_STRTAB)
        strsz = self.dt(DT_STRSZ)
        if strtab is None or strsz is None:
            raise self._error(f"{what} needs DT_STRTAB and DT_STRSZ, which are missing")
        if not 0 <= offset < strsz:
            raise self._error(f"{what}: d_val={offset:#x} is outside DT_STRSZ={strsz:#x}")
        start = self.vaddr_to_offset(strtab, "DT_STRTAB") + offset
        limit = min(strsz - offset, 4096, self.size - start)
        raw = self._bytes(start, limit, f"{what} string")
        end = raw.find(b"\0")
        if end < 0:
            raise self._error(f"{what}: the string at DT_STRTAB+{offset:#x} is not "
                              f"NUL-terminated")
        return raw[:end].decode("utf-8", "surrogateescape")

    @cached_property
    def needed(self) -> tuple[str, ...]:
        """The DT_NEEDED library names, in order."""
        return tuple(self._dynstr(e.d_val, "DT_NEEDED") for e in self.dynamic
                     if e.d_tag == DT_NEEDED)

    @cached_property
    def soname(self) -> str | None:
        """DT_SONAME, if any."""
        value = self.dt(DT_SONAME)
        return None if value is None else self._dynstr(value, "DT_SONAME")

    @cached_property
    def rpath(self) -> str | None:
        """DT_RPATH, if any: directories separated by colons, $ORIGIN not yet expanded."""
        value = self.dt(DT_RPATH)
        return None if value is None else self._dynstr(value, "DT_RPATH")

    @cached_property
    def runpath(self) -> str | None:
        """DT_RUNPATH, if any (as DT_RPATH; an object with both uses only DT_RUNPATH)."""
        value = self.dt(DT_RUNPATH)
        return None if value is None else self._dynstr(value, "DT_RUNPATH")

    @property
    def reloc_bytes(self) -> int:
        """Bytes of relocations the loader applies: DT_RELASZ + DT_RELSZ + DT_PLTRELSZ."""
        return sum(self.dt(tag) or 0 for tag in (DT_RELASZ, DT_RELSZ, DT_PLTRELSZ))

    @property
    def span(self) -> tuple[int, int]:
        """[lowest PAGESTART(p_vaddr), highest PAGEALIGN(p_vaddr + p_memsz)) of the PT_LOADs."""
        loads = self.loads
        if not loads:
            raise self._error("no PT_LOAD segment: nothing to map")
        return (_pagestart(min(ph.p_vaddr for ph in loads)),
                _pagealign(max(ph.p_vaddr + ph.p_memsz for ph in loads)))

    @property
    def max_align(self) -> int:
        """The largest PT_LOAD p_align, at least a page (binfmt_elf.c:maximum_alignment)."""
        return max([PAGE_SIZE, *(ph.p_align for ph in self.loads if ph.p_align > 1)])

    def __repr__(self) -> str:
        hdr = self.header
        return (f"ElfFile({self.name!r}, ELF{32 if hdr.ei_class == ELFCLASS32 else 64} "
                f"{ET_NAMES.get(hdr.e_type, hdr.e_type)}, {len(self.phdrs)} phdrs)")


# --- exec ----------------------------------------------------------------------------------

PAGE_MASK: Final = PAGE_SIZE - 1
ELF_ET_DYN_BASE: Final = 0x555555554000  # where a PIE goes without ASLR (2/3 of TASK_SIZE)
STACK_TOP: Final = 0x7FFFFFFFF000  # TASK_SIZE (47-bit user space) without ASLR
STACK_PAGES: Final = 33  # 132 KiB: what /proc/PID/maps shows for a fresh [stack]
MMAP_BASE: Final = 0x7FFFF7FFF000  # mmap_base: STACK_TOP - 128 MiB gap, top-down from here
HEAP_PAGES: Final = 33  # glibc's first sbrk: 128 KiB M_TOP_PAD + the request → 132 KiB
RELOC_FRACTION: Final = 0.5  # of the RW file pages after RELRO (.got.plt, .data) relocated
DEFAULT_LIB_PATH: Final = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64",
                           "/lib", "/usr/lib")
CONTENT_RELOC_BASE: Final = 1 << 40  # loader-written page contents live in [2**40, 2**41)


def _pagestart(addr: int) -> int:
    """ELF_PAGESTART."""
    return addr & ~PAGE_MASK


def _pagealign(addr: int) -> int:
    """ELF_PAGEALIGN."""
    return (addr + PAGE_MASK) & ~PAGE_MASK


def reloc_content(path: str, pgoff: int, what: str = "reloc") -> int:
    """A deterministic content id for a page the loader writes: (file, page, what) → int.

    Without ASLR the loader writes the same bytes into the same page in every
    guest, so two guests' relocated copies are identical content for KSM.
    """
    digest = hashlib.sha256(f"{path}\0{pgoff}\0{what}".encode()).digest()
    return CONTENT_RELOC_BASE + int.from_bytes(digest[:5], "little")


@dataclass(frozen=True)
class MappedSegment:
    """One PT_LOAD as mapped: its file VMA, its .bss VMA and the padzero page (if any)."""

    phdr: ProgramHeader
    file_vma: Vma | None  # None when p_filesz == 0 (all .bss)
    bss_vma: Vma | None
    padzero_vpn: int | None  # the page padzero wrote (copied), None if none


@dataclass
class LoadedObject:
    """An ELF object exec or ld.so mapped: where, which VMAs, which pages were written."""

    path: str  # the path in the image it was opened by
    role: str  # "main", "interp" or "lib"
    elf: ElfFile
    load_bias: int
    segments: list[MappedSegment] = field(default_factory=list)
    written: list[tuple[int, int]] = field(default_factory=list)  # (vpn, content id)

    @property
    def vmas(self) -> list[Vma]:
        """The object's VMAs in address order (file mappings and .bss)."""
        out = [v for s in self.segments for v in (s.file_vma, s.bss_vma) if v is not None]
        return sorted(out, key=lambda v: v.start)

    def vpns(self, prot: str) -> list[int]:
        """Virtual pages of the file mappings whose permissions are `prot` ("r-x", "rw-"…)."""
        return [vpn for s in self.segments if s.file_vma is not None and s.phdr.prot == prot
                for vpn in range(s.file_vma.start >> PAGE_SHIFT, s.file_vma.end >> PAGE_SHIFT)]

    @property
    def text_vpns(self) -> list[int]:
        """Pages of the executable segments."""
        return [vpn for s in self.segments if s.file_vma is not None and s.phdr.p_flags & PF_X
                for vpn in range(s.file_vma.start >> PAGE_SHIFT, s.file_vma.end >> PAGE_SHIFT)]

    @property
    def entry(self) -> int:
        """e_entry relocated by the load bias."""
        return self.load_bias + self.elf.header.e_entry


@dataclass
class ExecResult:
    """What exec_image mapped: the objects (main first), heap, stack, entry, written pages."""

    path: str
    mm: MmStruct
    objects: list[LoadedObject]
    heap: Vma | None
    stack: Vma
    entry: int  # where the CPU starts: the interpreter's entry, else the program's
    faults: int = 0  # VM_FAULT error flags ORed over the exec's own writes (0: all fine)

    @property
    def main(self) -> LoadedObject:
        """The program itself."""
        return self.objects[0]

    @property
    def interp(self) -> LoadedObject | None:
        """The dynamic loader (PT_INTERP), None for a static program."""
        return next((o for o in self.objects if o.role == "interp"), None)

    @property
    def libraries(self) -> list[LoadedObject]:
        """The DT_NEEDED libraries in the order ld.so mapped them (breadth-first)."""
        return [o for o in self.objects if o.role == "lib"]

    @property
    def written(self) -> list[tuple[int, int]]:
        """(vpn, content id) of every page the kernel and the loader wrote, in order."""
        return [w for o in self.objects for w in o.written]

    def object(self, path_or_name: str) -> LoadedObject:
        """The loaded object opened by this path, or whose basename this is."""
        for o in self.objects:
            if path_or_name in (o.path, o.path.rsplit("/", 1)[-1]):
                return o
        raise KeyError(path_or_name)

    def maps(self) -> list[tuple[int, int, str, str | None, int, str]]:
        """(start, length, prot, path, offset, name) of every VMA, like /proc/PID/maps."""
        vmas = sorted(self.mm.vmas, key=lambda v: v.start)
        return [(v.start, v.end - v.start, str(v.prot), v.name if v.ino is not None else None,
                 v.pgoff << PAGE_SHIFT, v.name) for v in vmas]


DST_LIB: Final = "lib/x86_64-linux-gnu"  # $LIB on Debian amd64
DST_PLATFORM: Final = "x86_64"  # $PLATFORM: AT_PLATFORM


def expand_dst(entry: str, origin: str) -> str:
    """A DT_RPATH/DT_RUNPATH entry with $ORIGIN, $LIB and $PLATFORM (braced too) expanded."""
    for token, value in (("ORIGIN", origin), ("LIB", DST_LIB), ("PLATFORM", DST_PLATFORM)):
        entry = entry.replace("${" + token + "}", value).replace("$" + token, value)
    return entry


def search_path(chain: Sequence[tuple[ElfFile, str]],
                library_path: Sequence[str] = ()) -> list[str]:
    """Model of dl-load.c:_dl_map_object's directories before ld.so.cache, for a DT_NEEDED
    name of chain[0].

    `chain` is (object, its $ORIGIN) from the object needing the name up to the program.
    DT_RPATH of each, in that order, unless chain[0] has DT_RUNPATH; then `library_path`
    ($LD_LIBRARY_PATH); then chain[0]'s DT_RUNPATH. Empty entries are skipped.
    """
    first = chain[0][0]
    dirs: list[str] = []
    if first.runpath is None:
        for elf, origin in chain:
            if elf.rpath:
                dirs += [expand_dst(d, origin) for d in elf.rpath.split(":") if d]
    dirs += list(library_path)
    if first.runpath:
        dirs += [expand_dst(d, chain[0][1]) for d in first.runpath.split(":") if d]
    return dirs


def exec_image(guest: Guest, mm: MmStruct, path: str, *, base: int | None = None,
               lib_path: tuple[str, ...] = DEFAULT_LIB_PATH,
               reloc_fraction: float = RELOC_FRACTION,
               heap_pages: int = HEAP_PAGES, stack_pages: int = STACK_PAGES) -> ExecResult:
    """Model of fs/binfmt_elf.c:load_elf_binary, then ld.so mapping and relocating libraries.

    Maps `path` of the guest's image into the empty address space `mm`: its
    PT_LOADs (at `base`, else 0 for ET_EXEC and ELF_ET_DYN_BASE for ET_DYN), the
    PT_INTERP loader and, breadth-first as ld.so does, every DT_NEEDED library
    found on `lib_path` (each once, top-down below MMAP_BASE), then `[heap]`
    after the program's end and `[stack]` below STACK_TOP. The writes exec makes
    are real accesses: padzero, the top stack page, and the loader's relocations
    (every page of PT_GNU_RELRO plus `reloc_fraction` of the other RW file pages
    of each object with relocations) with deterministic content (`reloc_content`).
    Bad files and missing libraries raise ElfError.
    """
    if not 0.0 <= reloc_fraction <= 1.0:
        raise ElfError(f"exec_image: reloc_fraction={reloc_fraction!r}: must be in [0, 1]")
    if heap_pages < 0 or stack_pages < 1:
        raise ElfError(f"exec_image: heap_pages={heap_pages}, stack_pages={stack_pages}: "
                       f"need heap_pages >= 0 and stack_pages >= 1")
    image = guest.disk
    main_elf = _open(image, path, path)
    if main_elf.header.e_type not in (ET_EXEC, ET_DYN):
        raise ElfError(f"{path}: e_type={main_elf.header.e_type} "
                       f"({ET_NAMES.get(main_elf.header.e_type, '?')}): exec needs "
                       f"ET_EXEC or ET_DYN")
    # Every mapping exec makes lies below the stack, inside the guest's address space.
    stack_start = STACK_TOP - (stack_pages << PAGE_SHIFT)
    task_size = 1 << (guest.preset.vpn_bits + guest.preset.page_shift)
    if task_size < STACK_TOP or stack_start < 0:
        raise ElfError(f"exec_image: a {stack_pages}-page stack below STACK_TOP="
                       f"{STACK_TOP:#x} does not fit the {guest.preset.name} address space "
                       f"({task_size:#x} bytes)")
    kernel_read_headers(guest, path, main_elf, BINPRM_BUF_SIZE, with_interp=True)
    loader = _Loader(guest, mm, reloc_fraction, stack_start)
    if base is None:
        base = ELF_ET_DYN_BASE if main_elf.header.e_type == ET_DYN else 0
    elif base & PAGE_MASK:
        raise ElfError(f"exec_image: base={base:#x} is not page aligned")
    bias = base - main_elf.span[0] if main_elf.header.e_type == ET_DYN else 0
    main = loader.load(path, "main", main_elf, bias)

    interp = None
    if main_elf.interp is not None:
        interp_elf = _open(image, main_elf.interp, f"{path}: PT_INTERP")
        kernel_read_headers(guest, main_elf.interp, interp_elf, ELF_HEADER_BYTES)
        interp = loader.load(main_elf.interp, "interp", interp_elf, loader.below_mmap(interp_elf))

    # The kernel: brk starts after the program's end; the stack's top page gets argv/envp/auxv.
    brk = _pagealign(main.load_bias + main_elf.span[1])
    heap = None
    if heap_pages:
        heap_end = brk + (heap_pages << PAGE_SHIFT)
        clash = next((v for v in mm.vmas if v.start < heap_end and brk < v.end), None)
        if heap_end > stack_start or clash is not None:
            raise ElfError(f"{path}: the {heap_pages}-page [heap] at brk={brk:#x} (after the "
                           f"highest PT_LOAD's p_vaddr + p_memsz) would overlap "
                           + (f"{clash.name or 'a mapping'} at {clash.start:#x}"
                              if clash is not None else f"the stack at {stack_start:#x}"))
        heap = guest.mmap(mm, brk, heap_pages << PAGE_SHIFT, "rw-", name="[heap]")
    stack = guest.mmap(mm, stack_start, stack_pages << PAGE_SHIFT, "rw-", name="[stack]")
    loader.write(None, STACK_TOP - PAGE_SIZE, None)

    # ld.so: the needed libraries, breadth-first, each once; then relocate everything.
    if interp is not None:
        loader.seen_ino[image.lookup(path)] = main
        loader.seen_ino[image.lookup(interp.path)] = interp
        loaded_by: dict[str, LoadedObject] = {}  # each library's path → who needed it first
        queue: list[LoadedObject] = [main]
        while queue:
            obj = queue.pop(0)
            chain = [obj]
            while chain[-1].path in loaded_by:
                chain.append(loaded_by[chain[-1].path])
            dirs = search_path([(o.elf, posixpath.dirname(o.path)) for o in chain])
            for name in obj.elf.needed:
                found = _find_library(image, name, (*dirs, *lib_path), obj.path)
                ino = image.lookup(found)
                if ino in loader.seen_ino:
                    continue
                lib_elf = _open(image, found, f"{obj.path}: DT_NEEDED {name!r}")
                kernel_read_headers(guest, found, lib_elf, LD_SO_READ_BYTES, by_ld_so=True)
                if lib_elf.header.e_type != ET_DYN:
                    raise ElfError(f"{found} (DT_NEEDED {name!r} of {obj.path}): e_type="
                                   f"{lib_elf.header.e_type}: a shared library must be ET_DYN")
                lib = loader.load(found, "lib", lib_elf, loader.below_mmap(lib_elf))
                loader.seen_ino[ino] = lib
                loaded_by[found] = obj
                queue.append(lib)
        for obj in loader.objects:
            loader.relocate(obj)
    entry = interp.entry if interp is not None else main.entry
    return ExecResult(path, mm, loader.objects, heap, stack, entry, loader.faults)


BINPRM_BUF_SIZE: Final = 256  # what execve reads of a file before looking at it
ELF_HEADER_BYTES: Final = 64  # load_elf_binary reads the interpreter's ELF header
LD_SO_READ_BYTES: Final = 832  # ld.so's open_verify reads this much of each library


def kernel_read_headers(guest: Guest, path: str, elf: ElfFile, first: int,
                        with_interp: bool = False, by_ld_so: bool = False) -> None:
    """The reads before any mapping: headers through read(), so through the page cache.

    execve's prepare_binprm reads the first BINPRM_BUF_SIZE bytes, load_elf_phdrs the
    program headers, and (`with_interp`) the PT_INTERP string; the interpreter's header
    and program headers are read the same way, and ld.so read()s the start of each
    library (and its program headers if they lie beyond). In a page-cache guest these
    reads start readahead at page 0 before the first fault; on DAX they touch the
    segment directly.
    """
    h = elf.header
    guest.read(path, 0, first)
    phdrs = (h.e_phoff, h.e_phnum * h.e_phentsize)
    if not by_ld_so or phdrs[0] + phdrs[1] > first:
        guest.read(path, *phdrs)  # load_elf_phdrs: always; ld.so: only what it lacks
    if with_interp:
        for ph in elf.segments(PT_INTERP):
            guest.read(path, ph.p_offset, ph.p_filesz)


def _open(image: Ext2Image, path: str, who: str) -> ElfFile:
    """ElfFile.from_image, turning a missing file into an ElfError naming who wanted it."""
    try:
        return ElfFile.from_image(image, path)
    except Ext2Error as exc:
        raise ElfError(f"{who}: cannot open {path} in the image: {exc}") from exc


def _find_library(image: Ext2Image, name: str, lib_path: tuple[str, ...], needed_by: str) -> str:
    """ld.so's search for a DT_NEEDED name: a name with a slash as is, else each directory."""
    candidates = [name] if "/" in name else [f"{d.rstrip('/')}/{name}" for d in lib_path]
    for candidate in candidates:
        try:
            image.lookup(candidate)
        except Ext2Error:
            continue
        return candidate
    raise ElfError(f"{needed_by}: DT_NEEDED library {name!r} not found on the library path "
                   f"{list(lib_path)}")


class _Loader:
    """The state of one exec: objects mapped so far, the mmap cursor, the fault flags."""

    def __init__(self, guest: Guest, mm: MmStruct, reloc_fraction: float,
                 limit: int) -> None:
        self.guest = guest
        self.mm = mm
        self.reloc_fraction = reloc_fraction
        self.limit = limit  # every segment ends at or below this (the stack's start)
        self.objects: list[LoadedObject] = []
        self.mmap_top = MMAP_BASE
        self.seen_ino: dict[int, LoadedObject] = {}
        self.faults = 0

    def below_mmap(self, elf: ElfFile) -> int:
        """Load bias for an ET_DYN object placed top-down under the last one (no ASLR)."""
        lo, hi = elf.span
        start = (self.mmap_top - (hi - lo)) & ~(elf.max_align - 1)
        self.mmap_top = start
        return start - lo

    def write(self, obj: LoadedObject | None, address: int, content: int | None) -> None:
        """One write access made by exec or the loader; failures are kept in `faults`."""
        from xipmodel.mm.memory import VmFault

        flags = VmFault(self.guest.access(self.mm, address, "w", content))
        if flags.error:  # SIGSEGV, SIGBUS or OOM: the write did not happen
            self.faults |= int(flags)
        if obj is not None and content is not None:
            obj.written.append((address >> PAGE_SHIFT, content))

    def load(self, path: str, role: str, elf: ElfFile, bias: int) -> LoadedObject:
        """elf_load for every PT_LOAD: a private file mapping, padzero, anonymous .bss."""
        if not elf.loads:
            raise ElfError(f"{path}: no PT_LOAD segment: nothing to map")
        obj = LoadedObject(path, role, elf, bias)
        self.objects.append(obj)
        for index, ph in enumerate(elf.phdrs):
            if ph.p_type == PT_LOAD:
                self._check_fits(obj, index, ph)
                obj.segments.append(self._load_segment(obj, ph))
        return obj

    def _check_fits(self, obj: LoadedObject, index: int, ph: ProgramHeader) -> None:
        """The segment, placed at its load bias, lies in [0, the stack's start).

        Checked before anything is mapped, so the time is independent of p_memsz.
        """
        start = obj.load_bias + ph.p_vaddr
        end = _pagealign(start + ph.p_memsz)
        if start < 0 or end > self.limit:
            raise ElfError(
                f"{obj.path}: program header {index} (LOAD): p_vaddr={ph.p_vaddr:#x}, "
                f"p_memsz={ph.p_memsz:#x} at load bias {obj.load_bias:#x} span "
                f"[{start:#x}, {end:#x}), outside the user address space below the stack "
                f"[0, {self.limit:#x})")

    def _load_segment(self, obj: LoadedObject, ph: ProgramHeader) -> MappedSegment:
        """Model of elf_load for one PT_LOAD of `obj` (see the drawing at the top)."""
        start = obj.load_bias + ph.p_vaddr
        file_vma = bss_vma = None
        padzero_vpn = None
        if ph.p_filesz:
            map_start = _pagestart(start)
            length = _pagealign(start + ph.p_filesz) - map_start
            self._unmap_fixed(map_start, map_start + length)  # MAP_FIXED replaces what was there
            file_vma = self.guest.mmap(self.mm, map_start, length, ph.prot, path=obj.path,
                                       offset=_pagestart(ph.p_offset), name=obj.path)
        if ph.p_memsz > ph.p_filesz:
            zero_start = start + ph.p_filesz
            zero_end = start + ph.p_memsz
            # Is the last file page only partly file bytes? padzero clears its tail: a write,
            # so that page is always copied (the write fails harmlessly if not writable).
            if zero_start & PAGE_MASK and ph.p_filesz and ph.p_flags & PF_W:
                padzero_vpn = zero_start >> PAGE_SHIFT
                pgoff = (ph.p_offset + ph.p_filesz) >> PAGE_SHIFT
                self.write(obj, zero_start, reloc_content(obj.path, pgoff, "padzero"))
            bss_start, bss_end = _pagealign(zero_start), _pagealign(zero_end)
            if bss_end > bss_start:
                self._unmap_fixed(bss_start, bss_end)
                prot = "rw" + ("x" if ph.p_flags & PF_X else "-")
                bss_vma = self.guest.mmap(self.mm, bss_start, bss_end - bss_start, prot,
                                          name=".bss")
        return MappedSegment(ph, file_vma, bss_vma, padzero_vpn)

    def _unmap_fixed(self, start: int, end: int) -> None:
        """Clear [start, end) first, as a MAP_FIXED mmap does."""
        self.guest.munmap(self.mm, start, end - start)

    def relocate(self, obj: LoadedObject) -> None:
        """ld.so's _dl_relocate_object, at page granularity: write the relocated data pages.

        Every page overlapping PT_GNU_RELRO (GOT, .data.rel.ro, .init_array) holds
        relocations; of the other file pages of writable segments, the first
        `reloc_fraction` (.got.plt and the start of .data) get written too.
        """
        elf = obj.elf
        if not elf.reloc_bytes:
            return  # nothing to relocate: no page is dirtied
        relro = [(obj.load_bias + ph.p_vaddr, obj.load_bias + ph.p_vaddr + ph.p_memsz)
                 for ph in elf.segments(PT_GNU_RELRO)]
        for seg in obj.segments:
            if seg.file_vma is None or not seg.phdr.p_flags & PF_W:
                continue
            vma = seg.file_vma
            pages = range(vma.start >> PAGE_SHIFT, vma.end >> PAGE_SHIFT)
            in_relro = [vpn for vpn in pages
                        if any(lo < (vpn + 1) << PAGE_SHIFT and vpn << PAGE_SHIFT < hi
                               for lo, hi in relro)]
            relro_set = set(in_relro)
            rest = [vpn for vpn in pages if vpn not in relro_set]
            chosen = in_relro + rest[:math.ceil(self.reloc_fraction * len(rest))]
            for vpn in chosen:
                pgoff = vma.file_pgoff(vpn << PAGE_SHIFT)
                self.write(obj, vpn << PAGE_SHIFT, reloc_content(obj.path, pgoff))

