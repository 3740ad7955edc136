"""categories → Klaviyo catalog categories: upsert every page, then delete ours that commercetools lost.

Phases kept in the checkpoint: `upsert` (commercetools pages by id) → `reconcile` (Klaviyo pages by cursor).
"""

from __future__ import annotations

from job.importers.common import count, existing_catalog_ids, filtered, is_last, klaviyo_page, next_page
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import MAX_CATALOG, chunks
from shared.commercetools import literal
from shared.errors import PermanentError
from shared.klaviyo import catalog_id
from shared.mappers.category import category_create, category_update


def step(job: JobContext, record: ImportRecord) -> bool:
    if record.request.get("deleteAll"):
        return delete_all(job, record, "category")
    if record.checkpoint.get("phase", "upsert") == "upsert":
        return _upsert(job, record)
    return _reconcile(job, record)


def _upsert(job: JobContext, record: ImportRecord) -> bool:
    page = next_page(job, record, "categories", expand=["ancestors[*]"])
    locale = job.context.settings.preferred_locale
    existing = existing_catalog_ids(job, "category", (c["id"] for c in page))
    creates = [category_create(c, locale) for c in page if c["id"] not in existing]
    updates = [category_update(c, catalog_id(c["id"]), locale) for c in page if c["id"] in existing]
    jobs = [job.sender.catalog_job("category", "create", chunk) for chunk in chunks(creates, MAX_CATALOG)]
    jobs += [job.sender.catalog_job("category", "update", chunk) for chunk in chunks(updates, MAX_CATALOG)]
    count(record, job.sender.wait(jobs))
    if not is_last(job, page):
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
        count(record, job.sender.wait(jobs))
    record.checkpoint["cursor"] = cursor
    return cursor is None


def delete_all(job: JobContext, record: ImportRecord, kind: str) -> bool:
    """Delete one page of Klaviyo's catalog objects of this kind; done when none is left.

    Each call reads the first page again (the previous one is gone), except in a dry run, which deletes
    nothing and so follows the cursor.
    """
    ids, cursor = klaviyo_page(job, kind, record.checkpoint.get("cursor"))
    if not ids:
        return True
    record.counts["read"] += len(ids)
    jobs = [job.sender.catalog_job(kind, "delete", [{"id": catalog_id(i)} for i in chunk])
            for chunk in chunks(ids, MAX_CATALOG)]
    result = job.sender.wait(jobs)
    count(record, result)
    if job.dry_run:
        record.checkpoint["cursor"] = cursor
        return cursor is None
    if result.completed == 0:
        raise PermanentError(f"Klaviyo deleted none of {len(ids)} catalog {kind} objects; see the errors")
    return False
