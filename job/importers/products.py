"""products → Klaviyo catalog items and variants, then removal of ours whose product is no longer published.

Phases kept in the checkpoint:
- `upsert`: a page of published products → item create/update jobs, awaited (an item exists before its
  variants), then variant delete (SKUs gone), update and create jobs;
- `reconcile`: Klaviyo's items page by page; items whose product is gone or unpublished lose their variants,
  then themselves;
- `deleteAll` (with confirmation): every variant, then every item.
The payloads are the realtime path's (`shared.mappers.product`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from job.importers.categories import delete_all
from job.importers.common import count, existing_catalog_ids, filtered, is_last, klaviyo_page, next_page
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import MAX_CATALOG, chunks
from shared.commercetools import literal
from shared.klaviyo import catalog_id
from shared.mappers.product import item_create, item_update, split_variants, variant_create, variant_update
from shared.processors.products import klaviyo_variant_skus

EXPAND = ("masterData.current.categories[*]", "masterData.current.categories[*].ancestors[*]")
PUBLISHED = "masterData(published = true)"


def step(job: JobContext, record: ImportRecord) -> bool:
    if record.request.get("deleteAll"):
        return _delete_everything(job, record)
    if record.checkpoint.get("phase", "upsert") == "upsert":
        return _upsert(job, record)
    return _reconcile(job, record)


def _jobs(job: JobContext, kind: str, action: str, data: list[dict[str, Any]]) -> list[str]:
    return [job.sender.catalog_job(kind, action, chunk) for chunk in chunks(data, MAX_CATALOG)]


def _upsert(job: JobContext, record: ImportRecord) -> bool:
    page = next_page(job, record, "products", where=[PUBLISHED], expand=EXPAND)
    settings, now = job.context.settings, datetime.now(UTC)
    existing = existing_catalog_ids(job, "item", (p["id"] for p in page))
    items = _jobs(job, "item", "create", [item_create(p, settings, now) for p in page if p["id"] not in existing])
    items += _jobs(job, "item", "update", [item_update(p, settings, now) for p in page if p["id"] in existing])
    count(record, job.sender.wait(items))

    wanted: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for product in page:
        with_sku, without_sku = split_variants(product)
        record.counts["skipped"] += len(without_sku)
        wanted.update((variant["sku"], (product, variant)) for variant in with_sku)
    gone = [{"id": catalog_id(sku)} for product_id in sorted(existing)
            for sku in klaviyo_variant_skus(job.context.klaviyo, product_id) if sku not in wanted]
    present = existing_catalog_ids(job, "variant", wanted)
    variants = _jobs(job, "variant", "delete", gone)
    variants += _jobs(job, "variant", "update", [variant_update(p, v, settings, now)
                                                 for sku, (p, v) in wanted.items() if sku in present])
    variants += _jobs(job, "variant", "create", [variant_create(p, v, settings, now)
                                                 for sku, (p, v) in wanted.items() if sku not in present])
    count(record, job.sender.wait(variants))
    if not is_last(job, page):
        return False
    if filtered(record):
        return True
    record.checkpoint = {"phase": "reconcile"}
    return False


def _reconcile(job: JobContext, record: ImportRecord) -> bool:
    ids, cursor = klaviyo_page(job, "item", record.checkpoint.get("cursor"))
    if ids:
        quoted = ", ".join(literal(i) for i in ids)
        alive = {p["id"] for p in job.context.commercetools.query(
            "products", where=[f"id in ({quoted})", PUBLISHED], limit=len(ids))}
        gone = [i for i in ids if i not in alive]
        variants = [{"id": catalog_id(sku)} for i in gone for sku in klaviyo_variant_skus(job.context.klaviyo, i)]
        count(record, job.sender.wait(_jobs(job, "variant", "delete", variants)))
        count(record, job.sender.wait(_jobs(job, "item", "delete", [{"id": catalog_id(i)} for i in gone])))
    record.checkpoint["cursor"] = cursor
    return cursor is None


def _delete_everything(job: JobContext, record: ImportRecord) -> bool:
    """Variants first (phase `variants`), then items: Klaviyo keeps no variant without its item."""
    if record.checkpoint.get("phase", "variants") == "variants":
        if delete_all(job, record, "variant"):
            record.checkpoint = {"phase": "items"}
        return False
    return delete_all(job, record, "item")
