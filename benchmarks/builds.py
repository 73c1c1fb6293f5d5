"""Builds to compare: a name, a source tree to run in, and a Python with that tree's requirements.

`--build NAME=REF`, where REF is
- `WORKTREE`: the checkout the harness runs from, with the Python running the harness (its `.venv`:
  the code being changed now);
- a git commit-ish: checked out with `git worktree add --detach` into a temporary folder (removed
  afterwards) with a venv cached in `.bench-cache/venv-<hash of requirements.txt and Python>`, so
  only a changed requirements file costs a new install; a commit whose requirements.txt is the
  working tree's runs with the harness's own Python (nothing to install);
- `echo@OTHER`: the stock botbuilder echo bot (`benchmarks/baseline_echo_bot.py`) run with the
  Python of build OTHER, which must have botbuilder: the cost floor of the SDK itself. OTHER may
  also be a commit that is not a build (e.g. `echo@b8044bc`, the last botbuilder version): then only
  its venv is made, and nothing of it runs but the echo bot.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess  # runs git, venv and pip with fixed arguments  # nosec B404
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

WORKTREE = "WORKTREE"
ECHO_PREFIX = "echo@"
ECHO_BOT = Path(__file__).with_name("baseline_echo_bot.py")
DEFAULT_BUILDS = ("before=b8044bc", "after=WORKTREE", "echo=echo@before")


class BuildError(Exception):
    """A build could not be prepared or started."""


def log(text: str) -> None:
    """Progress on stderr, so stdout holds only the result table."""
    sys.stderr.write(f"[bench] {text}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class BuildSpec:
    """What `--build NAME=REF` asked for."""

    name: str
    ref: str

    @classmethod
    def parse(cls, text: str) -> BuildSpec:
        name, separator, ref = text.partition("=")
        if not separator or not name.strip() or not ref.strip():
            raise ValueError(f"--build wants NAME=REF (REF: WORKTREE, a commit, or echo@BUILD), got {text!r}")
        return cls(name.strip(), ref.strip())

    @property
    def echo_of(self) -> str | None:
        """The build whose Python runs the echo bot, for `echo@OTHER`."""
        return self.ref[len(ECHO_PREFIX):] if self.ref.startswith(ECHO_PREFIX) else None


@dataclass(frozen=True)
class Build:
    """A prepared build: run `python *argv` in `tree`."""

    name: str
    tree: Path
    python: Path
    argv: tuple[str, ...]
    echo: bool
    description: str


def _git(repo: Path, *arguments: str) -> str:
    result = subprocess.run(  # noqa: S603 - fixed git arguments  # nosec B603 B607
        ["git", "-C", str(repo), *arguments], capture_output=True, text=True, check=False  # noqa: S607
    )
    if result.returncode != 0:
        raise BuildError(f"git {' '.join(arguments)}: {result.stderr.strip()}")
    return result.stdout.strip()


def repo_root() -> Path:
    """The checkout this harness lives in."""
    return Path(_git(Path(__file__).parent, "rev-parse", "--show-toplevel"))


def _base_python() -> Path:
    """The interpreter behind the running venv, to make new venvs of the same Python."""
    return Path(getattr(sys, "_base_executable", sys.executable))


def cached_venv(requirements: Path, cache_dir: Path) -> Path:
    """A venv with `requirements` installed, made once per (requirements, Python) and reused.

    A venv is marked complete only after pip succeeded; a half-made one is made again. Only the
    requirements file itself is hashed: a `-r other.txt` inside it is not followed.
    """
    digest = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = cache_dir / f"venv-{digest}"
    marker = venv / ".bench-complete"
    if marker.exists():
        return venv
    if venv.exists():
        shutil.rmtree(venv)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log(f"creating {venv} from {requirements} (once per requirements file; a minute or two)")
    for command in (
        [str(_base_python()), "-m", "venv", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)],
    ):
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603  # nosec B603
        if result.returncode != 0:
            raise BuildError(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    marker.write_text(requirements.read_text(encoding="utf-8"), encoding="utf-8")
    return venv


@contextlib.contextmanager
def prepared_builds(specs: list[BuildSpec], repo: Path, cache_dir: Path) -> Iterator[list[Build]]:
    """Check out and install each build; the worktrees are removed when the block ends, however."""
    by_name = {spec.name: spec for spec in specs}
    if len(by_name) != len(specs):
        raise BuildError("build names must be distinct")
    worktrees: list[Path] = []
    builds: dict[str, Build] = {}
    try:
        for spec in specs:
            if spec.echo_of is None:
                builds[spec.name] = _prepare_bot(spec, repo, cache_dir, worktrees)
        for spec in specs:
            if spec.echo_of is not None:
                base = builds.get(spec.echo_of)
                if base is not None:
                    python, source = base.python, f"the Python of {base.name!r}"
                else:
                    python = _python_of_commit(spec.echo_of, repo, cache_dir)
                    source = f"the venv of {spec.echo_of}'s requirements.txt"
                builds[spec.name] = Build(
                    spec.name, ECHO_BOT.parent, python, (str(ECHO_BOT),), echo=True,
                    description=f"stock botbuilder echo bot ({ECHO_BOT.name}) with {source}",
                )
        yield [builds[spec.name] for spec in specs]
    finally:
        for worktree in worktrees:
            with contextlib.suppress(BuildError):
                _git(repo, "worktree", "remove", "--force", str(worktree))
            shutil.rmtree(worktree, ignore_errors=True)
        if worktrees:
            with contextlib.suppress(BuildError):
                _git(repo, "worktree", "prune")


def _prepare_bot(spec: BuildSpec, repo: Path, cache_dir: Path, worktrees: list[Path]) -> Build:
    if spec.ref == WORKTREE:
        return Build(spec.name, repo, Path(sys.executable), ("-m", "bot", "serve"), echo=False,
                     description=f"working tree {repo} with {sys.prefix}")
    commit = _git(repo, "rev-parse", "--verify", f"{spec.ref}^{{commit}}")
    tree = Path(tempfile.mkdtemp(prefix=f"bench-{spec.name}-"))
    worktrees.append(tree)
    _git(repo, "worktree", "add", "--detach", str(tree), commit)
    requirements = tree / "requirements.txt"
    if not requirements.exists():
        raise BuildError(f"{spec.name}: {spec.ref} has no requirements.txt")
    python, venv = _python_for(requirements, repo, cache_dir)
    return Build(spec.name, tree, python, ("-m", "bot", "serve"), echo=False,
                 description=f"{spec.ref} ({commit[:12]}) in a temporary worktree, venv {venv}")


def _python_for(requirements: Path, repo: Path, cache_dir: Path) -> tuple[Path, Path]:
    """(python, its venv) with `requirements` installed: the harness's own when they are the working tree's."""
    own = repo / "requirements.txt"
    if own.exists() and own.read_bytes() == requirements.read_bytes():
        return Path(sys.executable), Path(sys.prefix)
    venv = cached_venv(requirements, cache_dir)
    return venv / "bin" / "python", venv


def _python_of_commit(ref: str, repo: Path, cache_dir: Path) -> Path:
    """The Python of a commit's requirements.txt, without checking the commit out."""
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    with tempfile.TemporaryDirectory(prefix="bench-requirements-") as folder:
        requirements = Path(folder) / "requirements.txt"
        requirements.write_text(_git(repo, "show", f"{commit}:requirements.txt") + "\n", encoding="utf-8")
        return _python_for(requirements, repo, cache_dir)[0]


@contextlib.contextmanager
def commit_tree(repo: Path, ref: str) -> Iterator[tuple[Path, str]]:
    """`ref` checked out in a temporary worktree (detached), removed when the block ends; (folder, commit)."""
    commit = _git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = Path(tempfile.mkdtemp(prefix="bench-tree-"))
    try:
        _git(repo, "worktree", "add", "--detach", str(tree), commit)
        yield tree, commit
    finally:
        with contextlib.suppress(BuildError):
            _git(repo, "worktree", "remove", "--force", str(tree))
        shutil.rmtree(tree, ignore_errors=True)
        with contextlib.suppress(BuildError):
            _git(repo, "worktree", "prune")


def python_for(tree: Path, cache_dir: Path) -> Path:
    """The interpreter to run `tree` with: this one when `tree` needs the same packages, else a cached venv."""
    requirements = tree / "requirements.txt"
    if not requirements.exists():
        raise BuildError(f"{tree} has no requirements.txt")
    if requirements.read_bytes() == (repo_root() / "requirements.txt").read_bytes():
        return Path(sys.executable)
    return cached_venv(requirements, cache_dir) / "bin" / "python"

