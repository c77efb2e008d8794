"""The fuzz targets: the ext2 reader, the ELF parser with exec, the trace loader.

Each target is `one_input(data: bytes) -> None`: it feeds `data` to an entry point and
lets through only the exceptions that entry point promises for bad input (`ALLOWED`);
anything else escaping is a finding. `seeds()` gives the seed corpus, made
deterministically from code (small valid inputs plus the hostile shapes of issue 10), so
the corpus in the repository is this file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator

import numpy as np

from xipmodel.elf import (
    ELFCLASS32,
    ELFCLASS64,
    ELFDATA2LSB,
    ELFDATA2MSB,
    ET_DYN,
    ET_EXEC,
    PF_R,
    PF_W,
    PF_X,
    PT_DYNAMIC,
    PT_GNU_RELRO,
    PT_INTERP,
    PT_LOAD,
    ElfError,
    ElfFile,
    ElfHeader,
    ProgramHeader,
    exec_image,
)
from xipmodel.errors import Ext2Error, TraceFileError
from xipmodel.ext2 import Ext2Image, File, Symlink, build_image
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.workloads.trace import PageTrace

# --- ext2 ----------------------------------------------------------------------------------

_EXT2_PATHS = ("/", "/a", "/d", "/d/b", "/l", "/s", "/big", "/nope", "/d/../a", "/l/x")


def ext2_one_input(data: bytes) -> None:
    """Open `data` as an image and use every read-only operation on what it holds."""
    try:
        img = Ext2Image.open(data, max_read=1 << 20)
    except Ext2Error:
        return
    with img:
        _ = repr(img), img.volume_name
        for g in range(min(img.groups_count, 4)):
            _try(lambda g=g: img.group_desc(g))
        names: list[str] = []
        _try(lambda: names.extend(
            (d.rstrip("/") + "/" + n) for d, ds, fs in img.walk("/") for n in ds + fs))
        for path in (*_EXT2_PATHS, *names[:64]):
            _try(lambda p=path: img.lstat(p))
            _try(lambda p=path: img.stat(p))
            _try(lambda p=path: img.listdir(p))
            _try(lambda p=path: img.readlink(p))
            _try(lambda p=path: img.read(p, 0, 1 << 16))
            _try(lambda p=path: img.block_map(p))
            _try(lambda p=path: img.metadata_blocks(p))
            _try(lambda p=path: img.exists(p) and img.isdir(p))
        for ino in range(1, min(img.superblock.s_inodes_count, 32) + 1):
            _try(lambda i=ino: img.bmap(i, 0) + img.bmap(i, 13) + img.file_size(i))


def _try(call: Callable[[], object]) -> None:
    """`call()`, where an Ext2Error is a fine answer to a bad image."""
    with contextlib.suppress(Ext2Error):
        call()


def ext2_seeds() -> Iterator[bytes]:
    """Small images of 1 KiB and 4 KiB blocks: files, a hole, IND blocks, symlinks."""
    tree: dict[str, bytes | File | Symlink] = {
        "/a": b"hello\n" * 50, "/d/b": b"b", "/l": Symlink("a"), "/s": Symlink("d/" + "x" * 80),
        "/big": File(b"z", size=20 * 1024)}
    yield build_image(tree, block_size=1024, inodes_count=32, timestamp=0)
    yield build_image(tree, block_size=1024, inodes_count=32, timestamp=0, rev_level=0)
    yield build_image({"/d/b": b"b", "/l": Symlink("d/../d/b")}, block_size=4096, timestamp=0)


# --- ELF and exec ---------------------------------------------------------------------------

def elf_one_input(data: bytes) -> None:
    """Parse `data` as ELF, read everything lazily parsed, then exec it in a small guest."""
    try:
        elf = ElfFile.from_bytes(data, "fuzz")
        _ = elf.interp, elf.dynamic, elf.needed, elf.soname, elf.reloc_bytes, repr(elf)
        if not elf.loads:
            return
        _ = elf.span, elf.max_align
    except ElfError:
        return
    img = Ext2Image.open(build_image({"/bin/x": data, "/lib/ld.so.1": _LD,
                                      "/lib/libc.so.1": _LD}, block_size=1024, timestamp=0))
    guest = Guest(0, HostMemory(capacity_frames=1 << 14), 1024, img)
    mm = guest.new_process("x")
    assert mm is not None
    with contextlib.suppress(ElfError):
        exec_image(guest, mm, "/bin/x", lib_path=("/lib",))


def _elf(ei_class: int, ei_data: int, e_type: int, phdrs: list[ProgramHeader],
         tail: bytes = b"") -> bytes:
    """An ELF file: header, program headers at e_phoff, then `tail`."""
    eh = 64 if ei_class == ELFCLASS64 else 52
    ph = 56 if ei_class == ELFCLASS64 else 32
    hdr = ElfHeader(ei_class, ei_data, e_type, 62, 1, 0x1000, eh, 0, 0, eh, ph, len(phdrs),
                    64, 0, 0)
    return hdr.pack() + b"".join(p.pack(ei_class, ei_data) for p in phdrs) + tail


def _ld() -> bytes:
    """A tiny shared object: one PT_LOAD."""
    return _elf(ELFCLASS64, ELFDATA2LSB, ET_DYN,
                [ProgramHeader(PT_LOAD, 0, 0, 0, 0x100, 0x2000, PF_R | PF_X, 0x1000)],
                bytes(0x100))


_LD = _ld()


def _dynamic_exec(ei_class: int, ei_data: int) -> bytes:
    """An ET_EXEC with PT_INTERP, PT_LOAD (rwx, .bss), PT_DYNAMIC (DT_NEEDED), RELRO."""
    e = "<" if ei_data == ELFDATA2LSB else ">"
    eh, ph = (64, 56) if ei_class == ELFCLASS64 else (52, 32)
    n = 5
    interp_off = eh + n * ph
    interp = b"/lib/ld.so.1\0"
    str_off = interp_off + len(interp)
    strtab = b"\0libc.so.1\0"
    dyn_off = (str_off + len(strtab) + 7) & ~7
    fmt = e + ("qQ" if ei_class == ELFCLASS64 else "iI")
    base = 0x400000
    dyn = b"".join(struct.pack(fmt, t, v) for t, v in
                   ((1, 1), (5, base + str_off), (10, len(strtab)), (7, base), (8, 24), (0, 0)))
    size = dyn_off + len(dyn)
    phdrs = [
        ProgramHeader(PT_INTERP, interp_off, base + interp_off, 0, len(interp), len(interp),
                      PF_R, 1),
        ProgramHeader(PT_LOAD, 0, base, base, size, size + 0x3000, PF_R | PF_W | PF_X, 0x1000),
        ProgramHeader(PT_DYNAMIC, dyn_off, base + dyn_off, 0, len(dyn), len(dyn), PF_R, 8),
        ProgramHeader(PT_GNU_RELRO, 0, base, 0, 0x800, 0x800, PF_R, 1),
        ProgramHeader(PT_LOAD, 0, base + 0x10000, 0, 0x40, 0x1 << 20, PF_R | PF_W, 0x1000),
    ]
    data = bytearray(_elf(ei_class, ei_data, ET_EXEC, phdrs))
    data += bytes(size - len(data))
    data[interp_off:interp_off + len(interp)] = interp
    data[str_off:str_off + len(strtab)] = strtab
    data[dyn_off:dyn_off + len(dyn)] = dyn
    return bytes(data)


def elf_seeds() -> Iterator[bytes]:
    """Static and dynamic executables, ELF32/ELF64, both byte orders, and issue 10's
    overlapping PT_LOADs with a 2**36-byte p_memsz."""
    for ei_class in (ELFCLASS32, ELFCLASS64):
        for ei_data in (ELFDATA2LSB, ELFDATA2MSB):
            yield _dynamic_exec(ei_class, ei_data)
    yield _LD
    big = [ProgramHeader(PT_LOAD, 0, 0x400000, 0, 0x100, 1 << 36, PF_R | PF_W, 0x1000),
           ProgramHeader(PT_LOAD, 0, 0x402000, 0, 0x100, 1 << 36, PF_R | PF_W, 0x1000)]
    yield _elf(ELFCLASS64, ELFDATA2LSB, ET_EXEC, big, bytes(0x100))


# --- page traces ------------------------------------------------------------------------------

_TRACE_FILE = os.path.join(tempfile.gettempdir(), f"xipmodel-fuzz-trace-{os.getpid()}.npz")


def trace_one_input(data: bytes) -> None:
    """Load `data` as a trace file, then use what a replay uses."""
    with open(_TRACE_FILE, "wb") as f:
        f.write(data)
    try:
        trace = PageTrace.load(_TRACE_FILE)
    except TraceFileError:
        return
    _ = len(trace), trace.files(), len(trace.first_touches())
    for i, _access in enumerate(trace.accesses()):
        if i >= 1000:
            break


def trace_seeds() -> Iterator[bytes]:
    """Traces as save() writes them (compressed), and stored (uncompressed) variants."""
    from xipmodel.workloads.trace import MapSpec

    rng = np.random.default_rng(10)
    for n in (0, 5, 300):
        trace = PageTrace("seed", [MapSpec(0x400000, 0x4000, "r-x", "/bin/x"),
                                   MapSpec(0x7FF000, 0x1000, "rw-", None, 0, "[stack]")],
                          rng.integers(0x400, 0x404, n).astype(np.uint64),
                          rng.integers(0, 3, n).astype(np.uint8), {"file_sizes": {"/bin/x": 1}})
        buf = io.BytesIO()
        np.savez_compressed(buf, vpns=trace.vpns, kinds=trace.kinds, contents=trace.contents,
                            header=np.frombuffer(json.dumps({
                                "name": trace.name, "maps": [m.__dict__ for m in trace.maps],
                                "meta": trace.meta}).encode(), np.uint8))
        yield buf.getvalue()
        stored = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, \
                zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                dst.writestr(info.filename, src.read(info))
        yield stored.getvalue()


TARGETS: dict[str, tuple[Callable[[bytes], None], Callable[[], Iterator[bytes]]]] = {
    "ext2": (ext2_one_input, ext2_seeds),
    "elf": (elf_one_input, elf_seeds),
    "trace": (trace_one_input, trace_seeds),
}
