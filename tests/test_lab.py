"""The lab: widgets built headless hold the model's numbers, and update in place from the cache.

No browser: ipywidgets and plotly FigureWidgets are plain Python objects until displayed.
The widget tests skip when ipywidgets/plotly/anywidget are missing, and fail with CI=true.
"""

from __future__ import annotations

import base64
import gzip
import importlib.resources
import itertools
import json
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from xipmodel.family import ApartRun
from xipmodel.host import CATEGORIES, Host, RunResult, Scenario, compare
from xipmodel.lab import views
from xipmodel.lab.runs import RunCache, default_curve_guests
from xipmodel.mm.frames import CONTENT_BLOCK, FrameKind
from xipmodel.workloads.recorded import TRACES

MIB = 2**20
# A small, quick scenario: the shell in a few guests, ksmd scanning for one second.
SMALL = Scenario(guests=2, workload="shell", guest_ram_mib=128, ksm_seconds=1.0)
MODES3 = ["pagecache", "xip", "ksm"]


@pytest.fixture
def lab(require_module: Callable[[str], ModuleType]) -> ModuleType:
    """xipmodel.lab.widgets, or skip (fail in CI) without the lab extra."""
    for name in ("ipywidgets", "plotly", "anywidget"):
        require_module(name)
    import xipmodel.lab.widgets as widgets

    return widgets


@pytest.fixture(scope="module")
def xip_host() -> Host:
    host = Host(SMALL, "xip")
    host.run()
    return host


@pytest.fixture(scope="module")
def pagecache_host() -> Host:
    host = Host(SMALL, "pagecache")
    host.run()
    return host


def _file_page_of_block(host: Host, block: int) -> tuple[str, int]:
    """The oracle for hover text: search every file's block map for `block`."""
    image = host.image
    for path in views.regular_files(image):
        hits = np.flatnonzero(image.block_map(path) == block)
        if len(hits):
            return path, int(hits[0])
    raise AssertionError(f"block {block} belongs to no file")


# ── import guards ───────────────────────────────────────────────────────────────────────

def test_the_model_never_imports_the_widgets() -> None:
    """Importing every xipmodel module but the widgets loads neither ipywidgets nor plotly
    (nor the optional pandas and dask: only a call that needs them imports them)."""
    code = """
import importlib, json, pkgutil, sys
import xipmodel
names = [m.name for m in pkgutil.walk_packages(xipmodel.__path__, "xipmodel.")
         if m.name != "xipmodel.lab.widgets"]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("ipywidgets", "plotly", "anywidget", "traitlets",
                                    "pandas", "dask", "distributed"))
print(json.dumps({"imported": names, "bad": bad}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    report = json.loads(out.stdout)
    assert "xipmodel.host" in report["imported"]
    assert "xipmodel.lab.views" in report["imported"]  # the views need numpy only
    assert report["bad"] == []


# ── pure views ──────────────────────────────────────────────────────────────────────────

def test_break_even_interpolates_between_points() -> None:
    """Where does a line start to cost no more than the baseline?"""
    xs = [1, 2, 4]
    assert views.break_even(xs, [10, 20, 40], [30, 30, 30]) == pytest.approx(2 + 2 * 10 / 20)
    assert views.break_even(xs, [10, 20, 40], [5, 6, 7]) == 1.0
    assert views.break_even(xs, [10, 20, 40], [50, 60, 70]) is None


def test_dashboard_figures_data_holds_the_model_numbers() -> None:
    """The stacked bars are bytes_by_category in MiB; the curve is host_bytes per guest count."""
    comparison = compare(SMALL, MODES3)
    curve = [compare(SMALL.replace(guests=1), MODES3), comparison]
    figs = views.dashboard_figures_data(comparison, curve)
    assert [t["meta"] for t in figs["memory"]["data"]] == list(CATEGORIES)
    for trace in figs["memory"]["data"]:
        assert trace["x"] == MODES3
        want = [comparison.results[m].bytes_by_category[trace["meta"]] / MIB for m in MODES3]
        assert trace["y"] == pytest.approx(want, abs=1e-6)
    lines = {t["name"]: t for t in figs["guests"]["data"]}
    assert lines["xip"]["x"] == [1, 2]
    assert lines["xip"]["y"] == pytest.approx(
        [c.results["xip"].host_bytes / MIB for c in curve], abs=1e-6)
    assert lines["dax"]["y"] == [] and lines["dax"]["visible"] is False
    assert figs["guests"]["saving"]["xip"] == pytest.approx(comparison.saving("xip"))
    faults = {t["name"]: t["y"] for t in figs["faults"]["data"]}
    assert faults["major faults"] == [comparison.results[m].totals["major_faults"]
                                      for m in MODES3]


def test_the_bar_charts_measure_nothing_when_redrawn(lab: ModuleType) -> None:
    """The bar charts a slider move redraws keep every tick label of their value axes
    (plotly's default on a linear axis, ticklabeloverflow "hide past div", measures each
    label in the page at every redraw) and carry no bar text (textposition "none"): what
    the page shows is the same (screenshots compared pixel for pixel), the redraw cheaper."""
    dash = lab.comparison_dashboard(SMALL, max_guests=2).controller
    for key in ("memory", "faults"):
        fig = dash.figures[key]
        axes = list(fig.select_yaxes())
        assert len(axes) == (1 if key == "memory" else 2)
        assert all(ax.ticklabeloverflow == "allow" for ax in axes), key
        assert all(t.type == "bar" and t.textposition == "none" and t.text is None
                   for t in fig.data), key


def test_run_cache_runs_each_scenario_and_mode_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One growing run per family and mode answers every shorter guest count, ksm too;
    a longer count continues it. Guests already run are never run again.
    """
    calls = _count_runs(monkeypatch)
    cache = RunCache()
    cache.curve(SMALL, ["xip"], default_curve_guests(2))
    assert calls == [("xip", 0, 2)]  # the 1-guest point is its prefix
    cache.comparison(SMALL, ["xip"])
    cache.comparison(SMALL.replace(guests=1), ["xip"])
    cache.curve(SMALL.replace(guests=3), ["xip"], default_curve_guests(3))
    assert calls == [("xip", 0, 2), ("xip", 2, 3)]  # continued, not started over
    cache.curve(SMALL, ["xip"], default_curve_guests(2))
    assert calls == [("xip", 0, 2), ("xip", 2, 3)]
    # ksm: one growing run too; every point is its prefix plus ksmd's tail.
    calls.clear()
    cache.curve(SMALL, ["xip", "ksm"], default_curve_guests(2))
    cache.curve(SMALL.replace(guests=3), ["xip", "ksm"], default_curve_guests(3))
    assert calls == [("ksm", 0, 2), ("ksm", 2, 3)]
    for n in (1, 2, 3):
        got = cache.result(SMALL.replace(guests=n), "ksm")
        assert got.as_dict() == Host(SMALL.replace(guests=n), "ksm").run().as_dict()
    # Guests started apart: ksmd scans between starts, so each ksm count is answered on
    # its own (ApartRun: ksmd's tail on a copy), from one host grown count by count.
    apart = SMALL.replace(start_interval_ms=50.0)
    calls.clear()
    cache.curve(apart, ["xip", "ksm"], default_curve_guests(2))
    assert calls == [("xip", 0, 2), ("ksm", 0, 1), ("ksm", 1, 2)]
    # Asked for more guests first, the fewest are answered first: the host grows once.
    calls.clear()
    RunCache().run_many([(apart.replace(guests=3), "ksm"), (apart.replace(guests=1), "ksm")])
    assert calls == [("ksm", 0, 1), ("ksm", 1, 3)]


def test_run_cache_answers_from_prefixes_of_a_run_at_its_reach(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With reach 5, the first run is made with 5 guests, and every smaller count is its
    prefix: the same numbers as a run of that many guests."""
    calls = _count_runs(monkeypatch)
    cache = RunCache(reach=5)
    got = cache.comparison(SMALL, ["pagecache", "xip"])
    assert calls == [("pagecache", 0, 5), ("xip", 0, 5)]
    calls.clear()
    for n in (1, 3, 4):
        for mode in ("pagecache", "xip"):
            r = cache.result(SMALL.replace(guests=n), mode)
            assert r.scenario == SMALL.replace(guests=n)
            assert r.as_dict() == Host(SMALL.replace(guests=n), mode).run().as_dict()
    assert got.results["xip"].as_dict() == Host(SMALL, "xip").run().as_dict()
    calls.clear()
    cache.result(SMALL.replace(guests=4), "xip")
    assert calls == []  # prefixes are kept
    r = cache.result(SMALL.replace(guests=7), "xip")  # beyond the reach: the run grows
    assert calls == [("xip", 5, 7)]
    assert r.as_dict() == Host(SMALL.replace(guests=7), "xip").run().as_dict()
    assert (SMALL.replace(guests=6), "xip") in cache
    assert (SMALL.replace(guests=8), "xip") not in cache
    assert cache.known(SMALL.replace(guests=6), ["xip", "ksm"]).results.keys() == {"xip"}


def _count_runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Records (mode, guests before, guests after) of every Host.add_guests that starts one."""
    calls: list[tuple[str, int, int]] = []
    real = Host.add_guests

    def counting(self: Host, guests: int, *args: Any, **kwargs: Any) -> None:
        if guests > len(self.guests):
            calls.append((self.mode, len(self.guests), guests))
        real(self, guests, *args, **kwargs)

    monkeypatch.setattr(Host, "add_guests", counting)
    return calls


def _bars(fig: Any) -> dict[str, list[float]]:
    return {t.meta: list(t.y) for t in fig.data}  # meta: the category; name: its words


def _expected_bars(scenario: Scenario, modes: list[str]) -> dict[str, list[float]]:
    results = {m: Host(scenario, m).run() for m in modes}
    return {c: [results[m].bytes_by_category[c] / MIB for m in modes] for c in CATEGORIES}


def test_dashboard_builds_headless_with_the_model_numbers(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Built: one run per mode at the slider's maximum, ksm included (its curve points are
    that run's prefixes plus ksmd's tail)."""
    calls = _count_runs(monkeypatch)
    box = lab.comparison_dashboard(SMALL, max_guests=8)
    assert sorted(calls) == [("ksm", 0, 8), ("pagecache", 0, 8), ("xip", 0, 8)]
    dash = box.controller
    assert dash.modes() == MODES3
    want = _expected_bars(SMALL, MODES3)
    got = _bars(dash.figures["memory"])
    for cat in CATEGORIES:
        assert got[cat] == pytest.approx(want[cat], abs=1e-6), cat
    curve = dash.figures["guests"]
    assert [t.name for t in curve.data] == ["pagecache", "xip", "ksm", "dax"]
    # Modes with prefixes: every guest count up to the maximum, read off one run's timeline.
    assert list(curve.data[1].x) == list(range(1, 9))
    assert list(curve.data[1].y) == pytest.approx(
        [Host(SMALL.replace(guests=n), "xip").run().host_bytes / MIB for n in range(1, 9)],
        abs=1e-6)
    assert list(curve.data[2].x) == [1, 2, 4, 8]  # ksm: a result per point, up to the max
    assert list(curve.data[3].x) == [] and curve.data[3].visible is False
    assert "at 2 guests: " in dash.summary.value and "xip saves" in dash.summary.value


def test_slider_change_updates_figures_in_place_from_the_cache(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """Moving the guests slider runs no guest (ksm too is read off its run), and redraws
    in place."""
    want3 = _expected_bars(SMALL.replace(guests=3), MODES3)
    want2 = _expected_bars(SMALL, MODES3)
    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    memory, guests = dash.figures["memory"], dash.figures["guests"]
    calls = _count_runs(monkeypatch)

    dash.guests_slider.value = 3
    assert calls == []  # prefixes of the 8-guest runs (ksm: plus ksmd's tail)
    assert dash.figures["memory"] is memory and dash.figures["guests"] is guests
    got = _bars(memory)
    for cat in CATEGORIES:
        assert got[cat] == pytest.approx(want3[cat], abs=1e-6), cat
    assert list(guests.data[1].x) == list(range(1, 9))  # the xip line did not move
    assert list(guests.data[2].x) == [1, 2, 4, 8]  # nor did ksm's: the curve stays put
    pc, ksm = (Host(SMALL.replace(guests=3), m).run().host_bytes for m in ("pagecache", "ksm"))
    assert "at 3 guests: " in dash.summary.value
    assert f"ksm saves {(pc - ksm) / MIB:.1f} MiB" in dash.summary.value  # from the ksm bar
    # The synced state a new view draws from (JUPYTER.md pitfall 3) holds the new numbers too.
    bundle = {t["meta"]: t["y"] for t in memory._widget_data}
    assert list(bundle["page_cache"]) == pytest.approx(want3["page_cache"], abs=1e-6)

    calls.clear()
    dash.guests_slider.value = 7
    dash.mode_buttons["ksm"].value = False
    dash.guests_slider.value = 2
    assert calls == []  # the curve's new points (4 and 7) too
    assert _bars(memory)["anon"] == pytest.approx(want2["anon"][:2], abs=1e-6)
    assert list(memory.data[0].x) == ["pagecache", "xip"]
    assert "0 new runs" in dash.status.value

    calls.clear()
    dash.mode_buttons["dax"].value = True  # a mode not run yet: once, at the maximum
    dash.guests_slider.value = 5
    assert calls == [("dax", 0, 8)]
    assert list(memory.data[0].x) == ["pagecache", "xip", "dax"]
    assert _bars(memory)["shared"] == pytest.approx(
        _expected_bars(SMALL.replace(guests=5), ["pagecache", "xip", "dax"])["shared"],
        abs=1e-6)


def test_a_move_sends_the_figures_changes_and_the_text_in_one_message(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A slider move sends the bar charts' changes and the summary as one message, which the
    browser applies in one task and so draws in one frame (plotly.py sends four messages a
    figure, and a frame could come between figure and text), then the figures' synced
    states. Not the summary's: a message of its own could overwrite, in the browser, a
    later count's text that a frame drew. The curve, which stays put, sends nothing."""
    import ipywidgets

    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    names = {id(f): k for k, f in dash.figures.items()} | {id(dash.summary): "summary"}
    ids = {f.model_id: k for k, f in dash.figures.items()} | {dash.summary.model_id: "summary"}
    sent: list[tuple[str, dict[str, Any]]] = []

    def record(widget: Any, msg: dict[str, Any], buffers: Any = None) -> None:
        if id(widget) in names:
            sent.append((names[id(widget)], msg))

    monkeypatch.setattr(ipywidgets.Widget, "_send", record)
    dash.guests_slider.value = 3
    assert [(name, msg["method"], sorted(msg.get("state") or msg["content"]))
            for name, msg in sent] == [
        ("memory", "custom", ["xip_batch"]),
        ("memory", "update", ["_widget_data", "_widget_layout"]),
        ("faults", "update", ["_widget_data", "_widget_layout"]),
        ("memory", "custom", ["xip_frames"])]  # the next count's frame (see test_frames_*)
    batch = sent[0][1]["content"]["xip_batch"]
    assert [ids[item["model"]] for item in batch] == ["memory", "faults", "summary"]
    assert batch[2]["value"] == dash.summary.value and "at 3 guests" in batch[2]["value"]
    # Tagged: for the slider at 3, and what it shows (Shown).
    key = batch[0]["key"]
    assert all(item["key"] == key and item["when"] == [dash.guests_slider.model_id, 3]
               for item in batch)
    memory, faults = batch[0]["update"], batch[1]["update"]
    want = _expected_bars(SMALL.replace(guests=3), MODES3)
    # Every bar, changed or not (the browser may show another count's), in trace order.
    assert memory["style_traces"] == list(range(len(CATEGORIES)))
    y = dict(zip([t.meta for t in dash.figures["memory"].data], memory["style_data"]["y"],
                 strict=True))
    for cat in CATEGORIES:
        assert y[cat] == pytest.approx(want[cat], abs=1e-6), cat
    assert memory["style_data"]["x"] == [MODES3] * len(CATEGORIES)
    assert faults["style_traces"] == [0, 1, 2]
    assert "Host memory, 3 guests" in json.dumps(memory["layout_data"])
    assert "all 3 guests" in json.dumps(faults["layout_data"])


def _batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    """(figure, message) of every message a FigureWidget sends from now on."""
    from xipmodel.lab import widgets

    sent: list[tuple[Any, dict[str, Any]]] = []
    monkeypatch.setattr(widgets.FigureWidget, "send",
                        lambda self, msg, buffers=None: sent.append((self, msg)))
    return sent


@pytest.mark.parametrize("curve_guests", [None, [1, 2, 4]])
def test_frames_are_the_batches_a_move_sends(lab: ModuleType, monkeypatch: pytest.MonkeyPatch,
                                            curve_guests: list[int] | None) -> None:
    """After each update the browser gets the frames of the slider's value and its
    neighbours (the dashboard's frames: drawn in the browser as the slider moves, before
    the kernel knows of the move). A frame must be what the kernel itself sends for that
    count, item for item and with the same key: the browser skips the kernel's batch for
    a count whose frame it drew (the curve's too, given curve_guests)."""
    dash = lab.comparison_dashboard(SMALL, max_guests=8, curve_guests=curve_guests).controller
    sent = _batches(monkeypatch)
    dash.figures["memory"]._handle_custom_msg({"xip_hello": True}, [])  # those sent so far
    frames: dict[int, Any] = {}
    for n in (3, 4, 5, 6, 5, 4, 3):
        if n == 5:  # and a mode off and on: lines (and break-evens) fewer, then more
            for on in (False, True):
                dash.mode_buttons["xip"].value = on
            sent.clear()  # a version after those: its frames anew
            frames = {}
            dash.figures["memory"]._handle_custom_msg({"xip_hello": True}, [])
        dash.guests_slider.value = n
        batches = [m["xip_batch"] for _, m in sent if "xip_batch" in m]
        tables = [m["xip_frames"] for _, m in sent if "xip_frames" in m]
        sent.clear()
        if n in frames:  # drawn in the browser already: the kernel's batch names its key
            mine = [{k: v for k, v in item.items() if k != "when"} for item in batches[0]
                    if "key" in item]
            assert mine == frames[n], n
            assert len(mine) == (4 if curve_guests else 3)
        for table in tables:
            assert table["slider"] == dash.guests_slider.model_id
            assert table["version"] == tables[0]["version"] == dash._version
            frames |= {int(k): v for k, v in table["frames"].items()}
        assert {n - 1, n, n + 1} & set(range(1, 9)) <= set(frames), n
    assert sorted(frames) == [2, 3, 4, 5, 6, 7]


@pytest.mark.parametrize("curve_guests", [None, [1, 2, 4]])
def test_frames_cover_every_property_that_changes(lab: ModuleType,
                                                  curve_guests: list[int] | None) -> None:
    """A frame, and the kernel's tagged update, send the figures' volatile properties
    whole: drawn over any other figure's state, it must leave nothing of that state, and
    an update the browser skips (its slider has moved on) must lose nothing that the
    next does not send again. So two specs, at any counts, with modes still running or
    not, with other modes shown, differ only in those (the curve's, given curve_guests:
    the slider's value is then a point of it; else it does not move with the slider)."""
    from xipmodel.lab import widgets

    dash = lab.comparison_dashboard(SMALL, max_guests=8, curve_guests=curve_guests).controller
    s = dash.scenario()
    groups = []  # the specs of one set of modes
    for modes in (MODES3, ["pagecache", "ksm"], [*MODES3, "dax"]):
        dash.cache.run_many([(s.replace(guests=n), m) for n in range(1, 9) for m in modes])
        groups.append([])
        for n in (1, 3, 8):
            sn = s.replace(guests=n)
            for pending in ((), ("ksm",), ("xip", "ksm")):
                memory, faults, curve, _ = dash._specs(sn, modes, dash._lines(sn, modes),
                                                       pending)
                groups[-1].append({"memory": memory, "faults": faults, "guests": curve})
    specs = [spec for group in groups for spec in group]
    moving = dash._moving()
    assert ("guests" in moving) == (curve_guests is not None)
    if curve_guests is None:  # the curve stays put: for given modes, the same at any count
        for group in groups:
            assert all(widgets._between(g["guests"], group[0]["guests"]) is None
                       for g in group)
    for k in moving:
        traces, layout = widgets._VOLATILE[k]
        changed: set[str] = set()
        for a in specs:
            for b in specs:
                if (changes := widgets._between(a[k], b[k])) is not None:
                    assert {p for t in changes[0] for p in t} <= traces, k
                    assert set(changes[1]) | set(changes[2]) <= layout, k
                    changed |= {p for t in changes[0] for p in t} | set(changes[1])
        assert changed >= {"x", "y"}, k

        def paths(spec: dict[str, Any], keys: Any = (traces, layout)) -> Any:
            """What the volatile properties' update sets: a spec drawn whole over another
            replaces it only where both have the same paths (plotly merges dicts key by
            key, and a property a trace lacks is not sent to it)."""
            msg = widgets._update_msg(widgets._volatile(spec, keys))
            assert "_undefined_" not in json.dumps(msg["style_data"])
            return sorted(msg["layout_data"]), sorted(msg["style_data"])

        assert all(paths(a[k]) == paths(specs[0][k]) for a in specs), k


def test_frames_are_sent_again_to_a_page_made_anew(lab: ModuleType,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A reloaded page makes the figures' models anew, without frames: each model says
    hello, and the dashboard sends its figure all the frames of its controls again; new
    controls, a new version and new frames."""
    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    sent = _batches(monkeypatch)
    dash.guests_slider.value = 5
    version = dash._version
    sent.clear()
    memory = dash.figures["memory"]
    memory._handle_custom_msg({"xip_hello": True}, [])
    [table] = [m["xip_frames"] for fig, m in sent if "xip_frames" in m and fig is memory]
    assert table["reset"] and table["version"] == version
    assert sorted(map(int, table["frames"])) == [1, 2, 3, 4, 5, 6]  # SMALL: from 2 guests
    sent.clear()
    dash.mode_buttons["xip"].value = False
    [table] = [m["xip_frames"] for _, m in sent if "xip_frames" in m]
    assert table["version"] == version + 1 and sorted(map(int, table["frames"])) == [4, 5, 6]
    mine = {c[0]: c[2] for c in table["controls"]}
    assert mine[dash.mode_buttons["xip"].model_id] is False


def test_a_moves_message_is_the_one_plotly_py_would_send(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """update_figures makes each figure's Plotly.update message from the specs' differences
    and sends it before plotly.py applies them in the kernel: the message is the one
    plotly.py's batch_update makes of the same changes, for moves and modes switched on
    and off (bars added and removed, lines emptied and filled, annotations replaced).
    (Without the bars' volatile properties, which plotly.py does not send unchanged:
    test_a_move_sends_the_figures_changes_and_the_text_in_one_message.)"""
    from xipmodel.lab import widgets

    monkeypatch.setattr(widgets, "_VOLATILE",
                        {k: (frozenset(), frozenset()) for k in widgets._VOLATILE})
    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    ids = {f.model_id: k for k, f in dash.figures.items()}
    ours: list[tuple[str, Any]] = []
    theirs: list[tuple[str, Any]] = []
    send_batch, send_update = widgets._send_batch, widgets.FigureWidget._send_update_msg

    def record_batch(updates: Any, texts: Any, shown: Any = None) -> bool:
        ours.extend((ids[fig.model_id], update) for fig, update in updates)
        return bool(send_batch(updates, texts, shown))

    def record_plotly(fig: Any, *args: Any, **kwargs: Any) -> None:
        send_update(fig, *args, **kwargs)  # into update_figures' list: dropped
        theirs.append((ids[fig.model_id], widgets._COLLECTING[-1][-1][1]))

    monkeypatch.setattr(widgets, "_send_batch", record_batch)
    monkeypatch.setattr(widgets.FigureWidget, "_send_update_msg", record_plotly)
    dash.guests_slider.value = 3
    dash.mode_buttons["ksm"].value = False
    dash.mode_buttons["dax"].value = True  # not run yet: run, then drawn
    dash.guests_slider.value = 7
    dash.mode_buttons["xip"].value = False
    assert {name for name, _ in ours} == {"memory", "faults", "guests"}
    assert len(ours) >= 10
    assert json.loads(json.dumps(ours)) == json.loads(json.dumps(theirs))


def test_figures_changed_before_a_spec_that_raises_are_still_sent(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """update_figures applies specs in order; when one raises, the figures already changed
    are sent all the same (else the browser would keep their old data for good: the same
    spec again is no change)."""
    from xipmodel.lab import widgets

    def bars(y: float, color: str = "#1f77b4") -> dict[str, Any]:
        return {"data": [{"type": "bar", "x": ["p"], "y": [y], "marker": {"color": color}}],
                "layout": {}}

    first, second = widgets._figure(bars(1)), widgets._figure(bars(1))
    sent = _batches(monkeypatch)
    with pytest.raises(ValueError):
        widgets.update_figures([(first, bars(2)), (second, bars(2, "notacolor"))])
    assert not widgets._COLLECTING
    [batch] = [m["xip_batch"] for _, m in sent]
    assert batch[0]["model"] == first.model_id  # (and what of `second` was applied)
    assert batch[0]["update"]["style_data"]["y"] == [[2]]
    assert first._widget_data[0]["y"] == [2]  # the synced state too


def test_figures_after_one_plotly_refuses_are_drawn_again(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The message of a move goes out before plotly.py checks its values: when it refuses
    the first figure's, the figures after it in the message were never applied in the
    kernel either. Does the same spec again put them there (not "no change")?"""
    from xipmodel.lab import widgets

    def bars(y: float, color: str = "#1f77b4") -> dict[str, Any]:
        return {"data": [{"type": "bar", "x": ["p"], "y": [y], "marker": {"color": color}}],
                "layout": {}}

    first, second = widgets._figure(bars(1)), widgets._figure(bars(1))
    monkeypatch.setattr(widgets.FigureWidget, "send", lambda self, msg, buffers=None: None)
    with pytest.raises(ValueError):
        widgets.update_figures([(first, bars(2, "notacolor")), (second, bars(2))])
    widgets.update_figures([(second, bars(2))])
    assert second.data[0].y == (2,) and second._widget_data[0]["y"] == [2]


def test_slider_past_the_runs_continues_them(lab: ModuleType,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the guest count run so far (reach 3, slider to 4), each mode's run gets one guest
    more, continued rather than started over, and the figures show the 4-guest numbers."""
    dash = lab.comparison_dashboard(SMALL, max_guests=8, reach=3).controller
    memory, curve = dash.figures["memory"], dash.figures["guests"]
    calls = _count_runs(monkeypatch)
    dash.guests_slider.value = 4
    assert sorted(calls[:3]) == [("ksm", 3, 4), ("pagecache", 3, 4), ("xip", 3, 4)]
    # Then, while the browser draws, a guest more for the next move (ksm's results too).
    assert sorted(calls[3:]) == [("ksm", 4, 5), ("pagecache", 4, 5), ("xip", 4, 5)]
    assert (SMALL.replace(guests=5), "ksm") in dash.cache
    want = _expected_bars(SMALL.replace(guests=4), MODES3)
    got = _bars(memory)
    for cat in CATEGORIES:
        assert got[cat] == pytest.approx(want[cat], abs=1e-6), cat
    assert list(curve.data[1].x) == [1, 2, 3]  # xip: every count up to the reach
    assert memory.layout.title.text == "Host memory, 4 guests"
    assert "at 4 guests: " in dash.summary.value


def test_pending_ksm_is_drawn_empty_first(lab: ModuleType,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """While ksm runs (guests started apart: a run per count), the figures already hold the
    other modes' new numbers."""
    apart = SMALL.replace(start_interval_ms=30.0)
    want = _expected_bars(apart.replace(guests=3), ["pagecache", "xip"])
    dash = lab.comparison_dashboard(apart, max_guests=8).controller
    memory, guests = dash.figures["memory"], dash.figures["guests"]
    seen: list[tuple[str, list[Any], list[Any]]] = []
    real = ApartRun.result

    def snapshot(self: ApartRun, *args: Any, **kwargs: Any) -> RunResult:
        seen.append((memory.layout.title.text, list(memory.data[2].y), list(guests.data[2].x)))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ApartRun, "result", snapshot)
    dash.guests_slider.value = 3
    assert len(seen) == 1
    title, anon, ksm_x = seen[0]
    assert title == "Host memory, 3 guests (ksm running…)"
    assert anon[:2] == pytest.approx(want["anon"], abs=1e-6) and anon[2] is None
    assert ksm_x == [1, 2, 4, 8]
    assert memory.layout.title.text == "Host memory, 3 guests"
    assert list(guests.data[2].x) == [1, 2, 4, 8]


def test_curve_guests_fixes_the_curve_points(lab: ModuleType) -> None:
    """Given curve_guests, every line has those points and the slider's value."""
    dash = lab.comparison_dashboard(SMALL, max_guests=8, curve_guests=[1, 4]).controller
    dash.guests_slider.value = 3
    curve = dash.figures["guests"]
    for trace in curve.data[:3]:
        assert list(trace.x) == [1, 3, 4], trace.name
    assert list(curve.data[0].y) == pytest.approx(
        [Host(SMALL.replace(guests=n), "pagecache").run().host_bytes / MIB
         for n in (1, 3, 4)], abs=1e-6)


def test_dashboard_in_a_kernel_computes_after_the_cell(lab: ModuleType) -> None:
    """In a kernel the first state is computed by post_run_cell (the box is on screen by
    then, with its progress bar), or at once when read."""

    class Events:
        def __init__(self) -> None:
            self.hooks: list[Callable[..., None]] = []

        def register(self, event: str, hook: Callable[..., None]) -> None:
            assert event == "post_run_cell"
            self.hooks.append(hook)

        def unregister(self, event: str, hook: Callable[..., None]) -> None:
            self.hooks.remove(hook)

    events = Events()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lab, "_kernel_events", lambda: events)
        dash = lab.comparison_dashboard(SMALL, max_guests=4).controller
        assert dash.status.value == "computing…" and len(events.hooks) == 1
        assert list(dash._figures["memory"].data[0].y) == [None, None, None]
        events.hooks[0](None)  # the cell has run
        assert events.hooks == []
        assert "new runs" in dash.status.value
        assert list(dash._figures["memory"].data[0].x) == MODES3
        dash2 = lab.comparison_dashboard(SMALL, max_guests=4, cache=dash.cache).controller
        assert _bars(dash2.figures["memory"]) == _bars(dash.figures["memory"])  # read: now
        events.hooks[0](None)
        assert "0 new runs" in dash2.status.value


def test_figures_speak_a_students_words(lab: ModuleType) -> None:
    """Legends name the categories in words (one mapping, shared with the static figures),
    "ksm" is a mode and never a category's label, and every bar and line has hover text."""
    from xipmodel.host import MODES
    from xipmodel.lab import figures

    assert figures.CATEGORY_WORDS is views.CATEGORY_WORDS
    assert set(views.CATEGORY_WORDS) == set(CATEGORIES)
    dash = lab.comparison_dashboard(SMALL, max_guests=2).controller
    memory = dash.figures["memory"]
    assert [t.name for t in memory.data] == [views.CATEGORY_WORDS[c] for c in CATEGORIES]
    assert views.CATEGORY_WORDS["page_cache"] == "page cache"
    assert views.CATEGORY_WORDS["anon"] == "anonymous memory"
    assert views.CATEGORY_WORDS["cow"] == "CoW copies"
    assert "KSM" in views.CATEGORY_WORDS["ksm"] and "metadata" in views.CATEGORY_WORDS["ksm"]
    timeline = lab.timeline(compare(SMALL, ["ksm"])).controller
    figs = [*dash.figures.values(), *timeline.figures.values()]
    for fig in figs:
        for trace in fig.data:
            assert trace.name not in MODES or trace.type == "scatter", trace.name
            assert trace.hovertemplate, (fig.layout.title.text, trace.name)
    assert not {t.name for t in memory.data} & set(MODES)


# ── your own workload ───────────────────────────────────────────────────────────────────

def _shipped_trace_bytes(name: str) -> bytes:
    return (importlib.resources.files("xipmodel") / "data" / "traces" / f"{name}.npz"
            ).read_bytes()


def _upload(dash: Any, name: str, content: bytes) -> None:
    """What the browser's FileUpload sends: its value, as ipywidgets 8 deserializes it."""
    dash.upload.set_state({"value": [{"name": name, "type": "application/octet-stream",
                                      "size": len(content), "content": memoryview(content),
                                      "last_modified": 0}]})


def _compare_bars(scenario: Scenario, modes: list[str]) -> dict[str, list[float]]:
    results = compare(scenario, modes).results
    return {c: [results[m].bytes_by_category[c] / MIB for m in modes] for c in CATEGORIES}


def _shows(fig: Any, want: dict[str, list[float]]) -> bool:
    got = _bars(fig)
    return all(got[c] == pytest.approx(want[c], abs=1e-6) for c in CATEGORIES)


def test_workload_menu_lists_the_shipped_traces(lab: ModuleType) -> None:
    """The shipped traces sit beside the program models; a custom image that lacks a
    trace's files leaves the trace out."""
    dash = lab.comparison_dashboard(SMALL, max_guests=2, defer=True).controller
    values = [v for _, v in dash.mix.options]
    assert {"webserver", "shell"} <= set(values)
    for name in TRACES:
        assert f"trace:{name}" in values
        assert dict(dash.mix.options)[f"{name} (recorded trace)"] == f"trace:{name}"
    from xipmodel.distro import default_image

    custom = lab.comparison_dashboard(SMALL, image=default_image(), max_guests=2,
                                      defer=True).controller
    assert not [v for _, v in custom.mix.options if str(v).startswith("trace:")]


def test_an_uploaded_trace_becomes_the_workload(lab: ModuleType, tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """An upload is stored in the dashboard's own directory (not the cwd), becomes the
    workload, and the figures hold what an independent compare of the same file gives.
    A different file uploaded under the same name is a different workload with its own
    results; the first one's are kept."""
    monkeypatch.chdir(tmp_path)
    dash = lab.comparison_dashboard(SMALL, max_guests=3).controller
    httpd, compiler = _shipped_trace_bytes("httpd"), _shipped_trace_bytes("compiler")
    seen: list[tuple[str, str]] = []
    dash.status.observe(lambda c: seen.append((c["new"], dash.progress.layout.visibility)),
                        names="value")
    _upload(dash, "my trace.npz", httpd)
    # The bar is on screen from the start: the image is built before a guest reports.
    assert seen[0] == ("building the image of my trace.npz…", "visible")
    assert seen[-1][0].startswith("updated in ") and dash.progress.layout.visibility == "hidden"
    first = dash.scenario()
    assert first.workload.startswith(f"trace:{dash.uploads.path}/")
    assert list(tmp_path.iterdir()) == []  # nothing in the cwd
    assert dash.mix.label == "my trace.npz (uploaded)"
    assert dash.upload_status.value.startswith("✓ my trace.npz: trace 'httpd'")
    assert dash.upload.value == ()  # the same file can be chosen again
    mine = tmp_path / "mine.npz"
    mine.write_bytes(httpd)
    want = _compare_bars(SMALL.replace(workload=str(mine)), MODES3)
    assert _shows(dash.figures["memory"], want)
    assert dash.heap.disabled  # a trace is replayed as recorded

    _upload(dash, "my trace.npz", compiler)  # same name, other bytes
    second = dash.scenario()
    assert second.workload != first.workload
    assert dash.mix.label == "my trace.npz (uploaded #2)"
    mine.write_bytes(compiler)
    want2 = _compare_bars(SMALL.replace(workload=str(mine)), MODES3)
    assert want2 != want
    assert _shows(dash.figures["memory"], want2)

    dash.mix.value = first.workload  # back to the first upload: its own runs
    assert _shows(dash.figures["memory"], want)
    assert "0 new runs" in dash.status.value
    folder = dash.uploads.path
    dash.uploads.cleanup()
    assert not folder.exists()


def _without_file_sizes(content: bytes, tmp_path: Any) -> bytes:
    """A well-formed trace archive whose meta lacks the recorded file sizes."""
    from xipmodel.workloads.trace import PageTrace

    (tmp_path / "in.npz").write_bytes(content)
    trace = PageTrace.load(tmp_path / "in.npz")
    trace.meta.pop("file_sizes")
    trace.save(tmp_path / "out.npz")
    return bytes((tmp_path / "out.npz").read_bytes())


def test_an_upload_that_is_not_a_trace_keeps_the_state(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Garbage, a truncated trace or a file over the limit: one line saying why, in the
    dashboard (no exception), and the controls and figures as they were."""
    from xipmodel.lab import uploads

    dash = lab.comparison_dashboard(SMALL, max_guests=3).controller
    before = (dash.mix.options, dash.mix.value, _bars(dash.figures["memory"]),
              dash.scenario())
    httpd = _shipped_trace_bytes("httpd")
    for name, content, reason in [
            ("junk.npz", b"not a trace at all", "not a readable .npz archive"),
            ("cut.npz", httpd[: len(httpd) // 2], "not a readable .npz archive"),
            ("notes.txt", b"PK\x03\x04", "not a readable .npz archive"),
            ("sizes.npz", _without_file_sizes(httpd, tmp_path), "meta['file_sizes'] is")]:
        _upload(dash, name, content)
        status = dash.upload_status.value
        assert status.startswith(f"✗ {name} is not a trace the model can run: "), status
        assert reason in status and "\n" not in status and str(dash.uploads.path) not in status
        assert (dash.mix.options, dash.mix.value, _bars(dash.figures["memory"]),
                dash.scenario()) == before
    monkeypatch.setattr(uploads, "MAX_UPLOAD_BYTES", 1000)
    _upload(dash, "big.npz", httpd)
    assert dash.upload_status.value == (f"✗ big.npz: {len(httpd) / 2**20:.1f} MiB, more "
                                        f"than the {1000 / 2**20:g} MiB an uploaded trace "
                                        f"may have")
    assert dash.scenario() == before[3]
    assert list(dash.uploads.path.iterdir()) == []  # what was refused is not kept


# ── the memory map ──────────────────────────────────────────────────────────────────────

def test_hover_text_names_the_file_and_page_of_a_frame(xip_host: Host,
                                                       pagecache_host: Host) -> None:
    """A page-cache copy and a shared-segment frame both say which file page they hold."""
    for host, kind in ((pagecache_host, FrameKind.PAGECACHE), (xip_host, FrameKind.SHARED)):
        mem = host.memory
        pfn = int(np.flatnonzero(mem.kind[:mem.frames] == kind)[0])
        block = int(mem.content[pfn]) - CONTENT_BLOCK
        path, page = _file_page_of_block(host, block)
        text = views.describe_frame(host, pfn)
        assert f"image block {block} = {path} page {page}" in text
    # The most shared segment frame lists the guests that map it.
    mem = xip_host.memory
    shared = np.flatnonzero(mem.kind[:mem.frames] == FrameKind.SHARED)
    pfn = int(shared[np.argmax(mem.refcount[shared])])
    users = [g.gid for g in xip_host.guests
             if any(xip_host.segment.frame_of[b] == pfn for b in g.dcss_mapped)]  # type: ignore[union-attr]
    assert len(users) == mem.refcount[pfn] - 1 == 2
    assert "mapped by guests 0–1" in views.describe_frame(xip_host, pfn)


def test_memory_map_widget_hover_and_zoom(lab: ModuleType, xip_host: Host) -> None:
    box = lab.memory_map(xip_host, cells=256, columns=32)
    mm = box.controller
    mm.zoom.value = 1
    mm.position.value = 0
    kind_trace = mm.figure.data[0]
    text = [cell for row in kind_trace.text for cell in row]
    assert text[5] == views.describe_frame(xip_host, 5)
    assert np.asarray(kind_trace.z).shape == (8, 32)


def test_memory_map_of_a_100k_frame_host_is_binned(lab: ModuleType) -> None:
    """A host of ~100k frames fits in the cells at the widest zoom, quickly."""
    host = Host(Scenario(guests=1), "xip")
    for i in range(100_000):
        host.memory.alloc(FrameKind.ANON if i % 3 else FrameKind.PAGECACHE, 0,
                          CONTENT_BLOCK + 300 if i % 3 == 0 else -i - 2)
    start = time.perf_counter()
    mm = lab.memory_map(host).controller
    assert mm.zoom.value * mm.cells >= host.memory.frames
    z = np.asarray(mm.figure.data[0].z)
    assert z.size == 2048
    assert "guest anonymous memory" in mm.figure.data[0].text[0][0]
    mm.zoom.value = 1
    assert time.perf_counter() - start < 10


# ── the page-walk explorer ──────────────────────────────────────────────────────────────

def test_page_walk_steps_side_by_side(lab: ModuleType, xip_host: Host) -> None:
    """The same text page: a page-cache copy in one mode, the shared segment in the other."""
    box = lab.page_walk_explorer(xip_host)
    pw = box.controller
    assert [c.title.value for c in pw.columns] == ["<b>pagecache mode</b>", "<b>xip mode</b>"]
    nlevels = xip_host.guests[0].preset.nlevels
    full = 1 + (nlevels + 1) ** 2 - 1 + 1  # TLB, the 2-D walk, the frame
    # A text page both modes mapped (fault-around maps more pages in page-cache mode).
    for label, va in pw.page.options:
        if "/usr/bin/dash r-x" in label:
            pw.page.value = va
            if all(len(c.rows) == full for c in pw.columns):
                break
    for c in pw.columns:
        assert len(c.rows) == full
    assert "guest page cache" in pw.columns[0].rows[-1]["why"]
    assert "shared segment" in pw.columns[1].rows[-1]["why"]
    table = pw.columns[1].figure
    pw.next.click()
    pw.next.click()
    assert pw.step.value == 2
    fill = table.data[0].cells.fill.color[0]
    assert fill[2] == "#ffe08a" and fill[1] != "#ffe08a"
    assert "24 references" in pw.columns[1].text.value


def test_page_walk_and_memory_map_handlers_run_one_at_a_time(
        lab: ModuleType, xip_host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel 7 may run two controls' handlers on two threads at once: the page-walk
    explorer's would then read each other's `_quiet` (a step moved while a page is being
    picked can go undrawn), the memory map's could draw with each other's zoom. Each
    controller's handlers run one at a time, and end with both changes."""
    pw = lab.page_walk_explorer(xip_host).controller
    va = pw.page.options[-1][1]
    assert va != pw.page.value
    assert _second_waits(pw, "show", monkeypatch, lambda: setattr(pw.page, "value", va),
                         lambda: setattr(pw.step, "value", 1))
    assert pw.va == va and pw.step.value == 1
    for c in pw.columns:
        fill = c.figure.data[0].cells.fill.color[0]
        assert fill[1] == "#ffe08a" and fill[0] != "#ffe08a"
    mm = lab.memory_map(xip_host, cells=256, columns=32).controller
    assert _second_waits(mm, "spec", monkeypatch, lambda: setattr(mm.zoom, "value", 1),
                         lambda: setattr(mm.position, "value", 32))
    text = [cell for row in mm.figure.data[0].text for cell in row]
    assert (mm.zoom.value, mm.position.value) == (1, 32)
    assert text[0] == views.describe_frame(xip_host, 32)


# ── ext2 ────────────────────────────────────────────────────────────────────────────────

def test_ext2_explorer_highlights_the_files_blocks(lab: ModuleType) -> None:
    box = lab.ext2_explorer()
    ex = box.controller
    figure = ex.figure
    ex.file.value = "/usr/bin/bash"
    assert ex.figure is figure
    blocks = ex.image.block_map("/usr/bin/bash")
    z = np.asarray(figure.data[0].z, dtype=float).ravel()
    assert (z[blocks[blocks > 0]] == 3).all()
    for meta in ex.image.metadata_blocks("/usr/bin/bash"):
        assert z[meta.block] == 4
    assert str(ex.image.superblock.s_blocks_count) in ex.superblock.value
    assert "i_block[0]" in ex.inode.value


# ── the timeline ────────────────────────────────────────────────────────────────────────

def test_timeline_shows_the_results_timeline(lab: ModuleType) -> None:
    comparison = compare(SMALL, ["xip", "ksm"])
    tl = lab.timeline(comparison).controller
    memory = tl.figures["memory"]
    tl.mode.value = "ksm"
    r = comparison.results["ksm"]
    assert tl.figures["memory"] is memory
    for i, trace in enumerate(memory.data):
        assert list(trace.y) == pytest.approx((r.timeline_bytes[:, i] / MIB).tolist())
    assert list(memory.data[0].x) == pytest.approx((r.timeline_ns / 1e9).tolist())


def test_figures_load_a_small_front_end_module() -> None:
    """anywidget drops, for good, the messages of a widget whose front-end module has not
    loaded within 2 s of its creation: our figures' module must stay small (plotly's 5 MB
    bundle travels as the state of one model per kernel, imported once per page), else a
    loaded browser shows figures that never move again (the Voila browser test's stuck titles)."""
    from xipmodel.lab import widgets

    fig = widgets._figure({"data": [], "layout": {}})
    assert isinstance(fig, widgets.FigureWidget)
    assert len(fig._esm) < 32_768 < 1_000_000 < len(fig._xip_plotly.gzip_base64)
    assert type(fig).__name__ == "FigureWidget"  # the text repr notebooks store is unchanged


def _state_bytes(widget: Any) -> int:
    """The size of a widget's state as a notebook saved with widget state stores it."""
    import ipywidgets

    saved = ipywidgets.Widget.get_manager_state(widgets=[widget])["state"]
    return len(json.dumps(saved[widget.model_id]))


def test_figures_carry_plotly_once_per_kernel_compressed() -> None:
    """A notebook saved with its widget state carries plotly's 4.7 MiB bundle once, gzip'd,
    however many figures it has (it carried the bundle in every figure: ~30 MB for 01)."""
    import plotly.graph_objects as go

    from xipmodel.lab import widgets

    plotly_text = str(go.FigureWidget._esm).encode()
    figures = [widgets._figure({"data": [{"type": "bar", "y": [i, 2, 3]}], "layout": {}})
               for i in range(4)]
    bundle = widgets.bundle_model()
    assert {f._xip_plotly.model_id for f in figures} == {bundle.model_id}
    assert figures[0].get_state()["_xip_plotly"] == f"IPY_MODEL_{bundle.model_id}"
    each = [_state_bytes(f) for f in figures]
    assert max(each) < len(plotly_text) // 100  # a figure's state names the bundle
    carried = base64.b64decode(bundle.get_state()["gzip_base64"])
    assert gzip.decompress(carried) == plotly_text  # exactly plotly's
    assert _state_bytes(bundle) < len(plotly_text) // 2  # compressed
    assert carried[4:8] == b"\0\0\0\0"  # mtime 0: the same bytes in every kernel


def test_a_closed_bundle_model_is_replaced() -> None:
    from xipmodel.lab import widgets

    old = widgets.bundle_model()
    old.close()
    fig = widgets._figure({"data": [], "layout": {}})
    assert fig._xip_plotly is widgets.bundle_model() is not old
    assert fig._xip_plotly.comm is not None


def test_a_value_axis_ignores_bars_it_cannot_draw() -> None:
    """A NaN or an infinite height is no bar (plotly.js draws none): value_range gives
    the axis of the other bars, wherever the NaN is, instead of raising from math."""
    nan, inf = float("nan"), float("inf")
    assert views.value_range([nan, 95.0]) == views.value_range([95.0, nan]) == [0.0, 100.0]
    assert views.value_range([inf, None, 0.3]) == [0.0, 0.4]
    assert views.value_range([nan, -inf]) == [0.0, 1.0]


def test_value_axes_hold_every_bar_and_stay_put_while_the_slider_moves() -> None:
    """The bar charts' value axes end at a round number above the tallest bar (plus
    autorange's 5%), at most 40% above it, so the bars fill most of the height; and
    moved one guest at a time the axes stay put in most moves (their tick labels too)."""
    assert views.value_range([]) == views.value_range([None, 0.0]) == [0.0, 1.0]
    assert views.value_range([95.0]) == [0.0, 100.0]
    assert views.value_range([96.0]) == [0.0, 120.0]
    assert views.value_range([0.3, None]) == [0.0, 0.4]
    cache = RunCache(reach=48)
    scenario = Scenario(guests=1, workload="shell", guest_ram_mib=128, ksm_seconds=1.0)
    axes = []
    for n in range(1, 49):
        results = {m: cache.result(scenario.replace(guests=n), m) for m in MODES3}
        memory, faults = views.memory_bars(results), views.faults_bars(results)
        stacks = [sum(t["y"][i] for t in memory["data"]) for i in range(len(MODES3))]
        tallest = {"memory": max(stacks),
                   "faults": max(max(t["y"]) for t in faults["data"][:2]),
                   "disk": max(faults["data"][2]["y"])}
        ranges = {"memory": memory["layout"]["yaxis"]["range"],
                  "faults": faults["layout"]["yaxis"]["range"],
                  "disk": faults["layout"]["yaxis2"]["range"]}
        for k, (low, top) in ranges.items():
            assert low == 0.0 and 1.05 * tallest[k] <= top <= 1.4 * tallest[k], (n, k)
        axes.append(ranges)
    moved = sum(a != b for a, b in itertools.pairwise(axes))
    assert moved < len(axes) // 2  # (autorange moves every axis at every count here)


def _second_waits(holder: Any, method: str, monkeypatch: pytest.MonkeyPatch,
                  first: Callable[[], None], second: Callable[[], None]) -> bool:
    """Run `first` on one thread and, while it is held in its first call of `holder`'s
    `method` (after it), `second` on another, as ipykernel 7 may (some widgets' messages
    on a subshell's thread); True if `second`'s thread was still waiting half a second
    later."""
    import threading

    inner, held, release = getattr(holder, method), threading.Event(), threading.Event()

    def holding(*args: Any) -> Any:
        out = inner(*args)
        if not held.is_set():
            held.set()
            release.wait(10)
        return out

    monkeypatch.setattr(holder, method, holding)
    one = threading.Thread(target=first)
    one.start()
    assert held.wait(10)
    two = threading.Thread(target=second)
    two.start()
    two.join(0.5)
    waited = two.is_alive()
    release.set()
    one.join(10)
    two.join(10)
    return waited


def _toggle_during(dash: Any, monkeypatch: pytest.MonkeyPatch, method: str) -> bool:
    """Move `dash`'s slider to 3 and, while that update is held in `method`, switch xip
    off (_second_waits)."""
    return _second_waits(dash, method, monkeypatch,
                         lambda: setattr(dash.guests_slider, "value", 3),
                         lambda: setattr(dash.mode_buttons["xip"], "value", False))


def test_dashboard_updates_one_at_a_time(lab: ModuleType,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel 7 handles the slider's messages on a subshell's thread and a toggle's on
    the main thread: two controls changed while the kernel was busy ran two updates at
    once, each drawing with the other's half-made state (the browser test with the
    kernel stopped showed a mode switched off still drawn). They now run one after the
    other, and the figures end with both changes."""
    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    update, order = dash._update, []

    def logged() -> None:
        order.append("start")
        update()
        order.append("end")

    monkeypatch.setattr(dash, "_update", logged)
    waited = _toggle_during(dash, monkeypatch, "_prefetch")  # held inside the update
    assert waited  # the toggle's update waited for the slider's (before: it ran beside it)
    assert order == ["start", "end", "start", "end"]
    assert list(dash.figures["memory"].data[0].x) == ["pagecache", "ksm"]
    assert dash.figures["memory"].layout.title.text.startswith("Host memory, 3 guests")


def test_bar_charts_take_the_default_template_cut_to_bars(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's bar charts take plotly's default template less what no bar chart
    reads (plotly.js works the template into each redraw): its bar defaults and every
    layout key a cartesian chart reads are kept as they are (screenshots are the same),
    and a default of "none" stays none."""
    import plotly.io as pio

    from xipmodel.lab import widgets

    full = pio.templates[pio.templates.default].to_plotly_json()
    cut = widgets.bars_template()
    assert list(cut["data"]) == ["bar"] and cut["data"]["bar"] == full["data"]["bar"]
    for key in ("colorway", "font", "paper_bgcolor", "plot_bgcolor", "xaxis", "yaxis",
                "hoverlabel", "title"):
        assert cut["layout"][key] == full["layout"][key], key
    assert {"polar", "scene", "geo", "coloraxis"} <= set(full["layout"]) - set(cut["layout"])
    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    for k in ("memory", "faults"):
        assert dash.figures[k].layout.template.to_plotly_json() == cut
    monkeypatch.setattr(pio.templates, "default", "none")
    assert widgets.bars_template() == {}


def test_frames_are_labelled_with_the_controls_they_were_made_for(
        lab: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode switched off while an update runs (the toggle's message on another thread,
    see test_dashboard_updates_one_at_a_time) sets the button at once: the frames that
    update sends were made with the mode on, and must say so (the browser draws a frame
    only while its controls show what the frame's table names)."""
    dash = lab.comparison_dashboard(SMALL, max_guests=8).controller
    sent = _batches(monkeypatch)
    _toggle_during(dash, monkeypatch, "_prefetch")
    xip = dash.mode_buttons["xip"].model_id
    tables = [m["xip_frames"] for _, m in sent if "xip_frames" in m]
    assert len(tables) == 2
    for table in tables:
        says = {c[0]: c[2] for c in table["controls"]}[xip]
        for frame in table["frames"].values():
            bars = frame[0]["update"]["style_data"]["x"][0]
            assert ("xip" in bars) == says, (table["version"], bars)


def test_texts_are_set_when_no_figure_changes(lab: ModuleType) -> None:
    """update_figures sends texts in the figures' message; with no figure changed there
    is none, and the texts go as the widgets' own messages (they were dropped)."""
    import ipywidgets

    from xipmodel.lab import widgets

    spec = {"data": [{"type": "bar", "x": ["a"], "y": [1]}], "layout": {}}
    fig, text = widgets._figure(spec), ipywidgets.HTML(value="old")
    widgets.update_figures([(fig, spec)], texts=[(text, "new")])
    assert text.value == "new"
