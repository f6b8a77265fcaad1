"""The transactional outbox on SQLite: outbound messages that survive a crash.

The article's last condition for at-least-once is that "the producer needs
persistent storage for outbound messages". An outbox is exactly that: the
application writes its business row and an outbox row in *one* database
transaction, and a relay later publishes unsent rows and marks each sent only
after Kafka acknowledged it. A crash anywhere loses nothing; a crash between
publish and mark publishes again, so consumers must deduplicate by event id.

This is a real SQLite file in WAL mode, not a simulation of one: the crash
tests kill real processes that use it.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    event_id TEXT UNIQUE NOT NULL,
    topic TEXT NOT NULL,
    key TEXT,
    payload TEXT NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
"""


class OutboxError(RuntimeError):
    """The outbox database is missing its tables, or the file is not SQLite."""


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
            raise OutboxError(f"{path} exists and is not an SQLite database; "
                              "refusing to open (and overwrite) it")


class Outbox:
    """An SQLite file holding outbound messages; see the module docstring for why."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        _refuse_non_sqlite(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r})"

    def close(self) -> None:
        """Close the connection (uncommitted work is rolled back by SQLite)."""
        self.db.close()

    @contextmanager
    def transaction(self):
        """One database transaction: commit on success, roll back on any exception."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def add(self, db: sqlite3.Connection, event_id: str, topic: str, payload: str,
            key: str | None = None) -> None:
        """Insert an outbox row inside the caller's transaction (with the business row)."""
        db.execute("INSERT INTO outbox (event_id, topic, key, payload) VALUES (?, ?, ?, ?)",
                   (event_id, topic, key, payload))

    def unsent(self, limit: int = 1_000) -> list[OutboxRow]:
        """Rows not yet acknowledged by Kafka, oldest first."""
        rows = self.db.execute(
            "SELECT id, event_id, topic, key, payload, sent FROM outbox WHERE sent = 0 "
            "ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [OutboxRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    def mark_sent(self, row_id: int) -> None:
        """Record that Kafka acknowledged the row (after the ack, never before)."""
        with self.transaction() as db:
            db.execute("UPDATE outbox SET sent = 1 WHERE id = ?", (row_id,))


class Relay:
    """Publishes unsent outbox rows in order and marks each one after its ack."""

    def __init__(self, outbox: Outbox, producer) -> None:
        self.outbox = outbox
        self.producer = producer

    def run_once(self) -> int:
        """Send every unsent row, wait for acks, mark the acknowledged prefix; return it."""
        rows = self.outbox.unsent()
        results: dict[int, object] = {}
        for row in rows:
            self.producer.produce(row.topic, row.payload, key=row.key,
                                  on_delivery=lambda err, _msg, rid=row.id:
                                  results.__setitem__(rid, err))
        self.producer.flush()
        marked = 0
        for row in rows:
            if row.id not in results or results[row.id] is not None:
                break
            self.outbox.mark_sent(row.id)
            marked += 1
        return marked
