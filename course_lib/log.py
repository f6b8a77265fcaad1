"""A partition replica's log: records, log end offset, high watermark, truncation.

Offsets are list indices here (no compaction, no retention), so ``log_end_offset``
is simply the number of records. Alongside the records each replica keeps two
small indexes that Kafka also keeps and that carry the course's hardest lessons:

* the **leader-epoch cache** (KIP-101): which leader epoch began at which offset.
  A returning follower asks the leader where its last epoch ended and truncates
  there, instead of trusting its own high watermark; an unclean leader's epoch
  therefore erases acknowledged records on every other replica.
* the **producer state**: for each producer id, its epoch and its last five
  batches' sequence numbers, so a retried batch is acknowledged without being
  written twice. Kafka rebuilds it from the log after truncation; so do we.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

PRODUCER_BATCH_WINDOW = 5  # batches per producer the broker remembers (Kafka's constant)


class Record(NamedTuple):
    """One record as stored: position, payload, and who wrote it under which epoch."""

    offset: int
    key: bytes | None
    value: bytes | None
    leader_epoch: int
    timestamp_ms: int
    producer_id: int = -1
    producer_epoch: int = -1
    sequence: int = -1
    batch_sequence: int = -1  # first sequence of the batch this record came in
    control: str | None = None  # "COMMIT" / "ABORT" transaction markers
    transactional: bool = False


class BatchEntry(NamedTuple):
    """What the broker remembers of one idempotent batch."""

    first_seq: int
    last_seq: int
    base_offset: int


class ProducerState:
    """The epoch and recent batches of one producer id on one partition."""

    __slots__ = ("epoch", "batches")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.batches: deque[BatchEntry] = deque(maxlen=PRODUCER_BATCH_WINDOW)

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1


class PartitionLog:
    """The records of one replica, with its high watermark and epoch cache."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.high_watermark = 0
        self.epochs: list[tuple[int, int]] = []  # (leader epoch, start offset), ascending
        self.producers: dict[int, ProducerState] = {}

    def __repr__(self) -> str:
        return (f"<PartitionLog leo={self.log_end_offset} hw={self.high_watermark} "
                f"epochs={self.epochs}>")

    @property
    def log_end_offset(self) -> int:
        """The offset the next record will get."""
        return len(self.records)

    @property
    def last_epoch(self) -> int:
        """The newest leader epoch this replica knows of (-1 for an empty history)."""
        return self.epochs[-1][0] if self.epochs else -1

    def start_epoch(self, epoch: int) -> None:
        """Record that ``epoch`` begins at the current end, as a new leader does."""
        if not self.epochs or self.epochs[-1][0] < epoch:
            self.epochs.append((epoch, self.log_end_offset))

    def append(self, record: Record) -> Record:
        """Add a record at the end (its offset must be the log end offset)."""
        if record.offset != self.log_end_offset:
            raise ValueError(f"append at {record.offset}, log end is {self.log_end_offset}")
        self.start_epoch(record.leader_epoch)
        self.records.append(record)
        if record.producer_id >= 0 and record.control is None:
            self._remember(record)
        return record

    def _remember(self, record: Record) -> None:
        state = self.producers.get(record.producer_id)
        if state is None or record.producer_epoch > state.epoch:
            state = self.producers[record.producer_id] = ProducerState(record.producer_epoch)
        last = state.batches[-1] if state.batches else None
        if last is not None and last.first_seq == record.batch_sequence:
            state.batches[-1] = BatchEntry(last.first_seq, record.sequence, last.base_offset)
        else:
            state.batches.append(
                BatchEntry(record.batch_sequence, record.sequence, record.offset))

    def check_sequence(self, producer_id: int, epoch: int, first_seq: int,
                       count: int) -> tuple[str, int]:
        """Classify an idempotent batch: ok, duplicate (with its offset), out_of_order, fenced.

        Only batches that start a new epoch at sequence 0 or continue the last
        sequence are written; a retry of one of the last five batches is
        acknowledged with the offset it got the first time.
        """
        state = self.producers.get(producer_id)
        if state is None or epoch > state.epoch:
            return ("ok", -1) if first_seq == 0 else ("out_of_order", -1)
        if epoch < state.epoch:
            return "fenced", -1
        for entry in state.batches:
            if entry.first_seq == first_seq and entry.last_seq == first_seq + count - 1:
                return "duplicate", entry.base_offset
        if first_seq == state.last_seq + 1:
            return "ok", -1
        return "out_of_order", -1

    def truncate(self, offset: int) -> list[Record]:
        """Drop every record at or after ``offset``; returns what was dropped."""
        if offset >= self.log_end_offset:
            return []
        dropped = self.records[offset:]
        del self.records[offset:]
        while self.epochs and self.epochs[-1][1] > offset:
            self.epochs.pop()
        self.high_watermark = min(self.high_watermark, offset)
        self.producers = {}
        for record in self.records:
            if record.producer_id >= 0 and record.control is None:
                self._remember(record)
        return dropped

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """KIP-101's OffsetsForLeaderEpoch: (largest known epoch <= ``epoch``, its end offset).

        The end offset is where the next epoch starts, or the log end when
        ``epoch`` is the newest. A follower truncates to it to agree with the leader.
        """
        found_epoch, end = -1, 0
        for index, (known, _start) in enumerate(self.epochs):
            if known > epoch:
                break
            found_epoch = known
            has_next = index + 1 < len(self.epochs)
            end = self.epochs[index + 1][1] if has_next else self.log_end_offset
        return found_epoch, end

    def read(self, start: int, stop: int, limit: int) -> list[Record]:
        """Records from ``start`` up to (not including) ``stop``, at most ``limit``."""
        return self.records[start:min(stop, start + limit)]

    def values(self, stop: int | None = None) -> list[bytes | None]:
        """The data records' values below ``stop`` (default: the high watermark)."""
        stop = self.high_watermark if stop is None else stop
        return [r.value for r in self.records[:stop] if r.control is None]
