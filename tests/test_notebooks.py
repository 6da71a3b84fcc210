"""The example notebooks in ``notebooks/``: committed clean, and they run.

Each notebook is executed by nbclient in a real ``python3`` kernel, from a temporary copy of
the ``notebooks/`` folder (so the working directory is what a user gets with ``jupyter
execute notebooks/NAME.ipynb`` from a checkout, and nothing is written into the repository).
Every notebook asserts its own results in its cells, so "no cell raised" is a real test.

The kernel's ``IPYBGFETCH_HOME`` points at a folder that must stay untouched: the notebooks
keep their downloads in temporary homes of their own and never use the user's real one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("quickstart", "large_file", "many_files", "cluster")
# what a notebook needs beyond the test extra's base: its run is a reported skip without it
REQUIRES = {
    "cluster": {
        "distributed": 'pip install "ipybgfetch[cluster]"',
        "s3fs": 'pip install "ipybgfetch[cloud]"',
        "moto": 'pip install "moto[server]"',
        "flask": 'pip install "moto[server]"',
        "boto3": 'pip install "moto[server]"',
    }
}
KERNEL = "python3"
CELL_TIMEOUT = 120  # seconds, per cell
NOTEBOOK_BUDGET = 60  # seconds, per notebook including kernel start-up


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


def _kernel_env(guard_home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["IPYBGFETCH_HOME"] = str(guard_home)  # the notebooks must not use this one
    env.pop("IPYBGFETCH_LEASE_TIMEOUT", None)
    # This checkout first, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _problems(nb: nbformat.NotebookNode) -> list[str]:
    """Error outputs and anything written to stderr (background errors are shown there)."""
    found = []
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.output_type == "error":
                found.append(f"cell {index}: {output.ename}: {output.evalue}")
            elif output.output_type == "stream" and output.name == "stderr":
                found.append(f"cell {index} wrote to stderr:\n{output.text}")
    return found


def test_the_notebooks_exist() -> None:
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_without_outputs(name: str) -> None:
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL
    dirty = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]
    assert not dirty, f"{name}.ipynb: cells {dirty} have outputs or execution counts; clear them"
    assert not any("execution" in cell.get("metadata", {}) for cell in nb.cells), (
        f"{name}.ipynb has execution timing metadata; clear it"
    )


@pytest.mark.kernel
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name: str, tmp_path: Path) -> None:
    for module, install in REQUIRES.get(name, {}).items():
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{name}.ipynb needs {module}: {install}")
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, workdir)
    guard_home = tmp_path / "default-home"
    nb = nbformat.read(workdir / f"{name}.ipynb", as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(workdir)}},
    )
    started = time.monotonic()
    try:
        client.execute(env=_kernel_env(guard_home))
    except CellExecutionError as exc:
        pytest.fail(f"{name}.ipynb failed:\n{exc}", pytrace=False)
    elapsed = time.monotonic() - started

    problems = _problems(nb)
    assert not problems, f"{name}.ipynb:\n" + "\n".join(problems)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code_cells), "every code cell ran"
    assert not guard_home.exists(), (
        f"{name}.ipynb used the default IPYBGFETCH_HOME; give it a temporary home"
    )
    assert elapsed < NOTEBOOK_BUDGET, f"{name}.ipynb took {elapsed:.1f} s"
    print(f"{name}.ipynb ran in {elapsed:.1f} s")
