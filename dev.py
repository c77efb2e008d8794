#!/usr/bin/env python3
"""The two commands of the README, on any machine that has Python 3.11 or newer.

    python3 dev.py lab     open the main notebook in JupyterLab (headless: print the CLI demo)
    python3 dev.py test    lint, type-check and run the whole test suite

Each creates (or reuses) its own virtual environment in .venv, installing the
project with the extra it needs; nothing else has to be installed first.
Extra arguments after `test` go to pytest (`python3 dev.py test -k ext2`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
MAIN_NOTEBOOK = "notebooks/00_start_here.ipynb"


def run(*argv: str | Path) -> None:
    """Run a command from the project root; stop with its exit code if it fails."""
    print("+", " ".join(str(a) for a in argv), flush=True)
    rc = subprocess.call([str(a) for a in argv], cwd=ROOT)
    if rc != 0:
        sys.exit(rc)


def ensure_venv(extra: str) -> None:
    """Create .venv and install the project with `extra`, once per pyproject.toml version."""
    if sys.version_info < (3, 11):  # noqa: UP036 -- dev.py may be run by an older python3
        sys.exit(f"xipmodel needs Python 3.11 or newer, this is {sys.version.split()[0]}")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{extra}-{digest}"
    if stamp.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PY, "-m", "pip", "install", "--quiet", "-e", f".[{extra}]")
    for old in VENV.glob(f".installed-{extra}-*"):
        old.unlink()
    stamp.touch()


def headless() -> bool:
    """True where no browser can be shown: a Linux/BSD machine without a display."""
    if sys.platform in ("darwin", "win32"):
        return False
    return not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_test(args: list[str]) -> None:
    ensure_venv("test")
    run(BIN / "ruff", "check", "xipmodel", "tests", "bench", "dev.py")
    run(BIN / "mypy", "--strict", "xipmodel")
    run(PY, "-m", "pytest", *args)


def cmd_lab(args: list[str]) -> None:
    if headless() and "--no-browser" not in args:
        # No screen to open JupyterLab on: show the same story in the terminal.
        ensure_venv("test")
        run(PY, "-m", "xipmodel", "demo")
        print(
            "\nheadless machine: to serve JupyterLab anyway, run "
            "`python3 dev.py lab --no-browser` and open the printed URL.",
            flush=True,
        )
        return
    ensure_venv("lab")
    install_lab_settings(VENV)
    run(BIN / "jupyter", "lab", MAIN_NOTEBOOK, *args)


def install_lab_settings(prefix: Path) -> Path:
    """JupyterLab's defaults for the course (no "news" pop-up), as Binder's postBuild does."""
    settings = prefix / "share" / "jupyter" / "lab" / "settings" / "overrides.d"
    settings.mkdir(parents=True, exist_ok=True)
    target = settings / "xipmodel.json"
    target.write_bytes((ROOT / "binder" / "jupyterlab-settings.json").read_bytes())
    return target


def main() -> None:
    commands = {"test": cmd_test, "lab": cmd_lab}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: python3 dev.py {{{'|'.join(commands)}}} [args...]")
    commands[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
