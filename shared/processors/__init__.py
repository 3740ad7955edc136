"""Realtime processors: each decides whether a notification is its own, then fetches, maps and sends.

A processor's `run` returns None when the work is done, or a reason when it deliberately did nothing (the
resource is gone, a mandatory field is missing). Failures are raised: `shared.errors` says which are transient.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.commercetools import Commercetools
from shared.config import Settings
from shared.erasures import Erasures
from shared.klaviyo import Klaviyo
from shared.messages import Notification
from shared.versions import VersionGuard


@dataclass(frozen=True)
class Context:
    settings: Settings
    commercetools: Commercetools
    klaviyo: Klaviyo
    versions: VersionGuard = field(default_factory=VersionGuard)  # the last version applied per resource
    erasures: Erasures = field(default_factory=Erasures)  # the erasure key, erased customers seen lately
    # The event app's micro-batcher (`shared.batching.Batcher`) and product cache (`shared.product_cache`);
    # None elsewhere (the job app, tests of single processors): writes go one request at a time.
    batcher: Any = None
    product_cache: Any = None


@dataclass(frozen=True)
class Processor:
    name: str  # the name `disabledEvents` uses
    accepts: Callable[[Notification, Settings], bool]
    run: Callable[[Notification, Context], str | None]


def message(*types: str, resource: str) -> Callable[[Notification, Settings], bool]:
    """Accepts messages of the given types about the given resource type."""
    return lambda n, _settings: n.notification_type == "Message" and n.resource_type == resource \
        and n.type in types


def change(notification_type: str, resource: str) -> Callable[[Notification, Settings], bool]:
    """Accepts a change notification (ResourceUpdated / ResourceDeleted...) about the given resource type."""
    return lambda n, _settings: n.notification_type == notification_type and n.resource_type == resource
