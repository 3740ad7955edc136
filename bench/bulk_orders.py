"""Bulk orders import against local stand-ins that enforce Klaviyo's rate limits.

    .venv/bin/python bench/bulk_orders.py                          # N = 20,000 orders of 3 lines
    .venv/bin/python bench/bulk_orders.py --n 20000 --compare      # N and 5N side by side (peak RSS, floor)
    .venv/bin/python bench/bulk_orders.py --n 2000 --profile out/orders.prof   # cProfile of the connector

A commercetools stand-in holds N generated orders (demo/sample.py), a Klaviyo stand-in enforces the documented
limits of the endpoints used (429 with Retry-After beyond them), and `python -m job sync orders` runs as a child
process, so that its peak RSS is the connector's alone. Prints events/second, that figure against the rate-limit
bound, Klaviyo requests, 429s received, the child's peak RSS and the CPU time of the child and of the stand-ins.

The bound. Events go through event-bulk-create-jobs: at most 1,000 events a request, and at most 10 requests a
second (burst) and 150 a minute (steady) per account, in fixed windows (Klaviyo's x-klaviyo-ratelimit; the
stand-in's windows start at whole seconds and minutes of its clock, the one this script times with). Hence:
- in the long run, 150 requests of 1,000 events a minute: 2,500 events/s, the steady-state bound;
- a run of T seconds can make at most the requests that the windows it overlaps allow ("capacity");
- this run's E events need R = ceil(E / 1,000) requests at least, and with the windows as they fell the last of
  them could have gone T_min seconds after the start at the earliest ("fastest"). The bound for this run is
  E / T_min events/s, and the run reached T_min / T of it. Unlike capacity / T, that bar does not move with the
  run's own length (a slower run does not lower it), and only a client that sends full batches without a pause
  from its first instant reaches it: start-up, reading the first page and the last answer all count against it.
  Where the windows fell matters: a run that starts 15 s before a minute ends can make 300 requests in 30 s.
  So the same figure is also given for windows that start with the run (what a client that cannot see
  Klaviyo's windows before its first answer can count on).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import resource
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from demo import sample  # noqa: E402
from tests.fakes.commercetools import FakeCommercetools  # noqa: E402
from tests.fakes.commercetools_server import serve  # noqa: E402
from tests.fakes.klaviyo import FakeKlaviyo  # noqa: E402

EVENTS_PATH = "/api/event-bulk-create-jobs"
EVENTS_PER_REQUEST = 1000
BURST, STEADY = 10, 150  # event-bulk-create-jobs: 10/s, 150/min (Klaviyo's OpenAPI x-klaviyo-ratelimit)
STEADY_BOUND = STEADY * EVENTS_PER_REQUEST / 60

# Execs what it reads on its first line of input: the connector's process, forked while this one is small.
LAUNCHER = "import json, os, sys; a = json.loads(sys.stdin.readline()); os.execve(a[0][0], a[0], a[1])"


class Child:
    """The connector's process, forked at once and told later what to run.

    Linux counts in a process's peak RSS (ru_maxrss) the pages it shared with the process it was forked from,
    up to its exec: forked once the stand-ins hold N orders, the connector would report their memory as its
    own. So a small launcher is forked before any order exists, and execs the connector when asked.
    """

    def __init__(self, log: Path) -> None:
        log.parent.mkdir(exist_ok=True)
        self.log = log
        self._out: IO[str] = log.open("w")
        self.process = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER], stdin=subprocess.PIPE,
                                        cwd=ROOT, stdout=self._out, stderr=subprocess.STDOUT, text=True)

    def run(self, argv: list[str], env: dict[str, str]) -> tuple[int, resource.struct_rusage]:
        """Run `argv` in the child; its exit code and resource usage."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps([argv, env]) + "\n")
        self.process.stdin.close()
        _pid, status, usage = os.wait4(self.process.pid, 0)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self._out.close()
        return self.process.returncode, usage


def serve_klaviyo(fake: FakeKlaviyo, seen: list[tuple[float, str, int]]) -> tuple[ThreadingHTTPServer, str]:
    """Serve the fake; `seen` gets (arrival on the fake's clock, path, status) of every request."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            arrived = fake.clock()
            status, headers, payload = fake.handle(self.command, self.path, dict(self.headers.items()), body,
                                                   base_url=base)
            seen.append((arrived, self.path.split("?")[0], status))
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
    server.daemon_threads = True
    base = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, base


def _schedule(start: float, until: float | None = None, requests: int | None = None) -> tuple[int, float]:
    """The greedy schedule from `start`: every request as early as its 1-second window (fewer than BURST) and
    its minute window (fewer than STEADY) allow, windows at whole seconds and minutes. Stops at `until` or after
    `requests`; returns how many were placed and when the last one went."""
    t, last, placed = start, start, 0
    second = minute = -1
    in_second = in_minute = 0
    while requests is None or placed < requests:
        s, m = math.floor(t), math.floor(t / 60)
        if s != second:
            second, in_second = s, 0
        if m != minute:
            minute, in_minute = m, 0
        if in_minute >= STEADY:
            t = (m + 1) * 60.0
            continue
        if in_second >= BURST:
            t = s + 1.0
            continue
        if until is not None and t >= until:
            break
        in_second, in_minute, placed, last = in_second + 1, in_minute + 1, placed + 1, t
    return placed, last


def fastest(requests: int, start: float) -> float:
    """T_min: seconds from `start` until the last of `requests` requests could go at the earliest."""
    return _schedule(start, requests=requests)[1] - start if requests else 0.0


def capacity(start: float, seconds: float) -> int:
    """The most requests the windows allow from `start` during `seconds`."""
    return _schedule(start, until=start + seconds)[0]


def busiest(times: list[float]) -> tuple[int, int]:
    """The most accepted requests seen in one 1-second window and in one minute window (stand-in's windows)."""
    per_second: dict[int, int] = {}
    per_minute: dict[int, int] = {}
    for t in times:
        per_second[math.floor(t)] = per_second.get(math.floor(t), 0) + 1
        per_minute[math.floor(t / 60)] = per_minute.get(math.floor(t / 60), 0) + 1
    return max(per_second.values(), default=0), max(per_minute.values(), default=0)


def run(n: int, lines: int, validate: bool, child: Child, profile: Path | None = None) -> dict[str, Any]:
    ct = FakeCommercetools(project_key="bench", client_id="bench", client_secret="bench-secret")
    for name, objects in (("categories", sample.categories()), ("products", sample.products()),
                          ("customers", sample.customers()), ("payments", sample.payments())):
        for obj in objects:
            ct.add(name, obj)
    for order in sample.orders(n, lines):
        ct.add("orders", order)
    # The stand-ins' data is never garbage, and what they allocate per request (a parsed body: a hundred
    # thousand containers) has no cycles: the cycle collector, which would go through it again and again, is off
    # during the run, so that the stand-ins take less of the CPU the connector also needs.
    gc.collect()
    gc.freeze()
    gc.disable()
    ct_server, ct_url = serve(ct)
    klaviyo = FakeKlaviyo(validate=validate, keep_payloads=False)
    klaviyo.enforce_rate_limits = True
    seen: list[tuple[float, str, int]] = []
    k_server, k_url = serve_klaviyo(klaviyo, seen)
    env = {"PATH": os.environ["PATH"], "CT_API_URL": ct_url, "CT_AUTH_URL": ct_url, "CT_PROJECT_ID": "bench",
           "CT_API_CLIENT": json.dumps({"clientId": "bench", "secret": "bench-secret"}),
           "KLAVIYO_AUTH_KEY": "pk_bench", "KLAVIYO_API_URL": k_url, "LOG_LEVEL": "WARNING"}
    argv = [sys.executable, *(["-m", "cProfile", "-o", str(profile)] if profile else []), "-m", "job", "sync",
            "orders"]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    began = klaviyo.clock()
    code, usage = child.run(argv, env)
    elapsed = klaviyo.clock() - began
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    ct_server.shutdown()
    k_server.shutdown()
    gc.enable()
    gc.unfreeze()
    if code != 0:
        raise SystemExit(f"the import failed; see {child.log}")
    events = klaviyo.accepted_events
    accepted = [t for t, path, status in seen if path == EVENTS_PATH and status < 300]
    needed = math.ceil(events / EVENTS_PER_REQUEST)
    t_min = fastest(needed, began)
    return {
        "orders": n, "events": events, "distinct": len(klaviyo.accepted_keys), "seconds": elapsed,
        "events_per_second": events / elapsed, "needed": needed, "fastest": t_min,
        "bound": events / t_min if t_min else math.inf, "capacity": capacity(began, elapsed),
        "fastest_aligned": fastest(needed, 0.0),
        "klaviyo_requests": len(seen), "event_requests": len([s for s in seen if s[1] == EVENTS_PATH]),
        "accepted_requests": len(accepted), "busiest": busiest(accepted), "throttled": klaviyo.throttled,
        "invalid": len(klaviyo.errors), "peak_rss_mib": usage.ru_maxrss / 1024,
        "child_cpu": usage.ru_utime + usage.ru_stime,
        "stand_in_cpu": (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime),
    }


def report(f: dict[str, Any]) -> None:
    print(f"orders {f['orders']:,}: {f['events']:,} events ({f['distinct']:,} distinct) in {f['seconds']:.1f} s "
          f"= {f['events_per_second']:,.0f} events/s")
    for label, t_min in (("fixed windows, as they fell", f["fastest"]),
                         ("fixed windows, starting as the run started", f["fastest_aligned"])):
        if t_min:
            print(f"   bound ({label}): {f['needed']} requests of <= {EVENTS_PER_REQUEST:,} events at {BURST}/s "
                  f"and {STEADY}/min could not all be made before +{t_min:.1f} s: {f['events'] / t_min:,.0f} "
                  f"events/s; reached {100 * t_min / f['seconds']:.1f} % of it")
        else:
            print(f"   bound ({label}): {f['needed']} requests fit in one second: the limits do not bound this run")
    print(f"   capacity over the run's {f['seconds']:.1f} s: {f['capacity']} requests "
          f"({f['capacity'] * EVENTS_PER_REQUEST / f['seconds']:,.0f} events/s); steady-state bound "
          f"{STEADY_BOUND:,.0f} events/s ({f['events_per_second'] / STEADY_BOUND:.0%} of it)")
    print(f"   Klaviyo requests {f['klaviyo_requests']} ({f['event_requests']} event batches, "
          f"{f['accepted_requests']} accepted; busiest second {f['busiest'][0]}, busiest minute "
          f"{f['busiest'][1]}), 429s {f['throttled']}, invalid {f['invalid']}")
    print(f"   child peak RSS {f['peak_rss_mib']:.1f} MiB, child CPU {f['child_cpu']:.1f} s, stand-ins' CPU "
          f"{f['stand_in_cpu']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="orders (default 20,000)")
    parser.add_argument("--lines", type=int, default=3, help="line items per order")
    parser.add_argument("--compare", action="store_true", help="also run 5N to compare peak memory")
    parser.add_argument("--no-validate", action="store_true", help="skip the SDK model check in the stand-in")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the connector's process here")
    args = parser.parse_args()
    sizes = (args.n, 5 * args.n) if args.compare else (args.n,)
    children = [Child(ROOT / "out" / f"bench-bulk-orders-{n}.log") for n in sizes]  # forked while we are small
    figures = []
    for n, child in zip(sizes, children, strict=True):
        figures.append(run(n, args.lines, not args.no_validate, child, args.profile))
        report(figures[-1])
    if len(figures) == 2:
        side_by_side(*figures)


def side_by_side(small: dict[str, Any], large: dict[str, Any]) -> None:
    """N and 5N in two columns: memory flat in N means the same peak RSS for both."""
    rows = [("orders", "orders", ",.0f"), ("events", "events", ",.0f"), ("seconds", "seconds", ".1f"),
            ("events/s", "events_per_second", ",.0f"), ("peak RSS (MiB)", "peak_rss_mib", ".1f"),
            ("child CPU (s)", "child_cpu", ".1f")]
    print(f"\n{'':<28}{'N':>14}{'5N':>14}")
    for label, key, spec in rows:
        print(f"{label:<28}{format(small[key], spec):>14}{format(large[key], spec):>14}")
    for label, key in (("floor / time, as they fell", "fastest"), ("floor / time, aligned", "fastest_aligned")):
        print(f"{label:<28}" + "".join(f"{100 * f[key] / f['seconds']:>13.1f}%" for f in (small, large)))
    growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1
    print(f"peak RSS at 5N is {growth:+.1%} of N's (target: within 10 %, and at most 200 MiB at 100,000 orders)")


if __name__ == "__main__":
    main()
