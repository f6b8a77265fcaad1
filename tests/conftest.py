"""Shared fixtures: seeds that a failing test reports, and fresh clusters."""

from __future__ import annotations

import os

import pytest

from course_lib.cluster import Cluster

DEFAULT_SEED = int(os.environ.get("COURSE_SEED", "0"))


@pytest.fixture
def seed(request) -> int:
    """The seed of this test; printed with any failure (override with COURSE_SEED)."""
    request.node.user_properties.append(("seed", DEFAULT_SEED))
    return DEFAULT_SEED


@pytest.fixture
def cluster(seed) -> Cluster:
    """Three brokers and a topic ``events`` with RF=3, min.insync.replicas=2."""
    made = Cluster(brokers=3, seed=seed)
    made.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 2})
    return made


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Add the seed to the report of a failing test, so it can be replayed."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seeds = [value for key, value in item.user_properties if key == "seed"]
        if seeds:
            report.sections.append(("seed", f"replay with COURSE_SEED={seeds[-1]}"))
