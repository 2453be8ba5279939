"""``wbdwi settings``: the example configuration, the settings reference, the values in force."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from service.commands.serve import add_config_argument
from service.settings import SettingsError, load_settings
from service.settings.docs import (
    render_effective_toml,
    render_example_toml,
    render_settings_markdown,
)

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``settings`` subcommand."""
    parser = subparsers.add_parser(
        "settings",
        help="print the example TOML, the settings reference, or the settings in force",
        description="--example-toml prints every setting commented out with its default "
        "(the start of /etc/wbdwi/wbdwi.toml); --markdown prints the settings reference "
        "(docs/settings.md); --effective prints the values in force after --config (or "
        "WBDWI_CONFIG), the WBDWI_* environment and the defaults are combined, and exits "
        "2 when they do not load.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--example-toml", action="store_true", help="every setting and default")
    mode.add_argument("--markdown", action="store_true", help="the settings reference")
    mode.add_argument("--effective", action="store_true", help="the settings in force")
    add_config_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the requested document; 2 when the configuration does not load."""
    if args.example_toml:
        sys.stdout.write(render_example_toml())
        return 0
    if args.markdown:
        sys.stdout.write(render_settings_markdown())
        return 0
    overrides = {"node": {"data_dir": args.data_dir}} if args.data_dir else {}
    try:
        settings = load_settings(args.config, overrides=overrides)
    except SettingsError as error:
        print(f"wbdwi settings: {error}", file=sys.stderr)
        return 2
    sys.stdout.write(render_effective_toml(settings))
    return 0
