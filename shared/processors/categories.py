"""Category messages and changes → Klaviyo catalog categories.

Every category written is marked as ours first (`shared.ownership`: Klaviyo keeps no metadata on categories), so
that the bulk clean-up may delete it once commercetools no longer has it; a deletion removes the mark too.
"""

from __future__ import annotations

import logging

from shared.config import Settings
from shared.klaviyo import catalog_id
from shared.mappers.category import category_create, category_update
from shared.messages import Notification
from shared.ownership import forget_categories, record_category
from shared.processors import Context, Processor, change

log = logging.getLogger(__name__)


def _sync(notification: Notification, context: Context, *, create_first: bool) -> str | None:
    category = context.commercetools.find("categories", notification.resource_id, expand=["ancestors[*]"])
    if category is None:
        return "category no longer exists in commercetools"
    locale = context.settings.preferred_locale
    record_category(context.commercetools, category["id"])
    context.klaviyo.upsert_catalog(
        "category", category_create(category, locale),
        category_update(category, catalog_id(category["id"]), locale), create_first=create_first)
    return None


def _created_accepts(notification: Notification, settings: Settings) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == "category" \
        and notification.type in settings.category_created_messages


def _deleted(notification: Notification, context: Context) -> str | None:
    found = context.klaviyo.delete_catalog("category", notification.resource_id)
    forget_categories(context.commercetools, [notification.resource_id])
    return None if found else "category was not in Klaviyo"


PROCESSORS = (
    Processor("CategoryCreated", _created_accepts, lambda n, c: _sync(n, c, create_first=True)),
    Processor("CategoryResourceUpdated", change("ResourceUpdated", "category"),
              lambda n, c: _sync(n, c, create_first=False)),
    Processor("CategoryResourceDeleted", change("ResourceDeleted", "category"), _deleted),
)
