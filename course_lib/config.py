"""Kafka configuration: key names, current defaults, and validation.

Every setting the toy understands is declared here once, with Kafka's name and
its default in Kafka 3.x/4.x (the Java client and broker; librdkafka differs on
a few, e.g. it leaves ``enable.idempotence`` off). Unknown keys, wrong types and
impossible combinations raise :class:`ConfigException` naming the key, the value
and what is allowed, as Kafka's ``ConfigException`` does. Keys a real client
needs but the toy has no use for (``bootstrap.servers``, ``client.id``) are
accepted and ignored so that real configurations paste in unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from course_lib.errors import ConfigException

INT32_MAX = 2_147_483_647


@dataclass(frozen=True)
class Key:
    """One setting: its type, default, range or choices, and why it matters."""

    name: str
    default: object
    kind: type
    doc: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None


def _producer_keys() -> tuple[Key, ...]:
    return (
        Key("acks", "all", str, "how many replicas must have a write before it is acknowledged",
            choices=("all", "-1", "0", "1")),
        Key("enable.idempotence", True, bool,
            "producer id + sequence numbers let the broker drop retried duplicates"),
        Key("retries", INT32_MAX, int, "how many times a failed batch is resent", minimum=0),
        Key("retry.backoff.ms", 100, int, "pause before resending a failed batch", minimum=0),
        Key("delivery.timeout.ms", 120_000, int,
            "upper bound from produce() to a delivery report, retries included", minimum=1),
        Key("request.timeout.ms", 30_000, int,
            "how long to wait for one response before treating the attempt as failed",
            minimum=1),
        Key("max.in.flight.requests.per.connection", 5, int,
            "unacknowledged requests allowed per broker; > 1 can reorder without idempotence",
            minimum=1),
        Key("linger.ms", 5, int, "how long a batch waits to fill before it is sent", minimum=0),
        Key("batch.size", 16_384, int, "upper bound of one batch in bytes", minimum=1),
        Key("queue.buffering.max.messages", 100_000, int,
            "records the producer holds in memory before produce() raises BufferError",
            minimum=1),
        Key("transactional.id", None, str, "stable identity for transactions and fencing"),
        Key("transaction.timeout.ms", 60_000, int,
            "the coordinator aborts a transaction left open longer than this", minimum=1),
        Key("bootstrap.servers", None, str, "ignored by the toy cluster"),
        Key("client.id", None, str, "a name for the client in histories and diagrams"),
    )


def _consumer_keys() -> tuple[Key, ...]:
    return (
        Key("group.id", None, str, "the consumer group whose committed offsets this consumer uses"),
        Key("enable.auto.commit", True, bool,
            "commit the offsets of returned messages from a later poll() automatically"),
        Key("auto.commit.interval.ms", 5_000, int, "how often auto-commit commits", minimum=0),
        Key("auto.offset.reset", "latest", str,
            "where to start when the group has no committed offset",
            choices=("latest", "earliest", "none", "smallest", "largest", "beginning", "end",
                     "error")),
        Key("isolation.level", "read_uncommitted", str,
            "read_committed hides records of open and aborted transactions",
            choices=("read_uncommitted", "read_committed")),
        Key("fetch.max.wait.ms", 500, int,
            "how long the broker holds a fetch that has nothing to return", minimum=0),
        Key("max.poll.records", 500, int, "records fetched per partition per request", minimum=1),
        Key("request.timeout.ms", 30_000, int, "how long to wait for one response", minimum=1),
        Key("retry.backoff.ms", 100, int, "pause before retrying a failed fetch", minimum=0),
        Key("session.timeout.ms", 45_000, int,
            "documented for fidelity; the toy removes a crashed member at once", minimum=1),
        Key("bootstrap.servers", None, str, "ignored by the toy cluster"),
        Key("client.id", None, str, "a name for the client in histories and diagrams"),
    )


def _topic_keys() -> tuple[Key, ...]:
    return (
        Key("replication.factor", 3, int, "copies of each partition", minimum=1),
        Key("min.insync.replicas", 1, int,
            "in-sync replicas an acks=all write needs, else NOT_ENOUGH_REPLICAS", minimum=1),
        Key("unclean.leader.election.enable", False, bool,
            "allow an out-of-sync replica to lead, truncating acknowledged records"),
        Key("num.partitions", 1, int, "partitions of a new topic", minimum=1),
    )


def _broker_keys() -> tuple[Key, ...]:
    return (
        Key("replica.lag.time.max.ms", 30_000, int,
            "a follower that has not caught up for this long leaves the ISR", minimum=1),
        Key("replica.fetch.wait.max.ms", 500, int,
            "how long a follower's fetch waits at the leader when there is nothing new",
            minimum=0),
        Key("network.latency.ms", 1, int,
            "toy-only: one-way delay of every message on the simulated network", minimum=0),
    )


SCOPES = {
    "producer": _producer_keys,
    "consumer": _consumer_keys,
    "topic": _topic_keys,
    "broker": _broker_keys,
}

PRESETS = {
    "pre-3.0": {
        "acks": "1",
        "enable.idempotence": False,
        "linger.ms": 0,
    },
}


def preset(name: str) -> dict[str, object]:
    """Producer settings of a named Kafka era, e.g. ``preset("pre-3.0")`` (KIP-679)."""
    if name not in PRESETS:
        raise ConfigException("preset", name, f"must be one of {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])


def keys(scope: str) -> dict[str, Key]:
    """The declared keys of one scope (producer, consumer, topic, broker)."""
    return {key.name: key for key in SCOPES[scope]()}


def _check_value(key: Key, value: object) -> object:
    if value is None and key.default is None:
        return None
    given = value  # reported as the user wrote it, e.g. acks=2 rather than '2'
    if key.name == "acks" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if key.kind is bool:
        if not isinstance(value, bool):
            raise ConfigException(key.name, value, "Expected a bool, True or False")
        return value
    if key.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigException(key.name, value, "Expected an int")
        if key.minimum is not None and value < key.minimum:
            raise ConfigException(key.name, value, f"Value must be at least {key.minimum}")
        if key.maximum is not None and value > key.maximum:
            raise ConfigException(key.name, value, f"Value must be no more than {key.maximum}")
        return value
    if not isinstance(value, str):
        raise ConfigException(key.name, value, "Expected a string")
    if key.choices and value not in key.choices:
        raise ConfigException(key.name, given, f"String must be one of: {', '.join(key.choices)}")
    return value


class Config(Mapping):
    """Validated settings of one scope: defaults filled in, explicit keys remembered.

    Remembering which keys the user set matters: Kafka treats an idempotence
    default that conflicts with ``acks=1`` differently from an explicit request.
    """

    def __init__(self, scope: str, user: Mapping[str, object] | None = None) -> None:
        declared = keys(scope)
        user = dict(user or {})
        for name in user:
            if name not in declared:
                raise ConfigException(
                    name, user[name], f"No such {scope} configuration; known keys: "
                    + ", ".join(sorted(declared)))
        self.scope = scope
        self.explicit = frozenset(user)
        self._values = {
            name: _check_value(key, user[name]) if name in user else key.default
            for name, key in declared.items()
        }
        if self._values.get("acks") == "-1":
            self._values["acks"] = "all"

    def __getitem__(self, name: str) -> object:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {name: self._values[name] for name in sorted(self.explicit)}
        return f"Config({self.scope!r}, {shown!r})"


def producer_config(user: Mapping[str, object] | None = None) -> Config:
    """Validate producer settings, resolving ``enable.idempotence`` as Kafka 3.2+ does.

    An *explicit* ``enable.idempotence=True`` with acks other than all, retries=0
    or more than 5 in-flight requests is an error; the *default* silently turns
    idempotence off instead (KAFKA-13598). Likewise an explicit
    ``delivery.timeout.ms`` below ``linger.ms + request.timeout.ms`` is an error,
    while the default is raised to that sum.
    """
    config = Config("producer", user)
    conflicts = _idempotence_conflicts(config)
    if conflicts:
        if "enable.idempotence" in config.explicit and config["enable.idempotence"]:
            key, value, allowed = conflicts[0]
            raise ConfigException(
                key, value, f"{allowed} to use the idempotent producer (enable.idempotence=True)")
        config._values["enable.idempotence"] = False
    if config["transactional.id"] is not None and not config["enable.idempotence"]:
        raise ConfigException(
            "enable.idempotence", config["enable.idempotence"],
            "Must be True (with acks=all) when transactional.id is set")
    floor_ms = config["linger.ms"] + config["request.timeout.ms"]
    if config["delivery.timeout.ms"] < floor_ms:
        # Kafka's KafkaProducer.configureDeliveryTimeout: an explicit value that is too
        # small is an error; the default is raised to linger.ms + request.timeout.ms.
        if "delivery.timeout.ms" in config.explicit:
            raise ConfigException(
                "delivery.timeout.ms", config["delivery.timeout.ms"],
                f"Must be at least linger.ms + request.timeout.ms = {floor_ms}")
        config._values["delivery.timeout.ms"] = floor_ms
    return config


def _idempotence_conflicts(config: Config) -> list[tuple[str, object, str]]:
    conflicts = []
    if config["acks"] != "all":
        conflicts.append(("acks", config["acks"], "Must be all"))
    if config["retries"] == 0:
        conflicts.append(("retries", 0, "Must be greater than 0"))
    if config["max.in.flight.requests.per.connection"] > 5:
        conflicts.append(("max.in.flight.requests.per.connection",
                          config["max.in.flight.requests.per.connection"],
                          "Must be at most 5"))
    return conflicts


def consumer_config(user: Mapping[str, object] | None = None) -> Config:
    """Validate consumer settings; auto-commit needs a ``group.id`` to commit to."""
    return Config("consumer", user)


def topic_config(user: Mapping[str, object] | None, brokers: int) -> Config:
    """Validate topic settings against the number of brokers in the cluster."""
    config = Config("topic", user)
    if config["replication.factor"] > brokers:
        raise ConfigException(
            "replication.factor", config["replication.factor"],
            f"Must be at most the number of brokers ({brokers})")
    if config["min.insync.replicas"] > config["replication.factor"]:
        raise ConfigException(
            "min.insync.replicas", config["min.insync.replicas"],
            f"Must be at most replication.factor ({config['replication.factor']})")
    return config


def broker_config(user: Mapping[str, object] | None = None) -> Config:
    """Validate cluster-wide broker settings."""
    return Config("broker", user)
