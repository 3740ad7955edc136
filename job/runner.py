"""Working on pending imports within a time budget, one page at a time, checkpointing after every page.

A page is the unit of work: it is read, mapped and sent, then its position is saved. A run that stops (time
budget, crash, kill) resumes after the last saved page; the unfinished page is sent again, which creates no
duplicates because every write is an upsert or an event with a stable unique_id.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from job.state import IMPORT_TYPES, Busy, Cancelled, ImportRecord, ImportStore, iso, now
from shared.bulk import BulkSender
from shared.deadline import time_budget
from shared.errors import ApiError, ConnectorError
from shared.processors import Context

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    context: Context
    sender: BulkSender
    page_size: int = 500
    dry_run: bool = False


Step = Callable[[JobContext, ImportRecord], bool]  # works on one page; True when the import is complete
Progress = Callable[[ImportRecord, float], None]


def runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def run_pending(job: JobContext, store: ImportStore, steps: dict[str, Step], *, budget_seconds: float,
                owner: str | None = None, types: tuple[str, ...] = IMPORT_TYPES,
                progress: Progress | None = None) -> list[dict[str, Any]]:
    """Work on every pending import (in `types` order) until done or the budget is spent; returns summaries."""
    owner = owner or runner_id()
    started = time.monotonic()
    summaries = []
    for import_type in types:
        left = budget_seconds - (time.monotonic() - started)
        if left <= 0:
            break
        record = store.acquire(import_type, owner)
        if record is None:
            continue
        log.info("import started or resumed", extra={"import": import_type, "checkpoint": record.checkpoint})
        record = _work(job, store, steps[import_type], record, owner, started + budget_seconds, progress)
        summaries.append(record.summary())
    return summaries


def _work(job: JobContext, store: ImportStore, step: Step, record: ImportRecord, owner: str, deadline: float,
          progress: Progress | None) -> ImportRecord:
    began = time.monotonic()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                log.info("time budget spent; the import resumes on the next run",
                         extra={"import": record.type, "checkpoint": record.checkpoint, "counts": record.counts})
                return store.save(record, owner, release=True)
            with time_budget(left):
                finished = step(job, record)
            if finished:
                record.status, record.finished_at = "completed", iso(now())
                record = store.save(record, owner)
                log.info("import completed", extra={"import": record.type, "counts": record.counts})
                return record
            record = store.save(record, owner)
            if progress:
                progress(record, time.monotonic() - began)
    except Cancelled:
        log.info("import stopped by request", extra={"import": record.type})
        return store.get(record.type) or record
    except Busy as exc:
        log.warning("import taken over by another runner", extra={"import": record.type, "reason": str(exc)})
        return record
    except ConnectorError as exc:
        text = exc.describe() if isinstance(exc, ApiError) else exc.reason
        record.last_error = text
        record.errors.append(f"{iso(now())} {text}")
        if exc.transient:
            log.warning("import paused by a transient failure; it resumes on the next run",
                        extra={"import": record.type, "error": text})
        else:
            record.status, record.finished_at = "failed", iso(now())
            log.error("import failed", extra={"import": record.type, "error": text})
        try:
            return store.save(record, owner, release=True)
        except (ConnectorError, Cancelled, Busy) as save_error:
            log.error("could not save the import state", extra={"import": record.type, "error": str(save_error)})
            return record
