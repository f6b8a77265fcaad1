"""nbgrader's real pipeline on ps1, in a temporary course directory (DESIGN §5).

The module copies ``nbgrader_config.py`` and ``solutions/`` into a temporary
directory and drives the nbgrader CLI from the venv, as ``make release`` /
``make autograde`` / ``make feedback`` do: generate the release, hand in five
submissions (the solution, the untouched exercise, a plausible wrong answer, one
that patches the grader, and a one-cell notebook of a second assignment, for
timing), autograde, run the trusted pass outside the kernel, generate feedback,
then autograde and give feedback on one submission again. Nothing is normalised:
the regenerated release and the second feedback are compared byte for byte
(nbgrader 0.9.6 embeds no timestamp in either).

Each nbgrader command is a fresh process (about 2 s of imports) and each
autograded notebook starts a kernel; the wall times of autograding the
solution and the one-cell notebook are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PS1 = "ps1_commit_ordering"
TRIVIAL = "trivial"
POINTS = {"test_at_most_once_visible": 2, "test_at_most_once_hidden": 2,
          "test_at_least_once_visible": 2, "test_at_least_once_hidden": 2}
AT_MOST_ONCE = ("test_at_most_once_visible", "test_at_most_once_hidden")
AT_LEAST_ONCE = ("test_at_least_once_visible", "test_at_least_once_hidden")

WRONG_AT_LEAST_ONCE = '''\
def consume_at_least_once(consumer, process):
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg, asynchronous=False)
        process(msg)
'''
# Hostile: does no work, and patches the grader that the later test cells call.
PATCHES_GRADER = '''\
def consume_at_most_once(consumer, process):
    pass

import course_lib.grading.consumers
course_lib.grading.consumers._campaign = lambda *args, **kwargs: None
'''
RIGHT_AT_MOST_ONCE = '''\
def consume_at_most_once(consumer, process):
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg, asynchronous=False)
        process(msg)
'''


def _nbgrader(course: Path, *args: str) -> float:
    """Run one nbgrader command in ``course`` with the venv first on PATH; its wall time."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONHASHSEED="0")
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{done.stderr[-4000:]}"
    assert "[ERROR]" not in done.stderr and "| ERROR]" not in done.stderr, done.stderr[-4000:]
    return elapsed


def _trusted_pass(course: Path) -> float:
    """``make autograde``'s second step: re-grade outside the kernel, into the gradebook."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "course_lib.autograde", str(course)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return time.perf_counter() - start


def _submit(course: Path, student: str, assignment: str, notebook) -> None:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / f"{assignment}.ipynb")


def _with_answer(notebook, grade_id: str, source: str):
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return notebook
    raise LookupError(grade_id)


def _scores(course: Path, student: str, assignment: str = PS1) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submitted = gradebook.find_submission_notebook(assignment, assignment, student)
        return {grade.name: grade.score for grade in submitted.grades}


def _feedback(course: Path, student: str) -> str:
    return (course / "feedback" / student / PS1 / f"{PS1}.html").read_text()


def _text(page: str) -> str:
    """What a reader of the feedback page sees: tags (and syntax highlighting) removed."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _errors(course: Path, student: str) -> dict[str, list[str]]:
    """Each code cell's errors in the autograded notebook, by grade_id."""
    notebook = nbformat.read(course / "autograded" / student / PS1 / f"{PS1}.ipynb", 4)
    return {cell.metadata.get("nbgrader", {}).get("grade_id", str(index)):
            [output.ename for output in cell.outputs if output.output_type == "error"]
            for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"}


def _hidden_lines() -> list[str]:
    """Every line of the source notebook's hidden test regions, delimiters included."""
    source = nbformat.read(ROOT / "solutions" / PS1 / f"{PS1}.ipynb", 4)
    lines = []
    for cell in source.cells:
        inside = False
        for line in cell.source.splitlines():
            inside = inside or "BEGIN HIDDEN TESTS" in line
            if inside and line.strip():
                lines.append(line.strip())
            inside = inside and "END HIDDEN TESTS" not in line
    assert lines, "the source notebook has no hidden tests"
    return lines


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    """A course directory with ps1 released, four submissions autograded and fed back."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    trivial = new_notebook(cells=[new_code_cell("print('hello')")], metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})
    (course / "solutions" / TRIVIAL).mkdir()
    nbformat.write(trivial, course / "solutions" / TRIVIAL / f"{TRIVIAL}.ipynb")
    timings = {"generate_assignment (both)": _nbgrader(course, "generate_assignment", "*",
                                                       "--force")}

    release = course / "exercises" / PS1 / f"{PS1}.ipynb"
    solution = nbformat.read(course / "solutions" / PS1 / f"{PS1}.ipynb", 4)
    wrong = _with_answer(_with_answer(nbformat.read(release, 4), "consume_at_least_once",
                                      WRONG_AT_LEAST_ONCE),
                         "consume_at_most_once", RIGHT_AT_MOST_ONCE)
    _submit(course, "solution", PS1, solution)
    _submit(course, "untouched", PS1, nbformat.read(release, 4))
    _submit(course, "wrong", PS1, wrong)
    _submit(course, "patcher", PS1, _with_answer(nbformat.read(release, 4),
                                                 "consume_at_most_once", PATCHES_GRADER))
    _submit(course, "trivial", TRIVIAL, trivial)

    # Same run, one after the other: the one-cell notebook, then the full solution.
    timings["autograde one-cell notebook"] = _nbgrader(course, "autograde", TRIVIAL,
                                                       "--student", "trivial")
    timings["autograde ps1 solution"] = _nbgrader(course, "autograde", PS1,
                                                  "--student", "solution")
    timings["autograde ps1 untouched + wrong + patcher"] = _nbgrader(course, "autograde", PS1)
    timings["trusted pass"] = _trusted_pass(course)
    timings["generate_feedback ps1"] = _nbgrader(course, "generate_feedback", PS1)
    first = {"scores": _scores(course, "wrong"), "feedback": _feedback(course, "wrong")}
    timings["autograde ps1 wrong, again"] = _nbgrader(course, "autograde", PS1, "--student",
                                                      "wrong", "--force")
    timings["trusted pass, again"] = _trusted_pass(course)
    timings["generate_feedback ps1 wrong, again"] = _nbgrader(
        course, "generate_feedback", PS1, "--student", "wrong", "--force")
    print("\nnbgrader wall times (s): " + ", ".join(f"{name} {seconds:.1f}"
                                                   for name, seconds in timings.items()))
    return {"dir": course, "first": first, "timings": timings}


def _normalised_feedback(html: str) -> str:
    """Feedback HTML with nbgrader's timestamps blanked (none are expected; see the test)."""
    return re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?", "<timestamp>", html)


def test_generated_exercise_equals_the_committed_one(course):
    generated = course["dir"] / "exercises" / PS1
    committed = ROOT / "exercises" / PS1
    names = sorted(path.name for path in generated.iterdir())
    assert names == sorted(path.name for path in committed.iterdir())
    for name in names:
        assert (generated / name).read_bytes() == (committed / name).read_bytes(), (
            f"exercises/{PS1}/{name} is stale: run `make release` and commit the result")


def test_release_holds_no_solution_and_no_hidden_test(course):
    notebook = nbformat.read(course["dir"] / "exercises" / PS1 / f"{PS1}.ipynb", 4)
    text = json.dumps(notebook)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    for line in _hidden_lines():
        assert line not in text, f"hidden test line in the release: {line}"
    answers = {cell.metadata.nbgrader.grade_id: cell.source for cell in notebook.cells
               if cell.metadata.get("nbgrader", {}).get("solution")}
    assert set(answers) == {"consume_at_most_once", "consume_at_least_once"}
    for grade_id, source in answers.items():
        assert source == (f"def {grade_id}(consumer, process):\n"
                          f"    # YOUR CODE HERE\n    raise NotImplementedError()")


def test_solution_scores_full_marks(course):
    assert _scores(course["dir"], "solution") == POINTS
    assert not any(_errors(course["dir"], "solution").values())


def test_untouched_exercise_scores_zero_with_only_not_implemented(course):
    assert _scores(course["dir"], "untouched") == dict.fromkeys(POINTS, 0)
    errors = _errors(course["dir"], "untouched")
    assert all(errors[grade_id] for grade_id in POINTS), errors
    assert {name for names in errors.values() for name in names} == {"NotImplementedError"}


def test_wrong_answer_loses_exactly_the_at_least_once_points(course):
    scores = _scores(course["dir"], "wrong")
    assert {name: scores[name] for name in AT_MOST_ONCE} == {name: 2 for name in AT_MOST_ONCE}
    assert {name: scores[name] for name in AT_LEAST_ONCE} == dict.fromkeys(AT_LEAST_ONCE, 0)
    errors = _errors(course["dir"], "wrong")
    assert {grade_id: errors[grade_id] for grade_id in POINTS} == {
        **dict.fromkeys(AT_MOST_ONCE, []), **dict.fromkeys(AT_LEAST_ONCE, ["CheckFailed"])}
    feedback = _text(_feedback(course["dir"], "wrong"))
    assert "was LOST" in feedback and "course_lib.replay(" in feedback


def test_feedback_shows_no_hidden_test_source(course):
    for student in ("solution", "untouched", "wrong"):
        feedback = _text(_feedback(course["dir"], student))
        assert "HIDDEN TESTS" not in feedback
        for line in _hidden_lines():
            assert line not in feedback, f"{student}'s feedback shows hidden test line {line!r}"


def test_grading_twice_gives_the_same_scores_and_feedback(course):
    first, course_dir = course["first"], course["dir"]
    assert _scores(course_dir, "wrong") == first["scores"]
    again = _feedback(course_dir, "wrong")
    assert _normalised_feedback(again) == _normalised_feedback(first["feedback"])
    assert again == first["feedback"], "feedback differs only in timestamps"


def test_a_submission_that_patches_the_grader_gains_no_credit(course):
    """The kernel granted the patcher its points; the trusted pass takes them back."""
    scores = _scores(course["dir"], "patcher")
    assert scores["test_at_most_once_visible"] == 0 and scores["test_at_most_once_hidden"] == 0
    report = json.loads((course["dir"] / "autograded" / "trusted_pass.json").read_text())
    flagged = {(row["student"], row["grade_id"]) for row in report if row["flagged"]}
    # Its at-least-once answer is the untouched stub, which the patch also "passed".
    assert flagged == {("patcher", grade_id) for grade_id in POINTS}
    kernel = {row["grade_id"]: row["kernel_score"] for row in report
              if row["student"] == "patcher"}
    assert kernel == POINTS  # what the kernel alone would have given: full marks
    assert sum(scores.values()) == 0


