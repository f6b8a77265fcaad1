"""The ps5 autograder: attack the topic and producer settings a learner chose, on the toy cluster.

The learner writes ``choose_config(failures_to_tolerate, brokers)`` (DESIGN §6,
ps5): ``replication.factor``, ``min.insync.replicas``, ``acks``,
``unclean.leader.election.enable`` and ``enable.idempotence``. The function
runs once per check in a sandboxed child (:func:`~course_lib.grading.sandbox.
answer_each_case`), answering every case ``(f, brokers)``; each returned
config is validated by :mod:`course_lib.config` (a ``ConfigException`` becomes
a failure naming the key, the value and what is allowed), and then the grader,
in its own process, plays it against fresh seeded clusters:

- :func:`check_durability`: a producer with the chosen settings writes a
  stream of records while the nemesis attacks: the leader crashes right after
  an acknowledgement, a broker is cut off from its peers (its replicas fall out
  of the ISR, or, as leader, it drops its followers from the ISR), the
  in-sync replicas crash while a stale one stays up, and seeded random plans
  mixing these. At most ``f`` brokers are down at any moment; a crashed broker
  comes back with its disk, or never. The verdict: no acknowledged write may
  be missing from every broker still up at the end (``lost_acked`` of
  :func:`course_lib.checker.check`).
- :func:`check_availability`: with any ``f`` brokers down (together, or one
  after another) a producer with the chosen settings still gets every write
  acknowledged.
- :func:`check_too_few_brokers`: with fewer than ``2f + 1`` brokers no
  settings give both, so ``choose_config`` must raise ``ValueError``.

Why "lost" means "on no surviving broker" rather than "not readable now":
when the last in-sync replica of a partition dies for good, classic Kafka
keeps the partition offline (clean election only), although other, out-of-sync
replicas still hold every acknowledged record; Kafka 4's eligible leader
replicas (KIP-966) elect one of them. The toy leaves such a partition offline,
so reading it would call a write lost that every current Kafka keeps. A write
on no surviving broker, or truncated away by an unclean election, is lost on
every Kafka.

A failure is shrunk to a minimal plan and explained (the record, the faults,
what the cluster did just before, why the settings allowed it) with a
``course_lib.replay("…")`` line that plays the same run again.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from course_lib.checker import Report, check
from course_lib.cluster import Cluster
from course_lib.config import producer_config, topic_config
from course_lib.errors import ConfigException
from course_lib.faults import DelayMessages, FaultPlan, Isolate, KillBroker, RestartBroker
from course_lib.grading.campaign import (
    Check,
    Played,
    app_runner,
    raise_failure,
    require_callable,
    shrink,
    timeline_svg,
)
from course_lib.grading.explanation import (
    AbortWords,
    abort_headline,
    causes,
    describe_fault,
    ordinal,
    replay_lines,
    value_text,
    window,
)
from course_lib.grading.sandbox import (
    ABORTS,
    CheckFailed,
    Outcome,
    TooManyCalls,
    answer_each_case,
    encode_token,
    notebook_function,
)

__all__ = [
    "Campaign",
    "Replay",
    "check_availability",
    "check_durability",
    "check_too_few_brokers",
    "replay_data",
]

TOPIC = "events"
TOPIC_KEYS = ("replication.factor", "min.insync.replicas", "unclean.leader.election.enable")
PRODUCER_KEYS = ("acks", "enable.idempotence")
REQUIRED_KEYS = TOPIC_KEYS + PRODUCER_KEYS
# The grading cluster: followers that stop fetching leave the ISR within seconds
# (Kafka's default replica.lag.time.max.ms is 30 s; only the pace changes).
BROKER_CONFIG = {"replica.lag.time.max.ms": 3_000}
# The grading producer gives up on a write after 20 s (Kafka's default is 120 s) and waits
# 500 ms between retries (100 ms by default; Kafka 3.7+ backs off exponentially to 1 s).
PRODUCER_LIMITS = {"delivery.timeout.ms": 20_000, "request.timeout.ms": 5_000,
                   "retry.backoff.ms": 500}
MESSAGES = 30
START_MS = 1_000
PACE_MS = 500
SETTLE_MS = 15_000
FETCH_DELAYS_MS = (50, 200, 500)  # how slowly followers copy writes (the environment)
RANDOM_PLANS = 6
AVAILABILITY_MESSAGES = 5
TIME_LIMIT_S = 3.0  # wall clock for the one run of choose_config over all cases
DURABILITY_CASES = ((1, 3),)
AVAILABILITY_CASES = ((1, 3),)
TOO_FEW_CASES = ((1, 2), (2, 4), (1, 3))


CHECKS = {
    "durability": Check("durability", "no acknowledged write is lost"),
    "availability": Check("availability", "writes succeed with any f brokers down"),
    "too_few_brokers": Check("too_few_brokers", "refuse what cannot be promised"),
}


@dataclass(frozen=True)
class Campaign:
    """A passed check: how many cases and attack runs the settings survived."""

    check: str
    seed: int
    cases: tuple
    runs: int

    def __repr__(self) -> str:
        shown = ", ".join(f"choose_config({f}, {b})" for f, b in self.cases)
        return (f"<check_{self.check} passed: {self.runs} runs over {shown} "
                f"(seed {self.seed})>")


@dataclass
class Replay(Played):
    """One played attack: its case, settings, plan, cluster, Report and verdict."""

    check: str
    seed: int
    case: tuple
    config: dict | None
    plan: FaultPlan
    function: str
    cluster: Cluster | None = None
    failure: _Failure | None = None
    message: str | None = None
    down: tuple = ()
    _report: Report | None = field(default=None, repr=False)

    @property
    def report(self) -> Report | None:
        """The checker's Report of the History (computed when first asked: it is costly)."""
        if self._report is None and self.cluster is not None:
            self._report = check(self.cluster.history, delivered_by="log")
        return self._report

    @property
    def history(self):
        """The History the verdict was computed from (None for a rejected config)."""
        return None if self.cluster is None else self.cluster.history

    def __repr__(self) -> str:
        summary = self.report.summary() if self.report is not None else "no cluster run"
        return (f"<Replay check_{self.check} choose_config{self.case} seed={self.seed} "
                f"{self.verdict}: {summary}; plan {self.plan!r}>")

    def _repr_svg_(self) -> str | None:
        """The timeline of this run, when course_lib.viz is available."""
        if self.cluster is None:
            return None
        title = f"replay of check_{self.check}, choose_config{self.case}: {self.plan!r}"
        return timeline_svg(self.history, title, self.report)


@dataclass(frozen=True)
class _Failure:
    kind: str  # lost unavailable config raised answered abort
    value: bytes | None = None
    detail: str = ""


class _Answer:
    """What choose_config gave for one case: a config (dict) or an exception (type, text)."""

    def __init__(self, case: tuple, returned: object = None,
                 raised: tuple[str, str] | None = None) -> None:
        self.case = case
        self.returned = returned
        self.raised = raised


# ----- public API -----------------------------------------------------------------------------


def check_durability(choose_config: Callable, *, cases: Iterable = DURABILITY_CASES,
                     seed: int = 0, random_plans: int = RANDOM_PLANS,
                     time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade the settings on durability: no acknowledged write may be lost.

    For each case ``(f, brokers)`` the settings face the leader crashing after
    an ack, an ISR shrunk to its leader, an unclean-election trap and seeded
    random plans, with at most ``f`` brokers down at any moment. Raises
    :class:`CheckFailed` naming the lost record, the faults and a replay call.
    """
    return _campaign(CHECKS["durability"], choose_config, cases, seed, random_plans,
                     time_limit_s)


def check_availability(choose_config: Callable, *, cases: Iterable = AVAILABILITY_CASES,
                       seed: int = 0, apart: bool = False,
                       time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade the settings on availability: with any ``f`` brokers down, writes succeed.

    Every set of ``f`` brokers is killed (together; with ``apart`` also one
    after another), then a producer with the chosen settings sends a few
    records: each must be acknowledged. Raises :class:`CheckFailed` naming the
    record, the brokers down and the error the producer got.
    """
    return _campaign(CHECKS["availability"], choose_config, cases, seed, int(apart),
                     time_limit_s)


def check_too_few_brokers(choose_config: Callable, *, cases: Iterable = TOO_FEW_CASES,
                          time_limit_s: float = TIME_LIMIT_S) -> Campaign:
    """Grade the refusal: with fewer than 2f + 1 brokers, choose_config must raise ValueError.

    Cases with enough brokers must not raise (their settings are graded by
    the other checks), so refusing everything earns nothing.

    No settings both keep every acknowledged write through ``f`` failures
    (``min.insync.replicas`` >= f + 1) and accept writes with ``f`` brokers
    down (``replication.factor`` - f >= ``min.insync.replicas``) unless
    ``replication.factor`` >= 2f + 1, and a topic cannot have more replicas
    than the cluster has brokers.
    """
    return _campaign(CHECKS["too_few_brokers"], choose_config, cases, 0, 0, time_limit_s)


def replay_data(data: dict, fn: Callable | None = None, *, isolated: bool = True,
                time_limit_s: float = TIME_LIMIT_S) -> Replay:
    """Play the run a failure message's token named again (see ``course_lib.replay``).

    ``fn`` defaults to the function of that name in the notebook, asked again
    for the case (in a sandboxed child unless ``isolated=False``), so a fixed
    answer passes its replay. Without a notebook function the settings saved in
    the token are played.
    """
    chosen = CHECKS[data["c"]]
    case = (int(data["k"][0]), int(data["k"][1]))
    plan = FaultPlan.from_json(json.dumps(data["p"]))
    if fn is None:
        try:
            fn = notebook_function(data["f"])
        except LookupError:
            fn = None
    if fn is None:
        answer = _Answer(case, returned=data.get("cfg"))
    else:
        try:
            answer = _ask(fn, [case], time_limit_s, isolated)[0]
        except _Aborted as aborted:
            return _aborted_run(chosen, data["s"], case, data["f"], aborted)
    run = _judge_answer(chosen, data["s"], answer, data["f"])
    if run.failure is None and run.config is not None and chosen.name != "too_few_brokers":
        down = tuple(data.get("d", ()))
        run = _play(chosen, data["s"], case, run.config, plan, data["f"], down)
    if run.failure is not None:
        run.message = _explain(run)
    return run


# ----- asking the learner's function (in the sandbox) ------------------------------------------


class _Harness:
    """The gate for :func:`answer_each_case`: hands out the cases, collects the answers."""

    def __init__(self, cases: list[tuple]) -> None:
        self.cases = cases
        self.answers: list[_Answer] = []
        self.asked = 0
        self.calls = 0

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        self.calls += 1
        if self.calls > 2 * len(self.cases) + 4:
            raise TooManyCalls()
        if target != "harness":
            raise AttributeError(f"no {target} here")
        if method == "case":
            if self.asked >= len(self.cases):
                return None
            self.asked += 1
            return [list(self.cases[self.asked - 1]), {}]
        if method in ("answer", "raised") and len(self.answers) < self.asked:
            case = self.cases[len(self.answers)]
            if method == "answer":
                self.answers.append(_Answer(case, returned=args[0] if args else None))
            else:
                self.answers.append(_Answer(case, raised=(str(args[0]), str(args[1]))))
            return None
        raise AttributeError(f"the harness has no method {method!r} now")


_DRIVER = answer_each_case()


def _ask(fn: Callable, cases: list[tuple], time_limit_s: float,
         isolated: bool = True) -> list[_Answer]:
    """Call ``fn`` on every case in one run of a sandboxed child; the answers, in order."""
    harness = _Harness(cases)
    with app_runner(fn, _DRIVER, time_limit_s, isolated) as runner:
        outcome = runner(harness, _deadline(time_limit_s))
    if outcome.kind in ABORTS or outcome.kind == "raised" or len(harness.answers) < len(cases):
        raise _Aborted(outcome, getattr(fn, "__name__", "choose_config"), time_limit_s)
    return harness.answers


def _deadline(time_limit_s: float) -> float:
    return time.monotonic() + time_limit_s


class _Aborted(Exception):
    """The learner's process did not answer every case: it hung, exited, flooded…"""

    def __init__(self, outcome: Outcome, function: str, limit_s: float) -> None:
        super().__init__(_abort_text(outcome, function, limit_s))
        self.outcome = outcome


def _aborted_run(chosen: Check, seed: int, case: tuple, function: str,
                 aborted: _Aborted) -> Replay:
    """The Replay of an app run that never answered: no cluster, the reason as its failure."""
    run = Replay(chosen.name, seed, case, None, FaultPlan(), function)
    run.failure = _Failure("abort", detail=str(aborted))
    run.message = _explain(run)
    return run


def _abort_text(outcome: Outcome, fn: str, limit_s: float) -> str:
    """ps5's words for a child that never answered: one run, no restart, the grader its peer."""
    if outcome.kind == "raised":
        return (f"{fn}() returned something the grader cannot read ({outcome.error_type}: "
                f"{outcome.detail}). Return a plain dict of str keys and int, str or bool "
                f"values.")
    words = AbortWords(f"{fn}()", calls=f"{fn}() talked to the grader more than it should. "
                                        f"The check fails.",
                       instead="return the config, or raise ValueError,", peer="the grader",
                       crash=False, per_run="")
    return abort_headline(outcome.kind, words, outcome.detail, limit_s)


# ----- the campaign ---------------------------------------------------------------------------


def _campaign(chosen: Check, fn: Callable, cases: Iterable, seed: int, extra: int,
              time_limit_s: float) -> Campaign:
    require_callable(chosen.name, fn)
    cases = [_valid_case(case) for case in cases]
    name = getattr(fn, "__name__", "choose_config")
    try:
        answers = _ask(fn, cases, time_limit_s)
    except _Aborted as aborted:
        run = _aborted_run(chosen, seed, cases[0], name, aborted)
        raise CheckFailed(run.message, run, _token(run)) from None
    runs = 0
    for answer in answers:
        run = _judge_answer(chosen, seed, answer, name)
        if run.failure is None and run.config is not None and chosen.name != "too_few_brokers":
            run, played = _attack(chosen, seed, answer.case, run.config, name, extra)
            runs += played
        else:
            runs += 1
        if run.failure is not None:
            raise_failure(run, _explain(run), _token(run),
                          run.failure.detail == "NotImplementedError")
    return Campaign(chosen.name, seed, tuple(cases), runs)


def _valid_case(case: object) -> tuple[int, int]:
    f, brokers = case
    if any(isinstance(x, bool) or not isinstance(x, int) for x in (f, brokers)) or f < 0 \
            or brokers < 1:
        raise ValueError(f"a case is (failures_to_tolerate >= 0, brokers >= 1), not {case!r}")
    return (f, brokers)


def _judge_answer(chosen: Check, seed: int, answer: _Answer, function: str) -> Replay:
    """Was the answer of the right kind for its case? A Replay carrying the config if so."""
    f, brokers = answer.case
    run = Replay(chosen.name, seed, answer.case, None, FaultPlan(), function)
    possible = brokers >= 2 * f + 1
    if answer.raised is not None:
        kind, text = answer.raised
        if not (kind == "ValueError" and not possible):
            run.failure = _Failure("raised", text.encode(), kind)
        return run
    if chosen.name == "too_few_brokers":  # only the refusal is graded here
        if not possible:
            run.config = answer.returned if _plain(answer.returned) else None
            run.failure = _Failure("answered", detail=_show(answer.returned))
        return run
    try:
        run.config = _settings(answer.returned)
        topic_config(_topic(run.config), brokers)
    except ConfigException as error:
        run.config = answer.returned if _plain(answer.returned) else None
        run.failure = _Failure("config", detail=str(error))
    return run


def _settings(returned: object) -> dict:
    """The five settings, validated as Kafka would (ConfigException otherwise).

    Further producer keys (``retries``, ``linger.ms``…) are accepted and validated
    too; the grading producer's own limits (:data:`PRODUCER_LIMITS`) override them.
    """
    if not isinstance(returned, dict):
        raise ConfigException("choose_config()", returned, "Expected a dict of settings")
    missing = [key for key in REQUIRED_KEYS if key not in returned]
    if missing:
        raise ConfigException(missing[0], None, "Missing: choose_config must set "
                              + ", ".join(REQUIRED_KEYS))
    extra = {k: v for k, v in returned.items() if k not in REQUIRED_KEYS}
    topic_config(_topic(returned), 10**6)
    producer_config({key: returned[key] for key in PRODUCER_KEYS} | extra)
    return dict(returned)


def _topic(config: dict) -> dict:
    return {key: config[key] for key in TOPIC_KEYS}


def _producer(config: dict) -> dict:
    extra = {k: v for k, v in config.items() if k not in REQUIRED_KEYS}
    return {key: config[key] for key in PRODUCER_KEYS} | extra | PRODUCER_LIMITS


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:299] + "…"


def _attack(chosen: Check, seed: int, case: tuple, config: dict, function: str,
            extra: int) -> tuple[Replay, int]:
    """Every plan of the check against one config; the first failing run, shrunk."""
    runs = 0
    for plan, down in _plans(chosen, seed, case, config, extra):
        runs += 1
        run = _play(chosen, seed, case, config, plan, function, down)
        if run.failure is not None:
            return _shrink(run), runs
    return run, runs


def _plans(chosen: Check, seed: int, case: tuple, config: dict,
           extra: int) -> list[tuple[FaultPlan, tuple]]:
    f, brokers = case
    if chosen.name == "availability":
        return _availability_plans(f, brokers, apart=bool(extra))
    return [(plan, ()) for plan in _durability_plans(seed, f, brokers,
                                                     config["replication.factor"], extra)]


# ----- durability: the attacks ------------------------------------------------------------------


def _slow(delay_ms: int) -> DelayMessages:
    """Followers copy writes a little late: every replica fetch answer is delayed."""
    return DelayMessages(delay_ms, api="fetch", kind="response", count=10**6)


def _durability_plans(seed: int, f: int, brokers: int, rf: int, count: int) -> list[FaultPlan]:
    """The three shapes of the durability claims, sized for f, then seeded random plans."""
    plans = [FaultPlan((_slow(200),))]
    if f >= 1:
        plans.append(FaultPlan((_slow(200), KillBroker("leader", on="ack", nth=3))))
        if rf >= 2:
            plans.append(_leader_cut_off())
            plans.append(_stale_replica_left(f, rf))
    seen = {plan.to_json() for plan in plans}
    for index in range(count):
        plan = _random_plan(seed, f, brokers, rf, index)
        if plan.to_json() not in seen and _respects(plan, f):
            seen.add(plan.to_json())
            plans.append(plan)
    return plans


def _leader_cut_off() -> FaultPlan:
    """The leader loses its followers (the ISR shrinks to it), then dies for good."""
    return FaultPlan((_slow(200), Isolate(0, at_ms=0), KillBroker(0, at_ms=10_000)))


def _stale_replica_left(f: int, rf: int) -> FaultPlan:
    """Replica 1 falls behind; more leave the ISR; the f still in sync die; 1 is left up.

    With unclean election on, stale replica 1 becomes leader and the records
    it lacks are cut from every other replica that follows it.
    """
    shrink = rf - 1 - f  # further replicas to push out so that f stay in sync
    faults = [_slow(200), Isolate(1, at_ms=0)]
    faults += [Isolate(r, at_ms=7_000) for r in range(2, 2 + shrink)]
    faults += [KillBroker(r, at_ms=13_000) for r in [0, *range(2 + shrink, rf)]]
    return FaultPlan(tuple(faults))


def _random_plan(seed: int, f: int, brokers: int, rf: int, index: int) -> FaultPlan:
    """A seeded mix of slow replication, cut-off brokers and crashes (<= f down at once)."""
    rng = random.Random(f"grading/durability/{seed}/{f}/{brokers}/{index}")
    horizon_ms = START_MS + MESSAGES * PACE_MS
    faults: list = [_slow(rng.choice(FETCH_DELAYS_MS))]
    for _ in range(rng.randint(2, 4)):
        roll = rng.random()
        at_ms = rng.randrange(horizon_ms)
        if roll < 0.35 or f == 0:
            faults.append(Isolate(rng.randrange(min(rf + 1, brokers)), at_ms=at_ms,
                                  until_ms=at_ms + rng.randint(2_000, 12_000)))
        elif roll < 0.85:
            group = rng.sample(range(brokers), rng.randint(1, min(f, brokers)))
            back_ms = None if rng.random() < 0.3 else at_ms + rng.randint(500, 10_000)
            candidate = [KillBroker(b, at_ms=at_ms) for b in sorted(group)]
            if back_ms is not None:
                candidate += [RestartBroker(b, at_ms=back_ms) for b in sorted(group)]
            if _respects(FaultPlan(tuple(faults + candidate)), f):
                faults += candidate
        else:
            candidate = [KillBroker("leader", on="ack", nth=rng.randint(1, MESSAGES // 2))]
            if _respects(FaultPlan(tuple(faults + candidate)), f):
                faults += candidate
    return FaultPlan(tuple(faults))


def _respects(plan: FaultPlan, f: int) -> bool:
    """At most f brokers down at any moment (a leader killed on an ack: down for good)."""
    events: list[tuple[float, int, object]] = []
    for index, fault in enumerate(plan.faults):
        if isinstance(fault, KillBroker):
            broker = fault.broker if fault.broker != "leader" else ("leader", index)
            events.append((fault.at_ms if fault.at_ms is not None else -1, 1, broker))
        elif isinstance(fault, RestartBroker):
            events.append((fault.at_ms, 0, fault.broker))
    down: set = set()
    for _at, kind, broker in sorted(events, key=lambda e: (e[0], e[1])):
        if kind:
            down.add(broker)
        else:
            down.discard(broker)
        if len(down) > f:
            return False
    return True


# ----- availability: the attacks ----------------------------------------------------------------


def _availability_plans(f: int, brokers: int, apart: bool) -> list[tuple[FaultPlan, tuple]]:
    """No fault, then every set of f brokers down: together (and one after another)."""
    plans = [(FaultPlan(), ())]
    for down in itertools.combinations(range(brokers), f):
        if not down:
            continue
        plans.append((FaultPlan(tuple(KillBroker(b, at_ms=500) for b in down)), down))
        if apart and len(down) > 1:
            plans.append((FaultPlan(tuple(KillBroker(b, at_ms=500 + 2_000 * i)
                                          for i, b in enumerate(reversed(down)))), down))
    return plans


# ----- one run ----------------------------------------------------------------------------------


def _values(count: int, prefix: str = "w") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(count)]


def _play(chosen: Check, seed: int, case: tuple, config: dict, plan: FaultPlan,
          function: str, down: tuple = ()) -> Replay:
    """A fresh cluster with the chosen topic, the plan installed, a producer writing."""
    cluster = Cluster(brokers=case[1], seed=seed, config=BROKER_CONFIG)
    cluster.create_topic(TOPIC, _topic(config))
    cluster.install_faults(plan)
    run = Replay(chosen.name, seed, case, config, plan, function, cluster, down=down)
    if chosen.name == "availability":
        start_ms = max([fault.at_ms for fault in plan.faults] + [0]) + 1_000
        _write(cluster, config, _values(AVAILABILITY_MESSAGES), start_ms, 200)
        unacked = [v for v in _sent(cluster.history) if v not in _acked(cluster.history)]
        if unacked:
            run.failure = _Failure("unavailable", unacked[0])
        return run
    _write(cluster, config, _values(MESSAGES), START_MS, PACE_MS)
    held = _survivors(cluster)
    # The checker's lost_acked is "acknowledged, not in the final read": when every
    # acknowledged value is held, it is empty, and its per-value explanations are not needed.
    if not _acked(cluster.history) <= set(held) and run.report.lost_acked:
        run.failure = _Failure("lost", run.report.lost_acked[0])
    return run


def _write(cluster: Cluster, config: dict, values: list[str], start_ms: int,
           pace_ms: int) -> None:
    """The producer application: one record every ``pace_ms``, then flush."""
    producer = cluster.process("producer-app").producer(_producer(config))
    cluster.world.run(until_ms=start_ms)
    for value in values:
        producer.produce(TOPIC, value)
        until_ms = cluster.world.now_ms + pace_ms
        while cluster.world.now_ms < until_ms:  # serve each report as it arrives
            producer.poll((until_ms - cluster.world.now_ms) / 1000)
    producer.flush(PRODUCER_LIMITS["delivery.timeout.ms"] / 1000 + 1)


def _survivors(cluster: Cluster) -> list:
    """Heal the network, let replication settle, record what the brokers still up hold.

    Crashed brokers the plan did not restart stay down: they may never come back.
    """
    for broker in cluster.brokers:
        for other in cluster.brokers:
            cluster.network.reconnect(broker.name, other.name)
    cluster.history.record("note", "grader", text="end of the attack: the network heals; "
                           "brokers still down stay down (they may never come back)")
    cluster.settle(SETTLE_MS)
    held: list = []
    for broker in cluster.brokers:
        log = broker.logs.get((TOPIC, 0))
        if broker.alive and log is not None:
            held += [r.value for r in log.records if r.control is None and r.value not in held]
    leader = cluster.leader(TOPIC)
    cluster.history.record("final_read", "checker", topic=TOPIC, partition=0,
                           isolation="surviving brokers", values=held,
                           leader=leader)
    return held


def _sent(history) -> list:
    return [e.data["value"] for e in history.of_kind("send")]


def _acked(history) -> set:
    return {e.data["value"] for e in history.of_kind("ack")}


def _shrink(failing: Replay) -> Replay:
    """The failing attack with only the faults that matter, every smaller plan still legal.

    Availability plans are already single outages: nothing to drop. A durability
    plan may only shrink to plans that still crash at most f brokers (``_respects``).
    """
    if failing.check == "availability":
        return failing
    chosen, f = CHECKS[failing.check], failing.case[0]

    def play(plan: FaultPlan) -> Replay:
        return _play(chosen, failing.seed, failing.case, failing.config, plan, failing.function)

    return shrink(failing, play, lambda plan: _respects(plan, f))


# ----- explaining a failure -----------------------------------------------------------------------


def _token(run: Replay) -> str:
    return encode_token({"c": run.check, "f": run.function, "s": run.seed,
                         "k": list(run.case), "cfg": run.config if _plain(run.config) else None,
                         "p": json.loads(run.plan.to_json()), "d": list(run.down)})


def _plain(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and (v is None or isinstance(v, (bool, int, str)))
        for k, v in value.items())


_SHOWN_ORDER = ("replication.factor", "min.insync.replicas", "acks",
                "unclean.leader.election.enable", "enable.idempotence")


def _config_text(config: dict | None) -> str:
    if not isinstance(config, dict):
        return _show(config)
    return ", ".join(f"{key}={config[key]!r}" for key in _SHOWN_ORDER if key in config)


def _failures(f: int) -> str:
    return f"{f} failure" if f == 1 else f"{f} failures"


def _never_back(plan: FaultPlan, index: int) -> bool:
    """Did the broker this KillBroker hit stay down for the rest of the run?"""
    kill = plan.faults[index]
    if kill.broker == "leader":
        return True
    return not any(isinstance(later, RestartBroker) and later.broker == kill.broker
                   and (later.at_ms or 0) > (kill.at_ms or 0) for later in plan.faults)


def _plain_fault(plan: FaultPlan, index: int) -> str:
    """One fault of a plan, as a sentence a learner reads."""
    fault = plan.faults[index]
    if isinstance(fault, DelayMessages):
        return (f"replication is slow: every answer to a follower's fetch arrives "
                f"{fault.delay_ms} ms late (normal life, not a failure)")
    if isinstance(fault, KillBroker):
        gone = " and never came back" if _never_back(plan, index) else ""
        if fault.broker == "leader":
            return (f"the partition's leader crashed right after the producer's "
                    f"{ordinal(fault.nth)} acknowledgement{gone}")
        return f"broker {fault.broker} crashed at t={fault.at_ms}ms{gone}"
    if isinstance(fault, RestartBroker):
        return f"broker {fault.broker} came back at t={fault.at_ms}ms, with its disk"
    return describe_fault(fault)


def _headline(run: Replay) -> str:
    failure, (f, brokers) = run.failure, run.case
    call = f"choose_config({f}, {brokers})"
    if failure.kind == "lost":
        ack = _event(run.history, "ack", failure.value)
        offset = ack.data["offset"] if ack.data["offset"] >= 0 else "unknown with acks=0"
        return (f"acknowledged write {value_text(failure.value)} (offset {offset}) was "
                f"LOST: the producer was told at t={ack.time_ms}ms that it was stored, yet no "
                f"broker still up holds it.")
    if failure.kind == "unavailable":
        down = ", ".join(str(b) for b in run.down)
        where = f"with broker(s) {down} down" if run.down else "with every broker up"
        return (f"{where}, the producer's write {value_text(failure.value)} was never "
                f"acknowledged.")
    if failure.kind == "config":
        return f"{call} returned settings Kafka rejects: {failure.detail}"
    if failure.kind == "abort":
        return failure.detail
    if failure.kind == "answered":
        return (f"{call} returned {failure.detail}, but {brokers} brokers are too few to "
                f"promise both guarantees for {_failures(f)}.")
    text = value_text(failure.value)
    return f"{call} raised {failure.detail}" + (f": {text}" if text else "") + "."


def _why(run: Replay) -> list[str]:
    failure, (f, brokers) = run.failure, run.case
    if failure.kind == "lost":
        return _why_lost(run)
    if failure.kind == "unavailable":
        return _why_unavailable(run)
    if failure.kind == "abort":
        return []
    if failure.kind == "answered":
        return [f"Never losing an acknowledged write through {_failures(f)} needs "
                f"min.insync.replicas >= {f + 1}; accepting writes with {f} broker(s) down "
                f"needs replication.factor - {f} >= min.insync.replicas, so "
                f"replication.factor >= {2 * f + 1}, and a topic cannot have more replicas "
                f"than the {brokers} brokers. Raise ValueError and say why."]
    if failure.kind == "config":
        return ["Kafka checks every setting's type and range: replication.factor and "
                "min.insync.replicas are ints (min.insync.replicas <= replication.factor <= "
                "brokers), acks is a string (\"all\", \"1\" or \"0\"), and the two switches are "
                "the bools True or False (not the strings \"true\"/\"false\")."]
    if failure.detail == "NotImplementedError":
        return ["Write your answer in place of `raise NotImplementedError()`."]
    if brokers >= 2 * f + 1:
        return [f"With {brokers} brokers, settings that keep every acknowledged write through "
                f"{_failures(f)} and keep accepting writes exist (2f + 1 = {2 * f + 1} <= "
                f"{brokers}): return them."]
    return ["With too few brokers, raise ValueError (not another exception) saying why."]


def _isr_before(history, index: int) -> list:
    isr: list = []
    for event in history.events[:index]:
        if event.kind in ("isr", "election", "offline") and "isr" in event.data:
            isr = event.data["isr"]
    return isr


def _event(history, kind: str, value: object):
    return next(e for e in history.of_kind(kind) if e.data.get("value") == value)


def _why_lost(run: Replay) -> list[str]:
    history, value, config, f = run.history, run.failure.value, run.config, run.case[0]
    events = history.events
    ack_at = next(i for i, e in enumerate(events) if e.kind == "ack"
                  and e.data.get("value") == value)
    shown = value_text(value)
    holders = sorted({e.actor for e in events[:ack_at] if e.kind == "append"
                      and e.data.get("value") == value})
    isr = _isr_before(history, ack_at)
    unclean = next((e for e in events[ack_at:] if e.kind == "election"
                    and e.data.get("unclean")), None)
    if config["replication.factor"] <= f:
        return [f"replication.factor={config['replication.factor']} keeps {shown} on at most "
                f"{config['replication.factor']} broker(s), and {_failures(f)} can take them "
                f"all. To survive {_failures(f)}, every write needs at least {f + 1} copies."]
    if config["acks"] == "0":
        return [f"With acks='0' the producer counts {shown} as written the moment it sends "
                f"it, without waiting for any answer. The leader then crashed, and {shown} "
                f"was on no broker still up. Use acks=\"all\": a write is then acknowledged "
                f"only once every in-sync replica has it."]
    if config["acks"] != "all":
        cut = any(e.kind == "truncate" and value in (e.data.get("values") or ())
                  for e in events[ack_at:])
        then = ("when it came back it followed the new leader and cut it from its own log"
                if cut else "it never came back")
        return [f"With acks={config['acks']!r} the leader ({', '.join(holders)}) acknowledged "
                f"{shown} as soon as it had written it, without waiting for any follower. It "
                f"crashed before a follower had copied {shown}, so a follower that never had "
                f"it became leader, and {then}. Use acks=\"all\": a write is then "
                f"acknowledged only once every in-sync replica has it."]
    if unclean is not None:
        return [f"Every in-sync replica was down, and unclean.leader.election.enable=True let "
                f"broker-{unclean.data['leader']}, which had fallen out of sync and lacked "
                f"{shown}, become leader (an UNCLEAN election at t={unclean.time_ms}ms). The "
                f"replicas that followed it cut {shown} from their logs. With it False, the "
                f"partition waits offline for an in-sync replica instead of forgetting "
                f"acknowledged writes."]
    if len(isr) < f + 1:
        brokers = ", ".join(f"broker-{b}" for b in isr)
        return [f"acks=all waits only for the in-sync replicas (the ISR), and when {shown} was "
                f"acknowledged the ISR was [{brokers}]: its followers had fallen behind. "
                f"min.insync.replicas={config['min.insync.replicas']} let that acknowledge "
                f"{shown} with {len(isr)} {'copy' if len(isr) == 1 else 'copies'}; then "
                f"{brokers} crashed for good. To survive {_failures(f)} a write must be on "
                f"at least {f + 1} brokers before it is acknowledged: "
                f"min.insync.replicas={f + 1} (the producer gets NOT_ENOUGH_REPLICAS and "
                f"retries instead)."]
    return [f"{shown} was acknowledged with the ISR {isr}; every broker that held it failed "
            f"or cut it."]


def _why_unavailable(run: Replay) -> list[str]:
    history, value, config, f = run.history, run.failure.value, run.config, run.case[0]
    rf, mis = config["replication.factor"], config["min.insync.replicas"]
    nacks = [e for e in history.of_kind("nack") if e.data.get("value") == value]
    errors = sorted({e.data["error"] for e in history.of_kind("retry")
                     if value in (e.data.get("values") or ())})
    retried = f" retried ({', '.join(errors)}) and" if errors else ""
    told = (f"The producer{retried} was finally told {nacks[0].data['error']} (the grading "
            f"producer gives up after delivery.timeout.ms="
            f"{PRODUCER_LIMITS['delivery.timeout.ms']})." if nacks
            else "The producer never heard back.")
    replicas = list(range(rf))
    if all(b in run.down for b in replicas):
        return [told, f"Every replica of the partition ({replicas}) was on a broker that was "
                f"down, so it had no leader. With {f} broker(s) down, only "
                f"replication.factor - {f} replicas remain: it must be >= "
                f"min.insync.replicas, so replication.factor >= {f} + min.insync.replicas."]
    if rf - len([b for b in run.down if b in replicas]) < mis or "NOT_ENOUGH" in told:
        return [told, f"With broker(s) {list(run.down)} down, only "
                f"{rf - len([b for b in run.down if b in replicas])} replica(s) stayed in sync, "
                f"fewer than min.insync.replicas={mis}, so the leader refused every acks=all "
                f"write (NOT_ENOUGH_REPLICAS). Writes keep succeeding with {f} broker(s) down "
                f"only if replication.factor - {f} >= min.insync.replicas (here {rf} - {f} = "
                f"{rf - f})."]
    return [told]


def _story_line(event, plain: dict, value: object) -> str | None:
    data, kind = event.data, event.kind
    mine = data.get("value") == value
    if kind == "fault" and "message" in data:
        return None  # one per delayed message: the plan's line says it once
    if kind == "note":
        text = str(data.get("text"))
    elif kind == "fault":
        text = "FAULT: " + plain.get(data.get("fault"), str(data.get("fault")))
        if data.get("action") == "heal":
            text = "FAULT over: the links are back"
    elif kind == "broker_crash":
        text = "CRASHES"
    elif kind == "broker_restart":
        text = "comes back, with its disk"
    elif kind == "isr":
        text = f"ISR is now {data['isr']} ({data.get('reason')})"
    elif kind == "election":
        text = (f"{'UNCLEAN ' if data.get('unclean') else ''}election: broker-{data['leader']} "
                f"leads (epoch {data['epoch']}, ISR {data['isr']})")
    elif kind == "offline":
        text = f"partition OFFLINE: no in-sync replica is up (ISR {data['isr']})"
    elif kind == "append" and mine:
        text = f"appends {value_text(value)} at offset {data['offset']}"
    elif kind == "ack" and mine and data["offset"] < 0:
        text = f"counts {value_text(value)} as written (acks=0: no answer awaited)"
    elif kind == "ack" and mine:
        text = f"is told {value_text(value)} is stored at offset {data['offset']}"
    elif kind == "nack" and mine:
        text = f"is told {value_text(value)} FAILED: {data['error']}"
    elif kind == "truncate" and value in (data.get("values") or ()):
        text = f"truncates its log at offset {data['offset']}, cutting {value_text(value)}"
    else:
        return None
    return f"  t={event.time_ms}ms  {event.actor}: {text}"


def _story(run: Replay, before: int = 8, after: int = 14) -> list[str]:
    """What the cluster did around the moment the record was acknowledged (or refused)."""
    plain = {repr(fault): _plain_fault(run.plan, i) for i, fault in enumerate(run.plan.faults)}
    value = run.failure.value
    lines, anchor = [], None
    for event in run.history.events:
        line = _story_line(event, plain, value)
        if line is None:
            continue
        if anchor is None and event.kind in ("ack", "nack") and event.data.get("value") == value:
            anchor = len(lines)
        lines.append(line)
    return window(lines, anchor, before, after)


def _explain(run: Replay) -> str:
    """The failure message: what, which faults, why, what the cluster did, how to replay."""
    chosen = CHECKS[run.check]
    f, brokers = run.case
    lines = [f"check_{run.check} failed ({chosen.guarantee}): {_headline(run)}"]
    if run.cluster is not None:
        lines += ["", f"Your settings for choose_config({f}, {brokers}): "
                      f"{_config_text(run.config)}"]
    lines += causes([_plain_fault(run.plan, i) for i in range(len(run.plan))])
    why = _why(run)
    if why:
        lines += ["", *why]
    if run.cluster is None:  # a rejected or unanswered config: nothing was played
        return "\n".join(lines + replay_lines(None, run.seed, _token(run), draw=False))
    lines += ["", "What the cluster did:", *_story(run), ""]
    return "\n".join(lines + replay_lines(repr(run.plan), run.seed, _token(run)))
