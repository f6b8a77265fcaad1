"""The at-least-once scenario that groups 2 and 6 time, built from course_lib's blocks.

It is claim 9's story at any size: three brokers, a topic filled reliably,
then a consumer application running the process-then-commit loop
(``scenarios.at_least_once``) with auto-commit off, crashed once before its
commit of the middle message and restarted in the same group, and finally the
checker reading the history. A complete run is all of that, checker included,
because that is what a learner (or the grader) waits for.
"""

from __future__ import annotations

from dataclasses import dataclass

from course_lib import scenarios
from course_lib.checker import check
from course_lib.cluster import Cluster
from course_lib.faults import CrashClient, FaultPlan


@dataclass(frozen=True)
class ScenarioRun:
    """What one run did: its size, the events the World ran, and the checker's verdict."""

    messages: int
    events: int
    restarts: int
    delivered: int
    lost: int
    duplicated: int
    guarantee: str


def crash_plan(messages: int) -> FaultPlan:
    """One consumer crash, before the commit of the middle message."""
    return FaultPlan((CrashClient("consumer.commit", "before", max(1, messages // 2)),))


def run_at_least_once(messages: int, seed: int = 0) -> ScenarioRun:
    """Seed ``messages`` values, consume them with one crash and a restart, check the history."""
    cluster = Cluster(brokers=3, seed=seed, faults=crash_plan(messages))
    cluster.create_topic(scenarios.TOPIC)
    scenarios.seed_topic(cluster, scenarios.message_values(messages))
    restarts = scenarios.consume_with_restarts(cluster, scenarios.at_least_once,
                                               {"enable.auto.commit": False})
    report = check(cluster.history)
    return ScenarioRun(messages, cluster.world.events_run, restarts, report.delivered,
                       len(report.lost), len(report.duplicated), report.guarantee)
