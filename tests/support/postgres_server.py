"""A real PostgreSQL server that the tests start themselves: a temporary cluster on a free port.

Never a server that happens to be running: `initdb` makes a new cluster in a temporary folder, the
server listens on 127.0.0.1 on a free port with its socket in that folder, and it is stopped and
removed at the end. `initdb` refuses to run as root, so as root the cluster belongs to the
`postgres` user (Debian's package creates it) and the commands run through `runuser`.
Each test gets its own database (`fresh_database`), so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.smtp_server import free_port

START_TIMEOUT_SECONDS = 30.0


class PostgresUnavailableError(Exception):
    """The Debian `postgresql` package is not installed (`make test` installs it)."""


def postgres_bin() -> Path:
    """The folder of `initdb` and `postgres` of the newest installed PostgreSQL."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise PostgresUnavailableError("PostgreSQL is not installed: apt-get install postgresql (make test does)")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    """A running cluster: its port, and how to reach it as the superuser."""

    port: int
    folder: Path
    process: subprocess.Popen[bytes]
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for the asyncpg driver."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql as the superuser; its output."""
        done = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", database, "-tAc", sql],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout

    def fresh_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)


def _as_cluster_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a throw-away cluster; stop and remove it on exit."""
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    subprocess.run(_as_cluster_owner([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                      "--no-sync", "-E", "UTF8", "--locale=C"]),
                   capture_output=True, check=True, timeout=60)
    port = free_port()
    log = (folder / "server.log").open("ab")
    process = subprocess.Popen(
        _as_cluster_owner([str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
                           "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"]),
        stdout=log, stderr=log,
    )
    server = PostgresServer(port, folder, process)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        _stop(server, data)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _stop(server: PostgresServer, data: Path) -> None:
    """A "fast" shutdown (open connections are cut), signalled to the server itself.

    As root the process started is `runuser`, which ignores SIGINT while its child runs: the
    server would go on, orphaned, until it noticed its removed folder.
    """
    try:
        server_pid = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        server_pid = server.process.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(server_pid, signal.SIGINT)


def _wait_until_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError((server.folder / "server.log").read_text(errors="replace")[-2000:])
        ready = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(server.port)], capture_output=True,
                               check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("PostgreSQL did not start in time")
