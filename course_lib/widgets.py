"""Live dashboards for the notebooks: the config panel and the durability explorer.

Both are thin ipywidgets shells around plain functions, so that tests (and
curious learners) can call exactly what a widget calls:

* :func:`panel_outputs` plays one claim's story under a config and returns the
  checker's report as a dict plus the timeline SVG; :class:`ConfigPanel` builds
  the config from its controls and calls it on every change. An impossible
  config (explicit idempotence with ``acks=1``, ``min.insync.replicas`` above the
  replication factor, …) shows Kafka's ``ConfigException`` message in the panel.
* :func:`explore` plays a seeded fault campaign once per seed for every config
  of a grid and counts acknowledged writes lost and writes duplicated;
  :func:`heatmap` draws the result as a deterministic inline SVG, and
  :class:`DurabilityExplorer` runs it with a progress bar.

Nothing here reads a clock or module-level randomness: the same arguments give
the same report, the same SVG bytes and the same grid.
"""

from __future__ import annotations

import html
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import product

import ipywidgets as w

from course_lib import config as kafka_config
from course_lib import scenarios, viz
from course_lib.checker import Report, check
from course_lib.cluster import Cluster
from course_lib.errors import ConfigException
from course_lib.faults import (
    DelayMessages,
    DropMessages,
    FaultPlan,
    Isolate,
    KillBroker,
    RestartBroker,
    single_crash_plans,
)

BROKERS = 3

# The stories the panel offers, each a claim of scenarios.py: "where the fault strikes".
STORIES: tuple[tuple[str, int], ...] = (
    ("leader dies right after acking the first write (claim 1)", 1),
    ("ISR shrinks to the leader, then it dies with its disk (claim 2)", 2),
    ("all in-sync replicas die, a stale follower returns (claim 3)", 3),
    ("one produce response is lost, the producer retries (claim 4)", 4),
    ("a request in flight is lost and retried (claim 5)", 5),
    ("a broker outage longer than delivery.timeout.ms (claim 7)", 7),
    ("consumer crashes before processing the 5th message (claim 8)", 8),
    ("consumer crashes before its 5th commit (claim 9)", 9),
    ("auto-commit with buffered messages, then a crash (claim 10)", 10),
    ("a transaction aborts; what does the consumer read? (claim 13)", 13),
)

DEFAULT = "default"  # a control left at "default" leaves its key out of the config

# (key, scope, the values a learner can pick besides the default)
CONTROLS: tuple[tuple[str, str, tuple], ...] = (
    ("acks", "producer", ("0", "1", "all")),
    ("retries", "producer", (0, 1, 3, 10)),
    ("enable.idempotence", "producer", (True, False)),
    ("replication.factor", "topic", (1, 2, 3)),
    ("min.insync.replicas", "topic", (1, 2, 3)),
    ("unclean.leader.election.enable", "topic", (True, False)),
    ("enable.auto.commit", "consumer", (True, False)),
    ("isolation.level", "consumer", ("read_uncommitted", "read_committed")),
)


# ----- the config panel: plain functions -------------------------------------------------


def validate(config: dict, brokers: int = BROKERS) -> None:
    """Raise ConfigException if Kafka would refuse this producer, consumer or topic config."""
    topic, producer, consumer = scenarios.split_config(config)
    kafka_config.topic_config(topic, brokers)
    kafka_config.producer_config(producer)
    kafka_config.consumer_config(consumer)


def simulate(config: dict, claim: int, seed: int = 0) -> tuple[Cluster, Report]:
    """Play claim ``claim``'s story under ``config``; the cluster and the checker's report."""
    table = scenarios.claims()
    if claim not in table:
        raise KeyError(f"no claim {claim}; claims are {sorted(table)}")
    validate(config)
    cluster = table[claim].story(seed, dict(config))
    return cluster, check(cluster.history, delivered_by=scenarios.delivered_by(claim))


def panel_outputs(config: dict, claim: int, seed: int = 0) -> tuple[dict, str]:
    """What the panel shows for one setting: the report as a dict and the timeline SVG.

    Raises ConfigException for a config Kafka would refuse.
    """
    cluster, report = simulate(config, claim, seed)
    title = f"Claim {claim}, seed {seed}: {format_config(config)}"
    return report.as_dict(), viz.timeline(cluster.history, report, title=title).svg


def panel_view(config: dict, claim: int, seed: int = 0) -> dict:
    """The three HTML fragments of the panel (status, report, timeline), errors included."""
    try:
        report, svg = panel_outputs(config, claim, seed)
    except ConfigException as error:
        return {"ok": False, "report": None, "error": str(error),
                "status_html": _status_html(str(error), error=True),
                "report_html": "", "timeline_html": ""}
    return {"ok": True, "report": report, "error": None,
            "status_html": _status_html(f"claim {claim}, seed {seed}: "
                                        f"{format_config(config)}"),
            "report_html": report_html(report),
            "timeline_html": f'<div style="max-width:100%;overflow-x:auto">{svg}</div>'}


def format_config(config: dict) -> str:
    """``acks=1, replication.factor=3`` (or "defaults")."""
    return ", ".join(f"{key}={value}" for key, value in config.items()) or "Kafka's defaults"


def _status_html(text: str, error: bool = False) -> str:
    if error:
        return ('<div class="dsl-status dsl-error" style="color:#A6290D;font-weight:bold">'
                f"Kafka refuses this config: {html.escape(text)}</div>")
    return f'<div class="dsl-status" style="color:#57606a">{html.escape(text)}</div>'


REPORT_ROWS = (
    ("sent", "messages the app sent"),
    ("acked", "acknowledged to the app"),
    ("delivered", "readable / processed at the end"),
    ("lost", "lost"),
    ("lost_acked", "lost although acknowledged"),
    ("duplicated", "duplicated"),
    ("reordered", "out of order"),
    ("unacked_writes", "reported failed, yet written"),
    ("aborted_reads", "aborted records read"),
)
_BAD = {"lost", "lost_acked", "duplicated", "reordered", "unacked_writes", "aborted_reads"}


def report_html(report: dict) -> str:
    """The checker's report as a small HTML table; bad counts above zero in red."""
    rows = []
    for key, label in REPORT_ROWS:
        value = report[key]
        style = ' style="color:#A6290D;font-weight:bold"' if key in _BAD and value else ""
        rows.append(f'<tr><td>{label}</td><td class="dsl-{key}"{style}>{value}</td></tr>')
    errors = ", ".join(f"{name} ×{count}" for name, count in sorted(report["errors"].items()))
    return ('<div class="dsl-report"><table>' + "".join(rows) + "</table>"
            f'<p>Guarantee: <b class="dsl-guarantee">{report["guarantee"]}</b>'
            + (f"<br>Errors the app saw: {html.escape(errors)}" if errors else "")
            + "</p></div>")


# ----- the config panel: the widget -----------------------------------------------------


def _option_label(value: object) -> str:
    return str(value)


class ConfigPanel(w.VBox):
    """Controls for a claim's story; every change re-runs it and redraws report and timeline.

    Buttons load the config of each variant of the chosen claim (its failing and
    fixed settings) as one change. Keys the controls do not cover (``linger.ms``,
    ``app.loop``, …) ride along unseen and are shown in the status line; picking
    another story drops them.
    """

    def __init__(self, claim: int = 1, config: dict | None = None, seed: int = 0) -> None:
        if config is None:
            config = dict(scenarios.claims()[claim].variants[0].config)
        self._hold = False
        self.controls: dict[str, w.Dropdown] = {}
        for key, scope, values in CONTROLS:
            default = kafka_config.keys(scope)[key].default
            options = [(f"default ({_option_label(default)})", DEFAULT)]
            options += [(_option_label(value), value) for value in values]
            self.controls[key] = w.Dropdown(options=options, value=DEFAULT, description=key,
                                            style={"description_width": "220px"},
                                            layout=w.Layout(width="420px"))
        self.extra: dict = {}
        self.story = w.Dropdown(options=list(STORIES), value=claim, description="fault (story)",
                                style={"description_width": "120px"},
                                layout=w.Layout(width="560px"))
        self.seed = w.BoundedIntText(value=seed, min=0, max=10_000, description="seed",
                                     style={"description_width": "120px"},
                                     layout=w.Layout(width="220px"))
        self.presets = w.HBox()
        self.status = w.HTML()
        self.report = w.HTML()
        self.timeline = w.HTML()
        self.last: dict = {}
        self.runs = 0
        for control in (*self.controls.values(), self.seed):
            control.observe(self._on_change, names="value")
        self.story.observe(self._on_story, names="value")
        grid = w.GridBox(list(self.controls.values()),
                         layout=w.Layout(grid_template_columns="repeat(2, 440px)"))
        super().__init__([w.HBox([self.story, self.seed]), self.presets, grid, self.status,
                          self.report, self.timeline])
        self.add_class("dsl-config-panel")
        self._build_presets()
        self.load(config)

    def config(self) -> dict:
        """The config the controls describe: keys left at "default" are omitted."""
        chosen = {key: control.value for key, control in self.controls.items()
                  if control.value != DEFAULT}
        return {**self.extra, **chosen}

    def load(self, config: dict) -> dict:
        """Set every control from ``config`` (absent keys: default) and re-run once."""
        self._hold = True
        try:
            for key, control in self.controls.items():
                value = config.get(key, DEFAULT)
                if value not in [v for _label, v in control.options]:
                    control.options = [*control.options, (_option_label(value), value)]
                control.value = value
            self.extra = {k: v for k, v in config.items() if k not in self.controls}
        finally:
            self._hold = False
        return self.refresh()

    def load_variant(self, name: str) -> dict:
        """Load the config of the chosen claim's variant ``name`` (e.g. "failing", "fixed")."""
        return self.load(dict(scenarios.claims()[self.story.value].variant(name).config))

    def refresh(self) -> dict:
        """Re-run the story with the current controls and redraw; returns :func:`panel_view`."""
        view = panel_view(self.config(), self.story.value, self.seed.value)
        self.status.value = view["status_html"]
        self.report.value = view["report_html"]
        self.timeline.value = view["timeline_html"]
        self.last = view
        self.runs += 1
        return view

    def _build_presets(self) -> None:
        buttons = []
        for variant in scenarios.claims()[self.story.value].variants:
            button = w.Button(description=f"load {variant.name} config",
                              tooltip=f"{format_config(variant.config)} -> {variant.expected}",
                              layout=w.Layout(width="auto"))
            button.on_click(lambda _button, name=variant.name: self.load_variant(name))
            buttons.append(button)
        self.presets.children = buttons

    def _on_change(self, _change) -> None:
        if not self._hold:
            self.refresh()

    def _on_story(self, _change) -> None:
        self.extra = {}
        self._build_presets()
        self.refresh()


def config_panel(claim: int = 1, config: dict | None = None, seed: int = 0) -> ConfigPanel:
    """A live config panel on claim ``claim``'s story, starting from ``config``.

    Without a config it starts from the claim's failing variant.
    """
    return ConfigPanel(claim, config, seed)


# ----- the durability explorer ----------------------------------------------------------

CAMPAIGN_START_MS = 46_000  # after replica.lag.time.max.ms: an isolated follower has left the ISR
CAMPAIGN_MESSAGES = 20
CAMPAIGN_SHAPES = ("leader dies", "ISR shrinks, leader dies with its disk",
                   "ISR dies, stale replica returns")

DEFAULT_GRID = {
    "acks": ("0", "1", "all"),
    "min.insync.replicas": (1, 2, 3),
    "unclean.leader.election.enable": (False, True),
}


def campaign_plan(seed: int) -> FaultPlan:
    """The fault campaign's plan for one seed: slow followers, a crash shape, a lost ack.

    Seeds take the three shapes of the durability claims in turn (seed % 3), each
    with seeded timing, plus one or two produce responses lost somewhere.
    """
    rng = random.Random(f"explorer/{seed}")
    faults = [DelayMessages(rng.choice((100, 300, 1_000)), api="fetch", kind="response",
                            count=10**6)]
    shape = seed % 3
    if shape == 0:
        faults.append(KillBroker("leader", on="ack", nth=rng.randint(1, 10),
                                 lose_disk=rng.random() < 0.5))
    elif shape == 1:
        faults += [Isolate(0, at_ms=0),
                   KillBroker(0, at_ms=CAMPAIGN_START_MS + rng.randint(50, 2_000),
                              lose_disk=True)]
    else:
        stale = rng.randrange(BROKERS)
        others = [b for b in range(BROKERS) if b != stale]
        at_ms = CAMPAIGN_START_MS + rng.randint(100, 1_500)
        faults += [KillBroker(stale, at_ms=0)]
        faults += [KillBroker(b, at_ms=at_ms) for b in others]
        faults += [RestartBroker(stale, at_ms=at_ms + 1_000),
                   RestartBroker(others[0], at_ms=at_ms + 20_000)]
    faults.append(DropMessages("produce", "response", count=rng.randint(1, 2),
                               skip=rng.randint(0, 8)))
    return FaultPlan(tuple(faults))


def campaign_run(config: dict, seed: int) -> Report:
    """One campaign run: a producer sends 20 messages under ``campaign_plan(seed)``."""
    validate(config)
    topic, producer, _consumer = scenarios.split_config(config)
    cluster = Cluster(brokers=BROKERS, seed=seed, faults=campaign_plan(seed))
    cluster.create_topic(scenarios.TOPIC, topic)
    cluster.world.advance(CAMPAIGN_START_MS)
    scenarios.publish(cluster, scenarios.message_values(CAMPAIGN_MESSAGES), producer,
                      pace_ms=100)
    scenarios.final_read(cluster)
    return check(cluster.history, delivered_by="log")


@dataclass
class Cell:
    """One config of the grid, summed over the campaign's seeds."""

    config: dict
    runs: int = 0
    sent: int = 0
    acked: int = 0
    lost_acked: int = 0
    duplicated: int = 0
    error: str | None = None

    @property
    def loss_rate(self) -> float:
        """Acknowledged writes lost, as a fraction of acknowledged writes."""
        return self.lost_acked / self.acked if self.acked else 0.0

    @property
    def duplication_rate(self) -> float:
        """Writes stored more than once, as a fraction of writes sent."""
        return self.duplicated / self.sent if self.sent else 0.0

    @property
    def ack_rate(self) -> float:
        """Writes acknowledged, as a fraction of writes sent: the price of safety."""
        return self.acked / self.sent if self.sent else 0.0


@dataclass
class Grid:
    """The explorer's result: one Cell per config, in grid order."""

    axes: dict
    seeds: tuple[int, ...]
    cells: list[Cell] = field(default_factory=list)

    def as_rows(self) -> list[dict]:
        """Plain data, one dict per cell (rates rounded to 4 places)."""
        return [{**cell.config, "runs": cell.runs, "sent": cell.sent, "acked": cell.acked,
                 "lost_acked": cell.lost_acked, "duplicated": cell.duplicated,
                 "loss_rate": round(cell.loss_rate, 4),
                 "duplication_rate": round(cell.duplication_rate, 4),
                 "ack_rate": round(cell.ack_rate, 4), "error": cell.error}
                for cell in self.cells]

    def heatmap(self) -> viz.Diagram:
        """The grid as a heat map Diagram (inline SVG)."""
        svg = heatmap(self)
        return viz.Diagram(svg, "Durability explorer")

    def _repr_svg_(self) -> str:
        return heatmap(self)


def grid_configs(axes: dict | None = None, base: dict | None = None) -> list[dict]:
    """Every combination of the axes' values, each on top of ``base`` (RF 3 by default)."""
    axes = DEFAULT_GRID if axes is None else axes
    base = {"replication.factor": 3} if base is None else base
    names = list(axes)
    return [{**base, **dict(zip(names, values, strict=True))}
            for values in product(*(axes[name] for name in names))]


def explore(axes: dict | None = None, seeds: int | Iterable[int] = 6,
            progress: Callable[[int, int], None] | None = None,
            base: dict | None = None) -> Grid:
    """Play the campaign for every config of the grid and every seed; count the damage.

    ``progress(done, total)`` is called after each run (the widget's progress bar).
    A config Kafka refuses becomes a cell with ``error`` set and no runs.
    """
    axes = DEFAULT_GRID if axes is None else axes
    seed_list = tuple(range(seeds)) if isinstance(seeds, int) else tuple(seeds)
    configs = grid_configs(axes, base)
    grid = Grid(dict(axes), seed_list)
    total = len(configs) * len(seed_list)
    done = 0
    for config in configs:
        cell = Cell(config)
        try:
            validate(config)
        except ConfigException as error:
            cell.error = str(error)
        for seed in seed_list:
            if cell.error is None:
                report = campaign_run(config, seed)
                cell.runs += 1
                cell.sent += report.sent
                cell.acked += report.acked
                cell.lost_acked += len(report.lost_acked)
                cell.duplicated += len(report.duplicated)
            done += 1
            if progress is not None:
                progress(done, total)
        grid.cells.append(cell)
    return grid


# ----- the heat map (hand-written SVG, byte-for-byte deterministic) -----------------------

_METRICS = (
    ("loss_rate", "acked writes lost", (213, 94, 0)),
    ("duplication_rate", "writes duplicated", (199, 120, 0)),
    ("ack_rate", "writes acknowledged", (0, 114, 178)),
)


def _shade(rgb: tuple[int, int, int], fraction: float) -> str:
    """White for 0, full colour for 1; square-root scale so that 2 % is still visibly tinted."""
    fraction = min(1.0, max(0.0, fraction)) ** 0.5
    mixed = (round(255 + (c - 255) * fraction) for c in rgb)
    return "#" + "".join(f"{c:02x}" for c in mixed)


def _label(config: dict, names: list[str]) -> str:
    short = {"min.insync.replicas": "min.insync", "unclean.leader.election.enable": "unclean",
             "replication.factor": "RF"}
    parts = []
    for name in names:
        value = config[name]
        shown = "on" if value is True else "off" if value is False else value
        parts.append(f"{short.get(name, name)}={shown}")
    return ", ".join(parts)


def heatmap(grid: Grid) -> str:
    """Loss, duplication and acknowledgement rates per config: three columns of cells.

    One row per config of the grid; each metric is a column of coloured cells
    (white = 0 %, full colour = 100 %, square-root scale) with the percentage written in. A config
    Kafka refuses is grey with "refused".
    """
    names = list(grid.axes)
    labels = [_label(cell.config, names) for cell in grid.cells]
    label_w = max([len(text) for text in labels] + [10]) * 7 + 16
    cell_w, cell_h, pad, top = 170, 22, 16, 74
    width = pad * 2 + label_w + cell_w * len(_METRICS)
    height = top + cell_h * len(grid.cells) + pad + 18
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="{viz.FONT}" font-size="12" '
           'class="dsl-heatmap">',
           "<title>Durability explorer</title>",
           f"<desc>{len(grid.cells)} configs, {len(grid.seeds)} seeded fault plans each"
           "</desc>",
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{pad}" y="{pad + 12}" font-size="15" font-weight="bold" '
           f'fill="{viz.INK}">Durability explorer: {len(grid.seeds)} seeded fault plans '
           "per config</text>",
           f'<text x="{pad}" y="{pad + 30}" fill="{viz.MUTED}">Each row is a config; '
           "each run sends 20 messages while brokers crash, lag and lose responses.</text>"]
    for index, (_key, title, _rgb) in enumerate(_METRICS):
        x = pad + label_w + index * cell_w + cell_w / 2
        out.append(f'<text x="{x:g}" y="{top - 8}" text-anchor="middle" font-weight="bold" '
                   f'fill="{viz.INK}">{title}</text>')
    for row, (cell, label) in enumerate(zip(grid.cells, labels, strict=True)):
        y = top + row * cell_h
        out.append(f'<text x="{pad}" y="{y + 15}" font-family="{viz.MONO}" '
                   f'fill="{viz.INK}">{html.escape(label)}</text>')
        for index, (key, title, rgb) in enumerate(_METRICS):
            x = pad + label_w + index * cell_w
            if cell.error is not None:
                fill, text, ink = "#d0d7de", "refused", viz.MUTED
                tip = cell.error
            else:
                value = getattr(cell, key)
                fill, text = _shade(rgb, value), f"{value:.0%}"
                ink = "#ffffff" if value > 0.55 else viz.INK
                tip = f"{label}: {title} {value:.1%} over {cell.runs} runs"
            out.append(f'<g class="dsl-cell" data-metric="{key}" data-row="{row}">'
                       f"<title>{html.escape(tip)}</title>"
                       f'<rect x="{x}" y="{y}" width="{cell_w - 2}" height="{cell_h - 2}" '
                       f'fill="{fill}" stroke="#d0d7de"/>'
                       f'<text x="{x + (cell_w - 2) / 2:g}" y="{y + 15}" text-anchor="middle" '
                       f'fill="{ink}">{text}</text></g>')
    out.append(f'<text x="{pad}" y="{height - pad + 4}" font-size="10.5" fill="{viz.MUTED}">'
               "Lost = acknowledged, then gone from the final log. Duplicated = stored twice. "
               "Acknowledged = availability.</text>")
    out.append("</svg>")
    return "\n".join(out)


class DurabilityExplorer(w.VBox):
    """The explorer: seeds per config, a Run button, a progress bar, the heat map."""

    def __init__(self, axes: dict | None = None, seeds: int = 6, run: bool = True) -> None:
        self.axes = DEFAULT_GRID if axes is None else axes
        self.seeds = w.IntSlider(value=seeds, min=1, max=30, description="seeds per config",
                                 style={"description_width": "140px"})
        self.button = w.Button(description="Run the campaign", button_style="primary")
        self.progress = w.IntProgress(value=0, min=0, max=1, description="runs")
        self.output = w.HTML()
        self.grid: Grid | None = None
        self.button.on_click(self._on_click)
        super().__init__([w.HBox([self.seeds, self.button]), self.progress, self.output])
        self.add_class("dsl-explorer")
        if run:
            self.run()

    def update_progress(self, done: int, total: int) -> None:
        """Progress callback for :func:`explore`."""
        self.progress.max = total
        self.progress.value = done

    def run(self) -> Grid:
        """Run the whole grid, moving the progress bar, then draw the heat map."""
        self.progress.value = 0
        self.grid = explore(self.axes, self.seeds.value, progress=self.update_progress)
        self.output.value = heatmap(self.grid)
        return self.grid

    def _on_click(self, _button) -> None:
        self.run()


def durability_explorer(axes: dict | None = None, seeds: int = 6,
                        run: bool = True) -> DurabilityExplorer:
    """The durability explorer widget; it runs the grid once when built unless ``run=False``."""
    return DurabilityExplorer(axes, seeds, run)


# ----- notebook 00: environment check and a tiny widget ------------------------------------

PACKAGES = ("delivery-semantics-lab", "confluent-kafka", "ipywidgets", "jupyterlab", "nbgrader")


def versions() -> dict:
    """What this kernel runs: Python, the course and its key packages, and librdkafka.

    Notebook 00 prints it so a learner can paste it into a question; a package
    that is not installed shows as "missing" instead of raising.
    """
    import platform
    from importlib import metadata

    import confluent_kafka

    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "missing"
    found["librdkafka"] = confluent_kafka.libversion()[0]
    return found


SMOKE_CLAIM = 1  # the leader dies right after acknowledging the first write


def smoke_line(acks: str, seed: int = 0) -> str:
    """One sentence about claim 1's story under ``acks`` (what the smoke-test widget shows)."""
    report = simulate({"acks": acks, "replication.factor": 3}, SMOKE_CLAIM, seed)[1]
    return (f"acks={acks}: the producer was told {report.acked} of {report.sent} writes "
            f"succeeded; after the leader died, {report.delivered} could be read "
            f"({len(report.lost_acked)} acknowledged writes lost).")


class SmokeTest(w.VBox):
    """Three buttons (acks 0, 1, all) and a sentence that changes when you click one.

    If clicking changes the sentence, the kernel, ipywidgets and the browser all
    talk to each other: the widgets of the later notebooks will work too.
    """

    def __init__(self, acks: str = "1") -> None:
        self.acks = w.ToggleButtons(options=["0", "1", "all"], value=acks, description="acks")
        self.line = w.HTML()
        self.clicks = 0
        self.acks.observe(self._on_change, names="value")
        super().__init__([self.acks, self.line])
        self.add_class("dsl-smoke-test")
        self.refresh()

    def refresh(self) -> str:
        """Re-run the story with the chosen acks and show its sentence; returns the sentence."""
        text = smoke_line(self.acks.value)
        self.line.value = f'<p class="dsl-smoke-line">{html.escape(text)}</p>'
        return text

    def _on_change(self, _change) -> None:
        self.clicks += 1
        self.refresh()


def smoke_test(acks: str = "1") -> SmokeTest:
    """The widget smoke test of notebook 00 (see :class:`SmokeTest`)."""
    return SmokeTest(acks)


# ----- notebook 05: kill the producer app at every step ------------------------------------

CRASH_MESSAGES = 10


@dataclass
class CrashRun:
    """One run of the crash campaign: where the app died, and what the checker found."""

    label: str
    plan: FaultPlan
    cluster: Cluster
    report: Report
    claim: int = 6

    @property
    def variant(self) -> str:
        """A name for diagram titles (``viz.timeline(run)`` uses it)."""
        return self.label

    @property
    def history(self):
        """The History the report was computed from."""
        return self.cluster.history


@dataclass
class CrashCampaign:
    """Every single-crash run of one producer app, with or without an outbox."""

    outbox: bool
    runs: list[CrashRun] = field(default_factory=list)

    def as_rows(self) -> list[dict]:
        """Plain data, one dict per crash point."""
        return [{"crash": run.label, "lost": len(run.report.lost),
                 "duplicated": len(run.report.duplicated),
                 "guarantee": run.report.guarantee} for run in self.runs]

    def totals(self) -> dict:
        """Runs, runs that lost something, and messages lost and duplicated over all runs."""
        rows = self.as_rows()
        return {"runs": len(rows), "runs_with_loss": sum(1 for r in rows if r["lost"]),
                "lost": sum(r["lost"] for r in rows),
                "duplicated": sum(r["duplicated"] for r in rows)}

    def table(self, compact: bool = True) -> str:
        """The campaign as a fixed-width text table, then a line of totals.

        With ``compact``, neighbouring crash points with the same outcome share
        one line ("before a #1 … after b #3 (6 runs)"); otherwise one line each.
        """
        groups: list[list[dict]] = []
        for row in self.as_rows():
            outcome = (row["lost"], row["duplicated"], row["guarantee"])
            if compact and groups and (groups[-1][0]["lost"], groups[-1][0]["duplicated"],
                                       groups[-1][0]["guarantee"]) == outcome:
                groups[-1].append(row)
            else:
                groups.append([row])
        labels = [group[0]["crash"] if len(group) == 1 else
                  f"{group[0]['crash']} \u2026 {group[-1]['crash']} ({len(group)} runs)"
                  for group in groups]
        width = max([len(label) for label in labels] + [15])
        lines = [f"{'the app crashed':<{width}} {'lost':>4} {'dup':>4}  guarantee",
                 "-" * (width + 26)]
        for label, group in zip(labels, groups, strict=True):
            first = group[0]
            lines.append(f"{label:<{width}} {first['lost']:>4} {first['duplicated']:>4}  "
                         f"{first['guarantee']}")
        total = self.totals()
        lines.append(f"{total['runs']} runs, one crash each: {total['runs_with_loss']} of them "
                     f"lost messages ({total['lost']} in all); {total['duplicated']} duplicates "
                     "in all")
        return "\n".join(lines)


def _accept_order(outbox, app_name: str, history, value: str) -> None:
    """The business write: the order's outbox row, committed once (the event id is unique).

    A caller retries an order whose request failed; if the first attempt had
    committed before the crash, the unique event id recognises the retry.
    """
    import sqlite3

    try:
        with outbox.db:
            outbox.add(value, scenarios.TOPIC, value)
    except sqlite3.IntegrityError:
        return
    history.record("send", app_name, topic=scenarios.TOPIC, partition=0, key=None,
                   value=value.encode())


def _producer_app(cluster: Cluster, values: list[str], outbox) -> None:
    """A producer app that takes orders until they are accepted, restarting after each crash.

    Callers retry an order until the app accepts it. Without an outbox, "accepted"
    means handed to ``produce()`` (in memory); with one, it means committed to the
    outbox, and a relay in the same process publishes unsent rows, marking each
    after its ack (:class:`course_lib.outbox.Relay`).
    """
    from course_lib.faults import Crash
    from course_lib.outbox import Relay

    pending = list(values)
    for _attempt in range(scenarios.MAX_RESTARTS):
        app = cluster.process("producer-app")
        try:
            if outbox is None:
                producer = app.producer({})
                while pending:
                    producer.produce(scenarios.TOPIC, pending[0])
                    pending.pop(0)
                producer.flush()
            else:
                while pending:
                    app.call("app.write_outbox", _accept_order, outbox, app.name,
                             cluster.history, pending[0])
                    pending.pop(0)
                Relay(outbox, app.producer({})).run_once()
                if outbox.unsent():
                    continue
            return
        except Crash:
            continue


def _crash_run(plan: FaultPlan, outbox: bool, seed: int, messages: int) -> tuple[Cluster, Report]:
    import tempfile
    from pathlib import Path

    from course_lib.outbox import Outbox

    cluster = Cluster(brokers=BROKERS, seed=seed, faults=plan)
    cluster.create_topic(scenarios.TOPIC, {})
    values = scenarios.message_values(messages)
    if not outbox:
        _producer_app(cluster, values, None)
    else:
        with tempfile.TemporaryDirectory() as directory:
            box = Outbox(Path(directory) / "outbox.db")
            try:
                _producer_app(cluster, values, box)
            finally:
                box.close()
    scenarios.final_read(cluster)
    return cluster, check(cluster.history, delivered_by="log")


def _crash_label(plan: FaultPlan) -> str:
    fault = plan.faults[0]
    return f"{fault.phase} {fault.point} #{fault.nth}"


def producer_crash_campaign(outbox: bool, seed: int = 0,
                            messages: int = CRASH_MESSAGES) -> CrashCampaign:
    """Crash the producer app once at every step it takes, each time in a fresh run.

    A clean run lists the app's steps (each ``produce``, the ``flush``, and with
    ``outbox`` each outbox write); then, for each step, one run crashes the app
    just before it and one just after (:func:`course_lib.faults.single_crash_plans`).
    The restarted app takes up the orders its callers still retry, and with an
    outbox its relay resends whatever is unsent. The checker reads the final log.
    """
    clean, _report = _crash_run(FaultPlan(), outbox, seed, messages)
    trace = [(point, nth) for point, nth in clean.faults.call_trace()
             if point.startswith(("producer.", "app."))]
    campaign = CrashCampaign(outbox)
    for plan in single_crash_plans(trace):
        cluster, report = _crash_run(plan, outbox, seed, messages)
        campaign.runs.append(CrashRun(_crash_label(plan), plan, cluster, report))
    return campaign
