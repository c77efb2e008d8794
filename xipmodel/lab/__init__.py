"""Widgets and figures for notebooks: the only place ipywidgets and plotly are imported.

Mesa style: views are pure functions of model state returning plotly figure data
(plain dicts, testable without a browser); controllers wire ipywidgets to them and
update FigureWidgets in place::

    views.py     figure data: dashboard, memory map, page walk, ext2, timeline (numpy only)
    runs.py      RunCache: one growing run per (scenario, mode), the largest count asked,
                 smaller counts answered from it (ksm: plus ksmd's tail, in bulk)
    uploads.py   traces uploaded into a dashboard: stored by digest in a temporary
                 directory of its own, checked, refused in one line
    widgets.py   comparison_dashboard, memory_map, page_walk_explorer, ext2_explorer,
                 timeline (ipywidgets + plotly FigureWidget; needs the `lab` extra)
    exercises/   the course's seeded, self-checking exercises, one module per notebook

`views` and `runs` import without the lab extra; the widget functions load
`widgets` (and with it ipywidgets and plotly) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from xipmodel.lab.runs import RunCache
from xipmodel.lab.views import dashboard_figures_data, describe_frame

__all__ = [
    "RunCache",
    "comparison_dashboard",
    "dashboard_figures_data",
    "describe_frame",
    "ext2_explorer",
    "memory_map",
    "page_walk_explorer",
    "timeline",
]

_WIDGETS = frozenset({"comparison_dashboard", "ext2_explorer", "memory_map",
                      "page_walk_explorer", "timeline"})


def __getattr__(name: str) -> Any:
    """The widget functions, imported on first use (they need ipywidgets and plotly)."""
    if name in _WIDGETS:
        return getattr(importlib.import_module("xipmodel.lab.widgets"), name)
    raise AttributeError(f"module 'xipmodel.lab' has no attribute {name!r}")
