"""ld.so's library search on this machine: which files a program loads, found as glibc finds them.

Model of elf/dl-load.c:_dl_map_object for each DT_NEEDED name, breadth-first from the
program (elf/dl-deps.c), every object once::

    a name already loaded (a DT_NEEDED name or DT_SONAME of a loaded object)  → that object
    a name with a slash                         → that path
    1. DT_RPATH of the object, then of the object that loaded it, … up to the program
       (only if the object has no DT_RUNPATH)
    2. LD_LIBRARY_PATH (`library_path`; empty by default: a clean environment)
    3. DT_RUNPATH of the object itself
    4. /etc/ld.so.cache: the entries for this ABI (flags FLAG_ELF_LIBC6 | the machine's)
    5. the system directories (Debian's x86-64 glibc: ld.so --help lists them)
    (4 and 5 are skipped for an object with DF_1_NODEFLIB in DT_FLAGS_1)

In each directory a file counts if it is an ELF object of the program's class and machine
(open_verify skips others and searches on); a file already loaded under another name (the
same device and inode) is that object. $ORIGIN (the directory of the object: the
program's with symlinks resolved, as /proc/self/exe; a library's as found), $LIB and
$PLATFORM are expanded in DT_RPATH and DT_RUNPATH.

Not modelled: glibc-hwcaps and legacy hwcap subdirectories (x86-64-v3/, tls/), empty
path entries, LD_PRELOAD and /etc/ld.so.preload, dlopen, secure-mode (setuid) rules.

The cache file (glibc ≥ 2.32 writes only the new format)::

    0   "glibc-ld.so.cache" "1.1"      magic and version (20 bytes)
    20  nlibs, len_strings (u32)       flags (u8: endianness), 3 pad, extension_offset (u32),
                                       3 unused u32                       → 48-byte header
    48  nlibs × file_entry_new         flags (i32), key, value (u32: string offsets from the
                                       file's start), osversion (u32), hwcap (u64)
"""

from __future__ import annotations

import os
import posixpath
import struct
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Final

from xipmodel.elf import EM_386, EM_AARCH64, EM_X86_64, ElfError, ElfFile, search_path

__all__ = ["LD_SO_CACHE", "SYSTEM_DIRS", "LoadedObject", "Resolution", "map_program",
           "read_ld_so_cache", "search_dirs"]

LD_SO_CACHE: Final = "/etc/ld.so.cache"
SYSTEM_DIRS: Final = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
CACHEMAGIC_NEW: Final = b"glibc-ld.so.cache1.1"
CACHE_HEADER: Final = struct.Struct("<20sIIB3xI12x")
CACHE_ENTRY: Final = struct.Struct("<iIIIQ")
FLAG_ELF_LIBC6: Final = 0x0003
# _DL_CACHE_DEFAULT_ID: the cache flags of a library for each machine (sysdeps/*/dl-cache.h).
CACHE_ID: Final = {EM_X86_64: 0x0303, EM_AARCH64: 0x0A03, EM_386: FLAG_ELF_LIBC6}
DT_FLAGS_1: Final = 0x6FFFFFFB
DF_1_NODEFLIB: Final = 0x800
RTLD: Final = {EM_X86_64: "/lib64/ld-linux-x86-64.so.2",
               EM_AARCH64: "/lib/ld-linux-aarch64.so.1"}  # ld.so by the psABI
MAX_OBJECTS: Final = 4096  # a program loading more is refused (real ones load dozens)


class LdSoError(ElfError):
    """A library cannot be found, or a cache file is malformed (the name and who needed it)."""


def read_ld_so_cache(path: str = LD_SO_CACHE, machine: int = EM_X86_64) -> dict[str, str]:
    """Library name → path, from the ld.so.cache entries of `machine`'s ABI (first wins).

    A missing cache is an empty one (ld.so then searches the system directories); a
    malformed one raises LdSoError naming the field. Entries with hwcap bits (the
    glibc-hwcaps subdirectories) are left out, like those subdirectories.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise LdSoError(f"{path}: {exc.strerror or exc}") from exc
    if len(data) < CACHE_HEADER.size or not data.startswith(CACHEMAGIC_NEW):
        raise LdSoError(f"{path}: no {CACHEMAGIC_NEW.decode()!r} header: not a glibc ≥ 2.32 "
                        f"ld.so.cache")
    _, nlibs, _, _, _ = CACHE_HEADER.unpack_from(data)
    if CACHE_HEADER.size + nlibs * CACHE_ENTRY.size > len(data):
        raise LdSoError(f"{path}: nlibs={nlibs} entries do not fit its {len(data)} bytes")
    wanted = {FLAG_ELF_LIBC6, CACHE_ID.get(machine, FLAG_ELF_LIBC6)}
    out: dict[str, str] = {}
    for i in range(nlibs):
        flags, key, value, _, hwcap = CACHE_ENTRY.unpack_from(
            data, CACHE_HEADER.size + i * CACHE_ENTRY.size)
        if flags not in wanted or hwcap:
            continue
        name, target = _cstring(data, key, path, i), _cstring(data, value, path, i)
        out.setdefault(name, target)
    return out


def _cstring(data: bytes, offset: int, path: str, i: int) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise LdSoError(f"{path}: entry {i}: string offset {offset} outside the file")
    return data[offset:end].decode("utf-8", "surrogateescape")


@dataclass
class LoadedObject:
    """One object of the program: the path it was opened by, its ELF file, its loader."""

    path: str
    elf: ElfFile
    loader: LoadedObject | None = None
    names: set[str] = field(default_factory=set)  # the names it answers to

    @property
    def origin(self) -> str:
        """$ORIGIN: the directory of the object (the program's with symlinks resolved)."""
        if self.loader is None:
            return posixpath.dirname(os.path.realpath(self.path))
        return posixpath.dirname(self.path)


@dataclass
class Resolution:
    """What a program loads: its interpreter, and each DT_NEEDED name's file in order."""

    program: str
    interp: str | None
    libraries: list[tuple[str, str]]  # (DT_NEEDED name, path), breadth-first

    @property
    def paths(self) -> list[str]:
        """The program, the interpreter and the libraries, as opened."""
        return [self.program, *([self.interp] if self.interp else []),
                *(path for _, path in self.libraries)]


def search_dirs(obj: LoadedObject, library_path: tuple[str, ...] = ()) -> list[str]:
    """The directories searched for a DT_NEEDED name of `obj`, before the cache (1-3 above:
    elf.search_path over `obj` and its loaders)."""
    chain = []
    o: LoadedObject | None = obj
    while o is not None:
        chain.append((o.elf, o.origin))
        o = o.loader
    return search_path(chain, library_path)


def map_program(program: str, *, library_path: tuple[str, ...] = (),
                cache: dict[str, str] | None = None) -> Resolution:
    """The interpreter and libraries `program` (a path on this machine) loads, as ld.so.

    `cache`: ld.so.cache's name → path (default: read_ld_so_cache for the program's
    machine). A library found nowhere raises LdSoError naming it and who needed it.
    """
    main = LoadedObject(program, _open_elf(program))
    want = (main.elf.header.ei_class, main.elf.header.e_machine)
    if cache is None:
        cache = read_ld_so_cache(machine=main.elf.header.e_machine)
    loaded: list[LoadedObject] = [main]
    by_file: dict[tuple[int, int], LoadedObject] = {_file_id(program): main}
    interp = main.elf.interp
    # ld.so itself is always loaded: the PT_INTERP, or (a shared object run as
    # `ld.so LIB`, as ldd does) the system's.
    rtld_path = interp if interp is not None else RTLD.get(main.elf.header.e_machine)
    if rtld_path is not None and os.path.exists(rtld_path):
        rtld = LoadedObject(rtld_path, _open_elf(rtld_path), main)
        rtld.names |= {rtld_path, rtld.elf.soname or ""}
        loaded.append(rtld)
        by_file[_file_id(rtld_path)] = rtld
    libraries: list[tuple[str, str]] = []
    queue = [main]
    while queue:
        obj = queue.pop(0)
        for name in obj.elf.needed:
            if any(name in other.names for other in loaded):
                continue
            path = _find(name, obj, library_path, cache, want)
            found = by_file.get(_file_id(path))
            if found is not None:
                found.names.add(name)
                continue
            if len(loaded) >= MAX_OBJECTS:
                raise LdSoError(f"{program}: loads more than {MAX_OBJECTS} objects")
            lib = LoadedObject(path, _open_elf(path), obj, {name})
            if lib.elf.soname:
                lib.names.add(lib.elf.soname)
            loaded.append(lib)
            by_file[_file_id(path)] = lib
            libraries.append((name, path))
            queue.append(lib)
    return Resolution(program, interp, libraries)


def _find(name: str, obj: LoadedObject, library_path: tuple[str, ...],
          cache: dict[str, str], want: tuple[int, int]) -> str:
    """The path ld.so opens for DT_NEEDED `name` of `obj` (the search order drawn above)."""
    if "/" in name:
        if _usable(name, want):
            return name
        raise LdSoError(f"{obj.path}: DT_NEEDED {name!r}: no such ELF object")
    dirs = search_dirs(obj, library_path)
    for d in dirs:
        candidate = posixpath.join(d, name)
        if _usable(candidate, want):
            return candidate
    nodeflib = (obj.elf.dt(DT_FLAGS_1) or 0) & DF_1_NODEFLIB
    if not nodeflib:
        cached = cache.get(name)
        if cached is not None and _usable(cached, want):
            return cached
        for d in SYSTEM_DIRS:
            candidate = posixpath.join(d, name)
            if _usable(candidate, want):
                return candidate
    raise LdSoError(f"{obj.path}: DT_NEEDED {name!r} not found in "
                    f"{[*dirs, *(() if nodeflib else ('ld.so.cache', *SYSTEM_DIRS))]}")


def _usable(path: str, want: tuple[int, int]) -> bool:
    """A regular file that is an ELF object of the program's class and machine."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return False
    order = "<" if head[5] == 1 else ">"
    return (head[4], struct.unpack_from(order + "H", head, 18)[0]) == want


def _open_elf(path: str) -> ElfFile:
    """ElfFile.from_path, once per version of a file (libc is read for every program)."""
    st = os.stat(path)
    return _cached_elf(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=256)
def _cached_elf(path: str, dev: int, ino: int, size: int, mtime_ns: int) -> ElfFile:
    return ElfFile.from_path(path)


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino
