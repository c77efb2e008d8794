"""The embedded default distribution: deterministic, faithful to its table, runnable.

Each test asks one question of the generated image: is it the same every time,
do its files carry the real Debian headers the table records, does every library
resolve, does e2fsck accept it, and does every program exec in both modes?
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from xipmodel import distro
from xipmodel.distro import (
    DISTRO,
    LIB_DIR,
    PROGRAMS,
    SYMLINKS,
    default_image,
    default_image_bytes,
    needed_closure,
    resolve,
    spec,
)
from xipmodel.elf import DEFAULT_LIB_PATH, PF_X, ElfFile, exec_image
from xipmodel.ext2 import Ext2Image
from xipmodel.mm.frames import HostMemory
from xipmodel.mm.guest import Guest
from xipmodel.mm.segment import SharedSegment
from xipmodel.params import PAGE_SHIFT, PAGE_SIZE


@pytest.fixture(scope="module")
def image() -> Ext2Image:
    return default_image()


def test_building_twice_gives_the_same_bytes() -> None:
    """Is the image a pure function of the table (no clock, no unseeded randomness)?"""
    first = distro._build()
    assert distro._build() == first == default_image_bytes()
    assert default_image() is default_image(), "one shared instance per process"


def test_every_file_has_the_table_headers(image: Ext2Image) -> None:
    """Does every generated ELF parse, with the real program headers, size and names?"""
    for entry in DISTRO:
        elf = ElfFile.from_image(image, entry.path)
        assert elf.size == entry.size == image.stat(entry.path).st_size
        assert elf.header.e_type == entry.e_type and elf.header.e_entry == entry.e_entry
        assert elf.phdrs == entry.program_headers
        assert elf.interp == entry.interp
        assert elf.needed == entry.needed and elf.soname == entry.soname
        assert elf.reloc_bytes == entry.reloc_bytes
        assert entry.package.split()[0], "each entry names its Debian package"


def test_files_differ_and_look_like_code(image: Ext2Image) -> None:
    """Two files never share a page of filler: the page cache and KSM see distinct content."""
    libc = image.read(f"{LIB_DIR}/libc.so.6", 0x100000, PAGE_SIZE)
    libm = image.read(f"{LIB_DIR}/libm.so.6", 0x10000, PAGE_SIZE)
    assert libc != libm and len(set(libc)) > 200


def test_every_needed_library_resolves(image: Ext2Image) -> None:
    """Is every DT_NEEDED on the loader's path, and every PT_INTERP present?"""
    for entry in DISTRO:
        for name in entry.needed:
            assert any(image.exists(f"{d}/{name}") for d in DEFAULT_LIB_PATH), \
                f"{entry.path} needs {name}"
        if entry.interp:
            assert ElfFile.from_image(image, entry.interp).soname == "ld-linux-x86-64.so.2"


def test_layout_follows_debian_usrmerge(image: Ext2Image) -> None:
    """Are the symlinks where Debian has them, and do the model's lookups agree with ours?"""
    for name, target in SYMLINKS.items():
        assert image.readlink(name) == target
    assert image.lookup("/lib64/ld-linux-x86-64.so.2") == \
        image.lookup(f"{LIB_DIR}/ld-linux-x86-64.so.2")
    assert image.lookup("/bin/sh") == image.lookup("/usr/bin/dash")
    assert resolve("/lib/x86_64-linux-gnu/libz.so.1") == f"{LIB_DIR}/libz.so.1.2.13"
    assert spec("/usr/bin/python3").path == "/usr/bin/python3.11"


@pytest.mark.oracle
def test_e2fsck_accepts_the_image(tmp_path: Path, require_tool: Callable[[str], str]) -> None:
    """Does e2fsprogs agree the generated image is a clean ext2 file system?"""
    e2fsck = require_tool("e2fsck")
    path = tmp_path / "distro.img"
    path.write_bytes(default_image_bytes())
    run = subprocess.run([e2fsck, "-fn", str(path)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.oracle
def test_readelf_reads_the_generated_files(tmp_path: Path, image: Ext2Image,
                                           require_tool: Callable[[str], str]) -> None:
    """binutils reads a generated file's interpreter and libraries as we wrote them."""
    readelf = require_tool("readelf")
    path = tmp_path / "nginx"
    path.write_bytes(image.read("/usr/sbin/nginx"))
    out = subprocess.run([readelf, "-lWd", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "[Requesting program interpreter: /lib64/ld-linux-x86-64.so.2]" in out
    for name in spec("/usr/sbin/nginx").needed:
        assert f"Shared library: [{name}]" in out


@pytest.mark.parametrize("mode", ["xip", "pagecache"])
def test_every_program_execs(image: Ext2Image, mode: str) -> None:
    """Does each program exec in a guest, mapping its loader and exactly its libraries?"""
    host = HostMemory()
    segment = SharedSegment(host, image) if mode == "xip" else None
    guest = Guest(0, host, 8192, image, segment=segment)
    for prog in PROGRAMS.values():
        mm = guest.new_process(prog.name)
        result = exec_image(guest, mm, prog.path)
        assert result.faults == 0, prog.name
        assert result.interp is not None and result.interp.path == prog.interp
        libs = {resolve(o.path) for o in result.libraries}
        assert libs == {resolve(p) for p in prog.libraries}
        assert all(v.dax == (mode == "xip") for v in mm.vmas if not v.anonymous)
        guest.exit_process(mm)
    assert guest.stats.sigsegv == guest.stats.sigbus == guest.stats.oom == 0


def test_program_facts_match_the_table() -> None:
    """The measured runs mapped the text segments the table describes, page for page."""
    for prog in PROGRAMS.values():
        assert prog.text_resident, prog.name
        objects = {resolve(p) for p, _, _ in prog.text_resident}
        expected = {resolve(p) for p in (prog.path, *prog.libraries)}
        expected.add(resolve(prog.interp or ""))
        assert objects == expected, prog.name
        for path, resident, mapped in prog.text_resident:
            text = [ph for ph in spec(path).loads if ph.p_flags & PF_X]
            pages = sum(((ph.p_vaddr + ph.p_filesz + PAGE_SIZE - 1) >> PAGE_SHIFT) -
                        (ph.p_vaddr >> PAGE_SHIFT) for ph in text)
            assert pages == mapped and 0 < resident <= mapped, (prog.name, path)
            assert 0 < prog.text_fraction(path) <= 1
    assert needed_closure("/usr/bin/ls")[-1].endswith("libpcre2-8.so.0"), "breadth first"


def test_disk_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The image is cached on disk once, reused when intact, rebuilt when damaged."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    data = distro._load_or_build()
    files = sorted(p.name for p in (tmp_path / "xipmodel").iterdir())
    assert len(files) == 2 and files[0].endswith(".img") and files[1].endswith(".sha256")
    img = tmp_path / "xipmodel" / files[0]
    assert img.read_bytes() == data
    img.write_bytes(b"damaged")
    assert distro._load_or_build() == data
    assert img.read_bytes() == data


def test_unwritable_cache_keeps_the_image_in_memory(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """If the cache folder cannot be created, the image is still built and returned."""
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert distro._load_or_build() == default_image_bytes()
