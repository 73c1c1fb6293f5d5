"""TLS for a stand-in on 127.0.0.1: a certificate from a fresh throwaway CA, and that CA for the client."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme


@contextmanager
def local_tls(name: str) -> Iterator[tuple[ssl.SSLContext, Path]]:
    """The server's TLS context and the CA's PEM file (`name`-ca.pem, removed afterwards) a client trusts."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    with tempfile.TemporaryDirectory() as scratch:
        ca_path = Path(scratch) / f"{name}-ca.pem"
        ca.cert_pem.write_to_path(str(ca_path))
        yield server_context, ca_path
