"""The real-Kafka bridge: the same client calls on the toy and on librdkafka's mock cluster.

Mock-cluster tests always run: the mock lives inside this process on loopback
ports. Tests marked ``real_cluster`` need ``KAFKA_BOOTSTRAP_SERVERS`` and are
skipped without it. Real clients take real time, so every assertion is about
an outcome (what was lost, what was duplicated), never about a duration.

The ``mock gap`` tests pin what the notebook says the mock does not model: if
a newer librdkafka starts modelling one, its test fails and the notebook's
table must change with it.
"""

from __future__ import annotations

import os

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

from course_lib import kafka, scenarios
from course_lib.checker import check
from course_lib.cluster import Cluster
from course_lib.errors import ConfigException
from course_lib.faults import (
    Crash,
    CrashClient,
    DropMessages,
    FailProcessing,
    FaultPlan,
    KillBroker,
)
from course_lib.scenarios import at_least_once

VALUES = scenarios.message_values(10)
CONSUMER = {"group.id": "app", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
COMPARED = ("sent", "acked", "delivered", "lost", "lost_acked", "duplicated", "reordered",
            "unacked_writes", "aborted_reads", "guarantee")
real_cluster = pytest.mark.skipif(
    not os.environ.get(kafka.ENV_VAR),
    reason=f"needs a real Kafka cluster: set {kafka.ENV_VAR}=host:port to run it")


@pytest.fixture
def conn():
    """A fresh mock cluster for one test (never the environment's cluster)."""
    with kafka.Connection() as made:
        yield made


def _outcome(report) -> dict:
    return {key: value for key, value in report.as_dict().items() if key in COMPARED}


# ----- configuration ----------------------------------------------------------------------------


def test_clients_get_kafka_defaults_not_librdkafka_defaults():
    producer = kafka.client_config("producer", {}, "127.0.0.1:9092")
    assert producer["enable.idempotence"] is True  # librdkafka: false
    assert producer["delivery.timeout.ms"] == 120_000  # librdkafka: 300000
    assert producer["max.in.flight.requests.per.connection"] == 5  # librdkafka: 1000000
    assert producer["socket.timeout.ms"] == producer["request.timeout.ms"] == 30_000
    consumer = kafka.client_config("consumer", {"group.id": "g"}, "127.0.0.1:9092")
    assert consumer["isolation.level"] == "read_uncommitted"  # librdkafka: read_committed
    assert consumer["fetch.wait.max.ms"] == 500
    assert "max.poll.records" not in consumer and "request.timeout.ms" not in consumer


def test_client_config_validates_like_the_toy_and_passes_other_keys_through():
    with pytest.raises(ConfigException):
        kafka.client_config("producer", {"acks": "2"}, "x")
    with pytest.raises(ConfigException):
        kafka.client_config("producer", {"enable.idempotence": True, "acks": "1"}, "x")
    quiet = kafka.client_config("producer", {"acks": "1", "log_level": 0}, "127.0.0.1:1")
    assert quiet["enable.idempotence"] is False  # the default yields to acks=1, as in Kafka
    assert quiet["log_level"] == 0 and quiet["bootstrap.servers"] == "127.0.0.1:1"


def test_a_transactional_delivery_timeout_fits_inside_the_transaction_timeout():
    config = kafka.client_config("producer", {"transactional.id": "t"}, "x")
    assert config["delivery.timeout.ms"] == config["transaction.timeout.ms"] == 60_000
    explicit = kafka.client_config("producer", {"transactional.id": "t",
                                                "delivery.timeout.ms": 50_000}, "x")
    assert explicit["delivery.timeout.ms"] == 50_000


def test_config_table_reads_defaults_from_the_installed_librdkafka():
    rows = {row["librdkafka key"]: row for row in kafka.config_table("producer")}
    assert rows["enable.idempotence"]["librdkafka default"] == "false"
    assert rows["enable.idempotence"]["bridge passes"] == "true"
    consumer = {row["librdkafka key"]: row for row in kafka.config_table("consumer")}
    assert consumer["isolation.level"]["librdkafka default"] == "read_committed"


# ----- connecting -------------------------------------------------------------------------------


def test_without_servers_the_mock_cluster_listens_on_loopback_only(conn):
    assert conn.kind == "mock"
    hosts = {address.rsplit(":", 1)[0] for address in conn.bootstrap_servers.split(",")}
    assert hosts == {"127.0.0.1"}
    assert len(conn.bootstrap_servers.split(",")) == kafka.MOCK_BROKERS


def test_connect_prefers_an_argument_then_the_environment(monkeypatch):
    monkeypatch.setenv(kafka.ENV_VAR, "127.0.0.1:9")
    from_env = kafka.connect()  # nothing is contacted until a client is made
    assert (from_env.kind, from_env.bootstrap_servers) == ("cluster", "127.0.0.1:9")
    assert kafka.connect("127.0.0.1:10").bootstrap_servers == "127.0.0.1:10"
    monkeypatch.delenv(kafka.ENV_VAR)
    with kafka.connect() as mock:
        assert mock.kind == "mock"


def test_factories_make_real_confluent_kafka_clients(conn):
    producer = conn.producer({"linger.ms": 0})
    consumer = conn.consumer(CONSUMER)
    assert isinstance(producer, Producer) and isinstance(consumer, Consumer)
    consumer.close()


# ----- differential: the same client calls on the toy and on the mock -------------------------


def _resume_after_restart(producer, start_consumer, topic: str) -> None:
    """Produce, consume four with commit-after-process, close, restart, resume, finish."""
    for value in VALUES:
        producer.produce(topic, value)
    assert producer.flush(10) == 0
    first, process = start_consumer()
    first.assign([TopicPartition(topic, 0)])
    for _ in range(4):
        msg = first.poll(5.0)
        process(msg)
        first.commit(message=msg, asynchronous=False)
    first.close()
    second, process = start_consumer()
    second.assign([TopicPartition(topic, 0)])
    msg = second.poll(5.0)  # the restarted consumer's first message: it resumes here
    process(msg)
    second.commit(message=msg, asynchronous=False)
    at_least_once(second, process)
    second.close()


def _toy_history(seed: int):
    cluster = Cluster(brokers=3, seed=seed)
    cluster.create_topic("events")

    def start():
        app = cluster.process("consumer-app")
        return app.consumer(CONSUMER), app.processor()

    _resume_after_restart(cluster.process("producer-app").producer({}), start, "events")
    return cluster.history


def _mock_history(conn):
    recorder = kafka.Recorder()
    topic = conn.create_topic()

    def start():
        app = recorder.app("consumer-app")
        return conn.consumer(CONSUMER, recorder=recorder, app=app), app.processor()

    _resume_after_restart(conn.producer({}, recorder=recorder), start, topic)
    return recorder.history


def test_a_restarted_consumer_resumes_at_the_committed_offset_on_both(conn, seed):
    toy, mock = _toy_history(seed), _mock_history(conn)
    assert _outcome(check(mock)) == _outcome(check(toy))
    assert check(mock).guarantee == "exactly-once"
    processed = [[e.data["value"] for e in h if e.kind == "process"] for h in (toy, mock)]
    assert processed[0] == processed[1] == [v.encode() for v in VALUES]
    commits = [[e.data["offset"] for e in h if e.kind == "commit"] for h in (toy, mock)]
    assert commits[0] == commits[1] == list(range(1, 11))
    # The checker reads both Histories alike: the same event kinds carry the same data keys.
    shapes = [{e.kind: set(e.data) for e in h} for h in (toy, mock)]
    for kind in ("send", "ack", "poll", "process", "commit", "close"):
        assert shapes[1][kind] == shapes[0][kind], kind


def test_a_lost_produce_response_without_idempotence_duplicates_on_both(conn, seed):
    plan = FaultPlan((DropMessages(api="produce", kind="response", count=1),))
    cluster = Cluster(brokers=3, seed=seed, faults=plan)
    cluster.create_topic(scenarios.TOPIC)
    scenarios.publish(cluster, VALUES, {"enable.idempotence": False})
    scenarios.final_read(cluster)
    toy = check(cluster.history, delivered_by="log")

    def send(producer, topic, values):  # scenarios.publish's calls, on a real producer
        for value in values:
            producer.produce(topic, value)
        producer.flush(10)

    real = kafka.run_producer(send, conn, faults=plan,
                              config={"enable.idempotence": False, "request.timeout.ms": 1000})
    assert toy.guarantee == real.report.guarantee == "at-least-once"
    assert toy.lost == real.report.lost == []
    assert real.report.duplicated and real.report.duplicated[0] == b"m-000"
    assert set(real.report.duplicated) <= set(toy.duplicated)
    assert any(e.kind == "fault" for e in real.history)


def test_without_retries_the_app_is_told_it_failed_yet_the_write_exists(conn):
    comparison = kafka.replay(4, "retries=0", conn)
    assert comparison.same, comparison.summary()
    assert comparison.real.unacked_writes and not comparison.real.acked


# ----- ps1's loops, unchanged, against the mock ---------------------------------------------


def test_commit_then_process_skips_the_message_the_crash_interrupted(conn):
    comparison = kafka.replay(8, "failing", conn)
    assert comparison.same, comparison.summary()
    assert comparison.real.lost == comparison.toy.lost == [b"m-004"]


def test_process_then_commit_repeats_the_message_the_crash_interrupted(conn):
    comparison = kafka.replay(9, "failing", conn)
    assert comparison.same, comparison.summary()
    assert comparison.real.duplicated == comparison.toy.duplicated == [b"m-004"]
    assert not comparison.real.lost


def test_a_processing_failure_restarts_the_app_and_nothing_is_lost(conn):
    """scenarios.at_least_once, unchanged: the failed message is processed again, once."""
    run = kafka.run_consume_loop(at_least_once, conn, faults=FaultPlan((FailProcessing(3),)))
    assert run.restarts == 1
    assert run.report.guarantee == "exactly-once", run.report.summary()


# ----- the crash model on real clients ------------------------------------------------------


def test_a_crashed_consumer_commits_nothing_more_and_stays_dead(conn):
    recorder = kafka.Recorder()
    topic = conn.create_topic()
    kafka.seed_topic(conn, recorder, topic, VALUES)
    consumer = conn.consumer(CONSUMER, recorder=recorder)
    kafka._assign_all(consumer, topic, conn)
    polled = [consumer.poll(5.0) for _ in range(3)]
    consumer.commit(message=polled[1], asynchronous=False)
    kafka.crash(consumer)
    with pytest.raises(Crash):
        consumer.poll(0)
    with pytest.raises(Crash):
        consumer.commit(message=polled[2], asynchronous=False)
    successor = conn.consumer(CONSUMER, recorder=recorder)
    kafka._assign_all(successor, topic, conn)
    assert successor.poll(5.0).value() == b"m-002"
    successor.close()


def test_a_crash_point_in_the_plan_kills_every_client_of_the_app(conn):
    recorder = kafka.Recorder(FaultPlan((CrashClient("producer.produce", "after", 2),)))
    topic = conn.create_topic()
    app = recorder.app("producer-app")
    producer = conn.producer({"linger.ms": 0}, recorder=recorder, app=app)
    consumer = conn.consumer(CONSUMER, recorder=recorder, app=app)
    producer.produce(topic, "a")
    with pytest.raises(Crash):
        producer.produce(topic, "b")
    with pytest.raises(Crash):
        consumer.poll(0)
    lost = [e.data["values"] for e in recorder.history if e.kind == "lost_buffer"]
    assert lost and set(lost[0]) <= {b"a", b"b"}


def test_faults_the_bridge_cannot_stage_are_refused_by_name(conn):
    with pytest.raises(kafka.FaultNotSupported, match="KillBroker"):
        kafka.run_producer(lambda p, t, v: None, conn, faults=FaultPlan((KillBroker(0, at_ms=0),)))
    with pytest.raises(kafka.FaultNotSupported, match="DropMessages"):
        kafka.run_consume_loop(at_least_once, conn, faults=FaultPlan((DropMessages(),)))


def test_a_lost_response_can_only_be_staged_on_the_mock():
    real = kafka.connect("127.0.0.1:9")  # never contacted: the checks come first
    with pytest.raises(kafka.FaultNotSupported, match="mock"):
        kafka.lose_produce_responses(real, "events")
    comparison = kafka.replay(4, "failing", real)  # the toy side still runs
    assert comparison.real is None and comparison.same is None
    assert "mock" in comparison.skipped and "not run" in comparison.summary()


# ----- mock gaps: what the notebook says the mock does not model --------------------------------


def test_mock_gap_read_committed_returns_aborted_records(conn):
    comparison = kafka.replay(13, "fixed", conn)
    assert not comparison.toy.aborted_reads
    assert comparison.real.aborted_reads == [v.encode() for v in
                                             scenarios.message_values(5, "aborted")]
    assert not comparison.same and comparison.gaps


def test_mock_gap_a_plain_idempotent_retry_is_written_twice(conn):
    comparison = kafka.replay(4, "fixed", conn)
    assert not comparison.toy.duplicated
    assert comparison.real.duplicated and not comparison.real.lost


def test_mock_gap_a_transactional_retry_is_deduplicated(conn):
    def send(producer, topic, values):
        producer.init_transactions(10)
        producer.begin_transaction()
        for value in values:
            producer.produce(topic, value)
        producer.commit_transaction(10)

    run = kafka.run_producer(send, conn, config={"transactional.id": "t",
                                                 "request.timeout.ms": 1000},
                             faults=FaultPlan((DropMessages("produce", "response", 1),)))
    assert run.report.guarantee == "exactly-once", run.report.summary()


def test_mock_gap_transactional_offsets_are_not_stored(conn):
    assert kafka.probe_transactional_offsets(conn) == {"sent": 1, "committed": OFFSET_INVALID}


def test_mock_gap_a_zombie_is_not_fenced(conn):
    comparison = kafka.replay(12, "fixed", conn)
    assert comparison.toy.guarantee == "exactly-once"
    assert comparison.real.duplicated
    stopped = [e for e in comparison.real_history if e.kind == "note"
               and e.data["text"].startswith("stopped by")]
    assert stopped == []  # the zombie produced and committed without an error
    ended = [e.data["outcome"] for e in comparison.real_history if e.kind == "txn_end"]
    assert ended == ["commit", "commit"]


# ----- a real cluster (KAFKA_BOOTSTRAP_SERVERS) ---------------------------------------------------


@real_cluster
def test_real_cluster_process_then_commit_repeats_one_message():
    with kafka.connect() as conn:
        comparison = kafka.replay(9, "failing", conn)
    assert comparison.cluster == "cluster"
    assert comparison.same, comparison.summary()


@real_cluster
@pytest.mark.parametrize(("claim", "variant"), [(13, "fixed"), (11, "fixed"), (12, "fixed")])
def test_real_cluster_models_what_the_mock_does_not(claim, variant):
    with kafka.connect() as conn:
        comparison = kafka.replay(claim, variant, conn)
    assert comparison.same, comparison.summary()


@real_cluster
def test_real_cluster_stores_transactional_offsets():
    with kafka.connect() as conn:
        probe = kafka.probe_transactional_offsets(conn)
    assert probe["committed"] == probe["sent"]
