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

**Isolation** (DESIGN §6). The learner's function runs only in the children of
:mod:`course_lib.grading.sandbox`; here it receives proxy ``consumer`` and
``process`` objects whose calls reach the real Consumer through :class:`_Gate`,
which also counts them (a cap per app run) and logs them for the failure
message. A child that hangs, exits, floods output, dies of a signal or breaks
the protocol is recorded in the History as a crash of its process and ends the
check as a failure with a plain message.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Message

from course_lib.checker import Report, check
from course_lib.cluster import Cluster
from course_lib.faults import (
    PHASES,
    Crash,
    CrashClient,
    DropMessages,
    FailProcessing,
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
    TooManyCalls,
    call_with_proxies,
    encode_token,
    notebook_function,
)
from course_lib.scenarios import message_values, seed_topic

__all__ = [
    "Campaign",
    "Replay",
    "check_at_least_once",
    "check_at_most_once",
    "replay_data",
]

TOPIC = "events"
GROUP = "app"
MESSAGES = 6
RANDOM_PLANS = 20
BROKERS = 3
CONSUMER_CONFIG = {"group.id": GROUP, "auto.offset.reset": "earliest",
                   "enable.auto.commit": False}
TIME_LIMIT_S = 10.0  # wall clock for one run of a plan, restarts included
CALLS_MAX = 500  # client and process calls per app run (at least 10 per message)
RUNS_MAX = 12  # app runs (first start + restarts) per plan
RERUN_DELAY_MS = 5_000  # an app that stopped early (poll() came back empty) runs again


@dataclass(frozen=True)
class _Check(Check):
    progress: bool  # at-least-once also owes progress: the committed offset reaches the end


CHECKS = {
    "at_most_once": _Check("at_most_once", "at-most-once", progress=False),
    "at_least_once": _Check("at_least_once", "at-least-once", progress=True),
}


@dataclass
class Replay(Played):
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

    def __repr__(self) -> str:
        return (f"<Replay check_{self.check} seed={self.seed} {self.verdict}: "
                f"{self.report.summary()}; plan {self.plan!r}>")

    def _repr_svg_(self) -> str | None:
        """The timeline of this run, when course_lib.viz is available."""
        return timeline_svg(self.history, f"replay of check_{self.check}: {self.plan!r}",
                            self.report)


@dataclass(frozen=True)
class _Failure:
    kind: str  # lost duplicate progress clean-lost clean-duplicate error | abort kinds
    value: bytes | None = None
    offset: int | None = None
    detail: str = ""


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


def replay_data(data: dict, fn: Callable | None = None, *, isolated: bool = True,
                time_limit_s: float = TIME_LIMIT_S) -> Replay:
    """Play the run a failure message's token named again (see ``course_lib.replay``).

    ``fn`` defaults to the function of that name in the notebook (``__main__``).
    By default each app run is a fresh child process, as in grading, so the
    replay is the graded run exactly. ``isolated=False`` calls ``fn`` in this
    process instead (no fork, no limits, for exploring): then module-level state
    of the learner's code survives "restarts", which a real restart forbids.
    """
    chosen = CHECKS[data["c"]]
    plan = FaultPlan.from_json(json.dumps(data["p"]))
    fn = notebook_function(data["f"]) if fn is None else fn
    with app_runner(fn, _DRIVER, time_limit_s, isolated) as runner:
        run = _play(chosen, data["s"], data["m"], plan, runner, time_limit_s, data["f"])
    if run.failure is not None:
        run.message = _explain(run, time_limit_s)
    return run


# ----- the campaign ---------------------------------------------------------------------------


def _campaign(chosen: _Check, fn: Callable, seed: int, random_plans: int, messages: int,
              time_limit_s: float) -> Campaign:
    require_callable(chosen.name, fn)
    require_count("messages", messages)
    name = getattr(fn, "__name__", "your_function")
    with app_runner(fn, _DRIVER, time_limit_s) as runner:

        def play(plan: FaultPlan) -> Replay:
            return _play(chosen, seed, messages, plan, runner, time_limit_s, name)

        failing, runs = hunt(play, lambda clean: [
            (plan,) for plan in _plans(chosen, seed, clean, random_plans)])
    if failing is None:
        return Campaign(chosen.name, seed, runs)
    raise_failure(failing, _explain(failing, time_limit_s), _token(failing),
                  failing.failure.kind == "error"
                  and failing.failure.detail == "NotImplementedError")


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


# ----- one run of a plan ----------------------------------------------------------------------


def _play(chosen: _Check, seed: int, messages: int, plan: FaultPlan,
          runner: Callable[[_Gate, float], Outcome], time_limit_s: float,
          function: str) -> Replay:
    """Seed a fresh cluster, install ``plan``, run the app until done, restarting it."""
    cluster = Cluster(brokers=BROKERS, seed=seed)
    cluster.create_topic(TOPIC)
    seed_topic(cluster, message_values(messages))
    history = cluster.history
    end = log_end(history)
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
        if outcome.kind in ABORTS:
            record_crash(cluster, app, abort_point(outcome.kind), number)
            stop = outcome
            break
        if not app.alive:
            continue  # the fault plan crashed it; a new process takes over
        if outcome.kind in ("raised", "crashed"):
            record_crash(cluster, app, f"uncaught {outcome.error_type or 'exception'}", number)
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


def _calls_max(messages: int) -> int:
    return max(CALLS_MAX, 10 * messages)


def _caught_up(history, consumer_name: str, end: int) -> bool:
    """Did this app run read to the end, or is everything already committed?"""
    polled = [e.data["offset"] for e in history.of_kind("poll") if e.actor == consumer_name]
    committed = committed_offset(history, GROUP, TOPIC)
    return max(polled, default=-1) + 1 >= end or (committed is not None and committed >= end)


def _judge(chosen: _Check, run: Replay, stop: Outcome | None, end: int) -> _Failure | None:
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
        committed = committed_offset(history, GROUP, TOPIC)
        due = progress_due(history.events[run.installed_at:], end)
        if chosen.progress and due and committed != end:
            return _Failure("progress", detail=f"{committed}/{end}")
    return None


def _offsets(history) -> dict:
    """value -> offset, from the acknowledgements of the seeding producer."""
    return {e.data["value"]: e.data["offset"] for e in history.of_kind("ack")}


# ----- the gate: the only way into the World --------------------------------------------------


_CONSUMER_API = frozenset({
    "assign", "assignment", "close", "commit", "committed", "consume",
    "consumer_group_metadata", "poll", "position", "seek", "subscribe",
})
_DRIVER = call_with_proxies(
    ("consumer", _CONSUMER_API, f"<Consumer group={GROUP!r} topic={TOPIC!r}>"),
    ("process", frozenset({"__call__"}), "<process(msg)>"),
)


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
        self.log.append(call_entry(self.history.events, self.actor, text, before_last))

    def _perform(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        self.calls += 1
        if self.calls > self.calls_max:
            raise TooManyCalls()
        if target == "process" and method == "__call__":
            if len(args) != 1 or kwargs:
                raise TypeError("process() takes exactly one argument: a message")
            message = args[0]
            if not isinstance(message, Message) or message_identity(message) not in self.delivered:
                raise TypeError("process() takes a message that consumer.poll() returned "
                                "in this run of the app")
            return self.process(message)
        if target != "consumer" or method not in _CONSUMER_API:
            raise AttributeError(f"the consumer here has no method {method!r}; it offers "
                                 + ", ".join(sorted(_CONSUMER_API)))
        result = getattr(self.consumer, method)(*args, **kwargs)
        for item in result if isinstance(result, list) else (result,):
            if isinstance(item, Message):
                self.delivered.add(message_identity(item))
        return result


def _call_text(target: str, method: str, args: tuple, kwargs: dict, result: object,
               error: str | None, crashed: bool = False) -> str:
    """``consumer.commit(message=m-001 (offset 1), asynchronous=False) returned``."""
    if target == "process":
        head = f"process({', '.join(arg_text(a) for a in args)})"
    else:
        shown = [arg_text(a) for a in args] + [f"{k}={arg_text(v)}" for k, v in kwargs.items()]
        head = f"consumer.{method}({', '.join(shown)})"
    if crashed:
        return f"{head} never returned: the process died in it"
    if error is not None:
        return f"{head} raised {error}"
    if method == "poll":
        return f"{head} -> {arg_text(result)}"
    if method == "commit":
        asynchronous = kwargs.get("asynchronous", args[2] if len(args) > 2 else True)
        if asynchronous is not False:
            return f"{head} returned (asynchronous: the commit is still on its way)"
        return f"{head} returned"
    if result is None:
        return f"{head} returned"
    return f"{head} -> {arg_text(result)}"


# ----- explaining a failure -------------------------------------------------------------------


def _token(run: Replay) -> str:
    """check, seed, message count, plan and function name, as one short string."""
    return encode_token({"c": run.check, "f": run.function, "m": run.messages,
                         "p": json.loads(run.plan.to_json()), "s": run.seed})


def _plain(fault) -> str:
    """One fault, as a sentence a learner reads (process calls and offset commits are ps1's)."""
    if isinstance(fault, CrashClient) and fault.point == "process":
        nth = ordinal(fault.nth)
        if fault.phase == "before":
            return (f"your process crashed as the {nth} call of process(msg) began, "
                    f"before its effect")
        return (f"your process crashed as the {nth} call of process(msg) finished: "
                f"its effect happened, but the call never returned to your code")
    if isinstance(fault, DropMessages) and fault.api == "offset_commit":
        if fault.kind == "response":
            return (f"the network lost the coordinator's answer to offset commit "
                    f"{drop_numbers(fault)} (the commit was stored; your consumer never "
                    f"heard back)")
        return (f"the network lost offset commit request {drop_numbers(fault)} "
                f"(it never reached the coordinator)")
    return describe_fault(fault)


_STORY = ("commit", "close", "crash", "fault", "note", "broker_crash", "broker_restart")


def _line(event, plain: dict) -> str:
    data, kind = event.data, event.kind
    value = value_text(data.get("value"))
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
    elif kind == "crash":
        what = grader_crash(data, _plain, CRASHED)
    elif kind == "fault":
        what = f"FAULT: {plain.get(data.get('fault'), data.get('fault'))}"
    elif kind == "note":
        what = f"{data.get('text')}"
    elif kind == "broker_crash":
        what = "crashes"
    else:
        what = "starts again"
    return at(event.time_ms, event.actor, what)


def _story(run: Replay, before: int = 7, after: int = 4) -> list[str]:
    """The learner's calls and what they caused, around the first fault (or at the end)."""
    plain = {repr(fault): _plain(fault) for fault in run.plan.faults}
    entries = [(index + 1, 0, event.kind in ("crash", "fault"), _line(event, plain))
               for index, event in enumerate(run.history.events)
               if index >= run.installed_at and event.kind in _STORY]
    entries = merge(entries, run.calls)
    anchor = next((i for i, entry in enumerate(entries) if entry[2]), None)
    tail = run.failure.kind in ("progress", "clean-lost", "clean-duplicate")
    return [entry[3] for entry in window(entries, anchor, before, after, tail)]


def _restart_commit(run: Replay) -> int | None:
    """The committed offset when the app first started again after a fault."""
    restart = first_restart(run.history.events, run.installed_at)
    return committed_offset(run.history, GROUP, TOPIC, restart) if restart is not None else None


def _why(run: Replay) -> list[str]:
    failure = run.failure
    value, offset = value_text(failure.value), failure.offset
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
    value, offset = value_text(failure.value), failure.offset
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
    return abort_headline(failure.kind, _abort_words(run), failure.detail, limit_s)


def _abort_words(run: Replay) -> AbortWords:
    """ps1's words for an abort: an app that restarts, so an abort is a crash."""
    fn = run.function
    return AbortWords(
        f"{fn}()",
        calls=(f"{fn}() made more than {_calls_max(run.messages)} calls on consumer and "
               f"process in one run of the app without returning. Does your loop stop when "
               f"poll() returns None, and stop after a crash instead of retrying forever?"),
        instead="return from the function")


def _explain(run: Replay, limit_s: float) -> str:
    """The failure message: what, which fault, why, what the code did, how to replay."""
    return failure_message(
        run.check, CHECKS[run.check].guarantee, _headline(run, limit_s),
        faults=[_plain(fault) for fault in run.plan.faults], why=_why(run), errors=run.errors,
        kind=run.failure.kind, story=lambda: _story(run), plan=repr(run.plan), seed=run.seed,
        token=_token(run))
