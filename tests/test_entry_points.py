"""Every entry point answers `--help` with no configuration at all; dry runs and the commands that only read
commercetools need no Klaviyo key; `NODE_ENV` naming a missing file is warned about at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import load_settings
from tests.conftest import Cli
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_job_support import seed_catalog
from tests.test_startup import ROOT

ENTRY_POINTS = [
    ["event"], ["connector"], ["demo"],
    ["event.deploy"], ["event.deploy", "post-deploy"], ["event.deploy", "pre-undeploy"],
    ["job"], ["job", "serve"], ["job", "sync"], ["job", "request"], ["job", "run"], ["job", "status"],
    ["job", "stop"], ["job", "dead-letters"], ["job", "dead-letters", "list"], ["job", "dead-letters", "replay"],
    ["job", "dead-letters", "purge"],
]


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=" ".join)
def test_help_needs_no_configuration(command: list[str], tmp_path: Path) -> None:
    # An empty environment (the repository on the path only), in an empty folder: nothing may be started
    result = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=tmp_path,
                            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {command[0]}")
    assert result.stderr == ""
    assert list(tmp_path.iterdir()) == []  # e.g. the demo did not run


# --- no Klaviyo key where none is needed --------------------------------------------------------------------------


@pytest.fixture
def keyless(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> Cli:
    monkeypatch.delenv("KLAVIYO_AUTH_KEY")
    return cli


def test_a_dry_run_sync_needs_no_klaviyo_key(ct: FakeCommercetools, klaviyo: FakeKlaviyo, keyless: Cli,
                                             tmp_path: Path) -> None:
    seed_catalog(ct)
    out_file = tmp_path / "dry.jsonl"

    code, out, err = keyless("sync", "products", "--dry-run", config={"dryRun": {"file": str(out_file)}})

    assert code == 0, err
    assert "products" in out and "completed" in out
    assert out_file.read_text().strip()  # the requests it would have sent
    assert klaviyo.requests == []


def test_dry_run_by_configuration_needs_no_klaviyo_key(ct: FakeCommercetools, klaviyo: FakeKlaviyo, keyless: Cli,
                                                       tmp_path: Path) -> None:
    seed_catalog(ct)
    code, _out, err = keyless("sync", "categories",
                              config={"dryRun": {"enabled": True, "file": str(tmp_path / "dry.jsonl")}})
    assert code == 0, err
    assert klaviyo.requests == []


def test_status_dry_run_shows_the_dry_run_imports_only(ct: FakeCommercetools, klaviyo: FakeKlaviyo, keyless: Cli,
                                                       tmp_path: Path) -> None:
    seed_catalog(ct)
    assert keyless("sync", "categories", "--dry-run",
                   config={"dryRun": {"file": str(tmp_path / "dry.jsonl")}})[0] == 0

    code, out, err = keyless("status", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[1].split()[:2] == ["categories", "completed"]

    code, out, err = keyless("status")  # the real imports: none
    assert code == 0, err
    assert out.strip() == "no imports"


@pytest.mark.parametrize("argv", [["status"], ["request", "orders"], ["stop", "orders"], ["dead-letters", "list"],
                                  ["dead-letters", "purge", "--before", "2026-01-01T00:00:00Z"]])
def test_commands_that_only_touch_commercetools_need_no_klaviyo_key(ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                                                     keyless: Cli, argv: list[str]) -> None:
    code, _out, err = keyless(*argv)
    assert code in (0, 1), err  # stop: 1 when nothing runs
    assert "KLAVIYO_AUTH_KEY" not in err
    assert klaviyo.requests == []


@pytest.mark.parametrize("argv", [["sync", "products"], ["run"], ["dead-letters", "replay", "--all"]])
def test_commands_that_call_klaviyo_still_need_the_key(ct: FakeCommercetools, keyless: Cli,
                                                       capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        keyless(*argv)
    assert stopped.value.code == 2
    assert "KLAVIYO_AUTH_KEY: required" in capsys.readouterr().err


# --- NODE_ENV naming a missing file -------------------------------------------------------------------------------


def test_node_env_without_its_file_is_a_warning_naming_the_file(env: dict[str, str]) -> None:
    settings = load_settings({**env, "NODE_ENV": "staging"})
    assert len(settings.warnings) == 1
    assert str(ROOT / "config" / "staging.yaml") in settings.warnings[0]
    assert load_settings({**env, "NODE_ENV": "production"}).warnings == ()
    assert load_settings(env).warnings == ()


def test_the_warning_is_logged_at_start_up(ct: FakeCommercetools, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "job", "status"], cwd=ROOT,
                            env={"PATH": os.environ["PATH"], **env, "NODE_ENV": "staging", "LOG_LEVEL": "INFO"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    logs = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    warnings = [entry for entry in logs if entry["severity"] == "WARNING"]
    assert len(warnings) == 1 and "config/staging.yaml not found" in warnings[0]["message"]
    assert "no imports" in result.stdout
