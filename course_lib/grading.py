"""The autograder: attack a learner's function with faults, judge it from the History.

``check_at_most_once(fn)`` and ``check_at_least_once(fn)`` (ps1) play the
learner's ``fn(consumer, process)`` against a fresh seeded cluster whose topic
holds a few messages, again and again: a clean run first, then every single
crash point of that run (before and after each client call and each
``process``, as :func:`course_lib.faults.single_crash_plans` lists them) and a
failing ``process`` at each message, then seeded random multi-fault plans
(crashes, processing errors, lost offset-commit requests and answers, broker
kills and restarts). After each crash the application restarts as a fresh
process with a fresh consumer in the same group: nothing in memory survives.
Every run is judged by :func:`course_lib.checker.check` from the History alone
(DESIGN §6): at-most-once forbids duplicates, at-least-once forbids loss and
also asks for progress (the group's committed offset reaches the log end), and
a run with no faults must deliver every message exactly once.

The first failing plan is shrunk to a minimal one and reported as an
``AssertionError`` that names the message, the fault in plain words, what the
code did just before, and a ``course_lib.replay("…")`` line that plays the same
run again in the notebook (:func:`replay`).

**Isolation** (DESIGN §6). The World and the checker stay in the grading
process; the learner's function never runs there. At the start of a check the
grader forks a small *zygote* process, before any World exists. For every run
of the application the zygote forks one child, which calls ``fn`` with proxy
``consumer`` and ``process`` objects: each method call travels as JSON over a
socket to the grader, which performs it on the real Consumer or ``process``
and sends back the result, the error (rebuilt in the child), or a crash marker
(raised in the child as :class:`~course_lib.faults.Crash`, which ``except
Exception`` cannot swallow; the grader kills the child at once anyway, since
its process is dead). Only plain data crosses the socket, decoded by a strict
codec, never pickle, so the child cannot run code in the grader. The child
runs under RLIMIT_CPU and RLIMIT_AS, with stdin, stdout and stderr on
/dev/null and ``sys.stdout`` counting what is printed. The grader enforces a
wall-clock limit per run and a cap on client calls per app run. A child that
hangs, exits (``sys.exit``, ``os._exit``), floods output, dies of a signal or
breaks the protocol is recorded in the History as a crash of its process and
ends the check as a failure with a plain message.

*Why fork, not spawn.* The function under test usually lives in a notebook
kernel's ``__main__``: spawn would have to pickle it by reference (impossible)
or re-create it from ``inspect.getsource`` (losing closures, helpers from
other cells and imports), and a spawned interpreter costs ~0.3 s, times about
a hundred app runs per check. A fork copies the function with everything it
refers to in about a millisecond. The zygote is forked *before* any World
exists, so the learner's process never holds even a copy of the cluster, the
fault plan or the History; every app run is a fresh fork of that zygote, so
nothing a run leaves in memory reaches the next (the crash model's "fresh
interpreter").

*Limits.* The child runs as the same user: it could signal or ptrace other
processes of that user, and it inherits the kernel's open descriptors. And
whatever an earlier notebook cell patched in the kernel (including this
module) is inherited by the grader itself: no in-kernel check closes that,
which is why points come from the trusted pass outside the kernel (DESIGN §6).
The wall-clock limit is the one input that is not deterministic; it only
decides whether a run that was already too slow counts as hung.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import multiprocessing
import os
import random
import re
import resource
import signal
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from course_lib.checker import Report, check
from course_lib.cluster import Cluster
from course_lib.consumer import GroupMetadata
from course_lib.faults import (
    PHASES,
    Crash,
    CrashClient,
    DropMessages,
    FailProcessing,
    FaultPlan,
    KillBroker,
    ProcessingError,
    RestartBroker,
    single_crash_plans,
)
from course_lib.scenarios import message_values, seed_topic

__all__ = [
    "CheckFailed",
    "Campaign",
    "Replay",
    "SourceFunction",
    "check_at_least_once",
    "check_at_most_once",
    "replay",
]

TOPIC = "events"
GROUP = "app"
MESSAGES = 6
RANDOM_PLANS = 20
BROKERS = 3
CONSUMER_CONFIG = {"group.id": GROUP, "auto.offset.reset": "earliest",
                   "enable.auto.commit": False}
TIME_LIMIT_S = 10.0  # wall clock for one run of a plan, restarts included
MEMORY_LIMIT_MB = 512  # address space the child may add to what it inherited
OUTPUT_LIMIT_BYTES = 1 << 20  # what the learner's code may print per app run
CALLS_MAX = 500  # client and process calls per app run (at least 10 per message)
RUNS_MAX = 12  # app runs (first start + restarts) per plan
RERUN_DELAY_MS = 5_000  # an app that stopped early (poll() came back empty) runs again
WIRE_BYTES_MAX = 1 << 20  # one request from the child
_PACKAGE_DIR = Path(__file__).resolve().parent


class CheckFailed(AssertionError):
    """A check's failure: the plain-language message, plus the run for tools and tests."""

    def __init__(self, message: str, run: Replay | None = None, token: str = "") -> None:
        super().__init__(message)
        self.run = run
        self.token = token


@dataclass(frozen=True)
class _Check:
    name: str
    guarantee: str
    progress: bool


CHECKS = {
    "at_most_once": _Check("at_most_once", "at-most-once", progress=False),
    "at_least_once": _Check("at_least_once", "at-least-once", progress=True),
}


@dataclass(frozen=True)
class Campaign:
    """A passed check: how many fault plans the function survived."""

    check: str
    seed: int
    plans: int

    def __repr__(self) -> str:
        return (f"<check_{self.check} passed: {self.plans} runs, one clean and "
                f"{self.plans - 1} under faults (seed {self.seed})>")


@dataclass
class Replay:
    """One played run: its plan, cluster, History, Report and verdict (None if it passed)."""

    check: str
    seed: int
    messages: int
    plan: FaultPlan
    cluster: Cluster
    report: Report
    function: str
    failure: _Failure | None = None
    message: str | None = None
    trace: list = field(default_factory=list)
    start_ms: int = 0
    end_ms: int = 0
    installed_at: int = 0  # index of the first History event after the plan was installed
    errors: list = field(default_factory=list)
    calls: list = field(default_factory=list)  # what the learner's code called, in order

    @property
    def history(self):
        """The History the verdict was computed from."""
        return self.cluster.history

    @property
    def passed(self) -> bool:
        """True when the run satisfies the check."""
        return self.failure is None

    def __repr__(self) -> str:
        verdict = "passed" if self.failure is None else f"FAILED ({self.failure.kind})"
        return (f"<Replay check_{self.check} seed={self.seed} {verdict}: "
                f"{self.report.summary()}; plan {self.plan!r}>")

    def _repr_svg_(self) -> str | None:
        """The timeline of this run, when course_lib.viz is available."""
        if importlib.util.find_spec("course_lib.viz") is None:
            return None
        from course_lib import viz

        title = f"replay of check_{self.check}: {self.plan!r}"
        return viz.timeline(self.history, self.report, title=title)._repr_svg_()


@dataclass(frozen=True)
class _Failure:
    kind: str  # lost duplicate progress clean-lost clean-duplicate error | abort kinds
    value: bytes | None = None
    offset: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class _Outcome:
    """How one app run of the learner's function ended."""

    kind: str  # returned raised crashed | hang calls exit flood killed broken
    detail: str = ""
    error_type: str = ""
    where: str = ""


_ABORTS = ("hang", "calls", "exit", "flood", "killed", "broken")


@dataclass(frozen=True)
class _Limits:
    time_s: float
    memory_mb: int = MEMORY_LIMIT_MB
    output_bytes: int = OUTPUT_LIMIT_BYTES


# ----- public API -----------------------------------------------------------------------------


def check_at_most_once(consume_at_most_once: Callable, *, seed: int = 0,
                       random_plans: int = RANDOM_PLANS, messages: int = MESSAGES,
                       time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade ``consume_at_most_once(consumer, process)``: no message may be processed twice.

    Raises :class:`CheckFailed` (an AssertionError) naming the duplicated
    message, the fault and a replay call; returns a :class:`Campaign` if every
    plan passed.
    """
    return _campaign(CHECKS["at_most_once"], consume_at_most_once, seed, random_plans,
                     messages, time_limit_s)


def check_at_least_once(consume_at_least_once: Callable, *, seed: int = 0,
                        random_plans: int = RANDOM_PLANS, messages: int = MESSAGES,
                        time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade ``consume_at_least_once(consumer, process)``: nothing lost, progress committed.

    Raises :class:`CheckFailed` (an AssertionError) naming the lost message
    (or the missing progress), the fault and a replay call; returns a
    :class:`Campaign` if every plan passed.
    """
    return _campaign(CHECKS["at_least_once"], consume_at_least_once, seed, random_plans,
                     messages, time_limit_s)


def replay(token: str, fn: Callable | None = None, *, isolated: bool = True,
           time_limit_s: float = TIME_LIMIT_S) -> Replay:
    """Play the run a failure message named again; the result draws its timeline.

    ``fn`` defaults to the function of that name in the notebook (``__main__``).
    By default each app run is a fresh child process, as in grading, so the
    replay is the graded run exactly. ``isolated=False`` calls ``fn`` in this
    process instead (no fork, no limits, for exploring): then module-level state
    of the learner's code survives "restarts", which a real restart forbids.
    """
    data = _untoken(token)
    chosen = CHECKS[data["c"]]
    plan = FaultPlan.from_json(json.dumps(data["p"]))
    if fn is None:
        fn = getattr(sys.modules.get("__main__"), data["f"], None)
        if not callable(fn):
            raise LookupError(f"no function {data['f']!r} in the notebook; pass it: "
                              f"course_lib.replay(token, {data['f']})")
    if isolated:
        with _Sandbox(fn, _Limits(time_limit_s)) as sandbox:
            run = _play(chosen, data["s"], data["m"], plan, sandbox.run, time_limit_s,
                        data["f"])
    else:
        run = _play(chosen, data["s"], data["m"], plan, _inline(fn), time_limit_s, data["f"])
    if run.failure is not None:
        run.message = _explain(run, time_limit_s)
    return run


# ----- the campaign ---------------------------------------------------------------------------


def _campaign(chosen: _Check, fn: Callable, seed: int, random_plans: int, messages: int,
              time_limit_s: float) -> Campaign:
    if not callable(fn):
        raise TypeError(f"check_{chosen.name} needs your function, not {fn!r}")
    if isinstance(messages, bool) or not isinstance(messages, int) or messages < 1:
        raise ValueError(f"messages must be a positive int, not {messages!r}")
    name = getattr(fn, "__name__", "your_function")
    with _Sandbox(fn, _Limits(time_limit_s)) as sandbox:

        def play(plan: FaultPlan) -> Replay:
            return _play(chosen, seed, messages, plan, sandbox.run, time_limit_s, name)

        clean = play(FaultPlan())
        runs = 1
        failing = clean if clean.failure is not None else None
        if failing is None:
            for plan in _plans(chosen, seed, clean, random_plans):
                runs += 1
                result = play(plan)
                if result.failure is not None:
                    failing = _shrink(result, play)
                    break
    if failing is None:
        return Campaign(chosen.name, seed, runs)
    failing.message = _explain(failing, time_limit_s)
    if failing.failure.kind == "error" and failing.failure.detail == "NotImplementedError":
        raise NotImplementedError(failing.message)
    raise CheckFailed(failing.message, failing, _token(failing))


def _plans(chosen: _Check, seed: int, clean: Replay, count: int) -> list[FaultPlan]:
    """Every single crash point and processing failure of the clean run, then random plans."""
    processes = sum(1 for point, _ in clean.trace if point == "process")
    plans = single_crash_plans(clean.trace)
    plans += [FaultPlan((FailProcessing(n),)) for n in range(1, processes + 1)]
    seen = {plan.to_json() for plan in plans}
    for index in range(count):
        plan = _random_plan(chosen, seed, index, clean)
        if plan.to_json() not in seen:
            seen.add(plan.to_json())
            plans.append(plan)
    return plans


def _random_plan(chosen: _Check, seed: int, index: int, clean: Replay) -> FaultPlan:
    """A seeded mix of crashes, processing errors, lost commits and broker restarts."""
    rng = random.Random(f"grading/{chosen.name}/{seed}/{index}")
    calls = list(clean.trace)
    processes = sum(1 for point, _ in calls if point == "process")
    commits = sum(1 for point, _ in calls if point == "consumer.commit")
    faults: list = []
    for _ in range(rng.randint(2, 4)):
        roll = rng.random()
        if roll < 0.45 and calls:
            point, nth = rng.choice(calls)
            faults.append(CrashClient(point, rng.choice(PHASES), nth))
        elif roll < 0.6 and processes:
            faults.append(FailProcessing(rng.randint(1, processes)))
        elif roll < 0.8:
            faults.append(DropMessages("offset_commit", rng.choice(("request", "response")),
                                       count=1, skip=rng.randrange(max(commits, 1))))
        else:
            broker = rng.randrange(BROKERS)
            at_ms = rng.randint(clean.start_ms, max(clean.start_ms, clean.end_ms))
            faults.append(KillBroker(broker, at_ms=at_ms))
            faults.append(RestartBroker(broker, at_ms=at_ms + rng.randint(100, 3_000)))
    return FaultPlan(tuple(faults))


def _shrink(failing: Replay, play: Callable[[FaultPlan], Replay]) -> Replay:
    """Greedy delta debugging: drop each fault in turn while the same failure remains."""
    if failing.failure.kind == "hang":
        return failing  # each attempt would cost a whole time limit
    changed = True
    while changed and len(failing.plan) > 1:
        changed = False
        for index in range(len(failing.plan)):
            candidate = play(failing.plan.without(index))
            if candidate.failure is not None and candidate.failure.kind == failing.failure.kind:
                failing, changed = candidate, True
                break
    return failing


# ----- one run of a plan ----------------------------------------------------------------------


def _play(chosen: _Check, seed: int, messages: int, plan: FaultPlan,
          runner: Callable[[_Gate, float], _Outcome], time_limit_s: float,
          function: str) -> Replay:
    """Seed a fresh cluster, install ``plan``, run the app until done, restarting it."""
    cluster = Cluster(brokers=BROKERS, seed=seed)
    cluster.create_topic(TOPIC)
    seed_topic(cluster, message_values(messages))
    history = cluster.history
    end = _log_end(history)
    start_ms, installed_at = cluster.world.now_ms, len(history)
    cluster.install_faults(plan)
    deadline = time.monotonic() + time_limit_s
    stop, errors, calls = None, [], []
    for number in range(1, RUNS_MAX + 1):
        app = cluster.process("consumer-app")
        history.record("note", app.name, text="starts (app run 1)" if number == 1 else
                       f"starts again (app run {number}): a fresh process and consumer, "
                       f"resuming at the group's committed offset")
        consumer = app.consumer(CONSUMER_CONFIG)
        process = app.processor()
        try:
            consumer.subscribe([TOPIC])
        except Crash:
            continue
        gate = _Gate(consumer, process, app.name, history, _calls_max(messages))
        outcome = runner(gate, deadline)
        calls.extend(gate.log)
        if outcome.kind in _ABORTS:
            _record_crash(cluster, app, _ABORT_POINTS[outcome.kind], number)
            stop = outcome
            break
        if not app.alive:
            continue  # the fault plan crashed it; a new process takes over
        if outcome.kind in ("raised", "crashed"):
            _record_crash(cluster, app, f"uncaught {outcome.error_type or 'exception'}", number)
            errors.append(outcome)
            if not plan.faults:
                break
            continue
        try:
            consumer.close()
        except Crash:
            continue
        if not plan.faults or _caught_up(history, consumer.name, end):
            break
        cluster.world.advance(RERUN_DELAY_MS)  # a fault made poll() come back empty early
    run = Replay(chosen.name, seed, messages, plan, cluster, check(history), function,
                 trace=cluster.faults.call_trace(), start_ms=start_ms,
                 end_ms=cluster.world.now_ms, installed_at=installed_at, errors=errors,
                 calls=calls)
    run.failure = _judge(chosen, run, stop, end)
    return run


_ABORT_POINTS = {
    "hang": "the wall-clock limit (grader stopped it)",
    "calls": "too many calls (grader stopped it)",
    "exit": "its own exit (sys.exit/os._exit)",
    "flood": "an output flood (grader stopped it)",
    "killed": "a signal",
    "broken": "a broken connection to the cluster",
}


def _calls_max(messages: int) -> int:
    return max(CALLS_MAX, 10 * messages)


def _record_crash(cluster: Cluster, app, point: str, number: int) -> None:
    """The app died outside the fault plan: record it as the crash it is, then kill it."""
    if app.alive:
        cluster.history.record("crash", app.name, point=point, phase="at", nth=number,
                               reason="grader")
        app.die()


def _log_end(history) -> int:
    """The log end after seeding: one past the highest acknowledged offset."""
    offsets = [e.data["offset"] for e in history.of_kind("ack") if e.data.get("offset", -1) >= 0]
    return max(offsets, default=-1) + 1


def _committed(history, upto: int | None = None) -> int | None:
    """The group's committed offset (for TOPIC-0), from the History, up to event ``upto``."""
    events = history.events if upto is None else history.events[:upto]
    offset = None
    for event in events:
        if (event.kind == "commit" and event.data.get("group") == GROUP
                and event.data.get("topic") == TOPIC):
            offset = event.data["offset"]
    return offset


def _caught_up(history, consumer_name: str, end: int) -> bool:
    """Did this app run read to the end, or is everything already committed?"""
    polled = [e.data["offset"] for e in history.of_kind("poll") if e.actor == consumer_name]
    committed = _committed(history)
    return max(polled, default=-1) + 1 >= end or (committed is not None and committed >= end)


def _judge(chosen: _Check, run: Replay, stop: _Outcome | None, end: int) -> _Failure | None:
    """The verdict, computed from the History (and how the learner's process ended)."""
    history, report = run.history, run.report
    if stop is not None:
        return _Failure(stop.kind, detail=stop.detail)
    if run.errors and not run.plan.faults:
        return _Failure("error", detail=run.errors[0].error_type)
    offsets = _offsets(history)
    if not run.plan.faults:
        if report.lost:
            return _Failure("clean-lost", report.lost[0], offsets.get(report.lost[0]))
        if report.duplicated:
            value = report.duplicated[0]
            return _Failure("clean-duplicate", value, offsets.get(value))
    if chosen.name == "at_most_once" and report.duplicated:
        return _Failure("duplicate", report.duplicated[0], offsets.get(report.duplicated[0]))
    if chosen.name == "at_least_once":
        if report.lost:
            return _Failure("lost", report.lost[0], offsets.get(report.lost[0]))
        committed = _committed(history)
        if chosen.progress and _progress_due(run, end) and committed != end:
            return _Failure("progress", detail=f"{committed}/{end}")
    return None


def _progress_due(run: Replay, end: int) -> bool:
    """DESIGN §6: progress is owed when the final message was read after the last fault."""
    events = run.history.events[run.installed_at:]
    last_fault = max((i for i, e in enumerate(events) if e.kind in ("crash", "fault")),
                     default=-1)
    return any(e.kind == "poll" and e.data.get("offset") == end - 1
               for e in events[last_fault + 1:])


def _offsets(history) -> dict:
    """value -> offset, from the acknowledgements of the seeding producer."""
    return {e.data["value"]: e.data["offset"] for e in history.of_kind("ack")}


# ----- the gate: the only way into the World --------------------------------------------------


_CONSUMER_API = frozenset({
    "assign", "assignment", "close", "commit", "committed", "consume",
    "consumer_group_metadata", "poll", "position", "seek", "subscribe",
})


class _TooManyCalls(BaseException):  # an internal stop signal, never shown
    """The app run made more than CALLS_MAX calls: stop it."""


class _Gate:
    """Performs the learner's calls on the real Consumer and ``process``, and counts them.

    It also keeps ``log``: each call the learner's code made, with what it
    returned, stamped with the History position, so a failure message can say
    what the code did (an asynchronous commit that never arrived leaves no
    trace in the History, but it is in this log). The verdict never reads it.
    """

    def __init__(self, consumer, process, actor: str, history,
                 calls_max: int = CALLS_MAX) -> None:
        self.consumer = consumer
        self.process = process
        self.actor = actor
        self.history = history
        self.calls = 0
        self.calls_max = calls_max
        self.delivered: set = set()
        self.log: list[tuple[int, int, str]] = []  # (history index, time ms, text)

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        """One call from the learner's code; raises what the real call raises."""
        try:
            result = self._perform(target, method, args, kwargs)
        except Crash:
            # Listed just before the crash event the injector recorded.
            self._note(_call_text(target, method, args, kwargs, None, None, crashed=True),
                       before_last=True)
            raise
        except Exception as exc:
            self._note(_call_text(target, method, args, kwargs, None, type(exc).__name__))
            raise
        self._note(_call_text(target, method, args, kwargs, result, None))
        return result

    def _note(self, text: str, before_last: bool = False) -> None:
        events = self.history.events
        index = len(events)
        if before_last:  # the crash event, followed by what dying caused (leaving the group)
            index = next((i for i in range(len(events) - 1, -1, -1)
                          if events[i].kind == "crash"), index)
        when = events[index - 1].time_ms if index else 0
        self.log.append((index, when, f"{self.actor}: {text}"))

    def _perform(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        self.calls += 1
        if self.calls > self.calls_max:
            raise _TooManyCalls()
        if target == "process" and method == "__call__":
            if len(args) != 1 or kwargs:
                raise TypeError("process() takes exactly one argument: a message")
            message = args[0]
            if not isinstance(message, Message) or _identity(message) not in self.delivered:
                raise TypeError("process() takes a message that consumer.poll() returned "
                                "in this run of the app")
            return self.process(message)
        if target != "consumer" or method not in _CONSUMER_API:
            raise AttributeError(f"the consumer here has no method {method!r}; it offers "
                                 + ", ".join(sorted(_CONSUMER_API)))
        result = getattr(self.consumer, method)(*args, **kwargs)
        for item in result if isinstance(result, list) else (result,):
            if isinstance(item, Message):
                self.delivered.add(_identity(item))
        return result


def _arg(value: object) -> str:
    """A call argument or result, short and readable."""
    if isinstance(value, Message):
        return f"{_text(value.value())} (offset {value.offset()})"
    if isinstance(value, TopicPartition):
        return f"TopicPartition({value.topic!r}, {value.partition}, {value.offset})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_arg(item) for item in value[:4]) + (
            ", …]" if len(value) > 4 else "]")
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def _call_text(target: str, method: str, args: tuple, kwargs: dict, result: object,
               error: str | None, crashed: bool = False) -> str:
    """``consumer.commit(message=m-001 (offset 1), asynchronous=False) returned``."""
    if target == "process":
        head = f"process({', '.join(_arg(a) for a in args)})"
    else:
        shown = [_arg(a) for a in args] + [f"{k}={_arg(v)}" for k, v in kwargs.items()]
        head = f"consumer.{method}({', '.join(shown)})"
    if crashed:
        return f"{head} never returned: the process died in it"
    if error is not None:
        return f"{head} raised {error}"
    if method == "poll":
        return f"{head} -> {_arg(result)}"
    if method == "commit":
        asynchronous = kwargs.get("asynchronous", args[2] if len(args) > 2 else True)
        if asynchronous is not False:
            return f"{head} returned (asynchronous: the commit is still on its way)"
        return f"{head} returned"
    if result is None:
        return f"{head} returned"
    return f"{head} -> {_arg(result)}"


def _identity(message: Message) -> tuple:
    return (message.topic(), message.partition(), message.offset(), message.value())


class _ConsumerProxy:
    """What the learner's function receives as ``consumer``: the client API, nothing more."""

    __slots__ = ("_send",)

    def __init__(self, send: Callable) -> None:
        object.__setattr__(self, "_send", send)

    def __getattr__(self, name: str):
        if name not in _CONSUMER_API:
            raise AttributeError(f"the consumer here has no method {name!r}")
        send = object.__getattribute__(self, "_send")

        def method(*args, **kwargs):
            return send("consumer", name, args, kwargs)

        method.__name__ = name
        return method

    def __repr__(self) -> str:
        return "<Consumer group='app' topic='events'>"


class _ProcessProxy:
    """What the learner's function receives as ``process``: process(msg)."""

    __slots__ = ("_send",)

    def __init__(self, send: Callable) -> None:
        object.__setattr__(self, "_send", send)

    def __call__(self, message) -> object:
        return object.__getattribute__(self, "_send")("process", "__call__", (message,), {})

    def __repr__(self) -> str:
        return "<process(msg)>"


def _inline(fn: Callable) -> Callable[[_Gate, float], _Outcome]:
    """A runner that calls ``fn`` in this process (replay, exploring): no limits."""

    def run(gate: _Gate, _deadline: float) -> _Outcome:
        try:
            fn(_ConsumerProxy(gate.call), _ProcessProxy(gate.call))
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except SystemExit as exc:
            return _Outcome("exit", _exit_text(exc))
        except _TooManyCalls:
            return _Outcome("calls")
        except BaseException as exc:  # every escape is the app dying
            return _Outcome("raised", *_describe(exc))
        if gate.calls > gate.calls_max:
            return _Outcome("calls")
        return _Outcome("returned")

    return run


def _describe(exc: BaseException) -> tuple[str, str, str]:
    """(message, type name, the learner's frames): stable text, no paths or addresses."""
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", str(exc))[:300]
    frames = []
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.is_absolute() and _inside_library(path):
            continue
        frames.append(f"  line {frame.lineno} in {frame.name}(): {(frame.line or '').strip()}")
    return text, type(exc).__name__, "\n".join(frames[-3:])


def _exit_text(exc: SystemExit) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x…", f"sys.exit({exc.code!r})")[:80]


def _inside_library(path: Path) -> bool:
    parts = path.parts
    return path.is_relative_to(_PACKAGE_DIR) or "multiprocessing" in parts or any(
        part in ("confluent_kafka",) for part in parts)


# ----- the wire: plain data only, both ways ---------------------------------------------------


def _encode(value: object, depth: int = 0) -> object:
    """Python value -> JSON-able data; only what the consumer API passes around."""
    if depth > 16:
        raise TypeError("value nested too deeply to send to the cluster")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Message):
        return {"$m": [value.topic(), value.partition(), value.offset(),
                       _encode(value.key()), _encode(value.value()), list(value.timestamp())]}
    if isinstance(value, TopicPartition):
        return {"$tp": [value.topic, value.partition, value.offset]}
    if isinstance(value, GroupMetadata):
        return {"$gm": [value.group_id, value.generation, value.member_id]}
    if isinstance(value, (list, tuple)):
        return [_encode(item, depth + 1) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"$d": {key: _encode(item, depth + 1) for key, item in value.items()}}
    raise TypeError(f"a {type(value).__name__} cannot be sent to the cluster")


def _decode(data: object, depth: int = 0) -> object:
    """The inverse of :func:`_encode`; anything else is a protocol error (ValueError)."""
    if depth > 16:
        raise ValueError("nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [_decode(item, depth + 1) for item in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError(f"unexpected {type(data).__name__}")
    (tag, body), = data.items()
    if tag == "$b" and isinstance(body, str):
        return base64.b64decode(body.encode("ascii"), validate=True)
    if tag == "$m" and isinstance(body, list) and len(body) == 6:
        topic, partition, offset, key, value, stamp = body
        _expect(isinstance(topic, str) and isinstance(partition, int)
                and isinstance(offset, int) and isinstance(stamp, list) and len(stamp) == 2
                and all(isinstance(x, int) for x in stamp), "bad message")
        key, value = _decode(key, depth + 1), _decode(value, depth + 1)
        _expect(all(x is None or isinstance(x, bytes) for x in (key, value)), "bad message")
        return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                       timestamp=tuple(stamp))
    if tag == "$tp" and isinstance(body, list) and len(body) == 3:
        topic, partition, offset = body
        _expect(isinstance(topic, str) and isinstance(partition, int)
                and isinstance(offset, int), "bad topic partition")
        return TopicPartition(topic, partition, offset)
    if tag == "$gm" and isinstance(body, list) and len(body) == 3:
        return GroupMetadata(*body)
    if tag == "$d" and isinstance(body, dict):
        return {str(key): _decode(item, depth + 1) for key, item in body.items()}
    raise ValueError(f"unknown tag {tag!r}")


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(what)


_ERROR_TYPES = {cls.__name__: cls for cls in (
    ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError,
    NotImplementedError, ProcessingError)}


def _encode_error(exc: Exception) -> list:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
        return ["kafka", error.code(), error.str(), error.fatal(), error.retriable(),
                error.txn_requires_abort()]
    name = type(exc).__name__ if type(exc).__name__ in _ERROR_TYPES else "RuntimeError"
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return ["error", name, text]


def _rebuild_error(data: list) -> BaseException:
    if data[0] == "kafka":
        code, reason, fatal, retriable, abortable = data[1:]
        return KafkaException(KafkaError(code, reason, fatal=fatal, retriable=retriable,
                                         txn_requires_abort=abortable))
    return _ERROR_TYPES.get(data[1], RuntimeError)(data[2])


def _send(conn: Connection, message: list) -> None:
    conn.send_bytes(json.dumps(message, separators=(",", ":")).encode())


class _Channel:
    """The child's end of the wire: every proxy call is a request and a reply."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        _send(self._conn, ["call", target, method, _encode(list(args)),
                           {key: _encode(value) for key, value in kwargs.items()}])
        reply = json.loads(self._conn.recv_bytes())
        if reply[0] == "ok":
            return _decode(reply[1])
        if reply[0] == "crash":
            raise Crash(*reply[1:4])
        raise _rebuild_error(reply[1])

    def report(self, message: list) -> None:
        with suppress(OSError):
            _send(self._conn, message)


def _serve(conn: Connection, gate: _Gate, deadline: float) -> _Outcome:
    """The grader's end: perform the child's calls until its app run ends."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not conn.poll(remaining):
            return _Outcome("hang")
        try:
            raw = conn.recv_bytes(WIRE_BYTES_MAX)
        except EOFError:
            return _Outcome("eof")
        except OSError:
            return _Outcome("broken", "a request larger than the grader accepts")
        try:
            message = json.loads(raw)
            kind = message[0]
            if kind == "call":
                target, method, args, kwargs = message[1:5]
                _expect(isinstance(target, str) and isinstance(method, str)
                        and isinstance(args, list) and isinstance(kwargs, dict), "bad call")
                args = tuple(_decode(args))
                kwargs = {str(key): _decode(value) for key, value in kwargs.items()}
            elif kind == "raised":
                return _Outcome("raised", str(message[1])[:300], str(message[2])[:80],
                                str(message[3])[:2000])
            elif kind in ("returned", "flood"):
                return _Outcome(kind)
            elif kind == "exit":
                return _Outcome("exit", str(message[1])[:80])
            else:
                return _Outcome("broken", f"an unknown message {str(kind)[:40]!r}")
        except Exception:  # whatever the child sent, it is not a well-formed request
            return _Outcome("broken", "a message the grader could not read")
        try:
            reply = ["ok", _encode(gate.call(target, method, args, kwargs))]
        except Crash as crash:
            with suppress(OSError):
                _send(conn, ["crash", crash.actor, crash.point, crash.phase])
            return _Outcome("crashed")
        except _TooManyCalls:
            return _Outcome("calls")
        except Exception as exc:  # the learner's call failed: tell the learner
            reply = ["err", _encode_error(exc)]
        try:
            _send(conn, reply)
        except OSError:
            return _Outcome("eof")


# ----- the sandbox: a zygote forked before any World, one child per app run -------------------


class _Sandbox:
    """Forks the zygote on entry; ``run`` plays one app run in a fresh child of it."""

    def __init__(self, fn: Callable, limits: _Limits) -> None:
        self.fn = fn
        self.limits = limits
        self._context = multiprocessing.get_context("fork")
        self._zygote = None
        self._control: Connection | None = None

    def __enter__(self) -> _Sandbox:
        here, there = self._context.Pipe()
        self._zygote = self._context.Process(target=_zygote, args=(there, here, self.fn,
                                                                  self.limits),
                                             name="grading-zygote", daemon=True)
        self._zygote.start()
        there.close()
        self._control = here
        return self

    def __exit__(self, *exc_info) -> None:
        with suppress(OSError):
            self._control.send_bytes(b"quit")
        self._control.close()
        self._zygote.join(timeout=2)
        if self._zygote.is_alive():
            self._zygote.kill()
            self._zygote.join()

    def _ask(self, request: bytes, handle: int | None = None) -> bytes:
        try:
            self._control.send_bytes(request)
            if handle is not None:
                send_handle(self._control, handle, self._zygote.pid)
            if not self._control.poll(10):
                raise EOFError
            return self._control.recv_bytes(64)
        except (EOFError, OSError):
            raise CheckFailed("The grader's helper process died (did your code kill it?). "
                              "The check cannot run, so it fails.") from None

    def run(self, gate: _Gate, deadline: float) -> _Outcome:
        """One app run of the learner's function in a new child process."""
        here, there = self._context.Pipe()
        try:
            pid = int(self._ask(b"run", there.fileno()))
            there.close()
            outcome = _serve(here, gate, deadline)
            status = int(self._ask(f"end {pid}".encode()))
        finally:
            here.close()
            there.close()
        if outcome.kind == "eof":
            return _ended(status)
        return outcome


def _ended(status: int) -> _Outcome:
    """How a child that closed the wire without a word ended (its wait status)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return _Outcome("hang", "CPU time limit")
        return _Outcome("killed", signal.Signals(number).name)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return _Outcome("exit", f"os._exit({code})")


class SourceFunction:
    """A learner's function known only by its source: defined inside the sandbox, never here.

    The trusted pass (``course_lib.autograde``) hands these to the checks, so the
    answer cells' code runs only in the zygote and its children: whatever it
    patches there cannot reach the grader that computes the verdict.
    """

    def __init__(self, source: str, name: str) -> None:
        self.source = source
        self.__name__ = name

    def __repr__(self) -> str:
        return f"SourceFunction(<{len(self.source)} characters>, {self.__name__!r})"

    def __call__(self, *args, **kwargs):
        raise RuntimeError("a SourceFunction is defined and called only inside the sandbox")

    def load(self) -> Callable:
        """Run the source (in the zygote) and return the function, or one that re-raises."""
        namespace: dict = {"__name__": "__answer__"}
        try:
            exec(compile(self.source, "<your answer cells>", "exec"), namespace)  # noqa: S102
            found = namespace.get(self.__name__)
            if callable(found):
                return found
            problem: BaseException = NameError(
                f"your answer cells define no function {self.__name__}")
        except Exception as error:  # the learner's code failed to load: each run reports it
            problem = error

        def broken(consumer, process):
            raise problem

        return broken


def _zygote(control: Connection, other_end: Connection, fn: Callable, limits: _Limits) -> None:
    """Fork one child per app run on request; kill and reap it when told.

    The zygote reaps its children only when the grader says ``end``, so a
    child's pid (and process group) cannot be reused before it is killed. When
    the grader goes away (``quit``, or the socket closes because it was
    interrupted), children still running are killed too.
    """
    other_end.close()
    running: set[int] = set()
    if isinstance(fn, SourceFunction):
        # The learner's top-level code runs here, on the learner's side, silenced.
        with open(os.devnull, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
            fn = fn.load()
    try:
        while True:
            request = control.recv_bytes(64)
            if request == b"run":
                handle = recv_handle(control)
                pid = os.fork()
                if pid == 0:
                    try:
                        control.close()
                        _child(Connection(handle), fn, limits)
                    finally:
                        os._exit(0)
                running.add(pid)
                with suppress(OSError):
                    os.setpgid(pid, pid)
                os.close(handle)
                control.send_bytes(str(pid).encode())
            elif request.startswith(b"end "):
                pid = int(request[4:])
                status = _reap(pid) if pid in running else 0
                running.discard(pid)
                control.send_bytes(str(status).encode())
            else:
                break
    except (EOFError, OSError):
        pass
    finally:
        for pid in running:
            _reap(pid)
        os._exit(0)


def _reap(pid: int) -> int:
    """Kill a child of the zygote and its process group; return its wait status."""
    for kill in (os.killpg, os.kill):
        with suppress(OSError):
            kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _child(conn: Connection, fn: Callable, limits: _Limits) -> None:
    """The learner's process for one app run: confined, talking only over ``conn``."""
    with suppress(OSError):
        os.setpgid(0, 0)
    channel = _Channel(conn)
    _confine(limits, channel)
    try:
        fn(_ConsumerProxy(channel.call), _ProcessProxy(channel.call))
    except SystemExit as exc:
        channel.report(["exit", _exit_text(exc)])
    except BaseException as exc:  # every escape is the app dying
        text, name, where = _describe(exc)
        channel.report(["raised", text, name, where])
    else:
        channel.report(["returned"])


class _Output(io.TextIOBase):
    """sys.stdout and sys.stderr of the child: counts what is printed, keeps nothing."""

    def __init__(self, limit: int, channel: _Channel) -> None:
        super().__init__()
        self._left = limit
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._left -= len(text)
        if self._left < 0:
            self._channel.report(["flood"])
            os._exit(0)
        return len(text)


def _confine(limits: _Limits, channel: _Channel) -> None:
    """CPU and memory limits, no terminal: the child cannot outlive or outgrow its run."""
    _lower(resource.RLIMIT_CPU, math.ceil(limits.time_s) + 1, extra=1)
    with suppress(OSError, ValueError):
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * resource.getpagesize()
        _lower(resource.RLIMIT_AS, size + limits.memory_mb * 2**20)
    _lower(resource.RLIMIT_FSIZE, 16 * 2**20)
    _lower(resource.RLIMIT_CORE, 0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    output = _Output(limits.output_bytes, channel)
    sys.stdin = sys.__stdin__ = open(os.devnull)  # noqa: SIM115 - lives as long as the child
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = output


def _lower(limit: int, soft: int, extra: int = 0) -> None:
    """Lower a resource limit (never raise it), soft and hard."""
    with suppress(OSError, ValueError):
        _, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        new_hard = soft + extra if hard == resource.RLIM_INFINITY else min(soft + extra, hard)
        resource.setrlimit(limit, (soft, new_hard))


# ----- explaining a failure -------------------------------------------------------------------


def _token(run: Replay) -> str:
    """check, seed, message count, plan and function name, as one short string."""
    payload = {"c": run.check, "f": run.function, "m": run.messages,
               "p": json.loads(run.plan.to_json()), "s": run.seed, "v": 1}
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")


def _untoken(token: str) -> dict:
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        data = json.loads(raw)
        if data.get("v") != 1 or data["c"] not in CHECKS:
            raise ValueError(data.get("v"))
        return data
    except Exception as exc:  # any damage means the same thing
        raise ValueError("not a replay token from a failure message; copy the whole "
                         "course_lib.replay(\"…\") line") from exc


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _plain(fault) -> str:
    """One fault, as a sentence a learner reads."""
    if isinstance(fault, CrashClient):
        nth = _ordinal(fault.nth)
        if fault.point == "process":
            if fault.phase == "before":
                return (f"your process crashed as the {nth} call of process(msg) began, "
                        f"before its effect")
            return (f"your process crashed as the {nth} call of process(msg) finished: "
                    f"its effect happened, but the call never returned to your code")
        if fault.phase == "before":
            return (f"your process crashed during the {nth} call of {fault.point}, "
                    f"before it took effect")
        return (f"your process crashed during the {nth} call of {fault.point}, after it "
                f"took effect but before it returned to your code")
    if isinstance(fault, FailProcessing):
        return (f"the {_ordinal(fault.nth)} call of process(msg) raised ProcessingError "
                f"(a transient failure)")
    if isinstance(fault, DropMessages):
        numbers = ", ".join(f"#{n}" for n in range(fault.skip + 1, fault.skip + fault.count + 1))
        if fault.api == "offset_commit" and fault.kind == "response":
            return (f"the network lost the coordinator's answer to offset commit {numbers} "
                    f"(the commit was stored; your consumer never heard back)")
        if fault.api == "offset_commit":
            return (f"the network lost offset commit request {numbers} "
                    f"(it never reached the coordinator)")
        return f"the network lost {fault.api} {fault.kind} {numbers}"
    if isinstance(fault, KillBroker):
        when = f" at t={fault.at_ms}ms" if fault.at_ms is not None else ""
        return f"broker {fault.broker} crashed{when}"
    if isinstance(fault, RestartBroker):
        when = f" at t={fault.at_ms}ms" if fault.at_ms is not None else ""
        return f"broker {fault.broker} started again{when}"
    return repr(fault)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


_STORY = ("commit", "close", "crash", "fault", "note", "broker_crash", "broker_restart")


def _line(event, plain: dict) -> str:
    data, kind = event.data, event.kind
    value = _text(data.get("value"))
    if kind == "poll":
        what = f"poll() -> {value} (offset {data.get('offset')})"
    elif kind == "process":
        what = f"process({value}) done"
    elif kind == "commit":
        what = f"commit stored by the coordinator: next offset {data.get('offset')}"
    elif kind == "seek":
        what = f"seek to offset {data.get('offset')}"
    elif kind == "close":
        what = "close()"
    elif kind == "crash" and data.get("reason") == "grader":
        what = f"CRASH: {data.get('point')}"
    elif kind == "crash":
        fault = CrashClient(str(data.get("point")), str(data.get("phase")), int(data.get("nth")))
        what = "CRASH: " + _plain(fault).removeprefix("your process crashed ")
    elif kind == "fault":
        what = f"FAULT: {plain.get(data.get('fault'), data.get('fault'))}"
    elif kind == "note":
        what = f"{data.get('text')}"
    elif kind == "broker_crash":
        what = "crashes"
    else:
        what = "starts again"
    return f"  t={event.time_ms}ms  {event.actor}: {what}"


def _story(run: Replay, before: int = 7, after: int = 4) -> list[str]:
    """The learner's calls and what they caused, around the first fault (or at the end)."""
    plain = {repr(fault): _plain(fault) for fault in run.plan.faults}
    entries = [(index + 1, 0, event.kind in ("crash", "fault"), _line(event, plain))
               for index, event in enumerate(run.history.events)
               if index >= run.installed_at and event.kind in _STORY]
    entries += [(index, 1, False, f"  t={when}ms  {text}") for index, when, text in run.calls]
    entries.sort(key=lambda entry: entry[:2])
    anchor = next((i for i, entry in enumerate(entries) if entry[2]), None)
    if anchor is None or run.failure.kind in ("progress", "clean-lost", "clean-duplicate"):
        chosen = entries[-(before + after):]
    else:
        chosen = entries[max(0, anchor - before):anchor + after + 1]
    return [entry[3] for entry in chosen]


def _restart_commit(run: Replay) -> int | None:
    """The committed offset when the app first started again after a fault."""
    events = run.history.events
    fault = next((i for i in range(run.installed_at, len(events))
                  if events[i].kind in ("crash", "fault")), None)
    if fault is None:
        return None
    restart = next((i for i in range(fault, len(events)) if events[i].kind == "note"), None)
    return _committed(run.history, restart) if restart is not None else None


def _why(run: Replay) -> list[str]:
    failure = run.failure
    value, offset = _text(failure.value), failure.offset
    restart = _restart_commit(run)
    if failure.kind == "lost":
        if any(isinstance(f, FailProcessing) for f in run.plan.faults):
            return ["process(msg) raised ProcessingError and your code committed past the "
                    "message anyway. A message whose processing failed must not be committed: "
                    "let the error propagate (the app restarts and reads it again) or call "
                    "process(msg) again."]
        if restart is not None and offset is not None and restart > offset:
            return [f"When the app restarted, the group's committed offset was already "
                    f"{restart}, past {value} (offset {offset}): the new consumer began after "
                    f"it. For at-least-once, commit a message only after process(msg) "
                    f"returned."]
        return [f"{value} was never passed to process(msg) by any run of the app."]
    if failure.kind == "duplicate":
        times = [f"t={e.time_ms}ms by {e.actor}" for e in run.history.of_kind("process")
                 if e.data.get("value") == failure.value]
        lines = [f"It was processed at {', then at '.join(times)}."]
        if restart is not None and offset is not None and restart == offset:
            lines.append(f"When the app restarted, the group's committed offset was {offset}, "
                         f"the offset of {value} itself, so the new consumer read it again. "
                         f"The committed offset is the NEXT message to read: msg.offset() + 1 "
                         f"(commit(message=msg) does that for you).")
        else:
            shown = "not set (nothing committed yet)" if restart is None else restart
            lines.append(f"When the app restarted, the group's committed offset was {shown}, "
                         f"not past offset {offset}, so the new consumer read {value} again. "
                         f"For at-most-once, commit synchronously (asynchronous=False) BEFORE "
                         f"process(msg): an asynchronous commit still in flight when the "
                         f"process dies is lost.")
        return lines
    if failure.kind == "clean-lost":
        return ["Your function returned without passing it to process(msg). Keep polling until "
                "poll() returns None, and process every message it returns."]
    if failure.kind == "clean-duplicate":
        return ["Your function passed it to process(msg) twice although nothing failed."]
    if failure.kind == "progress":
        committed, end = failure.detail.split("/")
        if committed == "None":
            return ["Your consumer never committed, so a restarted app would start over from "
                    "the beginning. A consumer that never commits is not at-least-once: "
                    "commit each message after process(msg) returned."]
        if int(committed) == int(end) - 1:
            return [f"The committed offset is {committed}, the offset of the last message "
                    f"itself. The committed offset is the NEXT message to read: "
                    f"msg.offset() + 1 (commit(message=msg) does that for you)."]
        return [f"The committed offset stopped at {committed}: commit each message after "
                f"process(msg) returned, synchronously, so the commit really happens."]
    return []


def _headline(run: Replay, limit_s: float) -> str:
    failure, fn = run.failure, run.function
    value, offset = _text(failure.value), failure.offset
    if failure.kind == "lost":
        return f"message {value} (offset {offset}) was LOST: it was never processed."
    if failure.kind == "duplicate":
        count = sum(1 for e in run.history.of_kind("process")
                    if e.data.get("value") == failure.value)
        return f"message {value} (offset {offset}) was processed {count} times (a DUPLICATE)."
    if failure.kind == "progress":
        committed, end = failure.detail.split("/")
        shown = "never set" if committed == "None" else committed
        return (f"no PROGRESS: every message was processed, but the group's committed offset "
                f"is {shown} instead of the log end, {end}.")
    if failure.kind == "clean-lost":
        return f"on a run with NO faults, message {value} (offset {offset}) was never processed."
    if failure.kind == "clean-duplicate":
        return f"on a run with NO faults, message {value} (offset {offset}) was processed twice."
    if failure.kind == "error":
        error = run.errors[0]
        detail = f": {error.detail}" if error.detail else ""
        return f"on a run with NO faults, {fn}() raised {error.error_type}{detail}\n{error.where}"
    if failure.kind == "hang":
        return (f"{fn}() did not finish within {limit_s:g} s (an infinite loop? a blocking "
                f"call?). The grader stopped it; that counts as a crash, and the check fails.")
    if failure.kind == "calls":
        return (f"{fn}() made more than {_calls_max(run.messages)} calls on consumer and "
                f"process in one run of the app without returning. Does your loop stop when "
                f"poll() returns None, and stop after a crash instead of retrying forever?")
    if failure.kind == "exit":
        return (f"{fn}() ended its own process ({failure.detail}). The grader counts that as "
                f"a crash, and the check fails: return from the function instead.")
    if failure.kind == "flood":
        return (f"{fn}() printed more than {OUTPUT_LIMIT_BYTES} characters in one run. The "
                f"grader stopped it; that counts as a crash, and the check fails.")
    if failure.kind == "killed":
        return (f"{fn}()'s process was killed by {failure.detail} (more than "
                f"{MEMORY_LIMIT_MB} MB of memory?). That counts as a crash; the check fails.")
    return (f"{fn}() broke its connection to the simulated cluster ({failure.detail}); "
            f"the check fails.")


def _explain(run: Replay, limit_s: float) -> str:
    """The failure message: what, which fault, why, what the code did, how to replay."""
    chosen = CHECKS[run.check]
    lines = [f"check_{run.check} failed ({chosen.guarantee}): {_headline(run, limit_s)}"]
    if run.plan.faults:
        lines += ["", "The fault that caused it:" if len(run.plan) == 1 else
                  "The faults that caused it (a minimal set):"]
        lines += [f"  - {_plain(fault)}" for fault in run.plan.faults]
    why = _why(run)
    if why:
        lines += ["", *why]
    if run.errors and run.failure.kind not in ("error",):
        first = run.errors[0]
        lines += ["", f"Your function also raised {first.error_type}: {first.detail}"]
    if run.failure.kind != "hang":
        lines += ["", "What your code did just before:", *_story(run)]
    lines += ["", f"Minimal fault plan: {run.plan!r} (seed {run.seed})",
              f"Replay it and draw the timeline: course_lib.replay(\"{_token(run)}\")"]
    return "\n".join(lines)
