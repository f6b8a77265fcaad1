"""course_lib.errors: Kafka's error flags, definite vs indefinite outcomes, ConfigException."""

from __future__ import annotations

import confluent_kafka
import pytest

from course_lib import errors
from course_lib.errors import (
    ConfigException,
    KafkaError,
    KafkaException,
    is_indefinite,
    kafka_error,
)

RETRIABLE = [
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NETWORK_EXCEPTION,
]
NOT_RETRIABLE = [
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_CONFIG,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
]
# Definite failures: the broker told us the write did not happen.
DEFINITE = [
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_CONFIG,
    KafkaError.PRODUCER_FENCED,
]
# Indefinite: the client never learned what the broker did.
INDEFINITE = [
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
    KafkaError._TRANSPORT,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
]


@pytest.mark.parametrize("code", RETRIABLE, ids=lambda c: KafkaError(c).name())
def test_retriable_codes_are_retriable_and_not_fatal(code):
    error = kafka_error(code)
    assert error.retriable() is True
    assert error.fatal() is False


@pytest.mark.parametrize("code", NOT_RETRIABLE, ids=lambda c: KafkaError(c).name())
def test_permanent_codes_are_not_retriable(code):
    assert kafka_error(code).retriable() is False


def test_producer_fenced_is_fatal_and_not_retriable():
    error = kafka_error(KafkaError.PRODUCER_FENCED)
    assert error.fatal() is True
    assert error.retriable() is False


@pytest.mark.parametrize("code", [KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.MSG_SIZE_TOO_LARGE,
                                  KafkaError.REQUEST_TIMED_OUT, KafkaError.INVALID_CONFIG],
                         ids=lambda c: KafkaError(c).name())
def test_only_fencing_is_fatal(code):
    assert kafka_error(code).fatal() is False


def test_no_error_the_toy_builds_requires_a_transaction_abort_by_default():
    assert kafka_error(KafkaError.REQUEST_TIMED_OUT).txn_requires_abort() is False


@pytest.mark.parametrize("code", INDEFINITE, ids=lambda c: KafkaError(c).name())
def test_timeouts_and_lost_connections_are_indefinite(code):
    assert is_indefinite(kafka_error(code)) is True


@pytest.mark.parametrize("code", DEFINITE, ids=lambda c: KafkaError(c).name())
def test_errors_the_broker_answered_are_definite(code):
    assert is_indefinite(kafka_error(code)) is False


def test_no_error_is_not_indefinite():
    assert is_indefinite(None) is False


def test_is_indefinite_judges_by_code_not_by_flags():
    # A KafkaError built directly (as the real client hands it over) is judged the same.
    assert is_indefinite(KafkaError(KafkaError.REQUEST_TIMED_OUT)) is True
    assert is_indefinite(KafkaError(KafkaError.NOT_LEADER_FOR_PARTITION)) is False


def test_the_error_types_are_confluent_kafkas_own():
    assert errors.KafkaError is confluent_kafka.KafkaError
    assert errors.KafkaException is confluent_kafka.KafkaException
    assert isinstance(kafka_error(KafkaError.NOT_ENOUGH_REPLICAS), confluent_kafka.KafkaError)


def test_kafka_error_keeps_code_name_and_reason():
    error = kafka_error(KafkaError.NOT_ENOUGH_REPLICAS, "ISR [0] < min.insync.replicas 2")
    assert error.code() == KafkaError.NOT_ENOUGH_REPLICAS
    assert error.name() == "NOT_ENOUGH_REPLICAS"
    assert error.str() == "ISR [0] < min.insync.replicas 2"


def test_a_raised_error_is_caught_as_confluent_kafkas_exception():
    with pytest.raises(confluent_kafka.KafkaException) as caught:
        raise KafkaException(kafka_error(KafkaError.REQUEST_TIMED_OUT))
    error = caught.value.args[0]
    assert isinstance(error, confluent_kafka.KafkaError)
    assert error.code() == KafkaError.REQUEST_TIMED_OUT
    assert error.retriable()


def test_config_exception_names_key_value_and_what_is_allowed():
    error = ConfigException("acks", 2, "String must be one of: all, -1, 0, 1")
    assert isinstance(error, ValueError)
    assert (error.key, error.value, error.allowed) == (
        "acks", 2, "String must be one of: all, -1, 0, 1")
    assert str(error) == (
        "Invalid value 2 for configuration acks: String must be one of: all, -1, 0, 1")


def test_config_exception_shows_a_string_value_quoted():
    # The quotes tell a learner that "false" was a string, not the bool False.
    error = ConfigException("enable.idempotence", "false", "Expected a bool, True or False")
    assert "'false'" in str(error)
    assert "enable.idempotence" in str(error)
