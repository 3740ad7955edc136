"""Shared fixtures: real local HTTP servers standing in for commercetools and Klaviyo, and the apps under test."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_httpserver import HTTPServer
from starlette.testclient import TestClient

from event.app import create_app
from job.__main__ import main as job_main
from job.service import JobService
from shared.config import Settings, load_settings
from shared.context import build_context, close_context
from shared.logs import configure_logging
from tests.builders import PROJECT
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.commercetools_server import attach
from tests.fakes.klaviyo import FakeKlaviyo

CT_CLIENT_ID = "ct-client"
CT_SECRET = "ct-client-secret-value"
KLAVIYO_KEY = "pk_test_0123456789abcdef"


def _server() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


# The servers live for the whole session (starting one costs ~0.5 s); each test attaches a fresh fake to them.
@pytest.fixture(scope="session")
def ct_server() -> Iterator[HTTPServer]:
    yield from _server()


@pytest.fixture(scope="session")
def klaviyo_server() -> Iterator[HTTPServer]:
    yield from _server()


@pytest.fixture
def ct(ct_server: HTTPServer) -> FakeCommercetools:
    ct_server.clear()
    fake = FakeCommercetools(project_key=PROJECT, client_id=CT_CLIENT_ID, client_secret=CT_SECRET,
                             check_shapes=True)
    attach(fake, ct_server)
    return fake


@pytest.fixture
def klaviyo(klaviyo_server: HTTPServer) -> Iterator[FakeKlaviyo]:
    klaviyo_server.clear()
    fake = FakeKlaviyo(klaviyo_server)
    yield fake
    fake.assert_valid()  # every request the connector sent matched the klaviyo-api SDK models


@pytest.fixture
def env(ct_server: HTTPServer, klaviyo_server: HTTPServer) -> dict[str, str]:
    base = ct_server.url_for("/").rstrip("/")
    return {
        "CT_API_URL": base,
        "CT_AUTH_URL": base,
        "CT_PROJECT_ID": PROJECT,
        "CT_SCOPES": f"manage_project:{PROJECT}",
        "CT_API_CLIENT": json.dumps({"clientId": CT_CLIENT_ID, "secret": CT_SECRET}),
        "KLAVIYO_AUTH_KEY": KLAVIYO_KEY,
        "KLAVIYO_API_URL": klaviyo_server.url_for("/").rstrip("/"),
        "PREFERRED_LOCALE": "en-US",
        "PRODUCT_URL_TEMPLATE": "https://shop.example.com/products/{{productSlug}}",
        "LOG_LEVEL": "DEBUG",
    }


@pytest.fixture
def configure(env: dict[str, str]) -> Callable[..., Settings]:
    """Settings for the test servers, with NODE_CONFIG overrides and extra variables."""

    def make(config: dict[str, Any] | None = None, **extra: str) -> Settings:
        values = {**env, **extra}
        if config:
            values["NODE_CONFIG"] = json.dumps(config)
        return load_settings(values)

    return make


@pytest.fixture
def settings(configure: Callable[..., Settings]) -> Settings:
    return configure()


@pytest.fixture(autouse=True)
def json_logs() -> None:
    configure_logging("DEBUG")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the stand-in servers' access log


@pytest.fixture
def event_app(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def started() -> Iterator[Callable[[Any], TestClient]]:
    """`started(app)`: a TestClient of this app, started (its lifespan run) now and closed after the test."""
    clients: list[TestClient] = []

    def start(app: Any) -> TestClient:
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """`cli(*argv, config=None)`: run `python -m job *argv` in-process; (exit code, stdout, stderr)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("NODE_CONFIG", "NODE_ENV", "BULK_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str, config: dict[str, Any] | None = None) -> tuple[int, str, str]:
        if config is None:
            monkeypatch.delenv("NODE_CONFIG", raising=False)
        else:
            monkeypatch.setenv("NODE_CONFIG", json.dumps(config))
        capsys.readouterr()
        code = job_main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


Services = Callable[..., JobService]


@pytest.fixture
def services(configure: Callable[..., Settings]) -> Iterator[Callable[..., JobService]]:
    """`services(config=None, **env)`: a JobService on the fake servers; its clients are closed afterwards."""
    contexts = []

    def make(config: dict[str, Any] | None = None, **extra: str) -> JobService:
        context = build_context(configure(config, **extra))
        contexts.append(context)
        return JobService(context)

    yield make
    for context in contexts:
        close_context(context)
