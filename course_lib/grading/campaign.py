"""A fault campaign and its verdict: play plans until one fails, shrink it, report it.

Every check (DESIGN §6) plays the learner's code under one fault plan after
another, judges each run from what the grader saw, and stops at the first
failing run. That run is shrunk to a minimal plan, so that the message names
only the faults that matter, and raised as :class:`CheckFailed` with a replay
token. What differs between checks (which plans, how a run is played and
judged, how it is explained) is passed in; the order of the hunt, the shrinking
and the way an abort enters the History are the same everywhere, here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from course_lib.faults import FaultPlan
from course_lib.grading.sandbox import CheckFailed, Limits, Outcome, Sandbox, inline

__all__ = [
    "ABORT_POINTS",
    "Campaign",
    "Check",
    "Played",
    "abort_point",
    "app_runner",
    "committed_offset",
    "first_failure",
    "first_restart",
    "hunt",
    "log_end",
    "progress_due",
    "raise_failure",
    "record_crash",
    "require_callable",
    "require_count",
    "shrink",
    "timeline_svg",
]

# Where a run the sandbox stopped "crashed", as the History and the timeline name it.
ABORT_POINTS = {
    "hang": "the wall-clock limit (grader stopped it)",
    "calls": "too many calls (grader stopped it)",
    "exit": "its own exit (sys.exit/os._exit)",
    "flood": "an output flood (grader stopped it)",
    "killed": "a signal",
    "broken": "a broken connection to the cluster",
}

# Failures a shrink never replays: each attempt would cost a whole time limit.
UNSHRUNK = ("hang",)


@dataclass(frozen=True)
class Check:
    """One check of an assignment: its name (``check_<name>``) and the guarantee it grades."""

    name: str
    guarantee: str


class Played:
    """What every played run answers, whatever else it holds: did it pass, in a word.

    A mixin for the checks' run records (``Replay``, ``Run``), which set ``failure``.
    """

    failure: Any

    @property
    def passed(self) -> bool:
        """True when the run satisfies the check."""
        return self.failure is None

    @property
    def verdict(self) -> str:
        """``passed``, or ``FAILED (kind)``: how a run's repr states its outcome."""
        return "passed" if self.failure is None else f"FAILED ({self.failure.kind})"


@dataclass(frozen=True)
class Campaign:
    """A passed check: how many fault plans the function survived."""

    check: str
    seed: int
    plans: int

    def __repr__(self) -> str:
        return (f"<check_{self.check} passed: {self.plans} runs, one clean and "
                f"{self.plans - 1} under faults (seed {self.seed})>")


def require_callable(check: str, fn: object, what: str = "your function") -> None:
    """Refuse a non-callable at once: a campaign of runs that cannot start says nothing."""
    if not callable(fn):
        raise TypeError(f"check_{check} needs {what}, not {fn!r}")


def require_count(what: str, value: object) -> None:
    """Refuse a count that is not a positive int (a bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, not {value!r}")


@contextmanager
def app_runner(fn: Callable, driver: Callable, time_limit_s: float,
               isolated: bool = True) -> Iterator[Callable[[Any, float], Outcome]]:
    """Where the learner's code runs: a sandboxed child per app run, as in grading.

    ``isolated=False`` (a replay, for exploring) calls it in this process
    instead: no fork, no limits, and module state survives "restarts".
    """
    if not isolated:
        yield inline(fn, driver)
        return
    with Sandbox(fn, Limits(time_limit_s), driver) as sandbox:
        yield sandbox.run


# ----- the hunt --------------------------------------------------------------------------------


def shrink(failing: Any, play: Callable[[FaultPlan], Any],
           legal: Callable[[FaultPlan], bool] = lambda plan: True) -> Any:
    """Greedy delta debugging: drop each fault in turn while the same failure remains.

    The learner should read only the faults that matter. A candidate plan
    counts when ``play`` fails it with the same kind of failure; ``legal``
    skips plans outside the check's rules (ps5 never crashes more than f
    brokers), which would fail for a reason of the grader's own making.
    """
    if failing.failure.kind in UNSHRUNK:
        return failing
    changed = True
    while changed and len(failing.plan) > 1:
        changed = False
        for index in range(len(failing.plan)):
            plan = failing.plan.without(index)
            if not legal(plan):
                continue
            candidate = play(plan)
            if candidate.failure is not None and candidate.failure.kind == failing.failure.kind:
                failing, changed = candidate, True
                break
    return failing


def first_failure(play: Callable[..., Any], scenarios: Iterable[tuple]) -> tuple[Any, int]:
    """Play each scenario ``(plan, *extra)`` until one fails; that one, shrunk, and the count.

    The extra parts of a scenario (ps2's inputs, ps4's stall) stay fixed while
    the plan shrinks: they are what the failure is about, not faults.
    """
    runs = 0
    for scenario in scenarios:
        runs += 1
        result = play(*scenario)
        if result.failure is not None:
            return shrink(result, _with_plan(play, tuple(scenario[1:]))), runs
    return None, runs


def _with_plan(play: Callable[..., Any], rest: tuple) -> Callable[[FaultPlan], Any]:
    """``play`` with the scenario's fixed parts bound: only the plan varies."""
    return lambda plan: play(plan, *rest)


def hunt(play: Callable[..., Any],
         scenarios: Callable[[Any], Iterable[tuple]]) -> tuple[Any, int]:
    """A clean run first, then the scenarios drawn from it; the first failure and the count.

    A clean run that fails is reported as it is: there is no fault to shrink,
    and the plans are built from the calls the clean run made.
    """
    clean = play(FaultPlan())
    if clean.failure is not None:
        return clean, 1
    failing, runs = first_failure(play, scenarios(clean))
    return failing, runs + 1


def raise_failure(failing: Any, message: str, token: str, not_implemented: bool) -> None:
    """End the check: NotImplementedError for an untouched stub, else :class:`CheckFailed`.

    A stub is not a wrong answer, and nbgrader shows the two differently.
    """
    failing.message = message
    if not_implemented:
        raise NotImplementedError(message)
    raise CheckFailed(message, failing, token)


# ----- reading the verdict off the History ----------------------------------------------------


def committed_offset(history: Any, group: str, topic: str, upto: int | None = None) -> int | None:
    """The group's committed offset for ``topic``, from the History, up to event ``upto``.

    What the coordinator stored, not what the learner's code believed it
    committed: a commit lost on the way never counts (DESIGN §6).
    """
    events = history.events if upto is None else history.events[:upto]
    offset = None
    for event in events:
        if (event.kind == "commit" and event.data.get("group") == group
                and event.data.get("topic") == topic):
            offset = event.data["offset"]
    return offset


def log_end(history: Any, topic: str | None = None) -> int:
    """One past the highest acknowledged offset (of ``topic``): where a caught-up reader stops."""
    offsets = [e.data["offset"] for e in history.of_kind("ack")
               if (topic is None or e.data.get("topic") == topic)
               and e.data.get("offset", -1) >= 0]
    return max(offsets, default=-1) + 1


def progress_due(events: list, end: int) -> bool:
    """DESIGN §6: progress is owed when the final message was read after the last fault.

    ``events`` are the run's, from the plan's installation on: a consumer cut
    off by a fault near the end cannot be blamed for not committing.
    """
    last_fault = max((i for i, e in enumerate(events) if e.kind in ("crash", "fault")),
                     default=-1)
    return any(e.kind == "poll" and e.data.get("offset") == end - 1
               for e in events[last_fault + 1:])


def first_restart(events: list, installed_at: int,
                  restarted: Callable[[Any], bool] = lambda event: event.kind == "note",
                  ) -> int | None:
    """The History index at which the app first started again after the first fault, if any.

    The committed offset there is what the restarted app resumed from: the
    usual explanation of a loss or a duplicate.
    """
    fault = next((i for i in range(installed_at, len(events))
                  if events[i].kind in ("crash", "fault")), None)
    if fault is None:
        return None
    return next((i for i in range(fault, len(events)) if restarted(events[i])), None)


# ----- runs the sandbox stopped ----------------------------------------------------------------


def abort_point(kind: str, peer: str = "the cluster") -> str:
    """Where an aborted run crashed, in the History's words (``peer`` is what broke off)."""
    if kind == "broken":
        return f"a broken connection to {peer}"
    return ABORT_POINTS[kind]


def record_crash(cluster: Any, app: Any, point: str, number: int) -> None:
    """The app died outside the fault plan: record it as the crash it is, then kill it.

    The verdict reads only the History, so a process the grader stopped must
    appear there as a crash, like one the plan caused.
    """
    if app.alive:
        cluster.history.record("crash", app.name, point=point, phase="at", nth=number,
                               reason="grader")
        app.die()


# ----- drawing a run ---------------------------------------------------------------------------


def timeline_svg(history: Any, title: str, report: Any = None) -> str | None:
    """A run's timeline as SVG for the notebook, or None when course_lib.viz is missing."""
    if history is None or importlib.util.find_spec("course_lib.viz") is None:
        return None
    from course_lib import viz

    if report is None:
        return viz.timeline(history, title=title)._repr_svg_()
    return viz.timeline(history, report, title=title)._repr_svg_()
