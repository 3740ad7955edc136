"""The event application's HTTP surface (starlette): `POST /` takes deliveries, `GET /health` answers 200."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from event.handler import handle_delivery
from shared.batching import Batcher
from shared.config import Settings
from shared.context import build_context
from shared.processors import Context
from shared.product_cache import ProductCache
from shared.web import closing, health_route


def event_routes(context: Context) -> list[Route]:
    async def deliver(request: Request) -> Response:
        body = await request.body()
        if context.batcher is None:
            answer = await run_in_threadpool(handle_delivery, body, context)
        else:
            with context.batcher.delivery():
                answer = await run_in_threadpool(handle_delivery, body, context)
        # The outcome travels in headers too, so that 204 answers say what happened (ignored, and why).
        headers = {"X-Outcome": answer.outcome,
                   "X-Outcome-Reason": answer.reason.encode("ascii", "replace").decode()[:200]}
        if answer.status == 204:
            return Response(status_code=204, headers=headers)
        return JSONResponse(answer.body(), status_code=answer.status, headers=headers)

    return [Route("/", deliver, methods=["POST"])]


def create_app(settings: Settings, context: Context | None = None) -> Starlette:
    """The event app; its context gains the product cache and the micro-batcher, which is flushed and stopped
    on shutdown before the clients close."""
    context = context or build_context(settings)
    if context.product_cache is None:
        context = dataclasses.replace(context, product_cache=ProductCache(settings.product_cache_seconds,
                                                                          settings.product_cache_size))
    if context.batcher is None:
        context = dataclasses.replace(context, batcher=Batcher(context.klaviyo, context.commercetools,
                                                               max_wait=settings.event_batch_max_wait))
    close_clients = closing(context)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with close_clients(app):
            try:
                yield
            finally:
                if context.batcher is not None:
                    await run_in_threadpool(context.batcher.close)

    return Starlette(routes=[*event_routes(context), health_route("event")], lifespan=lifespan)
