"""The lab: widgets built headless hold the model's numbers, and update in place from the cache.

No browser: ipywidgets and plotly FigureWidgets are plain Python objects until displayed.
The widget tests skip when ipywidgets/plotly/anywidget are missing, and fail with CI=true.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from xipmodel.host import CATEGORIES, Host, RunResult, Scenario, compare
from xipmodel.lab import views
from xipmodel.lab.runs import RunCache, default_curve_guests
from xipmodel.mm.frames import CONTENT_BLOCK, FrameKind

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
    """Importing every xipmodel module but the widgets loads neither ipywidgets nor plotly."""
    code = """
import importlib, json, pkgutil, sys
import xipmodel
names = [m.name for m in pkgutil.walk_packages(xipmodel.__path__, "xipmodel.")
         if m.name != "xipmodel.lab.widgets"]
for name in names:
    importlib.import_module(name)
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("ipywidgets", "plotly", "anywidget", "traitlets"))
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
    assert [t["name"] for t in figs["memory"]["data"]] == list(CATEGORIES)
    for trace in figs["memory"]["data"]:
        assert trace["x"] == MODES3
        want = [comparison.results[m].bytes_by_category[trace["name"]] / MIB for m in MODES3]
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
    # Guests started apart: ksmd scans between starts, so ksm runs once per count.
    apart = SMALL.replace(start_interval_ms=50.0)
    calls.clear()
    cache.curve(apart, ["xip", "ksm"], default_curve_guests(2))
    assert calls == [("xip", 0, 2), ("ksm", 0, 1), ("ksm", 0, 2)]


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
