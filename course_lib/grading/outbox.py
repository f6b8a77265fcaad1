"""The ps3 autograder: the transactional outbox and the inbox, attacked with real kills.

Three checks, one per function of the assignment (DESIGN §6, "ps3"):

- ``check_place_order(place_order)``: each order row and its outbox row are
  written in one database transaction, so after any crash an order exists
  if and only if its outbox row does;
- ``check_relay_once(relay_once)``: every outbox row is published (at least
  once) in ``id`` order, and never marked sent before Kafka acknowledged it;
- ``check_handle_payment(handle_payment)``: each payment's effect is applied
  exactly once although the harness redelivers a message whose offset it had
  not committed when the process died.

**A real database and a real kill.** ``db`` is a ``sqlite3.Connection`` that the
driver opens *in the child process* on an SQLite file the grader created in a
temporary directory. The driver installs ``db.set_trace_callback``, which
reports every statement (``BEGIN``, each ``INSERT``/``UPDATE``, ``COMMIT``)
to the grader before SQLite runs it. When the fault plan says "crash here" the
child kills itself with SIGKILL on the spot, in the middle of its transaction,
and SQLite's own atomicity decides what the file holds afterwards: nothing is
simulated on the database side. A crash inside a Kafka call (produce, poll,
flush, the harness's poll and commit) kills the child the same way, before it
can run one more statement, so every verdict is deterministic. After every app
run the grader reads the file, and the verdict comes from that file and from
the History of the simulated cluster, never from what the learner's code
returned or printed.

**Delivery callbacks** cannot cross the wire, so the relay receives a small
trusted producer (:class:`_RelayProducer`) that keeps the callbacks in the
child and calls them with ``(err, msg)`` when ``poll()`` or ``flush()``
brings the grader's delivery reports back, as confluent-kafka does (never from
inside ``produce()``). The grader's real Producer uses short timeouts
(``delivery.timeout.ms`` 3 s) so that "three lost produce requests" is a record
that fails for good with ``_MSG_TIMED_OUT``.

Each check plays a clean run, then every single fault of that run (a crash
before every SQL statement, before and after every Kafka call; for the relay
also a failed delivery and a lost acknowledgement at every produce request),
then seeded random plans; the first failing plan is shrunk and explained with
a ``course_lib.replay("…")`` line. Replays always run isolated: the checks kill
real processes, which must never be the notebook's kernel.

Limits: a learner's code that turns the statement trace off
(``db.set_trace_callback(None)``) is no longer crashed between statements; no
honest answer does that. The database verdicts trust the file, which the
learner's process writes: that is what an outbox is.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from itertools import pairwise
from pathlib import Path

from confluent_kafka import KafkaError, Message

from course_lib.cluster import Cluster
from course_lib.faults import Crash, CrashClient, DropMessages, FaultPlan, KillBroker, RestartBroker
from course_lib.grading.campaign import (
    Campaign,
    Check,
    Played,
    abort_point,
    committed_offset,
    hunt,
    raise_failure,
    record_crash,
    require_callable,
    timeline_svg,
)
from course_lib.grading.explanation import (
    AbortWords,
    abort_headline,
    at,
    crash_sentence,
    drop_numbers,
    failure_message,
    grader_crash,
    logged_at,
    merge,
    ordinal,
    window,
)
from course_lib.grading.sandbox import (
    ABORTS,
    Limits,
    Outcome,
    Sandbox,
    TooManyCalls,
    encode_token,
    notebook_function,
)
from course_lib.outbox import open_database

__all__ = [
    "CHECKS",
    "Campaign",
    "Replay",
    "check_handle_payment",
    "check_place_order",
    "check_relay_once",
    "replay_data",
]

ORDERS_TOPIC = "orders"
PAYMENTS_TOPIC = "payments"
GROUP = "payments-app"
BROKERS = 3
PRODUCER_CONFIG = {"delivery.timeout.ms": 3_000, "request.timeout.ms": 1_000}
CONSUMER_CONFIG = {"group.id": GROUP, "auto.offset.reset": "earliest",
                   "enable.auto.commit": False}
DROPPED_TO_FAIL = 3  # lost produce requests that exhaust delivery.timeout.ms above
RANDOM_PLANS = 12
TIME_LIMIT_S = 10.0  # wall clock for one plan, restarts included
CALLS_MAX = 600  # statements and client calls per app run
COUNT_MAX = 12  # orders, rows or payments per check: keeps a right answer under CALLS_MAX
RUNS_MAX = 8  # app runs (first start + restarts) per plan
RELAY_CALLS_PER_RUN = 4  # relay_once calls one app run makes while rows are unsent
RERUN_DELAY_MS = 1_000
STATEMENT_SHOWN = 90  # characters of an SQL statement in a failure message


@dataclass(frozen=True)
class _Check(Check):
    function: str  # the learner's function the check grades
    items: str  # what the count counts


CHECKS = {
    "place_order": _Check("place_order", "an order exists if and only if its outbox row exists",
                          function="place_order", items="orders"),
    "relay_once": _Check("relay_once", "every outbox row published, in id order, marked sent "
                         "only after its ack", function="relay_once", items="rows"),
    "handle_payment": _Check("handle_payment", "each payment applied exactly once",
                             function="handle_payment", items="payments"),
}


@dataclass(frozen=True)
class _Failure:
    kind: str
    subject: str = ""  # the order id, row id or event id the failure is about
    detail: str = ""


@dataclass
class Replay(Played):
    """One played plan: the cluster, the database as the grader read it, and the verdict."""

    check: str
    seed: int
    count: int
    plan: FaultPlan
    cluster: Cluster
    tables: dict
    function: str
    failure: _Failure | None = None
    message: str | None = None
    errors: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # (history index, time ms, text)
    installed_at: int = 0

    @property
    def history(self):
        """The History of the simulated cluster during this run."""
        return self.cluster.history

    def __repr__(self) -> str:
        return f"<Replay check_{self.check} seed={self.seed} {self.verdict}; plan {self.plan!r}>"

    def _repr_svg_(self) -> str | None:
        """The cluster's side of this run as a timeline (the database is in ``tables``)."""
        return timeline_svg(self.history, f"replay of check_{self.check}: {self.plan!r}")


@dataclass
class _Stage:
    """What one plan starts from and what it expects: shared by all its app runs."""

    path: Path
    orders: list = field(default_factory=list)  # place_order: the orders to place
    cursor: int = 0  # place_order: orders handed to the app so far
    rows: list = field(default_factory=list)  # relay: (id, event_id, topic, key, payload)
    payments: list = field(default_factory=list)  # handle_payment: (event_id, order, cents)
    end: int = 0  # handle_payment: the log end of the payments topic
    early: _Failure | None = None  # relay: the first row seen marked sent without an ack


# ----- public API -----------------------------------------------------------------------------


def check_place_order(place_order: Callable, *, seed: int = 0, orders: int = 3,
                      random_plans: int = RANDOM_PLANS,
                      time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade ``place_order(db, order)``: after any crash, no order without its outbox row.

    The process is killed before every SQL statement it runs (mid-transaction
    too), then restarted with the next order. Raises :class:`CheckFailed`
    naming the order, the fault and a replay call.
    """
    return _campaign(CHECKS["place_order"], place_order, seed, orders, random_plans,
                     time_limit_s)


def check_relay_once(relay_once: Callable, *, seed: int = 0, rows: int = 4,
                     random_plans: int = RANDOM_PLANS,
                     time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade ``relay_once(db, producer)``: every row published in id order, marked after its ack.

    Faults: a kill before every statement and before/after every producer
    call, failed deliveries, lost acknowledgements, broker crashes.
    """
    return _campaign(CHECKS["relay_once"], relay_once, seed, rows, random_plans,
                     time_limit_s)


def check_handle_payment(handle_payment: Callable, *, seed: int = 0, payments: int = 3,
                         random_plans: int = RANDOM_PLANS,
                         time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade ``handle_payment(db, message)``: each payment's effect exactly once.

    The harness commits the consumer offset only after the function returned,
    so a kill before that redelivers the message to the restarted process.
    """
    return _campaign(CHECKS["handle_payment"], handle_payment, seed, payments, random_plans,
                     time_limit_s)


def replay_data(data: dict, fn: Callable | None = None, *, isolated: bool = True,
                time_limit_s: float = TIME_LIMIT_S) -> Replay:
    """Play the plan a failure message's token named again, in fresh child processes.

    ``fn`` defaults to the function of that name in the notebook. The outbox
    checks kill real processes, so ``isolated=False`` is refused: it would kill
    the notebook's own kernel.
    """
    if not isolated:
        raise ValueError("the outbox checks kill the process that runs your code, so a "
                         "replay always runs it in a child process (isolated=True)")
    chosen = CHECKS[data["c"]]
    plan = FaultPlan.from_json(json.dumps(data["p"]))
    fn = notebook_function(data["f"]) if fn is None else fn
    with tempfile.TemporaryDirectory(prefix="ps3-") as tmp, \
            Sandbox(fn, Limits(time_limit_s), _DRIVERS[chosen.name]) as sandbox:
        run = _play(chosen, data["s"], data["n"], plan, sandbox, time_limit_s, data["f"],
                    Path(tmp))
    if run.failure is not None:
        run.message = _explain(run, time_limit_s)
    return run


# ----- the campaign ---------------------------------------------------------------------------


def _campaign(chosen: _Check, fn: Callable, seed: int, count: int, random_plans: int,
              time_limit_s: float) -> Campaign:
    require_callable(chosen.name, fn)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= COUNT_MAX:
        raise ValueError(f"{chosen.items} must be an int from 1 to {COUNT_MAX}, not {count!r}")
    name = getattr(fn, "__name__", chosen.function)
    with tempfile.TemporaryDirectory(prefix="ps3-") as tmp, \
            Sandbox(fn, Limits(time_limit_s), _DRIVERS[chosen.name]) as sandbox:

        def play(plan: FaultPlan) -> Replay:
            return _play(chosen, seed, count, plan, sandbox, time_limit_s, name, Path(tmp))

        failing, runs = hunt(play, lambda clean: [
            (plan,) for plan in _plans(chosen, seed, clean, random_plans)])
    if failing is None:
        return Campaign(chosen.name, seed, runs)
    raise_failure(failing, _explain(failing, time_limit_s), _token(failing),
                  failing.failure.kind == "error"
                  and failing.errors[0].error_type == "NotImplementedError")


def _crash_points(clean: Replay) -> list[tuple[str, int]]:
    """The clean run's calls where a kill means something for this check."""
    trace = clean.cluster.faults.call_trace()
    return [(point, nth) for point, nth in trace
            if point == "sql" or point.startswith(("producer.", "consumer.poll",
                                                   "consumer.commit"))]


def _plans(chosen: _Check, seed: int, clean: Replay, count: int) -> list[FaultPlan]:
    """Every single fault of the clean run, then seeded random plans."""
    points = _crash_points(clean)
    plans = [FaultPlan((CrashClient(point, phase, nth),)) for point, nth in points
             for phase in (("before",) if point == "sql" else ("before", "after"))]
    if chosen.name == "relay_once":
        requests = sum(1 for e in clean.history.events[clean.installed_at:]
                       if e.kind == "attempt")
        for skip in range(requests):
            plans.append(FaultPlan((DropMessages("produce", "request", DROPPED_TO_FAIL,
                                                 skip),)))
            plans.append(FaultPlan((DropMessages("produce", "response", 1, skip),)))
    seen = {plan.to_json() for plan in plans}
    for index in range(count):
        plan = _random_plan(chosen, seed, index, points, clean)
        if plan.faults and plan.to_json() not in seen:
            seen.add(plan.to_json())
            plans.append(plan)
    return plans


def _random_plan(chosen: _Check, seed: int, index: int, points: list, clean: Replay) -> FaultPlan:
    """A seeded mix of kills (and, for the relay, failed deliveries and broker crashes)."""
    rng = random.Random(f"grading/outbox/{chosen.name}/{seed}/{index}")
    requests = max(1, sum(1 for e in clean.history.events[clean.installed_at:]
                          if e.kind == "attempt"))
    faults: list = []
    if not points:
        return FaultPlan()
    for _ in range(rng.randint(2, 3)):
        roll = rng.random()
        if roll < 0.6 or chosen.name != "relay_once":
            point, nth = rng.choice(points)
            phase = "before" if point == "sql" else rng.choice(("before", "after"))
            faults.append(CrashClient(point, phase, nth))
        elif roll < 0.75:
            faults.append(DropMessages("produce", "request", DROPPED_TO_FAIL,
                                       rng.randrange(requests)))
        elif roll < 0.9:
            faults.append(DropMessages("produce", "response", 1, rng.randrange(requests)))
        else:
            at_ms = clean.history.events[clean.installed_at].time_ms + rng.randint(0, 2_000)
            faults.append(KillBroker("leader", at_ms=at_ms, topic=ORDERS_TOPIC))
            faults.append(RestartBroker(rng.randrange(BROKERS), at_ms=at_ms + 1_500))
    return FaultPlan(tuple(faults))


# ----- one plan: stage, run the app until done, judge -----------------------------------------


def _orders(seed: int, count: int) -> list[dict]:
    rng = random.Random(f"grading/outbox/orders/{seed}")
    customers = ("ada", "grace", "edsger", "barbara", "ken", "leslie")
    return [{"id": f"o-{n:03d}", "customer": rng.choice(customers),
             "amount_cents": rng.randrange(500, 20_000, 5)} for n in range(1, count + 1)]


def _event(order: dict) -> tuple[str, str]:
    event_id = f"order-{order['id']}"
    return event_id, json.dumps({"event_id": event_id, "order_id": order["id"],
                                 "customer": order["customer"],
                                 "amount_cents": order["amount_cents"]}, sort_keys=True)


def _stage(chosen: _Check, cluster: Cluster, tmp: Path, seed: int, count: int) -> _Stage:
    """The database file (a fresh copy of the campaign's template) and topic a plan starts from."""
    path, template = tmp / "shop.db", tmp / "template.db"
    orders = _orders(seed, count)
    if not template.exists():
        _build_template(chosen, template, orders)
    for leftover in tmp.glob("shop.db*"):
        leftover.unlink()
    shutil.copyfile(template, path)
    stage = _Stage(path)
    if chosen.name == "place_order":
        stage.orders = orders
    elif chosen.name == "relay_once":
        cluster.create_topic(ORDERS_TOPIC, {"num.partitions": 1})
        stage.rows = _read(path, "SELECT id, event_id, topic, key, payload FROM outbox "
                                 "ORDER BY id")
    else:
        cluster.create_topic(PAYMENTS_TOPIC, {"num.partitions": 1})
        producer = cluster.producer()
        for n, order in enumerate(orders, 1):
            event = (f"pay-{n:03d}", order["id"], order["amount_cents"])
            stage.payments.append(event)
            producer.produce(PAYMENTS_TOPIC, json.dumps(
                {"event_id": event[0], "order_id": event[1], "amount_cents": event[2]}),
                key=order["id"])
        producer.flush()
        cluster.settle(1_000)
        stage.end = len(stage.payments)
    return stage


def _build_template(chosen: _Check, template: Path, orders: list[dict]) -> None:
    """The course schema (and, for the relay, committed unsent rows), once per campaign."""
    db = open_database(template)
    try:
        if chosen.name == "relay_once":
            with db:
                for order in orders:
                    event_id, payload = _event(order)
                    db.execute("INSERT INTO orders VALUES (?, ?, ?)",
                               (order["id"], order["customer"], order["amount_cents"]))
                    db.execute("INSERT INTO outbox (event_id, topic, key, payload) "
                               "VALUES (?, ?, ?, ?)", (event_id, ORDERS_TOPIC, order["id"],
                                                       payload))
    finally:
        db.close()  # the last connection: SQLite folds the WAL into the file


def _play(chosen: _Check, seed: int, count: int, plan: FaultPlan, sandbox: Sandbox,
          time_limit_s: float, function: str, tmp: Path) -> Replay:
    """Stage a fresh cluster and database, install ``plan``, run the app until done."""
    cluster = Cluster(brokers=BROKERS, seed=seed)
    stage = _stage(chosen, cluster, tmp, seed, count)
    history = cluster.history
    installed_at = len(history)
    cluster.install_faults(plan)
    deadline = time.monotonic() + time_limit_s
    stop, errors, calls = None, [], []
    for number in range(1, RUNS_MAX + 1):
        app = cluster.process(f"{chosen.function}-app")
        history.record("note", app.name, text="starts (app run 1)" if number == 1 else
                       f"starts again (app run {number}): a fresh process, the same database")
        gate = _Gate(chosen, app, stage)
        if not gate.open():
            continue  # the plan killed it while the harness set up its client
        outcome = sandbox.run(gate, deadline)
        calls.extend(gate.log)
        if chosen.name == "relay_once" and stage.early is None:
            stage.early = _marked_without_ack(stage, history)
        if outcome.kind in ABORTS:
            record_crash(cluster, app, abort_point(outcome.kind, "the grader"), number)
            stop = outcome
            break
        if not app.alive:
            continue
        if outcome.kind == "raised":
            record_crash(cluster, app, f"uncaught {outcome.error_type}", number)
            errors.append(outcome)
            if not plan.faults:
                break
            continue
        gate.close()
        if _done(chosen, stage, history):
            break
        cluster.world.advance(RERUN_DELAY_MS)
    run = Replay(chosen.name, seed, count, plan, cluster, _tables(stage.path), function,
                 errors=errors, calls=calls, installed_at=installed_at)
    run.failure = _judge(chosen, run, stage, stop)
    return run


def _done(chosen: _Check, stage: _Stage, history) -> bool:
    if chosen.name == "place_order":
        return stage.cursor >= len(stage.orders)
    if chosen.name == "relay_once":
        return not _unsent(stage.path)
    return (committed_offset(history, GROUP, PAYMENTS_TOPIC) or 0) >= stage.end


def _read(path: Path, sql: str) -> list:
    db = sqlite3.connect(path)
    try:
        db.execute("PRAGMA synchronous=OFF")  # closing checkpoints the WAL: no fsync needed
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _unsent(path: Path) -> int:
    try:
        return _read(path, "SELECT count(*) FROM outbox WHERE sent = 0")[0][0]
    except sqlite3.Error:
        return 0


def _tables(path: Path) -> dict:
    """The database file as the grader reads it after the plan (or why it cannot)."""
    try:
        return {
            "orders": _read(path, "SELECT id, customer, amount_cents FROM orders ORDER BY id"),
            "outbox": _read(path, "SELECT id, event_id, topic, key, payload, sent FROM outbox "
                                  "ORDER BY id"),
            "payments": _read(path, "SELECT event_id, order_id, amount_cents FROM payments "
                                    "ORDER BY rowid"),
            "inbox": _read(path, "SELECT event_id FROM inbox ORDER BY event_id"),
        }
    except sqlite3.Error as error:
        return {"error": str(error)}


def _acked(history) -> set:
    return {e.data["value"] for e in history.of_kind("ack")
            if e.data.get("topic") == ORDERS_TOPIC}


def _marked_without_ack(stage: _Stage, history) -> _Failure | None:
    """After an app run: a row marked sent whose publication Kafka never acknowledged."""
    try:
        sent = _read(stage.path, "SELECT id, payload FROM outbox WHERE sent != 0 ORDER BY id")
    except sqlite3.Error:
        return None
    acked = _acked(history)
    for row_id, payload in sent:
        if str(payload).encode() not in acked:
            return _Failure("marked-early", str(row_id))
    return None


# ----- the verdicts ---------------------------------------------------------------------------


def _judge(chosen: _Check, run: Replay, stage: _Stage, stop: Outcome | None) -> _Failure | None:
    if stop is not None:
        return _Failure(stop.kind, detail=stop.detail)
    if run.errors and not run.plan.faults:
        return _Failure("error", detail=run.errors[0].error_type)
    if "error" in run.tables:
        return _Failure("database", detail=run.tables["error"])
    judge = {"place_order": _judge_orders, "relay_once": _judge_relay,
             "handle_payment": _judge_payments}[chosen.name]
    return judge(run, stage)


def _judge_orders(run: Replay, stage: _Stage) -> _Failure | None:
    orders = {row[0]: row for row in run.tables["orders"]}
    events: dict = {}
    for row in run.tables["outbox"]:
        events.setdefault(row[3], []).append(row)
    clean = not run.plan.faults
    for order in stage.orders[:stage.cursor]:
        oid = order["id"]
        if oid in orders and oid not in events:
            return _Failure("clean-no-event" if clean else "order-only", oid)
        if oid in events and oid not in orders:
            return _Failure("event-only", oid)
        if clean and oid not in orders:
            return _Failure("clean-missing", oid)
        if clean:
            problem = _bad_event(order, events[oid])
            if problem:
                return _Failure("clean-bad-row", oid, problem)
    return None


def _bad_event(order: dict, rows: list) -> str:
    """What is wrong with an order's outbox row(s) after a clean run ('' if nothing)."""
    if len(rows) != 1:
        return f"it has {len(rows)} outbox rows instead of one"
    _id, event_id, topic, _key, payload, sent = rows[0]
    if topic != ORDERS_TOPIC:
        return f"its outbox row's topic is {topic!r}, not {ORDERS_TOPIC!r}"
    if sent:
        return "its outbox row is already marked sent, but only the relay may do that"
    try:
        body = json.loads(payload)
    except (TypeError, ValueError):
        return f"its outbox row's payload is not JSON: {str(payload)[:60]!r}"
    if not isinstance(body, dict) or body.get("event_id") != event_id \
            or body.get("order_id") != order["id"]:
        return (f"its payload must be JSON with \"event_id\": {event_id!r} and \"order_id\": "
                f"{order['id']!r}; it is {str(payload)[:80]}")
    return ""


def _published(run: Replay) -> list[bytes]:
    """The values of the orders topic's log up to the high watermark, in offset order."""
    values = run.cluster.readable(ORDERS_TOPIC, 0)
    return list(values or [])


def _judge_relay(run: Replay, stage: _Stage) -> _Failure | None:
    if stage.early is not None:
        return stage.early
    by_value = {str(row[4]).encode(): row[0] for row in stage.rows}
    log = _published(run)
    firsts: list[int] = []
    for value in log:
        row_id = by_value.get(value)
        if row_id is not None and row_id not in firsts:
            firsts.append(row_id)
    for row in stage.rows:
        if row[0] not in firsts:
            return _Failure("lost", str(row[0]))
    for earlier, later in pairwise(firsts):
        if later < earlier:
            return _Failure("reordered", str(later), str(earlier))
    unsent = [row[0] for row in run.tables["outbox"] if not row[5]]
    if unsent:
        return _Failure("progress", str(unsent[0]))
    return None


def _judge_payments(run: Replay, stage: _Stage) -> _Failure | None:
    counts: dict = {}
    for event_id, *_rest in run.tables["payments"]:
        counts[event_id] = counts.get(event_id, 0) + 1
    clean = not run.plan.faults
    for event in stage.payments:
        if counts.get(event[0], 0) > 1:
            return _Failure("duplicate", event[0], str(counts[event[0]]))
    committed = committed_offset(run.history, GROUP, PAYMENTS_TOPIC) or 0
    for offset, event in enumerate(stage.payments):
        if counts.get(event[0], 0) == 0 and committed > offset:
            return _Failure("lost", event[0])
    if committed < stage.end:
        return _Failure("stuck", stage.payments[committed][0])
    if clean and sorted(run.tables["payments"]) != sorted(stage.payments):
        return _Failure("clean-wrong", detail=repr(run.tables["payments"][:4]))
    return None


# ----- the gate: the grader's side of every call ----------------------------------------------


class _Gate:
    """Performs the child's calls: statements, the harness, the producer; logs them.

    Every statement and client call passes through the app's crash guard, so
    the fault plan can kill the process there; the log feeds the failure
    message only, never the verdict.
    """

    def __init__(self, chosen: _Check, app, stage: _Stage) -> None:
        self.chosen = chosen
        self.app = app
        self.stage = stage
        self.history = app.cluster.history
        self.calls = 0
        self.relay_calls = 0
        self.client = None
        self.last: Message | None = None
        self.reports: list = []
        self.log: list[tuple[int, int, str]] = []

    def open(self) -> bool:
        """Create this app run's client (producer, or subscribed consumer)."""
        try:
            if self.chosen.name == "relay_once":
                self.client = self.app.producer(PRODUCER_CONFIG)
            elif self.chosen.name == "handle_payment":
                self.client = self.app.consumer(CONSUMER_CONFIG)
                self.client.subscribe([PAYMENTS_TOPIC])
        except Crash:
            return False
        return True

    def close(self) -> None:
        """The app returned: its process ends (a producer's unsent records die with it)."""
        try:
            if self.chosen.name == "handle_payment":
                self.client.close()
        except Crash:
            pass
        self.app.die()

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        """One request from the child; raises what the learner's code should see."""
        self.calls += 1
        if self.calls > CALLS_MAX:
            raise TooManyCalls()
        if (target, method) not in _OFFERED[self.chosen.name]:
            raise AttributeError(f"the {target} here has no method {method!r}")
        return getattr(self, f"_{target}_{method}")(*args, **kwargs)

    def _note(self, text: str, before_crash: bool = False) -> None:
        index = logged_at(self.history.events, before_crash)
        self.log.append((index, self.app.cluster.world.now_ms, f"{self.app.name}: {text}"))

    def _guarded(self, point: str, text: str, action: Callable, describe: Callable) -> object:
        """Run ``action`` (which passes the client's crash guard of ``point``); log it."""
        try:
            result = action()
        except Crash:
            self._note(f"{text} never {'ran' if point == 'sql' else 'returned'}: the process "
                       f"was killed {'before it' if point == 'sql' else 'in it'}",
                       before_crash=True)
            raise
        except Exception as exc:
            self._note(f"{text} raised {type(exc).__name__}")
            raise
        self._note(describe(result))
        return result

    # harness and database

    def _harness_database(self) -> str:
        return str(self.stage.path)

    def _db_statement(self, sql: str) -> None:
        text = " ".join(str(sql).split())
        if len(text) > STATEMENT_SHOWN:
            text = text[:STATEMENT_SHOWN - 1] + "…"
        self._guarded("sql", text, self._before_statement, lambda _result: text)

    def _before_statement(self) -> None:
        """The crash guard of one SQL statement: the plan may kill the process before it."""
        self.app.check_alive("sql")
        self.app.hook("sql", "before")

    def _harness_order(self) -> dict | None:
        stage = self.stage
        if stage.cursor >= len(stage.orders):
            return None
        order = stage.orders[stage.cursor]
        stage.cursor += 1
        self._note(f"place_order(db, {order!r}) called")
        return order

    def _harness_unsent(self) -> bool:
        if self.relay_calls >= RELAY_CALLS_PER_RUN or not _unsent(self.stage.path):
            return False
        self.relay_calls += 1
        self._note("relay_once(db, producer) called")
        return True

    def _harness_poll(self) -> Message | None:
        def poll():
            message = self.client.poll(1.0)
            self.last = message
            return message

        return self._guarded("consumer.poll", "(harness) consumer.poll(1.0)", poll,
                             lambda m: "(harness) consumer.poll(1.0) -> None" if m is None
                             else f"(harness) handle_payment(db, message {_short(m.value())} "
                                  f"at offset {m.offset()}) called")

    def _harness_commit(self) -> None:
        if self.last is None:
            raise RuntimeError("nothing to commit")
        message = self.last
        return self._guarded(
            "consumer.commit", "(harness) consumer.commit(offset "
            f"{message.offset() + 1})",
            lambda: self.client.commit(message=message, asynchronous=False),
            lambda _r: f"(harness) committed offset {message.offset() + 1} after "
                       f"handle_payment returned")

    # producer (the relay)

    def _producer_produce(self, topic, value=None, key=None, partition=-1, handle=-1):
        text = f"producer.produce({topic!r}, {_short(value)}, key={key!r})"
        return self._guarded("producer.produce", text, lambda: self.client.produce(
            topic, value, key=key, partition=partition,
            on_delivery=partial(self._delivered, handle)), lambda _r: text)

    def _delivered(self, handle: int, error, message) -> None:
        error_data = None if error is None else [error.code(), error.str(), error.fatal(),
                                                 error.retriable()]
        offset = message.offset()
        self.reports.append([handle, error_data, message.topic(), message.partition(),
                             -1001 if offset is None else offset, message.key(),
                             message.value()])

    def _producer_poll(self, timeout=0):
        return self._serve("poll", timeout, lambda: self.client.poll(timeout))

    def _producer_flush(self, timeout=None):
        return self._serve("flush", timeout, lambda: self.client.flush(timeout))

    def _producer_len(self) -> int:
        return len(self.client)

    def _serve(self, method: str, timeout, action: Callable) -> list:
        text = f"producer.{method}({'' if timeout is None else timeout})"

        def run():
            self.reports = []
            result = action()
            return [self.reports, result]

        return self._guarded(f"producer.{method}", text, run,
                             lambda r: f"{text} -> {_reports_text(r[0])}")


_COMMON = {("harness", "database"), ("db", "statement")}
_OFFERED = {  # what each check's driver may ask of the gate, nothing more
    "place_order": _COMMON | {("harness", "order")},
    "relay_once": _COMMON | {("harness", "unsent"), ("producer", "produce"),
                             ("producer", "poll"), ("producer", "flush"), ("producer", "len")},
    "handle_payment": _COMMON | {("harness", "poll"), ("harness", "commit")},
}


def _short(value: object) -> str:
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    return repr(text if len(text) <= 40 else text[:39] + "…")


def _reports_text(reports: list) -> str:
    if not reports:
        return "no delivery reports"
    parts = []
    for _handle, error, _topic, _partition, offset, _key, value in reports:
        label = _event_label(value)
        parts.append(f"{label} acked at offset {offset}" if error is None
                     else f"{label} FAILED ({KafkaError(error[0]).name()})")
    return "delivery reports: " + "; ".join(parts)


def _event_label(value: bytes | None) -> str:
    try:
        return str(json.loads(value)["event_id"])
    except (TypeError, ValueError, KeyError):
        return _short(value)


# ----- the child's side: drivers (trusted code around the learner's function) -----------------


def _die_here() -> None:
    """The fault plan killed this process: die now, before one more statement runs."""
    os.kill(os.getpid(), signal.SIGKILL)


def _dying(call: Callable) -> Callable:
    def guarded(target: str, method: str, args: tuple, kwargs: dict) -> object:
        try:
            return call(target, method, args, kwargs)
        except Crash:
            _die_here()
            raise

    return guarded


def _trace(call: Callable, sql: str) -> None:
    """sqlite3's trace callback: tell the grader, who may kill us before SQLite runs it."""
    try:
        call("db", "statement", (sql,), {})
    except BaseException:  # a crash, or the grader stopped answering: die either way
        _die_here()


def _connect(call: Callable) -> sqlite3.Connection:
    """The learner's connection, opened here in the child, every statement traced."""
    db = sqlite3.connect(call("harness", "database", (), {}))
    # A process kill (not a power cut) loses nothing the OS already has: no fsync needed.
    db.execute("PRAGMA synchronous=OFF")
    db.set_trace_callback(partial(_trace, call))
    return db


class _RelayProducer:
    """The relay's producer: confluent-kafka's produce/poll/flush, callbacks kept here.

    ``on_delivery`` callbacks cannot travel to the grader, so each produce
    sends a handle instead, and the reports that ``poll()`` and ``flush()``
    bring back are handed to the callbacks with ``(err, msg)`` here, from
    inside poll/flush only, exactly once each, as librdkafka does.
    """

    def __init__(self, call: Callable) -> None:
        self._call = call
        self._callbacks: dict[int, Callable] = {}
        self._handles = 0

    def __repr__(self) -> str:
        return f"<Producer for topic {ORDERS_TOPIC!r} (acks=all, idempotent)>"

    def __len__(self) -> int:
        return self._call("producer", "len", (), {})

    def produce(self, topic, value=None, key=None, partition=-1, on_delivery=None,
                callback=None, **_ignored) -> None:
        """Queue one record; its report comes back from a later poll() or flush()."""
        self._handles += 1
        if on_delivery is not None or callback is not None:
            self._callbacks[self._handles] = on_delivery or callback
        self._call("producer", "produce", (topic, value),
                   {"key": key, "partition": partition, "handle": self._handles})

    def poll(self, timeout=0) -> int:
        """Serve delivery reports (callbacks run here)."""
        reports, served = self._call("producer", "poll", (timeout,), {})
        self._deliver(reports)
        return served

    def flush(self, timeout=None) -> int:
        """Wait for every report (callbacks run here); returns how many are still pending."""
        reports, left = self._call("producer", "flush", (timeout,), {})
        self._deliver(reports)
        return left

    def _deliver(self, reports: list) -> None:
        for handle, error, topic, partition, offset, key, value in reports:
            callback = self._callbacks.pop(handle, None)
            if callback is None:
                continue
            err = None if error is None else KafkaError(error[0], error[1], fatal=error[2],
                                                        retriable=error[3])
            callback(err, Message(topic=topic, partition=partition, offset=offset, key=key,
                                  value=value, error=err))


def _drive_place_order(fn: Callable, call: Callable) -> None:
    call = _dying(call)
    db = _connect(call)
    while (order := call("harness", "order", (), {})) is not None:
        fn(db, order)


def _drive_relay(fn: Callable, call: Callable) -> None:
    call = _dying(call)
    db = _connect(call)
    producer = _RelayProducer(call)
    while call("harness", "unsent", (), {}):
        fn(db, producer)


def _drive_payments(fn: Callable, call: Callable) -> None:
    call = _dying(call)
    db = _connect(call)
    while (message := call("harness", "poll", (), {})) is not None:
        fn(db, message)
        call("harness", "commit", (), {})


_DRIVERS = {"place_order": _drive_place_order, "relay_once": _drive_relay,
            "handle_payment": _drive_payments}


# ----- explaining a failure -------------------------------------------------------------------


def _token(run: Replay) -> str:
    return encode_token({"c": run.check, "f": run.function, "n": run.count,
                         "p": json.loads(run.plan.to_json()), "s": run.seed})


def _plain(fault) -> str:
    """One fault, as a sentence a learner reads."""
    if isinstance(fault, CrashClient):
        nth = ordinal(fault.nth)
        if fault.point == "sql":
            return (f"your process was killed (SIGKILL) just before its {nth} SQL statement "
                    f"ran")
        what = {"consumer.poll": "the harness's consumer.poll",
                "consumer.commit": "the harness's offset commit"}.get(fault.point, fault.point)
        return crash_sentence(fault.phase, f"the {nth} call of {what}", verb="was killed",
                              returned="before it returned")
    if isinstance(fault, DropMessages) and fault.kind == "request":
        return (f"the network lost produce requests {drop_numbers(fault)}, so that record's "
                f"delivery failed for good (_MSG_TIMED_OUT after delivery.timeout.ms)")
    if isinstance(fault, DropMessages):
        return (f"the network lost the broker's answer to produce request #{fault.skip + 1} "
                f"(the record was written; the producer did not hear back and retried)")
    if isinstance(fault, KillBroker):
        return f"the leader of {fault.topic!r} crashed at t={fault.at_ms}ms"
    if isinstance(fault, RestartBroker):
        return f"broker {fault.broker} started again at t={fault.at_ms}ms"
    return repr(fault)


def _row_label(run: Replay, row_id: str) -> str:
    for row in run.tables.get("outbox", []):
        if str(row[0]) == row_id:
            return f"outbox row {row_id} (event {row[1]})"
    return f"outbox row {row_id}"


def _headline(run: Replay, limit_s: float) -> str:
    failure, fn = run.failure, run.function
    subject, kind = failure.subject, failure.kind
    if kind == "order-only":
        return (f"order {subject} was saved WITHOUT its outbox row, so its event will never be "
                f"published.")
    if kind == "event-only":
        return (f"an outbox row for order {subject} was saved but the order itself was not: "
                f"the relay will publish an event for an order that does not exist.")
    if kind == "clean-no-event":
        return (f"on a run with NO faults, order {subject} was saved but no outbox row with "
                f"key {subject!r} was written.")
    if kind == "clean-missing":
        return f"on a run with NO faults, order {subject} was not saved in the orders table."
    if kind == "clean-bad-row":
        return f"on a run with NO faults, order {subject}: {failure.detail}."
    if kind == "marked-early":
        return (f"{_row_label(run, subject)} was marked sent although Kafka never "
                f"acknowledged it.")
    if kind == "lost":
        if run.check == "handle_payment":
            return (f"payment {subject} was LOST: its offset was committed but its payments "
                    f"row is not in the database.")
        return f"{_row_label(run, subject)} was never published to {ORDERS_TOPIC!r} (LOST)."
    if kind == "reordered":
        return (f"{_row_label(run, subject)} was first published AFTER "
                f"{_row_label(run, failure.detail)}: the events left the outbox out of id "
                f"order.")
    if kind == "progress":
        return (f"no PROGRESS: {_row_label(run, subject)} is still not marked sent after "
                f"every fault was over.")
    if kind == "duplicate":
        return f"payment {subject} was applied {failure.detail} times (a DUPLICATE)."
    if kind == "stuck":
        return (f"the consumer never got past payment {subject}: every time it was "
                f"redelivered, handle_payment failed.")
    if kind == "clean-wrong":
        return (f"on a run with NO faults, the payments table does not hold one row (event_id, "
                f"order_id, amount_cents) per payment; it holds {failure.detail}.")
    if kind == "database":
        return f"the grader could not read your database afterwards ({failure.detail})."
    if kind == "error":
        error = run.errors[0]
        detail = f": {error.detail}" if error.detail else ""
        return f"on a run with NO faults, {fn}() raised {error.error_type}{detail}\n{error.where}"
    return _abort_headline(run, limit_s)


def _abort_headline(run: Replay, limit_s: float) -> str:
    """ps3's words for an abort: the app restarts, so it is a crash; its peer is the grader."""
    fn = run.function
    words = AbortWords(f"{fn}()", calls=(f"{fn}() made more than {CALLS_MAX} statements and "
                                         f"calls in one run of the app. Does it stop when the "
                                         f"work is done?"),
                       instead="return from the function", peer="the grader")
    return abort_headline(run.failure.kind, words, run.failure.detail, limit_s)


_WHY = {
    "order-only": "The kill came between your order INSERT and your outbox INSERT, and the "
                  "order was already committed. Write both rows inside ONE transaction "
                  "(one `with db:` block): then SQLite keeps both or neither.",
    "event-only": "The kill came between the two writes and the outbox row was already "
                  "committed. Write both rows inside ONE transaction (one `with db:` block).",
    "clean-no-event": "place_order must also INSERT the order's event into the outbox table, "
                      "in the same transaction. Publishing to Kafka from place_order itself "
                      "(a dual write) is not an outbox: a crash between the two writes loses "
                      "or invents the event.",
    "marked-early": "A row may be marked sent only after its delivery report said it was "
                    "written: produce, then flush() (or poll()) until the on_delivery "
                    "callback ran with err None, and only then UPDATE outbox SET sent = 1. A "
                    "crash between marking and the acknowledgement otherwise loses the event.",
    "lost": "",
    "reordered": "When a row cannot be acknowledged, relay_once must stop there and return: "
                 "sending later rows first publishes them ahead of it, and the retry of the "
                 "failed row comes after them.",
    "progress": "relay_once must mark each acknowledged row sent (UPDATE outbox SET sent = 1, "
                "committed), or the relay publishes it again for ever.",
    "duplicate": "A redelivered message must find its event_id already in the inbox. Insert "
                 "the event_id into inbox and apply the payment in ONE transaction: if the "
                 "INSERT into inbox fails (sqlite3.IntegrityError: already seen), skip the "
                 "payment and return normally.",
    "stuck": "A redelivered message is normal (the harness had not committed its offset "
             "when the process died). handle_payment must recognise it (the inbox) and "
             "return without error, not raise.",
}


def _why(run: Replay) -> list[str]:
    kind = run.failure.kind
    if kind == "lost" and run.check == "handle_payment":
        return ["The event_id went into the inbox in a transaction of its own, or the "
                "payment was applied outside the inbox's transaction: the kill came between "
                "the two, so the redelivered message looked already seen. Insert into inbox "
                "and into payments in ONE transaction."]
    if kind == "lost":
        return ["Every unsent row must be produced, and marked sent only after its delivery "
                "report said it was written."]
    if kind == "marked-early" and (error := _nack_of(run, run.failure.subject)):
        return [f"Its delivery report carried an error ({error}): the record is not in Kafka. "
                f"Mark a row sent only when the on_delivery callback ran with err None; "
                f"otherwise leave it unsent and stop, so that the next relay_once sends it "
                f"again."]
    return [_WHY[kind]] if _WHY.get(kind) else []


def _nack_of(run: Replay, row_id: str) -> str:
    """The error of a failed delivery report for that row's payload ('' if none)."""
    payloads = {str(row[0]): str(row[4]).encode() for row in run.tables.get("outbox", [])}
    return next((str(e.data.get("error")) for e in run.history.of_kind("nack")
                 if e.data.get("value") == payloads.get(row_id)), "")


def _story(run: Replay, before: int = 9, after: int = 5) -> list[str]:
    """The learner's statements and calls around the first fault (or at the end)."""
    plain = {repr(fault): _plain(fault) for fault in run.plan.faults}
    entries = [(index + 1, 0, True, _event_line(event, plain))
               for index, event in enumerate(run.history.events)
               if index >= run.installed_at and event.kind in ("crash", "fault", "note")]
    entries = [(*entry[:2], "CRASH" in entry[3] or "FAULT" in entry[3], entry[3])
               for entry in entries]
    entries = merge(entries, run.calls)
    anchor = next((i for i, entry in enumerate(entries) if entry[2]), None)
    tail = run.failure.kind in ("progress", "stuck")
    return [entry[3] for entry in window(entries, anchor, before, after, tail)]


def _event_line(event, plain: dict) -> str:
    data = event.data
    if event.kind == "crash":
        what = grader_crash(data, _plain, "your process ")
    elif event.kind == "fault" and data.get("message"):
        what = f"FAULT: the network lost this message: {data['message']}"
    elif event.kind == "fault":
        what = f"FAULT: {plain.get(data.get('fault'), data.get('fault'))}"
    else:
        what = str(data.get("text"))
    return at(event.time_ms, event.actor, what)


def _explain(run: Replay, limit_s: float) -> str:
    """The failure message: what, which fault, why, what the code did, how to replay."""
    return failure_message(
        run.check, CHECKS[run.check].guarantee, _headline(run, limit_s),
        faults=[_plain(fault) for fault in run.plan.faults], why=_why(run), errors=run.errors,
        kind=run.failure.kind, story=lambda: _story(run), plan=repr(run.plan), seed=run.seed,
        token=_token(run))
