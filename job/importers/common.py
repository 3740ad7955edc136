"""What the importers share: keyset pages from commercetools, Klaviyo catalog pages, and counting job results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse

from job.requests import where_clauses
from job.runner import JobContext
from job.state import ImportRecord
from shared.bulk import MAX_CATALOG, JobResult, chunks
from shared.commercetools import literal
from shared.klaviyo import CATALOG_PATHS, catalog_id

CATALOG_PREFIX = catalog_id("")


def next_page(job: JobContext, record: ImportRecord, resource: str, *, where: Sequence[str] = (),
              expand: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The page after the checkpoint (`lastId`), sorted by id, with the request's filters applied."""
    after = record.checkpoint.get("lastId")
    clauses = where_clauses(record.request) + list(where) + ([f"id > {literal(after)}"] if after else [])
    page = job.context.commercetools.query(resource, where=clauses, sort=["id asc"], expand=expand,
                                           limit=job.page_size)
    record.counts["read"] += len(page)
    if page:
        record.checkpoint["lastId"] = page[-1]["id"]
    return page


def is_last(job: JobContext, page: list[dict[str, Any]]) -> bool:
    return len(page) < job.page_size


def filtered(record: ImportRecord) -> bool:
    """A partial import (ids, startId, dates) must not reconcile deletions against the whole catalogue."""
    return any(key in record.request for key in ("ids", "startId", "createdFrom", "createdTo", "modifiedFrom",
                                                 "modifiedTo"))


def count(record: ImportRecord, result: JobResult) -> None:
    record.counts["sent"] += result.completed
    record.counts["failed"] += result.failed
    record.errors.extend(result.errors[:20])
    if result.errors:
        record.last_error = result.errors[-1]


def existing_catalog_ids(job: JobContext, kind: str, external_ids: Iterable[str]) -> set[str]:
    """Which of these catalog objects Klaviyo has already (by external id)."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(external_ids)), MAX_CATALOG):
        ids = ",".join(f'"{catalog_id(i)}"' for i in chunk)
        body = job.context.klaviyo.request("GET", CATALOG_PATHS[kind], params={
            "filter": f"any(ids,[{ids}])", f"fields[catalog-{kind}]": "external_id"})
        found.update(d["id"].removeprefix(CATALOG_PREFIX) for d in body.get("data", []))
    return found


def klaviyo_page(job: JobContext, kind: str, cursor: str | None) -> tuple[list[str], str | None]:
    """One page of Klaviyo catalog ids of ours (`$custom:::$default:::` removed) and the next cursor."""
    params = {f"fields[catalog-{kind}]": "external_id"}
    if cursor:
        params["page[cursor]"] = cursor
    body = job.context.klaviyo.request("GET", CATALOG_PATHS[kind], params=params)
    ids = [d["id"].removeprefix(CATALOG_PREFIX) for d in body.get("data", []) if d["id"].startswith(CATALOG_PREFIX)]
    next_link = (body.get("links") or {}).get("next")
    next_cursor = parse_qs(urlparse(next_link).query).get("page[cursor]", [None])[0] if next_link else None
    return ids, next_cursor
