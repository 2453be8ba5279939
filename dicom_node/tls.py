"""TLS contexts for DICOM TLS on the listener and towards destinations (PS3.15 B.1, B.9).

The profile follows PS3.15 B.9 (BCP 195): TLS 1.2 or later, the ``ssl``
module's default cipher suites. Certificates, keys and CA bundles are PEM
files. A problem with a file raises :class:`TlsConfigurationError` naming the
file and what is wrong with it.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from dicom_node.errors import TlsConfigurationError

__all__ = ["client_context", "server_context"]


def _load_chain(context: ssl.SSLContext, certificate: Path, private_key: Path) -> None:
    try:
        context.load_cert_chain(certfile=certificate, keyfile=private_key)
    except FileNotFoundError as error:
        raise TlsConfigurationError(f"TLS file {error.filename} does not exist") from None
    except (ssl.SSLError, OSError) as error:
        raise TlsConfigurationError(
            f"certificate {certificate} with key {private_key} cannot be used: {error}"
        ) from None


def _load_trust(context: ssl.SSLContext, ca_bundle: Path) -> None:
    try:
        context.load_verify_locations(cafile=ca_bundle)
    except FileNotFoundError:
        raise TlsConfigurationError(f"CA bundle {ca_bundle} does not exist") from None
    except (ssl.SSLError, OSError) as error:
        raise TlsConfigurationError(f"CA bundle {ca_bundle} cannot be used: {error}") from None


def server_context(
    certificate: Path,
    private_key: Path,
    *,
    ca_bundle: Path | None = None,
    verify_clients: bool = False,
) -> ssl.SSLContext:
    """Server-side context for the DICOM listener.

    Parameters
    ----------
    certificate, private_key
        The node's certificate (chain) and its key, PEM.
    ca_bundle
        CAs that sign acceptable client certificates (required with ``verify_clients``).
    verify_clients
        Require a client certificate signed by ``ca_bundle`` (mutual TLS);
        otherwise clients are not asked for one.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(context, certificate, private_key)
    if verify_clients:
        if ca_bundle is None:
            raise TlsConfigurationError("verifying client certificates needs a CA bundle")
        _load_trust(context, ca_bundle)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(
    *,
    ca_bundle: Path | None = None,
    certificate: Path | None = None,
    private_key: Path | None = None,
    check_hostname: bool = True,
) -> ssl.SSLContext:
    """Client-side context for associations the node opens (export, echo).

    The peer's certificate is always verified: against ``ca_bundle`` when given,
    else against the system's CAs; its host name is checked unless
    ``check_hostname`` is False. With ``certificate`` and ``private_key`` the node
    presents its own certificate (for peers that require client certificates).
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_bundle is not None:
        _load_trust(context, ca_bundle)
    context.check_hostname = check_hostname
    if certificate is not None and private_key is not None:
        _load_chain(context, certificate, private_key)
    return context
