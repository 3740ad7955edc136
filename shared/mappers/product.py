"""commercetools product → Klaviyo catalog items and variants; inventory entry → variant inventory.

Pure functions: the realtime processors and the bulk import build their requests from the same `data` objects,
so both send the same payloads. `now` is a parameter (price validity dates), never read from the clock here.

Differences from the reference, on purpose:
- prices with a `channel` are excluded like customer-group prices (the reference kept channel prices); a price
  scoped to a country is used for the item price only when no country-less price fits;
- `price_json` / `currency_json` name only the countries that prices name explicitly, plus `price_<CUR>` per
  currency. The reference expanded each currency to every country using it (~40 keys for EUR, from the
  `country-data` library) and let later currencies overwrite earlier ones;
- inventory 0 is a quantity like any other (the reference treated 0 as "missing"); a variant commercetools does
  not track (no `availability`) gets quantity 0 with `inventory_policy` 0, so Klaviyo does not hide it as sold out;
- a variant without images uses the product's first image; the URL is "" without a template (never 'None').
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from shared.config import Settings
from shared.klaviyo import catalog_id
from shared.mappers.links import product_url
from shared.mappers.localize import localized, money
from shared.ownership import mark
from shared.stores import settings_for

CATALOG = {"integration_type": "$custom", "catalog_type": "$default"}
TRACKED_POLICY = 1  # Klaviyo leaves an out-of-stock variant out of feeds and blocks
UNTRACKED_POLICY = 0  # shown whatever the quantity: commercetools tracks no stock for it
_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)

Json = dict[str, Any]


# --- product shape --------------------------------------------------------------------------------------------


def current_data(product: Json) -> Json:
    """`masterData.current` of a Product; a ProductProjection is its own current data."""
    master = product.get("masterData")
    if isinstance(master, dict):
        return master.get("current") or {}
    return product


def all_variants(product: Json) -> list[Json]:
    """The master variant, then the other variants."""
    current = current_data(product)
    master = current.get("masterVariant")
    return ([master] if isinstance(master, dict) else []) + [v for v in current.get("variants") or []
                                                            if isinstance(v, dict)]


def split_variants(product: Json) -> tuple[list[Json], list[Json]]:
    """(variants with a SKU, variants without one): only the first become Klaviyo variants."""
    variants = all_variants(product)
    return [v for v in variants if v.get("sku")], [v for v in variants if not v.get("sku")]


def category_ids(product: Json) -> list[str]:
    """The product's category ids plus their ancestors' (root first), each once.

    Ancestors are known only when the categories are expanded (`categories[*].ancestors[*]`).
    """
    ids: list[str] = []
    for reference in current_data(product).get("categories") or []:
        ancestors = (reference.get("obj") or {}).get("ancestors") or []
        for found in [*(a.get("id") for a in ancestors), reference.get("id")]:
            if isinstance(found, str) and found and found not in ids:
                ids.append(found)
    return ids


def catalog_ref(kind: str, external_id: str) -> Json:
    """`{type: catalog-<kind>, id}`: a relationship entry, or a bulk delete entry."""
    return {"type": f"catalog-{kind}", "id": catalog_id(external_id)}


# --- prices ---------------------------------------------------------------------------------------------------


def select_price(prices: Sequence[Json] | None, currency: str, now: datetime, *,
                 country: str | None = None) -> Json | None:
    """The price Klaviyo shows, by the reference's priority, or None.

    Candidates: the `currency` (no filter when ""), no customer group, no channel; with `country`, only that
    country's prices, else country-less prices first. Among them an active ranged price (validFrom/validUntil,
    bounds inclusive) wins, the earliest-starting (then earliest-ending) one; otherwise the first price without
    validity dates. Future and expired prices never count.
    """
    now = _aware(now)
    candidates = [p for p in prices or [] if isinstance(p, dict) and _eligible(p, currency, country)]
    if country is None:
        generic = [p for p in candidates if not p.get("country")]
        return _by_priority(generic, now) or _by_priority(candidates, now)
    return _by_priority(candidates, now)


def price_amount(price: Json | None) -> float:
    """The price's value in major units; 0 when there is no price."""
    return money((price or {}).get("value"))


def price_maps(prices: Sequence[Json] | None, preferred_currency: str, now: datetime) -> tuple[Json, Json]:
    """(`price_<CUR>` / `price_<COUNTRY>` → amount, `currency_<COUNTRY>` → currency) for the metadata JSON.

    One `price_<CUR>` per currency with a current price. For each country a price names explicitly: that
    country's price, in the preferred currency when it has one, else in the first currency that has one.
    """
    eligible = [p for p in prices or [] if isinstance(p, dict) and _eligible(p, "", None)]
    currencies = _unique((p.get("value") or {}).get("currencyCode") for p in eligible)
    amounts: Json = {}
    for currency in currencies:
        chosen = select_price(eligible, currency, now)
        if chosen is not None:
            amounts[f"price_{currency}"] = price_amount(chosen)
    country_currencies: Json = {}
    ordered = sorted(currencies, key=lambda c: c != preferred_currency)
    for country in _unique(p.get("country") for p in eligible):
        for currency in ordered:
            chosen = select_price(eligible, currency, now, country=country)
            if chosen is not None:
                amounts[f"price_{country}"] = price_amount(chosen)
                country_currencies[f"currency_{country}"] = currency
                break
    return amounts, country_currencies


def _eligible(price: Json, currency: str, country: str | None) -> bool:
    if price.get("customerGroup") or price.get("channel"):
        return False
    if currency and (price.get("value") or {}).get("currencyCode") != currency:
        return False
    return country is None or price.get("country") == country


def _by_priority(prices: list[Json], now: datetime) -> Json | None:
    ranged = sorted((p for p in prices if _is_ranged(p) and _is_active(p, now)), key=_period)
    if ranged:
        return ranged[0]
    return next((p for p in prices if not _is_ranged(p)), None)


def _is_ranged(price: Json) -> bool:
    return bool(price.get("validFrom") or price.get("validUntil"))


def _is_active(price: Json, now: datetime) -> bool:
    start, end = _period(price)
    return start <= now <= end


def _period(price: Json) -> tuple[datetime, datetime]:
    return _instant(price.get("validFrom")) or _EARLIEST, _instant(price.get("validUntil")) or _LATEST


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _unique(values: Iterable[Any]) -> list[str]:
    out: list[str] = []
    for value in values:
        if isinstance(value, str) and value and value not in out:
            out.append(value)
    return out


# --- inventory ------------------------------------------------------------------------------------------------


def variant_inventory(source: Json, channel: str | None) -> int | None:
    """The stock Klaviyo gets for a product variant or an inventory entry; None: no answer from this source.

    Variant (`availability`): with a channel configured, that channel's quantity (0 included) if the variant is
    stocked there, else the channel-less quantity; without one, the channel-less quantity; 0 when neither is
    given. None when the variant has no availability (commercetools tracks no stock for it).

    Inventory entry: its quantity when its supply channel is the configured one; None otherwise. So with a
    channel configured, entries of other channels and channel-less entries are ignored; with none configured,
    entries that have a supply channel are ignored (they would overwrite the channel-less stock).
    """
    if _is_inventory_entry(source):
        supply = (source.get("supplyChannel") or {}).get("id") or None
        return _count(source) if supply == (channel or None) else None
    availability = source.get("availability")
    if not isinstance(availability, dict) or not availability:
        return None
    channels = availability.get("channels") or {}
    if channel and isinstance(channels.get(channel), dict):
        return _count(channels[channel])
    return _count(availability)


def inventory_update(entry: Json, settings: Settings) -> Json | None:
    """The variant update for an inventory entry's stock; None when the entry is not ours (see above)."""
    sku = entry.get("sku")
    quantity = variant_inventory(entry, settings.product.inventory_channel) if sku else None
    if quantity is None:
        return None
    return {"type": "catalog-variant", "id": catalog_id(sku),
            "attributes": {"inventory_quantity": quantity, "inventory_policy": TRACKED_POLICY}}


def _is_inventory_entry(source: Json) -> bool:
    return "availability" not in source and any(k in source for k in ("quantityOnStock", "supplyChannel"))


def _count(stock: Json) -> int:
    """`availableQuantity`, else `quantityOnStock`, else 0; a number is a number, 0 included."""
    for key in ("availableQuantity", "quantityOnStock"):
        value = stock.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    return 0


# --- custom metadata ------------------------------------------------------------------------------------------


def custom_metadata(product: Json, variant: Json, settings: Settings, now: datetime) -> Json:
    """Klaviyo's flat metadata: JSON strings `title_json`, `slug_json` (every locale) and, when the variant has
    current prices, `price_json` (and `currency_json` when a price names a country); and our ownership mark
    (`shared.ownership`: this project's key and the product id), so that a clean-up deletes only what is ours."""
    current = current_data(product)
    metadata = {
        "title_json": _json(_per_locale("title", current.get("name"))),
        "slug_json": _json(_per_locale("slug", current.get("slug"))),
        **mark(settings.commercetools.project_key, product["id"]),
    }
    amounts, currencies = price_maps(variant.get("prices"), settings.preferred_currency, now)
    if amounts:
        metadata["price_json"] = _json(amounts)
    if currencies:
        metadata["currency_json"] = _json(currencies)
    stores = store_metadata(product, variant, settings, now)
    if stores:
        metadata["stores_json"] = _json(stores)
    return metadata


def store_metadata(product: Json, variant: Json, settings: Settings, now: datetime) -> Json:
    """Per configured store (`stores`): the product as that store shows it, `{"de": {"title", "url", "price",
    "currency"}}`, from the store's locale, URL template and currency (the catalog is one; a template reads
    `stores_json` to show a store's view)."""
    current = current_data(product)
    result: Json = {}
    for key in settings.stores:
        store = settings_for(settings, key)
        locale = store.preferred_locale
        entry: Json = {
            "title": localized(current.get("name"), locale) or "",
            "url": product_url(store.product_url_template, localized(current.get("slug"), locale)),
        }
        price = select_price(variant.get("prices"), store.preferred_currency, now)
        if price is not None:
            entry["price"] = price_amount(price)
            entry["currency"] = (price.get("value") or {}).get("currencyCode")
        result[key] = {name: value for name, value in entry.items() if value not in (None, "")}
    return result


def _per_locale(name: str, value: Any) -> Json:
    return {f"{name}_{locale}": text for locale, text in value.items()} if isinstance(value, dict) else {}


def _json(value: Json) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


# --- items ----------------------------------------------------------------------------------------------------


def item_create(product: Json, settings: Settings, now: datetime) -> Json:
    """`data` of `POST /api/catalog-items` (and of an item bulk create job)."""
    attributes = {"external_id": product["id"], **CATALOG, **_item_attributes(product, settings, now)}
    if attributes.get("image_full_url") is None:
        attributes.pop("image_full_url", None)
    data: Json = {"type": "catalog-item", "attributes": attributes}
    categories = [catalog_ref("category", i) for i in category_ids(product)]
    if categories:
        data["relationships"] = {"categories": {"data": categories}}
    return data


def item_update(product: Json, settings: Settings, now: datetime) -> Json:
    """`data` of `PATCH /api/catalog-items/{id}` (and of an item bulk update job).

    Categories are always sent, so a category removed in commercetools is unlinked; a removed image is
    cleared (null).
    """
    return {
        "type": "catalog-item",
        "id": catalog_id(product["id"]),
        "attributes": _item_attributes(product, settings, now),
        "relationships": {"categories": {"data": [catalog_ref("category", i) for i in category_ids(product)]}},
    }


def _item_attributes(product: Json, settings: Settings, now: datetime) -> Json:
    master = current_data(product).get("masterVariant") or {}
    price = select_price(master.get("prices"), settings.preferred_currency, now)
    return {
        **_texts(product, settings),
        "price": price_amount(price),
        "image_full_url": first_image(master),
        "custom_metadata": custom_metadata(product, master, settings, now),
        "published": True,
    }


def _texts(product: Json, settings: Settings) -> Json:
    current, locale = current_data(product), settings.preferred_locale
    return {
        "title": localized(current.get("name"), locale) or "",
        "description": localized(current.get("description"), locale) or "",
        "url": product_url(settings.product_url_template, localized(current.get("slug"), locale)),
    }


def first_image(variant: Json) -> str | None:
    for image in variant.get("images") or []:
        if isinstance(image, dict) and image.get("url"):
            return image["url"]
    return None


# --- variants -------------------------------------------------------------------------------------------------


def variant_create(product: Json, variant: Json, settings: Settings, now: datetime) -> Json:
    """`data` of `POST /api/catalog-variants` (and of a variant bulk create job): linked to the product's item."""
    sku = _sku(variant)
    attributes = {"external_id": sku, "sku": sku, **CATALOG, **_variant_attributes(product, variant, settings, now)}
    if attributes.get("image_full_url") is None:
        attributes.pop("image_full_url", None)
    return {"type": "catalog-variant", "attributes": attributes,
            "relationships": {"item": {"data": catalog_ref("item", product["id"])}}}


def variant_update(product: Json, variant: Json, settings: Settings, now: datetime) -> Json:
    """`data` of `PATCH /api/catalog-variants/{id}` (and of a variant bulk update job)."""
    return {"type": "catalog-variant", "id": catalog_id(_sku(variant)),
            "attributes": _variant_attributes(product, variant, settings, now)}


def _variant_attributes(product: Json, variant: Json, settings: Settings, now: datetime) -> Json:
    quantity = variant_inventory(variant, settings.product.inventory_channel)
    master = current_data(product).get("masterVariant") or {}
    return {
        **_texts(product, settings),
        "price": price_amount(select_price(variant.get("prices"), settings.preferred_currency, now)),
        "inventory_quantity": 0 if quantity is None else quantity,
        "inventory_policy": UNTRACKED_POLICY if quantity is None else TRACKED_POLICY,
        "image_full_url": first_image(variant) or first_image(master),
        "custom_metadata": custom_metadata(product, variant, settings, now),
        "published": True,
    }


def _sku(variant: Json) -> str:
    sku = variant.get("sku")
    if not isinstance(sku, str) or not sku:
        raise ValueError(f"variant {variant.get('id')} has no SKU: it cannot be a Klaviyo variant")
    return sku


# --- bulk jobs ------------------------------------------------------------------------------------------------
