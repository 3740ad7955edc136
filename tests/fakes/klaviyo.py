"""A stateful fake of the Klaviyo API, for pytest-httpserver (or any server calling `FakeKlaviyo.handle`).

Every request is recorded and checked (auth and revision headers; the body against the request model of the
official `klaviyo-api` SDK, see `klaviyo_sdk`). A request breaking the API contract is answered 400 the way
Klaviyo would, and listed in `FakeKlaviyo.errors`; `assert_valid()` fails a test on any. State-dependent answers
(404, 409, a variant whose item does not exist) are realistic but are not contract errors.

    fake = FakeKlaviyo(httpserver)
    ...  # point the code under test at fake.url
    fake.assert_valid()
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from math import ceil
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from .klaviyo_sdk import SdkValidator, load_validator

if TYPE_CHECKING:
    from pytest_httpserver import HTTPServer
    from werkzeug import Request, Response

__all__ = ["JSON_API", "FakeKlaviyo", "Headers", "Recorded", "klaviyo_error", "new_id", "parse_filter"]

JSON_API = "application/vnd.api+json"
MAX_BULK_PAYLOAD = 5 * 1024 * 1024
MAX_EVENT_STRING = 100 * 1024

_TITLES = {
    400: ("invalid", "Invalid input."),
    401: ("not_authenticated", "Authentication credentials were not provided."),
    403: ("permission_denied", "You do not have permission to perform this action."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    409: ("conflict", "Conflict."),
    413: ("request_too_large", "Request entity too large."),
    429: ("throttled", "Request was throttled."),
    500: ("error", "A server error occurred."),
    502: ("bad_gateway", "Bad gateway."),
    503: ("service_unavailable", "Service unavailable."),
    504: ("gateway_timeout", "Gateway timeout."),
}

_PROFILE_IDENTIFIERS = ("external_id", "email", "phone_number")
_PROFILE_RESPONSE_ATTRS = (
    "email", "phone_number", "external_id", "first_name", "last_name", "organization", "locale", "title",
    "image", "created", "updated", "last_event_date", "location", "properties",
)
_CATALOG_RESPONSE_ATTRS = {
    "item": ("external_id", "title", "description", "price", "url", "image_full_url", "image_thumbnail_url",
             "images", "custom_metadata", "published", "created", "updated"),
    "variant": ("external_id", "title", "description", "sku", "inventory_policy", "inventory_quantity",
                "price", "url", "image_full_url", "image_thumbnail_url", "images", "custom_metadata",
                "published", "created", "updated"),
    "category": ("external_id", "name", "updated"),
}
_CATALOG_DEFAULTS: dict[str, Any] = {"images": [], "published": True, "inventory_policy": 0}
_PLURAL = {"item": "items", "variant": "variants", "category": "categories"}
_RELATED = {"item": "variants", "variant": "item", "category": "items"}

# Filters Klaviyo allows (field -> operators), per collection; see each GET operation's `filter` parameter.
_FILTERS: dict[str, dict[str, set[str]]] = {
    "profile": {f: {"equals", "any"} for f in ("id", "email", "phone_number", "external_id")}
    | {"_kx": {"equals"}},
    "item": {"ids": {"any"}, "category.id": {"equals"}, "title": {"contains"}, "published": {"equals"}},
    "variant": {"ids": {"any"}, "item.id": {"equals"}, "sku": {"equals"}, "title": {"contains"},
                "published": {"equals"}},
    "category": {"ids": {"any"}, "item.id": {"equals"}, "name": {"contains"}},
}

# Used for rate limiting when the SDK documents no limit for an operation (copied from its docstrings).
_FAST, _NORMAL, _BULK, _PRIVACY = ("350/s", "3500/m"), ("75/s", "750/m"), ("10/s", "150/m"), ("3/s", "60/m")

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id() -> str:
    """A ULID-like id, the shape of Klaviyo's profile and job ids (``01K...``)."""
    n = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(_CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def klaviyo_error(status: int, detail: str | None = None, *, code: str | None = None,
                  title: str | None = None, pointer: str | None = None, parameter: str | None = None,
                  meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One entry of a Klaviyo error body's ``errors`` list."""
    default_code, default_title = _TITLES.get(status, ("error", "An error occurred."))
    error: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "status": status,
        "code": code or default_code,
        "title": title or default_title,
        "detail": detail or title or default_title,
        "source": {"parameter": parameter} if parameter else {"pointer": pointer or "/data"},
    }
    if meta:
        error["meta"] = meta
    return error


class Headers(dict[str, str]):
    """Request headers: a dict with lower-case keys and case-insensitive lookup."""

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        pairs = items.items() if isinstance(items, Mapping) else items
        super().__init__((k.lower(), v) for k, v in pairs)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)


@dataclass
class Recorded:
    """One request the fake received; ``status`` is what it answered, ``injected`` whether by `fail_next`."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: Any | None
    injected: bool = False
    status: int | None = None


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str] | None
    body: Any
    delay: float
    after: int = 0  # matching requests answered normally before this fault starts


class _Fail(Exception):
    """An error answer; ``violation`` marks a broken API contract (listed in `FakeKlaviyo.errors`)."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, title: str | None = None,
                 pointer: str | None = None, parameter: str | None = None, meta: dict[str, Any] | None = None,
                 violation: bool = False, errors: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.violation, self.headers = status, detail, violation, headers or {}
        self.code, self.title, self.pointer = code, title, pointer
        self.errors = errors or [klaviyo_error(status, detail, code=code, title=title, pointer=pointer,
                                               parameter=parameter, meta=meta)]


def _invalid(detail: str, pointer: str | None = None, *, parameter: str | None = None) -> _Fail:
    return _Fail(400, detail, pointer=pointer, parameter=parameter, violation=True)


@dataclass
class _Ctx:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    size: int
    base_url: str
    raw: bytes = b""

    @property
    def data(self) -> dict[str, Any]:
        data = self.body.get("data") if isinstance(self.body, dict) else None
        if not isinstance(data, dict):
            raise _invalid("The request body must be a JSON:API document with a 'data' object.", "/data")
        return data


_Reply = tuple[int, Any]
_Handler = Callable[..., _Reply]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    handler: _Handler
    limits: tuple[str, str]


# --- filters ------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"""\s*(?:("(?:[^"\\]|\\.)*")|('(?:[^'\\]|\\.)*')|([(),\[\]])|([^\s(),\[\]"']+))""")


def parse_filter(text: str) -> list[tuple[str, str, Any]]:
    """Klaviyo's filter syntax (``equals(email,"a@b.c")``, ``any(ids,["x","y"])``) as ``(op, field, value)``
    conditions that must all hold (``and(...)`` and top-level commas are flattened)."""
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ValueError(f"cannot parse the filter at {text[pos:]!r}")
        pos = m.end()
        if m.group(1):
            tokens.append(("value", json.loads(m.group(1))))
        elif m.group(2):
            tokens.append(("value", m.group(2)[1:-1].replace("\\'", "'").replace('\\"', '"')))
        elif m.group(3):
            tokens.append(("punct", m.group(3)))
        elif m.group(4):
            tokens.append(("word", m.group(4)))
    conditions: list[tuple[str, str, Any]] = []
    index = 0

    def take(kind: str, value: str | None = None) -> Any:
        nonlocal index
        if index >= len(tokens) or tokens[index][0] != kind or value not in (None, tokens[index][1]):
            raise ValueError(f"malformed filter {text!r}")
        index += 1
        return tokens[index - 1][1]

    def scalar() -> Any:
        if index < len(tokens) and tokens[index][0] == "value":
            return take("value")
        word = take("word")
        literals = {"true": True, "false": False, "null": None}
        if word in literals:
            return literals[word]
        try:
            return json.loads(word)
        except ValueError:
            return word

    def value() -> Any:
        if index < len(tokens) and tokens[index] == ("punct", "["):
            take("punct", "[")
            items = [] if tokens[index] == ("punct", "]") else [scalar()]
            while tokens[index] == ("punct", ","):
                take("punct", ",")
                items.append(scalar())
            take("punct", "]")
            return items
        return scalar()

    def expression() -> None:
        op = take("word")
        take("punct", "(")
        if op in ("and",):
            expression()
            while tokens[index] == ("punct", ","):
                take("punct", ",")
                expression()
        else:
            name = take("word")
            take("punct", ",")
            conditions.append((op, name, value()))
        take("punct", ")")

    try:
        expression()
        while index < len(tokens):
            take("punct", ",")
            expression()
    except IndexError:
        raise ValueError(f"malformed filter {text!r}") from None
    return conditions


def _holds(op: str, actual: Any, expected: Any) -> bool:
    values = actual if isinstance(actual, set) else {actual}
    if op == "equals":
        return any(v == expected and isinstance(v, bool) == isinstance(expected, bool) for v in values)
    if op == "any":
        return isinstance(expected, list) and any(v in expected for v in values)
    if op == "contains":
        return any(isinstance(v, str) and str(expected).lower() in v.lower() for v in values)
    return False


def _ids(relationships: dict[str, Any], name: str) -> set[Any]:
    """The ids of a to-many relationship."""
    return {ref.get("id") for ref in (relationships.get(name) or {}).get("data") or []}


def _rate(limit: str) -> tuple[int, float]:
    count, _, unit = limit.partition("/")
    return int(count), {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[unit.strip()[0]]


def _may_hold_long_strings(raw: bytes) -> bool:
    """False when no string of this JSON text can be longer than `MAX_EVENT_STRING` octets, found without
    parsing: with no escaped quote, every `"` delimits a string, and a run of 2B octets without one contains a
    whole aligned block of B octets without one; so a `"` in every such block (B = half the limit) bounds every
    string's escaped length, which is at least its decoded length. True: it must be walked."""
    block = (MAX_EVENT_STRING + 1) // 2
    if not raw or raw.find(b'\\"') != -1:
        return bool(raw)
    return any(raw.find(b'"', start, start + block) == -1 for start in range(0, len(raw) - block + 1, block))


def _mark(name: str, value: Any) -> tuple[str, str]:
    """An identifier as Klaviyo compares it (emails case-insensitively)."""
    return name, str(value).lower() if name == "email" else str(value)


def _longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return max((_longest_string(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest_string(v) for v in value), default=0)
    return 0


class FakeKlaviyo:
    """In-memory Klaviyo: profiles, events, catalog, bulk jobs and deletion requests (see the module doc).

    Lists exist only as the targets of profile subscription jobs (`add_list`, `consent`).
    Flows: an event sent with `backfill: true` is recorded but triggers no flow; `flow_triggers()` lists the
    recorded events that would have triggered flows.
    Every event's profile creates or updates a profile (`_apply_event_profile`), backfill or not: a create-event
    at once, the events of a bulk-create job once the job is processed (from the next request on, or `settle()`).
    A data privacy deletion removes the profile and its events.

    Not modelled: deleting an item's variants with the item, checking that the categories an item names exist,
    merging two existing profiles that one event's identifiers link, and profiles found by `_kx`/`anonymous_id`.
    """

    def __init__(self, httpserver: HTTPServer | None = None, *, validator: SdkValidator | None = None,
                 validate: bool = True, revision: str | None = None,
                 clock: Callable[[], float] = time.monotonic, keep_payloads: bool = True) -> None:
        """``validate=False`` skips the SDK model check; ``revision`` is the ``revision`` header to insist on
        (default: the revision the SDK was generated from; ``"*"``: any). ``keep_payloads=False`` (load
        tests) keeps neither request bodies nor events: accepted events are only counted (`accepted_events`)
        with the keys Klaviyo deduplicates them by (`accepted_keys`), and bulk events create no profiles, so
        that memory stays flat."""
        self.validator = (validator or load_validator()) if validate else None
        if revision is None:
            revision = (self.validator or load_validator()).revision
        self.revision = None if revision == "*" else revision
        self.clock = clock
        self.requests: list[Recorded] = []
        self.errors: list[str] = []
        self.profiles: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.items: dict[str, dict[str, Any]] = {}
        self.variants: dict[str, dict[str, Any]] = {}
        self.categories: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.import_errors: dict[str, list[dict[str, Any]]] = {}
        self.deletions: list[dict[str, Any]] = []
        # Lists and consent (profile subscription bulk jobs): see `add_list` and `_subscription_job`.
        self.lists: dict[str, dict[str, Any]] = {}
        self.subscriptions: dict[str, dict[str, dict[str, Any]]] = {}  # profile id -> channel -> marketing
        self.subscription_jobs: list[dict[str, Any]] = []  # accepted jobs, in order (processed or not)
        self.subscription_failures: list[dict[str, Any]] = []  # per profile, found when a job was processed
        self.confirmations_sent: list[tuple[str, str]] = []  # (list id, email): double opt-in requests
        self.refuse_subscriptions: set[str] = set()  # emails whose subscriptions fail when processed
        self.subscription_requests_until_processed = 0
        self.event_jobs: list[list[dict[str, Any]]] = []  # the profiles of accepted events bulk jobs not processed
        self.job_polls_until_complete = 0
        # Klaviyo runs catalog bulk jobs on its own schedule, in no documented order: when True, a job's writes
        # wait (the job stays "processing") until `run_catalog_jobs`, which may run them newest first.
        self.hold_catalog_jobs = False
        self.enforce_rate_limits = False
        self.throttled = 0
        self.keep_payloads = keep_payloads
        self.accepted_events = 0
        self.accepted_keys: set[tuple[Any, ...]] = set()
        self._stamps: dict[tuple[str, str], tuple[str, str]] = {}
        self._faults: list[_Fault] = []
        self._windows: dict[tuple[str, float], tuple[int, int]] = {}
        self._lock = threading.RLock()
        self._routes = self._build_routes()
        self._httpserver: HTTPServer | None = None
        if httpserver is not None:
            self.attach(httpserver)

    # --- wiring ---------------------------------------------------------------------------------------------

    def attach(self, httpserver: HTTPServer) -> None:
        """Answer every request reaching ``httpserver``."""
        self._httpserver = httpserver
        httpserver.expect_request(re.compile(".*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        """The base URL (no trailing slash) of the attached server."""
        if self._httpserver is None:
            raise RuntimeError("FakeKlaviyo is not attached to a server")
        return self._httpserver.url_for("/").rstrip("/")

    def _handle(self, request: Request) -> Response:
        from werkzeug import Response

        target = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI") or request.full_path
        status, headers, payload = self.handle(request.method, target, request.headers.items(),
                                               request.get_data(), base_url=request.host_url.rstrip("/"))
        return Response(payload, status=status, headers=headers)

    # --- test helpers ---------------------------------------------------------------------------------------

    def fail_next(self, method: str, path_regex: str | re.Pattern[str], status: int, *, times: int = 1,
                  headers: dict[str, str] | None = None, body: Any = None, delay: float = 0.0,
                  after: int = 0) -> None:
        """Answer the next ``times`` requests matching ``method`` (``"*"``: any) and ``path_regex`` (full
        match on the decoded path) with ``status``, after sleeping ``delay`` seconds; with ``after``, only once
        that many matching requests were answered normally. ``body`` defaults to a Klaviyo error body (nothing
        below 400); a 429 gets ``Retry-After: 1`` unless ``headers`` is given."""
        pattern = path_regex if isinstance(path_regex, re.Pattern) else re.compile(path_regex)
        with self._lock:
            self._faults.append(_Fault(method.upper(), pattern, status, times, headers, body, delay, after))

    def clear_faults(self) -> None:
        """Drop the injected answers still queued."""
        with self._lock:
            self._faults.clear()

    @property
    def faults_pending(self) -> int:
        """How many injected answers are still queued."""
        with self._lock:
            return sum(f.times for f in self._faults)

    def calls(self, method: str | None = None, path_regex: str | None = None) -> list[Recorded]:
        """Recorded requests, filtered by method and by a regex searched in the path."""
        with self._lock:
            return [r for r in self.requests
                    if (method is None or r.method == method.upper())
                    and (path_regex is None or re.search(path_regex, r.path))]

    def assert_valid(self) -> None:
        """Fail when any request broke Klaviyo's API contract."""
        with self._lock:
            errors = list(self.errors)
        if errors:
            raise AssertionError(f"{len(errors)} invalid Klaviyo request(s):\n" + "\n".join(errors))

    def add_list(self, list_id: str, *, double_optin: bool = False) -> str:
        """Seed a list (subscription jobs name one); `double_optin`: fresh consent waits for confirmation."""
        with self._lock:
            self.lists[list_id] = {"double_optin": double_optin, "members": set()}
            return list_id

    def settle(self) -> None:
        """Let time pass: every accepted subscription job and events bulk job is processed."""
        with self._lock:
            for job in self.subscription_jobs:
                job["wait"] = 0
            self._process_subscription_jobs()
            self._process_event_jobs()

    def consent(self, email: str, channel: str = "email") -> str:
        """The profile's marketing consent on `channel` as Klaviyo shows it (NEVER_SUBSCRIBED when unknown)."""
        with self._lock:
            pid = self._find_profile("email", email)
            marketing = self.subscriptions.get(pid or "", {}).get(channel) or {}
            return marketing.get("consent", "NEVER_SUBSCRIBED")

    def add_profile(self, attributes: dict[str, Any], profile_id: str | None = None) -> str:
        """Seed a profile; returns its id."""
        with self._lock:
            pid = profile_id or new_id()
            self.profiles[pid] = {k: v for k, v in attributes.items() if v is not None}
            self._stamps[("profile", pid)] = (_now(), _now())
            return pid

    def add_catalog(self, kind: str, catalog_id: str, attributes: dict[str, Any],
                    relationships: dict[str, Any] | None = None) -> None:
        """Seed a catalog object (``kind``: item, variant, category) as another source may have written it: any
        id (``$custom:::$default:::...``, ``$shopify:::$default:::...``), any attributes (with or without
        ``custom_metadata``); it is listed, filtered and paged like the others."""
        with self._lock:
            self._store(kind)[catalog_id] = {"attributes": json.loads(json.dumps(attributes)),
                                             "relationships": json.loads(json.dumps(relationships or {}))}
            self._stamp(kind, catalog_id, created=True)

    def recorded_events(self) -> list[dict[str, Any]]:
        """`events` as Klaviyo keeps them: a repeated unique_id for the same profile and metric counts once.

        Without a unique_id Klaviyo uses the event time to the second; events with neither are all kept.
        """
        with self._lock:
            seen: set[tuple[Any, ...]] = set()
            kept: list[dict[str, Any]] = []
            for event in self.events:
                key = self._event_key(event)
                if key is not None and key in seen:
                    continue
                if key is not None:
                    seen.add(key)
                kept.append(event)
            return kept

    def flow_triggers(self) -> list[dict[str, Any]]:
        """The recorded events that would have triggered flows: Klaviyo records an event sent with
        `backfill: true` (in the timeline and in metrics) but triggers no flow with it; a repeated event
        (same profile, metric and unique_id) is not recorded, so it triggers nothing either."""
        return [event for event in self.recorded_events() if event.get("backfill") is not True]

    @staticmethod
    def _event_key(event: dict[str, Any]) -> tuple[Any, ...] | None:
        metric = (((event.get("metric") or {}).get("data") or {}).get("attributes") or {}).get("name")
        profile = (event.get("profile") or {}).get("data") or {}
        attrs = profile.get("attributes") or {}
        if attrs.get("email"):
            who: tuple[str, Any] = ("email", str(attrs["email"]).lower())
        elif attrs.get("external_id"):
            who = ("external_id", attrs["external_id"])
        elif attrs.get("phone_number"):
            who = ("phone_number", attrs["phone_number"])
        else:
            who = ("id", profile.get("id"))
        unique = event.get("unique_id")
        if not unique and event.get("time"):
            try:
                moment = datetime.fromisoformat(str(event["time"]).replace("Z", "+00:00"))
            except ValueError:
                return None
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
            unique = ("time", int(moment.timestamp()))
        return (metric, who, unique) if unique else None

    # --- request handling -----------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: Mapping[str, str] | Iterable[tuple[str, str]],
               body: bytes, *, base_url: str = "http://klaviyo.test") -> tuple[int, dict[str, str], bytes]:
        """Answer one request (``target``: the raw, percent-encoded path and query); returns status, headers,
        body. Framework-free, so any HTTP server can front the fake."""
        method = method.upper()
        split = urlsplit(target)
        raw_path = split.path.rstrip("/") or "/"
        path = unquote(raw_path)
        query: dict[str, str] = {}
        for key, value in parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(key, value)
        parsed: Any = None
        not_json = False
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed, not_json = body.decode("utf-8", "replace"), True
        record = Recorded(method, path, query, Headers(headers), parsed if self.keep_payloads else None)
        with self._lock:
            self.requests.append(record)
            fault = self._take_fault(method, path)
            self._process_subscription_jobs()  # asynchronous: a job shows from a later request on
            self._process_event_jobs()
        record.injected = fault is not None

        violations = self._check_request(record, raw_path, not_json, parsed)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            status, out_headers, payload = self._fault_response(fault, record)
        else:
            status, out_headers, payload = self._respond(record, raw_path, parsed, body, base_url, violations)
        record.status = status
        return status, out_headers, payload

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method in ("*", method) and fault.pattern.fullmatch(path):
                if fault.after > 0:
                    fault.after -= 1
                    return None
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: _Fault, record: Recorded) -> tuple[int, dict[str, str], bytes]:
        headers = dict(fault.headers) if fault.headers is not None else {}
        if fault.headers is None and fault.status == 429:
            headers["Retry-After"] = "1"
        body = fault.body
        if body is None and fault.status >= 400:
            body = {"errors": [klaviyo_error(fault.status, f"Injected {fault.status} for {record.method} "
                                                           f"{record.path}.")]}
        if body is None:
            return fault.status, headers, b""
        if isinstance(body, str):
            body = body.encode()
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers.setdefault("Content-Type", JSON_API)
        return fault.status, headers, payload

    def _check_request(self, record: Recorded, raw_path: str, not_json: bool, body: Any) -> list[_Fail]:
        """Contract problems of a request (also added to `errors`), in the order they should be answered."""
        fails: list[_Fail] = []
        auth = record.headers.get("authorization") or ""
        if not auth.startswith("Klaviyo-API-Key ") or not auth[len("Klaviyo-API-Key "):].strip():
            fails.append(_Fail(401, "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
                               violation=True))
        revision = record.headers.get("revision")
        if not revision:
            fails.append(_invalid("Missing required header 'revision'.", parameter="revision"))
        elif self.revision and revision != self.revision:
            fails.append(_invalid(f"revision {revision!r} differs from the SDK's {self.revision!r}.",
                                  parameter="revision"))
        if not_json:
            fails.append(_invalid("The request body is not valid JSON.", "/"))
        elif self.validator is not None:
            if self.validator.find(record.method, raw_path) is None:
                fails.append(_Fail(404, f"no operation {record.method} {record.path} in the klaviyo-api SDK",
                                   violation=True))
            else:
                issues = self.validator.check(record.method, raw_path, body)
                if issues:
                    errors = [klaviyo_error(400, str(i), pointer=i.pointer) for i in issues]
                    fails.append(_Fail(400, "; ".join(map(str, issues)), violation=True, errors=errors))
        with self._lock:
            for fail in fails:
                for error in fail.errors:
                    self.errors.append(f"{record.method} {record.path}: {error['detail']}")
        return fails

    def _respond(self, record: Recorded, raw_path: str, body: Any, raw: bytes, base_url: str,
                 violations: list[_Fail]) -> tuple[int, dict[str, str], bytes]:
        route, params = self._route(record.method, raw_path)
        headers: dict[str, str] = {}
        try:
            if violations and violations[0].status == 401:
                raise violations[0]
            with self._lock:
                if self.enforce_rate_limits:
                    headers = self._throttle(record.method, raw_path, route)
            if violations:
                raise violations[0]
            if route is None:
                message = f"FakeKlaviyo does not implement {record.method} {record.path}"
                if self.validator is not None:  # the SDK knows the operation: a gap in the fake
                    with self._lock:
                        self.errors.append(f"{record.method} {record.path}: {message}")
                raise _Fail(404, message)
            ctx = _Ctx(record.method, record.path, record.query, body, len(raw), base_url, raw)
            with self._lock:
                status, payload = route.handler(ctx, *params)
        except _Fail as fail:
            if fail.violation and fail not in violations:
                with self._lock:
                    self.errors.append(f"{record.method} {record.path}: {fail.detail}")
            status, payload = fail.status, {"errors": fail.errors}
            headers.update(fail.headers)
        except Exception as exc:  # a bug in the fake: make it visible
            with self._lock:
                self.errors.append(f"{record.method} {record.path}: FakeKlaviyo crashed: {exc!r}")
            status, payload = 500, {"errors": [klaviyo_error(500, f"FakeKlaviyo crashed: {exc!r}")]}
        if payload is None:
            return status, headers, b""
        headers["Content-Type"] = JSON_API
        return status, headers, json.dumps(payload).encode()

    def _route(self, method: str, raw_path: str) -> tuple[_Route | None, tuple[str, ...]]:
        for route in self._routes:
            if route.method == method:
                m = route.pattern.fullmatch(raw_path)
                if m:
                    return route, tuple(unquote(g) for g in m.groups())
        return None, ()

    def _throttle(self, method: str, raw_path: str, route: _Route | None) -> dict[str, str]:
        """Count the request in its operation's fixed windows; raise 429 when a window is full."""
        op = self.validator.find(method, raw_path) if self.validator else None
        limits = (op.rate_limit if op else None) or (
            {"burst": route.limits[0], "steady": route.limits[1]} if route else None)
        if not limits:
            return {}
        key = f"{method} {op.template if op else route.pattern.pattern if route else raw_path}"
        now = self.clock()
        windows = []
        for spec in (limits.get("burst"), limits.get("steady")):
            if not spec:
                continue
            limit, length = _rate(spec)
            index = int(now // length)
            start, count = self._windows.get((key, length), (index, 0))
            windows.append((limit, length, index, 0 if start != index else count, (index + 1) * length - now))
        if not windows:
            return {}
        for limit, _length, _index, count, reset in windows:
            if count >= limit:
                self.throttled += 1
                retry = max(1, ceil(reset))
                raise _Fail(429, f"Request was throttled. Expected available in {retry} second"
                                 f"{'s' if retry != 1 else ''}.", headers={"Retry-After": str(retry)})
        for _limit, length, index, count, _reset in windows:
            self._windows[(key, length)] = (index, count + 1)
        # Klaviyo's headers describe the steady (longest) window, whatever the burst window's state: "All
        # non-rate-limited responses will contain the following HTTP response headers that indicate the state
        # of the steady rate limit window".
        limit, _length, _index, count, reset = max(windows, key=lambda w: w[1])
        return {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(limit - count - 1),
                "RateLimit-Reset": str(max(1, ceil(reset)))}

    def _build_routes(self) -> list[_Route]:
        seg = "([^/]+)"
        table: list[tuple[str, str, _Handler, tuple[str, str]]] = [
            ("POST", "/api/profile-import", self._profile_import, _NORMAL),
            ("POST", "/api/profiles", self._create_profile, _NORMAL),
            ("GET", "/api/profiles", self._list_profiles, _NORMAL),
            ("GET", f"/api/profiles/{seg}", self._get_profile, _NORMAL),
            ("PATCH", f"/api/profiles/{seg}", self._update_profile, _NORMAL),
            ("POST", "/api/profile-bulk-import-jobs", self._bulk_import_profiles, _BULK),
            ("GET", "/api/profile-bulk-import-jobs", self._list_profile_jobs, _BULK),
            ("GET", f"/api/profile-bulk-import-jobs/{seg}", self._get_profile_job, _BULK),
            ("GET", f"/api/profile-bulk-import-jobs/{seg}/import-errors", self._get_import_errors, _BULK),
            ("POST", "/api/events", self._create_event, _FAST),
            ("POST", "/api/event-bulk-create-jobs", self._bulk_create_events, _BULK),
            ("POST", "/api/data-privacy-deletion-jobs", self._request_deletion, _PRIVACY),
            ("POST", "/api/profile-subscription-bulk-create-jobs",
             lambda ctx: self._subscription_job(ctx, subscribe=True), _NORMAL),
            ("POST", "/api/profile-subscription-bulk-delete-jobs",
             lambda ctx: self._subscription_job(ctx, subscribe=False), _NORMAL),
            ("GET", f"/api/catalog-items/{seg}/variants", self._item_variants, _FAST),
        ]
        for kind, plural in _PLURAL.items():
            base = f"/api/catalog-{plural}"
            table += [
                ("POST", base, lambda ctx, k=kind: self._catalog_create_one(ctx, k), _NORMAL),
                ("GET", base, lambda ctx, k=kind: self._catalog_list(ctx, k), _FAST),
                ("GET", f"{base}/{seg}", lambda ctx, cid, k=kind: self._catalog_get(ctx, k, cid), _FAST),
                ("PATCH", f"{base}/{seg}", lambda ctx, cid, k=kind: self._catalog_update_one(ctx, k, cid),
                 _NORMAL),
                ("DELETE", f"{base}/{seg}", lambda ctx, cid, k=kind: self._catalog_delete_one(k, cid),
                 _NORMAL),
            ]
            for action in ("create", "update", "delete"):
                jobs = f"/api/catalog-{kind}-bulk-{action}-jobs"
                table += [
                    ("POST", jobs, lambda ctx, k=kind, a=action: self._catalog_bulk(ctx, k, a), _NORMAL),
                    ("GET", f"{jobs}/{seg}", lambda ctx, jid, k=kind, a=action: self._get_catalog_job(
                        ctx, f"catalog-{k}-bulk-{a}-job", jid), _NORMAL),
                ]
        return [_Route(m, re.compile(re.escape(p).replace(re.escape(seg), seg)), h, lim)
                for m, p, h, lim in table]

    # --- shared pieces --------------------------------------------------------------------------------------

    def _stamp(self, kind: str, rid: str, *, created: bool) -> None:
        now = _now()
        first = now if created else self._stamps.get((kind, rid), (now, now))[0]
        self._stamps[(kind, rid)] = (first, now)

    @staticmethod
    def _page(ctx: _Ctx, rows: list[Any], *, default_size: int) -> tuple[list[Any], dict[str, Any]]:
        raw_size = ctx.query.get("page[size]", str(default_size))
        if not raw_size.isdigit() or not 1 <= int(raw_size) <= 100:
            raise _invalid(f"page[size] must be an integer from 1 to 100, not {raw_size!r}.",
                           parameter="page[size]")
        size = int(raw_size)
        cursor = ctx.query.get("page[cursor]")
        start = 0
        if cursor:
            try:
                start = int(base64.urlsafe_b64decode(cursor.encode()).decode().removeprefix("offset:"))
            except ValueError:
                raise _invalid(f"Invalid page[cursor] {cursor!r}.", parameter="page[cursor]") from None
        self_url = f"{ctx.base_url}{quote(ctx.path)}"
        query = {k: v for k, v in ctx.query.items() if k != "page[cursor]"}
        links: dict[str, Any] = {
            "self": f"{self_url}?{urlencode(ctx.query)}" if ctx.query else self_url,
            "next": None,
            "prev": None,
        }
        if start + size < len(rows):
            token = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
            links["next"] = f"{self_url}?{urlencode({**query, 'page[cursor]': token})}"
        if start > 0:
            token = base64.urlsafe_b64encode(f"offset:{max(0, start - size)}".encode()).decode()
            links["prev"] = f"{self_url}?{urlencode({**query, 'page[cursor]': token})}"
        return rows[start:start + size], links

    @staticmethod
    def _filters(ctx: _Ctx, kind: str) -> list[tuple[str, str, Any]]:
        text = ctx.query.get("filter")
        if not text:
            return []
        try:
            conditions = parse_filter(text)
        except ValueError as exc:
            raise _invalid(str(exc), parameter="filter") from None
        allowed = _FILTERS[kind]
        for op, name, _value in conditions:
            if op not in allowed.get(name, ()):
                raise _invalid(f"Filter operator {op!r} is not allowed for field {name!r}.",
                               parameter="filter")
        return conditions

    @staticmethod
    def _sparse(ctx: _Ctx, type_name: str, attributes: dict[str, Any]) -> dict[str, Any]:
        wanted = ctx.query.get(f"fields[{type_name}]")
        if not wanted:
            return attributes
        names = {name.split(".", 1)[0] for name in wanted.split(",")}
        return {k: v for k, v in attributes.items() if k in names}

    # --- profiles -------------------------------------------------------------------------------------------

    def _find_profile(self, name: str, value: Any) -> str | None:
        if value in (None, ""):
            return None
        for pid, attrs in self.profiles.items():
            current = attrs.get(name)
            if current is None:
                continue
            if current == value or (name == "email" and str(current).lower() == str(value).lower()):
                return pid
        return None

    def _upsert_profile(self, data: dict[str, Any], *, pointer: str = "/data") -> tuple[str, bool]:
        """profile-import: match by id, then external_id, then email (case-insensitive), then phone."""
        attrs = data.get("attributes") or {}
        pid = data.get("id")
        if pid and pid not in self.profiles:
            raise _Fail(404, f"A profile with id {pid!r} does not exist.", pointer=f"{pointer}/id")
        target = pid or next((p for p in (self._find_profile(n, attrs.get(n)) for n in _PROFILE_IDENTIFIERS)
                              if p), None)
        self._check_duplicates(target, attrs, pointer)
        created = target is None
        if created:
            if not any(attrs.get(n) for n in (*_PROFILE_IDENTIFIERS, "anonymous_id", "_kx")):
                raise _invalid("A profile needs one of email, phone_number, external_id.",
                               f"{pointer}/attributes")
            target = new_id()
            self.profiles[target] = {}
        self._merge_profile(target, attrs, data.get("meta"))
        self._stamp("profile", target, created=created)
        return target, created

    def _check_duplicates(self, target: str | None, attrs: dict[str, Any], pointer: str) -> None:
        for name in _PROFILE_IDENTIFIERS:
            other = self._find_profile(name, attrs.get(name))
            if other is not None and other != target:
                raise _Fail(409, "A profile already exists with one of these identifiers.",
                            code="duplicate_profile", pointer=f"{pointer}/attributes",
                            meta={"duplicate_profile_id": other})

    def _merge_profile(self, pid: str, attrs: dict[str, Any], meta: dict[str, Any] | None) -> None:
        profile = self.profiles[pid]
        for key, value in attrs.items():
            if value is None:
                profile.pop(key, None)
            elif key in ("properties", "location") and isinstance(value, dict):
                merged = {**profile.get(key, {}), **value}
                profile[key] = {k: v for k, v in merged.items() if v is not None}
            else:
                profile[key] = value
        patch = (meta or {}).get("patch_properties") or {}
        props = profile.setdefault("properties", {})
        for key, value in (patch.get("append") or {}).items():
            current = props.get(key)
            props[key] = [*(current if isinstance(current, list) else [] if current is None else [current]),
                          *(value if isinstance(value, list) else [value])]
        for key, value in (patch.get("unappend") or {}).items():
            if isinstance(props.get(key), list):
                drop = value if isinstance(value, list) else [value]
                props[key] = [v for v in props[key] if v not in drop]
        unset = patch.get("unset")
        for key in [unset] if isinstance(unset, str) else unset or []:
            props.pop(key, None)
        if not props:
            profile.pop("properties")

    def _profile_resource(self, ctx: _Ctx, pid: str) -> dict[str, Any]:
        stored = self.profiles[pid]
        created, updated = self._stamps.get(("profile", pid), (None, None))
        attrs = {name: stored.get(name) for name in _PROFILE_RESPONSE_ATTRS}
        attrs.update(created=created, updated=updated, properties=stored.get("properties") or {},
                     location=stored.get("location"))
        if "subscriptions" in ctx.query.get("additional-fields[profile]", "").split(","):
            attrs["subscriptions"] = self._subscriptions_of(pid)
        return {"type": "profile", "id": pid, "attributes": self._sparse(ctx, "profile", attrs),
                "links": {"self": f"{ctx.base_url}/api/profiles/{pid}/"}}

    def _profile_document(self, ctx: _Ctx, pid: str) -> dict[str, Any]:
        resource = self._profile_resource(ctx, pid)
        return {"data": resource, "links": {"self": resource["links"]["self"]}}

    def _profile_import(self, ctx: _Ctx) -> _Reply:
        pid, created = self._upsert_profile(ctx.data)
        return (201 if created else 200), self._profile_document(ctx, pid)

    def _create_profile(self, ctx: _Ctx) -> _Reply:
        attrs = ctx.data.get("attributes") or {}
        self._check_duplicates(None, attrs, "/data")
        pid, _ = self._upsert_profile({"attributes": attrs})
        return 201, self._profile_document(ctx, pid)

    def _get_profile(self, ctx: _Ctx, pid: str) -> _Reply:
        if pid not in self.profiles:
            raise _Fail(404, f"A profile with id {pid!r} does not exist.")
        return 200, self._profile_document(ctx, pid)

    def _update_profile(self, ctx: _Ctx, pid: str) -> _Reply:
        data = ctx.data
        if data.get("id") != pid:
            raise _invalid(f"The id in the body ({data.get('id')!r}) does not match the URL ({pid!r}).",
                           "/data/id")
        if pid not in self.profiles:
            raise _Fail(404, f"A profile with id {pid!r} does not exist.")
        self._upsert_profile(data)
        return 200, self._profile_document(ctx, pid)

    def _list_profiles(self, ctx: _Ctx) -> _Reply:
        conditions = self._filters(ctx, "profile")
        rows = [pid for pid, attrs in self.profiles.items()
                if all(_holds(op, pid if name == "id" else attrs.get(name), value)
                       for op, name, value in conditions)]
        page, links = self._page(ctx, rows, default_size=20)
        return 200, {"data": [self._profile_resource(ctx, pid) for pid in page], "links": links}

    def _bulk_import_profiles(self, ctx: _Ctx) -> _Reply:
        if ctx.size > MAX_BULK_PAYLOAD:
            raise _invalid(f"The payload is {ctx.size} bytes, more than the allowed 5MB.")
        entries = ((ctx.data.get("attributes") or {}).get("profiles") or {}).get("data") or []
        if len(entries) > 10_000:
            raise _invalid(f"{len(entries)} profiles, more than the allowed 10,000.",
                           "/data/attributes/profiles/data")
        job_id = new_id()
        errors: list[dict[str, Any]] = []
        for i, entry in enumerate(entries):
            pointer = f"/data/attributes/profiles/data/{i}"
            try:
                self._upsert_profile(entry, pointer=pointer)
            except _Fail as fail:
                if fail.violation:
                    self.errors.append(f"{ctx.method} {ctx.path}: profiles[{i}]: {fail.detail}")
                errors.append({"type": "import-error", "id": str(uuid.uuid4()), "attributes": {
                    "code": fail.code or _TITLES.get(fail.status, ("error",))[0],
                    "title": fail.title or _TITLES.get(fail.status, ("", "Error."))[1],
                    "detail": fail.detail, "source": {"pointer": pointer}, "original_payload": entry,
                }})
        self.import_errors[job_id] = errors
        job = self._new_job(job_id, "profile-bulk-import-job", len(entries), len(errors), [])
        job["started_at"] = job["created_at"]
        return 202, self._job_document(ctx, job, "/api/profile-bulk-import-jobs", poll=False)

    def _get_profile_job(self, ctx: _Ctx, job_id: str) -> _Reply:
        job = self.jobs.get(job_id)
        if job is None or job["type"] != "profile-bulk-import-job":
            raise _Fail(404, f"No profile bulk import job {job_id!r}.")
        return 200, self._job_document(ctx, job, "/api/profile-bulk-import-jobs", poll=True)

    def _list_profile_jobs(self, ctx: _Ctx) -> _Reply:
        """Every profile bulk import job of the account (oldest first; `sort=-created_at`: newest first)."""
        order = ctx.query.get("sort", "created_at")
        if order not in ("created_at", "-created_at"):
            raise _invalid(f"Invalid sort {order!r}.", parameter="sort")
        jobs = [j for j in self.jobs.values() if j["type"] == "profile-bulk-import-job"]
        if order.startswith("-"):
            jobs.reverse()
        page, links = self._page(ctx, jobs, default_size=20)
        documents = [self._job_document(ctx, job, "/api/profile-bulk-import-jobs", poll=True)["data"]
                     for job in page]
        return 200, {"data": documents, "links": links}

    def _get_import_errors(self, ctx: _Ctx, job_id: str) -> _Reply:
        if job_id not in self.import_errors:
            raise _Fail(404, f"No profile bulk import job {job_id!r}.")
        page, links = self._page(ctx, self.import_errors[job_id], default_size=20)
        return 200, {"data": page, "links": links}

    def _request_deletion(self, ctx: _Ctx) -> _Reply:
        profile = (((ctx.data.get("attributes") or {}).get("profile") or {}).get("data")) or {}
        identifiers = {k: v for k, v in (profile.get("attributes") or {}).items() if v is not None}
        if profile.get("id"):
            identifiers["id"] = profile["id"]
        given = [k for k in ("email", "phone_number", "id") if identifiers.get(k)]
        if len(given) != 1:
            raise _invalid(f"Exactly one of email, phone_number or id is required, not {given}.",
                           "/data/attributes/profile/data")
        self.deletions.append(identifiers)
        name = given[0]
        doomed = [p for p, a in self.profiles.items()
                  if (p == identifiers[name] if name == "id" else
                      str(a.get(name, "")).lower() == str(identifiers[name]).lower())]
        # the person's events go too: those naming a removed profile's id or one of its identifiers
        marks = {_mark(name, identifiers[name])}
        for pid in doomed:
            marks |= {("id", pid)} | {_mark(n, v) for n, v in self.profiles[pid].items() if n in _PROFILE_IDENTIFIERS}
            del self.profiles[pid]
        self.events = [e for e in self.events if not marks & self._event_marks(e)]
        return 202, None

    # --- consent: profile subscription bulk jobs ------------------------------------------------------------

    def _subscription_job(self, ctx: _Ctx, *, subscribe: bool) -> _Reply:
        """Validate now (as Klaviyo does before answering 202, without a job id); apply later (`handle`).

        Checked: at most 1,000 profiles; the list exists; each profile names the identifier of each channel it
        (un)subscribes (email / E.164 phone_number); `consented_at` only with `historical_import: true`, which
        requires it, never in the future.
        """
        attributes = ctx.data.get("attributes") or {}
        entries = (attributes.get("profiles") or {}).get("data") or []
        base = "/data/attributes/profiles/data"
        if not entries:
            raise _invalid("At least one profile is required.", base)
        if len(entries) > 1000:
            raise _invalid(f"{len(entries)} profiles, more than the allowed 1,000.", base)
        list_id = ((((ctx.data.get("relationships") or {}).get("list") or {}).get("data")) or {}).get("id")
        if list_id is not None and list_id not in self.lists:
            raise _Fail(404, f"A list with id {list_id!r} does not exist.", pointer="/data/relationships/list")
        historical = attributes.get("historical_import") is True
        now = datetime.now(UTC)
        for i, entry in enumerate(entries):
            attrs = entry.get("attributes") or {}
            for channel, settings in (attrs.get("subscriptions") or {}).items():
                pointer = f"{base}/{i}/attributes/subscriptions/{channel}/marketing"
                identifier = "email" if channel == "email" else "phone_number"
                if not subscribe and not (attrs.get("email") or attrs.get("phone_number")):
                    raise _invalid("Either email or phone_number is required.", f"{base}/{i}/attributes")
                if subscribe and channel in ("email", "sms") and not attrs.get(identifier):
                    raise _invalid(f"A {channel} subscription needs the profile's {identifier}.",
                                   f"{base}/{i}/attributes/{identifier}")
                phone = str(attrs.get("phone_number") or "")
                if channel == "sms" and phone and not re.fullmatch(r"\+[1-9][0-9]{6,14}", phone):
                    raise _invalid("Invalid phone number format (E.164 expected).",
                                   f"{base}/{i}/attributes/phone_number")
                if not subscribe:
                    continue
                when = (settings.get("marketing") or {}).get("consented_at")
                if historical and not when:
                    raise _invalid("consented_at is required when historical_import is true.", pointer)
                if when and not historical:
                    raise _invalid("consented_at can only be set when historical_import is true.", pointer)
                if when:
                    try:
                        moment = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
                    except ValueError:
                        raise _invalid("consented_at is not a date-time.", pointer) from None
                    if moment.tzinfo is None:
                        moment = moment.replace(tzinfo=UTC)
                    if moment > now + timedelta(seconds=1):
                        raise _invalid("consented_at must be in the past.", pointer)
        self.subscription_jobs.append({"subscribe": subscribe, "list": list_id, "historical": historical,
                                       "profiles": entries, "processed": False,
                                       "wait": self.subscription_requests_until_processed})
        return 202, None

    def _process_subscription_jobs(self) -> None:
        for job in self.subscription_jobs:
            if job["processed"]:
                continue
            if job["wait"] > 0:
                job["wait"] -= 1
                continue
            job["processed"] = True
            for entry in job["profiles"]:
                self._apply_subscription(job, entry.get("attributes") or {})

    def _apply_subscription(self, job: dict[str, Any], attrs: dict[str, Any]) -> None:
        email = attrs.get("email")
        if email and str(email).lower() in self.refuse_subscriptions:
            self.subscription_failures.append({"list": job["list"], "email": email,
                                               "reason": "refused by the fake"})
            return
        pid = self._find_profile("email", email) or self._find_profile("phone_number", attrs.get("phone_number"))
        if pid is None:
            if not job["subscribe"]:
                return
            pid = new_id()
            self.profiles[pid] = {}
            self._stamp("profile", pid, created=True)
        if attrs.get("phone_number") and not self.profiles[pid].get("phone_number"):
            self.profiles[pid]["phone_number"] = attrs["phone_number"]
        if email and not self.profiles[pid].get("email"):
            self.profiles[pid]["email"] = email
        listed = self.lists.get(job["list"]) if job["list"] else None
        for channel, settings in (attrs.get("subscriptions") or {}).items():
            marketing = settings.get("marketing") or {}
            current = self.subscriptions.setdefault(pid, {}).setdefault(channel, {})
            if not job["subscribe"]:
                current.update(consent="UNSUBSCRIBED", consent_timestamp=_now(), method="API")
                if listed:
                    listed["members"].discard(pid)
                continue
            if listed and listed["double_optin"] and not job["historical"] and channel == "email" \
                    and current.get("consent") != "SUBSCRIBED":
                self.confirmations_sent.append((job["list"], email))
                continue  # subscribed once the person confirms
            current.update(consent="SUBSCRIBED", consent_timestamp=marketing.get("consented_at") or _now(),
                           method="API", historical_import=job["historical"])
            if listed:
                listed["members"].add(pid)

    def _subscriptions_of(self, pid: str) -> dict[str, Any]:
        stored = self.subscriptions.get(pid, {})
        result: dict[str, Any] = {}
        for channel, flag in (("email", "can_receive_email_marketing"), ("sms", "can_receive_sms_marketing")):
            marketing = stored.get(channel) or {}
            consent = marketing.get("consent", "NEVER_SUBSCRIBED")
            result[channel] = {"marketing": {flag: consent == "SUBSCRIBED", "consent": consent,
                                             "consent_timestamp": marketing.get("consent_timestamp"),
                                             "method": marketing.get("method")}}
        return result

    # --- events ---------------------------------------------------------------------------------------------

    @staticmethod
    def _check_event(attrs: dict[str, Any], pointer: str, *, strings: bool = True) -> None:
        profile = (attrs.get("profile") or {}).get("data") or {}
        pattrs = profile.get("attributes") or {}
        identifiers = (*_PROFILE_IDENTIFIERS, "anonymous_id", "_kx")
        if not profile.get("id") and not any(pattrs.get(k) for k in identifiers):
            raise _invalid("The event's profile needs an identifier (id, email, phone_number, external_id).",
                           f"{pointer}/profile/data/attributes")
        if not (((attrs.get("metric") or {}).get("data") or {}).get("attributes") or {}).get("name"):
            raise _invalid("The event's metric needs a name.", f"{pointer}/metric/data/attributes/name")
        properties = attrs.get("properties")
        if isinstance(properties, dict) and len(properties) > 400:
            raise _invalid(f"{len(properties)} event properties, more than the allowed 400.",
                           f"{pointer}/properties")
        if strings and _longest_string(attrs) > MAX_EVENT_STRING:
            raise _invalid("An event string is larger than 100KB.", pointer)

    def _create_event(self, ctx: _Ctx) -> _Reply:
        attrs = ctx.data.get("attributes") or {}
        self._check_event(attrs, "/data/attributes")
        self.events.append(attrs)
        self._apply_event_profile(attrs.get("profile"))
        return 202, None

    def _apply_event_profile(self, profile: Any) -> str | None:
        """Create or update the profile an event names, as Klaviyo does with every event's profile.

        Found by id (an unknown id is ignored), else by external_id, email (case-insensitive), phone_number: the
        first that names a profile wins, as for profile-import (Klaviyo documents no order for events and,
        processing events after its 202, answers no 409); an identifier that already names another profile is not
        moved to this one. Attributes sent replace the profile's (null clears, as for profile-import), attributes
        absent are left alone, `location` and `properties` merge key by key, `meta.patch_properties` applies.
        Returns the profile's id; None when the event names no known id and no identifier.
        """
        data = (profile or {}).get("data") or {}
        attrs = {k: v for k, v in (data.get("attributes") or {}).items() if k not in ("meta", "anonymous_id", "_kx")}
        pid = data.get("id") if data.get("id") in self.profiles else None
        pid = pid or next((p for p in (self._find_profile(n, attrs.get(n)) for n in _PROFILE_IDENTIFIERS) if p),
                          None)
        created = pid is None
        if created:
            if not any(attrs.get(n) for n in _PROFILE_IDENTIFIERS):
                return None
            pid = new_id()
            self.profiles[pid] = {}
        for name in _PROFILE_IDENTIFIERS:
            if self._find_profile(name, attrs.get(name)) not in (None, pid):
                del attrs[name]
        self._merge_profile(pid, attrs, (data.get("attributes") or {}).get("meta"))
        self._stamp("profile", pid, created=created)
        return pid

    def _process_event_jobs(self) -> None:
        jobs, self.event_jobs = self.event_jobs, []
        for profiles in jobs:
            for profile in profiles:
                self._apply_event_profile(profile)

    @staticmethod
    def _event_marks(event: dict[str, Any]) -> set[tuple[str, str]]:
        """The event's profile id and identifiers (emails lower-cased), to find a person's events."""
        data = (event.get("profile") or {}).get("data") or {}
        attrs = data.get("attributes") or {}
        marks = {_mark(n, attrs[n]) for n in _PROFILE_IDENTIFIERS if attrs.get(n)}
        return marks | ({("id", data["id"])} if data.get("id") else set())

    def _bulk_create_events(self, ctx: _Ctx) -> _Reply:
        if ctx.size > MAX_BULK_PAYLOAD:
            raise _invalid(f"The payload is {ctx.size} bytes, more than the allowed 5MB.")
        entries = ((ctx.data.get("attributes") or {}).get("events-bulk-create") or {}).get("data") or []
        strings = _may_hold_long_strings(ctx.raw)  # else no event string can be over the limit: not walked
        merged: list[dict[str, Any]] = []
        for i, entry in enumerate(entries):
            attrs = entry.get("attributes") or {}
            for j, event in enumerate((attrs.get("events") or {}).get("data") or []):
                one = {**(event.get("attributes") or {}), "profile": attrs.get("profile")}
                if attrs.get("backfill") is not None and "backfill" not in one:
                    one["backfill"] = attrs["backfill"]
                where = f"/data/attributes/events-bulk-create/data/{i}/attributes/events/data/{j}/attributes"
                self._check_event(one, where, strings=strings)
                merged.append(one)
        if len(merged) > 1000:
            raise _invalid(f"{len(merged)} events, more than the allowed 1,000 per request.",
                           "/data/attributes/events-bulk-create/data")
        self.accepted_events += len(merged)
        if self.keep_payloads:
            self.events.extend(merged)
            self.event_jobs.append([event["profile"] for event in merged])  # applied when processed (`handle`)
        else:
            self.accepted_keys.update(self._event_key(event) for event in merged)
        return 202, None

    # --- catalog --------------------------------------------------------------------------------------------

    def _store(self, kind: str) -> dict[str, dict[str, Any]]:
        return {"item": self.items, "variant": self.variants, "category": self.categories}[kind]

    def _catalog_create(self, kind: str, data: dict[str, Any], pointer: str = "/data") -> str:
        attrs = dict(data.get("attributes") or {})
        integration = attrs.pop("integration_type", None) or "$custom"
        catalog = attrs.pop("catalog_type", None) or "$default"
        cid = f"{integration}:::{catalog}:::{attrs.get('external_id')}"
        store = self._store(kind)
        if cid in store:
            raise _Fail(409, f"A catalog {kind} with id {cid!r} already exists.",
                        pointer=f"{pointer}/attributes")
        relationships = dict(data.get("relationships") or {})
        if kind == "variant":
            parent = (((relationships.get("item") or {}).get("data")) or {}).get("id")
            if parent not in self.items:
                raise _Fail(400, f"The catalog item {parent!r} of this variant does not exist.",
                            pointer=f"{pointer}/relationships/item/data/id")
        store[cid] = {"attributes": attrs, "relationships": relationships}
        self._stamp(kind, cid, created=True)
        return cid

    def _catalog_update(self, kind: str, data: dict[str, Any], cid: str, pointer: str = "/data") -> None:
        store = self._store(kind)
        if cid not in store:
            raise _Fail(404, f"A catalog {kind} with id {cid!r} does not exist.", pointer=f"{pointer}/id")
        record = store[cid]
        record["attributes"].update(data.get("attributes") or {})
        record["relationships"].update(data.get("relationships") or {})
        self._stamp(kind, cid, created=False)

    def _catalog_delete(self, kind: str, cid: str, pointer: str = "/data") -> None:
        store = self._store(kind)
        if cid not in store:
            raise _Fail(404, f"A catalog {kind} with id {cid!r} does not exist.", pointer=f"{pointer}/id")
        del store[cid]
        self._stamps.pop((kind, cid), None)

    def _catalog_resource(self, ctx: _Ctx, kind: str, cid: str) -> dict[str, Any]:
        record = self._store(kind)[cid]
        created, updated = self._stamps.get((kind, cid), (None, None))
        stored = {**record["attributes"], "created": created, "updated": updated}
        attrs = {n: stored.get(n, _CATALOG_DEFAULTS.get(n)) for n in _CATALOG_RESPONSE_ATTRS[kind]}
        self_url = f"{ctx.base_url}/api/catalog-{_PLURAL[kind]}/{quote(cid, safe='')}/"
        related = _RELATED[kind]
        return {
            "type": f"catalog-{kind}", "id": cid, "attributes": self._sparse(ctx, f"catalog-{kind}", attrs),
            "relationships": {related: {"links": {"self": f"{self_url}relationships/{related}/",
                                                  "related": f"{self_url}{related}/"}}},
            "links": {"self": self_url},
        }

    def _catalog_document(self, ctx: _Ctx, kind: str, cid: str) -> dict[str, Any]:
        resource = self._catalog_resource(ctx, kind, cid)
        return {"data": resource, "links": {"self": resource["links"]["self"]}}

    def _catalog_create_one(self, ctx: _Ctx, kind: str) -> _Reply:
        return 201, self._catalog_document(ctx, kind, self._catalog_create(kind, ctx.data))

    def _catalog_get(self, ctx: _Ctx, kind: str, cid: str) -> _Reply:
        if cid not in self._store(kind):
            raise _Fail(404, f"A catalog {kind} with id {cid!r} does not exist.")
        return 200, self._catalog_document(ctx, kind, cid)

    def _catalog_update_one(self, ctx: _Ctx, kind: str, cid: str) -> _Reply:
        data = ctx.data
        if data.get("id") != cid:
            raise _invalid(f"The id in the body ({data.get('id')!r}) does not match the URL ({cid!r}).",
                           "/data/id")
        self._catalog_update(kind, data, cid)
        return 200, self._catalog_document(ctx, kind, cid)

    def _catalog_delete_one(self, kind: str, cid: str) -> _Reply:
        self._catalog_delete(kind, cid)
        return 204, None

    def _catalog_field(self, kind: str, cid: str, name: str) -> Any:
        record = self._store(kind)[cid]
        rels = record["relationships"]
        if name == "ids":
            return cid
        if name == "category.id":  # item -> its categories, and categories listing the item
            own = _ids(rels, "categories")
            return own | {k for k, c in self.categories.items() if cid in _ids(c["relationships"], "items")}
        if name == "item.id" and kind == "variant":
            return ((rels.get("item") or {}).get("data") or {}).get("id")
        if name == "item.id":  # category -> items in it
            own = _ids(rels, "items")
            return own | {k for k, i in self.items.items() if cid in _ids(i["relationships"], "categories")}
        return record["attributes"].get(name)

    def _catalog_rows(self, ctx: _Ctx, kind: str, rows: list[str]) -> _Reply:
        conditions = self._filters(ctx, kind)
        rows = [cid for cid in rows
                if all(_holds(op, self._catalog_field(kind, cid, name), value)
                       for op, name, value in conditions)]
        sort = ctx.query.get("sort")
        if sort not in (None, "created", "-created"):
            raise _invalid(f"Unsupported sort {sort!r}.", parameter="sort")
        if sort == "-created":
            rows.reverse()
        page, links = self._page(ctx, rows, default_size=100)
        return 200, {"data": [self._catalog_resource(ctx, kind, cid) for cid in page], "links": links}

    def _catalog_list(self, ctx: _Ctx, kind: str) -> _Reply:
        return self._catalog_rows(ctx, kind, list(self._store(kind)))

    def _item_variants(self, ctx: _Ctx, item_id: str) -> _Reply:
        if item_id not in self.items:
            raise _Fail(404, f"A catalog item with id {item_id!r} does not exist.")
        rows = [v for v in self.variants if self._catalog_field("variant", v, "item.id") == item_id]
        return self._catalog_rows(ctx, "variant", rows)

    # --- jobs -----------------------------------------------------------------------------------------------

    def _new_job(self, job_id: str, job_type: str, total: int, failed: int,
                 errors: list[dict[str, Any]]) -> dict[str, Any]:
        created = datetime.now(UTC)
        stamp = created.isoformat(timespec="seconds")
        job = {
            "id": job_id, "type": job_type, "status": "complete", "created_at": stamp, "total_count": total,
            "completed_count": total - failed, "failed_count": failed, "completed_at": stamp,
            "errors": errors,
            "expires_at": (created + timedelta(days=7)).isoformat(timespec="seconds"),
            "polls_left": self.job_polls_until_complete,
        }
        self.jobs[job_id] = job
        return job

    def _job_document(self, ctx: _Ctx, job: dict[str, Any], base: str, *, poll: bool) -> dict[str, Any]:
        processing = job["polls_left"] > 0
        if poll and processing:
            job["polls_left"] -= 1
        names = ["status", "created_at", "total_count", "completed_count", "failed_count", "completed_at",
                 "expires_at", "started_at" if job["type"] == "profile-bulk-import-job" else "errors"]
        attrs = {name: job.get(name) for name in names}
        if processing:
            attrs.update(status="processing", completed_count=0, failed_count=0, completed_at=None)
            if "errors" in attrs:
                attrs["errors"] = []
        self_url = f"{ctx.base_url}{base}/{job['id']}/"
        data = {"type": job["type"], "id": job["id"], "attributes": attrs, "links": {"self": self_url}}
        return {"data": data, "links": {"self": self_url}}

    def _catalog_bulk(self, ctx: _Ctx, kind: str, action: str) -> _Reply:
        if ctx.size > MAX_BULK_PAYLOAD:
            raise _invalid(f"The payload is {ctx.size} bytes, more than the allowed 5MB.")
        plural = _PLURAL[kind]
        elements = ((ctx.data.get("attributes") or {}).get(plural) or {}).get("data") or []
        if len(elements) > 100:
            raise _invalid(f"{len(elements)} {plural}, more than the allowed 100 per job.",
                           f"/data/attributes/{plural}/data")
        if self.hold_catalog_jobs:
            job = self._new_job(new_id(), f"catalog-{kind}-bulk-{action}-job", len(elements), 0, [])
            job.update(held=(kind, action, elements), polls_left=1 << 30)  # processing until run
        else:
            errors = self._catalog_writes(kind, action, elements)
            job = self._new_job(new_id(), f"catalog-{kind}-bulk-{action}-job", len(elements), len(errors), errors)
        return 202, self._job_document(ctx, job, f"/api/catalog-{kind}-bulk-{action}-jobs", poll=False)

    def _catalog_writes(self, kind: str, action: str, elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Apply a catalog bulk job's writes; the job's errors."""
        plural = _PLURAL[kind]
        errors: list[dict[str, Any]] = []
        for i, element in enumerate(elements):
            pointer = f"/data/attributes/{plural}/data/{i}"
            try:
                if action == "create":
                    self._catalog_create(kind, element, pointer)
                elif action == "update":
                    self._catalog_update(kind, element, str(element.get("id")), pointer)
                else:
                    self._catalog_delete(kind, str(element.get("id")), pointer)
            except _Fail as fail:
                error = fail.errors[0]
                errors.append({k: error[k] for k in ("id", "code", "title", "detail", "source")})
        return errors

    def run_catalog_jobs(self, *, newest_first: bool = False) -> int:
        """Run the catalog bulk jobs held so far (`hold_catalog_jobs`), oldest or newest first; how many ran."""
        with self._lock:
            held = [job for job in self.jobs.values() if "held" in job]  # in creation order
            for job in reversed(held) if newest_first else held:
                errors = self._catalog_writes(*job.pop("held"))
                job.update(failed_count=len(errors), completed_count=job["total_count"] - len(errors),
                           errors=errors, polls_left=0)
            return len(held)

    def held_catalog_jobs(self) -> int:
        with self._lock:
            return sum(1 for job in self.jobs.values() if "held" in job)

    def _get_catalog_job(self, ctx: _Ctx, job_type: str, job_id: str) -> _Reply:
        job = self.jobs.get(job_id)
        if job is None or job["type"] != job_type:
            raise _Fail(404, f"No {job_type} {job_id!r}.")
        return 200, self._job_document(ctx, job, f"/api/{job_type}s", poll=True)
