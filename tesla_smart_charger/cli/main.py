"""Command line: `tesla-smart-charger [--config PATH] [--monitor] [command]`.

Without a command the daemon runs (the seed's usage, so existing service files keep working).
Configuration problems exit with code 2 and one line per problem, before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tesla_smart_charger import __version__
from tesla_smart_charger.config.settings import LoadedConfig, check_config, redacted
from tesla_smart_charger.errors import ConfigError
from tesla_smart_charger.logging_setup import configure_logging

EXIT_CONFIG = 2


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options accepted before and after the command (`--config x check-config` and the reverse)."""
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "--config",
        default=default if suppress else "config.json",
        metavar="PATH",
        help="configuration file (default: ./config.json)",
    )
    parser.add_argument(
        "--log-level",
        default=default if suppress else "INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (default: INFO)",
    )
    parser.add_argument(
        "--log-format",
        default=default if suppress else "plain",
        choices=["plain", "json"],
        help="plain lines for people, json for log shippers",
    )


RUN_HELP = """\
Run the daemon until SIGTERM or Ctrl-C: serve the HTTP API on apiHost:apiPort and keep
the car's charging current within homeMaxAmps.

Needs: homeMaxAmps, teslaVehicleId, teslaClientId and tokens (auth exchange, or the
seed's teslaAccessToken/teslaRefreshToken), and the command key (teslaPrivateKey, default
private-key.pem beside the config; commands are then signed here and sent to the Fleet
API) or tesla-http-proxy at teslaHttpProxy; with --monitor also energyMonitorIp.
Writes, beside the config: tokenFile (tokens.json, mode 0600, and tokens.json.lock),
charger-state.json (the driver's own charge setting, kept across restarts) and, when
signing, signing-sessions.json (0600: the car's session, so a restart needs no
handshake). Holds tokens.json.daemon.lock while it runs: a second daemon on the same
store exits with 2."""

CHECK_CONFIG_HELP = """\
Validate the configuration file and the TSC_* environment overrides, and print the
effective settings as JSON with every secret redacted. Names each bad key on its own
line. Writes nothing, contacts nothing. Exit 0 when valid, 2 otherwise."""


# Commands that need only the settings model. For a command line made of these (or none) the
# setup commands and the demo, which pull in aiohttp, cryptography and the simulator, are not
# even imported: the daemon starts and a bad config.json is reported a good deal sooner.
_LIGHT_COMMANDS = frozenset({"run", "check-config"})
_VALUE_OPTIONS = frozenset({"--config", "--log-level", "--log-format", "--port-file"})


def _light(argv: Sequence[str]) -> bool:
    """True when `argv` names no command beyond run/check-config and asks for no help."""
    expects_value = False
    for arg in argv:
        if expects_value:
            expects_value = False
            continue
        if arg in ("-h", "--help"):
            return False
        if arg.startswith("-"):
            expects_value = arg in _VALUE_OPTIONS  # `--config=x` carries its own value
            continue
        if arg not in _LIGHT_COMMANDS:
            return False
    return True


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The argument parser with every subcommand (only the light ones when `argv` needs no more)."""
    parser = argparse.ArgumentParser(
        prog="tesla-smart-charger",
        description="Charge a Tesla as fast as the house allows, and never faster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _common_options(parser, suppress=False)
    parser.add_argument(
        "-m",
        "--monitor",
        action="store_true",
        help="poll the energy meter (measured mode); without it the daemon acts on /overload calls",
    )
    parser.add_argument(
        "--port-file",
        metavar="PATH",
        help="write the API's port here once it listens (with apiPort 0 the OS picks it)",
    )
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    run = sub.add_parser(
        "run",
        parents=[common],
        formatter_class=fmt,
        help="run the daemon (the default)",
        description=RUN_HELP,
    )
    run.add_argument(
        "-m",
        "--monitor",
        action="store_true",
        default=argparse.SUPPRESS,
        help="poll the energy meter (measured mode)",
    )
    run.add_argument(
        "--port-file",
        default=argparse.SUPPRESS,
        metavar="PATH",
        help="write the API's port here once it listens (with apiPort 0 the OS picks it)",
    )
    run.set_defaults(func=cmd_run)
    check = sub.add_parser(
        "check-config",
        parents=[common],
        formatter_class=fmt,
        help="validate the configuration and print it with secrets redacted",
        description=CHECK_CONFIG_HELP,
    )
    check.add_argument(
        "-m",
        "--monitor",
        action="store_true",
        default=argparse.SUPPRESS,
        help="check for measured mode too (energyMonitorIp required)",
    )
    check.set_defaults(func=cmd_check_config)
    parser.set_defaults(func=cmd_run)
    if argv is not None and _light(argv):
        return parser
    from tesla_smart_charger.cli import demo  # noqa: PLC0415
    from tesla_smart_charger.cli import setup as setup_cli  # noqa: PLC0415 (keeps `--version` fast)

    setup_cli.add_subcommands(sub, parents=[common])
    demo.add_subcommand(sub)
    return parser


def load_or_exit(path: str, *, monitor: bool = False) -> LoadedConfig | int:
    """Check the configuration as the daemon will, or print every problem and return 2.

    The daemon and check-config both come here, so they can never disagree.
    """
    try:
        loaded = check_config(path, monitor=monitor)
    except ConfigError as err:
        print("configuration error:", file=sys.stderr)
        for line in err.problems:
            print(f"  {line}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return loaded


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate and print the effective configuration (secrets redacted)."""
    loaded = load_or_exit(args.config, monitor=bool(getattr(args, "monitor", False)))
    if isinstance(loaded, int):
        return loaded
    print(json.dumps(redacted(loaded.settings), indent=2, default=str))
    print(f"{loaded.path}: configuration is valid", file=sys.stderr)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM/SIGINT."""
    loaded = load_or_exit(args.config, monitor=bool(getattr(args, "monitor", False)))
    if isinstance(loaded, int):
        return loaded
    configure_logging(args.log_level, args.log_format)
    from tesla_smart_charger.app.daemon import run_daemon  # noqa: PLC0415 (check-config stays light)

    try:
        port_file = getattr(args, "port_file", None)
        return asyncio.run(
            run_daemon(
                loaded,
                monitor=bool(getattr(args, "monitor", False)),
                port_file=Path(port_file) if port_file else None,
            )
        )
    except ConfigError as err:
        for line in err.problems:
            print(f"configuration error: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and `python -m tesla_smart_charger`."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(words)
    args = parser.parse_args(words)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
