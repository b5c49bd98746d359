"""The setup commands run in-process, and a simulated token endpoint's config and store."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tesla_smart_charger.car.tokens import TokenPair, TokenStore
from tesla_smart_charger.cli.setup import add_subcommands
from tesla_smart_charger.simulator.oauth import SimulatedOAuth

WriteConfig = Callable[..., Path]


CLIENT = "my-client-id"


SECRET = "my-client-SECRET-value"


REDIRECT = "https://charger.example.com/callback"


VIN = "5YJ3E1EA7KF000001"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="tesla-smart-charger")
    parser.add_argument("--config", default="config.json")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    result: int = args.func(args)
    return result


def oauth_config(write_config: WriteConfig, sim: SimulatedOAuth, **extra: Any) -> Path:
    return write_config(
        teslaTokenUrl=sim.token_url,
        teslaClientId=CLIENT,
        teslaClientSecret=SECRET,
        teslaRedirectUri=REDIRECT,
        teslaAccessToken=...,
        teslaRefreshToken=...,
        **extra,
    )


def seed_store(config: Path, sim: SimulatedOAuth, *, expired: bool = False) -> TokenPair:
    access, refresh = sim.issue_initial()
    now = time.time()
    pair = TokenPair(access, refresh, now - 60 if expired else now + 3600, now - 7200, "na")
    TokenStore(config.parent / "tokens.json").save(pair)
    return pair
