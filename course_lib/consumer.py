"""The consumer, with confluent-kafka's Python API over the simulated cluster.

Where a consumer resumes after a restart is its group's committed offset, so
the order of ``process`` and ``commit`` in the learner's loop decides the
guarantee: commit first and a crash skips a message (at-most-once); process
first and a crash repeats one (at-least-once).

Auto-commit follows the Java client's timing, which the course's claims rely
on: during ``poll()``, once ``auto.commit.interval.ms`` has passed, it commits
(asynchronously) the offsets of the messages *earlier* polls returned. With
processing that finishes before the next poll this can only duplicate; with
processing handed elsewhere it can lose. (librdkafka commits stored offsets
from a background timer instead; the notebooks say so.)

Simplifications: metadata and committed-offset lookups are instant; one fetch
per partition is in flight at a time, and a fetch sent to a broker that no
longer leads is abandoned (a waiting ``poll()`` looks every
``METADATA_CHECK_MS``), standing in for the closed connection a real client
would see; ``poll(None)`` waits at most one virtual hour so a forgotten timeout
cannot spin forever.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Mapping

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    Message,
    TopicPartition,
)

from course_lib.client import Client
from course_lib.config import consumer_config
from course_lib.errors import KafkaError, KafkaException, kafka_error

POLL_FOREVER_MS = 3_600_000
METADATA_CHECK_MS = 100  # how often a waiting poll() looks for a new leader


class GroupMetadata:
    """What ``consumer_group_metadata()`` returns: group, generation and member."""

    def __init__(self, group_id: str | None, generation: int, member_id: str) -> None:
        self.group_id = group_id
        self.generation = generation
        self.member_id = member_id

    def __repr__(self) -> str:
        return f"GroupMetadata({self.group_id!r}, {self.generation!r}, {self.member_id!r})"


class Consumer(Client):
    """confluent_kafka.Consumer's API: subscribe/assign, poll, commit, seek, close."""

    role = "consumer"

    def __init__(self, process, config: Mapping[str, object] | None = None) -> None:
        self.config = consumer_config(config)
        name = self.config["client.id"] or process.cluster.unique_name("consumer")
        super().__init__(process, name)
        self.group_id = self.config["group.id"]
        self.closed = False
        self._subscription: list[str] | None = None
        self._generation = -1
        self._assignment: list[tuple[str, int]] = []
        self._positions: dict[tuple[str, int], int] = {}
        self._consumed: set[tuple[str, int]] = set()
        self._buffers: dict[tuple[str, int], deque] = {}
        self._fetching: dict[tuple[str, int], int] = {}
        self._requests: dict[int, tuple[str, object]] = {}
        self._commit_results: dict[int, int | None] = {}
        self._next_auto_commit_ms = self.world.now_ms + self.config["auto.commit.interval.ms"]
        self._rotation = 0

    def __repr__(self) -> str:
        return f"<Consumer {self.name} group={self.group_id!r}>"

    # ----- membership and assignment -------------------------------------------------

    def subscribe(self, topics: list[str], on_assign=None, on_revoke=None) -> None:
        """Join the group for ``topics``; partitions are assigned by the coordinator."""
        self._enter("consumer.subscribe")
        self._check_open()
        if self.group_id is None:
            raise KafkaException(kafka_error(KafkaError._INVALID_ARG,
                                             "subscribe() needs a group.id"))
        for topic in topics:
            self.cluster.partitions_of(topic)
        self._subscription = list(topics)
        self.cluster.coordinator.join(self.group_id, self.name, self._subscription)
        self._sync_assignment()
        self._exit("consumer.subscribe")

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Take these partitions directly, outside group management."""
        self._enter("consumer.assign")
        self._check_open()
        self._subscription = None
        self._set_assignment([(tp.topic, tp.partition) for tp in partitions])
        for tp in partitions:
            if tp.offset >= 0 or tp.offset in (OFFSET_BEGINNING, OFFSET_END):
                self._seek_to((tp.topic, tp.partition), tp.offset)
        self._exit("consumer.assign")

    def assignment(self) -> list[TopicPartition]:
        """The partitions this consumer currently reads."""
        self.process.check_alive("consumer.assignment")
        self._check_open()
        return [TopicPartition(t, p) for t, p in self._assignment]

    def _sync_assignment(self) -> None:
        if self._subscription is None:
            return
        group = self.cluster.coordinator.group(self.group_id)
        if group.generation == self._generation:
            return
        self._generation = group.generation
        # Kafka's eager rebalance revokes every partition before assigning again, so
        # even a partition this consumer keeps restarts from the group's committed
        # offset: another member may have read and committed it in the meantime.
        self._set_assignment([])
        self._set_assignment(list(group.assignment.get(self.name, [])))

    def _set_assignment(self, tps: list[tuple[str, int]]) -> None:
        for tp in list(self._positions):
            if tp not in tps:
                self._positions.pop(tp)
                self._buffers.pop(tp, None)
                self._fetching.pop(tp, None)
                self._consumed.discard(tp)
        self._assignment = tps
        for tp in tps:
            if tp not in self._positions:
                self._positions[tp] = self._start_offset(tp)
                self._buffers[tp] = deque()

    def _start_offset(self, tp: tuple[str, int]) -> int:
        if self.group_id is not None:
            committed = self.cluster.coordinator.committed(self.group_id, tp)
            if committed is not None:
                return committed
        return self._reset_offset(tp)

    def _reset_offset(self, tp: tuple[str, int]) -> int:
        policy = self.config["auto.offset.reset"]
        if policy in ("earliest", "smallest", "beginning"):
            return 0
        if policy in ("none", "error"):
            raise KafkaException(kafka_error(KafkaError._AUTO_OFFSET_RESET,
                                             f"no committed offset for {tp} and "
                                             f"auto.offset.reset={policy}"))
        return self._high_watermark(tp)

    def _high_watermark(self, tp: tuple[str, int]) -> int:
        leader = self.cluster.partition(tp).leader
        return 0 if leader is None else self.cluster.brokers[leader].logs[tp].high_watermark

    # ----- polling -------------------------------------------------------------------------

    def poll(self, timeout: float | None = None) -> Message | None:
        """Return the next message, or None if none arrives within ``timeout`` seconds."""
        self._enter("consumer.poll")
        self._check_open()
        self._sync_assignment()
        self._maybe_auto_commit()
        wait_ms = POLL_FOREVER_MS if timeout is None or timeout < 0 else int(timeout * 1000)
        deadline = self.world.now_ms + wait_ms
        message = self._next_message()
        while message is None and self.world.now_ms < deadline and self.process.alive:
            self._start_fetches()
            # Wake up now and then: a leader that died holding our fetch never answers,
            # and fresh metadata lets the next _start_fetches() go to its successor.
            self.world.run(until_ms=min(deadline, self.world.now_ms + METADATA_CHECK_MS),
                           until=self._has_data)
            self._sync_assignment()
            message = self._next_message()
        self.process.check_alive("consumer.poll")
        if message is not None:
            self.world.history.record("poll", self.name, topic=message.topic(),
                                      partition=message.partition(),
                                      offset=message.offset(), value=message.value())
        self._exit("consumer.poll")
        return message

    def consume(self, num_messages: int = 1, timeout: float | None = None) -> list[Message]:
        """Up to ``num_messages`` messages; waits up to ``timeout`` seconds for the first."""
        first = self.poll(timeout)
        if first is None:
            return []
        batch = [first]
        while len(batch) < num_messages:
            message = self.poll(0)
            if message is None:
                break
            batch.append(message)
        return batch

    def _has_data(self) -> bool:
        return any(self._ready(tp) for tp in self._assignment) or not self.process.alive

    def _ready(self, tp: tuple[str, int]) -> bool:
        buffer = self._buffers.get(tp)
        return bool(buffer)

    def _next_message(self) -> Message | None:
        count = len(self._assignment)
        for step in range(count):
            tp = self._assignment[(self._rotation + step) % count]
            buffer = self._buffers[tp]
            while buffer:
                record = buffer.popleft()
                # Older offsets are stale; a gap is normal under read_committed,
                # where the broker leaves aborted records out of the response.
                if record.offset < self._positions[tp]:
                    continue
                self._positions[tp] = record.offset + 1
                if record.control is not None:
                    continue
                self._consumed.add(tp)
                self._rotation = (self._rotation + step + 1) % count
                return Message(topic=tp[0], partition=tp[1], offset=record.offset,
                               key=record.key, value=record.value,
                               timestamp=(1, record.timestamp_ms))
        return None

    def _start_fetches(self) -> None:
        for tp in self._assignment:
            self._abandon_stale_fetch(tp)
            if tp in self._fetching or self._buffers[tp]:
                continue
            leader = self.cluster.partition(tp).leader
            if leader is None:
                self._retry_later(tp)
                continue
            correlation = self.cluster.network.next_correlation_id()
            self._fetching[tp] = correlation
            self._requests[correlation] = ("fetch", (tp, self._positions[tp], leader))
            self.cluster.network.send(self, self.cluster.broker_name(leader), "fetch", "request", {
                "topic": tp[0], "partition": tp[1], "fetch_offset": self._positions[tp],
                "max_wait_ms": self.config["fetch.max.wait.ms"],
                "max_records": self.config["max.poll.records"],
                "isolation": self.config["isolation.level"],
            }, correlation)
            timeout_ms = self.config["request.timeout.ms"] + self.config["fetch.max.wait.ms"]
            self.world.call_later(timeout_ms, self._fetch_timed_out, correlation,
                                  self.incarnation)

    def _abandon_stale_fetch(self, tp: tuple[str, int]) -> None:
        """Forget a fetch sent to a broker that no longer leads ``tp`` (it may be dead).

        Metadata is always fresh here, and a real client also learns of a dead
        broker at once from its closed connection; without this the consumer
        would sit out ``request.timeout.ms`` after every leader failover.
        """
        correlation = self._fetching.get(tp)
        request = self._requests.get(correlation) if correlation is not None else None
        if request is not None and request[1][2] != self.cluster.partition(tp).leader:
            del self._fetching[tp]
            del self._requests[correlation]

    def _retry_later(self, tp: tuple[str, int]) -> None:
        marker = -self.cluster.network.next_correlation_id()
        self._fetching[tp] = marker
        self.world.call_later(self.config["retry.backoff.ms"], self._clear_fetch, tp, marker)

    def _clear_fetch(self, tp: tuple[str, int], marker: int) -> None:
        if self._fetching.get(tp) == marker:
            del self._fetching[tp]
            if self.alive and not self.closed:
                self._start_fetches()

    def _fetch_timed_out(self, correlation: int, incarnation: int) -> None:
        if incarnation != self.incarnation or correlation not in self._requests:
            return
        _kind, (tp, _offset, _leader) = self._requests.pop(correlation)
        if self._fetching.get(tp) == correlation:
            del self._fetching[tp]
            if self.alive and not self.closed:
                self._start_fetches()  # a lost fetch is re-sent, not left until the next poll

    def receive(self, envelope) -> None:
        """A fetch or offset-commit response."""
        request = self._requests.pop(envelope.correlation_id, None)
        if request is None:
            return
        kind, detail = request
        if kind == "commit":
            self._commit_results[envelope.correlation_id] = envelope.body["error"]
            return
        tp, fetch_offset, _leader = detail
        if self._fetching.get(tp) == envelope.correlation_id:
            del self._fetching[tp]
        if tp not in self._positions:
            return
        body = envelope.body
        if body["error"] == KafkaError.OFFSET_OUT_OF_RANGE:
            reset = self._reset_offset(tp)
            self.world.history.record("offset_reset", self.name, topic=tp[0], partition=tp[1],
                                      old=self._positions[tp], new=reset)
            self._positions[tp] = reset
            self._buffers[tp].clear()
        elif body["error"] is not None:
            self._retry_later(tp)
        elif fetch_offset == self._positions[tp]:
            self._buffers[tp].extend(body["records"])
        if not self.closed:
            self._start_fetches()  # keep fetching in the background, as librdkafka does

    # ----- offsets ----------------------------------------------------------------------

    def commit(self, message: Message | None = None,
               offsets: list[TopicPartition] | None = None,
               asynchronous: bool = True) -> list[TopicPartition] | None:
        """Commit offsets: ``message`` → its offset + 1; ``offsets`` → as given; else positions.

        Like confluent-kafka, the default is asynchronous: the commit takes
        effect when the request reaches the coordinator, and is lost if the
        process dies first.
        """
        self._enter("consumer.commit")
        self._check_open()
        triples = self._commit_offsets(message, offsets, asynchronous)
        if not triples and asynchronous:  # nothing to commit: librdkafka returns None
            self._exit("consumer.commit")
            return None
        correlation = self._send_commit(triples)
        result = None
        if not asynchronous:
            result = self._await_commit(correlation, triples)
        self._exit("consumer.commit")
        return result

    def _commit_offsets(self, message, offsets,
                        asynchronous: bool = False) -> list[tuple[str, int, int]]:
        if self.group_id is None:
            raise KafkaException(kafka_error(KafkaError._INVALID_ARG,
                                             "commit() needs a group.id"))
        if message is not None:
            return [(message.topic(), message.partition(), message.offset() + 1)]
        if offsets is not None:
            return [(tp.topic, tp.partition, tp.offset) for tp in offsets]
        triples = [(t, p, self._positions[(t, p)]) for t, p in self._assignment
                   if (t, p) in self._consumed]
        if not triples and not asynchronous:
            # Only the synchronous call raises; librdkafka hands the asynchronous
            # _NO_OFFSET to the offset-commit callback, which the toy does not model.
            raise KafkaException(kafka_error(KafkaError._NO_OFFSET,
                                             "Commit failed: Local: No offset stored"))
        return triples

    def _send_commit(self, triples: list[tuple[str, int, int]]) -> int:
        correlation = self.cluster.network.next_correlation_id()
        self._requests[correlation] = ("commit", triples)
        generation = self._generation if self._subscription is not None else -1
        self.cluster.network.send(self, "coordinator", "offset_commit", "request", {
            "group": self.group_id, "generation": generation, "member": self.name,
            "offsets": triples,
        }, correlation)
        return correlation

    def _await_commit(self, correlation: int, triples) -> list[TopicPartition]:
        deadline = self.world.now_ms + self.config["request.timeout.ms"]
        self.world.run(until_ms=deadline,
                       until=lambda: correlation in self._commit_results or not self.alive)
        self.process.check_alive("consumer.commit")
        if correlation not in self._commit_results:
            self._requests.pop(correlation, None)
            raise KafkaException(kafka_error(KafkaError.REQUEST_TIMED_OUT,
                                             "offset commit timed out"))
        error = self._commit_results.pop(correlation)
        if error is not None:
            raise KafkaException(kafka_error(error))
        return [TopicPartition(t, p, o) for t, p, o in triples]

    def _maybe_auto_commit(self) -> None:
        if not self.config["enable.auto.commit"] or self.group_id is None:
            return
        if self.world.now_ms < self._next_auto_commit_ms:
            return
        self._next_auto_commit_ms = self.world.now_ms + self.config["auto.commit.interval.ms"]
        triples = [(t, p, self._positions[(t, p)]) for t, p in self._assignment
                   if (t, p) in self._consumed]
        if triples:
            self.world.history.record("auto_commit", self.name,
                                      offsets=[list(t) for t in triples])
            self._send_commit(triples)

    def committed(self, partitions: list[TopicPartition],
                  timeout: float | None = None) -> list[TopicPartition]:
        """The group's committed offsets (OFFSET_INVALID where it never committed)."""
        self._enter("consumer.committed")
        self._check_open()
        result = []
        for tp in partitions:
            offset = self.cluster.coordinator.committed(self.group_id, (tp.topic, tp.partition))
            result.append(TopicPartition(tp.topic, tp.partition,
                                         OFFSET_INVALID if offset is None else offset))
        self._exit("consumer.committed")
        return result

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The offset of the next message poll() would return, per partition."""
        self.process.check_alive("consumer.position")  # a dead process answers nothing
        self._check_open()
        return [TopicPartition(tp.topic, tp.partition,
                               self._positions.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]

    def seek(self, partition: TopicPartition) -> None:
        """Move the position; the next poll() reads from there."""
        self._enter("consumer.seek")
        self._check_open()
        tp = (partition.topic, partition.partition)
        if tp not in self._positions:
            raise KafkaException(kafka_error(KafkaError._STATE,
                                             f"{tp} is not assigned to this consumer"))
        self._seek_to(tp, partition.offset)
        self._exit("consumer.seek")

    def _seek_to(self, tp: tuple[str, int], offset: int) -> None:
        if offset == OFFSET_BEGINNING:
            offset = 0
        elif offset == OFFSET_END:
            offset = self._high_watermark(tp)
        self._positions[tp] = offset
        self._buffers.setdefault(tp, deque()).clear()
        self._fetching.pop(tp, None)
        self.world.history.record("seek", self.name, topic=tp[0], partition=tp[1],
                                  offset=offset)

    def consumer_group_metadata(self) -> GroupMetadata:
        """Group, generation and member id, for send_offsets_to_transaction."""
        self.process.check_alive("consumer.consumer_group_metadata")
        return GroupMetadata(self.group_id, self._generation, self.name)

    def close(self) -> None:
        """Leave the group; with auto-commit on, first commit what poll() returned."""
        self._enter("consumer.close")
        if self.closed:
            return
        if self.config["enable.auto.commit"] and self.group_id is not None and self._consumed:
            triples = [(t, p, self._positions[(t, p)]) for t, p in self._assignment
                       if (t, p) in self._consumed]
            with contextlib.suppress(KafkaException):
                self._await_commit(self._send_commit(triples), triples)
        self._leave_group()
        self.closed = True
        self.world.history.record("close", self.name)
        self._exit("consumer.close")

    def _leave_group(self) -> None:
        if self._subscription is not None and self.group_id is not None:
            self.cluster.coordinator.leave(self.group_id, self.name)
            self._subscription = None

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("Consumer closed")

    def _die(self) -> None:
        super()._die()
        self._leave_group()
        self._requests.clear()
