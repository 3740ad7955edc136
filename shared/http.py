"""One HTTP transport for both APIs: timeouts on every call, bounded retries, and error classification.

Retry policy: 429 waits for `Retry-After` (seconds or HTTP date); 5xx, timeouts and connection failures back
off exponentially with full jitter. A retry happens only when the request is safe to repeat and the wait fits
in the current time budget (`shared.deadline`); otherwise the error is raised as transient and the caller
answers so that the work is done again later.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from shared import deadline, metrics
from shared.errors import ApiError, Conflict, NotFound

log = logging.getLogger(__name__)

ErrorParser = Callable[[httpx.Response], dict[str, Any]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 10.0
    timeout: float = 10.0


class _NoCookies(httpx.Cookies):
    def extract_cookies(self, response: httpx.Response) -> None:
        pass


_NO_COOKIES = _NoCookies()


class Client(httpx.Client):
    """An `httpx.Client` without a cookie jar: neither API uses cookies, and httpx passes every response through
    `http.cookiejar` (urllib request/response adapters, a lock), about 15 % of a request's CPU (measured with
    bench/event_throughput.py)."""

    @property  # type: ignore[override]
    def cookies(self) -> httpx.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, _value: Any) -> None:
        pass


class Transport:
    """Thin wrapper over one `httpx.Client`; thread-safe, so one instance serves all requests."""

    def __init__(self, service: str, base_url: str, *, headers: Mapping[str, str], policy: RetryPolicy,
                 parse_error: ErrorParser, client: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.service = service
        self.policy = policy
        self._parse_error = parse_error
        self._sleep = sleep
        self._base = base_url.rstrip("/")
        self._client = client or Client(
            base_url=base_url, headers=dict(headers), timeout=policy.timeout,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    def __repr__(self) -> str:  # never show headers (they hold credentials)
        return f"Transport({self.service!r})"

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, *, params: Any = None, json: Any = None, data: Any = None,
                headers: Mapping[str, str] | None = None, safe_to_retry: bool = True,
                auth: httpx.Auth | None = None) -> httpx.Response:
        attempt = 0
        operation = metrics.operation(url)
        while True:
            attempt += 1
            left = deadline.remaining()
            if left <= 0.05:
                raise ApiError(self.service, None, "time budget exhausted before the request")
            timeout = min(self.policy.timeout, left)
            # An absolute URL with its query already encoded (as httpx would): httpx then parses it once instead
            # of three times (merge with base_url, merge with params), a measurable share of a request's CPU.
            target = f"{self._base}{url}?{httpx.QueryParams(params)}" if params else self._base + url
            try:
                response = self._client.request(method, target, json=json, data=data,
                                                headers=headers, timeout=timeout,
                                                auth=auth or httpx.USE_CLIENT_DEFAULT)
            except httpx.TimeoutException:
                metrics.api_request(self.service, operation, None)
                error = ApiError(self.service, None, f"{method} timed out after {timeout:.1f}s")
                wait = self._backoff(attempt)
            except httpx.TransportError as exc:
                metrics.api_request(self.service, operation, None)
                error = ApiError(self.service, None, f"{method} failed: {type(exc).__name__}")
                wait = self._backoff(attempt)
            else:
                metrics.api_request(self.service, operation, response.status_code)
                if response.status_code < 400:
                    return response
                error = self._error(response)
                if response.status_code == 429:
                    wait = error.retry_after if error.retry_after is not None else self._backoff(attempt)
                elif response.status_code >= 500:
                    wait = self._backoff(attempt)
                else:
                    raise error
            # A 429 was refused before any processing, so even a request unsafe to repeat may be sent again.
            retryable = safe_to_retry or error.status == 429
            if not retryable or attempt >= self.policy.max_attempts or wait >= deadline.remaining() - 0.5:
                raise error
            log.info("retrying %s request", self.service,
                     extra={"status": error.status, "attempt": attempt, "wait_seconds": round(wait, 3)})
            self._sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.policy.max_delay, self.policy.base_delay * 2 ** (attempt - 1)))

    def _error(self, response: httpx.Response) -> ApiError:
        try:
            fields = self._parse_error(response)
        except ValueError:
            fields = {}
        status = response.status_code
        kind = NotFound if status == 404 else Conflict if status == 409 else ApiError
        reason = fields.pop("reason", None) or response.reason_phrase or "error"
        return kind(self.service, status, reason, retry_after=retry_after(response.headers.get("Retry-After")),
                    **fields)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: an integer, a decimal, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
