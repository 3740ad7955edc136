"""README's first command: `python -m demo` runs the connector end to end with no account."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_bulk_import_and_realtime_deliveries(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    for line in ("categories  completed", "products    completed", "customers   completed", "orders      completed",
                 "204  OrderCreated (3 lines)", "204  inventory ResourceUpdated (sold out)"):
        assert line in out
    assert "ignored" not in out.split("subscription test notification")[0]  # all but the test message processed
    requests = [json.loads(line) for line in (tmp_path / "out/demo/klaviyo-requests.jsonl").read_text().splitlines()]
    paths = {r["path"] for r in requests}
    assert {"/api/event-bulk-create-jobs", "/api/profile-bulk-import-jobs", "/api/catalog-item-bulk-create-jobs",
            "/api/catalog-variant-bulk-create-jobs", "/api/catalog-category-bulk-create-jobs", "/api/events",
            "/api/profile-import"} <= paths
    for metric in ("Placed Order", "Ordered Product", "Fulfilled Order", "Cancelled Order", "Refunded Order"):
        assert f"event     {metric}" in out
    assert "failed  0" in out and "failed  1" not in out
