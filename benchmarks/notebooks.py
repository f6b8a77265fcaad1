"""Group 5: each lecture notebook executed top to bottom, against a one-cell floor.

Every execution starts a fresh kernel, which costs about a second whatever
the notebook does; a trivial one-cell notebook executed the same way in the
same run is that floor, and each notebook is reported beside it
(``ratio_to_floor``), so the figure shows what the notebook itself costs. The
notebooks run with their own folder as working directory, as in JupyterLab.
Until lecture notebooks exist the group says so.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.availability import not_available
from benchmarks.settings import Settings
from benchmarks.timing import measure

CELL_TIMEOUT_S = 600


def lecture_notebooks(directory: Path) -> list[Path]:
    """The notebooks in ``directory``, in course order (00_start_here first)."""
    return sorted(directory.glob("*.ipynb"))


def execute(notebook: Any, working_dir: Path) -> int:
    """Run every cell of ``notebook`` in a fresh kernel; returns the number of cells run."""
    from nbclient import NotebookClient  # on first use: see floor_notebook

    client = NotebookClient(notebook, timeout=CELL_TIMEOUT_S,
                            resources={"metadata": {"path": str(working_dir)}})
    client.execute()
    return sum(cell.cell_type == "code" for cell in notebook.cells)


def execute_file(path: Path) -> int:
    """Read and execute one notebook file (the file on disk is left untouched)."""
    import nbformat  # on first use: see floor_notebook

    return execute(nbformat.read(path, as_version=4), path.parent)


def floor_notebook() -> Any:
    """A one-cell notebook: its run time is the kernel start and shutdown alone.

    nbformat and nbclient are imported on first use, here and in the functions
    above: they pull in jsonschema (about a second), which is wasted while
    there are no notebooks to time.
    """
    import nbformat

    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")])


def measure_floor(settings: Settings) -> dict:
    """Time the one-cell notebook the way lecture notebooks are timed."""
    with tempfile.TemporaryDirectory() as scratch:
        timing, _ = measure(lambda: execute(floor_notebook(), Path(scratch)),
                            settings.notebook_repeats, 0)
    return {"median_s": timing.median_s, "timing": timing.as_dict()}


def measure_notebook(path: Path, settings: Settings, floor_s: float) -> dict:
    """One notebook's run time; a notebook that fails is reported, not fatal to the run."""
    try:
        timing, results = measure(lambda: execute_file(path), settings.notebook_repeats, 0)
    except Exception as error:  # a broken notebook is issue 5's test failure, not ours
        reason = str(error).strip().splitlines()[-1:] or [""]
        return {"notebook": path.name, "status": f"error: {type(error).__name__}: {reason[0]}"}
    return {"notebook": path.name, "status": "measured", "code_cells": results[0],
            "median_s": timing.median_s, "ratio_to_floor": timing.median_s / floor_s,
            "timing": timing.as_dict()}


def measure_notebooks(settings: Settings, directory: Path) -> dict:
    """Group 5: every lecture notebook's run time and its ratio to the kernel floor."""
    found = lecture_notebooks(directory)
    if not found:
        return not_available(f"no lecture notebooks in {directory.name}/ yet (issue 5)")
    floor = measure_floor(settings)
    notebooks = []
    for path in found:
        notebooks.append(measure_notebook(path, settings, floor["median_s"]))
    return {"status": "measured", "floor": floor, "notebooks": notebooks,
            "baseline": "one-cell notebook executed the same way (kernel start floor)"}
