"""Choosing the application by `APP_TYPE`: EVENT, BULK_IMPORT, or (unset) both on one port.

Both on one port is the reference's single-deployment mode: deliveries at `POST /`, the scheduler's run at
`POST /job` (behind the bearer token `BULK_API_TOKEN`, as the service also takes public deliveries), the bulk
management routes at `/sync/...`. Imports then share the process (CPU, memory, threads)
with realtime deliveries; README ("Self-hosting") says when to split them.
"""

from __future__ import annotations

from starlette.applications import Starlette

from event.app import create_app as create_event_app
from event.app import event_routes
from job.app import create_app as create_job_app
from job.app import job_routes
from job.service import JobService
from shared.config import Settings
from shared.context import build_context
from shared.web import closing, health_route, metrics_route


def create_app(settings: Settings) -> Starlette:
    if settings.app_type == "EVENT":
        return create_event_app(settings)
    if settings.app_type == "BULK_IMPORT":
        return create_job_app(settings)
    context = build_context(settings)
    routes = [*event_routes(context), *job_routes(JobService(context), scheduler_path="/job", scheduler_token=True),
              health_route("event+job", context), metrics_route()]
    return Starlette(routes=routes, lifespan=closing(context))
