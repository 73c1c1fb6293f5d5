"""The Dockerfile, read as text: Docker cannot build on this machine, so its properties are checked here."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.infra.helpers import CHECKOV, ROOT, require

DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3?-dev|libc6?-dev|curl|wget)\b")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for instruction, argument in self.instructions if instruction == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, continuations joined."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "a continued line at the end"
    result = []
    for line in logical:
        keyword, _, argument = line.partition(" ")
        result.append((keyword.upper(), argument.strip()))
    return result


def stages() -> list[Stage]:
    found: list[Stage] = []
    for keyword, argument in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "FROM":
            parts = argument.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            found.append(Stage(base=parts[0], name=name))
        else:
            assert found, f"{keyword} before FROM"
            found[-1].instructions.append((keyword, argument))
    return found


def final() -> Stage:
    return stages()[-1]


def test_it_is_multi_stage_on_python_311_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    assert all(stage.base == "python:3.11-slim" for stage in all_stages)
    build_names = {stage.name for stage in all_stages[:-1]}
    copied_from = {match.group(1) for c in final().all("COPY") if (match := re.search(r"--from=(\S+)", c))}
    assert copied_from and copied_from <= build_names


def test_the_final_image_runs_as_a_non_root_user() -> None:
    users = final().all("USER")
    assert users, "no USER in the final stage"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    keywords = [keyword for keyword, _ in final().instructions]
    assert keywords.index("USER") < keywords.index("CMD")
    assert keywords[keywords.index("USER") :].count("RUN") == 0, "nothing runs as root after USER"


def test_the_final_image_has_no_build_tools() -> None:
    for command in final().all("RUN"):
        assert not BUILD_TOOLS.search(command), command
        assert "apt-get install" not in command and "pip install" not in command, command


def test_the_health_check_asks_healthz_with_python_urllib() -> None:
    checks = final().all("HEALTHCHECK")
    assert len(checks) == 1
    check = checks[0]
    assert "CMD python -c" in check
    assert "urllib.request" in check and "/healthz" in check
    assert "curl" not in check and "wget" not in check
    assert re.search(r"--timeout=\d+s", check)
    code = shlex.split(check.split("CMD", 1)[1])[2]
    compile(code, "HEALTHCHECK", "exec")


def test_it_serves_the_bot_on_all_interfaces() -> None:
    assert final().all("CMD") == ['["python", "-m", "bot", "serve"]']
    environment = " ".join(final().all("ENV"))
    assert "HOST=0.0.0.0" in environment
    assert "PORT=3978" in environment
    assert final().all("EXPOSE") == ["3978"]


def test_the_image_runs_in_production_and_the_comment_says_how_to_run_it_locally() -> None:
    environment = " ".join(final().all("ENV")).split()
    assert "BOT_ENV=production" in environment
    comments = [line.lstrip("# ").strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
                if line.startswith("#")]
    local = [line for line in comments if line.startswith("docker run") and "-e BOT_ENV=development" in line]
    assert local, "the header comment shows `docker run -e BOT_ENV=development` for local use"


def test_the_image_gets_the_code_and_the_protocols_but_nothing_else() -> None:
    copies = [c for c in final().all("COPY") if "--from=" not in c]
    sources = {c.split()[0] for c in copies}
    assert sources == {"bot/", "cards/", "infra/protocols/"}


def test_the_image_compiles_the_bots_code_once_so_that_no_start_compiles_it(tmp_path: Path) -> None:
    """The image sets PYTHONDONTWRITEBYTECODE and /app belongs to root: a start never writes bytecode.

    Without a compile in the image, every start (a restart, a scale-out, a slot swap) compiled the
    bot's ~100 modules from source: 0.2-0.3 s of each start here. The compile step of the final stage
    is run as written on a copy of the code, which is then imported as the image starts it.
    """
    steps = final().instructions  # the Dockerfile read and parsed once
    keywords = [keyword for keyword, _ in steps]
    compiles = [index for index, (keyword, argument) in enumerate(steps)
                if keyword == "RUN" and "compileall" in argument]
    assert compiles, "the final stage compiles bot/ and cards/"
    copied = [index for index, (keyword, argument) in enumerate(steps)
              if keyword == "COPY" and argument.split()[0] in ("bot/", "cards/")]
    assert max(copied) < compiles[0] < keywords.index("USER"), "after the code is copied, as root"
    for package in ("bot", "cards"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    command = shlex.split(steps[compiles[0]][1])
    assert command[0] == "python", command
    subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, check=True, timeout=120)

    started = subprocess.run(
        [sys.executable, "-v", "-c", "import bot.cli.main"], cwd=tmp_path, capture_output=True, text=True,
        check=True, timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(tmp_path)},
    )
    from_source = [line for line in started.stderr.splitlines()
                   if line.startswith(f"# code object from {tmp_path}") and line.endswith(".py")]
    from_bytecode = [line for line in started.stderr.splitlines()
                     if line.startswith(f"# code object from '{tmp_path}") and ".pyc" in line]
    assert from_source == []
    assert len(from_bytecode) > 50, "the bot's own modules were imported from this copy"


def ignored(path: str) -> bool:
    """Docker's rule: the last matching line of .dockerignore wins."""
    result = False
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.rstrip("/")
        if pattern == "**" or fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            result = not negate
    return result


def test_the_build_context_leaves_out_local_state_and_secrets() -> None:
    for path in (".venv/bin/python", ".data/bot.sqlite3", ".data/zip-password.txt", ".git/config", "tests/x.py",
                 "node_modules/x", "dist/app.zip", "test-artifacts/x.png", ".env", "docs/x.md"):
        assert ignored(path), path
    for path in ("requirements.txt", "bot/app.py", "cards/texts/nl.json", "infra/protocols/sint-gillis-waas.toml"):
        assert not ignored(path), path


def test_checkov_finds_nothing_in_the_dockerfile() -> None:
    require([] if CHECKOV.exists() else [str(CHECKOV)], "make checkov")
    result = subprocess.run(
        [str(CHECKOV), "-f", str(DOCKERFILE), "--framework", "dockerfile", "--skip-download", "--compact", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Failed checks: 0" in result.stdout
