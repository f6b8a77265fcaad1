"""The World: a virtual clock, an event queue, and one seed.

Everything in a simulation happens inside one World. Time is an integer count
of virtual milliseconds that moves only when the queue says so, so a scenario
that waits out a 30-second request timeout costs microseconds, and the same
seed always gives the same history. Components never call ``random`` or
``time`` directly: each asks the World for its own named random stream, so
adding a component never shifts the draws of another. Two Worlds side by side
share nothing.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable

from course_lib.history import History


class Timer:
    """A scheduled callback that can be cancelled before it fires."""

    __slots__ = ("at_ms", "callback", "args", "cancelled")

    def __init__(self, at_ms: int, callback: Callable, args: tuple) -> None:
        self.at_ms = at_ms
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        """Stop the callback from running; harmless if it already ran."""
        self.cancelled = True


class Stalled(RuntimeError):
    """The simulation ran out of events while a client was waiting for something."""


class World:
    """Virtual time, the event queue and the seed every random stream derives from."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.now_ms = 0
        self.events_run = 0
        self._queue: list[tuple[int, int, Timer]] = []
        self._order = itertools.count()
        self.history = History(self)

    def __repr__(self) -> str:
        return f"World(seed={self.seed!r})"

    def rng(self, name: str) -> random.Random:
        """An independent random stream for the component called ``name``."""
        return random.Random(f"{self.seed}/{name}")

    def call_at(self, at_ms: int, callback: Callable, *args) -> Timer:
        """Run ``callback(*args)`` at virtual time ``at_ms`` (not before now)."""
        timer = Timer(max(at_ms, self.now_ms), callback, args)
        heapq.heappush(self._queue, (timer.at_ms, next(self._order), timer))
        return timer

    def call_later(self, delay_ms: int, callback: Callable, *args) -> Timer:
        """Run ``callback(*args)`` after ``delay_ms`` virtual milliseconds."""
        return self.call_at(self.now_ms + delay_ms, callback, *args)

    def run(self, until_ms: int | None = None, until: Callable[[], bool] | None = None) -> bool:
        """Run events in time order until ``until()`` is true or time reaches ``until_ms``.

        Returns True when the condition was met. When time runs out the clock is
        left at ``until_ms`` so that a waiting client really waited that long.
        Events at the same instant run in the order they were scheduled.
        """
        if until_ms is None and until is None:
            raise ValueError("run() needs until_ms or until: periodic work never ends by itself")
        if until is not None and until():
            return True
        queue = self._queue
        while queue:
            at_ms, _, timer = queue[0]
            if until_ms is not None and at_ms > until_ms:
                break
            heapq.heappop(queue)
            if timer.cancelled:
                continue
            self.now_ms = at_ms
            self.events_run += 1
            timer.callback(*timer.args)
            if until is not None and until():
                return True
        if until_ms is not None:
            self.now_ms = max(self.now_ms, until_ms)
        return until is not None and until()

    def advance(self, duration_ms: int) -> None:
        """Let ``duration_ms`` of virtual time pass, running whatever falls due."""
        self.run(until_ms=self.now_ms + duration_ms)
