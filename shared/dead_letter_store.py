"""Where dead letters are kept (a commercetools custom object container) and how they are keyed.

Kept apart from `shared.dead_letters` (which replays through the processors) so that a processor can remove
records too: a deleted customer's dead letters are removed when the customer is erased (`shared.erasures`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable

from shared.commercetools import Commercetools

CONTAINER = "klaviyo-connector-dead-letters"


def key_for(message_id: str) -> str:
    """Custom object keys allow `[-_~.a-zA-Z0-9]`; other ids are hashed."""
    if re.fullmatch(r"[-_~.a-zA-Z0-9]{1,256}", message_id):
        return message_id
    return "sha256-" + hashlib.sha256(message_id.encode()).hexdigest()


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
