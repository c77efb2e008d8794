"""The MMU layer: presets, page tables, the walk and the nested walk."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xipmodel.errors import ParameterError
from xipmodel.mm.pagetable import (
    Fault,
    PageTable,
    TableFrames,
    nested_walk,
    nested_walk_refs,
)
from xipmodel.params import PRESETS, S390X, SV39, TINY, X86_64, MMUPreset, Pte, preset

ALL = list(PRESETS.values())
IDS = [p.name for p in ALL]


def tiny_image() -> bytearray:
    """An OSTEP-style 4 KiB memory image written by hand (see test_tiny_walk_by_hand)."""
    mem = bytearray(4096)
    pdbr = 108
    mem[pdbr * 32 + 24] = 0xA1  # PDE 24: valid, page table in frame 0x21 = 33
    mem[33 * 32 + 8] = 0xB5  # PTE 8: valid, frame 0x35 = 53
    mem[33 * 32 + 9] = 0x85  # PTE 9: valid, frame 5
    mem[53 * 32 + 28] = 0x08  # the byte at pa 0x6bc
    mem[pdbr * 32 + 15] = 0xD6  # PDE 15: valid, page table in frame 0x56 = 86
    mem[86 * 32 + 13] = 0x7F  # PTE 13: valid bit clear (junk frame 0x7f)
    mem[pdbr * 32 + 3] = 0x7F  # PDE 3: valid bit clear
    return mem


def test_tiny_walk_by_hand() -> None:
    """Does the TINY walk read the same bytes a student reads by hand?

    OSTEP paging-multilevel-translate geometry: 32-byte pages, 15-bit VAs,
    PDBR = 108. For va 0x611c = 0b11000_01000_11100:
      pde index = 0x611c >> 10 = 24; PDE at 108*32 + 24 = 3480 = 0xd98 holds 0xa1
        → valid (0x80), page table in frame 0x21 = 33
      pte index = (0x611c >> 5) & 31 = 8; PTE at 33*32 + 8 = 1064 = 0x428 holds 0xb5
        → valid, frame 0x35 = 53
      offset = 0x1c = 28; pa = 53*32 + 28 = 1724 = 0x6bc (which holds 0x08).
    va 0x6120: pde 24, pte 9 (0x85 → frame 5), offset 0 → pa 0xa0.
    va 0x3da8: pde 15 (0xd6 → table 86), pte 13 at 86*32 + 13 = 0xacd holds 0x7f → fault.
    va 0x0c00: pde 3 at 108*32 + 3 = 0xd83 holds 0x7f → fault after one reference.
    """
    mem = tiny_image()
    pt = PageTable.from_memory(TINY, mem, root=108)
    w = pt.walk(0x611C)
    assert [(s.level, s.table, s.index, s.addr, s.pte) for s in w.steps] == [
        ("PD", 108, 24, 0xD98, 0xA1), ("PT", 33, 8, 0x428, 0xB5)]
    assert w.refs == 2 and w.pa == 0x6BC and mem[w.pa] == 0x08
    assert pt.translate(0x611C) == (0x6BC, None)
    assert pt.translate(0x6120) == (0xA0, None)

    bad_pte = pt.walk(0x3DA8)
    assert [(s.addr, s.pte) for s in bad_pte.steps] == [(108 * 32 + 15, 0xD6), (0xACD, 0x7F)]
    assert bad_pte.stopped_at == "PT" and bad_pte.pa is None
    assert pt.translate(0x3DA8) == (None, Fault.NOT_PRESENT)

    bad_pde = pt.walk(0x0C00)
    assert [(s.addr, s.pte) for s in bad_pde.steps] == [(0xD83, 0x7F)]
    assert bad_pde.refs == 1 and bad_pde.slot is None and bad_pde.stopped_at == "PD"
    assert pt.translate(0x0C00) == (None, Fault.NOT_PRESENT)
    assert pt.walk(0x611C).explain()[-1] == "  → pa 0x6bc"


@pytest.mark.oracle
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_tiny_replays_ostep_paging_multilevel_translate(seed: int) -> None:
    """Does TINY answer OSTEP's multi-level quiz exactly, entry by entry?

    Runs `paging-multilevel-translate.py -s SEED -c` from the checkout named by
    OSTEP_HOMEWORK (never vendored: no licence), loads its memory dump with its
    PDBR, and compares every PDE/PTE read, physical address, value and fault.
    """
    home = os.environ.get("OSTEP_HOMEWORK")
    if not home:
        pytest.skip("OSTEP_HOMEWORK does not point at an ostep-homework checkout")
    script = Path(home) / "vm-smalltables" / "paging-multilevel-translate.py"
    out = subprocess.run([sys.executable, str(script), "-s", str(seed), "-c"], check=True,
                         capture_output=True, text=True).stdout
    mem = bytearray(4096)
    for page, hexbytes in re.findall(r"^page\s+(\d+):([0-9a-f]{64})$", out, re.M):
        mem[int(page) * 32:(int(page) + 1) * 32] = bytes.fromhex(hexbytes)
    pdbr = int(re.search(r"^PDBR: (\d+)", out, re.M).group(1))  # type: ignore[union-attr]
    pt = PageTable.from_memory(TINY, mem, pdbr)
    blocks = re.findall(r"^Virtual Address 0x([0-9a-f]+):\n((?:\s+-->.*\n)+)", out, re.M)
    assert len(blocks) == 10
    for va_hex, block in blocks:
        w = pt.walk(int(va_hex, 16))
        contents = [int(x, 16) for x in re.findall(r"contents:0x([0-9a-f]+)", block)]
        assert [s.pte for s in w.steps] == contents, (va_hex, block)
        done = re.search(r"Physical Address 0x([0-9a-f]+) --> Value: 0x([0-9a-f]+)", block)
        if done:
            assert w.pa == int(done.group(1), 16) and mem[w.pa] == int(done.group(2), 16)
        else:
            level = "PD" if "directory entry not valid" in block else "PT"
            assert w.pa is None and w.stopped_at == level


def test_tiny_tables_built_by_map_match_hand_image() -> None:
    """Mapping the same pages with map() writes the same PDE/PTE bytes as the hand image."""
    frames = iter([108, 33])
    pt = PageTable(TINY, alloc_table=lambda: next(frames))
    assert pt.map(TINY.vpn(0x611C), 53) and pt.map(TINY.vpn(0x6120), 5)
    assert int(pt.tables[108][24]) == 0xA1
    assert int(pt.tables[33][8]) == 0xB5 and int(pt.tables[33][9]) == 0x85


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_geometry_is_consistent(p: MMUPreset) -> None:
    """Do levels, entries, shifts and VA bits describe one machine?"""
    assert sum(p.levels) + p.page_shift == p.va_bits
    assert p.entries == tuple(2**b for b in p.levels)
    assert p.shifts[-1] == p.page_shift and p.nlevels == len(p.level_names)
    if p is not S390X:  # s390x region/segment tables span four frames, page tables half of one
        assert all(p.table_bytes(d) == p.page_size for d in range(p.nlevels))
    assert p.pfn_bits == p.pa_bits - p.page_shift
    assert preset(p.name) is p


def test_preset_numbers() -> None:
    """The four machines as their manuals describe them."""
    assert (TINY.page_size, TINY.va_bits, TINY.pa_bits, TINY.entries) == (32, 15, 12, (32, 32))
    assert (X86_64.page_size, X86_64.levels, X86_64.va_bits) == (4096, (9, 9, 9, 9), 48)
    assert X86_64.level_names == ("PML4", "PDPT", "PD", "PT")
    assert (SV39.levels, SV39.va_bits) == ((9, 9, 9), 39)
    assert S390X.levels == (11, 11, 11, 11, 8) and S390X.entries[-1] == 256
    assert S390X.table_bytes(0) == 16384 and S390X.table_bytes(4) == 2048


def test_x86_64_canonical_addresses() -> None:
    """x86-64 uses 48 bits: bits 63..47 must all equal bit 47, or the access faults."""
    p = X86_64
    assert p.va_ok(0x0000_7FFF_FFFF_FFFF) and p.va_ok(0xFFFF_8000_0000_0000)
    assert not p.va_ok(0x0000_8000_0000_0000) and not p.va_ok(0xFFFF_7FFF_FFFF_FFFF)
    assert p.split(0xFFFF_8000_0000_0000) == (256, 0, 0, 0, 0)
    assert p.va(p.vpn(0xFFFF_FFFF_FFFF_F000)) == 0xFFFF_FFFF_FFFF_F000
    pt = PageTable(p)
    assert pt.translate(0x0000_8000_0000_0000) == (None, Fault.BAD_ADDRESS)
    with pytest.raises(ParameterError, match="va=0x800000000000"):
        p.split(0x0000_8000_0000_0000)


@pytest.mark.parametrize("p", ALL, ids=IDS)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_split_recombines(p: MMUPreset, data: st.DataObject) -> None:
    """Property: join(split(va)) == va, and each index is below its level's entry count."""
    vpn = data.draw(st.integers(0, 2**p.vpn_bits - 1))
    offset = data.draw(st.integers(0, p.page_size - 1))
    va = p.va(vpn, offset)
    parts = p.split(va)
    assert parts[-1] == offset
    assert all(0 <= i < n for i, n in zip(parts[:-1], p.entries, strict=True))
    assert p.join(parts[:-1], parts[-1]) == va and p.vpn(va) == vpn


@pytest.mark.parametrize("p", ALL, ids=IDS)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_map_translate_unmap(p: MMUPreset, data: st.DataObject) -> None:
    """Property: every mapped page translates to its frame; after unmap it faults."""
    vpns = data.draw(st.lists(st.integers(0, 2**p.vpn_bits - 1), unique=True, max_size=20))
    pfns = data.draw(st.lists(st.integers(0, p.pfn_mask), min_size=len(vpns),
                              max_size=len(vpns)))
    offset = data.draw(st.integers(0, p.page_size - 1))
    pt = PageTable(p)
    for vpn, pfn in zip(vpns, pfns, strict=True):
        assert pt.map(vpn, pfn, Pte.W | Pte.U)
    for vpn, pfn in zip(vpns, pfns, strict=True):
        va = p.va(vpn, offset)
        assert pt.translate(va, "write") == (pfn << p.page_shift | offset, None)
        assert pt.walk(va).refs == p.nlevels
    assert pt.mapped_vpns().tolist() == sorted(vpns)
    ptes = pt.lookup_many(vpns)
    assert [p.pte_pfn(int(x)) for x in ptes] == pfns
    for vpn, pfn in zip(vpns, pfns, strict=True):
        assert p.pte_pfn(pt.unmap(vpn)) == pfn
        assert pt.translate(p.va(vpn, offset)) == (None, Fault.NOT_PRESENT)
    assert pt.mapped_vpns().size == 0


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_bulk_map_equals_one_by_one(p: MMUPreset) -> None:
    """map_many over thousands of pages writes exactly the entries map() would."""
    rng = np.random.default_rng(7)
    n = 600 if p is TINY else 3000
    vpns = rng.choice(2 ** min(p.vpn_bits, 24), size=n, replace=False)
    pfns = rng.integers(0, p.pfn_mask + 1, size=n)
    bulk, single = PageTable(p), PageTable(p)
    assert bulk.map_many(vpns, pfns, Pte.X).all()
    for vpn, pfn in zip(vpns.tolist(), pfns.tolist(), strict=True):
        single.map(vpn, pfn, Pte.X)
    assert np.array_equal(bulk.lookup_many(vpns), single.lookup_many(vpns))
    assert bulk.table_count == single.table_count
    assert np.array_equal(bulk.mapped_vpns(), np.sort(vpns))
    old = bulk.unmap_many(vpns[: n // 2])
    assert np.array_equal(old, single.lookup_many(vpns[: n // 2]))
    assert not bulk.lookup_many(vpns[: n // 2]).any()
    assert bulk.lookup_many(vpns[n // 2:]).all()


@pytest.mark.parametrize("p", ALL, ids=IDS)
def test_tables_allocated_on_demand(p: MMUPreset) -> None:
    """How many table pages does a mapping cost? Only the levels not yet there."""
    frames = TableFrames()
    pt = PageTable(p, frames.alloc, frames.free)
    assert frames.allocs == 1  # the root
    pt.walk(p.va(0))
    pt.lookup_pte(5)
    assert frames.allocs == 1  # looking allocates nothing
    pt.map(0, 1)
    assert frames.allocs == p.nlevels  # one table per level below the root
    pt.map(1, 2)  # same leaf table
    assert frames.allocs == p.nlevels
    top = p.va(2**p.vpn_bits - 1)  # differs in the top index: a whole new branch
    pt.map(p.vpn(top), 3)
    assert frames.allocs == 2 * p.nlevels - 1 == pt.table_count
    pt.free()
    assert frames.frees == frames.allocs and frames.in_use == 0


def test_out_of_table_frames_is_a_value() -> None:
    """No frame left for a page table: map() says False, nothing raises."""
    frames = TableFrames(limit=2)  # frame 1 only: the root
    pt = PageTable(X86_64, frames.alloc, frames.free)
    assert pt.map(7, 9) is False
    assert pt.walk(X86_64.va(7), alloc=True).slot is None
    assert not pt.map_many([1, 2], [3, 4]).any()


def test_exchange_returns_the_entry_it_replaced() -> None:
    """exchange maps over whatever was there and hands back the old entry: 0 for none,
    the present PTE it replaced, None (nothing changed) when no table frame is left."""
    pt = PageTable(X86_64)
    assert pt.exchange(7, 9, Pte.U) == 0
    old = pt.exchange(7, 11, Pte.U | Pte.W)
    assert old is not None and X86_64.pte_pfn(old) == 9 and X86_64.pte_present_p(old)
    assert X86_64.pte_pfn(pt.lookup_pte(7)) == 11
    assert int(X86_64.pte_flags(pt.lookup_pte(7))) & Pte.W
    frames = TableFrames(limit=2)  # frame 1 only: the root
    starved = PageTable(X86_64, frames.alloc, frames.free)
    assert starved.exchange(7, 9) is None and starved.lookup_pte(7) == 0


def test_permissions_and_hardware_bits() -> None:
    """A write to a read-only page (a CoW candidate) faults; granting W lets it through.

    The walker sets accessed on every use and dirty on a write; clear_flags(A) ages.
    """
    for p in (X86_64, SV39, S390X):
        pt = PageTable(p)
        vpn = 0x123
        pt.map(vpn, 0x456, Pte.U)
        va = p.va(vpn, 8)
        assert pt.translate(va, "write") == (None, Fault.WRITE_PROTECT)
        assert pt.translate(va, "exec") == (None, Fault.NO_EXEC)
        assert pt.translate(va) == (0x456 << 12 | 8, None)
        assert p.pte_flags(pt.lookup_pte(vpn)) & Pte.A
        assert not p.pte_flags(pt.lookup_pte(vpn)) & Pte.D
        old = pt.set_flags(vpn, Pte.W | Pte.X)
        assert not p.pte_flags(old) & Pte.W
        assert pt.translate(va, "write")[1] is None and pt.translate(va, "exec")[1] is None
        assert p.pte_flags(pt.lookup_pte(vpn)) & Pte.D
        assert p.pte_flags(pt.clear_flags(vpn, Pte.A | Pte.W)) & Pte.A
        assert not p.pte_flags(pt.lookup_pte(vpn)) & (Pte.A | Pte.W)
        assert pt.set_flags(0x999, Pte.W) == 0  # not mapped: nothing to change


def test_x86_64_pte_bits() -> None:
    """x86-64 encodes P=0x1, R/W=0x2, U/S=0x4, A=0x20, D=0x40, NX=bit 63, frame at bit 12."""
    assert X86_64.mkpte(0x1234, Pte.W | Pte.U) == 0x8000_0000_0123_4007
    assert X86_64.mkpte(0x1234, Pte.X | Pte.A | Pte.D) == 0x0123_4061
    assert SV39.mkpte(0x1234, Pte.W | Pte.X) == 0x1234 << 10 | 0b1111
    assert TINY.mkpte(0x35) == 0xB5
    assert TINY.pte_flags(0xB5) == Pte.W | Pte.X | Pte.U  # no protection bits: all granted


def test_bad_input_raises_parameter_error() -> None:
    """Bad arguments name the parameter and value; a remap is a caller bug (xv6 panics)."""
    pt = PageTable(TINY)
    with pytest.raises(ParameterError, match="pfn=128"):
        pt.map(1, 128)
    with pytest.raises(ParameterError, match="vpn=1024"):
        pt.map(1024, 1)
    with pytest.raises(ParameterError, match="name='vax'"):
        preset("vax")
    with pytest.raises(ParameterError, match="va_bits"):
        MMUPreset("odd", 12, (9, 9), ("a", "b"), 31, 52, 8, 12, 40, 1)
    with pytest.raises(ParameterError, match="must be page-aligned"):
        pt.mappages(3, 32, 0)
    pt.map(1, 2)
    with pytest.raises(RuntimeError, match="map: remap"):
        pt.map(1, 3)
    assert pt.map(1, 3, replace=True)
    assert TINY.pte_pfn(pt.lookup_pte(1)) == 3


def test_known_leaf_tables_still_refuse_bad_vpns() -> None:
    """The page-at-a-time verbs find a leaf table walked to before without walking again:
    does a vpn outside the address space still get its ParameterError, and do the verbs
    agree with a full walk?"""
    pt = PageTable(TINY)
    assert pt.map(1, 2) and pt.map(31, 5)  # both in the leaf table of vpns 0..31
    for bad in (-1, -32, 1024, 1024 + 1):
        for verb in (pt.lookup_pte, pt.unmap, lambda v: pt.set_flags(v, Pte.A)):
            with pytest.raises(ParameterError, match=f"vpn={bad}"):
                verb(bad)
    assert pt.lookup_pte(1) == pt.walk(1 << TINY.page_shift).pte
    assert pt.set_flags(31, Pte.A) == pt.walk(31 << TINY.page_shift).pte == TINY.mkpte(5)
    assert pt.unmap(31) == TINY.mkpte(5) and pt.lookup_pte(31) == 0
    assert pt.lookup_pte(32) == 0  # no leaf table there: nothing mapped


def test_mappages_byte_range() -> None:
    """xv6-style mappages maps size bytes page by page; unmappages gives back the old PTEs."""
    p = X86_64
    pt = PageTable(p)
    assert pt.mappages(0x40_0000, 3 * p.page_size, 0x20_0000, Pte.X)
    assert pt.translate(0x40_2010) == (0x20_2010, None)
    old = pt.unmappages(0x40_0000, 3 * p.page_size)
    assert [p.pte_pfn(int(x)) for x in old] == [0x200, 0x201, 0x202]


# ── nested walks ───────────────────────────────────────────────────────────
PAIRS = [(g, h) for g in ALL for h in ALL if h is not TINY or g is TINY]


def nested_setup(g: MMUPreset, h: MMUPreset) -> tuple[PageTable, PageTable, int]:
    """A guest table in guest-physical frames 1.., a host table mapping gPA pages 0..63."""
    guest = PageTable(g, TableFrames(first=1).alloc)
    gvpn = 2**g.vpn_bits - 3
    guest.map(gvpn, 9, Pte.W)
    host = PageTable(h)
    host.map_many(np.arange(64), np.arange(64) + 60, Pte.W)
    return guest, host, g.va(gvpn, 5)


@pytest.mark.parametrize(("g", "h"), PAIRS, ids=[f"{g.name}-on-{h.name}" for g, h in PAIRS])
def test_nested_walk_references(g: MMUPreset, h: MMUPreset) -> None:
    """A TLB miss in a guest under EPT/NPT: how many memory references, and in what order?

    Each of the g guest entries sits at a guest-physical address that needs an
    h-step host walk first; then the final gPA needs one more host walk:
    g·(h+1) + h = (g+1)(h+1) − 1 references (24 for x86-64 on x86-64).
    """
    guest, host, gva = nested_setup(g, h)
    nw = nested_walk(guest, host, gva)
    assert nw.fault is None
    assert nw.refs == nested_walk_refs(g.nlevels, h.nlevels) == \
        (g.nlevels + 1) * (h.nlevels + 1) - 1
    assert [s.dim for s in nw.steps] == (["host"] * h.nlevels + ["guest"]) * g.nlevels + \
        ["host"] * h.nlevels
    # each guest entry is read at the hPA that the host walk just before it produced
    gsteps = [i for i, s in enumerate(nw.steps) if s.dim == "guest"]
    for i in gsteps:
        entry_gpa = nw.steps[i].step.addr
        assert host.translate(entry_gpa, set_ad=False).pa == nw.steps[i].hpa
        level = nw.steps[i].step.level
        assert nw.steps[i - 1].why == f"guest {level} entry at gPA {entry_gpa:#x}"
    assert [nw.steps[i].step.level for i in gsteps] == list(g.level_names)
    gpa = guest.translate(gva).pa
    assert gpa == nw.gpa == 9 << g.page_shift | 5
    assert nw.hpa == host.translate(gpa).pa
    assert "data at gPA" in nw.steps[-1].why


def test_nested_walk_x86_64_is_24_and_explains() -> None:
    """x86-64 on x86-64: 24 references, 20 of them in host tables."""
    guest, host, gva = nested_setup(X86_64, X86_64)
    nw = nested_walk(guest, host, gva)
    assert nw.refs == 24 == nested_walk_refs(4, 4)
    assert sum(s.dim == "host" for s in nw.steps) == 20
    text = nw.explain()
    assert len(text) == 25 and text[0].startswith(" 1. host  PML4[")
    assert "guest PML4 entry at gPA" in text[0] and text[-1].endswith("24 references")
    assert (nested_walk_refs(3, 3), nested_walk_refs(5, 5), nested_walk_refs(2, 2)) == (15, 35, 8)


def test_nested_walk_faults() -> None:
    """Who faults: the guest (its own PTE missing) or the host (an EPT violation)?"""
    guest, host, gva = nested_setup(X86_64, X86_64)
    missing = nested_walk(guest, host, X86_64.va(0))
    assert (missing.fault, missing.stage) == (Fault.NOT_PRESENT, "guest")
    assert missing.refs == 4 + 1  # the host walk for the PML4 entry, then the empty entry
    host.unmap(9)  # the guest's data page loses its host frame
    ept = nested_walk(guest, host, gva)
    assert (ept.fault, ept.stage, ept.gpa) == (Fault.NOT_PRESENT, "host", 9 << 12 | 5)
    assert ept.refs == 24 and ept.hpa is None
    host.clear_flags(guest.root, Pte.W)  # irrelevant to reads of the guest tables
    host.map(9, 200)  # read-only in the host: a shared page
    assert nested_walk(guest, host, gva).fault is None
    cow = nested_walk(guest, host, gva, "write")
    assert (cow.fault, cow.stage) == (Fault.WRITE_PROTECT, "host")
    with pytest.raises(ParameterError):
        nested_walk_refs(-1, 4)
