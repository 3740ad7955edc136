"""Check Klaviyo API requests (and the stand-in's answers) against the official `klaviyo-api` SDK's models.

The SDK (a test dependency, pinned in pyproject.toml) is generated from one revision of Klaviyo's OpenAPI spec
and records that revision in `REVISION` (the ``revision`` header its client sends). Its API modules name, for
every operation, the HTTP method, the path template, the request body model, the response models by status,
and (in the docstrings) the rate limits. `SdkValidator` reads those facts from the modules' source, without
importing the 24 API modules (that takes seconds), and imports only the models a request needs.

The SDK's pydantic models reject wrong types and missing required fields but silently ignore unknown fields;
so a body is validated by the model and then compared with what the model kept (a round trip): every key the
model dropped is reported as an unknown field. That is what catches misspelt attribute names.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, get_args, get_origin
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

__all__ = ["REVISION", "Issue", "Operation", "SdkValidator", "iter_operations", "load_validator", "sdk_revision"]

PathPart = str | int

_SERIALIZE = re.compile(r"    def _(\w+)_serialize\(.*?(?=\n    def |\Z)", re.S)
_METHOD = re.compile(r"method='(\w+)'")
_RESOURCE_PATH = re.compile(r"resource_path='([^']+)'")
_BODY = re.compile(r"_body_params = (\w+)")
_MODEL_IMPORT = re.compile(r"^from openapi_client\.models\.(\w+) import (\w+)$", re.M)
_RATE = re.compile(r"\*Rate limits\*:<br>Burst: `([^`]+)`<br>Steady: `([^`]+)`")
_RESPONSES = re.compile(r"_response_types_map: Dict\[str, Optional\[str\]\] = \{(.*?)\}", re.S)
_ANNOTATED = re.compile(r"Annotated\[(\w+),")
_FILTER_DOC = re.compile(r"filter: Annotated\[.*?Allowed field\(s\)/operator\(s\):<br>(.*?)\"\)\]")
_FILTER_FIELD = re.compile(r"`([^`]+)`: ((?:`[^`]+`(?:, )?)+)")


def sdk_revision() -> str:
    """The Klaviyo API revision the installed SDK was generated from and sends in its ``revision`` header."""
    from klaviyo_api.wrapper import KlaviyoAPI

    return KlaviyoAPI._REVISION


REVISION = sdk_revision()


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
    """One operation of the SDK: method, path template, request model and response models."""

    method: str
    template: str
    operation_id: str
    body_model: str | None  # class name in `openapi_client.models`
    model_module: str | None
    responses: dict[str, str | None] = field(default_factory=dict, compare=False)  # status → model name
    response_modules: dict[str, str] = field(default_factory=dict, compare=False)
    rate_limit: dict[str, str] | None = field(default=None, compare=False)
    filters: dict[str, frozenset[str]] = field(default_factory=dict, compare=False)  # field → operators allowed

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(self.template)))


def _sdk_root() -> Path:
    spec = importlib.util.find_spec("openapi_client")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the klaviyo-api SDK (module openapi_client) is not installed: pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _read_operations(root: Path) -> list[Operation]:
    operations: list[Operation] = []
    for source_file in sorted((root / "api").glob("*_api.py")):
        source = source_file.read_text("utf-8")
        modules = {name: module for module, name in _MODEL_IMPORT.findall(source)}
        for match in _SERIALIZE.finditer(source):
            name, block = match.group(1), match.group(0)
            public = re.search(rf"    def {name}\(.*?(?=\n    def )", source, re.S)
            if public is None:
                raise ValueError(f"klaviyo-api: no public method for {name}")
            body_model = None
            body = _BODY.search(block)
            if body is not None:
                annotation = re.search(rf"\b{body.group(1)}: ([^\n]+?),?\n", public.group(0))
                if annotation is None:
                    raise ValueError(f"klaviyo-api: no type for the body of {name}")
                text = annotation.group(1)
                inner = _ANNOTATED.match(text)
                body_model = inner.group(1) if inner else text
                if body_model not in modules:
                    raise ValueError(f"klaviyo-api: {name} takes {text!r}, not a model")
            rate = _RATE.search(public.group(0))
            filter_doc = _FILTER_DOC.search(public.group(0))
            filters = {key: frozenset(re.findall(r"`([^`]+)`", operators))
                       for key, operators in _FILTER_FIELD.findall(filter_doc.group(1))} if filter_doc else {}
            responses_text = _RESPONSES.search(public.group(0))
            responses = dict(re.findall(r"'(\w+)': \"?(\w+)\"?", responses_text.group(1))) if responses_text else {}
            responses = {status: (None if model == "None" else model) for status, model in responses.items()}
            operations.append(Operation(
                method=_METHOD.search(block).group(1),  # type: ignore[union-attr]
                template=_RESOURCE_PATH.search(block).group(1),  # type: ignore[union-attr]
                operation_id=name,
                body_model=body_model,
                model_module=modules.get(body_model) if body_model else None,
                responses=responses,
                response_modules={m: modules[m] for m in responses.values() if m and m in modules},
                rate_limit={"burst": rate.group(1), "steady": rate.group(2)} if rate else None,
                filters=filters,
            ))
    return operations


@cache
def _model(module: str, name: str) -> type[BaseModel]:
    return getattr(importlib.import_module(f"openapi_client.models.{module}"), name)


def _normalise_path(path: str) -> str:
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0]
    return path.rstrip("/") or "/"


def _kept(value: Any) -> Any:
    """What a validated model holds, as JSON-like data under the wire names (the round trip's way back)."""
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return {(fields[name].alias or name): _kept(getattr(value, name)) for name in value.model_fields_set}
    if isinstance(value, list | tuple):
        return [_kept(v) for v in value]
    if isinstance(value, dict):
        return {k: _kept(v) for k, v in value.items()}
    return value


def _dropped(sent: Any, kept: Any, path: tuple[PathPart, ...], out: list[Issue]) -> None:
    """Keys of ``sent`` the model did not keep: fields the SDK's model does not know."""
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key, value in sent.items():
            if key not in kept:
                out.append(Issue(path, f"unknown field '{key}' (the SDK's model dropped it)", key))
            else:
                _dropped(value, kept[key], (*path, key), out)
    elif isinstance(sent, list) and isinstance(kept, list):
        for index, (a, b) in enumerate(zip(sent, kept, strict=False)):
            _dropped(a, b, (*path, index), out)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _issues(error: ValidationError, body: Any) -> list[Issue]:
    """pydantic's errors, located in the body (union branch tags and model names left out of the path)."""
    grouped: dict[tuple[tuple[PathPart, ...], str | None], tuple[list[str], str]] = {}
    for detail in error.errors(include_url=False):
        node, path = body, []
        loc = list(detail["loc"])
        missing_field: str | None = None
        for i, part in enumerate(loc):
            in_dict = isinstance(node, dict) and isinstance(part, str) and part in node
            if in_dict or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
                node, path = node[part], [*path, part]
            elif detail["type"] == "missing" and i == len(loc) - 1 and isinstance(part, str):
                missing_field = part
        key = (tuple(path), missing_field)
        messages, _ = grouped.setdefault(key, ([], _type_name(node)))
        message = f"missing required '{missing_field}'" if detail["type"] == "missing" else detail["msg"]
        if message not in messages:
            messages.append(message)
    return [Issue(path, " or ".join(messages) + ("" if missing else f" (got {got})"), missing)
            for (path, missing), (messages, got) in grouped.items()]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation can hold directly (through Optional, Union, Annotated; not inside containers)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (list, dict, tuple, set):
        return []
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _items_of(annotation: Any) -> Any | None:
    """The item annotation of a list annotation (through Optional, Annotated), if it is one."""
    if get_origin(annotation) is list:
        return get_args(annotation)[0]
    for arg in get_args(annotation):
        found = _items_of(arg)
        if found is not None:
            return found
    return None


def _unknown(model: type[BaseModel], body: Any, path: tuple[PathPart, ...], out: list[Issue]) -> None:
    """Keys no field of ``model`` declares, found from the model's declarations (for a body the model rejected,
    so that one answer lists every problem)."""
    if not isinstance(body, dict):
        return
    by_wire = {(info.alias or name): info.annotation for name, info in model.model_fields.items()}
    for key, value in body.items():
        if key not in by_wire:
            out.append(Issue(path, f"unknown field '{key}' (the SDK's model would drop it)", key))
            continue
        _unknown_in(by_wire[key], value, (*path, key), out)


def _unknown_in(annotation: Any, value: Any, path: tuple[PathPart, ...], out: list[Issue]) -> None:
    models = _models_in(annotation)
    if isinstance(value, dict) and len(models) == 1:
        _unknown(models[0], value, path, out)
    elif isinstance(value, list):
        items = _items_of(annotation)
        if items is not None:
            for index, item in enumerate(value):
                _unknown_in(items, item, (*path, index), out)


class SdkValidator:
    """Validates request bodies (and, for the stand-in's own tests, response bodies) with the SDK's models."""

    def __init__(self, operations: Iterable[Operation], revision: str) -> None:
        self.revision = revision
        self.operations = list(operations)
        self._lock = threading.Lock()
        self._literal: dict[tuple[str, str], Operation] = {}
        self._templated: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}
        for op in self.operations:
            key = op.template.rstrip("/") or "/"
            if "{" not in key:
                self._literal.setdefault((op.method, key), op)
            else:
                self._templated.setdefault(op.method, []).append((op.pattern, op))
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
        """The operation's rate limits as the SDK documents them, e.g. ``{"burst": "350/s", "steady": "3500/m"}``."""
        op = self.find(method, path)
        return op.rate_limit if op else None

    def request_model(self, method: str, path: str) -> type[BaseModel] | None:
        """The SDK's model of the operation's request body, if it takes one."""
        op = self.find(method, path)
        if op is None or op.body_model is None or op.model_module is None:
            return None
        return _model(op.model_module, op.body_model)

    # --- validation -----------------------------------------------------------------------------------------

    def validate(self, method: str, path: str, body: Any | None) -> list[str]:
        """Problems with a request, as ``"data.attributes.value: Input should be a valid number (got str)"``."""
        return [str(issue) for issue in self.check(method, path, body)]

    def check(self, method: str, path: str, body: Any | None) -> list[Issue]:
        """Like `validate`, with structured issues (location and JSON pointer)."""
        op = self.find(method, path)
        if op is None:
            return [Issue(None, f"no operation {method.upper()} {_normalise_path(path)} in the klaviyo-api SDK")]
        if op.body_model is None or op.model_module is None:
            return [] if body is None else [Issue((), "this operation takes no request body")]
        if body is None:
            return [Issue((), "missing required request body")]
        return self.check_model(_model(op.model_module, op.body_model), body)

    def check_model(self, model: type[BaseModel], body: Any) -> list[Issue]:
        """Validate ``body`` with ``model``, then report what the model dropped (unknown fields)."""
        if not isinstance(body, dict):
            return [Issue((), f"expected an object, got {_type_name(body)}")]
        try:
            instance = model.model_validate(body)
        except ValidationError as error:
            out = _issues(error, body)
            _unknown(model, body, (), out)
            return out
        out: list[Issue] = []
        _dropped(body, _kept(instance), (), out)
        return out

    def validate_response(self, method: str, path: str, status: int, body: Any | None) -> list[str]:
        """Problems with a response body, against the SDK's model for ``status``."""
        op = self.find(method, path)
        if op is None:
            return [f"no operation {method.upper()} {_normalise_path(path)} in the klaviyo-api SDK"]
        key = str(status) if str(status) in op.responses else f"{str(status)[0]}XX"
        if key not in op.responses:
            return [f"status {status} is not documented for {op.method} {op.template}"]
        name = op.responses[key]
        if name is None:
            return [] if body is None else ["body: this response has no body in the SDK"]
        if body is None:
            return ["body: missing response body"]
        return [str(issue) for issue in self.check_model(_model(op.response_modules[name], name), body)]


@cache
def load_validator() -> SdkValidator:
    """The validator for the installed `klaviyo-api` SDK, built once."""
    return SdkValidator(_read_operations(_sdk_root()), REVISION)


def iter_operations(validator: SdkValidator) -> Iterable[Operation]:
    """Every operation the SDK knows (for exhaustive tests)."""
    return iter(validator.operations)
