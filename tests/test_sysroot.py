"""Real binaries as the distribution: ld.so's search on this machine, and an image of them.

Oracles: `ldd` (the machine's own ld.so in trace mode) for which file each DT_NEEDED
name loads, e2fsck for the image, the host's files for its contents.
"""

from __future__ import annotations

import json
import os
import re
import stat
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from xipmodel.__main__ import main
from xipmodel.elf import (
    DT_NEEDED,
    DT_RUNPATH,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    ELFCLASS64,
    ELFDATA2LSB,
    EM_X86_64,
    ET_DYN,
    PF_R,
    PF_X,
    PT_DYNAMIC,
    PT_INTERP,
    PT_LOAD,
    ElfError,
    ElfFile,
    ElfHeader,
    ProgramHeader,
    exec_image,
)
from xipmodel.ext2 import Ext2Image
from xipmodel.host import Host, Scenario
from xipmodel.ldso import LdSoError, LoadedObject, map_program, read_ld_so_cache, search_dirs
from xipmodel.params import PAGE_SIZE
from xipmodel.sysroot import binaries_image

BASH, PYTHON3 = "/usr/bin/bash", "/usr/bin/python3"


def _ldd(path: str) -> dict[str, str]:
    """`name => path` of every library ldd lists (not the vDSO, not the interpreter)."""
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=False).stdout
    return {m[1]: m[2] for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M)}


def _elf_files(folder: Path, pattern: str = "*") -> list[str]:
    found = []
    for path in sorted(folder.glob(pattern)):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as f:
            if f.read(4) == b"\x7fELF":
                found.append(str(path))
    return found


@pytest.mark.slow
def test_the_search_finds_what_ldd_finds(require_tool: Callable[[str], str]) -> None:
    """For every ELF program in /usr/bin and numpy's own shared objects (DT_RPATH with
    $ORIGIN), does each DT_NEEDED name resolve to the file this machine's ld.so loads?"""
    require_tool("ldd")
    import numpy

    numpy_dir = Path(numpy.__file__).parent
    objects = _elf_files(Path("/usr/bin")) + _elf_files(numpy_dir, "*/*.so")
    assert BASH in objects
    with_origin = with_runpath = 0
    for path in objects:
        elf = ElfFile.from_path(path)
        with_origin += "$ORIGIN" in (elf.rpath or "")
        with_runpath += elf.runpath is not None
        assert dict(map_program(path).libraries) == _ldd(path), path
    assert with_origin > 0  # numpy's wheels find numpy.libs by $ORIGIN
    assert with_runpath > 0  # systemd's and man-db's programs find private libraries by it


def _obj(path: str, rpath: str | None, runpath: str | None,
         loader: LoadedObject | None = None) -> LoadedObject:
    return LoadedObject(path, SimpleNamespace(rpath=rpath, runpath=runpath),  # type: ignore[arg-type]
                        loader)


def test_search_order_rpath_chain_then_library_path_then_runpath() -> None:
    """DT_RPATH of the object and of every loader up to the program, LD_LIBRARY_PATH,
    then DT_RUNPATH; an object with DT_RUNPATH ignores every DT_RPATH."""
    program = _obj("/opt/app/bin/app", "$ORIGIN/../lib", None)
    middle = _obj("/opt/app/lib/libmid.so", "/m1:/m2", None, program)
    lib = _obj("/opt/x/libx.so", "/own", None, middle)
    origin = os.path.dirname(os.path.realpath("/opt/app/bin/app"))  # as /proc/self/exe
    assert search_dirs(lib, ("/env",)) == ["/own", "/m1", "/m2", f"{origin}/../lib", "/env"]
    modern = _obj("/opt/y/liby.so", "/ignored", "${ORIGIN}/private:/$LIB", middle)
    assert search_dirs(modern, ("/env",)) == ["/env", "/opt/y/private",
                                              "/lib/x86_64-linux-gnu"]


@pytest.fixture(scope="module")
def host_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m xipmodel image` of this machine's bash and python3."""
    out = tmp_path_factory.mktemp("img") / "host.img"
    assert main(["image", "-o", str(out), BASH, PYTHON3]) == 0
    return out


def test_the_image_passes_e2fsck(host_image: Path, require_tool: Callable[[str], str]) -> None:
    """Is the populated, frozen image clean for e2fsck -fn?"""
    proc = subprocess.run([require_tool("e2fsck"), "-fn", str(host_image)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_image_holds_every_library_ldd_lists(host_image: Path,
                                                 require_tool: Callable[[str], str]) -> None:
    """Every library ldd lists, the interpreter and the programs are in the image at the
    same paths with the same bytes and permission bits; symlinks stay symlinks."""
    require_tool("ldd")
    with Ext2Image.open(host_image) as img:
        for program in (BASH, PYTHON3):
            libraries = _ldd(program)
            assert libraries, program
            interp = map_program(program).interp
            assert interp is not None
            for path in (program, interp, *libraries.values()):
                assert img.read(path) == Path(path).read_bytes(), path
                assert stat.S_IMODE(img.stat(path).st_mode) == \
                    stat.S_IMODE(os.stat(path).st_mode), path
        for link in ("/lib", "/lib64", PYTHON3, "/usr/lib64/ld-linux-x86-64.so.2"):
            if os.path.islink(link):
                assert img.readlink(link) == os.readlink(link), link
        assert img.exists("/lib64/ld-linux-x86-64.so.2")


@pytest.mark.parametrize("mode", ["pagecache", "xip"])
def test_guests_exec_the_real_binaries(host_image: Path, mode: str) -> None:
    """Do guests exec this machine's bash and python3 from the image, libraries and all,
    without a fault they cannot handle; XIP reads nothing from disk and caches nothing?"""
    scenario = Scenario(guests=4, workload=(("exec:/usr/bin/bash", 1.0),
                                            ("exec:/usr/bin/python3", 1.0)), guest_ram_mib=128)
    with Ext2Image.open(host_image) as img:
        result = Host(scenario, mode, img).run()
    assert result.totals["sigsegv"] == result.totals["sigbus"] == result.totals["oom"] == 0
    assert all(g["accesses"] > 0 for g in result.per_guest)
    if mode == "xip":
        assert result.bytes_by_category["page_cache"] == 0
        assert result.totals["disk_read_bytes"] == 0 and result.bytes_by_category["shared"] > 0
    else:
        size = sum(os.stat(p).st_size for p in (BASH, "/usr/lib/x86_64-linux-gnu/libc.so.6"))
        assert result.totals["disk_read_bytes"] > 0 and result.bytes_by_category["page_cache"] > 0
        assert result.bytes_by_category["page_cache"] < 4 * (size + os.stat(PYTHON3).st_size)


def test_cli_compare_with_the_image_and_programs(host_image: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """`compare --image IMG --program bash --program python3` runs both, named by path."""
    assert main(["compare", "--image", str(host_image), "--program", "bash", "--program",
                 "python3=0.5", "--guests", "3", "--modes", "pagecache,xip", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scenario"]["workload"] == [["exec:/usr/bin/bash", 1.0],
                                            ["exec:/usr/bin/python3", 0.5]]
    modes = data["modes"]
    assert modes["xip"]["host_bytes"] < modes["pagecache"]["host_bytes"]
    with Ext2Image.open(host_image) as img:
        alone = Host(Scenario(guests=3, workload=(("exec:/usr/bin/bash", 1.0),
                                                  ("exec:/usr/bin/python3", 0.5))),
                     "xip", img).run()
    assert modes["xip"]["host_bytes"] == alone.host_bytes


def test_the_function_and_the_command_make_the_same_image(host_image: Path) -> None:
    """binaries_image gives, byte for byte, what `xipmodel image` wrote (times are 0)."""
    assert binaries_image([BASH, PYTHON3]) == host_image.read_bytes()


@pytest.mark.parametrize(("args", "says"), [
    (["image", "-o", "{tmp}/x.img", "/etc/hostname"], "not an ELF file"),
    (["image", "-o", "{tmp}/x.img", "no-such-program-xipmodel"], "is not on PATH"),
    (["image", "-o", "{tmp}/x.img", "{tmp}"], "not a regular file"),
    (["compare", "--program", "no-such-program-xipmodel"], "--program"),
    (["compare", "--program", "/usr/bin/bash=-1"], "--program"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    """A file that is not a program, an unknown name: one line, exit status 2."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = subprocess.run([sys.executable, "-m", "xipmodel", *argv], capture_output=True,
                          text=True, check=False,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent)))
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr


def test_a_malformed_cache_is_named(tmp_path: Path) -> None:
    """An ld.so.cache that is not glibc's new format, or whose entries overrun it."""
    bad = tmp_path / "ld.so.cache"
    bad.write_bytes(b"ld.so-1.7.0" + bytes(40))
    with pytest.raises(LdSoError, match=r"glibc-ld\.so\.cache1\.1"):
        read_ld_so_cache(str(bad))
    bad.write_bytes(b"glibc-ld.so.cache1.1" + (10**6).to_bytes(4, "little") + bytes(24))
    with pytest.raises(LdSoError, match="nlibs=1000000"):
        read_ld_so_cache(str(bad))
    assert read_ld_so_cache(str(tmp_path / "none")) == {}
    assert isinstance(LdSoError("x"), ElfError)


def _tiny_elf(needed: list[str], *, runpath: str | None = None, soname: str | None = None,
              interp: str | None = None) -> bytes:
    """A minimal ELF64 ET_DYN object: one R-X PT_LOAD over the file (vaddr = offset),
    PT_DYNAMIC with DT_NEEDED, DT_RUNPATH, DT_SONAME, DT_STRTAB and DT_STRSZ; PT_INTERP."""
    strtab = b"\0"
    dynamic: list[tuple[int, int]] = []
    for tag, text in [*((DT_NEEDED, n) for n in needed), (DT_RUNPATH, runpath),
                      (DT_SONAME, soname)]:
        if text is not None:
            dynamic.append((tag, len(strtab)))
            strtab += text.encode() + b"\0"
    phnum = 3 if interp else 2
    at = 64 + phnum * 56
    interp_bytes = (interp.encode() + b"\0") if interp else b""
    strtab_at = at + len(interp_bytes)
    dyn_at = (strtab_at + len(strtab) + 7) & ~7
    dynamic += [(DT_STRTAB, strtab_at), (DT_STRSZ, len(strtab)), (0, 0)]
    raw_dyn = b"".join(struct.pack("<qQ", t, v) for t, v in dynamic)
    size = max(PAGE_SIZE, dyn_at + len(raw_dyn))
    phdrs = [ProgramHeader(PT_LOAD, 0, 0, 0, size, size, PF_R | PF_X, PAGE_SIZE),
             ProgramHeader(PT_DYNAMIC, dyn_at, dyn_at, dyn_at, len(raw_dyn), len(raw_dyn),
                           PF_R, 8)]
    if interp:
        phdrs.insert(0, ProgramHeader(PT_INTERP, at, at, at, len(interp_bytes),
                                      len(interp_bytes), PF_R, 1))
    header = ElfHeader(ELFCLASS64, ELFDATA2LSB, ET_DYN, EM_X86_64, 1, 0, 64, 0, 0, 64, 56,
                       phnum, 64, 0, 0)
    data = bytearray(size)
    data[:64] = header.pack()
    data[64:at] = b"".join(ph.pack(ELFCLASS64, ELFDATA2LSB) for ph in phdrs)
    data[at:strtab_at] = interp_bytes
    data[strtab_at:strtab_at + len(strtab)] = strtab
    data[dyn_at:dyn_at + len(raw_dyn)] = raw_dyn
    return bytes(data)


def test_guests_and_the_host_search_runpath_with_origin(tmp_path: Path) -> None:
    """A program whose private library lies in $ORIGIN/../private (DT_RUNPATH): ld.so on
    the host and exec in a guest both find it there, and libc on the standard path (the
    guest's exec used to search the standard directories only, and failed)."""
    from xipmodel.ext2 import File, build_image
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.sysroot import binaries_tree

    ld_so = map_program(BASH).interp
    assert ld_so is not None
    app = _tiny_elf(["libprivate.so", "libc.so.6"], runpath="$ORIGIN/../private",
                    interp=ld_so)
    private = _tiny_elf([], soname="libprivate.so")
    (tmp_path / "bin").mkdir()
    (tmp_path / "private").mkdir()
    (tmp_path / "bin" / "app").write_bytes(app)
    (tmp_path / "private" / "libprivate.so").write_bytes(private)
    on_host = map_program(str(tmp_path / "bin" / "app"))
    assert dict(on_host.libraries)["libprivate.so"] == f"{tmp_path}/bin/../private/libprivate.so"
    assert dict(on_host.libraries)["libc.so.6"] == _ldd(BASH)["libc.so.6"]

    tree = binaries_tree([BASH])
    tree["/opt/app/bin/app"] = File(app, mode=0o755)
    tree["/opt/app/private/libprivate.so"] = File(private)
    with Ext2Image.open(build_image(tree)) as img:
        guest = Guest(0, HostMemory(), 4096, img)
        mm = guest.new_process("app")
        assert mm is not None
        result = exec_image(guest, mm, "/opt/app/bin/app")
    assert [o.path for o in result.libraries] == ["/opt/app/bin/../private/libprivate.so",
                                                  "/lib/x86_64-linux-gnu/libc.so.6"]
