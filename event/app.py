"""The event application's HTTP surface (starlette)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from event.handler import handle_delivery
from shared import __version__
from shared.config import Settings
from shared.context import build_context, close_context
from shared.processors import Context


def create_app(settings: Settings, context: Context | None = None) -> Starlette:
    context = context or build_context(settings)

    async def deliver(request: Request) -> Response:
        body = await request.body()
        answer = await run_in_threadpool(handle_delivery, body, context)
        if answer.status == 204:
            return Response(status_code=204)
        return JSONResponse(answer.body(), status_code=answer.status)

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "app": "event", "version": __version__})

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        close_context(context)

    return Starlette(routes=[Route("/", deliver, methods=["POST"]), Route("/health", health, methods=["GET"])],
                     lifespan=lifespan)
