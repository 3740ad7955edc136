"""Start-up shared by the entry points: settings (exit 2 with the reasons when invalid) and logging."""

from __future__ import annotations

import sys

from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging


def startup() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"commercetools-klaviyo-connector: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    return settings
