"""The event application's HTTP surface (starlette): `POST /` takes deliveries, `GET /health` answers 200.

Bodies are read as a stream and never beyond `MAX_BODY_BYTES` (16 MiB: a Pub/Sub message ends at 10 MB, about
14 MB once base64-encoded in the push body): a larger body is acknowledged and recorded by its size and message
id, without its content (`event.handler.handle_oversized`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from event.handler import Answer, handle_delivery, handle_oversized
from shared.batching import Batcher
from shared.config import Settings
from shared.context import build_context
from shared.processors import Context
from shared.product_cache import ProductCache
from shared.web import closing, health_route, metrics_route

MAX_BODY_BYTES = 16 * 1024 * 1024
_HEAD_BYTES = 64 * 1024  # what is kept of an oversized body, to find its message id
_MESSAGE_ID = re.compile(rb'"(?:messageId|message_id|MessageId)"\s*:\s*"([-_~.a-zA-Z0-9]{1,256})"')


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> tuple[bytes | None, int, bytes]:
    """(the body, or None when it is larger than `limit`; its size, or the size read before stopping; the first
    64 KiB). A declared Content-Length over the limit is believed without reading; otherwise the stream is read
    until it ends or passes the limit, so that no more than `limit` octets are ever held."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        head = b""
        async for chunk in request.stream():  # the first chunk only: enough to find an early message id
            head = chunk[:_HEAD_BYTES]
            break
        return None, int(declared), head
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None, len(body), bytes(body[:_HEAD_BYTES])
    return bytes(body), len(body), bytes(body[:_HEAD_BYTES])


def _response(answer: Answer) -> Response:
    # The outcome travels in headers too, so that 204 answers say what happened (ignored, and why).
    headers = {"X-Outcome": answer.outcome,
               "X-Outcome-Reason": answer.reason.encode("ascii", "replace").decode()[:200]}
    if answer.status == 204:
        return Response(status_code=204, headers=headers)
    return JSONResponse(answer.body(), status_code=answer.status, headers=headers)


def _handle_counted(body: bytes, context: Context) -> Answer:
    """`handle_delivery` in a worker thread, counted in flight by the batcher from there: a delivery still
    waiting for a thread cannot join a batch, so it must not hold back an "all waiting" flush."""
    if context.batcher is None:
        return handle_delivery(body, context)
    with context.batcher.delivery():
        return handle_delivery(body, context)


def event_routes(context: Context) -> list[Route]:
    async def deliver(request: Request) -> Response:
        try:
            body, size, head = await read_body(request)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            found = _MESSAGE_ID.search(head)
            message_id = found.group(1).decode() if found else None
            answer = await run_in_threadpool(handle_oversized, size, message_id, head, MAX_BODY_BYTES, context)
        else:
            answer = await run_in_threadpool(_handle_counted, body, context)
        return _response(answer)

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

    return Starlette(routes=[*event_routes(context), health_route("event", context), metrics_route()],
                     lifespan=lifespan)
