"""One runnable scenario per claim the course makes, each failing and fixed.

Every claim (DESIGN §4) is a small story told against a fresh seeded cluster:
a configuration, a fault, an application loop. ``run(claim, variant, seed)``
plays it and returns a :class:`Run` with the history and the checker's
report; the notebooks draw these runs and the tests assert their outcomes.
``python -m course_lib.scenarios`` prints the whole table.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from confluent_kafka import TopicPartition

from course_lib.checker import Report, check
from course_lib.cluster import Cluster
from course_lib.config import producer_config
from course_lib.data import label as value_label
from course_lib.errors import ConfigException, KafkaException
from course_lib.faults import (
    Crash,
    CrashClient,
    DelayMessages,
    DropMessages,
    FaultPlan,
    Isolate,
    KillBroker,
    ProcessingError,
    RestartBroker,
)
from course_lib.outbox import Inbox, Outbox, Relay

TOPIC = "events"
GROUP = "app"
MAX_RESTARTS = 10
SETTLE_MS = 40_000


@dataclass
class Run:
    """One played scenario: what was configured, what happened, what it means."""

    claim: int
    variant: str
    config: dict
    cluster: Cluster
    report: Report
    expected: str
    holds: bool

    @property
    def history(self):
        """The History the report was computed from."""
        return self.cluster.history


@dataclass(frozen=True)
class Variant:
    """One configuration of a claim, with the outcome the course promises for it."""

    name: str
    config: dict
    expected: str
    holds: Callable[[Report], bool]


@dataclass(frozen=True)
class Claim:
    """A claim of the course: a story, and its variants."""

    number: int
    title: str
    story: Callable
    variants: tuple[Variant, ...] = field(default_factory=tuple)

    def variant(self, name: str) -> Variant:
        """The variant called ``name`` (e.g. "failing", "fixed")."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        names = ", ".join(v.name for v in self.variants)
        raise KeyError(f"claim {self.number} has no variant {name!r}; it has {names}")


# ----- building blocks -----------------------------------------------------------------


def message_values(count: int, prefix: str = "m") -> list[str]:
    """Unique, ordered message values: m-000, m-001, …"""
    return [f"{prefix}-{i:03d}" for i in range(count)]


def split_config(config: dict) -> tuple[dict, dict, dict]:
    """One flat config (as the panel and the claims use it) -> topic, producer, consumer.

    Keys starting with ``app.`` belong to the story, not to Kafka, and go nowhere.
    """
    topic_keys = {"replication.factor", "min.insync.replicas", "unclean.leader.election.enable"}
    consumer_keys = {"enable.auto.commit", "auto.commit.interval.ms", "isolation.level"}
    topic = {k: v for k, v in config.items() if k in topic_keys}
    consumer = {k: v for k, v in config.items() if k in consumer_keys}
    producer = {k: v for k, v in config.items()
                if k not in topic_keys and k not in consumer_keys and not k.startswith("app.")}
    return topic, producer, consumer


def _cluster(seed: int, config: dict, plan: FaultPlan, brokers: int = 3) -> Cluster:
    cluster = Cluster(brokers=brokers, seed=seed, faults=plan)
    cluster.create_topic(TOPIC, split_config(config)[0])
    return cluster


def publish(cluster: Cluster, values: list[str], producer_config: dict,
            pace_ms: int = 0) -> None:
    """A producer application: send each value, then flush; a crash just ends it."""
    producer = cluster.process("producer-app").producer(producer_config)
    try:
        for value in values:
            producer.produce(TOPIC, value)
            if pace_ms:
                producer.poll(pace_ms / 1000)
        producer.flush()
    except Crash:
        pass


def final_read(cluster: Cluster, isolation: str = "read_committed") -> None:
    """Heal every fault, let replication settle, and record what a reader can see.

    Faults already due (say, a kill triggered by the last acknowledgement) play
    out first, so healing never races the story it ends.
    """
    cluster.settle(1_000)
    for broker in cluster.brokers:
        for other in cluster.brokers:
            cluster.network.reconnect(broker.name, other.name)
        if not broker.alive:
            cluster.restart_broker(broker.id)
    cluster.settle(SETTLE_MS)
    for partition in cluster.partitions_of(TOPIC):
        values = cluster.readable(TOPIC, partition, isolation)
        cluster.history.record("final_read", "checker", topic=TOPIC, partition=partition,
                               isolation=isolation, values=values or [])


def consume_with_restarts(cluster: Cluster, loop: Callable, consumer_config: dict,
                          processing_ms: int = 0, dedupe: set | None = None,
                          inbox: Inbox | None = None, effect: Callable | None = None) -> int:
    """Run a consumer application until it finishes, restarting it after each crash.

    A restart is a new process with a new consumer in the same group, so it
    resumes at the group's committed offset. What outlives the process stands
    for a database: ``dedupe`` (a set of seen values), an SQLite ``inbox``, or
    whatever ``effect`` writes. With either dedupe form, processing a message
    already seen records a ``dedupe_skip`` instead of a second effect.
    """
    config = {"group.id": GROUP, "auto.offset.reset": "earliest", **consumer_config}
    for restarts in range(MAX_RESTARTS + 1):
        app = cluster.process("consumer-app")
        consumer = app.consumer(config)
        process = app.processor(effect=_effect(effect, dedupe, inbox),
                                duration_ms=processing_ms)
        try:
            consumer.subscribe([TOPIC])
            loop(consumer, process)
            consumer.close()
            return restarts
        except (Crash, ProcessingError):
            app.die()
    return MAX_RESTARTS


def remember_seen(seen: set) -> Callable:
    """An effect that dedupes by value in ``seen``; returning False means "skipped"."""
    def remember(msg) -> bool:
        if msg.value() in seen:
            return False
        seen.add(msg.value())
        return True

    return remember


def _effect(effect: Callable | None, seen: set | None, inbox: Inbox | None) -> Callable | None:
    """Compose the side effect with deduplication; returning False means "skipped"."""
    if seen is not None:
        return remember_seen(seen)
    if inbox is not None:
        return lambda msg: inbox.handle(msg.value().decode(), lambda _db: None)
    return effect


def at_most_once(consumer, process) -> None:
    """Commit, then process: a crash in between skips the message."""
    while (msg := consumer.poll(1.0)) is not None:
        consumer.commit(message=msg, asynchronous=False)
        process(msg)


def at_least_once(consumer, process) -> None:
    """Process, then commit: a crash in between repeats the message."""
    while (msg := consumer.poll(1.0)) is not None:
        process(msg)
        consumer.commit(message=msg, asynchronous=False)


def buffered(consumer, process, batch: int = 10, commit: bool = False) -> None:
    """Collect messages in memory and process them in bulk.

    With ``commit=False`` only auto-commit records progress, and it may commit
    messages still waiting in memory; with ``commit=True`` the loop commits
    after each processed batch.
    """
    pending = []
    while True:
        msg = consumer.poll(2.0)
        if msg is not None:
            pending.append(msg)
        if len(pending) >= batch or (msg is None and pending):
            for item in pending:
                process(item)
            if commit:
                consumer.commit(message=pending[-1], asynchronous=False)
            pending.clear()
        if msg is None:
            return


def trickle(cluster: Cluster, values: list[str], every_ms: int) -> None:
    """An upstream producer that sends one value every ``every_ms`` on its own clock."""
    producer = cluster.process("upstream").producer({})
    for index, value in enumerate(values):
        cluster.world.call_at(index * every_ms, producer.produce, TOPIC, value)


def seed_topic(cluster: Cluster, values: list[str]) -> None:
    """Fill the topic reliably before a consumer-side story starts."""
    publish(cluster, values, {})
    cluster.settle(1_000)


LOOPS = {"at_most_once": at_most_once, "at_least_once": at_least_once}


# ----- the stories (one per claim) -------------------------------------------------------


def _story_leader_crash(seed: int, config: dict) -> Cluster:
    plan = FaultPlan((
        DelayMessages(200, api="fetch", kind="response", count=10**6),
        KillBroker("leader", on="ack", nth=1),
    ))
    cluster = _cluster(seed, config, plan)
    publish(cluster, message_values(10), split_config(config)[1])
    final_read(cluster)
    return cluster


def _story_isr_shrink(seed: int, config: dict) -> Cluster:
    # The leader checks its followers every replica.lag.time.max.ms / 2, so cut off
    # at 0 they leave the ISR at 45 s; the writes come after that.
    plan = FaultPlan((Isolate(0, at_ms=0), KillBroker(0, at_ms=60_000, lose_disk=True)))
    cluster = _cluster(seed, config, plan)
    cluster.world.advance(46_000)
    publish(cluster, message_values(10), split_config(config)[1])
    final_read(cluster)
    return cluster


def _story_unclean(seed: int, config: dict) -> Cluster:
    plan = FaultPlan((
        KillBroker(2, at_ms=0),
        KillBroker(0, at_ms=10_000), KillBroker(1, at_ms=10_000),
        RestartBroker(2, at_ms=11_000),
        RestartBroker(1, at_ms=30_000),
    ))
    cluster = _cluster(seed, config, plan)
    producer_config = split_config(config)[1]
    cluster.world.advance(1)
    publish(cluster, message_values(10, "before"), producer_config)
    cluster.world.run(until_ms=12_000)
    publish(cluster, message_values(10, "after"), producer_config)
    final_read(cluster)
    return cluster


def _story_lost_ack(seed: int, config: dict) -> Cluster:
    plan = FaultPlan((DropMessages(api="produce", kind="response", count=1),))
    cluster = _cluster(seed, config, plan)
    publish(cluster, message_values(10), split_config(config)[1])
    final_read(cluster)
    return cluster


def _story_in_flight(seed: int, config: dict) -> Cluster:
    plan = FaultPlan((DropMessages(api="produce", kind="request", count=1),))
    cluster = _cluster(seed, config, plan)
    publish(cluster, message_values(10), split_config(config)[1], pace_ms=2)
    final_read(cluster)
    return cluster


def _story_producer_crash(seed: int, config: dict) -> Cluster:
    plan = FaultPlan((CrashClient("producer.flush", "before", 1),))
    cluster = _cluster(seed, config, plan)
    values = message_values(10)
    if not config.get("app.outbox"):
        publish(cluster, values, split_config(config)[1])
        publish(cluster, [], split_config(config)[1])  # the restarted app has nothing to resend
    else:
        with tempfile.TemporaryDirectory() as directory:
            outbox = Outbox(Path(directory) / "outbox.db")
            with outbox.db:
                for value in values:
                    outbox.add(value, TOPIC, value)
            for _attempt in range(MAX_RESTARTS):
                app = cluster.process("producer-app")
                for row in outbox.unsent():
                    cluster.history.record("send", app.name, topic=TOPIC, partition=0,
                                           key=None, value=row.payload.encode())
                try:
                    Relay(outbox, app.producer(split_config(config)[1])).run_once()
                except Crash:
                    continue
                if not outbox.unsent():
                    break
            outbox.close()
    final_read(cluster)
    return cluster


def _story_outage(seed: int, config: dict) -> Cluster:
    plan = FaultPlan(tuple(KillBroker(b, at_ms=0) for b in range(3))
                     + tuple(RestartBroker(b, at_ms=150_000) for b in range(3)))
    cluster = _cluster(seed, config, plan)
    cluster.world.advance(1)
    publish(cluster, message_values(10), split_config(config)[1])
    final_read(cluster)
    return cluster


def _consumer_story(loop: Callable, crash: CrashClient, processing_ms: int = 0) -> Callable:
    def story(seed: int, config: dict) -> Cluster:
        cluster = _cluster(seed, config, FaultPlan((crash,)))
        seed_topic(cluster, message_values(10))
        chosen = LOOPS[config["app.loop"]] if "app.loop" in config else loop
        dedupe = set() if config.get("app.dedupe") else None
        consume_with_restarts(cluster, chosen, split_config(config)[2], processing_ms,
                              dedupe=dedupe)
        return cluster

    return story


def _story_auto_commit(seed: int, config: dict) -> Cluster:
    plan = FaultPlan((CrashClient("process", "before", 15),))
    cluster = _cluster(seed, config, plan)
    trickle(cluster, message_values(30), every_ms=1_000)
    manual = not config.get("enable.auto.commit", True)
    loop = partial(buffered, commit=manual)
    consume_with_restarts(cluster, loop, split_config(config)[2], processing_ms=100)
    return cluster


def _transactional(config: dict) -> bool:
    return "transactional.id" in config


def _send(producer, values: list[str], transactional: bool, *, begin: bool = True,
          commit: bool = True) -> None:
    """Produce ``values`` and flush; with ``transactional``, inside one transaction.

    ``begin`` registers the instance (init_transactions) and opens the
    transaction; ``commit`` commits it. A story that stalls mid-transaction
    sends its two halves with one flag each.
    """
    if transactional and begin:
        producer.init_transactions()
        producer.begin_transaction()
    for value in values:
        producer.produce(TOPIC, value)
    producer.flush()
    if transactional and commit:
        producer.commit_transaction()


def _story_producer_restart(seed: int, config: dict) -> Cluster:
    """The app sends a batch, crashes before noting its progress, and sends it again."""
    cluster = _cluster(seed, config, FaultPlan((CrashClient("producer.flush", "after", 1),)))
    values = message_values(10)
    for _attempt in range(MAX_RESTARTS):
        producer = cluster.process("producer-app").producer(split_config(config)[1])
        try:
            _send(producer, values, _transactional(config))
            break
        except Crash:
            continue
    final_read(cluster)
    return cluster


def _story_zombie(seed: int, config: dict) -> Cluster:
    """Instance A stalls mid-batch; B takes over the same work; then A wakes up."""
    cluster = _cluster(seed, config, FaultPlan())
    values = message_values(10)
    settings = split_config(config)[1]
    transactional = _transactional(config)
    zombie = cluster.process("instance-a").producer(settings)
    _send(zombie, values[:5], transactional, commit=False)
    cluster.history.record("note", "instance-a", text="stalls (a long GC pause)")
    _send(cluster.process("instance-b").producer(settings), values, transactional)
    cluster.history.record("note", "instance-a", text="wakes up and carries on")
    try:
        _send(zombie, values[5:], transactional, begin=False)
    except KafkaException as error:
        cluster.history.record("note", "instance-a", text=f"stopped by {error.args[0].name()}")
    final_read(cluster)
    return cluster


def _story_aborted_read(seed: int, config: dict) -> Cluster:
    """One transaction aborts, the next commits; a consumer reads the topic."""
    cluster = _cluster(seed, config, FaultPlan())
    producer = cluster.process("producer-app").producer({"transactional.id": "writer"})
    producer.init_transactions()
    for values, commit in ((message_values(5, "aborted"), False), (message_values(5), True)):
        producer.begin_transaction()
        for value in values:
            producer.produce(TOPIC, value)
        producer.flush()
        (producer.commit_transaction if commit else producer.abort_transaction)()
    consume_with_restarts(cluster, at_least_once, split_config(config)[2])
    return cluster


def _story_relay_crash(seed: int, config: dict) -> Cluster:
    """The relay publishes, dies before marking the rows sent, and publishes again."""
    cluster = _cluster(seed, config, FaultPlan((CrashClient("producer.flush", "after", 1),)))
    with tempfile.TemporaryDirectory() as directory:
        outbox = Outbox(Path(directory) / "shop.db")
        with outbox.db:
            for value in message_values(10):
                outbox.add(value, TOPIC, value)
        for _attempt in range(MAX_RESTARTS):
            app = cluster.process("relay")
            try:
                Relay(outbox, app.producer({})).run_once()
            except Crash:
                continue
            break
        inbox = Inbox(outbox.db) if config.get("app.inbox") else None
        consume_with_restarts(cluster, at_least_once, {"enable.auto.commit": False},
                              inbox=inbox)
        outbox.close()
    return cluster


def _story_offsets_with_results(seed: int, config: dict) -> Cluster:
    """Results go to a database; the crash falls between that write and the offset commit."""
    plan = FaultPlan((CrashClient("consumer.commit", "before", 5),
                      CrashClient("process", "after", 8)))
    cluster = _cluster(seed, config, plan)
    seed_topic(cluster, message_values(10))
    with tempfile.TemporaryDirectory() as directory:
        db = sqlite3.connect(Path(directory) / "results.db")
        with db:
            db.execute("CREATE TABLE results (value TEXT, source_offset INTEGER)")
            db.execute("CREATE TABLE offsets (partition INTEGER PRIMARY KEY, next INTEGER)")
        loop = _offsets_in_database(db) if config.get("app.offsets_in_db") else at_least_once
        consume_with_restarts(cluster, loop, {"enable.auto.commit": False},
                              effect=_store_result(db, config.get("app.offsets_in_db")))
        db.close()
    return cluster


def _store_result(db: sqlite3.Connection, with_offset: bool) -> Callable:
    def effect(msg) -> None:
        with db:
            db.execute("INSERT INTO results VALUES (?, ?)", (msg.value(), msg.offset()))
            if with_offset:
                db.execute("INSERT OR REPLACE INTO offsets VALUES (?, ?)",
                           (msg.partition(), msg.offset() + 1))

    return effect


def _offsets_in_database(db: sqlite3.Connection) -> Callable:
    def loop(consumer, process) -> None:
        """Start where the database says, not where the group committed."""
        row = db.execute("SELECT next FROM offsets WHERE partition = 0").fetchone()
        consumer.seek(TopicPartition(TOPIC, 0, row[0] if row else 0))
        while (msg := consumer.poll(1.0)) is not None:
            process(msg)

    return loop


# ----- the claims ----------------------------------------------------------------------------

SAFE = {"acks": "all", "replication.factor": 3, "min.insync.replicas": 2}


def _claims() -> tuple[Claim, ...]:
    lost_acked = lambda r: bool(r.lost_acked)  # noqa: E731
    no_loss = lambda r: not r.lost  # noqa: E731
    return (
        Claim(1, "acks=1: the leader dies before followers copy an acknowledged write",
              _story_leader_crash, (
                  Variant("failing", {"acks": "1", "replication.factor": 3}, "acked writes lost",
                          lost_acked),
                  Variant("fixed", SAFE, "nothing lost", no_loss))),
        Claim(2, "ISR shrinks to the leader, then the leader and its disk are gone",
              _story_isr_shrink, (
                  Variant("failing", {"acks": "all", "replication.factor": 3,
                                      "min.insync.replicas": 1},
                          "acked writes lost", lost_acked),
                  Variant("fixed", SAFE, "NOT_ENOUGH_REPLICAS, no acked write lost",
                          lambda r: not r.lost_acked
                          and "NOT_ENOUGH_REPLICAS" in r.errors))),
        Claim(3, "all ISR members die and a stale follower returns",
              _story_unclean, (
                  Variant("failing", {**SAFE, "min.insync.replicas": 1,
                                      "unclean.leader.election.enable": True},
                          "acked writes truncated, offsets reused",
                          lambda r: bool(r.lost_acked) and bool(r.inconsistent_offsets)),
                  Variant("fixed", {**SAFE, "min.insync.replicas": 1,
                                    "unclean.leader.election.enable": False},
                          "offline until an ISR member returns, nothing lost", no_loss))),
        Claim(4, "a produce response is lost and the producer retries",
              _story_lost_ack, (
                  Variant("failing", {"enable.idempotence": False}, "duplicates",
                          lambda r: bool(r.duplicated)),
                  Variant("fixed", {"enable.idempotence": True}, "each write once",
                          lambda r: not r.duplicated and not r.lost),
                  Variant("retries=0", {"enable.idempotence": False, "retries": 0},
                          "the app is told it failed, yet the write exists",
                          lambda r: bool(r.unacked_writes)))),
        Claim(5, "several requests in flight, one is retried",
              _story_in_flight, (
                  Variant("failing", {"enable.idempotence": False, "linger.ms": 0},
                          "reordered", lambda r: bool(r.reordered)),
                  Variant("fixed", {"enable.idempotence": True, "linger.ms": 0},
                          "order kept, no duplicates",
                          lambda r: not r.reordered and not r.duplicated and not r.lost))),
        Claim(6, "the producer app crashes with unsent messages in memory",
              _story_producer_crash, (
                  Variant("failing", {}, "messages lost", lambda r: bool(r.lost)),
                  Variant("fixed", {"app.outbox": True}, "outbox resends, nothing lost",
                          no_loss))),
        Claim(7, "an outage outlasts retries (delivery.timeout.ms)",
              _story_outage, (
                  Variant("failing", {}, "messages lost (_MSG_TIMED_OUT)",
                          lambda r: bool(r.lost) and "_MSG_TIMED_OUT" in r.errors),
                  Variant("fixed", {"delivery.timeout.ms": 300_000},
                          "the cluster is back in time, nothing lost", no_loss))),
        Claim(8, "the consumer commits, then crashes before processing",
              _consumer_story(at_most_once, CrashClient("process", "before", 5)), (
                  Variant("failing", {"enable.auto.commit": False}, "message skipped",
                          lambda r: bool(r.lost)),
                  Variant("fixed", {"enable.auto.commit": False, "app.loop": "at_least_once"},
                          "nothing skipped", no_loss))),
        Claim(9, "the consumer processes, then crashes before committing",
              _consumer_story(at_least_once, CrashClient("consumer.commit", "before", 5)), (
                  Variant("failing", {"enable.auto.commit": False}, "processed twice",
                          lambda r: bool(r.duplicated) and not r.lost),
                  Variant("fixed", {"enable.auto.commit": False, "app.dedupe": True},
                          "an inbox makes it once", lambda r: r.guarantee == "exactly-once"))),
        Claim(10, "auto-commit with messages buffered for slow bulk processing, then a crash",
              _story_auto_commit, (
                  Variant("failing", {"enable.auto.commit": True}, "messages lost",
                          lambda r: bool(r.lost)),
                  Variant("fixed", {"enable.auto.commit": False},
                          "commit after processing, nothing lost", no_loss))),
        Claim(11, "the producer app restarts and resends what it is unsure of",
              _story_producer_restart, (
                  Variant("failing", {"enable.idempotence": True},
                          "duplicates: a new producer id defeats idempotence",
                          lambda r: bool(r.duplicated)),
                  Variant("fixed", {"transactional.id": "sender"},
                          "the old transaction is aborted; read_committed sees each once",
                          lambda r: r.guarantee == "exactly-once"))),
        Claim(12, "a stalled instance (zombie) wakes up after its successor took over",
              _story_zombie, (
                  Variant("failing", {"enable.idempotence": True}, "duplicates",
                          lambda r: bool(r.duplicated)),
                  Variant("fixed", {"transactional.id": "worker"},
                          "the zombie is fenced by its epoch; each once",
                          lambda r: r.guarantee == "exactly-once"))),
        Claim(13, "a transaction aborts; what does a consumer see?",
              _story_aborted_read, (
                  Variant("failing", {"isolation.level": "read_uncommitted"},
                          "aborted reads", lambda r: bool(r.aborted_reads)),
                  Variant("fixed", {"isolation.level": "read_committed"},
                          "only committed records",
                          lambda r: not r.aborted_reads and not r.lost))),
        Claim(14, "the outbox relay crashes between publishing and marking rows sent",
              _story_relay_crash, (
                  Variant("failing", {}, "republished rows processed twice",
                          lambda r: bool(r.duplicated) and not r.lost),
                  Variant("fixed", {"app.inbox": True}, "the inbox makes it once",
                          lambda r: r.guarantee == "exactly-once"))),
        Claim(15, "results go to a database; the consumer crashes before committing",
              _story_offsets_with_results, (
                  Variant("failing", {}, "results written twice",
                          lambda r: bool(r.duplicated) and not r.lost),
                  Variant("fixed", {"app.offsets_in_db": True},
                          "offsets stored with results: exactly once",
                          lambda r: r.guarantee == "exactly-once"))),
    )


def claims() -> dict[int, Claim]:
    """Every claim of the course, by number."""
    return {claim.number: claim for claim in _claims()}


_LOG_CLAIMS = {1, 2, 3, 4, 5, 6, 7, 11, 12}


def delivered_by(claim: int) -> str:
    """What the checker counts as delivery for a claim: the log (producer-side claims)
    or what the application processed (consumer-side claims)."""
    return "log" if claim in _LOG_CLAIMS else "process"


def run(claim: int, variant: str = "failing", seed: int = 0) -> Run:
    """Play one variant of one claim with a seed; returns the Run with its report."""
    table = claims()
    if claim not in table:
        raise KeyError(f"no claim {claim}; claims are {sorted(table)}")
    chosen = table[claim].variant(variant)
    cluster = table[claim].story(seed, dict(chosen.config))
    report = check(cluster.history, delivered_by=delivered_by(claim))
    return Run(claim, variant, dict(chosen.config), cluster, report, chosen.expected,
               chosen.holds(report))


def table_rows(seed: int = 0) -> list[dict]:
    """Every claim and variant played once: the rows of the course's support table."""
    rows = []
    for number, claim in claims().items():
        for variant in claim.variants:
            result = run(number, variant.name, seed)
            rows.append({"claim": number, "title": claim.title, "variant": variant.name,
                         "config": _show(variant.config), "expected": variant.expected,
                         "holds": result.holds, **result.report.as_dict()})
    return rows


def _show(config: dict) -> str:
    return ", ".join(f"{k}={'on' if v is True else 'off' if v is False else v}"
                     for k, v in config.items()) or "defaults"


def format_table(rows: list[dict]) -> str:
    """The rows as a fixed-width text table."""
    header = f"{'#':>2}  {'variant':<9} {'lost':>4} {'(acked)':>7} {'dup':>4} {'reord':>5} " \
             f"{'unack':>5} {'abrt':>4}  {'guarantee':<13} {'as claimed':<10} " \
             "config -> expected"
    lines = [header, "-" * len(header)]
    last = None
    for row in rows:
        if row["claim"] != last:
            lines.append(f"{row['claim']:>2}. {row['title']}")
            last = row["claim"]
        lines.append(f"{'':>2}  {row['variant']:<9} {row['lost']:>4} "
                     f"{'(' + str(row['lost_acked']) + ')':>7} {row['duplicated']:>4} "
                     f"{row['reordered']:>5} {row['unacked_writes']:>5} "
                     f"{row['aborted_reads']:>4}  "
                     f"{row['guarantee']:<13} {'yes' if row['holds'] else 'NO':<10} "
                     f"{row['config']} -> {row['expected']}")
    return "\n".join(lines)


# ----- demos for the lecture notebooks (not claims; each is documented and tested) ----------

OUTPUT_TOPIC = "results"


def _demo(claim: int, variant: str, config: dict, cluster: Cluster, expected: str,
          holds: Callable[[Report], bool], delivered_by: str = "log") -> Run:
    report = check(cluster.history, delivered_by=delivered_by)
    return Run(claim, variant, dict(config), cluster, report, expected, holds(report))


def play(claim: int, config: dict, seed: int = 0) -> Run:
    """Play claim ``claim``'s story under any ``config`` (say, ``config.preset("pre-3.0")``).

    The Run's ``holds`` says whether this config reaches the outcome the
    claim's *fixed* variant promises. A config Kafka would refuse raises
    ConfigException when the story creates its first client.
    """
    table = claims()
    if claim not in table:
        raise KeyError(f"no claim {claim}; claims are {sorted(table)}")
    fixed = table[claim].variant("fixed")
    cluster = table[claim].story(seed, dict(config))
    return _demo(claim, "custom", config, cluster, fixed.expected, fixed.holds,
                 delivered_by(claim))


def producer_settings(config: dict) -> dict:
    """What a producer would really run with: idempotence resolved as Kafka 3.2+ does.

    Returns the deciding keys, or ``{"error": message}`` for a config Kafka
    refuses (explicit idempotence with ``acks=1``, more than five requests in
    flight, ``retries=0``). A conflicting setting without an explicit
    ``enable.idempotence`` quietly turns idempotence off instead.
    """
    try:
        resolved = producer_config(split_config(config)[1])
    except ConfigException as error:
        return {"error": str(error)}
    keys = ("acks", "enable.idempotence", "retries", "max.in.flight.requests.per.connection",
            "linger.ms", "delivery.timeout.ms")
    return {key: resolved[key] for key in keys}


def retry_storm(idempotent: bool, seed: int = 0, count: int = 20) -> Run:
    """Twenty records, five requests in flight, and the network loses five produce calls.

    Two responses are dropped early (the writes happened), two requests later
    (they did not), one more response near the end. Every loss costs a
    ``request.timeout.ms`` wait and a retry while later requests carry on.
    Without idempotence the retries write twice and land behind newer records;
    with it the broker drops the repeats and refuses gaps, so order holds.
    """
    plan = FaultPlan((DropMessages(api="produce", kind="response", count=2, skip=1),
                      DropMessages(api="produce", kind="request", count=2, skip=4),
                      DropMessages(api="produce", kind="response", count=1, skip=9)))
    config = {"enable.idempotence": idempotent, "linger.ms": 0}
    cluster = _cluster(seed, config, plan)
    publish(cluster, message_values(count), config, pace_ms=2)
    final_read(cluster)
    if idempotent:
        return _demo(5, "storm, idempotent", config, cluster, "each once, in order",
                     lambda r: not (r.duplicated or r.reordered or r.lost))
    return _demo(5, "storm, not idempotent", config, cluster, "duplicates and reordering",
                 lambda r: bool(r.duplicated) and bool(r.reordered))


def epoch_bump(seed: int = 0) -> Run:
    """An idempotent producer whose batch fails for good must start a new epoch (KIP-360).

    With ``retries=1`` the first two requests are lost; a later batch runs out
    of retries while it waits behind them (OUT_OF_ORDER_SEQUENCE_NUMBER) and
    fails. Its sequence numbers are now a hole the broker would never accept,
    so the producer waits for its requests in flight, bumps its epoch and
    numbers everything still queued from 0 again. The failed record is lost:
    the app was told so, and a small ``retries`` is why.
    """
    plan = FaultPlan((DropMessages(api="produce", kind="request", count=2),))
    config = {"retries": 1, "linger.ms": 0}
    cluster = _cluster(seed, config, plan)
    publish(cluster, message_values(6), config, pace_ms=2)
    final_read(cluster)
    return _demo(5, "epoch bump", config, cluster, "one record fails, the epoch goes up",
                 lambda r: bool(r.lost) and not r.lost_acked and not r.duplicated
                 and any(e.kind == "epoch_bump" for e in cluster.history))


def pipeline(transactional: bool, isolation: str = "read_committed", seed: int = 0) -> Run:
    """Consume-transform-produce: copy ``events`` into ``results``, crash once, restart.

    The copier crashes after its fifth output record is written and before
    its progress is recorded: before ``consumer.commit`` without
    transactions, before ``commit_transaction`` with them. On restart the
    plain copier repeats the record; the transactional one gets the same
    ``transactional.id``, which aborts the dead instance's transaction, and
    resumes from the offsets that were committed *with* the output. A reader
    of ``results`` with ``isolation`` then decides what counts: the transform
    itself is the identity here, so messages keep their names.
    """
    point = "producer.commit_transaction" if transactional else "consumer.commit"
    cluster = _cluster(seed, {}, FaultPlan((CrashClient(point, "before", 5),)))
    cluster.create_topic(OUTPUT_TOPIC, {})
    seed_topic(cluster, message_values(10))
    producer_settings_ = {"transactional.id": "copier"} if transactional else {}
    consumer_settings = {"group.id": GROUP, "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"}
    for _restart in range(MAX_RESTARTS):
        app = cluster.process("copier")
        consumer = app.consumer(consumer_settings)
        producer = app.producer(producer_settings_)
        try:
            consumer.subscribe([TOPIC])
            _copy(consumer, producer, transactional)
            consumer.close()
            break
        except Crash:
            app.die()
    cluster.settle(1_000)
    for partition in cluster.partitions_of(OUTPUT_TOPIC):
        cluster.history.record("final_read", "checker", topic=OUTPUT_TOPIC,
                               partition=partition, isolation=isolation,
                               values=cluster.readable(OUTPUT_TOPIC, partition, isolation) or [])
    config = {**producer_settings_, "isolation.level": isolation}
    once = transactional and isolation == "read_committed"
    return _demo(11, "pipeline, " + ("transactional" if transactional else "plain"), config,
                 cluster, "each once" if once else "a record twice",
                 (lambda r: r.guarantee == "exactly-once") if once
                 else (lambda r: bool(r.duplicated) and not r.lost))


def _copy(consumer, producer, transactional: bool) -> None:
    """The copier's loop: one transaction (or one produce + commit) per input record."""
    if transactional:
        producer.init_transactions()
    while (msg := consumer.poll(1.0)) is not None:
        if transactional:
            producer.begin_transaction()
        producer.produce(OUTPUT_TOPIC, msg.value(), key=msg.key())
        producer.flush()
        if transactional:
            position = consumer.position([TopicPartition(msg.topic(), msg.partition())])
            producer.send_offsets_to_transaction(position, consumer.consumer_group_metadata())
            producer.commit_transaction()
        else:
            consumer.commit(message=msg, asynchronous=False)


def log_records(run, topic: str = TOPIC, partition: int = 0) -> list[dict]:
    """The leader's log of one partition as rows: who wrote each record, and its fate.

    Each row: ``offset``, ``value`` (a short label), ``producer_id``,
    ``epoch``, ``sequence`` (-1 for a producer without idempotence),
    ``marker`` ("COMMIT"/"ABORT" for a transaction marker, else "") and
    ``aborted`` (the record belongs to an aborted transaction).
    """
    cluster = getattr(run, "cluster", run)
    leader = cluster.partition((topic, partition)).leader
    if leader is None:
        return []
    log = cluster.brokers[leader].logs[(topic, partition)]
    return [{"offset": r.offset, "value": value_label(r.value) if r.control is None else "",
             "producer_id": r.producer_id, "epoch": r.producer_epoch, "sequence": r.sequence,
             "marker": r.control or "", "aborted": log.is_aborted(r)} for r in log.records]


def format_records(rows: list[dict]) -> str:
    """Rows of :func:`log_records` as a fixed-width text table."""
    lines = [f"{'offset':>6}  {'value':<10} {'producer id':>11} {'epoch':>5} {'seq':>4}  note",
             "-" * 50]
    for row in rows:
        note = row["marker"] and f"{row['marker']} marker" or ("aborted" if row["aborted"] else "")
        lines.append(f"{row['offset']:>6}  {row['value']:<10} {row['producer_id']:>11} "
                     f"{row['epoch']:>5} {row['sequence']:>4}  {note}")
    return "\n".join(lines)


def processed(run) -> list[dict]:
    """How often the consumer's side effect ran for each message, in first-seen order.

    Each row: ``value`` (a short label), ``offsets`` (the input offsets it was
    processed from), ``times`` (effects that happened) and ``skipped``
    (repeats an inbox recognised and did not apply).
    """
    rows: dict = {}
    for event in run.history:
        if event.kind in ("process", "dedupe_skip"):
            row = rows.setdefault(event.data["value"], {
                "value": value_label(event.data["value"]), "offsets": [], "times": 0,
                "skipped": 0})
            row["offsets"].append(event.data["offset"])
            row["times" if event.kind == "process" else "skipped"] += 1
    return list(rows.values())


# The article's summary table: which guarantee each side can give, and how. Each row is
# backed by one claim variant whose run must end at exactly the promised guarantee.
SUPPORT = (
    ("producer", "at-most-once", "retries run out during an outage", 7, "failing"),
    ("producer", "at-most-once", "acks=1, the leader dies", 1, "failing"),
    ("producer", "at-least-once", "retries without idempotence, a lost ack", 4, "failing"),
    ("producer", "at-least-once", "idempotent, but the app restarts and resends", 11, "failing"),
    ("producer", "at-least-once", "outbox relay republishes after a crash", 14, "failing"),
    ("producer", "exactly-once", "idempotent producer, within one session", 4, "fixed"),
    ("producer", "exactly-once", "transactional.id across restarts", 11, "fixed"),
    ("consumer", "at-most-once", "commit, then process", 8, "failing"),
    ("consumer", "at-most-once", "auto-commit with buffered messages", 10, "failing"),
    ("consumer", "at-least-once", "process, then commit", 9, "failing"),
    ("consumer", "exactly-once", "transactions + read_committed (Kafka to Kafka)", 13, "fixed"),
    ("consumer", "exactly-once", "offsets stored with the results (external DB)", 15, "fixed"),
    ("consumer", "exactly-once", "inbox dedupe by event id (external DB)", 14, "fixed"),
)


def support_table(seed: int = 0) -> list[dict]:
    """The article's summary table rebuilt: every row played as a scenario and checked.

    Each row: ``side``, ``guarantee`` (what the approach promises), ``how``,
    ``claim``, ``variant``, ``achieved`` (the checker's verdict for the run)
    and ``backed`` (the run ended at exactly the promised guarantee: the
    fault struck, and the approach held no better and no worse).
    """
    rows = []
    for side, guarantee, how, claim, variant in SUPPORT:
        achieved = run(claim, variant, seed).report.guarantee
        rows.append({"side": side, "guarantee": guarantee, "how": how, "claim": claim,
                     "variant": variant, "achieved": achieved,
                     "backed": achieved == guarantee})
    return rows


def format_support_table(rows: list[dict]) -> str:
    """Rows of :func:`support_table` as a fixed-width text table, grouped by side."""
    header = (f"{'side':<9} {'guarantee':<14} {'how':<48} {'scenario':<14} "
              f"{'run achieved':<14} backed")
    lines = [header, "-" * len(header)]
    for row in rows:
        scenario = f"{row['claim']} {row['variant']}"
        lines.append(f"{row['side']:<9} {row['guarantee']:<14} {row['how']:<48} "
                     f"{scenario:<14} {row['achieved']:<14} {'yes' if row['backed'] else 'NO'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the claims table; exit 1 if any outcome differs from the claim."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = table_rows(args.seed)
    print(format_table(rows))
    return 0 if all(row["holds"] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
