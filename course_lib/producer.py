"""The producer, with confluent-kafka's Python API over the simulated cluster.

``produce()`` only puts a record in memory; a sender delivers batches to the
partition leader, retries retriable failures after ``retry.backoff.ms``, gives
up after ``retries`` or ``delivery.timeout.ms``, and hands each record's
outcome to its ``on_delivery`` callback from a later ``poll()`` or ``flush()``
(never from inside ``produce()``), exactly as librdkafka does.

Two lessons live here. A record still in memory when the process dies is gone:
the article's "the producer must stay running during retries". And a request
whose response never arrived ends in an *indefinite* outcome: resending it
without idempotence can write it twice, and with more than one request in
flight can reorder it. With ``enable.idempotence`` each batch carries the
producer id, epoch and a per-partition sequence number that stays the same on
every retry, and the broker drops the repeat.

Simplifications: batches are bounded by ``batch.size`` counted as key + value
bytes; metadata is always fresh; the keyless "sticky" partition is drawn once
per topic from the producer's seeded random stream.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Mapping

from confluent_kafka import OFFSET_INVALID, Message, TopicPartition

from course_lib.client import Client
from course_lib.config import producer_config
from course_lib.errors import KafkaError, KafkaException, is_indefinite, kafka_error
from course_lib.transaction import FENCING_CODES, TransactionManager

UNKNOWN_LEADER_RETRY_MS = 100  # how often a batch with no leader looks again


class Batch:
    """Records for one partition that travel (and are retried) together."""

    __slots__ = ("tp", "number", "records", "size", "created_ms", "attempts", "base_seq",
                 "ready_ms", "indefinite", "sent", "done")

    def __init__(self, tp: tuple[str, int], created_ms: int, number: int = 0) -> None:
        self.tp = tp
        self.number = number  # creation order: retried batches go back in this order
        self.records: list[tuple[bytes | None, bytes | None, Callable | None]] = []
        self.size = 0
        self.created_ms = created_ms
        self.attempts = 0
        self.base_seq = -1
        self.ready_ms = created_ms
        self.indefinite = False
        self.sent = False
        self.done = False


def _to_bytes(data: str | bytes | None, what: str) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise TypeError(f"{what} must be str, bytes or None, not {type(data).__name__}")


class Producer(Client):
    """confluent_kafka.Producer's API: produce, poll, flush, len()."""

    role = "producer"

    def __init__(self, process, config: Mapping[str, object] | None = None) -> None:
        self.config = producer_config(config)
        name = self.config["client.id"] or process.cluster.unique_name("producer")
        super().__init__(process, name)
        self._queues: dict[tuple[str, int], deque[Batch]] = {}
        self._in_flight: dict[int, tuple[Batch, object, int]] = {}
        self._in_flight_to: dict[int, int] = {}
        # (on_delivery, error, message, offset, indefinite), served by poll()/flush()
        self._reports: deque[tuple] = deque()
        self._outstanding = 0
        self._drain_timer = None
        self._sticky: dict[str, int] = {}
        self._rng = self.world.rng(f"producer/{self.name}")
        self._next_seq: dict[tuple[str, int], int] = {}
        self._batches_made = 0
        self.idempotent = self.config["enable.idempotence"]
        transactional_id = self.config["transactional.id"]
        self._txn = (TransactionManager(self, transactional_id,
                                        self.config["transaction.timeout.ms"])
                     if transactional_id is not None else None)
        # A transactional producer gets its id and epoch from init_transactions().
        plain_idempotent = self.idempotent and self._txn is None
        self.producer_id = self.cluster.allocate_producer_id() if plain_idempotent else -1
        self.producer_epoch = 0 if plain_idempotent else -1
        self._epoch_bump_pending = False

    def __repr__(self) -> str:
        return f"<Producer {self.name} {self.config!r}>"

    def __len__(self) -> int:
        """Records produced whose delivery report the application has not yet seen."""
        return self._outstanding

    # ----- the public API ---------------------------------------------------------

    def produce(self, topic: str, value: str | bytes | None = None,
                key: str | bytes | None = None, partition: int = -1,
                on_delivery: Callable | None = None, callback: Callable | None = None,
                timestamp: int = 0, headers: object = None) -> None:
        """Queue one record in memory; delivery happens later, reported via poll()/flush()."""
        self._enter("producer.produce")
        value_bytes = _to_bytes(value, "value")
        key_bytes = _to_bytes(key, "key")
        if self._outstanding >= self.config["queue.buffering.max.messages"]:
            raise BufferError("Local: Queue full")
        tp = (topic, self._choose_partition(topic, key_bytes, partition))
        extra = {}
        if self._txn is not None:
            self._txn.before_produce(tp)
            extra["txn"] = self._txn.label
        self._append(tp, key_bytes, value_bytes, on_delivery or callback)
        self.world.history.record("send", self.name, topic=topic, partition=tp[1],
                                  key=key_bytes, value=value_bytes, **extra)
        self._exit("producer.produce")

    def poll(self, timeout: float | None = 0) -> int:
        """Serve delivery reports, waiting up to ``timeout`` seconds of virtual time for one.

        ``timeout`` None or negative waits until a report arrives, or returns at
        once when nothing is outstanding; the default 0 does not wait.
        """
        self._enter("producer.poll")
        deadline = self._deadline(timeout)
        # With nothing outstanding no report can come, so poll(None) returns at once
        # (librdkafka would block for ever; a simulation must not spin for ever).
        if not self._reports and timeout != 0 and (deadline is not None or self._outstanding):
            self.world.run(until_ms=deadline, until=lambda: bool(self._reports))
        served = self._serve_reports()
        self._exit("producer.poll")
        return served

    def flush(self, timeout: float | None = None) -> int:
        """Wait until every record is delivered or failed; returns how many are left."""
        self._enter("producer.flush")
        deadline = self._deadline(timeout)
        while self._outstanding:
            self._serve_reports()
            if not self._outstanding:
                break
            met = self.world.run(until_ms=deadline, until=lambda: bool(self._reports))
            if not met and (deadline is None or self.world.now_ms >= deadline):
                break
        self._serve_reports()
        self._exit("producer.flush")
        return self._outstanding

    def _deadline(self, timeout: float | None) -> int | None:
        if timeout is None or timeout < 0:
            return None
        return self.world.now_ms + int(timeout * 1000)

    # ----- transactions (confluent-kafka's API; the state machine is in transaction.py) -----

    def init_transactions(self, timeout: float | None = None) -> None:
        """Register transactional.id: fences older instances and aborts their open work."""
        self._enter("producer.init_transactions")
        self._transactions().init()
        self._exit("producer.init_transactions")

    def begin_transaction(self) -> None:
        """Start a transaction; records produced from now on commit or abort together."""
        self._enter("producer.begin_transaction")
        self._transactions().begin()
        self._exit("producer.begin_transaction")

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata,
                                    timeout: float | None = None) -> None:
        """Commit the consumer's positions as part of this transaction (on commit only)."""
        self._enter("producer.send_offsets_to_transaction")
        offsets = [(tp.topic, tp.partition, tp.offset) for tp in positions if tp.offset >= 0]
        self._transactions().send_offsets(offsets, group_metadata)
        self._exit("producer.send_offsets_to_transaction")

    def commit_transaction(self, timeout: float | None = None) -> None:
        """Flush, then commit: output records and sent offsets become visible together."""
        self._enter("producer.commit_transaction")
        self._transactions().commit()
        self._exit("producer.commit_transaction")

    def abort_transaction(self, timeout: float | None = None) -> None:
        """Abort: unsent records are purged, sent ones hidden from read_committed readers."""
        self._enter("producer.abort_transaction")
        self._transactions().abort()
        self._exit("producer.abort_transaction")

    def _transactions(self) -> TransactionManager:
        if self._txn is None:
            raise KafkaException(kafka_error(KafkaError._NOT_CONFIGURED,
                                             "The Transactional API requires transactional.id "
                                             "to be configured"))
        return self._txn

    def start_session(self, producer_id: int, epoch: int) -> None:
        """Adopt an id and epoch from the coordinator: sequences start again at 0."""
        self.producer_id, self.producer_epoch = producer_id, epoch
        self._next_seq.clear()
        self._epoch_bump_pending = False
        for queue in self._queues.values():
            for batch in queue:
                batch.base_seq = -1

    def purge_unsent(self) -> None:
        """Fail every record not yet sent with _PURGE_QUEUE, as librdkafka's abort does."""
        for queue in self._queues.values():
            while queue:
                batch = queue.popleft()
                self._complete(batch, KafkaError._PURGE_QUEUE, OFFSET_INVALID)

    def sequence_hole(self) -> bool:
        """Whether a failed batch left a gap in some partition's sequence numbers."""
        return self._epoch_bump_pending

    # ----- accumulating -------------------------------------------------------------

    def _choose_partition(self, topic: str, key: bytes | None, partition: int) -> int:
        partitions = self.cluster.partitions_of(topic)
        if partition >= 0:
            if partition not in partitions:
                raise ValueError(f"topic {topic!r} has no partition {partition}")
            return partition
        if key is not None:
            return partitions[zlib.crc32(key) % len(partitions)]
        if topic not in self._sticky:
            self._sticky[topic] = self._rng.choice(partitions)
        return self._sticky[topic]

    def _append(self, tp, key, value, on_delivery) -> None:
        queue = self._queues.setdefault(tp, deque())
        size = len(key or b"") + len(value or b"")
        batch = queue[-1] if queue else None
        if (batch is None or batch.sent
                or batch.size + size > self.config["batch.size"] and batch.records):
            self._batches_made += 1
            batch = Batch(tp, self.world.now_ms, self._batches_made)
            queue.append(batch)
            self.world.call_later(self.config["delivery.timeout.ms"], self._expire, batch)
        batch.records.append((key, value, on_delivery))
        batch.size += size
        self._outstanding += 1
        self._schedule_drain(self.config["linger.ms"])

    def _schedule_drain(self, delay_ms: int) -> None:
        at_ms = self.world.now_ms + delay_ms
        if self._drain_timer is not None and not self._drain_timer.cancelled:
            if self._drain_timer.at_ms <= at_ms:
                return
            self._drain_timer.cancel()
        incarnation = self.incarnation
        self._drain_timer = self.world.call_at(at_ms, self._drain, incarnation)

    # ----- sending --------------------------------------------------------------------

    def _drain(self, incarnation: int) -> None:
        if incarnation != self.incarnation or not self.alive:
            return
        self._drain_timer = None
        if self._epoch_bump_pending and self._txn is None:
            if self._in_flight:
                return  # receive() and _timed_out() drain again as the answers come in
            self._bump_epoch()
        wake_ms = None
        for tp, queue in self._queues.items():
            while queue:
                batch = queue[0]
                if batch.ready_ms > self.world.now_ms:
                    wake_ms = batch.ready_ms if wake_ms is None else min(wake_ms, batch.ready_ms)
                    break
                leader = self.cluster.partition(tp).leader
                if leader is None:
                    retry_ms = self.world.now_ms + UNKNOWN_LEADER_RETRY_MS
                    wake_ms = retry_ms if wake_ms is None else min(wake_ms, retry_ms)
                    break
                limit = self.config["max.in.flight.requests.per.connection"]
                if self._in_flight_to.get(leader, 0) >= limit:
                    break
                queue.popleft()
                self._send(batch, leader)
        if wake_ms is not None:
            self._schedule_drain(wake_ms - self.world.now_ms)

    def _bump_epoch(self) -> None:
        """Start a new epoch so that sequence numbers start again at 0 (KIP-360).

        An idempotent batch that failed for good leaves a hole in its
        partition's sequence, and the broker would refuse every later batch as
        out of order. Like librdkafka, wait until nothing is in flight, bump the
        epoch and renumber what is still queued. A queued retry whose earlier
        attempt may have been written can now be written twice: idempotence
        only holds within one epoch.
        """
        self._epoch_bump_pending = False
        self.producer_epoch += 1
        self._next_seq.clear()
        for queue in self._queues.values():
            for batch in queue:
                batch.base_seq = -1
        self.world.history.record("epoch_bump", self.name, producer_id=self.producer_id,
                                  epoch=self.producer_epoch)

    def _send(self, batch: Batch, leader: int) -> None:
        if self.idempotent and batch.base_seq < 0:
            batch.base_seq = self._next_seq.get(batch.tp, 0)
            self._next_seq[batch.tp] = batch.base_seq + len(batch.records)
        batch.sent = True
        batch.attempts += 1
        acks = self.config["acks"]
        correlation = self.cluster.network.next_correlation_id()
        self.world.history.record("attempt", self.name, topic=batch.tp[0],
                                  partition=batch.tp[1], attempt=batch.attempts,
                                  broker=leader, values=[r[1] for r in batch.records],
                                  base_seq=batch.base_seq)
        self.cluster.network.send(self, self.cluster.broker_name(leader), "produce", "request", {
            "topic": batch.tp[0], "partition": batch.tp[1],
            "records": [(k, v) for k, v, _cb in batch.records], "acks": acks,
            "producer_id": self.producer_id, "producer_epoch": self.producer_epoch,
            "base_seq": batch.base_seq, "timeout_ms": self.config["request.timeout.ms"],
            "transactional": self._txn is not None,
        }, correlation)
        if acks == "0":
            self._complete(batch, None, OFFSET_INVALID)
            return
        # delivery.timeout.ms bounds the whole send, so a retry waits for its
        # response only until the batch's delivery deadline (as Java's Sender
        # expires in-flight batches and librdkafka caps the request timeout).
        deadline_ms = batch.created_ms + self.config["delivery.timeout.ms"]
        wait_ms = max(1, min(self.config["request.timeout.ms"], deadline_ms - self.world.now_ms))
        timer = self.world.call_later(wait_ms, self._timed_out, correlation, self.incarnation)
        self._in_flight[correlation] = (batch, timer, leader)
        self._in_flight_to[leader] = self._in_flight_to.get(leader, 0) + 1

    def receive(self, envelope) -> None:
        """A produce response: success, or an error to retry or report."""
        entry = self._release(envelope.correlation_id)
        if entry is None:
            return
        batch, timer, _leader = entry
        timer.cancel()
        body = envelope.body
        if body["error"] is None:
            self._complete(batch, None, body["base_offset"])
        else:
            self._retry_or_fail(batch, body["error"])
        self._schedule_drain(0)

    def _timed_out(self, correlation: int, incarnation: int) -> None:
        if incarnation != self.incarnation:
            return
        entry = self._release(correlation)
        if entry is not None:
            self._retry_or_fail(entry[0], KafkaError.REQUEST_TIMED_OUT)
            self._schedule_drain(0)

    def _release(self, correlation: int):
        entry = self._in_flight.pop(correlation, None)
        if entry is not None:
            self._in_flight_to[entry[2]] -= 1
        return entry

    def _retry_or_fail(self, batch: Batch, code: int) -> None:
        if self._txn is not None and code in FENCING_CODES:
            self._complete(batch, code, OFFSET_INVALID, self._txn.on_batch_failed(code))
            return
        error = kafka_error(code)
        batch.indefinite = batch.indefinite or is_indefinite(error)
        elapsed_ms = self.world.now_ms - batch.created_ms
        backoff_ms = self.config["retry.backoff.ms"]
        in_time = elapsed_ms + backoff_ms < self.config["delivery.timeout.ms"]
        if error.retriable() and batch.attempts <= self.config["retries"] and in_time:
            batch.ready_ms = self.world.now_ms + backoff_ms
            self.world.history.record("retry", self.name, topic=batch.tp[0],
                                      partition=batch.tp[1], error=error.name(),
                                      values=[r[1] for r in batch.records])
            self._requeue(batch)
            return
        if error.retriable() and not in_time:
            code = KafkaError._MSG_TIMED_OUT  # a permanent error is reported as itself
        if self._txn is not None:
            self._txn.on_batch_failed(code)  # the open transaction can no longer commit
        self._complete(batch, code, OFFSET_INVALID)

    def _requeue(self, batch: Batch) -> None:
        """Put a batch to retry back in creation order, ahead of newer batches.

        librdkafka re-inserts retried messages sorted by their message id, so
        batches failing together (a leader change fails every request in
        flight) are resent in their original order, not reversed.
        """
        queue = self._queues[batch.tp]
        index = 0
        while index < len(queue) and queue[index].number < batch.number:
            index += 1
        queue.insert(index, batch)

    def _expire(self, batch: Batch) -> None:
        """delivery.timeout.ms reached for a batch still waiting in memory."""
        if batch.done or not self.alive:
            return
        queue = self._queues.get(batch.tp)
        if queue and batch in queue:
            queue.remove(batch)  # batch.indefinite already says if a send may have landed
            self._complete(batch, KafkaError._MSG_TIMED_OUT, OFFSET_INVALID)
            self._schedule_drain(0)

    def _complete(self, batch: Batch, code: int | None, base_offset: int,
                  error: KafkaError | None = None) -> None:
        batch.done = True
        if code is not None and self.idempotent and batch.base_seq >= 0:
            self._epoch_bump_pending = True  # its sequence numbers are a hole now
        if error is None and code is not None:
            error = kafka_error(code)
        topic, partition = batch.tp
        for index, (key, value, on_delivery) in enumerate(batch.records):
            offset = base_offset + index if code is None and base_offset >= 0 else base_offset
            message = Message(topic=topic, partition=partition, offset=offset, key=key,
                              value=value, error=error)
            self._reports.append((on_delivery, error, message, offset, batch.indefinite))

    def _serve_reports(self) -> int:
        served = 0
        while self._reports and self.alive:
            on_delivery, error, message, offset, indefinite = self._reports.popleft()
            self._outstanding -= 1
            served += 1
            if error is None:
                self.world.history.record("ack", self.name, topic=message.topic(),
                                          partition=message.partition(),
                                          offset=offset,  # message.offset() is None for -1001
                                          value=message.value())
            else:
                self.world.history.record("nack", self.name, topic=message.topic(),
                                          partition=message.partition(),
                                          value=message.value(), error=error.name(),
                                          indefinite=indefinite)
            if on_delivery is not None:
                on_delivery(error, message)
        return served

    def _die(self) -> None:
        lost = [r[1] for q in self._queues.values() for b in q for r in b.records]
        lost += [r[1] for b, _t, _l in self._in_flight.values() for r in b.records]
        super()._die()
        if lost:
            self.world.history.record("lost_buffer", self.name, values=lost)
        self._queues.clear()
        self._in_flight.clear()
        self._in_flight_to.clear()
        self._reports.clear()
