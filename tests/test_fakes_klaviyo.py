"""Tests of the Klaviyo test doubles: the request validator (the `klaviyo-api` SDK's models) and the stateful
`FakeKlaviyo`."""

from __future__ import annotations

import copy
import importlib.metadata
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import BaseModel, ConfigDict, Field
from pytest_httpserver import HTTPServer

from shared.config import KLAVIYO_REVISION
from tests.fakes.klaviyo import _FILTERS, _PLURAL, FakeKlaviyo, Headers, parse_filter
from tests.fakes.klaviyo_sdk import REVISION, SdkValidator, iter_operations, load_validator, sdk_revision

HEADERS = {
    "Authorization": "Klaviyo-API-Key pk_test",
    "revision": REVISION,
    "Accept": "application/vnd.api+json",
    "Content-Type": "application/vnd.api+json",
}


def cat_id(external_id: str) -> str:
    return f"$custom:::$default:::{external_id}"


# --- request bodies, written from the SDK's request models ------------------------------------------------


def event_attributes(unique_id: str = "order-1", email: str = "ann@example.com",
                     **extra: Any) -> dict[str, Any]:
    """EventCreateQueryV2 attributes: `properties`, `metric` and `profile` are required."""
    return {
        "properties": {"OrderId": "o-1", "Items": [{"sku": "A-1", "quantity": 2}], "$extra": {"x": None}},
        "time": "2026-07-20T10:15:00Z",
        "value": 59.9,
        "value_currency": "EUR",
        "unique_id": unique_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": email, "external_id": "c-1"}}},
        **extra,
    }


def event_body(**kwargs: Any) -> dict[str, Any]:
    return {"data": {"type": "event", "attributes": event_attributes(**kwargs)}}


def profile_import_body(profile_id: str | None = None, **attributes: Any) -> dict[str, Any]:
    attrs = attributes or {
        "email": "ann@example.com", "external_id": "c-1", "phone_number": "+4915112345678",
        "first_name": "Ann", "last_name": "Lee",
        "location": {"city": "Berlin", "country": "DE", "zip": "10115"},
        "properties": {"commercetools_id": "c-1", "groups": ["vip"]},
    }
    data: dict[str, Any] = {"type": "profile", "attributes": attrs}
    if profile_id:
        data["id"] = profile_id
    return {"data": data}


def item_data(external_id: str = "p-1", categories: tuple[str, ...] = ()) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "catalog-item", "attributes": {
        "external_id": external_id, "integration_type": "$custom", "catalog_type": "$default",
        "title": "Shirt", "description": "A shirt", "url": "https://shop.example/p-1", "price": 19.99,
        "image_full_url": "https://img.example/p-1.jpg", "images": ["https://img.example/p-1.jpg"],
        "custom_metadata": {"brand": "Acme", "sizes": ["S", "M"]}, "published": True,
    }}
    if categories:
        data["relationships"] = {"categories": {"data": [
            {"type": "catalog-category", "id": cat_id(c)} for c in categories]}}
    return data


def variant_data(external_id: str = "v-1", item: str = "p-1") -> dict[str, Any]:
    return {"type": "catalog-variant", "attributes": {
        "external_id": external_id, "catalog_type": "$default", "integration_type": "$custom",
        "title": "Shirt S", "description": "A shirt, small", "sku": external_id, "inventory_policy": 1,
        "inventory_quantity": 5, "price": 19.99, "url": "https://shop.example/p-1?v=1", "published": True,
    }, "relationships": {"item": {"data": {"type": "catalog-item", "id": cat_id(item)}}}}


def category_data(external_id: str = "cat-1") -> dict[str, Any]:
    return {"type": "catalog-category", "attributes": {"external_id": external_id, "name": "Shirts"}}


def bulk_events_body(profiles: int = 1, events_each: int = 2) -> dict[str, Any]:
    """EventsBulkCreateJob: one entry per profile, each with its events (no `profile` inside them)."""
    entries = []
    for p in range(profiles):
        events = [{"type": "event", "attributes": {
            k: v for k, v in event_attributes(unique_id=f"u-{p}-{e}").items() if k != "profile"}}
            for e in range(events_each)]
        entries.append({"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": f"p{p}@example.com"}}},
            "events": {"data": events},
        }})
    attributes = {"events-bulk-create": {"data": entries}}
    return {"data": {"type": "event-bulk-create-job", "attributes": attributes}}


def catalog_job_body(kind: str, action: str, elements: list[dict[str, Any]]) -> dict[str, Any]:
    plural = {"item": "items", "variant": "variants", "category": "categories"}[kind]
    return {"data": {"type": f"catalog-{kind}-bulk-{action}-job",
                     "attributes": {plural: {"data": elements}}}}


def profile_job_body(profiles: list[dict[str, Any]]) -> dict[str, Any]:
    return {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        {"type": "profile", "attributes": p} for p in profiles]}}}}


def deletion_body(**identifiers: str) -> dict[str, Any]:
    return {"data": {"type": "data-privacy-deletion-job", "attributes": {
        "profile": {"data": {"type": "profile", "attributes": identifiers}}}}}


def subscription_job_body(action: str) -> dict[str, Any]:
    """profile-subscription-bulk-{create,delete}-job: consent for a list, one entry per profile."""
    consent = "SUBSCRIBED" if action == "create" else "UNSUBSCRIBED"
    key = "subscriptions"
    return {"data": {"type": f"profile-subscription-bulk-{action}-job", "attributes": {
        "profiles": {"data": [{"type": "profile", "attributes": {
            "email": "a@b.c", key: {"email": {"marketing": {"consent": consent}}}}}]},
    }, "relationships": {"list": {"data": {"type": "list", "id": "Y6nRLr"}}}}}


VALID_REQUESTS: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("create_event", "POST", "/api/events", event_body()),
    ("create_event_backfill", "POST", "/api/events", event_body(backfill=True)),
    ("profile_import", "POST", "/api/profile-import", profile_import_body()),
    ("profile_import_with_id", "POST", "/api/profile-import", profile_import_body("01K0ABC", email=None)),
    ("create_profile", "POST", "/api/profiles",
     {"data": {"type": "profile", "attributes": {"email": "a@b.c"}}}),
    ("update_profile", "PATCH", "/api/profiles/01K0ABC",
     {"data": {"type": "profile", "id": "01K0ABC", "attributes": {"first_name": None}}}),
    ("item_create", "POST", "/api/catalog-items", {"data": item_data(categories=("cat-1",))}),
    ("item_update", "PATCH", f"/api/catalog-items/{quote(cat_id('p-1'), safe='')}",
     {"data": {"type": "catalog-item", "id": cat_id("p-1"), "attributes": {
         "price": 10, "title": "T", "custom_metadata": {"brand": "Acme"}}}}),
    ("variant_create", "POST", "/api/catalog-variants", {"data": variant_data()}),
    ("category_create", "POST", "/api/catalog-categories", {"data": category_data()}),
    ("bulk_events", "POST", "/api/event-bulk-create-jobs", bulk_events_body(2, 3)),
    ("item_bulk_create", "POST", "/api/catalog-item-bulk-create-jobs",
     catalog_job_body("item", "create", [item_data("p-1"), item_data("p-2")])),
    ("item_bulk_update", "POST", "/api/catalog-item-bulk-update-jobs", catalog_job_body("item", "update", [
        {"type": "catalog-item", "id": cat_id("p-1"), "attributes": {"published": False}}])),
    ("item_bulk_delete", "POST", "/api/catalog-item-bulk-delete-jobs", catalog_job_body("item", "delete", [
        {"type": "catalog-item", "id": cat_id("p-1")}])),
    ("variant_bulk_create", "POST", "/api/catalog-variant-bulk-create-jobs",
     catalog_job_body("variant", "create", [variant_data()])),
    ("variant_bulk_update", "POST", "/api/catalog-variant-bulk-update-jobs", catalog_job_body(
        "variant", "update", [{"type": "catalog-variant", "id": cat_id("v-1"),
                               "attributes": {"inventory_quantity": 0, "price": 9.5}}])),
    ("category_bulk_create", "POST", "/api/catalog-category-bulk-create-jobs",
     catalog_job_body("category", "create", [category_data()])),
    ("category_bulk_update", "POST", "/api/catalog-category-bulk-update-jobs", catalog_job_body(
        "category", "update", [{
            "type": "catalog-category", "id": cat_id("cat-1"), "attributes": {"name": "N"},
            "relationships": {"items": {"data": [{"type": "catalog-item", "id": "x"}]}},
        }])),
    ("profile_bulk_import", "POST", "/api/profile-bulk-import-jobs",
     profile_job_body([{"email": "a@b.c"}, {"external_id": "c-2", "properties": {"x": 1}}])),
    ("subscribe_bulk", "POST", "/api/profile-subscription-bulk-create-jobs", subscription_job_body("create")),
    ("unsubscribe_bulk", "POST", "/api/profile-subscription-bulk-delete-jobs", subscription_job_body("delete")),
    ("deletion", "POST", "/api/data-privacy-deletion-jobs", deletion_body(email="a@b.c")),
    ("get_items", "GET", "/api/catalog-items", None),
    ("delete_item", "DELETE", "/api/catalog-items/$custom:::$default:::p-1", None),
]


@pytest.fixture
def validator() -> SdkValidator:
    return load_validator()


# --- the validator: the klaviyo-api SDK's models ------------------------------------------------------------


def test_sdk_revision_is_the_connectors_revision() -> None:
    """The SDK pinned in the test extra and the revision the connector sends must not drift apart: the stand-in
    checks requests with models of the SDK's revision."""
    assert sdk_revision() == KLAVIYO_REVISION == REVISION  # the revision header the SDK's client sends
    assert load_validator().revision == KLAVIYO_REVISION
    from openapi_client.configuration import Configuration

    assert f"Version of the API: {KLAVIYO_REVISION}" in Configuration().to_debug_report()  # what it was built from
    assert f"klaviyo-api=={importlib.metadata.version('klaviyo-api')}" in _test_extra()


def _test_extra() -> list[str]:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text("utf-8"))
    return pyproject["project"]["optional-dependencies"]["test"]


@pytest.mark.parametrize(("method", "path", "body"), [r[1:] for r in VALID_REQUESTS],
                         ids=[r[0] for r in VALID_REQUESTS])
def test_validator_accepts_correct_bodies(validator: SdkValidator, method: str, path: str,
                                          body: dict[str, Any] | None) -> None:
    assert validator.validate(method, path, body) == []


def test_validator_reports_unknown_fields_the_model_drops(validator: SdkValidator) -> None:
    body = event_body()
    attrs = body["data"]["attributes"]
    attrs["vaule"] = attrs.pop("value")
    attrs["profile"]["data"]["attributes"]["emial"] = "x@y.z"
    body["data"]["extra"] = {"nested": 1}
    issues = validator.check("POST", "/api/events", body)
    assert sorted(map(str, issues)) == [
        "data.attributes.profile.data.attributes: unknown field 'emial' (the SDK's model dropped it)",
        "data.attributes: unknown field 'vaule' (the SDK's model dropped it)",
        "data: unknown field 'extra' (the SDK's model dropped it)",
    ]
    assert sorted(i.pointer or "" for i in issues) == [
        "/data/attributes/profile/data/attributes/emial", "/data/attributes/vaule", "/data/extra"]
    # Free-form objects keep every key: an event's properties, an item's custom_metadata.
    attrs = event_body()["data"]["attributes"]
    attrs["properties"] |= {"any key": {"deep": [1, None]}}
    assert validator.validate("POST", "/api/events", {"data": {"type": "event", "attributes": attrs}}) == []
    # The SDK's catalog category has no custom_metadata (an item has).
    category = {"data": category_data()}
    category["data"]["attributes"]["custom_metadata"] = {"a": 1}
    assert validator.validate("POST", "/api/catalog-categories", category) == [
        "data.attributes: unknown field 'custom_metadata' (the SDK's model dropped it)"]


def test_validator_rejects_wrong_types(validator: SdkValidator) -> None:
    def errors_for(mutate: Any, make: Any = event_body, path: str = "/api/events") -> list[str]:
        body = make()
        mutate(body)
        return validator.validate("POST", path, body)

    assert errors_for(lambda b: b["data"]["attributes"].update(unique_id=12)) == [
        "data.attributes.unique_id: Input should be a valid string (got int)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(value="12")) == [
        "data.attributes.value: Input should be a valid number or Input should be a valid integer (got str)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(backfill="yes")) == [
        "data.attributes.backfill: Input should be a valid boolean (got str)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(time="yesterday")) == [
        "data.attributes.time: Input should be a valid datetime or date, input is too short (got str)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(value=None, time=None)) == []  # nullable
    assert errors_for(lambda b: b["data"].update(type="events")) == [
        "data.type: Input should be 'event' (got str)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(properties=["x"])) == [
        "data.attributes.properties: Input should be a valid dictionary (got list)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(inventory_quantity="5"),
                      lambda: {"data": variant_data()}, "/api/catalog-variants") == [
        "data.attributes.inventory_quantity: Input should be a valid number or Input should be a valid integer "
        "(got str)"]
    assert errors_for(lambda b: b["data"]["attributes"].update(title=None),
                      lambda: {"data": item_data()}, "/api/catalog-items") == [
        "data.attributes.title: Input should be a valid string (got null)"]
    assert validator.validate("POST", "/api/events", []) == ["body: expected an object, got list"]


def test_validator_rejects_missing_required_fields(validator: SdkValidator) -> None:
    body = event_body()
    del body["data"]["attributes"]["metric"]
    del body["data"]["attributes"]["properties"]
    issues = validator.check("POST", "/api/events", body)
    assert sorted(map(str, issues)) == [
        "data.attributes: missing required 'metric'", "data.attributes: missing required 'properties'"]
    assert sorted(i.pointer or "" for i in issues) == ["/data/attributes/metric", "/data/attributes/properties"]
    variant = {"data": variant_data()}
    del variant["data"]["relationships"]
    assert validator.validate("POST", "/api/catalog-variants", variant) == [
        "data: missing required 'relationships'"]
    assert validator.validate("POST", "/api/events", {}) == ["body: missing required 'data'"]
    assert validator.validate("PATCH", "/api/catalog-items/x", None) == ["body: missing required request body"]


def test_validator_lists_every_kind_of_problem_at_once(validator: SdkValidator) -> None:
    body = event_body()
    attrs = body["data"]["attributes"]
    attrs["vaule"] = attrs.pop("value")
    del attrs["metric"]
    attrs["unique_id"] = 12
    assert sorted(validator.validate("POST", "/api/events", body)) == [
        "data.attributes.unique_id: Input should be a valid string (got int)",
        "data.attributes: missing required 'metric'",
        "data.attributes: unknown field 'vaule' (the SDK's model would drop it)",
    ]


def test_validator_locates_errors_in_bulk_bodies(validator: SdkValidator) -> None:
    body = bulk_events_body(2, 3)
    entry = body["data"]["attributes"]["events-bulk-create"]["data"][1]
    entry["attributes"]["events"]["data"][2]["attributes"]["value"] = "1"
    entry["attributes"]["profile"]["data"]["attributes"]["emial"] = "x"
    issues = validator.check("POST", "/api/event-bulk-create-jobs", body)
    assert sorted(map(str, issues)) == [
        "data.attributes.events-bulk-create.data[1].attributes.events.data[2].attributes.value: "
        "Input should be a valid number or Input should be a valid integer (got str)",
        "data.attributes.events-bulk-create.data[1].attributes.profile.data.attributes: "
        "unknown field 'emial' (the SDK's model would drop it)",
    ]
    assert sorted(i.pointer or "" for i in issues) == [
        "/data/attributes/events-bulk-create/data/1/attributes/events/data/2/attributes/value",
        "/data/attributes/events-bulk-create/data/1/attributes/profile/data/attributes/emial",
    ]
    del body["data"]["attributes"]["events-bulk-create"]["data"][1]["attributes"]["events"]["data"][2]
    assert [str(i) for i in validator.check("POST", "/api/event-bulk-create-jobs", body)] == [
        "data.attributes.events-bulk-create.data[1].attributes.profile.data.attributes: "
        "unknown field 'emial' (the SDK's model dropped it)"]

    item = catalog_job_body("item", "create", [item_data("p-1")])
    del item["data"]["attributes"]["items"]["data"][0]["attributes"]["url"]
    assert validator.validate("POST", "/api/catalog-item-bulk-create-jobs", item) == [
        "data.attributes.items.data[0].attributes: missing required 'url'"]


def test_validator_finds_operations(validator: SdkValidator) -> None:
    assert validator.validate("POST", "/api/xyz", {}) == ["no operation POST /api/xyz in the klaviyo-api SDK"]
    assert validator.validate("GET", "/api/catalog-items", {"data": {}}) == [
        "body: this operation takes no request body"]
    assert validator.operation_id("GET", "/api/catalog-items/$custom:::$default:::a b/") == "get_catalog_item"
    assert validator.operation_id("get", f"/api/catalog-items/{quote(cat_id('a/b'), safe='')}") == (
        "get_catalog_item")
    assert validator.operation_id("GET", "/api/catalog-items/x/variants") == "get_variants_for_catalog_item"
    assert validator.operation_id("GET", "/api/profile-bulk-import-jobs/01K/import-errors") == (
        "get_errors_for_bulk_import_profiles_job")
    assert validator.operation_id("GET", "/api/profiles?filter=equals(email,%22a%22)") == "get_profiles"
    assert validator.operation_id("PUT", "/api/profiles") is None
    assert validator.rate_limit("POST", "/api/events") == {"burst": "350/s", "steady": "3500/m"}
    assert validator.rate_limit("POST", "/api/event-bulk-create-jobs") == {"burst": "10/s", "steady": "150/m"}
    assert validator.rate_limit("POST", "/api/data-privacy-deletion-jobs") == {"burst": "3/s", "steady": "60/m"}
    assert validator.revision == REVISION


def test_validator_maps_every_operation_with_a_body_to_its_model(validator: SdkValidator) -> None:
    """Generic, not a list of today's requests: every operation of the SDK that takes a body has a model
    (found from the SDK's own source), the model loads, and it rejects an empty ``data``."""
    with_body = [op for op in iter_operations(validator) if op.body_model]
    assert len(with_body) > 100 and len(list(iter_operations(validator))) > 300
    for op in with_body:
        path = re.sub(r"\{[^/]+?\}", "x", op.template)
        assert validator.find(op.method, path) is op, op.template
        assert validator.request_model(op.method, path).__name__ == op.body_model
        assert validator.validate(op.method, path, {"data": {}}), op.operation_id
    assert all(op.rate_limit for op in iter_operations(validator))
    assert load_validator() is load_validator()


def test_the_stand_ins_filters_are_those_the_sdk_documents(validator: SdkValidator) -> None:
    """The stand-in refuses a `filter` Klaviyo would refuse: its table of fields and operators (what it can
    evaluate) stays within what the SDK documents for each collection."""
    for kind, allowed in _FILTERS.items():
        path = "/api/profiles" if kind == "profile" else f"/api/catalog-{_PLURAL[kind]}"
        documented = validator.find("GET", path).filters
        assert documented, path
        assert {f: set(ops) for f, ops in allowed.items()} == {f: set(ops) & documented.get(f, set())
                                                               for f, ops in allowed.items()}, path


def test_validator_is_fast_on_a_thousand_event_bulk(validator: SdkValidator) -> None:
    body = bulk_events_body(profiles=100, events_each=10)
    assert validator.validate("POST", "/api/event-bulk-create-jobs", body) == []
    best = min(_timed(lambda: validator.validate("POST", "/api/event-bulk-create-jobs", body))
               for _ in range(3))
    assert best < 0.2


def _timed(action: Any) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


# --- the round trip, on small models of our own -----------------------------------------------------------


class _Leaf(BaseModel):
    name: str
    size: int | None = None


class _Thing(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    kind: str
    leaf: _Leaf | None = None
    leaves: list[_Leaf] = []
    free: dict[str, Any] | None = None
    dashed: str | None = Field(default=None, alias="dashed-name")


def test_round_trip_semantics_on_a_small_model(validator: SdkValidator) -> None:
    ok = {"kind": "k", "leaf": {"name": "a", "size": None}, "leaves": [{"name": "b"}], "free": {"x": {"y": 1}},
          "dashed-name": "d"}
    assert validator.check_model(_Thing, ok) == []
    dropped = {"kind": "k", "leaf": {"name": "a", "sise": 1}, "leaves": [{"name": "b"}, {"name": "c", "x": 1}],
               "oops": None}
    assert sorted(map(str, validator.check_model(_Thing, dropped))) == [
        "body: unknown field 'oops' (the SDK's model dropped it)",
        "leaf: unknown field 'sise' (the SDK's model dropped it)",
        "leaves[1]: unknown field 'x' (the SDK's model dropped it)",
    ]
    bad = {"leaf": {"size": "big", "sise": 1}, "leaves": [{"name": 2, "x": 1}]}
    assert sorted(map(str, validator.check_model(_Thing, bad))) == [
        "body: missing required 'kind'",
        "leaf.size: Input should be a valid integer, unable to parse string as an integer (got str)",
        "leaf: missing required 'name'",
        "leaf: unknown field 'sise' (the SDK's model would drop it)",
        "leaves[0].name: Input should be a valid string (got int)",
        "leaves[0]: unknown field 'x' (the SDK's model would drop it)",
    ]


# --- FakeKlaviyo --------------------------------------------------------------------------------------------


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeKlaviyo:
    return FakeKlaviyo(httpserver)


@pytest.fixture
def client(fake: FakeKlaviyo) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.url, headers=HEADERS, timeout=10) as http:
        yield http


def item_url(external_id: str, suffix: str = "") -> str:
    return f"/api/catalog-items/{quote(cat_id(external_id), safe='')}{suffix}"


def test_records_every_request(fake: FakeKlaviyo, client: httpx.Client) -> None:
    response = client.post("/api/events", json=event_body())
    assert response.status_code == 202 and response.content == b""
    client.get("/api/profiles", params={"filter": 'equals(email,"ann@example.com")', "page[size]": "5"})
    first, second = fake.requests
    assert (first.method, first.path, first.body, first.injected, first.status) == (
        "POST", "/api/events", event_body(), False, 202)
    assert first.headers["revision"] == first.headers["Revision"] == REVISION
    assert first.headers["authorization"].startswith("Klaviyo-API-Key ")
    assert second.query == {"filter": 'equals(email,"ann@example.com")', "page[size]": "5"}
    assert second.body is None
    assert fake.events == [event_body()["data"]["attributes"]]
    assert fake.calls("GET", "/api/profiles") == [second]
    fake.assert_valid()


def test_headers_are_case_insensitive() -> None:
    headers = Headers([("Content-Type", "a"), ("REVISION", "b")])
    assert headers == {"content-type": "a", "revision": "b"}
    assert headers["content-type"] == headers.get("CONTENT-TYPE") == "a" and "Revision" in headers


def test_profile_import_creates_then_updates(fake: FakeKlaviyo, client: httpx.Client) -> None:
    created = client.post("/api/profile-import", json=profile_import_body())
    assert created.status_code == 201
    assert created.headers["content-type"] == "application/vnd.api+json"
    pid = created.json()["data"]["id"]
    assert created.json()["data"]["type"] == "profile" and len(pid) == 26 and pid.startswith("01")
    assert fake.profiles[pid]["email"] == "ann@example.com"

    # found by email, case-insensitively; null clears; properties and location merge
    updated = client.post("/api/profile-import", json=profile_import_body(
        email="ANN@example.com", first_name=None, properties={"tier": "gold"}, location={"city": "Hamburg"}))
    assert updated.status_code == 200 and updated.json()["data"]["id"] == pid
    profile = fake.profiles[pid]
    assert "first_name" not in profile and profile["email"] == "ANN@example.com"
    assert profile["properties"] == {"commercetools_id": "c-1", "groups": ["vip"], "tier": "gold"}
    assert profile["location"] == {"city": "Hamburg", "country": "DE", "zip": "10115"}
    assert updated.json()["data"]["attributes"]["first_name"] is None

    by_id = client.post("/api/profile-import", json=profile_import_body(pid, last_name="Smith"))
    assert by_id.status_code == 200 and fake.profiles[pid]["last_name"] == "Smith"
    unknown_id = client.post("/api/profile-import", json=profile_import_body("01UNKNOWN", last_name="X"))
    assert unknown_id.status_code == 404
    assert len(fake.profiles) == 1
    fake.assert_valid()


def test_duplicate_profile_conflicts(fake: FakeKlaviyo, client: httpx.Client) -> None:
    by_email = fake.add_profile({"email": "ann@example.com"})
    by_external = fake.add_profile({"external_id": "c-1"})
    response = client.post("/api/profile-import", json=profile_import_body(email="ann@example.com",
                                                                           external_id="c-1"))
    assert response.status_code == 409
    error = response.json()["errors"][0]
    assert error["code"] == "duplicate_profile" and error["status"] == 409
    assert error["meta"]["duplicate_profile_id"] == by_email
    assert set(error) >= {"id", "title", "detail", "source"}

    again = client.post("/api/profiles", json={"data": {"type": "profile",
                                                         "attributes": {"external_id": "c-1"}}})
    assert again.status_code == 409
    assert again.json()["errors"][0]["meta"]["duplicate_profile_id"] == by_external
    fresh = client.post("/api/profiles", json={"data": {"type": "profile",
                                                         "attributes": {"email": "new@x.io"}}})
    assert fresh.status_code == 201 and fresh.json()["data"]["id"] in fake.profiles
    assert fake.errors == []  # conflicts are answers, not contract errors


def test_patch_and_get_profile(fake: FakeKlaviyo, client: httpx.Client) -> None:
    pid = fake.add_profile({"email": "a@b.c", "first_name": "A"})
    body = {"data": {"type": "profile", "id": pid, "attributes": {"first_name": "B"}}}
    response = client.patch(f"/api/profiles/{pid}", json=body)
    assert response.status_code == 200 and fake.profiles[pid]["first_name"] == "B"
    assert client.get(f"/api/profiles/{pid}").json()["data"]["attributes"]["first_name"] == "B"
    missing = {"data": {"type": "profile", "id": "01NOPE", "attributes": {"first_name": "B"}}}
    assert client.patch("/api/profiles/01NOPE", json=missing).status_code == 404
    assert client.get("/api/profiles/01NOPE").status_code == 404


def test_get_profiles_filters(fake: FakeKlaviyo, client: httpx.Client) -> None:
    ann = fake.add_profile({"email": "ann@example.com", "external_id": "c-1", "first_name": "Ann"})
    bob = fake.add_profile({"email": "Bob@example.com", "external_id": "c-2"})

    def ids(filter_: str, **params: str) -> list[str]:
        response = client.get("/api/profiles", params={"filter": filter_, **params})
        assert response.status_code == 200, response.text
        assert response.json()["links"]["next"] is None
        return [p["id"] for p in response.json()["data"]]

    assert ids('equals(email,"ann@example.com")') == [ann]
    assert ids('equals(email,"bob@example.com")') == []  # exact, unlike Klaviyo: the connector must cope
    assert ids("equals(external_id,'c-2')") == [bob]
    assert ids('any(external_id,["c-1","c-2","c-3"])') == [ann, bob]
    assert ids(f'equals(id,"{bob}")') == [bob]
    sparse = client.get("/api/profiles", params={"filter": 'equals(external_id,"c-1")',
                                                 "fields[profile]": "external_id"})
    assert sparse.json()["data"][0]["attributes"] == {"external_id": "c-1"}
    bad = client.get("/api/profiles", params={"filter": 'contains(email,"ann")'})
    assert bad.status_code == 400 and bad.json()["errors"][0]["source"] == {"parameter": "filter"}
    assert fake.errors and "not allowed" in fake.errors[0]


def test_parse_filter() -> None:
    assert parse_filter('equals(email,"a\\"b@c.d")') == [("equals", "email", 'a"b@c.d')]
    assert parse_filter("any(ids,['x','y'])") == [("any", "ids", ["x", "y"])]
    assert parse_filter('and(equals(published,true),contains(title,"sh")),equals(sku,1)') == [
        ("equals", "published", True), ("contains", "title", "sh"), ("equals", "sku", 1)]
    with pytest.raises(ValueError, match="malformed"):
        parse_filter("equals(email")


def test_events_and_unique_id_dedup(fake: FakeKlaviyo, client: httpx.Client) -> None:
    for body in (event_body(unique_id="o-1"), event_body(unique_id="o-1"), event_body(unique_id="o-2"),
                 event_body(unique_id="o-1", email="other@example.com")):
        assert client.post("/api/events", json=body).status_code == 202
    assert len(fake.events) == 4
    assert [e["unique_id"] for e in fake.recorded_events()] == ["o-1", "o-2", "o-1"]

    bulk = client.post("/api/event-bulk-create-jobs", json=bulk_events_body(profiles=2, events_each=2))
    assert bulk.status_code == 202 and bulk.content == b""
    merged = fake.events[4:]
    assert len(merged) == 4
    assert merged[0]["profile"] == {"data": {"type": "profile", "attributes": {"email": "p0@example.com"}}}
    assert merged[0]["metric"]["data"]["attributes"]["name"] == "Placed Order"
    assert merged[3]["unique_id"] == "u-1-1"
    fake.assert_valid()


def test_event_without_profile_identifier_is_refused(fake: FakeKlaviyo, client: httpx.Client) -> None:
    body = event_body()
    body["data"]["attributes"]["profile"]["data"]["attributes"] = {"first_name": "Ann"}
    assert client.post("/api/events", json=body).status_code == 400
    assert fake.events == [] and len(fake.errors) == 1


def test_catalog_items_crud(fake: FakeKlaviyo, client: httpx.Client) -> None:
    created = client.post("/api/catalog-items", json={"data": item_data("p-1", categories=("cat-1",))})
    assert created.status_code == 201
    data = created.json()["data"]
    assert data["id"] == cat_id("p-1") and data["type"] == "catalog-item"
    assert data["attributes"]["title"] == "Shirt" and data["attributes"]["created"]
    assert fake.items[cat_id("p-1")]["relationships"]["categories"]["data"][0]["id"] == cat_id("cat-1")
    assert "integration_type" not in fake.items[cat_id("p-1")]["attributes"]

    duplicate = client.post("/api/catalog-items", json={"data": item_data("p-1")})
    assert duplicate.status_code == 409 and duplicate.json()["errors"][0]["code"] == "conflict"

    assert client.get(item_url("p-1")).json()["data"]["attributes"]["price"] == 19.99
    patch = {"data": {"type": "catalog-item", "id": cat_id("p-1"), "attributes": {"price": 9.5},
                      "relationships": {"categories": {"data": []}}}}
    assert client.patch(item_url("p-1"), json=patch).status_code == 200
    stored = fake.items[cat_id("p-1")]
    assert stored["attributes"]["price"] == 9.5 and stored["attributes"]["title"] == "Shirt"
    assert stored["relationships"] == {"categories": {"data": []}}

    listed = client.get("/api/catalog-items", params={"filter": f'any(ids,["{cat_id("p-1")}","x"])'})
    assert [d["id"] for d in listed.json()["data"]] == [cat_id("p-1")]
    assert client.delete(item_url("p-1")).status_code == 204
    assert client.get(item_url("p-1")).status_code == 404
    assert client.delete(item_url("p-1")).status_code == 404
    assert client.patch(item_url("p-1"), json=patch).status_code == 404
    fake.assert_valid()


def test_variant_needs_its_item(fake: FakeKlaviyo, client: httpx.Client) -> None:
    orphan = client.post("/api/catalog-variants", json={"data": variant_data("v-1", item="p-1")})
    assert orphan.status_code == 400
    assert orphan.json()["errors"][0]["source"]["pointer"] == "/data/relationships/item/data/id"
    assert fake.variants == {} and fake.errors == []

    client.post("/api/catalog-items", json={"data": item_data("p-1")})
    client.post("/api/catalog-items", json={"data": item_data("p-2")})
    for vid, item in (("v-1", "p-1"), ("v-2", "p-1"), ("v-3", "p-2")):
        assert client.post("/api/catalog-variants", json={"data": variant_data(vid, item)}).status_code == 201
    variants = client.get(item_url("p-1", "/variants")).json()["data"]
    assert [v["id"] for v in variants] == [cat_id("v-1"), cat_id("v-2")]
    by_filter = client.get("/api/catalog-variants", params={"filter": f'equals(item.id,"{cat_id("p-2")}")'})
    assert [v["id"] for v in by_filter.json()["data"]] == [cat_id("v-3")]
    assert client.get(item_url("nope", "/variants")).status_code == 404
    fake.assert_valid()


def test_categories_and_pagination(fake: FakeKlaviyo, client: httpx.Client) -> None:
    for start in (0, 100):
        elements = [category_data(f"c-{i:03}") for i in range(start, start + 100)]
        job = client.post("/api/catalog-category-bulk-create-jobs",
                          json=catalog_job_body("category", "create", elements))
        assert job.status_code == 202
    client.post("/api/catalog-categories", json={"data": category_data("c-200")})
    assert len(fake.categories) == 201

    seen: list[str] = []
    url: str | None = "/api/catalog-categories"
    pages = 0
    while url:
        page = client.get(url).json()
        seen += [c["id"] for c in page["data"]]
        url = page["links"]["next"]
        pages += 1
    assert pages == 3 and seen == list(fake.categories)
    assert "page%5Bcursor%5D=" in client.get("/api/catalog-categories").json()["links"]["next"]
    newest = client.get("/api/catalog-categories", params={"sort": "-created", "page[size]": "1"}).json()
    assert newest["data"][0]["id"] == cat_id("c-200")
    named = client.get("/api/catalog-categories", params={"filter": 'contains(name,"shirt")'}).json()
    assert len(named["data"]) == 100  # Shirts, case-insensitively; first page
    fake.assert_valid()


def test_catalog_bulk_jobs(fake: FakeKlaviyo, client: httpx.Client) -> None:
    fake.job_polls_until_complete = 2
    client.post("/api/catalog-items", json={"data": item_data("p-1")})
    body = catalog_job_body("item", "create", [item_data("p-1"), item_data("p-2"), item_data("p-3")])
    posted = client.post("/api/catalog-item-bulk-create-jobs", json=body)
    assert posted.status_code == 202
    job = posted.json()["data"]
    assert job["type"] == "catalog-item-bulk-create-job" and job["attributes"]["status"] == "processing"

    url = f"/api/catalog-item-bulk-create-jobs/{job['id']}"
    statuses = [client.get(url).json()["data"]["attributes"]["status"] for _ in range(3)]
    assert statuses == ["processing", "processing", "complete"]
    attributes = client.get(url).json()["data"]["attributes"]
    assert {k: attributes[k] for k in ("total_count", "completed_count", "failed_count")} == {
        "total_count": 3, "completed_count": 2, "failed_count": 1}
    assert attributes["errors"][0]["source"]["pointer"] == "/data/attributes/items/data/0/attributes"
    assert set(fake.items) == {cat_id("p-1"), cat_id("p-2"), cat_id("p-3")}
    assert fake.jobs[job["id"]]["failed_count"] == 1
    assert client.get("/api/catalog-item-bulk-update-jobs/" + job["id"]).status_code == 404

    fake.job_polls_until_complete = 0
    variants = client.post("/api/catalog-variant-bulk-create-jobs", json=catalog_job_body(
        "variant", "create", [variant_data("v-1", "p-2"), variant_data("v-2", "missing")])).json()["data"]
    assert variants["attributes"]["status"] == "complete" and variants["attributes"]["failed_count"] == 1
    updates = client.post("/api/catalog-item-bulk-update-jobs", json=catalog_job_body("item", "update", [
        {"type": "catalog-item", "id": cat_id("p-2"), "attributes": {"title": "New"}}]))
    assert updates.json()["data"]["attributes"]["completed_count"] == 1
    assert fake.items[cat_id("p-2")]["attributes"]["title"] == "New"
    client.post("/api/catalog-item-bulk-delete-jobs", json=catalog_job_body("item", "delete", [
        {"type": "catalog-item", "id": cat_id("p-3")}]))
    assert cat_id("p-3") not in fake.items
    fake.assert_valid()


def test_profile_bulk_import(fake: FakeKlaviyo, client: httpx.Client) -> None:
    existing = fake.add_profile({"email": "a@b.c"})
    fake.add_profile({"external_id": "taken"})
    posted = client.post("/api/profile-bulk-import-jobs", json=profile_job_body([
        {"email": "a@b.c", "first_name": "A"},
        {"external_id": "c-2"},
        {"email": "a@b.c", "external_id": "taken"},  # two profiles: a conflict
    ]))
    assert posted.status_code == 202
    job = posted.json()["data"]
    assert job["type"] == "profile-bulk-import-job"
    got = client.get(f"/api/profile-bulk-import-jobs/{job['id']}").json()["data"]["attributes"]
    assert (got["status"], got["total_count"], got["completed_count"], got["failed_count"]) == (
        "complete", 3, 2, 1)
    assert fake.profiles[existing]["first_name"] == "A" and len(fake.profiles) == 3
    errors = client.get(f"/api/profile-bulk-import-jobs/{job['id']}/import-errors").json()["data"]
    assert errors[0]["attributes"]["code"] == "duplicate_profile"
    fake.assert_valid()


def test_deletion_requests(fake: FakeKlaviyo, client: httpx.Client) -> None:
    pid = fake.add_profile({"email": "a@b.c"})
    url = "/api/data-privacy-deletion-jobs"
    assert client.post(url, json=deletion_body(email="A@b.c")).status_code == 202
    assert fake.deletions == [{"email": "A@b.c"}] and pid not in fake.profiles
    both = client.post(url, json=deletion_body(email="a@b.c", phone_number="+491"))
    assert both.status_code == 400 and len(fake.deletions) == 1
    with pytest.raises(AssertionError, match="Exactly one of email"):
        fake.assert_valid()


def test_events_create_and_update_profiles_and_deletion_removes_them(fake: FakeKlaviyo,
                                                                     client: httpx.Client) -> None:
    def profile(email: str | None = "ann@example.com", **attributes: Any) -> dict[str, Any]:
        return {"data": {"type": "profile", "attributes": {**({"email": email} if email else {}), **attributes}}}

    def by(name: str, value: str) -> dict[str, Any]:
        (found,) = [p for p in fake.profiles.values() if p.get(name) == value]
        return found

    first = event_body(profile=profile(first_name="Ann", location={"city": "Berlin", "country": "DE"},
                                       properties={"tier": "gold"}))
    assert client.post("/api/events", json=first).status_code == 202
    assert list(fake.profiles.values()) == [{"email": "ann@example.com", "first_name": "Ann",
                                             "location": {"city": "Berlin", "country": "DE"},
                                             "properties": {"tier": "gold"}}]
    # history (backfill) updates the profile too; what is absent is left alone, location and properties merge
    second = event_body(unique_id="order-2", backfill=True, profile=profile(
        "ANN@example.com", external_id="c-1", last_name="Lee", location={"city": "Hamburg"},
        properties={"since": 2020}))
    assert client.post("/api/events", json=second).status_code == 202
    assert list(fake.profiles.values()) == [{"email": "ANN@example.com", "first_name": "Ann", "last_name": "Lee",
                                             "external_id": "c-1",
                                             "location": {"city": "Hamburg", "country": "DE"},
                                             "properties": {"tier": "gold", "since": 2020}}]
    ann = next(iter(fake.profiles))
    # identifiers naming two profiles: the external_id's profile wins, the other's email is not moved to it
    bob = fake.add_profile({"email": "bob@example.com"})
    clash = event_body(unique_id="order-3", profile=profile("bob@example.com", external_id="c-1", title="Dr"))
    assert client.post("/api/events", json=clash).status_code == 202
    assert fake.profiles[ann]["title"] == "Dr" and fake.profiles[ann]["email"] == "ANN@example.com"
    assert fake.profiles[bob] == {"email": "bob@example.com"}
    by_id = event_body(unique_id="order-4", profile={"data": {"type": "profile", "id": bob,
                                                              "attributes": {"first_name": "Bob"}}})
    assert client.post("/api/events", json=by_id).status_code == 202
    assert fake.profiles[bob] == {"email": "bob@example.com", "first_name": "Bob"}

    # a bulk job's events: profiles only once the job is processed (a later request, or settle())
    job = bulk_events_body(profiles=2)
    job["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]["profile"] = profile(
        "p0@example.com", first_name="Pat")
    assert client.post("/api/event-bulk-create-jobs", json=job).status_code == 202
    assert len(fake.events) == 8 and len(fake.profiles) == 2
    assert client.get("/api/profiles").status_code == 200  # time passes
    assert by("email", "p0@example.com") == {"email": "p0@example.com", "first_name": "Pat"}
    assert by("email", "p1@example.com") == {"email": "p1@example.com"}
    assert client.post("/api/event-bulk-create-jobs", json=bulk_events_body(profiles=1)).status_code == 202
    job = bulk_events_body(profiles=1)
    job["data"]["attributes"]["events-bulk-create"]["data"][0]["attributes"]["profile"] = profile(
        "p0@example.com", last_name="Ode")
    assert client.post("/api/event-bulk-create-jobs", json=job).status_code == 202
    assert "last_name" not in by("email", "p0@example.com")
    fake.settle()
    assert by("email", "p0@example.com") == {"email": "p0@example.com", "first_name": "Pat", "last_name": "Ode"}
    assert len(fake.profiles) == 4

    # deletion removes the profile and the person's events (however their event named them); others stay
    assert client.post("/api/data-privacy-deletion-jobs", json=deletion_body(email="ann@EXAMPLE.com")).status_code \
        == 202
    assert ann not in fake.profiles and len(fake.profiles) == 3
    assert [e["unique_id"] for e in fake.events if e["unique_id"].startswith("order")] == ["order-4"]
    assert client.post("/api/data-privacy-deletion-jobs", json=deletion_body(email="p0@example.com")).status_code \
        == 202
    assert {e["profile"]["data"]["attributes"].get("email") for e in fake.events} == {None, "p1@example.com"}
    fake.assert_valid()


def test_fail_next(fake: FakeKlaviyo, client: httpx.Client) -> None:
    fake.fail_next("POST", "/api/events", 429)
    fake.fail_next("post", r"/api/catalog-items(/.*)?", 503, times=2, headers={"X-Test": "1"})
    fake.fail_next("*", "/api/profiles/.*", 500, body={"custom": True})
    assert fake.faults_pending == 4

    throttled = client.post("/api/events", json=event_body())
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
    assert throttled.json()["errors"][0]["code"] == "throttled"
    assert client.post("/api/events", json=event_body()).status_code == 202
    assert [r.injected for r in fake.requests] == [True, False]
    assert len(fake.events) == 1  # the throttled request had no effect

    assert client.get("/api/catalog-items").status_code == 200  # GET is not matched
    for _ in range(2):
        unavailable = client.post("/api/catalog-items", json={"data": item_data()})
        assert unavailable.status_code == 503 and unavailable.headers["X-Test"] == "1"
    assert client.post("/api/catalog-items", json={"data": item_data()}).status_code == 201
    crashed = client.get("/api/profiles/01X")
    assert crashed.status_code == 500 and crashed.json() == {"custom": True}
    assert fake.faults_pending == 0

    fake.fail_next("GET", "/api/catalog-items", 200, delay=0.3)
    slow = _timed(lambda: client.get("/api/catalog-items"))
    assert slow >= 0.3
    fake.fail_next("GET", "/api/catalog-items", 200, delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        client.get("/api/catalog-items", timeout=0.2)
    fake.assert_valid()


def test_bad_headers_and_unknown_paths(fake: FakeKlaviyo, client: httpx.Client) -> None:
    no_revision = client.post("/api/events", json=event_body(), headers={"revision": ""})
    assert no_revision.status_code == 400
    bad_key = client.post("/api/events", json=event_body(), headers={"Authorization": "Bearer x"})
    assert bad_key.status_code == 401 and bad_key.json()["errors"][0]["code"] == "not_authenticated"
    unknown = client.get("/api/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "not_found"
    assert fake.events == []
    with pytest.raises(AssertionError, match="authorization"):
        fake.assert_valid()
    assert [e.split(":")[0] for e in fake.errors][:2] == ["POST /api/events", "POST /api/events"]


def test_invalid_body_is_answered_400_and_listed(fake: FakeKlaviyo, client: httpx.Client,
                                                 validator: SdkValidator) -> None:
    body = event_body()
    body["data"]["attributes"]["vaule"] = body["data"]["attributes"].pop("value")
    response = client.post("/api/events", json=body)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["code"] == "invalid" and error["source"]["pointer"] == "/data/attributes/vaule"
    assert fake.events == []
    assert fake.errors == ["POST /api/events: data.attributes: unknown field 'vaule' (the SDK's model dropped it)"]
    with pytest.raises(AssertionError, match="vaule"):
        fake.assert_valid()


def test_fake_answers_match_the_sdk_models(fake: FakeKlaviyo, client: httpx.Client,
                                     validator: SdkValidator) -> None:
    fake.job_polls_until_complete = 1
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("POST", "/api/profile-import", profile_import_body()),
        ("POST", "/api/catalog-items", {"data": item_data("p-1")}),
        ("POST", "/api/catalog-variants", {"data": variant_data("v-1", "p-1")}),
        ("POST", "/api/catalog-categories", {"data": category_data()}),
        ("GET", item_url("p-1"), None),
        ("POST", "/api/catalog-item-bulk-create-jobs",
         catalog_job_body("item", "create", [item_data("p-2")])),
        ("POST", "/api/catalog-item-bulk-delete-jobs", catalog_job_body("item", "delete", [
            {"type": "catalog-item", "id": cat_id("nope")}])),
        ("POST", "/api/profile-bulk-import-jobs", profile_job_body([{"email": "x@y.z"}])),
    ]
    for method, path, body in calls:
        response = client.request(method, path, json=body)
        assert validator.validate_response(method, path, response.status_code, response.json()) == [], path
        data = response.json()["data"]
        if data["type"].endswith("-job"):
            job_path = f"{path}/{data['id']}"
            for _ in range(2):  # processing, then complete
                polled = client.get(job_path)
                assert validator.validate_response("GET", job_path, 200, polled.json()) == [], job_path
    assert validator.validate_response("POST", "/api/events", 202, None) == []
    fake.assert_valid()


def test_rate_limits(httpserver: HTTPServer) -> None:
    now = [960.0]  # the start of a minute window
    fake = FakeKlaviyo(httpserver, clock=lambda: now[0])
    fake.enforce_rate_limits = True
    with httpx.Client(base_url=fake.url, headers=HEADERS) as client:
        def delete() -> httpx.Response:
            return client.post("/api/data-privacy-deletion-jobs", json=deletion_body(email="a@b.c"))

        answers = [delete() for _ in range(4)]  # burst: 3/s
        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        # The headers describe the steady window (60/m), not the burst window that refused the fourth
        assert answers[0].headers["RateLimit-Limit"] == "60"
        assert answers[2].headers["RateLimit-Remaining"] == "57"
        assert answers[2].headers["RateLimit-Reset"] == "60"
        assert "RateLimit-Limit" not in answers[3].headers  # none on a 429
        assert answers[3].headers["Retry-After"] == "1" and fake.throttled == 1
        for _ in range(19):  # steady: 60/m
            now[0] += 1.0
            assert [delete().status_code for _ in range(3)] == [202, 202, 202]
        now[0] += 1.0
        throttled = delete()
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "40"
        assert fake.throttled == 2
        assert client.post("/api/events", json=event_body()).status_code == 202  # another operation
    fake.assert_valid()


def test_concurrent_requests_are_all_recorded(fake: FakeKlaviyo) -> None:
    def send(i: int) -> None:
        with httpx.Client(base_url=fake.url, headers=HEADERS) as http:
            http.post("/api/events", json=event_body(unique_id=f"c-{i}"))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(fake.requests) == 20 and len(fake.recorded_events()) == 20
    assert sorted(e["unique_id"] for e in fake.events) == sorted(f"c-{i}" for i in range(20))


def test_fake_without_validation_still_answers(httpserver: HTTPServer) -> None:
    fake = FakeKlaviyo(httpserver, validate=False)
    assert fake.validator is None
    body = copy.deepcopy(event_body())
    body["data"]["attributes"]["vaule"] = 1
    with httpx.Client(base_url=fake.url, headers=HEADERS) as client:
        assert client.post("/api/events", json=body).status_code == 202
        assert client.get("/api/metrics").status_code == 404
    fake.assert_valid()
