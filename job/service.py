"""What the job application does, whoever asks (scheduler, HTTP management routes, CLI)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from job.importers import categories, customers, orders, products
from job.pending import check_pending
from job.requests import parse_request
from job.runner import JobContext, Progress, Step, run_pending
from job.state import CONTAINER, DRY_RUN_CONTAINER, IMPORT_TYPES, ImportRecord, ImportStore
from shared import dead_letters
from shared.bulk import KlaviyoBulk
from shared.errors import ConnectorError
from shared.processors import Context

log = logging.getLogger(__name__)

STEPS: dict[str, Step] = {
    "categories": categories.step,
    "products": products.step,
    "customers": customers.step,
    "orders": orders.step,
}


class JobService:
    def __init__(self, context: Context, sender_factory: Callable[[Context], Any] = KlaviyoBulk) -> None:
        settings = context.settings
        self.context = context
        self.store = ImportStore(context.commercetools, lease_seconds=settings.job.lease_seconds,
                                 container=DRY_RUN_CONTAINER if settings.dry_run else CONTAINER)
        self.job = JobContext(context, sender_factory(context.klaviyo), page_size=settings.job.page_size,
                              dry_run=settings.dry_run)

    def request(self, import_type: str, body: Any) -> list[ImportRecord]:
        """Record a request (`all` records one per type); `BadRequest` or `Busy` when it cannot be taken."""
        types = IMPORT_TYPES if import_type == "all" else (import_type,)
        options = {t: parse_request(t, body) for t in types}
        return [self.store.request(t, options[t]) for t in types]

    def run(self, *, budget_seconds: float | None = None, types: tuple[str, ...] = IMPORT_TYPES,
            progress: Progress | None = None) -> list[dict[str, Any]]:
        budget = self.context.settings.job.time_budget_seconds if budget_seconds is None else budget_seconds
        return run_pending(self.job, self.store, STEPS, budget_seconds=budget, types=types, progress=progress)

    def scheduled_run(self) -> dict[str, Any]:
        """What the scheduler's call does: pending imports, the realtime bulk jobs a delivery could not await
        (`job.pending`), then (when switched on) dead letters that a later attempt may get past."""
        summary: dict[str, Any] = {"imports": self.run()}
        if not self.context.settings.dry_run:
            checked = check_pending(self.context)
            if checked:
                summary["pendingJobs"] = checked
        if self.context.settings.retry_dead_letters:
            candidates = [e for e in dead_letters.entries(self.context.commercetools) if e.get("possiblyTransient")]
            summary["deadLetters"] = self.replay_dead_letters(candidates)
        return summary

    def dead_letters(self, since: str | None = None) -> list[dict[str, Any]]:
        return dead_letters.entries(self.context.commercetools, since)

    def replay_dead_letters(self, entries: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Process each record again (success removes it, failure updates it); one result per record."""
        results = []
        for entry in entries:
            try:
                outcome = dead_letters.replay(self.context, entry)
            except ConnectorError as exc:  # recording the new failure failed: the record stays as it was
                outcome = f"retry ({exc})"
            log.info("dead letter replayed", extra={"dead_letter_key": entry["key"], "outcome": outcome})
            results.append({"key": entry["key"], "outcome": outcome})
        return results

    def purge_dead_letters(self, before: str) -> int:
        return dead_letters.purge(self.context.commercetools, before)

    def stop(self, import_type: str) -> list[ImportRecord]:
        types = IMPORT_TYPES if import_type == "all" else (import_type,)
        return [r for r in (self.store.cancel(t) for t in types) if r]

    def status(self) -> list[dict[str, Any]]:
        return [record.summary() for record in self.store.all()]
