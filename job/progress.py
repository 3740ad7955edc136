"""The progress of `python -m job sync` on stderr: total, done, rate and time left.

On a terminal the line is redrawn in place; otherwise (a redirected log) a whole line is written every few
seconds. Log records go through the same writer while it is open: the progress line is cleared before a record
is written (and drawn again after it), so that a JSON log line never runs into it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from job.requests import where_clauses
from job.state import ImportRecord
from shared.commercetools import Commercetools

LINE_EVERY_SECONDS = 5.0  # between lines when stderr is not a terminal
REDRAW_EVERY_SECONDS = 0.2  # between redraws on a terminal
RESOURCES = {"categories": "categories", "products": "products", "customers": "customers", "orders": "orders"}


def total(commercetools: Commercetools, record: ImportRecord) -> int | None:
    """How many records the import reads, counted at the start by one query of no results (None: unknown)."""
    if record.request.get("deleteAll"):
        return None
    ids = record.request.get("ids")
    if ids:
        return len(set(ids))
    params = [("limit", "0"), ("withTotal", "true")]
    params += [("where", clause) for clause in where_clauses(record.request)]
    try:
        return int(commercetools.request("GET", f"/{RESOURCES[record.type]}", params=params)["total"])
    except Exception:  # a progress figure is not worth failing an import for
        return None


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def describe(record: ImportRecord, elapsed: float, read_before: int, expected: int | None) -> str:
    """One progress line: done of total, the rate of this run, the time left at that rate."""
    counts = record.counts
    done = counts["read"]
    rate = (done - read_before) / elapsed if elapsed > 0 else 0.0
    if expected:
        part = f"{done:,} of {expected:,} ({min(100.0, 100 * done / expected):.1f} %)"
        left = f"{duration(max(expected - done, 0) / rate)} left" if rate > 0 else "time left unknown"
    else:
        part, left = f"{done:,} read", "total unknown"
    return (f"{record.type}: {part}, sent {counts['sent']:,}, skipped {counts['skipped']:,}, "
            f"failed {counts['failed']:,}, {rate:,.0f}/s, {left}")


class ProgressLine:
    """One writer for the progress line and the log records (see the module docstring)."""

    def __init__(self, stream: IO[str] | None = None, *, interactive: bool | None = None,
                 every: float | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.every = every if every is not None else REDRAW_EVERY_SECONDS if self.interactive else LINE_EVERY_SECONDS
        self._clock = clock
        self._lock = threading.RLock()
        self._text = ""  # what the line shows (terminal) or last said
        self._drawn = False  # the line is on the terminal now
        self._last = -float("inf")
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> ProgressLine:
        root = logging.getLogger()
        self._handlers = root.handlers[:]
        root.handlers[:] = [_Through(self, handler) for handler in self._handlers]
        return self

    def __exit__(self, _type: type[BaseException] | None, _exc: BaseException | None,
                 _tb: TracebackType | None) -> None:
        logging.getLogger().handlers[:] = self._handlers
        self.finish()

    def show(self, text: str, *, force: bool = False) -> None:
        """Show `text` as the progress (at most every `every` seconds, unless `force`)."""
        with self._lock:
            self._text = text
            now = self._clock()
            if not force and now - self._last < self.every:
                return
            self._last = now
            if self.interactive:
                self._write("\r\x1b[2K" + text)
                self._drawn = True
            else:
                self._write(text + "\n")

    def finish(self) -> None:
        """End the line on a terminal (what follows starts on a new line)."""
        with self._lock:
            if self._drawn:
                self._write("\n")
                self._drawn = False

    def say(self, text: str) -> None:
        """A line of its own (a message), written like a log record."""
        self.around(lambda: self._write(text + "\n"))

    def around(self, write: Callable[[], Any]) -> None:
        """`write` (a log record) with the progress line cleared before it and drawn again after it."""
        with self._lock:
            if self._drawn:
                self._write("\r\x1b[2K")
            try:
                write()
            finally:
                if self._drawn:
                    self._write(self._text)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


class _Through(logging.Handler):
    """A root handler's records, written through the progress line's writer."""

    def __init__(self, line: ProgressLine, handler: logging.Handler) -> None:
        super().__init__(handler.level)
        self._line, self._handler = line, handler

    def handle(self, record: logging.LogRecord) -> bool:
        self._line.around(lambda: self._handler.handle(record))
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)
