"""A correct consume-transform-produce loop, and a harness that attacks it.

The loop is the reference answer to ps4, so it lives with the tests, not in
``course_lib`` where students could import it.
"""

from __future__ import annotations

from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

from course_lib.cluster import Cluster
from course_lib.faults import Crash, FaultPlan, ProcessingError

INPUT, OUTPUT, GROUP, TXN_ID = "in", "out", "eos", "eos-app"
CONSUMER = {"group.id": GROUP, "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "isolation.level": "read_committed"}


def rewind(consumer) -> None:
    """After an abort, go back to what the group last committed (KIP-98's rule)."""
    for tp in consumer.committed(consumer.assignment()):
        offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))


def process_transactionally(consumer, producer, transform) -> None:
    """Each input's outputs and its offset commit in one transaction."""
    producer.init_transactions()
    while (msg := consumer.poll(1.0)) is not None:
        producer.begin_transaction()
        try:
            for topic, key, value in transform(msg):
                producer.produce(topic, value, key=key)
            producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                 consumer.consumer_group_metadata())
            producer.commit_transaction()
        except ProcessingError:
            producer.abort_transaction()
            rewind(consumer)
        except KafkaException as error:
            if not error.args[0].txn_requires_abort():
                raise
            producer.abort_transaction()
            rewind(consumer)


def build(seed: int, plan: FaultPlan, inputs: int) -> Cluster:
    """Input and output topics (RF=3, min.insync=2) with ``inputs`` committed records."""
    cluster = Cluster(brokers=3, seed=seed)
    for topic in (INPUT, OUTPUT):
        cluster.create_topic(topic, {"min.insync.replicas": 2})
    seeder = cluster.process("seeder").producer({})
    for number in range(inputs):
        seeder.produce(INPUT, f"m-{number:03d}")
    seeder.flush()
    cluster.install_faults(plan)  # the attack starts once the stage is set
    return cluster


def run_instance(cluster: Cluster, zombie_at: int | None = None,
                 max_restarts: int = 20) -> list[str]:
    """Run the loop until it finishes, restarting after crashes; returns what ended each run.

    With ``zombie_at = k`` the first instance stalls while transforming its
    k-th message: its group session expires, a successor runs to the end, and
    then the stalled instance wakes up and tries to finish its transaction.
    """
    endings = []
    for attempt in range(max_restarts):
        app = cluster.process("eos")
        consumer = app.consumer(CONSUMER)
        producer = app.producer({"transactional.id": TXN_ID})
        process = app.processor()
        seen = [0]

        def transform(msg, consumer=consumer, process=process, seen=seen, first=attempt == 0):
            seen[0] += 1
            if first and zombie_at is not None and seen[0] == zombie_at:
                cluster.history.record("note", "eos", text="stalls; its session expires")
                cluster.coordinator.leave(GROUP, consumer.name)
                endings.extend(run_instance(cluster, None, max_restarts))
                cluster.history.record("note", "eos", text="wakes up")
            process(msg)
            return [(OUTPUT, msg.key(), b"out:" + msg.value())]

        try:
            consumer.subscribe([INPUT])
            process_transactionally(consumer, producer, transform)
            consumer.close()
            endings.append("done")
            return endings
        except Crash:
            endings.append("crash")
        except KafkaException as error:
            endings.append(error.args[0].name())
            if zombie_at is not None and attempt == 0:
                app.die()
                return endings
        app.die()
    return endings
