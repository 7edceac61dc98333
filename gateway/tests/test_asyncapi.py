"""docs/asyncapi.json, the machine-readable MQTT contract, agrees with the prose contract
(docs/mqtt.md) and with the JSON Schema the gateway validates with (gateway/schema/mqtt-v1.json):
every topic is a channel with the documented QoS and retain flag, every `$ref` resolves, and real
payloads (the gateway tests' samples, a signed command, a crisis message) validate against the
definitions the channels name."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gw_samples import EVENT_DATA, TS, birth, event, state, status, will
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from gateway import commands, crisis

REPO = Path(__file__).resolve().parents[2]
ASYNCAPI = REPO / "docs" / "asyncapi.json"
MQTT_MD = REPO / "docs" / "mqtt.md"
SCHEMA = REPO / "gateway" / "schema" / "mqtt-v1.json"


def doc() -> dict[str, Any]:
    return json.loads(ASYNCAPI.read_text(encoding="utf-8"))


def documented_topics() -> dict[str, tuple[int, bool]]:
    """The Topics table of docs/mqtt.md: address ({site} style) -> (QoS, retained)."""
    out: dict[str, tuple[int, bool]] = {}
    for line in MQTT_MD.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(sot/v1/[^`]+)` \| [^|]+ \| (\d) / ([^|]+?) \|", line)
        if m:
            address = re.sub(r"<([a-z]+)>", r"{\1}", m.group(1))
            out[address] = (int(m.group(2)), m.group(3).strip() == "retained")
    return out


def refs(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from refs(v, f"{path}/{i}")


def pointer(root: Any, fragment: str) -> Any:
    node = root
    for part in fragment.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def test_it_is_an_asyncapi_3_document() -> None:
    d = doc()
    assert d["asyncapi"].startswith("3.")
    assert d["info"]["title"] and d["info"]["version"]
    assert d["servers"]["broker"]["protocol"] == "secure-mqtt"  # TLS only
    for name, op in d["operations"].items():
        assert op["action"] in ("send", "receive"), name


def test_every_topic_of_the_prose_contract_is_a_channel_with_its_qos_and_retain() -> None:
    d = doc()
    topics = documented_topics()
    assert len(topics) >= 10  # the table was read
    channels = {c["address"]: name for name, c in d["channels"].items()}
    assert set(topics) == set(channels)
    for address, (qos, retained) in topics.items():
        ops = [op for op in d["operations"].values()
               if op["channel"]["$ref"] == f"#/channels/{channels[address]}"]
        assert ops, f"no operation on {address}"
        for op in ops:
            assert op["bindings"]["mqtt"]["qos"] == qos, address
            assert op["bindings"]["mqtt"]["retain"] is retained, address
        # every {parameter} of the address is declared
        declared = set(d["channels"][channels[address]].get("parameters", {}))
        assert declared == set(re.findall(r"\{([a-z]+)\}", address)), address


def test_every_ref_resolves_and_payloads_name_schema_definitions() -> None:
    d = doc()
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    payload_refs = 0
    for where, ref in refs(d):
        target, _, fragment = ref.partition("#")
        if not target:
            assert pointer(d, fragment) is not None, (where, ref)
            continue
        assert (ASYNCAPI.parent / target).resolve() == SCHEMA, (where, ref)
        assert fragment.startswith("/$defs/"), (where, ref)
        assert isinstance(pointer(schema, fragment), dict), (where, ref)
        payload_refs += 1
    # every message but the withdrawal (an empty payload) names its definition
    messages = d["components"]["messages"]
    assert payload_refs == len([m for m in messages.values() if "payload" in m]) == \
        len(messages) - 1


def validator(definition: str) -> Draft202012Validator:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    registry: Registry = Registry().with_resource(schema["$id"], Resource.from_contents(schema))
    return Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{definition}"},
                                registry=registry)


def samples() -> dict[str, list[dict[str, Any]]]:
    """message name -> real payloads."""
    key = "ab" * 32
    cmd = commands.sign("are-kall", "gen_test", key, 7, {"minutes": 15, "load": False}, now=TS)
    msg = crisis.validate({"sv": "Vattnet är avstängt.", "en": "The water is off.",
                           "severity": "warning", "from": "Åre kommun", "expires_min": "60"},
                          TS)
    return {
        "status": [status()],
        "will": [will()],
        "birth": [birth()],
        "state": [state()],
        "event": [event(t) for t in EVENT_DATA],
        "ack": [{"boot": 4, "seq": 20, "ts": TS}],
        "rebirth": [{"ts": TS}, {"ts": TS, "why": "gap"}],
        "crisis": [msg.payload()],
        "crisisAck": [{"boot": 4, "seq": 21, "ts": TS, "id": msg.id, "by": "panel"}],
        "gatewayOnline": [{"state": "online", "ts": TS}],
        "gatewayOffline": [{"state": "offline"}],
        "command": [cmd, commands.sign("are-kall", "rebirth", key, 8, now=TS)],
    }


def test_real_payloads_validate_against_the_definitions_their_channels_name() -> None:
    d = doc()
    got = samples()
    for name, m in d["components"]["messages"].items():
        if "payload" not in m:
            continue
        definition = m["payload"]["schema"]["$ref"].rpartition("/")[2]
        v = validator(definition)
        assert got[name], name
        for payload in got[name]:
            errors = [e.message for e in v.iter_errors(payload)]
            assert not errors, (name, payload, errors)


@pytest.mark.parametrize("definition,payload", [
    ("status", {"state": "maybe", "boot": 4, "bdseq": 1, "seq": 0, "ts": TS}),
    ("command", {"v": 2, "id": "c1", "issued": TS, "expires": TS + 60, "counter": 1,
                 "sig": "0" * 64}),
    ("command", {"v": 1, "id": "C1!", "issued": TS, "expires": TS + 60, "counter": 1,
                 "sig": "0" * 64}),
    ("command", {"v": 1, "id": "c1", "issued": TS, "expires": TS + 60, "counter": 0,
                 "sig": "0" * 64}),
    ("command", {"v": 1, "id": "c1", "issued": TS, "expires": TS + 60, "counter": 1,
                 "args": {"minutes": -1}, "sig": "0" * 64}),
    ("command", {"v": 1, "id": "c1", "issued": TS, "expires": TS + 60, "counter": 1,
                 "sig": "0" * 63}),
])
def test_a_payload_the_contract_refuses_fails_its_definition(definition: str,
                                                             payload: dict[str, Any]) -> None:
    assert not validator(definition).is_valid(payload)
