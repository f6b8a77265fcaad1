"""The group coordinator: consumer group membership and committed offsets.

Committed offsets are the only memory a consumer group has: a restarted
consumer resumes where its group last committed, so *when* the commit happens
relative to processing decides between at-most-once and at-least-once. An
offset commit is a request like any other; it takes effect when it reaches the
coordinator, and a commit still in flight when its process dies never does.

Simplifications, stated in the notebooks: one coordinator for all groups that
never crashes; membership changes are immediate (a crashed member leaves at
once instead of after ``session.timeout.ms``); partitions are assigned with
Kafka's range assignor over members sorted by id.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from course_lib.errors import KafkaError


@dataclass
class Group:
    """One consumer group: its generation, members and committed offsets."""

    group_id: str
    generation: int = 0
    members: dict[str, list[str]] = field(default_factory=dict)  # member -> topics
    assignment: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)


class Coordinator:
    """Handles JoinGroup/LeaveGroup (directly) and OffsetCommit (over the network)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.name = "coordinator"
        self.alive = True
        self.incarnation = 0
        self.groups: dict[str, Group] = {}

    def __repr__(self) -> str:
        return f"<Coordinator groups={sorted(self.groups)}>"

    def group(self, group_id: str) -> Group:
        """The group called ``group_id``, created empty on first use."""
        if group_id not in self.groups:
            self.groups[group_id] = Group(group_id)
        return self.groups[group_id]

    def join(self, group_id: str, member: str, topics: list[str]) -> None:
        """Add or update a member and rebalance the group."""
        group = self.group(group_id)
        group.members[member] = list(topics)
        self._rebalance(group, f"{member} joined")

    def leave(self, group_id: str, member: str) -> None:
        """Remove a member (a clean close or a crash) and rebalance."""
        group = self.group(group_id)
        if group.members.pop(member, None) is not None:
            self._rebalance(group, f"{member} left")

    def _rebalance(self, group: Group, reason: str) -> None:
        group.generation += 1
        group.assignment = {member: [] for member in group.members}
        topics = sorted({t for ts in group.members.values() for t in ts})
        for topic in topics:
            members = sorted(m for m, ts in group.members.items() if topic in ts)
            partitions = self.cluster.partitions_of(topic)
            share, extra = divmod(len(partitions), len(members))
            start = 0
            for index, member in enumerate(members):
                size = share + (1 if index < extra else 0)
                group.assignment[member].extend((topic, p) for p in
                                                partitions[start:start + size])
                start += size
        self.cluster.history.record("rebalance", self.name, group=group.group_id,
                                    generation=group.generation, reason=reason,
                                    assignment={m: [f"{t}-{p}" for t, p in tps]
                                                for m, tps in group.assignment.items()})

    def committed(self, group_id: str, tp: tuple[str, int]) -> int | None:
        """The group's committed offset for ``tp``, or None if it never committed."""
        return self.group(group_id).committed.get(tp)

    def receive(self, envelope) -> None:
        """Apply an OffsetCommit request and answer it."""
        if envelope.api != "offset_commit":
            return
        body = envelope.body
        group = self.group(body["group"])
        generation = body["generation"]
        error = None
        if generation < 0:
            # Outside group management (assign(), or an admin tool): Kafka stores such
            # offsets only while the group has no members, or a live group's offsets
            # could be overwritten from outside it (ClassicGroup.validateOffsetCommit).
            if group.members:
                error = KafkaError.UNKNOWN_MEMBER_ID
        elif body["member"] not in group.members:
            error = KafkaError.UNKNOWN_MEMBER_ID
        elif generation != group.generation:
            error = KafkaError.ILLEGAL_GENERATION
        if error is None:
            self.apply_commit(group, body["offsets"], envelope.src)
        self.cluster.network.send(self, envelope.src, envelope.api, "response",
                                  {"error": error}, envelope.correlation_id)

    def apply_commit(self, group: Group, offsets: list[tuple[str, int, int]], actor: str) -> None:
        """Store offsets and record the commit in the history."""
        for topic, partition, offset in offsets:
            group.committed[(topic, partition)] = offset
            self.cluster.history.record("commit", actor, group=group.group_id, topic=topic,
                                        partition=partition, offset=offset)


@dataclass
class Transaction:
    """The coordinator's record of one transactional.id (KIP-98's transaction log entry)."""

    transactional_id: str
    producer_id: int
    epoch: int = 0
    timeout_ms: int = 60_000
    state: str = "Empty"  # Empty, Ongoing, CompleteCommit, CompleteAbort
    number: int = 0
    partitions: set = field(default_factory=set)
    offsets: dict = field(default_factory=dict)  # group id -> {(topic, partition): offset}

    @property
    def label(self) -> str:
        """``"<transactional.id>#<n>"``, as the producer labels its sends."""
        return f"{self.transactional_id}#{self.number}"


class TransactionCoordinator:
    """Maps transactional.id to producer id and epoch; ends transactions with markers.

    ``init_producer_id`` is where zombies die: it bumps the epoch, so every
    request of an older instance is refused, and it aborts whatever transaction
    that instance left open. Committed consumer offsets sent through a
    transaction reach the group only when the transaction commits.

    Simplifications (notebook 07): the coordinator never fails; its requests
    are instant; markers for an offline partition are retried until it returns.
    """

    MARKER_RETRY_MS = 100

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.transactions: dict[str, Transaction] = {}

    def __repr__(self) -> str:
        return f"<TransactionCoordinator ids={sorted(self.transactions)}>"

    def init_producer_id(self, transactional_id: str, timeout_ms: int) -> tuple[int, int]:
        """Register or re-register an instance: abort its predecessor's work, bump the epoch."""
        txn = self.transactions.get(transactional_id)
        if txn is None:
            txn = Transaction(transactional_id, self.cluster.allocate_producer_id())
            self.transactions[transactional_id] = txn
        else:
            txn.epoch += 1
            if txn.state == "Ongoing":
                self._finish(txn, commit=False, reason="fenced by a new instance")
        txn.timeout_ms = timeout_ms
        self.cluster.history.record("txn_init", "txn-coordinator",
                                    transactional_id=transactional_id,
                                    producer_id=txn.producer_id, epoch=txn.epoch)
        return txn.producer_id, txn.epoch

    def bump_epoch(self, transactional_id: str) -> tuple[int, int]:
        """A new epoch for the same instance after an abort left a sequence hole (KIP-360)."""
        txn = self.transactions[transactional_id]
        txn.epoch += 1
        return txn.producer_id, txn.epoch

    def _check(self, transactional_id: str, producer_id: int, epoch: int) -> Transaction | int:
        txn = self.transactions.get(transactional_id)
        if txn is None or txn.producer_id != producer_id:
            return KafkaError.INVALID_PRODUCER_ID_MAPPING
        if epoch < txn.epoch:
            return KafkaError.PRODUCER_FENCED
        return txn

    def _ongoing(self, txn: Transaction) -> None:
        if txn.state != "Ongoing":
            txn.state = "Ongoing"
            txn.number += 1
            txn.partitions, txn.offsets = set(), {}
            self.cluster.world.call_later(txn.timeout_ms, self._expire, txn.transactional_id,
                                          txn.number)

    def add_partition(self, transactional_id: str, producer_id: int, epoch: int,
                      tp: tuple[str, int]) -> tuple[int | None, int]:
        """AddPartitionsToTxn: the transaction will need a marker in ``tp``."""
        txn = self._check(transactional_id, producer_id, epoch)
        if isinstance(txn, int):
            return txn, 0
        self._ongoing(txn)
        txn.partitions.add(tp)
        return None, txn.number

    def add_offsets(self, transactional_id: str, producer_id: int, epoch: int,
                    group_metadata, offsets: list[tuple[str, int, int]]) -> tuple[int | None, int]:
        """AddOffsetsToTxn + TxnOffsetCommit, with KIP-447's generation check."""
        txn = self._check(transactional_id, producer_id, epoch)
        if isinstance(txn, int):
            return txn, 0
        group = self.cluster.coordinator.group(group_metadata.group_id)
        if group_metadata.generation >= 0:
            if group_metadata.member_id not in group.members:
                return KafkaError.UNKNOWN_MEMBER_ID, txn.number
            if group_metadata.generation != group.generation:
                return KafkaError.ILLEGAL_GENERATION, txn.number
        self._ongoing(txn)
        pending = txn.offsets.setdefault(group.group_id, {})
        for topic, partition, offset in offsets:
            pending[(topic, partition)] = offset
        return None, txn.number

    def end(self, transactional_id: str, producer_id: int, epoch: int,
            commit: bool) -> tuple[int | None, None]:
        """EndTxn: write COMMIT or ABORT markers, and on commit apply the offsets."""
        txn = self._check(transactional_id, producer_id, epoch)
        if isinstance(txn, int):
            return txn, None
        if txn.state == "Ongoing":
            self._finish(txn, commit, reason="requested by the producer")
        return None, None

    def _finish(self, txn: Transaction, commit: bool, reason: str) -> None:
        control = "COMMIT" if commit else "ABORT"
        for tp in sorted(txn.partitions):
            self._write_marker(tp, txn.producer_id, txn.epoch, control)
        if commit:
            for group_id, offsets in sorted(txn.offsets.items()):
                group = self.cluster.coordinator.group(group_id)
                self.cluster.coordinator.apply_commit(
                    group, [(t, p, o) for (t, p), o in sorted(offsets.items())],
                    txn.transactional_id)
        txn.state = "CompleteCommit" if commit else "CompleteAbort"
        self.cluster.history.record("txn_end", "txn-coordinator", txn=txn.label,
                                    outcome=control.lower(), reason=reason,
                                    partitions=[f"{t}-{p}" for t, p in sorted(txn.partitions)])

    def _write_marker(self, tp: tuple[str, int], producer_id: int, epoch: int,
                      control: str, written: int | None = None) -> None:
        """Write the marker and keep at it until the partition's ISR has it.

        Kafka's coordinator writes markers with acks=all (WriteTxnMarkers) and
        retries against the new leader: a marker only a crashed leader had is
        truncated when it returns, and the transaction would stay open for ever
        (the last stable offset stuck, read_committed readers blocked).
        ``written`` is where an earlier attempt put the marker: while it is
        still there, the retry only waits for replication. Looking for it
        afresh would miss it once the producer's next transaction has records
        after it, and a second marker would end that transaction too.
        """
        leader = self.cluster.partition(tp).leader
        if leader is not None:
            broker = self.cluster.brokers[leader]
            log = broker.logs[tp]
            offset = written if self._is_marker(log, written, producer_id, epoch,
                                                control) else None
            if offset is None:
                offset = self._marker_offset(log, producer_id, epoch, control)
            if offset is None and broker.append_marker(tp, producer_id, epoch, control):
                offset = log.log_end_offset - 1
            if offset is not None and offset < log.high_watermark:
                return
            written = offset
        self.cluster.world.call_later(self.MARKER_RETRY_MS, self._write_marker, tp,
                                      producer_id, epoch, control, written)

    @staticmethod
    def _is_marker(log, offset: int | None, producer_id: int, epoch: int, control: str) -> bool:
        """Whether this transaction's marker is at ``offset`` of ``log``."""
        if offset is None or not 0 <= offset < len(log.records):
            return False
        record = log.records[offset]
        return (record.offset == offset and record.producer_id == producer_id
                and record.producer_epoch == epoch and record.control == control)

    @staticmethod
    def _marker_offset(log, producer_id: int, epoch: int, control: str) -> int | None:
        """Where this transaction's marker is in ``log``, -1 if nothing needs one, else None."""
        for record in reversed(log.records):
            if record.producer_id != producer_id:
                continue
            if record.control == control and record.producer_epoch == epoch:
                return record.offset
            return None if record.control is None else -1
        return -1

    def _expire(self, transactional_id: str, number: int) -> None:
        """transaction.timeout.ms passed: abort, and bump the epoch to fence the producer."""
        txn = self.transactions[transactional_id]
        if txn.state == "Ongoing" and txn.number == number:
            txn.epoch += 1
            self._finish(txn, commit=False, reason="transaction.timeout.ms expired")
