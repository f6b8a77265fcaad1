"""The autograder: attack a learner's code with faults, judge it from what the grader saw.

One module per assignment's checks, on one sandbox:

- :mod:`~course_lib.grading.sandbox`: the forked, limited child the learner's
  code runs in, the JSON wire to the grader (DESIGN §6), and replay tokens;
- :mod:`~course_lib.grading.campaign`: what every check does the same way:
  the hunt for a failing fault plan, shrinking it, the verdict, and aborts
  recorded as crashes;
- :mod:`~course_lib.grading.explanation`: the plain words every check shares:
  faults, aborts, the timeline excerpt and the failure message's frame;
- :mod:`~course_lib.grading.consumers` (ps1): ``check_at_most_once``,
  ``check_at_least_once``;
- :mod:`~course_lib.grading.retries` (ps2): ``check_send_with_retries``,
  ``check_idempotent_sender``, ``check_check_sequence``;
- :mod:`~course_lib.grading.outbox` (ps3): ``check_place_order``,
  ``check_relay_once``, ``check_handle_payment``;
- :mod:`~course_lib.grading.transactions` (ps4): ``check_no_duplicates``,
  ``check_no_loss``, ``check_zombie_fenced``, ``check_isolation``;
- :mod:`~course_lib.grading.durability` (ps5): ``check_durability``,
  ``check_availability``, ``check_too_few_brokers``.

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
from course_lib.grading.durability import (
    check_availability,
    check_durability,
    check_too_few_brokers,
)
from course_lib.grading.outbox import check_handle_payment, check_place_order, check_relay_once
from course_lib.grading.retries import (
    check_check_sequence,
    check_idempotent_sender,
    check_send_with_retries,
)
from course_lib.grading.sandbox import CheckFailed, SourceFunction, decode_token
from course_lib.grading.transactions import (
    check_isolation,
    check_no_duplicates,
    check_no_loss,
    check_zombie_fenced,
)

__all__ = [
    "Campaign",
    "CheckFailed",
    "Replay",
    "SourceFunction",
    "check_at_least_once",
    "check_at_most_once",
    "check_availability",
    "check_check_sequence",
    "check_durability",
    "check_handle_payment",
    "check_idempotent_sender",
    "check_isolation",
    "check_no_duplicates",
    "check_no_loss",
    "check_place_order",
    "check_relay_once",
    "check_send_with_retries",
    "check_too_few_brokers",
    "check_zombie_fenced",
    "replay",
]

_CHECK_MODULES = ("consumers", "retries", "outbox", "transactions", "durability")


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
