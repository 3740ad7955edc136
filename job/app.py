"""The job application's HTTP surface. Bulk imports arrive in a later issue; for now it answers health checks
and the scheduler's POST with an empty summary, so a deployment of both applications already works."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from shared import __version__
from shared.config import Settings


def create_app(settings: Settings) -> Starlette:
    async def run(_request: Request) -> Response:
        return JSONResponse({"imports": [], "message": "no pending imports"})

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok", "app": "job", "version": __version__})

    return Starlette(routes=[Route("/", run, methods=["POST"]), Route("/health", health, methods=["GET"])])
