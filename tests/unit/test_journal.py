"""The journal's file: bounded by rotation, readable after a restart, CSV a spreadsheet opens,
and a disk that refuses writes never raises into control."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from tesla_smart_charger.runtime.journal import (
    CSV_COLUMNS,
    Journal,
    Readings,
    _followed,
    _Pending,
    to_csv,
)


def clock() -> float:
    return 1_796_000_000.0


def test_rotation_bounds_the_size_and_keeps_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, max_bytes=4096, files=2, wall=clock)
    for i in range(200):
        journal.record("cut", f"worst phase {30 + i % 9}.0 A: lowering", car="Ada", amps=6.0)
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["journal.jsonl", "journal.jsonl.1"]
    assert all(f.stat().st_size <= 4096 for f in files)
    again = Journal(path, max_bytes=4096, files=2, wall=clock)
    ids = [e.id for e in again.entries]
    assert ids[-1] == 200  # the newest survived the rotations
    assert ids == sorted(ids)
    assert ids[0] > 1
    assert again.record("pause", "x").id == 201  # ids go on after a restart


def test_an_update_is_appended_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, wall=clock)
    before = Readings((36.0, 12.0, 11.0), 16.0)
    entry = journal.record("cut", "over", car="Ada", before=before, amps=9.0)
    assert entry.followed == "not yet"
    journal.update(entry.id, followed="yes", after=Readings((29.0, 12.0, 11.0), 9.2))
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["update"]["followed"] == "yes"
    (loaded,) = Journal(path).entries
    assert loaded.followed == "yes"
    assert loaded.before == before
    assert loaded.after == Readings((29.0, 12.0, 11.0), 9.2)


def test_a_line_cut_short_by_a_power_cut_loses_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, wall=clock)
    journal.record("cut", "first")
    with path.open("ab") as f:
        f.write(b'{"id":2,"at":1796000000.0,"ki')
    journal2 = Journal(path)
    assert [e.reason for e in journal2.entries] == ["first"]
    assert journal2.record("pause", "next").id == 2


def test_csv_parses_with_a_header_and_quotes(tmp_path: Path) -> None:
    journal = Journal(None, wall=clock)
    journal.record(
        "cut",
        'worst phase 36.0 A, "kettle": lowering\n16 -> 9 A',
        car="Ada, the red one",
        before=Readings((36.0, 12.5), 16.0),
        amps=9.0,
    )
    journal.record("relay_off", "relay", car=None)
    text = to_csv(journal.entries)
    assert text.startswith(",".join(CSV_COLUMNS) + "\r\n")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == 2
    assert rows[0]["reason"] == 'worst phase 36.0 A, "kettle": lowering\n16 -> 9 A'
    assert rows[0]["car"] == "Ada, the red one"
    assert rows[0]["supply_before_a"] == "36.00 12.50"
    assert rows[0]["time"] == "2026-11-30T00:53:20.000+00:00"
    assert rows[0]["followed"] == "not yet"
    assert rows[1]["followed"] == "n/a"  # a relay switch has nothing for the car to follow


def test_a_refusing_disk_never_raises_logs_once_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state"
    state.write_text("not a folder")  # every write below it fails (ENOTDIR), also for root
    journal = Journal(state / "journal.jsonl", wall=clock)
    with caplog.at_level(logging.INFO, logger="tesla_smart_charger.runtime.journal"):
        for i in range(5):
            journal.record("cut", f"cut {i}")
        assert journal.disk_failing
        assert len(journal.entries) == 5  # in memory
        assert caplog.text.count("cannot write") == 1
        state.unlink()
        state.mkdir()
        journal.record("cut", "cut 5")
        assert not journal.disk_failing
        assert caplog.text.count("is written again") == 1
    assert [e.reason for e in Journal(state / "journal.jsonl").entries] == [
        f"cut {i}" for i in range(6)
    ]


def test_followed_by_the_car_channel_or_by_the_supply() -> None:
    before = Readings((36.0,), 16.0)
    pending = _Pending(1, 0.0, 9.0, before, 7.0)
    assert _followed(pending, Readings((30.0,), 9.5))
    assert not _followed(pending, Readings((35.0,), 15.0))
    unmeasured = _Pending(1, 0.0, 9.0, Readings((36.0,), None), 7.0)
    assert _followed(unmeasured, Readings((29.0,), None))
    assert not _followed(unmeasured, Readings((35.0,), None))


def _service(charging_state: str, **state: Any) -> Any:
    from dataclasses import replace  # noqa: PLC0415
    from types import SimpleNamespace  # noqa: PLC0415

    from tesla_smart_charger import control as core  # noqa: PLC0415
    from tesla_smart_charger.control.models import (  # noqa: PLC0415
        ChargeState,
        VehicleSnapshot,
        VehicleState,
    )

    charge = ChargeState(charging_state, 16, 16, 0, None, 2)
    s = replace(
        core.initial_state(0.0), vehicle=VehicleSnapshot(VehicleState.ONLINE, charge, 0.0), **state
    )
    return SimpleNamespace(state=s)


def test_the_dashboard_tells_our_pause_from_the_drivers_stop() -> None:
    from tesla_smart_charger.httpapi.dashboard import car_word  # noqa: PLC0415

    assert car_word(_service("Stopped", paused=True)) == "paused: waiting for room"
    assert car_word(_service("Stopped", solar_stopped=True)) == "paused: waiting for sun"
    assert car_word(_service("Stopped")) == "stopped by the driver"
    assert car_word(_service("Charging")) == "charging"
    assert car_word(_service("Disconnected")) == "unplugged"


class _FakeService:
    """What JournalWatch reads of a ChargeService: its commands, state and escalation."""

    def __init__(self, reading: Any) -> None:
        from collections import deque  # noqa: PLC0415
        from dataclasses import replace  # noqa: PLC0415

        from tesla_smart_charger import control as core  # noqa: PLC0415

        self.commands: deque[Any] = deque(maxlen=50)
        self.state = replace(core.initial_state(0.0), setpoint=16, reading=reading)
        self.escalation: Any = None
        self.listeners: list[Any] = []

    def add_listener(self, callback: Any) -> None:
        self.listeners.append(callback)

    def event(self) -> None:
        for callback in self.listeners:
            callback()


def _reading(supply: float, car: float | None = None) -> Any:
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    return MeterReading((supply,), (230.0,), car, True, 0.0)


def test_the_watch_journals_cuts_and_pauses_not_raises_and_sees_them_followed() -> None:
    from dataclasses import replace  # noqa: PLC0415

    from tesla_smart_charger.runtime.journal import JournalWatch  # noqa: PLC0415
    from tesla_smart_charger.runtime.service import CommandRecord  # noqa: PLC0415

    now = [0.0]
    service = _FakeService(_reading(36.0, 16.0))
    journal = Journal(None, wall=clock)
    JournalWatch(
        journal,
        [("Ada", service)],  # type: ignore[list-item]
        real_reading=lambda: service.state.reading,
        clock=lambda: now[0],
    )
    service.event()
    service.commands.append(CommandRecord(clock(), "set_charging_amps", 9, "ok", "over"))
    service.state = replace(service.state, setpoint=9, command_from=16)
    service.event()
    service.commands.append(CommandRecord(clock(), "set_charging_amps", 12, "ok", "room"))
    service.state = replace(service.state, setpoint=12, command_from=9)
    service.event()
    (cut,) = journal.entries  # the raise is not a protective action
    assert (cut.kind, cut.car, cut.amps, cut.followed) == ("cut", "Ada", 9.0, "not yet")
    assert cut.before == Readings((36.0,), 16.0)
    service.state = replace(service.state, reading=_reading(29.0, 9.2))
    now[0] = 3.0
    service.event()
    (cut,) = journal.entries
    assert cut.followed == "yes"
    assert cut.after == Readings((29.0,), 9.2)
    # A pause the car ignores: "no" once the deadline has passed with the readings unchanged.
    service.commands.append(CommandRecord(clock(), "charge_stop", None, "ok", "no room"))
    service.event()
    now[0] = 100.0
    service.event()
    assert [(e.kind, e.followed) for e in journal.entries] == [("cut", "yes"), ("pause", "no")]


def test_without_a_meter_nothing_says_whether_the_car_followed() -> None:
    from dataclasses import replace  # noqa: PLC0415

    from tesla_smart_charger.runtime.journal import JournalWatch  # noqa: PLC0415
    from tesla_smart_charger.runtime.service import CommandRecord  # noqa: PLC0415

    now = [0.0]
    service = _FakeService(None)
    journal = Journal(None, wall=clock)
    JournalWatch(journal, [(None, service)], real_reading=lambda: None, clock=lambda: now[0])  # type: ignore[list-item]
    service.commands.append(CommandRecord(clock(), "set_charging_amps", 9, "ok", "/overload"))
    service.state = replace(service.state, setpoint=9, command_from=16)
    service.event()
    now[0] = 100.0
    service.event()
    assert [(e.kind, e.followed) for e in journal.entries] == [("cut", "n/a")]
