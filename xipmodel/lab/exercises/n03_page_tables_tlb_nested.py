"""The exercises of notebooks/03_page_tables_tlb_nested.ipynb (page tables, TLB, nested walks).

    tiny_translate  03.1  translate a VA on OSTEP's TINY machine (compute)
    nested_refs     03.2  memory references of k nested (2D) walks (compute)
    tlb_hits        03.3  hits of a small LRU TLB (predict, then verify)
    tlb_construct   03.4  a reference string with exactly H TLB hits (construct)
    nested_open     03.5  what a TLB hit ratio makes of a nested walk (open)

`EXERCISES` maps each name to its factory (seed → Exercise); the package's catalogue
gathers these in notebook order.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


_NESTED: Final = ("sv39", "x86_64", "s390x")


def _nested_walk(gname: str, hname: str) -> Any:
    """One nested walk of a guest with `gname` tables on a host with `hname` tables."""
    from xipmodel.mm.pagetable import PageTable, TableFrames, nested_walk
    from xipmodel.params import PRESETS

    gp, hp = PRESETS[gname], PRESETS[hname]
    guest = PageTable(gp, alloc_table=TableFrames(first=1).alloc)
    gva = 0x400000
    guest.map(gva >> gp.page_shift, 0x200)
    host = PageTable(hp, alloc_table=TableFrames(first=0x1000).alloc)
    data = guest.walk(gva).pa
    assert data is not None, "nested_refs: the guest page is mapped"
    for gfn in sorted({*guest.tables, data >> gp.page_shift}):
        host.map(gfn, 0x800 + gfn)
    return nested_walk(guest, host, gva)


def _nested_refs(seed: int) -> Exercise:
    from xipmodel.params import PRESETS

    rng = exercise_rng(seed, "nested_refs")
    gname, hname = (_NESTED[int(i)] for i in rng.integers(3, size=2))
    pages = int(rng.integers(2, 7))
    with_data = bool(rng.integers(2))
    g, h = PRESETS[gname].nlevels, PRESETS[hname].nlevels

    def answer(_: int) -> int:
        # nested_walk counts the final host walk of the data's gPA, not the data read itself.
        return pages * (int(_nested_walk(gname, hname).refs) + int(with_data))

    def mistakes(_: int) -> dict[int, str]:
        extra = int(with_data)
        return {pages * (g + h + extra): "g + h is two separate walks; in a nested walk "
                                         "every guest entry needs a host walk first",
                pages * (g * h + extra): "g·h leaves out the guest entries themselves and "
                                         "the host walk of the final guest-physical address",
                pages * (g * h + g + h + 1 - extra): "check whether the data reads are counted"}

    def explain(_: int) -> str:
        refs = (g + 1) * (h + 1) - 1
        return "\n".join([
            f"Guest {gname}: {g} levels; host {hname}: {h} levels. Each of the {g} guest "
            f"entries sits at a guest-physical address the host walks first ({h} references), "
            f"then is read itself; the final guest-physical address is walked too: "
            f"g·h + g + h = ({g}+1)({h}+1) − 1 = {refs} per TLB miss.",
            f"{pages} pages × ({refs}" + (" + 1 data read" if with_data else "") + ") = "
            f"{answer(seed)}.",
            "nested_walk(guest, host, 0x400000).explain():",
            *_nested_walk(gname, hname).explain()])

    counted = ("all memory references, the data reads included" if with_data else
               "the page-table references only (not the data reads)")
    return Exercise(
        f"A guest with {gname} page tables runs on a host whose nested (EPT/NPT) tables are "
        f"{hname}. A process reads one word on each of {pages} pages it has not touched "
        "before (they are mapped; the TLB misses every time, no paging-structure caches). "
        f"How many memory references are made in total, counting {counted}?",
        answer, explain, seed, name="03.2", unit="references", mistakes=mistakes,
        hint="Every guest-table entry is itself at a guest-physical address: it needs a "
             "whole host walk before it can be read; so does the final guest-physical "
             "address.")


def _tlb_refs(seed: int) -> tuple[int, list[int]]:
    rng = exercise_rng(seed, "tlb_hits")
    entries = int(rng.choice([2, 3, 4]))
    return entries, [int(v) for v in rng.integers(0, entries + 2, size=12)]


def _tlb_run(entries: int, refs: list[int]) -> tuple[int, list[str]]:
    """A fully associative LRU TLB of `entries`, starting empty: hits, and each step."""
    from xipmodel.mm.tlb import TLB

    tlb = TLB(entries, policy="lru")
    lines = []
    for vpn in refs:
        hit = bool(tlb.run(0, [vpn])[0])
        held = [e[2] for e in tlb.contents()]
        lines.append(f"  VPN {vpn}: {'hit ' if hit else 'miss'}  TLB (LRU first) {held}")
    return tlb.hits, lines


def _tlb_hits(seed: int) -> Exercise:
    entries, refs = _tlb_refs(seed)

    def answer(_: int) -> int:
        return _tlb_run(entries, refs)[0]

    def mistakes(_: int) -> dict[int, str]:
        from xipmodel.policies import simulate

        return {int(simulate(refs, entries, "fifo").hits): "that is FIFO's count: LRU moves "
                                                          "a page to the back on every hit"}

    def explain(_: int) -> str:
        hits, lines = _tlb_run(entries, refs)
        return "\n".join([f"TLB({entries}, policy='lru'), fully associative:", *lines,
                          f"{hits} hits, {len(refs) - hits} misses."])

    return Exercise(
        f"A fully associative TLB of {entries} entries with LRU replacement starts empty. "
        f"One process touches virtual pages {', '.join(map(str, refs))}. How many TLB hits?",
        answer, explain, seed, name="03.3", unit="hits", kind="predict", mistakes=mistakes,
        hint="Track the TLB contents after every reference; on a miss with a full TLB the "
             "least recently used entry goes.")


def _tlb_construct(seed: int) -> Exercise:
    rng = exercise_rng(seed, "tlb_construct")
    entries = int(rng.choice([2, 3, 4]))
    length = int(rng.integers(8, 13))
    distinct = entries + int(rng.integers(1, 3))
    hits = int(rng.integers(1, length - distinct + 1))

    def accept(text: str) -> tuple[bool, str]:
        refs = [int(t) for t in re.findall(r"\d+", text)]
        if len(refs) != length or any(r > 9 for r in refs):
            return False, (f"give exactly {length} page numbers from 0 to 9 "
                           f"(read {len(refs)}).")
        got, _lines = _tlb_run(entries, refs)
        if len(set(refs)) < distinct:
            return False, f"only {len(set(refs))} distinct pages; at least {distinct} asked."
        if got != hits:
            return False, f"that string makes {got} hits, not {hits}."
        return True, f"{got} hits with {len(set(refs))} distinct pages."

    def example() -> list[int]:
        # page 0 again and again (hits after the first), then new pages (misses)
        return [0] * (hits + 1) + list(range(1, length - hits))

    def answer(_: int) -> tuple[int, ...]:
        return tuple(example())

    def explain(_: int) -> str:
        got, lines = _tlb_run(entries, example())
        return "\n".join([f"One string: page 0 {hits + 1} times ({hits} hits), then new "
                          f"pages, each a miss:", *lines, f"{got} hits. Many others work: "
                          "the model checks any string."])

    return Exercise(
        f"Write a string of exactly {length} virtual page numbers (0–9) with at least "
        f"{distinct} distinct pages on which a fully associative LRU TLB of {entries} "
        f"entries, starting empty, makes exactly {hits} hits.",
        answer, explain, seed, name="03.4", kind="construct", accept=accept,
        hint="A hit needs a page still among the last few distinct pages used.")


_HIT_RATIOS: Final = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


def _nested_open(seed: int) -> Exercise:
    from xipmodel.params import PRESETS

    rng = exercise_rng(seed, "nested_open")
    gname, hname = (_NESTED[int(i)] for i in rng.integers(3, size=2))
    ratio = float(rng.choice(_HIT_RATIOS))
    g, h = PRESETS[gname].nlevels, PRESETS[hname].nlevels

    def answer(_: int) -> str:
        native = 1 + (1 - ratio) * g
        nested = 1 + (1 - ratio) * ((g + 1) * (h + 1) - 1)
        return (f"Per access: 1 data reference + (1 − {ratio}) × walk references. Native "
                f"({g} levels): 1 + {1 - ratio:.3f} × {g} = {native:.3f}; nested "
                f"({(g + 1) * (h + 1) - 1} per walk): {nested:.3f}, {nested / native:.2f} × "
                "the native cost. A high hit ratio hides most of the 2D walk; the walk cost "
                "matters when the working set outgrows the TLB (a cold start, many small "
                "processes, like the Host runs of this notebook where nearly every access "
                "is a first touch and about half miss). Paging-structure caches (and the "
                "host's own TLB of guest-physical translations) skip the upper levels of "
                "both dimensions; huge pages in the guest or host remove a level; XIP does "
                "not change the walk, only where its last entry points.")

    def explain(_: int) -> str:
        return f"nested_walk_refs({g}, {h}) = {(g + 1) * (h + 1) - 1}."

    return Exercise(
        f"A guest with {gname} page tables runs on a host with {hname} nested tables, and "
        f"its TLB hits on {ratio:.1%} of accesses. Estimate the memory references per access "
        "(the data reference included) with and without nested paging. When does the "
        "nested walk matter, and what would reduce it?",
        answer, explain, seed, name="03.5", kind="open",
        hint="Count references per access as 1 + miss ratio × walk length.")


EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "tiny_translate": _tiny_translate,
    "nested_refs": _nested_refs,
    "tlb_hits": _tlb_hits,
    "tlb_construct": _tlb_construct,
    "nested_open": _nested_open,
}
