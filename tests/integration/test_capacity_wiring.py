"""The composition root wires the capacity guard and the random start delay as configured."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from tesla_smart_charger.app.daemon import Daemon, install_capacity
from tesla_smart_charger.config.control import controller_config
from tesla_smart_charger.config.settings import load_config
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.runtime.capacity import StartDelay
from tesla_smart_charger.runtime.service import ChargeService, MeterPoller
from tesla_smart_charger.runtime.status import capacity_view


class Meter:
    name = "test meter"

    async def read(self) -> MeterReading:
        return MeterReading((5.0,), (230.0,), None, True, 0.0)


def _daemon(write_config: Any, clock: list[float], **keys: Any) -> Any:
    loaded = load_config(write_config(**keys))
    cfg = controller_config(loaded.settings, measured=True)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    service = ChargeService(cfg, cast(Any, None), queue, clock=lambda: clock[0])
    poller = MeterPoller(cast(Any, Meter()), queue, 1.0, clock=lambda: clock[0])
    fleet = SimpleNamespace(cars=[SimpleNamespace(service=service)])
    return SimpleNamespace(
        loaded=loaded, fleet=fleet, service=service, poller=poller, capacity=None
    )


def test_the_daemon_start_holds_the_first_raise_for_a_random_delay(
    write_config: Any, tmp_path: Path
) -> None:
    clock = [500.0]
    d = _daemon(write_config, clock, randomStartDelaySecs=600, importLimitKw=2.5)
    install_capacity(cast(Daemon, d), StartDelay(600.0, random.Random(1)))
    first = random.Random(1).uniform(0.0, 600.0)
    assert d.service.state.raise_hold_until == 500.0 + first
    assert d.capacity is not None
    assert d.poller.capacity is d.capacity
    assert capacity_view(d.capacity).limit_kw == 2.5


def test_without_the_keys_nothing_is_held_or_guarded(write_config: Any) -> None:
    clock = [500.0]
    d = _daemon(write_config, clock)
    install_capacity(cast(Daemon, d))
    assert d.service.state.raise_hold_until == 0.0
    assert d.capacity is None
    assert d.poller.capacity is None


async def test_each_reading_carries_the_windows_ceiling(write_config: Any) -> None:
    clock = [500.0]
    d = _daemon(write_config, clock, importLimitKw=2.5)
    install_capacity(cast(Daemon, d))
    await d.poller.poll_once()
    event = d.service.queue.get_nowait()
    # mid-window at start: the part before is taken as on the aim, so the ceiling is the aim
    assert event.import_ceiling_w == pytest.approx(2500.0 * 0.95, rel=1e-3)
