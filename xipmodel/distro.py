"""The embedded default distribution: a small Debian userland as a frozen ext2 image.

Guests need binaries to exec. Shipping real ones would tie the model to one
machine (and to e2fsprogs to build images), so the image is *generated*: every
file is a valid ELF object whose header, program headers, PT_INTERP string and
PT_DYNAMIC (DT_NEEDED, DT_SONAME, DT_STRTAB, DT_STRSZ, DT_RELASZ) are those of a
real Debian 12 (bookworm, amd64) binary, and whose other bytes are pseudo-random
(seeded from the path), so files differ and compress badly, like code. Sizes are
exact, so block counts, page counts and segment boundaries are those of the real files.

The facts are data, not code: they live in the package data file
xipmodel/data/distro/debian12.toml, read once at import by `load_table` into
`DISTRO` (one `ElfSpec` per file, read from a bookworm machine with
`xipmodel.elf.ElfFile`; each names the Debian package and version it came from),
`SYMLINKS` and `PROGRAMS`. `load_table` checks the file as it reads it: every
field present, no unknown field, each of its type and in range (integers in
[0, 2**64), absolute normalized paths, e_type and p_type by their readelf names,
program headers of seven fields inside the file) and entries unique; anything
else raises `DataFileError` naming the file, the entry, the field and the value.

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
$XDG_CACHE_HOME/xipmodel/ (else ~/.cache/xipmodel/), keyed by a hash of the loaded
table and the generator; an unwritable cache directory just means building in memory.

`PROGRAMS` describes how each program ran on that machine: resident text and
dirtied file pages per object, heap, stack and other anonymous pages — facts for
the workload model, not a model. Not included: gcc's cc1 (33 MB: too big for a
default image), locale archives and gconv caches the programs also map, nginx's
dynamic modules and configuration files.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import posixpath
import threading
import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Final, NamedTuple

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
    ET_NAMES,
    EV_CURRENT,
    PF_R,
    PF_W,
    PF_X,
    PT_DYNAMIC,
    PT_INTERP,
    PT_LOAD,
    PT_NAMES,
    ElfError,
    ElfHeader,
    ProgramHeader,
)
from xipmodel.errors import DataFileError
from xipmodel.ext2.builder import Entry, File, Symlink, build_image, follow_links
from xipmodel.ext2.reader import Ext2Image

__all__ = [
    "DISTRO",
    "LIB_DIR",
    "PROGRAMS",
    "SYMLINKS",
    "DistroTable",
    "ElfSpec",
    "Program",
    "default_image",
    "default_image_bytes",
    "distro_tree",
    "load_table",
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


# --- the data file -------------------------------------------------------------

class DistroTable(NamedTuple):
    """The facts of one distribution data file: its ELF files, symlinks and program runs."""

    elf: tuple[ElfSpec, ...]
    symlinks: dict[str, str]
    programs: dict[str, Program]


_TOP_FIELDS: Final = ("elf", "symlinks", "program")
_ELF_FIELDS: Final = ("path", "package", "e_type", "e_entry", "size", "interp", "soname",
                      "needed", "dt_strtab", "reloc_bytes", "phdrs")
_PHDR_FIELDS: Final = ("p_type", "p_offset", "p_vaddr", "p_filesz", "p_memsz", "p_flags",
                       "p_align")
_PROGRAM_FIELDS: Final = ("name", "path", "run", "text_resident", "file_dirty", "heap_pages",
                          "stack_pages", "anon_pages")
_E_TYPES: Final = {name: value for value, name in ET_NAMES.items()}
_P_TYPES: Final = {name: value for value, name in PT_NAMES.items()}
_P_FLAGS: Final = {"R" * bool(f & PF_R) + "W" * bool(f & PF_W) + "X" * bool(f & PF_X): f
                   for f in range(8)}  # readelf's order: "", "R", "RX", "RW", ...


def _bad(where: str, field: str, value: object, why: str) -> DataFileError:
    """The error for `field` = `value` of the entry `where` ("FILE: elf[3] (/usr/bin/ls)")."""
    return DataFileError(f"{where}: {field}={value!r}: {why}")


def _entry(where: str, raw: object, key: str) -> str:
    """`where` ("FILE: elf[3]") with the entry's `key` field added if it is a string."""
    label = raw.get(key) if isinstance(raw, dict) else None
    return f"{where} ({label})" if isinstance(label, str) else where


def _table(where: str, field: str, value: object, fields: tuple[str, ...],
           optional: tuple[str, ...] = ()) -> dict[str, object]:
    """`value` as a TOML table holding every one of `fields` (but `optional`) and no other."""
    if not isinstance(value, dict):
        raise _bad(where, field, value, f"must be a table, not {type(value).__name__}")
    for key in value:
        if key not in fields:
            raise _bad(where, key, value[key], f"unknown field (fields: {', '.join(fields)})")
    for key in fields:
        if key not in value and key not in optional:
            raise DataFileError(f"{where}: {key} is missing")
    return value


def _array(where: str, field: str, value: object, length: int | None = None) -> list[object]:
    """`value` as a TOML array (of `length` items if given)."""
    if not isinstance(value, list):
        raise _bad(where, field, value, f"must be an array, not {type(value).__name__}")
    if length is not None and len(value) != length:
        raise _bad(where, field, value, f"must have {length} items, not {len(value)}")
    return value


def _count(where: str, field: str, value: object) -> int:
    """`value` as an integer in [0, 2**64) (a size, offset, address or page count)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise _bad(where, field, value, "must be an integer in [0, 2**64)")
    return value


def _text(where: str, field: str, value: object) -> str:
    """`value` as a non-empty string."""
    if not isinstance(value, str) or not value:
        raise _bad(where, field, value, "must be a non-empty string")
    return value


def _path(where: str, field: str, value: object) -> str:
    """`value` as an absolute, normalized path ("/usr/bin/dash", not "usr/bin" or "/a//b")."""
    text = _text(where, field, value)
    if not text.startswith("/") or text == "/" or posixpath.normpath(text) != text:
        raise _bad(where, field, value, "must be an absolute, normalized path of a file")
    return text


def _file_name(where: str, field: str, value: object) -> str:
    """`value` as a file name (a SONAME or DT_NEEDED entry): no slash."""
    text = _text(where, field, value)
    if "/" in text:
        raise _bad(where, field, value, "must be a file name, without '/'")
    return text


def _named(where: str, field: str, value: object, names: dict[str, int]) -> int:
    """The number of the name `value` in `names` (an e_type, p_type or p_flags)."""
    if not isinstance(value, str) or value not in names:
        raise _bad(where, field, value, f"must be one of {', '.join(map(repr, names))}")
    return names[value]


def _elf(where: str, raw: dict[str, object]) -> ElfSpec:
    """One [[elf]] table as an ElfSpec."""
    path = _path(where, "path", raw["path"])
    package = _text(where, "package", raw["package"])
    if len(package.split()) != 2:
        raise _bad(where, "package", package, "must be 'PACKAGE VERSION'")
    size = _count(where, "size", raw["size"])
    interp = _path(where, "interp", raw["interp"]) if "interp" in raw else None
    soname = _file_name(where, "soname", raw["soname"]) if "soname" in raw else None
    needed = tuple(_file_name(where, f"needed[{i}]", name)
                   for i, name in enumerate(_array(where, "needed", raw["needed"])))
    phdrs: list[tuple[int, int, int, int, int, int, int]] = []
    for i, row in enumerate(_array(where, "phdrs", raw["phdrs"])):
        cells = _array(where, f"phdrs[{i}]", row, len(_PHDR_FIELDS))
        field = [f"phdrs[{i}].{name}" for name in _PHDR_FIELDS]
        p_type = _named(where, field[0], cells[0], _P_TYPES)
        off, va, fs, ms = (_count(where, field[j], cells[j]) for j in range(1, 5))
        flags = _named(where, field[5], cells[5], _P_FLAGS)
        align = _count(where, field[6], cells[6])
        if fs > ms:
            raise _bad(where, field[3], fs, f"exceeds p_memsz={ms:#x}")
        if off + fs > size:
            raise _bad(where, field[1], off, f"with p_filesz={fs:#x} runs past size={size}")
        phdrs.append((p_type, off, va, fs, ms, flags, align))
    if (interp is not None) != any(ph[0] == PT_INTERP for ph in phdrs):
        raise _bad(where, "interp", interp, "must be given exactly when phdrs has an INTERP")
    return ElfSpec(path=path, e_type=_named(where, "e_type", raw["e_type"], _E_TYPES),
                   e_entry=_count(where, "e_entry", raw["e_entry"]), size=size,
                   interp=interp, soname=soname, needed=needed,
                   dt_strtab=_count(where, "dt_strtab", raw["dt_strtab"]),
                   reloc_bytes=_count(where, "reloc_bytes", raw["reloc_bytes"]),
                   package=package, phdrs=tuple(phdrs))


def _program(where: str, raw: dict[str, object]) -> Program:
    """One [[program]] table as a Program."""
    text_resident: list[tuple[str, int, int]] = []
    for i, row in enumerate(_array(where, "text_resident", raw["text_resident"])):
        cells = _array(where, f"text_resident[{i}]", row, 3)
        obj = _path(where, f"text_resident[{i}].object", cells[0])
        resident = _count(where, f"text_resident[{i}].resident", cells[1])
        mapped = _count(where, f"text_resident[{i}].mapped", cells[2])
        if resident > mapped:
            raise _bad(where, f"text_resident[{i}].resident", resident, f"exceeds {mapped=}")
        text_resident.append((obj, resident, mapped))
    file_dirty: list[tuple[str, int]] = []
    for i, row in enumerate(_array(where, "file_dirty", raw["file_dirty"])):
        cells = _array(where, f"file_dirty[{i}]", row, 2)
        file_dirty.append((_path(where, f"file_dirty[{i}].object", cells[0]),
                           _count(where, f"file_dirty[{i}].pages", cells[1])))
    return Program(_text(where, "name", raw["name"]), _path(where, "path", raw["path"]),
                   _text(where, "run", raw["run"]),
                   text_resident=tuple(text_resident), file_dirty=tuple(file_dirty),
                   heap_pages=_count(where, "heap_pages", raw["heap_pages"]),
                   stack_pages=_count(where, "stack_pages", raw["stack_pages"]),
                   anon_pages=_count(where, "anon_pages", raw["anon_pages"]))


def load_table(source: bytes | str | os.PathLike[str], name: str | None = None) -> DistroTable:
    """The distribution facts of a TOML data file, checked field by field as they are read.

    `source` is the file's bytes or its path; `name` (default: the path, or "<bytes>")
    names the file in errors. Bad TOML, a missing or unknown field, a value of the wrong
    type or out of range, or a repeated path or program raises DataFileError naming the
    file, the entry, the field and the value. A file that cannot be read raises OSError.
    """
    if isinstance(source, bytes):
        data, name = source, name or "<bytes>"
    else:
        data, name = Path(source).read_bytes(), name or os.fspath(source)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DataFileError(f"{name}: not valid TOML: {exc}") from exc
    top = _table(name, "document", doc, _TOP_FIELDS)
    elf: list[ElfSpec] = []
    for i, raw in enumerate(_array(name, "elf", top["elf"])):
        where = _entry(f"{name}: elf[{i}]", raw, "path")
        entry = _elf(where, _table(where, "entry", raw, _ELF_FIELDS, ("interp", "soname")))
        if any(other.path == entry.path for other in elf):
            raise _bad(where, "path", entry.path, "appears twice")
        elf.append(entry)
    links = top["symlinks"]
    if not isinstance(links, dict):
        raise _bad(name, "symlinks", links, f"must be a table, not {type(links).__name__}")
    where = f"{name}: symlinks"
    symlinks = {_path(where, "link", link): _text(where, link, target)
                for link, target in links.items()}
    programs: dict[str, Program] = {}
    for i, raw in enumerate(_array(name, "program", top["program"])):
        where = _entry(f"{name}: program[{i}]", raw, "name")
        prog = _program(where, _table(where, "entry", raw, _PROGRAM_FIELDS))
        if prog.name in programs:
            raise _bad(where, "name", prog.name, "appears twice")
        programs[prog.name] = prog
    return DistroTable(tuple(elf), symlinks, programs)


_DATA_FILE: Final = ("data", "distro", "debian12.toml")  # in the package, shipped in the wheel
_TABLE: Final = load_table(importlib.resources.files("xipmodel").joinpath(*_DATA_FILE).read_bytes(),
                           "/".join(("xipmodel", *_DATA_FILE)))
DISTRO: Final[tuple[ElfSpec, ...]] = _TABLE.elf
SYMLINKS: Final[dict[str, str]] = _TABLE.symlinks  # usrmerge and SONAME links, as Debian has them
PROGRAMS: Final[dict[str, Program]] = _TABLE.programs


# --- the generator -------------------------------------------------------------

def resolve(path: str) -> str:
    """`path` with every symlink of SYMLINKS followed, component by component (as namei)."""
    resolved = follow_links(path, SYMLINKS.get)
    if resolved is None:
        raise KeyError(f"{path}: too many levels of symbolic links")
    return resolved


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
