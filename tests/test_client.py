"""Application processes: shared fate of their clients, and the ``process`` side effect."""

from __future__ import annotations

import pytest
from confluent_kafka import Message

from course_lib.cluster import Cluster
from course_lib.faults import Crash, CrashClient, FailProcessing, FaultPlan, ProcessingError

TOPIC = "events"


def make_cluster(seed: int, *faults) -> Cluster:
    cluster = Cluster(brokers=3, seed=seed, faults=FaultPlan(tuple(faults)))
    cluster.create_topic(TOPIC, {"replication.factor": 3, "min.insync.replicas": 2})
    return cluster


def message(offset: int, value: bytes = b"v", partition: int = 0) -> Message:
    return Message(topic=TOPIC, partition=partition, offset=offset, value=value)


def kinds(cluster: Cluster, kind: str) -> list:
    return list(cluster.history.of_kind(kind))


def test_crash_in_one_client_kills_every_client_of_the_process(seed):
    cluster = make_cluster(seed, CrashClient("consumer.poll", "before", 1))
    app = cluster.process("app")
    producer = app.producer({})
    made = app.consumer({"group.id": "g"})
    made.subscribe([TOPIC])
    producer.produce(TOPIC, "unsent")
    bystander = cluster.producer({})
    with pytest.raises(Crash) as caught:
        made.poll(1.0)
    assert (caught.value.point, caught.value.phase) == ("consumer.poll", "before")
    assert not app.alive and not producer.alive and not made.alive
    with pytest.raises(Crash):
        producer.produce(TOPIC, "more")
    with pytest.raises(Crash):
        producer.flush()
    assert kinds(cluster, "lost_buffer")[0].data["values"] == [b"unsent"]
    assert cluster.coordinator.group("g").members == {}  # the dead member left the group
    crash, = kinds(cluster, "crash")
    assert crash.data == {"point": "consumer.poll", "phase": "before", "nth": 1}
    bystander.produce(TOPIC, "other process")  # another process is unaffected
    assert bystander.flush() == 0


def test_die_kills_the_clients_and_is_idempotent(cluster):
    app = cluster.process()
    producer = app.producer({})
    app.die()
    app.die()
    assert not producer.alive
    with pytest.raises(Crash):
        app.check_alive("anything")
    with pytest.raises(Crash):
        producer.poll(0)


def test_processor_records_the_side_effect(cluster):
    app = cluster.process()
    seen = []
    process = app.processor(effect=lambda msg: seen.append(msg.value()) or "done")
    assert process(message(7, b"x")) == "done"
    assert seen == [b"x"]
    event, = kinds(cluster, "process")
    assert event.actor == app.name
    assert event.data == {"topic": TOPIC, "partition": 0, "offset": 7, "value": b"x"}


def test_an_effect_returning_false_is_recorded_as_a_dedupe_skip(cluster):
    app = cluster.process()
    seen = set()

    def once(msg):
        if msg.value() in seen:
            return False
        seen.add(msg.value())
        return None

    process = app.processor(effect=once)
    process(message(0, b"x"))
    assert process(message(1, b"x")) is False
    assert [e.data["offset"] for e in kinds(cluster, "process")] == [0]
    skip, = kinds(cluster, "dedupe_skip")
    assert (skip.data["offset"], skip.data["value"]) == (1, b"x")


def test_processing_takes_its_virtual_duration(cluster):
    app = cluster.process()
    process = app.processor(duration_ms=250)
    start_ms = cluster.world.now_ms
    process(message(0))
    assert cluster.world.now_ms == start_ms + 250
    assert kinds(cluster, "process")[0].time_ms == start_ms + 250


def test_fail_processing_raises_an_ordinary_exception_without_the_effect(seed):
    cluster = make_cluster(seed, FailProcessing(nth=2))
    app = cluster.process()
    effects = []
    process = app.processor(effect=lambda msg: effects.append(msg.offset()))
    process(message(0))
    with pytest.raises(ProcessingError):
        process(message(1))
    assert issubclass(ProcessingError, Exception)
    assert app.alive  # a processing error is not a crash
    process(message(1))  # retrying works
    assert effects == [0, 1]
    assert [e.data["offset"] for e in kinds(cluster, "process")] == [0, 1]


def test_processing_error_is_caught_by_except_exception(seed):
    cluster = make_cluster(seed, FailProcessing(nth=1))
    process = cluster.process().processor()
    try:
        process(message(0))
    except Exception as error:  # noqa: BLE001 - the point of the test
        assert isinstance(error, ProcessingError)
    else:
        pytest.fail("ProcessingError was not raised")


def test_crash_after_process_happens_after_the_effect_is_recorded(seed):
    cluster = make_cluster(seed, CrashClient("process", "after", 2))
    app = cluster.process()
    effects = []
    process = app.processor(effect=lambda msg: effects.append(msg.offset()))
    process(message(0))
    with pytest.raises(Crash) as caught:
        process(message(1))
    assert caught.value.phase == "after"
    assert effects == [0, 1]
    assert [e.data["offset"] for e in kinds(cluster, "process")] == [0, 1]
    assert not app.alive
    with pytest.raises(Crash):
        process(message(2))
    assert effects == [0, 1]


def test_crash_before_process_skips_the_effect(seed):
    cluster = make_cluster(seed, CrashClient("process", "before", 1))
    app = cluster.process()
    effects = []
    process = app.processor(effect=lambda msg: effects.append(msg.offset()))
    with pytest.raises(Crash):
        process(message(0))
    assert effects == [] and kinds(cluster, "process") == []


def test_a_named_processor_has_its_own_crash_point(seed):
    cluster = make_cluster(seed, CrashClient("store", "before", 1))
    app = cluster.process()
    plain = app.processor()
    store = app.processor(name="store")
    assert store.__name__ == "store"
    plain(message(0))
    with pytest.raises(Crash):
        store(message(1))


def test_crash_cannot_be_swallowed_by_except_exception(seed):
    cluster = make_cluster(seed, CrashClient("process", "before", 1))
    process = cluster.process().processor()
    assert not issubclass(Crash, Exception)
    with pytest.raises(Crash):
        try:
            process(message(0))
        except Exception:  # noqa: BLE001 - what a learner's loop might do
            pytest.fail("except Exception caught a Crash")


def test_fault_counters_count_calls_across_processes(seed):
    """The nth call of a point counts over the whole run, so a restart does not reset it."""
    cluster = make_cluster(seed, CrashClient("process", "before", 2))
    first = cluster.process().processor()
    first(message(0))
    second_app = cluster.process()
    second = second_app.processor()
    with pytest.raises(Crash):
        second(message(1))
    assert not second_app.alive


def test_each_process_gets_a_distinct_name(cluster):
    names = {cluster.process("app").name for _ in range(3)}
    assert len(names) == 3
