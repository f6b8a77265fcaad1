"""course_lib.coordinator: group membership, generations, the range assignor, offset commits.

Membership is driven through real consumers (subscribe, close, a crashed
process) and through the coordinator's own join/leave; offset commits travel
over the network, from real consumers or, where a test needs a request no
well-behaved consumer sends (an unknown member, an old generation), from a
:class:`helpers.wire.Probe`.
"""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from helpers.wire import Probe

from course_lib.cluster import Cluster
from course_lib.errors import KafkaError, KafkaException
from course_lib.faults import DelayMessages, DropMessages, FaultPlan

GROUP = "g"


@pytest.fixture
def cluster(seed) -> Cluster:
    """Overrides conftest's: three brokers, ``events`` with 4 partitions, ``other`` with 2."""
    made = Cluster(brokers=3, seed=seed)
    made.create_topic("events", {"num.partitions": 4})
    made.create_topic("other", {"num.partitions": 2})
    return made


def assignment(cluster: Cluster) -> dict[str, list[tuple[str, int]]]:
    return cluster.coordinator.group(GROUP).assignment


def consumer(cluster: Cluster, name: str, topics=("events",), **config):
    made = cluster.consumer({"group.id": GROUP, "client.id": name,
                             "enable.auto.commit": False, "auto.offset.reset": "earliest",
                             **config})
    if topics:
        made.subscribe(list(topics))
    return made


def fill(cluster: Cluster, per_partition: int = 3) -> None:
    producer = cluster.producer({})
    for p in range(4):
        for i in range(per_partition):
            producer.produce("events", f"p{p}-{i}", partition=p)
    producer.flush(10)
    cluster.settle(500)


# ----- membership and the range assignor ------------------------------------------------------

def test_a_group_is_created_empty_on_first_use(cluster):
    group = cluster.coordinator.group(GROUP)
    assert (group.generation, group.members, group.assignment, group.committed) == (0, {}, {}, {})
    assert cluster.coordinator.group(GROUP) is group
    assert repr(cluster.coordinator) == "<Coordinator groups=['g']>"


def test_the_first_member_gets_every_partition_in_generation_one(cluster):
    only = consumer(cluster, "c1")
    assert cluster.coordinator.group(GROUP).generation == 1
    assert assignment(cluster) == {"c1": [("events", p) for p in range(4)]}
    assert [(tp.topic, tp.partition) for tp in only.assignment()] == [("events", p)
                                                                      for p in range(4)]
    rebalance = [e.data for e in cluster.history.of_kind("rebalance")]
    assert rebalance == [{"group": GROUP, "generation": 1, "reason": "c1 joined",
                          "assignment": {"c1": ["events-0", "events-1", "events-2",
                                                "events-3"]}}]


def test_each_join_is_a_new_generation_and_ranges_follow_member_order(cluster):
    consumer(cluster, "c2")
    consumer(cluster, "c1")
    group = cluster.coordinator.group(GROUP)
    assert group.generation == 2
    # Range assignor: members sorted by id, contiguous ranges, c1 first though it joined last.
    assert assignment(cluster) == {"c1": [("events", 0), ("events", 1)],
                                   "c2": [("events", 2), ("events", 3)]}
    consumer(cluster, "c3")
    assert group.generation == 3
    assert assignment(cluster) == {"c1": [("events", 0), ("events", 1)],
                                   "c2": [("events", 2)], "c3": [("events", 3)]}


def test_more_members_than_partitions_leaves_the_last_ones_idle(cluster):
    for name in ("a", "b", "c"):
        consumer(cluster, name, topics=("other",))
    assert assignment(cluster) == {"a": [("other", 0)], "b": [("other", 1)], "c": []}


def test_ranges_are_computed_per_topic(cluster):
    # Kafka's range assignor splits each topic on its own, so the first members get
    # the extra partition of every topic (its well-known imbalance).
    for name in ("a", "b", "c"):
        consumer(cluster, name, topics=("events", "other"))
    assert assignment(cluster) == {
        "a": [("events", 0), ("events", 1), ("other", 0)],
        "b": [("events", 2), ("other", 1)],
        "c": [("events", 3)],
    }


def test_only_members_subscribed_to_a_topic_share_it(cluster):
    consumer(cluster, "a", topics=("events",))
    consumer(cluster, "b", topics=("events", "other"))
    assert assignment(cluster) == {"a": [("events", 0), ("events", 1)],
                                   "b": [("events", 2), ("events", 3), ("other", 0),
                                         ("other", 1)]}


def test_leaving_rebalances_and_a_stranger_leaving_changes_nothing(cluster):
    first = consumer(cluster, "c1")
    consumer(cluster, "c2")
    first.close()
    group = cluster.coordinator.group(GROUP)
    assert group.generation == 3
    assert assignment(cluster) == {"c2": [("events", p) for p in range(4)]}
    assert [e.data["reason"] for e in cluster.history.of_kind("rebalance")][-1] == "c1 left"
    cluster.coordinator.leave(GROUP, "nobody")
    assert group.generation == 3


def test_a_crashed_consumer_leaves_its_group_at_once(cluster):
    crashed = consumer(cluster, "c1")
    survivor = consumer(cluster, "c2")
    crashed.process.die()
    assert sorted(cluster.coordinator.group(GROUP).members) == ["c2"]
    survivor.poll(0.1)  # the survivor learns the new generation on its next poll
    assert [tp.partition for tp in survivor.assignment()] == [0, 1, 2, 3]


def test_the_last_member_leaving_empties_the_assignment_but_keeps_offsets(cluster):
    only = consumer(cluster, "c1")
    only.commit(offsets=[TopicPartition("events", 0, 2)], asynchronous=False)
    only.close()
    group = cluster.coordinator.group(GROUP)
    assert (group.generation, group.members, group.assignment) == (2, {}, {})
    assert cluster.coordinator.committed(GROUP, ("events", 0)) == 2


# ----- offset commits -----------------------------------------------------------------------------

def test_a_commit_is_applied_and_recorded_when_it_reaches_the_coordinator(cluster):
    fill(cluster)
    reader = consumer(cluster, "c1")
    message = reader.poll(1.0)
    before = len(cluster.history)
    result = reader.commit(message=message, asynchronous=False)
    tp = (message.topic(), message.partition())
    assert cluster.coordinator.committed(GROUP, tp) == message.offset() + 1
    assert [(r.topic, r.partition, r.offset) for r in result] == [(*tp, message.offset() + 1)]
    commits = [e for e in cluster.history.events[before:] if e.kind == "commit"]
    assert [(e.actor, e.data) for e in commits] == [
        ("c1", {"group": GROUP, "topic": tp[0], "partition": tp[1],
                "offset": message.offset() + 1})]


def test_an_asynchronous_commit_takes_effect_only_when_it_arrives(cluster):
    reader = consumer(cluster, "c1")
    reader.commit(offsets=[TopicPartition("events", 1, 7)], asynchronous=True)
    assert cluster.coordinator.committed(GROUP, ("events", 1)) is None
    cluster.world.advance(10)
    assert cluster.coordinator.committed(GROUP, ("events", 1)) == 7


def test_a_commit_in_flight_when_its_process_dies_is_never_applied(cluster):
    reader = consumer(cluster, "c1")
    reader.commit(offsets=[TopicPartition("events", 1, 7)], asynchronous=True)
    reader.process.die()
    cluster.world.advance(100)
    assert cluster.coordinator.committed(GROUP, ("events", 1)) is None
    assert not list(cluster.history.of_kind("commit"))


def test_a_commit_whose_response_is_lost_was_applied_all_the_same(seed):
    cluster = Cluster(brokers=3, seed=seed,
                      faults=FaultPlan((DropMessages(api="offset_commit", kind="response"),)))
    cluster.create_topic("events", {"num.partitions": 4})
    reader = consumer(cluster, "c1")
    with pytest.raises(KafkaException) as caught:
        reader.commit(offsets=[TopicPartition("events", 0, 3)], asynchronous=False)
    assert caught.value.args[0].code() == KafkaError.REQUEST_TIMED_OUT
    assert cluster.coordinator.committed(GROUP, ("events", 0)) == 3


def test_a_restarted_consumer_resumes_at_the_committed_offset(cluster):
    fill(cluster)
    first = consumer(cluster, "c1")
    first.commit(offsets=[TopicPartition("events", 2, 2)], asynchronous=False)
    first.process.die()
    second = consumer(cluster, "c1-again")
    positions = {tp.partition: tp.offset for tp in second.position(second.assignment())}
    assert positions == {0: 0, 1: 0, 2: 2, 3: 0}


def test_a_commit_from_a_member_the_group_no_longer_has_is_unknown_member_id(cluster):
    zombie = consumer(cluster, "c1")
    cluster.coordinator.leave(GROUP, "c1")  # e.g. its session timed out
    with pytest.raises(KafkaException) as caught:
        zombie.commit(offsets=[TopicPartition("events", 0, 5)], asynchronous=False)
    assert caught.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
    assert cluster.coordinator.committed(GROUP, ("events", 0)) is None
    assert not list(cluster.history.of_kind("commit"))


def test_a_commit_from_an_old_generation_is_illegal_generation(cluster):
    fill(cluster)
    old = consumer(cluster, "c1")
    old.poll(1.0)
    consumer(cluster, "c2")  # generation 2; c1 has not polled since
    with pytest.raises(KafkaException) as caught:
        old.commit(asynchronous=False)
    assert caught.value.args[0].code() == KafkaError.ILLEGAL_GENERATION
    assert cluster.coordinator.group(GROUP).committed == {}
    # After its next poll c1 is in generation 2 and its commits count again.
    old.poll(0.1)
    old.commit(offsets=[TopicPartition("events", 0, 1)], asynchronous=False)
    assert cluster.coordinator.committed(GROUP, ("events", 0)) == 1


@pytest.mark.parametrize(("member", "generation", "error"), [
    ("c1", 1, None),
    ("c1", 0, KafkaError.ILLEGAL_GENERATION),
    ("c1", 2, KafkaError.ILLEGAL_GENERATION),
    ("stranger", 1, KafkaError.UNKNOWN_MEMBER_ID),
    # Outside group management: only accepted while the group has no members.
    ("stranger", -1, KafkaError.UNKNOWN_MEMBER_ID),
    ("c1", -1, KafkaError.UNKNOWN_MEMBER_ID),
])
def test_offset_commit_requests_are_checked_against_member_and_generation(
        cluster, member, generation, error):
    consumer(cluster, "c1")
    probe = Probe(cluster)
    reply = probe.wait(probe.commit(GROUP, member, generation, [("events", 3, 9)]))
    assert reply == {"error": error}
    committed = cluster.coordinator.committed(GROUP, ("events", 3))
    assert committed == (9 if error is None else None)


def test_a_manual_commit_to_an_empty_group_is_accepted_even_after_members_left(cluster):
    member = consumer(cluster, "c1")
    member.close()
    probe = Probe(cluster)
    reply = probe.wait(probe.commit(GROUP, "", -1, [("events", 0, 4)]))
    assert reply == {"error": None}
    assert cluster.coordinator.committed(GROUP, ("events", 0)) == 4


def test_a_manually_assigned_consumer_cannot_commit_into_a_group_with_members(cluster):
    fill(cluster)
    consumer(cluster, "member")
    manual = consumer(cluster, "m", topics=None)
    manual.assign([TopicPartition("events", 1, 0)])
    message = manual.poll(1.0)
    with pytest.raises(KafkaException) as caught:
        manual.commit(message=message, asynchronous=False)
    assert caught.value.args[0].code() == KafkaError.UNKNOWN_MEMBER_ID
    assert cluster.coordinator.committed(GROUP, ("events", 1)) is None


def test_a_manually_assigned_consumer_commits_with_generation_minus_one(cluster):
    fill(cluster)
    manual = consumer(cluster, "m", topics=None)
    manual.assign([TopicPartition("events", 1, 0)])
    message = manual.poll(1.0)
    manual.commit(message=message, asynchronous=False)
    assert cluster.coordinator.committed(GROUP, ("events", 1)) == message.offset() + 1
    group = cluster.coordinator.group(GROUP)
    assert (group.generation, group.members) == (0, {})  # it never joined
    commit_request = [e for e in cluster.history.of_kind("commit")][-1]
    assert commit_request.actor == "m"


def test_commits_to_several_partitions_are_applied_together(cluster):
    reader = consumer(cluster, "c1")
    reader.commit(offsets=[TopicPartition("events", p, 10 + p) for p in range(4)],
                  asynchronous=False)
    assert [cluster.coordinator.committed(GROUP, ("events", p)) for p in range(4)] == [
        10, 11, 12, 13]
    assert cluster.coordinator.committed(GROUP, ("other", 0)) is None
    assert cluster.coordinator.committed("another-group", ("events", 0)) is None


def test_a_partition_that_comes_back_resumes_from_the_committed_offset(seed):
    """An eager rebalance restarts every assigned partition from the committed offset."""
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic("events", {"num.partitions": 1})
    producer = cluster.producer({})
    for i in range(10):
        producer.produce("events", f"v{i}")
    producer.flush(10)
    cluster.settle(500)
    first = consumer(cluster, "c1")
    assert [first.poll(1.0).offset() for _ in range(3)] == [0, 1, 2]  # nothing committed
    second = consumer(cluster, "c0")  # sorts first: generation 2 moves the partition to it
    assert [second.poll(1.0).offset() for _ in range(5)] == [0, 1, 2, 3, 4]
    second.commit(asynchronous=False)
    second.close()  # generation 3: the partition is back with c1, which never polled in 2
    message = first.poll(1.0)
    first.commit(message=message, asynchronous=False)
    assert message.offset() == 5  # resumes at the committed offset
    assert cluster.coordinator.committed(GROUP, ("events", 0)) == 6


# ----- transaction markers ------------------------------------------------------------------------

@pytest.mark.parametrize("commit", [True, False])
def test_a_transaction_marker_survives_a_leader_crash_before_followers_copy_it(seed, commit):
    # Regression: the coordinator wrote each marker once, on the leader only. When the
    # leader died before its followers fetched the marker, the new leader never got
    # it and the old one truncated it on return: the transaction stayed open for
    # ever and read_committed readers saw nothing from there on. Kafka writes markers
    # with acks=all and retries them against the new leader.
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 2})
    producer = cluster.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("events", "a")
    producer.produce("events", "b")
    producer.flush(10)
    cluster.settle(1_000)
    cluster.install_faults(FaultPlan((DelayMessages(500, api="fetch", kind="response",
                                                    count=10**6),)))
    if commit:
        producer.commit_transaction()
    else:
        producer.abort_transaction()
    leader = cluster.leader("events")
    assert [r.control for r in cluster.brokers[leader].logs[("events", 0)].records][-1] == (
        "COMMIT" if commit else "ABORT")
    cluster.kill_broker(leader)
    cluster.settle(5_000)
    cluster.restart_broker(leader)
    cluster.settle(60_000)
    after = cluster.producer({})
    after.produce("events", "after")
    after.flush(10)
    cluster.settle(5_000)
    expected = [b"a", b"b", b"after"] if commit else [b"after"]
    assert cluster.readable("events", 0, "read_committed") == expected
    for broker in cluster.brokers:
        assert [r.control for r in broker.logs[("events", 0)].records].count(
            "COMMIT" if commit else "ABORT") == 1
