"""What the importers share: keyset pages from commercetools, Klaviyo catalog pages, and counting job results."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

from job.requests import where_clauses
from job.runner import MAX_ERRORS, JobContext, note
from job.state import ImportRecord
from shared.bulk import MAX_CATALOG, JobResult, chunks
from shared.commercetools import IN_VALUES, literal
from shared.errors import redact
from shared.klaviyo import CATALOG_PATHS, catalog_id, filter_string

CATALOG_PREFIX = catalog_id("")
T = TypeVar("T")




def next_page(job: JobContext, record: ImportRecord, resource: str, *, where: Sequence[str] = (),
              expand: Sequence[str] = ()) -> tuple[list[dict[str, Any]], bool]:
    """The page after the checkpoint (`lastId`), sorted by id, with the request's filters applied; and whether it
    is the last one.

    A request for `ids` goes through its own ids, sorted, a page (at most 100) at a time, so that no query
    carries all of them; ids that commercetools does not have (or that other filters leave out) are passed over.
    """
    after = record.checkpoint.get("lastId")
    options = dict(record.request)
    ids = options.pop("ids", None)
    query = job.context.commercetools.query
    if ids:
        remaining = sorted(i for i in set(ids) if after is None or i > after)
        chunk = remaining[:min(job.page_size, IN_VALUES)]
        if not chunk:
            return [], True
        clauses = [f"id in ({', '.join(literal(i) for i in chunk)})", *where_clauses(options), *where]
        page = query(resource, where=clauses, sort=["id asc"], expand=expand, limit=len(chunk))
        record.checkpoint["lastId"] = chunk[-1]
        last = len(chunk) == len(remaining)
    else:
        clauses = [*where_clauses(options), *where] + ([f"id > {literal(after)}"] if after else [])
        page = query(resource, where=clauses, sort=["id asc"], expand=expand, limit=job.page_size)
        if page:
            record.checkpoint["lastId"] = page[-1]["id"]
        last = len(page) < job.page_size
    record.counts["read"] += len(page)
    return page, last


def filtered(record: ImportRecord) -> bool:
    """A partial import (ids, startId, dates) must not reconcile deletions against the whole catalogue."""
    return any(key in record.request for key in ("ids", "startId", "createdFrom", "createdTo", "modifiedFrom",
                                                 "modifiedTo"))


def count(record: ImportRecord, result: JobResult) -> None:
    record.counts["sent"] += result.completed
    record.counts["failed"] += result.failed
    for error in result.errors[:MAX_ERRORS]:
        note(record, error)


# What malformed data makes a mapper raise (a missing field, a value of the wrong type).
MAPPING_ERRORS = (KeyError, IndexError, TypeError, ValueError, AttributeError, ArithmeticError)


def mapped(record: ImportRecord, label: str, resources: Iterable[dict[str, Any]],
           build: Callable[[dict[str, Any]], T]) -> list[tuple[dict[str, Any], T]]:
    """`build` for each resource, with the resource. One that cannot be mapped (malformed data) is counted as
    failed and named in the errors; the others go on, so one bad record does not hold the whole import."""
    built = []
    for resource in resources:
        try:
            built.append((resource, build(resource)))
        except MAPPING_ERRORS as exc:
            reason = f"no field {exc.args[0]}" if isinstance(exc, KeyError) and exc.args else redact(str(exc))
            note(record, f"{label} {resource.get('id')}: not sent, it cannot be mapped "
                         f"({type(exc).__name__}: {reason})")
            record.counts["failed"] += 1
    return built


def existing_catalog_ids(job: JobContext, kind: str, external_ids: Iterable[str]) -> set[str]:
    """Which of these catalog objects Klaviyo has already (by external id)."""
    found: set[str] = set()
    for chunk in chunks(sorted(set(external_ids)), MAX_CATALOG):
        ids = ",".join(filter_string(catalog_id(i)) for i in chunk)
        body = job.context.klaviyo.request("GET", CATALOG_PATHS[kind], params={
            "filter": f"any(ids,[{ids}])", f"fields[catalog-{kind}]": "external_id"})
        found.update(d["id"].removeprefix(CATALOG_PREFIX) for d in body.get("data", []))
    return found


def klaviyo_page(job: JobContext, kind: str, cursor: str | None, fields: str = "external_id",
                 ) -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
    """One page of Klaviyo catalog objects under our id scheme, as (external id, attributes), and the next cursor.

    Pages hold `job.pageSize` objects (at most Klaviyo's 100), like the commercetools pages. Objects of other
    integrations (other id prefixes) are left out; whether one of the others is ours is for the caller to decide.
    """
    params = {f"fields[catalog-{kind}]": fields, "page[size]": str(min(job.page_size, MAX_CATALOG))}
    if cursor:
        params["page[cursor]"] = cursor
    body = job.context.klaviyo.request("GET", CATALOG_PATHS[kind], params=params)
    rows = [(d["id"].removeprefix(CATALOG_PREFIX), d.get("attributes") or {}) for d in body.get("data", [])
            if d["id"].startswith(CATALOG_PREFIX)]
    next_link = (body.get("links") or {}).get("next")
    next_cursor = parse_qs(urlparse(next_link).query).get("page[cursor]", [None])[0] if next_link else None
    return rows, next_cursor


def clean_up(job: JobContext, record: ImportRecord, kind: str, *, fields: str,
             ours: Callable[[list[tuple[str, dict[str, Any]]]], list[str]],
             alive: Callable[[list[str]], set[str]] | None,
             delete: Callable[[list[str]], JobResult]) -> bool:
    """One page of a clean-up (after an import) or of `deleteAll` (`alive` None): Klaviyo's catalog objects of this
    kind, page by page (`checkpoint.cursor`); of those that are ours (`ours`, see `shared.ownership`), the ones
    commercetools no longer has (`alive`) are removed with `delete`. True when the last page was done.

    After a page where something was deleted, the same position is read again (what followed has moved up); a
    page with nothing to delete, or whose deletions all failed (counted, and named in the errors), is passed
    over. A dry run deletes nothing and so follows the cursor.
    """
    rows, cursor = klaviyo_page(job, kind, record.checkpoint.get("cursor"), fields)
    mine = ours(rows) if rows else []
    if alive is None:
        record.counts["read"] += len(mine)
    living = alive(mine) if alive is not None and mine else set()
    gone = [i for i in mine if i not in living]
    if gone:
        result = delete(gone)
        count(record, result)
        if result.completed and not job.dry_run:
            return False
    record.checkpoint["cursor"] = cursor
    return cursor is None


def catalog_jobs(job: JobContext, kind: str, action: str, data: list[dict[str, Any]]) -> list[str]:
    """Catalog bulk jobs of `action` for these payloads, 100 a job."""
    return [job.sender.catalog_job(kind, action, chunk) for chunk in chunks(data, MAX_CATALOG)]
