"""The ps4 autograder: attack a consume-transform-produce loop, judge its committed output.

The learner writes ``process_transactionally(consumer, producer, transform)``
(DESIGN §6, ps4) and sets ``CONSUMER_ISOLATION``. Each check plays it against a
fresh seeded cluster whose input topic holds a few committed messages with
aborted transactions from an upstream producer in between, and attacks it
again and again: a clean run first, then every single crash point of that run
(before and after each client call and each ``transform``), then its own fault
family, then seeded random plans. After each crash the application restarts as
a fresh process with a fresh consumer (same group) and a fresh producer (same
``transactional.id``): nothing in memory survives.

The verdict reads the History alone: what the grader's reader sees in the
output topic with ``isolation.level=read_committed`` at the end (a
``final_read`` event), which upstream transactions aborted
(:func:`course_lib.checker.aborted_values`), the group's committed offsets and
what the learner's process was told and did afterwards. One check per
guarantee, so a wrong answer loses only the points of what it breaks:

- :func:`check_no_duplicates`: each input's output is committed at most once,
  whatever crashes (offsets must commit in the same transaction as the output);
- :func:`check_no_loss`: each input's output is committed, and the group's
  committed offset reaches the log end, also when a transaction fails with an
  abortable error (abort, then rewind the consumer to its committed offsets);
- :func:`check_zombie_fenced`: an instance that was fenced (a successor with the
  same ``transactional.id`` started, or its transaction outlived
  ``transaction.timeout.ms``) gets the fatal ``_FENCED`` and must stop;
- :func:`check_isolation`: no output comes from an aborted upstream transaction.

A *zombie* is played for real: app run 1 stalls inside its k-th ``transform``
(its group session expires), the successors run to the end in fresh child
processes, then run 1 wakes up and carries on. A failure is shrunk to a minimal
plan and explained in plain words, with a ``course_lib.replay("…")`` line.

**Isolation** (DESIGN §6): the learner's function runs only in the children of
:mod:`course_lib.grading.sandbox`. The driver, trusted code in the child, reads
``CONSUMER_ISOLATION`` from the function's own globals and sends it first
(``harness.configure``): the grader builds the consumer with it, here.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Message

from course_lib.checker import Report, aborted_values, check
from course_lib.cluster import Cluster
from course_lib.faults import (
    PHASES,
    Crash,
    CrashClient,
    DropMessages,
    FaultPlan,
    KillBroker,
    RestartBroker,
    single_crash_plans,
)
from course_lib.grading.campaign import (
    Campaign,
    Check,
    Played,
    abort_point,
    app_runner,
    committed_offset,
    first_restart,
    hunt,
    log_end,
    progress_due,
    raise_failure,
    record_crash,
    require_callable,
    require_count,
    timeline_svg,
)
from course_lib.grading.explanation import (
    CRASHED,
    AbortWords,
    abort_headline,
    arg_text,
    at,
    call_entry,
    describe_fault,
    drop_numbers,
    failure_message,
    grader_crash,
    merge,
    message_identity,
    ordinal,
    value_text,
    window,
)
from course_lib.grading.sandbox import (
    ABORTS,
    Outcome,
    Proxy,
    TooManyCalls,
    encode_token,
    notebook_function,
)
from course_lib.scenarios import message_values

__all__ = [
    "Campaign",
    "Replay",
    "Stall",
    "check_isolation",
    "check_no_duplicates",
    "check_no_loss",
    "check_zombie_fenced",
    "replay_data",
]

TOPIC_IN, TOPIC_OUT = "orders", "invoices"
GROUP = "invoicer"
TRANSACTIONAL_ID = "invoicer"
ABORTED_PREFIX = "aborted"
MESSAGES = 4
RANDOM_PLANS = 6
BROKERS = 3
ISOLATION_LEVELS = ("read_committed", "read_uncommitted")
KAFKA_DEFAULT_ISOLATION = "read_uncommitted"
CONSUMER_CONFIG = {"group.id": GROUP, "auto.offset.reset": "earliest",
                   "enable.auto.commit": False}
# Short timeouts so that failures play out in a few virtual seconds:
# three lost produce requests in a row exceed delivery.timeout.ms (an abortable
# error); a stall longer than transaction.timeout.ms gets the producer fenced.
REQUEST_TIMEOUT_MS = 1_000
DELIVERY_TIMEOUT_MS = 2_500
TRANSACTION_TIMEOUT_MS = 6_000
PRODUCER_CONFIG = {"transactional.id": TRANSACTIONAL_ID,
                   "request.timeout.ms": REQUEST_TIMEOUT_MS,
                   "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
                   "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS}
DROPS_TO_ABORT = 3  # lost produce requests (or answers) that exhaust delivery.timeout.ms
TIME_LIMIT_S = 10.0  # wall clock for one plan, restarts included
CALLS_MAX = 600  # calls per app run (about 12 per message)
CALLS_AFTER_FATAL_MAX = 12  # a fenced app that keeps going is stopped after this many
RUNS_MAX = 12  # app runs (first start + restarts) per plan
RERUN_DELAY_MS = 5_000  # an app that stopped early (poll() came back empty) runs again
SETTLE_MS = 5_000


CHECKS = {
    "no_duplicates": Check("no_duplicates", "exactly-once: nothing committed twice"),
    "no_loss": Check("no_loss", "exactly-once: nothing lost, offsets committed"),
    "zombie_fenced": Check("zombie_fenced", "a fenced instance stops"),
    "isolation": Check("isolation", "no aborted reads"),
}


@dataclass(frozen=True)
class Stall:
    """A fault the harness plays itself: app run 1 stalls at its nth call of ``point``.

    ``kind="zombie"`` (at the nth ``transform``): its group session expires,
    a successor instance runs to the end, then the stalled one wakes up.
    ``kind="timeout"`` (at the nth ``producer.send_offsets_to_transaction``):
    it pauses longer than ``transaction.timeout.ms``, so the coordinator aborts
    its transaction and bumps the epoch.
    """

    kind: str
    nth: int

    @property
    def point(self) -> str:
        return "transform" if self.kind == "zombie" else "producer.send_offsets_to_transaction"


@dataclass(frozen=True)
class _Failure:
    kind: str  # duplicate lost progress aborted-read fenced-continued clean-* error | ABORTS
    value: bytes | None = None  # the input message concerned
    offset: int | None = None
    detail: str = ""


@dataclass
class Replay(Played):
    """One played run: plan, cluster, History, Report and verdict (None if it passed)."""

    check: str
    seed: int
    messages: int
    plan: FaultPlan
    stall: Stall | None
    cluster: Cluster
    report: Report
    function: str
    isolation: str = ""
    isolation_set: bool = True
    failure: _Failure | None = None
    message: str | None = None
    trace: list = field(default_factory=list)
    installed_at: int = 0
    errors: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # (history index, time ms, text)
    fenced: list = field(default_factory=list)  # (run, fatal error text, calls after it)

    @property
    def history(self):
        """The History the verdict was computed from."""
        return self.cluster.history

    def __repr__(self) -> str:
        return (f"<Replay check_{self.check} seed={self.seed} {self.verdict}: "
                f"{_plan_text(self.plan, self.stall)}>")

    def _repr_svg_(self) -> str | None:
        """The timeline of this run, when course_lib.viz is available."""
        title = f"replay of check_{self.check}: {_plan_text(self.plan, self.stall)}"
        return timeline_svg(self.history, title, self.report)


# ----- public API -----------------------------------------------------------------------------


def check_no_duplicates(process_transactionally: Callable, *, seed: int = 0,
                        random_plans: int = RANDOM_PLANS, messages: int = MESSAGES,
                        time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade the loop under crashes at every call, lost answers and broker restarts.

    No input's output may be committed twice: the consumer offsets must be
    committed in the same transaction as the output. Raises
    :class:`CheckFailed` naming the duplicated output, the fault and a replay call.
    """
    return _campaign(CHECKS["no_duplicates"], process_transactionally, seed, random_plans,
                     messages, time_limit_s)


def check_no_loss(process_transactionally: Callable, *, seed: int = 0,
                  random_plans: int = RANDOM_PLANS, messages: int = MESSAGES,
                  time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade the loop under crashes and transactions that fail with abortable errors.

    Every input's output must be committed and the group's committed offset
    must reach the input's log end: after an abort the consumer goes back to
    its committed offsets.
    """
    return _campaign(CHECKS["no_loss"], process_transactionally, seed, random_plans,
                     messages, time_limit_s)


def check_zombie_fenced(process_transactionally: Callable, *, seed: int = 0,
                        random_plans: int = 0, messages: int = MESSAGES,
                        time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade what a fenced instance does: after the fatal ``_FENCED`` it must stop.

    Plays a zombie at every message (the instance stalls, a successor takes
    over, the stalled one wakes up) and a stall past ``transaction.timeout.ms``
    at every transaction.
    """
    return _campaign(CHECKS["zombie_fenced"], process_transactionally, seed, random_plans,
                     messages, time_limit_s)


def check_isolation(process_transactionally: Callable, *, seed: int = 0,
                    random_plans: int = 2, messages: int = MESSAGES,
                    time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade ``CONSUMER_ISOLATION``: nothing from an aborted upstream transaction is output."""
    return _campaign(CHECKS["isolation"], process_transactionally, seed, random_plans,
                     messages, time_limit_s)


def replay_data(data: dict, fn: Callable | None = None, *, isolated: bool = True,
                time_limit_s: float = TIME_LIMIT_S) -> Replay:
    """Play the run a failure message's token named again (see ``course_lib.replay``).

    ``fn`` defaults to the function of that name in the notebook (``__main__``);
    its ``CONSUMER_ISOLATION`` is read from the function's globals, as in
    grading. ``isolated=False`` runs ``fn`` in this process (no fork, no limits).
    """
    chosen = CHECKS[data["c"]]
    plan = FaultPlan.from_json(json.dumps(data["p"]))
    stall = Stall(*data["z"]) if data.get("z") else None
    fn = notebook_function(data["f"]) if fn is None else fn
    with app_runner(fn, _drive, time_limit_s, isolated) as runner:
        run = _play(chosen, data["s"], data["m"], plan, stall, runner, time_limit_s, data["f"])
    if run.failure is not None:
        run.message = _explain(run, time_limit_s)
    return run


# ----- the campaign ---------------------------------------------------------------------------


def _campaign(chosen: Check, fn: Callable, seed: int, random_plans: int, messages: int,
              time_limit_s: float) -> Campaign:
    require_callable(chosen.name, fn)
    require_count("messages", messages)
    name = getattr(fn, "__name__", "process_transactionally")
    with app_runner(fn, _drive, time_limit_s) as runner:

        def play(plan: FaultPlan, stall: Stall | None = None) -> Replay:
            return _play(chosen, seed, messages, plan, stall, runner, time_limit_s, name)

        failing, runs = hunt(play, lambda clean: _plans(chosen, seed, clean, random_plans))
    if failing is None:
        return Campaign(chosen.name, seed, runs)
    raise_failure(failing, _explain(failing, time_limit_s), _token(failing),
                  failing.failure.kind == "error"
                  and failing.failure.detail == "NotImplementedError")


def _plans(chosen: Check, seed: int, clean: Replay,
           count: int) -> list[tuple[FaultPlan, Stall | None]]:
    """The check's fault family: single crashes, abortable errors, zombies, random mixes."""
    transactions = sum(1 for point, _ in clean.trace if point == "producer.commit_transaction")
    plans: list[tuple[FaultPlan, Stall | None]] = []
    if chosen.name in ("no_duplicates", "no_loss"):
        plans += [(plan, None) for plan in single_crash_plans(clean.trace)]
    if chosen.name == "no_loss":
        plans += [(FaultPlan((DropMessages("produce", kind, count=DROPS_TO_ABORT, skip=n),)),
                   None) for n in range(transactions) for kind in ("request", "response")]
    if chosen.name == "zombie_fenced":
        transforms = sum(1 for point, _ in clean.trace if point == "transform")
        plans += [(FaultPlan(), Stall("zombie", n)) for n in range(1, transforms + 1)]
        plans += [(FaultPlan(), Stall("timeout", n)) for n in range(1, transactions + 1)]
    seen = {(plan.to_json(), stall) for plan, stall in plans}
    for index in range(count):
        plan, stall = _random_plan(chosen, seed, index, clean)
        if (plan.to_json(), stall) not in seen:
            seen.add((plan.to_json(), stall))
            plans.append((plan, stall))
    return plans


def _random_plan(chosen: Check, seed: int, index: int,
                 clean: Replay) -> tuple[FaultPlan, Stall | None]:
    """A seeded mix of crashes, lost produce requests or answers and broker restarts.

    For the zombie check, each mix also has a zombie or a timed-out transaction.
    """
    rng = random.Random(f"grading/ps4/{chosen.name}/{seed}/{index}")
    stall = None
    if chosen.name == "zombie_fenced":
        kind = rng.choice(("zombie", "timeout"))
        point = Stall(kind, 1).point
        stall = Stall(kind, rng.randint(1, max(1, sum(1 for p, _ in clean.trace if p == point))))
    calls = list(clean.trace)
    transactions = max(1, sum(1 for p, _ in calls if p == "producer.commit_transaction"))
    faults: list = []
    for _ in range(rng.randint(2, 4)):
        roll = rng.random()
        if roll < 0.45 and calls:
            point, nth = rng.choice(calls)
            faults.append(CrashClient(point, rng.choice(PHASES), nth))
        elif roll < 0.7:
            drops = DROPS_TO_ABORT if chosen.name == "no_loss" else rng.randint(1, 2)
            faults.append(DropMessages("produce", rng.choice(("request", "response")),
                                       count=drops, skip=rng.randrange(transactions)))
        else:
            broker = rng.randrange(BROKERS)
            at_ms = rng.randint(clean.history.events[clean.installed_at].time_ms,
                                clean.history.events[-1].time_ms)
            faults.append(KillBroker(broker, at_ms=at_ms))
            faults.append(RestartBroker(broker, at_ms=at_ms + rng.randint(100, 3_000)))
    return FaultPlan(tuple(faults)), stall


# ----- one run of a plan ----------------------------------------------------------------------


def _stage(seed: int, messages: int) -> Cluster:
    """Input and output topics; the input holds ``messages`` committed records.

    An upstream transactional producer writes an aborted transaction after the
    first message and after every second one, so a read_uncommitted consumer
    sees records that never logically happened. The input ends with a plain
    record, so a consumer that read everything is positioned at the log end.
    """
    cluster = Cluster(brokers=BROKERS, seed=seed)
    for topic in (TOPIC_IN, TOPIC_OUT):
        cluster.create_topic(topic)
    seeder = cluster.process("seeder").producer({})
    upstream = cluster.process("upstream").producer({"transactional.id": "upstream"})
    upstream.init_transactions()
    aborted = 0
    for index, value in enumerate(message_values(messages)):
        if index % 2 == 1:
            upstream.begin_transaction()
            upstream.produce(TOPIC_IN, f"{ABORTED_PREFIX}-{aborted:03d}")
            upstream.flush()
            upstream.abort_transaction()
            aborted += 1
        seeder.produce(TOPIC_IN, value)
        seeder.flush()
    cluster.settle(1_000)
    return cluster


class _Play:
    """One plan: the cluster, the app runs so far, and how they ended."""

    def __init__(self, seed: int, messages: int, plan: FaultPlan, stall: Stall | None,
                 runner: Callable[[_Gate, float], Outcome], time_limit_s: float) -> None:
        self.cluster = _stage(seed, messages)
        self.history = self.cluster.history
        self.end = log_end(self.history, TOPIC_IN)
        self.installed_at = len(self.history)
        self.cluster.install_faults(plan)
        self.plan, self.stall, self.runner = plan, stall, runner
        self.deadline = time.monotonic() + time_limit_s
        self.number = 0
        self.stop: Outcome | None = None
        self.errors: list[Outcome] = []
        self.calls: list = []
        self.fenced: list = []
        self.isolation, self.isolation_set = "", True

    @property
    def faulty(self) -> bool:
        return bool(self.plan.faults) or self.stall is not None

    def run_until_done(self) -> None:
        """Start the app, and start it again after each crash, until it has finished."""
        while self.stop is None and self.number < RUNS_MAX:
            if self._one_run():
                return

    def _one_run(self) -> bool:
        """One app run; True when the application is done (or must not run again)."""
        self.number += 1
        number = self.number
        app = self.cluster.process("invoicer-app")
        self.history.record("note", app.name, text="starts (app run 1)" if number == 1 else
                            f"starts again (app run {number}): a fresh process, consumer and "
                            f"producer, resuming at the group's committed offset")
        stall = self.stall if number == 1 else None
        gate = _Gate(self, app, stall)
        outcome = self.runner(gate, self.deadline)
        self.calls.extend(gate.log)
        if gate.fatal is not None:
            self.fenced.append((number, gate.fatal, list(gate.after_fatal)))
        if outcome.kind in ABORTS and not gate.after_fatal:
            record_crash(self.cluster, app, abort_point(outcome.kind), number)
            self.stop = outcome
            return True
        if stall is not None and stall.kind == "zombie" and gate.woke:
            ending = (f"uncaught {outcome.error_type}" if outcome.kind == "raised"
                      else "the grader (the zombie's run is over)")
            record_crash(self.cluster, app, ending, number)
            return True  # its successors already ran to the end
        if not app.alive:
            return False  # the fault plan crashed it; a new process takes over
        if outcome.kind in ("raised", "crashed", "calls"):
            what = ("kept going after a fatal error" if outcome.kind == "calls"
                    else f"uncaught {outcome.error_type or 'exception'}")
            record_crash(self.cluster, app, what, number)
            self.errors.append(outcome)
            return not self.faulty
        try:
            if gate.consumer is not None:
                gate.consumer.close()
        except Crash:
            return False
        app.die()  # the process exits; an open transaction stays open until it times out
        if not self.faulty or _caught_up(self.history, self.end):
            return True
        self.cluster.world.advance(RERUN_DELAY_MS)
        return False

    def final_read(self) -> None:
        """Heal the brokers, let markers settle, record what read_committed sees in the output."""
        cluster = self.cluster
        cluster.settle(1_000)
        for broker in cluster.brokers:
            if not broker.alive:
                cluster.restart_broker(broker.id)
        cluster.settle(SETTLE_MS)
        values = cluster.readable(TOPIC_OUT, 0, "read_committed") or []
        self.history.record("final_read", "checker", topic=TOPIC_OUT, partition=0,
                            isolation="read_committed", values=values)


def _play(chosen: Check, seed: int, messages: int, plan: FaultPlan, stall: Stall | None,
          runner: Callable[[_Gate, float], Outcome], time_limit_s: float,
          function: str) -> Replay:
    """Stage a fresh cluster, install the plan, run the app until done, judge the History."""
    play = _Play(seed, messages, plan, stall, runner, time_limit_s)
    play.run_until_done()
    play.final_read()
    run = Replay(chosen.name, seed, messages, plan, stall, play.cluster,
                 check(play.history, delivered_by="log"), function, play.isolation,
                 play.isolation_set, trace=play.cluster.faults.call_trace(),
                 installed_at=play.installed_at, errors=play.errors, calls=play.calls,
                 fenced=play.fenced)
    run.failure = _judge(chosen, run, play.stop, play.end, play.faulty)
    return run


def _caught_up(history, end: int) -> bool:
    """Is everything committed, or did the last app run read to the end?"""
    committed = committed_offset(history, GROUP, TOPIC_IN)
    if committed is not None and committed >= end:
        return True
    last_start = max((i for i, e in enumerate(history.events) if e.kind == "note"
                      and str(e.data.get("text", "")).startswith("starts")), default=0)
    return any(e.kind == "poll" and e.data.get("offset", -1) + 1 >= end
               for e in history.events[last_start:])


# ----- the verdict ------------------------------------------------------------------------------


def _inputs(history) -> tuple[dict, set]:
    """Input value -> offset (committed records only), and the aborted upstream values.

    Only the sends into the input topic decide what aborted upstream: an answer
    that read an aborted record and wrote it out in a committed transaction
    does not make it committed.
    """
    aborted_all = aborted_values([e for e in history if e.kind != "send"
                                   or e.data.get("topic") == TOPIC_IN])
    offsets, aborted = {}, set()
    for event in history.of_kind("ack"):
        if event.data.get("topic") != TOPIC_IN:
            continue
        if event.data["value"] in aborted_all:
            aborted.add(event.data["value"])
        else:
            offsets[event.data["value"]] = event.data["offset"]
    return offsets, aborted


def _output(history) -> Counter:
    """Input value -> how often its output is in the committed output (the final read)."""
    reads = [e for e in history.of_kind("final_read") if e.data.get("topic") == TOPIC_OUT]
    values = reads[-1].data["values"] if reads else []
    return Counter(values)


def _judge(chosen: Check, run: Replay, stop: Outcome | None, end: int,
           faulty: bool) -> _Failure | None:
    """The verdict, computed from the History (and how the learner's process ended)."""
    history = run.history
    if chosen.name == "zombie_fenced":
        for number, _fatal, after in run.fenced:
            if after:
                return _Failure("fenced-continued", detail=str(number))
    if stop is not None:
        return _Failure(stop.kind, detail=stop.detail)
    if run.errors and not faulty:
        return _Failure("error", detail=run.errors[0].error_type)
    offsets, aborted = _inputs(history)
    output = _output(history)
    lost = [v for v in run.report.lost if v in offsets]
    doubled = [v for v in run.report.duplicated if v in offsets]
    if not faulty and lost:
        return _Failure("clean-lost", lost[0], offsets[lost[0]])
    if not faulty and doubled:
        return _Failure("clean-duplicate", doubled[0], offsets[doubled[0]])
    if chosen.name == "no_duplicates" and doubled:
        return _Failure("duplicate", doubled[0], offsets[doubled[0]], str(output[doubled[0]]))
    if chosen.name == "no_loss":
        if lost:
            return _Failure("lost", lost[0], offsets[lost[0]])
        committed = committed_offset(history, GROUP, TOPIC_IN)
        if progress_due(run.history.events[run.installed_at:], end) and committed != end:
            return _Failure("progress", detail=f"{committed}/{end}")
    if chosen.name == "isolation":
        read = sorted((v for v in output if v in aborted), key=lambda v: _aborted_offset(
            history, v))
        if read:
            return _Failure("aborted-read", read[0], _aborted_offset(history, read[0]))
    return None


def _aborted_offset(history, value: bytes) -> int:
    return next((e.data["offset"] for e in history.of_kind("ack")
                 if e.data.get("topic") == TOPIC_IN and e.data["value"] == value), -1)


# ----- the driver (in the child) and the gate (here) ---------------------------------------------


_CONSUMER_API = frozenset({
    "assign", "assignment", "close", "commit", "committed", "consume",
    "consumer_group_metadata", "poll", "position", "seek", "subscribe",
})
_PRODUCER_API = frozenset({
    "abort_transaction", "begin_transaction", "commit_transaction", "flush",
    "init_transactions", "poll", "produce", "send_offsets_to_transaction",
})
_ALLOWED_AFTER_FATAL = {("producer", "abort_transaction"), ("consumer", "close")}


def _drive(fn: Callable, call: Callable) -> None:
    """The driver, in the child: send the answer's CONSUMER_ISOLATION, then run the loop.

    It reads the constant from the function's own globals (the notebook, or
    the answer program in the trusted pass), so the check needs only the
    function; the grader builds the consumer with it.
    """
    namespace = getattr(fn, "__globals__", None)
    isolation = namespace.get("CONSUMER_ISOLATION") if isinstance(namespace, dict) else None
    call("harness", "configure", (isolation,), {})
    fn(Proxy(call, "consumer", _CONSUMER_API,
             f"<Consumer group={GROUP!r} topic={TOPIC_IN!r}>"),
       Proxy(call, "producer", _PRODUCER_API,
             f"<Producer transactional.id={TRANSACTIONAL_ID!r}>"),
       Proxy(call, "transform", frozenset({"__call__"}), "<transform(msg)>"))


class _Gate:
    """Performs the learner's calls on the real clients and ``transform``; counts and logs them.

    It also notices the first fatal error the learner's code was given and
    the calls it made afterwards (the zombie check's verdict), and plays the
    plan's :class:`Stall` in app run 1.
    """

    def __init__(self, play: _Play, app, stall: Stall | None) -> None:
        self.play = play
        self.app = app
        self.history = play.history
        self.stall = stall
        self.consumer = None
        self.producer = None
        self.calls = 0
        self.counts: dict[str, int] = {}
        self.delivered: set = set()
        self.fatal: str | None = None
        self.after_fatal: list[str] = []
        self.woke = False
        self.log: list[tuple[int, int, str]] = []

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        """One call from the learner's code; raises what the real call raises."""
        self.calls += 1
        if self.calls > CALLS_MAX:
            raise TooManyCalls()
        if self.fatal is not None and (target, method) not in _ALLOWED_AFTER_FATAL \
                and target != "harness":
            self.after_fatal.append(_call_text(target, method, args, kwargs, None, None))
            if len(self.after_fatal) >= CALLS_AFTER_FATAL_MAX:
                raise TooManyCalls()
        try:
            result = self._perform(target, method, args, kwargs)
        except Crash:
            self._note(_call_text(target, method, args, kwargs, None, None, crashed=True),
                       before_last=True)
            raise
        except Exception as exc:
            text = _error_text(exc)
            self._note(_call_text(target, method, args, kwargs, None, text))
            if self.fatal is None and _is_fatal(exc):
                self.fatal = text
            raise
        if target != "harness":
            self._note(_call_text(target, method, args, kwargs, result, None))
        return result

    def _note(self, text: str, before_last: bool = False) -> None:
        self.log.append(call_entry(self.history.events, self.app.name, text, before_last))

    def _perform(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        if target == "harness" and method == "configure" and self.consumer is None:
            return self._configure(*args, **kwargs)
        if self.consumer is None:
            raise RuntimeError("the clients are not ready")
        if target == "transform" and method == "__call__":
            return self._transform(args, kwargs)
        api = {"consumer": _CONSUMER_API, "producer": _PRODUCER_API}.get(target)
        if api is None or method not in api:
            raise AttributeError(f"the {target} here has no method {method!r}")
        self.counts[f"{target}.{method}"] = self.counts.get(f"{target}.{method}", 0) + 1
        if (self.stall is not None and self.stall.kind == "timeout"
                and f"{target}.{method}" == self.stall.point
                and self.counts[self.stall.point] == self.stall.nth):
            self._pause_past_timeout()
        result = getattr(self.consumer if target == "consumer" else self.producer,
                         method)(*args, **kwargs)
        for item in result if isinstance(result, list) else (result,):
            if isinstance(item, Message):
                self.delivered.add(message_identity(item))
        return result

    def _configure(self, isolation: object = None) -> None:
        """Build the clients, the consumer with the answer's CONSUMER_ISOLATION."""
        if isolation is None:
            self.play.isolation_set = False
            isolation = KAFKA_DEFAULT_ISOLATION
        if isolation not in ISOLATION_LEVELS:
            raise ValueError(f"CONSUMER_ISOLATION must be 'read_committed' or "
                             f"'read_uncommitted', not {isolation!r}")
        self.play.isolation = isolation
        self.consumer = self.app.consumer(CONSUMER_CONFIG | {"isolation.level": isolation})
        self.producer = self.app.producer(PRODUCER_CONFIG)
        self.consumer.subscribe([TOPIC_IN])
        return None

    def _transform(self, args: tuple, kwargs: dict) -> list:
        """The application's work: one output record per input, written by your producer."""
        if len(args) != 1 or kwargs:
            raise TypeError("transform() takes exactly one argument: a message")
        message = args[0]
        if not isinstance(message, Message) or message_identity(message) not in self.delivered:
            raise TypeError("transform() takes a message that consumer.poll() returned "
                            "in this run of the app")
        self.app.check_alive("transform")
        self.app.hook("transform", "before")
        self.counts["transform"] = self.counts.get("transform", 0) + 1
        if (self.stall is not None and self.stall.kind == "zombie"
                and self.counts["transform"] == self.stall.nth):
            self._play_zombie()
        result = [(TOPIC_OUT, message.key(), message.value())]
        self.app.hook("transform", "after")
        return result

    def _play_zombie(self) -> None:
        """Stall here: the group session expires, a successor runs, then this run wakes up."""
        self.history.record("note", self.app.name,
                            text="stalls inside transform(); its group session expires "
                                 "and a new instance takes over")
        self.play.cluster.coordinator.leave(GROUP, self.consumer.name)
        self.play.run_until_done()
        self.history.record("note", self.app.name,
                            text="wakes up, a ZOMBIE: a newer instance with the same "
                                 "transactional.id has run since")
        self.woke = True

    def _pause_past_timeout(self) -> None:
        """Stall longer than transaction.timeout.ms: the coordinator aborts and fences."""
        self.history.record("note", self.app.name,
                            text=f"stalls for {TRANSACTION_TIMEOUT_MS + 1_000} ms with its "
                                 f"transaction open (longer than transaction.timeout.ms="
                                 f"{TRANSACTION_TIMEOUT_MS})")
        self.play.cluster.world.advance(TRANSACTION_TIMEOUT_MS + 1_000)


def _is_fatal(exc: Exception) -> bool:
    return (isinstance(exc, KafkaException) and bool(exc.args)
            and hasattr(exc.args[0], "fatal") and exc.args[0].fatal())


def _error_text(exc: Exception) -> str:
    if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "name"):
        error = exc.args[0]
        kind = ("fatal" if error.fatal() else
                "abortable" if error.txn_requires_abort() else
                "retriable" if error.retriable() else "")
        return f"KafkaException({error.name()}{', ' + kind if kind else ''})"
    return type(exc).__name__


def _call_text(target: str, method: str, args: tuple, kwargs: dict, result: object,
               error: str | None, crashed: bool = False) -> str:
    """``producer.commit_transaction() returned``, ``consumer.poll(1.0) -> m-001 (offset 2)``."""
    shown = [arg_text(a) for a in args] + [f"{k}={arg_text(v)}" for k, v in kwargs.items()]
    head = (f"transform({', '.join(shown)})" if target == "transform"
            else f"{target}.{method}({', '.join(shown)})")
    if crashed:
        return f"{head} never returned: the process died in it"
    if error is not None:
        return f"{head} raised {error}"
    if result is None and method not in ("poll", "__call__"):
        return f"{head} returned"
    return f"{head} -> {arg_text(result)}"


# ----- explaining a failure -------------------------------------------------------------------


def _token(run: Replay) -> str:
    """check, seed, message count, plan, stall and function name, as one short string."""
    stall = [run.stall.kind, run.stall.nth] if run.stall is not None else None
    return encode_token({"c": run.check, "f": run.function, "m": run.messages,
                         "p": json.loads(run.plan.to_json()), "s": run.seed, "z": stall})


def _plan_text(plan: FaultPlan, stall: Stall | None) -> str:
    return repr(plan) + (f" + {stall!r}" if stall is not None else "")


def _plain(fault) -> str:
    """One fault, as a sentence a learner reads."""
    if isinstance(fault, Stall):
        if fault.kind == "zombie":
            return (f"your app stalled inside its {ordinal(fault.nth)} call of transform(msg) "
                    f"(a long pause); its group session expired and a new instance with the "
                    f"same transactional.id took over and ran to the end; then the stalled "
                    f"one woke up (a ZOMBIE)")
        return (f"your app stalled just before its {ordinal(fault.nth)} call of "
                f"send_offsets_to_transaction(), longer than transaction.timeout.ms="
                f"{TRANSACTION_TIMEOUT_MS}: the coordinator aborted the transaction and "
                f"fenced the producer")
    if isinstance(fault, DropMessages):
        what = ("requests" if fault.kind == "request" else "broker answers to requests")
        text = f"the network lost produce {what} {drop_numbers(fault)}"
        if fault.count >= DROPS_TO_ABORT:
            text += (f" (the producer retried until delivery.timeout.ms={DELIVERY_TIMEOUT_MS} "
                     f"ran out: the transaction can no longer commit, an abortable error)")
        else:
            text += " (the producer retried; idempotence drops a repeated write)"
        return text
    return describe_fault(fault)


_STORY = ("commit", "crash", "fault", "note", "broker_crash", "broker_restart", "txn_end",
          "txn_init")


def _line(event) -> str:
    data, kind = event.data, event.kind
    if kind == "commit":
        what = f"offsets committed for the group: next offset {data.get('offset')}"
        if event.actor == TRANSACTIONAL_ID:
            what += " (with the transaction)"
    elif kind == "crash":
        what = grader_crash(data, _plain, CRASHED)
    elif kind == "fault" and len(str(data.get("message", "")).split(" ")) == 3:
        direction, api, route = str(data["message"]).split(" ")
        what = f"FAULT: the network lost a {api} {direction} ({route})"
    elif kind == "fault":
        what = f"FAULT: {data.get('fault')}"
    elif kind == "note":
        what = str(data.get("text"))
    elif kind == "txn_end":
        outcome = "COMMITTED" if data.get("outcome") == "commit" else "ABORTED"
        what = f"transaction {data.get('txn')} {outcome} ({data.get('reason')})"
    elif kind == "txn_init":
        what = f"init_transactions: producer epoch is now {data.get('epoch')}"
    elif kind == "broker_crash":
        what = "crashes"
    else:
        what = "starts again"
    return at(event.time_ms, event.actor, what)


def _entries(run: Replay) -> list[tuple[int, int, bool, str]]:
    """History events and the learner's calls, in order: (position, tie, is a fault, line)."""
    entries = []
    for index, event in enumerate(run.history.events):
        if index < run.installed_at or event.kind not in _STORY:
            continue
        if event.kind == "txn_init" and event.data.get("transactional_id") != TRANSACTIONAL_ID:
            continue
        fault = event.kind in ("crash", "fault") or (
            event.kind == "note" and "stalls" in str(event.data.get("text")))
        entries.append((index + 1, 0, fault, _line(event)))
    return merge(entries, run.calls)


def _story(run: Replay, before: int = 8, after: int = 5) -> list[str]:
    """The learner's calls and what they caused, around the first fault (or at the end)."""
    entries = _entries(run)
    kind = run.failure.kind
    if kind == "fenced-continued":
        anchor = next((i for i, e in enumerate(entries) if "fatal)" in e[3]), None)
    elif kind == "aborted-read":
        polled = f"-> {value_text(run.failure.value)} (offset"
        anchor = next((i for i, e in enumerate(entries) if polled in e[3]), None)
    else:
        anchor = next((i for i, entry in enumerate(entries) if entry[2]), None)
    tail = kind in ("progress", "clean-lost", "clean-duplicate")
    return [entry[3] for entry in window(entries, anchor, before, after, tail)]


def _restart_commit(run: Replay) -> int | None:
    """The committed offset when the app first started again after a fault."""
    restart = first_restart(run.history.events, run.installed_at, _started_again)
    return committed_offset(run.history, GROUP, TOPIC_IN, restart) if restart is not None else None


def _started_again(event) -> bool:
    """A restart note (not a stall's): the app starting again as a fresh process."""
    return event.kind == "note" and "starts again" in str(event.data.get("text"))


def _aborted_in_plan(run: Replay) -> bool:
    return any(isinstance(f, DropMessages) and f.count >= DROPS_TO_ABORT for f in run.plan.faults)


def _why(run: Replay) -> list[str]:
    failure, fn = run.failure, run.function
    value, offset = value_text(failure.value), failure.offset
    restart = _restart_commit(run)
    if failure.kind == "duplicate":
        if restart is not None and offset is not None and restart == offset:
            return [f"When the app restarted, the group's committed offset was {offset}, the "
                    f"offset of {value} itself, so the new instance transformed it again. The "
                    f"offset to commit is the NEXT one to read, what consumer.position(...) "
                    f"returns, not msg.offset()."]
        shown = "not set (nothing committed yet)" if restart is None else restart
        return [f"When the app restarted, the group's committed offset was {shown}, not past "
                f"{value} (offset {offset}), although its output had been committed, so the "
                f"new instance transformed it again. The output and the input offset must "
                f"commit in ONE transaction: send_offsets_to_transaction(consumer.position(...),"
                f" consumer.consumer_group_metadata()) before commit_transaction(), not "
                f"consumer.commit() beside it."]
    if failure.kind == "lost":
        if _aborted_in_plan(run):
            return [f"A transaction failed with an abortable error and was aborted, so its "
                    f"output was thrown away, but your consumer had already moved past "
                    f"{value}. After abort_transaction(), seek the consumer back to its "
                    f"committed offsets (consumer.committed(consumer.assignment())), so the "
                    f"next poll() returns {value} again."]
        if restart is not None and offset is not None and restart > offset:
            return [f"When the app restarted, the group's committed offset was already "
                    f"{restart}, past {value} (offset {offset}), but its output was never "
                    f"committed. Commit the offsets only inside the transaction that holds "
                    f"the output (send_offsets_to_transaction)."]
        return [f"No run of the app committed an output for {value}."]
    if failure.kind == "progress":
        committed, end = failure.detail.split("/")
        if committed == "None":
            return ["The group never committed an offset, so a restarted app would start over. "
                    "Send the consumer's positions with send_offsets_to_transaction() in each "
                    "transaction."]
        if int(committed) == int(end) - 1:
            return [f"The committed offset is {committed}, the offset of the last message "
                    f"itself. The offset to commit is the NEXT one to read: "
                    f"consumer.position(consumer.assignment()) gives it, msg.offset() does not."]
        return [f"The committed offset stopped at {committed}."]
    if failure.kind == "aborted-read":
        head = (f"Your consumer read with isolation.level={run.isolation!r}" if run.isolation_set
                else "CONSUMER_ISOLATION was not set, so your consumer used Kafka's default, "
                     "isolation.level='read_uncommitted'")
        return [f"{head}: it also returns records of transactions that ABORTED, which never "
                f"logically happened. Set CONSUMER_ISOLATION = \"read_committed\"."]
    if failure.kind == "fenced-continued":
        number = int(failure.detail)
        _number, fatal, after = next(f for f in run.fenced if f[0] == number)
        lines = [f"A fatal error (its fatal() is True) means this producer can never be used "
                 f"again: a newer instance with the same transactional.id owns it now. Stop by "
                 f"raising the error (only abort_transaction() may still be tried); {fn}() "
                 f"must not go on polling or producing."]
        return lines + [f"It was told: {fatal}. Then it called:"] + [
            f"    {text}" for text in after[:4]]
    if failure.kind == "error" and "state" in (run.errors[0].detail or "").lower():
        return ["Call producer.init_transactions() exactly once, when your function starts; "
                "then begin_transaction() before each message and commit_transaction() (or "
                "abort_transaction()) after it."]
    return []


def _headline(run: Replay, limit_s: float) -> str:
    failure, fn = run.failure, run.function
    value, offset = value_text(failure.value), failure.offset
    if failure.kind == "duplicate":
        return (f"the output of input {value} (offset {offset}) was committed "
                f"{failure.detail} times to {TOPIC_OUT!r} (a DUPLICATE).")
    if failure.kind == "lost":
        return (f"input {value} (offset {offset}) was LOST: its output is not in the "
                f"committed output ({TOPIC_OUT!r}, read with read_committed).")
    if failure.kind == "progress":
        committed, end = failure.detail.split("/")
        shown = "never set" if committed == "None" else committed
        return (f"no PROGRESS: every output was committed, but the group's committed offset "
                f"is {shown} instead of the log end, {end}.")
    if failure.kind == "aborted-read":
        return (f"{value} is in the committed output ({TOPIC_OUT!r}), but that input (offset "
                f"{offset}) belongs to an upstream transaction that ABORTED (an aborted read).")
    if failure.kind == "fenced-continued":
        return (f"app run {failure.detail} was FENCED (a fatal error) and kept going instead "
                f"of stopping.")
    if failure.kind == "clean-lost":
        return f"on a run with NO faults, input {value} (offset {offset}) got no output."
    if failure.kind == "clean-duplicate":
        return f"on a run with NO faults, input {value} (offset {offset}) got two outputs."
    if failure.kind == "error":
        error = run.errors[0]
        detail = f": {error.detail}" if error.detail else ""
        return f"on a run with NO faults, {fn}() raised {error.error_type}{detail}\n{error.where}"
    return abort_headline(failure.kind, _abort_words(fn), failure.detail, limit_s)


def _abort_words(fn: str) -> AbortWords:
    """ps4's words for an abort: an app that restarts, so an abort is a crash."""
    return AbortWords(f"{fn}()", calls=(f"{fn}() made more than {CALLS_MAX} calls in one run "
                                        f"of the app without returning. Does your loop stop "
                                        f"when poll() returns None?"))


def _explain(run: Replay, limit_s: float) -> str:
    """The failure message: what, which fault (the stall too), why, the calls, how to replay."""
    faults = list(run.plan.faults) + ([run.stall] if run.stall is not None else [])
    return failure_message(
        run.check, CHECKS[run.check].guarantee, _headline(run, limit_s),
        faults=[_plain(fault) for fault in faults], why=_why(run), errors=run.errors,
        kind=run.failure.kind, story=lambda: _story(run),
        plan=_plan_text(run.plan, run.stall), seed=run.seed, token=_token(run))
