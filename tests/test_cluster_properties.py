"""Stateful property test: the replicated log keeps Kafka's promises under faults.

A hypothesis ``RuleBasedStateMachine`` drives one cluster (3 brokers, topic
``events`` with 2 partitions, RF=3, min.insync.replicas=2, clean elections only)
through random steps: idempotent and plain acks=all producers send values, a
consumer polls, commits, seeks back or restarts, and a nemesis injects faults.

Invariants, checked after every step and (the cheap ones) on every message the
network carries:

* no acknowledged write is lost: from its ack on, the value stays at its offset
  in the partition leader's log, and after everything is restarted and settled
  it is below the high watermark and readable;
* the high watermark never passes the lowest log end offset of the ISR and never
  goes backwards on a leader within one leader epoch;
* a consumer is never sent a record at or past the leader's high watermark, and
  every value it polled is at that offset in the final log;
* a group's committed offset never goes backwards unless the application seeked;
* the idempotent producer never writes a value twice.

The literal "an acked value stays below the high watermark forever after" does
*not* hold in Kafka, and the machine finds the counterexample at once (ack, then
crash the leader): a new leader starts with the high watermark it had as a
follower, which trails the old leader's by up to one fetch round, and raises it
only when its followers fetch in the new epoch. Kafka documents the lag: since
KIP-207 ListOffsets answers OFFSET_NOT_AVAILABLE ("the high watermark lagging
behind the epoch start offset after a recent leader election") meanwhile. So
the durability property is checked as Kafka states it: at every step the acked
value is in the current leader's log at its offset (the record survives every
election), and after everything is restarted and settled it is below the high
watermark and readable.

Faults: broker crashes (at most one broker down at a time; an *isolated*
broker is up, so a crash can come on top of an isolation, which Kafka's promise
still covers since an acked write is on every ISR member), leader elections
(crash, bounce, crash with unreplicated writes), isolation from the other
brokers, and the next produce request/response, fetch response or commit
response lost. The run is bounded and deterministic (``derandomize=True``, no
example database): 60 examples of up to 30 steps, about 3 s.
"""

from __future__ import annotations

from collections import Counter

from confluent_kafka import TopicPartition
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from course_lib.cluster import Cluster
from course_lib.errors import KafkaException

TOPIC = "events"
PARTITIONS = (0, 1)
GROUP = "g"
SETTLE_MS = 60_000

# The profile of this file only: bounded, deterministic, no database, no deadline
# (virtual time makes some steps simulate minutes of cluster life).
PROFILE = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Filled by every run, checked by the test: the machine must really exercise faults.
COVERAGE: Counter = Counter()


class DropNext:
    """A network filter that loses the next messages of one API and kind: the nemesis."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.armed: Counter = Counter()  # (api, kind, dst or None) -> messages still to drop
        self.dropped: Counter = Counter()  # (api, kind) -> messages dropped
        cluster.network.filters.append(self)

    def arm(self, api: str, kind: str, count: int, dst: str | None = None) -> None:
        self.armed[(api, kind, dst)] += count

    def disarm(self) -> None:
        self.armed.clear()

    def __call__(self, envelope) -> tuple[int, int]:
        for key in ((envelope.api, envelope.kind, envelope.dst),
                    (envelope.api, envelope.kind, None)):
            if self.armed[key] > 0:
                self.armed[key] -= 1
                self.dropped[key[:2]] += 1
                self.cluster.history.record("fault", "nemesis", fault=f"drop {key}",
                                            message=f"{envelope.src}->{envelope.dst}")
                return 0, 0
        return 1, 0


class ReplicatedLogMachine(RuleBasedStateMachine):
    """Random produce / consume / crash / restart / drop / election steps on one cluster."""

    # Consumer apps in the group: two, so rebalances move partitions between live
    # members and the committed-offset invariant is tested across hand-overs.
    CONSUMERS = 2

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self.cluster = Cluster(brokers=3, seed=seed)
        self.cluster.create_topic(TOPIC, {"replication.factor": 3, "min.insync.replicas": 2,
                                          "num.partitions": len(PARTITIONS)})
        self.brokers = {b.name for b in self.cluster.brokers}
        self.nemesis = DropNext(self.cluster)
        self.cluster.network.filters.append(self._observe)
        self.cluster.history.subscribe(self._on_event)
        # The idempotent producer gives up on a response after 10 s, well inside the
        # 30 s a silent follower stays in the ISR, so its retries reach a leader whose
        # ISR does not have the batch yet: the window where a retried duplicate was once
        # acknowledged too early (see test_broker's regression test).
        self.producers = {
            "idempotent": self.cluster.producer({"acks": "all", "enable.idempotence": True,
                                                 "request.timeout.ms": 10_000}),
            "plain": self.cluster.producer({"acks": "all", "enable.idempotence": False}),
        }
        self.acked: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
        self.sent = 0
        self.consumers: list = []
        self.polled: list[tuple[int, int, bytes]] = []
        self.committed: dict[int, int] = {}
        self.seeked: set[int] = set()
        self.hw_seen: dict[int, tuple[int, int, int]] = {}  # p -> (leader, epoch, hw)
        self.violations: list[str] = []
        self.consumer_fetches: dict[int, tuple[str, int]] = {}  # correlation id -> tp
        self.crashed_after_ack = False
        self.isolated: int | None = None
        self.was_isolated = False
        for _ in range(self.CONSUMERS):
            self.consumers.append(self._new_consumer())
        # Start every run with acknowledged data on both partitions, so that every
        # fault has something to lose.
        for p in PARTITIONS:
            self.produce("idempotent", 2, p)
        self.producers["idempotent"].flush()
        assert len(self.acked) == 2 * len(PARTITIONS)

    # ----- helpers ------------------------------------------------------------------------

    def _new_consumer(self, name: str = "consumer"):
        app = self.cluster.process("consumer-app")
        consumer = app.consumer({"group.id": GROUP, "enable.auto.commit": False,
                                 "auto.offset.reset": "earliest", "client.id": name})
        consumer.subscribe([TOPIC])
        return consumer

    def _on_delivery(self, error, message) -> None:
        if error is None:
            self.acked[message.value()] = (message.partition(), message.offset())

    def _serve(self) -> None:
        for producer in self.producers.values():
            producer.poll(0)

    def _down(self) -> list[int]:
        return [b.id for b in self.cluster.brokers if not b.alive]

    def _observe(self, envelope) -> tuple[int, int]:
        """Network observer: check the cheap invariants whenever anything is sent."""
        body = envelope.body
        if envelope.api == "fetch" and envelope.src not in self.brokers:
            self.consumer_fetches[envelope.correlation_id] = (body["topic"], body["partition"])
        elif (envelope.api == "fetch" and envelope.kind == "response"
              and envelope.dst not in self.brokers and body.get("records")):
            sender = next(b for b in self.cluster.brokers if b.name == envelope.src)
            tp = self.consumer_fetches[envelope.correlation_id]
            high_watermark = sender.logs[tp].high_watermark
            past = [r.offset for r in body["records"] if r.offset >= high_watermark]
            if past:
                self.violations.append(f"consumer {envelope.dst} sent offsets {past} "
                                       f"at or past the high watermark {high_watermark}")
        self._check_high_watermarks()
        return 1, 0

    def _on_event(self, event_) -> None:
        if event_.kind == "seek":
            self.seeked.add(event_.data["partition"])
        elif event_.kind == "commit" and event_.data.get("group") == GROUP:
            partition, offset = event_.data["partition"], event_.data["offset"]
            previous = self.committed.get(partition)
            if previous is not None and offset < previous and partition not in self.seeked:
                self.violations.append(f"committed offset of partition {partition} went back "
                                       f"from {previous} to {offset} without a seek")
            self.committed[partition] = offset
            self.seeked.discard(partition)
        self._check_high_watermarks()

    def _check_high_watermarks(self) -> None:
        for p in PARTITIONS:
            meta = self.cluster.partition((TOPIC, p))
            # Skip the instant inside kill_broker when the leader is already down and
            # the controller has not yet moved leadership.
            if meta.leader is None or not self.cluster.brokers[meta.leader].alive:
                continue
            leader = self.cluster.brokers[meta.leader]
            log = leader.logs[(TOPIC, p)]
            lowest = min(self.cluster.brokers[r].logs[(TOPIC, p)].log_end_offset
                         for r in meta.isr if self.cluster.brokers[r].alive)
            if log.high_watermark > lowest:
                self.violations.append(f"partition {p}: HW {log.high_watermark} passed the "
                                       f"lowest ISR LEO {lowest} (isr {meta.isr})")
            seen = self.hw_seen.get(p)
            if (seen is not None and seen[:2] == (meta.leader, meta.leader_epoch)
                    and log.high_watermark < seen[2]):
                self.violations.append(f"partition {p}: HW went back from {seen[2]} to "
                                       f"{log.high_watermark} in epoch {meta.leader_epoch}")
            self.hw_seen[p] = (meta.leader, meta.leader_epoch, log.high_watermark)

    # ----- producing --------------------------------------------------------------------

    @rule(which=st.sampled_from(["idempotent", "plain"]), count=st.integers(1, 3),
          partition=st.sampled_from(PARTITIONS), ms=st.sampled_from([0, 5, 50, 500, 15_000]),
          lose_ack=st.sampled_from([False, False, True]))
    def produce(self, which: str, count: int, partition: int, ms: int = 0,
                lose_ack: bool = False) -> None:
        """Send values; with ``lose_ack`` the response to the request is dropped."""
        if lose_ack:
            self.nemesis.arm("produce", "response", 1)
        for _ in range(count):
            self.sent += 1
            value = f"{which[0]}-{self.sent:03d}"
            self.producers[which].produce(TOPIC, value, partition=partition,
                                          on_delivery=self._on_delivery)
        self._run(ms)

    def _run(self, ms: int) -> None:
        self.cluster.world.advance(ms)
        self._serve()

    @rule(ms=st.sampled_from([1, 10, 100, 1_000, 5_000, 15_000, 31_000]))
    def advance(self, ms: int) -> None:
        self._run(ms)

    # ----- consuming --------------------------------------------------------------------

    @rule(which=st.integers(0, 1), polls=st.integers(0, 5),
          then=st.sampled_from(["commit", "commit", "nothing", "seek back", "restart"]),
          name=st.sampled_from(["a", "b", "c"]))
    def consume(self, which: int, polls: int, then: str, name: str) -> None:
        """One consumer app polls a few messages, then commits, seeks back or restarts.

        A restarted app takes the client.id ``name`` (a taken one gets a suffix), so
        the range assignor's member order, and with it who owns what, shuffles.
        """
        index = which % len(self.consumers)
        consumer = self.consumers[index]
        for _ in range(polls):
            message = consumer.poll(0.2)
            if message is None:
                break
            self.polled.append((message.partition(), message.offset(), message.value()))
        if then == "commit":
            try:
                consumer.commit(asynchronous=False)
                outcome = "commit accepted"
            except KafkaException as error:
                outcome = f"commit failed: {error.args[0].name()}"
            COVERAGE[outcome] += 1
            event(outcome)
        elif then == "seek back":
            for tp in consumer.position(consumer.assignment()):
                if tp.offset > 0:
                    consumer.seek(TopicPartition(TOPIC, tp.partition, tp.offset - 1))
                    break
        elif then == "restart":
            consumer.process.die()
            self.consumers[index] = self._new_consumer(name)
        self._serve()

    # ----- faults -----------------------------------------------------------------------

    @precondition(lambda self: not self._down())
    @rule(broker=st.integers(0, 2))
    def crash(self, broker: int) -> None:
        self.crashed_after_ack |= bool(self.acked)
        self.cluster.kill_broker(broker)
        COVERAGE["crash steps"] += 1
        event("crash a broker")

    @precondition(lambda self: not self._down())
    @rule(partition=st.sampled_from(PARTITIONS),
          how=st.sampled_from(["crash", "bounce", "crash with unreplicated writes"]))
    def elect(self, partition: int, how: str) -> None:
        """Force a leader election: crash the leader, or bounce it (back at once, a follower).

        "crash with unreplicated writes" first lets the leader append records its
        followers never fetch (their fetch responses are lost), so the old leader
        must truncate them when it returns (KIP-101).
        """
        leader = self.cluster.leader(TOPIC, partition)
        if leader is None:
            return
        if how == "crash with unreplicated writes":
            self.stall_followers(partition)
            self.produce("plain", 2, partition, 10)
        self.crashed_after_ack |= bool(self.acked)
        self.cluster.kill_broker(leader)
        if how == "bounce":
            self.cluster.restart_broker(leader)
        COVERAGE["crash steps"] += 1
        event(f"election: {how}")

    @precondition(lambda self: self.isolated is None)
    @rule(broker=st.integers(0, 2), ms=st.sampled_from([5_000, 35_000, 60_000]))
    def isolate(self, broker: int, ms: int) -> None:
        """Cut one broker off from the other brokers (not from clients) for a while.

        An isolated broker is not down: the controller still sees it, so a crash
        may come on top of it. Kafka's promise still holds, since an acknowledged
        write is on every ISR member and a clean leader comes from the ISR.
        """
        name = self.cluster.broker_name(broker)
        others = [b.name for b in self.cluster.brokers if b.name != name]
        for other in others:
            self.cluster.network.disconnect(name, other)
        self.isolated = broker
        self.was_isolated = True
        self.cluster.world.call_later(ms, self._heal, broker)
        event("isolate a broker")

    def _heal(self, broker: int) -> None:
        if self.isolated != broker:
            return
        name = self.cluster.broker_name(broker)
        for other in self.cluster.brokers:
            self.cluster.network.reconnect(name, other.name)
        self.isolated = None

    @precondition(lambda self: bool(self._down()))
    @rule()
    def restart(self) -> None:
        self.cluster.restart_broker(self._down()[0])

    @rule(what=st.sampled_from(["produce response", "produce request", "fetch response",
                                "offset_commit response", "replication"]),
          partition=st.sampled_from(PARTITIONS))
    def drop(self, what: str, partition: int) -> None:
        """Lose the next message of a kind; "replication" loses each follower's next fetch
        response of ``partition``, so they fall 30 s (replica.socket.timeout.ms) behind."""
        if what == "replication":
            self.stall_followers(partition)
        else:
            api, kind = what.split()
            self.nemesis.arm(api, kind, 1)

    def stall_followers(self, partition: int) -> None:
        meta = self.cluster.partition((TOPIC, partition))
        for replica in meta.replicas:
            if replica != meta.leader:
                self.nemesis.arm("fetch", "response", 1, self.cluster.broker_name(replica))

    # ----- invariants ---------------------------------------------------------------------

    @invariant()
    def no_violation_seen(self) -> None:
        assert not self.violations, self.violations[:3]

    @invariant()
    def acked_writes_stay_in_the_leaders_log(self) -> None:
        for value, (p, offset) in self.acked.items():
            leader = self.cluster.leader(TOPIC, p)
            if leader is None:  # offline until an ISR member returns: nothing is lost yet
                continue
            records = self.cluster.brokers[leader].logs[(TOPIC, p)].records
            assert offset < len(records) and records[offset].value == value, (
                f"acked {value!r} at {p}/{offset} is gone from leader {leader}'s log")

    def teardown(self) -> None:
        if not hasattr(self, "cluster"):
            return
        cluster = self.cluster
        self.nemesis.disarm()
        if self.isolated is not None:
            self._heal(self.isolated)
        for broker in self._down():
            cluster.restart_broker(broker)
        cluster.settle(SETTLE_MS)
        self._serve()
        finals = {}
        for p in PARTITIONS:
            meta = cluster.partition((TOPIC, p))
            assert meta.leader is not None, f"partition {p} offline after settling"
            assert sorted(meta.isr) == [0, 1, 2], f"partition {p} ISR {meta.isr} after settling"
            leader_log = cluster.brokers[meta.leader].logs[(TOPIC, p)]
            for broker in cluster.brokers:
                log = broker.logs[(TOPIC, p)]
                assert log.records == leader_log.records, f"replica {broker.id} of {p} differs"
            finals[p] = leader_log
        for value, (p, offset) in self.acked.items():
            log = finals[p]
            assert offset < log.high_watermark and log.records[offset].value == value, (
                f"acked {value!r} at {p}/{offset} lost")
            assert value in cluster.readable(TOPIC, p)
        for p, offset, value in self.polled:
            assert offset < finals[p].high_watermark
            assert finals[p].records[offset].value == value, f"polled {value!r} at {offset}"
        idempotent = [r.value for log in finals.values() for r in log.records
                      if r.value.startswith(b"i-")]
        assert len(idempotent) == len(set(idempotent)), "the idempotent producer duplicated"
        self._tally()

    def _tally(self) -> None:
        COVERAGE["runs"] += 1
        COVERAGE["virtual seconds"] += self.cluster.world.now_ms // 1000
        kinds = Counter(e.kind for e in self.cluster.history)
        dropped = sum(self.nemesis.dropped.values())
        facts = {
            "crash": kinds["broker_crash"] > 0,
            "election": kinds["election"] > len(PARTITIONS),
            "acked then crash": self.crashed_after_ack,
            "dropped message": dropped > 0,
            "dropped produce response": self.nemesis.dropped[("produce", "response")] > 0,
            "dedupe": kinds["dedupe"] > 0,
            "truncate": kinds["truncate"] > 0,
            "isr change": kinds["isr"] > 0,
            "isolation": self.was_isolated,
            "not enough replicas": any(e.kind == "retry" and e.data["error"].startswith(
                "NOT_ENOUGH_REPLICAS") for e in self.cluster.history),
            "acked": bool(self.acked),
            "polled": bool(self.polled),
        }
        for name, happened in facts.items():
            if happened:
                COVERAGE[name] += 1
                event(name)


def test_replicated_log_properties_hold_under_faults():
    COVERAGE.clear()
    run_state_machine_as_test(ReplicatedLogMachine, settings=PROFILE)
    runs = COVERAGE["runs"]
    assert runs >= PROFILE.max_examples, dict(COVERAGE)
    # The properties mean little unless the faults really happened, in a fair share
    # of the runs (the shares are deterministic; today's values are well above these).
    for name, share in [("crash", 0.4), ("election", 0.4), ("acked then crash", 0.4),
                        ("dropped message", 0.3), ("dropped produce response", 0.15),
                        ("isolation", 0.1), ("not enough replicas", 0.03),
                        ("truncate", 0.08), ("dedupe", 0.1), ("polled", 0.25)]:
        assert COVERAGE[name] >= share * runs, f"{name}: {dict(COVERAGE)}"

