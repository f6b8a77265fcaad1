"""The checker reads a History and names each anomaly precisely.

Most tests write a small History by hand, event by event, so each anomaly is
checked against a case whose answer is known; one plays a real scenario end to
end and checks the report against the History it came from.
"""

from __future__ import annotations

from collections import Counter

import pytest

from course_lib import scenarios
from course_lib.checker import GUARANTEES, Report, check, explain
from course_lib.sim import World

TOPIC = "events"


class Story:
    """A History written by hand: sends, acks, nacks, processing, final reads."""

    def __init__(self) -> None:
        self.world = World()
        self.history = self.world.history

    def later(self, ms: int = 1) -> Story:
        self.world.advance(ms)
        return self

    def send(self, *values: bytes, actor: str = "producer-1", partition: int = 0) -> Story:
        for value in values:
            self.history.record("send", actor, topic=TOPIC, partition=partition, key=None,
                                value=value)
        return self

    def ack(self, value: bytes, offset: int, partition: int = 0, topic: str = TOPIC) -> Story:
        self.history.record("ack", "producer-1", topic=topic, partition=partition,
                            offset=offset, value=value)
        return self

    def nack(self, value: bytes, error: str = "REQUEST_TIMED_OUT",
             indefinite: bool = True) -> Story:
        self.history.record("nack", "producer-1", topic=TOPIC, partition=0, value=value,
                            error=error, indefinite=indefinite)
        return self

    def process(self, *values: bytes, partition: int = 0) -> Story:
        for offset, value in enumerate(values):
            self.history.record("process", "consumer-app-1", topic=TOPIC, partition=partition,
                                offset=offset, value=value)
        return self

    def final_read(self, values: list, partition: int = 0) -> Story:
        self.history.record("final_read", "checker", topic=TOPIC, partition=partition,
                            values=list(values))
        return self

    def check(self, delivered_by: str = "process") -> Report:
        return check(self.history, delivered_by=delivered_by)


def acked_story(*values: bytes) -> Story:
    story = Story().send(*values)
    for offset, value in enumerate(values):
        story.ack(value, offset)
    return story


# ----- the clean case and the counts ------------------------------------------------------


def test_a_clean_run_is_exactly_once():
    report = acked_story(b"a", b"b", b"c").process(b"a", b"b", b"c").check()
    assert (report.sent, report.acked, report.delivered) == (3, 3, 3)
    assert report.lost == report.duplicated == report.reordered == []
    assert report.unacked_writes == report.inconsistent_offsets == []
    assert report.guarantee == "exactly-once"
    assert report.explanations == {}


def test_an_empty_history_is_vacuously_exactly_once():
    report = Story().check()
    assert (report.sent, report.delivered, report.guarantee) == (0, 0, "exactly-once")


def test_delivered_by_must_be_process_or_log():
    with pytest.raises(ValueError, match="delivered_by"):
        Story().check("consumer")


# ----- lost ------------------------------------------------------------------------------------


def test_a_value_never_processed_is_lost():
    report = Story().send(b"a", b"b", b"c").ack(b"a", 0).process(b"a", b"c").check()
    assert report.lost == [b"b"]
    assert report.lost_acked == []  # b was never acknowledged
    assert report.guarantee == "at-most-once"


def test_a_lost_acknowledged_value_is_lost_acked():
    report = acked_story(b"a", b"b", b"c").process(b"c").check()
    assert report.lost == [b"a", b"b"]
    assert report.lost_acked == [b"a", b"b"]


def test_lost_values_are_listed_in_send_order():
    report = Story().send(b"z", b"y", b"x").check()
    assert report.lost == [b"z", b"y", b"x"]


# ----- duplicate -----------------------------------------------------------------------------


def test_a_value_processed_twice_is_duplicated():
    report = acked_story(b"a", b"b").process(b"a", b"b", b"b").check()
    assert report.duplicated == [b"b"]
    assert report.delivered == 2
    assert report.lost == []
    assert report.guarantee == "at-least-once"


def test_a_redelivered_value_is_not_also_reordered():
    report = acked_story(b"a", b"b", b"c").process(b"a", b"b", b"a", b"c").check()
    assert report.duplicated == [b"a"]
    assert report.reordered == []


# ----- the guarantee lattice -----------------------------------------------------------------


@pytest.mark.parametrize(("processed", "guarantee"), [
    ((b"a", b"b"), "exactly-once"),
    ((b"a", b"b", b"b"), "at-least-once"),
    ((b"a",), "at-most-once"),
    ((b"a", b"a"), "none"),
])
def test_guarantee_follows_loss_and_duplication(processed, guarantee):
    report = acked_story(b"a", b"b").process(*processed).check()
    assert report.guarantee == guarantee
    assert bool(report.lost) == (guarantee in ("at-most-once", "none"))
    assert bool(report.duplicated) == (guarantee in ("at-least-once", "none"))


def test_the_guarantees_are_named_strongest_first():
    assert GUARANTEES == ("exactly-once", "at-least-once", "at-most-once", "none")


def test_reordering_and_unacked_writes_do_not_weaken_the_guarantee():
    story = Story().send(b"a", b"b").nack(b"a").ack(b"b", 1).process(b"b", b"a")
    report = story.check()
    assert report.reordered and report.unacked_writes
    assert report.guarantee == "exactly-once"


# ----- reordered ---------------------------------------------------------------------------


@pytest.mark.parametrize(("order", "count"), [
    ([1, 2, 3, 4, 5], 0),
    ([5, 1, 2, 3, 4], 1),
    ([2, 3, 4, 5, 1], 1),
    ([1, 3, 2, 4, 5], 1),
    ([2, 1, 4, 3, 6, 5], 3),
    ([5, 4, 3, 2, 1], 4),
    ([3, 4, 5, 1, 2], 2),
])
def test_reordered_counts_values_outside_the_longest_in_order_run(order, count):
    values = [f"m{i}".encode() for i in range(1, 7)]
    sent = values[:max(order)]
    report = acked_story(*sent).process(*(values[i - 1] for i in order)).check()
    assert len(report.reordered) == count
    kept = [values[i - 1] for i in order if values[i - 1] not in report.reordered]
    assert kept == sorted(kept, key=values.index)  # what remains is in send order


def test_the_value_that_jumped_the_queue_is_the_one_named():
    report = acked_story(b"a", b"b", b"c", b"d").process(b"d", b"a", b"b", b"c").check()
    assert report.reordered == [b"d"]
    assert b"d" in report.explanations


def test_order_is_per_partition():
    story = Story().send(b"a0", partition=0).send(b"b1", partition=1)
    story.send(b"c0", partition=0).send(b"d1", partition=1)
    story.process(b"b1", b"d1", partition=1).process(b"a0", b"c0", partition=0)
    assert story.check().reordered == []


def test_order_is_per_producer():
    """Two producers writing side by side promise nothing about each other's order."""
    story = Story()
    story.send(b"a1", actor="producer-1").send(b"b1", actor="producer-2")
    story.send(b"a2", actor="producer-1").send(b"b2", actor="producer-2")
    assert story.process(b"b1", b"b2", b"a1", b"a2").check().reordered == []
    story = Story()
    story.send(b"a1", actor="producer-1").send(b"b1", actor="producer-2")
    story.send(b"a2", actor="producer-1")
    assert story.process(b"b1", b"a2", b"a1").check().reordered == [b"a2"]


# ----- unacked writes --------------------------------------------------------------------------


def test_a_nacked_value_in_the_log_is_an_unacked_write():
    story = Story().send(b"a", b"b").ack(b"a", 0).nack(b"b").final_read([b"a", b"b"])
    report = story.check("log")
    assert report.unacked_writes == [b"b"]
    assert report.lost == []
    assert report.errors == {"REQUEST_TIMED_OUT": 1}


def test_a_nacked_value_missing_from_the_log_is_just_lost():
    story = Story().send(b"a", b"b").ack(b"a", 0).nack(b"b", "NOT_ENOUGH_REPLICAS", False)
    report = story.final_read([b"a"]).check("log")
    assert report.unacked_writes == []
    assert report.lost == [b"b"] and report.lost_acked == []


def test_a_value_nacked_then_acked_on_a_resend_is_not_an_unacked_write():
    story = Story().send(b"a").nack(b"a").send(b"a").ack(b"a", 0).final_read([b"a"])
    report = story.check("log")
    assert report.unacked_writes == []
    assert report.sent == 1


def test_a_value_whose_producer_died_waiting_but_was_written_is_an_unacked_write():
    story = Story().send(b"a", b"b").ack(b"a", 0)
    story.history.record("lost_buffer", "producer-1", values=[b"b"])
    assert story.final_read([b"a", b"b"]).check("log").unacked_writes == [b"b"]


def test_an_unanswered_value_of_a_live_producer_is_not_an_unacked_write():
    story = Story().send(b"a", b"b").ack(b"a", 0).final_read([b"a", b"b"])
    assert story.check("log").unacked_writes == []  # its report may simply not be served yet


def test_without_a_final_read_processing_shows_what_was_written():
    story = Story().send(b"a", b"b").ack(b"a", 0).nack(b"b").process(b"a", b"b")
    assert story.check().unacked_writes == [b"b"]


def test_an_empty_final_read_means_an_empty_log():
    story = Story().send(b"a").nack(b"a").process(b"a").final_read([])
    assert story.check().unacked_writes == []  # processed earlier, but gone from the log


# ----- inconsistent offsets --------------------------------------------------------------------


def test_one_offset_acknowledged_for_two_values_is_inconsistent():
    story = acked_story(b"a", b"b").send(b"x").ack(b"x", 1)
    assert story.check().inconsistent_offsets == [(TOPIC, 0, 1)]


def test_the_same_value_acknowledged_twice_at_its_offset_is_consistent():
    story = acked_story(b"a").ack(b"a", 0)  # a deduplicated retry gets the first offset
    assert story.check().inconsistent_offsets == []


def test_offsets_are_compared_per_topic_and_partition():
    story = Story().send(b"a", b"b", b"c").ack(b"a", 0).ack(b"b", 0, partition=1)
    story.ack(b"c", 0, topic="other")
    assert story.check().inconsistent_offsets == []


def test_acks_without_an_offset_are_ignored():
    story = Story().send(b"a", b"b").ack(b"a", -1001).ack(b"b", -1001)  # acks=0
    assert story.check().inconsistent_offsets == []
    story = Story().send(b"a", b"b").ack(b"a", None).ack(b"b", None)  # as msg.offset() says
    assert story.check().inconsistent_offsets == []


# ----- delivered_by="log" ---------------------------------------------------------------------


def test_log_delivery_uses_the_last_final_read_of_each_partition():
    story = acked_story(b"a", b"b", b"c")
    story.final_read([b"a", b"b", b"c"]).later(10).final_read([b"a", b"b"])
    report = story.check("log")
    assert report.lost == report.lost_acked == [b"c"]
    assert report.delivered == 2


def test_log_delivery_reads_every_partition():
    story = Story().send(b"a", partition=0).send(b"b", partition=1)
    story.final_read([b"a"], partition=0).final_read([b"b"], partition=1)
    report = story.check("log")
    assert report.lost == [] and report.delivered == 2


def test_log_delivery_ignores_processing_and_vice_versa():
    story = acked_story(b"a", b"b").process(b"a").final_read([b"b", b"b"])
    by_log, by_process = story.check("log"), story.check("process")
    assert (by_log.lost, by_log.duplicated) == ([b"a"], [b"b"])
    assert (by_process.lost, by_process.duplicated) == ([b"b"], [])


# ----- explanations --------------------------------------------------------------------------


def test_explanations_name_the_value_and_the_faults():
    story = acked_story(b"a", b"b")
    story.later(5).history.record("crash", "consumer-app-1", point="process", phase="before",
                                  nth=2)
    story.history.record("fault", "nemesis", fault="CrashClient('process', 'before', 2)")
    report = story.process(b"a").check()
    lines = report.explanations[b"b"]
    assert any("send" in line and "value=b'b'" in line for line in lines)
    assert any("ack" in line and "offset=1" in line for line in lines)
    assert any(line.startswith("t=5ms consumer-app-1 crash") for line in lines)
    assert any("nemesis fault" in line for line in lines)
    assert not any("value=b'a'" in line for line in lines)
    assert set(report.explanations) == {b"b"}


def test_explain_finds_a_value_inside_a_list_of_values():
    story = Story().send(b"a")
    story.history.record("attempt", "producer-1", topic=TOPIC, partition=0, attempt=1,
                         broker=0, values=[b"a", b"z"], base_seq=0)
    lines = explain(story.history, b"a")
    assert len(lines) == 2 and "attempt" in lines[1] and "values" not in lines[1]


def test_summary_and_plain_data_carry_the_counts():
    report = acked_story(b"a", b"b").process(b"a", b"a").check()
    assert report.summary().endswith("-> none")
    assert "lost 1 (acked 1)" in report.summary()
    data = report.as_dict()
    assert (data["lost"], data["lost_acked"], data["duplicated"]) == (1, 1, 1)
    assert data["guarantee"] == "none"


# ----- a real run ---------------------------------------------------------------------------


def test_lost_ack_scenario_report_agrees_with_its_history():
    run = scenarios.run(4, "failing")
    history, report = run.history, run.report
    final = Counter(v for e in history.of_kind("final_read") for v in e.data["values"])
    sent = {e.data["value"] for e in history.of_kind("send")}
    assert sorted(report.duplicated) == sorted(v for v, n in final.items() if n > 1)
    assert report.duplicated and set(report.duplicated) <= sent
    assert report.lost == [] and report.guarantee == "at-least-once"
    assert report.sent == len(sent) and report.delivered == len(final)
    assert report.errors.get("REQUEST_TIMED_OUT", 0) >= 1
    for value in report.duplicated:
        lines = report.explanations[value]
        assert sum(" append:" in line for line in lines) == 2
        assert any(" retry:" in line for line in lines)
