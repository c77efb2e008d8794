"""Seeded, self-checking exercises for the notebooks: OSTEP homework, graded in place.

    ex = exercise("readaround", seed=3)    an Exercise of the catalogue `EXERCISES`
    ex                                     in a notebook: question, answer box, Check, Solution
    ex.check("16 47"), ex.solution()       grade an answer; print the worked answer

Start with `core`: the Exercise (answer parsing, checking, the widget) and the seeded
helpers the exercises share. Each notebook's exercises live beside it, in a module
named after it (n04_faults_readahead_lru for notebooks/04_faults_readahead_lru.ipynb)
that holds its part of the catalogue (`EXERCISES`):

    n00_start_here               xip_saving, pte_target
    n01_xip_vs_pagecache         per_guest, largest_category, ratio_guests, variants_open
    n02_frozen_ext2              block_of_page, indirect_blocks, file_size, frozen_open
    n03_page_tables_tlb_nested   tiny_translate, nested_refs, tlb_hits, tlb_construct,
                                 nested_open
    n04_faults_readahead_lru     readaround, ra_windows, fifo_belady, policy_misses,
                                 lru_vs_fifo, fault_flags
    n05_cow_ksm_limits           cow_frames, ksm_pass, heap_share, cow_construct, ksm_open
    n06_experiments_at_scale     firecracker, break_even, share_target, fit_open
    n07_recorded_programs        trace_shared, trace_disk, ra_budget, overfetch_open
                                 (and first_touches)

Each exercise has a kind (core.KINDS): compute, predict (then verify), construct (the
model checks the student's input) or open (a model answer for the teacher). `key`
prints a notebook's answers, worked solutions and model answers for a range of seeds:
the teacher's key, `python -m xipmodel key --notebook 04 --seeds 1-40`.

To add an exercise: a factory (seed → Exercise) in its notebook's module, an entry in
that module's `EXERCISES`, and `exercise("<name>", SEED)` in the notebook.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from xipmodel.errors import ParameterError
from xipmodel.lab.exercises import (
    n00_start_here,
    n01_xip_vs_pagecache,
    n02_frozen_ext2,
    n03_page_tables_tlb_nested,
    n04_faults_readahead_lru,
    n05_cow_ksm_limits,
    n06_experiments_at_scale,
    n07_recorded_programs,
)
from xipmodel.lab.exercises.core import Answer, Exercise
from xipmodel.lab.exercises.n07_recorded_programs import first_touches
from xipmodel.workloads.recorded import trace_image

__all__ = ["EXERCISES", "Answer", "Exercise", "exercise", "first_touches", "trace_image"]

EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    **n00_start_here.EXERCISES,
    **n01_xip_vs_pagecache.EXERCISES,
    **n02_frozen_ext2.EXERCISES,
    **n03_page_tables_tlb_nested.EXERCISES,
    **n04_faults_readahead_lru.EXERCISES,
    **n05_cow_ksm_limits.EXERCISES,
    **n06_experiments_at_scale.EXERCISES,
    **n07_recorded_programs.EXERCISES,
}


def exercise(name: str, seed: int = 0) -> Exercise:
    """The catalogue's exercise `name` for `seed` (change the seed for another question)."""
    if name not in EXERCISES:
        raise ParameterError(f"exercise: {name!r} is not one of {', '.join(EXERCISES)}")
    if seed < 0:
        raise ParameterError(f"exercise: seed {seed} must be >= 0")
    return EXERCISES[name](seed)
