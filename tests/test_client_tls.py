"""The client over TLS and mutual TLS (client/client.py Tls) against a real `affidavit serve`
with the private PKI of tests/tlspki.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from affidavit.client.client import Client, Tls
from affidavit.client.errors import (
    UnavailableError,
)

from tests import serverproc
from tests.clientworld import (
    policy_of,
)
from tests.serverproc import ServerFactory
from tests.tlspki import (
    Pki,
    pki,
    tls_server,
)

__all__ = ["pki"]  # fixtures, used by name


server_factory = serverproc.server_factory

# TLS.


def test_tls(server_factory: ServerFactory, pki: Pki, tmp_path: Path) -> None:
    s = tls_server(server_factory, pki, Tls(pki.ca))
    with Client(s.address, policy_of(s), tls=Tls(pki.ca), trust_dir=tmp_path / "t") as client:
        assert client.append_opaque(b"over tls").index == 0
        assert client.checkpoint().checkpoint.size == 1
    for tls in (None, Tls(pki.other_ca)):  # plain text; a CA that did not sign the server's
        with (
            Client(s.address, policy_of(s), tls=tls, retries=0) as client,
            pytest.raises(UnavailableError),
        ):
            client.checkpoint()
    # The CLI takes the same options.
    r = serverproc.run_cli(
        "verify",
        "--server",
        s.address,
        "--log-key",
        s.verifier_key,
        "--tls-ca",
        str(pki.ca),
        "--trust-dir",
        str(tmp_path / "cli"),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    assert '"size": 1' in r.stdout


def test_mutual_tls(server_factory: ServerFactory, pki: Pki) -> None:
    mtls = Tls(pki.ca, pki.client_cert, pki.client_key)
    s = tls_server(server_factory, pki, mtls, "--tls-client-ca", str(pki.ca))
    with Client(s.address, policy_of(s), tls=mtls) as client:
        assert client.append_opaque(b"over mtls").index == 0
    no_client_cert = Client(s.address, policy_of(s), tls=Tls(pki.ca), retries=0)
    with no_client_cert, pytest.raises(UnavailableError):
        no_client_cert.checkpoint()
