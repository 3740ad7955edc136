"""Dry run: Klaviyo's side of the conversation played locally, so that nothing is sent.

Plugged under the Klaviyo client as an httpx transport, it writes every write request as one JSON line
(method, path, body) and answers as Klaviyo would for an empty account: look-ups find nothing, creates succeed,
bulk jobs complete at once. Every code path above the transport is the one used for real.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

JSON_API = {"Content-Type": "application/vnd.api+json"}


class DryRunKlaviyo(httpx.BaseTransport):
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.counts: Counter[str] = Counter()
        self._jobs: dict[str, int] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            return self._read(path)
        body = json.loads(request.content) if request.content else None
        with self._lock:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"method": request.method, "path": path, "body": body}, ensure_ascii=False))
                out.write("\n")
            return self._write(request.method, path, body)

    def _read(self, path: str) -> httpx.Response:
        parts = path.rstrip("/").split("/")
        if parts[-2].endswith("-jobs"):  # a bulk job's status
            total = self._jobs.get(parts[-1], 0)
            return _json(200, {"data": {"type": parts[-2][:-1], "id": parts[-1], "attributes": {
                "status": "complete", "total_count": total, "completed_count": total, "failed_count": 0}}})
        if len(parts) == 3 or parts[-1] == "variants":  # a collection: nothing there
            return _json(200, {"data": [], "links": {"self": path, "next": None}})
        return _json(404, {"errors": [{"status": 404, "code": "not_found", "title": "Not found (dry run)"}]})

    def _write(self, method: str, path: str, body: Any) -> httpx.Response:
        data = (body or {}).get("data") or {}
        if method == "DELETE":
            self.counts[f"{path.split('/')[2]} delete"] += 1
            return httpx.Response(204)
        if path.startswith("/api/profile-subscription-bulk-"):  # 202 without a job, as Klaviyo answers
            self.counts[path.removeprefix("/api/").removesuffix("-jobs")] += len(
                data["attributes"]["profiles"]["data"])
            return httpx.Response(202)
        if path.endswith("-jobs"):
            size = self._count_job(path, data)
            if path == "/api/event-bulk-create-jobs":
                return httpx.Response(202)
            job_id = f"dry-run-{len(self._jobs) + 1}"
            self._jobs[job_id] = size
            return _json(202, {"data": {"type": data.get("type"), "id": job_id, "attributes": {"status": "queued"}}})
        if path == "/api/events":
            self.counts[f"event {data['attributes']['metric']['data']['attributes']['name']}"] += 1
            return httpx.Response(202)
        kind = path.split("/")[2]
        self.counts[f"{kind} {'update' if method == 'PATCH' else 'create'}"] += 1
        resource_id = data.get("id") or f"dry-run-{kind}"
        return _json(200 if method == "PATCH" else 201,
                     {"data": {"type": data.get("type"), "id": resource_id, "attributes": data.get("attributes")}})

    def _count_job(self, path: str, data: dict[str, Any]) -> int:
        attributes = data.get("attributes") or {}
        if path == "/api/event-bulk-create-jobs":
            for entry in attributes["events-bulk-create"]["data"]:
                for event in entry["attributes"]["events"]["data"]:
                    self.counts[f"event {event['attributes']['metric']['data']['attributes']['name']}"] += 1
            return 0
        (items,) = attributes.values()
        rows = items["data"]
        self.counts[path.removeprefix("/api/").removesuffix("-jobs")] += len(rows)
        return len(rows)


def _json(status: int, body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(status, headers=JSON_API, content=json.dumps(body).encode())
