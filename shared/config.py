"""Configuration: environment variables plus the YAML tree (default, per-environment file, NODE_CONFIG).

Loaded once at start-up by `load_settings()` into one immutable `Settings` object that is passed to whatever
needs it. Nothing else in the connector reads `os.environ`. Invalid configuration raises `ConfigError`, whose
message names every offending key and never echoes a secret.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from shared import __version__

DEFAULT_KLAVIYO_API_URL = "https://a.klaviyo.com"
KLAVIYO_REVISION = "2026-07-15"
LOCALE_PATTERN = re.compile(r"^[A-Za-z]{2,4}([_-][A-Za-z]{4})?([_-]([A-Za-z]{2}|[0-9]{3}))?$")
APP_TYPES = ("EVENT", "BULK_IMPORT")
STORE_KEY = re.compile(r"[A-Za-z0-9_-]{2,256}")  # what commercetools allows as a Store key
STORE_KEYS = ("locale", "currency", "productUrlTemplate", "consent")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ZERO_ALLOWED = frozenset({"event.backfillAfterHours"})  # numeric keys where 0 means "off"

# Names accepted in `disabledEvents`: one per realtime processor (the reference's names, plus ours).
PROCESSOR_NAMES = (
    "CustomerCreated",
    "CustomerResourceUpdated",
    "CustomerAddressUpdate",
    "CustomerFirstNameSet",
    "CustomerLastNameSet",
    "CustomerTitleSet",
    "CustomerCompanyNameSet",
    "CustomerResourceDeleted",
    "CustomerDeleted",
    "CustomerConsentChanged",
    "CategoryCreated",
    "CategoryResourceUpdated",
    "CategoryResourceDeleted",
    "OrderCreated",
    "OrderStateChanged",
    "OrderRefunded",
    "ProductPublished",
    "ProductUnpublished",
    "ProductResourceDeleted",
    "InventoryResourceUpdated",
)


class ConfigError(Exception):
    """Configuration that cannot work. `problems` lists one 'KEY: what is wrong' line per key."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class PropertyFilter:
    """`include` / `exclude` / `map` rules applied to a resource's fields before they become properties."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class OrderMetrics:
    placed: str
    ordered_product: str
    fulfilled: str
    cancelled: str
    refunded: str


@dataclass(frozen=True)
class OrderSettings:
    created_messages: tuple[str, ...]
    changed_messages: tuple[str, ...]
    placed_states: tuple[str, ...]
    fulfilled_states: tuple[str, ...]
    cancelled_states: tuple[str, ...]
    properties: PropertyFilter
    custom_fields: PropertyFilter
    metrics: OrderMetrics


@dataclass(frozen=True)
class ConsentChannel:
    """`customer.consent.<channel>`: the boolean custom field holding consent ("" = off) and the Klaviyo list."""

    field: str = ""
    list_id: str = ""


@dataclass(frozen=True)
class CustomerSettings:
    address_messages: tuple[str, ...]
    custom_fields: PropertyFilter
    deduplication: bool
    deletion: bool
    consent_email: ConsentChannel = ConsentChannel()
    consent_sms: ConsentChannel = ConsentChannel()

    @property
    def consent_configured(self) -> bool:
        return bool(self.consent_email.field or self.consent_sms.field)


@dataclass(frozen=True)
class StoreSettings:
    """`stores.<key>`: what a commercetools Store overrides ("" = the global setting)."""

    locale: str = ""
    currency: str = ""
    product_url_template: str = ""
    email_list_id: str = ""
    sms_list_id: str = ""


@dataclass(frozen=True)
class PaymentSettings:
    transaction_added_messages: tuple[str, ...]
    transaction_changed_messages: tuple[str, ...]
    valid_transaction_states: tuple[str, ...]


@dataclass(frozen=True)
class ProductSettings:
    published_messages: tuple[str, ...]
    deleted_messages: tuple[str, ...]
    inventory_channel: str


@dataclass(frozen=True)
class CommercetoolsSettings:
    api_url: str
    auth_url: str
    project_key: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: str = ""


@dataclass(frozen=True)
class KlaviyoSettings:
    api_key: str = field(repr=False)
    api_url: str = DEFAULT_KLAVIYO_API_URL
    revision: str = KLAVIYO_REVISION


@dataclass(frozen=True)
class JobSettings:
    time_budget_seconds: float
    page_size: int
    lease_seconds: float


@dataclass(frozen=True)
class Settings:
    """Everything the connector is configured with."""

    commercetools: CommercetoolsSettings
    klaviyo: KlaviyoSettings
    disabled_events: frozenset[str]
    order: OrderSettings
    customer: CustomerSettings
    payment: PaymentSettings
    category_created_messages: tuple[str, ...]
    product: ProductSettings
    event_time_budget: float
    job: JobSettings
    backfill_after_hours: float = 24.0  # realtime events older than this are history (0: never by age)
    dry_run: bool = False
    stores: Mapping[str, StoreSettings] = field(default_factory=dict)
    retry_dead_letters: bool = False
    dry_run_file: str = "out/klaviyo-dry-run.jsonl"
    bulk_api_token: str = field(default="", repr=False)
    product_url_template: str = ""
    preferred_locale: str = ""
    preferred_currency: str = ""
    app_type: str = ""
    connect_env: str = "connect_dev"
    log_level: str = "INFO"
    port: int = 8080
    event_batch_max_wait: float = 0.2  # seconds a write may wait for others to share its Klaviyo bulk request
    product_cache_seconds: float = 60.0  # how long the event app reuses a product read from commercetools
    product_cache_size: int = 2000  # products kept at most (least recently used dropped first)
    user_agent: str = f"commercetools-klaviyo-connector-python/{__version__}"
    warnings: tuple[str, ...] = ()  # what works but is likely a mistake (said at start-up)

    def enabled(self, processor: str) -> bool:
        return processor not in self.disabled_events


def default_config_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "config"


def load_settings(environ: Mapping[str, str] | None = None, config_dir: Path | None = None, *,
                  require_klaviyo: bool = True) -> Settings:
    """Build the settings from `environ` (default: the process environment) and the YAML files.

    `require_klaviyo=False` serves commands that never call Klaviyo (the deployment scripts).
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    directory = config_dir or Path(env.get("NODE_CONFIG_DIR") or default_config_dir())
    tree = _load_tree(env, directory, problems)
    settings = _build(env, tree, problems, require_klaviyo)
    if problems:
        raise ConfigError(problems)
    assert settings is not None
    node_env = env.get("NODE_ENV", "").strip()
    if node_env and not (directory / f"{node_env}.yaml").is_file():
        warning = f"NODE_ENV: '{node_env}' names no configuration file ({directory / node_env}.yaml not found); " \
                  "the defaults apply"
        settings = dataclasses.replace(settings, warnings=(*settings.warnings, warning))
    return settings


# --- the YAML tree -------------------------------------------------------------------------------------------


def _load_tree(env: Mapping[str, str], config_dir: Path, problems: list[str]) -> dict[str, Any]:
    default_file = config_dir / "default.yaml"
    defaults = _read_yaml(default_file, problems)
    if defaults is None:
        return {}
    tree = copy.deepcopy(defaults)
    node_env = env.get("NODE_ENV", "").strip()
    if node_env:
        env_file = config_dir / f"{node_env}.yaml"
        if env_file.is_file():
            overrides = _read_yaml(env_file, problems)
            if overrides:
                _check_types(overrides, defaults, env_file.name, "", problems)
                _deep_merge(tree, overrides)
    raw = env.get("NODE_CONFIG", "").strip()
    if raw:
        try:
            overrides = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"NODE_CONFIG: is not valid JSON ({exc.msg} at position {exc.pos})")
            overrides = None
        if overrides is not None and not isinstance(overrides, dict):
            problems.append("NODE_CONFIG: must be a JSON object")
        elif overrides:
            _check_types(overrides, defaults, "NODE_CONFIG", "", problems)
            _deep_merge(tree, overrides)
    return tree


def _read_yaml(path: Path, problems: list[str]) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path}: configuration file not found (set NODE_CONFIG_DIR to the config folder)")
        return None
    except yaml.YAMLError as exc:
        problems.append(f"{path.name}: is not valid YAML ({exc})")
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append(f"{path.name}: must hold a mapping of keys")
        return None
    return data


def _check_types(overrides: dict[str, Any], defaults: dict[str, Any], source: str, prefix: str,
                 problems: list[str]) -> None:
    """Each overriding value must have the type of the default it replaces (the defaults are the schema)."""
    for key, value in overrides.items():
        path = f"{prefix}{key}"
        if key not in defaults:
            problems.append(f"{path}: unknown configuration key (in {source})")
            continue
        expected = defaults[key]
        if path == "stores":  # a map of store keys, checked in full by `_stores`
            if not isinstance(value, dict):
                problems.append(f"{path}: must be a mapping of store keys to overrides (in {source}), "
                                f"got {_type_name(value)}")
        elif isinstance(expected, dict) and expected:
            if not isinstance(value, dict):
                problems.append(f"{path}: must be a mapping (in {source}), got {_type_name(value)}")
            else:
                _check_types(value, expected, source, f"{path}.", problems)
        elif isinstance(expected, dict):
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                problems.append(f"{path}: must be a mapping of strings to strings (in {source})")
        elif isinstance(expected, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{path}: must be a list of strings (in {source}), got {_type_name(value)}")
        elif isinstance(expected, bool):
            if not isinstance(value, bool):
                problems.append(f"{path}: must be true or false (in {source}), got {_type_name(value)}")
        elif isinstance(expected, int | float):
            if path in ZERO_ALLOWED:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    shown = value if isinstance(value, int | float) and not isinstance(value, bool) else \
                        _type_name(value)
                    problems.append(f"{path}: must be a number, 0 or more (in {source}), got {shown}")
            elif isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                problems.append(f"{path}: must be a positive number (in {source}), got {_type_name(value)}")
        elif isinstance(expected, str) and not isinstance(value, str):
            problems.append(f"{path}: must be a string (in {source}), got {_type_name(value)}")


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _deep_merge(target: dict[str, Any], overrides: dict[str, Any]) -> None:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict) and target[key]:
            _deep_merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


# --- building the typed object --------------------------------------------------------------------------------


def _build(env: Mapping[str, str], tree: dict[str, Any], problems: list[str], require_klaviyo: bool) -> Settings | None:
    if not tree:
        return None
    ct = _commercetools(env, problems)
    dry_run = tree["dryRun"]["enabled"]
    klaviyo_key = env.get("KLAVIYO_AUTH_KEY", "").strip()
    if not klaviyo_key and not dry_run and require_klaviyo:
        problems.append("KLAVIYO_AUTH_KEY: required (the Klaviyo private API key) but not set")
    page_size = tree["job"]["pageSize"]
    if not isinstance(page_size, int) or not 1 <= page_size <= 500:
        problems.append(f"job.pageSize: must be a whole number from 1 to 500, got {page_size}")
    max_wait_ms = tree["event"]["batch"]["maxWaitMs"]
    if not isinstance(max_wait_ms, int) or isinstance(max_wait_ms, bool) or not 1 <= max_wait_ms <= 1000:
        problems.append(f"event.batch.maxWaitMs: must be whole milliseconds from 1 to 1000, got {max_wait_ms}")
    cache = tree["event"]["productCache"]
    cache_seconds, cache_size = cache["ttlSeconds"], cache["maxEntries"]
    if isinstance(cache_seconds, bool) or not isinstance(cache_seconds, int | float) \
            or not 0 < cache_seconds <= 3600:
        problems.append(f"event.productCache.ttlSeconds: must be seconds up to 3600, got {cache_seconds}")
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or not 1 <= cache_size <= 100_000:
        problems.append(f"event.productCache.maxEntries: must be a whole number from 1 to 100000, got {cache_size}")
    klaviyo_url = (env.get("KLAVIYO_API_URL") or DEFAULT_KLAVIYO_API_URL).strip().rstrip("/")
    if not klaviyo_url.startswith(("http://", "https://")):
        problems.append("KLAVIYO_API_URL: must be an http(s) URL")

    locale = env.get("PREFERRED_LOCALE", "").strip()
    if locale and not LOCALE_PATTERN.match(locale):
        problems.append(f"PREFERRED_LOCALE: '{locale}' is not a locale such as en-US or de")
    currency = env.get("PREFERRED_CURRENCY", "").strip().upper()
    if currency and not re.fullmatch(r"[A-Z]{3}", currency):
        problems.append(f"PREFERRED_CURRENCY: '{currency}' is not an ISO 4217 code such as EUR")
    template = env.get("PRODUCT_URL_TEMPLATE", "").strip()
    if template and "{{productSlug}}" not in template:
        problems.append("PRODUCT_URL_TEMPLATE: must contain {{productSlug}}")
    app_type = env.get("APP_TYPE", "").strip().upper()
    if app_type and app_type not in APP_TYPES:
        problems.append(f"APP_TYPE: must be one of {', '.join(APP_TYPES)} or unset, got '{app_type}'")
    log_level = (env.get("LOG_LEVEL") or "INFO").strip().upper()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL: must be one of {', '.join(LOG_LEVELS)}, got '{log_level}'")
    port_raw = (env.get("PORT") or "8080").strip()
    if not port_raw.isdigit() or not 0 < int(port_raw) < 65536:
        problems.append(f"PORT: must be a TCP port number, got '{port_raw}'")

    disabled = _disabled_events(tree.get("disabledEvents", []), problems)
    consent_email = _consent_channel(tree["customer"]["consent"], "email", problems)
    consent_sms = _consent_channel(tree["customer"]["consent"], "sms", problems)
    stores = _stores(tree.get("stores"), {"email": consent_email.field, "sms": consent_sms.field}, problems)
    if problems or ct is None:
        return None
    order, customer, payment, product = tree["order"], tree["customer"], tree["payment"], tree["product"]
    return Settings(
        commercetools=ct,
        klaviyo=KlaviyoSettings(api_key=klaviyo_key, api_url=klaviyo_url),
        disabled_events=disabled,
        order=OrderSettings(
            created_messages=tuple(order["messages"]["created"]),
            changed_messages=tuple(order["messages"]["changed"]),
            placed_states=tuple(order["states"]["created"]["placedOrder"]),
            fulfilled_states=tuple(order["states"]["changed"]["fulfilledOrder"]),
            cancelled_states=tuple(order["states"]["changed"]["cancelledOrder"]),
            properties=_filter(order["properties"]),
            custom_fields=_filter(order["customFields"]["properties"]),
            metrics=OrderMetrics(
                placed=order["metrics"]["placedOrder"],
                ordered_product=order["metrics"]["orderedProduct"],
                fulfilled=order["metrics"]["fulfilledOrder"],
                cancelled=order["metrics"]["cancelledOrder"],
                refunded=order["metrics"]["refundedOrder"],
            ),
        ),
        customer=CustomerSettings(
            address_messages=tuple(customer["messages"]["addressChanged"]),
            custom_fields=_filter(customer["customFields"]["properties"]),
            deduplication=customer["deduplication"]["enabled"],
            deletion=customer["deletion"]["enabled"],
            consent_email=consent_email,
            consent_sms=consent_sms,
        ),
        payment=PaymentSettings(
            transaction_added_messages=tuple(payment["messages"]["transactionAdded"]),
            transaction_changed_messages=tuple(payment["messages"]["transactionChanged"]),
            valid_transaction_states=tuple(payment["states"]["validTransactionStates"]),
        ),
        category_created_messages=tuple(tree["category"]["messages"]["created"]),
        product=ProductSettings(
            published_messages=tuple(product["messages"]["published"]),
            deleted_messages=tuple(product["messages"]["deleted"]),
            inventory_channel=product["inventory"]["useChannelInventory"],
        ),
        event_time_budget=float(tree["event"]["timeBudgetSeconds"]),
        backfill_after_hours=float(tree["event"]["backfillAfterHours"]),
        job=JobSettings(time_budget_seconds=float(tree["job"]["timeBudgetMinutes"]) * 60, page_size=page_size,
                        lease_seconds=float(tree["job"]["leaseSeconds"])),
        dry_run=dry_run,
        stores=stores,
        retry_dead_letters=tree["deadLetters"]["retryOnSchedule"],
        dry_run_file=tree["dryRun"]["file"],
        bulk_api_token=env.get("BULK_API_TOKEN", "").strip(),
        product_url_template=template,
        preferred_locale=locale,
        preferred_currency=currency,
        app_type=app_type,
        connect_env=(env.get("CONNECT_ENV") or "connect_dev").strip(),
        log_level=log_level,
        port=int(port_raw),
        event_batch_max_wait=max_wait_ms / 1000,
        product_cache_seconds=float(cache_seconds),
        product_cache_size=cache_size,
    )


def _consent_channel(node: dict[str, Any], channel: str, problems: list[str]) -> ConsentChannel:
    values = node[channel]
    field_name, list_id = (values[name].strip() if isinstance(values[name], str) else ""  # else reported
                           for name in ("field", "listId"))
    if field_name and not list_id:
        problems.append(f"customer.consent.{channel}.listId: required when customer.consent.{channel}.field is "
                        "set (the Klaviyo list consenting profiles are subscribed to)")
    return ConsentChannel(field_name, list_id)


def _stores(node: Any, consent_fields: Mapping[str, str], problems: list[str]) -> dict[str, StoreSettings]:
    """`stores`: store key → overrides; every problem is named by its full key (`stores.de.locale`)."""
    if not isinstance(node, dict):
        return {}  # already reported by `_check_types`
    stores: dict[str, StoreSettings] = {}
    for key, overrides in node.items():
        path = f"stores.{key}"
        if not isinstance(key, str) or not STORE_KEY.fullmatch(key):
            problems.append(f"{path}: is not a commercetools store key (2 to 256 letters, digits, - or _)")
            continue
        if not isinstance(overrides, dict):
            problems.append(f"{path}: must be a mapping of overrides ({', '.join(STORE_KEYS)}), "
                            f"got {_type_name(overrides)}")
            continue
        for name in overrides:
            if name not in STORE_KEYS:
                hint = " (one Klaviyo account per store is not supported)" if name == "klaviyoAuthKeyVar" else ""
                problems.append(f"{path}.{name}: unknown configuration key{hint} "
                                f"(known: {', '.join(STORE_KEYS)})")
        values: dict[str, str] = {}
        for name in ("locale", "currency", "productUrlTemplate"):
            value = overrides.get(name, "")
            if not isinstance(value, str):
                problems.append(f"{path}.{name}: must be a string, got {_type_name(value)}")
                value = ""
            values[name] = value.strip()
        if values["locale"] and not LOCALE_PATTERN.match(values["locale"]):
            problems.append(f"{path}.locale: '{values['locale']}' is not a locale such as en-US or de")
        values["currency"] = values["currency"].upper()
        if values["currency"] and not re.fullmatch(r"[A-Z]{3}", values["currency"]):
            problems.append(f"{path}.currency: '{values['currency']}' is not an ISO 4217 code such as EUR")
        if values["productUrlTemplate"] and "{{productSlug}}" not in values["productUrlTemplate"]:
            problems.append(f"{path}.productUrlTemplate: must contain {{{{productSlug}}}}")
        lists = _store_lists(overrides.get("consent", {}), f"{path}.consent", consent_fields, problems)
        stores[key] = StoreSettings(values["locale"], values["currency"], values["productUrlTemplate"],
                                    lists.get("email", ""), lists.get("sms", ""))
    return stores


def _store_lists(node: Any, path: str, consent_fields: Mapping[str, str], problems: list[str]) -> dict[str, str]:
    """`stores.<key>.consent`: {email: {listId}, sms: {listId}} → channel → list id."""
    if not isinstance(node, dict):
        problems.append(f"{path}: must be a mapping with email and/or sms, got {_type_name(node)}")
        return {}
    lists: dict[str, str] = {}
    for channel, value in node.items():
        if channel not in ("email", "sms"):
            problems.append(f"{path}.{channel}: unknown configuration key (known: email, sms)")
            continue
        if not isinstance(value, dict) or set(value) - {"listId"}:
            problems.append(f"{path}.{channel}: must be a mapping with only listId")
            continue
        list_id = value.get("listId", "")
        if not isinstance(list_id, str) or not list_id.strip():
            problems.append(f"{path}.{channel}.listId: must be a non-empty string (a Klaviyo list id)")
            continue
        if not consent_fields[channel]:
            problems.append(f"{path}.{channel}.listId: has no effect unless customer.consent.{channel}.field is set")
            continue
        lists[channel] = list_id.strip()
    return lists


def _filter(node: dict[str, Any]) -> PropertyFilter:
    return PropertyFilter(tuple(node["include"]), tuple(node["exclude"]), dict(node["map"]))


def _disabled_events(names: list[str], problems: list[str]) -> frozenset[str]:
    # The reference only honoured ' OrderStateChanged' (with a leading space); stripping keeps that config working.
    cleaned = {name.strip() for name in names}
    for name in sorted(cleaned - set(PROCESSOR_NAMES)):
        problems.append(f"disabledEvents: unknown processor name '{name}' (known: {', '.join(PROCESSOR_NAMES)})")
    return frozenset(cleaned)


def _commercetools(env: Mapping[str, str], problems: list[str]) -> CommercetoolsSettings | None:
    """Our CT_* variables, or else the CTP_* ones Connect injects when it creates the API client itself."""
    client_id = secret = None
    raw_client = env.get("CT_API_CLIENT", "").strip()
    if raw_client:
        try:
            parsed = json.loads(raw_client)
        except json.JSONDecodeError:
            problems.append('CT_API_CLIENT: is not valid JSON; expected {"clientId": "...", "secret": "..."}')
        else:
            if not isinstance(parsed, dict):
                problems.append('CT_API_CLIENT: must be a JSON object {"clientId": "...", "secret": "..."}')
            else:
                client_id, secret = parsed.get("clientId"), parsed.get("secret")
                for name, value in (("clientId", client_id), ("secret", secret)):
                    if not isinstance(value, str) or not value.strip():
                        problems.append(f"CT_API_CLIENT: field '{name}' is missing or empty")
    elif env.get("CTP_CLIENT_ID") and env.get("CTP_CLIENT_SECRET"):
        client_id, secret = env["CTP_CLIENT_ID"].strip(), env["CTP_CLIENT_SECRET"].strip()
    else:
        problems.append('CT_API_CLIENT: required ({"clientId": "...", "secret": "..."}) but not set')

    def pick(ours: str, connect: str, what: str) -> str:
        value = (env.get(ours) or env.get(connect) or "").strip()
        if not value:
            problems.append(f"{ours}: required ({what}) but not set")
        return value

    api_url = pick("CT_API_URL", "CTP_API_URL", "the commercetools API URL").rstrip("/")
    auth_url = pick("CT_AUTH_URL", "CTP_AUTH_URL", "the commercetools auth URL").rstrip("/")
    project = pick("CT_PROJECT_ID", "CTP_PROJECT_KEY", "the commercetools project key")
    for name, url in (("CT_API_URL", api_url), ("CT_AUTH_URL", auth_url)):
        if url and not url.startswith(("http://", "https://")):
            problems.append(f"{name}: must be an http(s) URL")
    scopes = (env.get("CT_SCOPES") or env.get("CTP_SCOPE") or env.get("CTP_CLIENT_SCOPE") or "").strip()
    if not (client_id and secret and api_url and auth_url and project):
        return None
    return CommercetoolsSettings(api_url, auth_url, project, client_id.strip(), secret.strip(), scopes)
