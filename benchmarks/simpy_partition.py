"""Group 1, SimPy side: the same producers → leader → 2 followers flow, written idiomatically.

SimPy is the standard Python discrete-event simulator, so it is the honest
yardstick for "is course_lib's engine slow?". This model keeps the message
flow of the course_lib workload and nothing else:

* each producer process sends one record at a time to the leader over a lossy
  link (the same seeded fraction of requests and responses is dropped), waits
  for the reply or a 100 ms request timeout, and after a timeout backs off
  100 ms and resends;
* the leader process appends the record and ships it to both followers (as a
  fetch response would); each follower appends it and reports its new log end
  (as its next fetch request would); once both followers have it the leader
  acknowledges over the lossy link (``acks=all``).

Links are 1 time unit (1 virtual ms) of latency. What it leaves out, and
course_lib pays for: no history recording, no configuration, no idempotence
(a resend is appended again), no ISR bookkeeping, no fault injector, no
client API. Producers send forever, so the model is stepped for exactly as many
events as the course_lib run took.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import simpy

LATENCY_MS = 1
REQUEST_TIMEOUT_MS = 100
RETRY_BACKOFF_MS = 100


@dataclass
class Partition:
    """The model's shared state: mailboxes, the leader's log and replication progress."""

    env: simpy.Environment
    rng: random.Random
    loss_fraction: float
    leader_inbox: simpy.Store
    replica_inbox: simpy.Store
    follower_inboxes: tuple[simpy.Store, simpy.Store]
    leader_log: list = field(default_factory=list)
    follower_logs: tuple[list, list] = field(default_factory=lambda: ([], []))
    follower_leo: list = field(default_factory=lambda: [0, 0])
    pending: list = field(default_factory=list)  # (required log end, reply event)
    acked: int = 0
    dropped: int = 0

    def deliver(self, action) -> None:
        """Run ``action()`` one link latency from now (a broker-to-broker message)."""
        self.env.timeout(LATENCY_MS).callbacks.append(lambda _event: action())

    def deliver_lossy(self, action) -> None:
        """Like :meth:`deliver`, but the producer↔leader link may drop the message."""
        if self.rng.random() < self.loss_fraction:
            self.dropped += 1
            return
        self.deliver(action)


def new_partition(env: simpy.Environment, loss_fraction: float, seed: int) -> Partition:
    """An empty partition whose lossy link draws from its own seeded stream."""
    return Partition(env, random.Random(f"{seed}/lossy-link"), loss_fraction,
                     simpy.Store(env), simpy.Store(env), (simpy.Store(env), simpy.Store(env)))


def producer(env: simpy.Environment, part: Partition, name: str):
    """Send records one at a time; resend after a timeout until each is acknowledged."""
    sequence = 0
    while True:
        record = f"{name}-{sequence}"
        while True:
            reply = env.event()
            part.deliver_lossy(lambda record=record, reply=reply:
                               part.leader_inbox.put((record, reply)))
            outcome = yield reply | env.timeout(REQUEST_TIMEOUT_MS)
            if reply in outcome:
                break
            yield env.timeout(RETRY_BACKOFF_MS)
        part.acked += 1
        sequence += 1


def leader(env: simpy.Environment, part: Partition):
    """Append each request and ship the record to both followers."""
    while True:
        record, reply = yield part.leader_inbox.get()
        part.leader_log.append(record)
        end = len(part.leader_log)
        for inbox in part.follower_inboxes:
            part.deliver(lambda inbox=inbox, end=end, record=record: inbox.put((end, record)))
        part.pending.append((end, reply))


def follower(env: simpy.Environment, part: Partition, index: int):
    """Append what the leader ships and report the new log end back."""
    while True:
        end, record = yield part.follower_inboxes[index].get()
        part.follower_logs[index].append(record)
        part.deliver(lambda end=end: part.replica_inbox.put((index, end)))


def replication(env: simpy.Environment, part: Partition):
    """Track the followers' log ends; acknowledge every request both followers hold."""
    while True:
        index, end = yield part.replica_inbox.get()
        part.follower_leo[index] = max(part.follower_leo[index], end)
        high_watermark = min(part.follower_leo)
        waiting = []
        for required, reply in part.pending:
            if required <= high_watermark:
                part.deliver_lossy(lambda reply=reply: _answer(reply))
            else:
                waiting.append((required, reply))
        part.pending = waiting


def _answer(reply: simpy.Event) -> None:
    if not reply.triggered:
        reply.succeed()


@dataclass(frozen=True)
class SimpyRun:
    """What the model did in its fixed number of events."""

    events: int
    acked: int
    dropped: int
    virtual_ms: float


def run_simpy(producers: int, loss_fraction: float, events: int, seed: int = 0) -> SimpyRun:
    """Build the model and step it exactly ``events`` times."""
    env = simpy.Environment()
    part = new_partition(env, loss_fraction, seed)
    env.process(leader(env, part))
    env.process(replication(env, part))
    for index in range(2):
        env.process(follower(env, part, index))
    for index in range(producers):
        env.process(producer(env, part, f"p{index}"))
    for _ in range(events):
        env.step()
    return SimpyRun(events, part.acked, part.dropped, env.now)
