"""Group 3: what grading costs, against nbgrader's own floor measured in the same run.

Each reference solution in ``solutions/`` is handed in as one student and run
through ``nbgrader autograde`` (a fresh nbgrader process that starts a kernel
and runs every cell, hidden tests included), beside a one-cell notebook run
the same way. The one-cell run is the floor: nbgrader's imports, the gradebook
and a kernel start, which no course code can make faster. The ratio says what
the course's checks add on top of it. Each reference must score full marks,
otherwise a fast figure would only mean a broken check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from benchmarks.availability import not_available
from benchmarks.settings import Settings
from benchmarks.timing import measure

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "one_cell_floor"


def _nbgrader(course: Path, *args: str) -> None:
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run([str(bin_dir / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader {' '.join(args)} failed: {done.stderr[-2000:]}")


def _assignments(chosen: tuple[str, ...] = ()) -> list[str]:
    found = sorted(path.name for path in (ROOT / "solutions").glob("*/") if path.is_dir())
    return [name for name in found if not chosen or name in chosen]


def _prepare(course: Path, assignments: list[str]) -> None:
    """A scratch course: config, solutions, the floor notebook, released and handed in."""
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    floor = new_notebook(cells=[new_code_cell("print('hello')")], metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})
    (course / "solutions" / FLOOR).mkdir()
    nbformat.write(floor, course / "solutions" / FLOOR / f"{FLOOR}.ipynb")
    _nbgrader(course, "generate_assignment", "*", "--force")
    for name in [*assignments, FLOOR]:
        folder = course / "submitted" / "reference" / name
        folder.mkdir(parents=True)
        shutil.copy(course / "solutions" / name / f"{name}.ipynb", folder)


def _score(course: Path, assignment: str) -> tuple[float, float]:
    """The autograded (code) score and its maximum: written answers wait for a person."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submitted = gradebook.find_submission_notebook(assignment, assignment, "reference")
        return submitted.code_score, submitted.max_code_score


def _autograde(course: Path, assignment: str) -> None:
    _nbgrader(course, "autograde", assignment, "--student", "reference", "--force")


def measure_grading_cost(settings: Settings) -> dict:
    """Median wall time of autograding each reference solution, and of the floor."""
    assignments = _assignments(settings.grading_assignments)
    if not assignments or not (ROOT / "nbgrader_config.py").exists():
        return not_available("no solutions/<ps>/ notebooks or nbgrader_config.py yet (issue 4)")
    with tempfile.TemporaryDirectory() as scratch:
        course = Path(scratch)
        _prepare(course, assignments)
        floor, _ = measure(lambda: _autograde(course, FLOOR), settings.grading_repeats,
                           settings.warmup)
        entries = []
        for name in assignments:
            timing, _ = measure(lambda name=name: _autograde(course, name),
                                settings.grading_repeats, settings.warmup)
            score, max_score = _score(course, name)
            entries.append({"assignment": name, "score": score, "max_score": max_score,
                            "ratio_to_floor": timing.median_s / floor.median_s,
                            "timing": timing.as_dict()})
    return {"status": "measured",
            "what": "wall time of `nbgrader autograde <ps> --student reference --force` on the "
                    "reference solution, beside the same command on a one-cell notebook",
            "floor": {"timing": floor.as_dict()}, "assignments": entries}
