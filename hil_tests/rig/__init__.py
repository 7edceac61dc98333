from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def present(value: T | None) -> T:
    """`value`, failing the test where something the test expects to be there (a site's row,
    the running firmware, a store lookup) is None."""
    assert value is not None, "expected a value, got None"
    return value
