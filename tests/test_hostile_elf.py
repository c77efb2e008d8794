"""Hostile ELF files: exec_image answers ElfError naming the program header and the field,
in time that does not depend on p_memsz.

Each file is exec'd from an image in a child process under a wall-clock and an
address-space limit (tests/_hostile.py). Before issue 10 a pair of overlapping PT_LOADs
with a 2**36-byte p_memsz took half a minute (munmap walked every page of the range), and
a segment over the stack or beyond the address space surfaced as a ParameterError of the
page-table layer.
"""

from __future__ import annotations

import os
from pathlib import Path

from _hostile import Outcome, assert_raises, bounded

from xipmodel.elf import (
    ELFCLASS64,
    ELFDATA2LSB,
    ET_DYN,
    ET_EXEC,
    PF_R,
    PF_W,
    PF_X,
    PT_INTERP,
    PT_LOAD,
    STACK_TOP,
    ElfError,
    ElfFile,
    ElfHeader,
    ProgramHeader,
    exec_image,
)
from xipmodel.ext2 import Ext2Image, build_image
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.guest import Guest


def _elf(phdrs: list[ProgramHeader], e_type: int = ET_EXEC, size: int = 0x2000) -> bytes:
    """An ELF64 LSB file of `size` bytes with these program headers."""
    hdr = ElfHeader(ELFCLASS64, ELFDATA2LSB, e_type, 62, 1, 0x401000, 64, 0, 0, 64, 56,
                    len(phdrs), 64, 0, 0)
    data = bytearray(size)
    raw = hdr.pack() + b"".join(p.pack(ELFCLASS64, ELFDATA2LSB) for p in phdrs)
    data[:len(raw)] = raw
    return bytes(data)


def _load(vaddr: int, memsz: int, flags: int = PF_R | PF_W, offset: int = 0x1000,
          filesz: int = 0x100) -> ProgramHeader:
    return ProgramHeader(PT_LOAD, offset, vaddr, vaddr, filesz, memsz, flags, 0x1000)


TEXT = _load(0x400000, 0x1000, PF_R | PF_X, offset=0)


def _exec(tmp_path: Path, program: bytes, **files: bytes) -> Outcome:
    """exec /bin/x of an image holding `program` (and `files`), in a limited child."""
    tree = {"/bin/x": program, **{f"/lib/{k}": v for k, v in files.items()}}
    path = tmp_path / "elf.img"
    path.write_bytes(build_image(tree))
    return bounded(
        "exec_image(guest, guest.new_process('x'), '/bin/x', lib_path=('/lib',)).entry",
        "from xipmodel.elf import exec_image\n"
        "from xipmodel.ext2 import Ext2Image\n"
        "from xipmodel.mm.frames import HostMemory\n"
        "from xipmodel.mm.guest import Guest\n"
        f"guest = Guest(0, HostMemory(), 1024, Ext2Image.open({str(path)!r}))",
        seconds=15)


def test_overlapping_loads_with_a_huge_memsz_are_quick(tmp_path: Path) -> None:
    """Three PT_LOADs, two .bss of 2**36 bytes overlapping: each MAP_FIXED unmaps the
    previous one's range, now by its present pages only (there are none), in milliseconds."""
    program = _elf([_load(0x400000, 1 << 36), _load(0x401000, 0x1000, PF_R | PF_X),
                    _load(0x402000, 1 << 36)])
    outcome = _exec(tmp_path, program)
    assert outcome.returned == str(0x401000), str(outcome)


def test_munmap_work_does_not_depend_on_the_length() -> None:
    """munmap of 2**36 bytes holding two present pages walks those pages, not 2**24 PTEs
    (page by page it took tens of seconds): it ends well inside the child's limit."""
    outcome = bounded(
        "(guest.munmap(mm, 0x10000000, 1 << 36), mm.vmas, int(mm.pt.mapped_vpns().size))",
        "from xipmodel.ext2 import Ext2Image, build_image\n"
        "from xipmodel.mm.frames import HostMemory\n"
        "from xipmodel.mm.guest import Guest\n"
        "guest = Guest(0, HostMemory(), 256, Ext2Image.open(build_image({'/f': b'x'})))\n"
        "mm = guest.new_process('p')\n"
        "guest.mmap(mm, 0x10000000, 1 << 36, 'rw-')\n"
        "for page in (0, 8):\n"
        "    guest.access(mm, 0x10000000 + page * 4096, 'w', None)",
        seconds=15)
    assert outcome.returned == "(None, [], 0)", str(outcome)


def test_segment_over_the_stack(tmp_path: Path) -> None:
    """A PT_LOAD just below STACK_TOP, where [stack] goes: ElfError naming the header."""
    program = _elf([TEXT, _load(STACK_TOP - 0x10000, 0x1000)])
    assert_raises(_exec(tmp_path, program), ElfError, "program header 1 (LOAD)",
                  f"p_vaddr={STACK_TOP - 0x10000:#x}", "below the stack")


def test_segment_beyond_the_address_space(tmp_path: Path) -> None:
    """A PT_LOAD at 2**60: beyond the 47-bit user space (was the page table's ParameterError)."""
    program = _elf([TEXT, _load(1 << 60, 0x1000)])
    assert_raises(_exec(tmp_path, program), ElfError, "program header 1 (LOAD)",
                  f"p_vaddr={1 << 60:#x}")


def test_memsz_reaching_into_the_stack(tmp_path: Path) -> None:
    """A .bss of 2**47 bytes from 0x402000 runs into the stack: named by p_memsz."""
    program = _elf([TEXT, _load(0x402000, 1 << 47)])
    assert_raises(_exec(tmp_path, program), ElfError, "program header 1 (LOAD)",
                  f"p_memsz={1 << 47:#x}")


def test_library_too_large_to_place(tmp_path: Path) -> None:
    """The interpreter spans 2**47 bytes: below mmap_base it would start below 0."""
    interp = b"/lib/ld.so\0"
    program = _elf([ProgramHeader(PT_INTERP, 0x1800, 0, 0, len(interp), len(interp), PF_R, 1),
                    TEXT])
    program = program[:0x1800] + interp + program[0x1800 + len(interp):]
    huge = _elf([_load(0, 1 << 47, PF_R | PF_X, offset=0)], e_type=ET_DYN)
    assert_raises(_exec(tmp_path, program, **{"ld.so": huge}), ElfError, "/lib/ld.so",
                  "program header 0 (LOAD)", f"p_memsz={1 << 47:#x}")


def test_heap_would_overlap_the_stack(tmp_path: Path) -> None:
    """The program ends 16 KiB below the stack: its 33-page [heap] has no room."""
    stack_start = STACK_TOP - (33 << 12)
    program = _elf([TEXT, _load(stack_start - 0x4000, 0x1000)])
    assert_raises(_exec(tmp_path, program), ElfError, "[heap]", "the stack")


def test_interp_path_longer_than_path_max(tmp_path: Path) -> None:
    """PT_INTERP of 8 KiB: binfmt_elf refuses more than PATH_MAX, before reading it."""
    program = _elf([ProgramHeader(PT_INTERP, 0, 0, 0, 0x2000, 0x2000, PF_R, 1), TEXT])
    assert_raises(_exec(tmp_path, program), ElfError, "PT_INTERP", "p_filesz=0x2000",
                  "4096")


def test_from_path_refuses_fifo_and_devices(tmp_path: Path) -> None:
    """ElfFile.from_path of a FIFO (would block) or /dev/zero (never ends): ElfError."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero"):
        outcome = bounded(f"ElfFile.from_path({path!r})", "from xipmodel.elf import ElfFile")
        assert_raises(outcome, ElfError, path, "not a regular file")


def test_good_files_still_exec(tmp_path: Path) -> None:
    """The control: a static program with text and .bss runs as before."""
    program = _elf([TEXT, _load(0x402000, 0x3000)])
    img = Ext2Image.open(build_image({"/bin/x": program}))
    guest = Guest(0, HostMemory(), 1024, img)
    result = exec_image(guest, guest.new_process("x"), "/bin/x")
    assert result.faults == 0 and result.entry == 0x401000
    assert [str(v.prot) for v in result.main.vmas] == ["r-x", "rw-", "rw-"]
    assert ElfFile.from_bytes(program).span == (0x400000, 0x405000)
