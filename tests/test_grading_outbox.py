"""The ps3 checks (grading.outbox): right answers pass, wrong ones fail where they should.

Every answer here is SOURCE (tests/helpers/answers_ps3.py), bound as a
SourceFunction: it is defined only in the sandbox's zygote, exactly as the
trusted pass does it, and every run is a child process that the grader kills
for real. The last tests grade whole submission notebooks with
course_lib.autograde and assert each grade cell's score.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from course_lib import grading
from course_lib.autograde import grade_submission
from course_lib.faults import CrashClient, DropMessages, FaultPlan
from course_lib.grading import outbox
from course_lib.grading.outbox import check_handle_payment, check_place_order, check_relay_once
from course_lib.grading.sandbox import CheckFailed, SourceFunction
from tests.helpers import answers_ps3 as answers
from tests.helpers.grading import REPLAY_CALL, hand_in, points, scores, token_of
from tests.helpers.grading import failure_of as must_fail

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "ps3_outbox" / "ps3_outbox.ipynb"
EXERCISE = ROOT / "exercises" / "ps3_outbox" / "ps3_outbox.ipynb"
CHECK_OF = {"place_order": check_place_order, "relay_once": check_relay_once,
            "handle_payment": check_handle_payment}
POINTS = {"test_place_order_visible": 2.0, "test_place_order_hidden": 2.0,
          "test_relay_once_visible": 2.0, "test_relay_once_hidden": 2.0,
          "test_handle_payment_visible": 2.0, "test_handle_payment_hidden": 2.0}


def fn(source: str, name: str) -> SourceFunction:
    return SourceFunction(source, name)


def failure_of(name: str, source: str, **options) -> CheckFailed:
    return must_fail(CHECK_OF[name], fn(source, name), **options)


@pytest.fixture
def replayable(monkeypatch):
    """course_lib.replay dispatching to this module (the lead registers it for good)."""
    modules = tuple(dict.fromkeys((*grading._CHECK_MODULES, "outbox")))
    monkeypatch.setattr(grading, "_CHECK_MODULES", modules)
    return grading.replay


# ----- right answers ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "source"), [
    ("place_order", answers.PLACE_ORDER),
    ("relay_once", answers.RELAY_ONCE),
    ("relay_once", answers.RELAY_BATCH),
    ("relay_once", answers.RELAY_POLL),
    ("handle_payment", answers.HANDLE_PAYMENT),
    ("handle_payment", answers.HANDLE_PAYMENT_SELECT),
], ids=["place_order", "relay_flush_each", "relay_batch", "relay_poll", "inbox_insert",
        "inbox_select"])
def test_right_answer_passes(name, source):
    result = CHECK_OF[name](fn(source, name), random_plans=4)
    assert result.check == name
    assert result.plans > 12  # the clean run, every single fault, random plans
    assert "passed" in repr(result)


# ----- wrong answers ----------------------------------------------------------------------


WRONG = {
    "two_transactions": ["order o-001 was saved WITHOUT its outbox row",
                         "killed (SIGKILL) just before its 4th SQL statement",
                         "ONE transaction", "INSERT INTO orders"],
    "dual_write": ["on a run with NO faults, order o-001 was saved but no outbox row",
                   "dual write"],
    "mark_before_ack": ["outbox row 1 (event order-o-001) was marked sent although Kafka never "
                        "acknowledged it", "during the 2nd call of producer.produce",
                        "UPDATE outbox SET sent = 1 WHERE id = 1"],
    "mark_regardless": ["outbox row 1 (event order-o-001) was marked sent although Kafka never "
                        "acknowledged it", "lost produce requests #1, #2, #3",
                        "FAILED (_MSG_TIMED_OUT)"],
    "skip_failed_row": ["outbox row 1 (event order-o-001) was first published AFTER outbox "
                        "row 4", "lost produce requests #1, #2, #3", "_MSG_TIMED_OUT",
                        "stop there and return"],
    "inbox_separate": ["payment pay-001 was LOST", "just before its 4th SQL statement",
                       "INSERT INTO inbox (event_id) VALUES ('pay-001')"],
    "check_then_act": ["payment pay-001 was applied 2 times (a DUPLICATE)",
                       "just before its 5th SQL statement"],
    "inbox_unguarded": ["the consumer never got past payment pay-001",
                        "Your function also raised IntegrityError: UNIQUE constraint failed",
                        "CRASH: uncaught IntegrityError"],
    "no_dedupe": ["payment pay-001 was applied 2 times (a DUPLICATE)",
                  "during the 1st call of the harness's offset commit, before it took effect",
                  "starts again (app run 2)"],
}
WRONG_CASES = [(label, name, source) for label, name, source in answers.WRONG]


@pytest.mark.parametrize(("label", "name", "source"), WRONG_CASES,
                         ids=[label for label, _, _ in WRONG_CASES])
def test_wrong_answer_fails_its_check_with_a_plain_message_and_a_replay(label, name, source,
                                                                       replayable):
    failure = failure_of(name, source, random_plans=2)
    text = str(failure)
    assert text.startswith(f"check_{name} failed")
    for phrase in WRONG[label]:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    assert "Minimal fault plan:" in text
    again = replayable(token_of(failure), fn(source, name))
    assert not again.passed
    assert again.message == text
    assert again.history.to_jsonl() == failure.run.history.to_jsonl()
    assert again.tables == failure.run.tables


def test_the_failure_names_the_fault_and_the_statements_before_it():
    failure = failure_of("place_order", answers.TWO_TRANSACTIONS)
    assert failure.run.plan == FaultPlan((CrashClient("sql", "before", 4),))
    story = str(failure).split("What your code did just before:")[1]
    assert "COMMIT\n" in story
    assert "BEGIN never ran: the process was killed before it" in story
    orders = [row[0] for row in failure.run.tables["orders"]]
    outbox_keys = [row[3] for row in failure.run.tables["outbox"]]
    assert "o-001" in orders and "o-001" not in outbox_keys  # what SQLite really kept


def test_a_failed_delivery_is_one_dropped_request_plan():
    failure = failure_of("relay_once", answers.SKIP_FAILED_ROW)
    assert failure.run.plan == FaultPlan((DropMessages("produce", "request", 3, 0),))
    published = [json.loads(v)["event_id"] for v in failure.run.cluster.readable("orders")]
    assert published[:2] == ["order-o-002", "order-o-003"]
    assert "order-o-001" in published


def test_a_fixed_answer_passes_the_replay_of_a_failure(replayable):
    failure = failure_of("handle_payment", answers.NO_DEDUPE)
    fixed = replayable(token_of(failure), fn(answers.HANDLE_PAYMENT, "handle_payment"))
    assert fixed.passed and fixed.message is None


def test_a_replay_draws_the_cluster_timeline(replayable):
    failure = failure_of("relay_once", answers.MARK_BEFORE_ACK)
    svg = replayable(token_of(failure), fn(answers.MARK_BEFORE_ACK, "relay_once"))._repr_svg_()
    assert svg is None or svg.lstrip().startswith("<svg")


def test_replay_refuses_to_run_in_the_kernel(replayable):
    failure = failure_of("handle_payment", answers.NO_DEDUPE)
    with pytest.raises(ValueError, match="child process"):
        replayable(token_of(failure), fn(answers.NO_DEDUPE, "handle_payment"), isolated=False)


@pytest.mark.parametrize(("name", "source"), [("relay_once", answers.MARK_BEFORE_ACK),
                                              ("handle_payment", answers.INBOX_SEPARATE)])
def test_the_same_wrong_answer_gets_the_same_message_twice(name, source):
    assert str(failure_of(name, source)) == str(failure_of(name, source))


def test_random_plans_are_seeded():
    chosen = outbox.CHECKS["relay_once"]
    clean = outbox.replay_data({"c": "relay_once", "f": "relay_once", "n": 2, "p": [], "s": 0},
                               fn(answers.RELAY_ONCE, "relay_once"))
    assert clean.passed
    first = outbox._plans(chosen, 0, clean, 6)
    assert first == outbox._plans(chosen, 0, clean, 6)
    assert first != outbox._plans(chosen, 1, clean, 6)
    singles = [plan for plan in first if len(plan) == 1]
    kinds = {type(plan.faults[0]).__name__ for plan in singles}
    assert kinds == {"CrashClient", "DropMessages"}


# ----- hostile answers ------------------------------------------------------------------------


HOSTILE = [
    ("place_order", answers.INFINITE_LOOP, "did not finish within 1 s"),
    ("place_order", answers.SYS_EXIT, "ended its own process (sys.exit(0))"),
    ("handle_payment", answers.OS_EXIT, "ended its own process (os._exit(3))"),
    ("relay_once", answers.PRINT_FLOOD, "printed more than"),
    ("relay_once", answers.CALLS_FOREVER, "made more than 600 statements and calls"),
    ("place_order", answers.PATCH_GRADER, "order o-001 was not saved"),
]


@pytest.mark.parametrize(("name", "source", "phrase"), HOSTILE,
                         ids=["infinite_loop", "sys_exit", "os_exit", "print_flood",
                              "calls_forever", "patch_grader"])
def test_hostile_answer_fails_cleanly(name, source, phrase):
    failure = failure_of(name, source, time_limit_s=1)
    assert phrase in str(failure), str(failure)
    assert REPLAY_CALL.search(str(failure))


def test_patching_the_grader_in_the_answer_changes_nothing_here():
    originals = (outbox._judge, outbox._judge_orders, outbox.check_place_order)
    failure_of("place_order", answers.PATCH_GRADER)
    assert (outbox._judge, outbox._judge_orders, outbox.check_place_order) == originals
    check_place_order(fn(answers.PLACE_ORDER, "place_order"), random_plans=0)


def test_an_untouched_stub_fails_with_not_implemented_error():
    with pytest.raises(NotImplementedError, match="raised NotImplementedError"):
        check_relay_once(fn(answers.STUB["relay_once"], "relay_once"))


# ----- the trusted pass on whole submissions --------------------------------------------------


def submission(tmp_path: Path, sources: dict[str, str]) -> Path:
    """The solution notebook with each answer cell's source replaced (a student's hand-in)."""
    return hand_in(SOLUTION, tmp_path / "submission.ipynb", sources)


def test_the_solution_scores_full_marks_in_the_trusted_pass(tmp_path):
    results = grade_submission(SOLUTION, submission(tmp_path, answers.RIGHT))
    assert points(results) == POINTS
    assert scores(results) == POINTS, results


# Each hand-in mixes wrong and right functions, so that every wrong answer of the corpus
# is graded once in the trusted pass (a whole submission costs seconds: the hidden
# campaigns of its right functions all run) and the right ones beside it keep their marks.
HAND_INS = [
    {"place_order": "two_transactions", "relay_once": "mark_before_ack"},
    {"place_order": "dual_write", "handle_payment": "inbox_separate"},
    {"relay_once": "skip_failed_row", "handle_payment": "check_then_act"},
    {"relay_once": "mark_regardless", "handle_payment": "no_dedupe"},
    {"handle_payment": "inbox_unguarded"},
]


def test_every_wrong_answer_is_in_a_hand_in():
    graded = sorted(label for hand_in in HAND_INS for label in hand_in.values())
    assert graded == sorted(label for label, _, _ in answers.WRONG)


@pytest.mark.parametrize("hand_in", HAND_INS, ids=["+".join(h.values()) for h in HAND_INS])
def test_wrong_answers_lose_exactly_their_guarantees_points(tmp_path, hand_in):
    wrong = {label: source for label, _, source in answers.WRONG}
    sources = {**answers.RIGHT, **{name: wrong[label] for name, label in hand_in.items()}}
    results = grade_submission(SOLUTION, submission(tmp_path, sources))
    expected = {grade_id: (0.0 if any(grade_id.startswith(f"test_{name}_") for name in hand_in)
                           else points) for grade_id, points in POINTS.items()}
    assert scores(results) == expected, results
    reasons = {grade_id: reason for grade_id, _, _, reason in results}
    for name in hand_in:
        assert reasons[f"test_{name}_visible"].startswith(f"CheckFailed: check_{name} failed")


def test_the_untouched_exercise_scores_zero_with_not_implemented_error():
    results = grade_submission(SOLUTION, EXERCISE)
    assert scores(results) == dict.fromkeys(POINTS, 0.0)
    assert all(reason.startswith("NotImplementedError") for _, _, _, reason in results), results


def test_the_exercise_notebook_fails_only_with_not_implemented_error():
    from nbclient import NotebookClient

    notebook = nbformat.read(EXERCISE, 4)
    NotebookClient(notebook, timeout=60, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [output.ename for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.get("outputs", []) if output.output_type == "error"]
    assert errors == ["NotImplementedError"] * 3  # the three visible test cells
