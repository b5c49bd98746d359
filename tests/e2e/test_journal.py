"""The journal of protective actions, black-box: the real daemon against the simulated world.

A house step makes the daemon cut the car; the cut is in GET /api/journal with the readings
before and after and "followed: yes", as CSV too, and it is still there after a restart. On a
read-only state folder control goes on and the cut is kept in memory.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tesla_smart_charger.simulator.car import CarModel
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, WAIT_SECS, DaemonProcess, run_daemon
from tests.helpers.storage import tiny_tmpfs

pytestmark = pytest.mark.slow


def make_world() -> World:
    car = CarModel(request_amps=16, charging_state="Charging", ramp_delay=1.0, capacity_kwh=None)
    return World(car=car, manual_house=(10.0,))


async def journal(daemon: DaemonProcess) -> list[dict[str, Any]]:
    code, body = await daemon.get("/api/journal")
    assert code == 200, body
    entries: list[dict[str, Any]] = body["entries"]
    return entries


async def wait_journal(daemon: DaemonProcess, predicate: Any) -> list[dict[str, Any]]:
    """Poll /api/journal until `predicate(entries)` holds (a deadline for failures only)."""
    deadline = time.monotonic() + WAIT_SECS * LOADED
    while True:
        entries = await journal(daemon)
        if predicate(entries):
            return entries
        if time.monotonic() > deadline:
            pytest.fail(f"journal never matched: {entries}\n{daemon.log()}")
        await daemon.wait_status(lambda _: True)  # one round trip between two looks


def followed_cuts(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["kind"] == "cut" and e["followed"] == "yes"]


async def csv_text(daemon: DaemonProcess) -> tuple[str, str]:
    async with (
        aiohttp.ClientSession() as s,
        s.get(daemon.url + "/api/journal", params={"format": "csv"}) as r,
    ):
        assert r.status == 200
        return r.headers["Content-Type"], await r.text()


async def test_a_cut_is_journaled_as_csv_and_survives_a_restart(tmp_path: Path) -> None:
    world = make_world()
    async with world:
        config = world.write_config(tmp_path)
        async with run_daemon(tmp_path, config, "--monitor") as daemon:
            await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
            assert await journal(daemon) == []
            world.set_house(20.0)  # 20 + 16 = 36 A on a 30 A main
            entries = await wait_journal(daemon, followed_cuts)
            cut = followed_cuts(entries)[0]
            # Every lowering the car received is in the journal, and nothing else is a cut.
            sent = [
                body["charging_amps"]
                for _, command, body in world.proxy.commands
                if command == "set_charging_amps"
            ]
            cuts = [e for e in entries if e["kind"] == "cut"]
            assert [e["amps"] for e in cuts] == [float(a) for a in sent if a < 16]
            assert cut["before"]["supply_amps"][0] > 30.0  # the overload it answered
            assert cut["after"]["supply_amps"][0] < cut["before"]["supply_amps"][0]
            assert cut["reason"]
            content_type, text = await csv_text(daemon)
            assert content_type.startswith("text/csv")
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
            assert [r["kind"] for r in rows] == [e["kind"] for e in entries]
            assert rows[0]["time"].endswith("+00:00")
            assert rows[0]["reason"] == entries[0]["reason"]
            _, before = await daemon.get("/api/history")
            seen = {p["t"] for p in before["history"]}
        # Restart on the same state folder: the cut is still there, and ids go on; the
        # dashboard's chart starts with what it showed before (kept at SIGTERM).
        async with run_daemon(tmp_path, config, "--monitor", log_mode="ab") as daemon:
            again = await journal(daemon)
            assert cut in again
            assert (tmp_path / "journal.jsonl").exists()
            _, after = await daemon.get("/api/history")
            assert seen <= {p["t"] for p in after["history"]}
            assert after["energy"][0]["kwh"]  # the car's kWh of the first run


async def test_a_read_only_state_folder_keeps_control_and_the_journal_in_memory(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    with tiny_tmpfs(state) as storage:
        world = make_world()
        async with world:
            config = world.write_config(tmp_path, tokenFile=str(state / "tokens.json"))
            async with run_daemon(tmp_path, config, "--monitor") as daemon:
                await daemon.wait_status(
                    lambda st: st["meter"] is not None and st["meter"]["valid"]
                )
                storage.read_only()
                mark = len(daemon.log())
                world.set_house(20.0)
                _, _, body = await world.proxy.wait_for_command(
                    "set_charging_amps", timeout=3 * LOADED
                )
                assert body["charging_amps"] < 16  # the cut went out
                entries = await wait_journal(daemon, followed_cuts)
                code, reply = await daemon.get("/api/journal")
                assert reply["disk"] == "failing"
                code, _ = await daemon.get("/health")
                assert code == 200  # the breaker is protected: no 503 for the journal
                log = daemon.log()[mark:]
                assert log.count("journal: cannot write") == 1  # said once, not per line
                storage.writable()
                world.set_house(10.0)
                world.set_house(22.0)  # a second overload: its cut is written with the first
                await wait_journal(daemon, lambda es: len(followed_cuts(es)) >= 2)
                code, reply = await daemon.get("/api/journal")
                assert reply["disk"] == "ok"
                log = daemon.log()
                assert log.count("journal: cannot write") == 1  # the start, once
                assert log.count("journal.jsonl is written again") == 1  # and the end
                disk = (state / "journal.jsonl").read_text()
                assert f'"id":{entries[0]["id"]},' in disk


async def test_a_car_that_ignores_cuts_leaves_every_step_in_the_journal(tmp_path: Path) -> None:
    car = CarModel(
        request_amps=16,
        charging_state="Charging",
        ramp_delay=0.5,
        capacity_kwh=None,
        fault="ignores_commands",
    )
    world = World(car=car, manual_house=(10.0,), relay_gen=2)
    async with world:
        config = world.write_config(tmp_path, escalateAfterSecs=5.0, carSettleSecs=2)
        async with run_daemon(tmp_path, config, "--monitor") as daemon:
            await daemon.wait_status(lambda st: st["meter"] is not None and st["meter"]["valid"])
            world.set_house(20.0)  # 36 A on 30 A, and the car will not follow any cut

            def kinds(entries: list[dict[str, Any]]) -> list[str]:
                return [e["kind"] for e in entries]

            entries = await wait_journal(daemon, lambda es: "relay_off" in kinds(es))
            seen = kinds(entries)
            # The cut, the escalation's stop and the relay, in the order they happened.
            assert seen.index("cut") < seen.index("escalation") < seen.index("relay_off")
            assert "pause" in seen  # the escalation's charge_stop
            steps = [e["result"] for e in entries if e["kind"] == "escalation"]
            assert steps[:2] == ["charge_stop", "relay_off"]
            relay = world.relay
            assert relay is not None
            assert (0, False) in relay.switches
            # The car drew on: the first cut was not followed (the readings said so).
            first = await wait_journal(
                daemon,
                lambda es: next(e for e in es if e["kind"] == "cut")["followed"] != "not yet",
            )
            assert next(e for e in first if e["kind"] == "cut")["followed"] == "no"
