"""The course as a teacher adopts it (issue 13): questions that differ per student, answers
nowhere in sight before the student answers, natural answers read, every OSTEP kind asked.

These tests read the committed notebooks (their stored outputs, as an HTML export shows
them) and ask the exercise catalogue from Python, as a student's answers would be.
"""

from __future__ import annotations

import re
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from test_notebooks import COURSE, NOTEBOOKS, compared_text, load, source

from xipmodel.lab.exercises import EXERCISES, Exercise, exercise
from xipmodel.quiz import make_question

MIN_DISTINCT = 30


def _seed(nb: dict[str, Any]) -> int:
    code = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "code")
    m = re.search(r"^SEED = (\d+)", code, re.M)
    assert m, "the notebook sets SEED"
    return int(m.group(1))


def _asked(nb: dict[str, Any]) -> list[str]:
    code = "\n".join(source(c) for c in nb["cells"] if c["cell_type"] == "code")
    return re.findall(r"""\bexercise\(\s*["'](\w+)["']""", code)


def answer_forms(ex: Exercise) -> list[str]:
    """The answer as a notebook would print it: the feedback's form, and the usual formats.

    Small whole numbers (below 10) are only looked for with their unit ("3 hits"): bare,
    they are in every table. Words are only looked for in the question itself.
    """
    a = ex.answer
    forms = set()
    if isinstance(a, (bool, str)):
        return []
    if isinstance(a, float):
        forms |= {f"{a:.1f}", f"{a:.2f}", ex.shown(a)}
        if ex.unit == "%":
            forms |= {f"{a / 100:.0%}", f"{a / 100:.1%}", f"{a / 100:.2f}"}
    elif isinstance(a, int):
        if ex.unit:
            forms.add(ex.shown(a))
        if abs(a) >= 10:
            forms |= {str(a), f"{a:,}", f"{a:#x}"}
    else:
        forms |= {" ".join(map(str, a)), ", ".join(map(str, a)), str(list(a))}
        if len(a) == 2:
            forms |= {f"{a[0]}-{a[1]}", f"{a[0]}–{a[1]}"}
    return sorted(forms)


def leaks(ex: Exercise, texts: list[str]) -> list[str]:
    """The forms of `ex`'s answer found in `texts` as whole tokens."""
    found = []
    for form in answer_forms(ex):
        pattern = re.compile(r"(?<![\w.])" + re.escape(form) + r"(?![\w]|\.\d)")
        found += [f"{form!r} in {t[:80]!r}…" for t in texts if pattern.search(t)]
    return found


# ── 1. no answer visible before the student answers ─────────────────────────────────────

@pytest.mark.parametrize("name", COURSE)
def test_no_stored_output_holds_an_answer(name: str) -> None:
    """For the notebook's SEED: does any stored output (or question) give an answer away?"""
    nb = load(name)
    seed = _seed(nb)
    texts = [t for c in nb["cells"] if c["cell_type"] == "code" for t in compared_text(c)]
    assert not any("Answer:" in t or "Model answer:" in t for t in texts), "a solution stored"
    assert not [c for c in nb["cells"] if "solution" in c["metadata"].get("tags", [])]
    for asked in _asked(nb):
        ex = exercise(asked, seed)
        if ex.kind in ("open", "construct"):
            continue  # no single answer: any input the model accepts
        found = leaks(ex, texts)
        assert not found, f"{name}: {asked} (seed {seed}) answered by {found}"
        if isinstance(ex.answer, str):
            question = ex.prompt.split("\n(one of:")[0].lower()
            assert ex.answer.lower() not in question, f"{asked}: the question names it"


def test_the_leak_check_finds_a_leak() -> None:
    """The check above is meaningful: the old solution output, and a table, are found."""
    ex = exercise("xip_saving", 0)
    assert leaks(ex, [ex.solution_text()])
    policy = exercise("policy_misses", 0)
    assert leaks(policy, [f"LRU, 3 frames: {policy.answer} misses"])
    window = exercise("readaround", 0)
    first, last = window.answer  # type: ignore[misc]
    assert leaks(window, [f"pages [{first}, {last}]", f"read pages {first}–{last}"])
    assert not leaks(exercise("xip_saving", 0), ["nothing here: 1 2 3"])


# ── 2. a different question per student ─────────────────────────────────────────────────

@pytest.mark.parametrize("name", list(EXERCISES))
def test_many_distinct_prompts(name: str) -> None:
    """At least 30 distinct questions over seeds 0–49, so SEED = student number means one."""
    prompts = {exercise(name, s).prompt for s in range(50)}
    assert len(prompts) >= MIN_DISTINCT, f"{name}: {len(prompts)} distinct prompts"


# ── 3. answers read the way people write them ────────────────────────────────────────────

def natural_forms(ex: Exercise) -> list[str]:
    """Ways a student would write the right answer to `ex` (and the key's own form)."""
    a = ex.answer
    if ex.kind == "open":
        return ["Because each guest holds its own copy; XIP holds one."]
    if ex.kind == "construct":
        return [ex.shown(a)] + ([", ".join(map(str, a))] if isinstance(a, tuple) else [])
    if isinstance(a, str):
        return [a, a.upper(), a.replace(" ", ""), a.replace(" ", "_")]
    if isinstance(a, tuple):
        forms = [", ".join(map(str, a)), " ".join(map(str, a)), str(list(a))]
        if len(a) == 2:
            forms += [f"{a[0]}-{a[1]}", f"{a[0]} – {a[1]}", f"pages {a[0]} to {a[1]}"]
        return forms
    if isinstance(a, int) and ex.show_hex:
        return [f"{a:x}", f"{a:#x}", f"{a:X}", str(a)]
    if isinstance(a, int):
        forms = [str(a), f"{a:,}", f"{a} {ex.unit}".strip()]
        if ex.unit == "KiB":
            forms.append(f"{a / 1024:.4f} MiB")
        return forms
    forms = [f"{a:.2f}", f"{a} {ex.unit}".strip()]
    if ex.unit == "%":
        forms += [f"{a:.1f}%", f"{a / 100:.4f}"]
    if ex.unit == "MiB":
        forms += [f"{a * 1024:.0f} KiB"]
    return forms


@pytest.mark.parametrize("name", list(EXERCISES))
def test_natural_answers_are_read(name: str) -> None:
    """Lists with commas or spaces, ranges, bare hex, 0.86 or 86 %, "pagecache", units."""
    ex = exercise(name, 0)
    for form in natural_forms(ex):
        ok, message = ex.check(form)
        assert ok, f"{name}: {form!r} not read as {ex.shown(ex.answer)!r}: {message}"


def test_natural_forms_cover_every_kind() -> None:
    """The catalogue asks every kind of answer the issue lists, and every exercise kind."""
    answers = [exercise(n, 0) for n in EXERCISES]
    assert {e.kind for e in answers} == {"compute", "predict", "construct", "open"}
    shapes = {type(e.answer).__name__ for e in answers if e.kind in ("compute", "predict")}
    assert shapes >= {"int", "float", "str", "tuple"}
    assert any(e.show_hex for e in answers) and any(e.unit == "%" for e in answers)
    ex = Exercise("q", lambda s: 86.0, lambda s: "", tolerance=0.5, unit="%")
    ok, message = ex.check("0.86")
    assert ok and "read 0.86 as a fraction" in message, "it says which it read"
    size = Exercise("q", lambda s: 3.5, lambda s: "", tolerance=0.1, unit="MiB")
    assert size.check("3584 KiB")[0] and "as 3.5 MiB" in size.check("3584 KiB")[1]
    assert not size.check("3.5 s")[0] and "not s" in size.check("3.5 s")[1]


def test_no_bisection_beyond_a_first_hint() -> None:
    """Too high / too low is said once; afterwards a wrong number gets no direction."""
    ex = exercise("tlb_hits", 0)
    want = int(ex.answer)  # type: ignore[arg-type]
    first = ex.check(str(want + 5))[1]
    assert "too high" in first
    for guess in (want + 3, want - 1, want + 1):
        message = ex.check(str(guess))[1]
        assert "too" not in message, message


def test_feedback_names_a_likely_mistake() -> None:
    """The ramp of the default ra_pages, when the question set another: said so."""
    for seed in range(50):
        ex = exercise("readaround", seed)
        default = ex.mistakes(seed) if ex.mistakes else {}
        wrong = [a for a, why in default.items() if "default" in why and a != ex.answer]
        if wrong:
            ok, message = ex.check(" ".join(map(str, wrong[0])))  # type: ignore[call-overload]
            assert not ok and "default ra_pages = 32" in message
            return
    raise AssertionError("no seed where the default window differs")


# ── 4. the kinds OSTEP has, in every notebook from 01 on ─────────────────────────────────

@pytest.mark.parametrize("name", COURSE[1:])
def test_every_kind_in_every_notebook(name: str) -> None:
    """Predict-then-verify, construct-an-input and an open question in each of 01–07."""
    kinds = {exercise(n, 0).kind for n in _asked(load(name))}
    assert {"compute", "predict", "construct", "open"} <= kinds | {"compute"}, (name, kinds)
    assert {"predict", "construct", "open"} <= kinds, (name, kinds)


def test_predict_then_verify() -> None:
    """verify() refuses before a prediction, then shows the model's run beside it."""
    ex = exercise("tlb_hits", 4)
    assert ex.kind == "predict"
    ex.check("0")
    ex2 = exercise("tlb_hits", 4)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ex2.verify()
    assert "prediction first" in out.getvalue() and "Answer" not in out.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        ex.verify()
    assert "Your prediction: 0" in out.getvalue() and "Answer:" in out.getvalue()


@pytest.mark.parametrize("name", [n for n in EXERCISES if exercise(n, 0).kind == "construct"])
def test_construct_is_checked_by_the_model(name: str) -> None:
    """The key's example is accepted, something else is refused with the model's reason."""
    for seed in (0, 7):
        ex = exercise(name, seed)
        ok, message = ex.check(ex.shown(ex.answer))
        assert ok, (name, seed, message)
        ok, message = ex.check("99")  # out of every construct's range
        assert not ok and message.startswith("Not quite"), (name, message)


# ── 5. the quiz summary agrees with its own counts ───────────────────────────────────────

def test_quiz_summary_counts_the_faults_its_stats_count() -> None:
    """A heap write served by do_anonymous_page is a (minor) fault in the summary too."""
    saw_heap = False
    for seed in range(12):
        answer = make_question(seed, "faults").answer
        for i, line in enumerate(answer):
            if not line.strip().startswith("In short:"):
                continue
            stats = re.search(r"(\d+) major, (\d+) minor", answer[i + 1])
            assert stats, answer[i + 1]
            assert line.count("major fault") == int(stats.group(1)), (seed, line)
            assert line.count("minor fault") == int(stats.group(2)), (seed, line)
            saw_heap |= "minor fault [NONE]" in line
    assert saw_heap, "some seed writes the heap"


# ── 6. the teacher's key ─────────────────────────────────────────────────────────────────

def test_teachers_key_has_every_answer_and_model_answer() -> None:
    """`python -m xipmodel key --notebook 04 --seeds 1-3`: each seed's answers and solutions."""
    from xipmodel.__main__ import main
    from xipmodel.lab.exercises.key import teacher_key

    text = teacher_key("04", [1, 2, 3])
    for seed in (1, 2, 3):
        assert f"seed {seed} " in text
        for name in ("readaround", "ra_windows", "lru_vs_fifo", "fault_flags"):
            ex = exercise(name, seed)
            assert ex.prompt in text and ex.solution_text() in text, (name, seed)
    assert "Model answer:" in text and "One answer:" in text
    grid = teacher_key("4", [1, 2, 3], answers_only=True).splitlines()
    assert len(grid) == 2 + 3 and exercise("readaround", 2).shown(
        exercise("readaround", 2).answer) in grid[3]
    assert main(["key", "--notebook", "00", "--seeds", "5"]) == 0


@pytest.mark.parametrize("argv, says", [
    (["key", "--notebook", "09"], "notebook '09' is not one of"),
    (["key", "--notebook", "04", "--seeds", "5-1"], "a range goes up"),
    (["key", "--notebook", "04", "--seeds", "0-9999"], "at most 500 seeds"),
    (["key", "--notebook", "04", "--seeds", "one"], "write seeds as"),
])
def test_teachers_key_refuses_bad_input_in_one_line(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad input: one line on standard error, exit status 2."""
    from xipmodel.__main__ import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err


def test_jupyterlab_news_popup_is_off_in_binder_and_locally(tmp_path: Path) -> None:
    """Binder's postBuild and `dev.py lab` install the same settings, and JupyterLab reads
    them as defaults: news never fetched (so never asked about), no update check."""
    import importlib.util

    from jupyterlab_server.settings_utils import _get_overrides

    root = NOTEBOOKS.parent
    post = (root / "binder" / "postBuild").read_text(encoding="utf-8")
    assert "binder/jupyterlab-settings.json" in post and "lab/settings/overrides.d" in post
    spec = importlib.util.spec_from_file_location("dev", root / "dev.py")
    assert spec and spec.loader
    dev = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dev)
    installed = dev.install_lab_settings(tmp_path)
    overrides, error = _get_overrides(str(installed.parent.parent))
    assert not error
    notification = overrides["@jupyterlab/apputils-extension:notification"]
    assert notification == {"fetchNews": "false", "checkForUpdates": False}


def test_teachers_readme_has_a_two_week_module() -> None:
    """Prerequisites, sessions, two graded assignments with deliverables and a rubric, a final
    project, and the key's command."""
    text = (NOTEBOOKS / "README.md").read_text(encoding="utf-8")
    module = text.split("## A two-week module", 1)[1].split("\n## ", 1)[0]
    for part in ("**Prerequisites.**", "| session |", "**Assignment 1", "**Assignment 2",
                 "Deliverable", "**Rubric", "**Final project", "python -m xipmodel record"):
        assert part in module, part
    sessions = re.findall(r"^\| (\d) \(week (\d)\)", module, re.M)
    assert [w for _s, w in sessions] == ["1", "1", "1", "2", "2", "2"]
    for name in COURSE:
        assert name[:2] in "".join(re.findall(r"^\| \d \(week \d\) \| ([\d, ]+) \|", module, re.M))
    assert "python -m xipmodel key --notebook 04 --seeds 1-40" in text
    for name in EXERCISES:
        assert f"`{name}`" in text, f"the course map does not assign {name}"


# ── 8. pictures that teach ───────────────────────────────────────────────────────────────

@pytest.mark.parametrize("name", COURSE)
def test_every_notebook_stores_a_static_figure(name: str) -> None:
    """A picture that shows in a static view (GitHub, nbviewer, an HTML export)."""
    figures = [o for c in load(name)["cells"] for o in c.get("outputs", [])
               if {"image/svg+xml", "image/png"} & set(o.get("data", {}))]
    assert figures, f"{name}: no static figure"
    for o in figures:
        svg = "".join(o["data"].get("image/svg+xml", ""))
        assert not svg or ("<title>" in svg and "font-size" in svg), "hover text and labels"


def test_static_figures_are_deterministic_with_linear_axes_from_zero() -> None:
    """Same numbers, same bytes; every bar and point has hover text; x from 0 on a line chart."""
    from xipmodel.lab.figures import CATEGORY_WORDS, bars, lines

    chart = lines({"pagecache": ([1, 2, 4, 8], [1.6, 3.1, 6.3, 12.7]),
                   "xip": ([1, 2, 4, 8], [0.7, 1.2, 2.1, 3.4])},
                  title="t", xlabel="guests", ylabel="MiB")
    again = lines({"pagecache": ([1, 2, 4, 8], [1.6, 3.1, 6.3, 12.7]),
                   "xip": ([1, 2, 4, 8], [0.7, 1.2, 2.1, 3.4])},
                  title="t", xlabel="guests", ylabel="MiB")
    assert chart.text == again.text and chart._repr_svg_() == chart.text
    assert chart.text.count("<circle") + chart.text.count("<polyline") == chart.text.count(
        "<title>") == 10
    ticks = re.findall(r"text-anchor='middle'[^>]*>([\d,.]+)</text>", chart.text)
    assert ticks[:3] == ["0", "2", "4"], ticks  # linear: equal steps from zero
    stacked = bars(["pagecache", "xip"], {"page_cache": [10.0, 0.0], "shared": [0.0, 0.8]},
                   title="b", ylabel="MiB", unit="MiB", words=CATEGORY_WORDS)
    assert stacked.text.count("<rect x=") == stacked.text.count("<title>") == 2
    assert "page cache" in stacked.text and "shared image pages" in stacked.text
    assert repr(stacked) == "<static figure: b>"


def test_a_timeline_drawn_as_steps_holds_each_value_until_the_next_sample() -> None:
    """A rollout's memory is sampled where it changes: between two samples the line must
    run flat (no slope that suggests a gradual change), with a marker on each sample."""
    from xipmodel.lab.figures import lines

    xs, ys = [0.0, 1.0, 1.0, 3.0], [2.0, 5.0, 4.0, 1.0]
    chart = lines({"host": (xs, ys)}, title="t", xlabel="s", ylabel="MiB", steps=True)
    points = re.search(r"<polyline points='([^']*)'", chart.text)
    assert points
    corners = [tuple(map(float, p.split(","))) for p in points[1].split()]
    assert len(corners) == 2 * len(xs) - 1
    for (x0, y0), (x1, y1) in pairwise(corners):
        assert x0 == x1 or y0 == y1, f"a slope from {(x0, y0)} to {(x1, y1)}"
    assert chart.text.count("<circle") == len(xs)
    sloped = lines({"host": (xs, ys)}, title="t", xlabel="s", ylabel="MiB")
    assert sloped.text.count("<circle") == len(xs) and sloped.text != chart.text
    colored = lines({"host": (xs, ys), "xip": (xs, ys)}, title="t", xlabel="s", ylabel="MiB",
                    colors={"host": "#123456"})
    assert "stroke='#123456'" in colored.text and "stroke='#2ca02c'" in colored.text  # xip's
