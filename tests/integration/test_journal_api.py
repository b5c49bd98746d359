"""GET /api/journal over HTTP, and the dashboard's own file: what the page shows after a restart.

The real daemon runs in-process against the simulated world (observed_daemon); entries are
added through the journal's one-line API, as the grid-limit and capacity parts do.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from tesla_smart_charger.httpapi.dashboard import HISTORY_FILE, Dashboard
from tesla_smart_charger.runtime.journal import Readings
from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import VIN_A, VIN_B, WAIT_SECS
from tests.helpers.observe import charging_car, observed_daemon
from tests.helpers.status import capacity_and_grid_limit

FAST: dict[str, Any] = {"energyMonitorPollSecs": 0.2}


async def test_since_limit_format_and_bad_values(tmp_path: Path) -> None:
    async with observed_daemon(
        tmp_path, World(car=charging_car(), manual_house=(5.0,)), **FAST
    ) as run:
        journal = run.daemon.journal
        assert journal is not None
        journal.record("grid_limit_on", "the grid operator asks for 4.2 kW", at=1_796_000_000.0)
        journal.record(
            "capacity_cut",
            "15-min average heading for 2.6 kW of 2.5 kW",
            car="Ada",
            amps=8.0,
            before=Readings((12.0, 3.0, 2.5), 10.0),
            at=1_796_000_100.0,
        )
        journal.record("grid_limit_off", "back to normal", at=1_796_000_200.0)
        code, body = await run.get("/api/journal")
        assert code == 200
        assert [e["kind"] for e in body["entries"]] == [
            "grid_limit_on",
            "capacity_cut",
            "grid_limit_off",
        ]
        assert body["entries"][1]["before"] == {"supply_amps": [12.0, 3.0, 2.5], "car_amps": 10.0}
        code, body = await run.get("/api/journal?since=2026-11-30T00:55:00Z")
        assert [e["kind"] for e in body["entries"]] == ["capacity_cut", "grid_limit_off"]
        code, body = await run.get("/api/journal?since=1796000150&limit=5")
        assert [e["kind"] for e in body["entries"]] == ["grid_limit_off"]
        code, body = await run.get("/api/journal?limit=1")
        assert [e["kind"] for e in body["entries"]] == ["grid_limit_off"]
        async with run.session.get(run.url + "/api/journal", headers={"Accept": "text/csv"}) as r:
            assert r.status == 200
            assert r.content_type == "text/csv"
            rows = list(csv.DictReader(io.StringIO(await r.text(), newline="")))
        assert rows[1]["car"] == "Ada"
        assert rows[1]["supply_before_a"] == "12.00 3.00 2.50"
        for query, name in (
            ("?since=yesterday", "since"),
            ("?limit=-1", "limit"),
            ("?limit=ten", "limit"),
            ("?format=xml", "format"),
        ):
            code, body = await run.get("/api/journal" + query)
            assert code == 400, query
            assert body["error"].startswith(name), body


def _two_cars() -> World:
    a = CarModel(vin=VIN_A, request_amps=16, ramp_delay=0.5, capacity_kwh=None)
    b = CarModel(vin=VIN_B, numeric_id=100022, vehicle_id=99998, request_amps=16)
    return World(cars=(a, b), manual_house=(2.0,))


async def test_each_car_has_its_own_line_and_the_history_survives_a_restart(
    tmp_path: Path,
) -> None:
    cars = [{"vin": VIN_A, "name": "Ada"}, {"vin": VIN_B}]
    async with observed_daemon(tmp_path, _two_cars(), vehicles=cars, **FAST) as run:
        code, snap = await run.get("/api/history")
        assert code == 200
        assert snap["config"]["cars"] == ["Ada", VIN_B]
        assert snap["config"]["tokenRequired"] is False

        def both_counted() -> bool:
            day = next(iter(run.dashboard.energy.values()), {})
            return all(day.get(name, 0.0) > 0 for name in ("Ada", VIN_B))

        # Wait until both cars draw and their kWh grow (a deadline for failures only).
        deadline = asyncio.get_running_loop().time() + WAIT_SECS
        while not both_counted():
            assert asyncio.get_running_loop().time() < deadline, run.dashboard.latest
            await asyncio.sleep(0.1)
        latest = run.dashboard.latest
        assert latest is not None
        assert latest["car"] is None  # no one figure for two cars
        assert [c["id"] for c in latest["cars"]] == ["Ada", VIN_B]
        assert all(c["mode"] == "fast" for c in latest["cars"])
        assert all(c["status"] == "charging" for c in latest["cars"])
        code, snap = await run.get("/api/history")
        assert set(snap["energy"][0]["kwh"]) == {"Ada", VIN_B}
        assert {c["car"] for c in snap["commands"]} <= {"Ada", VIN_B}
        run.dashboard.save()
        kept = run.dashboard.recent()
        energy = dict(run.dashboard.energy)
    saved = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert len(saved["samples"]) >= len(kept) > 0
    # The next run on the same folder starts with the samples and the kWh of the last one.
    async with observed_daemon(tmp_path, _two_cars(), vehicles=cars, **FAST) as run:
        again = Dashboard(run.daemon)
        assert again.recent()[: len(kept)] == kept[-len(again.recent()[: len(kept)]) :]
        assert set(again.energy) == set(energy)
        day = next(iter(energy))
        assert again.energy[day]["Ada"] >= energy[day]["Ada"]


async def test_the_capacity_window_and_grid_limit_reach_the_page_when_status_has_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with observed_daemon(
        tmp_path, World(car=charging_car(), manual_house=(5.0,)), **FAST
    ) as run:
        code, snap = await run.get("/api/history")
        assert code == 200
        assert "capacity" not in snap
        assert "grid_limit" not in snap
        capacity, grid = capacity_and_grid_limit()
        real = run.daemon.status
        monkeypatch.setattr(
            run.daemon,
            "status",
            lambda: real().model_copy(update={"capacity": capacity, "grid_limit": grid}),
        )
        code, snap = await run.get("/api/history")
        assert snap["capacity"] == capacity.model_dump(mode="json")
        assert snap["grid_limit"] == grid.model_dump(mode="json")
