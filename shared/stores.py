"""commercetools Stores: which store a resource belongs to, and the settings that apply to it.

`stores.<key>` (configuration) overrides the locale, currency, product URL template and consent lists of the
resources of that store; anything not overridden, and any store the configuration does not name, uses the
global settings. Metric names never depend on the store (Klaviyo caps an account at 200 metrics): the store
travels as the `Store` event property and the `Stores` profile property instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shared.config import Settings

EVENT_PROPERTY = "Store"
PROFILE_PROPERTY = "Stores"


def store_key(resource: dict[str, Any]) -> str | None:
    """The key of the store an order (or cart) belongs to, or None."""
    store = resource.get("store")
    key = store.get("key") if isinstance(store, dict) else None
    return key if isinstance(key, str) and key else None


def customer_store_keys(customer: dict[str, Any]) -> list[str]:
    """The keys of the stores a customer belongs to (none: a global customer), distinct, in their order."""
    keys = [store.get("key") for store in customer.get("stores") or [] if isinstance(store, dict)]
    return list(dict.fromkeys(key for key in keys if isinstance(key, str) and key))


def settings_for(settings: Settings, key: str | None) -> Settings:
    """The settings for resources of store `key`: the global ones with the store's overrides applied.

    Returns `settings` itself when the store has no overrides (or is not configured, or `key` is None).
    """
    store = settings.stores.get(key) if key else None
    if store is None:
        return settings
    changes = {name: value for name, value in (("preferred_locale", store.locale),
                                                ("preferred_currency", store.currency),
                                                ("product_url_template", store.product_url_template)) if value}
    return dataclasses.replace(settings, **changes) if changes else settings


def consent_lists(settings: Settings, channel: str, store_keys: list[str]) -> list[str]:
    """The Klaviyo lists a consenting customer of these stores is subscribed to on `channel` (email / sms):
    each store's own list, else the global one; the global one for a customer of no store."""
    consent = settings.customer.consent_email if channel == "email" else settings.customer.consent_sms
    lists = []
    for key in store_keys or [None]:
        store = settings.stores.get(key) if key else None
        own = (store.email_list_id if channel == "email" else store.sms_list_id) if store else ""
        lists.append(own or consent.list_id)
    return list(dict.fromkeys(list_id for list_id in lists if list_id))
