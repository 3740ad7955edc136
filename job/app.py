"""The job application's HTTP surface (starlette).

- `POST /`: Connect's scheduler. Works on pending imports within the time budget and answers a JSON summary.
- `POST /sync/{type}`, `POST /sync/{type}/stop`, `GET /sync/status`: the reference's management routes, behind
  `Authorization: Bearer $BULK_API_TOKEN` (403 while no token is configured). A request is recorded, then a
  run starts in the background, so a self-hosted deployment needs no scheduler to begin.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from job.requests import BadRequest
from job.service import JobService
from job.state import IMPORT_TYPES, Busy
from shared import __version__
from shared.config import Settings
from shared.context import build_context, close_context
from shared.errors import ConnectorError
from shared.processors import Context

log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def create_app(settings: Settings, context: Context | None = None) -> Starlette:
    context = context or build_context(settings)
    service = JobService(context)
    return Starlette(routes=job_routes(service), lifespan=_closing(context))


def _closing(context: Context) -> Callable[[Starlette], AsyncIterator[None]]:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        close_context(context)

    return lifespan  # type: ignore[return-value]


def job_routes(service: JobService, prefix: str = "") -> list[Route]:
    token = service.context.settings.bulk_api_token
    runs = threading.Lock()

    def run_in_background() -> None:
        def work() -> None:
            if not runs.acquire(blocking=False):
                return  # a run is on its way in this process; it picks the new request up
            try:
                service.run()
            except ConnectorError as exc:
                log.warning("background import run failed", extra={"error": str(exc)})
            finally:
                runs.release()

        threading.Thread(target=work, name="import-run", daemon=True).start()

    async def scheduled_run(_request: Request) -> Response:
        try:
            summaries = await run_in_threadpool(service.run)
        except ConnectorError as exc:
            status = 503 if exc.transient else 500
            return JSONResponse({"error": str(exc)}, status_code=status)
        return JSONResponse({"imports": summaries})

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
        if not stopped:
            return JSONResponse({"message": f"no {import_type} import is currently running"}, status_code=400)
        return JSONResponse({"message": f"{import_type} import stopped", "imports": [r.summary() for r in stopped]})

    async def status(_request: Request) -> Response:
        return JSONResponse({"imports": await run_in_threadpool(service.status)})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "app": "job", "version": __version__})

    routes = [
        Route(f"{prefix}/sync/status", guarded(status), methods=["GET"]),
        Route(f"{prefix}/sync/{{type}}/stop", guarded(stop), methods=["POST"]),
        Route(f"{prefix}/sync/{{type}}", guarded(sync), methods=["POST"]),
    ]
    if not prefix:
        routes += [Route("/", scheduled_run, methods=["POST"]), Route("/health", health, methods=["GET"])]
    return routes
