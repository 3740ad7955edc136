"""Stateful, stdlib-only fake of the commercetools HTTP API.

Mount it anywhere through :meth:`FakeCommercetools.handle`; see ``commercetools_server`` for the
pytest-httpserver and ``http.server`` adapters.
"""

from __future__ import annotations

import base64
import bisect
import copy
import itertools
import json
import operator
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

__all__ = [
    "RESOURCES",
    "TYPE_ID_TO_RESOURCE",
    "ApiError",
    "FakeCommercetools",
    "Recorded",
    "WhereSyntaxError",
    "matches",
    "parse_where",
]

JSON = dict[str, Any]
#: How many seeded objects of each resource `FakeCommercetools.add` checks (loops seed many of one shape).
CHECKED_PER_RESOURCE = 50

#: Project resources served by the fake (``product-projections`` is derived from ``products``).
RESOURCES = (
    "customers",
    "orders",
    "products",
    "product-projections",
    "categories",
    "payments",
    "inventory",
    "custom-objects",
    "subscriptions",
    "channels",
)
STORED_RESOURCES = tuple(r for r in RESOURCES if r != "product-projections")

#: Reference ``typeId`` → resource used by reference expansion.
TYPE_ID_TO_RESOURCE = {
    "category": "categories",
    "product": "products",
    "payment": "payments",
    "customer": "customers",
    "order": "orders",
    "channel": "channels",
    "inventory-entry": "inventory",
    "subscription": "subscriptions",
    "key-value-document": "custom-objects",
}

TOKEN_TTL_SECONDS = 172800
MAX_LIMIT = 500
MAX_OFFSET = 10_000
_CUSTOM_OBJECT_ID = re.compile(r"^[-_~.a-zA-Z0-9]+$")
_FAULT_CODES = {
    400: "InvalidInput",
    401: "invalid_token",
    403: "insufficient_scope",
    404: "ResourceNotFound",
    409: "ConcurrentModification",
    500: "General",
    502: "General",
    503: "ServiceUnavailable",
    504: "General",
}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


# --------------------------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered in the commercetools error format."""

    def __init__(self, status: int, code: str, message: str, *, summary: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.summary = summary or message
        self.extra = extra

    def payload(self) -> JSON:
        """The JSON error body (``summary`` is the top-level message)."""
        return {
            "statusCode": self.status,
            "message": self.summary,
            "errors": [{"code": self.code, "message": self.message, **self.extra}],
        }


def _not_found(ident: str, by: str = "ID") -> ApiError:
    return ApiError(404, "ResourceNotFound", f"The Resource with {by} '{ident}' was not found.")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidInput", message)


def _conflict(expected: int | None, current: int | None, ident: str) -> ApiError:
    extra: JSON = {} if current is None else {"currentVersion": current}
    return ApiError(
        409,
        "ConcurrentModification",
        f"Object {ident} has a different version than expected. Expected: {expected} - Actual: {current}.",
        **extra,
    )


# ---------------------------------------------------------------------------------- where predicates


class WhereSyntaxError(ValueError):
    """A ``where`` predicate that cannot be parsed."""


@dataclass(frozen=True)
class _Compare:
    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class _In:
    field: str
    values: tuple[Any, ...]
    negate: bool


@dataclass(frozen=True)
class _Is:
    field: str
    what: str  # "defined" | "empty"
    negate: bool


@dataclass(frozen=True)
class _Contains:
    field: str
    mode: str  # "any" | "all"
    values: tuple[Any, ...]


@dataclass(frozen=True)
class _Nested:
    field: str
    expr: Node


@dataclass(frozen=True)
class _Not:
    expr: Node


@dataclass(frozen=True)
class _BoolOp:
    op: str  # "and" | "or"
    items: tuple[Node, ...]


Node = _Compare | _In | _Is | _Contains | _Nested | _Not | _BoolOp

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<op><>|!=|>=|<=|=|<|>)
  | (?P<punct>[(),])
  | (?P<ident>[A-Za-z_][A-Za-z0-9_\-]*)
    """,
    re.VERBOSE,
)
_ORDERING: dict[str, Callable[[Any, Any], Any]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise WhereSyntaxError(f"unexpected character {text[pos]!r} at position {pos}")
        pos = m.end()
        kind = m.lastgroup
        raw = m.group()
        if kind == "ws":
            continue
        if kind == "string":
            try:
                tokens.append(("value", json.loads(raw)))
            except ValueError as exc:
                raise WhereSyntaxError(f"invalid string literal {raw}") from exc
        elif kind == "number":
            tokens.append(("value", float(raw) if any(c in raw for c in ".eE") else int(raw)))
        elif kind == "ident":
            tokens.append(("ident", raw))
        else:
            tokens.append((raw, raw))
    return tokens


class _Parser:
    """Recursive-descent parser for the commercetools query predicate language."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0

    def parse(self) -> Node:
        if not self.tokens:
            raise WhereSyntaxError("empty predicate")
        node = self._or()
        if self.pos != len(self.tokens):
            raise WhereSyntaxError(f"unexpected token {self.tokens[self.pos][1]!r}")
        return node

    def _peek(self, offset: int = 0) -> tuple[str, Any] | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def _next(self) -> tuple[str, Any]:
        tok = self._peek()
        if tok is None:
            raise WhereSyntaxError("unexpected end of predicate")
        self.pos += 1
        return tok

    def _expect(self, kind: str) -> None:
        tok = self._next()
        if tok[0] != kind:
            raise WhereSyntaxError(f"expected {kind!r}, got {tok[1]!r}")

    def _keyword(self, *words: str, offset: int = 0) -> bool:
        tok = self._peek(offset)
        return tok is not None and tok[0] == "ident" and tok[1].lower() in words

    def _expect_keyword(self, *words: str) -> str:
        if not self._keyword(*words):
            tok = self._peek()
            raise WhereSyntaxError(f"expected {' or '.join(words)}, got {tok[1] if tok else 'end'!r}")
        return str(self._next()[1]).lower()

    def _or(self) -> Node:
        items = [self._and()]
        while self._keyword("or"):
            self.pos += 1
            items.append(self._and())
        return items[0] if len(items) == 1 else _BoolOp("or", tuple(items))

    def _and(self) -> Node:
        items = [self._unary()]
        while self._keyword("and"):
            self.pos += 1
            items.append(self._unary())
        return items[0] if len(items) == 1 else _BoolOp("and", tuple(items))

    def _unary(self) -> Node:
        nxt = self._peek(1)
        if self._keyword("not") and nxt is not None and nxt[0] == "(":
            self.pos += 2
            expr = self._or()
            self._expect(")")
            return _Not(expr)
        tok = self._peek()
        if tok is not None and tok[0] == "(":
            self.pos += 1
            expr = self._or()
            self._expect(")")
            return expr
        return self._field_predicate()

    def _field_predicate(self) -> Node:
        kind, name = self._next()
        if kind != "ident" or name.lower() in ("and", "or"):
            raise WhereSyntaxError(f"expected a field name, got {name!r}")
        tok = self._next()
        if tok[0] == "(":
            expr = self._or()
            self._expect(")")
            return _Nested(name, expr)
        if tok[0] in ("=", "!=", "<>", ">", ">=", "<", "<="):
            return _Compare(name, "!=" if tok[0] == "<>" else tok[0], self._value())
        word = str(tok[1]).lower() if tok[0] == "ident" else ""
        if word == "in":
            return _In(name, self._values(), negate=False)
        if word == "not":
            self._expect_keyword("in")
            return _In(name, self._values(), negate=True)
        if word == "is":
            negate = self._keyword("not")
            if negate:
                self.pos += 1
            return _Is(name, self._expect_keyword("defined", "empty"), negate)
        if word == "contains":
            mode = self._expect_keyword("any", "all")
            return _Contains(name, mode, self._values())
        raise WhereSyntaxError(f"unexpected token {tok[1]!r} after field {name!r}")

    def _value(self) -> Any:
        kind, val = self._next()
        if kind == "value":
            return val
        if kind == "ident" and val.lower() in ("true", "false"):
            return val.lower() == "true"
        raise WhereSyntaxError(f"expected a literal value, got {val!r}")

    def _values(self) -> tuple[Any, ...]:
        self._expect("(")
        values = [self._value()]
        while (tok := self._peek()) is not None and tok[0] == ",":
            self.pos += 1
            values.append(self._value())
        self._expect(")")
        return tuple(values)


@lru_cache(maxsize=512)
def parse_where(text: str) -> Node:
    """Parse a ``where`` predicate; raises :class:`WhereSyntaxError`."""
    return _Parser(text).parse()


def _kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if isinstance(actual, list):
        return any(_compare(item, op, expected) for item in actual)
    kind = _kind(actual)
    if kind is None or kind != _kind(expected):
        return False
    if op == "=":
        return bool(actual == expected)
    if op == "!=":
        return bool(actual != expected)
    if kind == "bool":
        return False
    return bool(_ORDERING[op](actual, expected))


def _evaluate(node: Node, ctx: Any) -> bool:
    if isinstance(ctx, list):  # a predicate on a list holds if ANY element matches
        return any(_evaluate(node, item) for item in ctx)
    if not isinstance(ctx, dict):
        return False
    match node:
        case _BoolOp(op="and", items=items):
            return all(_evaluate(item, ctx) for item in items)
        case _BoolOp(items=items):
            return any(_evaluate(item, ctx) for item in items)
        case _Not(expr=expr):
            return not _evaluate(expr, ctx)
        case _Nested(field=name, expr=expr):
            value = ctx.get(name)
            return isinstance(value, dict | list) and _evaluate(expr, value)
        case _Compare(field=name, op=op, value=expected):
            return _compare(ctx.get(name), op, expected)
        case _In(field=name, values=values, negate=negate):
            value = ctx.get(name)
            if value is None:
                return False
            hit = any(_compare(value, "=", v) for v in values)
            return not hit if negate else hit
        case _Is(field=name, what="defined", negate=negate):
            return (ctx.get(name) is None) == negate
        case _Is(field=name, negate=negate):
            value = ctx.get(name)
            return (value in (None, [], {})) != negate
        case _Contains(field=name, mode=mode, values=values):
            value = ctx.get(name)
            items = value if isinstance(value, list) else []
            hits = [any(_compare(item, "=", v) for item in items) for v in values]
            return any(hits) if mode == "any" else all(hits)
    raise AssertionError(f"unknown node {node!r}")  # pragma: no cover


def matches(predicate: str | Node, obj: Any) -> bool:
    """Evaluate a ``where`` predicate (text or parsed) against a JSON object."""
    node = parse_where(predicate) if isinstance(predicate, str) else predicate
    return _evaluate(node, obj)


# ----------------------------------------------------------------------------------------- expansion

_EXPAND_STEP = re.compile(r"^([A-Za-z0-9_\-]+)(?:\[(\*|\d+)\])?$")
ExpandStep = tuple[str, str | None]


def _parse_expand(path: str) -> list[ExpandStep]:
    steps: list[ExpandStep] = []
    for part in path.strip().split("."):
        m = _EXPAND_STEP.match(part)
        if m is None:
            raise _invalid(f"Malformed parameter: expand: invalid path '{path}'.")
        steps.append((m.group(1), m.group(2)))
    return steps


def _is_reference(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("typeId"), str) and "id" in value


# ---------------------------------------------------------------------------------------- the fake


@dataclass(frozen=True)
class Recorded:
    """One request seen by the fake (headers have lower-case names)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any | None
    status: int


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    times: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    delay: float = 0.0


Response = tuple[int, dict[str, str], bytes]


class FakeCommercetools:
    """In-memory commercetools project: OAuth, queries, expansion, custom objects, subscriptions."""

    def __init__(
        self,
        project_key: str = "test-project",
        client_id: str = "ct-client",
        client_secret: str = "ct-secret",
        *,
        check_shapes: bool = False,
    ) -> None:
        """``check_shapes``: `add` checks what it is given against the `commercetools` SDK's models (the first
        `CHECKED_PER_RESOURCE` objects of each resource; see `commercetools_sdk`) and refuses a wrong shape."""
        self.project_key = project_key
        self.check_shapes = check_shapes
        self._checked: dict[str, int] = {}
        self.client_id = client_id
        self.client_secret = client_secret
        self.store: dict[str, dict[str, JSON]] = {r: _Table() for r in STORED_RESOURCES}
        self.tokens: dict[str, str] = {}  # access token → scope
        self.requests: list[Recorded] = []
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()

    # ------------------------------------------------------------------------------ test helpers

    def add(self, resource: str, obj: JSON, *, check_shape: bool = True) -> JSON:
        """Seed a resource (a JSON copy is stored; id/version/timestamps filled in); returns a copy.

        With ``check_shapes`` on, a resource the real API could not return raises ValueError naming what is
        wrong; ``check_shape=False`` seeds one on purpose (a test of the connector's defences)."""
        if resource not in self.store:
            raise ValueError(f"unknown or derived resource {resource!r}")
        stored = json.loads(json.dumps(obj))  # a wire copy: no shared sub-objects
        now = _now()
        stored.setdefault("id", str(uuid.uuid4()))
        stored.setdefault("version", 1)
        stored.setdefault("createdAt", now)
        stored.setdefault("lastModifiedAt", stored["createdAt"])
        if self.check_shapes and check_shape and self._checked.get(resource, 0) < CHECKED_PER_RESOURCE:
            from .commercetools_sdk import check_resource  # the SDK is a test dependency, slow to import

            self._checked[resource] = self._checked.get(resource, 0) + 1
            problems = check_resource(resource, stored)
            if problems:
                raise ValueError(f"{resource} {stored['id']} is not shaped like the commercetools API: "
                                 + "; ".join(problems))
        with self._lock:
            self.store[resource][stored["id"]] = stored
        return copy.deepcopy(stored)

    def get(self, resource: str, id: str) -> JSON | None:
        """A copy of a stored object, or ``None``."""
        with self._lock:
            obj = self.store[resource].get(id)
            return copy.deepcopy(obj) if obj is not None else None

    def get_custom_object(self, container: str, key: str) -> JSON | None:
        """A copy of the custom object at ``container``/``key``, or ``None``."""
        with self._lock:
            obj = self._find_custom_object(container, key)
            return copy.deepcopy(obj) if obj is not None else None

    def issue_token(self, scope: str | None = None) -> str:
        """Issue a valid access token without going through ``/oauth/token``."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = scope or f"manage_project:{self.project_key}"
        return token

    def expire_tokens(self) -> None:
        """Invalidate every issued token (the next API call answers 401)."""
        with self._lock:
            self.tokens.clear()

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        delay: float = 0.0,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (``method`` may be ``"*"``).

        ``path_regex`` is ``re.search``-ed against the path. ``body`` may be bytes, str or JSON; by default a
        commercetools error body. ``delay`` seconds are slept first. A 2xx ``status`` without ``body`` only
        delays the request, which is then handled normally.
        """
        fault = _Fault(method.upper(), re.compile(path_regex), status, times, dict(headers or {}), body, delay)
        with self._lock:
            self._faults.append(fault)

    def find_requests(self, method: str | None = None, path_regex: str | None = None) -> list[Recorded]:
        """Recorded requests filtered by method and ``re.search`` on the path."""
        with self._lock:
            found = list(self.requests)
        return [
            r
            for r in found
            if (method is None or r.method == method.upper()) and (path_regex is None or re.search(path_regex, r.path))
        ]

    # ------------------------------------------------------------------------------ entry point

    def handle(
        self,
        method: str,
        path: str,
        query: Mapping[str, list[str]] | str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Response:
        """Serve one request (``path`` already percent-decoded); returns (status, headers, body)."""
        method = method.upper()
        params = (
            parse_qs(query, keep_blank_values=True)
            if isinstance(query, str)
            else {k: list(v) for k, v in query.items()}
        )
        hdrs = {k.lower(): v for k, v in headers.items()}
        parsed = _parse_body(body, hdrs.get("content-type", ""))

        response: Response | None = None
        fault = self._take_fault(method, path)
        if fault is not None:
            if fault.delay > 0:
                time.sleep(fault.delay)
            if fault.status >= 300 or fault.body is not None:
                response = self._fault_response(fault)
        if response is None:
            response = self._dispatch(method, path, params, hdrs, body, parsed)
        with self._lock:
            self.requests.append(Recorded(method, path, params, hdrs, parsed, response[0]))
        return response

    # ------------------------------------------------------------------------------ internals

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in ("*", method) and fault.pattern.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> Response:
        headers = {"Content-Type": "application/json", **fault.headers}
        if isinstance(fault.body, bytes):
            payload = fault.body
        elif isinstance(fault.body, str):
            payload = fault.body.encode()
        elif fault.body is not None:
            payload = _json_bytes(fault.body)
        else:
            message = f"Injected failure ({fault.status})."
            code = _FAULT_CODES.get(fault.status, "General")
            payload = _json_bytes(
                {"statusCode": fault.status, "message": message, "errors": [{"code": code, "message": message}]}
            )
        return fault.status, headers, payload

    def _dispatch(
        self,
        method: str,
        path: str,
        params: dict[str, list[str]],
        headers: dict[str, str],
        raw: bytes,
        parsed: Any,
    ) -> Response:
        body: bytes | None = None
        try:
            if path.rstrip("/") == "/oauth/token":
                status, payload = self._token(method, params, headers, parsed)
            else:
                self._check_bearer(headers)
                with self._lock:
                    status, payload = self._project(method, path, params, raw)
                    body = _json_bytes(payload)  # under the lock: query results share the stored objects
        except ApiError as exc:
            status, payload = exc.status, exc.payload()
            if exc.code in ("invalid_client", "invalid_token", "unsupported_grant_type", "invalid_scope"):
                payload.update(error=exc.code, error_description=exc.message)
        except Exception as exc:  # never let a fake bug look like a hang; answer like the real API would
            status, payload = 500, ApiError(500, "General", f"Fake failure: {exc!r}").payload()
        headers_out = {"Content-Type": "application/json", "X-Correlation-ID": f"fake-{uuid.uuid4()}"}
        return status, headers_out, body if body is not None else _json_bytes(payload)

    # auth --------------------------------------------------------------------------------------

    def _token(
        self, method: str, params: dict[str, list[str]], headers: dict[str, str], parsed: Any
    ) -> tuple[int, JSON]:
        if method != "POST":
            raise ApiError(405, "MethodNotAllowed", "Use POST to obtain a token.")
        form = {k: v[-1] for k, v in params.items()}
        if isinstance(parsed, dict):
            form.update({k: v for k, v in parsed.items() if isinstance(v, str)})
        client_id, client_secret = _basic_credentials(headers.get("authorization", ""))
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            raise ApiError(
                401, "invalid_client", "Please provide valid client credentials using HTTP Basic Authentication."
            )
        if form.get("grant_type") != "client_credentials":
            raise ApiError(400, "unsupported_grant_type", "Only grant_type=client_credentials is supported.")
        scope = form.get("scope") or f"manage_project:{self.project_key}"
        for item in scope.split():
            if ":" in item and item.split(":", 1)[1] != self.project_key:
                raise ApiError(400, "invalid_scope", f"Invalid scope '{item}'.")
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = scope
        return 200, {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL_SECONDS,
            "scope": scope,
        }

    def _check_bearer(self, headers: dict[str, str]) -> None:
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        with self._lock:
            valid = scheme.lower() == "bearer" and token.strip() in self.tokens
        if not valid:
            detail = "The access token is invalid or expired." if auth else "Missing Bearer access token."
            raise ApiError(401, "invalid_token", detail, summary="invalid_token")

    # project routing ---------------------------------------------------------------------------

    def _project(self, method: str, path: str, params: dict[str, list[str]], raw: bytes) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != self.project_key:
            raise ApiError(404, "ResourceNotFound", f"The endpoint '{path}' does not exist.")
        if len(parts) < 2 or parts[1] not in RESOURCES:
            raise ApiError(404, "ResourceNotFound", f"The endpoint '{path}' does not exist.")
        resource, rest = parts[1], parts[2:]
        if resource == "custom-objects":
            return self._custom_objects(method, rest, params, raw)
        if resource == "subscriptions":
            return self._subscriptions(method, rest, params, raw)
        if method not in ("GET", "HEAD") or len(rest) > 1:
            raise ApiError(405, "MethodNotAllowed", f"{method} {path} is not supported by the fake.")
        if not rest:
            table = self.store.get(resource)
            return 200, self._query(lambda: self._items(resource, params), params, table)
        return 200, self._expand(self._find_one(resource, rest[0], params), params)

    def _items(self, resource: str, params: dict[str, list[str]]) -> list[JSON]:
        if resource != "product-projections":
            return list(self.store[resource].values())
        staged = _last(params, "staged", "false").lower() == "true"
        projections = (_projection(p, staged) for p in self.store["products"].values())
        return [p for p in projections if p is not None]

    def _find_one(self, resource: str, ident: str, params: dict[str, list[str]]) -> JSON:
        items = self._items(resource, params)
        if ident.startswith("key="):
            key = ident[4:]
            found = next((o for o in items if o.get("key") == key), None)
            if found is None:
                raise _not_found(key, "key")
            return copy.deepcopy(found)
        found = next((o for o in items if o.get("id") == ident), None)
        if found is None:
            raise _not_found(ident)
        return copy.deepcopy(found)

    def _query(self, items: list[JSON] | Callable[[], list[JSON]], params: dict[str, list[str]],
               table: _Table | None = None) -> JSON:
        """A query page. The results share the stored objects (expansions copy what they change): they are
        serialized at once, under the lock."""
        nodes: list[Node] = []
        for text in params.get("where", []):
            try:
                nodes.append(parse_where(text))
            except WhereSyntaxError as exc:
                raise _invalid(f"Malformed parameter: where: {exc}.") from exc
        sorts = [_parse_sort(s) for s in params.get("sort", [])]
        limit = _int_param(params, "limit", 20, MAX_LIMIT)
        offset = _int_param(params, "offset", 0, MAX_OFFSET)
        expand = [_parse_expand(p) for p in params.get("expand", [])]
        with_total = _last(params, "withTotal", "true").lower() != "false"

        if sorts == [("id", False)] and offset == 0 and not with_total:
            if isinstance(table, _Table):
                ordered, ids = table.by_id(), table.ids()
            else:
                ordered = sorted(items() if callable(items) else items, key=lambda o: o["id"])
                ids = [o["id"] for o in ordered]
            found = _keyset_page(ordered, ids, params.get("where", []), nodes, limit)
        else:
            found = [o for o in (items() if callable(items) else items) if all(_evaluate(n, o) for n in nodes)]
        for path, descending in reversed(sorts):
            found.sort(key=lambda o, p=path: _sort_key(_dig(o, p)), reverse=descending)
        page = found[offset : offset + limit]
        for steps in expand:
            page = [self._expanded(obj, steps) for obj in page]
        result: JSON = {"limit": limit, "offset": offset, "count": len(page)}
        if with_total:
            result["total"] = len(found)
        result["results"] = page
        return result

    def _expand(self, obj: JSON, params: dict[str, list[str]]) -> JSON:
        for path in params.get("expand", []):
            self._expand_steps(obj, _parse_expand(path))
        return obj

    def _expand_steps(self, node: Any, steps: list[ExpandStep]) -> None:
        if not steps or not isinstance(node, dict):
            return
        (name, selector), rest = steps[0], steps[1:]
        value = node.get(name)
        if value is None:
            return
        if isinstance(value, list):
            if selector is None or selector == "*":
                targets = value
            else:
                index = int(selector)
                targets = value[index : index + 1]
        else:
            targets = [value]
        for target in targets:
            if _is_reference(target):
                if "obj" not in target:
                    resolved = self._resolve(target)
                    if resolved is None:
                        continue
                    target["obj"] = resolved
                self._expand_steps(target["obj"], rest)
            else:
                self._expand_steps(target, rest)

    def _expanded(self, node: Any, steps: list[ExpandStep]) -> Any:
        """`_expand_steps` without changing `node`: the dicts and lists on the path are copied, the rest is
        shared (a query page is only serialized)."""
        if not steps or not isinstance(node, dict):
            return node
        (name, selector), rest = steps[0], steps[1:]
        value = node.get(name)
        if value is None:
            return node
        if isinstance(value, list):
            indexes = range(len(value)) if selector is None or selector == "*" else \
                range(len(value))[int(selector) : int(selector) + 1]
            changed = list(value)
            for index in indexes:
                changed[index] = self._expanded_target(value[index], rest)
            return {**node, name: changed}
        return {**node, name: self._expanded_target(value, rest)}

    def _expanded_target(self, target: Any, rest: list[ExpandStep]) -> Any:
        if not _is_reference(target):
            return self._expanded(target, rest)
        if "obj" in target:
            return {**target, "obj": self._expanded(target["obj"], rest)}
        resource = TYPE_ID_TO_RESOURCE.get(target["typeId"])
        resolved = self.store[resource].get(target["id"]) if resource is not None else None
        if resolved is None:
            return target
        return {**target, "obj": self._expanded(resolved, rest)}

    def _resolve(self, ref: JSON) -> JSON | None:
        resource = TYPE_ID_TO_RESOURCE.get(ref["typeId"])
        if resource is None:
            return None
        obj = self.store[resource].get(ref["id"])
        return copy.deepcopy(obj) if obj is not None else None

    # custom objects ----------------------------------------------------------------------------

    def _find_custom_object(self, container: str, key: str) -> JSON | None:
        return next(
            (o for o in self.store["custom-objects"].values() if o["container"] == container and o["key"] == key),
            None,
        )

    def _custom_objects(
        self, method: str, rest: list[str], params: dict[str, list[str]], raw: bytes
    ) -> tuple[int, Any]:
        if len(rest) > 2:
            raise ApiError(404, "ResourceNotFound", "Unknown custom-objects endpoint.")
        for name, value in zip(("container", "key"), rest, strict=False):
            _check_custom_object_id(name, value)
        items = list(self.store["custom-objects"].values())
        if method == "POST" and not rest:
            return self._upsert_custom_object(_json_body(raw))
        if method in ("GET", "HEAD") and len(rest) < 2:
            if rest:
                items = [o for o in items if o["container"] == rest[0]]
            return 200, self._query(items, params)
        if len(rest) == 2 and method in ("GET", "HEAD", "DELETE"):
            container, key = rest
            current = self._find_custom_object(container, key)
            if current is None:
                raise _not_found(f"{container}/{key}", "container/key")
            if method == "DELETE":
                version = _optional_version(params)
                if version is not None and version != current["version"]:
                    raise _conflict(version, current["version"], current["id"])
                del self.store["custom-objects"][current["id"]]
            return 200, copy.deepcopy(current)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on this custom-objects endpoint.")

    def _upsert_custom_object(self, draft: Any) -> tuple[int, JSON]:
        if not isinstance(draft, dict):
            raise ApiError(400, "InvalidJsonInput", "Request body must be a CustomObjectDraft object.")
        for name in ("container", "key"):
            if not isinstance(draft.get(name), str):
                raise ApiError(400, "InvalidJsonInput", f"Missing required field '{name}'.")
            _check_custom_object_id(name, draft[name])
        if "value" not in draft:
            raise ApiError(400, "InvalidJsonInput", "Missing required field 'value'.")
        version = draft.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
            raise ApiError(400, "InvalidJsonInput", "Field 'version' must be a non-negative integer.")
        current = self._find_custom_object(draft["container"], draft["key"])
        now = _now()
        if current is None:
            if version:  # version N > 0 for an object that does not exist: nothing to match
                raise _conflict(version, None, f"{draft['container']}/{draft['key']}")
            created: JSON = {
                "id": str(uuid.uuid4()),
                "version": 1,
                "container": draft["container"],
                "key": draft["key"],
                "value": _strip_nulls(draft["value"]),
                "createdAt": now,
                "lastModifiedAt": now,
            }
            self.store["custom-objects"][created["id"]] = created
            return 201, copy.deepcopy(created)
        if version is not None and version != current["version"]:  # includes version 0: "create only"
            raise _conflict(version, current["version"], current["id"])
        current.update(value=_strip_nulls(draft["value"]), version=current["version"] + 1, lastModifiedAt=now)
        return 200, copy.deepcopy(current)

    # subscriptions -----------------------------------------------------------------------------

    def _subscriptions(self, method: str, rest: list[str], params: dict[str, list[str]], raw: bytes) -> tuple[int, Any]:
        if len(rest) > 1:
            raise ApiError(404, "ResourceNotFound", "Unknown subscriptions endpoint.")
        if not rest:
            if method in ("GET", "HEAD"):
                return 200, self._query(self._items("subscriptions", params), params)
            if method == "POST":
                return 201, self._create_subscription(_json_body(raw))
        else:
            if method in ("GET", "HEAD"):
                return 200, self._expand(self._find_one("subscriptions", rest[0], params), params)
            current = self._stored_subscription(rest[0])
            if method == "POST":
                return 200, self._update_subscription(current, _json_body(raw))
            if method == "DELETE":
                version = _optional_version(params)
                if version is None:
                    raise _invalid("Missing required query parameter 'version'.")
                if version != current["version"]:
                    raise _conflict(version, current["version"], current["id"])
                del self.store["subscriptions"][current["id"]]
                return 200, copy.deepcopy(current)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not supported on this subscriptions endpoint.")

    def _stored_subscription(self, ident: str) -> JSON:
        subs = self.store["subscriptions"]
        if ident.startswith("key="):
            found = next((s for s in subs.values() if s.get("key") == ident[4:]), None)
            if found is None:
                raise _not_found(ident[4:], "key")
            return found
        if ident not in subs:
            raise _not_found(ident)
        return subs[ident]

    def _check_subscription_key(self, key: Any, own_id: str | None = None) -> None:
        if key is None:
            return
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_-]{2,256}", key):
            raise _invalid(f"Invalid subscription key '{key}'.")
        if any(s.get("key") == key and s["id"] != own_id for s in self.store["subscriptions"].values()):
            raise ApiError(
                400,
                "DuplicateField",
                f"A duplicate value '\"{key}\"' exists for field 'key'.",
                field="key",
                duplicateValue=key,
            )

    def _create_subscription(self, draft: Any) -> JSON:
        if not isinstance(draft, dict) or not isinstance(draft.get("destination"), dict):
            raise ApiError(400, "InvalidJsonInput", "Missing required field 'destination'.")
        if not (draft.get("messages") or draft.get("changes") or draft.get("events")):
            raise _invalid("Either 'messages', 'changes' or 'events' must be set.")
        self._check_subscription_key(draft.get("key"))
        now = _now()
        sub: JSON = {
            "id": str(uuid.uuid4()),
            "version": 1,
            **({"key": draft["key"]} if draft.get("key") is not None else {}),
            "destination": draft["destination"],
            "messages": draft.get("messages") or [],
            "changes": draft.get("changes") or [],
            "events": draft.get("events") or [],
            "format": draft.get("format") or {"type": "Platform"},
            "status": "Healthy",
            "createdAt": now,
            "lastModifiedAt": now,
        }
        self.store["subscriptions"][sub["id"]] = sub
        return copy.deepcopy(sub)

    def _update_subscription(self, current: JSON, update: Any) -> JSON:
        if not isinstance(update, dict) or not isinstance(update.get("actions"), list):
            raise ApiError(400, "InvalidJsonInput", "Missing required field 'actions'.")
        version = update.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise ApiError(400, "InvalidJsonInput", "Missing required field 'version'.")
        if version != current["version"]:
            raise _conflict(version, current["version"], current["id"])
        updated = copy.deepcopy(current)
        for action in update["actions"]:
            name = action.get("action") if isinstance(action, dict) else None
            apply = _SUBSCRIPTION_ACTIONS.get(str(name))
            if apply is None:
                raise _invalid(f"Unknown update action '{name}'.")
            if name == "setKey":
                self._check_subscription_key(action.get("key"), current["id"])
            apply(updated, action)
        updated["version"] = current["version"] + 1
        updated["lastModifiedAt"] = _now()
        self.store["subscriptions"][current["id"]] = updated
        return copy.deepcopy(updated)


def _set_key(sub: JSON, action: JSON) -> None:
    if action.get("key") is None:
        sub.pop("key", None)
    else:
        sub["key"] = action["key"]


def _change_destination(sub: JSON, action: JSON) -> None:
    if not isinstance(action.get("destination"), dict):
        raise ApiError(400, "InvalidJsonInput", "Missing required field 'destination'.")
    sub["destination"] = action["destination"]


_SUBSCRIPTION_ACTIONS: dict[str, Callable[[JSON, JSON], None]] = {
    "setMessages": lambda sub, action: sub.__setitem__("messages", action.get("messages") or []),
    "setChanges": lambda sub, action: sub.__setitem__("changes", action.get("changes") or []),
    "setEvents": lambda sub, action: sub.__setitem__("events", action.get("events") or []),
    "changeDestination": _change_destination,
    "setKey": _set_key,
}


# ------------------------------------------------------------------------------------------ helpers


def _parse_body(body: bytes, content_type: str) -> Any | None:
    if not body:
        return None
    text = body.decode("utf-8", errors="replace")
    if "application/x-www-form-urlencoded" in content_type:
        return {k: v[-1] for k, v in parse_qs(text, keep_blank_values=True).items()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError as exc:
        raise ApiError(400, "InvalidJsonInput", f"Request body does not contain valid JSON: {exc}") from exc


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except ValueError:
        return None, None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else (None, None)


def _last(params: Mapping[str, list[str]], name: str, default: str) -> str:
    values = params.get(name)
    return values[-1] if values else default


def _int_param(params: Mapping[str, list[str]], name: str, default: int, maximum: int) -> int:
    raw = _last(params, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(f"Malformed parameter: {name}: '{raw}' is not a number.") from None
    if not 0 <= value <= maximum:
        raise _invalid(f"Malformed parameter: {name}: must be between 0 and {maximum}, got {value}.")
    return value


def _optional_version(params: Mapping[str, list[str]]) -> int | None:
    raw = _last(params, "version", "")
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise _invalid(f"Malformed parameter: version: '{raw}' is not a number.") from None


def _parse_sort(spec: str) -> tuple[str, bool]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)(?:\s+(asc|desc))?\s*", spec, re.IGNORECASE)
    if m is None:
        raise _invalid(f"Malformed parameter: sort: '{spec}'.")
    return m.group(1), (m.group(2) or "asc").lower() == "desc"


def _dig(obj: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _sort_key(value: Any) -> tuple[int, int, Any]:
    if value is None:
        return (1, 0, 0)
    kind = _kind(value)
    if kind in ("bool", "number"):
        return (0, 0, float(value))
    if kind == "string":
        return (0, 1, value)
    return (0, 2, json.dumps(value, sort_keys=True))


def _check_custom_object_id(name: str, value: str) -> None:
    if not _CUSTOM_OBJECT_ID.match(value) or len(value) > 256:
        raise _invalid(f"Invalid {name} '{value}': must match ^[-_~.a-zA-Z0-9]+$.")


def _strip_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_strip_nulls(v) for v in value]
    return value


def _projection(product: JSON, staged: bool) -> JSON | None:
    master = product.get("masterData") or {}
    if not staged and not master.get("published"):
        return None
    data = master.get("staged" if staged else "current") or master.get("current")
    if data is None:
        return None
    base = {k: v for k, v in product.items() if k != "masterData"}
    return {
        **base,
        **data,
        "published": bool(master.get("published")),
        "hasStagedChanges": bool(master.get("hasStagedChanges")),
    }


class _Table(dict):  # type: ignore[type-arg]
    """A resource's objects by id, with the list sorted by id cached until a key is added or removed."""

    def __init__(self) -> None:
        super().__init__()
        self._sorted: list[JSON] | None = None
        self._ids: list[str] | None = None

    def __setitem__(self, key: str, value: JSON) -> None:
        self._sorted = self._ids = None  # a new object, or a new version of one
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._sorted = self._ids = None
        super().__delitem__(key)

    def pop(self, *args: Any) -> Any:
        self._sorted = self._ids = None
        return super().pop(*args)

    def by_id(self) -> list[JSON]:
        if self._sorted is None:
            self._sorted = sorted(self.values(), key=lambda o: o["id"])
        return self._sorted

    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [o["id"] for o in self.by_id()]
        return self._ids


_AFTER_ID = re.compile(r'^\s*id\s*>\s*("(?:[^"\\]|\\.)*")\s*$')


def _keyset_page(items: list[JSON], ids: list[str], wheres: list[str], nodes: list[Node], limit: int) -> list[JSON]:
    """`sort=id asc`, no offset, no total: what keyset paging asks. Items are sorted by id already (`ids` are
    theirs), so start after the `id > "x"` predicate by bisection and stop at `limit`, instead of filtering
    everything."""
    start = 0
    for text in wheres:
        match = _AFTER_ID.match(text)
        if match:
            start = max(start, bisect.bisect_right(ids, json.loads(match.group(1))))
    found = []
    for obj in itertools.islice(items, start, None):  # not a copy of the rest of the list
        if all(_evaluate(n, obj) for n in nodes):
            found.append(obj)
            if len(found) == limit:
                break
    return found
