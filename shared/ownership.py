"""What in a merchant's Klaviyo catalog is ours: only that may ever be deleted by a clean-up or `deleteAll`.

A Klaviyo catalog is often fed by more than one source (another store, another commercetools project, the
merchant's own feed), all under the same `$custom:::$default:::<id>` ids. So the connector marks what it writes:

- items and variants: their `custom_metadata` carries `commercetools_project_key` (this project) and
  `commercetools_id` (the product's id);
- categories: Klaviyo keeps no metadata for them, so the mark is a record in this commercetools project, a custom
  object in the container `klaviyo-connector-catalog-categories` keyed by the category id.

An object without a mark (an earlier deployment of the reference plugin wrote it) is adopted by the next upsert of
its product or category; one marked for another project is never touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shared.commercetools import Commercetools, in_predicates

PROJECT_KEY = "commercetools_project_key"
RESOURCE_ID = "commercetools_id"
CATEGORY_CONTAINER = "klaviyo-connector-catalog-categories"


def mark(project_key: str, resource_id: str) -> dict[str, str]:
    """The `custom_metadata` entries that make an item or variant ours."""
    return {PROJECT_KEY: project_key, RESOURCE_ID: resource_id}


def is_marked(attributes: dict[str, Any], project_key: str) -> bool:
    """Whether a Klaviyo item or variant (its attributes, with `custom_metadata`) carries this project's mark."""
    metadata = attributes.get("custom_metadata")
    return isinstance(metadata, dict) and metadata.get(PROJECT_KEY) == project_key


def record_category(commercetools: Commercetools, category_id: str) -> None:
    """Mark one category as ours (one write, whether or not it was marked already)."""
    commercetools.put_custom_object(CATEGORY_CONTAINER, category_id, {"categoryId": category_id})


def record_categories(commercetools: Commercetools, category_ids: Iterable[str]) -> None:
    """Mark these categories as ours (written to Klaviyo by us for this project); those marked already are left."""
    wanted = sorted(set(category_ids))
    known = recorded_categories(commercetools, wanted)
    for category_id in wanted:
        if category_id not in known:
            record_category(commercetools, category_id)


def recorded_categories(commercetools: Commercetools, category_ids: Iterable[str]) -> set[str]:
    """Which of these categories are marked as ours (100 per query)."""
    found: set[str] = set()
    for where in in_predicates("key", category_ids):
        found.update(o["key"] for o in commercetools.custom_objects(CATEGORY_CONTAINER, where=[where]))
    return found


def forget_categories(commercetools: Commercetools, category_ids: Iterable[str]) -> None:
    """Remove the marks of categories that are no longer in Klaviyo."""
    for category_id in category_ids:
        commercetools.delete_custom_object(CATEGORY_CONTAINER, category_id)
