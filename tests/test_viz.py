"""Diagrams: deterministic SVG bytes, valid XML, anomalies and faults labelled, nbconvert-safe."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from course_lib import data, scenarios, viz
from course_lib.cluster import Cluster

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[1]


def _tree(diagram: viz.Diagram) -> ET.Element:
    root = ET.fromstring(diagram.svg)
    assert root.tag == f"{SVG}svg"
    return root


def _text(diagram: viz.Diagram) -> str:
    """Everything a reader (or a screen reader) can read: text and <title> tooltips."""
    return "\n".join(_tree(diagram).itertext())


def _titles(diagram: viz.Diagram) -> list[str]:
    return [element.text or "" for element in _tree(diagram).iter(f"{SVG}title")]


@pytest.fixture(scope="module")
def runs() -> dict:
    """The scenario runs the tests draw, played once for the module."""
    wanted = [(1, "failing"), (3, "failing"), (4, "failing"), (5, "fixed"), (9, "failing"),
              (13, "failing")]
    return {key: scenarios.run(key[0], key[1], 0) for key in wanted}


def test_same_history_gives_the_same_bytes(runs):
    run = runs[(4, "failing")]
    first, second = viz.timeline(run), viz.timeline(run.history, run.report,
                                                     title="Claim 4, failing: timeline")
    assert first.svg == second.svg
    again = scenarios.run(4, "failing", 0)
    assert viz.timeline(again).svg == first.svg
    assert viz.replicas(again).svg == viz.replicas(run).svg


def test_bytes_do_not_depend_on_the_process_or_hash_seed(runs):
    code = ("import hashlib; from course_lib import scenarios, viz; "
            "run = scenarios.run(13, 'failing', 0); "
            "print(hashlib.sha256((viz.timeline(run).svg + viz.replicas(run).svg)"
            ".encode()).hexdigest())")
    env = {**os.environ, "PYTHONHASHSEED": "4242"}
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True, timeout=60)
    run = runs[(13, "failing")]
    mine = hashlib.sha256((viz.timeline(run).svg + viz.replicas(run).svg).encode()).hexdigest()
    assert child.stdout.strip() == mine


@pytest.mark.parametrize(("claim", "tag", "field"), [
    (1, "LOST", "lost"),
    (4, "DUPLICATE", "duplicated"),
    (13, "ABORTED READ", "aborted_reads"),
])
def test_flagged_messages_are_named(runs, claim, tag, field):
    run = runs[(claim, "failing")]
    values = getattr(run.report, field)
    assert values, "the scenario should produce the anomaly it is about"
    diagram = viz.timeline(run)
    text = _text(diagram)
    assert tag in text
    badges = [title for title in _titles(diagram) if title.startswith(f"{tag}:")]
    assert badges, f"no {tag} badge on any row"
    for value in values:
        assert any(data.label(value, 64) in badge.split(": ", 1)[1].split(", ")
                   for badge in badges), f"{value!r} is not labelled {tag} on any row"


def test_without_a_report_nothing_is_flagged(runs):
    text = _text(viz.timeline(runs[(1, "failing")].history))
    assert "LOST" not in text and "Checker:" not in text


def test_faults_are_drawn_and_named(runs):
    lost_ack = _text(viz.timeline(runs[(4, "failing")]))
    assert "network LOSES the produce response broker-0 \u2192 producer-1" in lost_ack
    crash = _text(viz.timeline(runs[(1, "failing")]))
    assert "broker-0 crashes" in crash
    assert "fault injector kills broker-0" in crash
    assert "broker-0 truncates events-0 at offset 0" in crash
    unclean = _text(viz.timeline(runs[(3, "failing")]))
    assert "is OFFLINE" in unclean and "UNCLEAN election" in unclean
    consumer = _text(viz.timeline(runs[(9, "failing")]))
    assert "consumer-app-1 CRASHES" in consumer


def test_every_actor_has_a_lane(runs):
    run = runs[(9, "failing")]
    titles = _titles(viz.timeline(run))
    actors = {event.actor for event in run.history} - {"checker"}
    actors |= {"broker-0", "broker-1", "broker-2"}
    for actor in actors:
        assert any(title.startswith(f"{actor}: ") for title in titles), f"no lane for {actor}"


def test_time_axis_is_compressed_with_visible_breaks(runs):
    text = _text(viz.timeline(runs[(4, "failing")]))
    assert "+30.0 s" in text and "30.0 s pass (squeezed: not to scale)" in text
    assert "30,105 ms" in text
    assert "compressed" in viz.timeline.__doc__


def test_long_history_is_capped_with_a_note(runs):
    run = runs[(5, "fixed")]
    assert len(run.history) > 1000
    capped = viz.timeline(run, max_rows=40)
    text = _text(capped)
    assert "Long history: 40 of" in text
    assert "events not drawn" in text
    rows = [t for t in _titles(capped) if t.startswith("t=")]
    assert len(rows) == 40
    assert capped.height < 2000
    full = _text(viz.timeline(run, max_rows=5000))
    assert "Long history" not in full and "events not drawn" not in full


def test_replicas_show_offsets_watermarks_and_isr(runs):
    diagram = viz.replicas(runs[(1, "failing")])
    text = _text(diagram)
    for expected in ("HW ", "LEO ", "LSO", "LEADER", "follower", "in the ISR", "ISR {",
                     "erased by truncation"):
        assert expected in text
    markers = _text(viz.replicas(runs[(13, "failing")]))
    assert "ABORT" in markers and "COMMIT" in markers and "aborted" in markers


def test_replicas_mark_a_dead_broker_and_divergence():
    cluster = Cluster(brokers=3, seed=0)
    cluster.create_topic("events", {"replication.factor": 3, "min.insync.replicas": 1})
    producer = cluster.producer({"acks": "1"})
    for value in ("a-1", "a-2", "a-3"):
        producer.produce("events", value)
    producer.flush()
    cluster.settle(2_000)
    cluster.kill_broker(2)
    diagram = viz.replicas(cluster, "events", 0)
    root = _tree(diagram)
    text = _text(diagram)
    assert "DOWN" in text
    assert any(g.get("opacity") == "0.5" for g in root.iter(f"{SVG}g")), "dead broker not greyed"
    assert "broker-2: follower, out of the ISR, DOWN" in "\n".join(_titles(diagram))
    assert "a-1" in text and "Replicas of events-0" in text


def test_diagrams_render_through_nbconvert_html(runs):
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    diagram = viz.timeline(runs[(4, "failing")])
    cell = nbformat.v4.new_code_cell("viz.timeline(run)", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output("display_data", data={"image/svg+xml": diagram._repr_svg_(),
                                                     "text/plain": repr(diagram)}),
        nbformat.v4.new_output("display_data", data={"text/html": diagram._repr_html_(),
                                                     "text/plain": repr(diagram)}),
    ]
    notebook = nbformat.v4.new_notebook(cells=[cell])
    nbformat.validate(notebook)
    html, _resources = nbconvert.HTMLExporter().from_notebook_node(notebook)
    encoded = base64.b64encode(diagram.svg.encode("utf-8")).decode("ascii")
    assert f"data:image/svg+xml;base64,{encoded}" in html  # the SVG output, as an image
    inline = html.split('data-mime-type="text/html"', 1)[1]  # nbconvert re-serialises HTML
    assert "<svg" in inline and "<title>Claim 4, failing: timeline</title>" in inline
    assert inline.count("<text") == diagram.svg.count("<text")
    assert "DUPLICATE \u00d710" in inline
    assert "<script" not in diagram.svg


def test_svg_needs_no_ids_styles_or_scripts(runs):
    svg = viz.timeline(runs[(13, "failing")]).svg + viz.replicas(runs[(13, "failing")]).svg
    for forbidden in (" id=", "<style", "<script", "url(#", "<defs", "href="):
        assert forbidden not in svg


def test_awkward_values_are_escaped():
    cluster = Cluster(brokers=1, seed=0)
    cluster.create_topic("events", {"replication.factor": 1})
    producer = cluster.producer()
    producer.produce("events", b'<b>&"\x01\xff')
    producer.flush()
    _tree(viz.timeline(cluster.history))
    _tree(viz.replicas(cluster))


def test_domain_events_are_labelled_by_their_ids():
    cluster = Cluster(brokers=1, seed=0)
    cluster.create_topic("events", {"replication.factor": 1})
    producer = cluster.producer()
    placed = data.orders(3, seed=5)
    for order in placed:
        key, value = data.to_message(order)
        producer.produce("events", value, key=key)
    producer.flush()
    text = _text(viz.timeline(cluster.history))
    assert placed[0]["order_id"] in text and placed[-1]["order_id"] in text
    assert placed[0]["order_id"] in _text(viz.replicas(cluster))


def test_diagram_object_displays_and_saves(tmp_path, runs):
    diagram = viz.replicas(runs[(4, "failing")])
    assert diagram._repr_svg_() == diagram.svg
    assert diagram.svg in diagram._repr_html_()
    assert repr(diagram).startswith("<Diagram 'Claim 4, failing: replicas of events-0 at the end")
    saved = diagram.save(tmp_path / "replicas.svg")
    assert ET.parse(saved).getroot().tag == f"{SVG}svg"
    page = diagram.save(tmp_path / "replicas.html").read_text(encoding="utf-8")
    assert diagram.svg in page
    with pytest.raises(ValueError, match="svg or .html"):
        diagram.save(tmp_path / "replicas.png")


def test_bad_arguments_are_refused(runs):
    with pytest.raises(ValueError, match="max_rows"):
        viz.timeline(runs[(4, "failing")], max_rows=0)
    with pytest.raises(ValueError, match="max_records"):
        viz.replicas(runs[(4, "failing")], max_records=0)


def test_replica_table_follows_crashes_restarts_and_the_high_watermark():
    cluster = Cluster(brokers=3, seed=1)
    cluster.create_topic("events", {"replication.factor": 3})
    scenarios.publish(cluster, ["m-000", "m-001", "m-002"], {"acks": "1"})
    before = viz.replica_table(cluster)
    assert "leader broker-0 (leader epoch 1), ISR {0, 1, 2}" in before
    assert "broker-0 leader up in 3 0" in " ".join(before.split())
    assert before.endswith("a consumer can read: nothing")
    cluster.settle(1_000)
    assert viz.replica_table(cluster).endswith("a consumer can read: m-000, m-001, m-002")
    cluster.kill_broker(0)
    after = viz.replica_table(cluster)
    assert "leader broker-1 (leader epoch 2), ISR {1, 2}" in after
    assert "broker-0 follower DOWN out" in " ".join(after.split())
    for broker in (1, 2):
        cluster.kill_broker(broker)
    assert "OFFLINE: no leader" in viz.replica_table(cluster)
    assert viz.replica_table(cluster).endswith("nothing (partition offline)")


def test_replica_table_accepts_a_run_and_is_deterministic(runs):
    run = runs[(4, "failing")]
    text = viz.replica_table(run)
    assert text == viz.replica_table(run.cluster)
    assert text.startswith("events-0 at ") and "a consumer can read: m-000, m-001" in text
