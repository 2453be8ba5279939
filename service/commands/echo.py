"""``wbdwi echo``: C-ECHO the node itself, a peer, or every configured destination."""

from __future__ import annotations

import argparse
import ssl
import sys
from typing import Any

from dicom_node.errors import (
    AssociationFailedError,
    AssociationRejectedError,
    TlsConfigurationError,
)
from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.association import Peer, associate, reactor_paused
from service.commands.serve import add_config_argument
from service.settings import Destination, SettingsError, load_settings, parse_destination

__all__ = ["echo", "register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``echo`` subcommand."""
    parser = subparsers.add_parser(
        "echo",
        help="DICOM C-ECHO (verification) of the node or a peer",
        description="Without PEER, echo this node (localhost, its port and AE title from the "
        "settings; over TLS when tls.listener is set). With --destinations, echo every "
        "configured result destination (over TLS when tls.export is set, as for PEER).",
    )
    parser.add_argument(
        "peer", nargs="?", metavar="AET@HOST:PORT", help="the peer to echo (default: this node)"
    )
    parser.add_argument("--destinations", action="store_true", help="echo every destination")
    parser.add_argument("--calling-aet", help="our AE title (default: the node's)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def echo(
    peer: Destination, calling_aet: str, timeout: float, tls: ssl.SSLContext | None = None
) -> str | None:
    """C-ECHO ``peer`` (over TLS with a client ``tls`` context); ``None`` on success."""
    target = Peer(peer.host, peer.port, peer.ae_title, calling_aet, timeout)
    try:
        with (
            associate(target, [(VERIFICATION, None)], purpose="C-ECHO", tls=tls) as association,
            reactor_paused(association),
        ):
            status = association.send_c_echo()
    except AssociationRejectedError as error:
        return f"association rejected ({error.reason}); {error.hint or 'check the AE titles'}"
    except AssociationFailedError:
        return "no association (peer unreachable, refused or aborted)"
    if "Status" not in status:
        return "no C-ECHO response"
    if int(status.Status) != 0:
        return f"C-ECHO status 0x{int(status.Status):04X}"
    return None


def run(args: argparse.Namespace) -> int:
    """0 when every echo succeeded, 1 otherwise, 2 on bad arguments."""
    overrides = {"node": {"data_dir": args.data_dir}} if args.data_dir else {}
    try:
        settings = load_settings(args.config, overrides=overrides)
        if args.peer:
            peers = [parse_destination(args.peer)]
            tls = settings.tls.export_context()
        elif args.destinations:
            peers = list(settings.export.destinations)
            tls = settings.tls.export_context()
        else:
            peers = [Destination(settings.node.ae_title, "127.0.0.1", settings.node.port)]
            tls = settings.tls.client_context() if settings.tls.listener else None
    except (SettingsError, TlsConfigurationError) as error:
        print(f"wbdwi echo: {error}", file=sys.stderr)
        return 2
    if not peers:
        print("wbdwi echo: no destination configured", file=sys.stderr)
        return 2
    calling = args.calling_aet or settings.node.ae_title
    failures = 0
    for peer in peers:
        problem = echo(peer, calling, args.timeout, tls)
        if problem is None:
            print(f"{peer}: echo ok")
        else:
            failures += 1
            print(f"{peer}: {problem}", file=sys.stderr)
    return 1 if failures else 0
