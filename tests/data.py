"""Loading JSON fixtures (shaped like real commercetools API responses)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"


@cache
def _read(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixture(name: str) -> Any:
    """A fresh copy of `tests/fixtures/<name>.json`."""
    return copy.deepcopy(_read(name))
