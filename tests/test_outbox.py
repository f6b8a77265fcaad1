"""The SQLite outbox and inbox: atomic writes, relay ordering, dedupe, real SIGKILLs."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from course_lib.checker import check
from course_lib.cluster import Cluster
from course_lib.faults import FaultPlan, KillBroker, RestartBroker
from course_lib.outbox import Inbox, Outbox, OutboxError, Relay, open_database
from course_lib.sim import World

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def outbox(tmp_path) -> Outbox:
    made = Outbox(tmp_path / "shop.db")
    yield made
    made.close()


def _count(db: sqlite3.Connection, table: str) -> int:
    return db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]


def test_database_uses_wal_and_full_sync(outbox):
    assert outbox.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_order_and_outbox_row_commit_together(outbox):
    outbox.place_order("1", "ada", 500, "orders", '{"event_id": "order-1"}')
    assert _count(outbox.db, "orders") == 1
    assert [row.event_id for row in outbox.unsent()] == ["order-1"]


def test_a_failed_business_write_leaves_no_outbox_row(outbox):
    outbox.place_order("1", "ada", 500, "orders", "{}")
    with pytest.raises(sqlite3.IntegrityError):
        outbox.place_order("1", "bob", 700, "orders", "{}")  # duplicate order id
    assert _count(outbox.db, "orders") == 1
    assert len(outbox.unsent()) == 1


def test_an_outbox_row_without_its_business_row_is_rolled_back(outbox):
    with pytest.raises(RuntimeError), outbox.db:
        outbox.add("order-9", "orders", "{}")
        raise RuntimeError("the application died mid-transaction")
    assert outbox.unsent() == []


def _toy_producer(plan: FaultPlan | None = None, delivery_timeout_ms: int = 120_000):
    cluster = Cluster(brokers=3, seed=0, faults=plan)
    cluster.create_topic("orders", {"min.insync.replicas": 2})
    return cluster, cluster.producer({"delivery.timeout.ms": delivery_timeout_ms})


def test_relay_publishes_in_order_and_marks_after_the_ack(outbox):
    for number in range(5):
        outbox.place_order(str(number), "ada", 100, "orders", f"payload-{number}")
    cluster, producer = _toy_producer()
    assert Relay(outbox, producer).run_once() == 5
    assert outbox.unsent() == []
    sends = [e.data["value"] for e in cluster.history if e.kind == "send"]
    assert sends == [f"payload-{n}".encode() for n in range(5)]
    first_ack = next(e.time_ms for e in cluster.history if e.kind == "ack")
    assert first_ack > 0  # marking happened after a real round trip, not at produce time


def test_relay_marks_nothing_when_kafka_never_acknowledges(outbox):
    outbox.place_order("1", "ada", 100, "orders", "payload-1")
    plan = FaultPlan(tuple(KillBroker(b, at_ms=0) for b in range(3))
                     + tuple(RestartBroker(b, at_ms=400_000) for b in range(3)))
    _cluster, producer = _toy_producer(plan, delivery_timeout_ms=40_000)
    assert Relay(outbox, producer).run_once() == 0
    assert [row.event_id for row in outbox.unsent()] == ["order-1"]


def test_inbox_runs_an_effect_once_per_event_id(outbox):
    inbox = Inbox(outbox.db)

    def pay(db):
        db.execute("INSERT INTO payments VALUES ('order-1', '1', 500)")

    assert inbox.handle("order-1", pay) is True
    assert inbox.handle("order-1", pay) is False
    assert _count(outbox.db, "payments") == 1
    assert inbox.seen("order-1") and not inbox.seen("order-2")


def test_inbox_mark_and_effect_roll_back_together(outbox):
    inbox = Inbox(outbox.db)

    def failing_effect(db):
        db.execute("INSERT INTO payments VALUES ('order-1', '1', 500)")
        raise RuntimeError("payment provider down")

    with pytest.raises(RuntimeError):
        inbox.handle("order-1", failing_effect)
    assert not inbox.seen("order-1")
    assert _count(outbox.db, "payments") == 0


def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"my precious notes, not a database\n")
    with pytest.raises(OutboxError, match="not an SQLite database"):
        Outbox(path)
    assert path.read_bytes() == b"my precious notes, not a database\n"


def test_a_missing_database_is_an_error_when_not_creating(tmp_path):
    with pytest.raises(OutboxError, match="no database at"):
        open_database(tmp_path / "absent.db", create=False)
    assert not (tmp_path / "absent.db").exists()


def test_a_database_without_the_tables_is_an_error_when_not_creating(tmp_path):
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE unrelated (x)").connection.close()
    with pytest.raises(OutboxError, match="lacks the tables orders, outbox, inbox, payments"):
        open_database(path, create=False)


# ----- the real crash test ----------------------------------------------------------------

KILLS = 200
TARGET_ORDERS = 1_000
LIVES_MAX = 3 * KILLS  # process starts allowed: a bound on the loop that no clock decides


def _mock_cluster() -> tuple[Producer, str]:
    """librdkafka's in-process mock cluster, hosted by this test process."""
    host = Producer({"test.mock.num.brokers": 1, "log_level": 0})
    brokers = host.list_topics(timeout=10).brokers.values()
    bootstrap = ",".join(f"{b.host}:{b.port}" for b in brokers)
    host.list_topics(topic="orders", timeout=10)  # auto-creates the topic
    return host, bootstrap


def _read_topic(bootstrap: str) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "audit",
                         "log_level": 0})
    partitions = consumer.list_topics("orders", timeout=10).topics["orders"].partitions
    consumer.assign([TopicPartition("orders", p, 0) for p in partitions])
    values = []
    while (msg := consumer.poll(2.0)) is not None:
        if not msg.error():
            values.append(msg.value())
    consumer.close()
    return values


def _work_left(db_path: Path) -> bool:
    if not db_path.exists():
        return True
    with sqlite3.connect(db_path) as db:
        try:
            orders = _count(db, "orders")
            unsent = db.execute("SELECT COUNT(*) FROM outbox WHERE sent = 0").fetchone()[0]
            paid = _count(db, "payments")
        except sqlite3.OperationalError:
            return True
    return orders < TARGET_ORDERS or unsent > 0 or paid < orders


def test_outbox_and_inbox_survive_hundreds_of_real_sigkills(tmp_path, seed, record_property):
    host, bootstrap = _mock_cluster()
    db_path = tmp_path / "shop.db"
    rng = random.Random(f"sigkill/{seed}")
    command = [sys.executable, "-m", "tests.helpers.shop", str(db_path), bootstrap,
               str(TARGET_ORDERS)]
    kills = kills_mid_work = 0
    started = time.monotonic()
    for lives in range(LIVES_MAX + 1):
        assert lives < LIVES_MAX, f"the shop never finished: {kills} kills in {lives} lives"
        child = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE)
        if kills < KILLS:
            time.sleep(rng.uniform(0.02, 0.25))  # a seeded moment to kill at, not a check
            if child.poll() is None:
                kills_mid_work += _work_left(db_path)
                child.send_signal(signal.SIGKILL)
                child.wait()
                kills += 1
                continue
        _out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err.decode()[-2000:]
        if kills >= KILLS:
            break

    raw = [json.loads(value)["order_id"] for value in _read_topic(bootstrap)]
    db = open_database(db_path, create=False)
    world = World(seed)

    def record(kind: str, actor: str, order_id: str) -> None:
        # librdkafka's default partitioner for keyed messages: CRC32(key) % partitions.
        world.history.record(kind, actor, topic="orders", offset=-1,
                             partition=zlib.crc32(order_id.encode()) % 4,
                             value=f"order-{order_id}".encode())

    for (order_id,) in db.execute("SELECT id FROM orders ORDER BY id"):
        record("send", "shop", order_id)
    for (order_id,) in db.execute("SELECT order_id FROM payments ORDER BY rowid"):
        record("process", "payments", order_id)
    for partition in range(4):
        world.history.record("final_read", "audit", topic="orders", partition=partition,
                             values=[f"order-{o}".encode() for o in raw
                                     if zlib.crc32(o.encode()) % 4 == partition])
    effects = check(world.history, delivered_by="process")
    published = check(world.history, delivered_by="log")
    db.close()
    host.flush(0)

    record_property("kills", kills)
    record_property("kills_mid_work", kills_mid_work)
    record_property("republished", len(published.duplicated))
    print(f"\n{kills} SIGKILLs ({kills_mid_work} with work left) in "
          f"{time.monotonic() - started:.1f} s; {len(raw)} messages in the topic for "
          f"{effects.sent} orders; payments: {effects.summary()}")
    assert kills == KILLS and kills_mid_work >= KILLS // 2
    assert effects.sent == TARGET_ORDERS
    assert not published.lost, "an order never reached Kafka"
    assert effects.guarantee == "exactly-once", effects.summary()
    assert not effects.reordered, "payments of one partition ran out of order"
