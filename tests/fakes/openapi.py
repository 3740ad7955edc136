"""Check Klaviyo API requests (and the fake's responses) against Klaviyo's official OpenAPI spec.

Stdlib only. The spec lives outside the repository (``../shared/klaviyo-openapi/`` beside the repo root, or
the directory named by ``KLAVIYO_OPENAPI_DIR``); `load_validator` returns None where it is absent, so callers
skip validation rather than fail.

Schemas are compiled once into closures, so validating a 1,000-event bulk body takes a few tens of ms. Objects
declaring ``properties`` without ``additionalProperties`` are treated as closed: an unknown key is an error,
which is what catches misspelt attribute names.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "ENV_DIR",
    "SPEC_FILE",
    "Issue",
    "OpenApiValidator",
    "Operation",
    "iter_operations",
    "load_validator",
    "spec_path",
]

SPEC_FILE = "stable-2026-07-15.json"
ENV_DIR = "KLAVIYO_OPENAPI_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT.parent / "shared" / "klaviyo-openapi"

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_JSON_TYPES = ("application/vnd.api+json", "application/json")

PathPart = str | int
Check = Callable[[Any, tuple[PathPart, ...], list["Issue"]], None]


@dataclass(frozen=True)
class Issue:
    """One validation problem; `path` locates it in the body (None: the request as a whole)."""

    path: tuple[PathPart, ...] | None
    message: str
    field: str | None = None  # the missing or unknown key, for `pointer`

    @property
    def location(self) -> str:
        """``data.attributes.events[2].value`` style; ``body`` for the root."""
        if self.path is None:
            return ""
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out or "body"

    @property
    def pointer(self) -> str | None:
        """The JSON pointer (RFC 6901) of the location, e.g. ``/data/attributes/metric``."""
        if self.path is None:
            return None
        parts = (*self.path, self.field) if self.field is not None else self.path
        return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.path is not None else self.message


@dataclass(frozen=True)
class Operation:
    """One operation of the spec: method, path template and its OpenAPI object."""

    method: str
    template: str
    spec: dict[str, Any]

    @property
    def operation_id(self) -> str | None:
        return self.spec.get("operationId")

    @property
    def rate_limit(self) -> dict[str, str] | None:
        return self.spec.get("x-klaviyo-ratelimit")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_integer(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": _is_integer,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
}


def _is_datetime(value: str) -> bool:
    if len(value) < 16 or value[10] not in "Tt ":
        return False
    try:
        datetime.fromisoformat(value[:-1] + "+00:00" if value[-1] in "zZ" else value)
    except ValueError:
        return False
    return True


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


_FORMATS: dict[str, Callable[[str], bool]] = {"date-time": _is_datetime, "date": _is_date}


def _same(value: Any, allowed: Any) -> bool:
    """JSON equality: ``True`` is not ``1``."""
    return value == allowed and isinstance(value, bool) == isinstance(allowed, bool)


def _normalise_path(path: str) -> str:
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/") or "/"


class OpenApiValidator:
    """Validates request bodies (and, for the fake's tests, response bodies) against an OpenAPI 3.0 spec."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.revision: str | None = (spec.get("info") or {}).get("version")
        self._lock = threading.RLock()
        self._compiled: dict[int, Check] = {}
        self._keep: list[dict[str, Any]] = []  # merged allOf schemas: their ids key `_compiled`
        self._literal: dict[tuple[str, str], Operation] = {}
        self._templated: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}
        for template, item in (spec.get("paths") or {}).items():
            for method, op in item.items():
                if method not in _METHODS:
                    continue
                operation = Operation(method.upper(), template, op)
                key = template.rstrip("/") or "/"
                if "{" not in template:
                    self._literal[(method.upper(), key)] = operation
                    continue
                pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(key))
                self._templated.setdefault(method.upper(), []).append((re.compile(pattern), operation))
        for candidates in self._templated.values():  # prefer the template with the most literal segments
            candidates.sort(key=lambda c: -sum("{" not in s for s in c[1].template.split("/")))

    # --- operations -----------------------------------------------------------------------------------------

    def find(self, method: str, path: str) -> Operation | None:
        """The operation serving ``method path`` (a concrete path: ``/api/catalog-items/$custom:::x``)."""
        method, path = method.upper(), _normalise_path(path)
        found = self._literal.get((method, path))
        if found is not None:
            return found
        for pattern, operation in self._templated.get(method, ()):
            if pattern.fullmatch(path):
                return operation
        return None

    def operation_id(self, method: str, path: str) -> str | None:
        op = self.find(method, path)
        return op.operation_id if op else None

    def rate_limit(self, method: str, path: str) -> dict[str, str] | None:
        """The operation's ``x-klaviyo-ratelimit``, e.g. ``{"burst": "350/s", "steady": "3500/m"}``."""
        op = self.find(method, path)
        return op.rate_limit if op else None

    # --- validation -----------------------------------------------------------------------------------------

    def validate(self, method: str, path: str, body: Any | None) -> list[str]:
        """Problems with a request, as ``"data.attributes.value: expected number, got str"`` strings."""
        return [str(issue) for issue in self.check(method, path, body)]

    def check(self, method: str, path: str, body: Any | None) -> list[Issue]:
        """Like `validate`, with structured issues (location and JSON pointer)."""
        op = self.find(method, path)
        if op is None:
            return [Issue(None, f"no operation {method.upper()} {_normalise_path(path)} in the OpenAPI spec")]
        request = op.spec.get("requestBody")
        if request is not None and "$ref" in request:
            request = self._resolve(request["$ref"])
        if request is None:
            return [] if body is None else [Issue((), "this operation takes no request body")]
        schema = self._json_schema(request.get("content") or {})
        if body is None:
            return [Issue((), "missing required request body")] if request.get("required") else []
        return self.check_schema(schema, body) if schema is not None else []

    def validate_response(self, method: str, path: str, status: int, body: Any | None) -> list[str]:
        """Problems with a response body, against the schema the spec gives for ``status``."""
        op = self.find(method, path)
        if op is None:
            return [f"no operation {method.upper()} {_normalise_path(path)} in the OpenAPI spec"]
        responses = op.spec.get("responses") or {}
        response = (responses.get(str(status)) or responses.get(f"{str(status)[0]}XX")
                    or responses.get("default"))
        if response is None:
            return [f"status {status} is not documented for {op.method} {op.template}"]
        if "$ref" in response:
            response = self._resolve(response["$ref"])
        schema = self._json_schema(response.get("content") or {})
        if schema is None:
            return [] if body is None else ["body: this response has no body in the spec"]
        if body is None:
            return ["body: missing response body"]
        return [str(issue) for issue in self.check_schema(schema, body)]

    def check_schema(self, schema: dict[str, Any] | str, value: Any) -> list[Issue]:
        """Validate ``value`` against a schema dict or a component name (``"EventCreateQueryV2"``)."""
        if isinstance(schema, str):
            schema = self.schema(schema)
        out: list[Issue] = []
        self._compile(schema)(value, (), out)
        return out

    def schema(self, name: str) -> dict[str, Any]:
        """The component schema ``name``, unresolved."""
        return self.spec["components"]["schemas"][name]

    def request_schema(self, method: str, path: str) -> dict[str, Any] | None:
        """The JSON request-body schema of an operation, if any."""
        op = self.find(method, path)
        request = (op.spec.get("requestBody") if op else None) or {}
        return self._json_schema(request.get("content") or {})

    # --- schema compilation ---------------------------------------------------------------------------------

    def _json_schema(self, content: dict[str, Any]) -> dict[str, Any] | None:
        for media in (*_JSON_TYPES, *(m for m in content if "json" in m)):
            if media in content:
                return content[media].get("schema")
        return None

    def _resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, not {ref!r}")
        node: Any = self.spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _compile(self, schema: dict[str, Any]) -> Check:
        key = id(schema)
        check = self._compiled.get(key)
        if check is not None:
            return check
        with self._lock:
            check = self._compiled.get(key)
            if check is not None:
                return check
            cell: list[Check] = []
            self._compiled[key] = lambda v, p, out: cell[0](v, p, out)  # a stand-in while recursing
            cell.append(self._build(schema))
            self._compiled[key] = cell[0]
            return cell[0]

    def _merge_all_of(self, schema: dict[str, Any]) -> dict[str, Any]:
        """One schema equivalent to ``allOf`` (so an object's known keys are those of all its parts)."""
        merged: dict[str, Any] = {}
        for part in [*schema["allOf"], {k: v for k, v in schema.items() if k != "allOf"}]:
            self._merge_into(merged, part)
        self._keep.append(merged)
        return merged

    def _merge_into(self, target: dict[str, Any], part: dict[str, Any]) -> None:
        while "$ref" in part:
            part = {**self._resolve(part["$ref"]), **{k: v for k, v in part.items() if k != "$ref"}}
        if "allOf" in part:
            part = self._merge_all_of(part)
        for key, value in part.items():
            if key == "properties":
                props = target.setdefault("properties", {})
                for name, sub in value.items():
                    if name in props:
                        both: dict[str, Any] = {}
                        self._merge_into(both, props[name])
                        self._merge_into(both, sub)
                        props[name] = both
                        self._keep.append(both)
                    else:
                        props[name] = sub
            elif key == "required":
                target["required"] = [*target.get("required", []), *value]
            else:
                target[key] = value

    def _build(self, schema: dict[str, Any]) -> Check:
        if "$ref" in schema:
            target = self._compile(self._resolve(schema["$ref"]))
            if not schema.get("nullable"):
                return target
            return lambda v, p, out: None if v is None else target(v, p, out)
        if "allOf" in schema:
            return self._compile(self._merge_all_of(schema))

        nullable = bool(schema.get("nullable"))
        kind = schema.get("type")
        steps = self._steps(schema)
        if kind is None:

            def untyped(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
                if v is None and nullable:
                    return
                for step in steps:
                    step(v, p, out)

            return untyped

        test = _TYPE_TESTS.get(kind)
        if test is None:
            raise ValueError(f"unsupported type {kind!r}")

        def typed(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
            if v is None:
                if not nullable:
                    out.append(Issue(p, f"expected {kind}, got null"))
                return
            if not test(v):
                out.append(Issue(p, f"expected {kind}, got {_type_name(v)}"))
                return
            for step in steps:
                step(v, p, out)

        return typed

    def _steps(self, schema: dict[str, Any]) -> list[Check]:
        steps: list[Check] = []
        if "enum" in schema:
            steps.append(_enum_step(schema["enum"]))
        fmt = _FORMATS.get(schema.get("format", ""))
        if fmt is not None:
            steps.append(_format_step(schema["format"], fmt))
        if any(k in schema for k in ("minLength", "maxLength")):
            steps.append(_length_step(schema.get("minLength"), schema.get("maxLength")))
        if any(k in schema for k in ("minimum", "maximum")):
            steps.append(_range_step(schema.get("minimum"), schema.get("maximum")))
        if any(k in schema for k in ("properties", "required", "additionalProperties", "maxProperties")):
            steps.append(self._object_step(schema))
        if any(k in schema for k in ("items", "minItems", "maxItems")):
            steps.append(self._array_step(schema))
        if "oneOf" in schema:
            steps.append(self._choice_step([self._compile(s) for s in schema["oneOf"]], exactly_one=True))
        if "anyOf" in schema:
            steps.append(self._choice_step([self._compile(s) for s in schema["anyOf"]], exactly_one=False))
        return steps

    def _object_step(self, schema: dict[str, Any]) -> Check:
        props = {name: self._compile(sub) for name, sub in (schema.get("properties") or {}).items()}
        required = tuple(schema.get("required") or ())
        extra = schema.get("additionalProperties")
        closed = extra is False or ("properties" in schema and extra is None)
        extra_check = self._compile(extra) if isinstance(extra, dict) else None
        max_props = schema.get("maxProperties")

        def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
            if not isinstance(v, dict):
                return
            for name in required:
                if name not in v:
                    out.append(Issue(p, f"missing required '{name}'", name))
            for name, item in v.items():
                check = props.get(name)
                if check is not None:
                    check(item, (*p, name), out)
                elif closed:
                    out.append(Issue(p, f"unknown field '{name}'", name))
                elif extra_check is not None:
                    extra_check(item, (*p, name), out)
            if max_props is not None and len(v) > max_props:
                out.append(Issue(p, f"has {len(v)} fields, more than {max_props}"))

        return step

    def _array_step(self, schema: dict[str, Any]) -> Check:
        items = self._compile(schema["items"]) if "items" in schema else None
        low, high = schema.get("minItems"), schema.get("maxItems")

        def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
            if not isinstance(v, list):
                return
            if low is not None and len(v) < low:
                out.append(Issue(p, f"has {len(v)} items, fewer than {low}"))
            if high is not None and len(v) > high:
                out.append(Issue(p, f"has {len(v)} items, more than {high}"))
            if items is not None:
                for i, item in enumerate(v):
                    items(item, (*p, i), out)

        return step

    @staticmethod
    def _choice_step(branches: list[Check], *, exactly_one: bool) -> Check:
        keyword = "oneOf" if exactly_one else "anyOf"

        def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
            failures: list[Issue] = []
            matched = 0
            for branch in branches:
                found: list[Issue] = []
                branch(v, p, found)
                if found:
                    failures.extend(found[:1])
                else:
                    matched += 1
            if matched == 0:
                why = "; ".join(str(f) for f in failures)
                out.append(Issue(p, f"matches none of the {keyword} alternatives ({why})"))
            elif matched > 1 and exactly_one and isinstance(v, dict):
                out.append(Issue(p, f"matches {matched} of the oneOf alternatives, expected exactly one"))

        return step


def _enum_step(allowed: list[Any]) -> Check:
    def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
        if not any(_same(v, a) for a in allowed):
            out.append(Issue(p, f"{v!r} is not one of {allowed!r}"))

    return step


def _format_step(name: str, test: Callable[[str], bool]) -> Check:
    def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
        if isinstance(v, str) and not test(v):
            out.append(Issue(p, f"{v!r} is not a valid {name}"))

    return step


def _length_step(low: int | None, high: int | None) -> Check:
    def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
        if not isinstance(v, str):
            return
        if low is not None and len(v) < low:
            out.append(Issue(p, f"is shorter than {low} characters"))
        if high is not None and len(v) > high:
            out.append(Issue(p, f"is longer than {high} characters"))

    return step


def _range_step(low: float | None, high: float | None) -> Check:
    def step(v: Any, p: tuple[PathPart, ...], out: list[Issue]) -> None:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return
        if low is not None and v < low:
            out.append(Issue(p, f"{v!r} is less than the minimum {low!r}"))
        if high is not None and v > high:
            out.append(Issue(p, f"{v!r} is more than the maximum {high!r}"))

    return step


# --- loading ------------------------------------------------------------------------------------------------

_cache: dict[Path, OpenApiValidator] = {}
_cache_lock = threading.Lock()


def spec_path() -> Path:
    """Where the full spec is expected: ``$KLAVIYO_OPENAPI_DIR`` (a directory or the file) or the default."""
    configured = os.environ.get(ENV_DIR)
    if configured:
        path = Path(configured).expanduser()
        return path if path.suffix == ".json" else path / SPEC_FILE
    return DEFAULT_DIR / SPEC_FILE


def load_validator() -> OpenApiValidator | None:
    """The validator for the spec at `spec_path`, loaded once; None when the spec is not there."""
    path = spec_path()
    with _cache_lock:
        if path not in _cache:
            if not path.is_file():
                return None
            _cache[path] = OpenApiValidator(json.loads(path.read_text("utf-8")))
        return _cache[path]


def iter_operations(validator: OpenApiValidator) -> Iterable[Operation]:
    """Every operation of the spec (for exhaustive tests)."""
    for template, item in (validator.spec.get("paths") or {}).items():
        for method, op in item.items():
            if method in _METHODS:
                yield Operation(method.upper(), template, op)
