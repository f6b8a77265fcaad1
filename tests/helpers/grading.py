"""What the grading suites share: a check that must fail, its replay token, a hand-in notebook."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import nbformat
import pytest

from course_lib.grading.sandbox import CheckFailed

REPLAY_CALL = re.compile(r'course_lib\.replay\("([A-Za-z0-9_-]+)"\)')


def failure_of(check: Callable, answer: Callable, **options) -> CheckFailed:
    """Run a check that must fail; return its exception."""
    with pytest.raises(CheckFailed) as caught:
        check(answer, **options)
    return caught.value


def token_of(failure: CheckFailed) -> str:
    """The token of the ``course_lib.replay("…")`` line every failure message ends with."""
    match = REPLAY_CALL.search(str(failure))
    assert match, str(failure)
    return match.group(1)


def hand_in(solution: Path, path: Path, sources: Mapping[str, str]) -> Path:
    """The solution notebook with the cells named (grade_id -> source) replaced, as handed in."""
    notebook = nbformat.read(solution, 4)
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in sources:
            cell.source = sources[grade_id]
    nbformat.write(notebook, path)
    return path


def scores(results: Iterable[tuple]) -> dict[str, float]:
    """grade_id -> score, from :func:`course_lib.autograde.grade_submission`'s results."""
    return {grade_id: score for grade_id, _points, score, _reason in results}


def points(results: Iterable[tuple]) -> dict[str, float]:
    """grade_id -> the points the cell is worth."""
    return {grade_id: worth for grade_id, worth, _score, _reason in results}
