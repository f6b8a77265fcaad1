"""course_lib.cluster: topics, the controller's ISR and elections, crashes and restarts.

Every test drives a real Cluster through its public API (create_topic,
kill_broker, restart_broker, producers and consumers, the fault plan) and reads
the outcome from the controller's partition state, the replicas' logs and the
History.
"""

from __future__ import annotations

import pytest

from course_lib.cluster import Cluster
from course_lib.errors import ConfigException, KafkaError
from course_lib.faults import DelayMessages, DropMessages, FaultPlan, Isolate

TP = ("events", 0)
SAFE = {"replication.factor": 3, "min.insync.replicas": 2}


def make_cluster(seed: int, *faults, brokers: int = 3, config: dict | None = None,
                 **topic) -> Cluster:
    """``events`` with RF=3, min.insync=2; topic keys as keywords, dots as underscores."""
    cluster = Cluster(brokers=brokers, seed=seed, faults=FaultPlan(tuple(faults)), config=config)
    cluster.create_topic("events", {**SAFE, **{k.replace("_", "."): v for k, v in topic.items()}})
    return cluster


def send(cluster: Cluster, values: list[str], config: dict | None = None) -> dict:
    """Produce ``values`` and flush; returns value -> offset for each acknowledged one."""
    producer = cluster.producer({"acks": "all", **(config or {})})
    acked = {}

    def on_delivery(error, message) -> None:
        if error is None:
            acked[message.value().decode()] = message.offset()

    for value in values:
        producer.produce("events", value, on_delivery=on_delivery)
    producer.flush(30)
    return acked


def records(cluster: Cluster, broker: int, tp=TP) -> list:
    return [r.value for r in cluster.brokers[broker].logs[tp].records]


def events(cluster: Cluster, kind: str) -> list:
    return [e.data for e in cluster.history.of_kind(kind)]


# ----- topics ------------------------------------------------------------------------------------

def test_replicas_of_partition_p_start_at_broker_p_and_wrap_around(seed):
    cluster = Cluster(brokers=4, seed=seed)
    cluster.create_topic("t", {"replication.factor": 3, "num.partitions": 5})
    assert cluster.partitions_of("t") == [0, 1, 2, 3, 4]
    expected = {0: [0, 1, 2], 1: [1, 2, 3], 2: [2, 3, 0], 3: [3, 0, 1], 4: [0, 1, 2]}
    for p, replicas in expected.items():
        meta = cluster.partition(("t", p))
        assert meta.replicas == replicas
        assert meta.leader == replicas[0] == cluster.leader("t", p)
        assert meta.isr == replicas
        assert meta.leader_epoch == 1
        hosts = [b.id for b in cluster.brokers if ("t", p) in b.logs]
        assert hosts == sorted(replicas)
        assert cluster.brokers[meta.leader].leading[("t", p)].epoch == 1


def test_topic_creation_records_one_clean_election_per_partition(seed):
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic("t", {"num.partitions": 2})
    assert [(e["partition"], e["leader"], e["epoch"], e["unclean"], e["reason"])
            for e in events(cluster, "election")] == [(0, 0, 1, False, "topic created"),
                                                      (1, 1, 1, False, "topic created")]


def test_a_replica_starts_as_an_empty_log_of_leader_epoch_one(seed):
    cluster = make_cluster(seed)
    leader_log = cluster.brokers[0].logs[TP]
    assert (leader_log.log_end_offset, leader_log.high_watermark) == (0, 0)
    assert leader_log.epochs == [(1, 0)]
    assert cluster.readable("events") == []


@pytest.mark.parametrize(("settings", "key"), [
    ({"replication.factor": 4}, "replication.factor"),
    ({"replication.factor": 0}, "replication.factor"),
    ({"num.partitions": 0}, "num.partitions"),
    ({"unclean.leader.election.enable": "false"}, "unclean.leader.election.enable"),
    ({"min.insync.replicas": True}, "min.insync.replicas"),
    ({"retention.ms": 1000}, "retention.ms"),
])
def test_an_invalid_topic_config_is_rejected_and_creates_nothing(seed, settings, key):
    cluster = Cluster(brokers=3, seed=seed)
    with pytest.raises(ConfigException) as caught:
        cluster.create_topic("t", settings)
    assert caught.value.key == key
    assert cluster.partitions == {}
    assert all(b.logs == {} for b in cluster.brokers)
    with pytest.raises(KeyError, match="unknown topic"):
        cluster.partitions_of("t")


def test_a_topic_name_can_only_be_created_once(seed):
    cluster = make_cluster(seed)
    before = dict(cluster.partitions)
    with pytest.raises(ValueError, match="already exists"):
        cluster.create_topic("events", {"num.partitions": 3})
    assert cluster.partitions == before


@pytest.mark.parametrize("brokers", [0, -1, True, 2.0, "3"])
def test_a_cluster_needs_a_positive_int_of_brokers(brokers):
    with pytest.raises(ValueError, match="positive int"):
        Cluster(brokers=brokers)


def test_unknown_partitions_are_a_key_error_that_says_what_to_do(seed):
    cluster = make_cluster(seed)
    with pytest.raises(KeyError, match="create the topic first"):
        cluster.partition(("events", 1))
    with pytest.raises(KeyError, match="create the topic first"):
        cluster.leader("nope")
    with pytest.raises(KeyError, match="create_topic"):
        cluster.partitions_of("nope")


# ----- replication and the ISR -----------------------------------------------------------------

def test_follower_replication_makes_every_replica_equal_to_the_leader(seed):
    cluster = make_cluster(seed, num_partitions=2)
    producer = cluster.producer({"acks": "1"})
    for i in range(20):
        producer.produce("events", f"v{i}", partition=i % 2)
    producer.flush(10)
    cluster.settle(2_000)
    for p in (0, 1):
        meta = cluster.partition(("events", p))
        leader_log = cluster.brokers[meta.leader].logs[("events", p)]
        assert leader_log.log_end_offset == 10 == leader_log.high_watermark
        for r in meta.replicas:
            log = cluster.brokers[r].logs[("events", p)]
            assert log.records == leader_log.records
            assert log.high_watermark == leader_log.high_watermark
        assert cluster.readable("events", p) == [f"v{i}".encode() for i in range(p, 20, 2)]


def test_an_isolated_follower_leaves_the_isr_after_the_lag_time_and_rejoins_when_caught_up(seed):
    cluster = make_cluster(seed, Isolate(2, at_ms=1_000, until_ms=60_000))
    cluster.world.run(until_ms=30_000)
    assert cluster.partition(TP).isr == [0, 1, 2]  # lagging, but not yet for long enough
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 1])
    shrunk_ms = cluster.world.now_ms
    # replica.lag.time.max.ms=30 s after its last catch-up, at the next check (every 15 s).
    assert 31_000 < shrunk_ms <= 31_000 + 15_000
    assert "lagged" in events(cluster, "isr")[-1]["reason"]
    acked = send(cluster, ["during"])  # the ISR without broker 2 still satisfies min.insync=2
    assert acked == {"during": 0}
    assert records(cluster, 2) == []
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 1, 2])
    assert cluster.world.now_ms > 60_000
    assert events(cluster, "isr")[-1]["reason"] == "broker 2 caught up"
    assert records(cluster, 2) == [b"during"]


def test_a_crashed_follower_leaves_the_isr_at_once_and_rejoins_after_restart(seed):
    # The controller learns of a crash at once (a documented simplification: KRaft
    # would wait broker.session.timeout.ms), so the ISR shrinks without lag.
    cluster = make_cluster(seed)
    send(cluster, ["a"])
    cluster.kill_broker(1)
    assert cluster.partition(TP).isr == [0, 2]
    assert events(cluster, "isr")[-1]["reason"] == "broker 1 crashed"
    send(cluster, ["b"])
    assert records(cluster, 1) == [b"a"]
    cluster.restart_broker(1)
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 1, 2])
    assert cluster.world.now_ms < 5_000
    assert records(cluster, 1) == [b"a", b"b"]


def test_an_isr_shrinking_below_min_insync_after_the_append_is_not_enough_replicas_after(seed):
    cluster = make_cluster(seed, Isolate(2, at_ms=0), min_insync_replicas=3,
                           config={"replica.lag.time.max.ms": 10_000})
    producer = cluster.producer({"acks": "all", "retries": 0, "request.timeout.ms": 60_000})
    errors = []
    producer.produce("events", "v", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(60)
    # Appended with the ISR at 3; the ISR then shrank to 2 < min.insync=3. (The model's
    # pre-3.7 rule; broker.py's docstring says how Kafka 3.7+ differs.)
    assert [e.code() for e in errors] == [KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND]
    assert cluster.partition(TP).isr == [0, 1]
    assert records(cluster, 0) == [b"v"] == cluster.readable("events")


# ----- elections ---------------------------------------------------------------------------

def test_a_clean_election_picks_an_isr_member_and_bumps_the_leader_epoch(seed):
    # Broker 1 comes first in the replica list but is out of the ISR: it must not lead.
    cluster = make_cluster(seed, Isolate(1, at_ms=0, until_ms=200_000))
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 2])
    acked = send(cluster, ["a", "b"])
    cluster.kill_broker(0)
    meta = cluster.partition(TP)
    assert (meta.leader, meta.leader_epoch, meta.isr) == (2, 2, [2])
    election = events(cluster, "election")[-1]
    assert election == {"topic": "events", "partition": 0, "leader": 2, "epoch": 2, "isr": [2],
                        "unclean": False, "reason": "leader 0 crashed"}
    assert cluster.brokers[2].logs[TP].epochs[-1] == (2, 2)
    assert [v.decode() for v in records(cluster, 2)] == list(acked)


def test_a_leader_crash_with_a_live_isr_loses_no_acknowledged_write(seed):
    # Followers are slow, so the leader always has records they have not fetched yet.
    cluster = make_cluster(seed, DelayMessages(50, api="fetch", kind="response", count=10**6))
    producer = cluster.producer({"acks": "all"})
    acked = {}
    for i in range(30):
        producer.produce("events", f"v{i}",
                         on_delivery=lambda err, msg: err or acked.update({msg.value(): msg}))
        producer.poll(0.02)
        if i == 15:
            cluster.kill_broker(cluster.leader("events"))
    producer.flush(60)
    assert len(acked) == 30
    cluster.settle(5_000)
    readable = cluster.readable("events")
    for value, message in acked.items():
        assert readable[message.offset()] == value
    assert sorted(readable) == sorted(acked)  # and nothing written twice


def test_with_every_isr_member_dead_and_unclean_off_the_partition_stays_offline(seed):
    cluster = make_cluster(seed)
    send(cluster, ["a"])
    cluster.kill_broker(2)
    send(cluster, ["b"])
    cluster.kill_broker(1)
    assert cluster.partition(TP).isr == [0]
    cluster.kill_broker(0)
    assert cluster.leader("events") is None and cluster.readable("events") is None
    assert events(cluster, "offline")[-1]["isr"] == [0]
    cluster.restart_broker(2)  # out of sync: it must not lead
    cluster.settle(10_000)
    assert cluster.leader("events") is None
    producer = cluster.producer({"acks": "all", "delivery.timeout.ms": 40_000})
    errors = []
    producer.produce("events", "c", on_delivery=lambda err, msg: errors.append(err))
    producer.flush(60)
    assert [e.code() for e in errors] == [KafkaError._MSG_TIMED_OUT]
    cluster.restart_broker(0)
    assert cluster.leader("events") == 0
    assert events(cluster, "election")[-1]["reason"] == "broker 0 returned"
    cluster.settle(5_000)
    assert cluster.readable("events") == [b"a", b"b"]
    assert records(cluster, 2) == [b"a", b"b"]
    assert not any(e["unclean"] for e in events(cluster, "election"))


def test_unclean_election_lets_a_stale_replica_lead_truncating_acked_writes(seed):
    cluster = make_cluster(seed, min_insync_replicas=1, unclean_leader_election_enable=True)
    send(cluster, ["a"])
    cluster.kill_broker(2)
    acked = send(cluster, ["b", "c"])
    assert acked == {"b": 1, "c": 2}
    cluster.kill_broker(1)
    cluster.kill_broker(0)
    cluster.restart_broker(2)  # the only live replica, out of sync since offset 1
    meta = cluster.partition(TP)
    assert (meta.leader, meta.isr) == (2, [2])
    election = events(cluster, "election")[-1]
    assert election["unclean"] is True and election["epoch"] == 2
    assert send(cluster, ["x", "y"]) == {"x": 1, "y": 2}  # offsets 1 and 2 again
    cluster.restart_broker(0)
    cluster.restart_broker(1)
    cluster.settle(5_000)
    truncations = {e["offset"]: e["values"] for e in events(cluster, "truncate")}
    assert truncations == {1: [b"b", b"c"]}
    assert sorted(e.actor for e in cluster.history.of_kind("truncate")) == ["broker-0",
                                                                           "broker-1"]
    for broker in range(3):
        assert records(cluster, broker) == [b"a", b"x", b"y"]
    appended = [(e.data["offset"], e.data["value"]) for e in cluster.history.of_kind("append")]
    assert (1, b"b") in appended and (1, b"x") in appended  # one offset, two values


def test_a_returning_old_leader_truncates_its_unreplicated_records_kip_101(seed):
    # acks=1: the leader acknowledges before followers fetch; it dies before they do.
    cluster = make_cluster(seed, DelayMessages(200, api="fetch", kind="response", count=10**6))
    send(cluster, ["a"])
    acked = send(cluster, ["lost-1", "lost-2"], {"acks": "1"})
    assert acked == {"lost-1": 1, "lost-2": 2}
    assert records(cluster, 1) == [b"a"]
    cluster.kill_broker(0)
    assert cluster.leader("events") == 1
    send(cluster, ["new"])
    cluster.restart_broker(0)
    cluster.settle(5_000)
    truncate = events(cluster, "truncate")
    assert truncate == [{"topic": "events", "partition": 0, "offset": 1,
                         "values": [b"lost-1", b"lost-2"]}]
    assert [e.actor for e in cluster.history.of_kind("truncate")] == ["broker-0"]
    assert records(cluster, 0) == records(cluster, 1) == [b"a", b"new"]
    assert cluster.brokers[0].logs[TP].epochs == cluster.brokers[1].logs[TP].epochs
    assert cluster.partition(TP).isr == [0, 1, 2]


def test_a_replica_whose_last_epoch_the_leader_never_saw_truncates_to_their_common_past(seed):
    # Two unclean elections: broker 2 leads epoch 2 and writes "x" at offset 1; then
    # broker 0, which never saw epoch 2, leads epoch 3 with "b" at offset 1. Asked about
    # epoch 2, the leader answers with the largest epoch it knows below it (1, ending at 3);
    # broker 2 must truncate to the end of epoch 1 in its own log (offset 1), not keep "x".
    cluster = make_cluster(seed, min_insync_replicas=1, unclean_leader_election_enable=True)
    send(cluster, ["a"])
    cluster.kill_broker(2)
    send(cluster, ["b"])
    cluster.kill_broker(1)
    send(cluster, ["c"])
    cluster.kill_broker(0)
    cluster.restart_broker(2)
    assert send(cluster, ["x"]) == {"x": 1}
    cluster.kill_broker(2)
    cluster.restart_broker(0)
    assert (cluster.leader("events"), cluster.partition(TP).leader_epoch) == (0, 3)
    cluster.restart_broker(2)
    cluster.restart_broker(1)
    cluster.settle(5_000)
    assert [records(cluster, b) for b in range(3)] == [[b"a", b"b", b"c"]] * 3
    assert [(e.actor, e.data["offset"], e.data["values"])
            for e in cluster.history.of_kind("truncate")] == [("broker-2", 1, [b"x"])]


def test_a_replica_that_led_an_empty_epoch_rejoins_the_isr(seed):
    # Regression (fixed in log.truncate): a broker that became leader and wrote
    # nothing kept that epoch in its cache, so after losing leadership it asked the
    # new leader about an epoch it never heard of, forever, and never rejoined.
    cluster = make_cluster(seed)
    send(cluster, ["a", "b", "c"])
    cluster.kill_broker(0)  # broker 1 leads epoch 2 and writes nothing in it
    cluster.restart_broker(0)
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 1, 2])
    cluster.kill_broker(1)  # broker 0 leads epoch 3
    cluster.restart_broker(1)
    events_before = cluster.world.events_run
    cluster.settle(10_000)
    assert cluster.partition(TP).isr == [0, 1, 2]
    assert cluster.world.events_run - events_before < 2_000  # no truncation busy loop
    assert records(cluster, 1) == [b"a", b"b", b"c"]


def test_idempotent_retry_after_failover_is_deduplicated_by_the_new_leader(seed):
    # The response to the first request is lost; meanwhile the leader dies. The retry
    # reaches broker 1, which rebuilt the producer's state from the records it fetched.
    cluster = make_cluster(seed, DropMessages(api="produce", kind="response"))
    producer = cluster.producer({"enable.idempotence": True, "acks": "all"})
    offsets = []
    producer.produce("events", "v", on_delivery=lambda err, msg: offsets.append(msg.offset()))
    cluster.world.run(until=lambda: cluster.brokers[1].logs[TP].log_end_offset == 1)
    cluster.settle(100)
    cluster.kill_broker(0)
    assert producer.flush(60) == 0
    assert offsets == [0]
    assert [e.actor for e in cluster.history.of_kind("dedupe")] == ["broker-1"]
    assert [a.data["broker"] for a in cluster.history.of_kind("attempt")] == [0, 1]
    cluster.settle(2_000)
    assert cluster.readable("events") == [b"v"]


def test_a_retried_acks_all_batch_is_not_acked_before_the_isr_has_it(seed):
    # Regression: broker 1 is cut off but still in the ISR when the producer's request
    # times out and is retried; the leader used to acknowledge the duplicate at once,
    # and after the leader crash broker 1 led without the acknowledged record.
    cluster = make_cluster(seed, Isolate(1, at_ms=0))
    producer = cluster.producer({"enable.idempotence": True, "acks": "all"})
    acked_ms = []
    producer.produce("events", "v",
                     on_delivery=lambda err, msg: acked_ms.append(cluster.world.now_ms))
    producer.flush(120)
    assert [e.data["error"] for e in cluster.history.of_kind("retry")] == ["REQUEST_TIMED_OUT"]
    assert cluster.history.of_kind("dedupe")
    isr_change = next(cluster.history.of_kind("isr"))
    assert acked_ms[0] >= isr_change.time_ms  # acked only once the ISR was [0, 2]
    cluster.kill_broker(0)
    assert cluster.leader("events") == 2
    cluster.settle(2_000)
    assert cluster.readable("events") == [b"v"]


# ----- restarts ---------------------------------------------------------------------------

def test_a_broker_restarted_with_its_disk_keeps_its_log(seed):
    cluster = make_cluster(seed)
    send(cluster, ["a", "b"])
    cluster.settle(1_000)
    cluster.kill_broker(2)
    assert records(cluster, 2) == [b"a", b"b"]
    cluster.restart_broker(2)
    assert records(cluster, 2) == [b"a", b"b"]
    assert [e.kind for e in cluster.history if e.actor == "broker-2"][-2:] == [
        "broker_crash", "broker_restart"]


def test_a_follower_that_lost_its_disk_comes_back_empty_and_copies_everything(seed):
    cluster = make_cluster(seed)
    send(cluster, ["a", "b"])
    cluster.settle(1_000)
    cluster.kill_broker(2, lose_disk=True)
    assert events(cluster, "broker_crash")[-1] == {"lose_disk": True}
    cluster.restart_broker(2)
    log = cluster.brokers[2].logs[TP]
    assert (log.log_end_offset, log.high_watermark, log.epochs) == (0, 0, [])
    cluster.world.run(until=lambda: cluster.partition(TP).isr == [0, 1, 2])
    assert records(cluster, 2) == [b"a", b"b"]


def test_the_last_isr_member_returning_without_its_disk_erases_the_partition(seed):
    # Kafka before KIP-966 trusts the returning ISR member: its empty log wins.
    cluster = make_cluster(seed, min_insync_replicas=1)
    send(cluster, ["a"])
    cluster.kill_broker(1)
    cluster.kill_broker(2)
    send(cluster, ["b"])
    cluster.kill_broker(0, lose_disk=True)
    cluster.restart_broker(1)
    cluster.restart_broker(2)
    assert cluster.leader("events") is None
    cluster.restart_broker(0)
    assert cluster.leader("events") == 0
    cluster.settle(5_000)
    assert [records(cluster, b) for b in range(3)] == [[], [], []]
    assert sorted(e.actor for e in cluster.history.of_kind("truncate")) == ["broker-1",
                                                                           "broker-2"]


def test_killing_a_dead_broker_or_restarting_a_live_one_changes_nothing(seed):
    cluster = make_cluster(seed)
    cluster.kill_broker(1)
    before = len(cluster.history)
    cluster.kill_broker(1)
    cluster.restart_broker(0)
    assert len(cluster.history) == before


# ----- clients and determinism ---------------------------------------------------------------

def test_readable_stops_at_the_high_watermark(seed):
    cluster = make_cluster(seed, Isolate(1, at_ms=0), Isolate(2, at_ms=0))
    send(cluster, ["a"], {"acks": "1"})
    assert records(cluster, 0) == [b"a"]
    assert cluster.readable("events") == []


def test_the_same_seed_and_faults_give_the_same_history(seed):
    def run() -> str:
        cluster = make_cluster(seed, DropMessages(api="produce", kind="response"),
                               Isolate(2, at_ms=0, until_ms=40_000), num_partitions=2)
        send(cluster, [f"v{i}" for i in range(10)], {"enable.idempotence": False})
        cluster.kill_broker(cluster.leader("events", 1))
        send(cluster, ["after"])
        cluster.settle(60_000)
        return cluster.history.to_jsonl()

    assert run() == run()


def test_cluster_repr_names_its_size_and_seed():
    assert repr(Cluster(brokers=2, seed=7)) == "Cluster(brokers=2, seed=7)"
