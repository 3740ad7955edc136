"""Email and SMS marketing consent: a boolean customer custom field → Klaviyo list subscriptions.

`customer.consent.<email|sms>.field` names the custom field; a customer with it `true` is subscribed (profile
subscription bulk create job) to the channel's list (`customer.consent.<channel>.listId`, or the list of each of
the customer's stores, `stores.<key>.consent.<channel>.listId`).

Rules (what a merchant's lawyer would ask for):
- Fresh consent (realtime, customer changed less than `event.backfillAfterHours` ago) is sent without
  `consented_at` / `historical_import`: Klaviyo records the time, and a double opt-in list asks for confirmation.
  History (bulk imports, late messages) is sent with `historical_import: true` and `consented_at` = when
  commercetools last changed the customer (never later than now), so nobody is mailed for old consent.
- Unsubscribe (profile subscription bulk delete job) only on an explicit change from `true` to `false` seen by
  the connector: the last state sent is recorded per customer (commercetools custom object, container
  `klaviyo-connector-consent`, with the customer version it came from), or a `CustomerCustomFieldChanged`
  message says the previous value was `true`. An absent field, or one that was always false, changes nothing: the
  person may have subscribed through a Klaviyo form.
- The record also makes repeats no-ops: a customer whose state was sent is not sent again; an older customer
  version than the one recorded is never applied (older data never overwrites newer).
- SMS needs the profile's phone number (the address rules of the profile) in E.164; without one the SMS
  subscription is skipped and logged with the reason (the customer id only, no personal data).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.backfill import is_old
from shared.commercetools import Commercetools, in_predicates
from shared.config import Settings
from shared.errors import ApiError, Conflict, TransientError
from shared.mappers.customer import phone_number, select_address
from shared.stores import consent_lists, customer_store_keys
from shared.times import instant

if TYPE_CHECKING:
    from shared.bulk import BulkSender
    from shared.processors import Context

log = logging.getLogger(__name__)

CONTAINER = "klaviyo-connector-consent"
CHANNELS = ("email", "sms")
SUBSCRIBE_PATH = "/api/profile-subscription-bulk-create-jobs"
UNSUBSCRIBE_PATH = "/api/profile-subscription-bulk-delete-jobs"
MAX_PROFILES = 1000  # per subscription job
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
NO_PHONE = "no E.164 phone number on the customer's address: no SMS subscription"
# The messages that tell of a change of a customer's custom fields (post-deploy subscribes to them when consent
# is configured); CustomerCustomFieldChanged carries the previous value.
CONSENT_MESSAGES = ("CustomerCustomFieldAdded", "CustomerCustomFieldChanged", "CustomerCustomFieldRemoved",
                    "CustomerCustomTypeSet", "CustomerCustomTypeRemoved")


def e164(raw: str | None) -> str | None:
    """The number in E.164 (`+` and 7 to 15 digits), spaces, dots, dashes and brackets removed; else None."""
    if not raw:
        return None
    cleaned = re.sub(r"[\s().-]", "", raw)
    return cleaned if E164.fullmatch(cleaned) else None


def consent_value(customer: dict[str, Any], field_name: str) -> bool | None:
    """The custom field's value when it is a boolean; None when absent (or not a boolean)."""
    value = ((customer.get("custom") or {}).get("fields") or {}).get(field_name)
    return value if isinstance(value, bool) else None


def turned_off(message: dict[str, Any], settings: Settings) -> list[str]:
    """The channels whose consent field a `CustomerCustomFieldChanged` message says went from true to false."""
    if message.get("type") != "CustomerCustomFieldChanged" or message.get("previousValue") is not True \
            or message.get("value") is not False:
        return []
    fields = {"email": settings.customer.consent_email.field, "sms": settings.customer.consent_sms.field}
    return [channel for channel, name in fields.items() if name and name == message.get("name")]


def consented_at(customer: dict[str, Any], now: datetime) -> str:
    """When commercetools last changed the customer, never later than now (Klaviyo refuses future times)."""
    changed = instant(customer.get("lastModifiedAt") or customer.get("createdAt")) or now
    return min(changed, now).astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Change:
    """One profile's subscription (or unsubscription) on one channel to one list."""

    channel: str
    subscribe: bool
    list_id: str
    email: str
    phone: str | None = None
    consented_at: str | None = None  # set exactly when this is a historical import


@dataclass
class Plan:
    """What to send for one customer, and the record to keep once it was sent (None: nothing to record)."""

    customer_id: str
    changes: list[Change] = field(default_factory=list)
    record: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def plan(customer: dict[str, Any], settings: Settings, record: dict[str, Any] | None, *, historical: bool,
         now: datetime, turned_off: Iterable[str] = ()) -> Plan:
    """The changes for this customer given the last `record`ed state; `turned_off`: channels a message said went
    from true to false."""
    result = Plan(customer["id"])
    version = customer.get("version")
    recorded_version = (record or {}).get("version")
    if isinstance(version, int) and isinstance(recorded_version, int) and version < recorded_version:
        result.notes.append(f"customer version {version} is older than the consent state sent (version "
                            f"{recorded_version}): not applied")
        return result
    email = customer.get("email")
    if not email:
        return result
    stores = customer_store_keys(customer)
    when = consented_at(customer, now) if historical else None
    new: dict[str, Any] = {"version": version}
    for channel in CHANNELS:
        consent = settings.customer.consent_email if channel == "email" else settings.customer.consent_sms
        if not consent.field:
            continue
        value = consent_value(customer, consent.field)
        last = (record or {}).get(channel)
        last_lists = list((record or {}).get(f"{channel}Lists") or [])
        lists = consent_lists(settings, channel, stores)
        phone = e164(phone_number(select_address(customer))) if channel == "sms" else None
        new[channel], new[f"{channel}Lists"] = last, last_lists
        if value is True:
            if channel == "sms" and phone is None:
                result.notes.append(NO_PHONE)
                continue
            missing = [list_id for list_id in lists if not (last is True and list_id in last_lists)]
            result.changes += [Change(channel, True, list_id, email, phone, when) for list_id in missing]
            new[channel], new[f"{channel}Lists"] = True, list(dict.fromkeys([*last_lists, *lists]))
        elif value is False:
            if last is True or channel in turned_off:
                for list_id in last_lists or lists:
                    result.changes.append(Change(channel, False, list_id, email, phone))
            new[channel], new[f"{channel}Lists"] = False, []
    new = {key: value for key, value in new.items() if value is not None}  # as commercetools stores it
    if new != record:
        result.record = new
    return result


# --- Klaviyo job bodies ---------------------------------------------------------------------------------------


def job_body(changes: list[Change]) -> dict[str, Any]:
    """One subscription job (create or delete) for changes of one kind, channel and list."""
    first = changes[0]
    profiles = []
    for change in changes:
        attributes: dict[str, Any] = {"email": change.email}
        if change.phone:
            attributes["phone_number"] = change.phone
        if change.subscribe:
            marketing: dict[str, Any] = {"consent": "SUBSCRIBED"}
            if change.consented_at:
                marketing["consented_at"] = change.consented_at
        else:
            marketing = {"consent": "UNSUBSCRIBED"}
        attributes["subscriptions"] = {change.channel: {"marketing": marketing}}
        profiles.append({"type": "profile", "attributes": attributes})
    attributes = {"profiles": {"data": profiles}}
    if first.subscribe and first.consented_at:
        attributes["historical_import"] = True
    kind = "profile-subscription-bulk-create-job" if first.subscribe else "profile-subscription-bulk-delete-job"
    return {"data": {"type": kind, "attributes": attributes,
                     "relationships": {"list": {"data": {"type": "list", "id": first.list_id}}}}}


def job_path(changes: list[Change]) -> str:
    return SUBSCRIBE_PATH if changes[0].subscribe else UNSUBSCRIBE_PATH


def grouped(changes: Iterable[Change]) -> list[list[Change]]:
    """Changes in job-sized groups of one kind, channel, list and import mode."""
    groups: dict[tuple[Any, ...], list[Change]] = {}
    for change in changes:
        key = (change.subscribe, change.channel, change.list_id, change.consented_at is not None)
        groups.setdefault(key, []).append(change)
    return [group[start:start + MAX_PROFILES] for group in groups.values()
            for start in range(0, len(group), MAX_PROFILES)]


# --- the record of what was sent ------------------------------------------------------------------------------


def read_records(commercetools: Commercetools, customer_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored consent records of these customers (custom objects), by customer id."""
    found: dict[str, dict[str, Any]] = {}
    for where in in_predicates("key", customer_ids):
        for stored in commercetools.custom_objects(CONTAINER, where=[where]):
            found[stored["key"]] = stored
    return found


def write_record(commercetools: Commercetools, customer_id: str, value: dict[str, Any],
                 stored: dict[str, Any] | None) -> None:
    """Keep the state sent; version-checked, so two deliveries racing cannot lose one's record (the loser is
    delivered again and finds the winner's record)."""
    try:
        commercetools.put_custom_object(CONTAINER, customer_id, value, stored["version"] if stored else 0)
    except Conflict as exc:
        raise TransientError("the consent record changed meanwhile; deliver again") from exc


# --- realtime -------------------------------------------------------------------------------------------------


def sync_consent(customer: dict[str, Any], context: Context, *, turned_off: Iterable[str] = (),
                 now: datetime | None = None) -> None:
    """Send the customer's consent changes to Klaviyo (one job per channel and list), then record them.

    A refused job raises (`ApiError`: 4xx permanent, else
    transient), so the delivery is recorded as a dead letter or delivered again.
    """
    settings = context.settings
    if not settings.customer.consent_configured or not customer.get("email"):
        return
    now = now or datetime.now(UTC)
    stored = context.commercetools.get_custom_object(CONTAINER, customer["id"])
    historical = is_old(customer.get("lastModifiedAt"), settings.backfill_after_hours, now)
    result = plan(customer, settings, (stored or {}).get("value"), historical=historical, now=now,
                  turned_off=turned_off)
    for note in result.notes:
        log.info("customer %s: %s", customer["id"], note)
    for group in grouped(result.changes):
        context.klaviyo.request("POST", job_path(group), body=job_body(group))
    if result.record is not None and not settings.dry_run:  # a dry run sent nothing: nothing to remember
        write_record(context.commercetools, customer["id"], result.record, stored)


# --- bulk -----------------------------------------------------------------------------------------------------


def sync_page(customers: list[dict[str, Any]], context: Context, sender: BulkSender, *,
              now: datetime | None = None) -> tuple[int, list[str]]:
    """The consent of a page of customers, as history (`historical_import`, `consented_at`): jobs per channel
    and list, then read back from the profiles. A customer whose changes all show is recorded; the others are
    returned as failures (customer id and channel, no personal data) and are sent again by the next run.

    Returns (customers whose consent was sent, failures).
    """
    settings = context.settings
    if not settings.customer.consent_configured:
        return 0, []
    now = now or datetime.now(UTC)
    with_email = [customer for customer in customers if customer.get("email")]
    stored = read_records(context.commercetools, [customer["id"] for customer in with_email])
    plans = []
    for customer in with_email:
        result = plan(customer, settings, (stored.get(customer["id"]) or {}).get("value"), historical=True, now=now)
        for note in result.notes:
            log.info("customer %s: %s", customer["id"], note)
        plans.append(result)
    changes = [change for result in plans for change in result.changes]
    refused: dict[Change, str] = {}
    for group in grouped(changes):
        refused.update(_send_group(sender, group))
    expected: dict[str, dict[str, str]] = {}
    for change in changes:
        if change not in refused:
            expected.setdefault(change.email.lower(), {})[change.channel] = \
                "SUBSCRIBED" if change.subscribe else "UNSUBSCRIBED"
    confirmed = sender.confirm_subscriptions(expected) if expected and not settings.dry_run else set(expected)
    sent, failures = 0, []
    for result in plans:
        reasons = sorted({refused[c] for c in result.changes if c in refused})
        if reasons:
            failures.append(f"customer {result.customer_id}: Klaviyo refused the consent change ({reasons[0]})")
            continue
        missing = sorted({c.channel for c in result.changes if c.email.lower() not in confirmed})
        if missing:
            failures.append(f"customer {result.customer_id}: Klaviyo did not confirm the {' and '.join(missing)} "
                            "consent change (the subscription job failed or is still processing)")
            continue
        if result.record is not None and not settings.dry_run:
            write_record(context.commercetools, result.customer_id, result.record, stored.get(result.customer_id))
        sent += bool(result.changes)
    return sent, failures


def _send_group(sender: BulkSender, group: list[Change]) -> dict[Change, str]:
    """Send one job; the changes Klaviyo refused, with why. A job refused as invalid (400) is sent again one
    profile at a time, so that one bad profile does not cost the others; other refusals (a list that does not
    exist) hold for the whole job. Transient failures are raised (the page is tried again)."""
    try:
        sender.subscription_job(job_path(group), job_body(group))
        return {}
    except ApiError as exc:
        if exc.transient:
            raise
        if exc.status != 400 or len(group) == 1:
            return dict.fromkeys(group, exc.describe())
    refused: dict[Change, str] = {}
    for change in group:
        refused.update(_send_group(sender, [change]))
    return refused

