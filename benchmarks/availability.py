"""What a benchmark group reports when the thing it measures is not there.

A group whose inputs are missing (no lecture notebooks in a folder, no
reference solutions) reports a ``status`` saying what is missing instead of a
number or a crash, so the JSON and the table stay honest.
"""

from __future__ import annotations


def not_available(reason: str) -> dict:
    """A group (or part) that cannot be measured, and why."""
    return {"status": f"not available: {reason}"}
