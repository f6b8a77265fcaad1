"""The config panel and the durability explorer: callbacks called directly, no browser."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from course_lib import widgets
from course_lib.errors import ConfigException

SMALL_GRID = {"acks": ("1", "all"), "min.insync.replicas": (1, 2)}


def test_panel_outputs_reflect_acks_and_min_insync():
    lossy, svg = widgets.panel_outputs({"acks": "1", "replication.factor": 3}, claim=1)
    safe, _ = widgets.panel_outputs(
        {"acks": "all", "replication.factor": 3, "min.insync.replicas": 2}, claim=1)
    assert lossy["lost_acked"] > 0
    assert safe["lost"] == 0 and safe["guarantee"] == "exactly-once"
    ET.fromstring(svg)


def test_panel_outputs_are_deterministic_per_seed():
    config = {"acks": "1", "replication.factor": 3}
    assert widgets.panel_outputs(config, 1, seed=3) == widgets.panel_outputs(config, 1, seed=3)


@pytest.mark.parametrize("config", [
    {"acks": "1", "enable.idempotence": True},
    {"replication.factor": 2, "min.insync.replicas": 3},
    {"replication.factor": 4},
])
def test_invalid_config_raises_and_the_view_shows_the_message(config):
    with pytest.raises(ConfigException):
        widgets.panel_outputs(config, claim=1)
    view = widgets.panel_view(config, claim=1)
    assert not view["ok"] and view["report"] is None
    assert "Kafka refuses this config" in view["status_html"]
    assert view["error"].split(":")[0] in view["status_html"].replace("&#x27;", "'")


def test_panel_starts_from_the_failing_variant():
    panel = widgets.config_panel(1)
    assert panel.config() == {"acks": "1", "replication.factor": 3}
    assert panel.last["report"]["lost_acked"] > 0
    assert "<svg" in panel.timeline.value


def test_changing_controls_reruns_and_removes_the_loss():
    panel = widgets.config_panel(1)
    runs = panel.runs
    panel.controls["acks"].value = "all"
    panel.controls["min.insync.replicas"].value = 2
    assert panel.runs == runs + 2
    assert panel.config() == {"acks": "all", "replication.factor": 3, "min.insync.replicas": 2}
    assert panel.last["report"]["lost"] == 0
    assert 'class="dsl-lost_acked">0<' in panel.report.value


@pytest.mark.parametrize("key", [key for key, _scope, _values in widgets.CONTROLS])
def test_every_control_reruns_the_scenario_with_its_value(key):
    panel = widgets.config_panel(1, config={})
    values = dict((k, v) for k, _s, v in widgets.CONTROLS)[key]
    for value in values:
        before = panel.runs
        panel.controls[key].value = value
        assert panel.runs == before + 1
        assert panel.config()[key] == value
        if panel.last["ok"]:
            assert f"{key}={value}" in panel.status.value
        else:
            assert "Kafka refuses" in panel.status.value


def test_story_and_seed_controls_rerun():
    panel = widgets.config_panel(1)
    panel.story.value = 4
    assert panel.last["report"]["duplicated"] > 0  # acks=1 turns idempotence off
    panel.seed.value = 7
    assert "seed 7" in panel.status.value


def test_invalid_combination_in_the_panel_shows_the_error_then_recovers():
    panel = widgets.config_panel(1)
    panel.controls["enable.idempotence"].value = True
    assert not panel.last["ok"]
    assert "enable.idempotence" in panel.status.value and panel.timeline.value == ""
    panel.controls["acks"].value = "all"
    assert panel.last["ok"] and "<svg" in panel.timeline.value


def test_explorer_grid_is_deterministic_and_shows_the_lesson():
    first = widgets.explore(SMALL_GRID, seeds=3)
    second = widgets.explore(SMALL_GRID, seeds=3)
    assert first.as_rows() == second.as_rows()
    rows = {(r["acks"], r["min.insync.replicas"]): r for r in first.as_rows()}
    assert rows[("1", 1)]["loss_rate"] > 0
    assert rows[("all", 2)]["loss_rate"] == 0
    assert all(r["runs"] == 3 for r in rows.values())


def test_explorer_refused_configs_become_refused_cells():
    grid = widgets.explore({"min.insync.replicas": (3,)}, seeds=1,
                           base={"replication.factor": 2})
    assert grid.cells[0].error and grid.cells[0].runs == 0
    assert "refused" in widgets.heatmap(grid)


def test_heatmap_svg_is_deterministic_and_parseable():
    grid = widgets.explore(SMALL_GRID, seeds=2)
    svg = widgets.heatmap(grid)
    assert svg == widgets.heatmap(widgets.explore(SMALL_GRID, seeds=2))
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    cells = root.findall("{http://www.w3.org/2000/svg}g")
    assert len(cells) == len(grid.cells) * 3
    assert grid.heatmap().svg == svg


def test_progress_bar_reaches_its_max():
    explorer = widgets.durability_explorer(SMALL_GRID, seeds=2, run=False)
    seen = []
    explorer.progress.observe(lambda change: seen.append(change["new"]), names="value")
    explorer.run()
    assert explorer.progress.max == 4 * 2
    assert explorer.progress.value == explorer.progress.max
    assert seen == list(range(1, 9))
    assert explorer.output.value.startswith("<svg")


def test_explorer_button_callback_reruns():
    explorer = widgets.durability_explorer(SMALL_GRID, seeds=1)
    explorer.seeds.value = 2
    explorer._on_click(explorer.button)
    assert explorer.grid.seeds == (0, 1)


def test_loading_a_variant_sets_every_control_and_reruns_once():
    panel = widgets.config_panel(1)
    runs = panel.runs
    view = panel.load_variant("fixed")
    assert panel.runs == runs + 1
    assert panel.config() == {"acks": "all", "replication.factor": 3, "min.insync.replicas": 2}
    assert view["report"]["lost"] == 0
    labels = [button.description for button in panel.presets.children]
    assert labels == ["load failing config", "load fixed config"]
    panel.presets.children[0].click()
    assert panel.last["report"]["lost_acked"] > 0


def test_story_change_rebuilds_presets_and_keeps_uncovered_keys_visible():
    panel = widgets.config_panel(1)
    panel.story.value = 5
    assert len(panel.presets.children) == 2
    panel.load_variant("failing")
    assert panel.extra == {"linger.ms": 0}
    assert "linger.ms=0" in panel.status.value
    assert panel.last["report"]["reordered"] > 0
    panel.story.value = 1
    assert panel.extra == {}


def test_a_value_outside_the_choices_becomes_an_option():
    panel = widgets.config_panel(4, config={"retries": 5, "enable.idempotence": False})
    assert panel.controls["retries"].value == 5
    assert panel.config() == {"retries": 5, "enable.idempotence": False}


def test_versions_name_python_the_course_and_the_clients():
    found = widgets.versions()
    assert set(found) >= {"python", "delivery-semantics-lab", "confluent-kafka", "ipywidgets",
                          "librdkafka"}
    assert found["python"].startswith("3.11")
    assert all(isinstance(value, str) and value for value in found.values())


def test_smoke_test_reruns_on_every_click():
    assert "0 acknowledged writes lost" in widgets.smoke_line("all")
    assert "10 acknowledged writes lost" in widgets.smoke_line("1")
    smoke = widgets.smoke_test()
    assert smoke.acks.value == "1" and "10 acknowledged writes lost" in smoke.line.value
    smoke.acks.value = "all"
    assert smoke.clicks == 1
    assert "0 acknowledged writes lost" in smoke.line.value


@pytest.fixture(scope="module")
def crash_campaigns() -> dict:
    return {outbox: widgets.producer_crash_campaign(outbox=outbox) for outbox in (False, True)}


def test_producer_crash_campaign_without_outbox_loses_what_was_in_memory(crash_campaigns):
    plain = crash_campaigns[False]
    rows = {row["crash"]: row for row in plain.as_rows()}
    assert len(rows) == 2 * (widgets.CRASH_MESSAGES + 1)
    assert rows["before producer.produce #1"]["lost"] == 0
    assert rows["before producer.produce #5"]["lost"] == 4
    assert rows["before producer.flush #1"]["lost"] == widgets.CRASH_MESSAGES
    assert rows["after producer.flush #1"]["lost"] == 0
    assert plain.totals()["duplicated"] == 0


def test_producer_crash_campaign_with_outbox_loses_nothing(crash_campaigns):
    kept = crash_campaigns[True]
    totals = kept.totals()
    assert totals["runs"] == 2 * (2 * widgets.CRASH_MESSAGES + 1)
    assert totals["lost"] == 0 and totals["runs_with_loss"] == 0
    assert [row["crash"] for row in kept.as_rows() if row["duplicated"]] == \
        ["after producer.flush #1"]
    last = kept.runs[-1]
    assert last.history is last.cluster.history and last.variant == last.label
    assert "(41 runs)" in kept.table()
    assert len(kept.table(compact=False).splitlines()) == totals["runs"] + 3


def test_producer_crash_campaign_is_deterministic(crash_campaigns):
    again = widgets.producer_crash_campaign(outbox=True)
    assert again.as_rows() == crash_campaigns[True].as_rows()
