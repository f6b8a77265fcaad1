"""The ps4 checks (grading.transactions): right answers pass, wrong ones fail, hostile ones end.

Every check here runs the answer in child processes exactly as grading does.
The corpus (``tests/helpers/answers_ps4.py``) holds each answer as the source
of the notebook's two answer cells, because the grader reads the answer's
``CONSUMER_ISOLATION`` from the function's own globals. The last part grades
each answer with the trusted pass (``course_lib.autograde.grade_submission``)
and asserts the exact score of every test cell. No test asserts on wall-clock
time; the hostile answers run with a short time limit so the suite stays quick.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

import course_lib.checker
from course_lib import grading
from course_lib.autograde import grade_submission
from course_lib.faults import CrashClient, DropMessages, FaultPlan
from course_lib.grading import campaign, transactions
from course_lib.grading.sandbox import decode_token, inline
from course_lib.grading.transactions import (
    Stall,
    check_isolation,
    check_no_duplicates,
    check_no_loss,
    check_zombie_fenced,
    replay_data,
)
from tests.helpers import answers_ps4 as answers
from tests.helpers.grading import failure_of, hand_in, token_of

ROOT = Path(__file__).resolve().parents[1]
PS4 = "ps4_exactly_once"
SOLUTION = ROOT / "solutions" / PS4 / f"{PS4}.ipynb"
EXERCISE = ROOT / "exercises" / PS4 / f"{PS4}.ipynb"
CHECK_FUNCTIONS = {"no_duplicates": check_no_duplicates, "no_loss": check_no_loss,
                   "zombie_fenced": check_zombie_fenced, "isolation": check_isolation}
POINTS = {"no_duplicates": (2, 2), "no_loss": (2, 2), "zombie_fenced": (1, 1),
          "isolation": (1, 1)}


# ----- right answers ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["reference", "restart_on_any_error"])
def test_right_answer_passes_every_check(name):
    fn = answers.load(name)
    results = [check(fn) for check in CHECK_FUNCTIONS.values()]
    assert [r.check for r in results] == list(CHECK_FUNCTIONS)
    no_duplicates, no_loss, zombie, isolation = (r.plans for r in results)
    assert no_duplicates > 50 and no_loss > 50  # the clean run, every crash point, more
    assert zombie == 1 + 2 * transactions.MESSAGES  # a zombie and a time-out at each message
    assert "passed" in repr(results[0])


def test_the_zombie_really_is_fenced_and_stops():
    run = replay_data({"c": "zombie_fenced", "f": "process_transactionally", "m": 4, "p": [],
                       "s": 0, "z": ["zombie", 2]}, answers.load("reference"))
    assert run.passed
    notes = [e.data["text"] for e in run.history.of_kind("note")]
    assert any("stalls inside transform()" in text for text in notes)
    assert any("wakes up, a ZOMBIE" in text for text in notes)
    assert [(number, fatal) for number, fatal, _after in run.fenced] == [
        (1, "KafkaException(_FENCED, fatal)")]
    assert run.report.lost == [] and run.report.duplicated == []


def test_a_stall_past_the_transaction_timeout_fences_the_producer():
    run = replay_data({"c": "zombie_fenced", "f": "process_transactionally", "m": 4, "p": [],
                       "s": 0, "z": ["timeout", 2]}, answers.load("reference"))
    assert run.passed
    reasons = [e.data["reason"] for e in run.history.of_kind("txn_end")]
    assert "transaction.timeout.ms expired" in reasons
    assert run.fenced and run.fenced[0][1] == "KafkaException(_FENCED, fatal)"


def test_the_input_holds_aborted_upstream_transactions():
    run = replay_data({"c": "isolation", "f": "process_transactionally", "m": 4, "p": [],
                       "s": 0}, answers.load("reference"))
    offsets, aborted = transactions._inputs(run.history)
    assert sorted(offsets) == [b"m-000", b"m-001", b"m-002", b"m-003"]
    assert aborted == {b"aborted-000", b"aborted-001"}
    assert run.cluster.readable(transactions.TOPIC_IN, 0, "read_uncommitted").count(
        b"aborted-000") == 1


# ----- wrong answers ----------------------------------------------------------------------


WRONG = [
    # (answer, check, phrases the message must contain)
    ("commit_outside_transaction", "no_duplicates",
     ["the output of input m-000 (offset 0) was committed 2 times",
      "your process crashed during the 1st call of producer.commit_transaction, after it took",
      "must commit in ONE transaction: send_offsets_to_transaction"]),
    ("offset_not_next", "no_duplicates",
     ["the output of input m-000 (offset 0) was committed 2 times",
      "committed offset was 0, the offset of m-000 itself", "not msg.offset()"]),
    ("offset_not_next", "no_loss",
     ["no PROGRESS", "committed offset is 7 instead of the log end, 8"]),
    ("abort_without_rewind", "no_loss",
     ["input m-000 (offset 0) was LOST",
      "the network lost produce requests #1, #2, #3",
      "an abortable error", "seek the consumer back to its committed offsets",
      "producer.commit_transaction() raised KafkaException(_MSG_TIMED_OUT, abortable)"]),
    ("swallow_fenced", "zombie_fenced",
     ["app run 1 was FENCED (a fatal error) and kept going",
      "a new instance with the same transactional.id took over",
      "It was told: KafkaException(_FENCED, fatal). Then it called:",
      "consumer.committed("]),
    ("read_uncommitted", "isolation",
     ["aborted-000 is in the committed output ('invoices')",
      "upstream transaction that ABORTED", "isolation.level='read_uncommitted'",
      "consumer.poll(1.0) -> aborted-000 (offset 1)"]),
    ("init_per_message", "no_duplicates",
     ["on a run with NO faults, process_transactionally() raised KafkaException",
      "Operation not valid in state Ready", "Call producer.init_transactions() exactly once"]),
]


@pytest.mark.parametrize(("name", "check", "phrases"), WRONG,
                         ids=[f"{name}-{check}" for name, check, _ in WRONG])
def test_wrong_answer_fails_its_check_with_a_plain_message_and_a_replay(name, check, phrases):
    fn = answers.load(name)
    failure = failure_of(CHECK_FUNCTIONS[check], fn)
    text = str(failure)
    assert text.startswith(f"check_{check} failed")
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    assert "What your code did just before:" in text
    again = replay_data(decode_token(token_of(failure)), fn)
    assert again.message == text
    assert again.history.to_jsonl() == failure.run.history.to_jsonl()


def test_the_failure_is_shrunk_to_the_fault_that_matters():
    chosen = transactions.CHECKS["no_duplicates"]
    fn = answers.load("commit_outside_transaction")
    plan = FaultPlan((DropMessages("produce", "response", count=1, skip=2),
                      CrashClient("producer.commit_transaction", "after", 2)))

    def play(candidate, stall=None):
        return transactions._play(chosen, 0, 4, candidate, stall,
                                  inline(fn, transactions._drive), 10.0, "f")

    failing = play(plan)
    assert failing.failure.kind == "duplicate"
    shrunk = campaign.shrink(failing, play)
    assert shrunk.plan == FaultPlan((CrashClient("producer.commit_transaction", "after", 2),))
    assert shrunk.failure.value == b"m-001"


def test_an_abort_marker_retried_does_not_end_the_next_transaction():
    """A regression: the coordinator used to write a second ABORT marker on its retry."""
    plan = [{"type": "DropMessages", "api": "produce", "kind": "response", "count": 3,
             "skip": skip, "src": None, "dst": None} for skip in (2, 0)]
    run = replay_data({"c": "no_loss", "f": "process_transactionally", "m": 3, "p": plan,
                       "s": 23}, answers.load("reference"))
    assert run.passed, run.message
    markers = [(e.data["offset"], e.data["control"]) for e in run.history.of_kind("marker")
               if e.data["topic"] == transactions.TOPIC_OUT]
    assert len(markers) == len(set(markers)) == 4  # one per transaction, no repeat
    assert [c for _o, c in markers] == ["ABORT", "COMMIT", "COMMIT", "COMMIT"]


def test_an_untouched_stub_fails_with_not_implemented_error():
    namespace: dict = {}
    exec(answers.NOT_IMPLEMENTED[1], namespace)  # noqa: S102 - the exercise's stub
    with pytest.raises(NotImplementedError) as caught:
        check_no_loss(namespace["process_transactionally"])
    assert "raised NotImplementedError" in str(caught.value)


def test_an_invalid_isolation_level_is_named():
    fn = answers.load("reference")
    fn.__globals__["CONSUMER_ISOLATION"] = "committed"
    text = str(failure_of(check_isolation, fn))
    assert "CONSUMER_ISOLATION must be 'read_committed' or 'read_uncommitted', not 'committed'" \
        in text


def test_a_missing_isolation_level_is_kafkas_default_and_named():
    fn = answers.load("reference")
    del fn.__globals__["CONSUMER_ISOLATION"]
    text = str(failure_of(check_isolation, fn))
    assert "CONSUMER_ISOLATION was not set, so your consumer used Kafka's default" in text
    check_no_duplicates(fn, random_plans=0)  # the other guarantees still hold


# ----- hostile answers ------------------------------------------------------------------------


HOSTILE = [
    ("infinite_loop", "did not finish within 1 s"),
    ("calls_sys_exit", "ended its own process (sys.exit(0))"),
    ("calls_os_exit", "ended its own process (os._exit(3))"),
    ("print_flood", "printed more than"),
    ("patch_grader", "on a run with NO faults, input m-000 (offset 0) got no output"),
]


@pytest.mark.parametrize(("name", "phrase"), HOSTILE, ids=[name for name, _ in HOSTILE])
def test_hostile_answer_fails_cleanly(name, phrase):
    failure = failure_of(check_no_loss, answers.load(name), time_limit_s=1)
    assert phrase in str(failure), str(failure)
    assert "course_lib.replay(\"" in str(failure)


def test_patching_the_grader_inside_the_answer_changes_nothing_here():
    originals = (transactions._judge, transactions.check_no_loss, course_lib.checker.check)
    failure_of(check_no_loss, answers.load("patch_grader"))
    assert (transactions._judge, transactions.check_no_loss,
            course_lib.checker.check) == originals
    check_no_loss(answers.load("reference"), random_plans=0)


# ----- determinism and replay -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "check"), [("commit_outside_transaction", "no_duplicates"),
                                             ("swallow_fenced", "zombie_fenced")])
def test_the_same_wrong_answer_gets_the_same_message_twice(name, check):
    first = str(failure_of(CHECK_FUNCTIONS[check], answers.load(name)))
    second = str(failure_of(CHECK_FUNCTIONS[check], answers.load(name)))
    assert first == second


def test_replay_in_process_matches_the_sandboxed_run():
    fn = answers.load("abort_without_rewind")
    failure = failure_of(check_no_loss, fn)
    inline = replay_data(decode_token(token_of(failure)), fn, isolated=False)
    assert inline.message == str(failure)
    assert inline.plan == failure.run.plan


def test_course_lib_replay_dispatches_to_this_module(monkeypatch):
    """Once the module is listed in grading._CHECK_MODULES, the printed line works as is."""
    if "transactions" not in grading._CHECK_MODULES:  # until the package lists it
        monkeypatch.setattr(grading, "_CHECK_MODULES", (*grading._CHECK_MODULES, "transactions"))
    fn = answers.load("swallow_fenced")
    failure = failure_of(check_zombie_fenced, fn)
    again = grading.replay(token_of(failure), fn)
    assert again.stall == Stall("zombie", 1) and again.message == str(failure)
    fixed = grading.replay(token_of(failure), answers.load("reference"))
    assert fixed.passed and fixed.message is None


def test_random_plans_are_seeded():
    chosen = transactions.CHECKS["zombie_fenced"]
    clean = transactions._play(chosen, 0, 4, FaultPlan(), None, inline(
        answers.load("reference"), transactions._drive), 10.0, "f")
    first = transactions._plans(chosen, 0, clean, 5)
    assert first == transactions._plans(chosen, 0, clean, 5)
    assert first != transactions._plans(chosen, 1, clean, 5)
    assert all(stall is not None for _plan, stall in first)


# ----- the trusted pass, cell by cell ---------------------------------------------------------


def submission(tmp_path: Path, name: str | None, instructor: Path = SOLUTION) -> Path:
    """The solution notebook with its answer cells replaced by a corpus answer (or the stubs)."""
    isolation, function = answers.NOT_IMPLEMENTED if name is None else answers.CORPUS[name]
    return hand_in(instructor, tmp_path / f"{name or 'untouched'}.ipynb",
                   {"consumer_isolation": isolation, "process_transactionally": function})


def quick_instructor(tmp_path: Path, time_limit_s: float) -> Path:
    """The solution notebook with small campaigns (2 messages) and a short limit per run.

    Same cells, same checks, same seeds, same points; only the campaigns
    shrink, so that every corpus answer can go through the trusted pass in
    this suite. (The full notebook, hidden campaigns and all, is graded with
    the solution's answers by tests/test_nbgrader_pipeline.py.)
    """
    notebook = nbformat.read(SOLUTION, 4)

    def smaller(call: re.Match) -> str:
        seed = re.search(r"seed=\d+", call.group(2))
        options = (f"{seed.group(0)}, " if seed else "") + (
            f"messages=2, random_plans=1, time_limit_s={time_limit_s}")
        return f"{call.group(1)}(process_transactionally, {options})"

    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade"):
            cell.source = re.sub(r"(check_\w+)\(process_transactionally([^)]*)\)", smaller,
                                 cell.source)
    path = tmp_path / "instructor.ipynb"
    nbformat.write(notebook, path)
    return path


def expected_scores(breaks: set) -> dict:
    scores = {}
    for check, (visible, hidden) in POINTS.items():
        lost = check in breaks
        scores[f"test_{check}_visible"] = 0.0 if lost else float(visible)
        scores[f"test_{check}_hidden"] = 0.0 if lost else float(hidden)
    return scores


def scores_of(instructor: Path, notebook: Path) -> tuple[dict, dict]:
    results = grade_submission(instructor, notebook)
    return ({grade_id: score for grade_id, _points, score, _reason in results},
            {grade_id: reason for grade_id, _points, _score, reason in results})


def test_the_notebook_has_the_graded_cells_and_points():
    cells = nbformat.read(SOLUTION, 4).cells
    points = {c.metadata["nbgrader"]["grade_id"]: c.metadata["nbgrader"]["points"]
              for c in cells if c.metadata.get("nbgrader", {}).get("grade")}
    assert points == expected_scores(set())
    hidden = [c.source for c in cells if "BEGIN HIDDEN TESTS" in c.source]
    assert len(hidden) == 4
    assert all('get_ipython().InteractiveTB.set_mode(mode="Minimal")' in s for s in hidden)


def test_trusted_pass_scores_the_untouched_exercise_zero(tmp_path):
    scores, reasons = scores_of(SOLUTION, EXERCISE)
    assert scores == dict.fromkeys(expected_scores(set()), 0.0)
    assert all(reason.startswith("NotImplementedError") for reason in reasons.values()), reasons
    stubbed, _ = scores_of(SOLUTION, submission(tmp_path, None))
    assert stubbed == scores


@pytest.mark.parametrize("name", sorted(answers.CORPUS))
def test_trusted_pass_gives_each_answer_exactly_the_points_it_earns(tmp_path, name):
    breaks = set(answers.ALL_CHECKS) if name in answers.HOSTILE else answers.BREAKS.get(name,
                                                                                          set())
    limit_s = 0.5 if name in answers.HOSTILE else 2.0  # a hang costs one limit per cell
    scores, reasons = scores_of(quick_instructor(tmp_path, limit_s), submission(tmp_path, name))
    assert scores == expected_scores(breaks), reasons
    for check in breaks:
        assert reasons[f"test_{check}_visible"].startswith("CheckFailed: "), reasons


def test_the_exercise_fails_only_with_not_implemented_error():
    from nbclient import NotebookClient

    notebook = nbformat.read(EXERCISE, 4)
    NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [output.ename for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert errors and set(errors) == {"NotImplementedError"}
