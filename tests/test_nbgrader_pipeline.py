"""nbgrader's real pipeline on every assignment, in a temporary course directory (DESIGN §5).

The module copies ``nbgrader_config.py`` and ``solutions/`` into a temporary
directory and drives the nbgrader CLI from the venv, as ``make release`` /
``make autograde`` / ``make feedback`` do: generate the release, hand in the
class, autograde each assignment for everyone at once, run the trusted pass
outside the kernel, generate feedback, then autograde and give feedback on the
wrong submissions again. The class: for every assignment the solution, the
untouched exercise and the wrong answers of ``WRONG``; for ps1 also the hostile
submissions of ``HOSTILE`` (a grader patch, an infinite loop, ``sys.exit``, a
killed kernel, an output flood, a deleted and an edited test cell), graded in
the same run as the good ones; and a one-cell notebook of another assignment,
for timing. Nothing is normalised: the regenerated release and the second
feedback are compared byte for byte (nbgrader 0.9.6 embeds no timestamp in
either). The broader wrong-answer corpus of each assignment is graded by the
trusted pass alone in that assignment's grading tests.

Each nbgrader command is a fresh process (about 2 s of imports) and each
autograded notebook starts a kernel; the wall times are printed (run with
``-s`` to see them). Every bound here is a limit (a check's per-run time limit,
nbgrader's cell timeout, the subprocess timeout), never a timing assertion.
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
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.helpers import answers_ps2, answers_ps3, answers_ps4, answers_ps5

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PS1 = "ps1_commit_ordering"
PS2 = "ps2_retries"
PS3 = "ps3_outbox"
PS4 = "ps4_exactly_once"
PS5 = "ps5_durability"
TRIVIAL = "trivial"
# Every assignment; PIPELINE_ASSIGNMENTS=ps1_commit_ordering,… narrows it while writing one.
ASSIGNMENTS = sorted(
    path.parent.name for path in (ROOT / "solutions").glob("*/*.ipynb")
    if path.stem == path.parent.name
    and path.stem in os.environ.get("PIPELINE_ASSIGNMENTS", path.stem).split(","))
AT_MOST_ONCE = frozenset({"test_at_most_once_visible", "test_at_most_once_hidden"})
AT_LEAST_ONCE = frozenset({"test_at_least_once_visible", "test_at_least_once_hidden"})


@dataclass(frozen=True)
class Submission:
    """A hand-in built from the release: answer cells replaced, cells deleted or edited."""

    student: str
    assignment: str
    answers: dict = field(default_factory=dict)  # grade_id -> source
    loses: frozenset = frozenset()  # the test cells that must score 0; the rest full marks
    says: str = ""  # a phrase the feedback must show
    delete: tuple = ()  # grade_ids of cells removed from the notebook
    edit: dict = field(default_factory=dict)  # grade_id -> new source of a locked cell


RIGHT_AT_MOST_ONCE = '''\
def consume_at_most_once(consumer, process):
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg, asynchronous=False)
        process(msg)
'''
RIGHT_AT_LEAST_ONCE = '''\
def consume_at_least_once(consumer, process):
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)
        consumer.commit(message=msg, asynchronous=False)
'''
WRONG = [
    Submission("wrong", PS1, {"consume_at_least_once": RIGHT_AT_MOST_ONCE.replace(
        "consume_at_most_once", "consume_at_least_once"),
        "consume_at_most_once": RIGHT_AT_MOST_ONCE}, AT_LEAST_ONCE, "was LOST"),
    Submission("wrong", PS2, {"send_with_retries": answers_ps2.RETRIES_RIGHT,
                              "IdempotentSender": answers_ps2.SENDER_NEW_SEQ_ON_RETRY,
                              "check_sequence": answers_ps2.SEQUENCE_RIGHT},
               frozenset({"test_idempotent_sender_visible", "test_idempotent_sender_hidden"}),
               "DUPLICATE"),
    Submission("wrong", PS3, {**answers_ps3.RIGHT, "relay_once": answers_ps3.MARK_BEFORE_ACK},
               frozenset({"test_relay_once_visible", "test_relay_once_hidden"}),
               "marked sent although Kafka never acknowledged"),
    Submission("wrong", PS4, {"consumer_isolation": answers_ps4.UNCOMMITTED,
                              "process_transactionally": answers_ps4.REFERENCE},
               frozenset({"test_isolation_visible", "test_isolation_hidden"}), "an aborted read"),
    Submission("wrong", PS5, {"choose_config": answers_ps5.WRONG["min_insync_1"]},
               frozenset({"test_durability_visible", "test_durability_hidden"}), "was LOST"),
]
HOSTILE = [
    # Does no work, and patches the grader that the later test cells call.
    Submission("patcher", PS1, {"consume_at_most_once": '''\
def consume_at_most_once(consumer, process):
    pass

import course_lib.grading.consumers
course_lib.grading.consumers._campaign = lambda *args, **kwargs: None
'''}, AT_MOST_ONCE | AT_LEAST_ONCE),
    Submission("looper", PS1, {"consume_at_most_once": '''\
def consume_at_most_once(consumer, process):
    while True:
        pass
''', "consume_at_least_once": RIGHT_AT_LEAST_ONCE}, AT_MOST_ONCE, "did not finish within"),
    Submission("exiter", PS1, {"consume_at_most_once": RIGHT_AT_MOST_ONCE,
                               "consume_at_least_once": "import sys\nsys.exit('bye')\n"},
               AT_LEAST_ONCE),
    Submission("killer", PS1, {"consume_at_most_once": "import os\nos._exit(1)\n"},
               AT_MOST_ONCE | AT_LEAST_ONCE),
    Submission("flooder", PS1, {"consume_at_most_once": '''\
def consume_at_most_once(consumer, process):
    while True:
        print("spam " * 1000)
''', "consume_at_least_once": RIGHT_AT_LEAST_ONCE}, AT_MOST_ONCE, "printed more than"),
    Submission("deleter", PS1, {"consume_at_most_once": RIGHT_AT_MOST_ONCE,
                                "consume_at_least_once": RIGHT_AT_LEAST_ONCE},
               delete=("test_at_least_once_visible",)),
    Submission("editor", PS1, {"consume_at_most_once": RIGHT_AT_LEAST_ONCE.replace(
        "consume_at_least_once", "consume_at_most_once"),
        "consume_at_least_once": RIGHT_AT_LEAST_ONCE}, AT_MOST_ONCE,
        edit={"test_at_most_once_visible": "pass", "test_at_most_once_hidden": "pass"}),
    # A wrong check_sequence that also blanks its test cells; nbgrader puts them back.
    Submission("editor", PS2, {"send_with_retries": answers_ps2.RETRIES_RIGHT,
                               "IdempotentSender": answers_ps2.SENDER_RIGHT,
                               "check_sequence": answers_ps2.SEQUENCE_NO_FENCING},
               frozenset({"test_check_sequence_visible", "test_check_sequence_hidden"}),
               edit={"test_check_sequence_visible": "print('all good')",
                     "test_check_sequence_hidden": ""}),
]


def _nbgrader(course: Path, *args: str, kernel_killers: frozenset = frozenset()) -> float:
    """Run one nbgrader command in ``course`` with the venv first on PATH; its wall time.

    nbgrader exits non-zero when a notebook kills its kernel, after grading the
    rest of the class; only the students in ``kernel_killers`` may cause that.
    """
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONHASHSEED="0")
    start = time.perf_counter()
    done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    failed = set(re.findall(r"error processing assignment '[^']+' for student '([^']+)'",
                            done.stderr))
    assert failed <= kernel_killers, f"nbgrader could not grade {sorted(failed)}:\n" + (
        done.stderr[-4000:])
    assert done.returncode == 0 or failed, (
        f"nbgrader {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return elapsed


def _trusted_pass(course: Path, *students: str) -> float:
    """``make autograde``'s second step: re-grade outside the kernel, into the gradebook."""
    start = time.perf_counter()
    only = [arg for student in students for arg in ("--student", student)]
    done = subprocess.run([sys.executable, "-m", "course_lib.autograde", str(course), *only],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return time.perf_counter() - start


def _grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _points(assignment: str) -> dict[str, float]:
    """The autograded test cells of an assignment and their points (manual cells excluded)."""
    notebook = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4)
    return {_grade_id(cell): float(cell.metadata.nbgrader["points"]) for cell in notebook.cells
            if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("grade")
            and not cell.metadata.nbgrader.get("solution")}


def _build(release: Path, submission: Submission):
    notebook = nbformat.read(release, 4)
    found = set()
    for cell in notebook.cells:
        grade_id = _grade_id(cell)
        if grade_id in submission.answers:
            cell.source = submission.answers[grade_id]
        if grade_id in submission.edit:
            cell.source = submission.edit[grade_id]
        found.add(grade_id)
    missing = (set(submission.answers) | set(submission.edit) | set(submission.delete)) - found
    assert not missing, f"{submission.student}: no cells {sorted(missing)}"
    notebook.cells = [cell for cell in notebook.cells
                      if _grade_id(cell) not in submission.delete]
    return notebook


def _submit(course: Path, student: str, assignment: str, notebook) -> None:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True)
    nbformat.write(notebook, folder / f"{assignment}.ipynb")


def _scores(course: Path, student: str, assignment: str) -> dict[str, float]:
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submitted = gradebook.find_submission_notebook(assignment, assignment, student)
        points = _points(assignment)
        return {grade.name: grade.score for grade in submitted.grades if grade.name in points}


def _feedback(course: Path, student: str, assignment: str) -> str:
    return (course / "feedback" / student / assignment / f"{assignment}.html").read_text()


def _text(page: str) -> str:
    """What a reader of the feedback page sees: tags (and syntax highlighting) removed."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def _errors(course: Path, student: str, assignment: str) -> dict[str, list[str]]:
    """Each code cell's errors in the autograded notebook, by grade_id."""
    path = course / "autograded" / student / assignment / f"{assignment}.ipynb"
    notebook = nbformat.read(path, 4)
    return {_grade_id(cell) or str(index):
            [output.ename for output in cell.outputs if output.output_type == "error"]
            for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"}


def _hidden_lines(assignment: str) -> list[str]:
    """Every line of the source notebook's hidden test regions, delimiters included."""
    source = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4)
    lines = []
    for cell in source.cells:
        inside = False
        for line in cell.source.splitlines():
            inside = inside or "BEGIN HIDDEN TESTS" in line
            if inside and line.strip():
                lines.append(line.strip())
            inside = inside and "END HIDDEN TESTS" not in line
    assert lines, f"{assignment} has no hidden tests"
    return lines


KERNEL_KILLERS = frozenset({"killer"})  # nbgrader reports these; no autograded copy is kept


def _class_list() -> list[Submission]:
    return [s for s in (*WRONG, *HOSTILE) if s.assignment in ASSIGNMENTS]


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict:
    """A course directory with every assignment released, the class autograded and fed back."""
    course = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", course)
    shutil.copytree(ROOT / "solutions", course / "solutions")
    trivial = new_notebook(cells=[new_code_cell("print('hello')")], metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})
    (course / "solutions" / TRIVIAL).mkdir()
    nbformat.write(trivial, course / "solutions" / TRIVIAL / f"{TRIVIAL}.ipynb")
    timings = {"generate_assignment (all)": _nbgrader(course, "generate_assignment", "*",
                                                      "--force")}
    for assignment in ASSIGNMENTS:
        release = course / "exercises" / assignment / f"{assignment}.ipynb"
        _submit(course, "solution", assignment,
                nbformat.read(course / "solutions" / assignment / f"{assignment}.ipynb", 4))
        _submit(course, "untouched", assignment, nbformat.read(release, 4))
    for submission in _class_list():
        if submission.assignment not in ASSIGNMENTS:
            continue
        release = course / "exercises" / submission.assignment / f"{submission.assignment}.ipynb"
        _submit(course, submission.student, submission.assignment, _build(release, submission))
    _submit(course, "trivial", TRIVIAL, trivial)

    # Same run, one after the other: the one-cell notebook, then each full solution.
    timings["autograde one-cell notebook"] = _nbgrader(course, "autograde", TRIVIAL,
                                                       "--student", "trivial")
    for assignment in ASSIGNMENTS:
        timings[f"autograde {assignment} solution"] = _nbgrader(
            course, "autograde", assignment, "--student", "solution")
    for assignment in ASSIGNMENTS:
        timings[f"autograde {assignment} class"] = _nbgrader(
            course, "autograde", assignment, kernel_killers=KERNEL_KILLERS)
    timings["trusted pass"] = _trusted_pass(course)
    report = json.loads((course / "autograded" / "trusted_pass.json").read_text())
    for assignment in ASSIGNMENTS:
        _nbgrader(course, "generate_feedback", assignment)
    wrong = [(s.student, s.assignment) for s in WRONG if s.assignment in ASSIGNMENTS]
    first = {key: (_scores(course, *key), _feedback(course, *key)) for key in wrong}
    for student, assignment in wrong:
        _nbgrader(course, "autograde", assignment, "--student", student, "--force")
    timings["trusted pass, again"] = _trusted_pass(course, *sorted({s for s, _ in wrong}))
    for student, assignment in wrong:
        _nbgrader(course, "generate_feedback", assignment, "--student", student, "--force")
    print("\nnbgrader wall times (s): " + ", ".join(f"{name} {seconds:.1f}"
                                                   for name, seconds in timings.items()))
    return {"dir": course, "first": first, "timings": timings, "report": report}


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_every_cell_but_the_answers_is_locked(assignment):
    """nbgrader strips an unlocked non-answer cell's grade_id on hand-in, then fails on it."""
    notebook = nbformat.read(ROOT / "solutions" / assignment / f"{assignment}.ipynb", 4)
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        assert meta.get("grade_id"), f"a cell of {assignment} has no nbgrader grade_id"
        assert meta.get("solution") or meta.get("locked"), f"{meta['grade_id']} is not locked"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_generated_exercise_equals_the_committed_one(course, assignment):
    generated = course["dir"] / "exercises" / assignment
    committed = ROOT / "exercises" / assignment
    names = sorted(path.name for path in generated.iterdir())
    assert names == sorted(path.name for path in committed.iterdir())
    for name in names:
        assert (generated / name).read_bytes() == (committed / name).read_bytes(), (
            f"exercises/{assignment}/{name} is stale: run `make release` and commit the result")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_release_holds_no_solution_and_no_hidden_test(course, assignment):
    path = course["dir"] / "exercises" / assignment / f"{assignment}.ipynb"
    notebook = nbformat.read(path, 4)
    text = json.dumps(notebook)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    for line in _hidden_lines(assignment):
        assert line not in text, f"hidden test line in the release: {line}"
    answers = [cell.source for cell in notebook.cells
               if cell.metadata.get("nbgrader", {}).get("solution") and cell.cell_type == "code"]
    assert answers and all("raise NotImplementedError()" in source for source in answers)


@pytest.mark.skipif(PS1 not in ASSIGNMENTS, reason="PIPELINE_ASSIGNMENTS leaves ps1 out")
def test_ps1_release_shows_the_two_signatures(course):
    notebook = nbformat.read(course["dir"] / "exercises" / PS1 / f"{PS1}.ipynb", 4)
    answers = {cell.metadata.nbgrader.grade_id: cell.source for cell in notebook.cells
               if cell.metadata.get("nbgrader", {}).get("solution")}
    assert set(answers) == {"consume_at_most_once", "consume_at_least_once"}
    for grade_id, source in answers.items():
        assert source == (f"def {grade_id}(consumer, process):\n"
                          f"    # YOUR CODE HERE\n    raise NotImplementedError()")


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_solution_scores_full_marks(course, assignment):
    assert _scores(course["dir"], "solution", assignment) == _points(assignment)
    assert not any(_errors(course["dir"], "solution", assignment).values())


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_test_cells_print_their_summary_rather_than_return_it(course, assignment):
    """nbgrader reads a test cell's *result* as partial credit: a check's summary must be
    printed, or nbgrader warns, and a future nbgrader may score it as an error."""
    path = course["dir"] / "autograded" / "solution" / assignment / f"{assignment}.ipynb"
    notebook = nbformat.read(path, 4)
    for cell in notebook.cells:
        if _grade_id(cell) in _points(assignment):
            kinds = {output.output_type for output in cell.outputs}
            assert "execute_result" not in kinds, f"{_grade_id(cell)} returns a value"


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_untouched_exercise_scores_zero_with_only_not_implemented(course, assignment):
    points = _points(assignment)
    assert _scores(course["dir"], "untouched", assignment) == dict.fromkeys(points, 0)
    errors = _errors(course["dir"], "untouched", assignment)
    assert all(errors[grade_id] for grade_id in points), errors
    assert {name for names in errors.values() for name in names} == {"NotImplementedError"}


def _expected(submission: Submission) -> dict[str, float]:
    points = _points(submission.assignment)
    return {name: 0 if name in submission.loses else value for name, value in points.items()}


@pytest.mark.parametrize("submission", [s for s in WRONG if s.assignment in ASSIGNMENTS],
                         ids=lambda s: f"{s.assignment}-{s.student}")
def test_wrong_answer_loses_exactly_the_points_of_the_guarantee_it_breaks(course, submission):
    key = (submission.student, submission.assignment)
    assert _scores(course["dir"], *key) == _expected(submission)
    errors = _errors(course["dir"], *key)
    for grade_id in _points(submission.assignment):
        assert bool(errors[grade_id]) == (grade_id in submission.loses), (grade_id, errors)
    feedback = _text(_feedback(course["dir"], *key))
    assert submission.says in feedback and "course_lib.replay(" in feedback


@pytest.mark.parametrize("submission", [s for s in HOSTILE if s.assignment in ASSIGNMENTS],
                         ids=lambda s: f"{s.assignment}-{s.student}")
def test_a_hostile_submission_gains_no_credit_in_the_same_class(course, submission):
    key = (submission.student, submission.assignment)
    assert _scores(course["dir"], *key) == _expected(submission)
    if submission.says:
        assert submission.says in _text(_feedback(course["dir"], *key))
    if submission.student in KERNEL_KILLERS:
        assert not list((course["dir"] / "autograded" / submission.student).glob("*/*.ipynb"))


def test_the_good_submissions_graded_beside_the_hostile_ones_keep_their_marks(course):
    for assignment in ASSIGNMENTS:
        assert _scores(course["dir"], "solution", assignment) == _points(assignment)


def test_feedback_shows_no_hidden_test_source(course):
    students = [("solution", a) for a in ASSIGNMENTS] + [("untouched", a) for a in ASSIGNMENTS]
    students += [(s.student, s.assignment) for s in _class_list()
                 if s.student not in KERNEL_KILLERS]
    for student, assignment in students:
        feedback = _text(_feedback(course["dir"], student, assignment))
        assert "HIDDEN TESTS" not in feedback
        for line in _hidden_lines(assignment):
            assert line not in feedback, f"{student}'s feedback shows hidden test line {line!r}"


@pytest.mark.parametrize("submission", [s for s in WRONG if s.assignment in ASSIGNMENTS],
                         ids=lambda s: f"{s.assignment}-{s.student}")
def test_grading_twice_gives_the_same_scores_and_feedback(course, submission):
    key = (submission.student, submission.assignment)
    scores, feedback = course["first"][key]
    assert _scores(course["dir"], *key) == scores
    assert _feedback(course["dir"], *key) == feedback


@pytest.mark.skipif(PS1 not in ASSIGNMENTS, reason="PIPELINE_ASSIGNMENTS leaves ps1 out")
def test_a_submission_that_patches_the_grader_is_flagged(course):
    """The kernel granted the patcher its points; the trusted pass takes them back."""
    points = _points(PS1)
    flagged = {(row["student"], row["grade_id"]) for row in course["report"] if row["flagged"]}
    # Its at-least-once answer is the untouched stub, which the patch also "passed".
    assert {grade for student, grade in flagged if student == "patcher"} == set(points)
    kernel = {row["grade_id"]: row["kernel_score"] for row in course["report"]
              if row["student"] == "patcher"}
    assert kernel == points  # what the kernel alone would have given: full marks


@pytest.mark.skipif(PS1 not in ASSIGNMENTS, reason="PIPELINE_ASSIGNMENTS leaves ps1 out")
def test_only_the_patcher_is_flagged(course):
    flagged = {row["student"] for row in course["report"] if row["flagged"]}
    assert flagged == {"patcher"}
