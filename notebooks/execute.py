"""Re-execute the course notebooks in place, the way they are committed.

    .venv/bin/python notebooks/execute.py                  every notebook
    .venv/bin/python notebooks/execute.py 03_*.ipynb       some of them

Each notebook runs top to bottom in a fresh kernel (from the notebooks folder);
its outputs are stored, widget state is not (JUPYTER.md pitfall 1: it would add
megabytes and random ids), and the seconds each took are printed. Commit the
result after reading the diff: `pytest --nbval` compares these outputs.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor

HERE = Path(__file__).resolve().parent


def execute(path: Path) -> float:
    """Run `path` in place; return the seconds it took."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    ExecutePreprocessor(timeout=600, kernel_name="python3", store_widget_state=False
                        ).preprocess(nb, {"metadata": {"path": str(HERE)}})
    seconds = time.perf_counter() - start
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    paths = [HERE / a if not Path(a).is_absolute() else Path(a) for a in argv] or sorted(
        HERE.glob("[0-9][0-9]_*.ipynb"))
    total = 0.0
    for path in paths:
        seconds = execute(path)
        total += seconds
        print(f"{path.name:36} {seconds:6.1f} s", flush=True)
    print(f"{'total':36} {total:6.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
