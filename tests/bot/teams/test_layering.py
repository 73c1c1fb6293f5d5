"""The Agents SDK stays inside `bot/teams/`, and botbuilder (support ended 31 Dec 2025) is gone."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SDK_PREFIXES = ("microsoft_agents", "botbuilder", "botframework", "msrest")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_outside_the_teams_layer_imports_the_sdk() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in _imports(path) if name.startswith(SDK_PREFIXES))
        for folder in ("bot", "cards")
        for path in (ROOT / folder).rglob("*.py")
        if "teams" not in path.relative_to(ROOT).parts
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_teams_layer_uses_the_agents_sdk_and_not_botbuilder() -> None:
    used = set().union(*(_imports(path) for path in (ROOT / "bot" / "teams").glob("*.py")))
    assert any(name.startswith("microsoft_agents.hosting") for name in used)
    assert not [name for name in used if name.startswith(("botbuilder", "botframework", "msrest"))]


def test_botbuilder_is_neither_required_nor_installed_and_msrest_not_required() -> None:
    """msrest may be installed as a declared dependency of the Azure Monitor exporter, which never imports it;
    no module of the bot does either (the test above)."""
    requirements = (ROOT / "requirements.txt").read_text().lower()
    assert "botbuilder" not in requirements and "msrest" not in requirements
    assert "microsoft-agents-hosting-core==1.9" in requirements
    for module in ("botbuilder", "botframework"):
        assert importlib.util.find_spec(module) is None, module
