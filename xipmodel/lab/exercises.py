"""Seeded, self-checking exercises for the notebooks: OSTEP homework, graded in place.

    ex = exercise("readaround", seed=3)    an Exercise of the catalogue (or build your own:
                                           Exercise(question, answer_fn, explain_fn, seed))
    ex                                     in a notebook: the question, a text box, Check,
                                           feedback, and a closed "Solution" accordion
    ex.check("16 47")                      → (True, "Right: …") or (False, "Not quite: …")
    ex.solution()                          prints the worked answer (a plain call, so a
                                           notebook test can run it)

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
from functools import cache
from typing import Any, Final

import numpy as np

from xipmodel.errors import ParameterError
from xipmodel.workloads.recorded import trace_image

__all__ = ["EXERCISES", "Answer", "Exercise", "exercise", "first_touches", "trace_image"]

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

def _rng(seed: int, name: str) -> np.random.Generator:
    """The generator of exercise `name` at `seed` (different exercises never share draws)."""
    return np.random.default_rng([seed, sum(name.encode()) + 7919 * len(name)])


def _pick(seed: int, name: str, options: Sequence[Any]) -> Any:
    return options[int(_rng(seed, name).integers(len(options)))]


def _mib(n: int | float) -> float:
    return round(n / MIB, 1)


def _app_image(pages: int, seed: int) -> Any:
    """A frozen image with /bin/app of `pages` seeded pages."""
    from xipmodel.ext2 import Ext2Image, build_image
    from xipmodel.params import PAGE_SIZE

    data = np.random.default_rng([seed, 0xA99]).integers(1, 256, pages * PAGE_SIZE,
                                                          dtype=np.uint8).tobytes()
    return Ext2Image.open(build_image({"/bin/app": data}, volume_name="exercise",
                                      timestamp=0))


def first_touches(trace: Any) -> Any:
    """`trace.first_touches()` (kept here for notebooks written against this name)."""
    return trace.first_touches()


# ── 00 start here ───────────────────────────────────────────────────────────────────────

def _xip_saving(seed: int) -> Exercise:
    guests = int(_rng(seed, "xip_saving").integers(2, 7))

    def scenario() -> Any:
        from xipmodel.host import Scenario

        return Scenario(guests=guests, workload="shell", guest_ram_mib=64, variants=1,
                        seed=seed)

    @cache
    def run() -> Any:
        from xipmodel.host import compare

        return compare(scenario(), modes=("pagecache", "xip"))

    def answer(_: int) -> float:
        c = run()
        return round(_mib(c.results["pagecache"].host_bytes) - _mib(c.results["xip"].host_bytes),
                     1)

    def explain(_: int) -> str:
        from xipmodel.host import CATEGORIES

        c = run()
        lines = [f"compare(Scenario(guests={guests}, workload='shell', guest_ram_mib=64, "
                 f"variants=1, seed={seed}), modes=('pagecache', 'xip'))", "",
                 f"{'category':<12}{'pagecache':>11}{'xip':>9}   (MiB)"]
        for cat in CATEGORIES:
            a, b = (c.results[m].bytes_by_category[cat] for m in ("pagecache", "xip"))
            if a or b:
                lines.append(f"{cat:<12}{_mib(a):>11.1f}{_mib(b):>9.1f}")
        pc, xip = (_mib(c.results[m].host_bytes) for m in ("pagecache", "xip"))
        lines += [f"{'total':<12}{pc:>11.1f}{xip:>9.1f}", "",
                  f"XIP saves {pc:.1f} − {xip:.1f} MiB: the page-cache copies of the binaries "
                  f"({guests} of them) become one shared segment."]
        return "\n".join(lines)

    return Exercise(
        f"{guests} guests (64 MiB each) run the shell workload, every guest the same run "
        "(variants=1):\ncompare(Scenario(guests=" + str(guests) + ", workload='shell', "
        f"guest_ram_mib=64, variants=1, seed={seed}), modes=('pagecache', 'xip')).\n"
        "How many MiB of host memory does XIP save over the page cache? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="00.1", unit="MiB",
        hint="Run the compare(...) call and subtract the two host_bytes (÷ 2**20).")


_FRAME_WORDS: Final = {"SHARED": "shared segment", "PAGECACHE": "page cache",
                       "ANON": "anonymous memory", "COW": "private copy"}


def _pte_target(seed: int) -> Exercise:
    rng = _rng(seed, "pte_target")
    xip = bool(rng.integers(2))
    page = int(rng.integers(16))
    kind = "x" if rng.integers(3) else "r"
    mode = "mounted -o xip (execute in place)" if xip else "read through its page cache"
    verb = "executes" if kind == "x" else "reads"

    @cache
    def run() -> tuple[Any, list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.mm.segment import SharedSegment
        from xipmodel.params import PAGE_SIZE

        image = _app_image(16, seed)
        host, bus = HostMemory(), EventBus()
        segment = SharedSegment(host, image, bus=bus) if xip else None
        guest = Guest(0, host, 256, image, segment=segment, bus=bus)
        mm = guest.new_process("app")
        assert mm is not None, "exercise: a new guest has room for a process"
        guest.mmap(mm, 0x400000, 16 * PAGE_SIZE, "r-x", path="/bin/app")
        before = dict(host.counts_by_kind())
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + page * PAGE_SIZE, kind)
        after = host.counts_by_kind()
        grown = [k for k in after if after[k] > before.get(k, 0) and k.name in _FRAME_WORDS]
        return grown, rec.lines()

    def answer(_: int) -> str:
        grown, _lines = run()
        return _FRAME_WORDS[grown[0].name]

    def explain(_: int) -> str:
        grown, lines = run()
        return "\n".join(["The model's explain trace of that access:", *lines, "",
                          "New host frames: " + ", ".join(f"{k.name}" for k in grown)])

    return Exercise(
        f"A guest whose image is {mode} {verb} page {page} of /bin/app for the first time.\n"
        "What holds the frame its page-table entry ends up pointing at?",
        answer, explain, seed, choices=tuple(sorted(_FRAME_WORDS.values())), name="00.2",
        hint="XIP maps the shared frames straight into the page table; the page cache "
             "reads into a guest page.")


# ── 01 XIP versus the page cache ────────────────────────────────────────────────────────

def _per_guest(seed: int) -> Exercise:
    rng = _rng(seed, "per_guest")
    workload = ("shell", "webserver", "python")[int(rng.integers(3))]
    mode = ("pagecache", "xip")[int(rng.integers(2))]

    @cache
    def result() -> Any:
        from xipmodel.host import Host, Scenario

        return Host(Scenario(guests=3, workload=workload, variants=1, seed=seed), mode).run()

    def answer(_: int) -> float:
        r = result()
        return round(_mib(r.prefix(3).host_bytes) - _mib(r.prefix(2).host_bytes), 1)

    def explain(_: int) -> str:
        r = result()
        rows = [f"  {n} guest{'s' if n > 1 else ''}: {_mib(r.prefix(n).host_bytes):.1f} MiB"
                for n in (1, 2, 3)]
        first = _mib(r.prefix(1).host_bytes)
        step = answer(seed)
        return "\n".join([
            f"Host(Scenario(guests=3, workload={workload!r}, variants=1, seed={seed}), "
            f"{mode!r}).run(), then result.prefix(n) for n = 1, 2, 3:", *rows, "",
            f"Every guest makes the same run, so each one after the first adds the same: "
            f"{step:.1f} MiB.",
            ("In XIP mode the first guest also pages the shared image in "
             f"({first:.1f} MiB for one guest); later guests add only private pages "
             "and page tables." if mode == "xip" else
             "In page-cache mode every guest holds its own copy of the binaries, "
             "so a guest costs about as much as the first one.")])

    return Exercise(
        f"Every guest runs the same {workload} run (variants=1) in {mode} mode. "
        "How many MiB of host memory does each guest after the second add? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="01.1", unit="MiB",
        hint="Run Host(Scenario(guests=3, workload=…, variants=1, seed=…), mode).run() and "
             "compare result.prefix(2) with result.prefix(3).")


def _largest_category(seed: int) -> Exercise:
    from xipmodel.host import CATEGORIES

    rng = _rng(seed, "largest_category")
    workload = ("shell", "webserver", "python")[int(rng.integers(3))]
    mode = ("pagecache", "xip", "ksm")[int(rng.integers(3))]

    @cache
    def result() -> Any:
        from xipmodel.host import Host, Scenario

        return Host(Scenario(guests=4, workload=workload, seed=seed, ksm_seconds=30), mode
                    ).run()

    def answer(_: int) -> str:
        by = result().bytes_by_category
        return max(CATEGORIES, key=lambda c: by[c])

    def explain(_: int) -> str:
        by = result().bytes_by_category
        rows = [f"  {c:<12}{_mib(by[c]):>8.1f} MiB" for c in
                sorted(CATEGORIES, key=lambda c: -by[c]) if by[c]]
        return "\n".join([f"Host(Scenario(guests=4, workload={workload!r}, seed={seed}, "
                          f"ksm_seconds=30), {mode!r}).run().bytes_by_category:", *rows])

    return Exercise(
        f"4 guests run {workload} in {mode} mode (seed {seed}, ksmd scanning 30 s after the "
        "last start). Which category holds the most host memory at the end?",
        answer, explain, seed, choices=tuple(CATEGORIES), name="01.2",
        hint="Look at RunResult.bytes_by_category, or at the dashboard's stacked bars.")


# ── 02 the frozen ext2 image ────────────────────────────────────────────────────────────

def _block_of_page(seed: int) -> Exercise:
    from xipmodel.distro import PROGRAMS, default_image

    image = default_image()
    rng = _rng(seed, "block_of_page")
    program = sorted(PROGRAMS)[int(rng.integers(len(PROGRAMS)))]
    path = PROGRAMS[program].path
    pages = len(image.block_map(path))
    page = int(rng.integers(min(pages, 40)))

    def answer(_: int) -> int:
        return int(image.block_map(path)[page])

    def explain(_: int) -> str:
        ino = image.lookup(path)
        inode = image.inode(ino)
        blocks = image.block_map(path)
        where = (f"i_block[{page}] (a direct block)" if page < 12 else
                 f"entry {page - 12} of the single-indirect block i_block[12] = "
                 f"{inode.i_block[12]}")
        return "\n".join([
            f"image.lookup({path!r}) → inode {ino}; its i_size is "
            f"{image.stat(path).st_size} bytes = {pages} pages of 4 KiB.",
            f"Page {page} is {where}.",
            f"image.block_map({path!r})[{page}] = {int(blocks[page])}",
            "In XIP mode that block number is also the page of the shared segment the "
            "guest's PTE points at."])

    return Exercise(
        f"In the embedded distribution (default_image()), which image block holds page "
        f"{page} of {path}?",
        answer, explain, seed, name="02.1",
        hint="image.block_map(path) lists the block of every page (0 = a hole).")


def _indirect_blocks(seed: int) -> Exercise:
    from xipmodel.distro import default_image

    image = default_image()
    files = sorted(p for p in (f"{d}/{n}" for d in ("/usr/bin", "/usr/lib/x86_64-linux-gnu")
                               if image.isdir(d) for n in image.listdir(d))
                   if not image.isdir(p) and image.stat(p).st_size > 12 * 4096)
    path = files[int(_rng(seed, "indirect_blocks").integers(len(files)))]

    def answer(_: int) -> int:
        return len(image.metadata_blocks(path))

    def explain(_: int) -> str:
        meta = image.metadata_blocks(path)
        pages = len(image.block_map(path))
        per = image.block_size // 4
        return "\n".join([
            f"{path}: {image.stat(path).st_size} bytes = {pages} blocks of "
            f"{image.block_size} bytes.",
            f"12 direct pointers in the inode; one single-indirect block holds {per} more "
            f"(a {image.block_size}-byte block of 4-byte block numbers); beyond 12 + {per} "
            "blocks a double-indirect block and its children are needed.",
            "image.metadata_blocks(path):",
            *(f"  {m}" for m in meta)])

    return Exercise(
        f"How many indirect (metadata) blocks does {path} use in the embedded distribution's "
        "image?",
        answer, explain, seed, name="02.2",
        hint="Count the blocks beyond the 12 direct ones: each indirect block holds "
             "block_size / 4 pointers. image.metadata_blocks(path) lists them.")


# ── 03 page tables, TLB, nested walks ───────────────────────────────────────────────────

def _tiny_table(seed: int) -> tuple[Any, int]:
    """A TINY page table with a few seeded mappings, and the VA to translate."""
    from xipmodel.mm.pagetable import PageTable, TableFrames
    from xipmodel.params import TINY

    rng = _rng(seed, "tiny_translate")
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

    rng = _rng(seed, "nested_refs")
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
    rng = _rng(seed, "tlb_hits")
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


# ── 04 faults, readahead, LRU ───────────────────────────────────────────────────────────

def _readaround(seed: int) -> Exercise:
    rng = _rng(seed, "readaround")
    pages = int(rng.integers(40, 120))
    page = int(rng.integers(pages))

    @cache
    def run() -> tuple[tuple[int, ...], list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.params import PAGE_SIZE

        image = _app_image(pages, seed)
        bus = EventBus()
        guest = Guest(0, HostMemory(), 1024, image, bus=bus)
        mm = guest.new_process("app")
        assert mm is not None, "exercise: a new guest has room for a process"
        guest.mmap(mm, 0x400000, pages * PAGE_SIZE, "r--", path="/bin/app")
        with Recorder(bus) as rec:
            guest.access(mm, 0x400000 + page * PAGE_SIZE, "r")
        ino = image.lookup("/bin/app")
        cached = [p for p in range(pages) if guest.cache.find(ino, p) is not None]
        return (min(cached), max(cached)), rec.lines()

    def answer(_: int) -> tuple[int, ...]:
        return run()[0]

    def explain(_: int) -> str:
        (first, last), lines = run()
        return "\n".join([
            "The explain trace of the fault:", *lines, "",
            f"filemap_fault misses, so do_sync_mmap_readahead reads around the fault: "
            f"ra_pages = 32 pages centred on page {page} (start = max(0, {page} − 16)), "
            f"cut at the end of the file ({pages} pages): pages {first}–{last}."])

    return Exercise(
        f"/bin/app has {pages} pages and nothing of it is cached. A process maps it and reads "
        f"page {page} (a read fault, classic mmap read-around). Which pages does the guest "
        "read from its disk? Give the first and the last page, e.g. '3 34'.",
        answer, explain, seed, name="04.1",
        hint="mmap read-around reads ra_pages = 32 pages starting 16 before the fault, "
             "within the file.")


def _ra_windows(seed: int) -> Exercise:
    ra_pages = int(_pick(seed, "ra_windows", (16, 32, 64, 128)))

    @cache
    def run() -> tuple[Any, ...]:
        from xipmodel.events import EventBus, Readahead
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.params import PAGE_SIZE

        image = _app_image(4 * ra_pages + 64, seed)
        bus = EventBus()
        guest = Guest(0, HostMemory(), 2048, image, bus=bus, ra_pages=ra_pages)
        with Recorder(bus) as rec:
            for p in range(4 * ra_pages):
                guest.read("/bin/app", p * PAGE_SIZE, PAGE_SIZE)
        return tuple(e for e in rec.events if isinstance(e, Readahead))

    def answer(_: int) -> tuple[int, ...]:
        return tuple(int(e.size) for e in run()[:4])

    def explain(_: int) -> str:
        return "\n".join([
            f"A reader calls read() for 4 KiB at a time from page 0, ra_pages = {ra_pages}. "
            "The Readahead events:",
            *(f"  {e.kind:5} window [{e.start}, {e.start + e.size}) size {e.size}, "
              f"async_size {e.async_size}" for e in run()[:6]),
            "get_init_ra_size: the request (1 page) rounded up to a power of two, ×4 if ≤ "
            "max/32, ×2 if ≤ max/4, else max; get_next_ra_size: ×4 while below max/16, ×2 up "
            "to max/2, then max."])

    return Exercise(
        f"A process reads a file sequentially with read() of one page at a time, and the "
        f"file's maximum readahead (ra_pages) is {ra_pages} pages. What are the sizes of the "
        "first four readahead windows? (four numbers)",
        answer, explain, seed, name="04.2",
        hint="mm/readahead.c: get_init_ra_size for the first window, then get_next_ra_size "
             "each time the reader reaches the PG_readahead mark.")


_BELADY: Final = (1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5)


def _policy_refs(seed: int, name: str) -> tuple[list[int], int, str]:
    rng = _rng(seed, name)
    if name == "fifo_belady":
        refs = list(_BELADY) if seed % 2 == 0 else [int(v) for v in rng.integers(1, 6, 12)]
        return refs, int(rng.choice([3, 4])), "fifo"
    refs = [int(v) for v in rng.integers(1, 7, 14)]
    return refs, int(rng.choice([3, 4])), str(rng.choice(["opt", "lru", "clock"]))


def _policy_misses(seed: int, name: str) -> Exercise:
    from xipmodel.policies import simulate

    refs, capacity, policy = _policy_refs(seed, name)

    def answer(_: int) -> int:
        return int(simulate(refs, capacity, policy).misses)

    def explain(_: int) -> str:
        r = simulate(refs, capacity, policy, trace=True)
        assert r.steps is not None
        lines = [f"simulate({refs}, {capacity}, {policy!r}, trace=True):"]
        lines += [f"  page {p}: {'hit ' if hit else 'miss'}  cache {list(c)}"
                  for p, hit, c in r.steps]
        lines.append(f"{r.misses} misses, {r.hits} hits.")
        if policy == "fifo":
            other = 4 if capacity == 3 else 3
            lines.append(f"With {other} frames FIFO makes "
                         f"{simulate(refs, other, 'fifo').misses} misses"
                         + (" — more frames, more misses: Belady's anomaly."
                            if simulate(refs, 4, "fifo").misses >
                            simulate(refs, 3, "fifo").misses else "."))
        return "\n".join(lines)

    names = {"fifo": "FIFO", "opt": "OPT (Belady's optimal)", "lru": "LRU",
             "clock": "CLOCK (reference bit set on load)"}
    return Exercise(
        f"{names[policy]} with {capacity} frames, starting empty, sees the reference string "
        f"{', '.join(map(str, refs))}. How many misses (cold misses included)?",
        answer, explain, seed, name="04.3" if name == "fifo_belady" else "04.4",
        hint="Write the frames' contents after every reference, as in OSTEP chapter 22.")


# ── 05 copy-on-write, KSM, limits ───────────────────────────────────────────────────────

def _cow_frames(seed: int) -> Exercise:
    rng = _rng(seed, "cow_frames")
    guests = int(rng.integers(2, 6))
    written = sorted(int(p) for p in rng.choice(8, size=int(rng.integers(1, 5)), replace=False))
    read = sorted(int(p) for p in rng.choice(8, size=3, replace=False))

    @cache
    def run() -> tuple[dict[str, int], list[str]]:
        from xipmodel.events import EventBus
        from xipmodel.explain import Recorder
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.guest import Guest
        from xipmodel.mm.segment import SharedSegment
        from xipmodel.params import PAGE_SIZE

        image = _app_image(8, seed)
        host, bus = HostMemory(), EventBus()
        segment = SharedSegment(host, image, bus=bus)
        first: list[str] = []
        for gid in range(guests):
            g = Guest(gid, host, 256, image, segment=segment, bus=bus)
            mm = g.new_process("app")
            assert mm is not None, "exercise: a new guest has room for a process"
            g.mmap(mm, 0x600000, 8 * PAGE_SIZE, "rw-", path="/bin/app")
            with Recorder(bus) as rec:
                for p in read:
                    g.access(mm, 0x600000 + p * PAGE_SIZE, "r")
                for p in written:
                    g.access(mm, 0x600000 + p * PAGE_SIZE, "w")
            if gid == 0:
                first = rec.lines()
        return {k.name: v for k, v in host.counts_by_kind().items()}, first

    def answer(_: int) -> int:
        return run()[0]["COW"]

    def explain(_: int) -> str:
        counts, first = run()
        return "\n".join([
            "Guest 0's accesses, explained:", *first, "",
            f"Host frames by kind: SHARED {counts['SHARED']}, COW {counts['COW']}.",
            f"Reads map the shared frames; each written page gets a private copy "
            f"(do_cow_fault / wp_page_copy) in each guest: {guests} × {len(written)} = "
            f"{guests * len(written)}. The frozen image itself is never written."])

    return Exercise(
        f"{guests} guests mount /bin/app -o xip and map its 8 pages privately read-write. Each "
        f"reads pages {', '.join(map(str, read))} and then writes pages "
        f"{', '.join(map(str, written))}. How many copy-on-write frames does the host hold "
        "at the end?",
        answer, explain, seed, name="05.1",
        hint="A read maps the shared frame; a write to a private mapping copies the page for "
             "that guest only.")


def _ksm_pass(seed: int) -> Exercise:
    rng = _rng(seed, "ksm_pass")
    guests = int(rng.integers(2, 17))
    ram = int(rng.choice([256, 512, 1024, 2048]))
    pages_to_scan = int(rng.choice([100, 200, 500]))
    sleep = int(rng.choice([10, 20, 50]))

    def ksmd() -> Any:
        from xipmodel.mm.frames import HostMemory
        from xipmodel.mm.ksm import Ksm

        return Ksm(HostMemory(), [], pages_to_scan=pages_to_scan, sleep_millisecs=sleep)

    def answer(_: int) -> float:
        from xipmodel.params import PAGE_SIZE

        k = ksmd()
        rate = k.pages_to_scan * 1e9 / k.sleep_ns
        return round(float(guests * (ram * MIB // PAGE_SIZE) / rate), 1)

    def explain(_: int) -> str:
        from xipmodel.params import PAGE_SIZE

        k = ksmd()
        rate = k.pages_to_scan * 1e9 / k.sleep_ns
        pages = guests * (ram * MIB // PAGE_SIZE)
        return "\n".join([
            f"ksmd wakes every {sleep} ms and scans {pages_to_scan} pages: "
            f"{rate:,.0f} pages/s.",
            f"{guests} guests × {ram} MiB = {pages:,} pages of 4 KiB.",
            f"{pages:,} / {rate:,.0f} = {pages / rate:.1f} s for one full pass; until then "
            "some duplicates are still unmerged. (Defaults 100 / 20 ms: 16 GiB takes "
            "≈ 839 s.)"])

    return Exercise(
        f"ksmd runs with pages_to_scan = {pages_to_scan} and sleep_millisecs = {sleep}. "
        f"{guests} guests of {ram} MiB are fully backed. How many seconds does one full scan "
        "pass take? (one decimal)",
        answer, explain, seed, tolerance=0.1, name="05.2", unit="s",
        hint="pages per second = pages_to_scan / sleep; a pass covers every guest page once.")


def _heap_share(seed: int) -> Exercise:
    share = float(_pick(seed, "heap_share", (0.1, 0.3, 0.5, 0.7, 0.9)))

    @cache
    def comparison() -> Any:
        from xipmodel.host import Scenario, compare

        return compare(Scenario(guests=4, workload="shell", heap_share=share, variants=1,
                                guest_ram_mib=64, seed=seed), modes=("pagecache", "xip"))

    def answer(_: int) -> float:
        return round(100 * float(comparison().saving("xip")), 1)

    def explain(_: int) -> str:
        c = comparison()
        pc, xip = c.results["pagecache"], c.results["xip"]
        anon = {m: _mib(r.bytes_by_category["anon"]) for m, r in c.results.items()}
        return "\n".join([
            f"compare(Scenario(guests=4, workload='shell', heap_share={share}, variants=1, "
            f"guest_ram_mib=64, seed={seed}), modes=('pagecache', 'xip'))",
            f"  pagecache {_mib(pc.host_bytes):.1f} MiB (anon {anon['pagecache']:.1f})",
            f"  xip       {_mib(xip.host_bytes):.1f} MiB (anon {anon['xip']:.1f})",
            f"saving = 1 − {_mib(xip.host_bytes):.1f} / {_mib(pc.host_bytes):.1f} = "
            f"{100 * c.saving('xip'):.1f} %. The heap is private in both modes: the larger "
            "its share, the smaller XIP's saving."])

    return Exercise(
        f"4 shell guests whose heap is {share:.0%} of the memory a run touches (heap_share="
        f"{share}). What percentage of host memory does XIP save over the page cache? "
        "(one decimal)",
        answer, explain, seed, tolerance=0.2, name="05.3", unit="%",
        hint="compare(Scenario(guests=4, workload='shell', heap_share=…, variants=1, "
             "guest_ram_mib=64, seed=…), modes=('pagecache', 'xip')).saving('xip') × 100.")


# ── 06 experiments at scale ─────────────────────────────────────────────────────────────

def _firecracker(seed: int) -> Exercise:
    rng = _rng(seed, "firecracker")
    vms = int(rng.integers(2, 9))
    ram = int(rng.choice([128, 256, 512]))
    image = int(rng.choice([100, 200, 400]))

    def answer(_: int) -> int:
        return vms * ram + image

    def explain(_: int) -> str:
        return "\n".join([
            f"With DAX each VM maps the one pmem image: the image is at most {image} MB once, "
            f"each VM at most its {ram} MB of RAM: {vms} × {ram} + {image} = "
            f"{vms * ram + image} MB.",
            f"Without sharing every VM may also hold the image in its own page cache, and "
            f"the host a copy per VM: up to {vms} × ({ram} + {image}) = "
            f"{vms * (ram + image)} MB. (Firecracker docs/pmem.md: 2 × 128 + 100 ≤ 356 MB.)"])

    return Exercise(
        f"{vms} Firecracker VMs of {ram} MB each share one {image} MB root filesystem image "
        "through virtio-pmem with DAX. At most how many MB of host memory do they use?",
        answer, explain, seed, name="06.1", unit="MB",
        hint="The image is counted once, the VMs' RAM once per VM.")


def _break_even(seed: int) -> Exercise:
    rng = _rng(seed, "break_even")
    workload = ("shell", "webserver")[int(rng.integers(2))]
    target = int(rng.choice([30, 50, 70] if workload == "webserver" else [5, 8, 12]))
    guests = 12

    @cache
    def savings() -> tuple[float, ...]:
        from xipmodel.host import Host, Scenario

        s = Scenario(guests=guests, workload=workload, variants=1, seed=seed)
        pc, xip = Host(s, "pagecache").run(), Host(s, "xip").run()
        return tuple(_mib(pc.prefix(n).host_bytes - xip.prefix(n).host_bytes)
                     for n in range(1, guests + 1))

    def answer(_: int) -> int:
        return next(n for n, v in enumerate(savings(), 1) if v >= target)

    def explain(_: int) -> str:
        n_even = answer(seed)
        return "\n".join([
            f"Host(Scenario(guests={guests}, workload={workload!r}, variants=1, seed={seed}), "
            "mode).run() in both modes; the saving pagecache − xip after n guests "
            "(RunResult.prefix):",
            *(f"  {n:2} guests: {v:6.1f} MiB" for n, v in enumerate(savings(), 1)
              if n <= n_even + 1),
            f"The saving grows linearly in the guests: {target} MiB is reached at "
            f"{n_even} guests."])

    return Exercise(
        f"Every guest runs the same {workload} run (variants=1). From how many guests on does "
        f"XIP save at least {target} MiB of host memory over the page cache?",
        answer, explain, seed, name="06.2",
        hint="One run of each mode with enough guests; RunResult.prefix(n) gives every "
             "smaller host.")


# ── 07 recorded programs ────────────────────────────────────────────────────────────────

@cache
def _trace_run(name: str, xip: bool) -> Any:
    from xipmodel.mm.frames import HostMemory
    from xipmodel.mm.guest import Guest
    from xipmodel.mm.segment import SharedSegment
    from xipmodel.workloads.recorded import load_trace
    from xipmodel.workloads.trace import replay

    trace = load_trace(name)
    image = trace_image(trace)
    host = HostMemory()
    guest = Guest(0, host, 16384, image, segment=SharedSegment(host, image) if xip else None)
    replay(guest, first_touches(trace))
    return host, guest


def _trace_shared(seed: int) -> Exercise:
    from xipmodel.workloads.recorded import TRACES

    name = str(_pick(seed, "trace_shared", TRACES))

    def answer(_: int) -> int:
        host, _guest = _trace_run(name, xip=True)
        return int(host.counts_by_kind()[_kind("SHARED")])

    def explain(_: int) -> str:
        host, guest = _trace_run(name, xip=True)
        counts = {k.name: v for k, v in host.counts_by_kind().items() if v}
        return "\n".join([
            f"replay(guest, first_touches(load_trace({name!r}))) in a guest that mounts "
            "trace_image(trace) -o xip:",
            f"  host frames by kind: {counts}",
            f"  {guest.stats.minor_faults} minor faults, {guest.stats.major_faults} major, "
            f"{guest.stats.disk_read_bytes} bytes read from the disk",
            "Every image page the run touched is paged into the shared segment once: "
            "those are the SHARED frames."])

    return Exercise(
        f"Replay the recorded {name!r} trace once in a guest that executes in place. How many "
        "image pages does it bring into the shared segment (SHARED frames)?",
        answer, explain, seed, name="07.1",
        hint="Build the image with trace_image(trace), replay first_touches(trace) in an "
             "XIP guest and count the host's SHARED frames.")


def _trace_disk(seed: int) -> Exercise:
    from xipmodel.workloads.recorded import TRACES

    name = str(_pick(seed, "trace_disk", TRACES))

    def answer(_: int) -> int:
        _host, guest = _trace_run(name, xip=False)
        return int(guest.stats.disk_read_bytes) >> 10

    def explain(_: int) -> str:
        host, guest = _trace_run(name, xip=False)
        xhost, _g = _trace_run(name, xip=True)
        cached = host.counts_by_kind()[_kind("PAGECACHE")]
        used = xhost.counts_by_kind()[_kind("SHARED")]
        return "\n".join([
            f"The same replay of {name!r} through the guest's page cache:",
            f"  {guest.stats.major_faults} major faults read "
            f"{guest.stats.disk_read_bytes >> 10} KiB ({guest.stats.readahead_pages} pages "
            f"by read-around), {guest.stats.fault_around_pages} pages mapped by fault-around",
            f"  {cached} page-cache pages for the {used} pages XIP shows were touched: "
            f"over-fetch ×{cached / used:.2f}."])

    return Exercise(
        f"Replay the recorded {name!r} trace once in a guest that reads its binaries through "
        "its page cache. How many KiB does it read from its virtual disk?",
        answer, explain, seed, name="07.2", unit="KiB",
        hint="Replay it in a guest without the shared segment and read "
             "guest.stats.disk_read_bytes (÷ 1024).")


def _kind(name: str) -> Any:
    from xipmodel.mm.frames import FrameKind

    return FrameKind[name]


# ── the catalogue ───────────────────────────────────────────────────────────────────────

EXERCISES: Final[dict[str, Callable[[int], Exercise]]] = {
    "xip_saving": _xip_saving,
    "pte_target": _pte_target,
    "per_guest": _per_guest,
    "largest_category": _largest_category,
    "block_of_page": _block_of_page,
    "indirect_blocks": _indirect_blocks,
    "tiny_translate": _tiny_translate,
    "nested_refs": _nested_refs,
    "tlb_hits": _tlb_hits,
    "readaround": _readaround,
    "ra_windows": _ra_windows,
    "fifo_belady": lambda seed: _policy_misses(seed, "fifo_belady"),
    "policy_misses": lambda seed: _policy_misses(seed, "policy_misses"),
    "cow_frames": _cow_frames,
    "ksm_pass": _ksm_pass,
    "heap_share": _heap_share,
    "firecracker": _firecracker,
    "break_even": _break_even,
    "trace_shared": _trace_shared,
    "trace_disk": _trace_disk,
}


def exercise(name: str, seed: int = 0) -> Exercise:
    """The catalogue's exercise `name` for `seed` (change the seed for another question)."""
    if name not in EXERCISES:
        raise ParameterError(f"exercise: {name!r} is not one of {', '.join(EXERCISES)}")
    if seed < 0:
        raise ParameterError(f"exercise: seed {seed} must be >= 0")
    return EXERCISES[name](seed)
