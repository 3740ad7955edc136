"""products → Klaviyo catalog items and variants, then removal of ours whose product is no longer published.

Phases kept in the checkpoint:
- `upsert`: a page of published products → item create/update jobs, awaited (an item exists before its
  variants), then variant delete (SKUs gone), update and create jobs;
- `reconcile`: Klaviyo's items page by page; items of ours whose product is gone or unpublished lose their
  variants, then themselves;
- `deleteAll` (with confirmation): every item of ours, its variants first.
Ours: items carrying this project's mark in their `custom_metadata` (`shared.ownership`), and the variants of
those items. The payloads are the realtime path's (`shared.mappers.product`), mark included, so an upsert adopts
an unmarked item an earlier deployment of the reference plugin wrote.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from job.importers.common import catalog_jobs, clean_up, count, existing_catalog_ids, filtered, mapped, next_page
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import JobResult
from shared.commercetools import literal
from shared.klaviyo import catalog_id
from shared.mappers.product import item_create, item_update, split_variants, variant_create, variant_update
from shared.ownership import is_marked
from shared.processors.products import klaviyo_variant_skus

EXPAND = ("masterData.current.categories[*]", "masterData.current.categories[*].ancestors[*]")
PUBLISHED = "masterData(published = true)"


def step(job: JobContext, record: ImportRecord) -> bool:
    if record.request.get("deleteAll"):
        if record.checkpoint.get("phase") == "variants":  # a deleteAll begun by an earlier version: start over
            record.checkpoint = {}
        return _clean_up(job, record, everything=True)
    if record.checkpoint.get("phase", "upsert") == "upsert":
        return _upsert(job, record)
    return _clean_up(job, record, everything=False)


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
    items = catalog_jobs(job, "item", "create", [item for p, (item, _, _) in built if p["id"] not in existing])
    items += catalog_jobs(job, "item", "update", [item for p, (item, _, _) in built if p["id"] in existing])
    count(record, job.sender.wait(items))

    wanted: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for _product, (_item, variants, skipped) in built:
        record.counts["skipped"] += skipped
        wanted.update(variants)
    gone = [{"id": catalog_id(sku)} for product_id in sorted(p["id"] for p, _ in built if p["id"] in existing)
            for sku in klaviyo_variant_skus(job.context.klaviyo, product_id) if sku not in wanted]
    present = existing_catalog_ids(job, "variant", wanted)
    jobs = catalog_jobs(job, "variant", "delete", gone)
    jobs += catalog_jobs(job, "variant", "update", [u for sku, (_, u) in wanted.items() if sku in present])
    jobs += catalog_jobs(job, "variant", "create", [c for sku, (c, _) in wanted.items() if sku not in present])
    count(record, job.sender.wait(jobs))
    if not last:
        return False
    if filtered(record):
        return True
    record.checkpoint = {"phase": "reconcile"}
    return False


def _clean_up(job: JobContext, record: ImportRecord, *, everything: bool) -> bool:
    """The items of ours whose product is no longer published (`everything`: all of ours, for `deleteAll`), each
    with its variants first (Klaviyo keeps no variant without its item)."""
    project = job.context.settings.commercetools.project_key

    def ours(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
        return [i for i, attributes in rows if is_marked(attributes, project)]

    def alive(ids: list[str]) -> set[str]:
        quoted = ", ".join(literal(i) for i in ids)
        return {p["id"] for p in job.context.commercetools.query(
            "products", where=[f"id in ({quoted})", PUBLISHED], limit=len(ids))}

    def delete(ids: list[str]) -> JobResult:
        variants = [{"id": catalog_id(sku)} for i in ids for sku in klaviyo_variant_skus(job.context.klaviyo, i)]
        count(record, job.sender.wait(catalog_jobs(job, "variant", "delete", variants)))
        return job.sender.wait(catalog_jobs(job, "item", "delete", [{"id": catalog_id(i)} for i in ids]))

    return clean_up(job, record, "item", fields="external_id,custom_metadata", ours=ours,
                    alive=None if everything else alive, delete=delete)
