"""The grading sandbox: the learner's code runs in a forked child, the World stays here.

DESIGN §6 asks that the World and the checker never share a process with
student code. At the start of a check the grader forks a small *zygote*
process, before any World exists. For every run of the application the zygote
forks one child, which runs a *driver* (trusted code of this package, chosen by
the check) that calls the learner's function with proxy objects: each method
call on a proxy travels as JSON over a socket to the grader, which performs it
on the real client (or harness object) through a *gate* and sends back the
result, the error (rebuilt in the child), or a crash marker (raised in the
child as :class:`~course_lib.faults.Crash`, which ``except Exception`` cannot
swallow; the grader kills the child at once anyway, since its process is
dead). Only plain data crosses the socket, decoded by a strict codec, never
pickle, so the child cannot run code in the grader. The child runs under
RLIMIT_CPU and RLIMIT_AS, with stdin, stdout and stderr on /dev/null and
``sys.stdout`` counting what is printed. The grader enforces a wall-clock limit
per run. A child that hangs, exits (``sys.exit``, ``os._exit``), floods output,
dies of a signal or breaks the protocol ends its run with an :class:`Outcome`
saying so; each check records it as a crash of the learner's process.

*Why fork, not spawn.* The function under test usually lives in a notebook
kernel's ``__main__``: spawn would have to pickle it by reference (impossible)
or re-create it from ``inspect.getsource`` (losing closures, helpers from
other cells and imports), and a spawned interpreter costs ~0.3 s, times about
a hundred app runs per check. A fork copies the function with everything it
refers to in about a millisecond. The zygote is forked *before* any World
exists, so the learner's process never holds even a copy of the cluster, the
fault plan or the History; every app run is a fresh fork of that zygote, so
nothing a run leaves in memory reaches the next (the crash model's "fresh
interpreter").

*What the child can still forge.* Everything the verdict needs is observed on
the grader's side of the wire (calls, their order and their virtual time, the
History), except where an assignment asks what the learner's function itself
*returned or raised* (ps2's ``send_with_retries`` re-raising the last error,
ps2's ``check_sequence`` verdicts, ps5's chosen config): that is reported by
the driver, inside the child, and a learner who wrote raw protocol messages by
hand could forge it. No in-kernel trick is needed for that and no honest
answer comes near it, so we accept it and say so.

*Limits.* The child runs as the same user: it could signal or ptrace other
processes of that user, and it inherits the kernel's open descriptors. And
whatever an earlier notebook cell patched in the kernel (including this
package) is inherited by the grader itself: no in-kernel check closes that,
which is why points come from the trusted pass outside the kernel (DESIGN §6,
:mod:`course_lib.autograde`). The wall-clock limit is the one input that is not
deterministic; it only decides whether a run that was already too slow counts
as hung.
"""

from __future__ import annotations

import base64
import io
import json
import math
import multiprocessing
import os
import re
import resource
import signal
import sys
import time
import traceback
import zlib
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout, suppress
from dataclasses import dataclass
from functools import partial
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle
from pathlib import Path
from typing import Protocol

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from course_lib.consumer import GroupMetadata
from course_lib.faults import Crash, ProcessingError

__all__ = [
    "ABORTS",
    "CheckFailed",
    "Gate",
    "Limits",
    "Outcome",
    "Proxy",
    "Sandbox",
    "SourceFunction",
    "TooManyCalls",
    "call_with_proxies",
    "describe",
    "inline",
]

MEMORY_LIMIT_MB = 512  # address space the child may add to what it inherited
OUTPUT_LIMIT_BYTES = 1 << 20  # what the learner's code may print per app run
WIRE_BYTES_MAX = 1 << 20  # one request from the child
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Limits:
    """What one app run of the learner's code may use."""

    time_s: float
    memory_mb: int = MEMORY_LIMIT_MB
    output_bytes: int = OUTPUT_LIMIT_BYTES


class CheckFailed(AssertionError):
    """A check's failure: the plain-language message, plus the run for tools and tests."""

    def __init__(self, message: str, run: object | None = None, token: str = "") -> None:
        super().__init__(message)
        self.run = run
        self.token = token


@dataclass(frozen=True)
class Outcome:
    """How one app run of the learner's function ended."""

    kind: str  # returned raised crashed | hang calls exit flood killed broken
    detail: str = ""
    error_type: str = ""
    where: str = ""


ABORTS = ("hang", "calls", "exit", "flood", "killed", "broken")


class TooManyCalls(BaseException):  # an internal stop signal, never shown
    """The app run made more calls than its check allows: stop it."""



class Gate(Protocol):
    """The grader's side of the wire: performs one call of the learner's code on the World.

    ``call`` returns the result, raises the error the learner should see,
    raises :class:`~course_lib.faults.Crash` when the fault plan kills the
    process there, or :class:`TooManyCalls` to stop a runaway app run.
    """

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object: ...


class Proxy:
    """What the learner's code holds in place of a client: the allowed methods, nothing more.

    Each method call becomes ``call(target, method, args, kwargs)``: over the
    wire in the sandbox, straight into the gate when run inline. With
    ``"__call__"`` among the methods the proxy is itself callable (``process``).
    """

    __slots__ = ("_call", "_target", "_methods", "_text")

    def __init__(self, call: Callable, target: str, methods: frozenset, text: str) -> None:
        for name, value in (("_call", call), ("_target", target), ("_methods", methods),
                            ("_text", text)):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str):
        methods = object.__getattribute__(self, "_methods")
        target = object.__getattribute__(self, "_target")
        if name not in methods or name == "__call__":
            offered = ", ".join(sorted(m for m in methods if m != "__call__"))
            raise AttributeError(f"the {target} here has no method {name!r}"
                                 + (f"; it offers {offered}" if offered else ""))
        call = object.__getattribute__(self, "_call")

        def method(*args, **kwargs):
            return call(target, name, args, kwargs)

        method.__name__ = name
        return method

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"the {object.__getattribute__(self, '_target')} here is read-only")

    def __call__(self, *args, **kwargs) -> object:
        target = object.__getattribute__(self, "_target")
        if "__call__" not in object.__getattribute__(self, "_methods"):
            raise TypeError(f"the {target} here is not callable")
        return object.__getattribute__(self, "_call")(target, "__call__", args, kwargs)

    def __repr__(self) -> str:
        return object.__getattribute__(self, "_text")


def _call_with_proxies(specs: tuple, fn: Callable, call: Callable) -> None:
    fn(*(Proxy(call, *spec) for spec in specs))


def call_with_proxies(*specs: tuple[str, frozenset, str]) -> Callable[[Callable, Callable], None]:
    """A driver that calls ``fn(proxy, ...)``, one proxy per ``(target, methods, repr)``.

    A *driver* is the trusted code that runs in the child around the learner's
    function: ``driver(fn, call)``. This one suits functions that receive
    clients (ps1's ``fn(consumer, process)``).
    """
    return partial(_call_with_proxies, specs)


def inline(fn: Callable, driver: Callable) -> Callable[[Gate, float], Outcome]:
    """A runner that calls ``fn`` in this process (replay, exploring): no limits."""

    def run(gate: Gate, _deadline: float) -> Outcome:
        try:
            driver(fn, gate.call)
        except (KeyboardInterrupt, GeneratorExit):
            raise
        except SystemExit as exc:
            return Outcome("exit", exit_text(exc))
        except TooManyCalls:
            return Outcome("calls")
        except BaseException as exc:  # every escape is the app dying
            return Outcome("raised", *describe(exc))
        return Outcome("returned")

    return run


def describe(exc: BaseException) -> tuple[str, str, str]:
    """(message, type name, the learner's frames): stable text, no paths or addresses."""
    text = re.sub(r"0x[0-9a-fA-F]+", "0x…", str(exc))[:300]
    frames = []
    for frame in traceback.extract_tb(exc.__traceback__):
        path = Path(frame.filename)
        if path.is_absolute() and _inside_library(path):
            continue
        frames.append(f"  line {frame.lineno} in {frame.name}(): {(frame.line or '').strip()}")
    return text, type(exc).__name__, "\n".join(frames[-3:])


def exit_text(exc: SystemExit) -> str:
    return re.sub(r"0x[0-9a-fA-F]+", "0x…", f"sys.exit({exc.code!r})")[:80]


def _inside_library(path: Path) -> bool:
    parts = path.parts
    return path.is_relative_to(_PACKAGE_DIR) or "multiprocessing" in parts or any(
        part in ("confluent_kafka",) for part in parts)




# ----- the wire: plain data only, both ways ---------------------------------------------------


def encode(value: object, depth: int = 0) -> object:
    """Python value -> JSON-able data; only what the consumer API passes around."""
    if depth > 16:
        raise TypeError("value nested too deeply to send to the cluster")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Message):
        return {"$m": [value.topic(), value.partition(), value.offset(),
                       encode(value.key()), encode(value.value()), list(value.timestamp())]}
    if isinstance(value, TopicPartition):
        return {"$tp": [value.topic, value.partition, value.offset]}
    if isinstance(value, GroupMetadata):
        return {"$gm": [value.group_id, value.generation, value.member_id]}
    if isinstance(value, (list, tuple)):
        return [encode(item, depth + 1) for item in value]
    if isinstance(value, dict) and all(isinstance(key, str) for key in value):
        return {"$d": {key: encode(item, depth + 1) for key, item in value.items()}}
    raise TypeError(f"a {type(value).__name__} cannot be sent to the cluster")


def decode(data: object, depth: int = 0) -> object:
    """The inverse of :func:`encode`; anything else is a protocol error (ValueError)."""
    if depth > 16:
        raise ValueError("nested too deeply")
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [decode(item, depth + 1) for item in data]
    if not isinstance(data, dict) or len(data) != 1:
        raise ValueError(f"unexpected {type(data).__name__}")
    (tag, body), = data.items()
    if tag == "$b" and isinstance(body, str):
        return base64.b64decode(body.encode("ascii"), validate=True)
    if tag == "$m" and isinstance(body, list) and len(body) == 6:
        topic, partition, offset, key, value, stamp = body
        _expect(isinstance(topic, str) and isinstance(partition, int)
                and isinstance(offset, int) and isinstance(stamp, list) and len(stamp) == 2
                and all(isinstance(x, int) for x in stamp), "bad message")
        key, value = decode(key, depth + 1), decode(value, depth + 1)
        _expect(all(x is None or isinstance(x, bytes) for x in (key, value)), "bad message")
        return Message(topic=topic, partition=partition, offset=offset, key=key, value=value,
                       timestamp=tuple(stamp))
    if tag == "$tp" and isinstance(body, list) and len(body) == 3:
        topic, partition, offset = body
        _expect(isinstance(topic, str) and isinstance(partition, int)
                and isinstance(offset, int), "bad topic partition")
        return TopicPartition(topic, partition, offset)
    if tag == "$gm" and isinstance(body, list) and len(body) == 3:
        return GroupMetadata(*body)
    if tag == "$d" and isinstance(body, dict):
        return {str(key): decode(item, depth + 1) for key, item in body.items()}
    raise ValueError(f"unknown tag {tag!r}")


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ValueError(what)


_ERROR_TYPES = {cls.__name__: cls for cls in (
    ValueError, TypeError, KeyError, IndexError, RuntimeError, AttributeError,
    NotImplementedError, ProcessingError)}


def encode_error(exc: Exception) -> list:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        error = exc.args[0]
        return ["kafka", error.code(), error.str(), error.fatal(), error.retriable(),
                error.txn_requires_abort()]
    name = type(exc).__name__ if type(exc).__name__ in _ERROR_TYPES else "RuntimeError"
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return ["error", name, text]


def rebuild_error(data: list) -> BaseException:
    if data[0] == "kafka":
        code, reason, fatal, retriable, abortable = data[1:]
        return KafkaException(KafkaError(code, reason, fatal=fatal, retriable=retriable,
                                         txn_requires_abort=abortable))
    return _ERROR_TYPES.get(data[1], RuntimeError)(data[2])


def _send(conn: Connection, message: list) -> None:
    conn.send_bytes(json.dumps(message, separators=(",", ":")).encode())


class _Channel:
    """The child's end of the wire: every proxy call is a request and a reply."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def call(self, target: str, method: str, args: tuple, kwargs: dict) -> object:
        _send(self._conn, ["call", target, method, encode(list(args)),
                           {key: encode(value) for key, value in kwargs.items()}])
        reply = json.loads(self._conn.recv_bytes())
        if reply[0] == "ok":
            return decode(reply[1])
        if reply[0] == "crash":
            raise Crash(*reply[1:4])
        raise rebuild_error(reply[1])

    def report(self, message: list) -> None:
        with suppress(OSError):
            _send(self._conn, message)


def serve(conn: Connection, gate: Gate, deadline: float) -> Outcome:
    """The grader's end: perform the child's calls until its app run ends."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not conn.poll(remaining):
            return Outcome("hang")
        try:
            raw = conn.recv_bytes(WIRE_BYTES_MAX)
        except EOFError:
            return Outcome("eof")
        except OSError:
            return Outcome("broken", "a request larger than the grader accepts")
        try:
            message = json.loads(raw)
            kind = message[0]
            if kind == "call":
                target, method, args, kwargs = message[1:5]
                _expect(isinstance(target, str) and isinstance(method, str)
                        and isinstance(args, list) and isinstance(kwargs, dict), "bad call")
                args = tuple(decode(args))
                kwargs = {str(key): decode(value) for key, value in kwargs.items()}
            elif kind == "raised":
                return Outcome("raised", str(message[1])[:300], str(message[2])[:80],
                                str(message[3])[:2000])
            elif kind in ("returned", "flood"):
                return Outcome(kind)
            elif kind == "exit":
                return Outcome("exit", str(message[1])[:80])
            else:
                return Outcome("broken", f"an unknown message {str(kind)[:40]!r}")
        except Exception:  # whatever the child sent, it is not a well-formed request
            return Outcome("broken", "a message the grader could not read")
        try:
            reply = ["ok", encode(gate.call(target, method, args, kwargs))]
        except Crash as crash:
            with suppress(OSError):
                _send(conn, ["crash", crash.actor, crash.point, crash.phase])
            return Outcome("crashed")
        except TooManyCalls:
            return Outcome("calls")
        except Exception as exc:  # the learner's call failed: tell the learner
            reply = ["err", encode_error(exc)]
        try:
            _send(conn, reply)
        except OSError:
            return Outcome("eof")


# ----- the sandbox: a zygote forked before any World, one child per app run -------------------


class Sandbox:
    """Forks the zygote on entry; ``run`` plays one app run in a fresh child of it."""

    def __init__(self, fn: Callable, limits: Limits, driver: Callable) -> None:
        self.fn = fn
        self.limits = limits
        self.driver = driver
        self._context = multiprocessing.get_context("fork")
        self._zygote = None
        self._control: Connection | None = None

    def __enter__(self) -> Sandbox:
        here, there = self._context.Pipe()
        self._zygote = self._context.Process(target=_zygote, args=(there, here, self.fn,
                                                                  self.limits, self.driver),
                                             name="grading-zygote", daemon=True)
        self._zygote.start()
        there.close()
        self._control = here
        return self

    def __exit__(self, *exc_info) -> None:
        with suppress(OSError):
            self._control.send_bytes(b"quit")
        self._control.close()
        self._zygote.join(timeout=2)
        if self._zygote.is_alive():
            self._zygote.kill()
            self._zygote.join()

    def _ask(self, request: bytes, handle: int | None = None) -> bytes:
        try:
            self._control.send_bytes(request)
            if handle is not None:
                send_handle(self._control, handle, self._zygote.pid)
            if not self._control.poll(10):
                raise EOFError
            return self._control.recv_bytes(64)
        except (EOFError, OSError):
            raise CheckFailed("The grader's helper process died (did your code kill it?). "
                              "The check cannot run, so it fails.") from None

    def run(self, gate: Gate, deadline: float) -> Outcome:
        """One app run of the learner's function in a new child process."""
        here, there = self._context.Pipe()
        try:
            pid = int(self._ask(b"run", there.fileno()))
            there.close()
            outcome = serve(here, gate, deadline)
            status = int(self._ask(f"end {pid}".encode()))
        finally:
            here.close()
            there.close()
        if outcome.kind == "eof":
            return _ended(status)
        return outcome


def _ended(status: int) -> Outcome:
    """How a child that closed the wire without a word ended (its wait status)."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return Outcome("hang", "CPU time limit")
        return Outcome("killed", signal.Signals(number).name)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    return Outcome("exit", f"os._exit({code})")


class SourceFunction:
    """A learner's function known only by its source: defined inside the sandbox, never here.

    The trusted pass (``course_lib.autograde``) hands these to the checks, so the
    answer cells' code runs only in the zygote and its children: whatever it
    patches there cannot reach the grader that computes the verdict. The
    source is a list of cells, run one after the other like a kernel runs
    them: a cell that fails (even with ``sys.exit``) does not stop the next, so
    a broken cell costs only the functions it should have defined.
    """

    def __init__(self, source: str | list[str] | tuple[str, ...], name: str) -> None:
        self.cells = (source,) if isinstance(source, str) else tuple(source)
        self.__name__ = name

    def __repr__(self) -> str:
        size = sum(len(cell) for cell in self.cells)
        return f"SourceFunction(<{len(self.cells)} cells, {size} characters>, {self.__name__!r})"

    def __call__(self, *args, **kwargs):
        raise RuntimeError("a SourceFunction is defined and called only inside the sandbox")

    def load(self) -> Callable:
        """Run the cells (in the zygote) and return the function, or one that re-raises."""
        namespace: dict = {"__name__": "__answer__"}
        problems: list[BaseException] = []
        for number, cell in enumerate(self.cells, 1):
            try:
                exec(compile(cell, f"<your answer cell {number}>", "exec"),  # noqa: S102
                     namespace)
            except (Exception, SystemExit) as error:  # the kernel would go on to the next cell
                problems.append(error)
        found = namespace.get(self.__name__)
        if callable(found):
            return found
        problem = problems[0] if problems else NameError(
            f"your answer cells define no function {self.__name__}")

        def broken(*_args, **_kwargs):
            raise problem

        return broken


def _zygote(control: Connection, other_end: Connection, fn: Callable, limits: Limits,
            driver: Callable) -> None:
    """Fork one child per app run on request; kill and reap it when told.

    The zygote reaps its children only when the grader says ``end``, so a
    child's pid (and process group) cannot be reused before it is killed. When
    the grader goes away (``quit``, or the socket closes because it was
    interrupted), children still running are killed too.
    """
    other_end.close()
    running: set[int] = set()
    if isinstance(fn, SourceFunction):
        # The learner's top-level code runs here, on the learner's side, silenced.
        with open(os.devnull, "w") as sink, redirect_stdout(sink), redirect_stderr(sink):
            fn = fn.load()
    try:
        while True:
            request = control.recv_bytes(64)
            if request == b"run":
                handle = recv_handle(control)
                pid = os.fork()
                if pid == 0:
                    try:
                        control.close()
                        _child(Connection(handle), fn, limits, driver)
                    finally:
                        os._exit(0)
                running.add(pid)
                with suppress(OSError):
                    os.setpgid(pid, pid)
                os.close(handle)
                control.send_bytes(str(pid).encode())
            elif request.startswith(b"end "):
                pid = int(request[4:])
                status = _reap(pid) if pid in running else 0
                running.discard(pid)
                control.send_bytes(str(status).encode())
            else:
                break
    except (EOFError, OSError):
        pass
    finally:
        for pid in running:
            _reap(pid)
        os._exit(0)


def _reap(pid: int) -> int:
    """Kill a child of the zygote and its process group; return its wait status."""
    for kill in (os.killpg, os.kill):
        with suppress(OSError):
            kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def _child(conn: Connection, fn: Callable, limits: Limits, driver: Callable) -> None:
    """The learner's process for one app run: confined, talking only over ``conn``."""
    with suppress(OSError):
        os.setpgid(0, 0)
    channel = _Channel(conn)
    _confine(limits, channel)
    try:
        driver(fn, channel.call)
    except SystemExit as exc:
        channel.report(["exit", exit_text(exc)])
    except BaseException as exc:  # every escape is the app dying
        text, name, where = describe(exc)
        channel.report(["raised", text, name, where])
    else:
        channel.report(["returned"])


class _Output(io.TextIOBase):
    """sys.stdout and sys.stderr of the child: counts what is printed, keeps nothing."""

    def __init__(self, limit: int, channel: _Channel) -> None:
        super().__init__()
        self._left = limit
        self._channel = channel

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._left -= len(text)
        if self._left < 0:
            self._channel.report(["flood"])
            os._exit(0)
        return len(text)


def _confine(limits: Limits, channel: _Channel) -> None:
    """CPU and memory limits, no terminal: the child cannot outlive or outgrow its run."""
    _lower(resource.RLIMIT_CPU, math.ceil(limits.time_s) + 1, extra=1)
    with suppress(OSError, ValueError):
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * resource.getpagesize()
        _lower(resource.RLIMIT_AS, size + limits.memory_mb * 2**20)
    _lower(resource.RLIMIT_FSIZE, 16 * 2**20)
    _lower(resource.RLIMIT_CORE, 0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    output = _Output(limits.output_bytes, channel)
    sys.stdin = sys.__stdin__ = open(os.devnull)  # noqa: SIM115 - lives as long as the child
    sys.stdout = sys.stderr = sys.__stdout__ = sys.__stderr__ = output


def _lower(limit: int, soft: int, extra: int = 0) -> None:
    """Lower a resource limit (never raise it), soft and hard."""
    with suppress(OSError, ValueError):
        _, hard = resource.getrlimit(limit)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        new_hard = soft + extra if hard == resource.RLIM_INFINITY else min(soft + extra, hard)
        resource.setrlimit(limit, (soft, new_hard))




def _answer_each_case(fn: Callable, call: Callable) -> None:
    while (case := call("harness", "case", (), {})) is not None:
        args, kwargs = case
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # the learner's function raised: that is its answer
            text, name, _ = describe(exc)
            call("harness", "raised", (name, text), {})
        else:
            call("harness", "answer", (result,), {})


def answer_each_case() -> Callable[[Callable, Callable], None]:
    """A driver for plain functions (``check_sequence``, ``choose_config``).

    It asks the gate's ``harness`` for a case (``[args, kwargs]``, or None
    when done), calls ``fn`` with it and sends back ``answer(result)`` or
    ``raised(type name, message)``. The gate judges each answer on its side.
    """
    return _answer_each_case


def encode_token(payload: dict) -> str:
    """A replay token: the check's name (``"c"``) and what it needs to play one run again."""
    raw = json.dumps(payload | {"v": 1}, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode("ascii").rstrip("=")


def decode_token(token: str) -> dict:
    """The payload of :func:`encode_token`; a damaged token is a ValueError that says so."""
    try:
        raw = zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        data = json.loads(raw)
        if data.get("v") != 1 or not isinstance(data["c"], str):
            raise ValueError(data.get("v"))
        return data
    except Exception as exc:  # any damage means the same thing
        raise ValueError("not a replay token from a failure message; copy the whole "
                         "course_lib.replay(\"…\") line") from exc


def notebook_function(name: str) -> Callable:
    """The learner's function of that name in the notebook (``__main__``), for a replay."""
    fn = getattr(sys.modules.get("__main__"), name, None)
    if not callable(fn):
        raise LookupError(f"no function {name!r} in the notebook; pass it: "
                          f"course_lib.replay(token, {name})")
    return fn
