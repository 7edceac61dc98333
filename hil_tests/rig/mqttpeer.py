"""A paho-mqtt client for tests: records what it receives on its filters and publishes like the
gateway would (QoS 1, optionally retained). Connects to the private broker on 127.0.0.1 only."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import paho.mqtt.client as mqtt

from .broker import client_tls


class Peer:
    def __init__(self, port: int, *filters: str, user: str | None = None,
                 password: str | None = None, ca: str | None = None) -> None:
        """`ca`: the broker's CA (Broker.login gives it): TLS verified against it."""
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"peer-{uuid.uuid4().hex[:8]}")
        if user is not None:
            self.c.username_pw_set(user, password)
        if ca is not None:
            client_tls(self.c, ca)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, u, f, rc, p: (
            c.subscribe([(t, 1) for t in filters]) if filters else None)
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self._ready.set()
        self.c.connect("127.0.0.1", port, keepalive=30)
        self.c.loop_start()
        if filters:
            assert self._ready.wait(5), "the peer got no SUBACK"

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def payloads(self, topic: str) -> list[dict[str, Any]]:
        """JSON payloads received on `topic`, oldest first (non-JSON ones skipped)."""
        out = []
        with self._lock:
            items = [p for t, p, _ in self.messages if t == topic]
        for p in items:
            try:
                out.append(json.loads(p))
            except ValueError:
                pass
        return out

    def last(self, topic: str) -> dict[str, Any] | None:
        got = self.payloads(topic)
        return got[-1] if got else None

    def events(self, site: str) -> list[dict[str, Any]]:
        return self.payloads(f"sot/v1/{site}/event")

    def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        info = self.c.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(5)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()

