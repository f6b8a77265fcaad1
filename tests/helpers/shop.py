"""A real shop process for the SIGKILL test: place orders, relay them, pay for them.

Run as ``python -m tests.helpers.shop DB BOOTSTRAP TARGET``. Every step keeps its
state in the SQLite file or in Kafka, never only in memory, so the process can be
killed at any instruction and simply started again. It exits 0 once ``TARGET``
orders exist, every outbox row is acknowledged, and every payment is handled.
"""

from __future__ import annotations

import json
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from course_lib.outbox import Inbox, Outbox, Relay

TOPIC = "orders"
ORDERS_PER_ROUND = 3


def _partitions(client) -> list[int]:
    return sorted(client.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions)


def _consumer(bootstrap: str) -> Consumer:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "payments",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5,
                         "log_level": 0})
    tps = [TopicPartition(TOPIC, p) for p in _partitions(consumer)]
    committed = consumer.committed(tps, timeout=10)
    consumer.assign([TopicPartition(TOPIC, tp.partition,
                                    tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                     for tp in committed])
    return consumer


def _place_orders(outbox: Outbox, target: int) -> int:
    placed = outbox.db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]
    for number in range(placed, min(placed + ORDERS_PER_ROUND, target)):
        order_id = f"{number:05d}"
        amount_cents = 100 + (number * 37) % 900
        payload = json.dumps({"event_id": f"order-{order_id}", "order_id": order_id,
                              "amount_cents": amount_cents})
        outbox.place_order(order_id, f"customer-{number % 17}", amount_cents, TOPIC, payload)
    return outbox.db.execute("SELECT COUNT(*) FROM orders").fetchone()[0]


def _pay(inbox: Inbox, consumer: Consumer) -> None:
    while (msg := consumer.poll(0.02)) is not None:
        if msg.error():
            continue
        event = json.loads(msg.value())
        inbox.handle(event["event_id"], lambda db, e=event: db.execute(
            "INSERT INTO payments (event_id, order_id, amount_cents) VALUES (?, ?, ?)",
            (e["event_id"], e["order_id"], e["amount_cents"])))
        consumer.commit(message=msg, asynchronous=False)


def _caught_up(consumer: Consumer) -> bool:
    """Every partition's committed offset has reached its high watermark.

    ``position()`` cannot say this: right after a restart it stays
    OFFSET_INVALID for a partition that has nothing new to return.
    """
    for committed in consumer.committed(consumer.assignment(), timeout=10):
        high = consumer.get_watermark_offsets(committed, timeout=10)[1]
        if max(committed.offset, 0) < high:
            return False
    return True


def main(db_path: str, bootstrap: str, target: int) -> int:
    """Work until done; any kill is survivable by running this again."""
    outbox = Outbox(db_path)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "enable.idempotence": False, "log_level": 0})
    consumer = _consumer(bootstrap)
    inbox = Inbox(outbox.db)
    while True:
        placed = _place_orders(outbox, target)
        Relay(outbox, producer).run_once(timeout_s=10)
        _pay(inbox, consumer)
        if placed >= target and not outbox.unsent() and _caught_up(consumer):
            consumer.close()
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
