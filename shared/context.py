"""Building the clients a process needs from its settings."""

from __future__ import annotations

from pathlib import Path

from shared.commercetools import Commercetools
from shared.config import Settings
from shared.dry_run import DryRunKlaviyo
from shared.klaviyo import Klaviyo
from shared.processors import Context


def build_context(settings: Settings) -> Context:
    """The clients for these settings; in a dry run, Klaviyo's side is played locally (`shared.dry_run`)."""
    transport = DryRunKlaviyo(Path(settings.dry_run_file)) if settings.dry_run else None
    return Context(
        settings=settings,
        commercetools=Commercetools(settings.commercetools, user_agent=settings.user_agent),
        klaviyo=Klaviyo(settings.klaviyo, user_agent=settings.user_agent, transport=transport),
    )


def close_context(context: Context) -> None:
    context.commercetools.close()
    context.klaviyo.close()
