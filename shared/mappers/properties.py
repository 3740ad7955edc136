"""The reference's include / exclude / map rules for turning a resource's fields into properties."""

from __future__ import annotations

from typing import Any

from shared.config import PropertyFilter


def filter_properties(source: dict[str, Any] | None, rules: PropertyFilter) -> dict[str, Any]:
    """Keep the included keys (all when `include` is empty), drop the excluded ones, rename by `map`.

    Unlike the reference, falsy values (`False`, `0`, `""`) are kept: only absent (None) values are dropped.
    """
    if not source:
        return {}
    keys = rules.include or tuple(source)
    return {
        rules.rename.get(key, key): source[key]
        for key in keys
        if key in source and key not in rules.exclude and source[key] is not None
    }
