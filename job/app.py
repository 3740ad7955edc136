"""The job application's HTTP surface (starlette).

- `POST /`: Connect's scheduler. Works on pending imports within the time budget and answers a JSON summary. It
  relies on the platform's authentication (Connect, or Cloud Run IAM); in the single-port mode its `POST /job`
  needs the bearer token (see `connector.app`).
- `POST /sync/{type}`, `POST /sync/{type}/stop`, `GET /sync/status`: the reference's management routes, behind
  `Authorization: Bearer $BULK_API_TOKEN` (403 while no token is configured). A request is recorded, then a
  run starts in the background, so a self-hosted deployment needs no scheduler to begin.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from job.requests import BadRequest
from job.service import JobService
from job.state import IMPORT_TYPES, Busy
from shared.config import Settings
from shared.context import build_context
from shared.errors import ApiError, ConnectorError
from shared.processors import Context
from shared.web import closing, health_route, metrics_route

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def create_app(settings: Settings, context: Context | None = None) -> Starlette:
    context = context or build_context(settings)
    return Starlette(routes=[*job_routes(JobService(context)), health_route("job", context), metrics_route()],
                     lifespan=closing(context))


def job_routes(service: JobService, scheduler_path: str = "/", *, scheduler_token: bool = False) -> list[Route]:
    """The management routes, and the scheduler's run at `POST {scheduler_path}`.

    The dedicated job application's `POST /` relies on the platform's authentication (Connect, or Cloud Run IAM);
    with `scheduler_token` (the single-port mode, where `POST /job` shares a public service with deliveries) it
    needs the bearer token like the management routes.
    """
    token = service.context.settings.bulk_api_token
    runs = threading.Lock()
    wanted = threading.Event()  # a request came in that no run has looked for yet

    def run_in_background() -> None:
        def work() -> None:
            # One run at a time in this process. A request arriving during a run may be for a type the run has
            # passed already, so the run goes round again; one arriving as the run ends is seen by the loop.
            while wanted.is_set():
                if not runs.acquire(blocking=False):
                    return  # the thread holding the lock looks at `wanted` again when it lets go
                try:
                    while wanted.is_set():
                        wanted.clear()
                        service.run()
                except ConnectorError as exc:
                    log.warning("background import run failed", extra={"error": str(exc)})
                except Exception as exc:  # e.g. the clients closed as the app shuts down: the next run resumes
                    log.warning("background import run stopped", extra={"error": type(exc).__name__})
                finally:
                    runs.release()

        wanted.set()
        threading.Thread(target=work, name="import-run", daemon=True).start()

    async def scheduled_run(_request: Request) -> Response:
        try:
            summary = await run_in_threadpool(service.scheduled_run)
        except ConnectorError as exc:
            return _unavailable(exc)
        return JSONResponse(summary)

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if not token:
                return JSONResponse({"message": "the bulk import API is disabled: set BULK_API_TOKEN (a secured "
                                                "setting) and send it as 'Authorization: Bearer <token>'"},
                                    status_code=403)
            given = request.headers.get("authorization", "")
            if not given.startswith("Bearer ") or not hmac.compare_digest(given[7:].encode(), token.encode()):
                return JSONResponse({"message": "missing or wrong bearer token"}, status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            return await handler(request)

        return check

    async def sync(request: Request) -> Response:
        import_type = request.path_params["type"]
        if import_type not in (*IMPORT_TYPES, "all"):
            return JSONResponse({"message": f"unknown import type '{import_type}'"}, status_code=404)
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            records = await run_in_threadpool(service.request, import_type, body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"message": "the body is not JSON"}, status_code=400)
        except BadRequest as exc:
            return JSONResponse({"message": str(exc)}, status_code=400)
        except Busy as exc:
            return JSONResponse({"message": str(exc)}, status_code=409)
        except ConnectorError as exc:
            return _unavailable(exc)
        run_in_background()
        return JSONResponse({"message": f"{import_type} import accepted",
                             "imports": [r.summary() for r in records]}, status_code=202)

    async def stop(request: Request) -> Response:
        import_type = request.path_params["type"]
        if import_type not in (*IMPORT_TYPES, "all"):
            return JSONResponse({"message": f"unknown import type '{import_type}'"}, status_code=404)
        try:
            stopped = await run_in_threadpool(service.stop, import_type)
        except Busy as exc:
            return JSONResponse({"message": str(exc)}, status_code=409)
        except ConnectorError as exc:
            return _unavailable(exc)
        if not stopped:
            return JSONResponse({"message": f"no {import_type} import is currently running"}, status_code=400)
        return JSONResponse({"message": f"{import_type} import stopped", "imports": [r.summary() for r in stopped]})

    async def status(_request: Request) -> Response:
        try:
            return JSONResponse({"imports": await run_in_threadpool(service.status)})
        except ConnectorError as exc:
            return _unavailable(exc)

    return [
        Route("/sync/status", guarded(status), methods=["GET"]),
        Route("/sync/{type}/stop", guarded(stop), methods=["POST"]),
        Route("/sync/{type}", guarded(sync), methods=["POST"]),
        Route(scheduler_path, guarded(scheduled_run) if scheduler_token else scheduled_run, methods=["POST"]),
    ]


def _unavailable(exc: ConnectorError) -> Response:
    """The import state could not be read or written (commercetools failed): 503 to try again, else 500."""
    text = exc.describe() if isinstance(exc, ApiError) else exc.reason
    log.warning("import state unavailable", extra={"error": text})
    return JSONResponse({"message": f"the import state is unavailable: {text}"},
                        status_code=503 if exc.transient else 500)
