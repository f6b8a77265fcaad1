"""The ps5 checks (grading.durability): right settings pass, wrong ones fail, hostile ones end.

Every check runs the answer in a sandboxed child exactly as grading does; the
attacks then run here on the answer's settings. The trusted-pass tests paste
each corpus answer into a copy of the solution notebook and grade it with
:func:`course_lib.autograde.grade_submission`, asserting the exact score of
every test cell: a wrong answer loses the points of the guarantee it breaks
and keeps the others. No test asserts on wall-clock time; the hostile ones use
a short time limit so the suite stays quick.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

import course_lib.checker
from course_lib import grading
from course_lib.autograde import grade_submission
from course_lib.faults import DelayMessages, FaultPlan, Isolate, KillBroker, RestartBroker
from course_lib.grading import CheckFailed, durability
from course_lib.grading.durability import (
    check_availability,
    check_durability,
    check_too_few_brokers,
    replay_data,
)
from course_lib.grading.sandbox import decode_token
from tests.helpers import answers_ps5 as corpus
from tests.helpers.grading import failure_of as must_fail
from tests.helpers.grading import hand_in, points, scores, token_of

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "ps5_durability" / "ps5_durability.ipynb"
EXERCISE = ROOT / "exercises" / "ps5_durability" / "ps5_durability.ipynb"
CELLS = ("test_durability_visible", "test_durability_hidden", "test_availability_visible",
         "test_availability_hidden", "test_too_few_brokers_visible",
         "test_too_few_brokers_hidden")


def failure_of(check, source: str, **options) -> CheckFailed:
    """Run a check that must fail on an answer cell's source; return its exception."""
    return must_fail(check, corpus.load(source), **options)


# ----- right answers ----------------------------------------------------------------------


@pytest.mark.parametrize("source", [corpus.RIGHT, corpus.RIGHT_ALL_BROKERS],
                         ids=["2f+1", "all_brokers"])
def test_right_answers_pass_every_check(source):
    fn = corpus.load(source)
    durable = check_durability(fn)
    assert durable.runs >= 8  # the clean run, three shapes, random plans
    assert "passed" in repr(durable)
    available = check_availability(fn, cases=((1, 3), (2, 5)), apart=True)
    assert available.runs == 1 + 3 + 1 + 10 + 10  # clean, every broker; clean, every pair twice
    check_too_few_brokers(fn)


# ----- wrong answers ----------------------------------------------------------------------


WRONG = [
    # (corpus name, check, phrases the failure message must contain)
    ("acks_1", check_durability,
     ["acknowledged write w-002 (offset 2) was LOST",
      "the partition's leader crashed right after the producer's 3rd acknowledgement",
      "With acks='1' the leader (broker-0) acknowledged w-002",
      "t=2007ms  producer-1: is told w-002 is stored at offset 2"]),
    ("min_insync_1", check_durability,
     ["acknowledged write w-000 (offset 0) was LOST",
      "broker 0 was cut off from the other brokers from t=0ms on",
      "broker 0 crashed at t=10000ms and never came back",
      "the ISR was [broker-0]", "min.insync.replicas=1 let that acknowledge w-000"]),
    ("unclean_election_on", check_durability,
     ["acknowledged write w-000 (offset 0) was LOST", "UNCLEAN election: broker-1 leads",
      "unclean.leader.election.enable=True let broker-1",
      "broker-2: truncates its log at offset 0, cutting w-000"]),
    ("string_false", check_durability,
     ["choose_config(1, 3) returned settings Kafka rejects: Invalid value 'false' for "
      "configuration unclean.leader.election.enable: Expected a bool, True or False"]),
    ("string_false", check_availability,
     ["Invalid value 'false' for configuration unclean.leader.election.enable"]),
    ("min_insync_equals_rf", check_availability,
     ["with broker(s) 0 down, the producer's write w-000 was never acknowledged",
      "broker 0 crashed at t=500ms and never came back",
      "retried (NOT_ENOUGH_REPLICAS) and was finally told _MSG_TIMED_OUT",
      "fewer than min.insync.replicas=3"]),
    ("rf_f_plus_1", check_availability,
     ["with broker(s) 0 down, the producer's write w-000 was never acknowledged",
      "fewer than min.insync.replicas=2", "(here 2 - 1 = 1)"]),
    ("rf_f_plus_1", check_too_few_brokers,
     ["choose_config(1, 2) returned {'replication.factor': 2",
      "2 brokers are too few to promise both guarantees for 1 failure",
      "Raise ValueError and say why"]),
]


@pytest.mark.parametrize(("name", "check", "phrases"), WRONG,
                         ids=[f"{n}-{c.__name__}" for n, c, _ in WRONG])
def test_wrong_answer_fails_the_right_check_with_a_plain_message(name, check, phrases):
    failure = failure_of(check, corpus.WRONG[name])
    message = str(failure)
    for phrase in phrases:
        assert phrase in message, message
    assert message.startswith(f"{check.__name__} failed")
    again = replay_data(decode_token(token_of(failure)), corpus.load(corpus.WRONG[name]))
    assert not again.passed
    assert again.message == message


@pytest.mark.parametrize(("name", "kept"), [
    ("acks_1", (check_availability, check_too_few_brokers)),
    ("min_insync_1", (check_availability, check_too_few_brokers)),
    ("unclean_election_on", (check_availability, check_too_few_brokers)),
    ("min_insync_equals_rf", (check_durability, check_too_few_brokers)),
    ("rf_f_plus_1", (check_durability,)),
    ("string_false", (check_too_few_brokers,)),
])
def test_wrong_answer_passes_the_checks_it_deserves(name, kept):
    fn = corpus.load(corpus.WRONG[name])
    for check in kept:
        check(fn)


def test_an_untouched_stub_fails_with_not_implemented_error():
    for check in (check_durability, check_availability, check_too_few_brokers):
        with pytest.raises(NotImplementedError) as caught:
            check(corpus.load(corpus.NOT_IMPLEMENTED))
        assert "raised NotImplementedError" in str(caught.value)


def test_raising_value_error_where_settings_exist_is_a_failure():
    failure = failure_of(check_too_few_brokers, 'def choose_config(f, brokers):\n'
                                                '    raise ValueError("never")\n')
    assert "choose_config(1, 3) raised ValueError: never." in str(failure)
    assert "settings that keep every acknowledged write" in str(failure)


# ----- hostile answers ----------------------------------------------------------------------


HOSTILE = [
    ("infinite_loop", "choose_config() did not finish within 1 s"),
    ("sys_exit", "choose_config() ended its own process (sys.exit(0))"),
    ("os_exit", "choose_config() ended its own process (os._exit(3))"),
    ("print_flood", "choose_config() printed more than"),
    ("returns_a_set", "returned something the grader cannot read (TypeError"),
    ("patch_grader", "replication.factor=1 keeps w-000 on at most 1 broker(s)"),
]


@pytest.mark.parametrize(("name", "phrase"), HOSTILE, ids=[n for n, _ in HOSTILE])
def test_hostile_answer_fails_cleanly(name, phrase):
    failure = failure_of(check_durability, corpus.HOSTILE[name], time_limit_s=1)
    assert phrase in str(failure), str(failure)
    again = replay_data(decode_token(token_of(failure)), corpus.load(corpus.HOSTILE[name]),
                        time_limit_s=1)
    assert again.message == str(failure)


def test_patching_the_grader_inside_the_answer_changes_nothing_here():
    originals = (durability.check_durability, durability._play, durability._respects,
                 course_lib.checker.check)
    failure_of(check_durability, corpus.HOSTILE["patch_grader"])
    assert (durability.check_durability, durability._play, durability._respects,
            course_lib.checker.check) == originals
    check_durability(corpus.load(corpus.RIGHT), random_plans=0)


# ----- determinism, replay, plans -------------------------------------------------------------


@pytest.mark.parametrize("name", ["acks_1", "unclean_election_on", "min_insync_equals_rf"])
def test_the_same_wrong_answer_gets_the_same_message_twice(name):
    check = check_availability if name == "min_insync_equals_rf" else check_durability
    first = str(failure_of(check, corpus.WRONG[name], seed=5))
    second = str(failure_of(check, corpus.WRONG[name], seed=5))
    assert first == second


def test_replay_reproduces_the_failure_and_draws_it():
    failure = failure_of(check_durability, corpus.WRONG["unclean_election_on"])
    fn = corpus.load(corpus.WRONG["unclean_election_on"])
    again = replay_data(decode_token(token_of(failure)), fn)
    assert again.history.to_jsonl() == failure.run.history.to_jsonl()
    assert again.report.as_dict() == failure.run.report.as_dict()
    assert again.plan == FaultPlan((Isolate(1, at_ms=0), Isolate(2, at_ms=7_000),
                                    KillBroker(0, at_ms=13_000)))
    inline = replay_data(decode_token(token_of(failure)), fn, isolated=False)
    assert inline.message == str(failure)
    assert again._repr_svg_().startswith("<svg")


def test_replay_of_a_fixed_answer_passes():
    failure = failure_of(check_durability, corpus.WRONG["acks_1"])
    fixed = replay_data(decode_token(token_of(failure)), corpus.load(corpus.RIGHT))
    assert fixed.passed and fixed.message is None


def test_replay_without_the_function_plays_the_saved_settings(monkeypatch):
    # course_lib.replay dispatches on the module list the lead maintains; add ours here.
    monkeypatch.setattr(grading, "_CHECK_MODULES", (*grading._CHECK_MODULES, "durability"))
    failure = failure_of(check_durability, corpus.WRONG["min_insync_1"])
    monkeypatch.delattr(sys.modules["__main__"], "choose_config", raising=False)
    again = course_lib.replay(token_of(failure))
    assert again.message == str(failure)


def test_replay_finds_the_function_in_the_notebook(monkeypatch):
    failure = failure_of(check_durability, corpus.WRONG["acks_1"])
    monkeypatch.setattr(sys.modules["__main__"], "choose_config",
                        corpus.load(corpus.RIGHT), raising=False)
    assert replay_data(decode_token(token_of(failure))).passed


def test_shrinking_keeps_only_the_faults_that_matter():
    config = corpus.load(corpus.WRONG["acks_1"])(1, 3)
    plan = FaultPlan((DelayMessages(200, api="fetch", kind="response", count=10**6),
                      Isolate(2, at_ms=3_000, until_ms=5_000),
                      KillBroker(1, at_ms=1_000), RestartBroker(1, at_ms=2_000),
                      KillBroker("leader", on="ack", nth=6)))
    run = durability._play(durability.CHECKS["durability"], 0, (1, 3), config, plan, "x")
    assert run.failure is not None and run.failure.kind == "lost"
    shrunk = durability._shrink(run)
    assert shrunk.plan == FaultPlan((plan.faults[0], plan.faults[-1]))


def test_plans_never_have_more_than_f_brokers_down():
    assert durability._respects(FaultPlan((KillBroker(0, at_ms=0), RestartBroker(0, at_ms=5),
                                           KillBroker(1, at_ms=5))), 1)
    assert not durability._respects(FaultPlan((KillBroker(0, at_ms=0),
                                               KillBroker(1, at_ms=4))), 1)
    assert not durability._respects(FaultPlan((KillBroker("leader", on="ack", nth=1),
                                               KillBroker("leader", on="ack", nth=4))), 1)
    for seed in range(20):
        for f, brokers, rf in ((1, 3, 3), (2, 5, 5), (0, 1, 1)):
            for plan in durability._durability_plans(seed, f, brokers, rf, 10):
                assert durability._respects(plan, f), plan


def test_random_plans_are_seeded():
    first = durability._durability_plans(3, 1, 3, 3, 10)
    assert first == durability._durability_plans(3, 1, 3, 3, 10)
    assert first != durability._durability_plans(4, 1, 3, 3, 10)


# ----- the trusted pass over the notebook -------------------------------------------------------


FULL = {"test_durability_visible": 3, "test_durability_hidden": 3,
        "test_availability_visible": 2, "test_availability_hidden": 2,
        "test_too_few_brokers_visible": 1, "test_too_few_brokers_hidden": 1}


def _scores(dur: int, avail: int, few: int) -> dict[str, float]:
    return {cell: float(points) * (dur if "durability" in cell else avail
                                   if "availability" in cell else few)
            for cell, points in FULL.items()}


EXPECTED = [
    ("RIGHT", corpus.RIGHT, _scores(1, 1, 1)),
    ("RIGHT_ALL_BROKERS", corpus.RIGHT_ALL_BROKERS, _scores(1, 1, 1)),
    ("acks_1", corpus.WRONG["acks_1"], _scores(0, 1, 1)),
    ("min_insync_1", corpus.WRONG["min_insync_1"], _scores(0, 1, 1)),
    ("min_insync_equals_rf", corpus.WRONG["min_insync_equals_rf"], _scores(1, 0, 1)),
    ("unclean_election_on", corpus.WRONG["unclean_election_on"], _scores(0, 1, 1)),
    ("string_false", corpus.WRONG["string_false"], _scores(0, 0, 1)),
    ("rf_f_plus_1", corpus.WRONG["rf_f_plus_1"], _scores(1, 0, 0)),
    *[(name, source, _scores(0, 0, 0)) for name, source in corpus.HOSTILE.items()],
    ("NOT_IMPLEMENTED", corpus.NOT_IMPLEMENTED, _scores(0, 0, 0)),
]


def _submission(tmp_path: Path, source: str) -> Path:
    """The solution notebook with the answer cell replaced, as a student would hand it in."""
    return hand_in(SOLUTION, tmp_path / "ps5_durability.ipynb", {
        "choose_config": source.strip("\n"), "explain_min_insync": "Because acks=all is enough."})


@pytest.mark.parametrize(("name", "source", "expected"), EXPECTED,
                         ids=[name for name, _, _ in EXPECTED])
def test_trusted_pass_scores_each_corpus_answer(tmp_path, name, source, expected):
    results = grade_submission(SOLUTION, _submission(tmp_path, source))
    assert scores(results) == expected, {r[0]: r[3] for r in results}
    assert points(results) == FULL


def test_trusted_pass_gives_the_untouched_exercise_nothing():
    results = grade_submission(SOLUTION, EXERCISE)
    assert [(grade_id, score) for grade_id, _p, score, _r in results] == [
        (cell, 0.0) for cell in CELLS]
    assert all(reason.startswith("NotImplementedError") for *_, reason in results), results


def test_the_written_answer_is_left_to_the_human_grader():
    notebook = nbformat.read(SOLUTION, as_version=4)
    manual = [cell for cell in notebook.cells
              if cell.metadata.get("nbgrader", {}).get("grade_id") == "explain_min_insync"]
    assert manual and manual[0].cell_type == "markdown"
    assert manual[0].metadata.nbgrader["points"] == 2
    graded = {grade_id for grade_id, *_ in grade_submission(SOLUTION, SOLUTION)}
    assert "explain_min_insync" not in graded and graded == set(CELLS)


# ----- the notebooks in a kernel ---------------------------------------------------------------


def _errors(path: Path) -> list[str]:
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, kernel_name="python3", timeout=120, allow_errors=True,
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return [output.ename for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.get("outputs", []) if output.output_type == "error"]


def test_the_solution_runs_clean_and_the_exercise_fails_only_unimplemented():
    assert _errors(SOLUTION) == []
    errors = _errors(EXERCISE)
    assert errors and set(errors) == {"NotImplementedError"}
