"""The bridge to real Kafka: the learner's functions on confluent-kafka's own clients.

The toy's clients mirror confluent-kafka's API, so a consume loop written for
the simulation runs unchanged against a real cluster. This module provides
the real side::

    from course_lib import kafka
    with kafka.connect() as conn:          # librdkafka's mock cluster, in-process
        run = kafka.run_consume_loop(at_least_once, conn, faults=FaultPlan(
            (CrashClient("consumer.commit", "before", 5),)))
        print(run.report.summary())

``connect()`` with no servers starts librdkafka's **mock cluster** inside this
process (``test.mock.num.brokers=3``; nothing to install, loopback only); with
``KAFKA_BOOTSTRAP_SERVERS`` set, or servers given, it uses that cluster. Its
``producer()`` / ``consumer()`` return real ``confluent_kafka.Producer`` /
``Consumer`` objects (subclasses that write what they do into a
:class:`~course_lib.history.History`), configured like the toy's clients:
every toy setting is passed explicitly, so librdkafka's different defaults
(idempotence off, 5-minute delivery timeout, a million requests in flight,
read_committed) do not apply unless you ask for them. :func:`config_table` shows
the mapping.

Real Kafka has real time. The History still comes from a
:class:`~course_lib.sim.World`, but the World is only its clock, set to the
wall-clock milliseconds since the run began: nothing here is virtual, seeded or
repeatable to the millisecond, so tests assert outcomes, never timings. Every
wait this module makes is bounded.

Faults. Crashes (:class:`~course_lib.faults.CrashClient`) and processing
failures (:class:`~course_lib.faults.FailProcessing`) work on any cluster: the
harness raises :class:`~course_lib.faults.Crash` at the named call, and the dead
"process" closes its clients without committing. A lost produce response
(``DropMessages(api="produce", kind="response")``) works only on the mock
cluster, through librdkafka's mock API (``rd_kafka_mock_*`` in the bundled
library, reached with ctypes): the partition leader writes the batch and holds
its answer back longer than the producer waits, which is what a lost response
looks like to the client. Nothing else the toy can do (broker crashes and
failover, ISR, unclean election, dropped fetches) has a mock equivalent that
behaves like Kafka; :data:`MOCK_GAPS` lists what the mock does not model, each
with the experiment that showed it on librdkafka 2.16.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import confluent_kafka
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)

from course_lib.checker import Report, check
from course_lib.client import Process
from course_lib.config import consumer_config, keys, producer_config
from course_lib.errors import is_indefinite
from course_lib.faults import (
    Crash,
    CrashClient,
    DropMessages,
    FailProcessing,
    FaultPlan,
    ProcessingError,
)
from course_lib.sim import World

ENV_VAR = "KAFKA_BOOTSTRAP_SERVERS"
MOCK_BROKERS = 3
GROUP = "app"
MAX_RESTARTS = 10
WAIT_S = 10.0  # upper bound of every wait this module makes on its own behalf
LOST_RESPONSE_DELAY_MS = 15_000  # a "lost" response arrives this late, long after the timeout
PRODUCE_API_KEY = 0  # the Kafka protocol's ProduceRequest

LOGGER = logging.getLogger(__name__)
LOGGER.addHandler(logging.NullHandler())  # librdkafka's logs go here, silent unless configured


class FaultNotSupported(NotImplementedError):
    """The cluster in use cannot inject this fault (the message says why)."""


# ----- configuration: the toy's settings as librdkafka settings ------------------------------

# toy key -> librdkafka key(s). Keys the toy knows but librdkafka does not are dropped:
# max.poll.records is Java-only; the consumer's request.timeout.ms is Java's (librdkafka
# uses socket.timeout.ms for every request, and request.timeout.ms only for produce).
_PRODUCER_KEYS = {
    "acks": ("acks",),
    "enable.idempotence": ("enable.idempotence",),
    "retries": ("retries",),
    "retry.backoff.ms": ("retry.backoff.ms",),
    "delivery.timeout.ms": ("delivery.timeout.ms",),
    # Java's request.timeout.ms is how long the client waits for a response; in
    # librdkafka that is socket.timeout.ms (request.timeout.ms is only the broker's
    # wait for acks=all), so the toy's value sets both.
    "request.timeout.ms": ("request.timeout.ms", "socket.timeout.ms"),
    "max.in.flight.requests.per.connection": ("max.in.flight.requests.per.connection",),
    "linger.ms": ("linger.ms",),
    "batch.size": ("batch.size",),
    "queue.buffering.max.messages": ("queue.buffering.max.messages",),
    "transactional.id": ("transactional.id",),
    "transaction.timeout.ms": ("transaction.timeout.ms",),
    "client.id": ("client.id",),
}
_CONSUMER_KEYS = {
    "group.id": ("group.id",),
    "enable.auto.commit": ("enable.auto.commit",),
    "auto.commit.interval.ms": ("auto.commit.interval.ms",),
    "auto.offset.reset": ("auto.offset.reset",),
    "isolation.level": ("isolation.level",),
    "fetch.max.wait.ms": ("fetch.wait.max.ms",),
    "retry.backoff.ms": ("retry.backoff.ms",),
    "session.timeout.ms": ("session.timeout.ms",),
    "client.id": ("client.id",),
}
_MAPS = {"producer": _PRODUCER_KEYS, "consumer": _CONSUMER_KEYS}


def client_config(scope: str, config: Mapping[str, object] | None,
                  bootstrap_servers: str) -> dict:
    """The librdkafka settings of a toy-style ``config`` for a ``"producer"`` or ``"consumer"``.

    The toy's keys are validated by the toy's own rules (so an impossible
    combination fails here as it does in the simulation) and passed with the
    toy's resolved values, defaults included; any other key (``log_level``,
    ``debug``, ``fetch.min.bytes``…) goes to librdkafka untouched, which rejects
    what it does not know. One adjustment: a transactional producer's
    ``delivery.timeout.ms`` is capped at ``transaction.timeout.ms`` unless set
    explicitly, because librdkafka refuses a delivery timeout longer than the
    transaction timeout (the Java client accepts it).
    """
    if scope not in _MAPS:
        raise ValueError(f"scope must be 'producer' or 'consumer', not {scope!r}")
    config = dict(config or {})
    declared = keys(scope)
    toy = {k: v for k, v in config.items() if k in declared}
    extra = {k: v for k, v in config.items() if k not in declared}
    resolved = producer_config(toy) if scope == "producer" else consumer_config(toy)
    out: dict = {}
    for key, names in _MAPS[scope].items():
        value = resolved[key]
        if value is None:
            continue
        for name in names:
            out[name] = value
    if scope == "producer" and resolved["transactional.id"] is not None \
            and "delivery.timeout.ms" not in resolved.explicit:
        out["delivery.timeout.ms"] = min(out["delivery.timeout.ms"],
                                         resolved["transaction.timeout.ms"])
    out.update(extra)
    out["bootstrap.servers"] = bootstrap_servers
    out.setdefault("logger", LOGGER)
    return out


def config_table(scope: str = "producer") -> list[dict]:
    """Rows of (key, Kafka's default as the toy has it, librdkafka's default, what we pass).

    librdkafka's defaults are read from the installed library itself when its C
    API is reachable, so the table cannot drift from the version in use.
    """
    resolved = producer_config({}) if scope == "producer" else consumer_config({})
    passed = client_config(scope, {}, "")
    rows = []
    for key, names in _MAPS[scope].items():
        for name in names:
            rows.append({"toy key": key, "librdkafka key": name,
                         "Kafka default (toy)": _show(resolved[key]),
                         "librdkafka default": _librdkafka_default(name),
                         "bridge passes": _show(passed.get(name, "(not passed)"))})
    return rows


def _show(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "(unset)" if value is None else str(value)


def format_config_table(scope: str = "producer") -> str:
    """:func:`config_table` as fixed-width text for a notebook."""
    rows = config_table(scope)
    cols = ("librdkafka key", "Kafka default (toy)", "librdkafka default", "bridge passes")
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in cols]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(row[c]).ljust(w) for c, w in zip(cols, widths, strict=True)))
    return "\n".join(line.rstrip() for line in lines)


# ----- librdkafka's C API, for the mock cluster ----------------------------------------------


def _librdkafka() -> ctypes.CDLL | None:
    """The librdkafka that confluent_kafka uses, opened with ctypes, or None if unreachable.

    Opening the extension module itself resolves symbols through its
    dependencies (dlsym on Linux and macOS), which finds the bundled library of
    a wheel and the shared one of a conda install alike.
    """
    package = Path(confluent_kafka.__file__).parent
    candidates = [Path(confluent_kafka.cimpl.__file__)]
    for folder in (package, package.parent / "confluent_kafka.libs", package / ".dylibs"):
        if folder.is_dir():
            candidates += sorted(p for p in folder.iterdir() if "rdkafka" in p.name)
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
            lib.rd_kafka_handle_mock_cluster  # noqa: B018 - probe for the mock API
        except (OSError, AttributeError):
            continue
        return _declare(lib)
    return None


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
    signatures = {
        "rd_kafka_conf_new": (p, []),
        "rd_kafka_conf_destroy": (None, [p]),
        "rd_kafka_conf_set": (i, [p, s, s, s, ctypes.c_size_t]),
        "rd_kafka_conf_get": (i, [p, s, s, ctypes.POINTER(ctypes.c_size_t)]),
        "rd_kafka_topic_conf_new": (p, []),
        "rd_kafka_topic_conf_destroy": (None, [p]),
        "rd_kafka_topic_conf_get": (i, [p, s, s, ctypes.POINTER(ctypes.c_size_t)]),
        "rd_kafka_new": (p, [i, p, s, ctypes.c_size_t]),
        "rd_kafka_destroy": (None, [p]),
        "rd_kafka_handle_mock_cluster": (p, [p]),
        "rd_kafka_mock_cluster_bootstraps": (s, [p]),
        "rd_kafka_mock_topic_create": (i, [p, s, i, i]),
        "rd_kafka_mock_broker_error_stack_cnt": (
            i, [p, ctypes.c_int32, ctypes.c_int16, ctypes.POINTER(ctypes.c_size_t)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype, function.argtypes = restype, argtypes
    # Variadic: declare the fixed arguments only; ctypes passes the rest as C ints.
    variadic = lib.rd_kafka_mock_broker_push_request_error_rtts
    variadic.restype = i
    variadic.argtypes = [p, ctypes.c_int32, ctypes.c_int16, ctypes.c_size_t]
    return lib


_LIB: list = []  # memo: [CDLL or None], filled on first use


def _lib() -> ctypes.CDLL | None:
    if not _LIB:
        _LIB.append(_librdkafka())
    return _LIB[0]


def _librdkafka_default(name: str) -> str:
    """librdkafka's own default for ``name`` (a global or a topic property), as text."""
    lib = _lib()
    if lib is None:
        return "?"
    for make, get, destroy in (
            (lib.rd_kafka_conf_new, lib.rd_kafka_conf_get, lib.rd_kafka_conf_destroy),
            (lib.rd_kafka_topic_conf_new, lib.rd_kafka_topic_conf_get,
             lib.rd_kafka_topic_conf_destroy)):
        conf = make()
        try:
            size = ctypes.c_size_t(512)
            buffer = ctypes.create_string_buffer(512)
            code = get(conf, name.encode(), buffer, ctypes.byref(size))
        finally:
            destroy(conf)
        if code == 0:
            return buffer.value.decode() or "(unset)"
    return "(unset)"  # every name asked for here exists; librdkafka says UNKNOWN for unset


class MockCluster:
    """librdkafka's in-process mock cluster (``test.mock.num.brokers``), with its mock API.

    The cluster lives in a small librdkafka handle of its own, made through the
    C API so that faults can be pushed into it; its brokers listen on loopback
    ports. Without the C API (an unusual build) it falls back to a client
    configured with ``test.mock.num.brokers``: clients still work, faults do not,
    and topics auto-created on first use get the mock's default of 4 partitions.
    """

    def __init__(self, brokers: int = MOCK_BROKERS) -> None:
        self.brokers = brokers
        self._lib = _lib()
        self._host = None
        self._rk = None
        self._mock = None
        if self._lib is not None:
            self._start_with_c_api()
        else:
            self._host = Producer({"test.mock.num.brokers": brokers, "log_level": 0})
            found = self._host.list_topics(timeout=WAIT_S).brokers.values()
            self.bootstrap_servers = ",".join(f"{b.host}:{b.port}" for b in found)
        self._finalizer = weakref.finalize(self, _destroy, self._lib, self._rk)

    def _start_with_c_api(self) -> None:
        lib = self._lib
        error = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        for name, value in (("test.mock.num.brokers", str(self.brokers)), ("log_level", "0")):
            if lib.rd_kafka_conf_set(conf, name.encode(), value.encode(), error, 512) != 0:
                lib.rd_kafka_conf_destroy(conf)
                raise RuntimeError(f"librdkafka refused {name}={value}: {error.value.decode()}")
        self._rk = lib.rd_kafka_new(0, conf, error, 512)  # 0: a producer handle, never used
        if not self._rk:
            raise RuntimeError(f"librdkafka could not start a mock cluster: "
                               f"{error.value.decode()}")
        self._mock = lib.rd_kafka_handle_mock_cluster(self._rk)
        self.bootstrap_servers = lib.rd_kafka_mock_cluster_bootstraps(self._mock).decode()

    def __repr__(self) -> str:
        return f"<MockCluster brokers={self.brokers} at {self.bootstrap_servers}>"

    @property
    def faults_supported(self) -> bool:
        """Whether librdkafka's mock API is reachable (it is with the usual wheels)."""
        return self._mock is not None

    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 3) -> None:
        """Create a topic on the mock (the mock does not implement CreateTopics requests)."""
        if self._mock is None:
            return  # auto-created on first use, with the mock's default partition count
        replication_factor = min(replication_factor, self.brokers)
        code = self._lib.rd_kafka_mock_topic_create(self._mock, name.encode(), partitions,
                                                    replication_factor)
        if code not in (0, KafkaError.TOPIC_ALREADY_EXISTS):
            raise KafkaException(KafkaError(code))

    def delay_responses(self, broker: int, count: int, delay_ms: int,
                        api_key: int = PRODUCE_API_KEY) -> None:
        """Hold back ``broker``'s next ``count`` responses to ``api_key`` by ``delay_ms``.

        The broker handles each request at once (a produce request is written to
        the log) and only the answer is late.
        """
        self._require_faults()
        pairs = []
        for _ in range(count):
            pairs += [ctypes.c_int(0), ctypes.c_int(delay_ms)]
        code = self._lib.rd_kafka_mock_broker_push_request_error_rtts(
            self._mock, broker, api_key, count, *pairs)
        if code != 0:
            raise KafkaException(KafkaError(code))

    def pending_faults(self, broker: int, api_key: int = PRODUCE_API_KEY) -> int:
        """How many pushed faults ``broker`` has not yet applied to ``api_key`` requests."""
        self._require_faults()
        count = ctypes.c_size_t(0)
        self._lib.rd_kafka_mock_broker_error_stack_cnt(self._mock, broker, api_key,
                                                       ctypes.byref(count))
        return count.value

    def _require_faults(self) -> None:
        if self._mock is None:
            raise FaultNotSupported("librdkafka's mock API is not reachable from this "
                                    "confluent-kafka build, so faults cannot be injected")

    def close(self) -> None:
        """Stop the mock brokers; clients still connected see their connections drop."""
        self._finalizer()
        if self._host is not None:
            self._host = None


def _destroy(lib, rk) -> None:
    if lib is not None and rk:
        lib.rd_kafka_destroy(rk)


# ----- connecting --------------------------------------------------------------------------------


class Connection:
    """Where real clients go: the mock cluster or your own, and factories for clients.

    ``Connection()`` always starts a mock cluster (tests use it so that
    ``KAFKA_BOOTSTRAP_SERVERS`` cannot redirect them); :func:`connect` also
    honours the environment variable.
    """

    def __init__(self, bootstrap_servers: str | None = None) -> None:
        self.mock = None if bootstrap_servers else MockCluster()
        self.bootstrap_servers = bootstrap_servers or self.mock.bootstrap_servers
        # Names must not collide with earlier runs on a long-lived cluster.
        self._run = "" if self.mock else "-" + uuid.uuid4().hex[:8]
        self._topics: dict[str, int] = {}
        self._admin = None
        self._meta = None

    @property
    def kind(self) -> str:
        """``"mock"`` for librdkafka's in-process mock cluster, else ``"cluster"``."""
        return "mock" if self.mock is not None else "cluster"

    def __repr__(self) -> str:
        return f"<Connection {self.kind} {self.bootstrap_servers}>"

    def describe(self) -> str:
        """One sentence for a notebook: which cluster the real clients talk to."""
        if self.mock is not None:
            return (f"librdkafka's mock cluster: {self.mock.brokers} brokers inside this "
                    f"process, at {self.bootstrap_servers} (librdkafka "
                    f"{confluent_kafka.libversion()[0]})")
        return f"your cluster at {self.bootstrap_servers} (from {ENV_VAR} or connect())"

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the mock cluster, if this connection started one."""
        self._admin = self._meta = None
        if self.mock is not None:
            self.mock.close()

    # ----- clients ---------------------------------------------------------------------------

    def producer(self, config: Mapping[str, object] | None = None, *,
                 recorder: Recorder | None = None, app: App | None = None) -> RecordingProducer:
        """A real confluent_kafka Producer configured like the toy's (see :func:`client_config`).

        It writes send/ack/nack events into ``recorder``'s History (without one,
        into a Recorder of its own, ``producer.recorder``), and lives in ``app``.
        """
        recorder = recorder or Recorder()
        app = app or recorder.app("producer-app")
        settings = client_config("producer", config, self.bootstrap_servers)
        name = settings.get("client.id") or recorder.unique_name("producer")
        producer = RecordingProducer(settings)
        producer._attach(recorder, app, name, settings)
        return producer

    def consumer(self, config: Mapping[str, object] | None = None, *,
                 recorder: Recorder | None = None, app: App | None = None) -> RecordingConsumer:
        """A real confluent_kafka Consumer configured like the toy's (see :func:`client_config`).

        It writes poll/commit/close events into ``recorder``'s History (without
        one, into a Recorder of its own, ``consumer.recorder``), and lives in ``app``.
        """
        recorder = recorder or Recorder()
        app = app or recorder.app("consumer-app")
        settings = client_config("consumer", config, self.bootstrap_servers)
        user_on_commit = settings.pop("on_commit", None)
        holder: list = []
        settings["on_commit"] = lambda err, tps: holder[0]._on_commit(err, tps, user_on_commit)
        name = settings.get("client.id") or recorder.unique_name("consumer")
        consumer = RecordingConsumer(settings)
        holder.append(consumer)
        consumer._attach(recorder, app, name, settings)
        return consumer

    # ----- topics ------------------------------------------------------------------------------

    def create_topic(self, name: str = "events", partitions: int = 1) -> str:
        """Create a fresh topic and return its name (unique within this connection).

        On the mock the names are ``events``, ``events-2``…; on your cluster a
        run token is added, so old data and old committed offsets never leak in.
        """
        self._topics[name] = self._topics.get(name, 0) + 1
        number = self._topics[name]
        topic = f"{name}{self._run}" + (f"-{number}" if number > 1 else "")
        if self.mock is not None:
            self.mock.create_topic(topic, partitions)
        else:
            self._create_real_topic(topic, partitions)
        return topic

    def _create_real_topic(self, topic: str, partitions: int) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        if self._admin is None:
            self._admin = AdminClient({"bootstrap.servers": self.bootstrap_servers,
                                       "logger": LOGGER})
        futures = self._admin.create_topics([NewTopic(topic, partitions)],
                                            operation_timeout=WAIT_S, request_timeout=WAIT_S)
        try:
            futures[topic].result(timeout=WAIT_S)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def partitions(self, topic: str) -> list[int]:
        """The partition numbers of ``topic``, waiting (boundedly) for a new topic to appear.

        A real cluster may answer metadata requests from a broker that has not
        heard of a topic created a moment ago.
        """
        deadline = time.monotonic() + WAIT_S
        while True:
            metadata = self._metadata_client().list_topics(topic, timeout=WAIT_S)
            found = metadata.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"topic {topic!r} did not appear in the metadata within "
                                   f"{WAIT_S} s")
            time.sleep(0.1)

    def leader(self, topic: str, partition: int = 0) -> int:
        """The broker id leading ``topic``/``partition`` now."""
        metadata = self._metadata_client().list_topics(topic, timeout=WAIT_S)
        return metadata.topics[topic].partitions[partition].leader

    def _metadata_client(self) -> Producer:
        if self._meta is None:
            self._meta = Producer({"bootstrap.servers": self.bootstrap_servers,
                                   "logger": LOGGER})
        return self._meta


def connect(bootstrap_servers: str | None = None) -> Connection:
    """Connect to ``bootstrap_servers``, else ``$KAFKA_BOOTSTRAP_SERVERS``, else a new mock cluster.

    The mock cluster runs inside this process on loopback ports and is gone
    when the connection is closed (use ``with connect() as conn:``).
    """
    return Connection(bootstrap_servers or os.environ.get(ENV_VAR) or None)


# ----- the History and the crash model --------------------------------------------------------


class Recorder:
    """One run's History, its wall clock, its names, and the crash faults of its plan.

    The History is the toy's: the same event kinds and data keys, so the
    checker reads it unchanged. Its World serves only as the clock, set to the
    wall-clock milliseconds since the run began (nothing is virtual here).
    """

    def __init__(self, faults: FaultPlan | None = None) -> None:
        self.world = World(seed=0)
        self.history = self.world.history
        self.plan = faults or FaultPlan()
        self.calls: dict[str, int] = {}
        self._names: dict[str, int] = {}
        self._txns: dict[str, int] = {}
        self._started_s = time.monotonic()

    def record(self, kind: str, actor: str, **data) -> None:
        """Stamp with the elapsed wall-clock milliseconds and append to the History."""
        elapsed_ms = int((time.monotonic() - self._started_s) * 1000)
        if elapsed_ms > self.world.now_ms:
            self.world.advance(elapsed_ms - self.world.now_ms)
        self.history.record(kind, actor, **data)

    def unique_name(self, base: str) -> str:
        """``consumer-1``, ``consumer-2``…, as the toy names its clients."""
        self._names[base] = self._names.get(base, 0) + 1
        return f"{base}-{self._names[base]}"

    def app(self, name: str = "app") -> App:
        """A new application "process" whose clients die together."""
        return App(self, self.unique_name(name))

    def transaction_label(self, transactional_id: str) -> str:
        """``"<transactional.id>#<n>"``, unique within the run, as the toy labels transactions."""
        self._txns[transactional_id] = self._txns.get(transactional_id, 0) + 1
        return f"{transactional_id}#{self._txns[transactional_id]}"

    def hook(self, actor: str, point: str, phase: str) -> None:
        """Raise Crash or ProcessingError where the plan says, as the toy's FaultInjector does."""
        if phase == "before":
            nth = self.calls[point] = self.calls.get(point, 0) + 1
            if point == "process":
                for fault in self.plan.faults:
                    if isinstance(fault, FailProcessing) and fault.nth == nth:
                        self.record("fault", "nemesis", fault=repr(fault))
                        raise ProcessingError(f"processing failed (injected, call {nth})")
        nth = self.calls.get(point, 0)
        for fault in self.plan.faults:
            if (isinstance(fault, CrashClient) and fault.point == point
                    and fault.phase == phase and fault.nth == nth):
                self.record("crash", actor, point=point, phase=phase, nth=nth)
                raise Crash(actor, point, phase)

    def report(self, delivered_by: str = "process") -> Report:
        """The checker's verdict on this run's History."""
        return check(self.history, delivered_by=delivered_by)


class App(Process):
    """One application process on real Kafka: a crash anywhere in it kills all of its clients.

    Real Kafka has no virtual clock to advance, so slow processing
    (``duration_ms``) is refused rather than faked with a sleep.
    """

    def __init__(self, recorder: Recorder, name: str) -> None:
        super().__init__(name)
        self.recorder = recorder

    def _fault(self, point: str, phase: str) -> None:
        self.recorder.hook(self.name, point, phase)

    def _record(self, kind: str, **data) -> None:
        self.recorder.record(kind, self.name, **data)

    def _pause(self, duration_ms: int) -> None:
        raise ValueError("duration_ms needs virtual time: real Kafka runs on the wall clock")


def _to_bytes(data) -> bytes | None:
    return data.encode("utf-8") if isinstance(data, str) else data


def _kwargs(**given) -> dict:
    """Only the arguments the caller gave, so confluent-kafka applies its own defaults."""
    return {k: v for k, v in given.items() if v is not _UNSET}


_UNSET = object()


class RecordingProducer(Producer):
    """A real confluent_kafka Producer that records send/ack/nack and honours the crash plan."""

    def _attach(self, recorder: Recorder, app: App, name: str, settings: dict) -> None:
        self.recorder, self.app, self.name, self.settings = recorder, app, name, settings
        self.transactional_id = settings.get("transactional.id")
        self._txn: str | None = None
        self._txn_partitions: set[str] = set()
        self._unreported: list[bytes | None] = []
        app.clients.append(self)

    def __repr__(self) -> str:
        return f"<RecordingProducer {self.name} -> {self.settings['bootstrap.servers']}>"

    def produce(self, topic, value=None, key=None, partition=_UNSET, on_delivery=None,
                callback=None, timestamp=_UNSET, headers=_UNSET) -> None:
        """confluent-kafka's produce(); the delivery report is also recorded as ack or nack."""
        self.app.check_alive("producer.produce")
        self.app.hook("producer.produce", "before")
        value, key = _to_bytes(value), _to_bytes(key)
        report, txn = on_delivery or callback, self._txn

        def delivered(err, msg) -> None:
            self._delivered(err, msg, report, txn)

        super().produce(topic, value=value, key=key, on_delivery=delivered,
                        **_kwargs(partition=partition, timestamp=timestamp, headers=headers))
        self._unreported.append(value)
        extra = {"txn": txn} if txn is not None else {}
        chosen = partition if partition is not _UNSET else -1  # librdkafka picks it later
        self.recorder.record("send", self.name, topic=topic, partition=chosen, key=key,
                             value=value, **extra)
        self.app.hook("producer.produce", "after")

    def _delivered(self, err, msg, report, txn) -> None:
        if not self.app.alive:
            return  # a dead process hears nothing
        with contextlib.suppress(ValueError):
            self._unreported.remove(msg.value())
        if err is None:
            offset = msg.offset()
            self.recorder.record("ack", self.name, topic=msg.topic(), partition=msg.partition(),
                                 offset=OFFSET_INVALID if offset is None else offset,
                                 value=msg.value())
            if txn is not None:
                self._txn_partitions.add(f"{msg.topic()}-{msg.partition()}")
        else:
            self.recorder.record("nack", self.name, topic=msg.topic(), partition=msg.partition(),
                                 value=msg.value(), error=err.name(),
                                 indefinite=is_indefinite(err))
        if report is not None:
            report(err, msg)

    def poll(self, *args, **kwargs) -> int:
        """Serve delivery reports (and record them)."""
        return self.app.call("producer.poll", super().poll, *args, **kwargs)

    def flush(self, *args, **kwargs) -> int:
        """Wait for every delivery report (and record them); returns how many are left."""
        return self.app.call("producer.flush", super().flush, *args, **kwargs)

    def init_transactions(self, *args, **kwargs) -> None:
        """Register transactional.id with the transaction coordinator."""
        return self.app.call("producer.init_transactions", super().init_transactions,
                          *args, **kwargs)

    def begin_transaction(self) -> None:
        """Start a transaction; its records are labelled with it in the History."""
        self.app.call("producer.begin_transaction", super().begin_transaction)
        self._txn = self.recorder.transaction_label(self.transactional_id or "?")
        self._txn_partitions = set()

    def send_offsets_to_transaction(self, positions, group_metadata, *args, **kwargs) -> None:
        """Add the consumer's positions to the transaction (recorded as ``txn_offsets``)."""
        self.app.call("producer.send_offsets_to_transaction", super().send_offsets_to_transaction,
                   positions, group_metadata, *args, **kwargs)
        self.recorder.record("txn_offsets", self.name, txn=self._txn,
                             offsets=[[tp.topic, tp.partition, tp.offset] for tp in positions])

    def commit_transaction(self, *args, **kwargs) -> None:
        """Commit; once it returns, the History records the transaction as committed."""
        self.app.call("producer.commit_transaction", super().commit_transaction, *args, **kwargs)
        self._end_transaction("commit")

    def abort_transaction(self, *args, **kwargs) -> None:
        """Abort; once it returns, the History records the transaction as aborted."""
        self.app.call("producer.abort_transaction", super().abort_transaction, *args, **kwargs)
        self._end_transaction("abort")

    def _end_transaction(self, outcome: str) -> None:
        if self._txn is not None:
            self.recorder.record("txn_end", self.name, txn=self._txn, outcome=outcome,
                                 reason="requested by the producer",
                                 partitions=sorted(self._txn_partitions))
        self._txn = None

    def _die(self) -> None:
        """Lose what is in memory, as a killed process does; in-flight writes may still land.

        Every record whose delivery report the application had not yet seen is
        recorded as ``lost_buffer``. (The toy lists only records the broker had
        not yet acknowledged; from outside librdkafka the two cannot be told
        apart, and for the checker both are writes the application never heard of.)
        """
        if self._unreported:
            self.recorder.record("lost_buffer", self.app.name, values=list(self._unreported))
        self._unreported = []
        with contextlib.suppress(KafkaException, RuntimeError):
            Producer.purge(self, in_queue=True, in_flight=True, blocking=False)
            Producer.poll(self, 0)  # serve the purge reports; a dead process ignores them


class RecordingConsumer(Consumer):
    """A real confluent_kafka Consumer that records poll/commit and honours the crash plan."""

    def _attach(self, recorder: Recorder, app: App, name: str, settings: dict) -> None:
        self.recorder, self.app, self.name, self.settings = recorder, app, name, settings
        self.group_id = settings.get("group.id")
        self.closed = False
        app.clients.append(self)

    def __repr__(self) -> str:
        return f"<RecordingConsumer {self.name} group={self.group_id!r}>"

    def poll(self, *args, **kwargs):
        """confluent-kafka's poll(); a returned message is recorded as ``poll``."""
        self.app.check_alive("consumer.poll")
        self.app.hook("consumer.poll", "before")
        msg = super().poll(*args, **kwargs)
        if msg is not None:
            self._record_message(msg)
        self.app.hook("consumer.poll", "after")
        return msg

    def consume(self, *args, **kwargs):
        """confluent-kafka's consume(); every returned message is recorded as ``poll``."""
        messages = self.app.call("consumer.poll", super().consume, *args, **kwargs)
        for msg in messages:
            self._record_message(msg)
        return messages

    def _record_message(self, msg) -> None:
        if msg.error() is None:
            self.recorder.record("poll", self.name, topic=msg.topic(),
                                 partition=msg.partition(), offset=msg.offset(),
                                 value=msg.value())
        else:
            self.recorder.record("poll_error", self.name, error=msg.error().name())

    def commit(self, message=_UNSET, offsets=_UNSET, asynchronous=_UNSET):
        """confluent-kafka's commit(); a synchronous commit is recorded when it returns.

        Asynchronous commits are recorded from the ``on_commit`` callback, when
        the group coordinator has answered (librdkafka serves it from a later
        poll), which is when the toy records them too.
        """
        result = self.app.call("consumer.commit", super().commit,
                            **_kwargs(message=message, offsets=offsets,
                                      asynchronous=asynchronous))
        if asynchronous is not _UNSET and not asynchronous and result:
            self._record_commits(result)
        return result

    def _on_commit(self, err, partitions, user_callback) -> None:
        if err is None and self.app.alive:
            self._record_commits(partitions)
        if user_callback is not None:
            user_callback(err, partitions)

    def _record_commits(self, partitions) -> None:
        for tp in partitions:
            if tp.error is None and tp.offset >= 0:
                self.recorder.record("commit", self.name, group=self.group_id, topic=tp.topic,
                                     partition=tp.partition, offset=tp.offset)

    def seek(self, partition) -> None:
        """Move the position; recorded as ``seek``."""
        self.app.call("consumer.seek", super().seek, partition)
        self.recorder.record("seek", self.name, topic=partition.topic,
                             partition=partition.partition, offset=partition.offset)

    def subscribe(self, *args, **kwargs) -> None:
        """Join the group (a crash point, as in the toy)."""
        return self.app.call("consumer.subscribe", super().subscribe, *args, **kwargs)

    def assign(self, *args, **kwargs) -> None:
        """Take partitions directly (a crash point, as in the toy)."""
        return self.app.call("consumer.assign", super().assign, *args, **kwargs)

    def committed(self, *args, **kwargs):
        """The group's committed offsets (a crash point, as in the toy)."""
        return self.app.call("consumer.committed", super().committed, *args, **kwargs)

    def position(self, *args, **kwargs):
        """The next offsets poll() would return; a dead process answers nothing."""
        self.app.check_alive("consumer.position")
        return super().position(*args, **kwargs)

    def consumer_group_metadata(self):
        """Group metadata for send_offsets_to_transaction; a dead process answers nothing."""
        self.app.check_alive("consumer.consumer_group_metadata")
        return super().consumer_group_metadata()

    def close(self) -> None:
        """Close; with enable.auto.commit on, librdkafka first commits what poll() returned."""
        self.app.check_alive("consumer.close")
        if self.closed:
            return
        self.app.hook("consumer.close", "before")
        super().close()
        self.closed = True
        self.recorder.record("close", self.name)
        self.app.hook("consumer.close", "after")

    def _die(self) -> None:
        """Stop without committing anything more (see :func:`crash`)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(KafkaException, RuntimeError):
                super().close()


def _guarded(base: type, role: str, name: str) -> Callable:
    def method(self, *args, **kwargs):
        self.app.check_alive(f"{role}.{name}")
        return getattr(base, name)(self, *args, **kwargs)

    method.__name__ = name
    method.__doc__ = f"confluent-kafka's {name}(); a dead process answers nothing."
    return method


for _name in ("assignment", "unassign", "store_offsets", "get_watermark_offsets", "pause",
              "resume", "incremental_assign", "incremental_unassign", "list_topics",
              "memberid", "offsets_for_times", "unsubscribe"):
    setattr(RecordingConsumer, _name, _guarded(Consumer, "consumer", _name))
for _name in ("purge", "list_topics"):
    setattr(RecordingProducer, _name, _guarded(Producer, "producer", _name))


# ----- named faults ---------------------------------------------------------------------------


def lose_produce_responses(conn: Connection, topic: str, count: int = 1, partition: int = 0,
                           recorder: Recorder | None = None) -> None:
    """The next ``count`` produce responses from ``topic``'s leader never reach the producer.

    Mock cluster only. The leader writes each batch at once but answers
    ``LOST_RESPONSE_DELAY_MS`` late, far beyond the producer's timeout
    (``request.timeout.ms``, passed to librdkafka as ``socket.timeout.ms``; use a
    small one, e.g. 1000, or the demo waits that long). librdkafka then drops
    the connection and retries: without idempotence the batch is written twice.
    """
    if conn.mock is None:
        raise FaultNotSupported(
            "a lost produce response can only be staged on the mock cluster; a real "
            "cluster offers no switch for it (you would need a network fault injector "
            "such as toxiproxy between client and broker)")
    leader = conn.leader(topic, partition)
    conn.mock.delay_responses(leader, count, LOST_RESPONSE_DELAY_MS)
    if recorder is not None:
        fault = DropMessages(api="produce", kind="response", count=count)
        recorder.record("fault", "nemesis", fault=repr(fault),
                        message=f"next {count} produce response(s) of broker {leader} held back "
                                f"{LOST_RESPONSE_DELAY_MS} ms")


def crash(client) -> None:
    """Kill the process a recorded client lives in, now: as if by ``kill -9``.

    Its consumers are closed without committing (with ``enable.auto.commit``
    off nothing more is committed; with it on, librdkafka's close still commits
    what poll() returned, which a real kill would not: the auto-commit trap is
    left to the toy). Its producers lose every record not yet reported; a
    request already sent may still be written.
    """
    client.recorder.record("crash", client.app.name, point="kill", phase="now", nth=1)
    client.app.die()


def _lost_responses(fault) -> bool:
    return (isinstance(fault, DropMessages) and (fault.api, fault.kind) == ("produce", "response")
            and fault.skip == 0 and fault.src is None and fault.dst is None)


def _check_faults(conn: Connection, plan: FaultPlan) -> None:
    """Refuse, before touching the cluster, any fault the bridge cannot stage on it."""
    for fault in plan.faults:
        if isinstance(fault, (CrashClient, FailProcessing)):
            continue
        if _lost_responses(fault):
            if conn.mock is None or not conn.mock.faults_supported:
                raise FaultNotSupported(
                    f"{fault!r}: a lost produce response can only be staged on the mock "
                    "cluster, through librdkafka's mock API")
            continue
        raise FaultNotSupported(
            f"{fault!r} has no equivalent on real clients here: the bridge can crash the "
            "application (CrashClient, FailProcessing) and, on the mock cluster, lose produce "
            "responses (DropMessages('produce', 'response')); broker crashes, failover and "
            "replication faults need the toy cluster")


def _arm_network_faults(conn: Connection, recorder: Recorder, topic: str) -> None:
    """Stage the plan's lost produce responses on the mock (after :func:`_check_faults`)."""
    for fault in recorder.plan.faults:
        if _lost_responses(fault):
            lose_produce_responses(conn, topic, fault.count, recorder=recorder)


# ----- running learner code against real Kafka ----------------------------------------------------


@dataclass
class RealRun:
    """One story played on real clients: the History, the checker's Report, and where."""

    history: object
    report: Report
    topic: str
    cluster: str
    restarts: int = 0
    notes: list = field(default_factory=list)


def message_values(count: int, prefix: str = "m") -> list[str]:
    """Unique, ordered message values: m-000, m-001… (the toy's scenarios use the same)."""
    return [f"{prefix}-{i:03d}" for i in range(count)]


def publish(conn: Connection, recorder: Recorder, topic: str, values: Iterable[str],
            config: Mapping[str, object] | None = None, timeout_s: float = WAIT_S) -> int:
    """A producer application: send each value, then flush; a crash just ends it.

    The flush waits at most ``timeout_s``; whatever is still undelivered then
    is purged and reported as failed, so no run waits for ever. Returns the
    number of records that were still outstanding when it gave up.
    """
    producer = conn.producer(config, recorder=recorder)
    return _send_all(producer, topic, values, timeout_s)


def _send_all(producer: RecordingProducer, topic: str, values, timeout_s: float) -> int:
    try:
        for value in values:
            producer.produce(topic, value)
        left = producer.flush(timeout_s)
    except Crash:
        return 0
    if left:
        producer.purge(in_queue=True, in_flight=True, blocking=True)
        super(RecordingProducer, producer).flush(1.0)
    return left


def seed_topic(conn: Connection, recorder: Recorder, topic: str, values: list[str]) -> None:
    """Fill the topic before a consumer-side story starts (recorded: these are the sends).

    Idempotence is off only because a new idempotent producer first waits about
    half a second for its producer id; no fault touches the seeding.
    """
    left = publish(conn, recorder, topic, values, {"enable.idempotence": False})
    if left:
        raise TimeoutError(f"{left} of {len(values)} seed records not acknowledged in time")


def _assign_all(consumer: RecordingConsumer, topic: str, conn: Connection) -> None:
    """Own every partition of ``topic``, starting at the group's committed offsets.

    The harness assigns instead of subscribing: joining a group takes seconds
    on a real cluster (``group.initial.rebalance.delay.ms``, 3 s, and the mock
    waits as long), and a loop that stops at the first empty ``poll(1.0)``
    would give up before its partitions arrive. For the same reason it looks
    up the committed offsets and watermarks first and assigns absolute offsets
    (``auto.offset.reset`` applied here, as the toy applies it): left to
    itself, a fresh librdkafka consumer measured on the mock sometimes took
    over a second to resolve its start offset. Commits still go to the group.
    These are the harness's calls, not the learner's: no crash point counts them.
    """
    tps = [TopicPartition(topic, p) for p in conn.partitions(topic)]
    reset = consumer.settings.get("auto.offset.reset", "latest")
    start = []
    for tp in Consumer.committed(consumer, tps, timeout=WAIT_S):
        offset = tp.offset
        if offset < 0:
            low, high = Consumer.get_watermark_offsets(consumer, tp, timeout=WAIT_S)
            offset = low if reset in ("earliest", "smallest", "beginning") else high
        start.append(TopicPartition(topic, tp.partition, offset))
    Consumer.assign(consumer, start)


def consume_with_restarts(conn: Connection, recorder: Recorder, topic: str, loop: Callable,
                          config: Mapping[str, object] | None = None,
                          dedupe: set | None = None, effect: Callable | None = None) -> int:
    """Run ``loop(consumer, process)`` until it returns, restarting it after each crash.

    The toy's ``scenarios.consume_with_restarts`` on real clients: a restart is
    a new App with a new consumer in the same group, so it resumes at the
    group's committed offset. ``dedupe`` (a set of values seen, standing for a
    database) turns repeats into ``dedupe_skip``. Returns the number of restarts.
    """
    from course_lib.scenarios import remember_seen

    settings = {"group.id": f"{GROUP}-{topic}", "auto.offset.reset": "earliest",
                **(config or {})}
    for restarts in range(MAX_RESTARTS + 1):
        app = recorder.app("consumer-app")
        consumer = conn.consumer(settings, recorder=recorder, app=app)
        process = app.processor(effect=remember_seen(dedupe) if dedupe is not None else effect)
        try:
            _assign_all(consumer, topic, conn)
            loop(consumer, process)
            consumer.close()
            return restarts
        except (Crash, ProcessingError):
            app.die()
    return MAX_RESTARTS


def final_read(conn: Connection, recorder: Recorder, topic: str,
               isolation: str = "read_committed", timeout_s: float = WAIT_S) -> None:
    """Record what a fresh reader with ``isolation`` sees in every partition, start to end."""
    reader = Consumer({"bootstrap.servers": conn.bootstrap_servers, "logger": LOGGER,
                       "group.id": f"course-lib-final-read-{topic}",
                       "enable.auto.commit": False, "isolation.level": isolation})
    try:
        for partition in conn.partitions(topic):
            values = _read_partition(reader, topic, partition, timeout_s)
            recorder.record("final_read", "checker", topic=topic, partition=partition,
                            isolation=isolation, values=values)
    finally:
        reader.close()


def _read_partition(reader: Consumer, topic: str, partition: int, timeout_s: float) -> list:
    tp = TopicPartition(topic, partition)
    low, high = reader.get_watermark_offsets(tp, timeout=timeout_s)
    values: list = []
    if high <= low:
        return values
    reader.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = reader.poll(0.2)
        if msg is not None and msg.error() is None:
            values.append(msg.value())
            if msg.offset() + 1 >= high:
                break
        elif msg is None and reader.position([tp])[0].offset >= high:
            break  # only control records (transaction markers) were left
    else:
        # An open transaction holds a read_committed reader back (the last stable
        # offset); what it could read by now is what it sees.
        LOGGER.warning("final read of %s[%d] stopped before offset %d after %s s",
                       topic, partition, high, timeout_s)
    reader.unassign()
    return values


def run_consume_loop(loop: Callable, conn: Connection | None = None, *, values: int = 10,
                     config: Mapping[str, object] | None = None,
                     faults: FaultPlan | None = None, dedupe: bool = False) -> RealRun:
    """Seed a fresh topic with ``values`` messages, then run a learner's consume loop on it.

    ``loop(consumer, process)`` has ps1's signature (``scenarios.at_least_once``
    is one); ``faults`` may crash the application at named calls, and the
    application is restarted as in the toy. The report counts ``process`` as
    delivery. Without ``conn`` a mock cluster is started for this run only.
    """
    faults = faults or FaultPlan()
    for fault in faults.faults:
        if not isinstance(fault, (CrashClient, FailProcessing)):
            raise FaultNotSupported(f"{fault!r}: a consume loop is attacked with application "
                                    "faults (CrashClient, FailProcessing); lose produce "
                                    "responses with run_producer")
    with _connection(conn) as connection:
        recorder = Recorder(faults)
        topic = connection.create_topic()
        seed_topic(connection, recorder, topic, message_values(values))
        settings = {"enable.auto.commit": False, **(config or {})}
        restarts = consume_with_restarts(connection, recorder, topic, loop, settings,
                                         dedupe=set() if dedupe else None)
        return RealRun(recorder.history, recorder.report("process"), topic, connection.kind,
                       restarts)


def run_producer(send: Callable, conn: Connection | None = None, *, values: int = 10,
                 config: Mapping[str, object] | None = None, faults: FaultPlan | None = None,
                 isolation: str = "read_committed", restarts: int = 0) -> RealRun:
    """Run a learner's ``send(producer, topic, values)`` and check what the topic holds.

    ``faults`` may crash the application or (mock only) lose produce
    responses. After a crash the function runs again in a fresh application
    with a fresh producer, up to ``restarts`` times, as a restarted app would.
    The report counts the final, ``isolation``-level read of the topic as delivery.
    """
    with _connection(conn) as connection:
        recorder = Recorder(faults)
        _check_faults(connection, recorder.plan)
        topic = connection.create_topic()
        _arm_network_faults(connection, recorder, topic)
        crashes = 0
        for _attempt in range(restarts + 1):
            producer = connection.producer(config, recorder=recorder)
            try:
                send(producer, topic, message_values(values))
                left = super(RecordingProducer, producer).flush(WAIT_S)
                if left:
                    raise TimeoutError(f"{left} records still undelivered after {WAIT_S} s")
                break
            except Crash:
                crashes += 1
        final_read(connection, recorder, topic, isolation)
        return RealRun(recorder.history, recorder.report("log"), topic, connection.kind,
                       min(crashes, restarts))


@contextlib.contextmanager
def _connection(conn: Connection | None):
    if conn is not None:
        yield conn
        return
    with connect() as made:
        yield made


def probe_transactional_offsets(conn: Connection | None = None) -> dict:
    """Commit a consumer offset inside a transaction, then ask the group what it committed.

    Kafka stores offsets sent with ``send_offsets_to_transaction`` when the
    transaction commits; this measures whether the cluster in use does.
    Returns ``{"sent": offset, "committed": what committed() answers}``.
    """
    with _connection(conn) as connection:
        recorder = Recorder()
        topic = connection.create_topic("probe")
        output = connection.create_topic("probe-out")
        seed_topic(connection, recorder, topic, message_values(3))
        consumer = connection.consumer({"group.id": f"{GROUP}-{topic}",
                                        "enable.auto.commit": False,
                                        "auto.offset.reset": "earliest"}, recorder=recorder)
        _assign_all(consumer, topic, connection)
        msg = consumer.poll(WAIT_S)
        if msg is None or msg.error() is not None:
            raise TimeoutError(f"no message from {topic} within {WAIT_S} s")
        producer = connection.producer({"transactional.id": f"probe-{topic}"},
                                       recorder=recorder)
        producer.init_transactions(WAIT_S)
        producer.begin_transaction()
        producer.produce(output, msg.value())
        sent = TopicPartition(topic, msg.partition(), msg.offset() + 1)
        producer.send_offsets_to_transaction([sent], consumer.consumer_group_metadata(), WAIT_S)
        producer.commit_transaction(WAIT_S)
        answer = consumer.committed([TopicPartition(topic, msg.partition())], timeout=WAIT_S)
        consumer.close()
        return {"sent": sent.offset, "committed": answer[0].offset}


# ----- the course's claims, retold on real clients -------------------------------------------


_TOPIC_KEYS = {"replication.factor", "min.insync.replicas", "unclean.leader.election.enable"}
_CONSUMER_ONLY = {"enable.auto.commit", "auto.commit.interval.ms", "isolation.level"}
# Real time is expensive: a lost response costs one producer timeout, so keep it at 1 s.
REAL_PRODUCER_SETTINGS = {"request.timeout.ms": 1_000}


def _split(config: dict) -> tuple[dict, dict]:
    producer = {k: v for k, v in config.items()
                if k not in _TOPIC_KEYS | _CONSUMER_ONLY and not k.startswith("app.")}
    consumer = {k: v for k, v in config.items() if k in _CONSUMER_ONLY}
    return producer, consumer


def _unique_transactional_id(config: dict, topic: str) -> dict:
    """Tie a transactional.id to the story's topic, so stories never fence each other."""
    if "transactional.id" in config:
        return {**config, "transactional.id": f"{config['transactional.id']}-{topic}"}
    return config


def _real_lost_ack(conn: Connection, config: dict) -> RealRun:
    plan = FaultPlan((DropMessages(api="produce", kind="response", count=1),))
    producer_settings = {**REAL_PRODUCER_SETTINGS, **_split(config)[0]}
    return run_producer(_send_and_flush, conn, config=producer_settings, faults=plan)


def _send_and_flush(producer, topic: str, values: list[str]) -> None:
    for value in values:
        producer.produce(topic, value)
    producer.flush(WAIT_S)


def _real_consumer_story(default_loop: str, crash_at: CrashClient) -> Callable:
    def story(conn: Connection, config: dict) -> RealRun:
        from course_lib import scenarios

        chosen = scenarios.LOOPS[config.get("app.loop", default_loop)]
        return run_consume_loop(chosen, conn, config=_split(config)[1],
                                faults=FaultPlan((crash_at,)),
                                dedupe=bool(config.get("app.dedupe")))

    return story


def _real_producer_restart(conn: Connection, config: dict) -> RealRun:
    """The app sends a batch, crashes right after flushing, and sends it all again."""
    plan = FaultPlan((CrashClient("producer.flush", "after", 1),))
    with _connection(conn) as connection:
        recorder = Recorder(plan)
        topic = connection.create_topic()
        settings = _unique_transactional_id(_split(config)[0], topic)
        transactional = "transactional.id" in settings
        for _attempt in range(MAX_RESTARTS):
            producer = connection.producer(settings, recorder=recorder)
            try:
                if transactional:
                    producer.init_transactions(WAIT_S)
                    producer.begin_transaction()
                for value in message_values(10):
                    producer.produce(topic, value)
                producer.flush(WAIT_S)
                if transactional:
                    producer.commit_transaction(WAIT_S)
                break
            except Crash:
                continue
        final_read(connection, recorder, topic)
        return RealRun(recorder.history, recorder.report("log"), topic, connection.kind)


def _real_zombie(conn: Connection, config: dict) -> RealRun:
    """Instance A stalls mid-batch; B takes over the same work; then A wakes up."""
    with _connection(conn) as connection:
        recorder = Recorder()
        topic = connection.create_topic()
        settings = _unique_transactional_id(_split(config)[0], topic)
        transactional = "transactional.id" in settings
        values = message_values(10)
        zombie = connection.producer(settings, recorder=recorder,
                                     app=recorder.app("instance-a"))
        if transactional:
            zombie.init_transactions(WAIT_S)
            zombie.begin_transaction()
        for value in values[:5]:
            zombie.produce(topic, value)
        zombie.flush(WAIT_S)
        recorder.record("note", "instance-a", text="stalls (a long GC pause)")
        successor = connection.producer(settings, recorder=recorder,
                                        app=recorder.app("instance-b"))
        if transactional:
            successor.init_transactions(WAIT_S)
            successor.begin_transaction()
        for value in values:
            successor.produce(topic, value)
        successor.flush(WAIT_S)
        if transactional:
            successor.commit_transaction(WAIT_S)
        recorder.record("note", "instance-a", text="wakes up and carries on")
        try:
            for value in values[5:]:
                zombie.produce(topic, value)
            zombie.flush(WAIT_S)
            if transactional:
                zombie.commit_transaction(WAIT_S)
        except KafkaException as error:
            recorder.record("note", "instance-a", text=f"stopped by {error.args[0].name()}")
        final_read(connection, recorder, topic)
        return RealRun(recorder.history, recorder.report("log"), topic, connection.kind)


def _real_aborted_read(conn: Connection, config: dict) -> RealRun:
    """One transaction aborts, the next commits; a consumer reads the topic."""
    from course_lib.scenarios import at_least_once

    with _connection(conn) as connection:
        recorder = Recorder()
        topic = connection.create_topic()
        producer = connection.producer({"transactional.id": f"writer-{topic}"},
                                       recorder=recorder)
        producer.init_transactions(WAIT_S)
        for values, commit in ((message_values(5, "aborted"), False), (message_values(5), True)):
            producer.begin_transaction()
            for value in values:
                producer.produce(topic, value)
            producer.flush(WAIT_S)
            if commit:
                producer.commit_transaction(WAIT_S)
            else:
                producer.abort_transaction(WAIT_S)
        consume_with_restarts(connection, recorder, topic, at_least_once,
                              {"enable.auto.commit": False, **_split(config)[1]})
        return RealRun(recorder.history, recorder.report("process"), topic, connection.kind)


REAL_STORIES: dict[int, Callable] = {
    4: _real_lost_ack,
    8: _real_consumer_story("at_most_once", CrashClient("process", "before", 5)),
    9: _real_consumer_story("at_least_once", CrashClient("consumer.commit", "before", 5)),
    11: _real_producer_restart,
    12: _real_zombie,
    13: _real_aborted_read,
}


@dataclass(frozen=True)
class MockGap:
    """Something the mock cluster does not do as Kafka does, and the experiment that shows it."""

    what: str
    measured: str
    claims: tuple[tuple[int, str], ...] = ()


MOCK_GAPS = (
    MockGap("read_committed does not hide aborted records",
            "A transactional producer wrote 3 records, aborted, then wrote 1 and committed; a "
            "read_committed consumer on the mock returned all 4 (the fetch response reports "
            "the last stable offset as the log end and no aborted transactions).",
            ((13, "fixed"), (11, "fixed"), (12, "fixed"))),
    MockGap("transactional offsets are not stored",
            "After send_offsets_to_transaction(offset 1) and commit_transaction(), committed() "
            "for the group returned OFFSET_INVALID (-1001), from the same and from a new "
            "consumer."),
    MockGap("a plain idempotent producer's retries are not deduplicated",
            "With enable.idempotence=True and the produce response held back past the "
            "timeout, the retried batch was written a second time (the mock checks sequence "
            "numbers only for transactional producers: a transactional producer's retry was "
            "deduplicated, though its delivery report then carried no offset).",
            ((4, "fixed"),)),
    MockGap("a new instance neither aborts nor fences the old one",
            "Instance B called init_transactions() with A's transactional.id while A had a "
            "transaction open; A then produced and committed without any error, and no abort "
            "marker was written for A's first transaction.",
            ((12, "fixed"), (11, "fixed"))),
    MockGap("there is no replication and no failover",
            "With the partition leader set down (rd_kafka_mock_broker_set_down) the leader "
            "did not move and a produce failed with _MSG_TIMED_OUT. (Not measured, read in "
            "librdkafka's rdkafka_mock_handlers.c: a produce request is appended at once, with "
            "no follower copies whatever acks asks for, so acks, the ISR, min.insync.replicas "
            "and unclean election have nothing to act on.)"),
)


@dataclass
class Comparison:
    """One story played on the toy and on real clients, side by side.

    ``real`` is None when the story's fault cannot be staged on the cluster in
    use (``skipped`` says why), e.g. a lost produce response on your own cluster.
    """

    title: str
    toy: Report
    real: Report | None
    cluster: str
    gaps: tuple[MockGap, ...] = ()
    toy_history: object = None
    real_history: object = None
    skipped: str = ""

    @property
    def same(self) -> bool | None:
        """Same guarantee and the same kinds of anomaly on both sides (None if not run)."""
        if self.real is None:
            return None

        def kinds(report: Report) -> tuple:
            return (report.guarantee, bool(report.lost), bool(report.duplicated),
                    bool(report.aborted_reads), bool(report.unacked_writes))

        return kinds(self.toy) == kinds(self.real)

    def summary(self) -> str:
        """A few lines for a notebook: both reports, and why they differ if they do."""
        label = "mock cluster" if self.cluster == "mock" else "your cluster"
        lines = [self.title, f"  toy cluster : {self.toy.summary()}"]
        if self.real is None:
            lines.append(f"  {label}: not run: {self.skipped}")
            return "\n".join(lines)
        lines += [f"  {label}: {self.real.summary()}",
                  "  same outcome: " + ("yes" if self.same else "NO")]
        if not self.same:
            lines += [f"  why: on the mock cluster, {gap.what}" for gap in self.gaps]
        return "\n".join(lines)


def replay(claim: int, variant: str = "failing", conn: Connection | None = None,
           seed: int = 0) -> Comparison:
    """Play a claim of the course on the toy and on real clients, and compare the reports.

    The variant's settings come from :mod:`course_lib.scenarios`, so both sides
    run the same configuration, the same application code and the same fault.
    """
    from course_lib import scenarios

    if claim not in REAL_STORIES:
        raise KeyError(f"claim {claim} has no real-cluster story; these do: "
                       f"{sorted(REAL_STORIES)}")
    toy = scenarios.run(claim, variant, seed)
    title = f"claim {claim} ({variant}): {scenarios.claims()[claim].title}"
    with _connection(conn) as connection:
        try:
            real = REAL_STORIES[claim](connection, dict(toy.config))
        except FaultNotSupported as error:
            return Comparison(title, toy.report, None, connection.kind,
                              toy_history=toy.history, skipped=str(error))
    gaps = tuple(g for g in MOCK_GAPS if (claim, variant) in g.claims) \
        if real.cluster == "mock" else ()
    return Comparison(title, toy.report, real.report, real.cluster, gaps, toy.history,
                      real.history)


def compare_loop(loop: Callable, crash_at: CrashClient | FailProcessing | None = None,
                 conn: Connection | None = None, *, values: int = 10,
                 config: Mapping[str, object] | None = None, seed: int = 0) -> Comparison:
    """Run a learner's consume loop on the toy and on real clients, with the same crash.

    Both sides: a topic with ``values`` messages, ``loop(consumer, process)``
    with ``enable.auto.commit`` off, the application killed at ``crash_at``
    and restarted until the loop returns; delivery is what ``process`` saw.
    """
    from course_lib import scenarios
    from course_lib.cluster import Cluster

    plan = FaultPlan((crash_at,)) if crash_at is not None else FaultPlan()
    settings = {"enable.auto.commit": False, **(config or {})}
    toy_cluster = Cluster(brokers=3, seed=seed, faults=plan)
    toy_cluster.create_topic(scenarios.TOPIC)
    scenarios.seed_topic(toy_cluster, message_values(values))
    scenarios.consume_with_restarts(toy_cluster, loop, settings)
    toy = check(toy_cluster.history)
    real = run_consume_loop(loop, conn, values=values, config=settings, faults=plan)
    title = f"{getattr(loop, '__name__', 'loop')} with {crash_at!r}"
    return Comparison(title, toy, real.report, real.cluster, (), toy_cluster.history,
                      real.history)


def format_gaps() -> str:
    """:data:`MOCK_GAPS` as plain text for a notebook."""
    return "\n\n".join(f"- On the mock, {gap.what}.\n  Measured: {gap.measured}"
                       for gap in MOCK_GAPS)
