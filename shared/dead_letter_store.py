"""Where dead letters are kept (a commercetools custom object container) and how they are keyed.

Kept apart from `shared.dead_letters` (which replays through the processors) so that a processor can remove
records too: a deleted customer's dead letters are removed when the customer is erased (`shared.erasures`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from shared.commercetools import Commercetools, object_key

CONTAINER = "klaviyo-connector-dead-letters"


key_for = object_key  # a message's dead letter is keyed by its message id


def remove_mentioning(commercetools: Commercetools, needles: Iterable[str]) -> int:
    """Delete every record whose content (its notification, resource, raw body) mentions one of these strings,
    case-insensitively; returns how many. Reads the whole container: erasures are rare, dead letters few."""
    wanted = [n.lower() for n in needles if n]
    if not wanted:
        return 0
    removed = 0
    for obj in list(commercetools.custom_objects(CONTAINER)):
        text = json.dumps(obj.get("value"), ensure_ascii=False).lower()
        if any(needle in text for needle in wanted):
            commercetools.delete_custom_object(CONTAINER, obj["key"], version=obj["version"])
            removed += 1
    return removed
