"""Memory management: page tables and the page walk, the TLB (more mechanisms join here).

    pagetable.py   multi-level page tables as numpy arrays, walk / translate / map,
                   the nested (EPT/NPT) walk and its reference count
    tlb.py         a set-associative, ASID-tagged TLB
"""

from __future__ import annotations

from xipmodel.mm.pagetable import (
    Fault,
    NestedStep,
    NestedWalk,
    PageTable,
    TableFrames,
    Translation,
    WalkResult,
    WalkStep,
    nested_walk,
    nested_walk_refs,
)
from xipmodel.mm.tlb import TLB

__all__ = [
    "TLB",
    "Fault",
    "NestedStep",
    "NestedWalk",
    "PageTable",
    "TableFrames",
    "Translation",
    "WalkResult",
    "WalkStep",
    "nested_walk",
    "nested_walk_refs",
]
