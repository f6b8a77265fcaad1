"""Kafka's error types, shared with the real client.

The simulated clients raise and report the very classes that confluent-kafka
raises (``KafkaError``, ``KafkaException``), with librdkafka's error codes, so a
learner's ``except KafkaException`` and ``err.retriable()`` behave the same on
the toy cluster and on real Kafka. This module only decides, for each code the
toy can produce, whether it is retriable and whether the write it reports on
may nevertheless have happened (an *indefinite* outcome).
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

__all__ = [
    "ConfigException",
    "KafkaError",
    "KafkaException",
    "is_indefinite",
    "kafka_error",
]

# Broker and client errors after which retrying can succeed. Sources: the
# RetriableException subclasses in Kafka's clients (org.apache.kafka.common.errors)
# and librdkafka's rd_kafka_err_action tables.
_RETRIABLE = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.CONCURRENT_TRANSACTIONS,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)

# Errors after which the request may or may not have taken effect: the client
# never learned what the broker did, or the broker wrote and then could not
# confirm replication. Every duplicate in this course starts with one of these.
_INDEFINITE = frozenset(
    {
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError._TIMED_OUT,
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)

_FATAL = frozenset({KafkaError.PRODUCER_FENCED, KafkaError._FENCED})


def kafka_error(code: int, reason: str | None = None,
                txn_requires_abort: bool = False) -> KafkaError:
    """Build a KafkaError with Kafka's retriable/fatal flags for ``code``.

    ``txn_requires_abort`` marks an *abortable* transactional error: the
    transaction cannot commit, but the producer survives an abort_transaction().
    """
    return KafkaError(
        code,
        reason,
        fatal=code in _FATAL,
        retriable=code in _RETRIABLE,
        txn_requires_abort=txn_requires_abort,
    )


def is_indefinite(error: KafkaError | None) -> bool:
    """True when the operation that failed with ``error`` may still have happened."""
    return error is not None and error.code() in _INDEFINITE


class ConfigException(ValueError):
    """An unknown key, a wrong type or an impossible combination of settings.

    Named after Kafka's ``org.apache.kafka.common.config.ConfigException`` and
    worded like it: the key, the value, and what would have been allowed.
    """

    def __init__(self, key: str, value: object, allowed: str) -> None:
        self.key = key
        self.value = value
        self.allowed = allowed
        super().__init__(f"Invalid value {value!r} for configuration {key}: {allowed}")
