"""The exercises live beside their notebook: one module of xipmodel.lab.exercises per notebook.

A notebook's module (n04_faults_readahead_lru for notebooks/04_faults_readahead_lru.ipynb)
defines exactly the exercises that notebook asks with `exercise("<name>", …)`; the
catalogue is the modules' parts in notebook order; modules share only public names.
"""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import re
from pathlib import Path

import pytest

import xipmodel.lab.exercises as package
from xipmodel.lab.exercises import EXERCISES

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
PACKAGE_DIR = Path(package.__file__).parent
NOTEBOOK_MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)])
                          if re.fullmatch(r"n\d\d_\w+", m.name))


def _asked(notebook: Path) -> list[str]:
    """The exercise names a notebook's code cells ask for, in order."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    return re.findall(r"""\bexercise\(\s*["'](\w+)["']""", code)


def _notebook_of(module: str) -> Path:
    return NOTEBOOKS / f"{module.rsplit('.', 1)[-1].removeprefix('n')}.ipynb"


def test_every_notebook_module_has_its_notebook() -> None:
    """n07_recorded_programs ↔ notebooks/07_recorded_programs.ipynb, one each."""
    assert NOTEBOOK_MODULES
    for name in NOTEBOOK_MODULES:
        assert _notebook_of(name).is_file(), name


@pytest.mark.parametrize("name", list(EXERCISES))
def test_exercise_is_defined_beside_its_notebook(name: str) -> None:
    """The factory's module is the module of a notebook that asks `exercise("<name>"`."""
    module = EXERCISES[name].__module__
    assert module.rsplit(".", 1)[-1] in NOTEBOOK_MODULES, (name, module)
    notebook = _notebook_of(module)
    assert name in _asked(notebook), f"{name} is defined in {module}, not asked in {notebook}"
    assert name in importlib.import_module(module).EXERCISES


def test_catalogue_is_the_modules_in_notebook_order() -> None:
    """EXERCISES is every module's part, notebook by notebook, and covers every call.

    The package's docstring, the newcomer's index, names every module and exercise.
    """
    parts: list[str] = []
    for name in NOTEBOOK_MODULES:
        part = importlib.import_module(f"{package.__name__}.{name}").EXERCISES
        assert set(part) == set(_asked(_notebook_of(name))), name
        parts += list(part)
    assert parts == list(EXERCISES)
    doc = package.__doc__ or ""
    missing = [n for n in ["core", *NOTEBOOK_MODULES, *EXERCISES] if n not in doc]
    assert not missing, f"xipmodel.lab.exercises' docstring does not name {missing}"


def test_modules_share_only_public_names() -> None:
    """No module of the package imports a private (_underscore) name of another."""
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("xipmodel"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                assert not private, f"{path.name} imports {private} from {node.module}"
