"""A real PostgreSQL server that the tests start themselves: a temporary cluster on a free port.

Never a server that happens to be running: `initdb` makes a new cluster in a temporary folder, the
server listens on 127.0.0.1 on a free port with its socket in that folder, and it is stopped and
removed at the end. `initdb` refuses to run as root, so as root the cluster belongs to the
`postgres` user (Debian's package creates it) and the commands run through `runuser`.
Each test gets its own database (`fresh_database`), so tests never see each other's rows.

`postgres_server(tls=True)` is set up as Azure's Flexible Server is: TCP only over TLS (a server
certificate for 127.0.0.1 and localhost from a fresh `trustme` CA, `ca_path` for clients) and only
with a password (scram-sha-256); a plain TCP connection is rejected by pg_hba. It also listens on
127.0.0.2, an address its certificate does not name. The superuser always comes in through the
unix socket in the cluster's folder (trust), which is how tests set roles and passwords up.
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import trustme

from tests.support.smtp_server import free_port

START_TIMEOUT_SECONDS = 30.0
#: A TLS server's pg_hba.conf: the superuser on the socket; over TCP TLS and a password, or nothing.
TLS_HBA = """\
local     all  all                 trust
hostssl   all  all  127.0.0.1/32   scram-sha-256
hostssl   all  all  127.0.0.2/32   scram-sha-256
host      all  all  all            reject
"""
#: The address a TLS server also listens on, which its certificate does not name.
UNNAMED_HOST = "127.0.0.2"


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
    #: With TLS: the CA file that signed the server's certificate (what `sslrootcert` names).
    ca_path: Path | None = None
    #: How the postmaster was started (`start_again` runs it again).
    command: list[str] = field(default_factory=list)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for the asyncpg driver."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def tls_url(self, role: str, database: str, *, host: str = "127.0.0.1", sslmode: str | None = "verify-full",
                sslrootcert: Path | str | None = None) -> str:
        """A DATABASE_URL with no password: `sslmode` (None: left out) and `sslrootcert` (default the server's CA)."""
        query = {"sslmode": sslmode} if sslmode else {}
        query["sslrootcert"] = str(sslrootcert or self.ca_path)
        return f"postgresql://{role}@{host}:{self.port}/{database}?{urlencode(query)}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` with psql as the superuser, through the unix socket; its output."""
        done = subprocess.run(
            ["psql", "-h", str(self.folder), "-p", str(self.port), "-U", "postgres", "-d", database, "-tAc", sql],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return done.stdout

    def create_role(self, role: str, password: str) -> None:
        """A new role that may log in with `password` (stored as SCRAM)."""
        self.psql(f'CREATE ROLE "{role}" LOGIN PASSWORD {_literal(password)}')

    def set_password(self, role: str, password: str) -> None:
        """From now on the role logs in with `password`, and no longer with the one before."""
        self.psql(f'ALTER ROLE "{role}" PASSWORD {_literal(password)}')

    def database_owned_by(self, role: str) -> str:
        """A new, empty database that `role` owns (it may create tables in it); returns its name."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" OWNER "{role}" TEMPLATE template0')
        return name

    def fresh_database(self, template: str = "template0") -> str:
        """A new database, empty or a copy of `template` (which nobody may be connected to); returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def start_again(self) -> None:
        """After `stop`: the same cluster on the same port again, as after a restart or a failover."""
        self.process.wait(timeout=15)
        with (self.folder / "server.log").open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log)
        _wait_until_ready(self)

    def stop(self) -> None:
        """A "fast" shutdown (open connections are cut), sent to the postmaster itself.

        As root `process` is `runuser`, which passes on no SIGINT; the postmaster's pid is the
        first line of its `postmaster.pid`.
        """
        try:
            postmaster = int((self.folder / "data" / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            postmaster = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(postmaster, signal.SIGINT)


def _literal(text: str) -> str:
    """`text` as an SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _as_cluster_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server(*, tls: bool = False, settings: Mapping[str, str] | None = None) -> Iterator[PostgresServer]:
    """Start a throw-away cluster; stop and remove it on exit. `tls`: TLS and a password required over TCP.

    `settings`: more server settings (`-c name=value`), e.g. a benchmark's `pg_stat_statements`.
    """
    binaries = postgres_bin()
    folder = Path(tempfile.mkdtemp(prefix="pg-test-"))
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    subprocess.run(_as_cluster_owner([str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                      "--no-sync", "-E", "UTF8", "--locale=C"]),
                   capture_output=True, check=True, timeout=60)
    listen = f"127.0.0.1,{UNNAMED_HOST}" if tls else "127.0.0.1"
    options = ["-c", f"listen_addresses={listen}", "-c", "fsync=off", "-c", "max_connections=200"]
    for name, value in (settings or {}).items():
        options += ["-c", f"{name}={value}"]
    ca_path = None
    if tls:
        ca_path = folder / "ca.pem"
        options += _require_tls(data, ca_path)
    port = free_port()
    command = _as_cluster_owner([str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(folder),
                                 *options])
    with (folder / "server.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log)
    server = PostgresServer(port, folder, process, ca_path, command)
    try:
        _wait_until_ready(server)
        yield server
    finally:
        server.stop()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)
        shutil.rmtree(folder, ignore_errors=True)


def _require_tls(data: Path, ca_path: Path) -> list[str]:
    """Certificate, key and pg_hba.conf for a TLS-only cluster in `data`; the server's options."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(ca_path))
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    certificate_file, key_file = data / "server.crt", data / "server.key"
    certificate.cert_chain_pems[0].write_to_path(str(certificate_file))
    key_file.touch(mode=0o600)  # PostgreSQL refuses a key that others may read
    certificate.private_key_pem.write_to_path(str(key_file))
    (data / "pg_hba.conf").write_text(TLS_HBA)
    if os.geteuid() == 0:
        for path in (certificate_file, key_file, data / "pg_hba.conf"):
            shutil.chown(path, "postgres", "postgres")
    return ["-c", "ssl=on", "-c", f"ssl_cert_file={certificate_file}", "-c", f"ssl_key_file={key_file}",
            "-c", "password_encryption=scram-sha-256"]


def _wait_until_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError((server.folder / "server.log").read_text(errors="replace")[-2000:])
        ready = subprocess.run(["pg_isready", "-h", str(server.folder), "-p", str(server.port)], capture_output=True,
                               check=False)
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError("PostgreSQL did not start in time")
