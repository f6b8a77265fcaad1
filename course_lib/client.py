"""Application processes and the crash guard every client call goes through.

An :class:`AppProcess` stands for one operating-system process of the
learner's application. Clients created in it share its fate: when a fault
crashes the process (inside any client call or inside ``process``), every
client in it dies, its unsent requests are lost, and every later call on any of
them raises :class:`~course_lib.faults.Crash` again. A restart is a new
AppProcess with new clients; nothing in memory carries over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from course_lib.faults import Crash


class Client:
    """Base of Producer and Consumer: identity, network presence, the crash guard."""

    role = "client"

    def __init__(self, process: AppProcess, name: str) -> None:
        self.process = process
        self.cluster = process.cluster
        self.world = process.cluster.world
        self.name = self._unique(name)
        self.alive = True
        self.incarnation = 0
        self.cluster.network.register(self)

    def _unique(self, name: str) -> str:
        """A network and group-member identity no other client has.

        ``client.id`` need not be unique in Kafka (a restarted app reuses it),
        but the toy addresses clients and group members by name: a shared name
        would hand a dead client's in-flight requests to its successor and make
        two consumers one group member. Like Kafka's member ids, a repeated
        ``client.id`` gets a suffix.
        """
        taken = self.cluster.network.nodes
        candidate, number = name, 1
        while candidate in taken:
            number += 1
            candidate = f"{name}-{number}"
        return candidate

    def _enter(self, point: str) -> None:
        """Before an API call: refuse if dead, let the fault plan crash us."""
        self.process.check_alive(point)
        self.process.hook(point, "before")

    def _exit(self, point: str) -> None:
        """After an API call took effect: the fault plan may crash us now."""
        self.process.hook(point, "after")

    def _die(self) -> None:
        """Called by the process when it dies: stop, forget, drop what is in flight."""
        self.alive = False
        self.incarnation += 1

    def receive(self, envelope) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Process:
    """An application process, whichever Kafka its clients talk to: what dies with it.

    The toy's :class:`AppProcess` and the real-Kafka bridge's ``kafka.App``
    differ only in who decides that a fault strikes (``_fault``), where events
    are written (``_record``) and whether time can pass on demand (``_pause``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.alive = True
        self.clients: list = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {'alive' if self.alive else 'dead'}>"

    def check_alive(self, point: str) -> None:
        """A dead process runs nothing: every call raises Crash again."""
        if not self.alive:
            raise Crash(self.name, point, "before")

    def hook(self, point: str, phase: str) -> None:
        """Ask the fault plan whether the process dies (or processing fails) here."""
        try:
            self._fault(point, phase)
        except Crash:
            self.die()
            raise

    def call(self, point: str, method: Callable, *args, **kwargs):
        """Run one client call under the crash guard: the plan may strike before or after."""
        self.check_alive(point)
        self.hook(point, "before")
        result = method(*args, **kwargs)
        self.hook(point, "after")
        return result

    def die(self) -> None:
        """Kill the process: every client in it dies with it."""
        if not self.alive:
            return
        self.alive = False
        for client in self.clients:
            client._die()

    def _fault(self, point: str, phase: str) -> None:
        raise NotImplementedError

    def _record(self, kind: str, **data) -> None:
        raise NotImplementedError

    def _pause(self, duration_ms: int) -> None:
        raise NotImplementedError

    def processor(self, effect: Callable | None = None, duration_ms: int = 0,
                  name: str = "process") -> Callable:
        """The application's ``process(msg)``: records the side effect in the history.

        The fault plan can crash the process before or after the effect, or make
        it raise ProcessingError; ``duration_ms`` of time pass before the effect
        happens (slow processing lets auto-commit and timers run). An ``effect``
        that returns ``False`` deduplicated the message (an inbox already held
        it): that is recorded as ``dedupe_skip``, not as a second ``process``,
        so the checker does not count it as a repeat.
        """
        def process(msg) -> object:
            self.check_alive(name)
            self.hook(name, "before")
            if duration_ms:
                self._pause(duration_ms)
                self.check_alive(name)
            result = effect(msg) if effect is not None else None
            self._record("dedupe_skip" if result is False else "process",
                         topic=msg.topic(), partition=msg.partition(),
                         offset=msg.offset(), value=msg.value())
            self.hook(name, "after")
            return result

        process.__name__ = name
        return process


class AppProcess(Process):
    """One simulated OS process of the application, holding its clients."""

    def __init__(self, cluster, name: str) -> None:
        super().__init__(name)
        self.cluster = cluster

    def _fault(self, point: str, phase: str) -> None:
        self.cluster.faults.call(self.name, point, phase)

    def _record(self, kind: str, **data) -> None:
        self.cluster.history.record(kind, self.name, **data)

    def _pause(self, duration_ms: int) -> None:
        self.cluster.world.advance(duration_ms)

    def producer(self, config: Mapping[str, object] | None = None):
        """A Producer living in this process."""
        from course_lib.producer import Producer

        return self._adopt(Producer(self, config))

    def consumer(self, config: Mapping[str, object] | None = None):
        """A Consumer living in this process."""
        from course_lib.consumer import Consumer

        return self._adopt(Consumer(self, config))

    def _adopt(self, client: Client) -> Client:
        self.clients.append(client)
        return client
