"""categories → Klaviyo catalog categories: upsert every page, then delete ours that commercetools lost.

Phases kept in the checkpoint: `upsert` (commercetools pages by id) → `reconcile` (Klaviyo pages by cursor).
"""

from __future__ import annotations

from job.importers.common import count, existing_catalog_ids, filtered, klaviyo_page, mapped, next_page
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import MAX_CATALOG, chunks
from shared.commercetools import literal
from shared.klaviyo import catalog_id
from shared.mappers.category import category_create, category_update


def step(job: JobContext, record: ImportRecord) -> bool:
    if record.request.get("deleteAll"):
        return delete_all(job, record, "category")
    if record.checkpoint.get("phase", "upsert") == "upsert":
        return _upsert(job, record)
    return _reconcile(job, record)


def _upsert(job: JobContext, record: ImportRecord) -> bool:
    page, last = next_page(job, record, "categories", expand=["ancestors[*]"])
    locale = job.context.settings.preferred_locale
    existing = existing_catalog_ids(job, "category", (c["id"] for c in page))
    built = mapped(record, "category", page, lambda c: category_update(c, catalog_id(c["id"]), locale)
                   if c["id"] in existing else category_create(c, locale))
    creates = [data for c, data in built if c["id"] not in existing]
    updates = [data for c, data in built if c["id"] in existing]
    jobs = [job.sender.catalog_job("category", "create", chunk) for chunk in chunks(creates, MAX_CATALOG)]
    jobs += [job.sender.catalog_job("category", "update", chunk) for chunk in chunks(updates, MAX_CATALOG)]
    count(record, job.sender.wait(jobs))
    if not last:
        return False
    if filtered(record):
        return True
    record.checkpoint = {"phase": "reconcile"}
    return False


def _reconcile(job: JobContext, record: ImportRecord) -> bool:
    ids, cursor = klaviyo_page(job, "category", record.checkpoint.get("cursor"))
    if ids:
        quoted = ", ".join(literal(i) for i in ids)
        alive = {c["id"] for c in job.context.commercetools.query("categories", where=[f"id in ({quoted})"],
                                                                   limit=len(ids))}
        gone = [{"id": catalog_id(i)} for i in ids if i not in alive]
        jobs = [job.sender.catalog_job("category", "delete", chunk) for chunk in chunks(gone, MAX_CATALOG)]
        result = job.sender.wait(jobs)
        count(record, result)
        if result.completed and not job.dry_run:
            return False  # what was deleted shifted the objects after it: read this position again
    record.checkpoint["cursor"] = cursor
    return cursor is None


def delete_all(job: JobContext, record: ImportRecord, kind: str) -> bool:
    """Delete one page of Klaviyo's catalog objects of this kind (ours only); done when none is left.

    After a page was deleted, the same position is read again (what followed has moved up); a page with
    nothing of ours, or whose deletions all failed (counted, and named in the errors), is passed over. A dry
    run deletes nothing and so follows the cursor.
    """
    ids, cursor = klaviyo_page(job, kind, record.checkpoint.get("cursor"))
    if ids:
        record.counts["read"] += len(ids)
        jobs = [job.sender.catalog_job(kind, "delete", [{"id": catalog_id(i)} for i in chunk])
                for chunk in chunks(ids, MAX_CATALOG)]
        result = job.sender.wait(jobs)
        count(record, result)
        if result.completed and not job.dry_run:
            return False
    if cursor is None:
        return True
    record.checkpoint["cursor"] = cursor
    return False
