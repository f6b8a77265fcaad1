"""Which benchmark groups the project can support yet, decided when the benchmark runs.

Grading (issue 4), widgets and notebooks (issue 5) and transactions (issue 3)
land after this package. Rather than fake a number or crash, a group whose
code is missing reports a ``status`` saying what is missing, checked at run
time, so the JSON and the table change by themselves when the code lands. A
group whose code has landed but whose benchmark is not written yet says that
instead: "pending", with where to add it.
"""

from __future__ import annotations

import importlib.util


def module_exists(name: str) -> bool:
    """True when ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def not_available(reason: str) -> dict:
    """A group (or part) that cannot be measured yet, and why."""
    return {"status": f"not available: {reason}"}


def pending(reason: str) -> dict:
    """A group whose code exists but whose benchmark is still to be written."""
    return {"status": f"pending: {reason}"}


def widget_latency() -> dict:
    """Group 4: median and p95 of the default config-panel callback."""
    if not module_exists("course_lib.widgets"):
        return not_available("course_lib.widgets does not exist yet (issue 5)")
    return pending("course_lib.widgets exists; time its default config-panel callback "
                   "(re-simulate + redraw), median and p95, in benchmarks/widgets.py")
