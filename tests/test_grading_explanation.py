"""The plain words every check shares (grading.explanation): faults, aborts, the frame."""

from __future__ import annotations

import pytest

from course_lib.faults import (
    FAULT_TYPES,
    CrashClient,
    DelayMessages,
    DropMessages,
    DuplicateMessages,
    FailProcessing,
    Isolate,
    KillBroker,
    RestartBroker,
)
from course_lib.grading import explanation
from course_lib.grading.explanation import AbortWords, abort_headline, describe_fault, ordinal
from course_lib.grading.sandbox import ABORTS, MEMORY_LIMIT_MB, OUTPUT_LIMIT_BYTES
from course_lib.history import Event as HistoryEvent


@pytest.mark.parametrize(("n", "word"), [
    (1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (10, "10th"), (11, "11th"), (12, "12th"),
    (13, "13th"), (20, "20th"), (21, "21st"), (22, "22nd"), (23, "23rd"), (101, "101st"),
    (111, "111th"), (112, "112th"), (113, "113th")])
def test_ordinal(n, word):
    assert ordinal(n) == word


# ----- every fault kind gets a sentence ---------------------------------------------------------


SENTENCES = {
    CrashClient("consumer.commit", "before", 2):
        "your process crashed during the 2nd call of consumer.commit, before it took effect",
    CrashClient("producer.flush", "after", 1):
        "your process crashed during the 1st call of producer.flush, after it took effect but "
        "before it returned to your code",
    FailProcessing(3):
        "the 3rd call of process(msg) raised ProcessingError (a transient failure)",
    DropMessages("fetch", "request", count=2, skip=1): "the network lost fetch request #2, #3",
    DelayMessages(300, "fetch", "response"): "the network delayed fetch response #1 by 300 ms",
    DuplicateMessages("produce", "request", skip=4):
        "the network delivered produce request #5 twice",
    Isolate(2, at_ms=100, until_ms=900):
        "broker 2 was cut off from the other brokers from t=100ms to t=900ms (it stays up and "
        "producers still reach it; its followers, or it as a follower, fall out of the ISR)",
    KillBroker(1, at_ms=1_200): "broker 1 crashed at t=1200ms",
    KillBroker(0, on="ack"): "broker 0 crashed",
    RestartBroker(1, at_ms=2_000): "broker 1 started again at t=2000ms",
}


@pytest.mark.parametrize("fault", list(SENTENCES), ids=repr)
def test_each_fault_reads_as_a_sentence(fault):
    assert describe_fault(fault) == SENTENCES[fault]


def test_no_fault_kind_is_left_as_its_repr():
    assert {type(fault) for fault in SENTENCES} == set(FAULT_TYPES.values())


def test_a_crash_sentence_can_say_killed_and_drop_your_code():
    assert explanation.crash_sentence(
        "after", "the 1st call of producer.flush", verb="was killed",
        returned="before it returned") == (
        "your process was killed during the 1st call of producer.flush, after it took effect "
        "but before it returned")


# ----- abort headlines -------------------------------------------------------------------------


RESTARTING = AbortWords("f()", calls="f() made too many calls.", instead="return from the function")
ONE_RUN = AbortWords("Sender", calls="Sender made too many calls.", peer="the grader",
                     crash=False, per_run="", memory=False)


def test_every_abort_kind_has_a_headline():
    for kind in ABORTS:
        assert abort_headline(kind, RESTARTING, "detail", 2.5).startswith("f()")
        assert abort_headline(kind, ONE_RUN, "detail", 2.5).startswith("Sender")


def test_abort_headlines_of_an_app_that_restarts_count_a_crash():
    assert abort_headline("hang", RESTARTING, "", 2.5) == (
        "f() did not finish within 2.5 s (an infinite loop? a blocking call?). The grader "
        "stopped it; that counts as a crash, and the check fails.")
    assert abort_headline("calls", RESTARTING, "", 2.5) == "f() made too many calls."
    assert abort_headline("exit", RESTARTING, "exit code 3", 2.5) == (
        "f() ended its own process (exit code 3). The grader counts that as a crash, and the "
        "check fails: return from the function instead.")
    assert abort_headline("flood", RESTARTING, "", 2.5) == (
        f"f() printed more than {OUTPUT_LIMIT_BYTES} characters in one run. The grader "
        f"stopped it; that counts as a crash, and the check fails.")
    assert abort_headline("killed", RESTARTING, "SIGKILL", 2.5) == (
        f"f()'s process was killed by SIGKILL (more than {MEMORY_LIMIT_MB} MB of memory?). "
        f"That counts as a crash; the check fails.")
    assert abort_headline("broken", RESTARTING, "EOF", 2.5) == (
        "f() broke its connection to the simulated cluster (EOF); the check fails.")


def test_abort_headlines_of_a_single_run_only_fail_the_check():
    assert abort_headline("hang", ONE_RUN, "", 3) == (
        "Sender did not finish within 3 s (an infinite loop? a blocking call?). The grader "
        "stopped it, and the check fails.")
    assert abort_headline("exit", ONE_RUN, "exit code 0", 3) == (
        "Sender ended its own process (exit code 0). The check fails: return or raise "
        "instead.")
    assert abort_headline("flood", ONE_RUN, "", 3) == (
        f"Sender printed more than {OUTPUT_LIMIT_BYTES} characters. The grader stopped it, "
        f"and the check fails.")
    assert abort_headline("killed", ONE_RUN, "SIGSEGV", 3) == (
        "Sender's process was killed by SIGSEGV. The check fails.")
    assert abort_headline("broken", ONE_RUN, "EOF", 3) == (
        "Sender broke its connection to the grader (EOF); the check fails.")


# ----- the timeline excerpt and the frame ------------------------------------------------------


def test_a_crash_in_the_timeline_names_the_grader_or_the_plan():
    assert explanation.grader_crash({"reason": "grader", "point": "a signal"}, describe_fault,
                                    explanation.CRASHED) == "CRASH: a signal"
    plan_crash = {"point": "consumer.poll", "phase": "before", "nth": 1}
    assert explanation.grader_crash(plan_crash, describe_fault, explanation.CRASHED) == (
        "CRASH: during the 1st call of consumer.poll, before it took effect")


def test_calls_are_listed_after_the_event_they_followed():
    events = [(1, 0, False, "e1"), (3, 0, True, "e3")]
    merged = explanation.merge(events, [(1, 10, "app: poll()"), (0, 0, "app: subscribe()")])
    assert [entry[3] for entry in merged] == [
        "  t=0ms  app: subscribe()", "e1", "  t=10ms  app: poll()", "e3"]


def test_the_window_is_around_the_first_fault_or_at_the_end():
    entries = list(range(20))
    assert explanation.window(entries, 10, 2, 3) == [8, 9, 10, 11, 12, 13]
    assert explanation.window(entries, 1, 2, 3) == [0, 1, 2, 3, 4]
    assert explanation.window(entries, None, 2, 3) == [15, 16, 17, 18, 19]
    assert explanation.window(entries, 10, 2, 3, tail=True) == [15, 16, 17, 18, 19]
    assert explanation.window(entries[:3], None, 2, 3) == [0, 1, 2]


def test_the_causes_heading_says_one_or_a_minimal_set():
    assert explanation.causes([]) == []
    assert explanation.causes(["a"]) == ["", "The fault that caused it:", "  - a"]
    assert explanation.causes(["a", "b"]) == [
        "", "The faults that caused it (a minimal set):", "  - a", "  - b"]


def test_the_replay_lines_end_every_message():
    assert explanation.replay_lines("FaultPlan(())", 4, "tok") == [
        "Minimal fault plan: FaultPlan(()) (seed 4)",
        'Replay it and draw the timeline: course_lib.replay("tok")']
    assert explanation.replay_lines(None, 4, "tok", draw=False) == [
        'Replay it: course_lib.replay("tok")']


def test_a_whole_message_and_its_story_only_when_not_a_hang():
    told = []

    def story():
        told.append(True)
        return ["  t=0ms  app: poll()"]

    options = dict(faults=["broker 1 crashed"], why=["Because."], errors=[], story=story,
                   plan="P", seed=0, token="tok")
    text = explanation.failure_message("x", "at-least-once", "it broke.", kind="lost",
                                       **options)
    assert text == "\n".join([
        "check_x failed (at-least-once): it broke.", "", "The fault that caused it:",
        "  - broker 1 crashed", "", "Because.", "", "What your code did just before:",
        "  t=0ms  app: poll()", "", "Minimal fault plan: P (seed 0)",
        'Replay it and draw the timeline: course_lib.replay("tok")'])
    hang = explanation.failure_message("x", "g", "stuck.", kind="hang", **options)
    assert "What your code did" not in hang
    assert told == [True]


class Event:
    def __init__(self, kind: str) -> None:
        self.kind = kind


def test_a_call_the_process_died_in_is_listed_before_its_crash():
    events = [Event("poll"), Event("crash"), Event("leave_group")]
    assert explanation.logged_at(events) == 3
    assert explanation.logged_at(events, died_in_it=True) == 1
    assert explanation.logged_at(events[:1], died_in_it=True) == 1  # no crash: at the end


def test_call_arguments_read_short():
    from course_lib import Message, TopicPartition

    message = Message(topic="events", partition=0, offset=3, key=None, value=b"m-003",
                      timestamp=(1, 0))
    assert explanation.arg_text(message) == "m-003 (offset 3)"
    assert explanation.arg_text(TopicPartition("events", 0, 4)) == (
        "TopicPartition('events', 0, 4)")
    assert explanation.arg_text(list(range(6))) == "[0, 1, 2, 3, …]"
    assert explanation.arg_text("x" * 50) == repr("x" * 50)[:39] + "…"
    assert explanation.message_identity(message) == ("events", 0, 3, b"m-003")


def test_a_call_entry_is_stamped_with_the_event_it_follows():
    events = [HistoryEvent(100, "crash", "app", {}), HistoryEvent(250, "poll", "consumer", {})]
    assert explanation.call_entry(events, "app-1", "poll() -> None") == (
        2, 250, "app-1: poll() -> None")
    assert explanation.call_entry(events, "app-1", "commit()", died_in_it=True)[:2] == (0, 0)
