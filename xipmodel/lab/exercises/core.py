"""The grading core every notebook's exercises share: the Exercise, and a few seeded helpers.

    Exercise(question, answer_fn, explain_fn, seed)   one seeded question (the notebook
                                                       modules beside this one build them)
    ex                                     in a notebook: the question, a text box, Check,
                                           feedback, and a closed "Solution" accordion
    ex.check("16 47")                      → (True, "Right: …") or (False, "Not quite: …")
    ex.verify()                            predict-then-verify: the model's run, once a
                                           prediction was checked
    ex.solution()                          prints the worked answer (the teacher's key,
                                           `python -m xipmodel key`, prints them all)
    exercise_rng, mib, app_image           the helpers the exercise factories share

Four kinds, as in OSTEP's homework (`KINDS`):

    compute     work the answer out (by hand or with the model), type it in
    predict     write a prediction first, then `ex.verify()` runs the model and shows
                where the prediction went wrong
    construct   build an input (a reference string, a file size) with a property; the
                model checks it (`accept`); `answer_fn` gives one example for the key
    open        explain in words; nothing to grade here, `answer_fn` is the teacher's
                model answer

Every answer is computed by the model from the seed (never typed in): the same seed
gives the same question and answer in any process, another seed another one.

Answers are read the way people write them: "4, 8, 16, 32", "4 8 16 32" and "[4, 8]"
are lists, "38-69" and "38–69" a range; "b19", "0xb19" hex (in a hex question); "0.86"
or "86%" a percentage (the feedback says which it read); "pagecache", "page cache" and
"page_cache" the same word; a unit after a number is converted ("2048 KiB" for 2 MiB)
or refused when it measures something else. A wrong number is told "too high" or "too
low" once, the first time only (no bisection); a known mistake (`mistakes`) is named.

ipywidgets is imported only to draw the widget: `check` and `solution` work without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = ["KINDS", "MIB", "Answer", "Exercise", "app_image", "exercise_rng", "mib"]

Answer = int | float | str | tuple[int, ...]
MIB: Final = 1 << 20
KINDS: Final = ("compute", "predict", "construct", "open")

# Units a student may write after a number, as (what it measures, factor to the base unit).
_UNITS: Final[dict[str, tuple[str, float]]] = {
    "b": ("size", 1), "byte": ("size", 1), "bytes": ("size", 1),
    "kib": ("size", 1 << 10), "k": ("size", 1 << 10), "kb": ("size", 1e3),
    "mib": ("size", 1 << 20), "m": ("size", 1 << 20), "mb": ("size", 1e6),
    "gib": ("size", 1 << 30), "gb": ("size", 1e9),
    "s": ("time", 1), "sec": ("time", 1), "secs": ("time", 1), "seconds": ("time", 1),
    "ms": ("time", 1e-3), "min": ("time", 60),
    "%": ("percent", 1), "percent": ("percent", 1),
}
_NUMBER_RE = re.compile(r"[-+]?(?:\d[\d_]*(?:,\d{3})*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_UNIT_AFTER_RE = re.compile(r"\s*(%|[a-zA-Z]+)")
_HEX_RE = re.compile(r"^(?:0[xX])?([0-9a-fA-F]+)$")
_LIST_RE = re.compile(r"0[xX][0-9a-fA-F]+|\d+")


def _word(text: str) -> str:
    """A word compared without case, spaces, '_' or '-' ("Page-Cache" is "pagecache")."""
    return re.sub(r"[\s_\-]+", "", text.lower())


@dataclass
class Exercise:
    """One seeded question: `answer_fn(seed)` is the answer, `explain_fn(seed)` the worked answer.

    `question` is the text, or a function of the seed giving it. `hint` is what a wrong
    answer is told (how to find the answer, not the answer itself); `mistakes(seed)` maps
    the answers of likely mistakes to what went wrong. `accept(text)` grades a construct
    exercise with the model: (ok, why).
    """

    question: str | Callable[[int], str]
    answer_fn: Callable[[int], Answer]
    explain_fn: Callable[[int], str]
    seed: int = 0
    tolerance: float = 0.0  # for float answers: |given − answer| ≤ tolerance is right
    choices: tuple[str, ...] | None = None  # for str answers: the accepted words
    hint: str = ""
    name: str = ""
    unit: str = ""  # printed after the answer ("MiB", "%")
    show_hex: bool = False  # print an int answer in hex
    kind: str = "compute"
    accept: Callable[[str], tuple[bool, str]] | None = None
    mistakes: Callable[[int], Mapping[Any, str]] | None = None
    _answer: Answer | None = field(default=None, init=False, repr=False)
    _wrong_tries: int = field(default=0, init=False, repr=False)
    _predicted: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        assert self.kind in KINDS, f"Exercise: kind {self.kind!r} is not one of {KINDS}"
        assert (self.kind == "construct") == (self.accept is not None), (
            "Exercise: a construct exercise, and only one, has an accept function")

    # ── the pure part ──────────────────────────────────────────────────────────────────

    @property
    def prompt(self) -> str:
        """The question for this seed."""
        text = self.question(self.seed) if callable(self.question) else self.question
        if self.choices:
            text += "\n(one of: " + ", ".join(self.choices) + ")"
        if self.kind == "predict":
            text += "\nPredict first: type your prediction and Check it, then run .verify()."
        elif self.kind == "open":
            text += "\n(An open question: write your answer in a markdown cell.)"
        return text

    @property
    def answer(self) -> Answer:
        """The model's answer for this seed (computed once); for construct, one example."""
        if self._answer is None:
            self._answer = self.answer_fn(self.seed)
        return self._answer

    def shown(self, value: Answer) -> str:
        """`value` written as the feedback and the key write it (unit included)."""
        if isinstance(value, float):
            digits = max(0, -int(np.floor(np.log10(self.tolerance)))) if self.tolerance else 3
            text = f"{value:.{digits}f}"
        elif isinstance(value, int) and self.show_hex:
            text = f"{value:#x}"
        elif isinstance(value, tuple):
            text = " ".join(str(v) for v in value)
        else:
            text = str(value)
        return f"{text} {self.unit}".rstrip()

    def _read_number(self, text: str) -> tuple[float | None, str]:
        """The number in `text` in the answer's unit, and a note on how it was read."""
        m = _NUMBER_RE.search(text)
        if not m or m.group() in ("+", "-", "."):
            return None, ""
        value = float(m.group().replace("_", "").replace(",", ""))
        u = _UNIT_AFTER_RE.match(text, m.end())
        written = u.group(1) if u else ""
        said = written.lower()
        if said == "%" or said == "percent":
            if self.unit != "%":
                return None, f"the answer is in {self.unit or 'plain numbers'}, not %"
            return value, ""
        if self.unit == "%":
            if value <= 1 and "." in m.group():
                return value * 100, f"read {m.group()} as a fraction: {value * 100:g} %"
            return value, ""
        if said in _UNITS and self.unit.lower() in _UNITS:
            what, factor = _UNITS[said]
            want, base = _UNITS[self.unit.lower()]
            if what != want:
                return None, f"the answer is in {self.unit} ({want}), not {written}"
            if factor != base:
                converted = value * factor / base
                return converted, f"read {m.group()} {written} as {converted:g} {self.unit}"
        return value, ""

    def _read(self, given: object) -> tuple[Answer | None, str]:
        """The student's answer as the answer's type (None if unreadable), and a note."""
        want = self.answer
        if (isinstance(given, (int, float)) and not isinstance(given, bool)
                and isinstance(want, (int, float))):
            return (float(given) if isinstance(want, float) else int(given)), ""
        text = str(given).strip()
        if isinstance(want, str):
            if not self.choices:
                return text or None, ""
            found = [c for c in self.choices if _word(c) == _word(text)]
            return (found[0] if found else (_word(text) or None)), ""
        if isinstance(want, tuple):
            values = tuple(int(t, 0) for t in _LIST_RE.findall(text))
            return values or None, ""
        if isinstance(want, int) and self.show_hex:
            h = _HEX_RE.match(text.replace("_", ""))
            if h:
                as_hex = int(h.group(1), 16)
                if as_hex != want and h.group(1).isdigit() and int(h.group(1)) == want:
                    return want, f"read {text} as decimal"
                return as_hex, ("" if text.lower().startswith("0x") else
                                f"read {text} as hex {as_hex:#x}")
        if isinstance(want, int) and re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            return int(text, 16), ""
        value, note = self._read_number(text)
        if value is None:
            return None, note
        if isinstance(want, int):
            # a converted unit rounds (1.1289 MiB is 1156 KiB); a typed number must be whole
            return (round(value) if note.startswith("read ") or value == int(value)
                    else value), note
        return value, note

    def _same(self, got: Answer, want: Answer) -> bool:
        if isinstance(want, float) and isinstance(got, (int, float)):
            return abs(got - want) <= self.tolerance + 1e-9
        if isinstance(want, str) and isinstance(got, str):
            return _word(got) == _word(want)
        return got == want

    def check(self, given: object) -> tuple[bool, str]:
        """Is `given` (text or a number) right? Returns (ok, a message for the student)."""
        if self.kind == "open":
            written = str(given).strip()
            return bool(written), ("Noted. An open question: discuss it with your answer "
                                   "written out; your teacher's key has a model answer."
                                   if written else "Write a few sentences first.")
        if self.kind == "construct":
            assert self.accept is not None
            ok, why = self.accept(str(given))
            return ok, (f"Right: {why}" if ok else f"Not quite: {why} {self.hint}".rstrip())
        want = self.answer
        got, note = self._read(given)
        read = f" ({note})" if note else ""
        if self.kind == "predict":
            self._predicted = str(given).strip()
        if got is None:
            kind = {str: "a word", tuple: "numbers", float: "a number"}.get(type(want),
                                                                           "a whole number")
            return False, (f"Could not read {str(given).strip()!r} as {kind}{read}. "
                           "Try again.")
        then = " Now run .verify() to see the model's run." if self.kind == "predict" else ""
        if self._same(got, want):
            return True, (f"Right: {self.shown(want)}{read}.{then}" if then else
                          f"Right: {self.shown(want)}{read}.")
        self._wrong_tries += 1
        return False, f"Not quite: {self.shown(got)}{read}{self._diagnose(got, want)}." \
            f"{then} {self.hint}".rstrip()

    def _diagnose(self, got: Answer, want: Answer) -> str:
        """What a wrong answer tells the student: a known mistake, else one first hint."""
        known = self.mistakes(self.seed) if self.mistakes else {}
        for value, why in known.items():
            if not self._same(want, value) and self._same(got, value):
                return f": {why}"
        if isinstance(want, (int, float)) and isinstance(got, (int, float)):
            if self._wrong_tries == 1:
                return " (too high)" if got > want else " (too low)"
            return ""
        if isinstance(want, tuple) and isinstance(got, tuple) and len(got) != len(want):
            return f" (the answer has {len(want)} numbers)"
        if isinstance(want, str) and self.choices and got not in self.choices:
            return " (not one of the choices)"
        return ""

    def verify(self) -> None:
        """Predict-then-verify: after a checked prediction, print the model's run."""
        if self.kind != "predict":
            print("verify() is for predict-then-verify exercises; see .solution().")
        elif self._predicted is None:
            print("Write your prediction first: type it in the box and press Check "
                  "(or call .check('…')), then run .verify().")
        else:
            print(f"Your prediction: {self._predicted}\nThe model's run:\n"
                  + self.solution_text())

    def solution_text(self) -> str:
        """The worked answer: how the model gets it, step by step, then the answer."""
        label = {"construct": "One answer", "open": "Model answer"}.get(self.kind, "Answer")
        body = self.explain_fn(self.seed).rstrip("\n")
        if self.kind == "open":
            return f"{body}\n\n{label}: {self.answer}"
        return f"{body}\n\n{label}: {self.shown(self.answer)}"

    def solution(self) -> None:
        """Print the worked answer."""
        print(self.solution_text())

    # ── the widget ─────────────────────────────────────────────────────────────────────

    def widget(self) -> Any:
        """The question, a text box and a Check button, the feedback, a closed Solution."""
        import html

        import ipywidgets as W  # type: ignore[import-untyped]

        title = f"<b>Exercise {html.escape(self.name)}</b> (seed {self.seed})<br>"
        question = W.HTML(title + "<pre style='white-space:pre-wrap'>"
                          + html.escape(self.prompt) + "</pre>")
        box = (W.Textarea if self.kind == "open" else W.Text)(
            placeholder="your answer", continuous_update=False, layout=W.Layout(width="60%"))
        button = W.Button(description="Check", button_style="primary")
        feedback = W.HTML()
        show = W.Button(description="Show the worked answer")
        out = W.Output()
        solution = W.Accordion(children=[W.VBox([show, out])], selected_index=None)
        solution.set_title(0, "Solution")

        def grade(_: object = None) -> None:
            ok, message = self.check(box.value)
            color = "green" if ok else "#b00"
            feedback.value = (f"<span style='color:{color}'>{'✔' if ok else '✘'} "
                              f"{html.escape(message)}</span>")

        def reveal(_: object = None) -> None:
            out.clear_output()
            out.append_stdout(self.solution_text() + "\n")

        button.on_click(grade)
        box.observe(grade, names="value")
        show.on_click(reveal)
        vbox = W.VBox([question, W.HBox([box, button]), feedback, solution])
        vbox.controller = self
        return vbox

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The widget, with the question as its plain text (what a notebook test compares)."""
        try:
            bundle = dict(self.widget()._repr_mimebundle_(include=include, exclude=exclude))
        except ImportError:  # no ipywidgets: the text alone
            bundle = {}
        bundle["text/plain"] = str(self)
        return bundle

    def __str__(self) -> str:
        return f"Exercise {self.name} (seed {self.seed}, {self.kind})\n{self.prompt}"


# ── helpers the exercises share ─────────────────────────────────────────────────────────

def exercise_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of exercise `name` at `seed` (different exercises never share draws)."""
    return np.random.default_rng([seed, sum(name.encode()) + 7919 * len(name)])



def mib(n: int | float) -> float:
    """`n` bytes in MiB, rounded to one decimal."""
    return round(n / MIB, 1)


def app_image(pages: int, seed: int) -> Any:
    """A frozen image with /bin/app of `pages` seeded pages."""
    from xipmodel.ext2 import Ext2Image, build_image
    from xipmodel.params import PAGE_SIZE

    data = np.random.default_rng([seed, 0xA99]).integers(1, 256, pages * PAGE_SIZE,
                                                          dtype=np.uint8).tobytes()
    return Ext2Image.open(build_image({"/bin/app": data}, volume_name="exercise",
                                      timestamp=0))
