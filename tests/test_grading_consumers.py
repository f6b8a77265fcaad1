"""The ps1 checks (grading.consumers): right answers pass, wrong ones fail, hostile ones end.

Every check here runs the answer in child processes exactly as grading does.
No test asserts on wall-clock time; the hostile ones use a short time limit so
the suite stays quick.
"""

from __future__ import annotations

import sys

import pytest

import course_lib.checker
from course_lib import grading
from course_lib.faults import CrashClient, DropMessages, FaultPlan, KillBroker, RestartBroker
from course_lib.grading import (
    campaign,
    check_at_least_once,
    check_at_most_once,
    consumers,
    replay,
)
from course_lib.grading.sandbox import inline
from tests.helpers import answers
from tests.helpers.grading import failure_of, token_of

# ----- right answers ----------------------------------------------------------------------


def test_right_at_most_once_answer_passes():
    result = check_at_most_once(answers.consume_at_most_once)
    assert result.check == "at_most_once"
    assert result.plans > 40  # the clean run, every crash point, random plans


def test_right_at_least_once_answer_passes():
    result = check_at_least_once(answers.consume_at_least_once)
    assert result.plans > 40
    assert "passed" in repr(result)


def test_retrying_a_failed_process_is_at_least_once():
    check_at_least_once(answers.retry_processing)


def test_except_exception_cannot_swallow_the_injected_crash():
    check_at_least_once(answers.except_exception_around_commit)


def test_each_ordering_keeps_the_points_it_deserves():
    check_at_most_once(answers.commit_before_process)
    check_at_least_once(answers.process_then_commit)


# ----- wrong answers ----------------------------------------------------------------------


WRONG = [
    # (check, answer, phrases the message must contain)
    (check_at_least_once, answers.commit_before_process,
     ["message m-000 (offset 0) was LOST",
      "your process crashed during the 1st call of consumer.commit, after it took effect",
      "committed offset was already 1"]),
    (check_at_most_once, answers.process_then_commit,
     ["message m-000 (offset 0) was processed 2 times (a DUPLICATE)",
      "your process crashed as the 1st call of process(msg) finished: its effect happened"]),
    (check_at_most_once, answers.commit_offset_first,
     ["message m-000 (offset 0) was processed 2 times",
      "your process crashed as the 1st call of process(msg) finished: its effect happened",
      "msg.offset() + 1"]),
    (check_at_least_once, answers.commit_offset_after,
     ["no PROGRESS", "committed offset is 5 instead of the log end, 6", "msg.offset() + 1"]),
    (check_at_least_once, answers.commit_offset_first,
     ["no PROGRESS", "committed offset is 5"]),
    (check_at_least_once, answers.swallow_processing_error,
     ["message m-000 (offset 0) was LOST",
      "the 1st call of process(msg) raised ProcessingError",
      "must not be committed"]),
    (check_at_least_once, answers.never_commit,
     ["no PROGRESS", "never set", "never committed"]),
    (check_at_most_once, answers.async_commit_first,
     ["message m-000 (offset 0) was processed 2 times",
      "your process crashed as the 1st call of process(msg) finished: its effect happened",
      "returned (asynchronous: the commit is still on its way)",
      "commit synchronously (asynchronous=False) BEFORE process(msg)"]),
    (check_at_most_once, answers.dedupe_in_memory,
     ["was processed 2 times"]),
    (check_at_most_once, answers.do_nothing,
     ["on a run with NO faults, message m-000 (offset 0) was never processed"]),
    (check_at_least_once, answers.commit_offset_first,
     ["no PROGRESS"]),
]


@pytest.mark.parametrize(("check", "answer", "phrases"), WRONG,
                         ids=[f"{c.__name__}-{a.__name__}" for c, a, _ in WRONG])
def test_wrong_answer_fails_the_right_check_with_a_plain_message(check, answer, phrases):
    failure = failure_of(check, answer)
    text = str(failure)
    assert isinstance(failure, AssertionError)
    assert text.startswith(f"{check.__name__} failed")
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in:\n{text}"
    assert "What your code did just before:" in text
    assert token_of(failure)


def test_the_message_shows_the_calls_before_the_fault():
    text = str(failure_of(check_at_least_once, answers.commit_before_process))
    story = text.split("What your code did just before:")[1]
    assert "consumer.poll(1.0) -> m-000 (offset 0)" in story
    assert "commit stored by the coordinator: next offset 1" in story
    assert ("consumer.commit(message=m-000 (offset 0), asynchronous=False) never returned"
            in story)
    assert "starts again (app run 2)" in story


def test_an_untouched_stub_fails_with_not_implemented_error():
    with pytest.raises(NotImplementedError) as caught:
        check_at_least_once(answers.not_implemented)
    assert "raised NotImplementedError" in str(caught.value)
    assert "in not_implemented(): raise NotImplementedError()" in str(caught.value)


# ----- hostile answers ------------------------------------------------------------------------


HOSTILE = [
    (answers.infinite_loop, "did not finish within 1 s"),
    (answers.calls_forever, "made more than 500 calls"),
    (answers.calls_sys_exit, "ended its own process (sys.exit(0))"),
    (answers.calls_os_exit, "ended its own process (os._exit(0))"),
    (answers.print_flood, "printed more than"),
    (answers.memory_hog, "raised MemoryError"),
    (answers.patch_grader, "message m-000 (offset 0) was never processed"),
]


@pytest.mark.parametrize(("answer", "phrase"), HOSTILE, ids=[a.__name__ for a, _ in HOSTILE])
def test_hostile_answer_fails_cleanly(answer, phrase):
    failure = failure_of(check_at_least_once, answer, time_limit_s=1)
    assert phrase in str(failure), str(failure)
    assert "course_lib.replay(\"" in str(failure)


def test_hostile_exits_are_recorded_as_crashes_in_the_history():
    failure = failure_of(check_at_least_once, answers.calls_os_exit, time_limit_s=1)
    crashes = [e for e in failure.run.history.of_kind("crash") if e.data.get("reason")]
    assert [e.data["point"] for e in crashes] == ["its own exit (sys.exit/os._exit)"]


def test_patching_the_grader_inside_the_answer_changes_nothing_here():
    originals = (grading.check_at_least_once, grading.check_at_most_once, consumers._judge,
                 course_lib.checker.check)
    failure_of(check_at_least_once, answers.patch_grader)
    assert (grading.check_at_least_once, grading.check_at_most_once, consumers._judge,
            course_lib.checker.check) == originals
    check_at_least_once(answers.consume_at_least_once, random_plans=0)


# ----- determinism and replay -------------------------------------------------------------------


@pytest.mark.parametrize("answer", [answers.commit_before_process,
                                    answers.swallow_processing_error])
def test_the_same_wrong_answer_gets_the_same_message_twice(answer):
    first = str(failure_of(check_at_least_once, answer))
    second = str(failure_of(check_at_least_once, answer))
    assert first == second


def test_replay_reproduces_the_failure():
    failure = failure_of(check_at_least_once, answers.commit_before_process)
    again = replay(token_of(failure), answers.commit_before_process)
    assert again.report.as_dict() == failure.run.report.as_dict()
    assert again.history.to_jsonl() == failure.run.history.to_jsonl()
    assert again.message == str(failure)
    assert not again.passed
    assert again.plan == FaultPlan((CrashClient("consumer.commit", "after", 1),))
    assert again.cluster.history is again.history


def test_replay_in_process_matches_for_an_answer_without_module_state():
    failure = failure_of(check_at_most_once, answers.process_then_commit)
    inline = replay(token_of(failure), answers.process_then_commit, isolated=False)
    assert inline.report.as_dict() == failure.run.report.as_dict()
    assert inline.message == str(failure)


def test_replay_finds_the_function_in_the_notebook(monkeypatch):
    failure = failure_of(check_at_most_once, answers.process_then_commit)
    monkeypatch.setattr(sys.modules["__main__"], "process_then_commit",
                        answers.process_then_commit, raising=False)
    assert replay(token_of(failure)).report.duplicated == [b"m-000"]


def test_replay_of_a_fixed_answer_passes():
    failure = failure_of(check_at_least_once, answers.commit_before_process)
    fixed = replay(token_of(failure), answers.consume_at_least_once)
    assert fixed.passed and fixed.message is None


def test_replay_draws_a_timeline():
    failure = failure_of(check_at_least_once, answers.commit_before_process)
    svg = replay(token_of(failure), answers.commit_before_process)._repr_svg_()
    assert svg is None or svg.lstrip().startswith("<svg")


def test_a_damaged_token_is_refused():
    with pytest.raises(ValueError, match="replay token"):
        replay("not-a-token", answers.consume_at_least_once)


def test_shrinking_keeps_only_the_fault_that_matters():
    plan = FaultPlan((DropMessages("offset_commit", "response", skip=3),
                      KillBroker(1, at_ms=1_200), RestartBroker(1, at_ms=2_000),
                      CrashClient("consumer.commit", "after", 2)))
    chosen = consumers.CHECKS["at_least_once"]

    def play(candidate):
        return consumers._play(chosen, 0, 6, candidate, inline(
            answers.commit_before_process, consumers._DRIVER), 10.0, "commit_before_process")

    failing = play(plan)
    assert failing.failure.kind == "lost"
    shrunk = campaign.shrink(failing, play)
    assert shrunk.plan == FaultPlan((CrashClient("consumer.commit", "after", 2),))
    assert shrunk.failure.value == b"m-001"


def test_random_plans_are_seeded():
    chosen = consumers.CHECKS["at_least_once"]
    clean = consumers._play(chosen, 0, 6, FaultPlan(), inline(
        answers.consume_at_least_once, consumers._DRIVER), 10.0, "f")
    first = consumers._plans(chosen, 0, clean, 5)
    assert first == consumers._plans(chosen, 0, clean, 5)
    assert first != consumers._plans(chosen, 1, clean, 5)
    singles = [p for p in first if len(p) == 1]
    assert len(singles) == 2 * len(clean.trace) + 6  # before/after each call, 6 failed process
