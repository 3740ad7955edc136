"""Working on pending imports within a time budget, one page at a time, checkpointing after every page.

A page is the unit of work: it is read, mapped and sent, then its position is saved. A run that stops (time
budget, crash, kill) resumes after the last saved page; the unfinished page is sent again, which creates no
duplicates because every write is an upsert or an event with a stable unique_id.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import socket
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job.state import IMPORT_TYPES, Busy, Cancelled, ImportRecord, ImportStore, iso, now
from shared.bulk import BulkSender
from shared.deadline import time_budget
from shared.errors import ApiError, ConnectorError, redact
from shared.processors import Context

log = logging.getLogger(__name__)

# How long the page under way may run past the time budget: the budget is checked between pages, and this
# bounds a page that hangs (Connect stops a job run 5 minutes after the default budget).
PAGE_GRACE_SECONDS = 120.0


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
    """Pages until the import is complete or the budget is spent (checked after each page, so every run that
    takes an import moves it on by at least one page). A page that fails leaves the record as it was before
    the page: its position and counts are not saved, and the next run does it again."""
    began = time.monotonic()
    try:
        while True:
            before = copy.deepcopy(record)
            try:
                with time_budget(max(deadline - time.monotonic(), 0.0) + PAGE_GRACE_SECONDS):
                    finished = step(job, record)
            except BaseException:
                record = before  # the page's read position and counts are not kept
                raise
            if finished:
                record.status, record.finished_at = "completed", iso(now())
                record = store.save(record, owner)
                if progress:
                    progress(record, time.monotonic() - began)
                log.info("import completed", extra={"import": record.type, "counts": record.counts})
                return record
            spent = time.monotonic() >= deadline
            record = store.save(record, owner, release=spent)
            if progress:
                progress(record, time.monotonic() - began)
            if spent:
                log.info("time budget spent; the import resumes on the next run",
                         extra={"import": record.type, "checkpoint": record.checkpoint, "counts": record.counts})
                return record
    except Cancelled:
        log.info("import stopped by request", extra={"import": record.type})
        return store.get(record.type) or record
    except KeyboardInterrupt:
        # Ctrl-C of `python -m job sync`: free the import, so that the next run resumes it at once
        with contextlib.suppress(ConnectorError, Cancelled, Busy):
            store.save(record, owner, release=True)
        raise
    except Busy as exc:
        log.warning("import taken over by another runner", extra={"import": record.type, "reason": str(exc)})
        return store.get(record.type) or record
    except ConnectorError as exc:
        text = exc.describe() if isinstance(exc, ApiError) else exc.reason
        if exc.transient:
            log.warning("import paused by a transient failure; it resumes on the next run",
                        extra={"import": record.type, "error": text})
        else:
            log.error("import failed", extra={"import": record.type, "error": text})
        return _stop(store, record, owner, text, failed=not exc.transient)
    except Exception as exc:  # a bug: the import stops and says so, rather than holding its lock and failing again
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        text = f"unexpected {type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}: {redact(str(exc))}"
        log.error("import failed unexpectedly", extra={"import": record.type, "error": text})
        return _stop(store, record, owner, text, failed=True)


def _stop(store: ImportStore, record: ImportRecord, owner: str, error: str, *, failed: bool) -> ImportRecord:
    """Name the error in the record and give the lock back: `failed` ends the import, else the next run resumes."""
    record.last_error = error
    record.errors.append(f"{iso(now())} {error}")
    if failed:
        record.status, record.finished_at = "failed", iso(now())
    try:
        return store.save(record, owner, release=True)
    except Exception as save_error:  # the lease then runs out, and the next run resumes from the last checkpoint
        log.error("could not save the import state", extra={"import": record.type,
                                                            "error": type(save_error).__name__})
        return record
