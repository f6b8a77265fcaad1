"""The autograder: attack a learner's code with faults, judge it from what the grader saw.

One module per assignment's checks, on one sandbox:

- :mod:`~course_lib.grading.sandbox`: the forked, limited child the learner's
  code runs in, the JSON wire to the grader (DESIGN §6), and replay tokens;
- :mod:`~course_lib.grading.consumers` (ps1): ``check_at_most_once``,
  ``check_at_least_once``.

Every check raises :class:`CheckFailed` (an ``AssertionError``) with a message a
learner can act on, ending in a ``course_lib.replay("…")`` line, or returns a
summary of what the answer survived.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from course_lib.grading.consumers import (
    Campaign,
    Replay,
    check_at_least_once,
    check_at_most_once,
)
from course_lib.grading.sandbox import CheckFailed, SourceFunction, decode_token

__all__ = [
    "Campaign",
    "CheckFailed",
    "Replay",
    "SourceFunction",
    "check_at_least_once",
    "check_at_most_once",
    "replay",
]

_CHECK_MODULES = ("consumers",)


def replay(token: str, fn: Callable | None = None, **options) -> object:
    """Play the run a failure message named again; the result draws its timeline.

    ``fn`` defaults to the function of that name in the notebook. The options
    are the checking module's (``isolated=False`` runs it in this process).
    """
    data = decode_token(token)
    for name in _CHECK_MODULES:
        module = importlib.import_module(f"course_lib.grading.{name}")
        if data["c"] in module.CHECKS:
            return module.replay_data(data, fn, **options)
    raise ValueError(f"a replay token for an unknown check {data['c']!r}: is course_lib "
                     f"older than the notebook that printed it?")
