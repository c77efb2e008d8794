"""The embedded default distribution: a small Debian userland as a frozen ext2 image.

Guests need binaries to exec. Shipping real ones would tie the model to one
machine (and to e2fsprogs to build images), so the image is *generated*: every
file is a valid ELF object whose header, program headers, PT_INTERP string and
PT_DYNAMIC (DT_NEEDED, DT_SONAME, DT_STRTAB, DT_STRSZ, DT_RELASZ) are those of a
real Debian 12 (bookworm, amd64) binary, and whose other bytes are pseudo-random
(seeded from the path), so files differ and compress badly, like code. The
table `DISTRO` was read from a bookworm machine with `xipmodel.elf.ElfFile`;
each entry names the Debian package and version it came from. Sizes are exact,
so block counts, page counts and segment boundaries are those of the real files.

One generated file, drawn for dash (offsets from the table)::

    0x0      ELF header (ELF64, LSB, e_type, e_machine = EM_X86_64, e_entry)
    0x40     program headers (e_phnum × 56 bytes), as in the real file
    0x318    PT_INTERP: "/lib64/ld-linux-x86-64.so.2\\0"
    DT_STRTAB's file offset (through its PT_LOAD): "\\0libc.so.6\\0" (+ the SONAME)
    PT_DYNAMIC's p_offset: DT_NEEDED…, DT_SONAME, DT_STRTAB, DT_STRSZ, DT_RELASZ, DT_NULL
    everything else: pseudo-random bytes; no section headers (e_shnum = 0)

The tree follows Debian's usrmerge layout::

    /bin → usr/bin   /lib → usr/lib   /lib64 → usr/lib64   /sbin → usr/sbin
    /usr/bin/{bash,cat,dash,grep,ls,python3.11}  python3 → python3.11  sh → dash
    /usr/sbin/nginx
    /usr/lib64/ld-linux-x86-64.so.2 → /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
    /usr/lib/x86_64-linux-gnu/  ld.so, libc, libm and the libraries the programs
                                need, under their real file names with SONAME links

The image is built once per process (`default_image`) and cached on disk under
$XDG_CACHE_HOME/xipmodel/ (else ~/.cache/xipmodel/), keyed by a hash of the table
and the generator; an unwritable cache directory just means building in memory.

`PROGRAMS` describes how each program ran on that machine: resident text and
dirtied file pages per object, heap, stack and other anonymous pages — facts for
the workload model, not a model. Not included: gcc's cc1 (33 MB: too big for a
default image), locale archives and gconv caches the programs also map, nginx's
dynamic modules and configuration files.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from xipmodel.elf import (
    DT_NEEDED,
    DT_RELASZ,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    ELFCLASS64,
    ELFDATA2LSB,
    EM_X86_64,
    EV_CURRENT,
    PF_R,
    PF_W,
    PF_X,
    PT_DYNAMIC,
    PT_GNU_EH_FRAME,
    PT_GNU_PROPERTY,
    PT_GNU_RELRO,
    PT_GNU_STACK,
    PT_INTERP,
    PT_LOAD,
    PT_NOTE,
    PT_PHDR,
    PT_TLS,
    ElfError,
    ElfHeader,
    ProgramHeader,
)
from xipmodel.ext2.builder import Entry, File, Symlink, build_image
from xipmodel.ext2.reader import Ext2Image

if TYPE_CHECKING:
    pass

__all__ = [
    "DISTRO",
    "LIB_DIR",
    "PROGRAMS",
    "SYMLINKS",
    "ElfSpec",
    "Program",
    "default_image",
    "default_image_bytes",
    "distro_tree",
    "make_elf",
    "needed_closure",
    "resolve",
    "spec",
]

LIB_DIR: Final = "/usr/lib/x86_64-linux-gnu"
GENERATOR_VERSION: Final = 1  # bump when make_elf or the tree changes: it keys the disk cache


@dataclass(frozen=True)
class ElfSpec:
    """One ELF file of the distribution, as read from the real Debian file.

    `phdrs` are (p_type, p_offset, p_vaddr, p_filesz, p_memsz, p_flags, p_align)
    with p_paddr = p_vaddr (true of every file read). `reloc_bytes` is
    DT_RELASZ + DT_RELSZ + DT_PLTRELSZ of the real file.
    """

    path: str
    e_type: int
    e_entry: int
    size: int
    interp: str | None
    soname: str | None
    needed: tuple[str, ...]
    dt_strtab: int
    reloc_bytes: int
    package: str
    phdrs: tuple[tuple[int, int, int, int, int, int, int], ...]

    @property
    def program_headers(self) -> tuple[ProgramHeader, ...]:
        """The entries as ProgramHeader records."""
        return tuple(ProgramHeader(t, off, va, va, fs, ms, fl, al)
                     for t, off, va, fs, ms, fl, al in self.phdrs)

    @property
    def loads(self) -> tuple[ProgramHeader, ...]:
        """The PT_LOAD entries."""
        return tuple(ph for ph in self.program_headers if ph.p_type == PT_LOAD)


# Read with xipmodel.elf from the files of a Debian 12 (bookworm) amd64 machine; the
# comment above each entry names the package and version the file came from.
DISTRO: Final[tuple[ElfSpec, ...]] = (
    # ld-linux-x86-64.so.2 from libc6 2.36-9+deb12u14
    ElfSpec('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 3, 0x1ab70, 215000,
            interp=None, soname='ld-linux-x86-64.so.2',
            needed=(),
            dt_strtab=0x8c0, reloc_bytes=120,
            package='libc6 2.36-9+deb12u14',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0xd58, 0xd58, PF_R, 0x1000),
                (PT_LOAD, 0x1000, 0x1000, 0x25111, 0x25111, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x27000, 0x27000, 0x9c7c, 0x9c7c, PF_R, 0x1000),
                (PT_LOAD, 0x31900, 0x31900, 0x2810, 0x29d8, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x32e40, 0x32e40, 0x1a0, 0x1a0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x2d018, 0x2d018, 0x934, 0x934, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x31900, 0x31900, 0x1700, 0x1700, PF_R, 0x1),
            )),
    # libc.so.6 from libc6 2.36-9+deb12u14
    ElfSpec('/usr/lib/x86_64-linux-gnu/libc.so.6', 3, 0x27410, 1926232,
            interp='/lib64/ld-linux-x86-64.so.2', soname='libc.so.6',
            needed=('ld-linux-x86-64.so.2',),
            dt_strtab=0x1a7b0, reloc_bytes=3384,
            package='libc6 2.36-9+deb12u14',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x310, 0x310, PF_R, 0x8),
                (PT_INTERP, 0x1a1b10, 0x1a1b10, 0x1c, 0x1c, PF_R, 0x10),
                (PT_LOAD, 0x0, 0x0, 0x25388, 0x25388, PF_R, 0x1000),
                (PT_LOAD, 0x26000, 0x26000, 0x1550fc, 0x1550fc, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x17c000, 0x17c000, 0x52c31, 0x52c31, PF_R, 0x1000),
                (PT_LOAD, 0x1cf8d0, 0x1cf8d0, 0x4f98, 0x12680, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x1d2b60, 0x1d2b60, 0x200, 0x200, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x350, 0x350, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x370, 0x370, 0x44, 0x44, PF_R, 0x4),
                (PT_TLS, 0x1cf8d0, 0x1cf8d0, 0x10, 0x90, PF_R, 0x8),
                (PT_GNU_PROPERTY, 0x350, 0x350, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x1a1b2c, 0x1a1b2c, 0x7414, 0x7414, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x1cf8d0, 0x1cf8d0, 0x3730, 0x3730, PF_R, 0x1),
            )),
    # libm.so.6 from libc6 2.36-9+deb12u14
    ElfSpec('/usr/lib/x86_64-linux-gnu/libm.so.6', 3, 0x0, 911904,
            interp=None, soname='libm.so.6',
            needed=('libc.so.6', 'ld-linux-x86-64.so.2'),
            dt_strtab=0xbd90, reloc_bytes=984,
            package='libc6 2.36-9+deb12u14',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0xf5c0, 0xf5c0, PF_R, 0x1000),
                (PT_LOAD, 0x10000, 0x10000, 0x733e1, 0x733e1, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x84000, 0x84000, 0x59a94, 0x59a94, PF_R, 0x1000),
                (PT_LOAD, 0xddd38, 0xded38, 0x3cc, 0x3d8, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0xddd48, 0xded48, 0x250, 0x250, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x2a8, 0x2a8, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x2c8, 0x2c8, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x2a8, 0x2a8, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0xd3620, 0xd3620, 0x1b54, 0x1b54, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0xddd38, 0xded38, 0x2c8, 0x2c8, PF_R, 0x1),
            )),
    # dash from dash 0.5.12-2
    ElfSpec('/usr/bin/dash', 3, 0x4760, 125640,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libc.so.6',),
            dt_strtab=0xda8, reloc_bytes=9216,
            package='dash 0.5.12-2',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x0, 0x36d8, 0x36d8, PF_R, 0x1000),
                (PT_LOAD, 0x4000, 0x4000, 0x12bb9, 0x12bb9, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x17000, 0x17000, 0x5864, 0x5864, PF_R, 0x1000),
                (PT_LOAD, 0x1ce30, 0x1de30, 0x1410, 0x4140, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x1db28, 0x1eb28, 0x1f0, 0x1f0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x18f24, 0x18f24, 0x7fc, 0x7fc, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x1ce30, 0x1de30, 0x11d0, 0x11d0, PF_R, 0x1),
            )),
    # bash from bash 5.2.15-2+b8
    ElfSpec('/usr/bin/bash', 3, 0x31750, 1265648,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libtinfo.so.6', 'libc.so.6'),
            dt_strtab=0x141e0, reloc_bytes=62736,
            package='bash 5.2.15-2+b8',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x0, 0x2ed48, 0x2ed48, PF_R, 0x1000),
                (PT_LOAD, 0x2f000, 0x2f000, 0xc0b9d, 0xc0b9d, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0xf0000, 0xf0000, 0x37f44, 0x37f44, PF_R, 0x1000),
                (PT_LOAD, 0x128af0, 0x128af0, 0xbc74, 0x16cf0, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x12b5e8, 0x12b5e8, 0x200, 0x200, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x109f3c, 0x109f3c, 0x4734, 0x4734, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x128af0, 0x128af0, 0x3510, 0x3510, PF_R, 0x1),
            )),
    # ls from coreutils 9.1-1
    ElfSpec('/usr/bin/ls', 3, 0x61d0, 151344,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libselinux.so.1', 'libc.so.6'),
            dt_strtab=0x1040, reloc_bytes=7896,
            package='coreutils 9.1-1',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x0, 0x36c0, 0x36c0, PF_R, 0x1000),
                (PT_LOAD, 0x4000, 0x4000, 0x15759, 0x15759, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x1a000, 0x1a000, 0x8ed0, 0x8ed0, PF_R, 0x1000),
                (PT_LOAD, 0x232b0, 0x232b0, 0x1310, 0x25f8, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x23d98, 0x23d98, 0x1f0, 0x1f0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x1ef7c, 0x1ef7c, 0x9fc, 0x9fc, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x232b0, 0x232b0, 0xd50, 0xd50, PF_R, 0x1),
            )),
    # cat from coreutils 9.1-1
    ElfSpec('/usr/bin/cat', 3, 0x3130, 44016,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libc.so.6',),
            dt_strtab=0xa30, reloc_bytes=2184,
            package='coreutils 9.1-1',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x0, 0x1720, 0x1720, PF_R, 0x1000),
                (PT_LOAD, 0x2000, 0x2000, 0x4da9, 0x4da9, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x7000, 0x7000, 0x20e8, 0x20e8, PF_R, 0x1000),
                (PT_LOAD, 0x9c30, 0xac30, 0x650, 0x7e8, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x9dd8, 0xadd8, 0x1e0, 0x1e0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x7ef0, 0x7ef0, 0x32c, 0x32c, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x9c30, 0xac30, 0x3d0, 0x3d0, PF_R, 0x1),
            )),
    # grep from grep 3.8-5
    ElfSpec('/usr/bin/grep', 3, 0x6250, 203152,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libpcre2-8.so.0', 'libc.so.6'),
            dt_strtab=0x1310, reloc_bytes=6816,
            package='grep 3.8-5',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x0, 0x3748, 0x3748, PF_R, 0x1000),
                (PT_LOAD, 0x4000, 0x4000, 0x23359, 0x23359, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x28000, 0x28000, 0x7820, 0x7820, PF_R, 0x1000),
                (PT_LOAD, 0x2ff70, 0x30f70, 0x1194, 0x11d20, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x309b8, 0x319b8, 0x200, 0x200, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x2ae5c, 0x2ae5c, 0xa34, 0xa34, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x2ff70, 0x30f70, 0x1090, 0x1090, PF_R, 0x1),
            )),
    # python3.11 from python3.11-minimal 3.11.2-6+deb12u6
    ElfSpec('/usr/bin/python3.11', 2, 0x627bb0, 6831736,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libm.so.6', 'libz.so.1', 'libexpat.so.1', 'libc.so.6'),
            dt_strtab=0x410588, reloc_bytes=12408,
            package='python3.11-minimal 3.11.2-6+deb12u6',
            phdrs=(
                (PT_PHDR, 0x40, 0x400040, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x400318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x400000, 0x1e3e8, 0x1e3e8, PF_R, 0x1000),
                (PT_LOAD, 0x1f000, 0x41f000, 0x2b2289, 0x2b2289, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x2d2000, 0x6d2000, 0x272968, 0x272968, PF_R, 0x1000),
                (PT_LOAD, 0x544dc8, 0x945dc8, 0x13e4b0, 0x1832f0, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x544dd8, 0x945dd8, 0x200, 0x200, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x400338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x400358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x400338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x4cc5a4, 0x8cc5a4, 0x13f74, 0x13f74, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x544dc8, 0x945dc8, 0x238, 0x238, PF_R, 0x1),
            )),
    # nginx from nginx 1.22.1-9+deb12u9
    ElfSpec('/usr/sbin/nginx', 3, 0x25410, 1260456,
            interp='/lib64/ld-linux-x86-64.so.2', soname=None,
            needed=('libcrypt.so.1', 'libpcre2-8.so.0', 'libssl.so.3', 'libcrypto.so.3',
                    'libz.so.1', 'libc.so.6'),
            dt_strtab=0x84e8, reloc_bytes=82824,
            package='nginx 1.22.1-9+deb12u9',
            phdrs=(
                (PT_PHDR, 0x40, 0x40, 0x2d8, 0x2d8, PF_R, 0x8),
                (PT_INTERP, 0x318, 0x318, 0x1c, 0x1c, PF_R, 0x1),
                (PT_LOAD, 0x0, 0x0, 0x22958, 0x22958, PF_R, 0x1000),
                (PT_LOAD, 0x23000, 0x23000, 0xbe5e1, 0xbe5e1, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0xe2000, 0xe2000, 0x37c04, 0x37c04, PF_R, 0x1000),
                (PT_LOAD, 0x11a850, 0x11a850, 0x18ad0, 0x380b0, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x11b0c0, 0x11b0c0, 0x240, 0x240, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_NOTE, 0x358, 0x358, 0x44, 0x44, PF_R, 0x4),
                (PT_GNU_PROPERTY, 0x338, 0x338, 0x20, 0x20, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0xff164, 0xff164, 0x335c, 0x335c, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x11a850, 0x11a850, 0x17b0, 0x17b0, PF_R, 0x1),
            )),
    # libz.so.1.2.13 from zlib1g 1:1.2.13.dfsg-1
    ElfSpec('/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', 3, 0x0, 121280,
            interp=None, soname='libz.so.1',
            needed=('libc.so.6',),
            dt_strtab=0x11c8, reloc_bytes=1920,
            package='zlib1g 1:1.2.13.dfsg-1',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0x2280, 0x2280, PF_R, 0x1000),
                (PT_LOAD, 0x3000, 0x3000, 0x1200d, 0x1200d, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x16000, 0x16000, 0x63c8, 0x63c8, PF_R, 0x1000),
                (PT_LOAD, 0x1cc70, 0x1dc70, 0x518, 0x520, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x1cdd0, 0x1ddd0, 0x1f0, 0x1f0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x1a854, 0x1a854, 0x3e4, 0x3e4, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x1cc70, 0x1dc70, 0x390, 0x390, PF_R, 0x1),
            )),
    # libexpat.so.1.8.10 from libexpat1 2.5.0-1+deb12u1
    ElfSpec('/usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10', 3, 0x0, 174176,
            interp=None, soname='libexpat.so.1',
            needed=('libc.so.6',),
            dt_strtab=0xd58, reloc_bytes=7680,
            package='libexpat1 2.5.0-1+deb12u1',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0x3418, 0x3418, PF_R, 0x1000),
                (PT_LOAD, 0x4000, 0x4000, 0x1b50d, 0x1b50d, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x20000, 0x20000, 0x7bac, 0x7bac, PF_R, 0x1000),
                (PT_LOAD, 0x281b0, 0x281b0, 0x1ec8, 0x1ed0, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x29dc0, 0x29dc0, 0x1d0, 0x1d0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x243e0, 0x243e0, 0x934, 0x934, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x281b0, 0x281b0, 0x1e50, 0x1e50, PF_R, 0x1),
            )),
    # libtinfo.so.6.4 from libtinfo6 6.4-4
    ElfSpec('/usr/lib/x86_64-linux-gnu/libtinfo.so.6.4', 3, 0x0, 204088,
            interp=None, soname='libtinfo.so.6',
            needed=('libc.so.6',),
            dt_strtab=0x2a98, reloc_bytes=40584,
            package='libtinfo6 6.4-4',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0xe0a0, 0xe0a0, PF_R, 0x1000),
                (PT_LOAD, 0xf000, 0xf000, 0x103e1, 0x103e1, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x20000, 0x20000, 0xd7e8, 0xd7e8, PF_R, 0x1000),
                (PT_LOAD, 0x2d850, 0x2e850, 0x3c5c, 0x40f0, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x307e8, 0x317e8, 0x210, 0x210, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x2a974, 0x2a974, 0x7e4, 0x7e4, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x2d850, 0x2e850, 0x37b0, 0x37b0, PF_R, 0x1),
            )),
    # libselinux.so.1 from libselinux1 3.4-1+b6
    ElfSpec('/usr/lib/x86_64-linux-gnu/libselinux.so.1', 3, 0x0, 174312,
            interp=None, soname='libselinux.so.1',
            needed=('libpcre2-8.so.0', 'libc.so.6', 'ld-linux-x86-64.so.2'),
            dt_strtab=0x2ec8, reloc_bytes=6144,
            package='libselinux1 3.4-1+b6',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0x6600, 0x6600, PF_R, 0x1000),
                (PT_LOAD, 0x7000, 0x7000, 0x1a785, 0x1a785, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x22000, 0x22000, 0x754c, 0x754c, PF_R, 0x1000),
                (PT_LOAD, 0x295b8, 0x2a5b8, 0xab0, 0x3118, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x29650, 0x2a650, 0x230, 0x230, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x270, 0x270, 0x24, 0x24, PF_R, 0x4),
                (PT_TLS, 0x295b8, 0x2a5b8, 0x28, 0xe8, PF_R, 0x8),
                (PT_GNU_EH_FRAME, 0x241a8, 0x241a8, 0xb7c, 0xb7c, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x295b8, 0x2a5b8, 0xa48, 0xa48, PF_R, 0x1),
            )),
    # libpcre2-8.so.0.11.2 from libpcre2-8-0 10.42-1
    ElfSpec('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 3, 0x0, 629384,
            interp=None, soname='libpcre2-8.so.0',
            needed=('libc.so.6',),
            dt_strtab=0xe28, reloc_bytes=1776,
            package='libpcre2-8-0 10.42-1',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0x1f48, 0x1f48, PF_R, 0x1000),
                (PT_LOAD, 0x2000, 0x2000, 0x6aa25, 0x6aa25, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x6d000, 0x6d000, 0x2ad98, 0x2ad98, PF_R, 0x1000),
                (PT_LOAD, 0x98cf0, 0x98cf0, 0x5b0, 0x698, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x98dc8, 0x98dc8, 0x1d0, 0x1d0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x910c0, 0x910c0, 0x814, 0x814, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x98cf0, 0x98cf0, 0x310, 0x310, PF_R, 0x1),
            )),
    # libcrypt.so.1.1.0 from libcrypt1 1:4.4.33-2
    ElfSpec('/usr/lib/x86_64-linux-gnu/libcrypt.so.1.1.0', 3, 0x0, 206776,
            interp=None, soname='libcrypt.so.1',
            needed=('libc.so.6',),
            dt_strtab=0x818, reloc_bytes=1896,
            package='libcrypt1 1:4.4.33-2',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0x1360, 0x1360, PF_R, 0x1000),
                (PT_LOAD, 0x2000, 0x2000, 0x15345, 0x15345, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x18000, 0x18000, 0x198c8, 0x198c8, PF_R, 0x1000),
                (PT_LOAD, 0x31a50, 0x32a50, 0x5b8, 0x8858, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x31d28, 0x32d28, 0x1e0, 0x1e0, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x2f508, 0x2f508, 0x414, 0x414, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x31a50, 0x32a50, 0x5b0, 0x5b0, PF_R, 0x1),
            )),
    # libssl.so.3 from libssl3 3.0.19-1~deb12u2
    ElfSpec('/usr/lib/x86_64-linux-gnu/libssl.so.3', 3, 0x0, 688160,
            interp=None, soname='libssl.so.3',
            needed=('libcrypto.so.3', 'libc.so.6'),
            dt_strtab=0x7210, reloc_bytes=72552,
            package='libssl3 3.0.19-1~deb12u2',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0x1ea48, 0x1ea48, PF_R, 0x1000),
                (PT_LOAD, 0x1f000, 0x1f000, 0x5cf51, 0x5cf51, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x7c000, 0x7c000, 0x1e7a0, 0x1e7a0, PF_R, 0x1000),
                (PT_LOAD, 0x9a7f0, 0x9b7f0, 0xd040, 0xd080, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0xa2910, 0xa3910, 0x220, 0x220, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x8a6e8, 0x8a6e8, 0x2864, 0x2864, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x9a7f0, 0x9b7f0, 0x9810, 0x9810, PF_R, 0x1),
            )),
    # libcrypto.so.3 from libssl3 3.0.19-1~deb12u2
    ElfSpec('/usr/lib/x86_64-linux-gnu/libcrypto.so.3', 3, 0x0, 4734232,
            interp=None, soname='libcrypto.so.3',
            needed=('libc.so.6',),
            dt_strtab=0x2ab00, reloc_bytes=506712,
            package='libssl3 3.0.19-1~deb12u2',
            phdrs=(
                (PT_LOAD, 0x0, 0x0, 0xc4b30, 0xc4b30, PF_R, 0x1000),
                (PT_LOAD, 0xc5000, 0xc5000, 0x27c6a9, 0x27c6a9, PF_R | PF_X, 0x1000),
                (PT_LOAD, 0x342000, 0x342000, 0xdd6b0, 0xdd6b0, PF_R, 0x1000),
                (PT_LOAD, 0x41fe90, 0x420e90, 0x63698, 0x66720, PF_R | PF_W, 0x1000),
                (PT_DYNAMIC, 0x47aa70, 0x47ba70, 0x210, 0x210, PF_R | PF_W, 0x8),
                (PT_NOTE, 0x238, 0x238, 0x24, 0x24, PF_R, 0x4),
                (PT_GNU_EH_FRAME, 0x39b858, 0x39b858, 0x15504, 0x15504, PF_R, 0x4),
                (PT_GNU_STACK, 0x0, 0x0, 0x0, 0x0, PF_R | PF_W, 0x10),
                (PT_GNU_RELRO, 0x41fe90, 0x420e90, 0x61170, 0x61170, PF_R, 0x1),
            )),
)

# Names that point at other files, as Debian installs them (usrmerge, SONAME links).
SYMLINKS: Final[dict[str, str]] = {
    "/bin": "usr/bin",
    "/lib": "usr/lib",
    "/lib64": "usr/lib64",
    "/sbin": "usr/sbin",
    "/usr/bin/python3": "python3.11",
    "/usr/bin/sh": "dash",
    "/usr/lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
    f"{LIB_DIR}/libz.so.1": "libz.so.1.2.13",
    f"{LIB_DIR}/libexpat.so.1": "libexpat.so.1.8.10",
    f"{LIB_DIR}/libtinfo.so.6": "libtinfo.so.6.4",
    f"{LIB_DIR}/libpcre2-8.so.0": "libpcre2-8.so.0.11.2",
    f"{LIB_DIR}/libcrypt.so.1": "libcrypt.so.1.1.0",
}


def resolve(path: str) -> str:
    """`path` with every symlink of SYMLINKS followed, component by component (as namei)."""
    parts = [p for p in path.split("/") if p]
    done = ""
    for _ in range(40):  # MAXSYMLINKS
        while parts:
            here = f"{done}/{parts.pop(0)}"
            target = SYMLINKS.get(here)
            if target is not None:
                parts = [p for p in target.split("/") if p] + parts
                done = "" if target.startswith("/") else done
                break
            done = here
        else:
            return done or "/"
    raise KeyError(f"{path}: too many levels of symbolic links")


def spec(path: str) -> ElfSpec:
    """The table entry for the file `path` names (symlinks followed)."""
    real = resolve(path)
    for entry in DISTRO:
        if entry.path == real:
            return entry
    raise KeyError(path)


def _vaddr_to_offset(entry: ElfSpec, vaddr: int) -> int:
    """The file offset of `vaddr` through the table's PT_LOADs (as ElfFile.vaddr_to_offset)."""
    for ph in entry.loads:
        if ph.p_vaddr <= vaddr < ph.p_vaddr + ph.p_filesz:
            return ph.p_offset + vaddr - ph.p_vaddr
    raise ElfError(f"{entry.path}: DT_STRTAB={vaddr:#x} lies in no PT_LOAD's file bytes")


def make_elf(entry: ElfSpec) -> bytes:
    """The file for `entry`: real headers, PT_INTERP, PT_DYNAMIC and strings; random elsewhere.

    Deterministic: the filler comes from a generator seeded with the path's SHA-256.
    """
    seed = int.from_bytes(hashlib.sha256(entry.path.encode()).digest()[:8], "little")
    data = bytearray(np.random.default_rng(seed).bytes(entry.size))
    phdrs = entry.program_headers
    header = ElfHeader(ELFCLASS64, ELFDATA2LSB, entry.e_type, EM_X86_64, EV_CURRENT,
                       entry.e_entry, 64, 0, 0, 64, 56, len(phdrs), 64, 0, 0)
    regions: list[tuple[int, int, str]] = []

    def put(offset: int, blob: bytes, what: str) -> None:
        # Two generated regions must never overlap: that would be a table or generator bug.
        end = offset + len(blob)
        assert end <= entry.size, f"make_elf: {entry.path}: {what} ends past the file"
        for lo, hi, other in regions:
            assert end <= lo or hi <= offset, f"make_elf: {entry.path}: {what} overlaps {other}"
        regions.append((offset, end, what))
        data[offset:end] = blob

    put(0, header.pack(), "ELF header")
    put(64, b"".join(ph.pack(ELFCLASS64, ELFDATA2LSB) for ph in phdrs), "program headers")
    for ph in phdrs:
        if ph.p_type == PT_INTERP:
            assert entry.interp is not None, f"make_elf: {entry.path}: PT_INTERP without interp"
            text = entry.interp.encode() + b"\0"
            assert len(text) == ph.p_filesz, f"make_elf: {entry.path}: PT_INTERP size"
            put(ph.p_offset, text, "PT_INTERP")
        elif ph.p_type == PT_DYNAMIC:
            strtab = b"\0"
            dyn: list[tuple[int, int]] = []
            for name in entry.needed:
                dyn.append((DT_NEEDED, len(strtab)))
                strtab += name.encode() + b"\0"
            if entry.soname is not None:
                dyn.append((DT_SONAME, len(strtab)))
                strtab += entry.soname.encode() + b"\0"
            dyn += [(DT_STRTAB, entry.dt_strtab), (DT_STRSZ, len(strtab))]
            if entry.reloc_bytes:
                dyn.append((DT_RELASZ, entry.reloc_bytes))
            raw = b"".join(d_tag.to_bytes(8, "little") + d_val.to_bytes(8, "little")
                           for d_tag, d_val in dyn)
            assert len(raw) + 16 <= ph.p_filesz, f"make_elf: {entry.path}: PT_DYNAMIC too small"
            put(ph.p_offset, raw.ljust(ph.p_filesz, b"\0"), "PT_DYNAMIC")  # then DT_NULLs
            put(_vaddr_to_offset(entry, entry.dt_strtab), strtab, "DT_STRTAB")
    return bytes(data)


def distro_tree() -> dict[str, Entry]:
    """The build_image mapping of the distribution: every ELF file and every symlink."""
    tree: dict[str, Entry] = {}
    for entry in DISTRO:
        # Debian installs programs, libc and ld.so executable, other libraries 0644.
        runnable = entry.interp is not None or entry.soname in (None, "ld-linux-x86-64.so.2")
        tree[entry.path] = File(make_elf(entry), mode=0o755 if runnable else 0o644)
    for name, target in SYMLINKS.items():
        tree[name] = Symlink(target)
    return tree


def _cache_key() -> str:
    """A hash of everything the image depends on: the table, the links, the generator."""
    text = repr((GENERATOR_VERSION, DISTRO, sorted(SYMLINKS.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _cache_dir() -> Path:
    """$XDG_CACHE_HOME/xipmodel, else ~/.cache/xipmodel."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xipmodel"


def _build() -> bytes:
    """Build the image from the table (deterministic: timestamp 0, UUID from the content)."""
    return build_image(distro_tree(), volume_name="xipmodel-distro", timestamp=0)


def _load_or_build() -> bytes:
    """The image from the disk cache if it is there and intact, else built (and cached)."""
    key = _cache_key()
    folder = _cache_dir()
    image_file = folder / f"distro-{key}.img"
    sum_file = folder / f"distro-{key}.sha256"
    try:
        data = image_file.read_bytes()
        if hashlib.sha256(data).hexdigest() == sum_file.read_text().strip():
            return data
    except OSError:
        pass  # not cached yet, or the cache is unreadable: build it
    data = _build()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".distro-{key}.{os.getpid()}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, image_file)
        tmp_sum = folder / f".distro-{key}.{os.getpid()}.sum"
        tmp_sum.write_text(hashlib.sha256(data).hexdigest() + "\n")
        os.replace(tmp_sum, sum_file)
    except OSError:
        pass  # an unwritable cache directory: keep the image in memory only
    return data


_lock = threading.Lock()
_bytes: bytes | None = None
_image: Ext2Image | None = None


def default_image_bytes() -> bytes:
    """The frozen image of the default distribution (built once per process)."""
    global _bytes
    with _lock:
        if _bytes is None:
            _bytes = _load_or_build()
        return _bytes


def default_image() -> Ext2Image:
    """The default distribution opened read-only; one shared instance per process."""
    global _image
    data = default_image_bytes()
    with _lock:
        if _image is None:
            _image = Ext2Image.open(data)
        return _image


def needed_closure(path: str, lib_dir: str = LIB_DIR) -> tuple[str, ...]:
    """The libraries `path` loads, breadth-first as ld.so does, by their paths in `lib_dir`.

    The dynamic loader is not listed (it is the PT_INTERP, not a DT_NEEDED of programs).
    """
    main = spec(path)
    interp_name = spec(main.interp).soname if main.interp else None
    order: list[str] = []
    queue = [main]
    while queue:
        for name in queue.pop(0).needed:
            lib = f"{lib_dir}/{name}"
            if name == interp_name or lib in order:
                continue
            order.append(lib)
            queue.append(spec(lib))
    return tuple(order)


@dataclass(frozen=True)
class Program:
    """A program of the distribution and what one run of it looked like on a real machine.

    Measured on Debian 12 (kernel 6.18, 4 KiB pages) from /proc/PID/smaps about one
    second after start, with the program blocked on input (or on a full pipe for ls):
    `text_resident` is (object, resident pages, pages mapped) of each r-x mapping;
    `file_dirty` the Private_Dirty pages of each object's file mappings (relocations,
    padzero, written .data); heap, stack and other anonymous pages are resident pages.
    Resident file pages include the kernel's fault-around (64 KiB windows), so they
    are an upper bound on the pages the program itself touched.
    """

    name: str
    path: str  # the main binary in the image
    run: str  # the command line measured
    text_resident: tuple[tuple[str, int, int], ...] = ()
    file_dirty: tuple[tuple[str, int], ...] = ()
    heap_pages: int = 0
    stack_pages: int = 0
    anon_pages: int = 0  # .bss and anonymous mmaps other than [heap] and [stack]

    @cached_property
    def libraries(self) -> tuple[str, ...]:
        """The DT_NEEDED closure of the main binary, breadth-first."""
        return needed_closure(self.path)

    @property
    def interp(self) -> str | None:
        """The PT_INTERP of the main binary."""
        return spec(self.path).interp

    def text_fraction(self, path: str) -> float:
        """Resident share of `path`'s text after start (0.0 if the run did not map it)."""
        real = resolve(path)
        for obj, resident, mapped in self.text_resident:
            if resolve(obj) == real:
                return resident / mapped
        return 0.0


PROGRAMS: Final[dict[str, Program]] = {p.name: p for p in (
    Program('dash', '/usr/bin/dash', "dash -c 'read x'",
            text_resident=(
                ('/usr/bin/dash', 19, 19),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 214, 342),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 38, 38),
            ),
            file_dirty=(
                ('/usr/bin/dash', 3),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=1, stack_pages=3, anon_pages=9),
    Program('bash', '/usr/bin/bash', "bash -c 'read x'",
            text_resident=(
                ('/usr/bin/bash', 160, 193),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 258, 342),
                ('/usr/lib/x86_64-linux-gnu/libtinfo.so.6.4', 16, 17),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 38, 38),
            ),
            file_dirty=(
                ('/usr/bin/bash', 13),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/libtinfo.so.6.4', 5),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=20, stack_pages=4, anon_pages=16),
    Program('cat', '/usr/bin/cat', 'cat',
            text_resident=(
                ('/usr/bin/cat', 5, 5),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 203, 342),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 38, 38),
            ),
            file_dirty=(
                ('/usr/bin/cat', 2),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=4, stack_pages=4, anon_pages=9),
    Program('grep', '/usr/bin/grep', 'grep x',
            text_resident=(
                ('/usr/bin/grep', 36, 36),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 230, 342),
                ('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 16, 107),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 38, 38),
            ),
            file_dirty=(
                ('/usr/bin/grep', 3),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 2),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=10, stack_pages=3, anon_pages=10),
    Program('ls', '/usr/bin/ls', 'ls -lR /usr/share',
            text_resident=(
                ('/usr/bin/ls', 22, 22),
                ('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 16, 107),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 289, 342),
                ('/usr/lib/x86_64-linux-gnu/libselinux.so.1', 16, 27),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 38, 38),
            ),
            file_dirty=(
                ('/usr/bin/ls', 2),
                ('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 2),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/libselinux.so.1', 2),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=25, stack_pages=6, anon_pages=12),
    Program('python3', '/usr/bin/python3.11', "python3.11 -c 'import sys; sys.stdin.read()'",
            text_resident=(
                ('/usr/bin/python3.11', 432, 691),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 303, 342),
                ('/usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10', 16, 28),
                ('/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', 16, 19),
                ('/usr/lib/x86_64-linux-gnu/libm.so.6', 73, 116),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 37, 38),
            ),
            file_dirty=(
                ('/usr/bin/python3.11', 289),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/libexpat.so.1.8.10', 3),
                ('/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', 2),
                ('/usr/lib/x86_64-linux-gnu/libm.so.6', 2),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=134, stack_pages=8, anon_pages=243),
    Program('nginx', '/usr/sbin/nginx', 'nginx (daemon off, master_process off, one server)',
            text_resident=(
                ('/usr/sbin/nginx', 191, 191),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 268, 342),
                ('/usr/lib/x86_64-linux-gnu/libcrypto.so.3', 397, 637),
                ('/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', 16, 19),
                ('/usr/lib/x86_64-linux-gnu/libssl.so.3', 29, 93),
                ('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 16, 107),
                ('/usr/lib/x86_64-linux-gnu/libcrypt.so.1.1.0', 15, 22),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 38, 38),
            ),
            file_dirty=(
                ('/usr/sbin/nginx', 26),
                ('/usr/lib/x86_64-linux-gnu/libc.so.6', 6),
                ('/usr/lib/x86_64-linux-gnu/libcrypto.so.3', 101),
                ('/usr/lib/x86_64-linux-gnu/libz.so.1.2.13', 2),
                ('/usr/lib/x86_64-linux-gnu/libssl.so.3', 14),
                ('/usr/lib/x86_64-linux-gnu/libpcre2-8.so.0.11.2', 2),
                ('/usr/lib/x86_64-linux-gnu/libcrypt.so.1.1.0', 2),
                ('/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2', 4),
            ),
            heap_pages=59, stack_pages=3, anon_pages=18),
)}
