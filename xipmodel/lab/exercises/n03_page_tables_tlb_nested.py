"""The exercises of notebooks/03_page_tables_tlb_nested.ipynb (page tables, TLB, nested walks).

    tiny_translate  03.1  translate a VA on OSTEP's TINY machine
    nested_refs     03.2  memory references of one nested (2D) walk
    tlb_hits        03.3  hits of a small LRU TLB

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, Final

import numpy as np

from xipmodel.lab.exercises.core import Exercise, exercise_rng

__all__ = ["EXERCISES"]


def _tiny_table(seed: int) -> tuple[Any, int]:
    """A TINY page table with a few seeded mappings, and the VA to translate."""
    from xipmodel.mm.pagetable import PageTable, TableFrames
    from xipmodel.params import TINY

    rng = exercise_rng(seed, "tiny_translate")
    frames = TableFrames(first=1)
    pt = PageTable(TINY, alloc_table=frames.alloc)
    data = [int(f) for f in rng.choice(np.arange(40, 128), size=6, replace=False)]
    vpns = sorted(int(v) for v in rng.choice(1 << 10, size=6, replace=False))
    for vpn, pfn in zip(vpns, data, strict=True):
        pt.map(vpn, pfn)
    vpn = vpns[int(rng.integers(len(vpns)))]
    va = vpn << TINY.page_shift | int(rng.integers(TINY.page_size))
    return pt, va


def _tiny_translate(seed: int) -> Exercise:
    from xipmodel.params import TINY

    pt, va = _tiny_table(seed)

    def dump() -> str:
        lines = [f"PDBR (root table frame) = {pt.root:#04x}"]
        for frame in sorted(pt.tables):
            entries = pt.tables[frame]
            valid = [(i, int(e)) for i, e in enumerate(entries.tolist()) if e]
            lines.append(f"table in frame {frame:#04x}: " + ", ".join(
                f"[{i}]={e:#04x}" for i, e in valid))
        return "\n".join(lines)

    def answer(_: int) -> int:
        pa = pt.walk(va).pa
        assert pa is not None, "tiny_translate: the chosen VA is mapped"
        return int(pa)

    def explain(_: int) -> str:
        return "\n".join([
            f"VA {va:#06x} = {va:015b}: PD index {va >> 10}, PT index {(va >> 5) & 31}, "
            f"offset {va & 31}.",
            *pt.walk(va).explain()])

    return Exercise(
        lambda s: ("The TINY machine (OSTEP's paging-multilevel-translate): 32-byte pages, "
                   "15-bit VAs = 5-bit PD index | 5-bit PT index | 5-bit offset; an entry is "
                   f"one byte, {TINY.pte_present:#x} = valid, low 7 bits = frame.\n"
                   + dump() + f"\nTranslate VA {va:#06x}: which physical address? (hex)"),
        answer, explain, seed, name="03.1", show_hex=True,
        hint="Split the VA into PD index, PT index and offset; follow the PD entry to the "
             "page table, the PT entry to the frame; PA = frame × 32 + offset.")


def _nested_refs(seed: int) -> Exercise:
    from xipmodel.params import PRESETS

    rng = exercise_rng(seed, "nested_refs")
    names = ("sv39", "x86_64", "s390x")
    gname, hname = names[int(rng.integers(3))], names[int(rng.integers(3))]

    def walk() -> Any:
        from xipmodel.mm.pagetable import PageTable, TableFrames, nested_walk

        gp, hp = PRESETS[gname], PRESETS[hname]
        guest = PageTable(gp, alloc_table=TableFrames(first=1).alloc)
        gva = 0x400000
        guest.map(gva >> gp.page_shift, 0x200)
        host = PageTable(hp, alloc_table=TableFrames(first=0x1000).alloc)
        data = guest.walk(gva).pa
        assert data is not None
        for gfn in sorted({*guest.tables, data >> gp.page_shift}):
            host.map(gfn, 0x800 + gfn)
        return nested_walk(guest, host, gva)

    def answer(_: int) -> int:
        return int(walk().refs)

    def explain(_: int) -> str:
        g, h = PRESETS[gname].nlevels, PRESETS[hname].nlevels
        return "\n".join([
            f"Guest {gname}: {g} levels; host {hname}: {h} levels. Each of the {g} guest "
            f"entries sits at a guest-physical address the host walks first ({h} references), "
            f"then is read itself; the final guest-physical address is walked too: "
            f"g·h + g + h = ({g}+1)({h}+1) − 1 = {(g + 1) * (h + 1) - 1}.",
            "nested_walk(guest, host, 0x400000).explain():", *walk().explain()])

    return Exercise(
        f"A guest with {gname} page tables runs on a host whose nested (EPT/NPT) tables are "
        f"{hname}. On a TLB miss, with no paging-structure caches, how many memory "
        "references does one translation make?",
        answer, explain, seed, name="03.2",
        hint="Every guest-table entry is itself at a guest-physical address: it needs a "
             "whole host walk before it can be read. Count g·h + g + h.")


def _tlb_hits(seed: int) -> Exercise:
    rng = exercise_rng(seed, "tlb_hits")
    entries = int(rng.choice([2, 3, 4]))
    refs = [int(v) for v in rng.integers(0, entries + 2, size=12)]

    @cache
    def run() -> tuple[int, list[str]]:
        from xipmodel.mm.tlb import TLB

        tlb = TLB(entries, policy="lru")
        lines = []
        for vpn in refs:
            hit = bool(tlb.run(0, [vpn])[0])
            held = [e[2] for e in tlb.contents()]
            lines.append(f"  VPN {vpn}: {'hit ' if hit else 'miss'}  TLB (LRU first) {held}")
        return tlb.hits, lines

    def answer(_: int) -> int:
        return run()[0]

    def explain(_: int) -> str:
        hits, lines = run()
        return "\n".join([f"TLB({entries}, policy='lru'), fully associative:", *lines,
                          f"{hits} hits, {len(refs) - hits} misses."])

    return Exercise(
        f"A fully associative TLB of {entries} entries with LRU replacement starts empty. "
        f"One process touches virtual pages {', '.join(map(str, refs))}. How many TLB hits?",
        answer, explain, seed, name="03.3",
        hint="Track the TLB contents after every reference; on a miss with a full TLB the "
             "least recently used entry goes.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "tiny_translate": _tiny_translate,
    "nested_refs": _nested_refs,
    "tlb_hits": _tlb_hits,
}
