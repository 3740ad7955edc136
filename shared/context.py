"""Building the clients a process needs from its settings."""

from __future__ import annotations

from shared.commercetools import Commercetools
from shared.config import Settings
from shared.klaviyo import Klaviyo
from shared.processors import Context


def build_context(settings: Settings) -> Context:
    return Context(
        settings=settings,
        commercetools=Commercetools(settings.commercetools, user_agent=settings.user_agent),
        klaviyo=Klaviyo(settings.klaviyo, user_agent=settings.user_agent),
    )


def close_context(context: Context) -> None:
    context.commercetools.close()
    context.klaviyo.close()
