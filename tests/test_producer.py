"""The simulated Producer behaves like confluent-kafka's, faults included.

Each test builds a small cluster, drives a real Producer through it, and reads
the outcome from the delivery reports, the partition's log and the History.
"""

from __future__ import annotations

import zlib

import pytest
from confluent_kafka import OFFSET_INVALID

from course_lib.cluster import Cluster
from course_lib.errors import KafkaError
from course_lib.faults import Crash, CrashClient, DropMessages, FaultPlan

TOPIC = "events"


class Reports:
    """An on_delivery callback that remembers every (error, message) it got."""

    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, error, message) -> None:
        self.calls.append((error, message))

    @property
    def values(self) -> list:
        return [message.value() for _error, message in self.calls]

    @property
    def errors(self) -> list:
        return [None if error is None else error.code() for error, _message in self.calls]


def make_cluster(seed: int, plan: FaultPlan | None = None, **topic) -> Cluster:
    """Three brokers, topic ``events`` with RF=3, min.insync=2 unless overridden."""
    cluster = Cluster(brokers=3, seed=seed, faults=plan)
    cluster.create_topic(TOPIC, {"replication.factor": 3, "min.insync.replicas": 2, **topic})
    return cluster


def log_values(cluster: Cluster, partition: int = 0) -> list:
    """The leader's whole log (not only below the HW), after replication settled."""
    cluster.settle(2_000)
    leader = cluster.leader(TOPIC, partition)
    return [r.value for r in cluster.brokers[leader].logs[(TOPIC, partition)].records]


def events(cluster: Cluster, kind: str) -> list[dict]:
    return [e.data for e in cluster.history.of_kind(kind)]


# ----- delivery reports ------------------------------------------------------------------


def test_callbacks_wait_for_poll_even_when_the_ack_has_arrived(cluster):
    producer = cluster.producer({})
    reports = Reports()
    producer.produce(TOPIC, "a", on_delivery=reports)
    cluster.world.advance(1_000)  # the ack is long back from the broker
    producer.produce(TOPIC, "b", on_delivery=reports)
    assert reports.calls == []
    assert [e["value"] for e in events(cluster, "append")] == [b"a"]
    assert producer.poll(0) == 1
    assert reports.values == [b"a"]


def test_flush_serves_each_report_exactly_once(cluster):
    producer = cluster.producer({})
    reports = Reports()
    for index in range(5):
        producer.produce(TOPIC, f"v{index}", on_delivery=reports)
    assert reports.calls == []
    assert producer.flush() == 0
    assert reports.values == [f"v{i}".encode() for i in range(5)]
    assert reports.errors == [None] * 5
    assert [m.offset() for _e, m in reports.calls] == [0, 1, 2, 3, 4]
    assert producer.flush() == 0
    assert producer.poll(1.0) == 0
    assert len(reports.calls) == 5


def test_callback_keyword_is_an_alias_of_on_delivery(cluster):
    producer = cluster.producer({})
    reports = Reports()
    producer.produce(TOPIC, "x", callback=reports)
    producer.flush()
    assert reports.values == [b"x"]


def test_flush_returns_the_number_left_when_its_timeout_runs_out(cluster):
    producer = cluster.producer({})
    for index in range(3):
        producer.produce(TOPIC, f"v{index}")
    start_ms = cluster.world.now_ms
    assert producer.flush(0.002) == 3  # linger.ms=5: nothing has even been sent
    assert cluster.world.now_ms == start_ms + 2
    assert producer.flush(10) == 0


def test_poll_with_nothing_outstanding_and_no_timeout_returns(cluster):
    producer = cluster.producer({})
    assert producer.poll(None) == 0
    producer.produce(TOPIC, "a")
    assert producer.poll(None) == 1  # waits for the one report, then returns


def test_len_counts_records_until_their_report_is_served(cluster):
    producer = cluster.producer({})
    assert len(producer) == 0
    producer.produce(TOPIC, "a")
    producer.produce(TOPIC, "b")
    assert len(producer) == 2
    cluster.world.advance(1_000)  # delivered, but the reports are not served yet
    assert len(producer) == 2
    producer.poll(0)
    assert len(producer) == 0


def test_str_value_and_key_are_delivered_as_bytes(cluster):
    producer = cluster.producer({})
    reports = Reports()
    producer.produce(TOPIC, "héllo", key="k", on_delivery=reports)
    producer.flush()
    (error, message), = reports.calls
    assert error is None and message.error() is None
    assert message.value() == "héllo".encode()
    assert message.key() == b"k"
    assert message.topic() == TOPIC
    assert cluster.readable(TOPIC) == ["héllo".encode()]


def test_value_of_another_type_is_refused(cluster):
    producer = cluster.producer({})
    with pytest.raises(TypeError):
        producer.produce(TOPIC, 42)


def test_keyed_records_go_to_crc32_of_the_key_modulo_partitions(seed):
    cluster = make_cluster(seed, **{"num.partitions": 4})
    producer = cluster.producer({})
    reports = Reports()
    keys = [f"customer-{i}".encode() for i in range(20)]
    for key in keys:
        producer.produce(TOPIC, b"v", key=key, on_delivery=reports)
    producer.flush()
    got = {m.key(): m.partition() for _e, m in reports.calls}
    assert got == {key: zlib.crc32(key) % 4 for key in keys}
    assert len(set(got.values())) > 1


def test_explicit_partition_wins_over_the_key(seed):
    cluster = make_cluster(seed, **{"num.partitions": 4})
    producer = cluster.producer({})
    reports = Reports()
    key = b"k"
    other = (zlib.crc32(key) + 1) % 4
    producer.produce(TOPIC, b"v", key=key, partition=other, on_delivery=reports)
    producer.flush()
    assert reports.calls[0][1].partition() == other


def test_buffer_error_when_the_queue_is_full(cluster):
    producer = cluster.producer({"queue.buffering.max.messages": 2})
    producer.produce(TOPIC, "a")
    producer.produce(TOPIC, "b")
    with pytest.raises(BufferError):
        producer.produce(TOPIC, "c")
    assert len(producer) == 2
    assert producer.flush() == 0
    producer.produce(TOPIC, "c")  # room again once reports are served
    assert producer.flush() == 0
    assert cluster.readable(TOPIC) == [b"a", b"b", b"c"]


# ----- retries, duplicates, idempotence -----------------------------------------------------


def _lost_ack_run(seed: int, config: dict) -> tuple[Cluster, Reports]:
    cluster = make_cluster(seed, FaultPlan((DropMessages(api="produce", kind="response"),)))
    producer = cluster.producer(config)
    reports = Reports()
    producer.produce(TOPIC, "only", on_delivery=reports)
    assert producer.flush() == 0
    return cluster, reports


def test_lost_ack_without_idempotence_writes_a_duplicate(seed):
    cluster, reports = _lost_ack_run(seed, {"enable.idempotence": False})
    assert reports.errors == [None]
    assert log_values(cluster) == [b"only", b"only"]
    retries = events(cluster, "retry")
    assert [r["error"] for r in retries] == ["REQUEST_TIMED_OUT"]
    assert [a["attempt"] for a in events(cluster, "attempt")] == [1, 2]
    assert events(cluster, "dedupe") == []


def test_lost_ack_with_idempotence_is_deduplicated_with_the_same_sequence(seed):
    cluster, reports = _lost_ack_run(seed, {"enable.idempotence": True})
    assert reports.errors == [None]
    assert reports.calls[0][1].offset() == 0  # the offset of the first, real write
    assert log_values(cluster) == [b"only"]
    attempts = events(cluster, "attempt")
    assert len(attempts) == 2
    assert {a["base_seq"] for a in attempts} == {0}
    dedupes = events(cluster, "dedupe")
    assert len(dedupes) == 1 and dedupes[0]["seq"] == 0 and dedupes[0]["offset"] == 0


def test_idempotent_sequences_advance_per_partition_across_batches(seed):
    cluster = make_cluster(seed, **{"num.partitions": 2})
    producer = cluster.producer({"linger.ms": 0})
    for index in range(3):
        for partition in (0, 1):
            producer.produce(TOPIC, f"{partition}-{index}", partition=partition)
        cluster.world.advance(10)
    producer.flush()
    for partition in (0, 1):
        seqs = [a["base_seq"] for a in events(cluster, "attempt")
                if a["partition"] == partition]
        assert seqs == [0, 1, 2]


def test_an_idempotent_batch_that_expired_unwritten_does_not_wedge_the_partition(seed):
    """Its sequence numbers are a hole; a new epoch lets later batches start at 0 again."""
    plan = FaultPlan((DropMessages(api="produce", kind="request", count=2),))
    cluster = make_cluster(seed, plan)
    producer = cluster.producer({"delivery.timeout.ms": 31_000})
    reports = Reports()
    producer.produce(TOPIC, "first", on_delivery=reports)
    producer.flush()
    producer.produce(TOPIC, "second", on_delivery=reports)
    producer.flush()
    assert reports.errors == [KafkaError._MSG_TIMED_OUT, None]
    assert log_values(cluster) == [b"second"]
    bump, = events(cluster, "epoch_bump")
    assert bump == {"producer_id": producer.producer_id, "epoch": 1}
    assert [a["base_seq"] for a in events(cluster, "attempt")] == [0, 0, 0]
    assert "OUT_OF_ORDER_SEQUENCE_NUMBER" not in {r["error"] for r in events(cluster, "retry")}


def test_retries_zero_reports_a_timeout_for_a_write_that_exists(seed):
    cluster, reports = _lost_ack_run(seed, {"enable.idempotence": False, "retries": 0})
    assert reports.errors == [KafkaError.REQUEST_TIMED_OUT]
    error, message = reports.calls[0]
    assert message.error() == error
    assert message.offset() is None  # confluent-kafka shows OFFSET_INVALID as None
    assert error.retriable()
    nacks = events(cluster, "nack")
    assert len(nacks) == 1 and nacks[0]["indefinite"] is True
    assert nacks[0]["error"] == "REQUEST_TIMED_OUT"
    assert log_values(cluster) == [b"only"]  # the write happened anyway


def test_retries_counts_resends_not_attempts(seed):
    plan = FaultPlan((DropMessages(api="produce", kind="response", count=100),))
    cluster = make_cluster(seed, plan)
    producer = cluster.producer({"enable.idempotence": False, "retries": 2})
    reports = Reports()
    producer.produce(TOPIC, "thrice", on_delivery=reports)
    producer.flush()
    assert [a["attempt"] for a in events(cluster, "attempt")] == [1, 2, 3]
    assert reports.errors == [KafkaError.REQUEST_TIMED_OUT]
    assert log_values(cluster) == [b"thrice"] * 3  # every unanswered attempt was written


def test_delivery_timeout_while_the_cluster_is_down(cluster):
    for broker in range(3):
        cluster.kill_broker(broker)
    producer = cluster.producer({"delivery.timeout.ms": 40_000})
    reports = Reports()
    producer.produce(TOPIC, "doomed", on_delivery=reports)
    assert producer.flush() == 0
    assert reports.errors == [KafkaError._MSG_TIMED_OUT]
    assert cluster.world.now_ms == 40_000
    nack, = events(cluster, "nack")
    assert nack["indefinite"] is False  # never sent: a definite failure
    assert events(cluster, "attempt") == []


def test_delivery_timeout_bounds_an_unanswered_retry(seed):
    plan = FaultPlan((DropMessages(api="produce", kind="response", count=100),))
    cluster = make_cluster(seed, plan)
    producer = cluster.producer({"delivery.timeout.ms": 45_000})
    reports = Reports()
    producer.produce(TOPIC, "slow", on_delivery=reports)
    producer.flush()
    assert reports.errors == [KafkaError._MSG_TIMED_OUT]
    assert cluster.world.now_ms <= 45_000 + 5  # the report comes by the deadline
    nack, = events(cluster, "nack")
    assert nack["indefinite"] is True  # it was sent: it may be in the log


def test_not_enough_replicas_is_retried_until_the_isr_grows(cluster):
    cluster.kill_broker(1)
    cluster.kill_broker(2)  # ISR = [0] < min.insync.replicas = 2
    cluster.world.call_later(2_000, cluster.restart_broker, 1)
    producer = cluster.producer({})
    reports = Reports()
    producer.produce(TOPIC, "patient", on_delivery=reports)
    assert producer.flush() == 0
    assert reports.errors == [None]
    retries = events(cluster, "retry")
    assert retries and {r["error"] for r in retries} == {"NOT_ENOUGH_REPLICAS"}
    assert log_values(cluster) == [b"patient"]  # definite: refused, so no duplicate


def test_expiry_after_definite_refusals_is_a_definite_failure(cluster):
    cluster.kill_broker(1)
    cluster.kill_broker(2)  # refused with NOT_ENOUGH_REPLICAS until delivery times out
    producer = cluster.producer({"delivery.timeout.ms": 31_000})
    reports = Reports()
    producer.produce(TOPIC, "refused", on_delivery=reports)
    producer.flush()
    assert reports.errors == [KafkaError._MSG_TIMED_OUT]
    assert len(events(cluster, "retry")) > 100
    nack, = events(cluster, "nack")
    assert nack["indefinite"] is False  # every attempt was refused: it is not in the log


def test_not_enough_replicas_without_retries_is_a_definite_failure(cluster):
    cluster.kill_broker(1)
    cluster.kill_broker(2)
    producer = cluster.producer({"retries": 0})
    reports = Reports()
    producer.produce(TOPIC, "refused", on_delivery=reports)
    producer.flush()
    error, _message = reports.calls[0]
    assert error.code() == KafkaError.NOT_ENOUGH_REPLICAS
    assert error.retriable()
    nack, = events(cluster, "nack")
    assert nack["indefinite"] is False
    assert log_values(cluster) == []


def _in_flight_run(seed: int, config: dict) -> list:
    cluster = make_cluster(seed, FaultPlan((DropMessages(api="produce", kind="request"),)))
    producer = cluster.producer({"linger.ms": 0, **config})
    values = [f"m{i}".encode() for i in range(5)]
    for value in values:
        producer.produce(TOPIC, value)
        producer.poll(0.002)
    assert producer.flush() == 0
    return log_values(cluster)


def test_in_flight_above_one_without_idempotence_reorders(seed):
    log = _in_flight_run(seed, {"enable.idempotence": False})
    assert sorted(log) == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert log[-1] == b"m0"  # the dropped first request came back last


def test_one_in_flight_without_idempotence_keeps_order(seed):
    log = _in_flight_run(seed, {"enable.idempotence": False,
                                "max.in.flight.requests.per.connection": 1})
    assert log == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_idempotence_keeps_order_with_requests_in_flight(seed):
    log = _in_flight_run(seed, {"enable.idempotence": True})
    assert log == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def test_batches_failing_together_are_retried_in_their_original_order(seed):
    """A leader change fails every request in flight; the retries keep send order."""
    cluster = make_cluster(seed, **{"min.insync.replicas": 1})
    producer = cluster.producer({"enable.idempotence": False, "linger.ms": 0})
    for index in range(4):
        producer.produce(TOPIC, f"m{index}")
        producer.poll(0.001)
    cluster.kill_broker(cluster.leader(TOPIC))  # the requests in flight never get answers
    assert producer.flush() == 0
    retried = [a["values"][0] for a in events(cluster, "attempt") if a["attempt"] == 2]
    assert len(retried) >= 2
    assert retried == sorted(retried)
    assert cluster.readable(TOPIC)[-len(retried):] == retried


# ----- acks and idempotence defaults ------------------------------------------------------


def test_acks_zero_reports_success_at_once_without_an_offset(cluster):
    producer = cluster.producer({"acks": 0})
    reports = Reports()
    producer.produce(TOPIC, "fire", on_delivery=reports)
    cluster.world.advance(5)  # linger.ms: the request leaves now
    assert producer.poll(0) == 1  # reported before the broker could have answered
    assert reports.errors == [None]
    assert reports.calls[0][1].offset() is None  # OFFSET_INVALID, shown as None
    ack, = events(cluster, "ack")
    assert ack["offset"] == OFFSET_INVALID
    assert events(cluster, "append") == []
    cluster.world.advance(10)
    assert [e["value"] for e in events(cluster, "append")] == [b"fire"]


def test_acks_one_silently_disables_the_default_idempotence(cluster):
    producer = cluster.producer({"acks": "1"})
    assert producer.idempotent is False
    assert producer.producer_id == -1
    producer.produce(TOPIC, "a")
    producer.flush()
    assert [a["base_seq"] for a in events(cluster, "attempt")] == [-1]


def test_default_producer_is_idempotent_with_a_producer_id(cluster):
    first, second = cluster.producer({}), cluster.producer({})
    assert first.idempotent and second.idempotent
    assert first.producer_id >= 0 and second.producer_id >= 0
    assert first.producer_id != second.producer_id


# ----- the producer's process dies ------------------------------------------------------------


def test_crash_loses_the_in_memory_buffer_and_the_producer_stays_dead(seed):
    cluster = make_cluster(seed, FaultPlan((CrashClient("producer.flush", "before", 1),)))
    producer = cluster.producer({})
    reports = Reports()
    for index in range(3):
        producer.produce(TOPIC, f"v{index}", on_delivery=reports)
    with pytest.raises(Crash):
        producer.flush()
    lost, = events(cluster, "lost_buffer")
    assert lost["values"] == [b"v0", b"v1", b"v2"]
    for call in (lambda: producer.produce(TOPIC, "again"), producer.flush,
                 lambda: producer.poll(0)):
        with pytest.raises(Crash):
            call()
    cluster.settle(5_000)
    assert cluster.readable(TOPIC) == []
    assert reports.calls == []


def test_a_crash_is_not_an_exception(seed):
    cluster = make_cluster(seed, FaultPlan((CrashClient("producer.produce", "after", 2),)))
    producer = cluster.producer({})
    producer.produce(TOPIC, "a")
    with pytest.raises(Crash):
        try:
            producer.produce(TOPIC, "b")
        except Exception:  # noqa: BLE001 - what a learner might write
            pytest.fail("Crash was caught by except Exception")
    assert events(cluster, "lost_buffer")[0]["values"] == [b"a", b"b"]


def test_repeated_client_id_still_gives_distinct_clients(seed):
    """A restarted app reusing its client.id must not inherit the dead one's requests."""
    cluster = make_cluster(seed, FaultPlan((CrashClient("producer.poll", "after", 1),)))
    old = cluster.producer({"client.id": "shop"})
    old.produce(TOPIC, "in-flight")
    with pytest.raises(Crash):
        old.poll(0.005)  # linger is over: the request is on the wire when the app dies
    assert [a["values"] for a in events(cluster, "attempt")] == [[b"in-flight"]]
    new = cluster.producer({"client.id": "shop"})
    assert new.name != old.name
    cluster.settle(2_000)
    assert cluster.readable(TOPIC) == []  # lost with its sender, as without a client.id
