"""Text from a site is untrusted: one place that makes any string safe to send.

The ingest refuses what it can, but the web must be safe on its own, also for text that is
already in the database: a JSON payload stored as text may hold an escaped lone UTF-16
surrogate (`"\\ud800"`), which Python decodes to a string that cannot be encoded as UTF-8, and a
device name may hold a control character, which makes an XML document ill-formed.

`clean(s)` replaces every character that is not allowed in XML 1.0 (C0 controls other than tab,
line feed and carriage return; lone surrogates; U+FFFE and U+FFFF) with U+FFFD, the replacement
character, so a reader sees that something was there. What is left encodes as UTF-8 and is
allowed in HTML, JSON and XML. Each output kind uses it at one place:

    HTML  `gateway.web.render.render` cleans the whole page
    JSON  `json_response` / `dumps` below (the API and the signage event stream)
    XML   `gateway.alerts.cap` cleans every element text and attribute it writes
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

REPLACEMENT = "\ufffd"
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def clean(s: str) -> str:
    """`s` with every character XML 1.0 forbids, and every lone surrogate, replaced by U+FFFD."""
    return _BAD.sub(REPLACEMENT, s)


def clean_obj(obj: Any) -> Any:
    """`clean` applied to every string (keys too) in a JSON-like value."""
    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {clean_obj(k) if isinstance(k, str) else k: clean_obj(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_obj(v) for v in obj]
    return obj


def dumps(obj: Any) -> str:
    """JSON text of `obj` with every string cleaned; UTF-8 as is (not \\u-escaped)."""
    return json.dumps(clean_obj(obj), ensure_ascii=False)


def json_response(data: Any, *, status: int = 200, **kwargs: Any) -> web.Response:
    """The JSON answer every handler gives: `web.json_response` with the cleaning encoder."""
    return web.json_response(data, status=status, dumps=dumps, **kwargs)
