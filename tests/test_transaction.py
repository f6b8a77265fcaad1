"""Transactions: the producer's state machine, fencing, KIP-447, timeouts, read_committed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from course_lib import KafkaError, KafkaException, TopicPartition
from course_lib.checker import check
from course_lib.cluster import Cluster
from course_lib.faults import CrashClient, FailProcessing, FaultPlan, KillBroker, RestartBroker
from tests.helpers import eos


@pytest.fixture
def txn_cluster(seed) -> Cluster:
    made = Cluster(brokers=3, seed=seed)
    made.create_topic("events", {"min.insync.replicas": 2})
    return made


def _code(excinfo) -> int:
    return excinfo.value.args[0].code()


def test_transactional_calls_out_of_order_raise_state_errors(txn_cluster):
    producer = txn_cluster.producer({"transactional.id": "t"})
    with pytest.raises(KafkaException) as excinfo:
        producer.begin_transaction()
    assert _code(excinfo) == KafkaError._STATE
    assert "Uninitialized" in str(excinfo.value)
    producer.init_transactions()
    with pytest.raises(KafkaException) as excinfo:
        producer.commit_transaction()
    assert _code(excinfo) == KafkaError._STATE
    with pytest.raises(KafkaException) as excinfo:
        producer.produce("events", "outside any transaction")
    assert _code(excinfo) == KafkaError._STATE
    with pytest.raises(KafkaException) as excinfo:
        producer.init_transactions()
    assert _code(excinfo) == KafkaError._STATE
    producer.begin_transaction()
    with pytest.raises(KafkaException) as excinfo:
        producer.begin_transaction()
    assert _code(excinfo) == KafkaError._STATE


def test_transactional_api_without_transactional_id_is_not_configured(txn_cluster):
    producer = txn_cluster.producer({})
    with pytest.raises(KafkaException) as excinfo:
        producer.init_transactions()
    assert _code(excinfo) == KafkaError._NOT_CONFIGURED


def test_commit_makes_records_visible_to_read_committed_only_then(txn_cluster):
    producer = txn_cluster.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    for value in ("a", "b"):
        producer.produce("events", value)
    producer.flush()
    assert txn_cluster.readable("events", 0, "read_committed") == []
    assert txn_cluster.readable("events", 0, "read_uncommitted") == [b"a", b"b"]
    producer.commit_transaction()
    txn_cluster.settle(100)
    assert txn_cluster.readable("events", 0, "read_committed") == [b"a", b"b"]
    log = txn_cluster.brokers[txn_cluster.leader("events")].logs[("events", 0)]
    assert [r.control for r in log.records] == [None, None, "COMMIT"]
    assert log.last_stable_offset == log.high_watermark == 3


def test_an_open_transaction_holds_back_the_last_stable_offset(txn_cluster):
    plain = txn_cluster.producer({})
    txn = txn_cluster.producer({"transactional.id": "t"})
    txn.init_transactions()
    txn.begin_transaction()
    txn.produce("events", "pending")
    txn.flush()
    plain.produce("events", "plain")
    plain.flush()
    txn_cluster.settle(100)
    log = txn_cluster.brokers[txn_cluster.leader("events")].logs[("events", 0)]
    assert log.high_watermark == 2 and log.last_stable_offset == 0
    reader = txn_cluster.consumer({"group.id": "g", "auto.offset.reset": "earliest",
                                   "isolation.level": "read_committed"})
    reader.subscribe(["events"])
    assert reader.poll(1.0) is None  # "plain" waits behind the open transaction
    txn.abort_transaction()
    assert reader.poll(1.0).value() == b"plain"


def test_abort_hides_records_from_read_committed_but_not_read_uncommitted(txn_cluster):
    producer = txn_cluster.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("events", "doomed")
    producer.flush()
    producer.abort_transaction()
    producer.begin_transaction()
    producer.produce("events", "kept")
    producer.commit_transaction()
    txn_cluster.settle(100)

    def read(isolation):
        consumer = txn_cluster.consumer({"group.id": isolation, "auto.offset.reset": "earliest",
                                         "isolation.level": isolation})
        consumer.subscribe(["events"])
        values = []
        while (msg := consumer.poll(0.5)) is not None:
            values.append(msg.value())
        return values

    assert read("read_committed") == [b"kept"]
    assert read("read_uncommitted") == [b"doomed", b"kept"]


def test_abort_purges_records_not_yet_sent(txn_cluster):
    producer = txn_cluster.producer({"transactional.id": "t", "linger.ms": 1_000})
    reports = []
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("events", "never sent", on_delivery=lambda err, msg: reports.append(err))
    producer.abort_transaction()
    producer.poll(0)
    assert [err.code() for err in reports] == [KafkaError._PURGE_QUEUE]
    assert not any(e.kind == "attempt" for e in txn_cluster.history)


def test_offsets_sent_to_a_transaction_reach_the_group_only_on_commit(txn_cluster):
    consumer = txn_cluster.consumer({"group.id": "g", "enable.auto.commit": False})
    consumer.subscribe(["events"])
    producer = txn_cluster.producer({"transactional.id": "t"})
    producer.init_transactions()
    for commit in (False, True):
        producer.begin_transaction()
        producer.produce("events", "x")
        producer.send_offsets_to_transaction([TopicPartition("events", 0, 7)],
                                             consumer.consumer_group_metadata())
        (producer.commit_transaction if commit else producer.abort_transaction)()
        expected = 7 if commit else None
        assert txn_cluster.coordinator.committed("g", ("events", 0)) == expected


def test_a_new_instance_fences_the_old_one_and_aborts_its_transaction(txn_cluster):
    old = txn_cluster.process("a").producer({"transactional.id": "t"})
    old.init_transactions()
    old.begin_transaction()
    old.produce("events", "from the zombie")
    old.flush()
    new = txn_cluster.process("b").producer({"transactional.id": "t"})
    new.init_transactions()
    assert new.producer_epoch == old.producer_epoch + 1
    ends = [e.data for e in txn_cluster.history if e.kind == "txn_end"]
    assert ends == [{"txn": "t#1", "outcome": "abort", "reason": "fenced by a new instance",
                     "partitions": ["events-0"]}]
    reports = []
    old.produce("events", "late", on_delivery=lambda err, msg: reports.append(err))
    old.flush()
    assert reports[0].code() == KafkaError._FENCED and reports[0].fatal()
    with pytest.raises(KafkaException) as excinfo:
        old.commit_transaction()
    assert excinfo.value.args[0].fatal()
    with pytest.raises(KafkaException) as excinfo:
        old.begin_transaction()  # every later call fails with the same fatal error
    assert _code(excinfo) == KafkaError._FENCED


def test_a_zombie_that_never_produced_is_fenced_at_its_first_new_partition(txn_cluster):
    old = txn_cluster.process("a").producer({"transactional.id": "t"})
    old.init_transactions()
    txn_cluster.process("b").producer({"transactional.id": "t"}).init_transactions()
    old.begin_transaction()
    with pytest.raises(KafkaException) as excinfo:
        old.produce("events", "late")
    assert _code(excinfo) == KafkaError._FENCED and excinfo.value.args[0].fatal()


def test_stale_group_generation_makes_send_offsets_abortable(txn_cluster):
    """KIP-447: offsets from a consumer that has lost its partitions are refused."""
    consumer = txn_cluster.consumer({"group.id": "g", "enable.auto.commit": False})
    consumer.subscribe(["events"])
    stale = consumer.consumer_group_metadata()
    txn_cluster.consumer({"group.id": "g"}).subscribe(["events"])  # generation moves on
    producer = txn_cluster.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    with pytest.raises(KafkaException) as excinfo:
        producer.send_offsets_to_transaction([TopicPartition("events", 0, 1)], stale)
    error = excinfo.value.args[0]
    assert error.code() == KafkaError.ILLEGAL_GENERATION and error.txn_requires_abort()
    with pytest.raises(KafkaException):
        producer.commit_transaction()
    producer.abort_transaction()  # the producer survives an abortable error
    producer.begin_transaction()


def test_transaction_timeout_aborts_and_fences_a_stuck_producer(txn_cluster):
    producer = txn_cluster.producer({"transactional.id": "t", "transaction.timeout.ms": 5_000})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("events", "stuck")
    producer.flush()
    txn_cluster.settle(6_000)
    ends = [e.data for e in txn_cluster.history if e.kind == "txn_end"]
    assert ends[0]["outcome"] == "abort" and "transaction.timeout.ms" in ends[0]["reason"]
    with pytest.raises(KafkaException) as excinfo:
        producer.commit_transaction()
    assert _code(excinfo) == KafkaError._FENCED


def test_markers_wait_for_an_offline_partition_to_return(seed):
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic("events", {"replication.factor": 1})
    producer = cluster.producer({"transactional.id": "t"})
    producer.init_transactions()
    producer.begin_transaction()
    producer.produce("events", "x")
    producer.flush()
    leader = cluster.leader("events")
    cluster.kill_broker(leader)
    producer.commit_transaction()
    assert not any(e.kind == "marker" for e in cluster.history)
    cluster.restart_broker(leader)
    cluster.settle(500)
    assert [e.data["control"] for e in cluster.history if e.kind == "marker"] == ["COMMIT"]
    assert cluster.readable("events", 0, "read_committed") == [b"x"]


# ----- the property: a correct loop is exactly-once under any seeded attack ----------------

INPUTS = 8
POINTS = ("consumer.poll", "process", "producer.produce", "producer.begin_transaction",
          "producer.send_offsets_to_transaction", "producer.commit_transaction",
          "producer.init_transactions")

def _outage(at_ms: int, down_ms: int) -> tuple:
    """Kill whoever leads the output partition; bring every broker back later."""
    return (KillBroker("leader", at_ms=at_ms, topic="out"),
            *(RestartBroker(b, at_ms=at_ms + down_ms) for b in range(3)))


faults = st.lists(st.one_of(
    st.builds(lambda point, phase, nth: (CrashClient(point, phase, nth),),
              st.sampled_from(POINTS), st.sampled_from(("before", "after")), st.integers(1, 6)),
    st.builds(lambda nth: (FailProcessing(nth),), st.integers(1, INPUTS)),
    st.builds(_outage, st.integers(0, 3_000), st.integers(100, 5_000)),
), max_size=3)


def _plan(chosen: list[tuple]) -> FaultPlan:
    return FaultPlan(tuple(fault for group in chosen for fault in group))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(chosen=faults, zombie_at=st.one_of(st.none(), st.integers(1, 5)), seed=st.integers(0, 3))
def test_transactional_loop_is_exactly_once_under_crashes_zombies_and_aborts(chosen,
                                                                              zombie_at, seed):
    plan = _plan(chosen)
    cluster = eos.build(seed, plan, INPUTS)
    endings = eos.run_instance(cluster, zombie_at)
    assert "done" in endings, f"{plan!r} zombie_at={zombie_at}: {endings}"
    for broker in cluster.brokers:
        if not broker.alive:
            cluster.restart_broker(broker.id)
    cluster.settle(40_000)
    output = cluster.readable(eos.OUTPUT, 0, "read_committed")
    expected = [f"out:m-{n:03d}".encode() for n in range(INPUTS)]
    assert sorted(output) == expected, (f"seed={seed} {plan!r} zombie_at={zombie_at}: "
                                        f"{output}")
    assert cluster.coordinator.committed(eos.GROUP, (eos.INPUT, 0)) == INPUTS
    cluster.history.record("final_read", "checker", topic=eos.OUTPUT, partition=0,
                           values=output)
    report = check(cluster.history, delivered_by="log")
    assert not report.duplicated and not report.aborted_reads, report.summary()


def test_the_zombie_in_the_property_really_is_fenced(seed):
    cluster = eos.build(seed, FaultPlan(), INPUTS)
    endings = eos.run_instance(cluster, zombie_at=3)
    assert endings == ["done", "_FENCED"]
    assert sorted(cluster.readable(eos.OUTPUT, 0, "read_committed")) == [
        f"out:m-{n:03d}".encode() for n in range(INPUTS)]


def test_restarting_the_broker_that_kept_the_output_does_not_duplicate(seed):
    plan = FaultPlan((KillBroker("leader", at_ms=20, topic="out"),
                      RestartBroker(0, at_ms=3_000)))
    cluster = eos.build(seed, plan, INPUTS)
    assert eos.run_instance(cluster)[-1] == "done"
    cluster.settle(40_000)
    assert sorted(cluster.readable(eos.OUTPUT, 0, "read_committed")) == [
        f"out:m-{n:03d}".encode() for n in range(INPUTS)]
