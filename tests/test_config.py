"""course_lib.config: Kafka's keys and defaults, and every invalid setting named precisely."""

from __future__ import annotations

import pytest

from course_lib.cluster import Cluster
from course_lib.config import (
    INT32_MAX,
    PRESETS,
    Config,
    broker_config,
    consumer_config,
    keys,
    preset,
    producer_config,
    topic_config,
)
from course_lib.errors import ConfigException


def raises_config(call, *args, key: str, value: object, allowed: str) -> ConfigException:
    """Call, expect ConfigException naming ``key``, ``value`` and an ``allowed`` fragment."""
    with pytest.raises(ConfigException) as caught:
        call(*args)
    error = caught.value
    assert error.key == key
    assert error.value == value and type(error.value) is type(value)
    message = str(error)
    assert key in message
    assert repr(value) in message
    assert allowed in message
    return error


# ----- defaults (KAFKA-FACTS.md's table) ---------------------------------------------

PRODUCER_DEFAULTS = {
    "acks": "all",
    "enable.idempotence": True,
    "max.in.flight.requests.per.connection": 5,
    "retries": 2_147_483_647,
    "delivery.timeout.ms": 120_000,
    "request.timeout.ms": 30_000,
    "retry.backoff.ms": 100,
    "linger.ms": 5,
    "transaction.timeout.ms": 60_000,
    "transactional.id": None,
}
CONSUMER_DEFAULTS = {
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 5_000,
    "auto.offset.reset": "latest",
    "isolation.level": "read_uncommitted",
    "group.id": None,
}
TOPIC_DEFAULTS = {"min.insync.replicas": 1, "unclean.leader.election.enable": False}
BROKER_DEFAULTS = {"replica.lag.time.max.ms": 30_000}


@pytest.mark.parametrize("name, default", PRODUCER_DEFAULTS.items())
def test_producer_default_is_current_kafkas(name, default):
    value = producer_config()[name]
    assert value == default and type(value) is type(default)


@pytest.mark.parametrize("name, default", CONSUMER_DEFAULTS.items())
def test_consumer_default_is_current_kafkas(name, default):
    value = consumer_config()[name]
    assert value == default and type(value) is type(default)


@pytest.mark.parametrize("name, default", TOPIC_DEFAULTS.items())
def test_topic_default_is_current_kafkas(name, default):
    value = topic_config(None, brokers=3)[name]
    assert value == default and type(value) is type(default)


def test_broker_default_is_current_kafkas():
    assert broker_config()["replica.lag.time.max.ms"] == 30_000


def test_int32_max_is_kafkas_retries_default():
    assert INT32_MAX == 2**31 - 1 == keys("producer")["retries"].default


def test_every_declared_key_explains_why_it_matters():
    for scope in ("producer", "consumer", "topic", "broker"):
        for key in keys(scope).values():
            assert key.doc.strip(), f"{scope} key {key.name} has no doc"


# ----- acks ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", [-1, "-1"])
def test_acks_minus_one_normalises_to_all(value):
    assert producer_config({"acks": value})["acks"] == "all"


@pytest.mark.parametrize("value, expected", [(0, "0"), (1, "1"), ("0", "0"), ("1", "1")])
def test_acks_int_or_string_is_stored_as_kafkas_string(value, expected):
    config = producer_config({"acks": value, "enable.idempotence": False})
    assert config["acks"] == expected


def test_acks_2_string_is_rejected():
    raises_config(producer_config, {"acks": "2"}, key="acks", value="2",
                  allowed="all, -1, 0, 1")


def test_acks_2_int_is_rejected_and_reported_as_written():
    raises_config(producer_config, {"acks": 2}, key="acks", value=2, allowed="all, -1, 0, 1")


def test_acks_is_case_sensitive_like_kafkas_validator():
    raises_config(producer_config, {"acks": "ALL"}, key="acks", value="ALL",
                  allowed="all, -1, 0, 1")


def test_acks_bool_is_not_an_int():
    raises_config(producer_config, {"acks": True}, key="acks", value=True,
                  allowed="Expected a string")


# ----- unknown keys and wrong types ---------------------------------------------------

def test_unknown_key_is_rejected_with_the_known_keys():
    error = raises_config(producer_config, {"ackss": "all"}, key="ackss", value="all",
                          allowed="No such producer configuration")
    assert "acks" in error.allowed and "enable.idempotence" in error.allowed


def test_a_consumer_key_is_unknown_to_the_producer():
    raises_config(producer_config, {"group.id": "g"}, key="group.id", value="g",
                  allowed="No such producer configuration")


def test_retries_as_string_is_rejected():
    raises_config(producer_config, {"retries": "3"}, key="retries", value="3",
                  allowed="Expected an int")


@pytest.mark.parametrize("value", ["false", "False", 0, 1, None])
def test_enable_idempotence_must_be_a_real_bool(value):
    raises_config(producer_config, {"enable.idempotence": value}, key="enable.idempotence",
                  value=value, allowed="Expected a bool")


def test_enable_auto_commit_must_be_a_real_bool():
    raises_config(consumer_config, {"enable.auto.commit": "true"}, key="enable.auto.commit",
                  value="true", allowed="Expected a bool")


def test_unclean_leader_election_must_be_a_real_bool():
    raises_config(topic_config, {"unclean.leader.election.enable": "false"}, 3,
                  key="unclean.leader.election.enable", value="false",
                  allowed="Expected a bool")


def test_bool_is_not_accepted_as_an_int():
    raises_config(producer_config, {"retries": True}, key="retries", value=True,
                  allowed="Expected an int")


def test_float_is_not_accepted_as_an_int():
    raises_config(producer_config, {"linger.ms": 5.0}, key="linger.ms", value=5.0,
                  allowed="Expected an int")


def test_negative_retries_are_rejected_with_the_minimum():
    raises_config(producer_config, {"retries": -1}, key="retries", value=-1,
                  allowed="at least 0")


def test_zero_in_flight_requests_are_rejected():
    raises_config(producer_config, {"max.in.flight.requests.per.connection": 0},
                  key="max.in.flight.requests.per.connection", value=0, allowed="at least 1")


def test_isolation_level_choice_is_checked():
    raises_config(consumer_config, {"isolation.level": "read_committed_please"},
                  key="isolation.level", value="read_committed_please",
                  allowed="read_uncommitted, read_committed")


def test_auto_offset_reset_choice_is_checked():
    raises_config(consumer_config, {"auto.offset.reset": "first"}, key="auto.offset.reset",
                  value="first", allowed="earliest")


def test_transactional_id_must_be_a_string():
    raises_config(producer_config, {"transactional.id": 7}, key="transactional.id", value=7,
                  allowed="Expected a string")


def test_real_client_keys_are_accepted_and_ignored():
    config = producer_config({"bootstrap.servers": "localhost:9092", "client.id": "app"})
    assert config["bootstrap.servers"] == "localhost:9092"
    assert config["client.id"] == "app"


# ----- topic settings against the cluster ---------------------------------------------

def test_min_insync_replicas_above_replication_factor_is_rejected():
    raises_config(topic_config, {"replication.factor": 2, "min.insync.replicas": 3}, 3,
                  key="min.insync.replicas", value=3, allowed="replication.factor (2)")


def test_replication_factor_above_broker_count_is_rejected():
    raises_config(topic_config, {"replication.factor": 4}, 3, key="replication.factor",
                  value=4, allowed="number of brokers (3)")


def test_min_insync_equal_to_replication_factor_is_allowed():
    config = topic_config({"replication.factor": 3, "min.insync.replicas": 3}, brokers=3)
    assert config["min.insync.replicas"] == 3


def test_default_replication_factor_needs_three_brokers():
    raises_config(topic_config, None, 1, key="replication.factor", value=3,
                  allowed="number of brokers (1)")


# ----- idempotence: explicit vs implicit (Kafka 3.2+, KAFKA-13598) ----------------------

@pytest.mark.parametrize("conflict, key, value, allowed", [
    ({"acks": "1"}, "acks", "1", "Must be all"),
    ({"acks": 0}, "acks", "0", "Must be all"),
    ({"retries": 0}, "retries", 0, "greater than 0"),
    ({"max.in.flight.requests.per.connection": 6},
     "max.in.flight.requests.per.connection", 6, "at most 5"),
])
def test_explicit_idempotence_with_a_conflicting_setting_is_an_error(conflict, key, value,
                                                                     allowed):
    error = raises_config(producer_config, {"enable.idempotence": True, **conflict}, key=key,
                          value=value, allowed=allowed)
    assert "idempotent" in str(error)


@pytest.mark.parametrize("conflict", [
    {"acks": "1"}, {"acks": 1}, {"acks": "0"}, {"retries": 0},
    {"max.in.flight.requests.per.connection": 6},
])
def test_implicit_idempotence_is_silently_turned_off_by_a_conflict(conflict):
    config = producer_config(conflict)
    assert config["enable.idempotence"] is False
    assert "enable.idempotence" not in config.explicit


def test_idempotence_stays_on_with_five_in_flight_and_one_retry():
    config = producer_config({"max.in.flight.requests.per.connection": 5, "retries": 1})
    assert config["enable.idempotence"] is True


def test_explicit_idempotence_off_with_acks_1_is_fine():
    config = producer_config({"enable.idempotence": False, "acks": "1"})
    assert config["enable.idempotence"] is False and config["acks"] == "1"


def test_transactional_id_with_idempotence_explicitly_off_is_an_error():
    raises_config(producer_config, {"transactional.id": "tx", "enable.idempotence": False},
                  key="enable.idempotence", value=False, allowed="transactional.id")


def test_transactional_id_when_a_conflict_turned_idempotence_off_is_an_error():
    # Kafka validates transactional.id after the silent override, so this fails too.
    raises_config(producer_config, {"transactional.id": "tx", "acks": "1"},
                  key="enable.idempotence", value=False, allowed="transactional.id")


def test_transactional_id_with_defaults_is_accepted():
    config = producer_config({"transactional.id": "tx"})
    assert config["transactional.id"] == "tx"
    assert config["enable.idempotence"] is True


# ----- delivery.timeout.ms >= linger.ms + request.timeout.ms -----------------------------

def test_explicit_delivery_timeout_below_linger_plus_request_timeout_is_an_error():
    raises_config(producer_config, {"delivery.timeout.ms": 30_004}, key="delivery.timeout.ms",
                  value=30_004, allowed="linger.ms + request.timeout.ms = 30005")


def test_explicit_delivery_timeout_equal_to_the_floor_is_allowed():
    config = producer_config({"delivery.timeout.ms": 1_000, "linger.ms": 0,
                              "request.timeout.ms": 1_000})
    assert config["delivery.timeout.ms"] == 1_000


def test_default_delivery_timeout_is_raised_to_the_floor_not_rejected():
    # KafkaProducer.configureDeliveryTimeout: only an explicit value is an error.
    config = producer_config({"request.timeout.ms": 200_000, "linger.ms": 10})
    assert config["delivery.timeout.ms"] == 200_010
    assert "delivery.timeout.ms" not in config.explicit


# ----- presets, explicit keys, repr ----------------------------------------------------

def test_pre_3_0_preset_has_the_old_defaults():
    assert preset("pre-3.0") == {"acks": "1", "enable.idempotence": False, "linger.ms": 0}


def test_pre_3_0_preset_builds_a_valid_producer_config():
    config = producer_config(preset("pre-3.0"))
    assert (config["acks"], config["enable.idempotence"], config["linger.ms"]) == ("1", False, 0)


def test_preset_returns_a_copy():
    settings = preset("pre-3.0")
    settings["acks"] = "all"
    assert PRESETS["pre-3.0"]["acks"] == "1"
    assert preset("pre-3.0")["acks"] == "1"


def test_unknown_preset_is_a_config_exception():
    raises_config(preset, "kafka-0.8", key="preset", value="kafka-0.8", allowed="pre-3.0")


def test_config_remembers_which_keys_the_user_set():
    config = producer_config({"acks": "all", "retries": 3})
    assert config.explicit == frozenset({"acks", "retries"})
    assert producer_config().explicit == frozenset()


def test_config_is_a_read_only_mapping_of_every_declared_key():
    config = consumer_config({"group.id": "g"})
    assert set(config) == set(keys("consumer"))
    assert len(config) == len(keys("consumer"))
    with pytest.raises(TypeError):
        config["group.id"] = "h"  # type: ignore[index]


def test_config_repr_is_valid_python_showing_explicit_keys():
    config = producer_config({"retries": 3, "acks": -1})
    assert repr(config) == "Config('producer', {'acks': 'all', 'retries': 3})"
    rebuilt = eval(repr(config), {"Config": Config})
    assert dict(rebuilt) == dict(config)


def test_user_mapping_is_not_modified():
    user = {"acks": -1}
    producer_config(user)
    assert user == {"acks": -1}


# ----- end to end: the clients and the cluster validate the same way -------------------

def test_cluster_producer_with_bad_config_raises_the_same_error():
    cluster = Cluster(brokers=3, seed=0)
    raises_config(cluster.producer, {"acks": 2}, key="acks", value=2, allowed="all, -1, 0, 1")
    raises_config(cluster.producer, {"enable.idempotence": True, "acks": "1"}, key="acks",
                  value="1", allowed="Must be all")
    raises_config(cluster.producer, {"enable.idempotence": "false"},
                  key="enable.idempotence", value="false", allowed="Expected a bool")


def test_cluster_producer_turns_implicit_idempotence_off_for_acks_1(cluster):
    producer = cluster.producer({"acks": "1"})
    assert producer.config["enable.idempotence"] is False
    assert producer.idempotent is False


def test_cluster_consumer_with_bad_config_raises(cluster):
    raises_config(cluster.consumer, {"group.id": "g", "isolation.level": "dirty"},
                  key="isolation.level", value="dirty", allowed="read_committed")


def test_cluster_create_topic_validates_against_its_broker_count():
    cluster = Cluster(brokers=2, seed=0)
    raises_config(cluster.create_topic, "events", {"replication.factor": 3},
                  key="replication.factor", value=3, allowed="number of brokers (2)")
    raises_config(cluster.create_topic, "events",
                  {"replication.factor": 2, "min.insync.replicas": 3},
                  key="min.insync.replicas", value=3, allowed="replication.factor (2)")


def test_cluster_broker_config_is_validated():
    with pytest.raises(ConfigException) as caught:
        Cluster(brokers=3, seed=0, config={"replica.lag.time.max.ms": "30s"})
    assert caught.value.key == "replica.lag.time.max.ms"
