"""The fault campaign every check shares (grading.campaign): hunt, shrink, verdict, crashes.

These run on stand-in runs (a plan and a failure, nothing else), so each rule
is seen alone: the checks' own suites play the same code against real answers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from course_lib.faults import CrashClient, DropMessages, FaultPlan, KillBroker, RestartBroker
from course_lib.grading import Campaign, CheckFailed, campaign, consumers, outbox, transactions
from course_lib.grading.sandbox import ABORTS

LOSS = CrashClient("consumer.commit", "after", 2)
NOISE = (DropMessages("offset_commit", "response", skip=3), KillBroker(1, at_ms=1_200),
         RestartBroker(1, at_ms=2_000))


@dataclass(frozen=True)
class Failure:
    kind: str


@dataclass
class Run:
    plan: FaultPlan
    failure: Failure | None = None
    extra: object = None
    message: str | None = None


@dataclass
class Player:
    """Plays a plan: it fails ("lost") exactly when the plan holds every fault of ``needs``."""

    needs: tuple = (LOSS,)
    kind: str = "lost"
    played: list = field(default_factory=list)

    def __call__(self, plan: FaultPlan, extra: object = None) -> Run:
        self.played.append((plan, extra))
        failing = all(fault in plan.faults for fault in self.needs) and bool(self.needs)
        return Run(plan, Failure(self.kind) if failing else None, extra)


# ----- shrinking -------------------------------------------------------------------------------


def test_shrinking_keeps_only_the_fault_that_matters():
    play = Player()
    shrunk = campaign.shrink(play(FaultPlan((*NOISE[:2], LOSS, NOISE[2]))), play)
    assert shrunk.plan == FaultPlan((LOSS,))
    assert shrunk.failure.kind == "lost"


def test_shrinking_keeps_every_fault_the_failure_needs():
    play = Player(needs=(LOSS, NOISE[1]))
    shrunk = campaign.shrink(play(FaultPlan((NOISE[0], LOSS, NOISE[1], NOISE[2]))), play)
    assert shrunk.plan == FaultPlan((LOSS, NOISE[1]))


def test_shrinking_wants_the_same_kind_of_failure():
    play = Player()
    failing = Run(FaultPlan((LOSS, NOISE[0])), Failure("duplicate"))
    assert campaign.shrink(failing, play) is failing  # every candidate fails as "lost"


def test_a_hang_is_not_shrunk():
    play = Player()
    failing = Run(FaultPlan((LOSS, *NOISE)), Failure("hang"))
    assert campaign.shrink(failing, play) is failing
    assert play.played == []  # each attempt would cost a whole time limit


def test_shrinking_skips_plans_outside_the_rules():
    play = Player()
    failing = play(FaultPlan((LOSS, NOISE[1])))
    legal = campaign.shrink(failing, play, lambda plan: NOISE[1] in plan.faults)
    assert legal.plan == FaultPlan((LOSS, NOISE[1]))


# ----- the hunt --------------------------------------------------------------------------------


def test_the_hunt_stops_at_the_first_failing_plan_and_counts_the_runs():
    play = Player()
    plans = [(FaultPlan((NOISE[0],)),), (FaultPlan((LOSS, NOISE[0])),), (FaultPlan((LOSS,)),)]
    failing, runs = campaign.hunt(play, lambda clean: plans)
    assert runs == 3  # the clean run and two plans; the third was never played
    assert failing.plan == FaultPlan((LOSS,))  # shrunk
    assert play.played[0] == (FaultPlan(), None)


def test_a_failing_clean_run_is_reported_as_it_is():
    def failing_clean(plan, extra=None):
        return Run(plan, Failure("clean-lost"))

    asked = []
    failing, runs = campaign.hunt(failing_clean, lambda clean: asked.append(clean) or [])
    assert (failing.failure.kind, runs, asked) == ("clean-lost", 1, [])


def test_a_passing_hunt_counts_every_run():
    failing, runs = campaign.hunt(Player(), lambda clean: [(FaultPlan((NOISE[0],)),)] * 4)
    assert (failing, runs) == (None, 5)


def test_the_extra_parts_of_a_scenario_stay_fixed_while_the_plan_shrinks():
    play = Player()
    failing, runs = campaign.first_failure(play, [(FaultPlan((LOSS, *NOISE)), "inputs")])
    assert (failing.plan, failing.extra, runs) == (FaultPlan((LOSS,)), "inputs", 1)
    assert {extra for _plan, extra in play.played} == {"inputs"}


# ----- the verdict -----------------------------------------------------------------------------


def test_a_failure_is_raised_with_its_message_run_and_token():
    run = Run(FaultPlan((LOSS,)), Failure("lost"))
    with pytest.raises(CheckFailed) as caught:
        campaign.raise_failure(run, "check_x failed: lost", "tok", not_implemented=False)
    assert (str(caught.value), caught.value.run, caught.value.token) == (
        "check_x failed: lost", run, "tok")
    assert run.message == "check_x failed: lost"


def test_an_untouched_stub_raises_not_implemented_error():
    with pytest.raises(NotImplementedError, match="stub"):
        campaign.raise_failure(Run(FaultPlan(), Failure("error")), "stub", "tok", True)


def test_a_non_callable_is_refused_before_any_run():
    with pytest.raises(TypeError, match="check_x needs your function or class, not 3"):
        campaign.require_callable("x", 3, "your function or class")


def test_the_passed_campaign_says_how_many_runs_it_survived():
    assert repr(Campaign("at_most_once", 7, 41)) == (
        "<check_at_most_once passed: 41 runs, one clean and 40 under faults (seed 7)>")
    assert consumers.Campaign is outbox.Campaign is transactions.Campaign is Campaign


def test_a_run_without_a_history_draws_nothing():
    assert campaign.timeline_svg(None, "title") is None


# ----- aborts enter the History as crashes -----------------------------------------------------


def test_every_abort_has_a_crash_point():
    assert set(campaign.ABORT_POINTS) == set(ABORTS)
    assert campaign.abort_point("broken") == "a broken connection to the cluster"
    assert campaign.abort_point("broken", "the grader") == "a broken connection to the grader"
    assert campaign.abort_point("hang") == "the wall-clock limit (grader stopped it)"


class History:
    def __init__(self) -> None:
        self.events: list = []

    def record(self, kind: str, actor: str, **data) -> None:
        self.events.append((kind, actor, data))


class App:
    def __init__(self, alive: bool = True) -> None:
        self.name, self.alive = "app-1", alive

    def die(self) -> None:
        self.alive = False


class Cluster:
    def __init__(self) -> None:
        self.history = History()


def test_an_abort_is_recorded_as_a_crash_and_kills_the_app():
    cluster, app = Cluster(), App()
    campaign.record_crash(cluster, app, "a signal", 2)
    assert cluster.history.events == [("crash", "app-1", {"point": "a signal", "phase": "at",
                                                          "nth": 2, "reason": "grader"})]
    assert not app.alive


def test_an_app_the_plan_already_killed_is_not_crashed_twice():
    cluster = Cluster()
    campaign.record_crash(cluster, App(alive=False), "a signal", 1)
    assert cluster.history.events == []


def test_a_played_run_states_its_verdict():
    @dataclass
    class Played(campaign.Played):
        failure: Failure | None = None

    assert (Played().passed, Played().verdict) == (True, "passed")
    assert (Played(Failure("lost")).passed, Played(Failure("lost")).verdict) == (
        False, "FAILED (lost)")


def test_every_check_names_its_guarantee():
    for module in (consumers, outbox, transactions):
        for name, check in module.CHECKS.items():
            assert isinstance(check, campaign.Check)
            assert (check.name, bool(check.guarantee)) == (name, True)
    assert outbox.CHECKS["relay_once"].function == "relay_once"
    assert outbox.CHECKS["relay_once"].items == "rows"


def test_counts_must_be_positive_ints():
    campaign.require_count("messages", 1)
    for wrong in (0, -2, True, 1.5, "3"):
        with pytest.raises(ValueError, match="messages must be a positive int"):
            campaign.require_count("messages", wrong)


class Gate:
    def call(self, target, method, args, kwargs):
        raise AssertionError("this driver never calls the gate")


def test_an_unisolated_runner_calls_the_code_here():
    seen = []

    def driver(fn, call):
        seen.append(fn())

    with campaign.app_runner(lambda: "here", driver, 1.0, isolated=False) as runner:
        outcome = runner(Gate(), 0.0)
    assert (outcome.kind, seen) == ("returned", ["here"])


# ----- reading the verdict off the History -----------------------------------------------------


@dataclass
class Event:
    kind: str
    data: dict = field(default_factory=dict)


class Events:
    def __init__(self, *events: Event) -> None:
        self.events = list(events)

    def of_kind(self, kind: str) -> list:
        return [event for event in self.events if event.kind == kind]


def commit(offset: int, group: str = "app", topic: str = "events") -> Event:
    return Event("commit", {"group": group, "topic": topic, "offset": offset})


def test_the_committed_offset_is_the_last_one_stored_for_the_group_and_topic():
    history = Events(commit(1), commit(9, group="other"), commit(3), commit(7, topic="out"))
    assert campaign.committed_offset(history, "app", "events") == 3
    assert campaign.committed_offset(history, "app", "events", upto=1) == 1
    assert campaign.committed_offset(history, "app", "events", upto=0) is None


def test_the_log_end_is_one_past_the_last_acknowledged_offset():
    history = Events(Event("ack", {"topic": "in", "offset": 4}),
                     Event("ack", {"topic": "out", "offset": 9}),
                     Event("ack", {"topic": "in", "offset": -1}))
    assert campaign.log_end(history, "in") == 5
    assert campaign.log_end(history) == 10
    assert campaign.log_end(Events()) == 0


def test_progress_is_owed_only_if_the_last_message_was_read_after_the_last_fault():
    read_last = Event("poll", {"offset": 5})
    assert campaign.progress_due([Event("crash"), read_last], 6)
    assert not campaign.progress_due([read_last, Event("fault")], 6)
    assert not campaign.progress_due([Event("poll", {"offset": 4})], 6)


def test_the_first_restart_is_the_first_after_the_first_fault():
    events = [Event("note"), Event("poll"), Event("crash"), Event("note", {"text": "stalls"}),
              Event("note", {"text": "starts again"})]
    assert campaign.first_restart(events, 0) == 3
    assert campaign.first_restart(events, 0, lambda e: "again" in e.data.get("text", "")) == 4
    assert campaign.first_restart(events[:2], 0) is None
