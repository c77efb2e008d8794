"""Binder (repo2docker): binder/ describes an environment that builds and runs every notebook.

repo2docker reads binder/ (and then ignores the repository root's configuration):
runtime.txt picks Python, requirements.txt the third-party pins, postBuild installs
xipmodel itself (JUPYTER.md, "Binder"). Without Docker, the slow test rebuilds that
environment the same way in a fresh virtual environment (the package registries are
needed) and executes every notebook in it.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
NOTEBOOKS = ROOT / "notebooks"
# What the notebooks need on Binder: the Jupyter stack of JUPYTER.md, Voilà for the
# dashboard-as-an-app link, numpy for the model, dask.distributed for 06's LocalCluster.
REQUIRED = ("numpy", "jupyterlab", "ipywidgets", "plotly", "anywidget", "ipykernel", "voila",
            "dask", "distributed")
START = "notebooks/00_start_here.ipynb"


def _pins() -> dict[str, str]:
    pins = {}
    for raw in (BINDER / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==([0-9][0-9A-Za-z.+-]*)", line)
        assert m, f"binder/requirements.txt: {raw!r} is not an exact pin (name==version)"
        pins[m[1].lower().replace("_", "-")] = m[2]
    return pins


# ── quick: the files repo2docker reads ────────────────────────────────────────────────

def test_binder_files_are_what_repo2docker_needs() -> None:
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.12"
    post = BINDER / "postBuild"
    assert post.stat().st_mode & stat.S_IXUSR, "binder/postBuild must be executable"
    lines = [x.strip() for x in post.read_text().splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    assert "set -e" in lines or any(x.startswith("set -e") for x in lines)
    assert "pip install --no-deps -e ." in lines
    # environment.yml would win over requirements.txt (and ignore runtime.txt).
    for name in ("environment.yml", "environment.yaml", "Pipfile"):
        assert not (BINDER / name).exists(), f"binder/{name}"
        assert not (ROOT / name).exists(), name
    # apt.txt adds system packages: valgrind, so `xipmodel record` works on Binder (the
    # widgets are prebuilt pip packages and need none). One package name a line.
    assert not (ROOT / "apt.txt").exists(), "apt.txt belongs in binder/"
    packages = [x.split("#", 1)[0].strip() for x in (BINDER / "apt.txt").read_text().splitlines()]
    packages = [p for p in packages if p]
    assert packages == ["valgrind"], packages


def test_binder_pins_match_the_tested_versions() -> None:
    """Every pin is the version the test environment runs (and numpy is 2.4.x)."""
    pins = _pins()
    missing = [name for name in REQUIRED if name not in pins]
    assert not missing, f"binder/requirements.txt does not pin {', '.join(missing)}"
    assert pins["numpy"].startswith("2.4."), pins["numpy"]
    for name, version in pins.items():
        try:
            tested = metadata.version(name)
        except metadata.PackageNotFoundError:
            pytest.fail(f"binder pins {name}=={version}, which the tests do not install")
        assert tested == version, f"binder pins {name}=={version}, the tests run {tested}"


def test_readme_has_a_binder_badge_opening_the_first_notebook() -> None:
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\[!\[[^\]]*\]\((https://mybinder\.org/badge[^)]*)\)\]\(([^)]+)\)",
                       readme)
    assert links, ("README.md has no Binder badge: [![Binder](https://mybinder.org/"
                   "badge_logo.svg)](https://mybinder.org/v2/gh/OWNER/xipmodel/HEAD"
                   "?urlpath=lab/tree/notebooks/00_start_here.ipynb)")
    for _, url in links:
        u = urlparse(url)
        assert u.netloc == "mybinder.org" and re.fullmatch(r"/v2/gh/[^/]+/[^/]+/[^/]+",
                                                           u.path), url
        urlpath = unquote(parse_qs(u.query)["urlpath"][0])
        assert urlpath == f"lab/tree/{START}", url
    assert (ROOT / START).exists()


# ── slow: build the environment, run the notebooks ────────────────────────────────────

def _python312() -> str:
    """A Python 3.12 (what runtime.txt asks for), else this one."""
    candidates = [shutil.which("python3.12"),
                  *map(str, sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))),
                  "/usr/bin/python3.12"]
    for c in candidates:
        if c and Path(c).exists():
            r = subprocess.run([c, "-c", "import sys, venv; print(sys.version_info[:2])"],
                               capture_output=True, text=True, timeout=60)
            if r.returncode == 0 and r.stdout.strip() == "(3, 12)":
                return c
    return sys.executable


def _run(argv: list[str | Path], env: dict[str, str], timeout: float,
         cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, (f"{' '.join(map(str, argv))} failed ({r.returncode}):\n"
                               f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


@pytest.mark.slow
def test_binder_environment_runs_every_notebook(tmp_path: Path) -> None:
    """requirements.txt + postBuild in a fresh venv; nbconvert executes each notebook in it."""
    python = _python312()
    venv = tmp_path / "venv"
    bin_ = venv / "bin"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "JUPYTER_PATH",
                        "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "IPYTHONDIR")}
    env.update(PATH=f"{bin_}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               PYTHONNOUSERSITE="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),  # no user kernelspecs
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               IPYTHONDIR=str(tmp_path / "ipython"), MPLBACKEND="Agg")
    _run([python, "-m", "venv", venv], env, 300)
    _run([bin_ / "python", "-m", "pip", "install", "--quiet", "-r",
          BINDER / "requirements.txt"], env, 1500)
    _run(["bash", BINDER / "postBuild"], env, 600)  # as repo2docker: in the repo root
    r = _run([bin_ / "python", "-c",
              "import sys, xipmodel, plotly, anywidget, ipywidgets; "
              "print(sys.version_info[:2], xipmodel.__file__)"], env, 120)
    assert str(ROOT / "xipmodel") in r.stdout  # the editable install of this checkout

    notebooks = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert notebooks, "no notebooks"
    out = tmp_path / "executed"
    failures = []
    for nb in notebooks:
        start = time.perf_counter()
        r = subprocess.run(
            [bin_ / "jupyter", "nbconvert", "--to", "notebook", "--execute",
             "--ExecutePreprocessor.store_widget_state=False",
             "--ExecutePreprocessor.timeout=900", "--ExecutePreprocessor.kernel_name=python3",
             "--output-dir", out, nb],
            cwd=NOTEBOOKS, env=env, capture_output=True, text=True, timeout=1800)
        if r.returncode != 0 or not (out / nb.name).exists():
            failures.append(f"{nb.name}: exit {r.returncode}\n{r.stderr[-2500:]}")
        print(f"{nb.name}: {time.perf_counter() - start:.0f} s (Python {python})")
    assert not failures, "\n\n".join(failures)
