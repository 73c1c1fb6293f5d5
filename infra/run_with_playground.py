"""`make run`: the bot and the Microsoft 365 Agents Playground (a local Teams-like client) side by side.

    python -m infra.run_with_playground [--host 127.0.0.1] [--port 3978] [--playground-port 56150]

Starts `python -m bot serve` and, once it answers `/healthz`, the Playground from
`node_modules/@microsoft/m365agentsplayground` (npm devDependency) pointed at the bot. The Playground
picks another port when the asked one is busy, so the real one is read from its output and printed.
Ctrl-C (or SIGTERM) stops both; when either stops on its own the other is stopped too. Without
Node.js or the npm package the bot starts alone, with a note saying why.

Nothing leaves the machine: the Playground's telemetry key is blanked and `--disable-telemetry`
given, it listens on 127.0.0.1 only (`infra/playground/loopback.cjs`), and its log and config live
in a temporary folder. The tests start the same pair with `running_stack`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
PLAYGROUND_PACKAGE = ROOT / "node_modules" / "@microsoft" / "m365agentsplayground"
PLAYGROUND_CLI = PLAYGROUND_PACKAGE / "cli.js"
#: The package ships an Application Insights key here; blank, it has nothing to send to.
PLAYGROUND_TELEMETRY_CONFIG = PLAYGROUND_PACKAGE / "dist" / "server" / "config.json"
LOOPBACK_PRELOAD = ROOT / "infra" / "playground" / "loopback.cjs"
DEFAULT_PLAYGROUND_PORT = 56150
#: The names the Playground shows: the bot as in the Teams manifest, the OCMW's team and channel.
BOT_NAME = "Veilig doorverwijzen"
TEAM_NAME = "OCMW Sint-Gillis-Waas"
CHANNEL_NAME = "Doorverwijzingen"
_LISTENING = re.compile(r"Listening on (\d+)")
_STOP_SECONDS = 10.0


class StackError(RuntimeError):
    """The bot or the Playground did not come up; the message says which and shows its last output."""


def playground_missing() -> str | None:
    """Why the Playground cannot start here (and how to fix it), or None when it can."""
    if shutil.which("node") is None:
        return "Node.js (`node`) is not installed; install Node.js 20 or newer to get the Agents Playground"
    if not PLAYGROUND_CLI.is_file():
        return (f"{PLAYGROUND_CLI.relative_to(ROOT)} is missing; install the npm packages with "
                "`make node_modules/.installed` (npm ci --ignore-scripts)")
    return None


def disable_telemetry() -> None:
    """Blank the Playground's telemetry key (`npm ci` puts it back; this runs before every start)."""
    wanted = {"aiKey": ""}
    try:
        current = json.loads(PLAYGROUND_TELEMETRY_CONFIG.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != wanted:
        PLAYGROUND_TELEMETRY_CONFIG.write_text(json.dumps(wanted) + "\n", encoding="utf-8")


def playground_config() -> dict[str, Any]:
    """The Playground's mock tenant: its default one with our bot, team and channel names.

    The schema (0.1.1) wants exactly five other users. Conversation ids are fixed, so the OCMW link
    and the referrer's chat stay valid when `make run` is started again on the same `.data/`.
    """
    tenant = "00000000-0000-0000-0000-0000000000001"

    def user(number: int, given: str, surname: str) -> dict[str, str]:
        login = f"{given.lower()}{surname[0].lower()}@example.com"
        return {
            "id": f"user-id-{number}",
            "name": f"{given} {surname}",
            "userPrincipleName": login,  # sic: the Playground's schema spells it so
            "aadObjectId": f"00000000-0000-0000-0000-00000000002{number}",
            "givenName": given,
            "surname": surname,
            "email": login,
        }

    return {
        "version": "0.1.1",
        "tenantId": tenant,
        "bot": {"id": "00000000-0000-0000-0000-00000000000011", "name": BOT_NAME},
        "currentUser": user(0, "Alex", "Wilber"),
        "users": [user(1, "Megan", "Bowen"), user(2, "Adele", "Vance"), user(3, "Isaiah", "Langer"),
                  user(4, "Patti", "Fernandez"), user(5, "Lynne", "Robbins")],
        "personalChat": {"id": "personal-chat-id"},
        "groupChat": {"id": "group-chat-id", "name": "Groepsgesprek"},
        "team": {
            "id": "team-id",
            "name": TEAM_NAME,
            "aadGroupId": "00000000-0000-0000-0000-000000000031",
            "channels": [{"id": "channel-doorverwijzingen-id", "name": CHANNEL_NAME}],
        },
    }


def _client_host(host: str) -> str:
    """The address to reach a server listening on `host` from this machine."""
    loopback = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104
    return f"[{loopback}]" if ":" in loopback else loopback


def bot_base_url(host: str, port: int) -> str:
    """`http://host:port` of the bot, as a client on this machine reaches it."""
    return f"http://{_client_host(host)}:{port}"


@dataclass
class OutputReader:
    """Reads a child's stdout in a thread: keeps the last lines and finds a pattern in them."""

    stream: IO[str]
    lines: list[str] = field(default_factory=list)
    _queue: queue.Queue[str | None] = field(default_factory=queue.Queue)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._read, name="playground-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(ValueError, OSError):  # the stream is closed when the child is stopped
            for line in self.stream:
                self.lines.append(line.rstrip("\n"))
                del self.lines[:-200]
                self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str] | None:
        """The first line matching `pattern` within `timeout` seconds; None at end of output or time."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                return None
            if line is None:
                return None
            found = pattern.search(line)
            if found:
                return found
        return None

    def close(self) -> None:
        """Wait for the reader to see the end of the output (call after the child has exited)."""
        self._thread.join(timeout=5)
        self.stream.close()


def start_bot(env: Mapping[str, str], *, host: str, port: int) -> subprocess.Popen[bytes]:
    """`python -m bot serve` in its own session (so only we forward Ctrl-C), output on our terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "serve"],
        cwd=ROOT,
        env={**env, "HOST": host, "PORT": str(port)},
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_until_healthy(bot: subprocess.Popen[bytes], base_url: str, timeout: float = 60.0) -> None:
    """Return once `GET /healthz` answers 200; StackError when the bot exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if bot.poll() is not None:
            raise StackError(f"the bot stopped during start-up (exit status {bot.returncode}); see its log above")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as answer:  # noqa: S310
            if answer.status == 200:  # (http on this machine)
                return
        time.sleep(0.1)
    raise StackError(f"the bot did not answer {base_url}/healthz within {timeout:.0f} s")


@dataclass
class Playground:
    """A running Playground: its process, the port it really listens on, and its output."""

    process: subprocess.Popen[str]
    port: int
    output: OutputReader

    @property
    def url(self) -> str:
        """The address to open in a browser."""
        return f"http://localhost:{self.port}"


def start_playground(
    endpoint: str,
    *,
    port: int,
    workdir: Path,
    env: Mapping[str, str],
    timeout: float = 60.0,
) -> Playground:
    """Start the Playground against the bot's `endpoint` and wait for the port it listens on.

    `port` 0 lets it choose a free port. Its log and config go into `workdir`, its own working folder.
    """
    missing = playground_missing()
    if missing is not None:
        raise StackError(missing)
    disable_telemetry()
    config = workdir / ".m365agentsplayground.yml"
    config.write_text("# written by infra/run_with_playground.py (JSON is YAML)\n"
                      + json.dumps(playground_config(), indent=2) + "\n", encoding="utf-8")
    node = shutil.which("node") or "node"
    process = subprocess.Popen(  # noqa: S603 - node with the npm package's own CLI
        [node, "--require", str(LOOPBACK_PRELOAD), str(PLAYGROUND_CLI),
         "--app-endpoint", endpoint, "--port", str(port), "--disable-telemetry"],
        cwd=workdir,
        env={
            **env,
            "TEAMSAPPTESTER_BROWSER": "none",  # we print the address; no browser is opened
            "M365_AGENTS_PLAYGROUND_CONFIG_PATH": str(config),
            "M365_AGENTS_PLAYGROUND_LOGFILE": str(workdir / "playground.log"),
        },
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        start_new_session=True,
    )
    assert process.stdout is not None  # noqa: S101 - stdout=PIPE above
    output = OutputReader(process.stdout)  # only "Listening on <port>"; the rest goes to its log file
    found = output.wait_for(_LISTENING, timeout)
    if found is None:
        stop_process(process)
        output.close()
        raise StackError("the Agents Playground did not say which port it listens on:\n" + "\n".join(output.lines))
    return Playground(process=process, port=int(found.group(1)), output=output)


def stop_process(process: subprocess.Popen[Any], timeout: float = _STOP_SECONDS) -> int:
    """SIGINT (a clean stop for both aiohttp and node), then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@dataclass
class Stack:
    """The running pair."""

    bot: subprocess.Popen[bytes]
    bot_url: str
    playground: Playground

    @property
    def url(self) -> str:
        """Where to open the Playground."""
        return self.playground.url


@contextlib.contextmanager
def running_stack(
    *,
    host: str,
    port: int,
    playground_port: int,
    bot_env: Mapping[str, str],
    playground_env: Mapping[str, str],
    workdir: Path | None = None,
) -> Iterator[Stack]:
    """Start the bot, wait until it is healthy, start the Playground; stop both on leaving."""
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="agents-playground-")))
        bot = start_bot(bot_env, host=host, port=port)
        cleanup.callback(stop_process, bot)
        base_url = bot_base_url(host, port)
        wait_until_healthy(bot, base_url)
        playground = start_playground(f"{base_url}/api/messages", port=playground_port, workdir=workdir,
                                      env=playground_env)
        cleanup.callback(playground.output.close)
        cleanup.callback(stop_process, playground.process)
        yield Stack(bot=bot, bot_url=base_url, playground=playground)


def _protocol_ids() -> list[str]:
    folder = Path(os.environ.get("PROTOCOLS_DIR") or ROOT / "infra" / "protocols")
    ids = []
    for path in sorted(folder.glob("*.toml")):
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            protocol_id = tomllib.loads(path.read_text(encoding="utf-8")).get("id")
            if isinstance(protocol_id, str):
                ids.append(protocol_id)
    return ids


def _banner(stack: Stack) -> str:
    data_dir = os.environ.get("BOT_DATA_DIR") or ".data"
    protocol = (_protocol_ids() or ["<protocol-id>"])[0]
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    return "\n".join([
        "",
        f"  Agents Playground: open {stack.url} in your browser",
        f"  bot:               {stack.bot_url}/api/messages (data in {data_dir}/)",
        *([f"  metrics:           http://127.0.0.1:{metrics_port}/metrics (Prometheus text)"]
          if (metrics_port := os.environ.get("METRICS_PORT")) else []),
        "",
        "  Personal Chat: type `nieuw` and follow the cards (in English: the Playground says it is en-US).",
        f"                 The mail lands as an .eml file in {data_dir}/outbox/; its ZIP opens with 7-Zip and",
        "                 the password the bot's log above points to.",
        f"  {CHANNEL_NAME}: the OCMW's channel. Get a code with `{python} -m bot link-ocmw {protocol}`,",
        f"                 then post `@{BOT_NAME} koppel <code>` there (type @ and pick the bot).",
        "",
        "  Ctrl-C stops both.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    """Run the pair until Ctrl-C or until one of them stops; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m infra.run_with_playground", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST") or "127.0.0.1", help="bot address (HOST)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 3978), help="bot port (PORT)")
    parser.add_argument("--playground-port", type=int,
                        default=int(os.environ.get("PLAYGROUND_PORT") or DEFAULT_PLAYGROUND_PORT),
                        help=f"Playground port, another free one when busy (PLAYGROUND_PORT, default "
                             f"{DEFAULT_PLAYGROUND_PORT})")
    arguments = parser.parse_args(argv)

    missing = playground_missing()
    if missing is not None:
        sys.stdout.write(f"Not starting the Agents Playground: {missing}.\nStarting the bot alone.\n")
        sys.stdout.flush()
        os.chdir(ROOT)  # as `start_bot` does: `-m bot` and a relative BOT_DATA_DIR resolve from the project
        os.execve(sys.executable, [sys.executable, "-m", "bot", "serve"],  # noqa: S606 - our own interpreter
                  {**os.environ, "HOST": arguments.host, "PORT": str(arguments.port)})

    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        """The first Ctrl-C or SIGTERM unwinds `running_stack` (which stops both); later ones are ignored."""
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        with running_stack(host=arguments.host, port=arguments.port, playground_port=arguments.playground_port,
                           bot_env=os.environ, playground_env=os.environ) as stack:
            sys.stdout.write(_banner(stack) + "\n")
            sys.stdout.flush()
            while True:
                for name, process in (("bot", stack.bot), ("Agents Playground", stack.playground.process)):
                    if process.poll() is not None:
                        stopping = True
                        sys.stdout.write(f"The {name} stopped (exit status {process.returncode}); "
                                         "stopping the rest.\n")
                        return process.returncode if process.returncode > 0 else 1
                time.sleep(0.2)
    except KeyboardInterrupt:
        sys.stdout.write("Stopped the bot and the Agents Playground.\n")
        return 0
    except StackError as error:
        sys.stderr.write(f"make run: {error}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
