"""The entry points as a merchant runs them: `python -m event` and `python -m job`, as real processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-client-secret"


def run(module: str, env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module], cwd=ROOT, env={"PATH": os.environ["PATH"], **env},
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("module", ["event", "job"])
def test_invalid_configuration_stops_start_up_naming_the_key(module: str) -> None:
    result = run(module, {"CT_API_URL": "https://api.x", "CT_AUTH_URL": "https://auth.x", "CT_PROJECT_ID": "p",
                          "CT_API_CLIENT": json.dumps({"clientId": "id", "secret": SECRET}),
                          "NODE_CONFIG": json.dumps({"disabledEvents": ["NoSuchProcessor"]})})
    assert result.returncode == 2
    assert "KLAVIYO_AUTH_KEY: required" in result.stderr
    assert "disabledEvents: unknown processor name 'NoSuchProcessor'" in result.stderr
    assert SECRET not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_bad_api_client_json_is_named_without_echoing_it() -> None:
    result = run("event", {"CT_API_URL": "https://api.x", "CT_AUTH_URL": "https://auth.x", "CT_PROJECT_ID": "p",
                           "CT_API_CLIENT": '{"clientId": "id", "secret": "' + SECRET, "KLAVIYO_AUTH_KEY": "pk_x"})
    assert result.returncode == 2
    assert "CT_API_CLIENT: is not valid JSON" in result.stderr
    assert SECRET not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("module", ["event", "job"])
def test_serves_health_on_port(module: str, env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT,
                               env={"PATH": os.environ["PATH"], **env, "PORT": str(port), "LOG_LEVEL": "INFO"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < deadline, "the app did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        assert response.json()["app"] == module
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    for line in out.splitlines():
        json.loads(line)  # every log line is one JSON object
