"""Working on pending imports within a time budget, one page at a time, checkpointing after every page.

A page is the unit of work: it is read, mapped and sent, then its position is saved. A run that stops (time
budget, crash, kill) resumes after the last saved page; the unfinished page is sent again, which creates no
duplicates because every write is an upsert or an event with a stable unique_id.

Event imports (an `EventStep`: orders) keep that contract and go at Klaviyo's pace: their events go out in full
batches of 1,000, sent by a background thread while the next page is read and mapped. The last events of a page
(fewer than 1,000) wait for the next page's to fill their batch, so a page's position may be saved one page
later, but only once Klaviyo has accepted every event of the page; after a failure, the pages not saved are
read and sent again. A page with fewer events than one batch is sent at once, before its position is saved.

While a runner works on an import, a background thread renews its lease (a third of `job.leaseSeconds`, at most
every 30 s), so that a page slower than the lease never loses it, and a runner that died frees the import within
`job.leaseSeconds`.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import gc
import logging
import os
import queue
import socket
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from job import heap
from job.state import IMPORT_TYPES, Busy, Cancelled, ImportRecord, ImportStore, iso, now
from shared import metrics
from shared.bulk import MAX_EVENTS, BatchResult, BulkSender, full_batch
from shared.deadline import time_budget
from shared.errors import ApiError, ConnectorError, redact
from shared.processors import Context

log = logging.getLogger(__name__)

# How long the page under way may run past the time budget: the budget is checked between pages, and this
# bounds a page that hangs (Connect stops a job run 5 minutes after the default budget).
PAGE_GRACE_SECONDS = 120.0
MAX_ERRORS = 20  # failures named in an import record
QUEUED_BATCHES = 2  # full event batches waiting for the sender: how far reading and mapping may run ahead
YOUNG_COLLECTION_EVERY = 50_000  # new containers between young cycle collections during an event import
MAX_RENEWAL_INTERVAL = 30.0  # seconds between lease renewals, at most (a third of the lease, when shorter)


@dataclass
class JobContext:
    context: Context
    sender: BulkSender
    page_size: int = 500
    dry_run: bool = False


Step = Callable[[JobContext, ImportRecord], bool]  # works on one page; True when the import is complete
Progress = Callable[[ImportRecord, float], None]
Events = list[dict[str, Any]]


class EventStep:
    """A step in two parts. `fetch` reads the page after the record's checkpoint, moves the checkpoint and the
    `read` count on, and returns the page (in whatever form `build` takes it) and whether it was the last;
    `build` maps a fetched page into events, counting in the record what it skips or cannot map, and returns
    them with bounds of their sizes as JSON (or None). The runner sends the events (see the module docstring);
    called as a plain `Step`, the step sends them itself."""

    def __init__(self, fetch: Callable[[JobContext, ImportRecord], tuple[Any, bool]],
                 build: Callable[[JobContext, ImportRecord, Any], tuple[Events, list[int] | None]]) -> None:
        self.fetch, self.build = fetch, build

    def __call__(self, job: JobContext, record: ImportRecord) -> bool:
        page, last = self.fetch(job, record)
        events, sizes = self.build(job, record, page)
        if events:
            result = job.sender.send_events(events, sizes)
            count_sent(record, result.sent, result.failed)
        return last


def note(record: ImportRecord, error: str) -> None:
    """Name a failure in the record (the last ones are kept)."""
    record.errors.append(error)
    del record.errors[:-MAX_ERRORS]
    record.last_error = error


def count_sent(record: ImportRecord, sent: int, failed: list[str]) -> None:
    """Count sent events and the ones Klaviyo refused (each with its reason)."""
    record.counts["sent"] += sent
    record.counts["failed"] += len(failed)
    for error in failed[:MAX_ERRORS]:
        note(record, error)


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
        if job.context.klaviyo.key.refused:  # every other import would stop on it too: the run ends here
            log.error("import run stopped: Klaviyo refuses the API key", extra={"import": import_type})
            break
    return summaries


def _work(job: JobContext, store: ImportStore, step: Step, record: ImportRecord, owner: str, deadline: float,
          progress: Progress | None) -> ImportRecord:
    """Pages until the import is complete or the budget is spent (checked after each page, so every run that
    takes an import moves it on by at least one page). A page that fails leaves the record as it was before
    the page: its position and counts are not saved, and the next run does it again."""
    run = _Run(store, record, owner, deadline, progress)
    with _LeaseKeeper(run):
        return _guarded(job, store, step, run, owner)


def _guarded(job: JobContext, store: ImportStore, step: Step, run: _Run, owner: str) -> ImportRecord:
    record = run.saved
    try:
        if isinstance(step, EventStep):
            with _fewer_collections():
                return _event_pages(job, step, run)
        return _pages(job, step, run)
    except Cancelled:
        log.info("import stopped by request", extra={"import": record.type})
        return store.get(record.type) or run.saved
    except KeyboardInterrupt:
        # Ctrl-C of `python -m job sync`: free the import, so that the next run resumes it at once
        with contextlib.suppress(ConnectorError, Cancelled, Busy):
            store.save(run.latest(), owner, release=True)
        raise
    except Busy as exc:
        log.warning("import taken over by another runner", extra={"import": record.type, "reason": str(exc)})
        return store.get(record.type) or run.saved
    except ConnectorError as exc:
        text = exc.describe() if isinstance(exc, ApiError) else exc.reason
        if exc.transient:
            log.warning("import paused by a transient failure; it resumes on the next run",
                        extra={"import": record.type, "error": text})
        else:
            log.error("import failed", extra={"import": record.type, "error": text})
        return _stop(store, run.latest(), owner, text, failed=not exc.transient)
    except Exception as exc:  # a bug: the import stops and says so, rather than holding its lock and failing again
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        text = f"unexpected {type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno}: {redact(str(exc))}"
        log.error("import failed unexpectedly", extra={"import": record.type, "error": text})
        return _stop(store, run.latest(), owner, text, failed=True)


_gc_lock = threading.Lock()
_gc_users = 0
_gc_thresholds = gc.get_threshold()


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Cycle collection paced for an event import, while one runs in the process.

    A page's orders and events are a few hundred thousand containers without cycles, freed by reference
    counting; at the collector's default pace (a young collection every 700 new containers, a full one every
    few pages) going through them again and again takes a sixth of the import's CPU. So the objects from
    before the import are left out of collections (frozen) and young collections come every 50,000 new
    containers. The previous settings come back when the last import of the process ends.
    """
    global _gc_users, _gc_thresholds
    with _gc_lock:
        if _gc_users == 0:
            heap.keep_flat()
            _gc_thresholds = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_gc_thresholds[0], YOUNG_COLLECTION_EVERY), *_gc_thresholds[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0:
                gc.set_threshold(*_gc_thresholds)
                gc.unfreeze()


class _Run:
    """One runner's work on one import: `saved` is the record as last saved, where a failure leaves it."""

    def __init__(self, store: ImportStore, record: ImportRecord, owner: str, deadline: float,
                 progress: Progress | None) -> None:
        self.store, self.saved, self.owner, self.deadline, self.progress = store, record, owner, deadline, progress
        self.began = time.monotonic()
        self.counted = dict(record.counts)  # the counts as last given to the metrics
        self._written = copy.deepcopy(record)  # what was last written: what a renewal writes again
        self._lock = threading.Lock()  # one write at a time: a checkpoint or a renewal

    def latest(self) -> ImportRecord:
        """`saved`, with the version of the last write (a renewal's, maybe)."""
        with self._lock:
            self.saved.version = self._written.version
        return self.saved

    def renew(self) -> bool:
        """Renew the lease (the record written again as last saved); False when it is no longer ours to renew."""
        with self._lock:
            if self._written.status != "running" or not self._written.lease:
                return False
            version = self.store.renew(self._written, self.owner)
            if version is None:
                return False  # changed meanwhile: the next checkpoint finds out why (stopped, taken over)
            self._written.version = version
            return True

    def budget(self) -> contextlib.AbstractContextManager[None]:
        return time_budget(max(self.deadline - time.monotonic(), 0.0) + PAGE_GRACE_SECONDS)

    def spent(self) -> bool:
        return time.monotonic() >= self.deadline

    def save(self, record: ImportRecord, *, finished: bool = False, release: bool = False) -> ImportRecord:
        """Checkpoint a page: the import's end when `finished`, a pause (the lock given back) when `release`."""
        if finished:
            record.status, record.finished_at = "completed", iso(now())
        with self._lock:
            record.version = self._written.version
            record = self.store.save(record, self.owner, release=release and not finished)
            self._written = copy.deepcopy(record)
        metrics.import_progress(record.type, self.counted, record.counts)
        self.counted = dict(record.counts)
        self.saved = record
        heap.trim()
        if self.progress:
            self.progress(record, time.monotonic() - self.began)
        if finished:
            log.info("import completed", extra={"import": record.type, "counts": record.counts})
        elif release:
            log.info("time budget spent; the import resumes on the next run",
                     extra={"import": record.type, "checkpoint": record.checkpoint, "counts": record.counts})
        return record


class _LeaseKeeper:
    """Renews the run's lease from a background thread while the run works (see the module docstring)."""

    def __init__(self, run: _Run) -> None:
        self._run = run
        self._stop = threading.Event()
        self.interval = min(MAX_RENEWAL_INTERVAL, run.store.lease_seconds / 3)
        self._thread = threading.Thread(target=self._keep, name="lease-renewal", daemon=True)

    def __enter__(self) -> _LeaseKeeper:
        if self.interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _keep(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self._run.renew():
                    return
            except Exception as exc:  # a failed renewal is tried again; the next checkpoint renews it too
                log.warning("could not renew the import's lease", extra={"import": self._run.saved.type,
                                                                          "error": type(exc).__name__})


def _pages(job: JobContext, step: Step, run: _Run) -> ImportRecord:
    record = run.saved
    while True:
        before = copy.deepcopy(record)
        try:
            with run.budget():
                finished = step(job, record)
        except BaseException:
            run.saved = before  # the page's read position and counts are not kept
            raise
        spent = run.spent()
        record = run.save(record, finished=finished, release=spent)
        if finished or spent:
            return record


def _event_pages(job: JobContext, step: EventStep, run: _Run) -> ImportRecord:
    """`_pages` for an `EventStep`, sending in the background (see the module docstring).

    `pages` holds, for each page read and not saved yet, where its events end in the sequence of events read
    (`read`) and a copy of the record as the page left it. A page is saved once the sender has accepted every
    event up to its end; its send counts then go into its copy, the later ones and the live record.

    Once pages fill batches, the next page is also fetched (by another thread, on its own copy of the record:
    `cursor`) while the current one is mapped; a page with fewer events than a batch turns that off again, so
    that small pages go strictly one after the other.
    """
    record = copy.deepcopy(run.saved)  # fetch and build move it on; `run.saved` stays what was saved
    cursor = copy.deepcopy(record)  # what the fetches move on: up to a page ahead of `record`
    sender = _Sender(job, run)
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commercetools-pages")
    ahead: Future[tuple[Any, bool, dict[str, Any], int]] | None = None
    pages: deque[tuple[int, ImportRecord]] = deque()
    pending: Events = []  # read, not handed to the sender yet (fewer than a batch)
    pending_sizes: list[int] | None = []
    read = handed = saved_upto = 0
    pipelining = False

    def fetch() -> tuple[Any, bool, dict[str, Any], int]:
        """The next page, whether it is the last, the checkpoint after it and how many it read."""
        already = cursor.counts["read"]
        page, last = step.fetch(job, cursor)
        return page, last, copy.deepcopy(cursor.checkpoint), cursor.counts["read"] - already

    def save_accepted(*, finished: bool = False, spent: bool = False) -> None:
        nonlocal saved_upto
        while pages and pages[0][0] <= sender.accepted:
            end, snapshot = pages.popleft()
            failed = sender.failures(saved_upto, end)
            for copy_ in (snapshot, *(later for _end, later in pages), record):
                count_sent(copy_, end - saved_upto - len(failed), failed)
            final = not pages and (finished or spent)
            snapshot = run.save(snapshot, finished=final and finished, release=final and spent)
            for copy_ in (*(later for _end, later in pages), record):
                copy_.version = snapshot.version
            saved_upto = end

    try:
        while True:
            before = copy.deepcopy(record)
            try:
                with run.budget():
                    page, finished, checkpoint, count = ahead.result() if ahead else fetch()
                    ahead = None
                    record.checkpoint = checkpoint
                    record.counts["read"] += count
                    if pipelining and not finished and not run.spent():
                        context = contextvars.copy_context()  # the fetch has the budget a page has
                        ahead = reader.submit(context.run, fetch)
                    events, sizes = step.build(job, record, page)
            except BaseException:
                record = before
                raise
            pipelining = len(events) >= MAX_EVENTS
            read += len(events)
            pending.extend(events)
            pending_sizes = pending_sizes + sizes if pending_sizes is not None and sizes is not None else None
            pages.append((read, copy.deepcopy(record)))
            while cut := (MAX_EVENTS if len(pending) >= MAX_EVENTS else 0) if pending_sizes is None else \
                    full_batch(pending_sizes):
                sender.submit(handed, pending[:cut], None if pending_sizes is None else pending_sizes[:cut])
                handed += cut
                del pending[:cut]
                if pending_sizes is not None:
                    del pending_sizes[:cut]
            spent = run.spent()
            if finished or spent or not pipelining:
                if pending:
                    sender.submit(handed, pending, pending_sizes)
                    handed, pending, pending_sizes = read, [], []
                sender.wait(read)
            save_accepted(finished=finished, spent=spent)
            if finished or spent:
                return run.saved
    except (Cancelled, Busy):
        raise  # stopped, or no longer ours: nothing more is sent
    except Exception:
        # What was read before the failure: send it if Klaviyo still takes events, and save the pages done.
        with contextlib.suppress(Exception):
            if pending:
                sender.submit(handed, pending, pending_sizes)
            sender.wait(read)
        with contextlib.suppress(Exception):
            save_accepted()
        raise
    finally:
        reader.shutdown(cancel_futures=True)
        sender.close()


class _Sender:
    """Sends event batches in order, from a background thread; `accepted` counts the events done with (sent,
    or refused by Klaviyo for good and named in `failures`), in order. The first error stops it: `submit` and
    `wait` raise it, and the batches after it are not sent."""

    def __init__(self, job: JobContext, run: _Run) -> None:
        self._job, self._run = job, run
        self._queue: queue.Queue[tuple[int, Events, list[int] | None] | None] = queue.Queue(QUEUED_BATCHES)
        self._changed = threading.Condition()
        self._failures: list[tuple[int, str]] = []
        self._thread: threading.Thread | None = None
        self.accepted = 0
        self.error: BaseException | None = None

    def submit(self, start: int, batch: Events, sizes: list[int] | None) -> None:
        """Queue a batch (its first event is number `start`; `sizes` as `EventStep.build` gives them); waits while
        the queue is full."""
        self._raise()
        if self._thread is None:
            with self._run.budget():  # the sender's requests have the budget a page has
                context = contextvars.copy_context()
            self._thread = threading.Thread(target=context.run, args=(self._send,), name="klaviyo-events",
                                            daemon=True)
            self._thread.start()
        while True:
            try:
                self._queue.put((start, batch, sizes), timeout=0.1)
                return
            except queue.Full:
                self._raise()

    def wait(self, upto: int) -> None:
        """Until the events before number `upto` are done with."""
        with self._changed:
            while self.accepted < upto and self.error is None:
                self._changed.wait()
        self._raise()

    def failures(self, start: int, end: int) -> list[str]:
        """The reasons of the events refused between numbers `start` and `end` (forgotten then)."""
        with self._changed:
            found = [reason for index, reason in self._failures if start <= index < end]
            self._failures = [(index, reason) for index, reason in self._failures if index >= end]
        return found

    def close(self) -> None:
        """Stop after the batch under way; batches not sent yet are dropped."""
        if self._thread is None:
            return
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._queue.put(None)
        self._thread.join()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _send(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue
            start, batch, sizes = item
            try:
                result: BatchResult = self._job.sender.send_events(batch, sizes)
            except BaseException as exc:
                with self._changed:
                    self.error = exc
                    self._changed.notify_all()
                continue
            with self._changed:
                where = result.failed_at if len(result.failed_at) == len(result.failed) else [0] * len(result.failed)
                self._failures += [(start + index, reason) for index, reason in zip(where, result.failed, strict=True)]
                self.accepted = start + len(batch)
                self._changed.notify_all()


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
