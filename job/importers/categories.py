"""categories → Klaviyo catalog categories: upsert every page, then delete ours that commercetools lost.

Phases kept in the checkpoint: `upsert` (commercetools pages by id) → `reconcile` (Klaviyo pages by cursor).
Every category upserted is marked as ours first (`shared.ownership`), which adopts one an earlier deployment of
the reference plugin wrote; the clean-up and `deleteAll` delete marked categories only.
"""

from __future__ import annotations

from typing import Any

from job.importers.common import catalog_jobs, clean_up, count, existing_catalog_ids, filtered, mapped, next_page
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import JobResult
from shared.commercetools import literal
from shared.klaviyo import catalog_id
from shared.mappers.category import category_create, category_update
from shared.ownership import forget_categories, record_categories, recorded_categories


def step(job: JobContext, record: ImportRecord) -> bool:
    if record.request.get("deleteAll"):
        return _clean_up(job, record, everything=True)
    if record.checkpoint.get("phase", "upsert") == "upsert":
        return _upsert(job, record)
    return _clean_up(job, record, everything=False)


def _upsert(job: JobContext, record: ImportRecord) -> bool:
    page, last = next_page(job, record, "categories", expand=["ancestors[*]"])
    locale = job.context.settings.preferred_locale
    existing = existing_catalog_ids(job, "category", (c["id"] for c in page))
    built = mapped(record, "category", page, lambda c: category_update(c, catalog_id(c["id"]), locale)
                   if c["id"] in existing else category_create(c, locale))
    if built and not job.dry_run:
        record_categories(job.context.commercetools, (c["id"] for c, _data in built))
    creates = [data for c, data in built if c["id"] not in existing]
    updates = [data for c, data in built if c["id"] in existing]
    count(record, job.sender.wait(catalog_jobs(job, "category", "create", creates)
                                  + catalog_jobs(job, "category", "update", updates)))
    if not last:
        return False
    if filtered(record):
        return True
    record.checkpoint = {"phase": "reconcile"}
    return False


def _clean_up(job: JobContext, record: ImportRecord, *, everything: bool) -> bool:
    """The categories of ours that commercetools no longer has (`everything`: all of ours, for `deleteAll`)."""
    commercetools = job.context.commercetools

    def ours(rows: list[tuple[str, dict[str, Any]]]) -> list[str]:
        marked = recorded_categories(commercetools, (i for i, _attributes in rows))
        return [i for i, _attributes in rows if i in marked]

    def alive(ids: list[str]) -> set[str]:
        quoted = ", ".join(literal(i) for i in ids)
        return {c["id"] for c in commercetools.query("categories", where=[f"id in ({quoted})"], limit=len(ids))}

    def delete(ids: list[str]) -> JobResult:
        result = job.sender.wait(catalog_jobs(job, "category", "delete", [{"id": catalog_id(i)} for i in ids]))
        if not job.dry_run:
            forget_categories(commercetools, set(ids) - existing_catalog_ids(job, "category", ids))
        return result

    return clean_up(job, record, "category", fields="external_id", ours=ours,
                    alive=None if everything else alive, delete=delete)
