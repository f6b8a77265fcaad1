"""The transactional outbox and the consumer's inbox, on a real SQLite file.

The article's last condition for at-least-once is that "the producer needs
persistent storage for outbound messages". The outbox is that storage: the
application writes its business row and an outbox row in *one* database
transaction, and a :class:`Relay` later publishes unsent rows in order and
marks each sent only after Kafka acknowledged it. A crash anywhere loses
nothing; a crash between publish and mark publishes again, so the relay is
at-least-once and consumers deduplicate with an :class:`Inbox`: the event id is
inserted in the same transaction as the effect, so an effect and its "seen"
mark are both there or both absent.

This is a real SQLite file (WAL journal, ``synchronous=FULL``), and the tests
kill real processes that write to it with SIGKILL. Connections are in Python's
default mode, where ``with db:`` is one transaction, as the ps3 contract says.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    customer TEXT NOT NULL,
    amount_cents INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT UNIQUE NOT NULL,
    topic TEXT NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS inbox (
    event_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS payments (
    event_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    amount_cents INTEGER NOT NULL
);
"""

TABLES = ("orders", "outbox", "inbox", "payments")


class OutboxError(RuntimeError):
    """The database file is missing, is not SQLite, or lacks the course's tables."""


class OutboxRow(NamedTuple):
    """One outbound message waiting in (or already sent from) the outbox."""

    id: int
    event_id: str
    topic: str
    key: str | None
    payload: str
    sent: bool


def _refuse_non_sqlite(path: Path) -> None:
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header != SQLITE_HEADER:
            raise OutboxError(f"{path} is not an SQLite database (its first bytes are "
                              f"{header[:16]!r}); refusing to open or overwrite it")


def open_database(path: str | Path, create: bool = True) -> sqlite3.Connection:
    """Open (or create) the course database: WAL, full sync, the four tables.

    With ``create=False`` a missing file or missing tables is an error instead
    of a silently empty new database: a relay pointed at the wrong path must
    not report "nothing to send".
    """
    path = Path(path)
    if not create and not path.exists():
        raise OutboxError(f"no database at {path}; create it first (create=True)")
    _refuse_non_sqlite(path)
    try:
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if create:
            db.executescript(SCHEMA)
        missing = [t for t in TABLES if not db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (t,)).fetchone()]
    except sqlite3.DatabaseError as error:
        raise OutboxError(f"{path} could not be used as an SQLite database: {error}") from None
    if missing:
        db.close()
        raise OutboxError(f"{path} lacks the tables {', '.join(missing)}")
    return db


class Outbox:
    """Outbound messages stored with the business data that caused them."""

    def __init__(self, path: str | Path, create: bool = True) -> None:
        self.path = Path(path)
        self.db = open_database(self.path, create)

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back by SQLite)."""
        self.db.close()

    def add(self, event_id: str, topic: str, payload: str, key: str | None = None) -> None:
        """Insert an outbox row in the current transaction (call inside ``with outbox.db:``)."""
        self.db.execute("INSERT INTO outbox (event_id, topic, key, payload) VALUES (?, ?, ?, ?)",
                        (event_id, topic, key, payload))

    def place_order(self, order_id: str, customer: str, amount_cents: int, topic: str,
                    payload: str) -> None:
        """The business write and its outbound event, in one transaction."""
        with self.db:
            self.db.execute("INSERT INTO orders (id, customer, amount_cents) VALUES (?, ?, ?)",
                            (order_id, customer, amount_cents))
            self.add(f"order-{order_id}", topic, payload, key=order_id)

    def unsent(self, limit: int = 1_000) -> list[OutboxRow]:
        """Rows not yet acknowledged by Kafka, oldest first."""
        rows = self.db.execute(
            "SELECT id, event_id, topic, key, payload, sent FROM outbox WHERE sent = 0 "
            "ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def mark_sent(self, row_id: int) -> None:
        """Record that Kafka acknowledged the row (after the ack, never before)."""
        with self.db:
            self.db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))


class Relay:
    """Publishes unsent outbox rows in order and marks each one after its ack."""

    def __init__(self, outbox: Outbox, producer) -> None:
        self.outbox = outbox
        self.producer = producer

    def run_once(self, timeout_s: float | None = None) -> int:
        """Send unsent rows, wait for acks, mark the acknowledged prefix; return its size.

        Marking stops at the first row without a successful ack, so a later row
        is never marked while an earlier one may still be missing.
        """
        rows = self.outbox.unsent()
        results: dict[int, object] = {}
        for row in rows:
            self.producer.produce(row.topic, row.payload, key=row.key,
                                  on_delivery=lambda err, _msg, rid=row.id:
                                  results.__setitem__(rid, err))
        if timeout_s is None:
            self.producer.flush()
        else:
            self.producer.flush(timeout_s)
        marked = 0
        for row in rows:
            if row.id not in results or results[row.id] is not None:
                break
            self.outbox.mark_sent(row.id)
            marked += 1
        return marked


class Inbox:
    """Consumer-side deduplication: the event id and the effect commit together."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def handle(self, event_id: str, effect: Callable[[sqlite3.Connection], object]) -> bool:
        """Run ``effect(db)`` unless ``event_id`` was handled before; True if it ran."""
        with self.db:
            try:
                self.db.execute("INSERT INTO inbox (event_id) VALUES (?)", (event_id,))
            except sqlite3.IntegrityError:
                return False
            effect(self.db)
        return True

    def seen(self, event_id: str) -> bool:
        """Whether ``event_id`` has been handled."""
        return self.db.execute("SELECT 1 FROM inbox WHERE event_id = ?",
                               (event_id,)).fetchone() is not None
