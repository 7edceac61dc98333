"""The one schema mechanism for every file people write: sites, device profiles, alert rules,
contacts and `config/gateway.toml`.

A file is read with `load_toml`; each table in it through a `Reader`, which refuses unknown keys
and reads each value with its type, range or choices, and default. A table whose keys need no
logic of their own is declared as a list of `Key`s and read at once (`Reader.read`); keys that
depend on each other are read one by one with `Reader.get` and checked by the loader. Every
failure is a `ConfigError` naming the file, the entry (a table such as `[mqtt]` or an item such
as `device 'genset'`) and the key, so a technician can go straight to the line.

This module imports nothing of the gateway: the site loader (`gateway.config`), the alert
configuration (`gateway.alerts.config`) and the gateway settings (`gateway.settings`) all build
on it, and none of them on each other.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"


class ConfigError(ValueError):
    """A configuration problem, located precisely enough for a technician to fix it."""

    def __init__(self, path: Path | str, entry: str, key: str | None, message: str) -> None:
        self.path = str(path)
        self.entry = entry
        self.key = key
        self.message = message
        where = f"{rel(path)}: {entry}"
        if key:
            where += f": key '{key}'"
        super().__init__(f"{where}: {message}")


def rel(path: Path | str) -> str:
    """The path as a technician reads it: relative to the repository when inside it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(REPO_ROOT))
    except (ValueError, OSError):
        return str(p)


def load_toml(path: Path | str) -> dict[str, Any]:
    """The file's top-level table; a missing or unreadable file is a ConfigError too."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "file", None, "not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, "file", None, f"not valid TOML: {e}") from None


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a key that must be given."""

PATH = (str, os.PathLike)
"""The type of a key naming a file or folder: a string in TOML, a Path from Python callers."""


@dataclass(frozen=True)
class Key:
    """One key of a table: its name, type(s), default (`REQUIRED`: must be given) and the
    numeric range or the choices it must fall in. A default of None lets Python callers pass
    None too (TOML has no null; leaving the key out means the same)."""

    name: str
    type: type | tuple[type, ...]
    default: Any = REQUIRED
    lo: float | None = None
    hi: float | None = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""


class Reader:
    """Typed access to one TOML table; every failure names file, entry and key.

    `known` is either the allowed key names or the table's declared `Key`s."""

    def __init__(
        self, path: Path | str, entry: str, table: Any, known: Iterable[str] | Sequence[Key]
    ) -> None:
        self.path, self.entry = path, entry
        if not isinstance(table, dict):
            raise ConfigError(path, entry, None, "must be a table")
        self.table: dict[str, Any] = table
        names = {k.name if isinstance(k, Key) else k for k in known}
        unknown = sorted(set(table) - names)
        if unknown:
            raise ConfigError(
                path, entry, unknown[0], f"unknown key (allowed: {', '.join(sorted(names))})"
            )

    def fail(self, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.path, self.entry, key, message)

    def get(
        self,
        key: str,
        kind: type | tuple[type, ...],
        default: Any = REQUIRED,
        *,
        lo: float | None = None,
        hi: float | None = None,
        choices: tuple[Any, ...] | None = None,
    ) -> Any:
        """The value of `key`, checked; `default` when absent (REQUIRED: absent is an error).
        An int is accepted where a float is asked for and returned as a float."""
        if key not in self.table or (self.table[key] is None and default is None):
            if default is REQUIRED or default is ...:
                raise self.fail(key, "missing")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"must be {_kind_name(kinds)}, not true/false")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds):
            raise self.fail(key, f"must be {_kind_name(kinds)}, got {value!r}")
        if choices is not None and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        if lo is not None or hi is not None:
            num = cast(float, value)  # lo and hi come only with a numeric kind
            if lo is not None and num < lo or hi is not None and num > hi:
                raise self.fail(key, f"must be {_bounds(lo, hi)}, got {value!r}")
        return value

    def read(self, keys: Sequence[Key]) -> dict[str, Any]:
        """Every declared key's value (or default), checked."""
        return {
            k.name: self.get(k.name, k.type, k.default, lo=k.lo, hi=k.hi, choices=k.choices)
            for k in keys
        }


def _bounds(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"between {lo:g} and {hi:g}"
    return f"at least {lo:g}" if lo is not None else f"at most {hi:g}"


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a table",
        os.PathLike: "a path",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)
