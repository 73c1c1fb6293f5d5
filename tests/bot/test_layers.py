"""The layering of bot/ holds: import-linter's contracts pass, catch an upward import, and match the packages' words."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def layers() -> list[list[str]]:
    """The layers contract of pyproject.toml, top first; each layer a list of sibling modules."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["id"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


def lint_imports(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=folder, capture_output=True, text=True, timeout=120,
                          check=False)


def test_the_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "upward", "reported"), [
    ("bot/delivery/mail_outbox.py", "bot.ocmw.links", "bot.ocmw.links"),        # delivery reaching up to the OCMW
    ("bot/storage/database.py", "bot.core.protocols", "bot.core.protocols"),    # storage reaching into the domain
    ("bot/referral/dialogue.py", "microsoft_agents.activity", "microsoft_agents"),  # an SDK type outside bot.teams
])
def test_an_upward_import_breaks_a_contract(tmp_path: Path, module: str, upward: str, reported: str) -> None:
    shutil.copytree(ROOT / "bot", tmp_path / "bot", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with (tmp_path / module).open("a", encoding="utf-8") as file:
        file.write(f"\nimport {upward}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert f"{module[:-3].replace('/', '.')} -> {reported}" in result.stdout


def test_each_package_says_what_it_may_import() -> None:
    """`May import:` in each package's `__init__` names exactly what is below it in the contract (bar the base)."""
    order = layers()
    base = set(order[-1])  # bot.clock and bot.logging_setup: small utilities every layer may use
    checked = 0
    for index, layer in enumerate(order):
        below = {name.removeprefix("bot.") for lower in order[index + 1:] for name in lower if name not in base}
        for package in layer:
            init = ROOT / Path(*package.split(".")) / "__init__.py"
            if not init.exists():
                continue  # a module, not a package
            docstring = init.read_text(encoding="utf-8")
            assert "Owns:" in docstring, f"{package}: say what it owns"
            said = re.search(r"May import: ([^.]*)\.", docstring)
            assert said, f"{package}: say what it may import"
            checked += 1
            if package == "bot.cli":
                assert said.group(1).startswith("anything"), said.group(1)
                continue
            words = said.group(1)
            named = set() if words.startswith("nothing") else {" ".join(word.split()) for word in words.split(",")}
            assert named == below, f"{package}: says {sorted(named)}, the contract allows {sorted(below)}"
    assert checked >= 10


def test_every_module_is_in_a_layer() -> None:
    """A new module or package at bot's top level must be placed in the contract, or it escapes the rules."""
    placed = {name for layer in layers() for name in layer}
    top = {f"bot.{path.stem}" for path in (ROOT / "bot").glob("*.py") if path.stem not in {"__init__", "__main__"}}
    top |= {f"bot.{path.name}" for path in (ROOT / "bot").iterdir() if (path / "__init__.py").exists()}
    assert top - placed == set()


def test_the_tests_mirror_the_packages() -> None:
    """tests/bot/<package>/ exists for each package of bot, and for nothing else."""
    packages = {path.name for path in (ROOT / "bot").iterdir() if (path / "__init__.py").exists()} - {"migrations"}
    test_folders = {path.name for path in (ROOT / "tests" / "bot").iterdir()
                    if path.is_dir() and path.name != "__pycache__"}
    assert test_folders == packages
