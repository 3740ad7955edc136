"""connect.yaml: valid by commercetools' own schema, and in step with the variables the code reads."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from event.deploy import destination
from shared.config import load_settings

ROOT = Path(__file__).resolve().parents[1]
VALIDATOR = ROOT / ".ci" / "validate-connect-yaml.mjs"
SPEC_PACKAGE = ROOT / ".ci" / "node" / "node_modules" / "@commercetools-connect" / "specification"
RESERVED = {"PORT", "K_SERVICE", "K_REVISION", "K_CONFIGURATION"}
# Read by the code but deliberately not settings of a Connect deployment: injected by Connect (CTP_*, the
# CONNECT_* destination of the scripts), set by the image (NODE_ENV, NODE_CONFIG_DIR), or for self-hosting.
NOT_DECLARED = {"CTP_CLIENT_ID", "CTP_CLIENT_SECRET", "CTP_API_URL", "CTP_AUTH_URL", "CTP_PROJECT_KEY", "CTP_SCOPE",
                "CTP_CLIENT_SCOPE", "CONNECT_SUBSCRIPTION_DESTINATION", "CONNECT_GCP_PROJECT_ID",
                "CONNECT_GCP_TOPIC_NAME", "CONNECT_AWS_TOPIC_ARN", "NODE_ENV", "NODE_CONFIG_DIR", "APP_TYPE", "PORT"}


def spec() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "connect.yaml").read_text())


def entries() -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(scope, entry, secured) for every configuration entry, global and per application."""
    scopes = [("global", spec()["inheritAs"]["configuration"])]
    scopes += [(app["name"], app.get("configuration") or {}) for app in spec()["deployAs"]]
    for scope, configuration in scopes:
        for entry in configuration.get("standardConfiguration") or []:
            yield scope, entry, False
        for entry in configuration.get("securedConfiguration") or []:
            yield scope, entry, True


class Recorder(dict[str, str]):
    """An environment that remembers which variables were asked for."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)


def variables_read() -> set[str]:
    env = Recorder({"CT_API_URL": "https://api.x", "CT_AUTH_URL": "https://auth.x", "CT_PROJECT_ID": "p",
                    "CT_API_CLIENT": json.dumps({"clientId": "c", "secret": "s"}), "KLAVIYO_AUTH_KEY": "pk"})
    load_settings(env)
    connect = Recorder({"CTP_CLIENT_ID": "c", "CTP_CLIENT_SECRET": "s", "KLAVIYO_AUTH_KEY": "pk"})
    with pytest.raises(Exception):  # noqa: B017 - only which variables are read matters here
        load_settings(connect)
    for kind in ("GoogleCloudPubSub", "SNS"):
        scripts = Recorder({"CONNECT_SUBSCRIPTION_DESTINATION": kind, "CONNECT_GCP_PROJECT_ID": "g",
                            "CONNECT_GCP_TOPIC_NAME": "t", "CONNECT_AWS_TOPIC_ARN": "arn"})
        destination(scripts)
        env.read |= scripts.read
    return env.read | connect.read


def test_every_declared_setting_is_read_by_the_code() -> None:
    declared = {entry["key"] for _, entry, _ in entries()}
    assert declared - variables_read() == set()


def test_every_variable_the_code_reads_is_declared_or_injected() -> None:
    declared = {entry["key"] for _, entry, _ in entries()}
    assert variables_read() - declared - NOT_DECLARED == set()


def test_secrets_are_secured_and_rules_hold() -> None:
    keys = [entry["key"] for _, entry, _ in entries()]
    assert len(keys) == len(set(keys)), "a key is declared twice"
    secured = {entry["key"] for _, entry, is_secured in entries() if is_secured}
    assert secured == {"KLAVIYO_AUTH_KEY", "CT_API_CLIENT", "BULK_API_TOKEN"}
    for _, entry, is_secured in entries():
        assert entry["description"].strip()
        assert entry["key"].upper() not in RESERVED
        if is_secured:
            assert "default" not in entry
        elif "default" in entry:
            assert isinstance(entry["default"], str) and entry["default"].strip()
    standard = {entry["key"] for _, entry, is_secured in entries() if not is_secured}
    assert {"PREFERRED_CURRENCY", "NODE_CONFIG", "PREFERRED_LOCALE", "PRODUCT_URL_TEMPLATE"} <= standard


def test_applications_match_their_folders() -> None:
    apps = {app["name"]: app for app in spec()["deployAs"]}
    assert apps["event"]["applicationType"] == "event" and apps["job"]["applicationType"] == "job"
    for name in apps:
        assert (ROOT / name).is_dir()
    assert isinstance(apps["job"]["properties"]["schedule"], str)
    assert apps["event"]["scripts"] == {"postDeploy": "python -m event.deploy post-deploy",
                                        "preUndeploy": "python -m event.deploy pre-undeploy"}


needs_validator = pytest.mark.skipif(
    not (shutil.which("node") and SPEC_PACKAGE.is_dir()),
    reason="connect.yaml validation skipped: Node.js or commercetools' @commercetools-connect/specification is not "
           "installed (.ci/run installs the package when npm is on PATH)")


@needs_validator
def test_connect_yaml_passes_the_connect_cli_schema() -> None:
    result = subprocess.run(["node", str(VALIDATOR), str(ROOT / "connect.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_validator
def test_the_schema_check_rejects_what_connect_rejects(tmp_path: Path) -> None:
    broken = spec()
    broken["deployAs"][0]["runtime"] = "python"  # Connect has no runtime key
    broken["inheritAs"]["configuration"]["securedConfiguration"][0]["default"] = "x"
    path = tmp_path / "connect.yaml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(["node", str(VALIDATOR), str(path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "runtime" in result.stderr
