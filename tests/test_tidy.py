"""Tidy results: one row per mode × guest count × category, summing to what the runs hold."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from xipmodel.host import CATEGORIES, MODES, Scenario, compare, sweep
from xipmodel.tidy import tidy_frame, tidy_rows

SMALL = Scenario(guests=3, workload="shell", guest_ram_mib=64, ksm_seconds=0.5)


def test_rows_of_a_comparison_add_up_to_each_mode() -> None:
    """Is each (mode, category) one row, and do a mode's rows sum to its host memory?"""
    c = compare(SMALL)
    rows = tidy_rows(c)
    assert len(rows) == len(MODES) * len(CATEGORIES)
    assert list(rows[0]) == ["mode", "guests", "category", "bytes"]
    for mode, result in c.results.items():
        mine = [r for r in rows if r["mode"] == mode]
        assert [r["category"] for r in mine] == list(CATEGORIES)
        assert sum(r["bytes"] for r in mine) == result.host_bytes
        assert {r["guests"] for r in mine} == {3}


def test_prefix_rows_are_the_smaller_runs() -> None:
    """With prefixes, the rows for n guests are the n-guest prefix's (ksm: the full run only)."""
    c = compare(SMALL, modes=("pagecache", "xip", "ksm"))
    rows = tidy_rows(c, prefixes=True)
    assert len(rows) == (3 + 3 + 1) * len(CATEGORIES)
    for n in (1, 2, 3):
        for mode in ("pagecache", "xip"):
            got = {r["category"]: r["bytes"] for r in rows
                   if r["mode"] == mode and r["guests"] == n}
            assert got == c.results[mode].prefix(n).bytes_by_category
    assert {r["guests"] for r in rows if r["mode"] == "ksm"} == {3}


def test_sweep_rows_name_the_swept_field(require_module: Callable[[str], ModuleType]) -> None:
    """A sweep over heap_share gets a heap_share column; over guests, the guests column
    tells the comparisons apart. As a DataFrame, the rows are the same."""
    pandas = require_module("pandas")
    swept = sweep(SMALL, "heap_share", [0.1, 0.5], modes=("pagecache", "xip"))
    rows = tidy_rows(swept)
    assert list(rows[0]) == ["heap_share", "mode", "guests", "category", "bytes"]
    assert {r["heap_share"] for r in rows} == {0.1, 0.5}
    frame = tidy_frame(swept)
    assert isinstance(frame, pandas.DataFrame)
    assert frame.to_dict("records") == rows
    totals = frame.groupby(["heap_share", "mode"])["bytes"].sum()
    for comparison in swept:
        for mode, result in comparison.results.items():
            assert totals[(comparison.scenario.heap_share, mode)] == result.host_bytes
    by_guests = tidy_rows(sweep(SMALL, "guests", [1, 2], modes=("xip",)))
    assert list(by_guests[0]) == ["mode", "guests", "category", "bytes"]
    assert sorted({r["guests"] for r in by_guests}) == [1, 2]
    one = compare(SMALL, modes=("xip",))
    assert one.to_dataframe().to_dict("records") == tidy_rows(one)
