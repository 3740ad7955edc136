"""Product messages and changes → Klaviyo catalog items and their variants.

ProductPublished: re-read the product and sync its *current* data, item first, then variants (the reference sent
all writes at once, so variant creates failed while their new item did not exist yet):
  1. upsert the item (PATCH, POST when Klaviyo answers 404);
  2. list the item's Klaviyo variants (every page);
  3. delete the variants whose SKU is gone, then update the known ones (PATCH; under load the event app's batcher
     sends them in a shared catalog variant bulk update job), then create the new ones (POST).
Variant writes (deletes plus upserts) are single calls while there are at most `REALTIME_VARIANT_WRITES` of them;
beyond that they go as bulk jobs (delete, update, create; 100 per job), so one delivery stays within its time
budget and Klaviyo's catalog rate limit (a product with 100 variants would otherwise need 100+ sequential calls,
overrun the budget and be redelivered forever). The jobs are awaited within the delivery's time budget: a failed
job makes the delivery a dead letter with Klaviyo's reason; jobs still processing when the budget runs out are
checked by the job application's next scheduled run (`shared.pending_jobs`).

ProductUnpublished / product ResourceDeleted: delete the item's variants (listed from Klaviyo), then the item.
An unpublish is skipped when commercetools says the product is published again (a late, out-of-order message).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

from shared.bulk import MAX_CATALOG, catalog_job_body, check_jobs, chunks
from shared.config import Settings
from shared.errors import NotFound
from shared.klaviyo import Klaviyo, catalog_id
from shared.mappers.product import (
    catalog_ref,
    item_create,
    item_update,
    split_variants,
    variant_create,
    variant_update,
)
from shared.messages import Notification
from shared.pending_jobs import remember
from shared.processors import Context, Processor, change

log = logging.getLogger(__name__)

RESOURCE = "product"
EXPAND = ("masterData.current.categories[*].ancestors[*]",)
REALTIME_VARIANT_WRITES = 20  # more variant writes than this in one delivery → bulk jobs
RESERVE_SECONDS = 1.5  # of the delivery's budget, kept to record a dead letter or the pending jobs
MAX_VARIANT_PAGES = 50  # 5,000 variants: far above commercetools' 100 variants per product
PREFIX = catalog_id("")


# --- shared steps ---------------------------------------------------------------------------------------------


def klaviyo_variant_skus(klaviyo: Klaviyo, product_id: str) -> list[str]:
    """External ids (SKUs) of the Klaviyo variants of the product's item, every page; [] without the item."""
    path = f"/api/catalog-items/{quote(catalog_id(product_id), safe='')}/variants"
    params: dict[str, str] = {"fields[catalog-variant]": "id", "page[size]": "100"}
    skus: list[str] = []
    for _ in range(MAX_VARIANT_PAGES):
        try:
            body = klaviyo.request("GET", path, params=params) or {}
        except NotFound:
            return skus
        skus += [d["id"].removeprefix(PREFIX) for d in body.get("data") or []
                 if isinstance(d.get("id"), str) and d["id"].startswith(PREFIX)]
        cursor = _next_cursor(body)
        if cursor is None:
            return skus
        params = {**params, "page[cursor]": cursor}
    log.warning("stopped listing Klaviyo variants after %d pages", MAX_VARIANT_PAGES,
                extra={"product_id": product_id})
    return skus


def _next_cursor(body: dict[str, Any]) -> str | None:
    link = (body.get("links") or {}).get("next")
    if not link:
        return None
    return (parse_qs(urlparse(link).query).get("page[cursor]") or [None])[0]


def delete_variants(klaviyo: Klaviyo, skus: Sequence[str]) -> list[str]:
    """Delete these Klaviyo variants: one call each (404 is fine), or delete jobs when there are many (returned)."""
    if len(skus) > REALTIME_VARIANT_WRITES:
        return _send_jobs(klaviyo, "delete", [catalog_ref("variant", s) for s in skus])
    for sku in skus:
        klaviyo.delete_catalog("variant", sku)
    return []


def _send_jobs(klaviyo: Klaviyo, action: str, data: list[dict[str, Any]]) -> list[str]:
    """The bulk jobs, named `<type>:<id>` as `shared.bulk` polls them."""
    jobs = []
    for chunk in chunks(data, MAX_CATALOG):
        # A repeated create job only fails its duplicates; updates and deletes are idempotent.
        body = klaviyo.request("POST", f"/api/catalog-variant-bulk-{action}-jobs",
                               body=catalog_job_body("variant", action, chunk), safe_to_retry=action != "create")
        jobs.append(f"catalog-variant-bulk-{action}:{body['data']['id']}")
    return jobs


def settle(notification: Notification, context: Context, jobs: list[str], what: str, processor: str) -> None:
    """Await a delivery's bulk jobs (see the module docstring): `BulkJobFailed` when one failed; those still
    processing at the end of the budget are remembered for the next scheduled job run."""
    if not jobs:
        return
    pending = check_jobs(context.klaviyo, jobs, what, reserve=RESERVE_SECONDS)
    if pending:
        log.info("bulk jobs still processing at the end of the time budget; the next job run checks them",
                 extra={"jobs": len(pending), "resource_id": notification.resource_id})
        remember(context.commercetools, notification, pending, what, [processor])


# --- sync -----------------------------------------------------------------------------------------------------


def sync_product(product: dict[str, Any], context: Context, replay: dict[str, Any],
                 now: datetime | None = None) -> list[str]:
    """Item upsert, then deletes of gone variants, then variant upserts (see the module docstring); the bulk jobs
    sent, if any, for the caller to await. `replay`: the delivery's notification, which a dead letter of a
    batched variant update keeps."""
    now = now or datetime.now(UTC)
    settings, klaviyo, product_id = context.settings, context.klaviyo, product["id"]
    with_sku, without_sku = split_variants(product)
    for variant in without_sku:
        log.info("variant %s of product %s has no SKU: not sent to Klaviyo", variant.get("id"), product_id)
    klaviyo.upsert_catalog("item", item_create(product, settings, now), item_update(product, settings, now))
    existing = set(klaviyo_variant_skus(klaviyo, product_id))
    wanted = {v["sku"]: v for v in with_sku}
    gone = sorted(existing - wanted.keys())
    if len(gone) + len(wanted) > REALTIME_VARIANT_WRITES:
        return _variant_jobs(product, wanted, existing, gone, settings, klaviyo, now)
    for sku in gone:
        klaviyo.delete_catalog("variant", sku)
    # Known SKUs are updated (PATCH; under load, one shared catalog variant bulk update job through the event
    # app's batcher, a variant the job fails on written alone), then new SKUs created (POST).
    updates = []
    for sku, variant in wanted.items():
        if sku in existing:
            update = variant_update(product, variant, settings, now)
            single = partial(klaviyo.upsert_catalog, "variant", variant_create(product, variant, settings, now),
                             update, create_first=False)
            updates.append((update, single))
    batcher = context.batcher
    if updates and not (batcher and batcher.update_variants(updates, replay, "ProductPublished",
                                                            product.get("version"))):
        for _, single in updates:
            single()
    for sku, variant in wanted.items():
        if sku not in existing:
            klaviyo.upsert_catalog("variant", variant_create(product, variant, settings, now),
                                   variant_update(product, variant, settings, now), create_first=True)
    return []


def _variant_jobs(product: dict[str, Any], wanted: dict[str, dict[str, Any]], existing: set[str],
                  gone: list[str], settings: Settings, klaviyo: Klaviyo, now: datetime) -> list[str]:
    log.info("product %s: %d variants to write, %d to delete: sending bulk jobs", product["id"], len(wanted),
             len(gone))
    jobs = _send_jobs(klaviyo, "delete", [catalog_ref("variant", s) for s in gone])
    jobs += _send_jobs(klaviyo, "update", [variant_update(product, v, settings, now)
                                           for sku, v in wanted.items() if sku in existing])
    jobs += _send_jobs(klaviyo, "create", [variant_create(product, v, settings, now)
                                           for sku, v in wanted.items() if sku not in existing])
    return jobs


def remove_product(notification: Notification, context: Context, processor: str) -> str | None:
    """Delete the item's variants (awaited when they go as bulk jobs), then the item; a reason when Klaviyo did
    not have the item."""
    klaviyo, product_id = context.klaviyo, notification.resource_id
    jobs = delete_variants(klaviyo, klaviyo_variant_skus(klaviyo, product_id))
    settle(notification, context, jobs, f"variant deletions of product {product_id}", processor)
    if not klaviyo.delete_catalog("item", product_id):
        return "item was not in Klaviyo"
    return None


# --- processors -----------------------------------------------------------------------------------------------


def _published(notification: Notification, context: Context) -> str | None:
    guard, product_id = context.versions, notification.resource_id
    reason = guard.stale_reason(RESOURCE, product_id, notification.resource_version)
    if reason:
        return reason
    product = context.commercetools.find("products", product_id, expand=EXPAND)
    if product is None:
        return "product no longer exists in commercetools"
    if not (product.get("masterData") or {}).get("published"):
        return "product is no longer published (its unpublish message removes it)"
    reason = guard.stale_reason(RESOURCE, product_id, product.get("version"))
    if reason:
        return reason
    jobs = sync_product(product, context, notification.payload)
    settle(notification, context, jobs, f"variant writes of product {product_id}", "ProductPublished")
    guard.applied(RESOURCE, product_id, product.get("version"))
    return None


def _unpublished(notification: Notification, context: Context) -> str | None:
    guard, product_id = context.versions, notification.resource_id
    reason = guard.stale_reason(RESOURCE, product_id, notification.resource_version)
    if reason:
        return reason
    product = context.commercetools.find("products", product_id)
    if product is not None and (product.get("masterData") or {}).get("published"):
        return f"product is published again (version {product.get('version')}): not removed"
    reason = remove_product(notification, context, "ProductUnpublished")
    guard.applied(RESOURCE, product_id, notification.resource_version)
    return reason


def _deleted(notification: Notification, context: Context) -> str | None:
    reason = remove_product(notification, context, "ProductResourceDeleted")
    context.versions.applied(RESOURCE, notification.resource_id, notification.resource_version)
    return reason


def _published_accepts(notification: Notification, settings: Settings) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == RESOURCE \
        and notification.type in settings.product.published_messages


def _unpublished_accepts(notification: Notification, settings: Settings) -> bool:
    return notification.notification_type == "Message" and notification.resource_type == RESOURCE \
        and notification.type in settings.product.deleted_messages


PROCESSORS = (
    Processor("ProductPublished", _published_accepts, _published),
    Processor("ProductUnpublished", _unpublished_accepts, _unpublished),
    # Always handled, whatever product.messages.deleted says (the reference matched it against that list).
    Processor("ProductResourceDeleted", change("ResourceDeleted", RESOURCE), _deleted),
)
