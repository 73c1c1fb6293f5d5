"""The real process on Key Vault: managed identity token, draft key and ZIP password from the vault.

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

from tests.support.keyvault_standin import keyvault_standin, managed_identity_standin
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
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))},
            "BOT_DATA_DIR": str(tmp_path / "data"),
            "PORT": str(port),
            "KEY_VAULT_URL": vault.url,
            "DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK": "1",
            "IDENTITY_ENDPOINT": identity.endpoint,
            "IDENTITY_HEADER": identity.header,
            "SSL_CERT_FILE": str(vault.ca_path),
        }
        process = _start(env, tmp_path / "bot.log")
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


async def test_a_missing_draft_key_stops_the_bot_naming_the_secret(tmp_path: Path) -> None:
    async with managed_identity_standin() as identity, keyvault_standin(token=identity_token()) as vault:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))},
            "BOT_DATA_DIR": str(tmp_path / "data"), "PORT": str(free_port()), "KEY_VAULT_URL": vault.url,
            "DANGEROUSLY_SKIP_KEY_VAULT_CHALLENGE_CHECK": "1", "IDENTITY_ENDPOINT": identity.endpoint,
            "IDENTITY_HEADER": identity.header, "SSL_CERT_FILE": str(vault.ca_path),
        }
        process = _start(env, tmp_path / "bot.log")
        code = await asyncio.to_thread(process.wait, 30)
    assert code == 2
    assert "draft-data-key" in (tmp_path / "bot.log").read_text()


async def _wait_ready(session: aiohttp.ClientSession, url: str, process: subprocess.Popen[bytes]) -> object:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            async with session.get(f"{url}/readyz") as response:
                return (await response.json())["checks"]
        except aiohttp.ClientError:
            await asyncio.sleep(0.2)
    raise AssertionError("the bot did not start")
