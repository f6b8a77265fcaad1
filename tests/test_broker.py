"""course_lib.broker: how a partition leader answers produce and fetch requests.

Most tests talk to the brokers through :class:`helpers.wire.Probe`, a bare node on
the cluster's real network, so they can send what the real clients never would
(a produce to a follower, a retried idempotent batch) and look at the broker's
answer and at every replica's log at the very instant the answer arrives.
Replication is slowed with the fault plan (fetch responses delayed) where a test
needs to see the leader ahead of its followers.
"""

from __future__ import annotations

import pytest
from helpers.wire import Probe

from course_lib.cluster import Cluster
from course_lib.errors import KafkaError, is_indefinite, kafka_error
from course_lib.faults import DelayMessages, DropMessages, FaultPlan, Isolate

TP = ("events", 0)
SLOW_REPLICATION = DelayMessages(200, api="fetch", kind="response", count=10**6)


def make_cluster(seed: int, *faults, config: dict | None = None, **topic) -> Cluster:
    """Three brokers, ``events`` with RF=3 and min.insync.replicas=2 unless overridden."""
    cluster = Cluster(brokers=3, seed=seed, faults=FaultPlan(tuple(faults)), config=config)
    cluster.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 2, **topic})
    return cluster


def leo(cluster: Cluster, broker: int) -> int:
    return cluster.brokers[broker].logs[TP].log_end_offset


def hw(cluster: Cluster, broker: int) -> int:
    return cluster.brokers[broker].logs[TP].high_watermark


def values(cluster: Cluster, broker: int) -> list:
    return [r.value for r in cluster.brokers[broker].logs[TP].records]


# ----- produce: who may take it ------------------------------------------------------------

def test_a_follower_refuses_a_produce_with_not_leader_and_appends_nothing(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    assert cluster.leader("events") == 0
    reply = probe.wait(probe.produce(1, [b"v"], acks="1"))
    assert reply == {"error": KafkaError.NOT_LEADER_FOR_PARTITION}
    assert kafka_error(reply["error"]).retriable()
    cluster.settle(1_000)
    assert [leo(cluster, b) for b in range(3)] == [0, 0, 0]


def test_a_producer_with_a_stale_leader_gets_not_leader_and_retries_to_the_new_one(seed):
    # The request is in flight while leadership moves from broker 0 to broker 1 and
    # broker 0 comes back as a follower: broker 0 now refuses it.
    cluster = make_cluster(seed, DelayMessages(1_000, api="produce", kind="request"))
    producer = cluster.producer({"acks": "all"})
    producer.produce("events", "v")
    cluster.world.advance(100)  # sent to broker 0, still on the wire
    cluster.kill_broker(0)
    cluster.restart_broker(0)
    assert cluster.leader("events") == 1
    assert producer.flush(10) == 0
    retries = [e.data["error"] for e in cluster.history.of_kind("retry")]
    assert retries == ["NOT_LEADER_FOR_PARTITION"]
    cluster.settle(2_000)
    assert values(cluster, 1) == [b"v"] and values(cluster, 0) == [b"v"]


# ----- acks ------------------------------------------------------------------------------------

def test_acks_1_answers_once_the_leader_has_appended_before_any_follower_has(seed):
    cluster = make_cluster(seed, SLOW_REPLICATION)
    probe = Probe(cluster)
    sent_ms = cluster.world.now_ms
    reply = probe.wait(probe.produce(0, [b"a", b"b"], acks="1"))
    assert reply == {"error": None, "base_offset": 0}
    assert probe.arrived_ms(max(probe.responses)) == sent_ms + 2  # one network round trip
    assert (leo(cluster, 0), leo(cluster, 1), leo(cluster, 2)) == (2, 0, 0)
    assert hw(cluster, 0) == 0  # acknowledged, yet not committed


def test_acks_all_answers_only_when_every_isr_member_has_the_write(seed):
    cluster = make_cluster(seed, SLOW_REPLICATION)
    probe = Probe(cluster)
    sent_ms = cluster.world.now_ms
    correlation = probe.produce(0, [b"a", b"b"], acks="all")
    cluster.world.advance(100)
    assert correlation not in probe.responses  # the followers have not fetched yet
    reply = probe.wait(correlation)
    assert reply == {"error": None, "base_offset": 0}
    assert probe.arrived_ms(correlation) >= sent_ms + 200  # after a delayed fetch response
    isr = cluster.partition(TP).isr
    assert isr == [0, 1, 2]
    assert all(leo(cluster, r) >= 2 for r in isr)
    assert hw(cluster, 0) == 2


def test_acks_0_gets_no_answer_even_though_the_leader_appends(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    assert probe.wait(probe.produce(0, [b"v"], acks="0"), timeout_ms=5_000) is None
    assert probe.responses == {}
    assert values(cluster, 0) == [b"v"]


def test_acks_0_reports_success_for_a_write_that_never_arrived(seed):
    cluster = make_cluster(seed, DropMessages(api="produce", kind="request"))
    producer = cluster.producer({"acks": "0"})
    reports = []
    producer.produce("events", "v", on_delivery=lambda err, msg: reports.append(err))
    assert producer.flush(1) == 0
    assert reports == [None]
    cluster.settle(1_000)
    assert [leo(cluster, b) for b in range(3)] == [0, 0, 0]


def test_acks_all_times_out_at_the_broker_when_the_isr_does_not_catch_up(seed):
    cluster = make_cluster(seed, SLOW_REPLICATION)
    probe = Probe(cluster)
    correlation = probe.produce(0, [b"v"], acks="all", timeout_ms=50)
    reply = probe.wait(correlation)
    assert reply == {"error": KafkaError.REQUEST_TIMED_OUT}
    assert probe.arrived_ms(correlation) == 1 + 50 + 1
    assert is_indefinite(kafka_error(reply["error"]))
    assert values(cluster, 0) == [b"v"]  # the write happened all the same


# ----- min.insync.replicas -------------------------------------------------------------------

def test_acks_all_with_the_isr_below_min_insync_is_refused_before_the_append(seed):
    cluster = make_cluster(seed)
    cluster.kill_broker(1)
    cluster.kill_broker(2)
    assert cluster.partition(TP).isr == [0]
    probe = Probe(cluster)
    reply = probe.wait(probe.produce(0, [b"v"], acks="all"))
    assert reply == {"error": KafkaError.NOT_ENOUGH_REPLICAS}
    error = kafka_error(reply["error"])
    assert error.retriable() and not is_indefinite(error)  # definite: nothing was written
    assert leo(cluster, 0) == 0


def test_min_insync_replicas_does_not_apply_to_acks_1(seed):
    cluster = make_cluster(seed)
    cluster.kill_broker(1)
    cluster.kill_broker(2)
    probe = Probe(cluster)
    assert probe.wait(probe.produce(0, [b"v"], acks="1")) == {"error": None, "base_offset": 0}
    assert values(cluster, 0) == [b"v"]


def test_producer_sees_not_enough_replicas_as_a_retriable_delivery_error(seed):
    cluster = make_cluster(seed)
    cluster.kill_broker(1)
    cluster.kill_broker(2)
    producer = cluster.producer({"acks": "all", "retries": 0})
    errors = []
    producer.produce("events", "v", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(5)
    assert [e.code() for e in errors] == [KafkaError.NOT_ENOUGH_REPLICAS]
    assert errors[0].retriable()
    assert leo(cluster, 0) == 0


def test_isr_shrinking_after_the_append_answers_not_enough_replicas_after_append(seed):
    cluster = make_cluster(seed, SLOW_REPLICATION)
    probe = Probe(cluster)
    correlation = probe.produce(0, [b"v"], acks="all")
    cluster.world.advance(10)  # appended on the leader, waiting for the followers
    assert leo(cluster, 0) == 1 and correlation not in probe.responses
    cluster.kill_broker(1)
    cluster.kill_broker(2)  # ISR [0]: the high watermark reaches the write at once
    # (the model's pre-3.7 rule; broker.py's docstring says how Kafka 3.7+ differs)
    reply = probe.wait(correlation)
    assert reply == {"error": KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND}
    error = kafka_error(reply["error"])
    assert error.retriable() and is_indefinite(error)  # the write is there all the same
    assert values(cluster, 0) == [b"v"] and hw(cluster, 0) == 1


# ----- the high watermark ----------------------------------------------------------------------

def test_high_watermark_is_the_lowest_leo_in_the_isr_not_a_majority(seed):
    cluster = make_cluster(seed, Isolate(2, at_ms=0), config={"replica.lag.time.max.ms": 10_000})
    probe = Probe(cluster)
    probe.wait(probe.produce(0, [b"a", b"b", b"c"], acks="1"))
    cluster.world.advance(1_000)
    assert cluster.partition(TP).isr == [0, 1, 2]
    assert (leo(cluster, 0), leo(cluster, 1), leo(cluster, 2)) == (3, 3, 0)
    assert hw(cluster, 0) == 0  # two of three replicas have it: not enough
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 1])
    # Checked every lag/2; dropped at the first check after a full lag without catching up.
    assert 10_000 < cluster.world.now_ms <= 15_000
    assert hw(cluster, 0) == 3


def test_followers_learn_the_high_watermark_from_their_next_fetch(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    probe.wait(probe.produce(0, [b"a", b"b"], acks="all"))
    assert hw(cluster, 0) == 2
    cluster.settle(1_000)
    assert [hw(cluster, b) for b in range(3)] == [2, 2, 2]


# ----- idempotent batches ----------------------------------------------------------------------

def idempotent(probe: Probe, value: bytes, seq: int, acks: str = "all") -> int:
    return probe.produce(0, [value], acks=acks, producer_id=77, producer_epoch=0, base_seq=seq)


def test_a_retried_idempotent_batch_is_acked_with_its_first_offset_and_not_written_twice(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    first = probe.wait(idempotent(probe, b"v", 0))
    again = probe.wait(idempotent(probe, b"v", 0))
    assert first == {"error": None, "base_offset": 0}
    assert again["error"] is None and again["base_offset"] == 0
    assert values(cluster, 0) == [b"v"]
    assert [e.data["offset"] for e in cluster.history.of_kind("dedupe")] == [0]


def test_a_retried_batch_with_acks_all_waits_for_the_isr_like_the_original(seed):
    # Regression: the duplicate used to be acknowledged at once, before the ISR had
    # the original; a failover then lost an acknowledged write (see test_cluster).
    cluster = make_cluster(seed, SLOW_REPLICATION)
    probe = Probe(cluster)
    original = idempotent(probe, b"v", 0)
    cluster.world.advance(10)
    retry = idempotent(probe, b"v", 0)
    cluster.world.advance(10)
    assert retry not in probe.responses and hw(cluster, 0) == 0
    reply = probe.wait(retry)
    assert reply == {"error": None, "base_offset": 0}
    assert hw(cluster, 0) == 1 and all(leo(cluster, r) == 1 for r in range(3))
    assert probe.wait(original) == {"error": None, "base_offset": 0}
    assert values(cluster, 0) == [b"v"]


def test_a_retried_batch_with_acks_1_is_answered_at_once(seed):
    cluster = make_cluster(seed, SLOW_REPLICATION)
    probe = Probe(cluster)
    probe.wait(idempotent(probe, b"v", 0, acks="1"))
    retry = idempotent(probe, b"v", 0, acks="1")
    assert probe.wait(retry) == {"error": None, "base_offset": 0}
    assert hw(cluster, 0) == 0


def test_a_sequence_gap_is_out_of_order_and_an_old_epoch_is_fenced(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    probe.wait(idempotent(probe, b"v0", 0))
    gap = probe.wait(idempotent(probe, b"v2", 2))
    assert gap == {"error": KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER}
    bumped = probe.wait(probe.produce(0, [b"w"], producer_id=77, producer_epoch=1, base_seq=0))
    assert bumped["error"] is None
    old = probe.wait(probe.produce(0, [b"x"], producer_id=77, producer_epoch=0, base_seq=1))
    assert old == {"error": KafkaError.INVALID_PRODUCER_EPOCH}
    assert values(cluster, 0) == [b"v0", b"w"]


# ----- fetch -------------------------------------------------------------------------------------

def test_a_consumer_fetch_stops_at_the_high_watermark(seed):
    # The followers are cut off after the first write, so the next two stay uncommitted.
    cluster = make_cluster(seed, Isolate(1, at_ms=50), Isolate(2, at_ms=50))
    probe = Probe(cluster)
    probe.wait(probe.produce(0, [b"a"], acks="all"))
    cluster.world.run(until_ms=100)
    probe.wait(probe.produce(0, [b"b", b"c"], acks="1"))
    assert (leo(cluster, 0), hw(cluster, 0)) == (3, 1)
    reply = probe.wait(probe.fetch(0, 0))
    assert [r.value for r in reply["records"]] == [b"a"]
    assert reply["high_watermark"] == 1
    # At the high watermark there is nothing to read yet: an empty answer.
    assert probe.wait(probe.fetch(0, 1))["records"] == []


def test_a_fetch_past_the_log_end_is_out_of_range_and_a_follower_refuses_fetches(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    assert probe.wait(probe.fetch(0, 5)) == {"error": KafkaError.OFFSET_OUT_OF_RANGE}
    assert probe.wait(probe.fetch(1, 0)) == {"error": KafkaError.NOT_LEADER_FOR_PARTITION}


def test_an_empty_fetch_waits_at_the_leader_until_data_is_committed_or_the_wait_ends(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    sent_ms = cluster.world.now_ms
    idle = probe.fetch(0, 0, max_wait_ms=500)
    assert probe.wait(idle)["records"] == []
    assert probe.arrived_ms(idle) == sent_ms + 1 + 500 + 1
    waiting = probe.fetch(0, 0, max_wait_ms=500)
    cluster.world.advance(100)
    written_ms = cluster.world.now_ms
    probe.produce(0, [b"v"], acks="1")
    reply = probe.wait(waiting)
    assert [r.value for r in reply["records"]] == [b"v"]
    assert probe.arrived_ms(waiting) < written_ms + 100  # woken when the HW moved


def test_follower_replication_copies_the_leaders_log_record_for_record(seed):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    for batch in ([b"a"], [b"b", b"c"], [b"d"]):
        probe.wait(probe.produce(0, batch, acks="1"))
    cluster.settle(2_000)
    leader_log = cluster.brokers[0].logs[TP]
    for follower in (1, 2):
        log = cluster.brokers[follower].logs[TP]
        assert log.records == leader_log.records  # offsets, epochs, timestamps and all
        assert log.high_watermark == leader_log.high_watermark == 4
        assert log.epochs == leader_log.epochs == [(1, 0)]


@pytest.mark.parametrize("acks", ["0", "1", "all"])
def test_every_acks_setting_ends_replicated_once_the_cluster_settles(seed, acks):
    cluster = make_cluster(seed)
    probe = Probe(cluster)
    probe.produce(0, [b"v"], acks=acks)
    cluster.settle(2_000)
    assert [values(cluster, b) for b in range(3)] == [[b"v"]] * 3
    assert [hw(cluster, b) for b in range(3)] == [1, 1, 1]


def test_broker_repr_and_crash_state(seed):
    cluster = make_cluster(seed)
    broker = cluster.brokers[0]
    assert repr(broker) == "<Broker 0 up>"
    cluster.kill_broker(0)
    assert repr(broker) == "<Broker 0 down>" and broker.leading == {}
