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
from job.importers.common import count, existing_catalog_ids, filtered, klaviyo_page, mapped, next_page
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
    page, last = next_page(job, record, "products", where=[PUBLISHED], expand=EXPAND)
    settings, now = job.context.settings, datetime.now(UTC)
    existing = existing_catalog_ids(job, "item", (p["id"] for p in page))

    def build(product: dict[str, Any]) -> tuple[dict[str, Any], dict[str, tuple[dict, dict]], int]:
        """The item's payload, each variant's create and update payloads (by SKU), and how many have no SKU."""
        with_sku, without_sku = split_variants(product)
        item = item_update(product, settings, now) if product["id"] in existing else \
            item_create(product, settings, now)
        variants = {v["sku"]: (variant_create(product, v, settings, now), variant_update(product, v, settings, now))
                    for v in with_sku}
        return item, variants, len(without_sku)

    built = mapped(record, "product", page, build)  # a product that cannot be mapped is left as it is
    items = _jobs(job, "item", "create", [item for p, (item, _, _) in built if p["id"] not in existing])
    items += _jobs(job, "item", "update", [item for p, (item, _, _) in built if p["id"] in existing])
    count(record, job.sender.wait(items))

    wanted: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for _product, (_item, variants, skipped) in built:
        record.counts["skipped"] += skipped
        wanted.update(variants)
    gone = [{"id": catalog_id(sku)} for product_id in sorted(p["id"] for p, _ in built if p["id"] in existing)
            for sku in klaviyo_variant_skus(job.context.klaviyo, product_id) if sku not in wanted]
    present = existing_catalog_ids(job, "variant", wanted)
    jobs = _jobs(job, "variant", "delete", gone)
    jobs += _jobs(job, "variant", "update", [update for sku, (_, update) in wanted.items() if sku in present])
    jobs += _jobs(job, "variant", "create", [create for sku, (create, _) in wanted.items() if sku not in present])
    count(record, job.sender.wait(jobs))
    if not last:
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
        result = job.sender.wait(_jobs(job, "item", "delete", [{"id": catalog_id(i)} for i in gone]))
        count(record, result)
        if result.completed and not job.dry_run:
            return False  # what was deleted shifted the items after it: read this position again
    record.checkpoint["cursor"] = cursor
    return cursor is None


def _delete_everything(job: JobContext, record: ImportRecord) -> bool:
    """Variants first (phase `variants`), then items: Klaviyo keeps no variant without its item."""
    if record.checkpoint.get("phase", "variants") == "variants":
        if delete_all(job, record, "variant"):
            record.checkpoint = {"phase": "items"}
        return False
    return delete_all(job, record, "item")
