"""The grading core every notebook's exercises share: the Exercise, and a few seeded helpers.

    Exercise(question, answer_fn, explain_fn, seed)   one seeded question (the notebook
                                                       modules beside this one build them)
    ex                                     in a notebook: the question, a text box, Check,
                                           feedback, and a closed "Solution" accordion
    ex.check("16 47")                      → (True, "Right: …") or (False, "Not quite: …")
    ex.solution()                          prints the worked answer (a plain call, so a
                                           notebook test can run it)
    exercise_rng, pick, mib, app_image     the helpers the exercise factories share

Every answer is computed by the model from the seed (never typed in): the same seed
gives the same question and answer in any process, another seed another one. The
answer is computed on first use and kept.

An answer is an int, a float (compared within `tolerance`), a tuple of ints (read
from every integer in the student's text, in order) or a str (one of `choices`,
compared without case and surrounding spaces). Ints accept 0x… hex and 1_000 / 1,000.

ipywidgets is imported only to draw the widget: `check` and `solution` work without it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

__all__ = ["MIB", "Answer", "Exercise", "app_image", "exercise_rng", "mib", "pick"]

Answer = int | float | str | tuple[int, ...]
MIB: Final = 1 << 20

_INT_RE = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|\d[\d_,]*)")
_FLOAT_RE = re.compile(r"[-+]?(?:\d[\d_,]*\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _parse_int(token: str) -> int:
    return int(token.replace("_", "").replace(",", ""), 0)


@dataclass
class Exercise:
    """One seeded question: `answer_fn(seed)` is the answer, `explain_fn(seed)` the worked answer.

    `question` is the text, or a function of the seed giving it. `hint` is what a wrong
    answer is told (how to find the answer, not the answer itself).
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
    _answer: Answer | None = field(default=None, init=False, repr=False)

    # ── the pure part ──────────────────────────────────────────────────────────────────

    @property
    def prompt(self) -> str:
        """The question for this seed."""
        text = self.question(self.seed) if callable(self.question) else self.question
        if self.choices:
            text += "\n(one of: " + ", ".join(self.choices) + ")"
        return text

    @property
    def answer(self) -> Answer:
        """The model's answer for this seed (computed once)."""
        if self._answer is None:
            self._answer = self.answer_fn(self.seed)
        return self._answer

    def _shown(self, value: Answer) -> str:
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

    def _read(self, given: object) -> Answer | None:
        """The student's answer as the answer's type, or None if it cannot be read so."""
        want = self.answer
        text = str(given).strip()
        if isinstance(want, str):
            return " ".join(text.lower().split()) or None
        if isinstance(want, tuple):
            values = tuple(_parse_int(t) for t in _INT_RE.findall(text))
            return values or None
        if isinstance(want, float):
            if isinstance(given, (int, float)) and not isinstance(given, bool):
                return float(given)
            m = _FLOAT_RE.search(text.replace(",", ""))
            return float(m.group()) if m and m.group() not in ("", "+", "-", ".") else None
        if isinstance(given, int) and not isinstance(given, bool):
            return given
        m = _INT_RE.search(text)
        return _parse_int(m.group()) if m else None

    def check(self, given: object) -> tuple[bool, str]:
        """Is `given` (text or a number) right? Returns (ok, a message for the student)."""
        want = self.answer
        got = self._read(given)
        if got is None:
            kind = {str: "a word", tuple: "numbers", float: "a number"}.get(type(want),
                                                                           "a whole number")
            return False, f"Could not read {str(given).strip()!r} as {kind}. Try again."
        if isinstance(want, float):
            assert isinstance(got, float)
            ok = abs(got - want) <= self.tolerance + 1e-12
        elif isinstance(want, str):
            ok = got == " ".join(want.lower().split())
        else:
            ok = got == want
        if ok:
            return True, (f"Right: {self._shown(want)}. "
                          "The worked answer is under Solution (or call .solution()).")
        why = ""
        if isinstance(want, (int, float)) and isinstance(got, (int, float)):
            why = " (too high)" if got > want else " (too low)"
        elif isinstance(want, tuple) and isinstance(got, tuple) and len(got) != len(want):
            why = f" (the answer has {len(want)} numbers)"
        elif isinstance(want, str) and self.choices and got not in self.choices:
            why = " (not one of the choices)"
        return False, f"Not quite: {self._shown(got)}{why}. {self.hint}".rstrip()

    def solution_text(self) -> str:
        """The worked answer: how the model gets it, step by step, then the answer."""
        return (self.explain_fn(self.seed).rstrip("\n")
                + f"\n\nAnswer: {self._shown(self.answer)}")

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
        box = W.Text(placeholder="your answer", continuous_update=False,
                     layout=W.Layout(width="40%"))
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
        bundle["text/plain"] = f"Exercise {self.name} (seed {self.seed})\n{self.prompt}"
        return bundle

    def __str__(self) -> str:
        return f"Exercise {self.name} (seed {self.seed})\n{self.prompt}"


# ── helpers the exercises share ─────────────────────────────────────────────────────────

def exercise_rng(seed: int, name: str) -> np.random.Generator:
    """The generator of exercise `name` at `seed` (different exercises never share draws)."""
    return np.random.default_rng([seed, sum(name.encode()) + 7919 * len(name)])


def pick(seed: int, name: str, options: Sequence[Any]) -> Any:
    """One of `options`, drawn by exercise `name`'s generator at `seed`."""
    return options[int(exercise_rng(seed, name).integers(len(options)))]


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
