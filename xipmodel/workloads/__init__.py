"""Workloads: what guests run, as page-level traces (seeded models or recorded programs)."""

from __future__ import annotations

from xipmodel.workloads.trace import MapSpec, PageTrace, ReplayResult, collapse, replay

__all__ = ["MapSpec", "PageTrace", "ReplayResult", "collapse", "replay"]
