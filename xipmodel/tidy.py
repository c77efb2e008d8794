"""Results as tidy tables: one row per mode × guest count × category, for any plotting library.

    tidy_rows(comparison or sweep)   → list of dicts (no dependency)
    tidy_frame(comparison or sweep)  → a pandas DataFrame (needs pandas)

Columns, in order::

    <swept>   a column for each Scenario field that differs between the comparisons
              (a sweep over heap_share gets heap_share; over guests, guests is already one)
    mode      pagecache, xip, ksm or dax
    guests    how many guests the host ran
    category  one of host.CATEGORIES (shared, page_cache, anon, ...), in that order
    bytes     host memory in that category at the end

With `prefixes`, a comparison also gives its first n guests for n = 1 .. guests
(RunResult.prefix: exact, taken from the run's timeline), except in ksm mode, whose
result depends on the run's end: it has the full guest count only.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xipmodel.host import Comparison

__all__ = ["tidy_frame", "tidy_rows"]


def tidy_rows(results: Comparison | Sequence[Comparison], prefixes: bool = False
              ) -> list[dict[str, Any]]:
    """The rows drawn above, comparisons in order, then modes, guest counts, categories."""
    comparisons = list(results) if isinstance(results, Sequence) else [results]
    fields = [dataclasses.asdict(c.scenario) for c in comparisons]
    swept = [name for name in fields[0] if name != "guests"
             and any(f[name] != fields[0][name] for f in fields)] if fields else []
    rows: list[dict[str, Any]] = []
    for comparison, values in zip(comparisons, fields, strict=True):
        keys = {name: values[name] for name in swept}
        for mode, result in comparison.results.items():
            guests = result.scenario.guests
            counts = range(1, guests + 1) if prefixes and mode != "ksm" else [guests]
            categories = list(result.bytes_by_category)  # host.CATEGORIES, in order
            for n in counts:
                # After guest n the timeline holds what RunResult.prefix(n) ends with.
                by = result.timeline_bytes[n].tolist() if n < guests else \
                    list(result.bytes_by_category.values())
                rows += [{**keys, "mode": mode, "guests": n, "category": category,
                          "bytes": int(b)} for category, b in zip(categories, by, strict=True)]
    return rows


def tidy_frame(results: Comparison | Sequence[Comparison], prefixes: bool = False) -> Any:
    """tidy_rows as a pandas DataFrame (pandas is optional: imported only here)."""
    pandas = importlib.import_module("pandas")
    rows = tidy_rows(results, prefixes)
    columns = list(rows[0]) if rows else ["mode", "guests", "category", "bytes"]
    return pandas.DataFrame(rows, columns=columns)
