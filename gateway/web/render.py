"""The Jinja2 environment every HTML page is rendered with.

Autoescape is on for every template: a value from MQTT, configuration or a user is always text,
never markup. Page texts come from the catalogue (config/texts.toml) through one macro, `bi`:

    {{ bi("page.nav.overview") }}            a catalogue key
    {{ bi("page.overview.unacked", n=3) }}   with {n} filled in, in both languages
    {{ bi(row.mode) }}                       a Text the view model prepared

each giving `Svenska <span class="en">/ English</span>` (Swedish only when a Text has no
English). The finished page is cleaned of what no page may carry (gateway/safetext.py), so a
lone surrogate or a control character from a site cannot break it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from .. import texts
from ..safetext import clean

TEMPLATES = Path(__file__).resolve().parent / "templates"


def text(key: str, **fmt: Any) -> texts.Text:
    """The catalogue's text for `key`, with `{name}` placeholders filled from `fmt` in both
    languages; a value that differs by language (an age: "4 tim" / "4 h") is given as a Text."""
    t = texts.catalogue()[key]
    if not fmt:
        return t
    sv = {k: v.sv if isinstance(v, texts.Text) else v for k, v in fmt.items()}
    en = {k: v.en if isinstance(v, texts.Text) else v for k, v in fmt.items()}
    return texts.Text(t.sv.format(**sv), t.en.format(**en))


def pair(sv: str, en: str = "") -> texts.Text:
    """A bilingual value the view model made; en "" shows the value alone (an unknown state's
    raw name, which has no translation)."""
    return texts.Text(sv, en)


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["text"] = text
    env.globals["bi"] = env.get_template("_bi.html").module.bi  # type: ignore[attr-defined]
    return env


def render(template: str, **context: Any) -> str:
    return clean(environment().get_template(template).render(**context))


def page(template: str, status: int = 200, **context: Any) -> web.Response:
    """Every HTML page goes out through here."""
    return web.Response(text=render(template, **context), status=status,
                        content_type="text/html", charset="utf-8")
