"""xipmodel: execute-in-place (XIP) versus the page cache, as a teachable model.

Many virtual machines run the same programs. Either every guest reads each
binary into its own page cache, or the binaries sit once in a frozen ext2
image in shared host memory and every guest executes them in place.

Where things are (start with host.py for experiments, mm/ for the mechanisms)::

    params.py      sizes and MMU presets (tiny, x86-64, Sv39, s390x), model costs
    errors.py      the exception hierarchy, drawn in its docstring
    events.py      typed events and the bus that delivers them (views and explain subscribe)
    ext2/          the frozen image: on-disk layout, reader, populate-and-freeze builder
    mm/            the memory model, one mechanism per file named as in Linux's mm/
    elf.py         exec: PT_LOAD segments to private file mappings, interpreter, libraries
    ldso.py        ld.so's library search on this machine (RPATH, RUNPATH, ld.so.cache)
    sysroot.py     an image of this machine's programs and the libraries they load
    distro.py      the embedded default distribution (Debian 12 ELF facts in data/distro/)
    workloads/     seeded program models, recorded traces, the valgrind recorder, replay
    host.py        guests on a host in four modes; Scenario, compare and sweep
    rollout.py     a new version of the frozen image, rolled out guest by guest
    tidy.py        results as tidy tables (mode × guests × category) and DataFrames
    policies.py    textbook replacement policies and miss-ratio curves
    explain.py     events to step-by-step text        quiz.py   seeded OSTEP-style questions
    kernelcheck.py the running kernel as the oracle: the same accesses, page for page
    cliargs.py     the argparse value types the command line's options share
    hostfile.py    opening this machine's files only if they are regular files
    mincore.py     which pages of a file the running kernel caches (mincore, cachestat)
    lab/           widgets, figures and exercises (the only place ipywidgets and plotly load)
    __main__.py    the command line (python -m xipmodel)
    family.py      a run grown guest by guest: every guest count's result, ksm too
    data/          shipped traces and the distribution's ELF facts

The model depends on numpy only; the widgets live in ``xipmodel.lab``.
"""

from __future__ import annotations

from xipmodel.errors import Ext2Error, ParameterError, XipModelError

__version__ = "0.1.0"

__all__ = ["Ext2Error", "ParameterError", "XipModelError", "__version__"]
