"""Configuration: defaults, NODE_ENV files, NODE_CONFIG, Connect's injected variables, and every invalid case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import ConfigError, load_settings

CLIENT = json.dumps({"clientId": "client-id-1", "secret": "very-secret-value"})
BASE = {
    "CT_API_URL": "https://api.europe-west1.gcp.commercetools.com",
    "CT_AUTH_URL": "https://auth.europe-west1.gcp.commercetools.com",
    "CT_PROJECT_ID": "shop",
    "CT_API_CLIENT": CLIENT,
    "KLAVIYO_AUTH_KEY": "pk_secret_key_123",
}


def problems(env: dict[str, str], config_dir: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, config_dir)
    return str(info.value)


def test_defaults_match_the_reference() -> None:
    s = load_settings(BASE)
    assert s.order.created_messages == ("OrderCreated", "OrderImported", "OrderCustomerSet")
    assert s.order.changed_messages == ("OrderStateChanged",)
    assert s.order.placed_states == ("Open",)
    assert s.order.fulfilled_states == ("Confirmed", "Complete")
    assert s.order.cancelled_states == ("Cancelled",)
    assert s.order.metrics.placed == "Placed Order"
    assert s.order.metrics.ordered_product == "Ordered Product"
    assert s.order.metrics.refunded == "Refunded Order"
    assert s.product.deleted_messages == ("ProductUnpublished",)
    assert s.product.published_messages == ("ProductPublished",)
    assert s.product.inventory_channel == ""
    assert s.customer.deduplication is False
    assert s.customer.address_messages == ("CustomerAddressAdded", "CustomerAddressRemoved", "CustomerAddressChanged")
    assert s.payment.valid_transaction_states == ("Initial", "Pending", "Success")
    assert s.category_created_messages == ("CategoryCreated",)
    assert s.disabled_events == frozenset()
    assert s.klaviyo.api_url == "https://a.klaviyo.com"
    assert s.klaviyo.revision == "2026-07-15"
    assert s.commercetools.client_id == "client-id-1"
    assert s.commercetools.client_secret == "very-secret-value"
    assert s.connect_env == "connect_dev"
    assert s.log_level == "INFO"
    assert s.port == 8080
    assert s.event_time_budget == 8.0


def test_environment_variables_are_read() -> None:
    s = load_settings({**BASE, "KLAVIYO_API_URL": "http://127.0.0.1:9999/", "PREFERRED_LOCALE": "de-DE",
                       "PREFERRED_CURRENCY": "eur", "PRODUCT_URL_TEMPLATE": "https://shop/p/{{productSlug}}",
                       "CT_SCOPES": "view_orders:shop", "APP_TYPE": "event", "CONNECT_ENV": "prod",
                       "LOG_LEVEL": "debug", "PORT": "9090"})
    assert s.klaviyo.api_url == "http://127.0.0.1:9999"
    assert (s.preferred_locale, s.preferred_currency) == ("de-DE", "EUR")
    assert s.product_url_template == "https://shop/p/{{productSlug}}"
    assert (s.commercetools.scopes, s.app_type, s.connect_env, s.log_level, s.port) == (
        "view_orders:shop", "EVENT", "prod", "DEBUG", 9090)


def test_node_env_selects_the_override_file() -> None:
    s = load_settings({**BASE, "NODE_ENV": "test"})
    assert s.order.properties.rename == {"id": "orderId", "lineItems": "items", "customLineItems": "customItems"}
    assert s.product.deleted_messages == ("ProductUnpublished", "ResourceDeleted")
    assert s.order.placed_states == ("Open",)  # untouched keys keep their defaults
    assert load_settings({**BASE, "NODE_ENV": "production"}).order.properties.rename == {}


def test_node_config_deep_merges_over_everything() -> None:
    override = {"order": {"metrics": {"placedOrder": "Order Placed"}, "states": {"created": {"placedOrder": []}}},
                "customer": {"deduplication": {"enabled": True}}, "disabledEvents": [" OrderStateChanged"]}
    s = load_settings({**BASE, "NODE_ENV": "test", "NODE_CONFIG": json.dumps(override)})
    assert s.order.metrics.placed == "Order Placed"
    assert s.order.metrics.fulfilled == "Fulfilled Order"
    assert s.order.placed_states == ()
    assert s.customer.deduplication is True
    assert s.order.properties.rename["id"] == "orderId"  # from test.yaml, still there
    assert s.disabled_events == frozenset({"OrderStateChanged"})  # the reference's leading-space name works
    assert not s.enabled("OrderStateChanged")


def test_connect_injected_client_is_used_when_ours_is_absent() -> None:
    env = {"CTP_CLIENT_ID": "gen-id", "CTP_CLIENT_SECRET": "gen-secret", "CTP_PROJECT_KEY": "proj",
           "CTP_API_URL": "https://api.x", "CTP_AUTH_URL": "https://auth.x", "CTP_SCOPE": "view_orders:proj",
           "KLAVIYO_AUTH_KEY": "pk"}
    ct = load_settings(env).commercetools
    assert (ct.client_id, ct.client_secret, ct.project_key, ct.api_url, ct.auth_url, ct.scopes) == (
        "gen-id", "gen-secret", "proj", "https://api.x", "https://auth.x", "view_orders:proj")


def test_secrets_are_not_in_repr() -> None:
    text = repr(load_settings(BASE))
    assert "very-secret-value" not in text and "pk_secret_key_123" not in text


@pytest.mark.parametrize("missing", ["CT_API_URL", "CT_AUTH_URL", "CT_PROJECT_ID", "CT_API_CLIENT", "KLAVIYO_AUTH_KEY"])
def test_missing_required_variable_is_named(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    assert f"{missing}: required" in problems(env)


def test_all_problems_are_reported_at_once() -> None:
    text = problems({})
    for key in ("CT_API_URL", "CT_AUTH_URL", "CT_PROJECT_ID", "CT_API_CLIENT", "KLAVIYO_AUTH_KEY"):
        assert key in text


@pytest.mark.parametrize("value, expected", [
    ("{not json", "CT_API_CLIENT: is not valid JSON"),
    ('["a"]', "CT_API_CLIENT: must be a JSON object"),
    ('{"clientId": "x"}', "CT_API_CLIENT: field 'secret' is missing"),
    ('{"secret": "s3cr3t-value"}', "CT_API_CLIENT: field 'clientId' is missing"),
])
def test_bad_api_client_is_named_without_echoing_it(value: str, expected: str) -> None:
    text = problems({**BASE, "CT_API_CLIENT": value})
    assert expected in text
    assert "s3cr3t-value" not in text


@pytest.mark.parametrize("override, expected", [
    ({"customer": {"deduplication": {"enabled": "yes"}}}, "customer.deduplication.enabled: must be true or false"),
    ({"order": {"messages": {"created": "OrderCreated"}}}, "order.messages.created: must be a list of strings"),
    ({"order": {"metrics": {"placedOrder": 3}}}, "order.metrics.placedOrder: must be a string"),
    ({"order": {"properties": {"map": {"id": 1}}}}, "order.properties.map: must be a mapping of strings to strings"),
    ({"order": {"metrics": "x"}}, "order.metrics: must be a mapping"),
    ({"event": {"timeBudgetSeconds": -1}}, "event.timeBudgetSeconds: must be a positive number"),
    ({"event": {"batch": {"maxWaitMs": 5000}}}, "event.batch.maxWaitMs: must be whole milliseconds from 1 to 1000"),
    ({"event": {"batch": {"maxWaitMs": 2.5}}}, "event.batch.maxWaitMs: must be whole milliseconds"),
    ({"event": {"productCache": {"ttlSeconds": 7200}}}, "event.productCache.ttlSeconds: must be seconds"),
    ({"event": {"productCache": {"maxEntries": 1.5}}}, "event.productCache.maxEntries: must be a whole number"),
    ({"ordre": {}}, "ordre: unknown configuration key"),
    ({"disabledEvents": ["CatgeoryResourceUpdated"]},
     "disabledEvents: unknown processor name 'CatgeoryResourceUpdated'"),
    ({"disabledEvents": "OrderCreated"}, "disabledEvents: must be a list of strings"),
])
def test_wrong_config_values_are_named(override: dict, expected: str) -> None:
    assert expected in problems({**BASE, "NODE_CONFIG": json.dumps(override)})


def test_node_config_that_is_not_json() -> None:
    assert "NODE_CONFIG: is not valid JSON" in problems({**BASE, "NODE_CONFIG": "{order:"})


def test_wrong_type_in_an_environment_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "default.yaml").write_text((Path(__file__).parents[1] / "config/default.yaml").read_text())
    (tmp_path / "staging.yaml").write_text("customer:\n  deduplication:\n    enabled: maybe\n")
    text = problems({**BASE, "NODE_ENV": "staging"}, tmp_path)
    assert "customer.deduplication.enabled: must be true or false (in staging.yaml)" in text


@pytest.mark.parametrize("key, value, expected", [
    ("PREFERRED_LOCALE", "english!", "PREFERRED_LOCALE"),
    ("PREFERRED_CURRENCY", "EURO", "PREFERRED_CURRENCY"),
    ("PRODUCT_URL_TEMPLATE", "https://shop/p/", "PRODUCT_URL_TEMPLATE: must contain {{productSlug}}"),
    ("APP_TYPE", "WORKER", "APP_TYPE: must be one of EVENT, BULK_IMPORT"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
    ("PORT", "http", "PORT"),
    ("KLAVIYO_API_URL", "a.klaviyo.com", "KLAVIYO_API_URL: must be an http(s) URL"),
    ("CT_API_URL", "api.commercetools.com", "CT_API_URL: must be an http(s) URL"),
])
def test_bad_environment_values_are_named(key: str, value: str, expected: str) -> None:
    assert expected in problems({**BASE, key: value})
