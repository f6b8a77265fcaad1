"""The simulated Consumer behaves like confluent-kafka's: positions, commits, resets.

Messages are written with a real Producer first; every assertion reads what a
real Consumer returns, the group coordinator's committed offsets, the virtual
clock or the History.
"""

from __future__ import annotations

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, OFFSET_INVALID, TopicPartition

from course_lib.cluster import Cluster
from course_lib.errors import KafkaError, KafkaException
from course_lib.faults import Crash, CrashClient, DropMessages, FaultPlan, Isolate

TOPIC = "events"
GROUP = "g"


def make_cluster(seed: int, plan: FaultPlan | None = None, **topic) -> Cluster:
    cluster = Cluster(brokers=3, seed=seed, faults=plan)
    cluster.create_topic(TOPIC, {"replication.factor": 3, "min.insync.replicas": 2, **topic})
    return cluster


def publish(cluster: Cluster, values, partition: int = -1) -> None:
    """Write ``values`` durably (acks=all) before the consumer side starts."""
    producer = cluster.producer({})
    for value in values:
        producer.produce(TOPIC, value, partition=partition)
    assert producer.flush() == 0


def consumer(cluster: Cluster, **config):
    settings = {"group.id": GROUP, "auto.offset.reset": "earliest",
                "enable.auto.commit": False, **config}
    made = cluster.consumer(settings)
    made.subscribe([TOPIC])
    return made


def drain(made, timeout: float = 1.0) -> list:
    """Poll until poll() returns None; the values, in order."""
    values = []
    while (msg := made.poll(timeout)) is not None:
        values.append(msg.value())
    return values


def committed(cluster: Cluster, partition: int = 0) -> int:
    """The group's committed offset as a fresh, independent consumer sees it."""
    reader = cluster.consumer({"group.id": GROUP, "enable.auto.commit": False})
    return reader.committed([TopicPartition(TOPIC, partition)])[0].offset


def tp(offset: int = OFFSET_INVALID, partition: int = 0) -> TopicPartition:
    return TopicPartition(TOPIC, partition, offset)


def kinds(cluster: Cluster, kind: str) -> list[dict]:
    return [e.data for e in cluster.history.of_kind(kind)]


@pytest.fixture
def filled(cluster):
    publish(cluster, ["a", "b", "c"])
    return cluster


# ----- polling ------------------------------------------------------------------------


def test_poll_returns_messages_in_order_then_none(filled):
    made = consumer(filled)
    messages = [made.poll(1.0) for _ in range(3)]
    assert [m.value() for m in messages] == [b"a", b"b", b"c"]
    assert [m.offset() for m in messages] == [0, 1, 2]
    assert all(m.error() is None and m.topic() == TOPIC for m in messages)
    assert made.poll(1.0) is None


def test_poll_at_the_end_waits_exactly_its_virtual_timeout(filled):
    made = consumer(filled)
    assert len(drain(made, 0.2)) == 3
    start_ms = filled.world.now_ms
    assert made.poll(2.5) is None
    assert filled.world.now_ms == start_ms + 2_500


def test_poll_returns_a_message_that_arrives_during_its_timeout(cluster):
    made = consumer(cluster)
    assert made.poll(0.5) is None
    producer = cluster.producer({})
    cluster.world.call_later(1_000, producer.produce, TOPIC, "late")
    start_ms = cluster.world.now_ms
    msg = made.poll(10)
    assert msg.value() == b"late"
    assert start_ms + 1_000 < cluster.world.now_ms < start_ms + 10_000


def test_consume_returns_up_to_num_messages(filled):
    made = consumer(filled)
    assert made.poll(1.0).value() == b"a"  # fetched: the rest is buffered
    first = made.consume(num_messages=1, timeout=1.0)
    assert [m.value() for m in first] == [b"b"]
    rest = made.consume(num_messages=10, timeout=1.0)
    assert [m.value() for m in rest] == [b"c"]
    assert made.consume(num_messages=5, timeout=0.5) == []


def test_a_closed_consumer_refuses_poll_and_commit(filled):
    made = consumer(filled)
    made.close()
    with pytest.raises(RuntimeError, match="Consumer closed"):
        made.poll(1.0)
    with pytest.raises(RuntimeError, match="Consumer closed"):
        made.commit(offsets=[tp(1)])
    with pytest.raises(RuntimeError, match="Consumer closed"):
        made.position([tp()])
    made.close()  # closing twice is harmless, as in confluent-kafka


def test_consumer_never_reads_above_the_high_watermark(seed):
    """acks=1 with the followers cut off: the leader appends, but the HW stays put."""
    cluster = make_cluster(seed, FaultPlan((Isolate(0, at_ms=0),)),
                           **{"min.insync.replicas": 1})
    producer = cluster.producer({"acks": "1"})
    producer.produce(TOPIC, "unreplicated")
    assert producer.flush() == 0
    log = cluster.brokers[0].logs[(TOPIC, 0)]
    assert (log.log_end_offset, log.high_watermark) == (1, 0)
    made = consumer(cluster)
    assert made.poll(5.0) is None  # the record exists, but is not committed yet
    assert log.high_watermark == 0
    msg = made.poll(60)  # the ISR shrinks to the leader after replica.lag.time.max.ms
    assert msg.value() == b"unreplicated"
    assert msg.offset() < log.high_watermark == 1
    assert kinds(cluster, "isr")[-1]["isr"] == [0]
    assert kinds(cluster, "isr")[-1]["reason"].endswith("lagged > 30000 ms")


# ----- where a consumer starts -----------------------------------------------------------


def test_auto_offset_reset_earliest_reads_from_the_start(filled):
    assert drain(consumer(filled)) == [b"a", b"b", b"c"]


def test_auto_offset_reset_latest_sees_only_new_messages(filled):
    made = consumer(filled, **{"auto.offset.reset": "latest"})
    assert made.position([tp()])[0].offset == 3  # the high watermark
    assert made.poll(1.0) is None
    publish(filled, ["d"])
    msg = made.poll(1.0)
    assert (msg.value(), msg.offset()) == (b"d", 3)


def test_default_auto_offset_reset_is_latest(filled):
    made = filled.consumer({"group.id": GROUP})
    made.subscribe([TOPIC])
    assert made.poll(1.0) is None


def test_restarted_consumer_resumes_at_the_committed_offset(filled):
    first = consumer(filled)
    first.poll(1.0)
    second_msg = first.poll(1.0)
    first.commit(message=second_msg, asynchronous=False)
    first.poll(1.0)  # read, never committed
    first.close()
    again = consumer(filled)
    msg = again.poll(1.0)
    assert (msg.value(), msg.offset()) == (b"c", 2)


def test_restart_after_a_crash_resumes_at_the_committed_offset(seed):
    cluster = make_cluster(seed, FaultPlan((CrashClient("consumer.poll", "before", 3),)))
    publish(cluster, ["a", "b", "c"])
    made = consumer(cluster)
    made.commit(message=made.poll(1.0), asynchronous=False)
    made.poll(1.0)
    with pytest.raises(Crash):
        made.poll(1.0)
    with pytest.raises(Crash):
        made.position([tp()])
    assert drain(consumer(cluster)) == [b"b", b"c"]


def test_assign_with_explicit_offsets(filled):
    made = filled.consumer({"group.id": GROUP, "enable.auto.commit": False})
    made.assign([tp(2)])
    assert [t.partition for t in made.assignment()] == [0]
    assert drain(made) == [b"c"]
    made.assign([tp(OFFSET_BEGINNING)])
    assert drain(made) == [b"a", b"b", b"c"]
    made.assign([tp(OFFSET_END)])
    assert made.poll(0.5) is None


def test_assign_without_offset_uses_the_committed_one(filled):
    made = filled.consumer({"group.id": GROUP, "enable.auto.commit": False,
                            "auto.offset.reset": "earliest"})
    made.assign([tp()])
    made.commit(offsets=[tp(2)], asynchronous=False)
    other = filled.consumer({"group.id": GROUP, "enable.auto.commit": False})
    other.assign([tp()])
    assert drain(other) == [b"c"]


def test_seek_moves_the_position_and_rereads(filled):
    made = consumer(filled)
    assert drain(made) == [b"a", b"b", b"c"]
    made.seek(tp(1))
    assert made.position([tp()])[0].offset == 1
    assert drain(made) == [b"b", b"c"]
    made.seek(tp(OFFSET_BEGINNING))
    assert made.poll(1.0).value() == b"a"


def test_seek_on_an_unassigned_partition_is_refused(filled):
    made = consumer(filled)
    with pytest.raises(KafkaException) as caught:
        made.seek(tp(0, partition=7))
    assert caught.value.args[0].code() == KafkaError._STATE


# ----- committing -----------------------------------------------------------------------


def test_commit_message_stores_its_offset_plus_one_without_moving_position(filled):
    made = consumer(filled)
    first = made.poll(1.0)
    made.poll(1.0)
    result = made.commit(message=first, asynchronous=False)
    assert [(t.topic, t.partition, t.offset) for t in result] == [(TOPIC, 0, 1)]
    assert committed(filled) == 1
    assert made.position([tp()])[0].offset == 2
    assert made.poll(1.0).value() == b"c"


def test_commit_offsets_stores_exactly_the_given_offset(filled):
    made = consumer(filled)
    drain(made)
    made.commit(offsets=[tp(1)], asynchronous=False)
    assert committed(filled) == 1
    assert made.committed([tp()])[0].offset == 1
    assert made.position([tp()])[0].offset == 3


def test_commit_without_arguments_commits_the_positions(filled):
    made = consumer(filled)
    made.poll(1.0)
    made.poll(1.0)
    made.commit(asynchronous=False)
    assert committed(filled) == 2


def test_sync_commit_with_nothing_consumed_raises_no_offset(filled):
    made = consumer(filled)
    with pytest.raises(KafkaException) as caught:
        made.commit(asynchronous=False)
    assert caught.value.args[0].code() == KafkaError._NO_OFFSET
    assert made.commit() is None  # asynchronously: no exception, as librdkafka does
    assert kinds(filled, "commit") == []


def test_committed_without_any_commit_is_offset_invalid(filled):
    made = consumer(filled)
    assert made.committed([tp()]) == [tp(OFFSET_INVALID)]
    assert made.committed([tp()])[0].error is None


def test_commit_is_asynchronous_by_default(filled):
    made = consumer(filled)
    msg = made.poll(1.0)
    assert made.commit(message=msg) is None
    assert committed(filled) == OFFSET_INVALID  # still on its way to the coordinator
    filled.world.advance(10)
    assert committed(filled) == 1


def _crash_after_commit(seed: int, asynchronous: bool) -> Cluster:
    cluster = make_cluster(seed, FaultPlan((CrashClient("consumer.commit", "after", 1),)))
    publish(cluster, ["a", "b", "c"])
    made = consumer(cluster)
    msg = made.poll(1.0)
    with pytest.raises(Crash):
        made.commit(message=msg, asynchronous=asynchronous)
    cluster.world.advance(100)
    return cluster


def test_async_commit_in_flight_when_the_process_dies_is_lost(seed):
    cluster = _crash_after_commit(seed, asynchronous=True)
    assert committed(cluster) == OFFSET_INVALID
    assert kinds(cluster, "commit") == []
    assert drain(consumer(cluster)) == [b"a", b"b", b"c"]


def test_sync_commit_has_taken_effect_before_it_returns(seed):
    cluster = _crash_after_commit(seed, asynchronous=False)
    assert committed(cluster) == 1
    assert drain(consumer(cluster)) == [b"b", b"c"]


def test_close_with_auto_commit_commits_what_poll_returned(filled):
    made = consumer(filled, **{"enable.auto.commit": True})
    made.poll(1.0)
    made.poll(1.0)
    assert kinds(filled, "commit") == []
    made.close()
    assert committed(filled) == 2


def test_without_auto_commit_neither_poll_nor_close_commits(filled):
    made = consumer(filled, **{"auto.commit.interval.ms": 10})
    drain(made)
    filled.world.advance(100)
    made.poll(0.5)
    made.close()
    assert kinds(filled, "commit") == [] and kinds(filled, "auto_commit") == []
    assert committed(filled) == OFFSET_INVALID


def test_auto_commit_commits_earlier_polls_during_a_later_poll(filled):
    start_ms = filled.world.now_ms
    made = consumer(filled, **{"enable.auto.commit": True, "auto.commit.interval.ms": 1_000})
    assert made.poll(1.0).value() == b"a"
    assert made.poll(1.0).value() == b"b"
    filled.world.advance(500)
    made.poll(0)  # "c", but the interval has not passed: no commit yet
    assert kinds(filled, "auto_commit") == []
    filled.world.run(until_ms=start_ms + 1_000)
    assert kinds(filled, "commit") == []  # time alone does not commit
    assert made.poll(0.1) is None  # the first poll after the interval commits
    auto, = kinds(filled, "auto_commit")
    assert auto["offsets"] == [[TOPIC, 0, 3]]
    filled.world.advance(10)
    assert committed(filled) == 3
    made.poll(0.5)  # within the next interval: no second commit
    assert len(kinds(filled, "auto_commit")) == 1
    filled.world.advance(1_000)
    made.poll(0)
    assert len(kinds(filled, "auto_commit")) == 2


def test_auto_commit_does_not_include_the_message_the_poll_returns(filled):
    made = consumer(filled, **{"enable.auto.commit": True, "auto.commit.interval.ms": 1_000})
    made.poll(1.0)
    filled.world.advance(1_000)
    assert made.poll(0).value() == b"b"
    auto, = kinds(filled, "auto_commit")
    assert auto["offsets"] == [[TOPIC, 0, 1]]  # only "a", which an earlier poll returned


# ----- resets and groups ---------------------------------------------------------------


def test_unclean_election_below_the_position_resets_the_offset(seed):
    cluster = make_cluster(seed, **{"min.insync.replicas": 1,
                                    "unclean.leader.election.enable": True})
    cluster.kill_broker(2)  # stale: it will miss every write
    publish(cluster, ["a", "b", "c"])
    made = consumer(cluster)
    assert drain(made) == [b"a", b"b", b"c"]
    cluster.kill_broker(0)
    cluster.kill_broker(1)
    cluster.restart_broker(2)  # the only live replica leads, uncleanly, with an empty log
    assert kinds(cluster, "election")[-1]["unclean"] is True
    publish(cluster, ["x"])
    msg = made.poll(5.0)
    reset, = kinds(cluster, "offset_reset")
    assert (reset["old"], reset["new"]) == (3, 0)
    assert (msg.value(), msg.offset()) == (b"x", 0)


def test_two_consumers_in_a_group_split_the_partitions(seed):
    cluster = make_cluster(seed, **{"num.partitions": 4})
    for partition in range(4):
        publish(cluster, [f"p{partition}"], partition=partition)
    first, second = consumer(cluster), consumer(cluster)
    first.poll(0)  # learns the new generation
    mine = {(t.topic, t.partition) for t in first.assignment()}
    theirs = {(t.topic, t.partition) for t in second.assignment()}
    assert len(mine) == len(theirs) == 2
    assert mine | theirs == {(TOPIC, p) for p in range(4)}
    values = drain(first) + drain(second)
    assert sorted(values) == [b"p0", b"p1", b"p2", b"p3"]


def test_consumers_sharing_a_client_id_are_still_two_members(seed):
    cluster = make_cluster(seed, **{"num.partitions": 2})
    first = consumer(cluster, **{"client.id": "worker"})
    second = consumer(cluster, **{"client.id": "worker"})
    first.poll(0)
    assert len(cluster.coordinator.group(GROUP).members) == 2
    assert {t.partition for t in first.assignment()}.isdisjoint(
        {t.partition for t in second.assignment()})


def test_a_member_that_leaves_hands_its_partitions_over(seed):
    cluster = make_cluster(seed, **{"num.partitions": 2})
    publish(cluster, ["p0"], partition=0)
    publish(cluster, ["p1"], partition=1)
    first, second = consumer(cluster), consumer(cluster)
    second.close()
    assert sorted(drain(first)) == [b"p0", b"p1"]


# ----- fetches that go astray -------------------------------------------------------------


def test_consumer_follows_a_new_leader_without_waiting_for_a_timeout(filled):
    made = consumer(filled)
    assert drain(made, 0.5) == [b"a", b"b", b"c"]  # a fetch is now parked at the leader
    filled.kill_broker(filled.leader(TOPIC))
    publish(filled, ["d"])
    start_ms = filled.world.now_ms
    msg = made.poll(10)
    assert msg.value() == b"d"
    assert filled.world.now_ms - start_ms < 1_000  # not request.timeout.ms (30 s)


def test_a_lost_fetch_is_sent_again_within_one_poll(seed):
    plan = FaultPlan((DropMessages(api="fetch", kind="request", src="consumer-1"),))
    cluster = make_cluster(seed, plan)
    publish(cluster, ["a"])
    made = cluster.consumer({"group.id": GROUP, "auto.offset.reset": "earliest"})
    assert made.name == "consumer-1"
    made.subscribe([TOPIC])
    msg = made.poll(60)  # the first fetch vanishes; its timeout re-sends it
    assert msg.value() == b"a"
    assert cluster.world.now_ms < 35_000
