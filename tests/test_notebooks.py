"""The course in notebooks/: is it committed so that `pytest --nbval` really tests it?

nbval runs every notebook and compares each cell's outputs with the committed ones,
but a cell without an execution count or outputs is never compared (JUPYTER.md
pitfall 4), and widget state must not be committed (pitfall 1). These tests read
the committed files; the exercises are checked from Python, as a student's answers
would be.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from xipmodel.errors import ParameterError
from xipmodel.lab.exercises import EXERCISES, Exercise, exercise

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
COURSE = ("00_start_here", "01_xip_vs_pagecache", "02_frozen_ext2",
          "03_page_tables_tlb_nested", "04_faults_readahead_lru", "05_cow_ksm_limits",
          "06_experiments_at_scale", "07_recorded_programs")
MIN_COMPARED = 5
MAX_BYTES = 500_000
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def load(name: str) -> dict[str, Any]:
    nb: dict[str, Any] = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text(encoding="utf-8"))
    return nb


def source(cell: dict[str, Any]) -> str:
    src = cell["source"]
    return src if isinstance(src, str) else "".join(src)


def compared_text(cell: dict[str, Any]) -> list[str]:
    """What nbval compares of a cell's outputs, leaving out widget views (random model ids)."""
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append("".join(o["text"]))
        elif o["output_type"] in ("execute_result", "display_data"):
            out += ["".join(v) if isinstance(v, list) else json.dumps(v)
                    for k, v in o["data"].items() if k != WIDGET_VIEW]
    return out


def printed_cells(nb: dict[str, Any]) -> list[dict[str, Any]]:
    """Code cells that ran and printed text (numbers, tables, traces) that nbval compares."""
    return [c for c in nb["cells"] if c["cell_type"] == "code" and c.get("execution_count")
            and any(o["output_type"] == "stream" and o.get("name") == "stdout"
                    and "".join(o["text"]).strip() for o in c.get("outputs", []))]


def test_the_course_is_all_there() -> None:
    """Are the eight notebooks there, and nothing else numbered?"""
    found = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert found == list(COURSE)
    assert (NOTEBOOKS / "nbval_sanitize.cfg").is_file()


@pytest.mark.parametrize("name", COURSE)
def test_notebook_has_compared_cells(name: str) -> None:
    """Does nbval compare enough printed output, from one top-to-bottom run?"""
    nb = load(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{name}: not run top to bottom: {counts}"
    printed = printed_cells(nb)
    assert len(printed) >= MIN_COMPARED, f"{name}: only {len(printed)} cells print text"
    compared = [c for c in code if any(t.strip() for t in compared_text(c))]
    assert len(compared) >= len(printed)


@pytest.mark.parametrize("name", COURSE)
def test_notebook_is_small_and_has_no_widget_state(name: str) -> None:
    """No widget state, no errors, no stderr noise, and under ~500 KB?"""
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.stat().st_size < MAX_BYTES, f"{name}: {path.stat().st_size} bytes"
    nb = load(name)
    assert "widgets" not in nb["metadata"], f"{name}: widget state stored"
    text = path.read_text(encoding="utf-8")
    assert "application/vnd.jupyter.widget-state+json" not in text
    for cell in nb["cells"]:
        for o in cell.get("outputs", []):
            assert o["output_type"] != "error", f"{name}: {o.get('ename')}: {o.get('evalue')}"
            assert not (o["output_type"] == "stream" and o.get("name") == "stderr"), (
                f"{name}: stderr in the outputs: {''.join(o['text'])[:200]}")


@pytest.mark.parametrize("name", COURSE)
def test_notebook_starts_with_goals_and_ends_with_exercises(name: str) -> None:
    """Learning goals first; an exercises section; no solution stored (the key has them)."""
    nb = load(name)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and "What you will learn" in source(first)
    headings = [source(c) for c in nb["cells"] if c["cell_type"] == "markdown"]
    assert any(re.search(r"^## Exercises", h, re.M) for h in headings)
    exercises = [c for c in nb["cells"] if c["cell_type"] == "code"
                 and re.search(r'exercise\("(\w+)"', source(c))]
    assert exercises, f"{name}: no exercise cell"
    for cell in exercises:
        shown = compared_text(cell)
        assert any(t.startswith("Exercise ") for t in shown), "the question is compared as text"
    assert not [c for c in nb["cells"] if "solution" in c["metadata"].get("tags", [])]
    assert not any("Answer:" in t for c in nb["cells"] for t in compared_text(c))


def test_every_exercise_is_used_by_a_notebook() -> None:
    """Is each exercise of the catalogue assigned somewhere in the course?"""
    used = set()
    for name in COURSE:
        for cell in load(name)["cells"]:
            used |= set(re.findall(r'exercise\("(\w+)"', source(cell)))
    assert used == set(EXERCISES)


def test_notebook_01_has_the_dashboard_with_guests_and_modes() -> None:
    """The browser test opens notebook 01: does it display the comparison dashboard?"""
    cells = [source(c) for c in load("01_xip_vs_pagecache")["cells"] if c["cell_type"] == "code"]
    shown = [s for s in cells if "comparison_dashboard(" in s and s.strip().endswith("dashboard")]
    assert shown, "a cell ending with the dashboard as its value"
    views = [c for c in load("01_xip_vs_pagecache")["cells"] if c["cell_type"] == "code"
             and source(c) in shown and any(WIDGET_VIEW in o.get("data", {})
                                              for o in c.get("outputs", []))]
    assert views and "IntSlider" in "".join(compared_text(views[0]))


def test_teachers_readme_maps_the_course() -> None:
    """Does notebooks/README.md name every notebook and both Binder launch forms?"""
    text = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    for name in COURSE:
        assert f"{name}.ipynb" in text
    assert "urlpath=lab/tree/notebooks/00_start_here.ipynb" in text
    assert "urlpath=voila/render/notebooks/01_xip_vs_pagecache.ipynb" in text
    assert "python3 dev.py lab" in text


# ── the exercises, graded from Python ───────────────────────────────────────────────────

def _wrong(ex: Exercise) -> object:
    """An answer that is certainly wrong, of the right kind."""
    a = ex.answer
    if isinstance(a, str):
        assert ex.choices is not None
        return next(c for c in ex.choices if c != a)
    if isinstance(a, tuple):
        return " ".join(str(v + 1) for v in a)
    if isinstance(a, float):
        return a + 10 * ex.tolerance + 1
    return a + 1


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_exercise_grades_its_own_answer(name: str) -> None:
    """For two seeds: is the model's answer right, a wrong one wrong, the solution worked?"""
    for seed in (0, 1):
        ex = exercise(name, seed)
        ok, message = ex.check(ex.shown(ex.answer))
        assert ok and message.startswith(("Right", "Noted")), (name, seed, message)
        solution = ex.solution_text()
        if ex.kind == "open":
            assert solution.rstrip().endswith(f"Model answer: {ex.answer}")
            assert not ex.check("")[0]
        else:
            label = "One answer" if ex.kind == "construct" else "Answer"
            assert solution.rstrip().endswith(f"{label}: {ex.shown(ex.answer)}")
        if ex.kind in ("compute", "predict"):
            ok, message = ex.check(_wrong(ex))
            assert not ok and message.startswith("Not quite"), (name, seed, message)
            assert ex.hint and ex.hint in message
        assert ex.prompt and str(ex).startswith(f"Exercise {ex.name} (seed {seed}")
        again = exercise(name, seed)
        assert again.answer == ex.answer and again.prompt == ex.prompt  # seeded, not random


def test_seeds_change_the_questions() -> None:
    """Another seed, another question: most exercises differ between seeds 0 to 3."""
    differ = [n for n in EXERCISES if len({exercise(n, s).prompt for s in range(4)}) > 1]
    assert len(differ) >= len(EXERCISES) - 2, sorted(set(EXERCISES) - set(differ))


def test_answers_are_read_generously() -> None:
    """Hex, thousands separators, units, case and tolerance: is a right answer recognised?"""
    ex = Exercise("n?", lambda s: 4096 + s, lambda s: "worked", seed=0, hint="h")
    assert ex.check("0x1000")[0] and ex.check("4,096 bytes")[0] and ex.check(4096)[0]
    ok, message = ex.check("4097")
    assert not ok and "too high" in message
    assert not ex.check("lots")[0] and "Could not read" in ex.check("lots")[1]
    f = Exercise("x?", lambda s: 12.3, lambda s: "", tolerance=0.1, unit="MiB")
    assert f.check("12.35 MiB")[0] and f.check(12.2)[0] and not f.check("12.5")[0]
    w = Exercise("w?", lambda s: "page cache", lambda s: "", choices=("page cache", "shared"))
    assert w.check("  Page   Cache ")[0] and not w.check("shared")[0]
    t = Exercise("t?", lambda s: (4, 8, 16, 32), lambda s: "")
    assert t.check("4, 8, 16, 32")[0] and t.check("[4 8 16 32]")[0]
    assert "4 numbers" in t.check("4 8")[1]
    with pytest.raises(ParameterError, match="not one of"):
        exercise("nope")
    with pytest.raises(ParameterError, match="seed"):
        exercise("tlb_hits", -1)


def test_exercise_widget_grades_and_reveals() -> None:
    """A student types an answer and presses Check; opens the solution: what do they see?"""
    ex = exercise("tlb_hits", 2)
    box = ex.widget()
    assert box.controller is ex
    question, row, feedback, accordion = box.children
    text, button = row.children
    assert "TLB" in question.value and accordion.selected_index is None
    text.value = str(ex.answer)
    assert "✔" in feedback.value and "Right" in feedback.value
    text.value = str(int(ex.answer) + 1)
    assert "✘" in feedback.value
    button.click()
    assert "✘" in feedback.value
    show, out = accordion.children[0].children
    show.click()
    assert "Answer:" in "".join(o.get("text", "") for o in out.outputs)
    bundle = ex._repr_mimebundle_()
    assert bundle["text/plain"].startswith("Exercise 03.3 (seed 2") and WIDGET_VIEW in bundle
