"""The ELF reader against readelf and pyelftools, and exec of real binaries in a guest.

Oracles: binutils' `readelf -lW` / `-dW` on real Debian binaries of this machine,
and pyelftools on hand-built ELF32 files (both byte orders). Exec scenarios run
the real dash, libc and ld.so from a small image in XIP and page-cache guests.
"""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from xipmodel.elf import (
    CONTENT_RELOC_BASE,
    DT_NEEDED,
    DT_STRSZ,
    DT_STRTAB,
    ELF_ET_DYN_BASE,
    ELFCLASS32,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ET_EXEC,
    PF_R,
    PF_W,
    PF_X,
    PT_DYNAMIC,
    PT_INTERP,
    PT_LOAD,
    STACK_TOP,
    ElfError,
    ElfFile,
    ElfHeader,
    ProgramHeader,
    exec_image,
    reloc_content,
)
from xipmodel.errors import XipModelError
from xipmodel.ext2 import Ext2Image, Symlink, build_image
from xipmodel.mm.frames import FrameKind, HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.segment import SharedSegment
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE

LIB = "/usr/lib/x86_64-linux-gnu"
REAL = [
    "/usr/bin/dash",
    "/usr/bin/bash",
    f"{LIB}/libc.so.6",
    "/lib64/ld-linux-x86-64.so.2",
    "/usr/bin/python3.11",
    "/usr/bin/readelf",
    "/usr/sbin/nginx",
]


def _host_file(path: str) -> Path:
    real = Path(os.path.realpath(path))
    if not real.is_file():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} is not on this machine (CI=true: .ci/run installs it)")
        pytest.skip(f"{path} is not on this machine")
    return real


# --- readelf as the oracle --------------------------------------------------------------

PHDR_LINE = re.compile(
    r"^\s+(\S+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+"
    r"0x([0-9a-f]+)\s+([RWE ]{3})\s+0x([0-9a-f]+)$")


def _readelf(tool: str, flag: str, path: Path) -> str:
    env = dict(os.environ, LC_ALL="C")
    return subprocess.run([tool, flag, str(path)], check=True, capture_output=True,
                          text=True, env=env).stdout


def _flags(text: str) -> int:
    return (PF_R if "R" in text else 0) | (PF_W if "W" in text else 0) | \
        (PF_X if "E" in text else 0)


@pytest.mark.oracle
@pytest.mark.parametrize("path", REAL)
def test_program_headers_match_readelf(path: str, require_tool: Callable[[str], str]) -> None:
    """Does the hand-written reader see the program headers, entry and interpreter readelf sees?"""
    readelf = require_tool("readelf")
    host = _host_file(path)
    elf = ElfFile.from_path(host)
    out = _readelf(readelf, "-lW", host)
    rows = [m.groups() for m in map(PHDR_LINE.match, out.splitlines()) if m]
    assert len(rows) == len(elf.phdrs) == elf.header.e_phnum
    for (kind, off, vaddr, paddr, filesz, memsz, flg, align), ph in zip(rows, elf.phdrs,
                                                                       strict=True):
        assert kind == ph.type_name
        assert (int(off, 16), int(vaddr, 16), int(paddr, 16)) == \
            (ph.p_offset, ph.p_vaddr, ph.p_paddr)
        assert (int(filesz, 16), int(memsz, 16), int(align, 16)) == \
            (ph.p_filesz, ph.p_memsz, ph.p_align)
        assert _flags(flg) == ph.p_flags
    assert f"Entry point {elf.header.e_entry:#x}" in out
    found = re.search(r"\[Requesting program interpreter: (.*)\]", out)
    assert elf.interp == (found.group(1) if found else None)


@pytest.mark.oracle
@pytest.mark.parametrize("path", REAL)
def test_needed_matches_readelf(path: str, require_tool: Callable[[str], str]) -> None:
    """Are DT_NEEDED (through DT_STRTAB mapped back via the PT_LOADs) and SONAME readelf's?"""
    readelf = require_tool("readelf")
    host = _host_file(path)
    elf = ElfFile.from_path(host)
    out = _readelf(readelf, "-dW", host)
    assert elf.needed == tuple(re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", out))
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", out)
    assert elf.soname == (soname[0] if soname else None)
    relasz = re.search(r"\(RELASZ\)\s+(\d+) \(bytes\)", out)
    pltrelsz = re.search(r"\(PLTRELSZ\)\s+(\d+) \(bytes\)", out)
    assert elf.reloc_bytes == sum(int(m.group(1)) for m in (relasz, pltrelsz) if m)


# --- hand-built ELF32 files, checked with pyelftools -----------------------------------

def _tiny_elf32(ei_data: int, needed: tuple[str, ...] = ("libc.so.1",)) -> bytes:
    """An ELF32 ET_EXEC: header, 3 phdrs (INTERP, LOAD, DYNAMIC), interp, strtab, dynamic."""
    e = "<" if ei_data == ELFDATA2LSB else ">"
    interp = b"/lib/ld.so.1\0"
    strtab = b"\0" + b"".join(n.encode() + b"\0" for n in needed)
    phoff, nph = 52, 3
    interp_off = phoff + nph * 32
    str_off = interp_off + len(interp)
    dyn_off = (str_off + len(strtab) + 7) & ~7
    dyn = [(DT_NEEDED, 1 + sum(len(n) + 1 for n in needed[:i])) for i in range(len(needed))]
    dyn += [(DT_STRTAB, 0x10000 + str_off), (DT_STRSZ, len(strtab)), (0, 0)]
    dyn_raw = b"".join(struct.pack(e + "iI", t, v) for t, v in dyn)
    size = dyn_off + len(dyn_raw)
    phdrs = [
        ProgramHeader(PT_INTERP, interp_off, 0x10000 + interp_off, 0x10000 + interp_off,
                      len(interp), len(interp), PF_R, 1),
        ProgramHeader(PT_LOAD, 0, 0x10000, 0x10000, size, size + 0x2000,
                      PF_R | PF_W | PF_X, 0x1000),
        ProgramHeader(PT_DYNAMIC, dyn_off, 0x10000 + dyn_off, 0x10000 + dyn_off,
                      len(dyn_raw), len(dyn_raw), PF_R | PF_W, 4),
    ]
    hdr = ElfHeader(ELFCLASS32, ei_data, ET_EXEC, 20, 1, 0x10080, phoff, 0, 0, 52, 32, nph,
                    40, 0, 0)
    data = bytearray(size)
    data[:52] = hdr.pack()
    data[phoff:interp_off] = b"".join(p.pack(ELFCLASS32, ei_data) for p in phdrs)
    data[interp_off:str_off] = interp
    data[str_off:str_off + len(strtab)] = strtab
    data[dyn_off:] = dyn_raw
    return bytes(data)


@pytest.mark.oracle
@pytest.mark.parametrize("ei_data", [ELFDATA2LSB, ELFDATA2MSB], ids=["lsb", "msb"])
def test_elf32_both_byte_orders(ei_data: int, tmp_path: Path,
                                require_module: Callable[[str], ModuleType]) -> None:
    """A 32-bit object in either byte order: do we and pyelftools read the same headers?"""
    require_module("elftools")
    from elftools.elf.elffile import ELFFile

    data = _tiny_elf32(ei_data, ("libc.so.1", "libm.so.1"))
    elf = ElfFile.from_bytes(data, "tiny32")
    assert elf.header.ei_class == ELFCLASS32 and elf.header.ei_data == ei_data
    path = tmp_path / "tiny32"
    path.write_bytes(data)
    with path.open("rb") as stream:
        oracle = ELFFile(stream)
        assert oracle.little_endian == (ei_data == ELFDATA2LSB)
        assert oracle["e_entry"] == elf.header.e_entry and oracle["e_machine"] == "EM_PPC"
        for seg, ph in zip(oracle.iter_segments(), elf.phdrs, strict=True):
            assert (seg["p_offset"], seg["p_vaddr"], seg["p_filesz"], seg["p_memsz"],
                    seg["p_flags"], seg["p_align"]) == \
                (ph.p_offset, ph.p_vaddr, ph.p_filesz, ph.p_memsz, ph.p_flags, ph.p_align)
    assert elf.interp == "/lib/ld.so.1"
    assert elf.needed == ("libc.so.1", "libm.so.1")
    assert ElfFile.from_path(path).phdrs == elf.phdrs


def test_pack_unpack_round_trip() -> None:
    """Encoding a program header and decoding it gives it back, in every class and order."""
    ph = ProgramHeader(PT_LOAD, 0x1000, 0x401000, 0x401000, 0x2345, 0x3456, PF_R | PF_X, 0x1000)
    for ei_class in (1, 2):
        for ei_data in (ELFDATA2LSB, ELFDATA2MSB):
            assert ProgramHeader.unpack(ph.pack(ei_class, ei_data), ei_class, ei_data) == ph


# --- bad input --------------------------------------------------------------------------

def test_not_elf_names_the_file() -> None:
    """A file that is not ELF gives a clear error naming the file."""
    with pytest.raises(ElfError, match=r"^/etc/motd: not an ELF file: e_ident magic") as info:
        ElfFile.from_bytes(b"#!/bin/sh\necho hello, this is a script\n", "/etc/motd")
    assert isinstance(info.value, ValueError) and isinstance(info.value, XipModelError)
    with pytest.raises(ElfError, match=r"^empty: not an ELF file: 0 bytes"):
        ElfFile.from_bytes(b"", "empty")


@pytest.fixture(scope="module")
def dash() -> bytes:
    return _host_file("/usr/bin/dash").read_bytes()


@pytest.mark.parametrize(("cut", "message"), [
    (40, r"truncated ELF header: file has 40 bytes"),
    (200, r"e_phoff=0x40, e_phnum=13: the program headers end at 0x318, past the end"),
    (0x10000, r"program header 3 \(LOAD\): p_offset=0x4000 \+ p_filesz=0x12bb9 runs past"),
])
def test_truncated_files(dash: bytes, cut: int, message: str) -> None:
    """A binary cut short: which structure runs off the end, and by how much?"""
    with pytest.raises(ElfError, match=message):
        ElfFile.from_bytes(dash[:cut], "dash.cut")


@pytest.mark.parametrize(("offset", "fmt", "value", "message"), [
    (4, "B", 3, r"EI_CLASS=3"),
    (5, "B", 0, r"EI_DATA=0"),
    (0x14, "<I", 2, r"e_version=2"),
    (0x36, "<H", 40, r"e_phentsize=40: expected 56"),
    (0x38, "<H", 5000, r"e_phnum=5000: a 280000-byte program header table"),
    (0x20, "<Q", 1 << 40, r"e_phoff=0x10000000000"),
])
def test_corrupt_header_fields(dash: bytes, offset: int, fmt: str, value: int,
                               message: str) -> None:
    """Absurd header values are refused at open, naming the field and the value."""
    data = bytearray(dash)
    struct.pack_into(fmt, data, offset, value)
    with pytest.raises(ElfError, match=r"^dash: .*" + message):
        ElfFile.from_bytes(bytes(data), "dash")


def test_bad_interp_string() -> None:
    """A PT_INTERP that is not one NUL-terminated path is an error when exec asks for it."""
    data = bytearray(_tiny_elf32(ELFDATA2LSB))
    data[52 + 96 + 12] = ord("x")  # overwrite the interpreter's NUL
    elf = ElfFile.from_bytes(bytes(data), "noterm")
    with pytest.raises(ElfError, match=r"noterm: PT_INTERP at 0x94: .* NUL-terminated"):
        _ = elf.interp


# --- exec in a guest --------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_image() -> Ext2Image:
    """The real dash, libc and ld.so of this machine, laid out as Debian does."""
    tree: dict[str, object] = {
        "/usr/bin/dash": _host_file("/usr/bin/dash").read_bytes(),
        f"{LIB}/libc.so.6": _host_file(f"{LIB}/libc.so.6").read_bytes(),
        f"{LIB}/ld-linux-x86-64.so.2": _host_file(f"{LIB}/ld-linux-x86-64.so.2").read_bytes(),
        "/usr/bin/nolibs": _host_file("/usr/bin/dash").read_bytes(),
        "/lib": Symlink("usr/lib"),
        "/lib64": Symlink("usr/lib64"),
        "/usr/lib64/ld-linux-x86-64.so.2": Symlink("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
        "/etc/motd": b"not a program\n",
    }
    return Ext2Image.open(build_image(tree, volume_name="real"))  # type: ignore[arg-type]


def _guests(image: Ext2Image) -> tuple[HostMemory, Guest, Guest]:
    host = HostMemory()
    xip = Guest(0, host, 4096, image, segment=SharedSegment(host, image))
    pc = Guest(1, host, 4096, image)
    return host, xip, pc


def _gpfn(guest: Guest, mm: object, vpn: int) -> int | None:
    pte = mm.pt.lookup_pte(vpn)  # type: ignore[attr-defined]
    return guest.preset.pte_pfn(pte) if guest.preset.pte_present_p(pte) else None


def test_exec_maps_pt_loads_page_for_page(real_image: Ext2Image) -> None:
    """exec dash: is every PT_LOAD a private file mapping [PAGESTART, PAGEALIGN) at its offset?"""
    _, guest, _ = _guests(real_image)
    mm = guest.new_process("dash")
    result = exec_image(guest, mm, "/usr/bin/dash")
    assert result.faults == 0
    main = result.main
    assert main.load_bias == ELF_ET_DYN_BASE
    for seg in main.segments:
        ph, vma = seg.phdr, seg.file_vma
        assert vma is not None and not vma.shared and vma.ino is not None
        assert vma.start == ELF_ET_DYN_BASE + (ph.p_vaddr & ~(PAGE_SIZE - 1))
        assert vma.end == ELF_ET_DYN_BASE + (ph.p_vaddr + ph.p_filesz + PAGE_SIZE - 1 &
                                             ~(PAGE_SIZE - 1))
        assert vma.pgoff == ph.p_offset >> PAGE_SHIFT
        assert str(vma.prot) == ph.prot
    # The interpreter and libc are mapped; the entry point is ld.so's.
    assert [o.role for o in result.objects] == ["main", "interp", "lib"]
    assert result.interp is not None and result.entry == result.interp.entry
    assert result.object("libc.so.6").path == "/lib/x86_64-linux-gnu/libc.so.6"
    assert result.stack.end == STACK_TOP and result.stack.pages == 33
    assert result.heap is not None and result.heap.start == ELF_ET_DYN_BASE + main.elf.span[1]


@pytest.mark.parametrize("mode", ["xip", "pagecache"])
def test_padzero_copies_and_bss_is_anonymous(real_image: Ext2Image, mode: str) -> None:
    """The last data page before .bss is written by padzero: is it always a private copy?"""
    _, xip, pc = _guests(real_image)
    guest = xip if mode == "xip" else pc
    mm = guest.new_process("dash")
    result = exec_image(guest, mm, "/usr/bin/dash", reloc_fraction=0.0)
    data = next(s for s in result.main.segments if s.phdr.p_flags & PF_W)
    assert data.padzero_vpn is not None and data.bss_vma is not None
    gpfn = _gpfn(guest, mm, data.padzero_vpn)
    assert gpfn is not None and guest.kind[gpfn] == FrameKind.COW
    assert data.bss_vma.anonymous and data.bss_vma.name == ".bss"
    # Text is mapped but nothing of it is faulted in until the program runs it.
    text = result.main.text_vpns
    assert all(_gpfn(guest, mm, vpn) is None for vpn in text)
    assert guest.access(mm, text[0] << PAGE_SHIFT, "x") & 0x3 == 0  # no SIGSEGV/SIGBUS
    frame = _gpfn(guest, mm, text[0])
    assert frame is not None
    assert (frame >= guest.dcss_base) == (mode == "xip")  # in place, or a page-cache copy


def test_relocations_are_identical_across_guests(real_image: Ext2Image) -> None:
    """Without ASLR, does the loader write the same content into the same pages in two guests?"""
    host, xip, pc = _guests(real_image)
    runs = [exec_image(g, g.new_process("dash"), "/usr/bin/dash") for g in (xip, pc)]
    assert runs[0].written == runs[1].written
    libc = runs[0].object("libc.so.6")
    assert libc.written, "libc's GOT and .data.rel.ro are relocated"
    final = dict(runs[0].written)  # padzero's page may be relocated afterwards: last wins
    for vpn, content in final.items():
        assert content >= CONTENT_RELOC_BASE
        frames = [_gpfn(g, r.mm, vpn) for g, r in zip((xip, pc), runs, strict=True)]
        assert all(f is not None for f in frames)
        contents = {int(host.content[g.backing[f]]) for g, f in zip((xip, pc), frames,
                                                                      strict=True)}
        assert contents == {content}
    assert reloc_content("/a", 1) == reloc_content("/a", 1) != reloc_content("/a", 2)


def test_missing_library_names_library_and_binary(real_image: Ext2Image) -> None:
    """A DT_NEEDED library absent from the image: the error names it and who needs it."""
    _, guest, _ = _guests(real_image)
    with pytest.raises(ElfError, match=r"/usr/bin/dash: DT_NEEDED library 'libc.so.6' not "
                                       r"found on the library path \['/nowhere'\]"):
        exec_image(guest, guest.new_process(), "/usr/bin/dash", lib_path=("/nowhere",))


def test_exec_of_a_non_elf_file(real_image: Ext2Image) -> None:
    """exec of a text file is refused with an error naming the file."""
    _, guest, _ = _guests(real_image)
    with pytest.raises(ElfError, match=r"^/etc/motd: not an ELF file"):
        exec_image(guest, guest.new_process(), "/etc/motd")
    with pytest.raises(ElfError, match=r"/no/such: cannot open /no/such in the image"):
        exec_image(guest, guest.new_process(), "/no/such")


def test_libraries_are_loaded_once() -> None:
    """libc is needed by the program and (as ld.so) by itself: each object is mapped once."""
    img = Ext2Image.open(build_image({
        "/bin/app": _tiny_elf32(ELFDATA2LSB, ("liba.so", "libb.so")),
        "/lib/liba.so": _lib32("libb.so"), "/lib/libb.so": _lib32("liba.so"),
        "/lib/ld.so.1": _lib32(),
    }))
    host = HostMemory()
    guest = Guest(0, host, 1024, img)
    result = exec_image(guest, guest.new_process(), "/bin/app", lib_path=("/lib",))
    assert [o.path for o in result.objects] == ["/bin/app", "/lib/ld.so.1", "/lib/liba.so",
                                               "/lib/libb.so"]
    bases = [o.load_bias for o in result.objects[1:]]
    assert bases == sorted(bases, reverse=True), "libraries go top-down below mmap_base"


def _lib32(*needed: str) -> bytes:
    """A shared object (ET_DYN) in ELF32 LSB, needing `needed`."""
    data = bytearray(_tiny_elf32(ELFDATA2LSB, needed))
    struct.pack_into("<H", data, 16, 3)  # e_type = ET_DYN
    # no PT_INTERP for a library: turn that program header into PT_NULL
    struct.pack_into("<I", data, 52, 0)
    return bytes(data)
