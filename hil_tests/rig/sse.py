"""A public screen's event stream read as the kiosk's browser reads it, for the benches that
time what reaches the screen."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any


def state_events(url: str, timeout: float = 60) -> Iterator[dict[str, Any]]:
    """The `state` events of a signage stream (`/signage/<site>/events`), each event's data
    parsed, as they arrive; ends when the server closes the stream."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        event = None
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "state":
                yield json.loads(line[6:])
