"""All six groups in one process run, baselines first, as one JSON-ready dict.

The baselines are measured first and passed to every group, because a ratio
only means something when both sides ran on the same machine in the same
state. Metadata records what was measured (settings, versions, commit and
whether the tree was dirty), since other work on course_lib moves the
figures too.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from benchmarks.event_throughput import measure_event_throughput
from benchmarks.grading import measure_grading_cost
from benchmarks.notebooks import measure_notebooks
from benchmarks.null_loop import measure_null_loops
from benchmarks.scaling import measure_scaling
from benchmarks.scenario_throughput import measure_scenario_throughput
from benchmarks.settings import Settings
from benchmarks.widgets import measure_widget_latency

ROOT = Path(__file__).resolve().parent.parent


def git_state() -> dict:
    """The commit measured and whether uncommitted changes were part of it."""
    def git(*args: str) -> str:
        return subprocess.run(("git", *args), cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD") or None,
                "dirty": bool(git("status", "--porcelain", "--", "course_lib", "benchmarks"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def metadata(mode: str, settings: Settings) -> dict:
    """Where and how the figures were taken."""
    return {"mode": mode, "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "simpy": version("simpy"), "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
            **git_state(), "settings": settings.as_dict()}


def run_all(settings: Settings, mode: str, notebooks_dir: Path) -> dict:
    """Measure the baselines, then groups 1 to 6; returns the whole result."""
    started_s = time.perf_counter()
    results = {"meta": metadata(mode, settings)}
    baseline = measure_null_loops(settings)
    results["baseline"] = baseline
    results["groups"] = {
        "1_event_throughput": measure_event_throughput(settings, baseline),
        "2_scenario_throughput": measure_scenario_throughput(settings, baseline),
        "3_grading_cost": measure_grading_cost(settings),
        "4_widget_latency": measure_widget_latency(settings),
        "5_notebook_run_time": measure_notebooks(settings, notebooks_dir),
        "6_scaling": measure_scaling(settings, baseline),
    }
    results["meta"]["elapsed_s"] = time.perf_counter() - started_s
    return results
