"""The event application's HTTP surface (starlette): `POST /` takes deliveries, `GET /health` answers 200."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from event.handler import handle_delivery
from shared.config import Settings
from shared.context import build_context
from shared.processors import Context
from shared.web import closing, health_route, metrics_route


def event_routes(context: Context) -> list[Route]:
    async def deliver(request: Request) -> Response:
        body = await request.body()
        answer = await run_in_threadpool(handle_delivery, body, context)
        # The outcome travels in headers too, so that 204 answers say what happened (ignored, and why).
        headers = {"X-Outcome": answer.outcome,
                   "X-Outcome-Reason": answer.reason.encode("ascii", "replace").decode()[:200]}
        if answer.status == 204:
            return Response(status_code=204, headers=headers)
        return JSONResponse(answer.body(), status_code=answer.status, headers=headers)

    return [Route("/", deliver, methods=["POST"])]


def create_app(settings: Settings, context: Context | None = None) -> Starlette:
    context = context or build_context(settings)
    return Starlette(routes=[*event_routes(context), health_route("event"), metrics_route()], lifespan=closing(context))
