"""Inventory entry changes → the stock of the Klaviyo variant with the entry's SKU.

One Klaviyo call: `PATCH /api/catalog-variants/{id}` with `inventory_quantity` (0 included: the reference skipped
zero stock, so Klaviyo never learnt that a variant sold out) and `inventory_policy`. A variant Klaviyo does not
have yet is never created from stock alone: its product's publication creates it, with the stock of that time.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from shared.config import Settings
from shared.errors import NotFound
from shared.mappers.product import inventory_update
from shared.messages import Notification
from shared.processors import Context, Processor

log = logging.getLogger(__name__)

RESOURCE = "inventory-entry"


def notification_sku(notification: Notification) -> str | None:
    sku = (notification.payload.get("resourceUserProvidedIdentifiers") or {}).get("sku")
    return sku if isinstance(sku, str) and sku else None


def _accepts(notification: Notification, _settings: Settings) -> bool:
    return notification.notification_type == "ResourceUpdated" and notification.resource_type == RESOURCE \
        and notification_sku(notification) is not None


def _not_ours(entry: dict[str, Any], channel: str) -> str:
    if not entry.get("sku"):
        return "inventory entry has no SKU"
    if channel:
        return "inventory entry is not in the channel product.inventory.useChannelInventory names"
    return "inventory entry has a supply channel and product.inventory.useChannelInventory names none"


def _updated(notification: Notification, context: Context) -> str | None:
    guard, entry_id = context.versions, notification.resource_id
    reason = guard.stale_reason(RESOURCE, entry_id, notification.resource_version)
    if reason:
        return reason
    entry = context.commercetools.find("inventory", entry_id)
    if entry is None:
        return "inventory entry no longer exists in commercetools"
    reason = guard.stale_reason(RESOURCE, entry_id, entry.get("version"))
    if reason:
        return reason
    data = inventory_update(entry, context.settings)
    if data is None:
        return _not_ours(entry, context.settings.product.inventory_channel)

    def one_request() -> str | None:
        try:
            context.klaviyo.request("PATCH", f"/api/catalog-variants/{quote(data['id'], safe='')}",
                                    body={"data": data})
        except NotFound:
            log.info("inventory entry %s: its variant is not in Klaviyo yet; stock not sent", entry_id)
            return "variant is not in Klaviyo yet (it is created when its product is published)"
        return None

    # Under load, the event app's batcher sends the update in a shared catalog variant bulk update job; a variant
    # the job fails on is written again with `one_request` (a variant Klaviyo does not have is then skipped).
    if context.batcher is None or not context.batcher.update_variant(data, one_request, notification.payload,
                                                                     version=entry.get("version")):
        reason = one_request()
        if reason:
            return reason
    guard.applied(RESOURCE, entry_id, entry.get("version"))
    return None


PROCESSORS = (Processor("InventoryResourceUpdated", _accepts, _updated),)
