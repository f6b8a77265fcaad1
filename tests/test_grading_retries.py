"""The ps2 checks (grading.retries): right answers pass, wrong ones fail, hostile ones end.

Every check here runs the answer in child processes exactly as grading does;
the corpus is source text (tests/helpers/answers_ps2.py), loaded as a notebook
would define it, and also graded by the trusted pass from a submission
notebook built from the solution. No test asserts on wall-clock time; the
hostile answers use a short time limit so the suite stays quick.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

import course_lib.checker
from course_lib import grading
from course_lib.autograde import grade_submission
from course_lib.faults import DropMessages, FaultPlan
from course_lib.grading import retries
from course_lib.grading.retries import (
    check_check_sequence,
    check_idempotent_sender,
    check_send_with_retries,
    reference_check_sequence,
)
from course_lib.grading.sandbox import CheckFailed, decode_token
from tests.helpers import answers_ps2 as corpus
from tests.helpers.grading import failure_of as must_fail
from tests.helpers.grading import hand_in, points, token_of
from tests.helpers.grading import scores as graded

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "ps2_retries" / "ps2_retries.ipynb"
EXERCISE = ROOT / "exercises" / "ps2_retries" / "ps2_retries.ipynb"

SEND, SENDER, SEQUENCE = "send_with_retries", "IdempotentSender", "check_sequence"
CHECK_OF = {SEND: check_send_with_retries, SENDER: check_idempotent_sender,
            SEQUENCE: check_check_sequence}
CELLS = {SEND: ("test_send_with_retries_visible", "test_send_with_retries_hidden"),
         SENDER: ("test_idempotent_sender_visible", "test_idempotent_sender_hidden"),
         SEQUENCE: ("test_check_sequence_visible", "test_check_sequence_hidden")}
POINTS = {"test_send_with_retries_visible": 2.0, "test_send_with_retries_hidden": 2.0,
          "test_idempotent_sender_visible": 2.0, "test_idempotent_sender_hidden": 1.0,
          "test_check_sequence_visible": 2.0, "test_check_sequence_hidden": 1.0}
RIGHT = {SEND: corpus.RETRIES_RIGHT, SENDER: corpus.SENDER_RIGHT,
         SEQUENCE: corpus.SEQUENCE_RIGHT}


def failure_of(name: str, source: str, **options) -> CheckFailed:
    """Run the check for answer ``name`` that must fail; return its exception."""
    return must_fail(CHECK_OF[name], corpus.load(source, name), **options)


# ----- right answers ----------------------------------------------------------------------


@pytest.mark.parametrize(("name", "source"), [
    (SEND, corpus.RETRIES_RIGHT), (SEND, corpus.RETRIES_RIGHT_EXPONENTIAL),
    (SENDER, corpus.SENDER_RIGHT), (SEQUENCE, corpus.SEQUENCE_RIGHT)])
def test_right_answer_passes(name, source):
    result = CHECK_OF[name](corpus.load(source, name), seed=3)
    assert "passed" in repr(result)
    assert result.runs >= 1


def test_reference_rules_on_each_edge_case():
    state = [[7, 0, 2, 5]]
    batch = {"producer_id": 7, "partition": 0, "value": "v"}
    cases = [  # (epoch, seq) -> the rule's answer
        ((2, 6), "ok"), ((2, 5), "duplicate"), ((2, 1), "duplicate"), ((2, 7), "out_of_order"),
        ((1, 6), "fenced"), ((1, 0), "fenced"), ((3, 0), "ok"), ((3, 6), "out_of_order")]
    for (epoch, seq), expected in cases:
        answer, after = reference_check_sequence(state, batch | {"epoch": epoch, "seq": seq})
        assert answer == expected, (epoch, seq)
        assert after == ([[7, 0, epoch, seq]] if answer == "ok" else state)
    answer, after = reference_check_sequence(state, batch | {"partition": 1, "epoch": 0,
                                                             "seq": 0})
    assert (answer, after) == ("ok", [[7, 0, 2, 5], [7, 1, 0, 0]])


# ----- wrong answers ----------------------------------------------------------------------


WRONG = [
    # (answer name, source, phrases the message must contain)
    (SEND, corpus.RETRIES_FATAL_RETRIED,
     ["send_with_retries('m-001|xxx… (2006 bytes)', retries=5",
      "tried again (attempt 2) after MSG_SIZE_TOO_LARGE, an error that is NOT retriable",
      "send_once: 1st attempt raised MSG_SIZE_TOO_LARGE (NOT retriable)"]),
    (SEND, corpus.RETRIES_IGNORES_TIMEOUT,
     ["send_with_retries('m-001', retries=2147483647", "after its delivery timeout",
      "broker 1 crashed right after the 1st ack", "raised NOT_ENOUGH_REPLICAS (retriable)"]),
    (SEND, corpus.RETRIES_FOREVER,
     ["send_with_retries('m-000', retries=0", "made attempt 2",
      "the network lost the broker's answer to produce request #1: the record WAS written"]),
    (SEND, corpus.RETRIES_NO_BACKOFF,
     ["started attempt 2 only 0 ms after the previous one failed with REQUEST_TIMED_OUT",
      "the network lost the broker's answer to produce request #1",
      "send_once: 1st attempt raised REQUEST_TIMED_OUT (retriable)"]),
    (SEND, corpus.RETRIES_SWALLOWS,
     ["returned None although no attempt succeeded", "MSG_SIZE_TOO_LARGE", "LOST",
      "re-raise the last KafkaException"]),
    (SEND, corpus.RETRIES_NEVER,
     ["gave up after 1 attempt(s) on REQUEST_TIMED_OUT, a retriable error",
      "the network lost the broker's answer to produce request #1"]),
    (SENDER, corpus.SENDER_NEW_SEQ_ON_RETRY,
     ["value 'v-000' (sender.send(0, 'v-000')) is in the log TWICE (a DUPLICATE)",
      "the network lost the broker's answer to produce request #1",
      "send_once(partition=0, seq=1, value='v-000') -> acknowledged"]),
    (SENDER, corpus.SENDER_GLOBAL_SEQ,
     ["value 'v-001'", "refused a batch with seq 1 on partition 1 "
      "(OUT_OF_ORDER_SEQUENCE_NUMBER): it expected seq 0", "per partition"]),
    (SENDER, corpus.SENDER_NO_RETRY,
     ["value 'v-000'", "REQUEST_TIMED_OUT", "a RETRIABLE error",
      "the network lost the broker's answer to produce request #1"]),
    (SEQUENCE, corpus.SEQUENCE_GAP_OK,
     ["returned 'ok', but the broker must answer 'out_of_order'", "skips a batch"]),
    (SEQUENCE, corpus.SEQUENCE_UPDATES_ON_DUPLICATE,
     ["answered 'duplicate' (right), but left the state as", "Only an 'ok' batch updates"]),
    (SEQUENCE, corpus.SEQUENCE_NO_FENCING,
     ["the broker must answer 'fenced'", "zombie producer"]),
]


@pytest.mark.parametrize(("name", "source", "phrases"), WRONG,
                         ids=[f"{n}-{i}" for i, (n, _s, _p) in enumerate(WRONG)])
def test_wrong_answer_fails_its_check_with_a_plain_message_and_a_working_replay(
        name, source, phrases):
    failure = failure_of(name, source)
    text = str(failure)
    assert text.startswith(f"{CHECK_OF[name].__name__} failed")
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    if name != SEQUENCE:
        assert "What your code did just before:" in text
        assert "Minimal fault plan:" in text
    again = retries.replay_data(decode_token(token_of(failure)), corpus.load(source, name))
    assert not again.passed
    assert again.message == text


def test_the_minimal_plan_is_shrunk_to_the_fault_that_matters():
    failure = failure_of(SENDER, corpus.SENDER_NEW_SEQ_ON_RETRY, seed=5)
    assert failure.run.plan == FaultPlan((DropMessages("produce", "response"),))
    report = course_lib.checker.check(failure.run.history, delivered_by="log")
    assert report.duplicated == [b"v-000"]


def test_replay_of_a_fixed_answer_passes():
    failure = failure_of(SEND, corpus.RETRIES_NO_BACKOFF)
    fixed = retries.replay_data(decode_token(token_of(failure)),
                                corpus.load(corpus.RETRIES_RIGHT, SEND))
    assert fixed.passed and fixed.message is None


def test_replay_in_process_matches_the_sandboxed_one():
    failure = failure_of(SENDER, corpus.SENDER_NEW_SEQ_ON_RETRY)
    inline = retries.replay_data(decode_token(token_of(failure)),
                                 corpus.load(corpus.SENDER_NEW_SEQ_ON_RETRY, SENDER),
                                 isolated=False)
    assert inline.message == str(failure)
    assert inline.history.to_jsonl() == failure.run.history.to_jsonl()


def test_replay_through_course_lib_finds_the_notebook_function(monkeypatch):
    if "retries" not in grading._CHECK_MODULES:  # until the package lists this module
        monkeypatch.setattr(grading, "_CHECK_MODULES", (*grading._CHECK_MODULES, "retries"))
    failure = failure_of(SEQUENCE, corpus.SEQUENCE_NO_FENCING)
    monkeypatch.setattr(sys.modules["__main__"], SEQUENCE,
                        corpus.load(corpus.SEQUENCE_NO_FENCING, SEQUENCE), raising=False)
    assert grading.replay(token_of(failure)).message == str(failure)


def test_a_replay_draws_its_timeline():
    failure = failure_of(SEND, corpus.RETRIES_NO_BACKOFF)
    run = retries.replay_data(decode_token(token_of(failure)),
                              corpus.load(corpus.RETRIES_NO_BACKOFF, SEND))
    svg = run._repr_svg_()
    assert svg is None or svg.lstrip().startswith("<svg")
    assert "FAILED (no_backoff)" in repr(run)


@pytest.mark.parametrize("name", [SEND, SENDER, SEQUENCE])
def test_an_untouched_stub_fails_with_not_implemented_error(name):
    stub = {SEND: corpus.RETRIES_STUB, SENDER: corpus.SENDER_STUB,
            SEQUENCE: corpus.SEQUENCE_STUB}[name]
    with pytest.raises(NotImplementedError, match="raised NotImplementedError"):
        CHECK_OF[name](corpus.load(stub, name))


@pytest.mark.parametrize(("name", "source"), [(SEND, corpus.RETRIES_NO_BACKOFF),
                                              (SENDER, corpus.SENDER_NEW_SEQ_ON_RETRY),
                                              (SEQUENCE, corpus.SEQUENCE_GAP_OK)])
def test_the_same_wrong_answer_gets_the_same_message_twice(name, source):
    assert str(failure_of(name, source, seed=11)) == str(failure_of(name, source, seed=11))


def test_random_plans_are_seeded():
    first = retries._retries_scenarios(4, 6)
    assert first == retries._retries_scenarios(4, 6)
    assert first != retries._retries_scenarios(5, 6)
    assert retries._sequence_cases(4, 50) == retries._sequence_cases(4, 50)
    assert retries._sequence_cases(4, 50) != retries._sequence_cases(5, 50)


# ----- hostile answers ------------------------------------------------------------------------


HOSTILE = [
    (corpus.HOSTILE_INFINITE_LOOP, "did not finish within 1 s"),
    (corpus.HOSTILE_SLEEP_FOREVER, "made more than 3000 calls"),
    (corpus.HOSTILE_SYS_EXIT, "ended its own process (sys.exit(0))"),
    (corpus.HOSTILE_OS_EXIT, "ended its own process (os._exit(3))"),
    (corpus.HOSTILE_FLOOD, "printed more than"),
    (corpus.HOSTILE_PATCH_GRADER, "ended without ever calling send_once(record)"),
]


@pytest.mark.parametrize(("source", "phrase"), HOSTILE,
                         ids=["loop", "sleep", "sys_exit", "os_exit", "flood", "patch"])
def test_hostile_answer_fails_cleanly(source, phrase):
    failure = failure_of(SEND, source, time_limit_s=1)
    assert phrase in str(failure), str(failure)
    assert token_of(failure)


def test_patching_the_grader_inside_the_answer_changes_nothing_here():
    originals = (retries._RetriesGate.verdict, retries.check_send_with_retries,
                 course_lib.checker.check)
    failure_of(SEND, corpus.HOSTILE_PATCH_GRADER)
    assert (retries._RetriesGate.verdict, retries.check_send_with_retries,
            course_lib.checker.check) == originals
    check_send_with_retries(corpus.load(corpus.RETRIES_RIGHT, SEND), random_plans=0)


# ----- the trusted pass on submission notebooks -----------------------------------------------


def submission(tmp_path: Path, answers: dict[str, str]) -> Path:
    """The solution notebook with answer cells replaced (grade_id -> source), as handed in."""
    return hand_in(SOLUTION, tmp_path / "ps2_retries.ipynb",
                   {grade_id: source.strip() for grade_id, source in answers.items()})


def scores(tmp_path: Path, answers: dict[str, str]) -> dict[str, float]:
    """The trusted scores per test cell; a lost cell must have lost to a check's verdict."""
    results = grade_submission(SOLUTION, submission(tmp_path, answers))
    assert points(results) == POINTS
    for grade_id, _points, score, reason in results:
        assert reason == "passed" if score else reason.startswith("CheckFailed: check_"), (
            grade_id, reason)
    return graded(results)


# Each submission replaces the answer cells named; every part is graded on its own, so one
# submission can carry a wrong answer for each part. Every corpus answer appears at least
# once next to a right answer for another part, whose points it must leave alone.
TRUSTED = [  # (answers replaced: part -> source, the parts whose points are lost)
    ({SEND: corpus.RETRIES_RIGHT_EXPONENTIAL, SENDER: corpus.SENDER_NEW_SEQ_ON_RETRY,
      SEQUENCE: corpus.SEQUENCE_GAP_OK}, {SENDER, SEQUENCE}),
    ({SEND: corpus.RETRIES_FATAL_RETRIED, SENDER: corpus.SENDER_GLOBAL_SEQ}, {SEND, SENDER}),
    ({SEND: corpus.RETRIES_IGNORES_TIMEOUT, SEQUENCE: corpus.SEQUENCE_UPDATES_ON_DUPLICATE},
     {SEND, SEQUENCE}),
    ({SENDER: corpus.SENDER_NO_RETRY, SEQUENCE: corpus.SEQUENCE_NO_FENCING},
     {SENDER, SEQUENCE}),
    ({SEND: corpus.RETRIES_FOREVER, SENDER: corpus.SENDER_NEW_SEQ_ON_RETRY}, {SEND, SENDER}),
    ({SEND: corpus.RETRIES_NO_BACKOFF, SENDER: corpus.SENDER_GLOBAL_SEQ,
      SEQUENCE: corpus.SEQUENCE_GAP_OK}, {SEND, SENDER, SEQUENCE}),
    ({SEND: corpus.RETRIES_SWALLOWS, SENDER: corpus.SENDER_NO_RETRY,
      SEQUENCE: corpus.SEQUENCE_NO_FENCING}, {SEND, SENDER, SEQUENCE}),
    ({SEND: corpus.RETRIES_NEVER, SENDER: corpus.SENDER_NEW_SEQ_ON_RETRY,
      SEQUENCE: corpus.SEQUENCE_UPDATES_ON_DUPLICATE}, {SEND, SENDER, SEQUENCE}),
    ({SEND: corpus.HOSTILE_PATCH_GRADER}, {SEND}),
    ({SEND: corpus.HOSTILE_INFINITE_LOOP, SENDER: corpus.SENDER_GLOBAL_SEQ,
      SEQUENCE: corpus.SEQUENCE_GAP_OK}, {SEND, SENDER, SEQUENCE}),
] + [({SEND: hostile, SENDER: corpus.SENDER_NO_RETRY, SEQUENCE: corpus.SEQUENCE_GAP_OK},
      {SEND, SENDER, SEQUENCE})
     for hostile in (corpus.HOSTILE_SYS_EXIT, corpus.HOSTILE_OS_EXIT, corpus.HOSTILE_FLOOD,
                     corpus.HOSTILE_SLEEP_FOREVER)]


@pytest.mark.parametrize(("answers", "loses"), TRUSTED,
                         ids=[f"submission-{i}" for i in range(len(TRUSTED))])
def test_trusted_pass_takes_exactly_the_points_of_the_broken_guarantees(tmp_path, answers,
                                                                        loses):
    got = scores(tmp_path, RIGHT | answers)
    lost = {cell for part in loses for cell in CELLS[part]}
    assert got == {cell: 0.0 if cell in lost else points for cell, points in POINTS.items()}


def test_trusted_pass_gives_the_solution_full_marks_and_the_exercise_nothing():
    full = grade_submission(SOLUTION, SOLUTION)
    assert [(g, s) for g, _p, s, _r in full] == list(POINTS.items())
    untouched = grade_submission(SOLUTION, EXERCISE)
    assert [(g, s) for g, _p, s, _r in untouched] == [(g, 0.0) for g in POINTS]
    assert all(reason.startswith("NotImplementedError") for _g, _p, _s, reason in untouched)


def test_the_notebooks_run_solution_clean_exercise_only_not_implemented():
    nbclient = pytest.importorskip("nbclient")
    solution = nbformat.read(SOLUTION, 4)
    nbclient.NotebookClient(solution, timeout=120, resources={
        "metadata": {"path": str(ROOT)}}).execute()
    exercise = nbformat.read(EXERCISE, 4)
    nbclient.NotebookClient(exercise, timeout=120, allow_errors=True, resources={
        "metadata": {"path": str(ROOT)}}).execute()
    errors = [output.ename for cell in exercise.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert errors == ["NotImplementedError"] * 3  # one per visible test cell
