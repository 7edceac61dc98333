"""The text catalogue: every user-facing word, Swedish first and English second.

All texts live in one file, `config/texts.toml`. An entry is a TOML table with `sv` and `en`
(and, for a few, extra attributes such as the CSS class of a site mode); its key is the dotted
path of the table, e.g. `mode.on_backup`, `alert.fuel_low.title` or `panel.normal.sub`.
docs/texts.md explains how to add or change a text.

    >>> cat = catalogue()
    >>> cat["mode.normal"].sv
    'Normal drift'
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

TEXTS_FILE = Path(__file__).resolve().parent.parent / "config" / "texts.toml"


class TextError(ValueError):
    """A catalogue that cannot be used; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class Text:
    """One text in both languages. `attrs` holds an entry's other string values."""

    sv: str
    en: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    def pair(self) -> tuple[str, str]:
        return self.sv, self.en


class Catalogue(Mapping[str, Text]):
    """Read-only: key -> Text. A missing key raises KeyError naming the key and the file."""

    def __init__(self, entries: dict[str, Text], source: Path) -> None:
        self._entries = entries
        self.source = source

    def __getitem__(self, key: str) -> Text:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"{self.source}: no text {key!r}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def pair(self, key: str, default: tuple[str, str] | None = None) -> tuple[str, str]:
        """(sv, en) for `key`; `default` (if given) where the catalogue has no such key."""
        t = self._entries.get(key)
        if t is None:
            if default is None:
                raise KeyError(f"{self.source}: no text {key!r}")
            return default
        return t.sv, t.en

    def section(self, prefix: str) -> dict[str, Text]:
        """The entries under `prefix.`, keyed by the rest of their key (`mode` -> {'normal': …})."""
        p = prefix + "."
        return {k[len(p):]: t for k, t in self._entries.items() if k.startswith(p)}


def parse(data: Mapping[str, Any], source: Path) -> Catalogue:
    entries: dict[str, Text] = {}

    def walk(node: Mapping[str, Any], path: str) -> None:
        if "sv" in node or "en" in node:
            attrs: dict[str, str] = {}
            for key, value in node.items():
                if not isinstance(value, str):
                    raise TextError(f"{source}: entry [{path}]: key {key!r} must be a string")
                if key not in ("sv", "en"):
                    attrs[key] = value
            for key in ("sv", "en"):
                if not node.get(key):
                    raise TextError(f"{source}: entry [{path}]: key {key!r} is missing or empty")
            entries[path] = Text(node["sv"], node["en"], attrs)
            return
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if not isinstance(value, Mapping):
                raise TextError(f"{source}: entry [{path or key}]: key {key!r} is not a text "
                                "(an entry needs `sv` and `en`)")
            walk(value, sub)

    walk(data, "")
    return Catalogue(entries, source)


def load(path: Path = TEXTS_FILE) -> Catalogue:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise TextError(f"{path}: {exc}") from None
    return parse(data, path)


@lru_cache(maxsize=4)
def catalogue(path: Path = TEXTS_FILE) -> Catalogue:
    """The catalogue, read once per process."""
    return load(path)
