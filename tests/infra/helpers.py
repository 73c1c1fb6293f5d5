"""Helpers for the infra tests: where the npm packages live, and skip-or-fail when a tool is missing."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "node_modules"
TEAMS_SCHEMAS = NODE_MODULES / "@microsoft" / "app-manifest" / "build" / "json-schemas" / "teams"
#: checkov lives in its own venv (requirements-checkov.txt, `make checkov`); `CHECKOV` overrides the path.
CHECKOV = Path(os.environ.get("CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))


def require(missing: Iterable[str], install: str) -> None:
    """Skip the test on a developer's machine, fail it on CI (`CI` set): a missing tool must not pass CI."""
    missing = list(missing)
    if not missing:
        return
    message = f"missing {', '.join(missing)}; install with: {install}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def teams_schema(version: str, name: str = "MicrosoftTeams.schema.json") -> Path:
    """A Teams manifest JSON schema file from npm `@microsoft/app-manifest`."""
    path = TEAMS_SCHEMAS / f"v{version}" / name
    require([str(path.relative_to(ROOT))] if not path.is_file() else [], "npm ci --ignore-scripts")
    return path
