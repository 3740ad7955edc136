"""commercetools category → Klaviyo catalog category."""

from __future__ import annotations

from typing import Any

from shared.mappers.localize import localized


def breadcrumb(category: dict[str, Any], locale: str) -> str:
    """`Women > Pants > Jeans`: the names of the ancestors (expanded with `ancestors[*]`) and the category."""
    names = [localized((a.get("obj") or {}).get("name"), locale) for a in category.get("ancestors") or []]
    names.append(localized(category.get("name"), locale))
    return " > ".join(name for name in names if name)


def category_create(category: dict[str, Any], locale: str) -> dict[str, Any]:
    return {
        "type": "catalog-category",
        "attributes": {
            "external_id": category["id"],
            "name": breadcrumb(category, locale),
            "integration_type": "$custom",
            "catalog_type": "$default",
        },
    }


def category_update(category: dict[str, Any], category_id: str, locale: str) -> dict[str, Any]:
    return {"type": "catalog-category", "id": category_id, "attributes": {"name": breadcrumb(category, locale)}}


def category_paths(category: dict[str, Any], locale: str) -> list[str]:
    """Every prefix of the category's breadcrumb: `Women`, `Women > Pants`, `Women > Pants > Jeans`.

    `category` is the expanded object (with `ancestors[*]` expanded); a missing expansion yields the names
    that are known rather than an error.
    """
    chain = [localized((a.get("obj") or {}).get("name"), locale) for a in category.get("ancestors") or []]
    chain.append(localized(category.get("name"), locale))
    names = [name for name in chain if name]
    return [" > ".join(names[: i + 1]) for i in range(len(names))]
