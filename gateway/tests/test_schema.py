"""gateway/schema/mqtt-v1.json against the payloads docs/mqtt.md describes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from gw_samples import EVENT_DATA, TS, birth, event, state, status, will
from jsonschema import Draft202012Validator

from gateway.ingest import SCHEMA_PATH, SUBTOPICS, load_validators

DOC = Path(__file__).resolve().parents[2] / "docs" / "mqtt.md"
V = load_validators()


def ok(topic: str, doc: dict[str, Any]) -> bool:
    return V[topic].is_valid(doc)


def test_schema_is_valid_draft_2020_12_with_a_def_per_topic():
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for sub in SUBTOPICS:
        assert sub in schema["$defs"]


def test_state_example_in_the_contract_document_is_valid():
    text = DOC.read_text()
    block = re.search(r"## `state`\s+```json\n(.*?)```", text, re.S)
    assert block, "docs/mqtt.md lost its state example"
    assert ok("state", json.loads(block.group(1)))


@pytest.mark.parametrize("topic, doc", [
    ("status", status()),
    ("status", will()),
    ("status", will(ts=TS)),
    ("birth", birth()),
    ("birth", {k: v for k, v in birth().items() if k != "heartbeat_s"}),
    ("birth", birth(reset=None, devices=[])),
    ("state", state()),
    ("state", state(mode="degraded",
                    grid={"state": "unknown", "v": None, "f": None, "src": None, "since": None,
                          "why": "offline"},
                    genset={"state": "unknown", "mode": None, "battery_v": None,
                            "run_hours": None, "since": None, "why": "offline"},
                    fuel={"pct": None, "litres": None, "burn_lph": None, "hours_left": None,
                          "refuel_by": None, "why": "no_data"},
                    devices={"grid": "offline", "genset": "offline", "tank": "offline"})),
    ("state", {k: v for k, v in state().items() if k not in ("tanks", "capability")}),
    *[("event", event(t)) for t in EVENT_DATA],
    ("event", event("gen_running", data={"after_s": None}, hist=True)),
    ("event", event("mode_changed", seq=4294967295, boot=4294967295)),
])
def test_valid_payloads_pass(topic: str, doc: dict[str, Any]):
    errors = [e.message for e in V[topic].iter_errors(doc)]
    assert not errors
    assert Draft202012Validator(json.loads(SCHEMA_PATH.read_text())).is_valid(doc)


def test_additional_fields_are_allowed_for_later_issues():
    assert ok("state", state(pumps={"p1": "available"}, grid={"thd_pct": 3.1}))
    assert ok("event", event("grid_lost", data={"v": 0.0, "f": 0.0, "state": "lost", "l2": 0}))
    assert ok("birth", birth(hw="esp32-s3"))
    assert ok("status", status(ip="10.0.0.2"))


@pytest.mark.parametrize("topic, doc, why", [
    ("status", status(state="offline"), "state enum"),
    ("status", {k: v for k, v in status().items() if k != "seq"}, "online needs seq"),
    ("status", {k: v for k, v in status().items() if k != "ts"}, "online needs ts"),
    ("status", will(bdseq=-1), "bdseq below 0"),
    ("status", will(boot="4"), "boot as string"),
    ("birth", {k: v for k, v in birth().items() if k != "fw"}, "missing fw"),
    ("birth", birth(devices=[{"name": "grid"}]), "device without profile"),
    ("birth", birth(heartbeat_s=0), "heartbeat 0"),
    ("state", state(seq=2**32), "seq above 32 bits"),
    ("state", state(seq=-1), "seq below 0"),
    ("state", state(boot=True), "bool is not an integer"),
    ("state", state(seq=1.5), "fractional seq"),
    ("state", state(ts=0), "clock never set (1970)"),
    ("state", state(ts=TS * 10), "ts far in the future"),
    ("state", state(ts="2026-11-23T14:00:00Z"), "ts as text"),
    ("state", state(mode="panic"), "mode enum"),
    ("state", state(mode=None), "mode null"),
    ("state", state(grid={"state": "down"}), "grid.state enum"),
    ("state", state(grid={"v": "230"}), "voltage as text"),
    ("state", state(genset={"state": "on"}), "genset.state enum"),
    ("state", state(genset={"mode": "automatic"}), "genset.mode enum"),
    ("state", state(fuel={"pct": "62"}), "fuel pct as text"),
    ("state", state(devices={"tank": "maybe"}), "device availability enum"),
    ("state", state(grid="lost"), "section as text"),
    ("state", {k: v for k, v in state().items() if k != "grid"}, "missing grid"),
    ("state", {k: v for k, v in state().items() if k != "ts"}, "missing ts"),
    ("event", event(type="grid_flicker"), "event type enum"),
    ("event", {k: v for k, v in event().items() if k != "hist"}, "missing hist"),
    ("event", event(hist="no"), "hist as text"),
    ("event", event(data=[1, 2]), "data not an object"),
    ("event", event("device_offline", data={"name": "tank"}), "device event without device"),
    ("event", event("mode_changed", data={"from": "normal", "to": "chaos"}), "mode enum in data"),
    ("event", event("grid_lost", data={"v": 0, "f": 0, "state": "gone"}), "grid state in data"),
    ("event", event("exercise_done", data={**EVENT_DATA["exercise_done"], "result": "ok"}),
     "test-run result enum"),
    ("event", event("exercise_done", data={**EVENT_DATA["exercise_done"], "v_max": 5000}),
     "test-run voltage out of range"),
    ("event", event("exercise_done", data={**EVENT_DATA["exercise_done"], "started": 0}),
     "test run started on a clock never set"),
    ("event", event("exercise_done", data={k: v for k, v in EVENT_DATA["exercise_done"].items()
                                           if k != "why"}), "test run without why"),
])
def test_invalid_payloads_fail(topic: str, doc: dict[str, Any], why: str):
    assert not ok(topic, doc), why


def test_the_fast_validator_never_accepts_what_jsonschema_refuses():
    """gateway/ingest.py accepts on the compiled fast path; jsonschema is the reference."""
    hypothesis = pytest.importorskip("hypothesis")
    from gateway.ingest import load_fast_checks

    st = hypothesis.strategies
    fast = load_fast_checks()
    leaf = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
            | st.sampled_from(["ok", "lost", "normal", "auto", "online", "panel", "a-b", ""]))
    values = st.recursive(leaf, lambda c: st.lists(c, max_size=3)
                          | st.dictionaries(st.text(max_size=6), c, max_size=3), max_leaves=6)
    bases = {"status": status(), "birth": birth(), "state": state(), "event": event(),
             "crisis_ack": {"id": "storm-1", "by": "panel", "boot": 1, "seq": 2, "ts": TS}}

    @hypothesis.settings(max_examples=400, deadline=None)
    @hypothesis.given(sub=st.sampled_from(sorted(bases)),
                      path=st.lists(st.sampled_from(["mode", "grid", "state", "ts", "seq",
                                                     "fuel", "pct", "devices", "tank", "data",
                                                     "type", "id", "capability", "boot"]),
                                    min_size=1, max_size=3),
                      value=values)
    def check(sub: str, path: list[str], value: object) -> None:
        doc = json.loads(json.dumps(bases[sub]))
        target = doc
        for p in path[:-1]:
            if not isinstance(target.get(p), dict):
                target[p] = {}
            target = target[p]
        target[path[-1]] = value
        try:
            fast[sub](doc)
            fast_ok = True
        except Exception:
            fast_ok = False
        if fast_ok:
            assert V[sub].is_valid(doc), (sub, doc)

    check()
    for sub, doc in bases.items():
        fast[sub](doc)


def _def(name: str) -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{name}"})


def test_every_topic_of_the_contract_table_has_a_definition():
    """Each row of the table in docs/mqtt.md names a topic whose payload the schema defines."""
    defs = json.loads(SCHEMA_PATH.read_text())["$defs"]
    table = re.findall(r"^\| `sot/v1/(?:<site>/)?([a-z/<>_]+)` \|", DOC.read_text(), re.M)
    assert {"ack", "rebirth", "gateway/status"} <= set(table), table
    name = {"gateway/status": "gateway_status", "crisis/<id>/ack": "crisis_ack",
            "crisis/<id>": "crisis"}
    missing = [t for t in table if name.get(t, t) not in defs and not t.startswith("cmd/")]
    assert missing == []


def test_what_the_gateway_sends_down_is_valid():
    assert _def("ack").is_valid({"boot": 3, "seq": 41, "ts": TS})
    assert not _def("ack").is_valid({"boot": 3})
    assert _def("rebirth").is_valid({"ts": TS, "why": "gap"})
    assert _def("gateway_status").is_valid({"state": "offline"})
    assert _def("crisis").is_valid({"id": "storm-1", "sv": "Storm", "severity": "severe",
                                    "from": "Åre kommun", "ts": TS})
    assert not _def("gateway_status").is_valid({"state": "maybe"})
    assert ok("birth", birth(dropped=3, journal={"bytes": 812, "pending": 4,
                                                 "oldest": [3, 17]}))
    assert not ok("birth", birth(journal={"oldest": [3]}))
