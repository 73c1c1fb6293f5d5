"""Secrets that the embedded mode generates once and keeps in the data folder (mode 0600)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def read_or_create_secret(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The secret in `path`; created with `generate()` and mode 0600 when it does not exist yet.

    Created with O_EXCL so two processes starting at once cannot each write a different one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    value = generate()
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(value + b"\n")
        handle.flush()
        os.fsync(handle.fileno())
    return value
