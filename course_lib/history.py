"""History: what happened in a World, in order, with virtual timestamps.

The checker reads only this. The cluster and the clients record every attempt,
append, acknowledgement, poll, processing side effect, commit, fault and crash
here; nothing downstream reaches back into the system. A history serialises to
JSON lines with sorted keys, so two runs can be compared byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import NamedTuple


class Event(NamedTuple):
    """One thing that happened: when, what kind, who did it, and the details."""

    time_ms: int
    kind: str
    actor: str
    data: dict

    def to_json(self) -> str:
        """One JSON line; bytes are written as text so the line stays readable."""
        payload = {"t": self.time_ms, "kind": self.kind, "actor": self.actor, **self.data}
        return json.dumps(payload, sort_keys=True, default=_jsonable)


def _jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return repr(value)


class History:
    """An append-only list of events, with listeners that fault triggers use."""

    def __init__(self, world) -> None:
        self._world = world
        self.events: list[Event] = []
        self._listeners: list[Callable[[Event], None]] = []

    def record(self, kind: str, actor: str, **data) -> Event:
        """Append an event stamped with the World's current virtual time."""
        event = Event(self._world.now_ms, kind, actor, data)
        self.events.append(event)
        for listener in tuple(self._listeners):
            listener(event)
        return event

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` after every recorded event."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    def of_kind(self, *kinds: str) -> Iterator[Event]:
        """The events of the given kinds, in order."""
        return (event for event in self.events if event.kind in kinds)

    def to_jsonl(self) -> str:
        """The whole history as JSON lines: the form determinism tests compare."""
        return "\n".join(event.to_json() for event in self.events)

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)
