"""Run the real 7-Zip (`7zz`) on package bytes: the OCMW opens packages with 7-Zip, so tests do too."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

SEVEN_ZIP = "7zz"  # Debian package `7zip` installs only this name
_TIMEOUT_SECONDS = 60


def available() -> bool:
    """True when `7zz` is on PATH, for a clear skip reason instead of a FileNotFoundError."""
    return shutil.which(SEVEN_ZIP) is not None


def _run(args: list[str], zip_bytes: bytes) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="sevenzip-") as workdir:
        archive = Path(workdir) / "package.zip"
        archive.write_bytes(zip_bytes)
        return subprocess.run(
            [SEVEN_ZIP, *args, str(archive)],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,  # 7-Zip would otherwise wait for a password on the terminal
            timeout=_TIMEOUT_SECONDS,
            check=False,
        )


def extract(zip_bytes: bytes, password: str, dest: Path) -> subprocess.CompletedProcess[str]:
    """`7zz x` into `dest`; the caller checks `returncode` (2 and "Wrong password" on a bad password)."""
    return _run(["x", f"-p{password}", f"-o{dest}", "-y"], zip_bytes)


def technical_listing(zip_bytes: bytes, password: str) -> str:
    """`7zz l -slt`: one block of `Key = value` lines per entry (Method, Modified, Encrypted, ...)."""
    result = _run(["l", "-slt", f"-p{password}"], zip_bytes)
    if result.returncode != 0:
        raise AssertionError(f"7zz l failed with exit {result.returncode}: {result.stdout}{result.stderr}")
    return result.stdout
