"""What every starlette app of ours shares: closing the clients on shutdown, the health and metrics routes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared import __version__, metrics
from shared.context import close_context
from shared.processors import Context


def closing(context: Context) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A starlette lifespan that closes the context's clients on shutdown."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        close_context(context)

    return lifespan


def health_route(app: str, context: Context | None = None) -> Route:
    """`GET /health`: always 200 while the process serves (a platform must not restart it for Klaviyo's sake);
    `"klaviyo": "key refused"` while Klaviyo refuses the API key, until a request succeeds again."""

    async def health(_request: Request) -> Response:
        body = {"status": "ok", "app": app, "version": __version__}
        if context is not None:
            body["klaviyo"] = "key refused" if context.klaviyo.key.refused else "ok"
        return JSONResponse(body)

    return Route("/health", health, methods=["GET"])


def metrics_route() -> Route:
    """`GET /metrics`: this process's metrics in the Prometheus text format (see `shared.metrics`)."""

    async def scrape(_request: Request) -> Response:
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE)

    return Route("/metrics", scrape, methods=["GET"])
