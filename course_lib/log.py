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
* the **transaction index**: where each producer's open transaction began, and
  the offset ranges of aborted ones. The first open transaction bounds the
  *last stable offset* (LSO), the end of what ``read_committed`` may read, and
  the aborted ranges are what it must skip. A COMMIT/ABORT marker closes a
  transaction, and carries the coordinator's epoch, which fences older ones.

Simplification: Kafka lets the read_committed consumer drop aborted records
using the aborted-transaction list in each fetch response; here the leader
leaves them out of the response (the offsets they held are simply skipped).
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
        self.ongoing: dict[int, int] = {}  # producer id -> first offset of its open transaction
        self.aborted: list[tuple[int, int, int]] = []  # (producer id, first offset, marker)

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
        self._index(record)
        return record

    def _index(self, record: Record) -> None:
        """Update the producer state and the transaction index for one new record."""
        if record.producer_id < 0:
            return
        if record.control is None:
            self._remember(record)
            if record.transactional:
                self.ongoing.setdefault(record.producer_id, record.offset)
            return
        state = self.producers.get(record.producer_id)
        if state is None or record.producer_epoch > state.epoch:
            self.producers[record.producer_id] = ProducerState(record.producer_epoch)
        first = self.ongoing.pop(record.producer_id, None)
        if record.control == "ABORT" and first is not None:
            self.aborted.append((record.producer_id, first, record.offset))

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
        """Drop every record at or after ``offset``; returns what was dropped.

        Epochs that start at or after the new log end go too, even when no record
        does: a replica that led an epoch but wrote nothing in it before losing
        leadership must forget that epoch, or it keeps presenting it to the new
        leader, which never heard of it, and never gets past truncation (Kafka's
        ``UnifiedLog.truncateTo`` and ``LeaderEpochFileCache.truncateFromEnd``).
        """
        end = min(offset, self.log_end_offset)
        while self.epochs and self.epochs[-1][1] >= end:
            self.epochs.pop()
        if offset >= self.log_end_offset:
            return []
        dropped = self.records[offset:]
        del self.records[offset:]
        self.high_watermark = min(self.high_watermark, offset)
        self.producers, self.ongoing, self.aborted = {}, {}, []
        for record in self.records:
            self._index(record)
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

    @property
    def last_stable_offset(self) -> int:
        """Below this no transaction is still open: the end of what read_committed sees."""
        if not self.ongoing:
            return self.high_watermark
        return min(self.high_watermark, min(self.ongoing.values()))

    def is_aborted(self, record: Record) -> bool:
        """Whether ``record`` belongs to a transaction that ended in an ABORT marker."""
        return record.control is None and any(
            pid == record.producer_id and first <= record.offset < marker
            for pid, first, marker in self.aborted)

    def visible_end(self, isolation: str | None) -> int:
        """How far a consumer with ``isolation`` may read: the LSO or the high watermark."""
        if isolation == "read_committed":
            return self.last_stable_offset
        return self.high_watermark

    def read(self, start: int, stop: int, limit: int) -> list[Record]:
        """Records from ``start`` up to (not including) ``stop``, at most ``limit``."""
        return self.records[start:min(stop, start + limit)]

    def values(self, stop: int | None = None,
               isolation: str = "read_uncommitted") -> list[bytes | None]:
        """The data records' values a consumer with ``isolation`` could read below ``stop``."""
        stop = self.visible_end(isolation) if stop is None else stop
        committed_only = isolation == "read_committed"
        return [r.value for r in self.records[:stop]
                if r.control is None and not (committed_only and self.is_aborted(r))]
