"""The producer's side of Kafka transactions (KIP-98): states, fencing, abortable errors.

A transactional producer walks a small state machine, named as in Kafka's
Java ``TransactionManager``: UNINITIALIZED → (init_transactions) READY →
(begin_transaction) IN_TRANSACTION → (commit/abort) READY. Two error states
matter to the course:

* ABORTABLE_ERROR: this transaction cannot commit (a record failed, or the
  consumer group fenced our offsets after a rebalance, KIP-447); the
  application aborts, rewinds its consumer, and carries on.
* FATAL_ERROR: a newer instance with the same ``transactional.id`` called
  init_transactions and bumped the epoch; this instance is a zombie and every
  call raises a fatal ``_FENCED`` error. The application must exit.

Simplifications, stated in notebook 07: requests to the transaction
coordinator are instant and never lost; a transaction that outlives
``transaction.timeout.ms`` is aborted by the coordinator with an epoch bump,
which the old producer experiences as being fenced (clients before KIP-588).
"""

from __future__ import annotations

from course_lib.errors import KafkaError, KafkaException, kafka_error

UNINITIALIZED = "UNINITIALIZED"
READY = "READY"
IN_TRANSACTION = "IN_TRANSACTION"
ABORTABLE_ERROR = "ABORTABLE_ERROR"
FATAL_ERROR = "FATAL_ERROR"

FENCING_CODES = frozenset({KafkaError.INVALID_PRODUCER_EPOCH, KafkaError.PRODUCER_FENCED,
                           KafkaError._FENCED})


class TransactionManager:
    """One transactional producer's state, open transaction and coordinator calls."""

    def __init__(self, producer, transactional_id: str, timeout_ms: int) -> None:
        self.producer = producer
        self.coordinator = producer.cluster.transactions
        self.transactional_id = transactional_id
        self.timeout_ms = timeout_ms
        self.state = UNINITIALIZED
        self.number = 0
        self.partitions: set[tuple[str, int]] = set()
        self.error: KafkaError | None = None

    def __repr__(self) -> str:
        return f"<TransactionManager {self.transactional_id!r} {self.state}>"

    @property
    def label(self) -> str:
        """``"<transactional.id>#<n>"``: names the open transaction in histories."""
        return f"{self.transactional_id}#{self.number}"

    def require(self, *states: str) -> None:
        """Raise Kafka's error for an operation attempted in the wrong state."""
        if self.state == FATAL_ERROR:
            raise KafkaException(self.error)
        if self.state == ABORTABLE_ERROR and ABORTABLE_ERROR not in states:
            raise KafkaException(self.error)
        if self.state not in states:
            raise KafkaException(kafka_error(
                KafkaError._STATE, f"Operation not valid in state {self.state.title()}"))

    # ----- the calls the Producer delegates --------------------------------------------

    def init(self) -> None:
        """Get (producer id, epoch) for our transactional.id, fencing older instances."""
        self.require(UNINITIALIZED)
        pid, epoch = self.coordinator.init_producer_id(self.transactional_id, self.timeout_ms)
        self.producer.start_session(pid, epoch)
        self.state = READY

    def begin(self) -> None:
        """Start a transaction (a local step: nothing is sent until the first record)."""
        self.require(READY)
        self.state = IN_TRANSACTION
        self.partitions.clear()
        self.error = None

    def before_produce(self, tp: tuple[str, int]) -> None:
        """Register a partition with the coordinator the first time the transaction uses it."""
        self.require(IN_TRANSACTION)
        if tp not in self.partitions:
            self.number = self._call(self.coordinator.add_partition, tp)
            self.partitions.add(tp)

    def send_offsets(self, offsets: list[tuple[str, int, int]], group_metadata) -> None:
        """Make the consumer's offsets part of the transaction (KIP-447 checks the group)."""
        self.require(IN_TRANSACTION)
        self.number = self._call(self.coordinator.add_offsets, group_metadata, offsets)

    def commit(self) -> None:
        """Flush, then ask the coordinator to write COMMIT markers and the offsets."""
        self.require(IN_TRANSACTION)
        self.producer.flush()
        if self.state != IN_TRANSACTION:  # a record failed while flushing
            raise KafkaException(self.error)
        self._call(self.coordinator.end, True)
        self.state = READY

    def abort(self) -> None:
        """Drop unsent records, wait for the rest, and have ABORT markers written."""
        self.require(IN_TRANSACTION, ABORTABLE_ERROR)
        self.producer.purge_unsent()
        self.producer.flush()
        if self.state == FATAL_ERROR:
            raise KafkaException(self.error)
        self._call(self.coordinator.end, False)
        if self.producer.sequence_hole():
            pid, epoch = self.coordinator.bump_epoch(self.transactional_id)
            self.producer.start_session(pid, epoch)
        self.state = READY

    # ----- errors from the broker side --------------------------------------------------

    def on_batch_failed(self, code: int) -> KafkaError:
        """Classify a failed batch: fencing is fatal, anything else aborts the transaction."""
        if code in FENCING_CODES:
            return self.fail_fatally()
        error = kafka_error(code, "a record of the transaction failed; abort it",
                            txn_requires_abort=True)
        if self.state == IN_TRANSACTION:
            self.state, self.error = ABORTABLE_ERROR, error
        return error

    def fail_fatally(self) -> KafkaError:
        """Enter FATAL_ERROR: a newer instance owns our transactional.id."""
        self.error = kafka_error(
            KafkaError._FENCED, f"the producer with transactional.id "
            f"{self.transactional_id!r} was fenced by a newer instance (its epoch is older)")
        self.state = FATAL_ERROR
        return self.error

    def _call(self, method, *args):
        """Call the coordinator; it answers (error code or None, value)."""
        producer = self.producer
        error_code, value = method(self.transactional_id, producer.producer_id,
                                   producer.producer_epoch, *args)
        if error_code is None:
            return value
        if error_code in FENCING_CODES:
            raise KafkaException(self.fail_fatally())
        error = kafka_error(error_code, "the transaction cannot commit; abort it",
                            txn_requires_abort=True)
        self.state, self.error = ABORTABLE_ERROR, error
        raise KafkaException(error)
