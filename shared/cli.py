"""Start-up shared by the entry points: settings (exit 2 with the reasons when invalid), logging, serving."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import uvicorn

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


def serve(create_app: Callable[[Settings], Any], settings: Settings | None = None) -> None:
    """Serve the app on 0.0.0.0:$PORT with our JSON logs (uvicorn's own log config is off)."""
    settings = settings or startup()
    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port, log_config=None, access_log=False)
