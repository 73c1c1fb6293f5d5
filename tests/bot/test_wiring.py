"""The real process on Key Vault: managed identity token, draft key and ZIP password from the vault, a vault out of
reach at start.

`python -m bot serve` runs as its own process so its environment (IDENTITY_ENDPOINT for the
managed identity, SSL_CERT_FILE to trust the stand-in's test CA) is set before anything loads.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support.keyvault_standin import (
    KeyVaultStandIn,
    ManagedIdentityStandIn,
    keyvault_standin,
    managed_identity_standin,
)
from tests.support.smtp_server import free_port

ROOT = Path(__file__).resolve().parents[2]
ZIP_SECRET = "zip-password-ocmw-sint-gillis-waas"


def identity_token() -> str:
    """The token the managed-identity stand-in hands out, which the vault stand-in must accept."""
    from tests.support.keyvault_standin import MANAGED_IDENTITY_TOKEN

    return MANAGED_IDENTITY_TOKEN


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as output:
        return subprocess.Popen([sys.executable, "-m", "bot", "serve"], env=env, cwd=ROOT, stdout=output,
                                stderr=output)


async def test_the_bot_takes_its_keys_from_key_vault_with_a_managed_identity(tmp_path: Path) -> None:
    async with managed_identity_standin() as identity, keyvault_standin(token=identity_token()) as vault:
        vault.set_secret("draft-data-key", "ab" * 32)
        version = vault.set_secret(ZIP_SECRET, "QW3E-RT7Y-UP9A-SD2F-GH4J")
        port = free_port()
        process = _start(_environment(tmp_path, port, vault, identity), tmp_path / "bot.log")
        try:
            async with aiohttp.ClientSession() as session:
                ready = await _wait_ready(session, f"http://127.0.0.1:{port}", process)
            assert ready == {"storage": "ok", "protocols": "ok: 1 in force", "secret_provider": "ok",
                             "protocol_files": "ok"}, (tmp_path / "bot.log").read_text()
            assert not (tmp_path / "data" / "draft.key").exists(), "the draft key came from the vault"
            assert not (tmp_path / "data" / "zip-password.txt").exists()
            read = [request.path for request in vault.requests if request.status == 200]
            assert any("draft-data-key" in path for path in read) and any(ZIP_SECRET in path for path in read)
            assert identity.requests, "the managed identity endpoint issued the token"
            assert version
        finally:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("refusal", ["missing", "forbidden"])
async def test_a_missing_or_refused_draft_key_stops_the_bot_naming_the_secret(tmp_path: Path, refusal: str) -> None:
    async with managed_identity_standin() as identity, keyvault_standin(token=identity_token()) as vault:
        if refusal == "forbidden":
            vault.set_secret("draft-data-key", "ab" * 32)
            vault.fail_next(403)
        process = _start(_environment(tmp_path, free_port(), vault, identity), tmp_path / "bot.log")
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 2
    assert "draft-data-key" in (tmp_path / "bot.log").read_text()


async def test_a_key_vault_outage_at_start_does_not_stop_the_bot(tmp_path: Path) -> None:
    """README (*The ZIP password is ready before the send*): a slow or unreachable vault does not stop the start.
    The draft key was read once before anything listens, with only the SDK's three retries: a vault answering
    503 for a few seconds (an outage, a failover) stopped `serve` with exit 2, so every instance App Service
    started during it crash-looped. Now each read is logged on one line and tried again until the vault answers."""
    async with managed_identity_standin() as identity, keyvault_standin(token=identity_token()) as vault:
        vault.set_secret("draft-data-key", "ab" * 32)
        vault.set_secret(ZIP_SECRET, "QW3E-RT7Y-UP9A-SD2F-GH4J")
        vault.fail_next(503, times=5)  # the vault is down for its first five reads, then back
        port = free_port()
        log = tmp_path / "bot.log"
        process = _start(_environment(tmp_path, port, vault, identity), log)
        try:
            async with aiohttp.ClientSession() as session:
                ready = await _wait_ready(session, f"http://127.0.0.1:{port}", process, seconds=60)
        finally:
            process.terminate()
            process.wait(timeout=10)
    text = log.read_text()
    assert ready.get("secret_provider") == "ok", text[-1500:]
    waits = "start-up waits for Key Vault secret 'draft-data-key' (draft key): HttpResponseError 503"
    assert text.count(waits) == 5, text[-1500:]  # one line per attempt
    assert "Traceback" not in text


def _environment(tmp_path: Path, port: int, vault: KeyVaultStandIn, identity: ManagedIdentityStandIn) -> dict[str, str]:
    """`serve` on the vault stand-in with the managed identity's token, without the test machine's own identity."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))},
        "BOT_DATA_DIR": str(tmp_path / "data"),
        "PORT": str(port),
        "KEY_VAULT_URL": vault.url,
        "DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK": "1",
        "IDENTITY_ENDPOINT": identity.endpoint,
        "IDENTITY_HEADER": identity.header,
        "SSL_CERT_FILE": str(vault.ca_path),
    }


async def _wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes], *,
                      seconds: float = 30) -> dict[str, str]:
    """`/readyz`'s checks once the bot answers it (ready or not)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        try:
            async with session.get(f"{url}/readyz") as response:
                checks: dict[str, str] = (await response.json())["checks"]
                return checks
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    raise AssertionError(f"the bot did not start (exit code {process.poll()})")
