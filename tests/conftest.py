"""Shared fixtures: paths to recorded device replies and a valid seed-style config.

Also the guard of the layer `make unit` runs: tests/unit, whose tests must stay pure (no
socket, no process). A test there that opens one fails, in `make unit` and `make test` alike,
so an end-to-end test cannot slip into the fast layer. See docs/testing.md.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.helpers.e2e import closed_port
from tests.helpers.fixtures import SEED_CONFIG

# The fast pure layer (`make unit`, seconds) is the directory tests/unit: tests that decide, parse
# or compute in-process, with no socket, no server, no daemon and no process. The guard below
# holds every test there to it. See docs/testing.md.
UNIT_DIR = Path(__file__).parent / "unit"


@pytest.fixture
def write_config(tmp_path: Path) -> Any:
    """Write SEED_CONFIG updated with overrides to a temp config.json and return its path."""

    def _write(**overrides: Any) -> Path:
        data = {**SEED_CONFIG, **overrides}
        data = {k: v for k, v in data.items() if v is not ...}
        path = tmp_path / "config.json"
        path.write_text(json.dumps(data, indent=2), encoding="utf-8")
        return path

    return _write


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without aiohttp 3.14's new `stream_writer` argument.

    (pnuckowski/aioresponses#289, open.) The mocked request is already sent, so aiohttp only
    reads `output_size` from it. Harmless once aioresponses passes the argument itself.
    """

    def __init__(self, method: str, url: URL, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


@pytest.fixture(autouse=True)
def _aioresponses_compat(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test that uses aioresponses gets the aiohttp 3.14 shim."""
    monkeypatch.setattr("aioresponses.core.ClientResponse", _CompatResponse)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """One client session per test, closed afterwards (filterwarnings=error catches leaks)."""
    async with aiohttp.ClientSession() as client:
        yield client


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test, and that no other
    process can take meanwhile (`tests.helpers.e2e.closed_port`): "nothing listens there"."""
    with closed_port() as port:
        yield port


@pytest.hookimpl(tryfirst=True)  # before `-m unit` selects on the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/unit `unit`."""
    for item in items:
        if UNIT_DIR in item.path.parents:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(autouse=True)
def _unit_tests_stay_pure(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A `unit` test that opens a socket or starts a process fails, naming what it did."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    done: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*_args: Any, **_kwargs: Any) -> Any:
            done.append(what)
            raise AssertionError(f"a unit test {what}")

        return refused

    for name in ("connect", "connect_ex", "bind", "listen"):
        monkeypatch.setattr(socket.socket, name, refuse(f"used a socket ({name})"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("started a process"))
    monkeypatch.setattr(os, "fork", refuse("forked"))
    yield
    if done:
        pytest.fail(
            f"{request.node.nodeid} is in the fast pure layer (tests/unit, `make unit`) "
            f"but {done[0]}: move it to tests/integration or tests/e2e",
            pytrace=False,
        )
