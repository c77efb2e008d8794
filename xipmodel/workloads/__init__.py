"""Workloads: what guests run, as page-level traces (seeded models or recorded programs).

    trace.py        PageTrace, the format every workload shares, and replay (start here)
    synthetic.py    seeded program models: locality, hot code, data writes, heap growth
    recorded.py     the four shipped recordings and the image their files come from
    realfiles.py    this machine's own files in that image, where they match (real_files)
    sources.py      what a Scenario's workload names (programs, traces, trace files) and
                    the image a host builds for them
    record.py       python -m xipmodel record: a real program under valgrind, page by page
    make_traces.py  how the shipped recordings were made
"""

from __future__ import annotations

from xipmodel.workloads.trace import MapSpec, PageTrace, ReplayResult, collapse, replay

__all__ = ["MapSpec", "PageTrace", "ReplayResult", "collapse", "replay"]
