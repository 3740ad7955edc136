"""JSON log lines carry no terminal escape codes: uvicorn's records (with their `color_message`) as a real
`python -m event` process logs them, and any message or field that holds escape codes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import httpx

from shared.logs import JsonFormatter
from tests.test_startup import ROOT, free_port


def test_uvicorn_records_reach_the_json_logs_without_escape_codes(env: dict[str, str]) -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "event"], cwd=ROOT,
                               env={"PATH": os.environ["PATH"], **env, "PORT": str(port), "LOG_LEVEL": "DEBUG",
                                    "FORCE_COLOR": "1", "TERM": "xterm-256color"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        give_up = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                assert time.monotonic() < give_up, "the app did not start"
                time.sleep(0.1)
    finally:
        process.terminate()
        out, _err = process.communicate(timeout=10)

    entries = [json.loads(line) for line in out.splitlines()]
    uvicorn = [e for e in entries if e["logger"].startswith("uvicorn")]
    assert any(e["message"].startswith("Uvicorn running on http://0.0.0.0:") for e in uvicorn), entries
    assert any("Shutting down" in e["message"] or "Finished server process" in e["message"] for e in uvicorn)
    for entry in entries:
        assert "color_message" not in entry
    assert "\\u001b" not in out and "\x1b" not in out


def test_escape_codes_in_messages_and_fields_are_removed() -> None:
    record = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1, "\x1b[32m%s\x1b[0m started", ("app",), None)
    record.color_message = "\x1b[1m%s\x1b[0m"
    record.detail = "\x1b]0;title\x07ok \x1b[1;31mred\x1b[m"
    record.count = 3

    entry = json.loads(JsonFormatter().format(record))

    assert entry["message"] == "app started"
    assert entry["detail"] == "ok red"
    assert entry["count"] == 3
    assert "color_message" not in entry
