"""Import requests: the reference's HTTP bodies plus our filters, checked and normalised in one place.

The same options come from the HTTP routes (JSON body) and from the CLI (flags), and are stored as is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from job.state import IMPORT_TYPES
from shared.commercetools import literal

_ID = re.compile(r"^[A-Za-z0-9_.:~-]{1,256}$")
_FILTERS = {
    "ids": ("customers", "orders", "categories", "products"),
    "startId": ("customers", "orders", "categories", "products"),
    "createdFrom": ("customers", "orders"),
    "createdTo": ("customers", "orders"),
    "modifiedFrom": ("customers", "orders"),
    "modifiedTo": ("customers", "orders"),
}


class BadRequest(ValueError):
    pass


def parse_request(import_type: str, body: Any) -> dict[str, Any]:
    """Check a request body for `import_type`; returns the options to store. `BadRequest` says what is wrong."""
    if import_type not in IMPORT_TYPES:
        raise BadRequest(f"unknown import type '{import_type}' (one of {', '.join(IMPORT_TYPES)})")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    known = set(_FILTERS) | {"deleteAll", "confirmDeletion"}
    unknown = sorted(set(body) - known)
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)}")
    options: dict[str, Any] = {}
    for name, types in _FILTERS.items():
        if body.get(name) in (None, [], ""):
            continue
        if import_type not in types:
            raise BadRequest(f"'{name}' does not apply to {import_type}")
        options[name] = _ids(name, body[name]) if name == "ids" else _value(name, body[name])
    if body.get("deleteAll"):
        if import_type not in ("categories", "products"):
            raise BadRequest("deleteAll applies to categories and products only")
        if body.get("confirmDeletion") != import_type:
            raise BadRequest(f'deleteAll deletes every {import_type[:-1]} in Klaviyo: confirm it with '
                             f'"confirmDeletion": "{import_type}"')
        if len(options) > 0:
            raise BadRequest("deleteAll cannot be combined with filters")
        options["deleteAll"] = True
    for low, high in (("createdFrom", "createdTo"), ("modifiedFrom", "modifiedTo")):
        if low in options and high in options and options[low] > options[high]:
            raise BadRequest(f"{low} is after {high}")
    return options


def _ids(name: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and _ID.match(v) for v in value):
        raise BadRequest(f"'{name}' must be a list of ids")
    if len(value) > 500:
        raise BadRequest(f"'{name}' holds more than 500 ids; use a filter or several requests")
    return value


def _value(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string")
    if name == "startId":
        if not _ID.match(value):
            raise BadRequest("'startId' is not an id")
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"'{name}' must be an ISO 8601 date-time such as 2026-01-31T00:00:00Z") from None
    if moment.tzinfo is None:
        raise BadRequest(f"'{name}' needs a time zone (add Z for UTC)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def where_clauses(options: dict[str, Any]) -> list[str]:
    """commercetools predicates for the stored filters (ids, startId, createdAt / lastModifiedAt ranges)."""
    clauses = []
    if options.get("ids"):
        clauses.append(f"id in ({', '.join(literal(i) for i in options['ids'])})")
    if options.get("startId"):
        clauses.append(f"id >= {literal(options['startId'])}")
    for option, field_name, operator in (("createdFrom", "createdAt", ">="), ("createdTo", "createdAt", "<="),
                                         ("modifiedFrom", "lastModifiedAt", ">="),
                                         ("modifiedTo", "lastModifiedAt", "<=")):
        if options.get(option):
            clauses.append(f"{field_name} {operator} {literal(options[option])}")
    return clauses
