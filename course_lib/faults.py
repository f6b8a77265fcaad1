"""The nemesis: faults as plain data, and the injector that applies them.

A :class:`FaultPlan` is a tuple of small frozen dataclasses: crash a client at a
named call, kill or restart a broker, drop/delay/duplicate messages of one API,
cut a broker off the network, make processing fail. Plans print as valid
Python, round-trip through JSON, and can be drawn at random from a seed or
enumerated exhaustively (every single crash point of a clean run), which is
how the autograder attacks an answer.

Faults fire either at a virtual time (``at_ms``) or right after the ``nth``
history event of a kind (``on="ack"``), so "kill the leader just after the
third acknowledgement" is expressible without knowing when that will be.

:class:`Crash` derives from :class:`BaseException` so that a learner's
``except Exception`` cannot swallow it; a crashed client stays dead and every
later call on it raises ``Crash`` again.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass

PHASES = ("before", "after")


class Crash(BaseException):  # noqa: N818 - the course's name for a process dying
    """The process running a client died here; nothing in its memory survives."""

    def __init__(self, actor: str, point: str, phase: str) -> None:
        self.actor = actor
        self.point = point
        self.phase = phase
        super().__init__(f"{actor} crashed {phase} {point}")


class ProcessingError(Exception):
    """A transient failure of the application's processing of one message."""


@dataclass(frozen=True)
class CrashClient:
    """Crash the process of a client (or of ``process``) at the nth call of ``point``."""

    point: str  # e.g. "consumer.commit", "consumer.poll", "producer.produce", "process"
    phase: str = "before"  # "before" the call takes effect, or "after"
    nth: int = 1


@dataclass(frozen=True)
class FailProcessing:
    """Make the nth call of ``process`` raise ProcessingError before its effect."""

    nth: int = 1


@dataclass(frozen=True)
class KillBroker:
    """Crash a broker ("leader" means the leader of ``topic``/``partition`` at the time)."""

    broker: int | str = "leader"
    at_ms: int | None = None
    on: str | None = None
    nth: int = 1
    lose_disk: bool = False
    topic: str = "events"
    partition: int = 0


@dataclass(frozen=True)
class RestartBroker:
    """Start a crashed broker again, with whatever disk it still has."""

    broker: int
    at_ms: int | None = None
    on: str | None = None
    nth: int = 1


@dataclass(frozen=True)
class DropMessages:
    """Lose ``count`` messages of one API and direction, starting from the ``skip``+1th."""

    api: str = "produce"
    kind: str = "response"
    count: int = 1
    skip: int = 0
    src: str | None = None
    dst: str | None = None


@dataclass(frozen=True)
class DelayMessages:
    """Hold ``count`` matching messages back by ``delay_ms`` (starting after ``skip``)."""

    delay_ms: int
    api: str = "produce"
    kind: str = "request"
    count: int = 1
    skip: int = 0


@dataclass(frozen=True)
class DuplicateMessages:
    """Deliver ``count`` matching messages twice (starting after ``skip``)."""

    api: str = "produce"
    kind: str = "request"
    count: int = 1
    skip: int = 0


@dataclass(frozen=True)
class Isolate:
    """Cut a broker off from every other broker from ``at_ms`` until ``until_ms``."""

    broker: int
    at_ms: int = 0
    until_ms: int | None = None


FAULT_TYPES = {cls.__name__: cls for cls in (
    CrashClient, FailProcessing, KillBroker, RestartBroker, DropMessages, DelayMessages,
    DuplicateMessages, Isolate)}


@dataclass(frozen=True)
class FaultPlan:
    """An ordered tuple of faults: plain data that a test or a student can replay."""

    faults: tuple = ()

    def __repr__(self) -> str:
        return f"FaultPlan(({''.join(repr(f) + ', ' for f in self.faults)}))"

    def __len__(self) -> int:
        return len(self.faults)

    def __add__(self, other: FaultPlan) -> FaultPlan:
        return FaultPlan(self.faults + other.faults)

    def without(self, index: int) -> FaultPlan:
        """The same plan minus one fault: the step a shrinker takes."""
        return FaultPlan(self.faults[:index] + self.faults[index + 1:])

    def to_json(self) -> str:
        """A compact JSON form for replay tokens and stored campaigns."""
        return json.dumps([{"type": type(f).__name__, **asdict(f)} for f in self.faults],
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        """Rebuild a plan from :meth:`to_json`; unknown fault types are an error."""
        faults = []
        for item in json.loads(text):
            item = dict(item)
            kind = item.pop("type")
            if kind not in FAULT_TYPES:
                raise ValueError(f"unknown fault type {kind!r}; known: {sorted(FAULT_TYPES)}")
            faults.append(FAULT_TYPES[kind](**item))
        return cls(tuple(faults))


def single_crash_plans(call_trace: list[tuple[str, int]]) -> list[FaultPlan]:
    """Every single-crash plan of a clean run: before and after each call it made.

    ``call_trace`` is the ordered list of (point, nth) calls the clean run made,
    as :meth:`FaultInjector.call_trace` reports them.
    """
    return [FaultPlan((CrashClient(point, phase, nth),))
            for point, nth in call_trace for phase in PHASES]


def random_plan(seed: int, *, points: list[str], brokers: int, horizon_ms: int,
                faults: int = 3) -> FaultPlan:
    """A seeded mix of client crashes, broker kills/restarts and lost messages."""
    rng = random.Random(f"plan/{seed}")
    chosen = []
    for _ in range(faults):
        roll = rng.random()
        if roll < 0.4 and points:
            chosen.append(CrashClient(rng.choice(points), rng.choice(PHASES),
                                      rng.randint(1, 6)))
        elif roll < 0.6:
            broker = rng.randrange(brokers)
            at_ms = rng.randrange(horizon_ms)
            chosen.append(KillBroker(broker, at_ms=at_ms))
            chosen.append(RestartBroker(broker, at_ms=at_ms + rng.randint(100, 20_000)))
        elif roll < 0.8:
            chosen.append(DropMessages(rng.choice(("produce", "fetch", "offset_commit")),
                                       rng.choice(("request", "response")),
                                       count=rng.randint(1, 3), skip=rng.randint(0, 20)))
        else:
            chosen.append(FailProcessing(rng.randint(1, 10)))
    return FaultPlan(tuple(chosen))


class FaultInjector:
    """Applies a FaultPlan to one cluster: timed faults, triggers, message filters, crashes."""

    def __init__(self, cluster, plan: FaultPlan) -> None:
        self.cluster = cluster
        self.world = cluster.world
        self.plan = plan
        self.calls: dict[str, int] = {}
        self.trace: list[tuple[str, int]] = []
        self._seen: dict[str, int] = {}
        self._message_counts: dict[int, int] = {}
        self._triggered: set[int] = set()
        self._isolations: dict[str, int] = {}  # broker name -> Isolate faults now in force
        for index, fault in enumerate(plan.faults):
            self._arm(index, fault)
        self.attached = True
        cluster.network.filters.append(self._filter)
        self.world.history.subscribe(self._on_event)

    def detach(self) -> None:
        """Stop applying this plan (timed faults already scheduled are disarmed too)."""
        self.cluster.network.filters.remove(self._filter)
        self.world.history.unsubscribe(self._on_event)
        self.plan = FaultPlan()
        self.attached = False

    def _arm(self, index: int, fault) -> None:
        if isinstance(fault, Isolate):
            self.world.call_at(fault.at_ms, self._isolate, fault, True)
            if fault.until_ms is not None:
                self.world.call_at(fault.until_ms, self._isolate, fault, False)
        elif isinstance(fault, (KillBroker, RestartBroker)) and fault.at_ms is not None:
            self.world.call_at(fault.at_ms, self._fire, index, fault)

    def _on_event(self, event) -> None:
        self._seen[event.kind] = self._seen.get(event.kind, 0) + 1
        for index, fault in enumerate(self.plan.faults):
            if (isinstance(fault, (KillBroker, RestartBroker)) and fault.on == event.kind
                    and index not in self._triggered and self._seen[event.kind] >= fault.nth):
                self._triggered.add(index)
                self.world.call_later(0, self._fire, index, fault)

    def _fire(self, index: int, fault) -> None:
        if not self.attached:
            return
        self._triggered.add(index)
        self.world.history.record("fault", "nemesis", fault=repr(fault))
        if isinstance(fault, KillBroker):
            broker = fault.broker
            if broker == "leader":
                broker = self.cluster.leader(fault.topic, fault.partition)
                if broker is None:
                    return
            self.cluster.kill_broker(broker, lose_disk=fault.lose_disk)
        else:
            self.cluster.restart_broker(fault.broker)

    def _isolate(self, fault: Isolate, cut: bool) -> None:
        if not self.attached:
            return
        self.world.history.record("fault", "nemesis", fault=repr(fault),
                                  action="isolate" if cut else "heal")
        name = self.cluster.broker_name(fault.broker)
        self._isolations[name] = max(0, self._isolations.get(name, 0) + (1 if cut else -1))
        for other in self.cluster.brokers:
            if other.name == name:
                continue
            if cut:
                self.cluster.network.disconnect(name, other.name)
            elif not self._isolations[name] and not self._isolations.get(other.name):
                # Heal only links no other Isolate still holds cut.
                self.cluster.network.reconnect(name, other.name)

    def _filter(self, envelope) -> tuple[int, int]:
        copies, delay_ms = 1, 0
        for index, fault in enumerate(self.plan.faults):
            if not isinstance(fault, (DropMessages, DelayMessages, DuplicateMessages)):
                continue
            if fault.api != envelope.api or fault.kind != envelope.kind:
                continue
            if getattr(fault, "src", None) not in (None, envelope.src):
                continue
            if getattr(fault, "dst", None) not in (None, envelope.dst):
                continue
            seen = self._message_counts[index] = self._message_counts.get(index, 0) + 1
            if not fault.skip < seen <= fault.skip + fault.count:
                continue
            self.world.history.record("fault", "nemesis", fault=repr(fault),
                                      message=f"{envelope.kind} {envelope.api} "
                                              f"{envelope.src}->{envelope.dst}")
            if isinstance(fault, DropMessages):
                copies = 0
            elif isinstance(fault, DuplicateMessages):
                copies = max(copies, 2) if copies else 0
            else:
                delay_ms += fault.delay_ms
        return copies, delay_ms

    def call(self, actor: str, point: str, phase: str) -> None:
        """Called by clients around each API call: raise Crash if the plan says so."""
        if phase == "before":
            nth = self.calls[point] = self.calls.get(point, 0) + 1
            self.trace.append((point, nth))
            if point == "process":
                for fault in self.plan.faults:
                    if isinstance(fault, FailProcessing) and fault.nth == nth:
                        self.world.history.record("fault", "nemesis", fault=repr(fault))
                        raise ProcessingError(f"processing failed (injected, call {nth})")
        nth = self.calls.get(point, 0)
        for fault in self.plan.faults:
            if (isinstance(fault, CrashClient) and fault.point == point
                    and fault.phase == phase and fault.nth == nth):
                self.world.history.record("crash", actor, point=point, phase=phase, nth=nth)
                raise Crash(actor, point, phase)

    def call_trace(self) -> list[tuple[str, int]]:
        """The (point, nth) calls seen so far, for exhaustive crash enumeration."""
        return list(self.trace)
