"""Realtime throughput: how many deliveries per second one event app instance handles, and at what cost.

    python bench/event_throughput.py --n 2000 --concurrency 16 [--profile] [--log-level INFO]

The event app runs under uvicorn in a subprocess (its own interpreter and GIL, as in production), configured as in
production (LOG_LEVEL=INFO by default, its JSON lines discarded). Local stand-ins answer at once from this process:
commercetools (tests/fakes/commercetools.py behind its stdlib server) and Klaviyo (tests/fakes/klaviyo.py behind
a stdlib threading HTTP/1.1 server, SDK model check off). N Pub/Sub deliveries, a realistic mix built from
demo/sample.py, are posted with the given concurrency:

- CustomerCreated (a new customer with an address and phone): 1 commercetools read (the current customer: writes
  never trust a message's copy) + 1 Klaviyo lookup + 1 profile import;
- OrderCreated with 3 lines: 1 commercetools erasure-record read + 1 products query + 4 Klaviyo events;
- ProductPublished with 3 variants: 1 commercetools read + item upsert, variant listing, 3 variant upserts;
- inventory entry ResourceUpdated: 1 commercetools read + 1 Klaviyo variant update.

    python bench/event_throughput.py --flash [--orders 2000] [--rate 100] [--concurrency 32]

--flash: a flash sale against a Klaviyo stand-in that enforces Klaviyo's documented per-operation limits (fixed
1-second and 1-minute windows, 429 with Retry-After beyond them). N orders (3 lines each, every second one
preceded by a CustomerCreated of a new customer) are offered at R orders per second with at most C deliveries in
flight; a non-2xx answer is delivered again after 1, 2, 4, 8, then 10 s (as a push subscription does). Printed:
seconds from the last offered order until every expected event and profile is in the stand-in, events lost,
events sent more than once, redeliveries, 429s, Klaviyo requests per delivery, p50/p99 answer time, peak RSS.

Printed (plain mode): deliveries/second, latency p50/p90/p99/max, answers, Klaviyo and commercetools requests per
delivery, the app's CPU time per delivery, peak RSS of the app process and of this process. With --profile the app's
handling (event loop thread and worker threads) runs under cProfile and the top functions are printed.

The stand-ins and the load generator share this process, so on a small machine they compete with the app for
CPU: the app's CPU time per delivery is the figure that does not depend on them.

    python bench/event_throughput.py --app-root ../previous   # a worktree of another commit, same stand-ins

--app-root runs another checkout's event app (`python -m event` there) against the same stand-ins and load, to
compare two commits on one machine in one session.

    python bench/event_throughput.py --floor

--floor: what the rig costs without the connector: the same deliveries and load against an app that answers 204
and does nothing else (uvicorn, starlette, one thread-pool hop), and the CPU of one outgoing httpx request (the
connector's clients use httpx). On this rig the connector's deliveries/s cannot exceed the cores ÷ (stand-ins +
load + this app + the connector's requests × one request's CPU) per delivery, before any work of its own.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import json
import os
import pstats
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from demo import sample  # noqa: E402
from tests.fakes.commercetools import FakeCommercetools  # noqa: E402
from tests.fakes.commercetools_server import FakeServer  # noqa: E402
from tests.fakes.klaviyo import FakeKlaviyo  # noqa: E402

PROJECT = "bench-shop"
CLIENT_ID, CLIENT_SECRET = "bench-client", "bench-secret"
KINDS = ("customer", "order", "product", "inventory")


# --- stand-ins ----------------------------------------------------------------------------------------------------


class _NoDelay:
    """Answers leave at once: stdlib handlers write the head and the body separately, and without TCP_NODELAY the
    body waits for the client's delayed ACK (~40 ms on Linux), which would be measured as the connector's. The
    listen backlog is 128, not the stdlib's 5: a burst of new connections would otherwise lose SYNs, each
    retried after a second and measured as a one-second answer."""

    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()  # type: ignore[misc]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


class CommercetoolsServer(_NoDelay, FakeServer):
    """tests/fakes/commercetools_server.py's stdlib server for the commercetools stand-in."""

    def __init__(self, fake: FakeCommercetools) -> None:
        super().__init__(("127.0.0.1", 0), fake)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


class _KlaviyoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 65536  # head and body in one write
    server: KlaviyoServer

    def _any(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, headers, payload = self.server.fake.handle(self.command, self.path, self.headers.items(), body,
                                                           base_url=self.server.url)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PATCH = do_DELETE = _any

    def log_message(self, format: str, *args: Any) -> None:
        pass


class KlaviyoServer(_NoDelay, ThreadingHTTPServer):
    """The Klaviyo stand-in (tests/fakes/klaviyo.py) behind a stdlib threading HTTP/1.1 server."""

    daemon_threads = True

    def __init__(self, fake: FakeKlaviyo) -> None:
        super().__init__(("127.0.0.1", 0), _KlaviyoHandler)
        self.fake = fake
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


# --- the workload -------------------------------------------------------------------------------------------------


def notification(resource_type: str, resource_id: str, message_type: str, **fields: Any) -> dict[str, Any]:
    return {"notificationType": "Message", "projectKey": PROJECT, "id": str(uuid.uuid4()), "version": 1,
            "sequenceNumber": 1, "resource": {"typeId": resource_type, "id": resource_id},
            "resourceVersion": fields.pop("resourceVersion", 1), "resourceUserProvidedIdentifiers": {},
            "type": message_type, "createdAt": "2026-11-26T10:00:00.000Z",
            "lastModifiedAt": "2026-11-26T10:00:00.000Z", **fields}


def envelope(payload: dict[str, Any], number: int) -> bytes:
    data = json.dumps(payload).encode()
    return json.dumps({"message": {"data": base64.b64encode(data).decode(), "messageId": str(10**12 + number),
                                   "publishTime": "2026-11-26T10:00:00.000Z", "attributes": {}},
                       "subscription": "projects/bench/subscriptions/klaviyo"}).encode()


def workload(ct: FakeCommercetools, n: int) -> tuple[list[tuple[str, bytes]], list[bytes]]:
    """(kind, body) of `n` deliveries cycling through KINDS, and the warm-up deliveries (the products published
    once, so that stock updates find their variants)."""
    for resource_type, objects in sample.project().items():
        for obj in objects:
            ct.add(resource_type, obj)
    per_kind = n // len(KINDS) + 1
    customers = sample.customers(3 + per_kind)[3:]
    for index, customer in enumerate(customers):
        customer["addresses"][0]["mobile"] = f"+4477009{index:05d}"
        ct.add("customers", customer)
    orders = list(sample.orders(10 + per_kind, lines=3, n_customers=3 + per_kind))[10:]
    products = [p for p in sample.products() if len(sample_variants(p)) == 3]
    entries = list(ct.store["inventory"].values())
    deliveries = []
    for number in range(n):
        kind, index = KINDS[number % len(KINDS)], number // len(KINDS)
        if kind == "customer":
            payload = notification("customer", customers[index]["id"], "CustomerCreated", customer=customers[index])
        elif kind == "order":
            order = {**orders[index], "orderState": "Open"}
            payload = notification("order", order["id"], "OrderCreated", order=order)
        elif kind == "product":
            product = products[index % len(products)]
            payload = notification("product", product["id"], "ProductPublished", resourceVersion=product["version"])
        else:
            entry = entries[index % len(entries)]
            payload = {"notificationType": "ResourceUpdated", "projectKey": PROJECT,
                       "resource": {"typeId": "inventory-entry", "id": entry["id"]},
                       "resourceUserProvidedIdentifiers": {"sku": entry["sku"]}, "version": entry["version"],
                       "oldVersion": entry["version"] - 1, "modifiedAt": "2026-11-26T10:00:00.000Z"}
        deliveries.append((kind, envelope(payload, number)))
    warm_up = [envelope(notification("product", p["id"], "ProductPublished", resourceVersion=p["version"]), -i - 1)
               for i, p in enumerate(sample.products())]
    return deliveries, warm_up


def sample_variants(product: dict[str, Any]) -> list[dict[str, Any]]:
    current = product["masterData"]["current"]
    return [current["masterVariant"], *current["variants"]]


# --- the app in a subprocess ----------------------------------------------------------------------------------------


def serve_floor(port: int) -> None:
    """--floor's subprocess: an app that does nothing with a delivery but what any starlette app on uvicorn does
    (read the body, one hop to the thread pool as the event app's route makes) and answers 204."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def deliver(request: Request) -> Response:
        await run_in_threadpool(len, await request.body())
        return Response(status_code=204)

    app = Starlette(routes=[Route("/", deliver, methods=["POST"]), Route("/health", lambda _: Response())])
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def floor(args: argparse.Namespace) -> int:
    """What the rig costs without the connector: the same deliveries and load against an app that does nothing,
    and the CPU of one request of the connector's HTTP client (httpx)."""
    ct = FakeCommercetools(project_key=PROJECT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    deliveries, _ = workload(ct, args.n)
    port = free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-floor", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(process, url)
        cpu_before, own_before = proc_cpu_seconds(process.pid), time.process_time()
        began = time.perf_counter()
        results = post_all(url, deliveries, args.concurrency)
        elapsed = time.perf_counter() - began
        app_cpu, own_cpu = proc_cpu_seconds(process.pid) - cpu_before, time.process_time() - own_before
        client_cpu = request_cpu(url)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(60)
    n = len(results)
    print(f"floor: {n} deliveries, concurrency {args.concurrency}, an app that answers 204 and does nothing else, "
          f"{os.cpu_count()} CPUs")
    print(f"  deliveries/second       {n / elapsed:8.1f}")
    print(f"  app CPU                 {app_cpu / n * 1000:8.2f} ms per delivery (uvicorn, starlette, one thread hop)")
    print(f"  load CPU                {own_cpu / n * 1000:8.2f} ms per delivery (this process posting)")
    print(f"  httpx client CPU        {client_cpu * 1000:8.2f} ms per request (a Klaviyo event, JSON in and out, "
          "one keep-alive connection; the connector's clients use httpx)")
    return 0


def request_cpu(url: str, n: int = 1000) -> float:
    """CPU seconds of this process per httpx request (sent one after another to the app at `url`, which runs in
    its own process): what one outgoing request costs the connector's side."""
    body = {"data": {"type": "event", "attributes": {
        "properties": {"OrderId": "o-1"}, "metric": {"data": {"type": "metric", "attributes": {"name": "X"}}},
        "profile": {"data": {"type": "profile", "attributes": {"email": "a@example.com"}}}}}}
    headers = {"Authorization": "Klaviyo-API-Key pk_bench_0123456789", "revision": "2026-07-15"}
    with httpx.Client(base_url=url, headers=headers) as client:
        for index in range(n + 100):
            if index == 100:  # after a warm-up
                before = time.process_time()
            client.post("/", json=body)
        return (time.process_time() - before) / n


def wait_healthy(process: subprocess.Popen, url: str) -> None:
    end = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > end:
            raise SystemExit("the app did not start")
        time.sleep(0.1)


def serve_app(port: int, profile_out: str | None) -> None:
    """The subprocess: `python -m event`'s start-up (settings from the environment, JSON logs), optionally under
    cProfile in every thread that handles a delivery and in the event loop thread."""
    import uvicorn

    import event.app
    from shared.cli import startup

    settings = startup()
    profiles: list[cProfile.Profile] = []
    if profile_out:
        local = threading.local()
        lock = threading.Lock()
        handle = event.app.handle_delivery

        def profiled(body: bytes, context: Any) -> Any:
            profiler = getattr(local, "profiler", None)
            if profiler is None:
                profiler = local.profiler = cProfile.Profile(time.thread_time)
                with lock:
                    profiles.append(profiler)
            profiler.enable()
            try:
                return handle(body, context)
            finally:
                profiler.disable()

        event.app.handle_delivery = profiled  # what the POST / route calls, in the thread pool
        loop_profiler = cProfile.Profile(time.thread_time)
        profiles.append(loop_profiler)
        loop_profiler.enable()
    config = uvicorn.Config(event.app.create_app(settings), host="127.0.0.1", port=port, log_config=None,
                            access_log=False)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it shut down on
        uvicorn.Server(config).run()
    if profile_out:
        loop_profiler.disable()
        stats = pstats.Stats(profiles[0])
        for profiler in profiles[1:]:
            stats.add(profiler)
        stats.dump_stats(profile_out)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(ct_url: str, klaviyo_url: str, log_level: str, profile_out: str | None,
              max_wait_ms: int | None = None, app_root: Path | None = None) -> tuple[subprocess.Popen, str]:
    """The event app in a subprocess; `app_root`: another checkout's app, started as `python -m event` (its
    production entry point), to compare two commits on the same machine with the same stand-ins and load."""
    port = free_port()
    config: dict[str, Any] = {"product": {"inventory": {"useChannelInventory": sample.CHANNEL}}}
    if max_wait_ms is not None:
        config["event"] = {"batch": {"maxWaitMs": max_wait_ms}}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CT_API_URL": ct_url, "CT_AUTH_URL": ct_url,
           "CT_PROJECT_ID": PROJECT, "CT_API_CLIENT": json.dumps({"clientId": CLIENT_ID, "secret": CLIENT_SECRET}),
           "KLAVIYO_AUTH_KEY": "pk_bench_0123456789", "KLAVIYO_API_URL": klaviyo_url, "PREFERRED_LOCALE": "en-US",
           "PREFERRED_CURRENCY": "EUR", "PRODUCT_URL_TEMPLATE": "https://shop.example.com/p/{{productSlug}}",
           "NODE_CONFIG": json.dumps(config),
           "LOG_LEVEL": log_level, "APP_TYPE": "EVENT"}
    command = [sys.executable, str(Path(__file__).resolve()), "--serve-app", str(port)]
    if profile_out:
        command += ["--profile-out", profile_out]
    if app_root is not None:
        env.update(PYTHONPATH=str(app_root), PORT=str(port))
        command = [sys.executable, "-m", "event"]
    process = subprocess.Popen(command, cwd=app_root or ROOT, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_healthy(process, url)
    return process, url


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_peak_rss_mib(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


# --- the run --------------------------------------------------------------------------------------------------------


def post_all(url: str, deliveries: list[tuple[str, bytes]], concurrency: int) -> list[tuple[str, int, float]]:
    """(kind, status, seconds) per delivery, posted by `concurrency` workers."""
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with httpx.Client(base_url=url, timeout=60, limits=limits) as client:
        def post(item: tuple[str, bytes]) -> tuple[str, int, float]:
            kind, body = item
            began = time.perf_counter()
            status = client.post("/", content=body, headers=headers).status_code
            return kind, status, time.perf_counter() - began

        with ThreadPoolExecutor(concurrency) as pool:
            return list(pool.map(post, deliveries))


def batch_flushes(url: str) -> str:
    """The app's micro-batch flushes by queue and reason (its /metrics), e.g. events waited=40 all-waiting=12."""
    found: dict[str, list[str]] = {}
    with contextlib.suppress(httpx.HTTPError):
        for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
            m = re.match(r'klaviyo_connector_batch_flushes_total\{queue="(\w+)",reason="([\w-]+)"\} (\S+)', line)
            if m:
                found.setdefault(m.group(1), []).append(f"{m.group(2)}={float(m.group(3)):.0f}")
    return ";  ".join(f"{queue} {' '.join(reasons)}" for queue, reasons in sorted(found.items())) or "none"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


# --- flash sale -------------------------------------------------------------------------------------------------

BACKOFF = (1, 2, 4, 8)  # then 10 s


def flash_workload(ct: FakeCommercetools, n_orders: int) -> tuple[list[tuple[str, bytes]], set[tuple[str, str]],
                                                                    set[str]]:
    """(kind, body) in offer order, the expected (metric, unique_id) of every event, the new customers' ids."""
    for resource_type, objects in sample.project().items():
        for obj in objects:
            ct.add(resource_type, obj)
    customers = sample.customers(3 + n_orders // 2 + 1)[3:]
    for index, customer in enumerate(customers):
        customer["addresses"][0]["mobile"] = f"+4477{index:07d}"
        ct.add("customers", customer)  # the app reads the current customer (never the message's copy)
    orders = list(sample.orders(10 + n_orders, lines=3, n_customers=3))[10:]
    deliveries: list[tuple[str, bytes]] = []
    events: set[tuple[str, str]] = set()
    new_customers: set[str] = set()
    for number, order in enumerate(orders):
        order = {**order, "orderState": "Open"}
        if number % 2 == 1:
            customer = customers[number // 2]
            new_customers.add(customer["id"])
            order["customerId"], order["customerEmail"] = customer["id"], customer["email"]
            deliveries.append(("customer", envelope(notification("customer", customer["id"], "CustomerCreated",
                                                                 customer=customer), len(deliveries))))
        deliveries.append(("order", envelope(notification("order", order["id"], "OrderCreated", order=order),
                                             len(deliveries))))
        events.add(("Placed Order", order["id"]))
        events.update(("Ordered Product", line["id"]) for line in order["lineItems"])
    return deliveries, events, new_customers


def event_key(event: dict[str, Any]) -> tuple[str, str]:
    return event["metric"]["data"]["attributes"]["name"], event.get("unique_id")


def flash(args: argparse.Namespace) -> int:
    import heapq

    ct = FakeCommercetools(project_key=PROJECT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    deliveries, expected, new_customers = flash_workload(ct, args.orders)
    ct_server = CommercetoolsServer(ct)
    klaviyo = FakeKlaviyo(validate=False)
    klaviyo.enforce_rate_limits = True
    klaviyo.clock = time.time
    klaviyo_server = KlaviyoServer(klaviyo)
    process, url = start_app(ct_server.url, klaviyo_server.url, args.log_level, None, args.max_wait_ms,
                             args.app_root)
    lock = threading.Condition()
    queue: list[tuple[float, int, int, int]] = []  # (due, seq, delivery index, attempt)
    latencies: list[float] = []
    by_kind: dict[str, list[float]] = {"customer": [], "order": []}
    answers: Counter[int] = Counter()
    redeliveries = 0
    done = [False] * len(deliveries)
    slots = threading.Semaphore(args.concurrency)
    headers = {"Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    client = httpx.Client(base_url=url, timeout=60, limits=limits)
    pool = ThreadPoolExecutor(args.concurrency)

    def post(index: int, attempt: int) -> None:
        nonlocal redeliveries
        try:
            began = time.perf_counter()
            try:
                status = client.post("/", content=deliveries[index][1], headers=headers).status_code
            except httpx.HTTPError:
                status = 0
            with lock:
                latencies.append(time.perf_counter() - began)
                by_kind[deliveries[index][0]].append(latencies[-1] * 1000)
                answers[status] += 1
                if 200 <= status < 300:
                    done[index] = True
                else:
                    redeliveries += 1
                    wait = BACKOFF[attempt] if attempt < len(BACKOFF) else 10
                    heapq.heappush(queue, (time.monotonic() + wait, index, index, attempt + 1))
                    lock.notify()
        finally:
            slots.release()

    began = time.monotonic()
    order_number = 0
    for index, (kind, _body) in enumerate(deliveries):  # offered at `rate` orders per second
        due = began + order_number / args.rate
        if kind == "order":
            order_number += 1
        heapq.heappush(queue, (due, index, index, 0))
    last_offered = began + (order_number - 1) / args.rate
    try:
        cpu_before = proc_cpu_seconds(process.pid)
        while True:
            with lock:
                if all(done):
                    break
                if not queue:
                    lock.wait(0.5)
                    continue
                due, _, index, attempt = queue[0]
                now = time.monotonic()
                if due > now:
                    lock.wait(min(due - now, 0.5))
                    continue
                heapq.heappop(queue)
            slots.acquire()
            pool.submit(post, index, attempt)
            if time.monotonic() - began > args.timeout:
                print("timed out waiting for every delivery to be acknowledged", file=sys.stderr)
                break
        while time.monotonic() - began < args.timeout:  # until Klaviyo holds everything
            with klaviyo._lock:
                got = {event_key(e) for e in klaviyo.events}
                profiles = {p.get("external_id") for p in klaviyo.profiles.values()}
            if expected <= got and new_customers <= profiles:
                break
            time.sleep(0.05)
        finished = time.monotonic()
        app_cpu = proc_cpu_seconds(process.pid) - cpu_before
        app_rss = proc_peak_rss_mib(process.pid)
        flushes = batch_flushes(url)
    finally:
        pool.shutdown(wait=True)
        client.close()
        process.send_signal(signal.SIGINT)
        process.wait(60)
        ct_server.shutdown()
        klaviyo_server.shutdown()

    with klaviyo._lock:
        sent = Counter(event_key(e) for e in klaviyo.events)
        profiles = {p.get("external_id") for p in klaviyo.profiles.values()}
    lost = len(expected - set(sent))
    duplicated = sum(1 for k, c in sent.items() if c > 1)
    requests = len(klaviyo.requests)
    n_orders = sum(1 for kind, _ in deliveries if kind == "order")
    ms = [x * 1000 for x in latencies]
    print(f"flash sale: {n_orders} orders ({len(deliveries)} deliveries, {len(expected)} events, "
          f"{len(new_customers)} new customers) offered at {args.rate}/s, at most {args.concurrency} in flight, "
          f"{os.cpu_count()} CPUs")
    print(f"  lag after last order    {finished - last_offered:8.2f} s  (all events and profiles in Klaviyo)")
    print(f"  events lost             {lost:8d}   profiles missing {len(new_customers - profiles)}")
    print(f"  events sent twice+      {duplicated:8d}")
    print(f"  redeliveries            {redeliveries:8d}   answers {dict(answers)}")
    print(f"  Klaviyo 429s            {klaviyo.throttled:8d}")
    print(f"  Klaviyo requests        {requests / len(deliveries):8.3f} per delivery, "
          f"{requests / n_orders:.3f} per order delivery ({requests})")
    by_operation = Counter(f"{r.method} {re.sub(r'/[0-9A-Z]{26}', '/{id}', r.path)} {r.status}"
                           for r in klaviyo.requests)
    print(f"    by operation          {dict(by_operation.most_common())}")
    print(f"  batch flushes           {flushes}")
    print(f"  answer ms               p50 {percentile(ms, .5):.1f}  p99 {percentile(ms, .99):.1f}  max {max(ms):.1f}")
    for kind, own in by_kind.items():
        print(f"    {kind:<10}            p50 {percentile(own, .5):.1f}  p99 {percentile(own, .99):.1f}")
    print(f"  app CPU                 {app_cpu:.2f} s;  peak RSS app {app_rss or 0:.1f} MiB, this process "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
    return 0 if lost == 0 and new_customers <= profiles else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="deliveries to post (default 2000)")
    parser.add_argument("--concurrency", type=int, help="deliveries in flight (default 16; --flash: 32)")
    parser.add_argument("--log-level", default="INFO", help="the app's LOG_LEVEL (default INFO, as in production)")
    parser.add_argument("--profile", action="store_true", help="run the app under cProfile and print the top")
    parser.add_argument("--top", type=int, default=25, help="functions printed with --profile (default 25)")
    parser.add_argument("--flash", action="store_true", help="flash sale against a rate-limited Klaviyo stand-in")
    parser.add_argument("--orders", type=int, default=2000, help="--flash: orders offered (default 2000)")
    parser.add_argument("--rate", type=float, default=100, help="--flash: orders offered per second (default 100)")
    parser.add_argument("--timeout", type=float, default=300, help="--flash: give up after this many seconds")
    parser.add_argument("--max-wait-ms", type=int, help="the app's event.batch.maxWaitMs (default: its default)")
    parser.add_argument("--app-root", type=Path, help="run the event app of another checkout (python -m event "
                        "there), e.g. a worktree of the previous commit, against the same stand-ins and load")
    parser.add_argument("--floor", action="store_true", help="the rig without the connector: an app that answers "
                        "204 at once, and one httpx request's CPU")
    parser.add_argument("--serve-app", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_app:
        serve_app(args.serve_app, args.profile_out)
        return 0
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    if args.flash:
        args.concurrency = args.concurrency or 32
        return flash(args)
    args.concurrency = args.concurrency or 16
    if args.floor:
        return floor(args)

    ct = FakeCommercetools(project_key=PROJECT, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    deliveries, warm_up = workload(ct, args.n)
    ct_server = CommercetoolsServer(ct)
    klaviyo = FakeKlaviyo(validate=False)
    klaviyo_server = KlaviyoServer(klaviyo)
    profile_out = tempfile.mktemp(suffix=".prof") if args.profile else None
    process, url = start_app(ct_server.url, klaviyo_server.url, args.log_level, profile_out, args.max_wait_ms,
                             args.app_root)
    try:
        for kind, status, _ in post_all(url, [("warm-up", body) for body in warm_up], 1):
            assert status == 204, (kind, status)
        klaviyo_before, ct_before = len(klaviyo.requests), len(ct.requests)
        cpu_before, own_before = proc_cpu_seconds(process.pid), time.process_time()
        began = time.perf_counter()
        results = post_all(url, deliveries, args.concurrency)
        elapsed = time.perf_counter() - began
        app_cpu, own_cpu = proc_cpu_seconds(process.pid) - cpu_before, time.process_time() - own_before
        app_rss = proc_peak_rss_mib(process.pid)
        flushes = batch_flushes(url)
        klaviyo_requests, ct_requests = len(klaviyo.requests) - klaviyo_before, len(ct.requests) - ct_before
    finally:
        process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown (writes the profile)
        process.wait(60)
        ct_server.shutdown()
        klaviyo_server.shutdown()

    n = len(results)
    latencies = [seconds * 1000 for _, _, seconds in results]
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"event app throughput: {n} deliveries, concurrency {args.concurrency}, LOG_LEVEL={args.log_level}, "
          f"{os.cpu_count()} CPUs{', under cProfile' if args.profile else ''}"
          f"{', app from ' + str(args.app_root) if args.app_root else ''}")
    print(f"  deliveries/second       {n / elapsed:8.1f}   ({elapsed:.2f} s)")
    print(f"  latency ms              p50 {percentile(latencies, .5):.1f}  p90 {percentile(latencies, .9):.1f}  "
          f"p99 {percentile(latencies, .99):.1f}  max {max(latencies):.1f}  mean {statistics.fmean(latencies):.1f}")
    for kind in KINDS:
        own = [s * 1000 for k, _, s in results if k == kind]
        print(f"    {kind:<10}            p50 {percentile(own, .5):.1f}  p99 {percentile(own, .99):.1f}")
    print(f"  answers                 {dict(Counter(status for _, status, _ in results))}")
    print(f"  Klaviyo requests        {klaviyo_requests / n:8.2f} per delivery ({klaviyo_requests})")
    print(f"  batch flushes           {flushes}")
    print(f"  commercetools requests  {ct_requests / n:8.2f} per delivery ({ct_requests})")
    print(f"  app CPU                 {app_cpu / n * 1000:8.2f} ms per delivery ({app_cpu:.2f} s, "
          f"{app_cpu / elapsed:.0%} of one core)")
    print(f"  stand-ins + load CPU    {own_cpu / n * 1000:8.2f} ms per delivery ({own_cpu / elapsed:.0%} of one core)")
    print(f"  peak RSS                app {app_rss or child_rss:.1f} MiB (subprocess), "
          f"this process {self_rss:.1f} MiB (stand-ins, load generator)")
    if profile_out:
        print(f"\nprofile of the app (cumulative, top {args.top}):")
        stats = pstats.Stats(profile_out, stream=sys.stdout).strip_dirs()
        stats.sort_stats("cumulative").print_stats(args.top)
        print(f"profile of the app (own time, top {args.top}):")
        stats.sort_stats("tottime").print_stats(args.top)
        os.unlink(profile_out)
    return 0 if set(status for _, status, _ in results) == {204} else 1


if __name__ == "__main__":
    sys.exit(main())
