"""The dependency locks agree with pyproject.toml (regenerate them with `bash .ci/lock` after changing a pin)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL, RUNTIME = ROOT / "requirements.lock", ROOT / "requirements-runtime.lock"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(requirements: list[str]) -> dict[str, str]:
    found = {}
    for requirement in requirements:
        match = _PIN.match(requirement)
        assert match, f"{requirement!r} is not pinned with =="
        found[canonical(match.group(1))] = match.group(2)
    return found


def locked(path: Path) -> dict[str, str]:
    """name → version of every package in a pip-compile lock; each must carry hashes."""
    text = path.read_text("utf-8")
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 1)[1] if text.startswith("#") else text)
    found = {}
    for entry in entries:
        match = _PIN.match(entry)
        if match:
            assert "--hash=sha256:" in entry, f"{path.name}: {match.group(1)} has no hash"
            found[canonical(match.group(1))] = match.group(2)
    return found


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]


def test_the_locks_hold_exactly_the_pins_of_pyproject() -> None:
    runtime, test = pins(project()["dependencies"]), pins(project()["optional-dependencies"]["test"])
    full, runtime_lock = locked(FULL), locked(RUNTIME)
    assert {name: full.get(name) for name in runtime | test} == runtime | test, "run: bash .ci/lock"
    assert {name: runtime_lock.get(name) for name in runtime} == runtime, "run: bash .ci/lock"
    assert not set(test) & set(runtime_lock), "test dependencies in the runtime lock: run bash .ci/lock"


def test_the_runtime_lock_is_the_runtime_part_of_the_full_lock() -> None:
    """The image runs the very versions the tests ran with."""
    full, runtime_lock = locked(FULL), locked(RUNTIME)
    assert len(runtime_lock) >= 10 and len(full) > len(runtime_lock)
    assert {name: full.get(name) for name in runtime_lock} == runtime_lock


def test_installs_go_through_the_locks() -> None:
    ci, dockerfile = (ROOT / ".ci" / "run").read_text(), (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in ci and "--no-deps -e ." in ci
    assert "-r requirements-runtime.lock" in dockerfile and "--no-deps ." in dockerfile
    assert "bash .ci/lock" in FULL.read_text() and "bash .ci/lock" in RUNTIME.read_text()
