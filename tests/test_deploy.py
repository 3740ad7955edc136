"""post-deploy / pre-undeploy against the commercetools stand-in: exact drafts, idempotence, failures."""

from __future__ import annotations

import json
from typing import Any

import pytest

from event.deploy import main
from tests.fakes.commercetools import FakeCommercetools

PUBSUB = {"CONNECT_SUBSCRIPTION_DESTINATION": "GoogleCloudPubSub", "CONNECT_GCP_PROJECT_ID": "shop-gcp",
          "CONNECT_GCP_TOPIC_NAME": "klaviyo-topic"}
DESTINATION = {"type": "GoogleCloudPubSub", "projectId": "shop-gcp", "topic": "klaviyo-topic"}


def deploy_env(env: dict[str, str], **extra: str) -> dict[str, str]:
    values = {**env, **PUBSUB, "CONNECT_ENV": "prod", **extra}
    values.pop("KLAVIYO_AUTH_KEY")  # the scripts never call Klaviyo
    return values


def writes(ct: FakeCommercetools) -> list[tuple[str, str, Any]]:
    return [(r.method, r.path, r.body) for r in ct.requests if r.method in ("POST", "DELETE")
            and r.path != "/oauth/token"]


def subscriptions(ct: FakeCommercetools) -> dict[str, dict[str, Any]]:
    return {s["key"]: s for s in ct.store.get("subscriptions", {}).values()}


def test_post_deploy_creates_only_what_the_processors_use(ct: FakeCommercetools, env: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["post-deploy"], deploy_env(env)) == 0
    drafts = {body["key"]: body for method, path, body in writes(ct) if path == "/test-project/subscriptions"}
    assert drafts == {
        "connect-prod-customer": {
            "key": "connect-prod-customer", "destination": DESTINATION, "format": {"type": "Platform"},
            "messages": [{"resourceTypeId": "customer", "types": sorted([
                "CustomerCreated", "CustomerAddressAdded", "CustomerAddressRemoved", "CustomerAddressChanged",
                "CustomerFirstNameSet", "CustomerLastNameSet", "CustomerTitleSet", "CustomerCompanyNameSet",
                "CustomerDeleted"])}],
            "changes": [{"resourceTypeId": "customer"}]},
        "connect-prod-category": {
            "key": "connect-prod-category", "destination": DESTINATION, "format": {"type": "Platform"},
            "messages": [{"resourceTypeId": "category", "types": ["CategoryCreated"]}],
            "changes": [{"resourceTypeId": "category"}]},
        "connect-prod-order": {
            "key": "connect-prod-order", "destination": DESTINATION, "format": {"type": "Platform"},
            "messages": [{"resourceTypeId": "order", "types": [
                "OrderCreated", "OrderCustomerSet", "OrderImported", "OrderStateChanged"]}],
            "changes": []},
        "connect-prod-payment": {
            "key": "connect-prod-payment", "destination": DESTINATION, "format": {"type": "Platform"},
            "messages": [{"resourceTypeId": "payment", "types": [
                "PaymentTransactionAdded", "PaymentTransactionStateChanged"]}],
            "changes": []},
        "connect-prod-product": {
            "key": "connect-prod-product", "destination": DESTINATION, "format": {"type": "Platform"},
            "messages": [{"resourceTypeId": "product", "types": ["ProductPublished", "ProductUnpublished"]}],
            "changes": [{"resourceTypeId": "product"}]},
        "connect-prod-inventory-entry": {
            "key": "connect-prod-inventory-entry", "destination": DESTINATION, "format": {"type": "Platform"},
            "messages": [], "changes": [{"resourceTypeId": "inventory-entry"}]},
    }
    assert "connect-prod-order: created" in capsys.readouterr().out


def test_second_run_changes_nothing(ct: FakeCommercetools, env: dict[str, str]) -> None:
    assert main(["post-deploy"], deploy_env(env)) == 0
    before = len(writes(ct))
    assert main(["post-deploy"], deploy_env(env)) == 0
    assert len(writes(ct)) == before
    assert all(s["version"] == 1 for s in subscriptions(ct).values())


def test_changed_configuration_updates_in_place(ct: FakeCommercetools, env: dict[str, str]) -> None:
    assert main(["post-deploy"], deploy_env(env)) == 0
    config = {"disabledEvents": ["OrderStateChanged", "InventoryResourceUpdated"]}
    assert main(["post-deploy"], deploy_env(env, NODE_CONFIG=json.dumps(config),
                                            CONNECT_GCP_TOPIC_NAME="other-topic")) == 0
    found = subscriptions(ct)
    order = found["connect-prod-order"]
    assert order["messages"] == [{"resourceTypeId": "order",
                                  "types": ["OrderCreated", "OrderCustomerSet", "OrderImported"]}]
    assert order["destination"]["topic"] == "other-topic"
    assert "connect-prod-inventory-entry" not in found  # no processor needs it any more
    update = [body for method, path, body in writes(ct) if path == "/test-project/subscriptions/key=connect-prod-order"]
    assert update == [{"version": 1, "actions": [
        {"action": "setMessages", "messages": order["messages"]},
        {"action": "changeDestination", "destination": {**DESTINATION, "topic": "other-topic"}}]}]


def test_sns_destination(ct: FakeCommercetools, env: dict[str, str]) -> None:
    values = deploy_env(env, CONNECT_SUBSCRIPTION_DESTINATION="SNS",
                        CONNECT_AWS_TOPIC_ARN="arn:aws:sns:eu-central-1:123456789012:klaviyo")
    assert main(["post-deploy"], values) == 0
    assert {s["destination"]["type"] for s in subscriptions(ct).values()} == {"SNS"}
    assert subscriptions(ct)["connect-prod-order"]["destination"] == {
        "type": "SNS", "topicArn": "arn:aws:sns:eu-central-1:123456789012:klaviyo", "authenticationMode": "IAM"}


def test_deployments_with_different_connect_env_do_not_collide(ct: FakeCommercetools, env: dict[str, str]) -> None:
    assert main(["post-deploy"], deploy_env(env, CONNECT_ENV="staging")) == 0
    assert main(["post-deploy"], deploy_env(env, CONNECT_ENV="prod")) == 0
    assert len(subscriptions(ct)) == 12
    assert main(["pre-undeploy"], deploy_env(env, CONNECT_ENV="staging")) == 0
    assert sorted(subscriptions(ct)) == sorted(f"connect-prod-{r}" for r in (
        "customer", "category", "order", "payment", "product", "inventory-entry"))


def test_pre_undeploy_deletes_exactly_what_post_deploy_created(ct: FakeCommercetools, env: dict[str, str]) -> None:
    ct.add("subscriptions", {"key": "someone-elses", "destination": DESTINATION,
                             "messages": [{"resourceTypeId": "order", "types": []}], "changes": [],
                             "format": {"type": "Platform"}, "status": "Healthy"})
    assert main(["post-deploy"], deploy_env(env)) == 0
    assert main(["pre-undeploy"], deploy_env(env)) == 0
    assert list(subscriptions(ct)) == ["someone-elses"]
    deletes = [(path, r.query) for r in ct.requests if r.method == "DELETE" for path in [r.path]]
    assert len(deletes) == 6 and all(query["version"] == ["1"] for _, query in deletes)
    assert main(["pre-undeploy"], deploy_env(env)) == 0  # nothing left: still fine


@pytest.mark.parametrize("missing", ["CONNECT_GCP_PROJECT_ID", "CONNECT_GCP_TOPIC_NAME"])
def test_missing_destination_variable_exits_non_zero(ct: FakeCommercetools, env: dict[str, str], missing: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    values = deploy_env(env)
    values.pop(missing)
    assert main(["post-deploy"], values) == 2
    assert missing in capsys.readouterr().err
    assert subscriptions(ct) == {}


def test_api_failure_exits_non_zero_naming_it(ct: FakeCommercetools, env: dict[str, str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    ct.fail_next("POST", r"/subscriptions$", 400, body={
        "statusCode": 400, "message": "invalid destination", "errors": [{"code": "InvalidInput",
                                                                          "message": "invalid destination"}]})
    assert main(["post-deploy"], deploy_env(env)) == 1
    err = capsys.readouterr().err
    assert "post-deploy failed" in err and "InvalidInput" in err
