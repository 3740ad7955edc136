"""JSON logs, one object per line (what Cloud Run and Connect's log viewer parse).

Every line carries the id of the delivery being handled (`message_id`) when there is one. Fields passed with
`extra=` are added to the object. Callers never log personal data or secrets: ids, types and reasons only.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

_message_id: ContextVar[str | None] = ContextVar("message_id", default=None)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
_QUIET = ("httpx", "httpcore", "uvicorn.access")
# uvicorn adds `color_message` (its message with terminal colours) to its records: never part of a JSON line
_DROPPED = {"color_message"}
# Terminal escape sequences (CSI such as colours, OSC, and two-character ones), and other control characters
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])|[\x00-\x08\x0b-\x1f\x7f]")


def plain(text: str) -> str:
    """The text without terminal escape codes."""
    return _ESCAPES.sub("", text) if "\x1b" in text or not text.isprintable() else text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": plain(record.getMessage()),
        }
        message_id = _message_id.get()
        if message_id:
            entry["message_id"] = message_id
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                entry[key] = plain(value) if isinstance(value, str) else value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type only: tracebacks and exception texts can carry request data.
            entry["error_type"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=False)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stdout` is at the time (test runners and uvicorn may swap it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stdout

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging(level: str = "INFO") -> None:
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET:
        # httpx logs full request URLs at INFO and headers at DEBUG; ours say what matters without them.
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def current_message_id() -> str | None:
    """The id of the message being handled in this context, if any."""
    return _message_id.get()


@contextmanager
def message_context(message_id: str | None) -> Iterator[None]:
    token = _message_id.set(message_id)
    try:
        yield
    finally:
        _message_id.reset(token)
