"""The ps2 autograder: retries, the idempotent producer, and the broker's sequence check.

Three checks, one per guarantee of problem set 2 (DESIGN §3, §6):

- ``check_send_with_retries(send_with_retries)`` plays the learner's
  ``send_with_retries(send_once, record, *, retries, backoff_ms,
  delivery_timeout_ms, clock)`` against a real simulated cluster: ``send_once``
  is one Produce request (acks=all) to the partition leader through the toy
  network, so a dropped request or a dropped answer ends in
  ``REQUEST_TIMED_OUT`` after ``request.timeout.ms`` of virtual time (with a
  dropped answer the write happened: an indefinite outcome), a stale leader
  answers ``NOT_LEADER_FOR_PARTITION``, an ISR shrunk below
  ``min.insync.replicas`` answers ``NOT_ENOUGH_REPLICAS``, and a record larger
  than ``message.max.bytes`` is refused with ``MSG_SIZE_TOO_LARGE`` before it
  is sent (as librdkafka refuses it in ``produce()``). The gate watches every
  attempt: how many, how far apart in virtual time, which error came before,
  whether one started after the delivery timeout; and what the function
  finally returned or raised.
- ``check_idempotent_sender(IdempotentSender)`` sends a series of values to
  several partitions through the learner's sender; the broker's own
  producer-state check deduplicates batches, so the verdict comes from the
  log (read at the end) through :func:`course_lib.checker.check`: no value
  twice, none missing, none out of order, and no batch the broker refused as
  out of sequence.
- ``check_check_sequence(check_sequence)`` compares the learner's broker-side
  check with a reference on fixed edge cases and seeded random ones, answer
  and updated state both.

Each check runs a clean plan, fixed fault plans, then seeded random ones; the
first failure is shrunk (faults dropped one at a time while it still fails) and
reported as a :class:`CheckFailed` naming the record, the fault, what the code
did just before, and a ``course_lib.replay("…")`` line.

**Isolation** (DESIGN §6). The learner's code runs only in the sandbox's
children; ``send_once``, ``clock`` and the harness are proxies whose calls reach
the World through the gates below. What ``send_with_retries`` returned or
raised, and what ``check_sequence`` answered, are reported by this module's
drivers inside the child (the limitation the sandbox's docstring states).
There are no process crashes in ps2: each plan is one app run.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException

from course_lib.checker import check
from course_lib.cluster import Cluster
from course_lib.config import INT32_MAX
from course_lib.errors import kafka_error
from course_lib.faults import DropMessages, FaultPlan, KillBroker, RestartBroker
from course_lib.grading.campaign import (
    Check,
    Played,
    app_runner,
    first_failure,
    raise_failure,
    require_callable,
    timeline_svg,
)
from course_lib.grading.explanation import (
    AbortWords,
    abort_headline,
    causes,
    drop_numbers,
    ordinal,
    replay_lines,
)
from course_lib.grading.sandbox import (
    ABORTS,
    Outcome,
    Proxy,
    TooManyCalls,
    describe,
    encode,
    encode_token,
    notebook_function,
)

__all__ = [
    "Passed",
    "Run",
    "check_check_sequence",
    "check_idempotent_sender",
    "check_send_with_retries",
    "replay_data",
]

TOPIC = "events"
BROKERS = 3
TOPIC_CONFIG = {"num.partitions": 3, "replication.factor": 3, "min.insync.replicas": 2}
REQUEST_TIMEOUT_MS = 1_000  # request.timeout.ms of the grader's send_once (Kafka: 30000)
MESSAGE_MAX_BYTES = 1_000  # message.max.bytes of the grader's producer (Kafka: 1048588)
SETTLE_MS = 2_000  # replication catches up before the log is read at the end
TIME_LIMIT_S = 3.0  # wall clock for one app run (an honest one takes milliseconds)
CALLS_MAX = 3_000  # calls on send_once, clock and the harness per app run
SENDER_ATTEMPTS_MAX = 60  # attempts for one value before the grader stops a stuck sender
RANDOM_PLANS = 10
RANDOM_CASES = 60
OVERSIZED_PAD = 2_000
PRODUCER_ID = 4_000


CHECKS = {
    "send_with_retries": Check("send_with_retries", "retry what may succeed, within limits"),
    "idempotent_sender": Check("idempotent_sender", "each value exactly once, in order"),
    "check_sequence": Check("check_sequence", "the broker's sequence rules"),
}


@dataclass(frozen=True)
class Passed:
    """A passed check: how many runs (plans, or cases) the answer survived."""

    check: str
    seed: int
    runs: int

    def __repr__(self) -> str:
        return f"<check_{self.check} passed: {self.runs} runs (seed {self.seed})>"


@dataclass(frozen=True)
class _Failure:
    kind: str
    case: int = -1  # which record, value or case
    detail: dict = field(default_factory=dict)


@dataclass
class Run(Played):
    """One played run: plan, inputs, cluster (if any), what the code did, and the verdict."""

    check: str
    seed: int
    function: str
    plan: FaultPlan
    inputs: dict
    cluster: Cluster | None = None
    failure: _Failure | None = None
    message: str | None = None
    log: list = field(default_factory=list)  # (history index, time ms, text)
    installed_at: int = 0  # index of the first History event after the plan was installed

    @property
    def history(self):
        """The History of the run's cluster (None for check_sequence)."""
        return None if self.cluster is None else self.cluster.history

    def __repr__(self) -> str:
        return f"<Run check_{self.check} seed={self.seed} {self.verdict}; plan {self.plan!r}>"

    def _repr_svg_(self) -> str | None:
        """The timeline of this run, when course_lib.viz is available."""
        if self.cluster is None:
            return None
        return timeline_svg(self.history, f"replay of check_{self.check}: {self.plan!r}",
                            check(self.history, delivered_by="log"))


# ----- public API -----------------------------------------------------------------------------


def check_send_with_retries(send_with_retries: Callable, *, seed: int = 0,
                            random_plans: int = RANDOM_PLANS,
                            time_limit_s: float = TIME_LIMIT_S) -> Passed:
    """Grade ``send_with_retries``: retry exactly the retriable errors, within the limits.

    Raises :class:`CheckFailed` naming the record, the fault and a replay call;
    returns :class:`Passed` if every plan passed.
    """
    return _campaign(CHECKS["send_with_retries"], send_with_retries, seed,
                     _retries_scenarios(seed, random_plans), time_limit_s)


def check_idempotent_sender(IdempotentSender: Callable, *, seed: int = 0,  # noqa: N803
                            random_plans: int = RANDOM_PLANS,
                            time_limit_s: float = TIME_LIMIT_S) -> Passed:
    """Grade ``IdempotentSender``: under lost acks and failovers, each value once and in order.

    Raises :class:`CheckFailed` naming the value, the fault and a replay call;
    returns :class:`Passed` if every plan passed.
    """
    return _campaign(CHECKS["idempotent_sender"], IdempotentSender, seed,
                     _sender_scenarios(seed, random_plans), time_limit_s)


def check_check_sequence(check_sequence: Callable, *, seed: int = 0,
                         random_cases: int = RANDOM_CASES,
                         time_limit_s: float = TIME_LIMIT_S) -> Passed:
    """Grade ``check_sequence(state, batch)`` against the rules, answer and state both.

    All cases run in one app run; raises :class:`CheckFailed` naming the first
    wrong case and a replay call, or returns :class:`Passed`.
    """
    return _campaign(CHECKS["check_sequence"], check_sequence, seed,
                     [(FaultPlan(), {"cases": _sequence_cases(seed, random_cases)})],
                     time_limit_s)


def replay_data(data: dict, fn: Callable | None = None, *, isolated: bool = True,
                time_limit_s: float = TIME_LIMIT_S) -> Run:
    """Play the run a failure message's token named again (see ``course_lib.replay``).

    ``fn`` defaults to the function (or class) of that name in the notebook.
    ``isolated=False`` calls it in this process (no fork, no limits).
    """
    chosen = CHECKS[data["c"]]
    plan = FaultPlan.from_json(json.dumps(data["p"]))
    fn = notebook_function(data["f"]) if fn is None else fn
    with app_runner(fn, _DRIVERS[chosen.name], time_limit_s, isolated) as runner:
        run = _play(chosen, data["s"], plan, data["i"], runner, time_limit_s, data["f"])
    if run.failure is not None:
        run.message = _explain(run, time_limit_s)
    return run


# ----- the campaign ---------------------------------------------------------------------------


def _campaign(chosen: Check, fn: Callable, seed: int, scenarios: list,
              time_limit_s: float) -> Passed:
    require_callable(chosen.name, fn, "your function or class")
    name = getattr(fn, "__name__", "your_function")
    with app_runner(fn, _DRIVERS[chosen.name], time_limit_s) as runner:

        def play(plan: FaultPlan, inputs: dict) -> Run:
            return _play(chosen, seed, plan, inputs, runner, time_limit_s, name)

        # No clean run of its own: the first scenario is the clean plan.
        failing, _runs = first_failure(play, scenarios)
    if failing is None:
        return Passed(chosen.name, seed, len(scenarios))
    raise_failure(failing, _explain(failing, time_limit_s), _token(failing),
                  failing.failure.kind == "not_implemented")


def _play(chosen: Check, seed: int, plan: FaultPlan, inputs: dict,
          runner: Callable[[object, float], Outcome], time_limit_s: float,
          function: str) -> Run:
    """One app run of the learner's code against a fresh world for ``plan``."""
    run = Run(chosen.name, seed, function, plan, inputs)
    if chosen.name == "check_sequence":
        gate = _SequenceGate(inputs["cases"])
    else:
        run.cluster = _cluster(seed)
        run.cluster.install_faults(plan)
        run.installed_at = len(run.cluster.history)
        wire = _Wire(run.cluster)
        gate = (_RetriesGate(wire, inputs["cases"]) if chosen.name == "send_with_retries"
                else _SenderGate(wire, inputs))
    outcome = runner(gate, time.monotonic() + time_limit_s)
    run.log = gate.log
    run.failure = gate.verdict(outcome)
    if run.failure is None and chosen.name == "idempotent_sender":
        run.failure = _judge_log(run, gate)
    return run


def _cluster(seed: int) -> Cluster:
    """Three brokers; topic ``events`` with three partitions, RF 3, min.insync.replicas 2."""
    cluster = Cluster(brokers=BROKERS, seed=seed)
    cluster.create_topic(TOPIC, TOPIC_CONFIG)
    cluster.settle(1_000)
    return cluster


def _abort(outcome: Outcome) -> _Failure | None:
    """A run the sandbox had to stop (hang, exit, flood…), or a stub, as a failure."""
    if outcome.kind in ABORTS:
        return _Failure(outcome.kind, detail={"text": outcome.detail})
    return None


# ----- send_once on the real cluster ----------------------------------------------------------


class _Wire:
    """The grader's producer connection: one Produce request per ``send_once`` call.

    Like a real client it caches each partition's leader and refreshes it only
    after an error, so after a failover the first request may reach the old
    leader and come back ``NOT_LEADER_FOR_PARTITION``.
    """

    def __init__(self, cluster: Cluster, name: str = "producer-app") -> None:
        self.cluster = cluster
        self.world = cluster.world
        self.name = name
        self.alive = True
        self.incarnation = 0
        self.responses: dict[int, dict] = {}
        self.leaders: dict[int, int] = {}
        self.requests = 0
        cluster.network.register(self)

    def receive(self, envelope) -> None:
        self.responses[envelope.correlation_id] = envelope.body

    def _leader(self, partition: int) -> int:
        if partition not in self.leaders:
            meta = self.cluster.partition((TOPIC, partition))
            self.leaders[partition] = meta.leader if meta.leader is not None else meta.replicas[0]
        return self.leaders[partition]

    def produce(self, partition: int, value: bytes, producer_id: int = -1,
                epoch: int = -1, seq: int = -1) -> dict:
        """Send one record (a batch of one) and wait for the answer; raise its error."""
        history = self.world.history
        if len(value) > MESSAGE_MAX_BYTES:
            history.record("nack", self.name, topic=TOPIC, partition=partition, value=value,
                           error="MSG_SIZE_TOO_LARGE")
            raise KafkaException(kafka_error(
                KafkaError.MSG_SIZE_TOO_LARGE,
                f"Message size {len(value)} exceeds message.max.bytes {MESSAGE_MAX_BYTES}"))
        broker = self._leader(partition)
        self.requests += 1
        history.record("send", self.name, topic=TOPIC, partition=partition, value=value,
                       seq=seq, request=self.requests)
        correlation = self.cluster.network.next_correlation_id()
        self.cluster.network.send(self, self.cluster.broker_name(broker), "produce", "request", {
            "topic": TOPIC, "partition": partition, "records": [(None, value)], "acks": "all",
            "producer_id": producer_id, "producer_epoch": epoch, "base_seq": seq,
            "timeout_ms": REQUEST_TIMEOUT_MS}, correlation)
        self.world.run(until_ms=self.world.now_ms + REQUEST_TIMEOUT_MS,
                       until=lambda: correlation in self.responses)
        body = self.responses.pop(correlation, None)
        code = KafkaError.REQUEST_TIMED_OUT if body is None else body.get("error")
        if code is None:
            offset = body["base_offset"]
            history.record("ack", self.name, topic=TOPIC, partition=partition, value=value,
                           offset=offset)
            return {"topic": TOPIC, "partition": partition, "offset": offset}
        self.leaders.pop(partition, None)  # refresh metadata before the next request
        error = kafka_error(code, _REASONS.get(code, ""))
        history.record("nack", self.name, topic=TOPIC, partition=partition, value=value,
                       error=error.name())
        raise KafkaException(error)


_REASONS = {
    KafkaError.REQUEST_TIMED_OUT: f"no answer within request.timeout.ms={REQUEST_TIMEOUT_MS}",
    KafkaError.NOT_LEADER_FOR_PARTITION: "this broker is not the partition's leader",
    KafkaError.NOT_ENOUGH_REPLICAS: "fewer in-sync replicas than min.insync.replicas=2",
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND: "written, then the ISR shrank below 2",
    KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER: "the batch's sequence number is not the next one",
    KafkaError.INVALID_PRODUCER_EPOCH: "the batch's epoch is older than the producer's",
}


def _error_name(code: int | None) -> str:
    return "" if code is None else KafkaError(code).name()


# ----- drivers: trusted code in the child, around the learner's function ---------------------


def _plain(value: object) -> object:
    """A result as wire data, or its repr when it is not plain data."""
    try:
        encode(value)
    except Exception:  # anything the codec refuses is shown, not sent
        return repr(value)[:200]
    return value


def _report_raise(call: Callable, exc: Exception) -> None:
    text, name, where = describe(exc)
    code = None
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        code = exc.args[0].code()
    call("harness", "raised", (name, code, text, where), {})


def _drive_retries(fn: Callable, call: Callable) -> None:
    send_once = Proxy(call, "send_once", frozenset({"__call__"}), "<send_once(record)>")
    clock = Proxy(call, "clock", frozenset({"now_ms", "sleep"}), "<clock: now_ms(), sleep(ms)>")
    while (case := call("harness", "case", (), {})) is not None:
        record, options = case
        try:
            result = fn(send_once, record, clock=clock, **options)
        except Exception as exc:  # the learner's function raised: that is its answer
            _report_raise(call, exc)
        else:
            call("harness", "answer", (_plain(result),), {})


def _drive_sender(cls: Callable, call: Callable) -> None:
    setup = call("harness", "setup", (), {})
    send_once = Proxy(call, "send_once", frozenset({"__call__"}), "<send_once(batch)>")
    try:
        if setup["epoch"] == 0:
            sender = cls(send_once, setup["producer_id"])
        else:
            sender = cls(send_once, setup["producer_id"], epoch=setup["epoch"])
        for index, (partition, value) in enumerate(setup["sends"]):
            call("harness", "sending", (index,), {})
            result = sender.send(partition, value)
            call("harness", "sent", (index, _plain(result)), {})
    except Exception as exc:  # the learner's sender raised: the app stops here
        _report_raise(call, exc)


def _state_items(state: object) -> object:
    """The learner's state dict as ``[[pid, partition, epoch, last_seq], …]`` (or its repr)."""
    try:
        items = sorted([int(k[0]), int(k[1]), int(v[0]), int(v[1])]
                       for k, v in state.items())
    except Exception:  # a state the rules cannot read is shown as it is
        return repr(state)[:300]
    return items


def _drive_sequences(fn: Callable, call: Callable) -> None:
    while (case := call("harness", "case", (), {})) is not None:
        items, batch = case
        state = {(pid, partition): (epoch, last) for pid, partition, epoch, last in items}
        try:
            result = fn(state, batch)
        except Exception as exc:  # the learner's function raised: that is its answer
            _report_raise(call, exc)
        else:
            call("harness", "answer", (_plain(result), _state_items(state)), {})


_DRIVERS = {"send_with_retries": _drive_retries, "idempotent_sender": _drive_sender,
            "check_sequence": _drive_sequences}


# ----- gates: the grader's side of each call --------------------------------------------------


class _Gate:
    """Common bookkeeping: a call cap, a log of what the code did, the first failure."""

    def __init__(self, world=None) -> None:
        self.world = world
        self.calls = 0
        self.failure: _Failure | None = None
        self.log: list[tuple[int, int, str]] = []

    def note(self, text: str) -> None:
        index = len(self.world.history) if self.world is not None else len(self.log)
        now = self.world.now_ms if self.world is not None else 0
        self.log.append((index, now, text))

    def fail(self, kind: str, case: int, **detail) -> None:
        """Record the first failure and stop the run: the verdict is already known."""
        self.failure = _Failure(kind, case, detail)
        raise TooManyCalls()

    def count(self) -> None:
        self.calls += 1
        if self.calls > CALLS_MAX:
            raise TooManyCalls()

    def verdict(self, outcome: Outcome) -> _Failure | None:
        if self.failure is not None:
            return self.failure
        if outcome.kind == "raised" and outcome.error_type == "NotImplementedError":
            return _Failure("not_implemented", detail={"where": outcome.where})
        if outcome.kind == "raised":
            return _Failure("driver_raised", detail={"type": outcome.error_type,
                                                     "text": outcome.detail,
                                                     "where": outcome.where})
        return _abort(outcome) or self.finished()

    def finished(self) -> _Failure | None:
        return None


@dataclass
class _Attempt:
    start_ms: int
    end_ms: int = -1
    error: int | None = None
    ack: dict | None = None


class _RetriesGate(_Gate):
    """send_with_retries: hands out cases, performs attempts, judges each case's ending."""

    def __init__(self, wire: _Wire, cases: list[dict]) -> None:
        super().__init__(wire.world)
        self.wire = wire
        self.cases = cases
        self.index = -1
        self.start_ms = 0
        self.attempts: list[_Attempt] = []

    @property
    def case(self) -> dict:
        return self.cases[self.index]

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        self.count()
        if target == "harness":
            return getattr(self, f"_harness_{method}")(*args)
        if target == "clock":
            return self._clock(method, args, kwargs)
        if target == "send_once" and method == "__call__":
            return self._send_once(args, kwargs)
        raise AttributeError(f"no {target}.{method} here")

    def _harness_case(self) -> list | None:
        self.index += 1
        if self.index >= len(self.cases):
            return None
        self.start_ms, self.attempts = self.world.now_ms, []
        case = self.case
        self.note(f"you called send_with_retries({_record_text(case)!r}, "
                  f"{_options_text(case)})")
        options = {k: case[k] for k in ("retries", "backoff_ms", "delivery_timeout_ms")}
        return [_record(case), options]

    def _clock(self, method: str, args: tuple, kwargs: dict) -> int | None:
        if method == "now_ms":
            if args or kwargs:
                raise TypeError("clock.now_ms() takes no arguments")
            return self.world.now_ms
        if kwargs or len(args) != 1:
            raise TypeError("clock.sleep(ms) takes one argument: milliseconds")
        ms = args[0]
        if isinstance(ms, bool) or not isinstance(ms, (int, float)) or not 0 <= ms <= 10**9:
            raise ValueError(f"clock.sleep(ms) needs 0 <= ms <= 1e9 milliseconds, not {ms!r}")
        self.world.advance(int(-(-ms // 1)))
        self.note(f"clock.sleep({ms!r}) -> now t={self.world.now_ms}ms")
        return None

    def _send_once(self, args: tuple, kwargs: dict) -> dict:
        if self.index < 0 or self.index >= len(self.cases):
            raise RuntimeError("send_once is only for the record you are sending")
        if kwargs or args != (_record(self.case),):
            raise TypeError("send_once(record) takes exactly the record you were given")
        self._before_attempt()
        attempt = _Attempt(self.world.now_ms)
        self.attempts.append(attempt)
        number = ordinal(len(self.attempts))
        try:
            attempt.ack = self.wire.produce(0, _record(self.case).encode())
        except KafkaException as exc:
            attempt.error, attempt.end_ms = exc.args[0].code(), self.world.now_ms
            error = exc.args[0]
            self.note(f"send_once: {number} attempt raised {error.name()} "
                      f"({'retriable' if error.retriable() else 'NOT retriable'})")
            raise
        attempt.end_ms = self.world.now_ms
        self.note(f"send_once: {number} attempt acknowledged at offset {attempt.ack['offset']}")
        return attempt.ack

    def _before_attempt(self) -> None:
        """The rules an attempt must respect before it starts (DESIGN §6, ps2)."""
        case, attempts, now = self.case, self.attempts, self.world.now_ms
        if not attempts:
            return
        last = attempts[-1]
        detail = {"attempt": len(attempts) + 1, "error": _error_name(last.error),
                  "gap_ms": now - last.end_ms, "at_ms": now - self.start_ms}
        if last.ack is not None:
            self.fail("after_success", self.index, **detail)
        if not kafka_error(last.error).retriable():
            self.fail("fatal_retried", self.index, **detail)
        if len(attempts) >= case["retries"] + 1:
            self.fail("too_many", self.index, **detail)
        if now - self.start_ms > case["delivery_timeout_ms"]:
            self.fail("past_deadline", self.index, **detail)
        if now - last.end_ms < case["backoff_ms"]:
            self.fail("no_backoff", self.index, **detail)

    def _harness_answer(self, result: object) -> None:
        acks = [a.ack for a in self.attempts if a.ack is not None]
        if not self.attempts:
            self.fail("no_attempt", self.index, returned=repr(result)[:80])
        if not acks:
            written = _record(self.case).encode() in (self.wire.cluster.readable(TOPIC, 0)
                                                      or [])
            self.fail("swallowed", self.index, returned=repr(result)[:80], written=written,
                      error=_error_name(self.attempts[-1].error))
        if result != acks[-1]:
            self.fail("wrong_return", self.index, returned=repr(result)[:80],
                      ack=repr(acks[-1]))
        self.note(f"send_with_retries returned {result!r}")

    def _harness_raised(self, name: str, code: int | None, text: str, where: str) -> None:
        if name == "NotImplementedError":
            self.fail("not_implemented", self.index, where=where)
        if not self.attempts:
            self.fail("no_attempt", self.index, raised=f"{name}: {text}"[:120], where=where)
        last = self.attempts[-1]
        if last.ack is not None:
            self.fail("raised_after_success", self.index, raised=f"{name}: {text}"[:120])
        if code != last.error:
            self.fail("wrong_error", self.index, raised=f"{name}: {text}"[:120],
                      error=_error_name(last.error), where=where)
        # Giving up with retries left is early only if even a doubling backoff would have
        # let the next attempt start before the deadline: fixed and exponential both pass.
        case, used = self.case, len(self.attempts)
        room_ms = case["delivery_timeout_ms"] - (self.world.now_ms - self.start_ms)
        if (kafka_error(last.error).retriable() and used < case["retries"] + 1
                and case["backoff_ms"] * 2 ** min(used - 1, 40) < room_ms):
            self.fail("premature", self.index, error=_error_name(last.error), attempts=used,
                      room_ms=room_ms)
        self.note(f"send_with_retries raised {_error_name(code)} (as it should)")


def _record(case: dict) -> str:
    """The record a case sends: its value, padded past message.max.bytes if oversized."""
    return case["value"] + ("|" + "x" * case["pad"] if case.get("pad") else "")


def _record_text(case: dict) -> str:
    if case.get("pad"):
        return f"{case['value']}|xxx… ({len(_record(case))} bytes)"
    return case["value"]


def _options_text(case: dict) -> str:
    return (f"retries={case['retries']}, backoff_ms={case['backoff_ms']}, "
            f"delivery_timeout_ms={case['delivery_timeout_ms']}")


_BATCH_KEYS = ("producer_id", "epoch", "partition", "seq", "value")


class _SenderGate(_Gate):
    """IdempotentSender: performs each batch on the broker, watches fields and sequences."""

    def __init__(self, wire: _Wire, inputs: dict) -> None:
        super().__init__(wire.world)
        self.wire = wire
        self.inputs = inputs
        self.index = -1
        self.attempts = 0
        self.sent: list[int] = []

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        self.count()
        if target == "harness":
            return getattr(self, f"_harness_{method}")(*args)
        if target == "send_once" and method == "__call__":
            if kwargs or len(args) != 1:
                raise TypeError("send_once(batch) takes one argument: the batch dict")
            return self._send_once(args[0])
        raise AttributeError(f"no {target}.{method} here")

    def _harness_setup(self) -> dict:
        epoch = self.inputs["epoch"]
        self.note(f"IdempotentSender(send_once, {self.inputs['producer_id']}"
                  + (f", epoch={epoch})" if epoch else ")"))
        return {"producer_id": self.inputs["producer_id"], "epoch": epoch,
                "sends": self.inputs["sends"]}

    def _harness_sending(self, index: int) -> None:
        self.index, self.attempts = index, 0
        partition, value = self.inputs["sends"][index]
        self.note(f"sender.send({partition}, {value!r})")

    def _harness_sent(self, index: int, result: object) -> None:
        self.sent.append(index)

    def _harness_raised(self, name: str, code: int | None, text: str, where: str) -> None:
        if name == "NotImplementedError":
            self.fail("not_implemented", self.index, where=where)
        self.fail("sender_raised", self.index, raised=f"{name}: {text}"[:160],
                  retriable=code is not None and kafka_error(code).retriable(), where=where)

    def _send_once(self, batch: object) -> dict:
        if self.index < 0:
            raise RuntimeError("send_once is called from send(), for the value being sent")
        partition, value = self.inputs["sends"][self.index]
        expected = {"producer_id": self.inputs["producer_id"], "epoch": self.inputs["epoch"],
                    "partition": partition, "value": value}
        if not isinstance(batch, dict) or sorted(batch) != sorted(_BATCH_KEYS):
            self.fail("bad_batch", self.index, batch=repr(batch)[:160])
        wrong = [k for k, v in expected.items() if batch[k] != v]
        if wrong or isinstance(batch["seq"], bool) or not isinstance(batch["seq"], int):
            self.fail("bad_batch", self.index, batch=repr(batch)[:160],
                      wrong=", ".join(wrong) or "seq")
        self.attempts += 1
        if self.attempts > SENDER_ATTEMPTS_MAX:
            self.fail("stuck", self.index, attempts=self.attempts - 1)
        try:
            ack = self.wire.produce(partition, value.encode(), batch["producer_id"],
                                    batch["epoch"], batch["seq"])
        except KafkaException as exc:
            error = exc.args[0]
            self.note(f"send_once({_batch_text(batch)}) raised {error.name()}")
            if error.code() in (KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
                                KafkaError.INVALID_PRODUCER_EPOCH):
                self.fail("sequence_refused", self.index, seq=batch["seq"], partition=partition,
                          expected=self._expected_seq(partition), error=error.name())
            raise
        self.note(f"send_once({_batch_text(batch)}) -> acknowledged at offset {ack['offset']}")
        return ack

    def _expected_seq(self, partition: int) -> int:
        """The next sequence the partition's leader expects from this producer."""
        cluster = self.wire.cluster
        leader = cluster.leader(TOPIC, partition)
        if leader is None:
            return 0
        state = cluster.brokers[leader].logs[(TOPIC, partition)].producers.get(
            self.inputs["producer_id"])
        return 0 if state is None or not state.batches else state.batches[-1].last_seq + 1


def _batch_text(batch: dict) -> str:
    return (f"partition={batch['partition']}, seq={batch['seq']}, "
            f"value={batch['value']!r}")


def _judge_log(run: Run, gate: _SenderGate) -> _Failure | None:
    """After the run: read every partition's log and let the checker judge it."""
    cluster = run.cluster
    cluster.settle(SETTLE_MS)
    logs = {}
    for partition in cluster.partitions_of(TOPIC):
        logs[partition] = cluster.readable(TOPIC, partition) or []
        cluster.history.record("final_read", "grader", topic=TOPIC, partition=partition,
                               values=logs[partition])
    report = check(cluster.history, delivered_by="log")
    sends = run.inputs["sends"]
    index = {value.encode(): i for i, (_p, value) in enumerate(sends)}
    if report.duplicated:
        return _Failure("duplicate", index[report.duplicated[0]])
    missing = [i for i, (partition, value) in enumerate(sends[:len(gate.sent)])
               if value.encode() not in logs[partition]]
    if missing:  # send() returned, yet the value is not in its partition's log
        return _Failure("lost", missing[0])
    if report.reordered:
        return _Failure("reordered", index[report.reordered[0]])
    if len(gate.sent) != len(sends):
        return _Failure("unfinished", len(gate.sent))
    return None


class _SequenceGate(_Gate):
    """check_sequence: hands out (state, batch) cases and compares with the reference."""

    def __init__(self, cases: list) -> None:
        super().__init__()
        self.cases = cases
        self.index = -1

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        self.count()
        if target == "harness":
            return getattr(self, f"_harness_{method}")(*args)
        raise AttributeError(f"no {target}.{method} here")

    def _harness_case(self) -> list | None:
        self.index += 1
        return self.cases[self.index] if self.index < len(self.cases) else None

    def _harness_answer(self, result: object, state: object) -> None:
        items, batch = self.cases[self.index]
        right, after = reference_check_sequence(items, batch)
        if result != right:
            self.fail("wrong_answer", self.index, answer=repr(result)[:80], right=right)
        if state != after:
            self.fail("wrong_state", self.index, answer=right, state=state, right_state=after)

    def _harness_raised(self, name: str, code: int | None, text: str, where: str) -> None:
        if name == "NotImplementedError":
            self.fail("not_implemented", self.index, where=where)
        self.fail("sequence_raised", self.index, raised=f"{name}: {text}"[:160], where=where)


def reference_check_sequence(items: list, batch: dict) -> tuple[str, list]:
    """The rules of DESIGN §6 (ps2), on the wire form of the state: answer and new state."""
    state = {(pid, partition): (epoch, last) for pid, partition, epoch, last in items}
    key = (batch["producer_id"], batch["partition"])
    epoch, seq = batch["epoch"], batch["seq"]
    known = state.get(key)
    if known is None or epoch > known[0]:
        answer = "ok" if seq == 0 else "out_of_order"
    elif epoch < known[0]:
        answer = "fenced"
    elif seq == known[1] + 1:
        answer = "ok"
    elif seq <= known[1]:
        answer = "duplicate"
    else:
        answer = "out_of_order"
    if answer == "ok":
        state[key] = (epoch, seq)
    return answer, sorted([k[0], k[1], v[0], v[1]] for k, v in state.items())


# ----- inputs: fixed plans, then seeded random ones ------------------------------------------


def _case(value: str, retries: int = 3, backoff_ms: int = 100, delivery_timeout_ms: int = 5_000,
          pad: int = 0) -> dict:
    return {"value": value, "retries": retries, "backoff_ms": backoff_ms,
            "delivery_timeout_ms": delivery_timeout_ms, "pad": pad}


def _retries_scenarios(seed: int, count: int) -> list[tuple[FaultPlan, dict]]:
    """Fixed plans for each error class, then ``count`` seeded random plans."""
    plain = [_case("m-000"), _case("m-001"), _case("m-002")]
    fixed = [
        (FaultPlan(), [_case("m-000"), _case("m-001", retries=5, pad=OVERSIZED_PAD),
                       _case("m-002")]),
        (FaultPlan((DropMessages("produce", "response"),)), plain),
        (FaultPlan((DropMessages("produce", "response"),)), [_case("m-000", retries=0),
                                                             _case("m-001")]),
        (FaultPlan((DropMessages("produce", "request", count=2, skip=1),)), plain),
        (FaultPlan((KillBroker(0, on="ack"), RestartBroker(0, on="ack"))), plain),
        (FaultPlan((KillBroker(1, on="ack"), KillBroker(2, on="ack"),
                    RestartBroker(1, on="nack", nth=3))),
         [_case("m-000"), _case("m-001", retries=10, backoff_ms=200), _case("m-002")]),
        (FaultPlan((KillBroker(0, on="ack"), KillBroker(1, on="ack"), KillBroker(2, on="ack"),
                    RestartBroker(2, on="nack", nth=3), RestartBroker(0, on="nack", nth=3))),
         [_case("m-000"), _case("m-001", retries=INT32_MAX, delivery_timeout_ms=3_000),
          _case("m-002", retries=INT32_MAX, delivery_timeout_ms=30_000)]),
    ]
    scenarios = [(plan, {"cases": cases}) for plan, cases in fixed]
    for index in range(count):
        rng = random.Random(f"grading/retries/{seed}/{index}")
        scenarios.append((_random_broker_faults(rng), {"cases": _random_cases(rng)}))
    return scenarios


def _random_cases(rng: random.Random) -> list[dict]:
    cases = []
    for number in range(rng.randint(2, 4)):
        cases.append(_case(f"m-{number:03d}", retries=rng.choice((0, 1, 2, 3, 5, 10, INT32_MAX)),
                           backoff_ms=rng.choice((50, 100, 250)),
                           delivery_timeout_ms=rng.choice((2_000, 5_000, 15_000, 60_000)),
                           pad=OVERSIZED_PAD if rng.random() < 0.1 else 0))
    return cases


def _random_broker_faults(rng: random.Random, isr: bool = True) -> FaultPlan:
    """Lost requests and answers, leader failovers, ISR shrinks and long outages.

    With ``isr=False`` (the sender, which has no clock to back off with) at most
    one broker is down at a time, so the ISR never falls below
    min.insync.replicas and no retry loop spins on NOT_ENOUGH_REPLICAS.
    """
    faults: list = []
    down = False
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        nth = rng.randint(1, 4)
        if roll < 0.5 or (down and not isr):
            faults.append(DropMessages("produce", rng.choice(("request", "response")),
                                       count=rng.randint(1, 3), skip=rng.randint(0, 5)))
        elif roll < 0.75 or not isr:
            down = True
            broker = rng.randrange(BROKERS)
            faults.append(KillBroker(broker, on="ack", nth=nth))
            faults.append(RestartBroker(broker, on="ack", nth=nth + rng.randint(0, 2)))
        elif roll < 0.9:
            faults += [KillBroker(1, on="ack", nth=nth), KillBroker(2, on="ack", nth=nth),
                       RestartBroker(1, on="nack", nth=rng.randint(1, 6))]
        else:
            faults += [KillBroker(b, on="ack", nth=nth) for b in range(BROKERS)]
            faults += [RestartBroker(b, on="nack", nth=rng.randint(2, 12)) for b in (2, 0, 1)]
    return FaultPlan(tuple(faults))


def _sender_scenarios(seed: int, count: int) -> list[tuple[FaultPlan, dict]]:
    """Lost answers and failovers under a fixed series of sends, then seeded random ones."""
    sends = [[0, "v-000"], [1, "v-001"], [0, "v-002"], [2, "v-003"], [1, "v-004"], [0, "v-005"]]
    inputs = {"producer_id": PRODUCER_ID, "epoch": 0, "sends": sends}
    fixed = [
        FaultPlan(),
        FaultPlan((DropMessages("produce", "response"),)),
        FaultPlan((DropMessages("produce", "response", count=2, skip=2),)),
        FaultPlan((DropMessages("produce", "request", count=2, skip=1),)),
        FaultPlan((KillBroker(0, on="ack"), RestartBroker(0, on="ack"))),
    ]
    scenarios = [(plan, inputs) for plan in fixed]
    for index in range(count):
        rng = random.Random(f"grading/sender/{seed}/{index}")
        sends = [[rng.randrange(3), f"v-{n:03d}"] for n in range(rng.randint(4, 9))]
        scenarios.append((_random_broker_faults(rng, isr=False),
                          {"producer_id": rng.randint(1_000, 9_999),
                           "epoch": rng.choice((0, 0, 1, 3)), "sends": sends}))
    return scenarios


_FIXED_SEQUENCE_CASES = [
    ([], {"producer_id": 7, "epoch": 0, "partition": 0, "seq": 0}),
    ([], {"producer_id": 7, "epoch": 0, "partition": 0, "seq": 1}),
    ([[7, 0, 0, 0]], {"producer_id": 7, "epoch": 0, "partition": 0, "seq": 1}),
    ([[7, 0, 0, 1]], {"producer_id": 7, "epoch": 0, "partition": 0, "seq": 1}),
    ([[7, 0, 0, 4]], {"producer_id": 7, "epoch": 0, "partition": 0, "seq": 2}),
    ([[7, 0, 0, 1]], {"producer_id": 7, "epoch": 0, "partition": 0, "seq": 3}),
    ([[7, 0, 0, 2]], {"producer_id": 7, "epoch": 0, "partition": 1, "seq": 0}),
    ([[7, 0, 0, 2]], {"producer_id": 7, "epoch": 0, "partition": 1, "seq": 3}),
    ([[7, 0, 0, 2]], {"producer_id": 8, "epoch": 0, "partition": 0, "seq": 3}),
    ([[7, 0, 2, 5]], {"producer_id": 7, "epoch": 1, "partition": 0, "seq": 6}),
    ([[7, 0, 2, 5]], {"producer_id": 7, "epoch": 1, "partition": 0, "seq": 0}),
    ([[7, 0, 2, 5]], {"producer_id": 7, "epoch": 3, "partition": 0, "seq": 0}),
    ([[7, 0, 2, 5]], {"producer_id": 7, "epoch": 3, "partition": 0, "seq": 6}),
    ([[7, 0, 2, 5], [7, 1, 2, 0]], {"producer_id": 7, "epoch": 2, "partition": 1, "seq": 1}),
]


def _sequence_cases(seed: int, count: int) -> list:
    """Every rule's edge cases, then ``count`` seeded cases drawn from plausible streams."""
    cases = [[items, batch | {"value": f"v-{n:03d}"}]
             for n, (items, batch) in enumerate(_FIXED_SEQUENCE_CASES)]
    rng = random.Random(f"grading/sequence/{seed}")
    for _ in range(count):
        items = sorted({(pid, part): [pid, part, rng.randint(0, 3), rng.randint(0, 6)]
                        for pid, part in ((rng.choice((7, 8)), rng.randrange(2))
                                          for _ in range(rng.randint(0, 3)))}.values())
        pid, part = rng.choice((7, 8)), rng.randrange(2)
        known = next((i for i in items if i[:2] == [pid, part]), None)
        epoch = rng.randint(0, 3) if known is None else known[2] + rng.choice((-1, 0, 0, 0, 1))
        last = -1 if known is None else known[3]
        seq = max(0, last + rng.choice((-2, -1, 0, 1, 1, 1, 2, 3)))
        cases.append([items, {"producer_id": pid, "epoch": max(0, epoch), "partition": part,
                              "seq": seq, "value": f"v-{len(cases):03d}"}])
    return cases


# ----- explaining a failure -------------------------------------------------------------------


def _token(run: Run) -> str:
    """check, seed, plan, inputs and function name, as one short string."""
    inputs = run.inputs
    if run.check == "check_sequence":  # only the failing case is needed to play it again
        inputs = {"cases": [inputs["cases"][run.failure.case]]}
    return encode_token({"c": run.check, "f": run.function, "i": inputs,
                         "p": json.loads(run.plan.to_json()), "s": run.seed})


def _plain_fault(fault) -> str:
    """One fault, as a sentence a learner reads."""
    if isinstance(fault, DropMessages):
        numbers = drop_numbers(fault)
        if fault.kind == "response":
            return (f"the network lost the broker's answer to produce request {numbers}: the "
                    f"record WAS written, but send_once raised REQUEST_TIMED_OUT (an indefinite "
                    f"outcome)")
        return (f"the network lost produce request {numbers} before it reached the broker: "
                f"send_once raised REQUEST_TIMED_OUT")
    when = f" right after the {ordinal(fault.nth)} {fault.on}" if fault.on else ""
    if fault.at_ms is not None:
        when = f" at t={fault.at_ms}ms"
    if isinstance(fault, KillBroker):
        return f"broker {fault.broker} crashed{when}"
    if isinstance(fault, RestartBroker):
        return f"broker {fault.broker} started again{when}"
    return repr(fault)


def _explain(run: Run, limit_s: float) -> str:
    """The failure message: what, which fault, why, what the code did, how to replay."""
    lines = [f"check_{run.check} failed: {_headline(run, limit_s)}"]
    why = _why(run)
    if why:
        lines += ["", why]
    lines += causes([_plain_fault(fault) for fault in run.plan.faults])
    story = _story(run)
    if story:
        lines += ["", "What your code did just before:", *story]
    if run.check == "check_sequence":  # no plan to show: the case is the whole story
        lines += replay_lines(None, run.seed, _token(run), draw=False)
    else:
        lines += ["", *replay_lines(repr(run.plan), run.seed, _token(run), draw=False)]
    return "\n".join(lines)


def _subject(run: Run) -> str:
    """The record, value or case the failure is about, in words."""
    case = run.failure.case
    if run.check == "send_with_retries" and 0 <= case < len(run.inputs["cases"]):
        item = run.inputs["cases"][case]
        return (f"send_with_retries({_record_text(item)!r}, {_options_text(item)})")
    if run.check == "idempotent_sender" and 0 <= case < len(run.inputs["sends"]):
        partition, value = run.inputs["sends"][case]
        return f"value {value!r} (sender.send({partition}, {value!r}))"
    return "your code"


def _headline(run: Run, limit_s: float) -> str:
    failure, d, fn = run.failure, run.failure.detail, run.function
    subject = _subject(run)
    texts = {
        "fatal_retried": lambda: (f"{subject} tried again (attempt {d.get('attempt')}) after "
                                  f"{d.get('error')}, an error that is NOT retriable."),
        "too_many": lambda: (f"{subject} made attempt {d.get('attempt')}: retries counts "
                             f"RETRIES, so at most retries + 1 attempts."),
        "past_deadline": lambda: (f"{subject} started attempt {d.get('attempt')} "
                                  f"{d.get('at_ms')} ms after it was called, after its "
                                  f"delivery timeout."),
        "no_backoff": lambda: (f"{subject} started attempt {d.get('attempt')} only "
                               f"{d.get('gap_ms')} ms after the previous one failed with "
                               f"{d.get('error')}: less than backoff_ms."),
        "after_success": lambda: (f"{subject} sent the record AGAIN after send_once had "
                                  f"acknowledged it (a needless duplicate)."),
        "swallowed": lambda: (f"{subject} returned {d.get('returned')} although no attempt "
                              f"succeeded (the last one raised {d.get('error')}); the caller "
                              f"believes the record was delivered"
                              + (", and it is not in the log: LOST." if not d.get("written")
                                 else ".")),
        "wrong_return": lambda: (f"{subject} returned {d.get('returned')}, not the ack that "
                                 f"send_once returned ({d.get('ack')})."),
        "raised_after_success": lambda: (f"{subject} raised ({d.get('raised')}) although "
                                         f"its last attempt was acknowledged."),
        "wrong_error": lambda: (f"{subject} raised {d.get('raised')}; it should re-raise the "
                                f"last error send_once raised, {d.get('error')}.\n"
                                f"{d.get('where', '')}".rstrip()),
        "premature": lambda: (f"{subject} gave up after {d.get('attempts')} attempt(s) on "
                              f"{d.get('error')}, a retriable error, with retries and "
                              f"{d.get('room_ms')} ms of the delivery timeout left."),
        "no_attempt": lambda: f"{subject} ended without ever calling send_once(record).",
        "sender_raised": lambda: (f"{subject}: send() raised {d.get('raised')}"
                                  + (" — a RETRIABLE error: the sender must retry it until "
                                     "the batch is acknowledged." if d.get("retriable")
                                     else ".") + f"\n{d.get('where', '')}".rstrip()),
        "bad_batch": lambda: (f"{subject}: send_once got {d.get('batch')}; a batch is a dict "
                              f"with exactly the keys producer_id, epoch, partition, seq, value"
                              + (f", and its {d['wrong']} is wrong." if d.get("wrong")
                                 else ".")),
        "stuck": lambda: (f"{subject} was still not acknowledged after {d.get('attempts')} "
                          f"attempts; the grader stopped it."),
        "sequence_refused": lambda: (f"{subject}: the broker refused a batch with seq "
                                     f"{d.get('seq')} on partition {d.get('partition')} "
                                     f"({d.get('error')}): it expected seq {d.get('expected')}."),
        "duplicate": lambda: f"{subject} is in the log TWICE (a DUPLICATE).",
        "lost": lambda: f"{subject} is not in the log: LOST, although send() returned.",
        "reordered": lambda: f"{subject} is out of order in its partition's log (REORDERED).",
        "unfinished": lambda: f"{subject} was never sent: the run stopped early.",
        "wrong_answer": lambda: (f"check_sequence returned {d.get('answer')}, but the broker "
                                 f"must answer {d.get('right')!r}."),
        "wrong_state": lambda: (f"check_sequence answered {d.get('answer')!r} (right), but left "
                                f"the state as {_state_text(d.get('state'))} instead of "
                                f"{_state_text(d.get('right_state'))}."),
        "sequence_raised": lambda: (f"check_sequence raised {d.get('raised')} instead of "
                                    f"answering.\n{d.get('where', '')}".rstrip()),
        "not_implemented": lambda: f"{fn} raised NotImplementedError\n{d.get('where', '')}",
        "driver_raised": lambda: (f"{fn} could not be used: {d.get('type')}: {d.get('text')}\n"
                                  f"{d.get('where', '')}".rstrip()),
    }
    if failure.kind in ABORTS:
        return abort_headline(failure.kind, _abort_words(fn), d.get("text", ""), limit_s)
    return texts[failure.kind]()


def _abort_words(fn: str) -> AbortWords:
    """ps2's words for an abort: one app run, no restart, so an abort fails the check only."""
    return AbortWords(fn, calls=(f"{fn} made more than {CALLS_MAX} calls on send_once and "
                                 f"clock in one run. Does it stop retrying when the limits run "
                                 f"out?"), crash=False)


_WHY = {
    "fatal_retried": "Retry only errors whose err.retriable() is true: a retry cannot fix a "
                     "record that is too large or a configuration that is invalid. Re-raise "
                     "the error at once.",
    "too_many": "With retries=N your function may call send_once at most N + 1 times, then it "
                "must re-raise the last error.",
    "past_deadline": "delivery_timeout_ms bounds the whole send, counted from the moment your "
                     "function was called (use clock.now_ms()): once it has passed, start no "
                     "new attempt; re-raise the last error.",
    "no_backoff": "Wait at least backoff_ms between a failed attempt and the next one "
                  "(clock.sleep(backoff_ms)); retrying at once hammers a broker that is "
                  "already in trouble.",
    "after_success": "Return the ack as soon as send_once returns it.",
    "swallowed": "When retries or the delivery timeout run out, re-raise the last "
                 "KafkaException: only then does the caller know the record may be lost.",
    "wrong_return": "Return exactly what send_once returned for the successful attempt.",
    "wrong_error": "Re-raise the last KafkaException itself (a bare `raise` in the except "
                   "block, or keep it and `raise last_error`).",
    "premature": "A retriable error (err.retriable() is true) may succeed next time: keep "
                 "retrying while attempts and the delivery timeout allow. A request timeout is "
                 "retriable too, even though the write may already have happened.",
    "sender_raised": "IdempotentSender retries every retriable error until the batch is "
                     "acknowledged. Reusing the batch's sequence number makes that safe: "
                     "the broker answers a retried batch it already has as a success.",
    "sequence_refused": "Sequence numbers count per partition from 0, one up per new value, "
                        "and a retry reuses the SAME number; keep a dict partition -> next "
                        "sequence and advance it only after the ack.",
    "duplicate": "The first attempt was written but its answer lost, and the retry carried a "
                 "NEW sequence number, so the broker could not tell it was the same batch. "
                 "Build the batch once per value and resend that same batch on every retry.",
    "lost": "send() returned although the value was never acknowledged.",
    "reordered": "Send one value at a time and finish it (ack) before the next.",
    "wrong_state": "Only an 'ok' batch updates state[(producer_id, partition)] = (epoch, seq); "
                   "duplicates, gaps and fenced batches leave it as it was.",
}


def _why(run: Run) -> str:
    failure = run.failure
    if failure.kind == "wrong_answer":
        items, batch = run.inputs["cases"][failure.case]
        return (f"  state = {_state_text(items)}\n  batch = {_batch_repr(batch)}\n"
                f"{_rule(items, batch)}")
    if failure.kind == "wrong_state":
        items, batch = run.inputs["cases"][failure.case]
        return (f"  state = {_state_text(items)}\n  batch = {_batch_repr(batch)}\n"
                f"{_WHY['wrong_state']}")
    return _WHY.get(failure.kind, "")


def _batch_repr(batch: dict) -> str:
    """A batch as a dict literal, its keys in the contract's order (tokens sort them)."""
    return "{" + ", ".join(f"{key!r}: {batch[key]!r}" for key in _BATCH_KEYS) + "}"


def _state_text(items: object) -> str:
    if not isinstance(items, list):
        return str(items)
    return "{" + ", ".join(f"({p}, {q}): ({e}, {s})" for p, q, e, s in items) + "}"


def _rule(items: list, batch: dict) -> str:
    """Which rule decides this case, in words."""
    known = {(p, q): (e, s) for p, q, e, s in items}.get((batch["producer_id"],
                                                         batch["partition"]))
    pid, part, epoch, seq = (batch["producer_id"], batch["partition"], batch["epoch"],
                             batch["seq"])
    if known is None:
        return (f"The state knows nothing of producer {pid} on partition {part} (state is kept "
                f"per (producer_id, partition)): a first batch must carry seq 0.")
    if epoch > known[0]:
        return (f"Epoch {epoch} is newer than the stored epoch {known[0]}: a new producer "
                f"session starts again at seq 0.")
    if epoch < known[0]:
        return (f"Epoch {epoch} is OLDER than the stored epoch {known[0]}: this is a zombie "
                f"producer, so the batch is 'fenced'.")
    if seq <= known[1]:
        return (f"The last sequence stored for producer {pid} on partition {part} is "
                f"{known[1]}; seq {seq} is not new: a retry of a batch already written "
                f"(a lost ack), so 'duplicate'.")
    if seq == known[1] + 1:
        return f"seq {seq} is exactly the next after {known[1]}: 'ok'."
    return (f"The last sequence stored for producer {pid} on partition {part} is {known[1]}, "
            f"so the next batch must carry {known[1] + 1}; seq {seq} skips a batch that went "
            f"missing: 'out_of_order'.")


def _story(run: Run, before: int = 8) -> list[str]:
    """The learner's calls and the faults around the failure, in time order."""
    if run.cluster is None:
        return []
    plain = {repr(fault): _plain_fault(fault) for fault in run.plan.faults}
    entries = [(index, 0, f"  t={event.time_ms}ms  {_event_text(event, plain)}")
               for index, event in enumerate(run.history.events)
               if index >= run.installed_at
               and event.kind in ("fault", "broker_crash", "broker_restart", "election")]
    entries += [(index, 1, f"  t={when}ms  {text}") for index, when, text in run.log]
    entries.sort(key=lambda entry: entry[:2])
    if run.failure.kind in ("duplicate", "lost", "reordered"):
        # Judged from the log after the run: show what happened around the first fault.
        anchor = next((i for i, entry in enumerate(entries) if "FAULT" in entry[2]), None)
        if anchor is not None:
            return [entry[2] for entry in entries[max(0, anchor - 2):anchor + before - 2]]
    return [entry[2] for entry in entries[-before:]]


def _event_text(event, plain: dict) -> str:
    data = event.data
    if event.kind == "fault":
        return f"FAULT: {plain.get(data.get('fault'), data.get('fault'))}"
    if event.kind == "broker_crash":
        return f"{event.actor} crashed"
    if event.kind == "broker_restart":
        return f"{event.actor} started again"
    return (f"controller: broker {data.get('leader')} now leads partition "
            f"{data.get('partition')}")
