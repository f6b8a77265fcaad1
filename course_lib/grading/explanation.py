"""Plain words for a failed check: faults, aborts, the timeline excerpt and the message frame.

Every check module explains its failures the same way (DESIGN §6): a headline,
the fault plan in sentences, why it broke, what the learner's code did just
before, and how to replay the run. The words that do not depend on the
assignment live here, so that a fault or an abort reads the same in every
problem set; each module passes what is its own (the name of its function,
what "too many calls" means for it, how it would rather be stopped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from confluent_kafka import Message, TopicPartition

from course_lib.faults import (
    CrashClient,
    DelayMessages,
    DropMessages,
    DuplicateMessages,
    FailProcessing,
    Isolate,
    KillBroker,
    RestartBroker,
)
from course_lib.grading.sandbox import MEMORY_LIMIT_MB, OUTPUT_LIMIT_BYTES

__all__ = [
    "arg_text",
    "call_entry",
    "message_identity",
    "CRASHED",
    "AbortWords",
    "abort_headline",
    "also_raised",
    "at",
    "causes",
    "crash_sentence",
    "describe_fault",
    "drop_numbers",
    "failure_message",
    "grader_crash",
    "logged_at",
    "merge",
    "ordinal",
    "replay_lines",
    "value_text",
    "when",
    "window",
]

# The start of a crash sentence that a timeline line drops after "CRASH: ", where the
# process named at the line's start says whose it was.
CRASHED = "your process crashed "


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th … 11th, 12th, 13th … 21st: the fault plans count calls from 1."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def value_text(value: object) -> str:
    """A record value as the learner wrote it: bytes decoded, anything else as ``str``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


# ----- faults ----------------------------------------------------------------------------------


def drop_numbers(fault: DropMessages | DelayMessages | DuplicateMessages) -> str:
    """Which matching messages a fault hits, counted from 1 as the learner counts: ``#2, #3``."""
    return ", ".join(f"#{n}" for n in range(fault.skip + 1, fault.skip + fault.count + 1))


def when(at_ms: int | None) -> str:
    """`` at t=1200ms`` for a timed fault, nothing for one triggered otherwise."""
    return f" at t={at_ms}ms" if at_ms is not None else ""


def crash_sentence(phase: str, call: str, *, verb: str = "crashed",
                   returned: str = "before it returned to your code") -> str:
    """A crash during a client call, before or after its effect (the two differ for delivery).

    ``call`` is "the 2nd call of consumer.commit"; ``verb`` lets a check that
    kills with SIGKILL say so; ``returned`` lets one whose caller is a harness
    drop "to your code".
    """
    if phase == "before":
        return f"your process {verb} during {call}, before it took effect"
    return f"your process {verb} during {call}, after it took effect but {returned}"


def describe_fault(fault: object) -> str:
    """One fault, as a sentence a learner reads: the wording every check starts from.

    A check with its own meaning for a fault (the outbox's SQL kill, the
    consumer's offset commits) words that one itself and passes the rest here.
    """
    if isinstance(fault, CrashClient):
        return crash_sentence(fault.phase, f"the {ordinal(fault.nth)} call of {fault.point}")
    if isinstance(fault, FailProcessing):
        return (f"the {ordinal(fault.nth)} call of process(msg) raised ProcessingError "
                f"(a transient failure)")
    if isinstance(fault, DropMessages):
        return f"the network lost {fault.api} {fault.kind} {drop_numbers(fault)}"
    if isinstance(fault, DelayMessages):
        return (f"the network delayed {fault.api} {fault.kind} {drop_numbers(fault)} by "
                f"{fault.delay_ms} ms")
    if isinstance(fault, DuplicateMessages):
        return f"the network delivered {fault.api} {fault.kind} {drop_numbers(fault)} twice"
    if isinstance(fault, Isolate):
        until = f" to t={fault.until_ms}ms" if fault.until_ms is not None else " on"
        return (f"broker {fault.broker} was cut off from the other brokers from "
                f"t={fault.at_ms}ms{until} (it stays up and producers still reach it; its "
                f"followers, or it as a follower, fall out of the ISR)")
    if isinstance(fault, KillBroker):
        return f"broker {fault.broker} crashed{when(fault.at_ms)}"
    if isinstance(fault, RestartBroker):
        return f"broker {fault.broker} started again{when(fault.at_ms)}"
    return repr(fault)


# ----- aborts: the sandbox stopped the learner's process ---------------------------------------


@dataclass(frozen=True)
class AbortWords:
    """How one check words the sandbox's aborts (hang, calls, exit, flood, killed, broken).

    ``name`` is how the learner's code is named ("place_order()", or a class
    name without parentheses); ``crash`` says whether the grader counts the
    abort as a crash of the app (checks that restart an app) or only as a
    failed check; ``instead`` is what the code should have done rather than
    exit; ``peer`` is what the child talks to; ``calls`` is the check's own
    sentence for too many calls.
    """

    name: str
    calls: str
    instead: str = "return or raise"
    peer: str = "the simulated cluster"
    crash: bool = True
    per_run: str = " in one run"
    memory: bool = True


def abort_headline(kind: str, words: AbortWords, detail: str, limit_s: float) -> str:
    """Why the learner's process was stopped (a kind of :data:`sandbox.ABORTS`), in words."""
    name = words.name
    ends = "; that counts as a crash, and the check fails." if words.crash \
        else ", and the check fails."
    if kind == "hang":
        return (f"{name} did not finish within {limit_s:g} s (an infinite loop? a blocking "
                f"call?). The grader stopped it{ends}")
    if kind == "calls":
        return words.calls
    if kind == "exit":
        counted = "The grader counts that as a crash, and the check fails" if words.crash \
            else "The check fails"
        return f"{name} ended its own process ({detail}). {counted}: {words.instead} instead."
    if kind == "flood":
        return (f"{name} printed more than {OUTPUT_LIMIT_BYTES} characters{words.per_run}. "
                f"The grader stopped it{ends}")
    if kind == "killed":
        memory = f" (more than {MEMORY_LIMIT_MB} MB of memory?)" if words.memory else ""
        counted = "That counts as a crash; the check fails." if words.crash \
            else "The check fails."
        return f"{name}'s process was killed by {detail}{memory}. {counted}"
    return f"{name} broke its connection to {words.peer} ({detail}); the check fails."


# ----- the timeline excerpt ("What your code did just before:") --------------------------------


def at(time_ms: int, actor: str, what: str) -> str:
    """One timeline line: ``  t=1200ms  consumer-app-1: commit()``."""
    return f"  t={time_ms}ms  {actor}: {what}"


def grader_crash(data: dict, plain: Callable[[CrashClient], str], prefix: str) -> str:
    """The CRASH a timeline shows: one the grader caused (an abort) or one from the plan."""
    if data.get("reason") == "grader":
        return f"CRASH: {data.get('point')}"
    fault = CrashClient(str(data.get("point")), str(data.get("phase")), int(data.get("nth")))
    return "CRASH: " + plain(fault).removeprefix(prefix)


def logged_at(events: Sequence, died_in_it: bool = False) -> int:
    """The History position a call the learner's code made is listed at, in the timeline.

    After the events it caused; a call the process died in goes just before
    its crash event, so that what dying caused (leaving the group) follows it.
    """
    index = len(events)
    if died_in_it:
        index = next((i for i in range(len(events) - 1, -1, -1) if events[i].kind == "crash"),
                     index)
    return index


def merge(entries: Sequence[tuple], calls: Sequence[tuple]) -> list[tuple]:
    """History lines ``(position, 0, is fault, line)`` and the learner's logged calls, in order.

    A call logged at History position i is listed after event i: it returned
    once what it caused was recorded.
    """
    logged = [(index, 1, False, f"  t={time_ms}ms  {line}") for index, time_ms, line in calls]
    return sorted([*entries, *logged], key=lambda entry: entry[:2])


def window(entries: Sequence, anchor: int | None, before: int, after: int,
           tail: bool = False) -> list:
    """The entries around the first fault, or the last ones if there is none (or ``tail``)."""
    if anchor is None or tail:
        return list(entries[-(before + after):])
    return list(entries[max(0, anchor - before):anchor + after + 1])


# ----- the message frame -----------------------------------------------------------------------


def causes(sentences: Sequence[str]) -> list[str]:
    """The fault plan in sentences, under a heading that says whether it is one or a set."""
    if not sentences:
        return []
    heading = ("The fault that caused it:" if len(sentences) == 1 else
               "The faults that caused it (a minimal set):")
    return ["", heading, *(f"  - {sentence}" for sentence in sentences)]


def also_raised(errors: Sequence, kind: str) -> list[str]:
    """A run judged on its data also mentions the first exception the code raised."""
    if not errors or kind == "error":
        return []
    first = errors[0]
    return ["", f"Your function also raised {first.error_type}: {first.detail}"]


def replay_lines(plan: str | None, seed: int, token: str, *, draw: bool = True) -> list[str]:
    """The closing lines: the minimal plan (if there is one to show) and the replay call."""
    lines = [f"Minimal fault plan: {plan} (seed {seed})"] if plan is not None else []
    drawn = " and draw the timeline" if draw else ""
    return lines + [f"Replay it{drawn}: course_lib.replay(\"{token}\")"]


def failure_message(check: str, guarantee: str, headline: str, *, faults: Sequence[str],
                    why: Sequence[str], errors: Sequence, kind: str,
                    story: Callable[[], list[str]], plan: str, seed: int, token: str) -> str:
    """The whole message of a check that restarts an app: what, faults, why, story, replay.

    ``story`` is called only when there is a story to tell: a run stopped for
    hanging has none worth reading.
    """
    lines = [f"check_{check} failed ({guarantee}): {headline}", *causes(faults)]
    if why:
        lines += ["", *why]
    lines += also_raised(errors, kind)
    if kind != "hang":
        lines += ["", "What your code did just before:", *story()]
    lines += ["", *replay_lines(plan, seed, token)]
    return "\n".join(lines)


def arg_text(value: object) -> str:
    """A call's argument or result as the timeline shows it: short and readable."""
    if isinstance(value, Message):
        return f"{value_text(value.value())} (offset {value.offset()})"
    if isinstance(value, TopicPartition):
        return f"TopicPartition({value.topic!r}, {value.partition}, {value.offset})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(arg_text(item) for item in value[:4]) + (
            ", …]" if len(value) > 4 else "]")
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def message_identity(message: Message) -> tuple:
    """What makes a delivered message the same one when the learner hands it back."""
    return (message.topic(), message.partition(), message.offset(), message.value())


def call_entry(events: Sequence, actor: str, text: str, died_in_it: bool = False) -> tuple:
    """One line of "what your code did": (History position, time ms, text)."""
    index = logged_at(events, died_in_it)
    when = events[index - 1].time_ms if index else 0
    return index, when, f"{actor}: {text}"
