"""Bulk orders import against local stand-ins that enforce Klaviyo's rate limits.

    .venv/bin/python bench/bulk_orders.py                 # N = 20,000 orders of 3 lines
    .venv/bin/python bench/bulk_orders.py --n 2000 --compare   # N and 5N, to compare peak memory

A commercetools stand-in holds N generated orders (demo/sample.py), a Klaviyo stand-in enforces the documented
limits of the endpoints used (429 with Retry-After beyond them), and `python -m job sync orders` runs as a child
process, so that its peak RSS is the connector's alone. Prints events/second, that figure against the rate-limit
bound, Klaviyo requests, 429s received and the child's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo import sample  # noqa: E402
from tests.fakes.commercetools import FakeCommercetools  # noqa: E402
from tests.fakes.commercetools_server import serve  # noqa: E402
from tests.fakes.klaviyo import FakeKlaviyo  # noqa: E402

EVENTS_PER_REQUEST = 1000
BURST, STEADY = 10, 150  # event-bulk-create-jobs: 10/s, 150/min (Klaviyo's OpenAPI x-klaviyo-ratelimit)


def serve_klaviyo(fake: FakeKlaviyo) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            status, headers, payload = fake.handle(self.command, self.path, dict(self.headers.items()), body,
                                                   base_url=base)
            self.send_response(status)
            for name, value in headers.items():
                if name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _any

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    base = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, base


def bound(seconds: float) -> float:
    """Events/second the limits allow over a run this long (fixed 1 s and 60 s windows, 1,000 events each)."""
    requests = min(BURST * math.ceil(seconds), STEADY * math.ceil(seconds / 60))
    return requests * EVENTS_PER_REQUEST / seconds


def run(n: int, lines: int, validate: bool) -> dict[str, Any]:
    ct = FakeCommercetools(project_key="bench", client_id="bench", client_secret="bench-secret")
    for name, objects in (("categories", sample.categories()), ("products", sample.products()),
                          ("customers", sample.customers()), ("payments", sample.payments())):
        for obj in objects:
            ct.add(name, obj)
    for order in sample.orders(n, lines):
        ct.add("orders", order)
    ct_server, ct_url = serve(ct)
    klaviyo = FakeKlaviyo(validate=validate)
    klaviyo.enforce_rate_limits = True
    k_server, k_url = serve_klaviyo(klaviyo)
    env = {"PATH": os.environ["PATH"], "CT_API_URL": ct_url, "CT_AUTH_URL": ct_url, "CT_PROJECT_ID": "bench",
           "CT_API_CLIENT": json.dumps({"clientId": "bench", "secret": "bench-secret"}),
           "KLAVIYO_AUTH_KEY": "pk_bench", "KLAVIYO_API_URL": k_url, "LOG_LEVEL": "WARNING"}
    began = time.monotonic()
    log = ROOT / "out" / f"bench-bulk-orders-{n}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as out:
        child = subprocess.Popen([sys.executable, "-m", "job", "sync", "orders"], cwd=ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS
    elapsed = time.monotonic() - began
    ct_server.shutdown()
    k_server.shutdown()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the import failed; see {log}")
    events = len(klaviyo.events)
    requests = [r for r in klaviyo.requests if r.path == "/api/event-bulk-create-jobs"]
    return {
        "orders": n, "events": events, "seconds": elapsed, "events_per_second": events / elapsed,
        "bound": bound(elapsed), "klaviyo_requests": len(klaviyo.requests), "event_requests": len(requests),
        "throttled": klaviyo.throttled, "invalid": len(klaviyo.errors),
        "peak_rss_mib": usage.ru_maxrss / 1024,
    }


def report(figures: dict[str, Any]) -> None:
    f = figures
    print(f"orders {f['orders']:>7}  events {f['events']:>7}  in {f['seconds']:7.1f} s  "
          f"= {f['events_per_second']:8.0f} events/s  ({100 * f['events_per_second'] / f['bound']:5.1f} % of the "
          f"{f['bound']:.0f} events/s the limits allow over that time; steady-state bound "
          f"{STEADY * EVENTS_PER_REQUEST / 60:.0f}/s)")
    print(f"   Klaviyo requests {f['klaviyo_requests']} ({f['event_requests']} event batches), 429s received "
          f"{f['throttled']}, requests failing validation {f['invalid']}, child peak RSS {f['peak_rss_mib']:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="orders (default 20,000)")
    parser.add_argument("--lines", type=int, default=3, help="line items per order")
    parser.add_argument("--compare", action="store_true", help="also run 5N to compare peak memory")
    parser.add_argument("--no-validate", action="store_true", help="skip OpenAPI validation in the stand-in")
    args = parser.parse_args()
    for n in (args.n, 5 * args.n) if args.compare else (args.n,):
        report(run(n, args.lines, not args.no_validate))


if __name__ == "__main__":
    main()
