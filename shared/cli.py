"""Start-up shared by the entry points: settings (exit 2 with the reasons when invalid), logging, serving."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging

CONFIGURATION_HELP = """configuration (environment variables; README lists them all):
  CT_API_URL, CT_AUTH_URL, CT_PROJECT_ID, CT_API_CLIENT   commercetools (or Connect's CTP_* variables)
  KLAVIYO_AUTH_KEY    the Klaviyo private API key (not needed in a dry run)
  NODE_ENV, NODE_CONFIG, NODE_CONFIG_DIR   configuration files and overrides (config/<NODE_ENV>.yaml)
  APP_TYPE, PORT, LOG_LEVEL, BULK_API_TOKEN"""


def command_line(prog: str, description: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The command line of an entry point that only serves: `--help` answers without any configuration."""
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=CONFIGURATION_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    return parser.parse_args(argv)


def startup(*, require_klaviyo: bool = True) -> Settings:
    """Settings and logging for a process; `require_klaviyo=False` for commands that never call Klaviyo."""
    try:
        settings = load_settings(require_klaviyo=require_klaviyo)
    except ConfigError as exc:
        print(f"commercetools-klaviyo-connector: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level)
    for warning in settings.warnings:
        logging.getLogger("shared.config").warning(warning)
    return settings


def serve(create_app: Callable[[Settings], Any], settings: Settings | None = None) -> None:
    """Serve the app on 0.0.0.0:$PORT with our JSON logs (uvicorn's own log config is off)."""
    settings = settings or startup()
    uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.port, log_config=None, access_log=False)
