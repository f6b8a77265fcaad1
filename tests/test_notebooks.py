"""Every lecture notebook runs top to bottom in a fresh kernel, without an error.

One test per ``notebooks/*.ipynb``. The kernel is ``python3``, which
jupyter_client starts with the interpreter running these tests (the venv's),
so the notebook sees the same ``course_lib``. Each cell has a time limit: a
notebook that hangs fails instead of stalling the suite. Notebooks are stored
without outputs (nbstripout), so a diff shows only what a person wrote.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT_S = 60


def _ids(paths: list[Path]) -> list[str]:
    return [path.stem for path in paths]


@pytest.fixture(scope="module")
def kernel_is_this_python() -> None:
    """Fail early, and say why, if ``python3`` would start some other interpreter."""
    argv = KernelSpecManager().get_kernel_spec(KERNEL).argv
    # jupyter_client replaces a bare "python" with sys.executable when it launches.
    assert argv[0] in {"python", "python3", sys.executable}, (
        f"the {KERNEL!r} kernel starts {argv[0]!r}, not {sys.executable!r}: "
        "run `python -m ipykernel install --sys-prefix` from the venv")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(path, kernel_is_this_python):
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=CELL_TIMEOUT_S,
                            allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    errors = [f"cell {index}: {output.ename}: {output.evalue}"
              for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.output_type == "error"]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"cell {index} has stored output: run nbstripout on {path.name}")
