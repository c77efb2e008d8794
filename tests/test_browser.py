"""Notebook 01's comparison dashboard in a real browser: JupyterLab and Voilà, in Chromium.

pytest-playwright drives Debian's Chromium (/usr/bin/chromium; Playwright cannot download
browsers here); the harness (servers, browser, probes) is bench/bench_browser.py's. The
servers run on 127.0.0.1 with no token, throw-away settings and workspaces, and serve a
temporary copy of notebooks/ (JUPYTER.md pitfall 5). JupyterLab runs every cell, then the
test moves the number-of-guests slider (ArrowRight on its handle) and a mode toggle, and
reads the plotted numbers off plotly's divs: they must be what the model computes here,
in this test's worker processes, one Host run per mode and guest count of the same
Scenario (asked of the notebook's kernel): no RunCache, no prefixes. Voilà renders the
same notebook in its default mode, loading while the lab runs (no progressive
rendering: the dashboard's refresh_bundle keeps the figures from going stale,
JUPYTER.md pitfall 3). Last, the lab's page is reloaded while the kernel lives: the
figures draw what they drew before, and move.

Before reading the plotted numbers the test waits until all three figures show what it
expects (titles, modes, curve points): each figure is a widget model of its own, and the
browser handles their messages one model at a time, so one redrawn figure does not mean
the others are. Any uncaught error in a page fails the test: "[anywidget] Failed to
initialize model." there means a figure that will never move again (xipmodel/lab/widgets.py).

Screenshots go to test-artifacts/browser/. With CI=true a missing browser fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from xipmodel.host import CATEGORIES, MODES, Host, Scenario

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the harness lives in bench/ (python -m pytest has it anyway)
    sys.path.insert(0, str(ROOT))

from bench import bench_browser as harness  # noqa: E402

pytestmark = [
    # pytest-playwright's base_url fixture (JUPYTER.md); Jupyter's deprecations in servers
    # run in their own processes, so nothing else is expected here.
    pytest.mark.filterwarnings("ignore::pytest.PytestRemovedIn10Warning"),
]

NOTEBOOK = "01_xip_vs_pagecache.ipynb"
ARTIFACTS = ROOT / "test-artifacts" / "browser"
MIB = 2**20

# Which Dashboard objects the kernel holds: what each shows, and its base scenario.
_QUERY = """
import dataclasses as _dc, gc as _gc, json as _json
from xipmodel.lab.widgets import Dashboard as _D
print(_json.dumps([{"scenario": _dc.asdict(d.scenario()), "modes": d.modes(),
                    "max": d.guests_slider.max, "curve_guests": d.curve_guests}
                   for d in _gc.get_objects() if isinstance(d, _D)]))
"""


def _shown_now(probe: harness.DashboardProbe) -> Shown:
    """What the dashboard in the page shows now, as the kernel's dashboard of the same
    guest count and modes describes it."""
    dashboards = json.loads(harness.kernel_exec(probe.page, _QUERY))
    n = probe.guests()
    on = probe.box.locator("button.widget-toggle-button.mod-active").all_inner_texts()
    mine = [d for d in dashboards if d["scenario"]["guests"] == n and d["modes"] == on]
    assert mine, f"no dashboard of the kernel shows {n} guests, {on}: {dashboards}"
    d = mine[0]
    return Shown(d["scenario"], d["modes"], d["curve_guests"] or [])


def _scenario(d: dict[str, Any]) -> Scenario:
    """A Scenario from dataclasses.asdict's JSON (a mix comes back as lists)."""
    if not isinstance(d["workload"], str):
        d = {**d, "workload": tuple((str(n), float(s)) for n, s in d["workload"])}
    return Scenario(**d)


def model_run(scenario: dict[str, Any], mode: str) -> dict[str, Any]:
    """Host(scenario, mode).run() in a worker process: the numbers the figures show."""
    r = Host(_scenario(scenario), mode).run()
    return {"bytes": dict(r.bytes_by_category), "totals": dict(r.totals),
            "host": r.host_bytes}


@dataclasses.dataclass
class Shown:
    """What the test expects on screen: scenario (with the slider's value) and modes."""

    scenario: dict[str, Any]
    modes: list[str]
    curve_guests: list[int]  # empty: the dashboard's default curve

    def at(self, guests: int, modes: list[str] | None = None) -> Shown:
        return Shown({**self.scenario, "guests": guests}, modes or self.modes,
                     self.curve_guests)

    def points(self) -> list[int]:
        """The guest counts of the curve's lines the test computes: with curve_guests, all
        of them; else the slider's value (the lines then span every count)."""
        return sorted({*self.curve_guests, self.scenario["guests"]})


# True once every figure of the dashboard shows `shown`'s guest count and modes, as drawn
# when no mode is running any more (what _check then reads): the bars' titles and modes,
# a number in every bar (a running mode's are empty), which lines of the guests curve are
# visible, with their points (given curve_guests; else the slider's value among them).
_SHOWN = """([sel, guests, modes, points]) => {
    const box = document.querySelector(sel);
    if (!box) return false;
    const same = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);
    const figs = {};
    for (const p of __xipPlots(box)) {
        const t = (p.layout && p.layout.title && p.layout.title.text) || '';
        figs[t.startsWith('Host memory versus') ? 'guests' : t.startsWith('Host memory')
             ? 'memory' : 'faults'] = {title: t, data: p.data || []};
    }
    const {memory, faults, guests: curve} = figs;
    if (!memory || !faults || !curve) return false;
    if (memory.title !== `Host memory, ${guests} guests`) return false;
    if (faults.title !== `Faults and disk reads (all ${guests} guests)`) return false;
    for (const t of [...memory.data, ...faults.data])
        if (!same(Array.from(t.x || []), modes)
            || !Array.from(t.y || []).every(v => typeof v === 'number')) return false;
    return curve.data.every(t => {
        const x = Array.from(t.x || []);
        if (!modes.includes(t.name)) return t.visible === false;
        return t.visible !== false && (points ? same(x, points) : x.includes(guests));
    });
}"""


def _wait_shown(probe: harness.DashboardProbe, shown: Shown, timeout_ms: int = 240_000
                ) -> None:
    """Until all three figures show `shown` (guest count, modes, curve points); the time
    allowed is the harness's for an update with runs (DashboardProbe.wait_settled)."""
    n = shown.scenario["guests"]
    try:
        probe.page.wait_for_function(
            _SHOWN, arg=[probe.sel, n, shown.modes, shown.points() if shown.curve_guests
                         else None], polling="raf", timeout=timeout_ms)
    except Exception as e:
        raise AssertionError(f"the figures do not show {n} guests, {shown.modes} after "
                             f"{timeout_ms / 1000:.0f} s: {probe.describe()}") from e


def _check(probe: harness.DashboardProbe, shown: Shown, want: dict[str, Any]) -> None:
    """The plotted numbers are the model's (once all three figures show `shown`)."""
    _wait_shown(probe, shown)
    figs = probe.figures()
    n, modes = shown.scenario["guests"], shown.modes
    memory = figs["memory"]
    assert memory["title"] == f"Host memory, {n} guests"
    bars = {t["meta"]: t for t in memory["traces"]}  # meta: the category; name: its words
    assert list(bars) == list(CATEGORIES)
    for cat in CATEGORIES:
        assert bars[cat]["x"] == modes, cat
        assert bars[cat]["y"] == pytest.approx(want["bars"][cat], abs=1e-5), cat
    faults = {t["name"]: t for t in figs["faults"]["traces"]}
    for name, values in want["faults"].items():
        assert faults[name]["x"] == modes, name
        assert faults[name]["y"] == pytest.approx(values, abs=1e-5), name
    lines = {t["name"]: t for t in figs["guests"]["traces"]}
    for m in MODES:
        if m not in modes:
            assert lines[m]["visible"] is False and lines[m]["x"] == [], m
            continue
        if shown.curve_guests:
            assert lines[m]["x"] == shown.points(), m
            assert lines[m]["y"] == pytest.approx(want["curve"][m], abs=1e-5), m
        else:
            at = lines[m]["x"].index(n)
            assert lines[m]["y"][at] == pytest.approx(want["curve"][m][0], abs=1e-5), m
    summary = probe.box.locator(".widget-html-content", has_text=f"at {n} guests").first
    assert summary.is_visible()


@contextlib.contextmanager
def _diagnosed(probe: harness.DashboardProbe, server: harness.Server, name: str,
               errors: list[str]) -> Iterator[None]:
    """On failure: a screenshot of the page, the server's log and the page's uncaught
    errors in the report. At the end: no uncaught error in the page."""
    try:
        yield
        assert not errors, f"uncaught errors in the {name} page: {errors}"
    except BaseException:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            probe.page.screenshot(path=str(ARTIFACTS / f"{name}-failure.png"))
        print(f"--- {server.name} log (tail) ---\n{server.log()}", file=sys.stderr)
        print(f"--- {name} page: uncaught errors ---\n" + "\n".join(errors),
              file=sys.stderr)
        raise


class Session:
    """JupyterLab and Voilà on a copy of notebooks/, one Chromium, and notebook 01 run in
    the lab (started on first use; everything stops when the module's tests are done)."""

    def __init__(self, playwright: Any, tmp: Path) -> None:
        self.playwright = playwright
        self.tmp = tmp
        self.stack: list[Callable[[], None]] = []
        # spawn: this process has the Playwright driver's threads; fork would warn.
        self.pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        self.stack.append(lambda: self.pool.shutdown(cancel_futures=True))
        self._lab: tuple[harness.DashboardProbe, Shown] | None = None
        self.browser: Any = None
        self.servers: dict[str, harness.Server] = {}
        self.runs: dict[tuple[str, str], Future[dict[str, Any]]] = {}
        self._voila: Any = None  # the Voilà page, loading while the lab runs
        self.errors: dict[str, list[str]] = {"lab": [], "voila": []}  # uncaught, per page

    def _browser(self) -> Any:
        if self.browser is None:
            self.browser = harness.launch_chromium(self.playwright)
            self.stack.append(self.browser.close)
        return self.browser

    def _page(self, name: str) -> Any:
        """A new page of the browser (big enough for the whole dashboard) whose uncaught
        errors go to errors[name]."""
        page = harness.new_page(self._browser(), 1800, 1900)
        page.on("pageerror", lambda e: self.errors[name].append(str(e)))
        return page

    def notebooks(self) -> Path:
        nb = self.tmp / "notebooks"
        if not nb.exists():
            harness.copy_notebooks(ROOT / "notebooks", nb)
        assert (nb / NOTEBOOK).exists(), f"notebooks/{NOTEBOOK} is missing"
        return nb

    def lab(self) -> tuple[harness.DashboardProbe, Shown]:
        """Notebook 01 run in JupyterLab: its dashboard, and what it shows."""
        if self._lab is None:
            server = self.servers["lab"] = harness.lab_server(self.notebooks(),
                                                              self.tmp / "lab")
            self.stack.append(server.stop)
            page = self._page("lab")
            harness.open_lab_notebook(page, server, NOTEBOOK)
            self._open_voila()  # Voilà runs the notebook meanwhile
            probe = harness.DashboardProbe(page)
            probe.wait_settled()
            self._lab = probe, _shown_now(probe)
        return self._lab

    def _open_voila(self) -> None:
        if self._voila is None:
            server = self.servers["voila"] = harness.voila_server(self.notebooks(),
                                                                 self.tmp / "voila")
            self.stack.append(server.stop)
            self._voila = self._page("voila")
            self._voila.goto(server.url(f"voila/render/{NOTEBOOK}"), wait_until="commit")

    def voila(self) -> harness.DashboardProbe:
        """Notebook 01 rendered by Voilà: its dashboard."""
        self._open_voila()
        probe = harness.DashboardProbe(self._voila)
        probe.wait_settled()
        return probe

    def _run(self, scenario: dict[str, Any], mode: str) -> Future[dict[str, Any]]:
        key = (json.dumps(scenario, sort_keys=True), mode)
        if key not in self.runs:
            self.runs[key] = self.pool.submit(model_run, scenario, mode)
        return self.runs[key]

    def expect(self, shown: Shown) -> Callable[[], dict[str, Any]]:
        """What the figures must show (computed here, each Host run once, in workers):
        call the result to wait for it."""
        modes, n = shown.modes, shown.scenario["guests"]
        at = {m: self._run(shown.scenario, m) for m in modes}
        curve = {(m, p): self._run({**shown.scenario, "guests": p}, m)
                 for m in modes for p in shown.points()}

        def result() -> dict[str, Any]:
            r = {m: f.result(timeout=180) for m, f in at.items()}
            return {
                "bars": {c: [round(r[m]["bytes"][c] / MIB, 6) for m in modes]
                         for c in CATEGORIES},
                "faults": {
                    "major faults": [r[m]["totals"]["major_faults"] for m in modes],
                    "minor faults": [r[m]["totals"]["minor_faults"] for m in modes],
                    "disk reads (MiB)": [round(r[m]["totals"]["disk_read_bytes"] / MIB, 6)
                                         for m in modes]},
                "curve": {m: [round(curve[m, p].result(timeout=180)["host"] / MIB, 6)
                              for p in shown.points()] for m in modes},
                "guests": n,
            }

        return result

    def close(self) -> None:
        while self.stack:
            try:
                self.stack.pop()()
            except Exception as e:  # keep stopping the rest
                print(f"test_browser: cleanup: {e!r}", file=sys.stderr)


@pytest.fixture(scope="module")
def session(playwright: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    s = Session(playwright, tmp_path_factory.mktemp("browser"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def chromium(require_tool: Callable[[str], str]) -> str:
    """Debian's Chromium, or skip (fail in CI): apt-get install chromium."""
    path = require_tool("chromium")
    assert Path(harness.CHROMIUM).exists(), f"Playwright launches {harness.CHROMIUM}"
    return path


def _shot(probe: harness.DashboardProbe, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    probe.box.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_dashboard_in_jupyterlab(chromium: str, session: Session) -> None:
    """Run all cells; the slider and a mode toggle redraw the figures with the model's numbers,
    and no frame on the way shows the bars, the faults and the summary at different guest
    counts (each was a message of its own: a frame came between them after most moves)."""
    start = time.perf_counter()
    probe, shown = session.lab()
    n = shown.scenario["guests"]
    after = shown.at(n + 1)
    with_dax = after.at(n + 1, [m for m in MODES if m in (*shown.modes, "dax")])
    want_now, want_after, want_dax = (session.expect(s) for s in (shown, after, with_dax))
    with _diagnosed(probe, session.servers["lab"], "lab", session.errors["lab"]):
        _shot(probe, "lab-1-initial")
        _check(probe, shown, want_now())

        probe.watch()
        for key in ("ArrowRight", "ArrowLeft") * 3:
            probe.move(key, final=True)
        ms = probe.move("ArrowRight", final=True)  # ksm, if shown, runs for the new count
        assert probe.guests() == n + 1
        _check(probe, after, want_after())
        _shot(probe, "lab-2-slider")

        probe.toggle("dax")  # on: a run at the slider's maximum, unless the cache has it
        _check(probe, with_dax, want_dax())
        _shot(probe, "lab-3-dax")
        frames, mixed = probe.watched()
        assert frames > 0 and not mixed, (
            f"frames showing different guest counts ([bars, faults, summary]): {mixed}")
    print(f"jupyterlab: slider move to the model's numbers in {ms:.0f} ms "
          f"(with ksm running once); test {time.perf_counter() - start:.0f} s")


@contextlib.contextmanager
def _kernel_stopped(page: Any) -> Iterator[None]:
    """The page's kernel process stopped (SIGSTOP) inside the block, continued after it.
    (A cell that sleeps would not do: ipykernel 7 may handle widget messages meanwhile.)"""
    pid = int(harness.kernel_exec(page, "import os; print(os.getpid())"))
    harness.settle(page)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_dashboard_moves_while_its_kernel_is_stopped(chromium: str, session: Session) -> None:
    """A move to a guest count whose results the kernel has already sent (the slider's
    neighbours) is drawn in the browser at once, without the kernel (the dashboard's
    frames: here the kernel's process is stopped), with the model's numbers, and never
    mixing counts. A control changed meanwhile in the browser makes those frames stale:
    the next move then waits for the kernel, and shows the numbers of the new controls."""
    probe, _ = session.lab()
    page = probe.page
    with _diagnosed(probe, session.servers["lab"], "lab", session.errors["lab"]):
        probe.wait_settled()
        shown = _shown_now(probe)
        n = shown.scenario["guests"]
        flipped = [m for m in MODES if (m in shown.modes) != (m == "xip")]
        after, toggled = shown.at(n + 1), shown.at(n + 2, flipped)
        want_after, want_toggled = session.expect(after), session.expect(toggled)
        probe.watch()
        with _kernel_stopped(page):
            ms = probe.move("ArrowRight", timeout_ms=5000)
            _check(probe, after, want_after())
        probe.wait_settled()
        with _kernel_stopped(page):
            probe.toggle("xip")
            probe.handle.focus()
            page.keyboard.press("ArrowRight")
            page.wait_for_timeout(1500)  # the frame of n + 2 (made with xip as it was)
            assert probe.figures()["memory"]["title"] == f"Host memory, {n + 1} guests"
        _check(probe, toggled, want_toggled())  # drawn by the kernel once it runs again
        frames, mixed = probe.watched()
        assert frames > 0 and not mixed, (
            f"frames showing different guest counts ([bars, faults, summary]): {mixed}")
        probe.toggle("xip")  # as it was, for the tests after this one
        _wait_shown(probe, shown.at(n + 2))
        harness.settle(page)
    print(f"jupyterlab: a move drawn from its frame in {ms:.0f} ms, the kernel stopped")


# The overlays (xipmodel/lab/widgets.py) drawn ahead for the bar charts at `n` guests:
# [memory, faults], each the overlay of the chart's view that is up to date; null if not
# both are drawn yet.
_OVERLAYS = """([sel, n]) => {
    const covers = globalThis[Symbol.for('xipmodel.plotly-overlays')].covers;
    const bars = [...document.querySelector(sel).querySelectorAll(
        '.js-plotly-plot:not(.xip-overlay)')].filter(p =>
        /^(Host memory,|Faults and disk reads)/.test(p.layout.title.text));
    const found = bars.map(p => {
        const c = covers.get(p);
        const o = c && c.overlays.find(o => o.value === n && o.key && o.gen === c.gen);
        return o ? o.div : null;
    });
    return found.length === 2 && found.every(Boolean) ? found : null;
}"""


# From now on, at every frame: the `visible` of the memory chart's first trace as the page
# shows it (its overlay's while one shows), and whether an overlay showed (__xipSeen).
_SEEN = """([sel]) => {
    const seen = window.__xipSeen = {on: true, frames: []};
    const frame = () => {
        if (!seen.on) return;
        const p = __xipPlots(document.querySelector(sel))[0];
        seen.frames.push([p.classList.contains('xip-overlay'), p.data[0].visible ?? true]);
        requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
}"""


def _seen(page: Any) -> list[list[Any]]:
    """Stop _SEEN: the frames it saw, [an overlay showed, the trace's visible] each."""
    return list(page.evaluate(
        "() => { window.__xipSeen.on = false; return window.__xipSeen.frames; }"))


def test_dashboard_overlays_show_the_figures_pixels(chromium: str, session: Session) -> None:
    """A move to a neighbour is shown at once by the overlays the page drew ahead of it, and
    an overlay is what its figure then draws, pixel for pixel (screenshots of the overlays,
    laid over the charts, before the move, and of the charts after it); the charts'
    numbers are the model's, and no frame on the way mixes guest counts."""
    probe, _ = session.lab()
    page = probe.page
    with _diagnosed(probe, session.servers["lab"], "lab", session.errors["lab"]):
        probe.wait_settled()
        harness.settle(page)
        page.mouse.move(0, 0)  # off the charts: no hover effects in a screenshot
        shown = _shown_now(probe)
        n = shown.scenario["guests"]
        after = shown.at(n + 1)
        want_after = session.expect(after)
        page.wait_for_function(_OVERLAYS, arg=[probe.sel, n + 1], timeout=30_000)
        overlays = page.evaluate_handle(_OVERLAYS, [probe.sel, n + 1])
        ahead = []
        for i in range(2):
            div = overlays.evaluate_handle(f"o => o[{i}]").as_element()
            div.evaluate("""d => { const p = d.previousElementSibling;
                Object.assign(d.style, {left: p.offsetLeft + 'px', top: p.offsetTop + 'px',
                                        visibility: 'visible'}); }""")
            ahead.append(div.screenshot())
            div.evaluate("d => { d.style.visibility = 'hidden'; }")
        page.evaluate("""([sel]) => {  // the charts' redraws
            window.__xipDraws = 0;
            for (const p of __xipPlots(document.querySelector(sel)).slice(0, 2))
                p.on('plotly_afterplot', () => window.__xipDraws++);
        }""", [probe.sel])
        page.evaluate(_SEEN, [probe.sel])
        probe.watch()
        ms = probe.move("ArrowRight", final=True)
        _check(probe, after, want_after())
        page.wait_for_function("() => !document.querySelector("
                               "'.xip-overlay[style*=\"visible\"]')", timeout=10_000)
        covered = sum(o for o, _ in _seen(page))
        frames, mixed = probe.watched()
        assert frames > 0 and not mixed, (
            f"frames showing different guest counts ([bars, faults, summary]): {mixed}")
        assert covered > 0, "no frame showed the overlays: the move waited for the figures"
        harness.settle(page)  # the kernel's own update for the move has come, and gone
        draws = page.evaluate("() => window.__xipDraws")
        assert draws == 2, (f"the two charts were drawn {draws} times for one move: the "
                            "kernel's update for what the frame drew is drawn again")
        drawn = page.evaluate_handle(
            "([sel]) => __xipPlots(document.querySelector(sel)).slice(0, 2)", [probe.sel])
        for i, (name, before) in enumerate(zip(("memory", "faults"), ahead, strict=True)):
            now = drawn.evaluate_handle(f"p => p[{i}]").as_element().screenshot()
            if now != before:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                (ARTIFACTS / f"overlay-{name}-ahead.png").write_bytes(before)
                (ARTIFACTS / f"overlay-{name}-drawn.png").write_bytes(now)
            assert now == before, f"the {name} overlay's pixels are not its figure's"
    print(f"jupyterlab: a move shown by its overlays in {ms:.0f} ms")


def test_dashboard_overlays_follow_a_legend_click(chromium: str, session: Session) -> None:
    """An overlay is drawn from its figure as it was: a trace hidden by a click on the
    legend afterwards leaves the overlays drawn before unused (no frame shows the trace
    again), and those drawn after it hide the trace too."""
    probe, _ = session.lab()
    page = probe.page
    with _diagnosed(probe, session.servers["lab"], "lab", session.errors["lab"]):
        probe.wait_settled()
        harness.settle(page)
        n = probe.guests()
        page.wait_for_function(_OVERLAYS, arg=[probe.sel, n + 1], timeout=30_000)
        memory = probe.box.locator(".js-plotly-plot:not(.xip-overlay)").first
        toggle = memory.locator(".legend .traces .legendtoggle").first
        try:
            toggle.click()
            page.wait_for_function("([sel]) => __xipPlots(document.querySelector(sel))[0]"
                                   ".data[0].visible === 'legendonly'", arg=[probe.sel])
            for step in (1, 2):
                if step == 2:  # overlays drawn since the click
                    page.wait_for_function(_OVERLAYS, arg=[probe.sel, n + 2], timeout=30_000)
                page.evaluate(_SEEN, [probe.sel])
                probe.move("ArrowRight", final=True)
                harness.settle(page)
                frames = _seen(page)
                shown = {v for _, v in frames}
                assert shown == {"legendonly"}, (
                    f"move {step}: a frame showed the hidden trace ({shown})")
                overlaid = any(o for o, _ in frames)
                assert overlaid == (step == 2), (
                    f"move {step}: {'an' if overlaid else 'no'} overlay showed")
        finally:
            toggle.click()  # the trace shown again, for the tests after this one
            page.wait_for_function("([sel]) => __xipPlots(document.querySelector(sel))[0]"
                                   ".data[0].visible !== 'legendonly'", arg=[probe.sel])
            harness.settle(page)


def test_dashboard_in_voila(chromium: str, session: Session) -> None:
    """Voilà's default (non-progressive) rendering shows the current figures, and they move."""
    _, shown = session.lab()  # the notebook's scenario, as its kernel holds it
    probe = session.voila()
    n = shown.scenario["guests"]
    after = shown.at(n + 1)
    without = after.at(n + 1, [m for m in after.modes if m != "ksm"] or ["pagecache"])
    want_now, want_after, want_without = (session.expect(s) for s in (shown, after, without))
    with _diagnosed(probe, session.servers["voila"], "voila", session.errors["voila"]):
        assert probe.guests() == n
        _shot(probe, "voila-1-initial")
        _check(probe, shown, want_now())

        probe.move("ArrowRight", final=True)
        _check(probe, after, want_after())
        _shot(probe, "voila-2-slider")

        probe.toggle("ksm")  # off: nothing to run
        _check(probe, without, want_without())
        _shot(probe, "voila-3-no-ksm")



# True once the memory bars show `bars` ({category: [MiB per mode]}), to 1e-5 MiB (a
# bar's trace carries its category in `meta`; its name is the legend's words).
_BARS = """([sel, bars]) => {
    const box = document.querySelector(sel);
    if (!box) return false;
    const memory = __xipPlots(box).find(p =>
        /^Host memory, \\d+ guests/.test((p.layout && p.layout.title
                                          && p.layout.title.text) || ''));
    if (!memory) return false;
    return Object.entries(bars).every(([name, want]) => {
        const t = (memory.data || []).find(d => d.meta === name);
        const y = t ? Array.from(t.y || []) : [];
        return y.length === want.length
            && y.every((v, i) => typeof v === 'number' && Math.abs(v - want[i]) <= 1e-5);
    });
}"""


def test_uploaded_trace_in_jupyterlab(chromium: str, session: Session,
                                      tmp_path: Path) -> None:
    """A recorded trace chosen in the dashboard's file upload becomes its workload: the
    plotted numbers are those of the same file run here, in this test's workers (one Host
    run per mode and guest count: what compare runs), and the menu names the upload."""
    from xipmodel.workloads.recorded import TRACES

    probe, _ = session.lab()
    trace = tmp_path / "my-trace.npz"
    shipped = ROOT / "xipmodel" / "data" / "traces" / f"{TRACES[1]}.npz"
    trace.write_bytes(shipped.read_bytes())
    with _diagnosed(probe, session.servers["lab"], "lab", session.errors["lab"]):
        start = time.perf_counter()
        # ipywidgets' FileUpload keeps its <input type=file> out of the document and clicks
        # it when its button is clicked: Playwright hands us that input as a file chooser.
        with probe.page.expect_file_chooser() as chooser:
            probe.box.locator(".widget-upload").first.click()
        chooser.value.set_files(str(trace))
        probe.page.wait_for_function("""(sel) => [...document.querySelector(sel)
            .querySelectorAll('.widget-label')].some(
                l => l.textContent.startsWith('✓ my-trace.npz: trace'))""",
                                     arg=probe.sel, polling=100, timeout=240_000)
        probe.wait_settled()
        seconds = time.perf_counter() - start
        dashboards = json.loads(harness.kernel_exec(probe.page, _QUERY))
        mine = [d for d in dashboards if str(d["scenario"]["workload"]).endswith(
            "/my-trace.npz")]
        assert len(mine) == 1, dashboards
        d = mine[0]
        shown = Shown({**d["scenario"], "workload": str(trace)}, d["modes"],
                      d["curve_guests"] or [])
        want = session.expect(shown)()
        try:
            probe.page.wait_for_function(_BARS, arg=[probe.sel, want["bars"]],
                                         polling="raf", timeout=60_000)
        except Exception as e:
            raise AssertionError(f"the bars do not show the trace's numbers {want['bars']}: "
                                 f"{probe.describe()}") from e
        _check(probe, shown, want)
        menu = probe.box.locator("select").evaluate_all(
            "(ss) => ss.map(s => s.options[s.selectedIndex].text)")
        assert "my-trace.npz (uploaded)" in [m.replace("\xa0", " ") for m in menu]
        _shot(probe, "lab-4-upload")
    print(f"jupyterlab: an uploaded trace shown in {seconds:.1f} s")


def test_dashboard_after_a_reload_in_jupyterlab(chromium: str, session: Session) -> None:
    """A page reloaded while the kernel lives builds every widget model again from the
    kernel, the model that carries plotly's bundle for all figures with them
    (xipmodel/lab/widgets.py): the figures draw what they drew before the reload (not
    their first state), plotly's bundle is imported once, and they move."""
    probe, _ = session.lab()
    page = probe.page
    with _diagnosed(probe, session.servers["lab"], "lab", session.errors["lab"]):
        n = probe.guests()
        before = probe.figures()
        page.evaluate("async () => window.jupyterapp.commands.execute('docmanager:save')")
        page.reload(wait_until="domcontentloaded")
        page.wait_for_function("""() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const k = w && w.sessionContext && w.sessionContext.session
                      && w.sessionContext.session.kernel;
            return k && k.connectionStatus === 'connected';
        }""", polling=200)
        probe = harness.DashboardProbe(page)  # the same dashboard, marked again
        assert probe.guests() == n
        probe.wait_shows(n)
        assert probe.figures() == before
        imported = page.evaluate(
            "() => globalThis[Symbol.for('xipmodel.plotly-widget-modules')].size")
        assert imported == 1
        probe.move("ArrowRight", final=True)
        assert probe.guests() == n + 1
        _shot(probe, "lab-5-reloaded")
