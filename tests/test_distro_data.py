"""The distribution's data file: loaded into the same table, and refused when malformed.

The ELF facts, symlinks and program runs of the default distribution live in
xipmodel/data/distro/debian12.toml. These tests ask: does the loader give back
exactly the table the module uses, does the disk-cache key follow the table, and
does each kind of malformed file raise DataFileError naming the entry, field and value?
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from pathlib import Path

import pytest

from xipmodel import distro
from xipmodel.distro import DISTRO, PROGRAMS, SYMLINKS, DistroTable, load_table
from xipmodel.elf import ET_DYN, PF_R, PF_X, PT_INTERP, PT_LOAD
from xipmodel.errors import DataFileError, ParameterError

SHIPPED = importlib.resources.files("xipmodel").joinpath("data", "distro", "debian12.toml")

# A small valid file: one ELF file, one symlink, one program run.
VALID = """\
[[elf]]
path = "/usr/bin/tiny"
package = "tiny 1.0-1"
e_type = "DYN"
e_entry = 0x1040
size = 8192
interp = "/lib64/ld.so"
needed = ["libc.so.6"]
dt_strtab = 0x400
reloc_bytes = 24
phdrs = [
    ["INTERP", 0x318, 0x318, 0xd, 0xd, "R", 0x1],
    ["LOAD", 0x0, 0x0, 0x2000, 0x2000, "RX", 0x1000],
]

[symlinks]
"/bin" = "usr/bin"

[[program]]
name = "tiny"
path = "/usr/bin/tiny"
run = "tiny -q"
text_resident = [["/usr/bin/tiny", 1, 2]]
file_dirty = [["/usr/bin/tiny", 1]]
heap_pages = 1
stack_pages = 2
anon_pages = 3
"""


def test_shipped_file_loads_into_the_module_table() -> None:
    """Is the module's table exactly what the loader reads from the shipped file, in order?"""
    table = load_table(SHIPPED.read_bytes())
    assert table == DistroTable(DISTRO, SYMLINKS, PROGRAMS)
    assert list(table.symlinks) == list(SYMLINKS), "link order is the file's order"
    assert list(table.programs) == list(PROGRAMS)
    assert len(DISTRO) == 18 and len(SYMLINKS) == 12 and len(PROGRAMS) == 7
    assert all(len(entry.package.split()) == 2 for entry in DISTRO), "provenance kept"


def test_bytes_and_path_load_the_same(tmp_path: Path) -> None:
    """Does the small file load to the values it spells (names turned into numbers)?"""
    path = tmp_path / "tiny.toml"
    path.write_text(VALID)
    table = load_table(path)
    assert table == load_table(VALID.encode()) == load_table(str(path))
    (entry,) = table.elf
    assert entry.e_type == ET_DYN and entry.e_entry == 0x1040 and entry.size == 8192
    assert entry.interp == "/lib64/ld.so" and entry.soname is None
    assert entry.needed == ("libc.so.6",) and entry.reloc_bytes == 24
    assert entry.phdrs == ((PT_INTERP, 0x318, 0x318, 0xD, 0xD, PF_R, 1),
                           (PT_LOAD, 0, 0, 0x2000, 0x2000, PF_R | PF_X, 0x1000))
    assert table.symlinks == {"/bin": "usr/bin"}
    assert table.programs["tiny"] == distro.Program(
        "tiny", "/usr/bin/tiny", "tiny -q", (("/usr/bin/tiny", 1, 2),), (("/usr/bin/tiny", 1),),
        heap_pages=1, stack_pages=2, anon_pages=3)


def test_cache_key_follows_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """Does the disk-cache key change when an ELF fact or a symlink changes?"""
    key = distro._cache_key()
    grown = dataclasses.replace(DISTRO[0], size=DISTRO[0].size + 1)
    monkeypatch.setattr(distro, "DISTRO", (grown, *DISTRO[1:]))
    assert distro._cache_key() != key
    monkeypatch.setattr(distro, "DISTRO", DISTRO)
    assert distro._cache_key() == key
    monkeypatch.setattr(distro, "SYMLINKS", {**SYMLINKS, "/usr/bin/sh": "bash"})
    assert distro._cache_key() != key


TINY = "bad.toml: elf[0] (/usr/bin/tiny)"
PROG = "bad.toml: program[0] (tiny)"
LOAD_ROW = '["LOAD", 0x0, 0x0, 0x2000, 0x2000, "RX", 0x1000]'


@pytest.mark.parametrize(("old", "new", "expected"), [
    # a field missing, or one the schema does not know
    ("size = 8192\n", "", f"{TINY}: size is missing"),
    ("heap_pages = 1\n", "", f"{PROG}: heap_pages is missing"),
    ('[symlinks]\n"/bin" = "usr/bin"\n', "", "bad.toml: symlinks is missing"),
    ("size = 8192\n", 'size = 8192\nsonme = "x"\n', f"{TINY}: sonme='x': unknown field"),
    # a value of the wrong type
    ("size = 8192", 'size = "8192"', f"{TINY}: size='8192': must be an integer"),
    ("reloc_bytes = 24", "reloc_bytes = true", f"{TINY}: reloc_bytes=True: must be an integer"),
    ("size = 8192", "size = 8192.0", f"{TINY}: size=8192.0: must be an integer"),
    ('needed = ["libc.so.6"]', 'needed = "libc.so.6"', f"{TINY}: needed='libc.so.6': must be an"),
    ('run = "tiny -q"', "run = 7", f"{PROG}: run=7: must be a non-empty string"),
    # a number out of range
    ("size = 8192", "size = -1", f"{TINY}: size=-1: must be an integer in [0, 2**64)"),
    ("e_entry = 0x1040", "e_entry = 0x1_0000_0000_0000_0000",
     f"{TINY}: e_entry=18446744073709551616: must be an integer in [0, 2**64)"),
    ("anon_pages = 3", "anon_pages = -3", f"{PROG}: anon_pages=-3: must be an integer"),
    ('tiny", 1, 2]', 'tiny", 3, 2]', f"{PROG}: text_resident[0].resident=3: exceeds mapped=2"),
    ("size = 8192", "size = 4096",
     f"{TINY}: phdrs[1].p_offset=0: with p_filesz=0x2000 runs past size=4096"),
    ("0x2000, 0x2000,", "0x2000, 0x1000,", f"{TINY}: phdrs[1].p_filesz=8192: exceeds p_memsz"),
    # a bad path or name
    ('path = "/usr/bin/tiny"\npackage', 'path = "usr/bin/tiny"\npackage',
     "bad.toml: elf[0] (usr/bin/tiny): path='usr/bin/tiny': must be an absolute, normalized"),
    ('path = "/usr/bin/tiny"\npackage', 'path = "/usr//bin/tiny"\npackage',
     "bad.toml: elf[0] (/usr//bin/tiny): path='/usr//bin/tiny': must be an absolute"),
    ('interp = "/lib64/ld.so"', 'interp = "ld.so"', f"{TINY}: interp='ld.so': must be an absolute"),
    ('"/bin" = "usr/bin"', '"bin" = "usr/bin"', "bad.toml: symlinks: link='bin': must be an absol"),
    ('"/bin" = "usr/bin"', '"/bin" = ""', "bad.toml: symlinks: /bin='': must be a non-empty"),
    ('[["/usr/bin/tiny", 1]]', '[["tiny", 1]]', f"{PROG}: file_dirty[0].object='tiny': must be"),
    ('["libc.so.6"]', '["/lib/libc.so.6"]', f"{TINY}: needed[0]='/lib/libc.so.6': must be a file"),
    ('"tiny 1.0-1"', '"tiny"', f"{TINY}: package='tiny': must be 'PACKAGE VERSION'"),
    # a name that is not one of ELF's
    ('"LOAD"', '"LOADX"', f"{TINY}: phdrs[1].p_type='LOADX': must be one of"),
    ('["LOAD",', "[1,", f"{TINY}: phdrs[1].p_type=1: must be one of"),
    ('"RX"', '"XR"', f"{TINY}: phdrs[1].p_flags='XR': must be one of"),
    ('e_type = "DYN"', 'e_type = "SHARED"', f"{TINY}: e_type='SHARED': must be one of"),
    # a program header that is not seven fields
    (LOAD_ROW, LOAD_ROW.replace(', 0x1000]', "]"), f"{TINY}: phdrs[1]=['LOAD', 0, 0, 8192, 8192, "
                                                   "'RX']: must have 7 items, not 6"),
    (LOAD_ROW, '"LOAD"', f"{TINY}: phdrs[1]='LOAD': must be an array, not str"),
    # something that is not a mapping where a table belongs
    (VALID, 'symlinks = ["/bin"]\n' + VALID.replace('[symlinks]\n"/bin" = "usr/bin"\n', ""),
     "bad.toml: symlinks=['/bin']: must be a table, not list"),
    (VALID, 'elf = ["/usr/bin/tiny"]\nsymlinks = {}\nprogram = []\n',
     "bad.toml: elf[0]: entry='/usr/bin/tiny': must be a table, not str"),
    (VALID, "elf = {}\nsymlinks = {}\nprogram = []\n", "bad.toml: elf={}: must be an array"),
    # entries that contradict each other
    ('    ["INTERP", 0x318, 0x318, 0xd, 0xd, "R", 0x1],\n', "",
     f"{TINY}: interp='/lib64/ld.so': must be given exactly when phdrs has an INTERP"),
    ("[symlinks]", VALID.split("\n\n")[0] + "\n\n[symlinks]",
     "bad.toml: elf[1] (/usr/bin/tiny): path='/usr/bin/tiny': appears twice"),
    # not TOML at all
    ("size = 8192", "size = = 8192", "bad.toml: not valid TOML: "),
    ("[symlinks]", "[symlinks", "bad.toml: not valid TOML: "),
])
def test_malformed_file_names_entry_field_and_value(tmp_path: Path, old: str, new: str,
                                                    expected: str) -> None:
    """Does each kind of bad data raise DataFileError naming where, what and which value?"""
    assert old in VALID, f"the test's edit must apply: {old!r}"
    path = tmp_path / "bad.toml"
    path.write_text(VALID.replace(old, new, 1))
    with pytest.raises(DataFileError) as caught:
        load_table(path, "bad.toml")
    assert str(caught.value).startswith(expected), str(caught.value)
    assert isinstance(caught.value, ParameterError) and isinstance(caught.value, ValueError)


def test_bytes_name_errors_and_bad_encoding() -> None:
    """Bytes name themselves "<bytes>"; bytes that are not UTF-8 are not valid TOML either."""
    with pytest.raises(DataFileError, match=r"^<bytes>: elf\[0\] \(/usr/bin/tiny\): size=-1"):
        load_table(VALID.replace("size = 8192", "size = -1").encode())
    with pytest.raises(DataFileError, match=r"^<bytes>: not valid TOML: .*utf-8"):
        load_table(b"\xff" + VALID.encode())


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    """A file that is not there is the host's FileNotFoundError, not a data error."""
    with pytest.raises(FileNotFoundError):
        load_table(tmp_path / "absent.toml")
