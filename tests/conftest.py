"""Shared fixtures: outside tools are required in CI and optional elsewhere.

A test that needs e2fsprogs, valgrind or libCacheSim asks for it through
`require_tool` / `require_module`. On a developer machine a missing tool
skips the test; with CI=true it fails, so CI never passes by skipping oracles.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
# Debian keeps e2fsprogs in /sbin, which is not on every user's PATH.
EXTRA_PATH = os.pathsep.join(["/usr/sbin", "/sbin"])


def _missing(what: str) -> None:
    message = f"{what} is required for this test"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing oracle is a failure, not a skip)")
    pytest.skip(message)


def find_tool(name: str) -> str | None:
    """Path of an executable, also looking in /usr/sbin and /sbin."""
    return shutil.which(name) or shutil.which(name, path=EXTRA_PATH)


def need_tool(name: str) -> str:
    """Path of the program `name`: skip locally, fail under CI=true when it is missing."""
    path = find_tool(name)
    if path is None:
        _missing(f"the program {name!r}")
    assert path is not None
    return path


def need_root(why: str) -> None:
    """Skip locally, fail under CI=true, unless running as root (CI runs as root)."""
    if os.geteuid() != 0:
        _missing(f"root ({why})")


@pytest.fixture
def require_tool() -> Callable[[str], str]:
    """`require_tool("mke2fs")` → the tool's path, or skip (fail in CI)."""
    return need_tool


def need_module(name: str) -> ModuleType:
    """The Python module `name`: skip locally, fail under CI=true when it is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"the Python module {name!r}")
        raise


@pytest.fixture
def require_module() -> Callable[[str], ModuleType]:
    """`require_module("libcachesim")` → the module, or skip (fail in CI)."""
    return need_module


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout (corpora and docs); required in CI."""
    if not SHARED.is_dir():
        _missing(f"the shared folder {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/usr/bin/true recorded by `python -m xipmodel record` (valgrind: fails in CI if absent)."""
    need_tool("valgrind")
    out = tmp_path_factory.mktemp("trace") / "true.npz"
    proc = subprocess.run([sys.executable, "-m", "xipmodel", "record", "-o", str(out), "--",
                           "/usr/bin/true"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    return out
