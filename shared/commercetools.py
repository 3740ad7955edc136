"""A thin commercetools HTTP API client: client-credentials auth, reads, keyset paging and custom objects.

Resources are plain JSON dicts as the API returns them. Not-found, conflict and throttling are distinct
errors (`NotFound`, `Conflict`, transient `ApiError`), never a silent `None`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from shared.config import CommercetoolsSettings
from shared.errors import ApiError, NotFound
from shared.http import RetryPolicy, Transport

SERVICE = "commercetools"
PAGE_SIZE = 500


def _parse_error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    errors = body.get("errors") or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    return {"code": first.get("code") or body.get("error"), "detail": first.get("message") or body.get("message")}


def literal(value: str) -> str:
    """A string literal for a query predicate (JSON quoting escapes quotes and backslashes)."""
    return json.dumps(value)


def object_key(text: str) -> str:
    """A custom object key for any id: the id itself where keys allow it (`[-_~.a-zA-Z0-9]`, 1-256), else its hash."""
    if re.fullmatch(r"[-_~.a-zA-Z0-9]{1,256}", text):
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()


IN_VALUES = 100  # values in one `in (...)` predicate: the URL stays well under 8,000 octets


def in_predicates(field: str, values: Iterable[str]) -> Iterator[str]:
    """`field in (...)` predicates of at most `IN_VALUES` values each (sorted, without repeats): one query each."""
    unique = sorted(set(values))
    for start in range(0, len(unique), IN_VALUES):
        yield f"{field} in ({', '.join(literal(v) for v in unique[start:start + IN_VALUES])})"


class Commercetools:
    def __init__(self, settings: CommercetoolsSettings, *, user_agent: str,
                 policy: RetryPolicy | None = None) -> None:
        self._settings = settings
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._api = Transport(SERVICE, settings.api_url, headers=headers, policy=policy or RetryPolicy(),
                              parse_error=_parse_error)
        self._auth = Transport(SERVICE, settings.auth_url, headers=headers, policy=policy or RetryPolicy(),
                               parse_error=_parse_error)
        self._token: str | None = None
        self._token_expiry = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Commercetools(project={self._settings.project_key!r})"

    def close(self) -> None:
        self._api.close()
        self._auth.close()

    # --- transport ----------------------------------------------------------------------------------------------

    def _access_token(self, stale: str | None = None) -> str:
        with self._lock:
            if self._token and self._token != stale and time.monotonic() < self._token_expiry:
                return self._token
            form = {"grant_type": "client_credentials"}
            if self._settings.scopes:
                form["scope"] = self._settings.scopes
            response = self._auth.request(
                "POST", "/oauth/token", data=form,
                auth=httpx.BasicAuth(self._settings.client_id, self._settings.client_secret))
            body = response.json()
            self._token = body["access_token"]
            self._token_expiry = time.monotonic() + max(60, int(body.get("expires_in", 3600)) - 300)
            return self._token

    def request(self, method: str, path: str, *, params: Any = None, json_body: Any = None,
                safe_to_retry: bool = True) -> Any:
        """Call `/{projectKey}{path}`; re-authenticates once when the token is refused (401)."""
        url = f"/{self._settings.project_key}{path}"
        token = self._access_token()
        for attempt in (1, 2):
            try:
                response = self._api.request(method, url, params=params, json=json_body,
                                             headers={"Authorization": f"Bearer {token}"},
                                             safe_to_retry=safe_to_retry)
            except ApiError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
                token = self._access_token(stale=token)
                continue
            return response.json() if response.content else None
        raise AssertionError("unreachable")

    # --- reads --------------------------------------------------------------------------------------------------

    def get(self, resource: str, resource_id: str, expand: Sequence[str] = ()) -> dict[str, Any]:
        params = [("expand", e) for e in expand]
        return self.request("GET", f"/{resource}/{quote(resource_id, safe='')}", params=params)

    def find(self, resource: str, resource_id: str, expand: Sequence[str] = ()) -> dict[str, Any] | None:
        try:
            return self.get(resource, resource_id, expand)
        except NotFound:
            return None

    def query(self, resource: str, *, where: Sequence[str] = (), sort: Sequence[str] = (),
              expand: Sequence[str] = (), limit: int = PAGE_SIZE) -> list[dict[str, Any]]:
        params = [("limit", str(limit)), ("withTotal", "false")]
        params += [("where", w) for w in where] + [("sort", s) for s in sort] + [("expand", e) for e in expand]
        return self.request("GET", f"/{resource}", params=params)["results"]

    def by_ids(self, resource: str, ids: Iterable[str], *, expand: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
        """These resources as they are now, by id (one query per `IN_VALUES` ids); gone ones are absent."""
        found: dict[str, dict[str, Any]] = {}
        for where in in_predicates("id", ids):
            for found_one in self.query(resource, where=[where], expand=expand, limit=IN_VALUES):
                found[found_one["id"]] = found_one
        return found

    def pages(self, resource: str, *, where: Sequence[str] = (), expand: Sequence[str] = (),
              after_id: str | None = None, limit: int = PAGE_SIZE) -> Iterator[list[dict[str, Any]]]:
        """Keyset paging: sorted by id, each page strictly after the last id seen; ends on a short page."""
        while True:
            predicates = list(where) + ([f"id > {literal(after_id)}"] if after_id else [])
            page = self.query(resource, where=predicates, sort=["id asc"], expand=expand, limit=limit)
            if page:
                yield page
                after_id = page[-1]["id"]
            if len(page) < limit:
                return

    # --- custom objects -----------------------------------------------------------------------------------------

    def get_custom_object(self, container: str, key: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"/custom-objects/{quote(container)}/{quote(key)}")
        except NotFound:
            return None

    def put_custom_object(self, container: str, key: str, value: Any, version: int | None = None) -> dict:
        """Create or replace; with `version`, only if the stored version matches (else `Conflict`)."""
        draft: dict[str, Any] = {"container": container, "key": key, "value": value}
        if version is not None:
            draft["version"] = version
        return self.request("POST", "/custom-objects", json_body=draft, safe_to_retry=version is not None)

    def delete_custom_object(self, container: str, key: str, version: int | None = None) -> None:
        params = {"version": str(version)} if version is not None else None
        with contextlib.suppress(NotFound):
            self.request("DELETE", f"/custom-objects/{quote(container)}/{quote(key)}", params=params)

    def custom_objects(self, container: str, where: Sequence[str] = ()) -> Iterator[dict[str, Any]]:
        for page in self.pages(f"custom-objects/{quote(container)}", where=where):
            yield from page
