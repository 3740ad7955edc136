"""`python -m event.deploy post-deploy | pre-undeploy`: the commercetools subscriptions the connector needs.

post-deploy creates or updates one subscription per resource type, subscribed to exactly the message types and
change notifications of the enabled processors (the reference subscribed to every change of six resource
types). The keys are the reference's, `connect-<CONNECT_ENV>-<resource>`, so taking over a reference deployment
updates its subscriptions instead of adding more (a project may hold at most 50). A second run changes nothing.
pre-undeploy deletes exactly those keys. Every call is awaited, and any failure exits non-zero naming it.

The destination comes from the variables Connect injects into these scripts (set them by hand when
self-hosting): CONNECT_SUBSCRIPTION_DESTINATION = GoogleCloudPubSub (CONNECT_GCP_PROJECT_ID,
CONNECT_GCP_TOPIC_NAME) or SNS (CONNECT_AWS_TOPIC_ARN).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from shared.commercetools import Commercetools
from shared.config import ConfigError, Settings, load_settings
from shared.consent import CONSENT_MESSAGES
from shared.errors import ConnectorError, NotFound

RESOURCES = ("customer", "category", "order", "payment", "product", "inventory-entry")
NOTIFICATION_TYPES = {"ResourceCreated", "ResourceUpdated", "ResourceDeleted"}


def destination(env: Mapping[str, str]) -> dict[str, Any]:
    """The subscription destination from Connect's variables; `ConfigError` names what is missing."""
    kind = (env.get("CONNECT_SUBSCRIPTION_DESTINATION") or "GoogleCloudPubSub").strip()
    if kind == "GoogleCloudPubSub":
        missing = [k for k in ("CONNECT_GCP_PROJECT_ID", "CONNECT_GCP_TOPIC_NAME") if not env.get(k, "").strip()]
        if missing:
            raise ConfigError([f"{k}: required for a GoogleCloudPubSub destination but not set" for k in missing])
        return {"type": "GoogleCloudPubSub", "projectId": env["CONNECT_GCP_PROJECT_ID"].strip(),
                "topic": env["CONNECT_GCP_TOPIC_NAME"].strip()}
    if kind == "SNS":
        if not env.get("CONNECT_AWS_TOPIC_ARN", "").strip():
            raise ConfigError(["CONNECT_AWS_TOPIC_ARN: required for an SNS destination but not set"])
        return {"type": "SNS", "topicArn": env["CONNECT_AWS_TOPIC_ARN"].strip(), "authenticationMode": "IAM"}
    raise ConfigError([f"CONNECT_SUBSCRIPTION_DESTINATION: must be GoogleCloudPubSub or SNS, got '{kind}'"])


def wanted(settings: Settings) -> dict[str, tuple[list[str], bool]]:
    """Per resource type: the message types and whether change notifications are needed, for what is enabled."""
    on = settings.enabled
    customer = (["CustomerCreated"] if on("CustomerCreated") else []) \
        + (list(settings.customer.address_messages) if on("CustomerAddressUpdate") else []) \
        + [name for name in ("CustomerFirstNameSet", "CustomerLastNameSet", "CustomerTitleSet",
                             "CustomerCompanyNameSet") if on(name)] \
        + (["CustomerDeleted"] if on("CustomerDeleted") and settings.customer.deletion else []) \
        + (list(CONSENT_MESSAGES) if on("CustomerConsentChanged") and settings.customer.consent_configured else [])
    order = (list(settings.order.created_messages) if on("OrderCreated") else []) \
        + (list(settings.order.changed_messages) if on("OrderStateChanged") else [])
    payment = [*settings.payment.transaction_added_messages, *settings.payment.transaction_changed_messages] \
        if on("OrderRefunded") else []
    product = (list(settings.product.published_messages) if on("ProductPublished") else []) \
        + (list(settings.product.deleted_messages) if on("ProductUnpublished") else [])
    return {
        "customer": (customer, on("CustomerResourceUpdated")
                     or (on("CustomerResourceDeleted") and settings.customer.deletion)),
        "category": (list(settings.category_created_messages) if on("CategoryCreated") else [],
                     on("CategoryResourceUpdated") or on("CategoryResourceDeleted")),
        "order": (order, False),
        "payment": (payment, False),
        "product": ([t for t in product if t not in NOTIFICATION_TYPES], on("ProductResourceDeleted")),
        "inventory-entry": ([], on("InventoryResourceUpdated")),
    }


def key_for(settings: Settings, resource: str) -> str:
    return f"connect-{settings.connect_env}-{resource}"


def draft(settings: Settings, resource: str, target: dict[str, Any]) -> dict[str, Any] | None:
    """The SubscriptionDraft for a resource type, or None when no enabled processor needs it."""
    messages, changes = wanted(settings)[resource]
    if not messages and not changes:
        return None
    return {
        "key": key_for(settings, resource),
        "destination": target,
        "messages": [{"resourceTypeId": resource, "types": sorted(set(messages))}] if messages else [],
        "changes": [{"resourceTypeId": resource}] if changes else [],
        "format": {"type": "Platform"},
    }


def _by_key(ct: Commercetools, key: str) -> dict[str, Any] | None:
    try:
        return ct.request("GET", f"/subscriptions/key={key}")
    except NotFound:
        return None


def _normal(entries: list[dict[str, Any]] | None) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((e["resourceTypeId"], tuple(sorted(e.get("types") or []))) for e in entries or [])


def post_deploy(settings: Settings, ct: Commercetools, target: dict[str, Any]) -> list[str]:
    """Create, update or delete each subscription; returns one line per resource saying what was done."""
    report = []
    for resource in RESOURCES:
        key = key_for(settings, resource)
        wanted_draft = draft(settings, resource, target)
        current = _by_key(ct, key)
        if wanted_draft is None:
            if current:
                ct.request("DELETE", f"/subscriptions/key={key}", params={"version": str(current["version"])})
                report.append(f"{key}: deleted (no enabled processor needs it)")
            continue
        if current is None:
            ct.request("POST", "/subscriptions", json_body=wanted_draft, safe_to_retry=False)
            report.append(f"{key}: created")
            continue
        actions = []
        if _normal(current.get("messages")) != _normal(wanted_draft["messages"]):
            actions.append({"action": "setMessages", "messages": wanted_draft["messages"]})
        if _normal(current.get("changes")) != _normal(wanted_draft["changes"]):
            actions.append({"action": "setChanges", "changes": wanted_draft["changes"]})
        if current.get("destination") != target:
            actions.append({"action": "changeDestination", "destination": target})
        if actions:
            ct.request("POST", f"/subscriptions/key={key}",
                       json_body={"version": current["version"], "actions": actions})
            report.append(f"{key}: updated ({', '.join(a['action'] for a in actions)})")
        else:
            report.append(f"{key}: unchanged")
    return report


def pre_undeploy(settings: Settings, ct: Commercetools) -> list[str]:
    report = []
    for resource in RESOURCES:
        key = key_for(settings, resource)
        current = _by_key(ct, key)
        if current is not None:
            ct.request("DELETE", f"/subscriptions/key={key}", params={"version": str(current["version"])})
            report.append(f"{key}: deleted")
    return report


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m event.deploy", description="Connect's deployment scripts: the commercetools subscriptions.",
        epilog="The destination: CONNECT_SUBSCRIPTION_DESTINATION = GoogleCloudPubSub (CONNECT_GCP_PROJECT_ID, "
               "CONNECT_GCP_TOPIC_NAME) or SNS (CONNECT_AWS_TOPIC_ARN); commercetools: CT_* or CTP_* variables.")
    parser.add_argument("script", choices=("post-deploy", "pre-undeploy"),
                        help="post-deploy: create or update the subscriptions; pre-undeploy: delete them")
    try:
        args = [parser.parse_args(sys.argv[1:] if argv is None else argv).script]
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    env = dict(os.environ if environ is None else environ)
    try:
        settings = load_settings(env, require_klaviyo=False)
        target = destination(env) if args[0] == "post-deploy" else {}
    except ConfigError as exc:
        print(f"{args[0]}: {exc}", file=sys.stderr)
        return 2
    for warning in settings.warnings:
        print(f"{args[0]}: warning: {warning}", file=sys.stderr)
    ct = Commercetools(settings.commercetools, user_agent=settings.user_agent)
    try:
        report = post_deploy(settings, ct, target) if args[0] == "post-deploy" else pre_undeploy(settings, ct)
    except ConnectorError as exc:
        print(f"{args[0]} failed: {exc.describe() if hasattr(exc, 'describe') else exc}", file=sys.stderr)
        return 1
    finally:
        ct.close()
    for line in report or ["nothing to do"]:
        print(f"{args[0]}: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
