"""The commercetools fake: auth, reads, query predicates, expansion, custom objects, subscriptions, faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer

from tests.fakes.commercetools import FakeCommercetools, WhereSyntaxError, matches, parse_where
from tests.fakes.commercetools_server import attach, serve

PROJECT = "test-project"


@pytest.fixture
def fake() -> FakeCommercetools:
    return FakeCommercetools(project_key=PROJECT, client_id="ct-client", client_secret="ct-secret")


@pytest.fixture
def base_url(fake: FakeCommercetools, httpserver: HTTPServer) -> str:
    attach(fake, httpserver)
    return httpserver.url_for("/").rstrip("/")


@pytest.fixture
def api(fake: FakeCommercetools, base_url: str) -> Iterator[httpx.Client]:
    """A client on `/{projectKey}` carrying a valid token."""
    headers = {"Authorization": f"Bearer {fake.issue_token()}"}
    with httpx.Client(base_url=f"{base_url}/{PROJECT}", headers=headers) as client:
        yield client


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


# --------------------------------------------------------------------------------------------- auth


def test_token_is_required_and_expires(fake: FakeCommercetools, base_url: str) -> None:
    fake.add("customers", {"id": "c1"})
    with httpx.Client(base_url=base_url) as http:
        bad = http.post("/oauth/token", auth=("ct-client", "wrong"), data={"grant_type": "client_credentials"})
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_client"
        assert http.post("/oauth/token", auth=("ct-client", "ct-secret"), data={}).status_code == 400

        ok = http.post(
            "/oauth/token",
            auth=("ct-client", "ct-secret"),
            data={"grant_type": "client_credentials", "scope": f"view_orders:{PROJECT}"},
        )
        assert ok.status_code == 200
        token = ok.json()
        assert token["token_type"] == "Bearer"
        assert token["expires_in"] == 172800
        assert token["scope"] == f"view_orders:{PROJECT}"
        assert token["access_token"] in fake.tokens

        missing = http.get(f"/{PROJECT}/customers/c1")
        assert missing.status_code == 401
        assert missing.json()["message"] == "invalid_token"
        assert error_code(missing) == "invalid_token"
        assert http.get(f"/{PROJECT}/customers/c1", headers={"Authorization": "Bearer nope"}).status_code == 401

        auth = {"Authorization": f"Bearer {token['access_token']}"}
        assert http.get(f"/{PROJECT}/customers/c1", headers=auth).status_code == 200
        fake.expire_tokens()
        assert http.get(f"/{PROJECT}/customers/c1", headers=auth).status_code == 401

    token_calls = fake.find_requests("POST", r"^/oauth/token$")
    assert [r.status for r in token_calls] == [401, 400, 200]
    assert token_calls[-1].body == {"grant_type": "client_credentials", "scope": f"view_orders:{PROJECT}"}


# -------------------------------------------------------------------------------------------- reads


def test_get_by_id_and_key_and_not_found(fake: FakeCommercetools, api: httpx.Client) -> None:
    stored = fake.add("customers", {"key": "ann", "email": "ann@example.com"})
    assert stored["version"] == 1 and stored["createdAt"] and stored["lastModifiedAt"]

    by_id = api.get(f"/customers/{stored['id']}")
    assert by_id.status_code == 200
    assert by_id.headers["content-type"] == "application/json"
    assert by_id.json() == stored
    assert api.get("/customers/key=ann").json()["id"] == stored["id"]

    missing = api.get("/customers/nope")
    assert missing.status_code == 404
    assert missing.json()["message"] == "The Resource with ID 'nope' was not found."
    assert error_code(missing) == "ResourceNotFound"
    assert api.get("/customers/key=bob").status_code == 404
    assert api.get("/unknown-things").status_code == 404


def test_keyset_paging_visits_every_item_once(fake: FakeCommercetools, api: httpx.Client) -> None:
    for _ in range(25):
        fake.add("orders", {"orderState": "Open"})
    seen: list[str] = []
    last: str | None = None
    while True:
        params: list[tuple[str, str]] = [("sort", "id asc"), ("limit", "10"), ("withTotal", "false")]
        if last is not None:
            params.append(("where", f'id > "{last}"'))
        body = api.get("/orders", params=params).json()
        assert "total" not in body
        assert body["count"] == len(body["results"])
        page = [r["id"] for r in body["results"]]
        seen += page
        if len(page) < 10:
            break
        last = page[-1]
    assert len(seen) == 25
    assert seen == sorted(fake.store["orders"])


def test_query_envelope_limits_sort_and_offset(fake: FakeCommercetools, api: httpx.Client) -> None:
    for n in range(30):
        fake.add("customers", {"id": f"c{n:02d}", "createdAt": f"2024-01-{n + 1:02d}T00:00:00.000Z"})
    body = api.get("/customers").json()
    assert (body["limit"], body["offset"], body["count"], body["total"]) == (20, 0, 20, 30)
    assert ids(api.get("/customers", params={"sort": "createdAt desc", "limit": 2})) == ["c29", "c28"]
    assert ids(api.get("/customers", params={"sort": "id asc", "offset": 28})) == ["c28", "c29"]
    assert api.get("/customers", params={"limit": 500}).status_code == 200
    too_many = api.get("/customers", params={"limit": 501})
    assert too_many.status_code == 400 and error_code(too_many) == "InvalidInput"
    assert api.get("/customers", params={"limit": "ten"}).status_code == 400


# ----------------------------------------------------------------------------------------- predicates


@pytest.fixture
def people(fake: FakeCommercetools) -> None:
    fake.add("customers", {"id": "a", "firstName": "Ann", "age": 30, "vip": True, "tags": ["x", "y"]})
    fake.add("customers", {"id": "b", "firstName": "Bob", "age": 40, "vip": False})
    fake.add("customers", {"id": "c", "firstName": 'Cy "Q"', "age": 50, "custom": {"fields": {"tier": "gold"}}})


@pytest.mark.usefixtures("people")
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ('firstName = "Ann"', ["a"]),
        ('firstName != "Ann"', ["b", "c"]),
        ('firstName <> "Ann"', ["b", "c"]),
        ("age > 30", ["b", "c"]),
        ("age >= 40", ["b", "c"]),
        ("age < 40", ["a"]),
        ("age <= 40", ["a", "b"]),
        ("vip = true", ["a"]),
        ('id in ("a", "c", "zz")', ["a", "c"]),
        ('id not in ("a")', ["b", "c"]),
        ("vip is defined", ["a", "b"]),
        ("vip is not defined", ["c"]),
        ('age > 35 and firstName = "Bob"', ["b"]),
        ('firstName = "Ann" or age = 50', ["a", "c"]),
        ('not(firstName = "Ann")', ["b", "c"]),
        ('(id = "a" or id = "b") and not(vip = true)', ["b"]),
        ('firstName = "Cy \\"Q\\""', ["c"]),
        ('custom(fields(tier = "gold"))', ["c"]),
        ('tags = "y"', ["a"]),
        ('tags contains any ("q", "x")', ["a"]),
    ],
)
def test_where_operators(api: httpx.Client, where: str, expected: list[str]) -> None:
    assert ids(api.get("/customers", params={"where": where, "sort": "id asc"})) == expected


@pytest.mark.usefixtures("people")
def test_repeated_where_parameters_are_anded(api: httpx.Client) -> None:
    params = [("where", "age > 30"), ("where", "age < 50")]
    assert ids(api.get("/customers", params=params)) == ["b"]


def test_nested_predicates(fake: FakeCommercetools, api: httpx.Client) -> None:
    fake.add("products", product("p-pub", published=True, sku="sku-1"))
    fake.add("products", product("p-draft", published=False, sku="sku-2"))
    fake.add(
        "orders",
        {
            "id": "o1",
            "paymentInfo": {"payments": [{"typeId": "payment", "id": "p0"}, {"typeId": "payment", "id": "p1"}]},
            "lineItems": [{"productId": "p-pub", "quantity": 1}, {"productId": "p-draft", "quantity": 3}],
        },
    )
    fake.add("orders", {"id": "o2", "paymentInfo": {"payments": [{"typeId": "payment", "id": "p2"}]}})

    assert ids(api.get("/products", params={"where": "masterData(published = true)"})) == ["p-pub"]
    sku = 'masterData(current(masterVariant(sku = "sku-2")))'
    assert ids(api.get("/products", params={"where": sku})) == ["p-draft"]
    assert ids(api.get("/orders", params={"where": 'paymentInfo(payments(id = "p1"))'})) == ["o1"]
    assert ids(api.get("/orders", params={"where": 'lineItems(productId = "p-draft")'})) == ["o1"]
    # both conditions must hold for the SAME line item
    same_item = 'lineItems(productId = "p-pub" and quantity = 3)'
    assert ids(api.get("/orders", params={"where": same_item})) == []
    assert ids(api.get("/orders", params={"where": 'not(paymentInfo(payments(id = "p1")))'})) == ["o2"]


@pytest.mark.parametrize(
    "where",
    [
        "",
        "id =",
        'id == "a"',
        'id = "unterminated',
        "id = unquoted",
        '(id = "a"',
        'id = "a" and',
        'id = "a" id = "b"',
        "id in ()",
        "id is maybe",
        'not id = "a"',
        'id ~ "a"',
        "masterData(published = true",
    ],
)
def test_bad_predicates_are_400_invalid_input(api: httpx.Client, where: str) -> None:
    response = api.get("/customers", params={"where": where})
    assert response.status_code == 400
    assert error_code(response) == "InvalidInput"
    with pytest.raises(WhereSyntaxError):
        parse_where(where)


def test_matches_helper() -> None:
    assert matches('a(b(c in ("x")))', {"a": [{"b": {"c": "y"}}, {"b": {"c": "x"}}]})
    assert not matches("n > 1", {"n": "2"})  # a string never compares to a number
    assert matches('createdAt >= "2024-01-01T00:00:00.000Z"', {"createdAt": "2024-02-01T00:00:00.000Z"})


# ------------------------------------------------------------------------------------------ expansion


def product(pid: str, *, published: bool, sku: str, categories: tuple[str, ...] = ()) -> dict[str, Any]:
    data = {
        "name": {"en": pid},
        "categories": [{"typeId": "category", "id": c} for c in categories],
        "masterVariant": {"id": 1, "sku": sku},
        "variants": [],
    }
    return {
        "id": pid,
        "key": pid,
        "productType": {"typeId": "product-type", "id": "pt"},
        "masterData": {"published": published, "current": data, "staged": {**data, "name": {"en": "staged"}}},
    }


@pytest.fixture
def catalog(fake: FakeCommercetools) -> None:
    fake.add("categories", {"id": "root", "key": "root", "ancestors": []})
    fake.add("categories", {"id": "women", "ancestors": [{"typeId": "category", "id": "root"}]})
    fake.add(
        "categories",
        {
            "id": "jeans",
            "parent": {"typeId": "category", "id": "women"},
            "ancestors": [{"typeId": "category", "id": "root"}, {"typeId": "category", "id": "women"}],
        },
    )
    fake.add("products", product("p1", published=True, sku="s1", categories=("jeans",)))


@pytest.mark.usefixtures("catalog")
def test_expand_category_ancestors_and_parent(fake: FakeCommercetools, api: httpx.Client) -> None:
    body = api.get("/categories", params=[("where", 'id = "jeans"'), ("expand", "ancestors[*]")]).json()
    (jeans,) = body["results"]
    assert [a["obj"]["id"] for a in jeans["ancestors"]] == ["root", "women"]
    assert "obj" not in jeans["ancestors"][1]["obj"]["ancestors"][0]  # not expanded beyond the path
    assert "obj" not in jeans["parent"]

    single = api.get("/categories/jeans", params={"expand": "parent"}).json()
    assert single["parent"]["obj"]["id"] == "women"
    assert "obj" not in (fake.get("categories", "jeans") or {})["parent"]  # the store is never mutated


@pytest.mark.usefixtures("catalog")
def test_expand_product_categories_with_their_ancestors(api: httpx.Client) -> None:
    path = "masterData.current.categories[*].ancestors[*]"
    (p1,) = api.get("/products", params=[("expand", "masterData.current.categories[*]"), ("expand", path)]).json()[
        "results"
    ]
    (category,) = p1["masterData"]["current"]["categories"]
    assert category["obj"]["id"] == "jeans"
    assert [a["obj"]["id"] for a in category["obj"]["ancestors"]] == ["root", "women"]
    assert "obj" not in p1["masterData"]["staged"]["categories"][0]

    projection = api.get("/product-projections/p1", params={"expand": "categories[*].ancestors[*]"}).json()
    assert [a["obj"]["id"] for a in projection["categories"][0]["obj"]["ancestors"]] == ["root", "women"]
    assert api.get("/products", params={"expand": "masterData..current"}).status_code == 400


def test_expand_order_payments(fake: FakeCommercetools, api: httpx.Client) -> None:
    fake.add("payments", {"id": "pay1", "amountPlanned": {"centAmount": 100, "currencyCode": "EUR"}})
    fake.add("orders", {"id": "o1", "paymentInfo": {"payments": [{"typeId": "payment", "id": "pay1"}]}})
    order = api.get("/orders/o1", params={"expand": "paymentInfo.payments[*]"}).json()
    assert order["paymentInfo"]["payments"][0]["obj"]["amountPlanned"]["centAmount"] == 100


def test_product_projections_are_the_published_view(fake: FakeCommercetools, api: httpx.Client) -> None:
    fake.add("products", product("pub", published=True, sku="s1"))
    fake.add("products", product("draft", published=False, sku="s2"))

    (pub,) = api.get("/product-projections").json()["results"]
    assert pub["id"] == "pub" and pub["name"] == {"en": "pub"} and pub["published"] is True
    assert "masterData" not in pub
    assert api.get("/product-projections/draft").status_code == 404
    assert api.get("/product-projections/key=pub").json()["masterVariant"]["sku"] == "s1"
    staged = api.get("/product-projections", params={"staged": "true", "sort": "id asc"}).json()["results"]
    assert [(p["id"], p["name"]["en"]) for p in staged] == [("draft", "staged"), ("pub", "staged")]
    assert ids(api.get("/product-projections", params={"where": 'masterVariant(sku = "s1")'})) == ["pub"]


# ------------------------------------------------------------------------------------- custom objects


def put(api: httpx.Client, value: Any, version: int | None = None, key: str = "k") -> httpx.Response:
    draft: dict[str, Any] = {"container": "sync", "key": key, "value": value}
    if version is not None:
        draft["version"] = version
    return api.post("/custom-objects", json=draft)


def test_custom_object_lifecycle_and_versions(fake: FakeCommercetools, api: httpx.Client) -> None:
    assert api.get("/custom-objects/sync/k").status_code == 404
    created = put(api, {"cursor": "a", "drop": None})
    assert created.status_code == 201
    assert created.json()["version"] == 1
    assert created.json()["value"] == {"cursor": "a"}  # null fields are not saved

    assert put(api, {"cursor": "b"}).json()["version"] == 2  # no version: overwrite
    assert put(api, {"cursor": "c"}, version=2).json()["version"] == 3  # matching version
    stale = put(api, {"cursor": "x"}, version=2)
    assert stale.status_code == 409
    assert stale.json()["errors"][0] == {**stale.json()["errors"][0], "code": "ConcurrentModification"}
    assert stale.json()["errors"][0]["currentVersion"] == 3
    assert put(api, {"cursor": "x"}, version=0).status_code == 409  # version 0 = create only
    assert put(api, {"n": 1}, version=0, key="fresh").status_code == 201
    assert put(api, {"n": 1}, version=5, key="absent").status_code == 409

    got = api.get("/custom-objects/sync/k").json()
    assert (got["version"], got["value"]) == (3, {"cursor": "c"})
    assert (fake.get_custom_object("sync", "k") or {})["value"] == {"cursor": "c"}
    listing = api.get("/custom-objects/sync", params={"sort": "key asc"}).json()
    assert [o["key"] for o in listing["results"]] == ["fresh", "k"]
    assert api.get("/custom-objects/sync", params={"where": 'value(cursor = "c")'}).json()["count"] == 1
    assert api.get("/custom-objects/other").json()["total"] == 0

    assert api.post("/custom-objects", json={"container": "bad key!", "key": "k", "value": 1}).status_code == 400
    assert api.get("/custom-objects/sync/bad$key").status_code == 400

    assert api.delete("/custom-objects/sync/k", params={"version": 2}).status_code == 409
    assert api.delete("/custom-objects/sync/k", params={"version": 3}).status_code == 200
    assert api.get("/custom-objects/sync/k").status_code == 404
    assert api.delete("/custom-objects/sync/k").status_code == 404
    assert api.delete("/custom-objects/sync/fresh").status_code == 200  # without a version: unconditional


def test_concurrent_compare_and_set_loses_no_update(fake: FakeCommercetools) -> None:
    """Writers that all read version 1 at once: exactly one wins each round, the rest retry on 409."""
    server, base_url = serve(fake)
    token = fake.issue_token()
    writers = 8
    barrier = threading.Barrier(writers)
    conflicts: list[int] = []

    def increment() -> None:
        with httpx.Client(base_url=f"{base_url}/{PROJECT}", headers={"Authorization": f"Bearer {token}"}) as c:
            first = True
            while True:
                current = c.get("/custom-objects/sync/counter").json()
                if first:
                    barrier.wait(timeout=10)
                    first = False
                response = put(c, {"n": current["value"]["n"] + 1}, version=current["version"], key="counter")
                if response.status_code == 200:
                    return
                assert response.status_code == 409
                conflicts.append(1)

    try:
        fake.add("custom-objects", {"container": "sync", "key": "counter", "value": {"n": 0}})
        with ThreadPoolExecutor(writers) as pool:
            for future in [pool.submit(increment) for _ in range(writers)]:
                future.result()
    finally:
        server.shutdown()
        server.server_close()
    final = fake.get_custom_object("sync", "counter") or {}
    assert final["value"] == {"n": writers}
    assert final["version"] == writers + 1
    assert len(conflicts) >= writers - 1


# -------------------------------------------------------------------------------------- subscriptions


def test_subscription_lifecycle(fake: FakeCommercetools, api: httpx.Client) -> None:
    destination = {"type": "GoogleCloudPubSub", "projectId": "gcp", "topic": "orders"}
    draft = {"key": "klaviyo", "destination": destination, "messages": [{"resourceTypeId": "order"}]}
    created = api.post("/subscriptions", json=draft)
    assert created.status_code == 201
    sub = created.json()
    assert (sub["version"], sub["format"], sub["status"], sub["changes"]) == (1, {"type": "Platform"}, "Healthy", [])

    duplicate = api.post("/subscriptions", json=draft)
    assert duplicate.status_code == 400 and error_code(duplicate) == "DuplicateField"
    assert api.post("/subscriptions", json={"key": "nothing", "destination": destination}).status_code == 400
    assert api.get("/subscriptions/key=klaviyo").json()["id"] == sub["id"]
    assert ids(api.get("/subscriptions", params={"where": 'key = "klaviyo"'})) == [sub["id"]]

    actions = [
        {"action": "setMessages", "messages": [{"resourceTypeId": "customer", "types": ["CustomerCreated"]}]},
        {"action": "setChanges", "changes": [{"resourceTypeId": "product"}]},
        {"action": "changeDestination", "destination": {**destination, "topic": "all"}},
    ]
    updated = api.post("/subscriptions/key=klaviyo", json={"version": 1, "actions": actions})
    assert updated.status_code == 200
    body = updated.json()
    assert body["version"] == 2
    assert body["messages"] == actions[0]["messages"]
    assert body["changes"] == [{"resourceTypeId": "product"}]
    assert body["destination"]["topic"] == "all"

    stale = api.post(f"/subscriptions/{sub['id']}", json={"version": 1, "actions": []})
    assert stale.status_code == 409 and stale.json()["errors"][0]["currentVersion"] == 2
    unknown = api.post(f"/subscriptions/{sub['id']}", json={"version": 2, "actions": [{"action": "fly"}]})
    assert unknown.status_code == 400
    renamed = api.post(
        f"/subscriptions/{sub['id']}", json={"version": 2, "actions": [{"action": "setKey", "key": "kl2"}]}
    )
    assert renamed.json()["version"] == 3
    assert api.get("/subscriptions/key=klaviyo").status_code == 404
    assert (fake.get("subscriptions", sub["id"]) or {})["key"] == "kl2"

    assert api.delete("/subscriptions/key=kl2", params={"version": 2}).status_code == 409
    assert api.delete("/subscriptions/key=kl2").status_code == 400  # version is required
    assert api.delete("/subscriptions/key=kl2", params={"version": 3}).status_code == 200
    assert api.get(f"/subscriptions/{sub['id']}").status_code == 404
    assert fake.store["subscriptions"] == {}


# ---------------------------------------------------------------------------------- fault injection


def test_fail_next_is_consumed_then_normal_handling_resumes(fake: FakeCommercetools, api: httpx.Client) -> None:
    fake.add("orders", {"id": "o1"})
    fake.fail_next("GET", r"/orders/", 503, times=2, headers={"Retry-After": "1"})
    fake.fail_next("*", r"/customers$", 429, body={"custom": True})

    first = api.get("/orders/o1")
    assert first.status_code == 503 and first.headers["retry-after"] == "1"
    assert error_code(first) == "ServiceUnavailable"
    assert api.get("/orders").status_code == 200  # path regex does not match the query endpoint
    assert api.get("/orders/o1").status_code == 503
    assert api.get("/orders/o1").status_code == 200
    throttled = api.get("/customers")
    assert (throttled.status_code, throttled.json()) == (429, {"custom": True})
    assert api.get("/customers").status_code == 200

    fake.fail_next("GET", r"/orders/o1$", 200, delay=0.3)  # only slows the request down
    started = time.monotonic()
    assert api.get("/orders/o1").json()["id"] == "o1"
    assert time.monotonic() - started >= 0.3

    assert [r.status for r in fake.find_requests("GET", r"/orders")] == [503, 200, 503, 200, 200]
    last = fake.requests[-1]
    assert (last.method, last.path, last.query, last.body) == ("GET", f"/{PROJECT}/orders/o1", {}, None)
    assert last.headers["authorization"].startswith("Bearer ")


def test_requests_record_parsed_json_bodies(fake: FakeCommercetools, api: httpx.Client) -> None:
    put(api, {"a": 1})
    recorded = fake.requests[-1]
    assert recorded.body == {"container": "sync", "key": "k", "value": {"a": 1}}
    assert recorded.status == 201
    api.get("/customers", params=[("where", "a = 1"), ("where", "b = 2")])
    assert fake.requests[-1].query["where"] == ["a = 1", "b = 2"]


# ------------------------------------------------------------------------------------ standalone serve


def test_serve_answers_over_a_real_socket(fake: FakeCommercetools) -> None:
    fake.add("customers", {"id": "c1", "key": "ann"})
    server, base_url = serve(fake)
    try:
        with httpx.Client(base_url=base_url) as http:
            token = http.post(
                "/oauth/token", auth=("ct-client", "ct-secret"), data={"grant_type": "client_credentials"}
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            response = http.get(f"/{PROJECT}/customers/key%3Dann", headers=auth)
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            assert response.json()["id"] == "c1"
            query = http.get(f"/{PROJECT}/customers", params={"where": 'key = "ann"'}, headers=auth).json()
            assert query["total"] == 1
            assert http.get(f"/{PROJECT}/customers/c1").status_code == 401
            created = http.post(
                f"/{PROJECT}/custom-objects", json={"container": "c", "key": "k", "value": 1}, headers=auth
            )
            assert created.status_code == 201
    finally:
        server.shutdown()
        server.server_close()
    assert [r.status for r in fake.requests] == [200, 200, 200, 401, 201]
