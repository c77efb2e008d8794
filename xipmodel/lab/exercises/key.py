"""The teacher's key: every exercise of a notebook, for a range of seeds, with the answers,
the worked solutions and the model answers to the open questions.

    python -m xipmodel key --notebook 04 --seeds 1-40     the whole key, seed by seed
    python -m xipmodel key --notebook 04 --seeds 1-40 --answers-only
                                                          one line per seed, for grading
    teacher_key("04", range(1, 41))                       the same text, from Python

Students set SEED to their student number; the key for their seeds is what a teacher
grades against. It is computed by the model, like the answers the notebooks check, so it
never disagrees with what a student's Check button said. Nothing here draws a widget.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Sequence
from typing import Final

from xipmodel.errors import ParameterError
from xipmodel.lab.exercises.core import Exercise

__all__ = ["NOTEBOOKS", "add_arguments", "parse_seeds", "run_command", "teacher_key"]

NOTEBOOKS: Final = ("00_start_here", "01_xip_vs_pagecache", "02_frozen_ext2",
                    "03_page_tables_tlb_nested", "04_faults_readahead_lru",
                    "05_cow_ksm_limits", "06_experiments_at_scale", "07_recorded_programs")
MAX_SEEDS: Final = 500  # one class; the key of a seed costs up to a few model runs
MAX_SEED: Final = 10**6


def notebook_named(name: str) -> str:
    """'04', '4' or '04_faults_readahead_lru' → '04_faults_readahead_lru'."""
    wanted = name.strip().removesuffix(".ipynb")
    for nb in NOTEBOOKS:
        if wanted in (nb, nb[:2]) or (wanted.isdigit() and int(wanted) == int(nb[:2])):
            return nb
    raise ParameterError(f"notebook {name!r} is not one of 00 … 07 "
                         f"({', '.join(NOTEBOOKS)})")


def parse_seeds(text: str) -> list[int]:
    """'1-40', '3' or '1,4,10-12' → the seeds, in order, each once."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[-–]\s*(\d+)\s*)?", part)
        if not m:
            raise ParameterError(f"--seeds {text!r}: write seeds as 3, 1-40 or 1,4,10-12")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first or last > MAX_SEED:
            raise ParameterError(f"--seeds {part.strip()!r}: a range goes up, to at "
                                 f"most {MAX_SEED}")
        if last - first + 1 + len(seeds) > MAX_SEEDS:
            raise ParameterError(f"--seeds {text!r}: at most {MAX_SEEDS} seeds at once")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    return seeds


def _exercises(notebook: str, seed: int) -> list[tuple[str, Exercise]]:
    module = importlib.import_module(f"xipmodel.lab.exercises.n{notebook}")
    return [(name, factory(seed)) for name, factory in module.EXERCISES.items()]


def _short(ex: Exercise) -> str:
    """The answer in one cell of the grading table."""
    if ex.kind == "open":
        return "(open)"
    shown = ex.shown(ex.answer)
    return f"e.g. {shown}" if ex.kind == "construct" else shown


def teacher_key(notebook: str, seeds: Sequence[int], answers_only: bool = False) -> str:
    """The key of `notebook` (a name parse_seeds and notebook_named accept) for `seeds`."""
    nb = notebook_named(notebook)
    lines = [f"Teacher's key: notebooks/{nb}.ipynb, seeds "
             f"{', '.join(map(str, seeds[:8]))}{' …' if len(seeds) > 8 else ''}", ""]
    if answers_only:
        for seed in seeds:
            cells = [f"{ex.name} {_short(ex)}" for _name, ex in _exercises(nb, seed)]
            lines.append(f"seed {seed:4}: " + " | ".join(cells))
        return "\n".join(lines) + "\n"
    for seed in seeds:
        lines += [f"════ seed {seed} " + "═" * 60, ""]
        for name, ex in _exercises(nb, seed):
            lines += [f"── {ex.name} {name} ({ex.kind}) ──", ex.prompt, "",
                      ex.solution_text(), ""]
    return "\n".join(lines).rstrip() + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `key` subcommand's options."""
    parser.add_argument("--notebook", required=True, metavar="NN",
                        help="which notebook: 00 … 07 (or its name)")
    parser.add_argument("--seeds", default="0", metavar="A-B",
                        help="the students' seeds: 3, 1-40 or 1,4,10-12 (default 0)")
    parser.add_argument("--answers-only", action="store_true",
                        help="one line per seed with the answers, for grading")


def run_command(args: argparse.Namespace) -> int:
    """`python -m xipmodel key`: print the key; bad input raises ParameterError."""
    print(teacher_key(args.notebook, parse_seeds(args.seeds), args.answers_only), end="")
    return 0
