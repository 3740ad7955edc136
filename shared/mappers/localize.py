"""Picking one value out of a commercetools LocalizedString, and money as a decimal number."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any


def localized(value: Any, locale: str) -> str | None:
    """The value for `locale`; else its language (`de` for `de-DE`, case-insensitive); else the first value.

    The reference matched case-sensitively and only split on '-', so `en_US` never fell back to `en`.
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not value:
        return None
    if locale:
        if locale in value:
            return value[locale]
        lowered = {key.lower().replace("_", "-"): key for key in value}
        wanted = locale.lower().replace("_", "-")
        if wanted in lowered:
            return value[lowered[wanted]]
        language = re.split(r"[-_]", wanted)[0]
        if language in lowered:
            return value[lowered[language]]
        for key, original in lowered.items():
            if key.split("-")[0] == language:
                return value[original]
    return next(iter(value.values()))


def money(amount: dict[str, Any] | None) -> float:
    """A commercetools money value (cent or high precision) as a decimal number in major units; 0 when absent."""
    if not amount:
        return 0.0
    if amount.get("type") == "highPrecision" and "preciseAmount" in amount:
        cents, digits = amount["preciseAmount"], amount.get("fractionDigits", 2)
    else:
        cents, digits = amount.get("centAmount", 0), amount.get("fractionDigits", 2)
    return float(Decimal(int(cents)).scaleb(-int(digits)))
