"""Diagrams of a run as plain SVG: the timeline of a History, the replicas of a partition.

Why the SVG is written by hand: the same input must give byte-identical output
(the determinism tests compare bytes, and committed notebooks diff cleanly), and
a diagram must render with no JavaScript in JupyterLab, in nbconvert's HTML
(grading feedback) and in GitHub's static notebook view. So there are no ids,
``<defs>``, ``<style>`` blocks or ``url(#…)`` references (GitHub's sanitiser
rewrites ids, which breaks them), only presentation attributes; every number is
rounded; and nothing depends on the clock or on hash order.

Accessibility: each diagram has a ``<title>`` and a ``<desc>``, each row a
``<title>`` tooltip with the raw events, every colour is backed by a shape or a
word (LOST, DUPLICATE, DOWN, LEADER…), and the palette is Okabe–Ito, which stays
distinct under the common colour-vision deficiencies.

* :func:`timeline` — a sequence diagram of a History, anomalies from a Report flagged.
* :func:`replicas` — each replica's log of one partition, with LEO, HW, LSO and ISR.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from course_lib.data import label as value_label

FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
CHAR_EM = 0.58  # a generous average glyph width of FONT, in ems, for layout
MONO_EM = 0.61
TEXT_PX = 12
SMALL_PX = 10.5

INK = "#1f2328"
MUTED = "#57606a"
FAINT = "#c8d1da"
ZEBRA = "#f6f8fa"
BLUE = "#0072B2"
GREEN = "#007A5A"
ORANGE = "#C77800"
VERMILION = "#D55E00"
PURPLE = "#8E4C9E"
GREY = "#8c959f"
FAULT_TEXT = "#A6290D"
HIGHLIGHT = "#FFF1B8"
HIGHLIGHT_EDGE = "#E6B800"
BADGE_COLOURS = (  # tag, fill: dark enough for white text to pass WCAG AA
    ("LOST", "#B3261E"),
    ("DUPLICATE", "#8A4B00"),
    ("ABORTED READ", "#6B3FA0"),
    ("REORDERED", "#0B5394"),
    ("TOLD FAILED, YET WRITTEN", "#4D5761"),
)

PAD = 16
TIME_W = 92
ROW_H = 24
GAP_H = 16
ELIDED_H = 22
LANE_HEAD_H = 38
GAP_MS = 500  # a pause this long between two rows gets a visible break marker
LONG_GAP_MS = 5_000  # … and one this long is also spelled out in the description column
MAX_ROWS = 60
MIN_WIDTH = 760
DESC_MIN_W = 320
DESC_MAX_W = 600

FAULT_KINDS = frozenset({"crash", "fault", "broker_crash", "offline", "truncate", "lost_buffer"})
KEEP_KINDS = FAULT_KINDS | {"broker_restart", "election", "final_read", "close", "nack",
                            "txn_end"}
LANE_GROUPS = ("nemesis", "application", "broker", "controller", "txn-coordinator",
               "coordinator", "consumer")
LIVE_LANES = frozenset({"application", "consumer"})  # lifelines start at first appearance

CELL_H = 34
INFO_W = 200
BLOCK_GAP = 18
CELL_LABEL_CHARS = 10
CELL_STYLES = {  # kind: (fill, stroke, dash, text colour, caption, legend text)
    "committed": ("#DCEBF7", BLUE, None, INK, "",
                  "committed: below the high watermark, every in-sync replica has it"),
    "uncommitted": ("#ffffff", BLUE, "4 3", INK, "",
                    "not yet committed: above the high watermark, consumers cannot read it"),
    "open": ("#F3E8F7", PURPLE, "4 3", INK, "open txn",
             "part of a transaction still open: read_committed waits (LSO)"),
    "aborted": ("#eeeeee", GREY, None, MUTED, "aborted",
                "written by a transaction that aborted: read_committed skips it"),
    "control": ("#3d4450", "#3d4450", None, "#ffffff", "marker",
                "a transaction marker (COMMIT or ABORT), not a message"),
}

LEGEND = (  # style, colour, plain-language meaning; a diagram lists only the styles it uses
    ("open-dot", BLUE, "the app hands a message to its producer (it is only in memory)"),
    ("request", BLUE, "a request: produce to a broker, commit to the coordinator"),
    ("response", GREEN, "an answer coming back: an acknowledgement, or messages a poll fetched"),
    ("response-bad", VERMILION, "the producer gives up: the app is told the send failed"),
    ("drop", VERMILION, "the network loses this message: it never arrives"),
    ("delay", ORANGE, "the network delays (or duplicates) this message"),
    ("inject", VERMILION, "the fault injector kills or restarts a broker"),
    ("square", GREEN, "a broker writes messages to its log"),
    ("square-open", GREEN, "a broker recognises a retried batch and does not write it again"),
    ("dot", BLUE, "the consumer app processes a message (its side effect happens)"),
    ("dot-skip", GREY, "the app skips a message its inbox has already seen"),
    ("diamond-open", GREY, "retry, rebalance or epoch bump: bookkeeping, nothing written"),
    ("burst", VERMILION, "an application process crashes: its lifeline ends"),
    ("cross", VERMILION, "a broker crashes: its lifeline is dashed grey while it is down"),
    ("triangle", GREEN, "a broker starts again"),
    ("elect", GREY, "the controller makes a broker leader (red: unclean, out of sync)"),
    ("small-square", GREY, "the controller changes the in-sync replica set (ISR)"),
    ("diamond-bad", VERMILION, "the partition goes offline: no in-sync replica is alive"),
    ("erase", VERMILION, "records are erased (truncated log, or a dead producer's buffer)"),
    ("flag", INK, "a transaction marker (COMMIT or ABORT) is written to the log"),
    ("diamond", PURPLE, "the transaction coordinator starts or ends a transaction"),
    ("chevron", BLUE, "the consumer moves its position (seek, offset reset)"),
    ("note", MUTED, "a note from the story"),
    ("bar", MUTED, "a client closes cleanly"),
    ("band", INK, "the checker's final read, after every fault is healed"),
)


# ----- the diagram object ---------------------------------------------------------------


@dataclass(frozen=True)
class Diagram:
    """An SVG drawing that JupyterLab, nbconvert HTML and GitHub all show without JavaScript."""

    svg: str
    title: str = ""
    width: int = 0
    height: int = 0

    def __repr__(self) -> str:
        return f"<Diagram {self.title!r}: {self.width}x{self.height} SVG>"

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_html_(self) -> str:
        return f'<div style="max-width:100%;overflow-x:auto">{self.svg}</div>'

    def save(self, path: str | Path) -> Path:
        """Write ``.svg`` (a standalone SVG file) or ``.html`` (a page holding it)."""
        path = Path(path)
        if path.suffix.lower() == ".svg":
            text = '<?xml version="1.0" encoding="UTF-8"?>\n' + self.svg + "\n"
        elif path.suffix.lower() in (".html", ".htm"):
            text = ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'
                    f"{_esc(self.title)}</title></head><body>\n{self.svg}\n</body></html>\n")
        else:
            raise ValueError(f"save as .svg or .html, not {path.suffix or path.name!r}")
        path.write_text(text, encoding="utf-8")
        return path


# ----- SVG writing ------------------------------------------------------------------------


def _esc(text: object) -> str:
    """Text safe inside XML: escaped, and without the control characters XML forbids."""
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "\ufffd", str(text))
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _num(value: float) -> str:
    """A coordinate as stable text: integers bare, anything else to one decimal."""
    value = round(float(value), 1)
    return str(int(value)) if value.is_integer() else f"{value:.1f}"


def _width(text: str, size: float = TEXT_PX, mono: bool = False, bold: bool = False) -> float:
    """Estimated width of ``text`` in pixels (generous, so labels never collide)."""
    if mono:
        return len(text) * size * MONO_EM
    capitals = sum(1 for char in text if char.isupper() or char.isdigit())
    em = CHAR_EM + (0.05 if bold else 0)
    return ((len(text) - capitals) * em + capitals * (em + 0.12)) * size


def _fit(text: str, width: float, size: float = TEXT_PX, mono: bool = False) -> str:
    """``text`` cut with an ellipsis so it fits ``width`` pixels."""
    if _width(text, size, mono) <= width:
        return text
    keep = max(1, int(width / (size * (MONO_EM if mono else CHAR_EM))) - 1)
    return text[:keep] + "\u2026"


def _wrap(text: str, width: float, size: float = TEXT_PX) -> list[str]:
    """Greedy word wrap to ``width`` pixels."""
    lines, line = [], ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and _width(candidate, size) > width:
            lines.append(line)
            line = word
        else:
            line = candidate
    return lines + [line] if line else lines


class _Svg:
    """Collects SVG elements as text; attribute order is fixed, so output is stable."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def el(self, tag: str, content: str | None = None, **attrs) -> None:
        """One element; ``stroke_width=2`` becomes ``stroke-width="2"``; None is left out."""
        text = "".join(f' {name.replace("_", "-")}="{_attr(value)}"'
                       for name, value in attrs.items() if value is not None)
        if content is None:
            self.parts.append(f"<{tag}{text}/>")
        else:
            self.parts.append(f"<{tag}{text}>{_esc(content)}</{tag}>")

    def line(self, x1, y1, x2, y2, stroke=INK, width=1.0, dash=None) -> None:
        self.el("line", x1=x1, y1=y1, x2=x2, y2=y2, stroke=stroke, stroke_width=width,
                stroke_dasharray=dash)

    def rect(self, x, y, w, h, fill="none", stroke=None, width=None, radius=None,
             dash=None) -> None:
        self.el("rect", x=x, y=y, width=w, height=h, rx=radius, fill=fill, stroke=stroke,
                stroke_width=width, stroke_dasharray=dash)

    def text(self, x, y, content, size=TEXT_PX, fill=INK, anchor=None, bold=False,
             mono=False, italic=False) -> None:
        self.el("text", content, x=x, y=y, font_size=size, fill=fill, text_anchor=anchor,
                font_weight="bold" if bold else None, font_style="italic" if italic else None,
                font_family=MONO if mono else None)

    def poly(self, points, fill=INK, stroke=None, width=None) -> None:
        self.el("polygon", points=" ".join(f"{_num(x)},{_num(y)}" for x, y in points),
                fill=fill, stroke=stroke, stroke_width=width)

    def circle(self, x, y, r, fill=INK, stroke=None, width=None) -> None:
        self.el("circle", cx=x, cy=y, r=r, fill=fill, stroke=stroke, stroke_width=width)

    def open(self, tip: str | None = None, opacity: float | None = None) -> None:
        """Start a group; ``tip`` becomes its <title> (a tooltip, and read by screen readers)."""
        self.parts.append("<g>" if opacity is None else f'<g opacity="{_num(opacity)}">')
        if tip:
            self.el("title", tip)

    def close(self) -> None:
        self.parts.append("</g>")

    def render(self, width: float, height: float, title: str, desc: str) -> str:
        size = f'width="{_num(width)}" height="{_num(height)}"'
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" {size} '
                f'viewBox="0 0 {_num(width)} {_num(height)}" role="img" '
                f'font-family="{FONT}" font-size="{TEXT_PX}" '
                'style="max-width:100%;height:auto;background:#ffffff">')
        body = [f"<title>{_esc(title)}</title>", f"<desc>{_esc(desc)}</desc>",
                f'<rect x="0" y="0" width="{_num(width)}" height="{_num(height)}" '
                'fill="#ffffff"/>']
        return "\n".join([head, *body, *self.parts, "</svg>"])


def _attr(value: object) -> str:
    return _num(value) if isinstance(value, (int, float)) else _esc(value)


# ----- glyphs: one small drawing per kind of mark ------------------------------------------


def _arrow(svg: _Svg, x1: float, x2: float, y: float, colour: str, dash: str | None = None,
           head: bool = True, cross: bool = False) -> None:
    """A horizontal arrow; ``cross`` draws an X where the message is lost instead of a head."""
    step = 1 if x2 >= x1 else -1
    end = x2 - step * 7 if head else x2
    if cross:
        end = x1 + (x2 - x1) * 0.72
    svg.line(x1, y, end, y, colour, 1.6, dash)
    if cross:
        svg.line(end - 5, y - 5, end + 5, y + 5, colour, 2.2)
        svg.line(end - 5, y + 5, end + 5, y - 5, colour, 2.2)
    elif head:
        svg.poly([(x2, y), (x2 - step * 8, y - 4.5), (x2 - step * 8, y + 4.5)], colour)


def _glyph(svg: _Svg, style: str, x: float, y: float, colour: str) -> None:
    """The mark for ``style`` centred on ``(x, y)``."""
    if style in ("open-dot", "dot", "dot-skip", "dot-grey"):
        filled = style in ("dot", "dot-grey")
        svg.circle(x, y, 5, colour if filled else "#ffffff", colour, 1.6)
        if style == "dot-skip":
            svg.line(x - 5, y + 5, x + 5, y - 5, colour, 1.4)
    elif style in ("square", "square-open", "small-square"):
        half = 3.5 if style == "small-square" else 5
        filled = style == "square"
        svg.rect(x - half, y - half, 2 * half, 2 * half, colour if filled else "#ffffff",
                 colour, 1.6)
    elif style in ("diamond", "diamond-open", "diamond-bad"):
        fill = "#ffffff" if style == "diamond-open" else colour
        svg.poly([(x, y - 6), (x + 6, y), (x, y + 6), (x - 6, y)], fill, colour, 1.4)
    elif style == "burst":
        points = []
        for i in range(16):
            radius = 9 if i % 2 == 0 else 4
            angle = i * math.pi / 8
            points.append((x + radius * math.cos(angle), y + radius * math.sin(angle)))
        svg.poly(points, colour)
    elif style == "cross":
        svg.line(x - 6, y - 6, x + 6, y + 6, colour, 3)
        svg.line(x - 6, y + 6, x + 6, y - 6, colour, 3)
    elif style == "triangle":
        svg.poly([(x, y - 6), (x + 6, y + 5), (x - 6, y + 5)], "#ffffff", colour, 1.6)
    elif style == "erase":
        svg.rect(x - 6, y - 6, 12, 12, "#ffffff", colour, 1.6)
        svg.line(x - 6, y - 6, x + 6, y + 6, colour, 1.4)
        svg.line(x - 6, y + 6, x + 6, y - 6, colour, 1.4)
    elif style == "flag":
        svg.line(x - 4, y - 7, x - 4, y + 7, colour, 1.6)
        svg.poly([(x - 4, y - 7), (x + 6, y - 4), (x - 4, y - 1)], colour)
    elif style == "chevron":
        svg.poly([(x + 5, y - 6), (x - 5, y), (x + 5, y + 6)], colour)
    elif style == "note":
        svg.rect(x - 7, y - 5, 14, 10, "#ffffff", colour, 1.4, radius=2)
    elif style == "bar":
        svg.line(x - 8, y, x + 8, y, colour, 3)
    else:
        svg.circle(x, y, 4, colour)




# ----- timeline: from events to rows -----------------------------------------------------


@dataclass
class _Row:
    """One line of the timeline: an actor doing one kind of thing at one instant.

    Consecutive events of the same kind by the same actor at the same time (ten
    appends of one batch, ten acks of one response) share a row, so a burst
    reads as one step.
    """

    time_ms: int
    kind: str
    actor: str
    src: str | None
    dst: str | None
    key: tuple
    events: list = field(default_factory=list)
    repeats: int = 0  # later firings of the same delay fault, folded into this row
    badges: list = field(default_factory=list)  # (tag, values)

    @property
    def values(self) -> list:
        """Every message value the row's events mention, in order."""
        found = []
        for event in self.events:
            if "value" in event.data:
                found.append(event.data["value"])
            found.extend(event.data.get("values") or ())
        return found

    @property
    def lanes(self) -> list[str]:
        return [lane for lane in (self.src, self.dst) if lane]


def _fault_type(event) -> str:
    return str(event.data.get("fault", "")).split("(", 1)[0]


def _route(events: list, index: int, leaders: dict, asked: dict) -> tuple:
    """(from lane, to lane) of an event: arrows for messages, a single lane for marks."""
    event = events[index]
    data, kind, actor = event.data, event.kind, event.actor
    tp = (data.get("topic"), data.get("partition"))
    if kind == "attempt":
        return actor, f"broker-{data['broker']}"
    if kind in ("ack", "nack"):
        return asked.get((actor, tp)), actor
    if kind == "poll":
        return leaders.get(tp), actor
    if kind in ("commit", "auto_commit"):
        return actor, "coordinator"
    if kind == "election":
        return "controller", f"broker-{data['leader']}"
    if kind == "final_read":
        return None, None
    if kind == "fault":
        return _fault_route(events, index)
    return actor, None


def _fault_route(events: list, index: int) -> tuple:
    """A network fault runs along the message it hit; a kill or restart points at its broker."""
    event = events[index]
    message = str(event.data.get("message", ""))
    match = re.fullmatch(r"(\w+) (\w+) (\S+)->(\S+)", message)
    if match:
        return match.group(3), match.group(4)
    if _fault_type(event) in ("KillBroker", "RestartBroker"):
        for later in events[index + 1:index + 4]:
            if later.time_ms != event.time_ms:
                break
            if later.kind in ("broker_crash", "broker_restart"):
                return "nemesis", later.actor
    if _fault_type(event) == "Isolate":
        broker = re.search(r"broker=(\d+)", str(event.data.get("fault", "")))
        return "nemesis", f"broker-{broker.group(1)}" if broker else None
    return "nemesis", None


def _rows(events: list) -> list[_Row]:
    """Group the history into rows, following leaders and requests to place arrows."""
    rows: list[_Row] = []
    leaders: dict = {}  # (topic, partition) -> leader lane, from elections
    asked: dict = {}  # (producer, (topic, partition)) -> broker lane of its last request
    delays: dict = {}  # delay fault repr -> the row of its first firing
    for index, event in enumerate(events):
        data = event.data
        tp = (data.get("topic"), data.get("partition"))
        if event.kind == "fault" and _fault_type(event) == "DelayMessages":
            first = delays.get(data.get("fault"))
            if first is not None:
                first.repeats += 1
                continue
        src, dst = _route(events, index, leaders, asked)
        single = event.kind in ("attempt", "retry", "fault")  # one request each: never merged
        key = (event.time_ms, event.kind, event.actor, src, dst, index if single else None)
        if rows and rows[-1].key == key:
            rows[-1].events.append(event)
        else:
            rows.append(_Row(event.time_ms, event.kind, event.actor, src, dst, key, [event]))
            if event.kind == "fault" and _fault_type(event) == "DelayMessages":
                delays[data.get("fault")] = rows[-1]
        if event.kind == "election":
            leaders[tp] = f"broker-{data['leader']}"
        elif event.kind == "offline":
            leaders.pop(tp, None)
        elif event.kind == "attempt":
            asked[(event.actor, tp)] = f"broker-{data['broker']}"
    return rows


# ----- timeline: flagging what the checker found ---------------------------------------------


def _flag(rows: list[_Row], report) -> None:
    """Attach LOST / DUPLICATE / ABORTED READ … badges to the rows that show them.

    A lost message is flagged where it was sent and where it was last seen (the
    truncation, the crash, the give-up); a duplicate at its second and later
    deliveries; an aborted read where it was processed.
    """
    if report is None:
        return
    lost, duplicated = list(report.lost), set(report.duplicated)
    aborted, reordered = set(report.aborted_reads), set(report.reordered)
    unacked = set(report.unacked_writes)
    seen = [row for row in rows if row.kind != "final_read"]
    delivery = "process" if any(row.kind == "process" for row in rows) else "append"
    for value in lost:
        mentions = [row for row in seen if value in row.values]
        for index, row in enumerate(mentions):
            vanishes = row.kind in ("truncate", "lost_buffer", "nack")
            if index in (0, len(mentions) - 1) or vanishes:
                _badge(row, "LOST", value)
    counts: Counter = Counter()
    for row in rows:
        if row.kind == delivery:
            for value in row.values:
                counts[value] += 1
                if value in duplicated and counts[value] > 1:
                    _badge(row, "DUPLICATE", value)
                if value in reordered:
                    _badge(row, "REORDERED", value)
        if row.kind == "process":
            for value in row.values:
                if value in aborted:
                    _badge(row, "ABORTED READ", value)
        if row.kind in ("nack", "lost_buffer"):
            for value in row.values:
                if value in unacked:
                    _badge(row, "TOLD FAILED, YET WRITTEN", value)


def _badge(row: _Row, tag: str, value) -> None:
    for existing, values in row.badges:
        if existing == tag:
            if value not in values:
                values.append(value)
            return
    row.badges.append((tag, [value]))
    row.badges.sort(key=lambda badge: [t for t, _c in BADGE_COLOURS].index(badge[0]))


# ----- timeline: words for each row ----------------------------------------------------------


def _phrase(values: list, limit: int = 3) -> str:
    """m-000, m-001 … m-009 (10): a list of messages, short enough for one line."""
    labels = [value_label(v) for v in values]
    if not labels:
        return "nothing"
    if len(labels) <= limit:
        return ", ".join(labels)
    return f"{labels[0]}, {labels[1]} \u2026 {labels[-1]} ({len(labels)})"


def _span(numbers: list[int]) -> str:
    """0–9 for a run of offsets, 5 for one."""
    if not numbers:
        return "?"
    low, high = min(numbers), max(numbers)
    return str(low) if low == high else f"{low}\u2013{high}"


def _describe(row: _Row) -> str:
    """What the row shows, in plain words."""
    for describe in (_describe_client, _describe_cluster, _describe_fault):
        text = describe(row)
        if text:
            return text
    return f"{row.actor}: {row.kind.replace('_', ' ')}"


def _describe_client(row: _Row) -> str | None:
    data, vals = row.events[0].data, _phrase(row.values)
    offsets = [e.data.get("offset") for e in row.events if e.data.get("offset") is not None]
    texts = {
        "send": lambda: f"{row.actor} buffers {vals}",
        "attempt": lambda: (f"{row.actor} \u2192 {row.dst}: produce {vals} "
                            f"(attempt {data.get('attempt')})"),
        "ack": lambda: f"{row.src or 'broker'} \u2192 {row.actor}: ack {vals} "
                       f"(offset {_span(offsets)})",
        "nack": lambda: (f"{row.actor} gives up on {vals}: {data.get('error')}"
                         + (" (outcome unknown)" if data.get("indefinite") else "")),
        "retry": lambda: f"{row.actor} will retry {vals} after {data.get('error')}",
        "poll": lambda: (f"{row.src or 'leader'} \u2192 {row.actor}: poll returns {vals} "
                         f"(offset {_span(offsets)})"),
        "process": lambda: f"{row.actor} processes {vals}",
        "dedupe_skip": lambda: f"{row.actor} skips {vals}: its inbox has seen it",
        "commit": lambda: f"{row.actor} \u2192 coordinator: commit, next offset {_span(offsets)}",
        "auto_commit": lambda: f"{row.actor} \u2192 coordinator: auto-commit "
                               + ", ".join(f"{t}-{p} next {o}" for t, p, o in
                                           data.get("offsets", ())),
        "seek": lambda: f"{row.actor} seeks to offset {data.get('offset')}",
        "offset_reset": lambda: (f"{row.actor} resets its position {data.get('old')} "
                                 f"\u2192 {data.get('new')}"),
        "close": lambda: f"{row.actor} closes",
        "epoch_bump": lambda: f"{row.actor} bumps its producer epoch to {data.get('epoch')}",
        "note": lambda: f"{row.actor} {data.get('text', '')}",
        "final_read": lambda: (f"final read ({data.get('isolation')}) of {data.get('topic')}-"
                               f"{data.get('partition')}: {_phrase(row.values)}"),
    }
    maker = texts.get(row.kind)
    return maker() if maker else None


def _describe_cluster(row: _Row) -> str | None:
    data, vals = row.events[0].data, _phrase(row.values)
    offsets = [e.data.get("offset") for e in row.events if e.data.get("offset") is not None]
    tp = f"{data.get('topic')}-{data.get('partition')}"
    isr = "{" + ", ".join(str(b) for b in data.get("isr", ())) + "}"
    texts = {
        "append": lambda: f"{row.actor} writes {vals} at offset {_span(offsets)}",
        "dedupe": lambda: (f"{row.actor} sees a retried batch (producer {data.get('producer_id')}"
                           f", seq {data.get('seq')}): not written again"),
        "election": lambda: (("UNCLEAN election: out-of-sync " if data.get("unclean") else
                              "controller: ")
                             + f"broker-{data.get('leader')} leads {tp} (epoch "
                               f"{data.get('epoch')}), ISR {isr}"),
        "isr": lambda: f"controller: ISR of {tp} is now {isr} ({data.get('reason')})",
        "offline": lambda: f"{tp} is OFFLINE: no in-sync replica is alive ({data.get('reason')})",
        "broker_crash": lambda: f"{row.actor} crashes"
                                + (" and loses its disk" if data.get("lose_disk") else ""),
        "broker_restart": lambda: f"{row.actor} starts again",
        "truncate": lambda: f"{row.actor} truncates {tp} at offset {data.get('offset')}, "
                            f"erasing {vals}",
        "marker": lambda: f"{row.actor} writes a {data.get('control')} marker at offset "
                          f"{data.get('offset')}",
        "txn_init": lambda: (f"{data.get('transactional_id')} gets producer id "
                             f"{data.get('producer_id')}, epoch {data.get('epoch')}"),
        "txn_end": lambda: (f"transaction {data.get('txn')} "
                            f"{'commits' if data.get('outcome') == 'commit' else 'aborts'}"
                            f" ({data.get('reason')})"),
        "rebalance": lambda: (f"group {data.get('group')} generation {data.get('generation')}: "
                              f"{data.get('reason')}"),
        "crash": lambda: (f"{row.actor} CRASHES {data.get('phase')} {data.get('point')} "
                          f"(call {data.get('nth')})"),
        "lost_buffer": lambda: f"{row.actor} dies with {vals} unsent: they are gone",
    }
    maker = texts.get(row.kind)
    return maker() if maker else None


def _describe_fault(row: _Row) -> str | None:
    if row.kind != "fault":
        return None
    event = row.events[0]
    fault, kind = _fault_type(event), str(event.data.get("fault", ""))
    match = re.fullmatch(r"(\w+) (\w+) (\S+)->(\S+)", str(event.data.get("message", "")))
    if match:
        what = f"the {match.group(2)} {match.group(1)} {match.group(3)} \u2192 {match.group(4)}"
        if fault == "DropMessages":
            return f"network LOSES {what}"
        if fault == "DuplicateMessages":
            return f"network DUPLICATES {what}"
        delay = re.search(r"delay_ms=(\d+)", kind)
        more = f"; and {row.repeats} more such, not drawn" if row.repeats else ""
        return f"network delays {what} by {delay.group(1) if delay else '?'} ms{more}"
    if fault == "KillBroker":
        return (f"fault injector kills {row.dst}" if row.dst
                else "fault injector: kill (no broker to kill)")
    if fault == "RestartBroker":
        return (f"fault injector restarts {row.dst}" if row.dst
                else "fault injector: restart (that broker is already up)")
    if fault == "Isolate":
        action = event.data.get("action")
        return (f"fault injector cuts {row.dst} off from the other brokers" if action == "isolate"
                else f"fault injector heals {row.dst}'s links")
    if fault == "FailProcessing":
        return "fault injector makes the next processing call fail"
    return f"fault injector: {_fit(kind, 360)}"


def _style(row: _Row) -> tuple[str, str]:
    """(glyph style, colour) of a row."""
    data, kind = row.events[0].data, row.kind
    if kind == "fault":
        fault = _fault_type(row.events[0])
        if row.dst and fault == "DropMessages":
            return "drop", VERMILION
        if row.dst and fault in ("DelayMessages", "DuplicateMessages"):
            return "delay", ORANGE
        return ("inject", VERMILION) if row.dst else ("burst", VERMILION)
    styles = {
        "send": ("open-dot", BLUE), "attempt": ("request", BLUE), "ack": ("response", GREEN),
        "nack": ("response-bad", VERMILION), "retry": ("diamond-open", ORANGE),
        "poll": ("response", BLUE), "process": ("dot", BLUE), "dedupe_skip": ("dot-skip", GREY),
        "commit": ("request", PURPLE), "auto_commit": ("request", PURPLE),
        "append": ("square", GREEN), "dedupe": ("square-open", GREEN),
        "crash": ("burst", VERMILION), "broker_crash": ("cross", VERMILION),
        "broker_restart": ("triangle", GREEN),
        "election": ("elect", VERMILION if data.get("unclean") else GREY),
        "isr": ("small-square", GREY), "offline": ("diamond-bad", VERMILION),
        "truncate": ("erase", VERMILION), "lost_buffer": ("erase", VERMILION),
        "marker": ("flag", INK), "txn_init": ("diamond", PURPLE), "txn_end": ("diamond", PURPLE),
        "rebalance": ("diamond-open", GREY), "epoch_bump": ("diamond-open", GREY),
        "seek": ("chevron", BLUE), "offset_reset": ("chevron", ORANGE),
        "note": ("note", MUTED), "close": ("bar", MUTED), "final_read": ("band", INK),
    }
    style, colour = styles.get(kind, ("dot-grey", GREY))
    if style in ("response", "request") and not row.src:
        style = "dot"
    return style, colour


def _tip(row: _Row) -> str:
    """The tooltip: the raw events of the row (at most six), exactly as recorded."""
    lines = [f"t={row.time_ms} ms \u00b7 {row.actor} \u00b7 {row.kind} \u00b7 "
             f"{len(row.events)} event(s)"]
    for event in row.events[:6]:
        details = ", ".join(f"{k}={_short_repr(v)}" for k, v in sorted(event.data.items()))
        lines.append(details)
    if len(row.events) > 6:
        lines.append(f"\u2026 {len(row.events) - 6} more")
    return "\n".join(lines)


def _short_repr(value: object) -> str:
    if isinstance(value, (list, tuple)) and len(value) > 4:
        return f"[{value_label(value[0])} \u2026 {value_label(value[-1])}] ({len(value)})"
    if isinstance(value, bytes):
        return value_label(value, 40)
    return _fit(repr(value), 400)


# ----- timeline: what to draw when the history is long -------------------------------------


def _select(rows: list[_Row], max_rows: int) -> list[bool]:
    """Which rows to draw: all if they fit, else faults and flagged rows first.

    Then their neighbours (the cause is usually just before), then the story's
    start and end, alternately, so the middle is what gets folded into "not
    drawn" lines.
    """
    if len(rows) <= max_rows:
        return [True] * len(rows)
    important = [i for i, row in enumerate(rows) if row.badges or row.kind in KEEP_KINDS]
    chosen = set(important[:max_rows])
    for i in important:
        for j in (i - 1, i + 1):
            if len(chosen) < max_rows and 0 <= j < len(rows):
                chosen.add(j)
    count = len(rows)
    for i in (k // 2 if k % 2 == 0 else count - 1 - k // 2 for k in range(count)):
        if len(chosen) >= max_rows:
            break
        chosen.add(i)
    return [i in chosen for i in range(len(rows))]


def _items(rows: list[_Row], keep: list[bool]) -> list[tuple]:
    """The vertical sequence: ("row", row), ("elided", rows) and ("gap", ms) items."""
    grouped: list[tuple] = []
    for row, kept in zip(rows, keep, strict=True):
        if kept:
            grouped.append(("row", row))
        elif grouped and grouped[-1][0] == "elided":
            grouped[-1][1].append(row)
        else:
            grouped.append(("elided", [row]))
    items, last_ms = [], None
    for item in grouped:
        first = item[1] if item[0] == "row" else item[1][0]
        final = item[1] if item[0] == "row" else item[1][-1]
        if last_ms is not None and first.time_ms - last_ms >= GAP_MS:
            items.append(("gap", first.time_ms - last_ms))
        items.append(item)
        last_ms = final.time_ms
    return items


def _elided_text(rows: list[_Row]) -> str:
    counts = Counter(row.kind for row in rows)
    events = sum(len(row.events) for row in rows)
    kinds = ", ".join(f"{kind.replace('_', ' ')} \u00d7{n}" for kind, n in counts.most_common(4))
    more = ", \u2026" if len(counts) > 4 else ""
    return (f"\u22ef {events} events not drawn ({kinds}{more}), "
            f"{_clock(rows[0].time_ms)} to {_clock(rows[-1].time_ms)}")


def _clock(time_ms: int) -> str:
    return f"{time_ms:,} ms"


def _pause(delta_ms: int) -> str:
    return f"{delta_ms / 1000:.1f} s" if delta_ms >= 1000 else f"{delta_ms} ms"


# ----- timeline: lanes -------------------------------------------------------------------------


def _lane_group(actor: str) -> str:
    if actor == "nemesis":
        return "nemesis"
    if actor.startswith("broker-"):
        return "broker"
    if actor in ("controller", "txn-coordinator", "coordinator"):
        return actor
    if actor.startswith("consumer"):
        return "consumer"
    return "application"


def _role(actor: str) -> str:
    """The caption under a lane's name."""
    group = _lane_group(actor)
    if group == "application":
        if "-app" in actor:
            return "app process"
        return {"producer": "producer", "relay": "outbox relay"}.get(actor.split("-")[0],
                                                                      "application")
    if group == "consumer":
        return "app process" if "-app" in actor else "consumer"
    return {"nemesis": "fault injector", "broker": "broker", "controller": "controller",
            "txn-coordinator": "transactions", "coordinator": "group coordinator"}[group]


def _lanes(rows: list[_Row]) -> list[str]:
    """Every actor's lane, grouped left to right: apps, brokers, coordination, consumers."""
    order: list[str] = []
    for row in rows:
        mentioned = list(row.lanes)
        if row.kind == "election":
            mentioned += [f"broker-{b}" for b in row.events[0].data.get("isr", ())]
        for lane in mentioned:
            if lane not in order:
                order.append(lane)

    def rank(lane: str) -> tuple:
        group = LANE_GROUPS.index(_lane_group(lane))
        number = int(lane.split("-")[-1]) if group == 2 and lane[7:].isdigit() else 0
        return group, number, order.index(lane)

    return sorted(order, key=rank)


# ----- timeline: drawing ------------------------------------------------------------------------


@dataclass
class _Layout:
    """Where things go: lane x positions, the description column, and row y positions."""

    lanes: dict  # lane -> x of its lifeline
    lane_ws: dict  # lane -> width of its column
    desc_x: float
    desc_w: float
    width: float
    top: float
    ys: list = field(default_factory=list)  # y of each item
    bottom: float = 0


def _badge_width(tag: str, values: list) -> float:
    return _width(_badge_text(tag, values), SMALL_PX, bold=True) + 12


def _badge_text(tag: str, values: list) -> str:
    return tag if len(values) == 1 else f"{tag} \u00d7{len(values)}"


def _layout(lanes: list[str], items: list[tuple], header_h: float) -> _Layout:
    widths = {lane: max(64.0, min(130.0, max(_width(lane, 11, bold=True),
                                             _width(_role(lane), 9.5)) + 18))
              for lane in lanes}
    positions, x = {}, PAD + TIME_W
    for lane in lanes:
        positions[lane] = x + widths[lane] / 2
        x += widths[lane]
    desc_x = x + 14
    needed = [_width(_describe(item[1])) + sum(_badge_width(t, v) + 6 for t, v in
                                               item[1].badges)
              for item in items if item[0] == "row"]
    desc_w = max(DESC_MIN_W, min(DESC_MAX_W, max(needed, default=0) + 8))
    layout = _Layout(positions, widths, desc_x, desc_w, max(MIN_WIDTH, desc_x + desc_w + PAD),
                     header_h + LANE_HEAD_H + 10)
    y = layout.top
    for kind, _payload in items:
        height = {"row": ROW_H, "gap": GAP_H, "elided": ELIDED_H}[kind]
        layout.ys.append(y + height / 2)
        y += height
    layout.bottom = y + 6
    return layout


def _draw_lane_heads(svg: _Svg, layout: _Layout, header_h: float) -> None:
    for lane, x in layout.lanes.items():
        w = layout.lane_ws[lane] - 8
        svg.open(f"{lane}: {_role(lane)}")
        svg.rect(x - w / 2, header_h, w, LANE_HEAD_H - 6, ZEBRA, FAINT, 1, radius=4)
        svg.text(x, header_h + 14, lane, 11, INK, "middle", bold=True)
        svg.text(x, header_h + 27, _role(lane), 9.5, MUTED, "middle")
        svg.close()


def _draw_lifelines(svg: _Svg, layout: _Layout, items: list[tuple]) -> None:
    """Lifelines: a client's starts when it first acts and ends when it crashes or closes;
    a broker's is dashed grey while the broker is down."""
    spans: dict = {}
    down: dict = {}
    for (kind, row), y in zip(items, layout.ys, strict=True):
        if kind != "row":
            continue
        for lane in row.lanes:
            spans.setdefault(lane, [y, None])
        if row.kind in ("crash", "close") and row.actor in layout.lanes:
            spans.setdefault(row.actor, [y, None])[1] = y
        if row.kind == "broker_crash":
            down.setdefault(row.actor, []).append([y, layout.bottom])
        if row.kind == "broker_restart" and down.get(row.actor):
            down[row.actor][-1][1] = y
    start = layout.top - 4
    for lane, x in layout.lanes.items():
        first, end = spans.get(lane, [start, None])
        live = _lane_group(lane) in LIVE_LANES
        if live and first > start:
            svg.line(x, start, x, first, FAINT, 1, "2 4")
        begin = first if live else start
        svg.line(x, begin, x, end if end is not None else layout.bottom, GREY, 1.2)
        for y0, y1 in down.get(lane, ()):
            svg.line(x, y0, x, y1, "#ffffff", 3)
            svg.line(x, y0, x, y1, GREY, 1.2, "5 4")
            if y1 - y0 > 30:
                svg.text(x + 4, (y0 + y1) / 2, "down", 9.5, MUTED, italic=True)


def _draw_backgrounds(svg: _Svg, layout: _Layout, items: list[tuple]) -> None:
    """Zebra stripes for reading across, and a yellow band on every flagged row."""
    for index, ((kind, payload), y) in enumerate(zip(items, layout.ys, strict=True)):
        if kind == "row" and payload.badges:
            svg.rect(PAD, y - ROW_H / 2 + 1, layout.width - 2 * PAD, ROW_H - 2, HIGHLIGHT,
                     HIGHLIGHT_EDGE, 1, radius=3)
        elif kind == "row" and index % 2:
            svg.rect(PAD, y - ROW_H / 2, layout.width - 2 * PAD, ROW_H, ZEBRA)


def _draw_row(svg: _Svg, layout: _Layout, row: _Row, y: float, show_time: bool) -> None:
    style, colour = _style(row)
    text = _describe(row)
    svg.open(_tip(row))
    if show_time:
        svg.text(PAD + TIME_W - 10, y + 4, _clock(row.time_ms), SMALL_PX, MUTED, "end",
                 mono=True)
    if style == "band":
        left = PAD + TIME_W
        svg.rect(left, y - 8, layout.desc_x - left - 14, 16, "#ffffff", INK, 1, radius=8,
                 dash="3 3")
        svg.text((left + layout.desc_x - 14) / 2, y + 4, "final read (the checker looks)",
                 SMALL_PX, INK, "middle")
    else:
        _draw_mark(svg, layout, row, style, colour, y)
    x = layout.desc_x
    for tag, values in row.badges:
        w = _badge_width(tag, values)
        svg.open(f"{tag}: {', '.join(value_label(v, 64) for v in values)}")
        svg.rect(x, y - 8, w, 16, dict(BADGE_COLOURS)[tag], radius=8)
        svg.text(x + w / 2, y + 4, _badge_text(tag, values), SMALL_PX, "#ffffff", "middle",
                 bold=True)
        svg.close()
        x += w + 6
    fault = row.kind in FAULT_KINDS or colour == VERMILION
    svg.text(x, y + 4, _fit(text, layout.desc_x + layout.desc_w - x), TEXT_PX,
             FAULT_TEXT if fault else INK, bold=fault)
    svg.close()


def _draw_mark(svg: _Svg, layout: _Layout, row: _Row, style: str, colour: str,
               y: float) -> None:
    src = layout.lanes.get(row.src) if row.src else None
    dst = layout.lanes.get(row.dst) if row.dst else None
    arrows = {"request": (None, True, False), "response": ("6 4", True, False),
              "response-bad": ("6 4", True, False), "drop": ("5 4", False, True),
              "delay": ("2 3", True, False), "inject": ("2 3", True, False),
              "elect": ("2 3", True, False)}
    if style in arrows and src is not None and dst is not None and src != dst:
        dash, head, cross = arrows[style]
        _arrow(svg, src, dst, y, colour, dash, head, cross)
        if row.badges:
            svg.circle(dst, y, 9, "none", HIGHLIGHT_EDGE, 2.5)
        return
    x = src if src is not None else dst
    if x is None:
        return
    if row.badges:
        svg.circle(x, y, 10, HIGHLIGHT, HIGHLIGHT_EDGE, 2.5)
    _glyph(svg, style if style not in arrows else "dot", x, y, colour)


def _draw_gap(svg: _Svg, layout: _Layout, delta_ms: int, y: float) -> None:
    """A break in the time axis: slanted ticks on every lifeline and the time skipped."""
    svg.open(f"{_pause(delta_ms)} of virtual time pass here; the diagram does not draw them")
    for x in layout.lanes.values():
        svg.line(x - 6, y + 1, x + 6, y - 5, MUTED, 1.2)
        svg.line(x - 6, y + 6, x + 6, y, MUTED, 1.2)
    svg.text(PAD + TIME_W - 10, y + 4, f"+{_pause(delta_ms)}", SMALL_PX, MUTED, "end",
             italic=True)
    if delta_ms >= LONG_GAP_MS:
        svg.text(layout.desc_x, y + 4, f"{_pause(delta_ms)} pass (squeezed: not to scale)",
                 SMALL_PX, MUTED, italic=True)
    svg.close()


def _draw_elided(svg: _Svg, layout: _Layout, rows: list[_Row], y: float) -> None:
    text = _elided_text(rows)
    svg.open(text)
    left = PAD + TIME_W
    svg.line(left, y, layout.desc_x - 14, y, MUTED, 1, "1 4")
    svg.text(layout.desc_x, y + 4, _fit(text, layout.desc_w, SMALL_PX), SMALL_PX, MUTED,
             italic=True)
    svg.close()


def _header_lines(report, title: str, shown: int, total: int, events: int) -> list[tuple]:
    """(kind, text) lines above the lanes: title, the checker's verdict, how to read it."""
    lines = [("title", title)]
    if report is not None:
        lines.append(("verdict", f"Checker: {report.summary()}"))
        acked = set(report.lost_acked)
        groups = (("LOST", report.lost, f", {len(acked)} of them acknowledged" if acked else ""),
                  ("DUPLICATE", report.duplicated, ", delivered more than once"),
                  ("ABORTED READ", report.aborted_reads, ", from transactions that aborted"),
                  ("REORDERED", report.reordered, ", out of send order"),
                  ("TOLD FAILED, YET WRITTEN", report.unacked_writes, ""))
        for tag, values, note in groups:
            if values:
                every = ", ".join(value_label(v, 64) for v in values)
                lines.append(("anomaly", f"{tag}|{len(values)}{note}: {_phrase(values, 6)}",
                              f"{tag} ({len(values)}): {every}"))
    lines.append(("note", "Time runs down the page. Rows are evenly spaced, not to scale: "
                          "slanted ticks mark skipped time and the left column gives the exact "
                          "virtual time. Hover over a row to see its raw events."))
    if shown < total:
        lines.append(("note", f"Long history: {shown} of {total} rows drawn ({events} events). "
                              "Faults and flagged messages are kept first, then what surrounds "
                              "them; the rest is folded into dotted \u22ef lines."))
    return lines


def _draw_header(svg: _Svg, lines: list[tuple], width: float) -> float:
    """Draw the header; returns the y where the lanes start."""
    y = PAD + 14
    for kind, text, *tip in lines:
        if kind == "title":
            svg.text(PAD, y, text, 16, INK, bold=True)
            y += 24
        elif kind == "anomaly":
            tag, rest = text.split("|", 1)
            w = _width(tag, SMALL_PX, bold=True) + 12
            svg.open(tip[0])
            svg.rect(PAD, y - 11, w, 16, dict(BADGE_COLOURS)[tag], radius=8)
            svg.text(PAD + w / 2, y + 1, tag, SMALL_PX, "#ffffff", "middle", bold=True)
            svg.text(PAD + w + 8, y + 1, _fit(rest, width - 3 * PAD - w), TEXT_PX, INK)
            svg.close()
            y += 20
        else:
            size = TEXT_PX if kind == "verdict" else SMALL_PX
            for part in _wrap(text, width - 2 * PAD, size):
                svg.text(PAD, y, part, size, INK if kind == "verdict" else MUTED,
                         bold=kind == "verdict")
                y += size + 6
            y += 2
    return y + 6


def _legend_entries(items: list[tuple]) -> list[tuple]:
    """The legend lines this diagram needs: the marks it uses, and its special rows."""
    rows = [payload for kind, payload in items if kind == "row"]
    styles = {_style(row)[0] for row in rows}
    flagged = any(row.badges for row in rows)
    gaps = any(kind == "gap" for kind, _payload in items)
    elided = any(kind == "elided" for kind, _payload in items)
    entries = [entry for entry in LEGEND if entry[0] in styles]
    if flagged:
        entries.append(("highlight", INK, "a message the checker flagged, with its anomaly named"))
    if gaps:
        entries.append(("gap", MUTED, "virtual time skipped here; the left column says how much"))
    if elided:
        entries.append(("elided", MUTED, "quiet rows folded away to keep a long history readable"))
    return entries


def _draw_legend(svg: _Svg, entries: list[tuple], top: float, width: float) -> float:
    """Two columns of glyph + meaning; returns the bottom y."""
    svg.text(PAD, top + 14, "How to read the marks", TEXT_PX, INK, bold=True)
    columns = 2 if width >= 900 else 1
    column_w = (width - 2 * PAD) / columns
    for index, (style, colour, text) in enumerate(entries):
        x = PAD + (index % columns) * column_w
        y = top + 34 + (index // columns) * 20
        _legend_glyph(svg, style, colour, x + 14, y - 4)
        svg.text(x + 36, y, _fit(text, column_w - 44, SMALL_PX), SMALL_PX, INK)
    return top + 34 + ((len(entries) + columns - 1) // columns) * 20


def _legend_glyph(svg: _Svg, style: str, colour: str, x: float, y: float) -> None:
    dashes = {"request": None, "response": "6 4", "response-bad": "6 4", "drop": "5 4",
              "delay": "2 3", "inject": "2 3", "elect": "2 3"}
    if style in dashes:
        _arrow(svg, x - 12, x + 12, y, colour, dashes[style], style != "drop", style == "drop")
    elif style == "highlight":
        svg.rect(x - 12, y - 7, 24, 14, HIGHLIGHT, HIGHLIGHT_EDGE, 1, radius=3)
    elif style == "gap":
        svg.line(x - 6, y + 1, x + 6, y - 5, colour, 1.2)
        svg.line(x - 6, y + 6, x + 6, y, colour, 1.2)
    elif style == "elided":
        svg.line(x - 12, y, x + 12, y, colour, 1, "1 4")
    elif style == "band":
        svg.rect(x - 12, y - 6, 24, 12, "#ffffff", colour, 1, radius=6, dash="3 3")
    else:
        _glyph(svg, style, x, y, colour)


# ----- timeline: the public function -------------------------------------------------------------


def timeline(history, report=None, *, max_rows: int = MAX_ROWS,
             title: str | None = None) -> Diagram:
    """A sequence diagram of a History, with what the checker found marked on it.

    ``history`` is a History, a list of events, or a scenario ``Run`` (whose
    report and title are then used too). Lanes, left to right: the fault
    injector, application processes and producers, each broker, the
    controller and coordinators, consumers. Each row is one actor doing one
    kind of thing at one virtual instant; arrows are requests (solid) and
    answers (dashed). Given a ``report``, each lost, duplicated, aborted-read,
    reordered or failed-yet-written message is named on a yellow row.

    **The time axis is compressed.** Virtual time is very uneven (bursts of
    millisecond steps, then a 30 s request timeout), so rows are evenly spaced
    by rank, not by time; a pause of ``GAP_MS`` or more gets a visible break
    marker saying how long it was, and the left column gives exact times.

    **Long histories are capped** at ``max_rows`` rows: faults and flagged rows
    are kept first, then their neighbours, then the story from its start; the
    rest is folded into dotted lines that say how many events of which kinds
    they hold, and the header says so.
    """
    if max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, not {max_rows!r}")
    history, report, title = _unpack_run(history, report, title)
    events = list(history)
    rows = _rows(events)
    _flag(rows, report)
    keep = _select(rows, max_rows)
    items = _items(rows, keep)
    lanes = _lanes([row for row, kept in zip(rows, keep, strict=True) if kept]) or ["controller"]
    shown = sum(keep)
    lines = _header_lines(report, title, shown, len(rows), len(events))
    width = _layout(lanes, items, 0).width  # the width does not depend on the header
    svg = _Svg()
    header_h = _draw_header(svg, lines, width)
    layout = _layout(lanes, items, header_h)
    _draw_backgrounds(svg, layout, items)
    _draw_lane_heads(svg, layout, header_h)
    _draw_lifelines(svg, layout, items)
    _draw_items(svg, layout, items)
    height = _draw_legend(svg, _legend_entries(items), layout.bottom + 10, width) + PAD
    desc = _timeline_desc(report, lanes, shown, len(rows))
    return Diagram(svg.render(width, height, title, desc), title, round(width), round(height))


def _draw_items(svg: _Svg, layout: _Layout, items: list[tuple]) -> None:
    """Rows, time breaks and folded stretches, top to bottom; a time is shown when it changes."""
    last_time = None
    for (kind, payload), y in zip(items, layout.ys, strict=True):
        if kind == "row":
            _draw_row(svg, layout, payload, y, payload.time_ms != last_time)
            last_time = payload.time_ms
        elif kind == "gap":
            _draw_gap(svg, layout, payload, y)
        else:
            _draw_elided(svg, layout, payload, y)


def _timeline_desc(report, lanes: list[str], shown: int, total: int) -> str:
    verdict = f" Checker: {report.summary()}." if report is not None else ""
    return (f"Sequence diagram with lanes {', '.join(lanes)}; {shown} of {total} rows drawn, "
            f"time running downward.{verdict}")


def _unpack_run(history, report, title):
    """Accept a scenario Run in place of a History: take its report and name from it."""
    if hasattr(history, "report") and hasattr(history, "history"):
        run = history
        report = run.report if report is None else report
        if title is None and hasattr(run, "claim"):
            title = f"Claim {run.claim}, {run.variant}: timeline"
        history = run.history
    return history, report, title or "Timeline"


# ----- replicas: the logs of one partition -------------------------------------------------------

@dataclass
class _Replica:
    """What the diagram shows of one replica."""

    broker: int
    name: str
    alive: bool
    leader: bool
    in_isr: bool
    log: object
    erased: list  # (time_ms, values) of truncations of this replica, from the history

    @property
    def leo(self) -> int:
        return self.log.log_end_offset if self.log is not None else 0

    @property
    def hw(self) -> int:
        return self.log.high_watermark if self.log is not None else 0

    @property
    def lso(self) -> int:
        return self.log.last_stable_offset if self.log is not None else 0


def _replica_states(cluster, tp: tuple) -> list[_Replica]:
    meta = cluster.partition(tp)
    erased: dict = {}
    for event in cluster.history:
        if (event.kind == "truncate" and (event.data.get("topic"), event.data.get("partition"))
                == tp and event.data.get("values")):
            erased.setdefault(event.actor, []).append((event.time_ms, event.data["values"]))
    states = []
    for broker_id in meta.replicas:
        broker = cluster.brokers[broker_id]
        states.append(_Replica(broker_id, broker.name, broker.alive, meta.leader == broker_id,
                               broker_id in meta.isr, broker.logs.get(tp),
                               erased.get(broker.name, [])))
    return states


def _cell_kind(log, record) -> str:
    if record.control:
        return "control"
    if log.is_aborted(record):
        return "aborted"
    first_open = log.ongoing.get(record.producer_id)
    if record.transactional and first_open is not None and record.offset >= first_open:
        return "open"
    return "committed" if record.offset < log.high_watermark else "uncommitted"


def _differs(record, leader_log) -> bool:
    """Whether a follower's record disagrees with the leader's at the same offset."""
    if leader_log is None:
        return False
    if record.offset >= leader_log.log_end_offset:
        return True
    other = leader_log.records[record.offset]
    return (other.value, other.control) != (record.value, record.control)


def _cell_label(record) -> str:
    """The record's name, cut in the middle so the distinguishing end stays (m-0…009)."""
    text = record.control or value_label(record.value, 64)
    if len(text) <= CELL_LABEL_CHARS:
        return text
    head = CELL_LABEL_CHARS // 2 - 1
    return text[:head] + "\u2026" + text[-(CELL_LABEL_CHARS - head - 1):]


def _partition_summary(cluster, tp: tuple) -> str:
    meta = cluster.partition(tp)
    isr = "{" + ", ".join(str(b) for b in meta.isr) + "}"
    leader = (f"leader broker-{meta.leader} (epoch {meta.leader_epoch})"
              if meta.leader is not None else "OFFLINE: no leader")
    unclean = "on" if meta.config["unclean.leader.election.enable"] else "off"
    return (f"{leader} \u00b7 ISR {isr} \u00b7 replication.factor "
            f"{meta.config['replication.factor']} \u00b7 min.insync.replicas "
            f"{meta.config['min.insync.replicas']} \u00b7 unclean election {unclean}")


def _draw_replica(svg: _Svg, replica: _Replica, leader_log, top: float, window: tuple,
                  cell_w: float) -> float:
    """One replica's block: who it is, its records, its markers. Returns the block's bottom."""
    start, end = window
    tip = (f"{replica.name}: {'leader' if replica.leader else 'follower'}, "
           f"{'in' if replica.in_isr else 'out of'} the ISR, "
           f"{'up' if replica.alive else 'DOWN'}; LEO {replica.leo}, HW {replica.hw}, "
           f"LSO {replica.lso}")
    svg.open(tip, None if replica.alive else 0.5)
    cells_top = top + 28
    _draw_replica_info(svg, replica, cells_top)
    x0 = PAD + INFO_W
    if replica.log is None or not replica.log.records[start:end]:
        svg.text(x0, cells_top + CELL_H / 2 + 4, "empty log", SMALL_PX, MUTED, italic=True)
    else:
        for record in replica.log.records[start:end]:
            x = x0 + (record.offset - start) * cell_w
            differs = not replica.leader and _differs(record, leader_log)
            _draw_cell(svg, _cell_kind(replica.log, record), _cell_label(record), x, cells_top,
                       cell_w, differs)
    _draw_markers(svg, replica, x0, cells_top, window, cell_w)
    bottom = cells_top + CELL_H + 18
    for time_ms, values in replica.erased:
        svg.text(x0, bottom + 8, f"erased by truncation at {_clock(time_ms)}: {_phrase(values)}",
                 SMALL_PX, FAULT_TEXT)
        bottom += 16
    svg.close()
    return bottom + BLOCK_GAP


def _draw_replica_info(svg: _Svg, replica: _Replica, cells_top: float) -> None:
    y = cells_top + 2
    svg.text(PAD, y + 8, replica.name, 13, INK, bold=True)
    x = PAD + _width(replica.name, 13, bold=True) + 8
    pills = [("LEADER", BLUE) if replica.leader else ("follower", MUTED)]
    if not replica.alive:
        pills.append(("DOWN", "#4D5761"))
    for text, colour in pills:
        w = _width(text, 9.5, bold=True) + 10
        svg.rect(x, y - 3, w, 14, colour, radius=7)
        svg.text(x + w / 2, y + 7.5, text, 9.5, "#ffffff", "middle", bold=True)
        x += w + 4
    svg.text(PAD, y + 24, "in the ISR" if replica.in_isr else "OUT of the ISR", SMALL_PX,
             INK if replica.in_isr else FAULT_TEXT, bold=not replica.in_isr)
    svg.text(PAD, y + 38, f"LEO {replica.leo} \u00b7 HW {replica.hw} \u00b7 LSO {replica.lso}",
             SMALL_PX, MUTED, mono=True)


def _draw_cell(svg: _Svg, kind: str, label: str, x: float, y: float, w: float,
               differs: bool) -> None:
    fill, stroke, dash, ink, caption, _legend = CELL_STYLES[kind]
    if differs:
        stroke, dash, caption = VERMILION, None, "\u2260 leader"
    svg.rect(x + 2, y, w - 4, CELL_H, fill, stroke, 2 if differs else 1.2, radius=3, dash=dash)
    label_y = y + (14 if caption else 21)
    svg.text(x + w / 2, label_y, label, SMALL_PX, ink, "middle", mono=True)
    if kind == "aborted":
        half = _width(label, SMALL_PX, mono=True) / 2
        svg.line(x + w / 2 - half, label_y - 3.5, x + w / 2 + half, label_y - 3.5, MUTED, 1)
    if caption:
        svg.text(x + w / 2, y + 28, caption, 8.5, VERMILION if differs else ink, "middle",
                 italic=True)


def _draw_markers(svg: _Svg, replica: _Replica, x0: float, cells_top: float, window: tuple,
                  cell_w: float) -> None:
    """HW (solid, label above), LSO (dotted, above, when it differs), LEO (dashed, below)."""
    start, end = window
    marks = [("HW", replica.hw, BLUE, None, cells_top - 5),
             ("LEO", replica.leo, INK, "4 3", cells_top + CELL_H + 13)]
    if replica.lso != replica.hw:
        marks.append(("LSO", replica.lso, PURPLE, "2 2", cells_top - 17))
    for name, offset, colour, dash, label_y in marks:
        if not start <= offset <= end:
            continue
        x = x0 + (offset - start) * cell_w + (3 if name == "LEO" and offset == replica.hw else 0)
        svg.line(x, cells_top - 4 if name != "LSO" else cells_top - 14, x,
                 cells_top + CELL_H + 4, colour, 2, dash)
        svg.text(x, label_y, f"{name} {offset}", SMALL_PX, colour, "middle", bold=True)


def _draw_offset_axis(svg: _Svg, top: float, window: tuple, cell_w: float) -> None:
    start, end = window
    x0 = PAD + INFO_W
    svg.text(PAD, top, "offset", SMALL_PX, MUTED)
    for offset in range(start, end):
        svg.text(x0 + (offset - start + 0.5) * cell_w, top, str(offset), SMALL_PX, MUTED,
                 "middle", mono=True)


def _draw_replica_legend(svg: _Svg, top: float, width: float, kinds: set) -> float:
    """The cell styles and lines this diagram uses, in plain words; returns the bottom y."""
    svg.text(PAD, top + 14, "How to read it", TEXT_PX, INK, bold=True)
    optional = (("differs", "\u2260 leader: disagrees with the leader at that offset; "
                            "it will be truncated"),
                ("HW", "HW, high watermark: consumers read below it"),
                ("LEO", "LEO, log end offset: where the next record goes"),
                ("LSO", "LSO, last stable offset: read_committed reads below it"),
                ("DOWN", "greyed: that broker is down (its disk keeps the log)"))
    entries = [(kind, CELL_STYLES[kind][5]) for kind in CELL_STYLES if kind in kinds]
    entries += [(kind, text) for kind, text in optional if kind in kinds or kind in ("HW", "LEO")]
    columns = 2 if width >= 900 else 1
    column_w = (width - 2 * PAD) / columns
    for index, (kind, text) in enumerate(entries):
        x = PAD + (index % columns) * column_w
        y = top + 34 + (index // columns) * 22
        _replica_legend_glyph(svg, kind, x, y - 12)
        svg.text(x + 44, y, _fit(text, column_w - 52, SMALL_PX), SMALL_PX, INK)
    return top + 34 + ((len(entries) + columns - 1) // columns) * 22


def _replica_legend_glyph(svg: _Svg, kind: str, x: float, y: float) -> None:
    if kind in CELL_STYLES:
        fill, stroke, dash, _ink, _caption, _text = CELL_STYLES[kind]
        svg.rect(x, y, 34, 16, fill, stroke, 1.2, radius=3, dash=dash)
    elif kind == "differs":
        svg.rect(x, y, 34, 16, "#DCEBF7", VERMILION, 2, radius=3)
    elif kind == "DOWN":
        svg.rect(x, y, 34, 16, "#4D5761", radius=8)
    else:
        colour, dash = {"HW": (BLUE, None), "LEO": (INK, "4 3"), "LSO": (PURPLE, "2 2")}[kind]
        svg.line(x + 17, y - 2, x + 17, y + 18, colour, 2, dash)


def replicas(cluster, topic: str = "events", partition: int = 0, *,
             max_records: int = 20, title: str | None = None) -> Diagram:
    """The log of every replica of one partition, side by side by offset.

    ``cluster`` is a Cluster or a scenario ``Run``. Per replica: its records
    (message labels, COMMIT/ABORT markers, aborted and open-transaction
    records), its LEO, HW and LSO as lines, whether it leads, whether it is in
    the ISR, and whether its broker is down (greyed, with the word DOWN).
    Records that disagree with the leader at the same offset are outlined and
    labelled, and records a truncation erased earlier are listed under their
    replica, from the cluster's history. Only the last ``max_records`` offsets
    are drawn; the header says when earlier ones are left out.
    """
    if max_records < 1:
        raise ValueError(f"max_records must be at least 1, not {max_records!r}")
    cluster, title = _unpack_cluster(cluster, title, topic, partition)
    tp = (topic, partition)
    states = _replica_states(cluster, tp)
    meta = cluster.partition(tp)
    leader_log = cluster.brokers[meta.leader].logs.get(tp) if meta.leader is not None else None
    end = max((state.leo for state in states), default=0)
    window = (max(0, end - max_records), end)
    labels = [_cell_label(r) for s in states if s.log is not None
              for r in s.log.records[window[0]:window[1]]]
    cell_w = max(44.0, max((_width(t, SMALL_PX, mono=True) for t in labels), default=0) + 12)
    width = max(MIN_WIDTH, PAD * 2 + INFO_W + cell_w * (window[1] - window[0]) + 40)
    svg = _Svg()
    svg.text(PAD, PAD + 14, title, 16, INK, bold=True)
    y = PAD + 38
    for line in _wrap(_partition_summary(cluster, tp), width - 2 * PAD):
        svg.text(PAD, y, line, TEXT_PX, FAULT_TEXT if meta.leader is None else INK,
                 bold=True)
        y += 18
    if window[0]:
        svg.text(PAD, y, f"Offsets 0\u2013{window[0] - 1} are not drawn "
                         f"(max_records={max_records}).", SMALL_PX, MUTED, italic=True)
        y += 16
    _draw_offset_axis(svg, y + 14, window, cell_w)
    y += 22
    kinds = set()
    for state in states:
        y = _draw_replica(svg, state, leader_log, y, window, cell_w)
        kinds |= _kinds_shown(state, leader_log, window)
    height = _draw_replica_legend(svg, y, width, kinds) + PAD
    desc = (f"Replicas of {topic}-{partition}: "
            + "; ".join(f"{s.name} {'leader' if s.leader else 'follower'}"
                        f"{'' if s.alive else ' DOWN'}{' in ISR' if s.in_isr else ''}, "
                        f"LEO {s.leo}, HW {s.hw}" for s in states))
    return Diagram(svg.render(width, height, title, desc), title, round(width), round(height))


def _kinds_shown(state: _Replica, leader_log, window: tuple) -> set:
    """Which legend entries one replica's block needs."""
    kinds = set() if state.alive else {"DOWN"}
    if state.lso != state.hw:
        kinds.add("LSO")
    for record in state.log.records[window[0]:window[1]] if state.log is not None else ():
        kinds.add(_cell_kind(state.log, record))
        if not state.leader and _differs(record, leader_log):
            kinds.add("differs")
    return kinds


def _unpack_cluster(cluster, title, topic, partition):
    """Accept a scenario Run in place of a Cluster."""
    name = title
    if hasattr(cluster, "cluster") and hasattr(cluster, "report"):
        run = cluster
        cluster = run.cluster
        if name is None and hasattr(run, "claim"):
            name = (f"Claim {run.claim}, {run.variant}: replicas of {topic}-{partition} "
                    "at the end of the run")
    return cluster, name or f"Replicas of {topic}-{partition}"


# ----- replica_table: the same state as plain text -------------------------------------------


def replica_table(cluster, topic: str = "events", partition: int = 0) -> str:
    """The state of one partition as a few lines of text: leader, ISR, each replica's LEO and HW.

    A text twin of :func:`replicas` for step-by-step demos, where a notebook
    prints the partition after each broker crash or restart and a full diagram
    every time would drown the change. ``cluster`` is a Cluster or a scenario
    ``Run``. The last line lists what a consumer could read now: the leader's
    records below its high watermark (nothing while the partition is offline).
    """
    cluster, _title = _unpack_cluster(cluster, None, topic, partition)
    tp = (topic, partition)
    meta = cluster.partition(tp)
    isr = "{" + ", ".join(str(b) for b in meta.isr) + "}"
    leader = (f"leader broker-{meta.leader} (leader epoch {meta.leader_epoch})"
              if meta.leader is not None else "OFFLINE: no leader")
    lines = [f"{topic}-{partition} at {_clock(cluster.world.now_ms)}: {leader}, ISR {isr}",
             f"  {'replica':<10} {'role':<9} {'broker':<7} {'ISR':<4} {'LEO':>4} {'HW':>4}"]
    for state in _replica_states(cluster, tp):
        lines.append(f"  {state.name:<10} {'leader' if state.leader else 'follower':<9} "
                     f"{'up' if state.alive else 'DOWN':<7} {'in' if state.in_isr else 'out':<4} "
                     f"{state.leo:>4} {state.hw:>4}")
    readable = cluster.readable(topic, partition)
    shown = "nothing (partition offline)" if readable is None else _phrase(readable)
    lines.append(f"  a consumer can read: {shown}")
    return "\n".join(lines)
