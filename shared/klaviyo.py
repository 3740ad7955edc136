"""A thin Klaviyo API client over `shared.http.Transport` (pinned revision, JSON:API bodies as dicts).

Why not the klaviyo-api SDK: it can raise after a successful write when a response does not match its models,
retries neither 500 nor 502, crashes on an HTTP-date Retry-After, has no default timeout and shows the API key
in `repr()` (see README, "Design").
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from shared import metrics
from shared.config import KlaviyoSettings
from shared.errors import ApiError, NotFound
from shared.http import RetryPolicy, Transport

log = logging.getLogger(__name__)

SERVICE = "klaviyo"
JSON_API = "application/vnd.api+json"


def _parse_error(response: httpx.Response) -> dict[str, Any]:
    errors = response.json().get("errors") or [{}]
    first = errors[0] if isinstance(errors[0], dict) else {}
    return {
        "reason": first.get("title"),
        "code": first.get("code"),
        "detail": first.get("detail"),
        "pointer": (first.get("source") or {}).get("pointer"),
        "duplicate_id": (first.get("meta") or {}).get("duplicate_profile_id"),
    }


CATALOG_PATHS = {
    "item": "/api/catalog-items",
    "variant": "/api/catalog-variants",
    "category": "/api/catalog-categories",
}


def catalog_id(external_id: str) -> str:
    """Klaviyo's id for a catalog object of ours (the reference's scheme, kept so catalogs carry over)."""
    return f"$custom:::$default:::{external_id}"


def filter_string(value: str) -> str:
    """A string as a value of Klaviyo's filter syntax: double-quoted, with `\\` and `"` escaped by a backslash
    (so a SKU like `BOLT-3/4"` or one with a backslash cannot break or change the filter)."""
    return json.dumps(value, ensure_ascii=False)


KEY_REFUSED = (401, 403)


class KeyRefused(ApiError):
    """Klaviyo refused the API key (401/403: revoked, rotated, or without the scopes needed). Not a fault of the
    data: an outage until the key is fixed, so it is transient (deliveries are answered 503 and come back)."""

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return True


class KeyHealth:
    """Whether Klaviyo refuses the API key, from the last answers; one ERROR log line per `interval` at most
    while it does, and an INFO line when a request succeeds again."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval, self._clock = interval, clock
        self._lock = threading.Lock()
        self._refused: int | None = None  # the status of the last refusal
        self._logged = float("-inf")

    @property
    def refused(self) -> bool:
        return self._refused is not None

    def refuse(self, status: int | None) -> None:
        with self._lock:
            self._refused = status
            now = self._clock()
            if now - self._logged < self._interval:
                return
            self._logged = now
        log.error("Klaviyo refuses the API key: check KLAVIYO_AUTH_KEY (revoked, rotated, or missing scopes); "
                  "deliveries are answered 503 until a request succeeds again", extra={"status": status})

    def accept(self) -> None:
        if self._refused is None:
            return
        with self._lock:
            was, self._refused, self._logged = self._refused, None, float("-inf")
        if was is not None:
            log.info("Klaviyo accepts the API key again")


class Klaviyo:
    def __init__(self, settings: KlaviyoSettings, *, user_agent: str, policy: RetryPolicy | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {
            "Authorization": f"Klaviyo-API-Key {settings.api_key}",
            "revision": settings.revision,
            "Accept": JSON_API,
            "Content-Type": JSON_API,
            "User-Agent": user_agent,
        }
        policy = policy or RetryPolicy()
        client = httpx.Client(base_url=settings.api_url, headers=headers, timeout=policy.timeout,
                              transport=transport) if transport else None
        self._http = Transport(SERVICE, settings.api_url, headers=headers, policy=policy, parse_error=_parse_error,
                               client=client)
        self.key = KeyHealth()

    def __repr__(self) -> str:
        return "Klaviyo()"

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, body: Any = None, params: Any = None,
                safe_to_retry: bool = True) -> Any:
        try:
            response = self._http.request(method, path, json=body, params=params, safe_to_retry=safe_to_retry)
        except ApiError as exc:
            if exc.status in KEY_REFUSED:
                self.key.refuse(exc.status)
                raise KeyRefused(SERVICE, exc.status, "Klaviyo refused the API key (check KLAVIYO_AUTH_KEY)",
                                 code=exc.code) from None
            if exc.status is not None:
                self.key.accept()  # any other answer means the key was accepted
            raise
        self.key.accept()
        if path in ("/api/events", "/api/event-bulk-create-jobs"):
            metrics.events_accepted(path, body)
        return response.json() if response.content else None

    # --- profiles -----------------------------------------------------------------------------------------------

    def find_profile_id(self, *, external_id: str | None = None, email: str | None = None) -> str | None:
        """The id of the profile with this external id, or (case-insensitively) this email."""
        field, value = ("external_id", external_id) if external_id else ("email", email)
        if not value:
            return None
        page = self.request("GET", "/api/profiles", params={
            "filter": f"equals({field},{filter_string(value)})",
            "fields[profile]": field,
        })
        for profile in page.get("data", []):
            found = (profile.get("attributes") or {}).get(field) or ""
            if found == value if field == "external_id" else found.lower() == value.lower():
                return profile["id"]
        if field == "email" and value != value.lower():
            return self.find_profile_id(email=value.lower())
        return None

    def find_profile(self, *, external_id: str) -> dict[str, Any] | None:
        """`{"id", "email"}` of the profile with this external id (the email: for an erasure record's hash)."""
        page = self.request("GET", "/api/profiles", params={
            "filter": f"equals(external_id,{filter_string(external_id)})",
            "fields[profile]": "external_id,email",
        })
        for profile in page.get("data", []):
            attributes = profile.get("attributes") or {}
            if attributes.get("external_id") == external_id:
                return {"id": profile["id"], "email": attributes.get("email")}
        return None

    def upsert_profile(self, attributes: dict[str, Any], profile_id: str | None = None) -> str:
        """Create or update a profile (`POST /api/profile-import`); returns its id.

        A phone number Klaviyo refuses does not cost the whole profile: the request is sent again without it,
        as the reference does.
        """
        data: dict[str, Any] = {"type": "profile", "attributes": attributes}
        if profile_id:
            data["id"] = profile_id
        try:
            body = self.request("POST", "/api/profile-import", body={"data": data})
        except ApiError as exc:
            if exc.status != 400 or "phone_number" not in (exc.pointer or "") or "phone_number" not in attributes:
                raise
            log.info("Klaviyo refused the phone number; sending the profile without it")
            data["attributes"] = {k: v for k, v in attributes.items() if k != "phone_number"}
            body = self.request("POST", "/api/profile-import", body={"data": data})
        return body["data"]["id"]

    def request_profile_deletion(self, profile_id: str) -> None:
        """Ask Klaviyo to delete a profile and its data (a data privacy deletion job)."""
        self.request("POST", "/api/data-privacy-deletion-jobs", body={"data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": {"type": "profile", "id": profile_id, "attributes": {}}}},
        }})

    # --- events -------------------------------------------------------------------------------------------------

    def create_event(self, attributes: dict[str, Any]) -> None:
        # Safe to repeat: events carry a unique_id, so Klaviyo records a repeated one once.
        self.request("POST", "/api/events", body={"data": {"type": "event", "attributes": attributes}})

    # --- catalog ------------------------------------------------------------------------------------------------

    def upsert_catalog(self, kind: str, create: dict[str, Any], update: dict[str, Any], *,
                       create_first: bool = False) -> None:
        """Create or update a `catalog-<kind>`; `create` and `update` are the `data` of the two requests.

        `create_first` suits objects that are most likely new (a CategoryCreated message): POST, then PATCH on
        409. Otherwise PATCH, then POST on 404. Either way a redelivery converges on the same state.
        """
        path = CATALOG_PATHS[kind]
        item = f"{path}/{quote(update['id'], safe='')}"
        if create_first:
            try:
                self.request("POST", path, body={"data": create}, safe_to_retry=False)
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
            self.request("PATCH", item, body={"data": update})
            return
        try:
            self.request("PATCH", item, body={"data": update})
        except NotFound:
            try:
                self.request("POST", path, body={"data": create}, safe_to_retry=False)
            except ApiError as exc:
                if exc.status != 409:
                    raise
                self.request("PATCH", item, body={"data": update})  # created meanwhile by another delivery

    def delete_catalog(self, kind: str, external_id: str) -> bool:
        """Delete `catalog-<kind>`; False when Klaviyo did not have it."""
        try:
            self.request("DELETE", f"{CATALOG_PATHS[kind]}/{quote(catalog_id(external_id), safe='')}")
        except NotFound:
            return False
        return True

    def get_catalog(self, kind: str, external_id: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", f"{CATALOG_PATHS[kind]}/{quote(catalog_id(external_id), safe='')}")["data"]
        except NotFound:
            return None
