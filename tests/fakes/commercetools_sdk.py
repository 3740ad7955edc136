"""Check that commercetools data used by the tests and the demo has the shape of the real API, with the models of
the `commercetools` SDK (a test dependency, pinned in pyproject.toml; generated from commercetools' API schema).

The SDK's models are marshmallow schemas, lenient in three ways a check must not be: they drop unknown fields,
accept a required field that is missing (every field is ``allow_none`` with a ``None`` default) and coerce some
wrong types (``"12"`` for an integer). So a resource is loaded, dumped again and compared with what was given
(a round trip): a key the dump lacks is unknown, a required key (one the SDK does not mark ``omit_empty``) that
comes back ``None`` but was not given is missing, a leaf whose JSON type changed had a wrong type. A type the
schema cannot load at all is reported with marshmallow's message.
"""

from __future__ import annotations

import importlib
import re
import threading
import warnings
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["RESOURCE_MODELS", "check_notification", "check_resource"]

#: The stand-in's resource names → the SDK's model class name.
RESOURCE_MODELS = {
    "customers": "Customer",
    "orders": "Order",
    "payments": "Payment",
    "categories": "Category",
    "products": "Product",
    "product-projections": "ProductProjection",
    "inventory": "InventoryEntry",
    "custom-objects": "CustomObject",
    "subscriptions": "Subscription",
}

#: Fields real API responses carry that the SDK's generated models do not declare (its schema lags the API),
#: each allowed only where named: (SDK model or "*" for any, dotted path of the object holding it without list
#: indices, field). None of them is read by the connector; they stay in the fixtures because real data has them.
UNDECLARED_BY_THE_SDK: frozenset[tuple[str, str, str]] = frozenset({
    ("*", "", "versionModifiedAt"),  # when the version last changed by a write (resources updated since 2019)
    ("*", "createdBy", "isPlatformClient"),  # ClientLogging of a change made by a platform client
    ("*", "lastModifiedBy", "isPlatformClient"),
    ("Product", "", "lastMessageSequenceNumber"),
    ("Product", "", "lastVariantId"),
    ("Order", "", "type"),  # "Order"
    ("Order", "lineItems.productType", "version"),  # a line item's product type reference carries its version
})


_lock = threading.Lock()

# Message fields that hold a whole resource (OrderCreated's ``order``, ...): the resource's allowances apply there.
_EMBEDDED = {"order": "Order", "customer": "Customer", "category": "Category", "payment": "Payment",
             "productProjection": "ProductProjection", "inventoryEntry": "InventoryEntry"}

# Keys of a subscription's Message delivery (Platform format) that are not fields of the message itself.
_DELIVERY_KEYS = ("notificationType", "projectKey", "payloadNotIncluded")


@cache
def _models() -> Any:
    with warnings.catch_warnings():  # the SDK's import warns about marshmallow deprecations
        warnings.simplefilter("ignore")
        from commercetools.platform import models
    return models


@cache
def _schema(name: str) -> Any:
    """One instance of the model's marshmallow schema, reused (building one per call costs ~40 ms for an order)."""
    model = getattr(_models(), name, None)
    if model is None:
        raise LookupError(f"the commercetools SDK has no model {name!r}")
    module = importlib.import_module(model.__module__.replace(".models.", ".models._schemas.", 1))
    return getattr(module, f"{name}Schema")()


def check_resource(resource: str, obj: Any) -> list[str]:
    """Problems with ``obj`` as a stored commercetools ``resource`` (``"orders"``, ...), as ``"path: message"``."""
    return check_model(RESOURCE_MODELS[resource], obj)


def check_notification(notification: Any) -> list[str]:
    """Problems with a subscription delivery: a Message (checked as the message type it names) or a change
    notification (ResourceCreated / ResourceUpdated / ResourceDeleted)."""
    if not isinstance(notification, dict):
        return [f"body: expected an object, got {type(notification).__name__}"]
    kind = notification.get("notificationType")
    if kind == "Message":
        message = {k: v for k, v in notification.items() if k not in _DELIVERY_KEYS}
        name = f"{notification.get('type')}Message"
        if getattr(_models(), name, None) is None:  # noqa: B009
            return [f"type: the commercetools SDK knows no message {notification.get('type')!r}"]
        problems = check_model(name, message)
        if not isinstance(notification.get("projectKey"), str):
            problems.append("projectKey: a Message delivery names its project")
        return problems
    if kind in ("ResourceCreated", "ResourceUpdated", "ResourceDeleted"):
        return check_model(f"{kind}DeliveryPayload", notification)
    return [f"notificationType: {kind!r} is not a delivery the connector subscribes to"]


def check_model(name: str, obj: Any) -> list[str]:
    """Load ``obj`` with the SDK's model ``name``, dump it again and report what changed (see the module doc)."""
    import marshmallow

    schema = _schema(name)
    if not isinstance(obj, dict):
        return [f"body: expected an object, got {type(obj).__name__}"]
    try:
        with _lock, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kept = schema.dump(schema.load(obj))
    except marshmallow.ValidationError as error:
        return [f"{path}: {message}" for path, message in _flatten(error.messages, "")]
    except (TypeError, ValueError, AttributeError) as error:  # the SDK fails this way on some wrong shapes
        return [f"body: the SDK's model cannot load it ({type(error).__name__}: {error})"]
    out: list[str] = []
    _compare(obj, kept, "", out, lambda where, key: _undeclared(name, where, key))
    return out


def _undeclared(model: str, where: str, key: str) -> bool:
    """Whether ``key`` of the object at ``where`` in a ``model`` is one of `UNDECLARED_BY_THE_SDK`."""
    places = [(model, where)]
    head, _, rest = where.partition(".")
    if model.endswith("Message") and head in _EMBEDDED:
        places.append((_EMBEDDED[head], rest))
    return any((m, path, key) in UNDECLARED_BY_THE_SDK or ("*", path, key) in UNDECLARED_BY_THE_SDK
               for m, path in places)


def _flatten(messages: Any, path: str) -> list[tuple[str, str]]:
    if isinstance(messages, dict):
        return [item for key, sub in messages.items() for item in _flatten(sub, _join(path, key))]
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(path or "body", " ".join(messages))]
    if isinstance(messages, list):
        return [item for sub in messages for item in _flatten(sub, path)]
    return [(path or "body", str(messages))]


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _compare(sent: Any, kept: Any, path: str, out: list[str], allowed: Callable[[str, str], bool]) -> None:
    where = path or "body"
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key, value in sent.items():
            if key not in kept:
                if not allowed(re.sub(r"\[\d+\]", "", path), key):
                    out.append(f"{where}: unknown field '{key}' (the SDK's model dropped it)")
            elif value is not None and kept[key] is None:
                out.append(f"{_join(path, key)}: the SDK's model could not read this value (dropped it)")
            else:
                _compare(value, kept[key], _join(path, key), out, allowed)
        for key, value in kept.items():
            if value is None and sent.get(key) is None:
                out.append(f"{where}: missing required '{key}'")
    elif isinstance(sent, list) and isinstance(kept, list):
        if len(sent) != len(kept):
            out.append(f"{where}: the SDK's model kept {len(kept)} of {len(sent)} items")
        for index, (a, b) in enumerate(zip(sent, kept, strict=False)):
            _compare(a, b, _join(path, index), out, allowed)
    elif _json_type(sent) != _json_type(kept):
        out.append(f"{where}: expected {_json_type(kept)}, got {_json_type(sent)} ({sent!r})")
    elif isinstance(sent, int | float) and isinstance(kept, int) and not isinstance(sent, int):
        out.append(f"{where}: expected an integer, got {sent!r}")
