"""DICOM TLS on the listener and towards destinations, with certificates made in the test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from structlog.testing import capture_logs

from dicom_node.errors import AssociationFailedError
from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.export import read_result_identity, store_results
from dicom_node.scu.send import Destination, StoreOutcome
from dicom_node.tls import client_context, server_context
from service.settings import SettingsError, load_settings
from tests.conftest import require_tool
from tests.helpers.node_harness import NodeProcess, write_phantom_exam
from tests.helpers.scp_harness import running_receiver

pytestmark = [pytest.mark.integration]

_LEAF_EXTENSIONS = """\
subjectAltName=DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth,clientAuth
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
"""


def _openssl(*arguments: str) -> None:
    binary = require_tool("openssl", "install openssl")
    done = subprocess.run([binary, *arguments], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and node and scanner certificates it signed (RSA 2048, PEM)."""
    folder = tmp_path_factory.mktemp("pki")
    (folder / "leaf.cnf").write_text(_LEAF_EXTENSIONS)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", str(folder / "ca.key"), "-out", str(folder / "ca.crt"),
             "-subj", "/CN=wbdwi test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    for name in ("node", "scanner"):
        key, request = str(folder / f"{name}.key"), str(folder / f"{name}.csr")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                 "-keyout", key, "-out", request)  # fmt: skip
        _openssl("x509", "-req", "-in", str(folder / f"{name}.csr"), "-days", "2",
                 "-CA", str(folder / "ca.crt"), "-CAkey", str(folder / "ca.key"),
                 "-CAcreateserial", "-out", str(folder / f"{name}.crt"),
                 "-extfile", str(folder / "leaf.cnf"))  # fmt: skip
    (folder / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    return folder


def _dcmtk_with_tls(name: str) -> str:
    binary = require_tool(name, "install dcmtk (make tools)")
    usage = subprocess.run([binary, "--help"], capture_output=True, text=True, check=False)
    if "+tls" not in usage.stdout:
        pytest.skip(f"this dcmtk {name} was built without TLS")
    return binary


def test_listener_with_dcmtk_and_client_certificates(pki: Path, tmp_path: Path) -> None:
    storescu = _dcmtk_with_tls("storescu")
    echoscu = _dcmtk_with_tls("echoscu")
    files = write_phantom_exam(tmp_path / "exam")[:3]
    context = server_context(
        pki / "node.crt", pki / "node.key", ca_bundle=pki / "ca.crt", verify_clients=True
    )
    client = [
        "+tls",
        str(pki / "scanner.key"),
        str(pki / "scanner.crt"),
        "+cf",
        str(pki / "ca.crt"),
    ]
    with (
        capture_logs() as logs,
        running_receiver(tmp_path / "node", ssl_context=context) as (receiver, store),
    ):
        port = str(receiver.port)
        stored = subprocess.run(
            [storescu, *client, "-aec", "WBDWI", "127.0.0.1", port, *map(str, files)],
            capture_output=True, text=True, check=False, env={**os.environ, "TCP_NODELAY": "1"},
        )  # fmt: skip
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert store.instance_totals()[0] == len(files)
        anonymous = subprocess.run(
            [echoscu, "+tla", "+cf", str(pki / "ca.crt"), "-aec", "WBDWI", "127.0.0.1", port],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert anonymous.returncode != 0  # no client certificate: refused
        plain = subprocess.run(
            [echoscu, "-aec", "WBDWI", "127.0.0.1", port],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert plain.returncode != 0  # DICOM without TLS on a TLS port
    failures = [e["reason"] for e in logs if e["event"] == "tls_handshake_failed"]
    assert len(failures) == 2
    assert any("PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason for reason in failures)


def test_node_serves_tls_and_exports_over_tls(pki: Path, tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam")[:5]
    tls_env = {
        "WBDWI_TLS_CERTIFICATE": str(pki / "node.crt"),
        "WBDWI_TLS_PRIVATE_KEY": str(pki / "node.key"),
        "WBDWI_TLS_CA_BUNDLE": str(pki / "ca.crt"),
        "WBDWI_TLS_LISTENER": "true",
        "WBDWI_TLS_VERIFY_CLIENTS": "true",
    }
    with NodeProcess(tmp_path, quiet_seconds=600, env=tls_env) as node:
        assert '"tls": true' in node.log()
        echo = subprocess.run(
            [sys.executable, "-m", "service.cli", "echo", "--calling-aet", "SCANNER",
             "--data-dir", str(node.data_dir)],
            capture_output=True, text=True, check=False,
            env={**os.environ, **tls_env, "WBDWI_NODE_PORT": str(node.port)},
        )  # fmt: skip
        assert echo.returncode == 0 and "echo ok" in echo.stdout, echo.stdout + echo.stderr

        # The exporter's code path, as towards a PACS that requires TLS with client certificates.
        peer = Destination("127.0.0.1", node.port, "WBDWI", calling_aet="SCANNER")
        outcomes: list[StoreOutcome] = []
        trusted = client_context(
            ca_bundle=pki / "ca.crt",
            certificate=pki / "scanner.crt",
            private_key=pki / "scanner.key",
        )
        store_results([read_result_identity(f) for f in files], peer, outcomes.append, tls=trusted)
        assert [outcome.status for outcome in outcomes] == [0] * len(files)
        assert node.query("SELECT COUNT(*) FROM instances") == [(len(files),)]

        untrusted = client_context(certificate=pki / "scanner.crt", private_key=pki / "scanner.key")
        with pytest.raises(AssociationFailedError):
            store_results([read_result_identity(files[0])], peer, outcomes.append, tls=untrusted)
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(VERIFICATION)
        without_certificate = ae.associate(
            "127.0.0.1",
            node.port,
            ae_title="WBDWI",
            tls_args=(client_context(ca_bundle=pki / "ca.crt"), "127.0.0.1"),
        )
        assert not without_certificate.is_established
    assert "tls_handshake_failed" in node.log()


def test_tls_settings_are_checked_at_load(pki: Path) -> None:
    good = {
        "certificate": pki / "node.crt",
        "private_key": pki / "node.key",
        "ca_bundle": pki / "ca.crt",
        "listener": True,
        "verify_clients": True,
        "export": True,
    }
    settings = load_settings(env={}, overrides={"tls": good})
    assert settings.tls.listener_context() is not None
    assert settings.tls.export_context() is not None
    assert load_settings(env={}).tls.listener_context() is None
    cases = [
        ({"listener": True}, "tls: listener needs certificate and private_key"),
        ({**good, "ca_bundle": None}, "tls: verify_clients needs listener and ca_bundle"),
        ({**good, "private_key": None}, "set together"),
        ({**good, "ca_bundle": pki / "missing.pem"}, "tls: ca_bundle: .* is not a file"),
        ({**good, "private_key": pki / "scanner.key"}, "cannot be used"),
        ({**good, "ca_bundle": pki / "garbage.pem"}, "CA bundle .* cannot be used"),
    ]
    for values, message in cases:
        with pytest.raises(SettingsError, match=message):
            load_settings(env={}, overrides={"tls": values})


def test_a_trickled_tls_handshake_does_not_hold_the_connection(pki: Path, tmp_path: Path) -> None:
    context = server_context(pki / "node.crt", pki / "node.key")
    with (
        capture_logs() as logs,
        running_receiver(tmp_path, ssl_context=context, associate_timeout_seconds=1.0) as (
            receiver,
            _,
        ),
        socket.create_connection(("127.0.0.1", receiver.port), timeout=10) as peer,
    ):
        started = time.monotonic()
        closed = False
        # The start of a TLS record (a ClientHello), one byte every 0.2 s.
        for byte in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40):
            try:
                peer.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
            if time.monotonic() - started > 4:
                break
        if not closed:
            peer.settimeout(3)
            closed = peer.recv(1024) == b""
        elapsed = time.monotonic() - started
    assert closed and elapsed < 2.5  # 1 s deadline; before, each byte restarted the timeout
    failures = [e["reason"] for e in logs if e["event"] == "tls_handshake_failed"]
    assert failures and "deadline" in failures[0]
