"""Hostile or broken input: deeply nested JSON, oversized bodies, a bad `--before`, and the single-port
scheduler route; each answered so that nothing is lost and nothing breaks."""

from __future__ import annotations

import base64
import json
import select
import socket
from typing import Any

import pytest
from starlette.testclient import TestClient

from event.app import MAX_BODY_BYTES
from shared.config import Settings
from shared.dead_letters import CONTAINER
from tests.builders import message, pubsub
from tests.conftest import Cli
from tests.data import fixture
from tests.fakes.commercetools import FakeCommercetools
from tests.fakes.klaviyo import FakeKlaviyo
from tests.test_faults_event import serve

CUSTOMER_ID = "e54d8233-be41-4ce1-ae2b-3b5e1e1d8a01"


def records(ct: FakeCommercetools) -> dict[str, dict[str, Any]]:
    return {o["key"]: o["value"] for o in ct.store.get("custom-objects", {}).values() if o["container"] == CONTAINER}


def logged(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.mark.parametrize("where", ["body", "pubsub", "sns"])
def test_json_nested_too_deep_for_the_parser_is_acknowledged_and_recorded(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo, where: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    deep = "[" * 200_000 + "]" * 200_000
    if where == "body":
        body = deep.encode()
    elif where == "pubsub":
        body = json.dumps({"message": {"messageId": "deep-1", "data": base64.b64encode(deep.encode()).decode()}
                           }).encode()
    else:
        body = json.dumps({"Type": "Notification", "MessageId": "deep-1", "Message": deep}).encode()
    response = event_app.post("/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202
    assert "nested too deeply" in response.json()["reason"]
    [(key, record)] = records(ct).items()
    assert "nested too deeply" in record["reason"]
    if where != "body":
        assert key == "deep-1"
    errors = [e for e in logged(capsys) if e["severity"] == "ERROR"]
    assert errors and "nested too deeply" in errors[-1]["reason"]
    assert klaviyo.requests == []


def test_a_body_over_the_limit_is_recorded_by_size_and_message_id_without_its_content(
        event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo) -> None:
    assert MAX_BODY_BYTES == 16 * 1024 * 1024  # above the largest push: a 10 MB message is ~14 MB in base64
    filler = "A" * (MAX_BODY_BYTES + 10)
    body = ('{"message": {"messageId": "big-1", "data": "' + filler + '"}}').encode()
    response = event_app.post("/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 202 and response.json()["outcome"] == "failed"
    record = records(ct)["big-1"]
    assert str(len(body)) in record["reason"] and str(MAX_BODY_BYTES) in record["reason"]
    assert "AAAA" not in json.dumps(record)  # the content is not kept
    assert klaviyo.requests == []


def test_a_streamed_body_over_the_limit_is_not_read_whole(settings: Settings, ct: FakeCommercetools,
                                                          klaviyo: FakeKlaviyo) -> None:
    """Under uvicorn, a chunked body (no Content-Length) of 64 MiB: the answer comes once the limit is passed,
    before the client could send it all."""
    with serve(settings) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")

            def chunk(data: bytes) -> None:
                sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))

            chunk(b'{"Type": "Notification", "MessageId": "big-2", "Message": "')
            sent, answer = 0, b""
            try:
                while sent < 64:
                    chunk(b"B" * (1024 * 1024))
                    sent += 1
                    if select.select([sock], [], [], 0)[0]:
                        break
            except OSError:  # the server answered and closed the connection: it read no further
                pass
            while b"\r\n\r\n" not in answer:
                received = sock.recv(65536)
                if not received:
                    break
                answer += received
    assert answer.startswith(b"HTTP/1.1 202"), answer[:200]
    assert sent < 64
    assert "larger than" in records(ct)["big-2"]["reason"]


def test_a_body_at_the_limit_is_processed(event_app: TestClient, ct: FakeCommercetools,
                                          klaviyo: FakeKlaviyo) -> None:
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    envelope = pubsub(notification)
    envelope["padding"] = " " * (MAX_BODY_BYTES - len(json.dumps(envelope)) - 20)
    body = json.dumps(envelope).encode()
    assert len(body) <= MAX_BODY_BYTES
    response = event_app.post("/", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 204
    assert records(ct) == {}


@pytest.mark.parametrize("before", ["yesterday", "2026-13-01", "01/06/2026", "2026-06-01T25:00:00Z", "", "now"])
def test_purge_refuses_what_is_not_iso_8601(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                            cli: Cli, before: str, capsys: pytest.CaptureFixture[str]) -> None:
    ct.add("customers", fixture("customer"))
    klaviyo.fail_next("POST", r"/api/profile-import", 400)
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    assert event_app.post("/", json=pubsub(notification)).status_code == 202
    with pytest.raises(SystemExit) as exit_:
        cli("dead-letters", "purge", "--before", before)
    assert exit_.value.code == 2
    assert "not an ISO 8601 date" in capsys.readouterr().err
    assert list(records(ct)) == [notification["id"]]  # nothing deleted


def test_purge_compares_times_not_strings(event_app: TestClient, ct: FakeCommercetools, klaviyo: FakeKlaviyo,
                                          cli: Cli) -> None:
    ct.add("customers", fixture("customer"))
    klaviyo.fail_next("POST", r"/api/profile-import", 400)
    notification = message("customer", CUSTOMER_ID, "CustomerCreated", customer=fixture("customer"))
    assert event_app.post("/", json=pubsub(notification)).status_code == 202
    for obj in ct.store["custom-objects"].values():
        obj["value"]["lastSeen"] = "2026-06-01T10:00:00+00:00"
    # 09:30 UTC written with an offset: as a string it sorts after 10:00, as a time it is before.
    code, out, _ = cli("dead-letters", "purge", "--before", "2026-06-01T11:30:00+02:00")
    assert code == 0 and "0 dead letters deleted" in out
    code, out, _ = cli("dead-letters", "purge", "--before", "2026-06-01")
    assert code == 0 and "0 dead letters deleted" in out
    code, out, _ = cli("dead-letters", "purge", "--before", "2026-06-01T10:00:01Z")
    assert code == 0 and "1 dead letters deleted" in out
