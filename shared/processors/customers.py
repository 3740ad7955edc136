"""Customer messages and changes → Klaviyo profiles."""

from __future__ import annotations

from typing import Any

from shared.mappers.customer import profile_attributes
from shared.messages import Notification
from shared.processors import Context, Processor, change, message

RESOURCE = "customer"


def sync_customer(customer: dict[str, Any], context: Context) -> str | None:
    """Create or update the customer's profile: found by external id, or (with deduplication) by email."""
    email = customer.get("email")
    if not email:
        return "customer has no email"
    klaviyo, deduplication = context.klaviyo, context.settings.customer.deduplication
    attributes = profile_attributes(customer, context.settings.customer.custom_fields)

    def one_by_one() -> None:
        profile_id = klaviyo.find_profile_id(external_id=customer["id"])
        if profile_id is None and deduplication:
            profile_id = klaviyo.find_profile_id(email=email)
        klaviyo.upsert_profile(attributes, profile_id)

    # Under load, the event app's batcher imports the profile in a shared profile bulk import job (which matches
    # by email and external id too); it falls back to `one_by_one` for a profile the job fails on.
    if context.batcher is None or not context.batcher.import_profile(attributes, one_by_one):
        one_by_one()
    context.versions.applied(RESOURCE, customer["id"], customer.get("version"))
    return None


def _current_customer(notification: Notification, context: Context) -> str | None:
    """Re-read the customer and sync it whole: a redelivered or late message then cannot apply stale data."""
    customer = context.commercetools.find("customers", notification.resource_id)
    if customer is None:
        return "customer no longer exists in commercetools"
    return sync_customer(customer, context)


def _created(notification: Notification, context: Context) -> str | None:
    """The message's copy of the customer, unless a newer version was applied since (a late or redelivered
    CustomerCreated would bring back the data as created): then the current customer, re-read."""
    customer = notification.payload.get("customer")
    if notification.payload_included and isinstance(customer, dict) and customer.get("id") \
            and not context.versions.is_stale(RESOURCE, customer["id"], customer.get("version")):
        return sync_customer(customer, context)
    return _current_customer(notification, context)


def _address_changed(notification: Notification, settings: Any) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == "customer" \
        and notification.type in settings.customer.address_messages


def _deleted(notification: Notification, context: Context) -> str | None:
    """The customer is gone from commercetools: ask Klaviyo to delete the profile (data privacy deletion)."""
    if not context.settings.customer.deletion:
        return "customer deletion is switched off (customer.deletion.enabled)"
    profile_id = context.klaviyo.find_profile_id(external_id=notification.resource_id)
    if profile_id is None:
        return "no Klaviyo profile for this customer"
    context.klaviyo.request_profile_deletion(profile_id)
    return None


PROCESSORS = (
    Processor("CustomerCreated", message("CustomerCreated", resource="customer"), _created),
    Processor("CustomerResourceUpdated", change("ResourceUpdated", "customer"), _current_customer),
    Processor("CustomerAddressUpdate", _address_changed, _current_customer),
    Processor("CustomerFirstNameSet", message("CustomerFirstNameSet", resource="customer"), _current_customer),
    Processor("CustomerLastNameSet", message("CustomerLastNameSet", resource="customer"), _current_customer),
    Processor("CustomerTitleSet", message("CustomerTitleSet", resource="customer"), _current_customer),
    Processor("CustomerCompanyNameSet", message("CustomerCompanyNameSet", resource="customer"),
              _current_customer),
    Processor("CustomerDeleted", message("CustomerDeleted", resource="customer"), _deleted),
    Processor("CustomerResourceDeleted", change("ResourceDeleted", "customer"), _deleted),
)
