"""Error classes: every failure is either transient (deliver again later) or permanent (never succeeds).

`ApiError` carries only what is safe to log: service, HTTP status, the API's error code, a redacted detail and
the JSON pointer of the offending field. Request and response bodies never travel inside an exception.
"""

from __future__ import annotations

import re


class ConnectorError(Exception):
    """Base class. `transient` tells the caller whether trying again later can succeed."""

    transient = False

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransientError(ConnectorError):
    transient = True


class PermanentError(ConnectorError):
    """Input that can never be processed (a malformed delivery, a message of an impossible shape...)."""


class ApiError(ConnectorError):
    def __init__(self, service: str, status: int | None, reason: str, *, code: str | None = None,
                 detail: str | None = None, pointer: str | None = None,
                 retry_after: float | None = None, duplicate_id: str | None = None) -> None:
        super().__init__(reason)
        self.service = service
        self.status = status
        self.code = code
        self.detail = redact(detail) if detail else None
        self.pointer = pointer
        self.retry_after = retry_after
        self.duplicate_id = duplicate_id

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status is None or self.status == 429 or self.status >= 500

    def describe(self) -> str:
        parts = [f"{self.service} {self.status or 'no response'}: {self.reason}"]
        if self.code:
            parts.append(f"code={self.code}")
        if self.pointer:
            parts.append(f"field={self.pointer}")
        if self.detail:
            parts.append(f"detail={self.detail}")
        return "; ".join(parts)


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    pass


_EMAIL = re.compile(r"[^\s'\"<>@]+@[^\s'\"<>@]+")
_DIGITS = re.compile(r"\+?\d[\d\s().-]{5,}\d")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def redact(text: str) -> str:
    """Remove what may be personal data from an API's error text: quoted values, emails, phone-like numbers."""
    text = _QUOTED.sub("'…'", text)
    text = _EMAIL.sub("<email>", text)
    return _DIGITS.sub("<number>", text)[:300]
