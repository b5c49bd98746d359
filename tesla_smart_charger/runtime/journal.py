"""The journal: every protective action, kept on disk so it can be shown to a grid operator.

A cut, a pause, an escalation step, a relay switch, a grid-limit change, a capacity cut: each is
one entry with the time, the car, the reason, the readings before and after (supply amps per
phase, the car's amps) and whether the car followed ("not yet" until the readings show it).

Entries are JSON lines appended with fsync to `journal.jsonl` beside tokens.json; a line that
fills in "followed" later is appended too (`{"id": n, "update": {...}}`), so nothing is ever
rewritten in place. Past `max_bytes` the file is renamed to `journal.jsonl.1` (atomic; the older
one goes), so the journal never takes more than `files` times `max_bytes`. A full or read-only disk
never stops control: the condition is logged once, entries stay in memory and are written when
the disk takes them again.

`JournalWatch` fills the journal from what the controllers already keep (their recent commands,
the escalation's level, the meter's readings), so the control code needs no hook; other parts
(the grid limit, the capacity guard) call `Journal.record()` with one line.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

if TYPE_CHECKING:
    from tesla_smart_charger.control.models import MeterReading
    from tesla_smart_charger.runtime.service import ChargeService, CommandRecord

_LOG = logging.getLogger(__name__)

JOURNAL_FILE: Final = "journal.jsonl"
MAX_BYTES: Final = 1024 * 1024  # per file
FILES: Final = 2  # the current file and one older: at most 2 MiB on disk
MEMORY_ENTRIES: Final = 5000  # what /api/journal can show (more than 2 MiB of lines hold)
UNWRITTEN_MAX: Final = 2000  # lines kept for the disk while it refuses them
# A car is taken to have followed once its amps are within this of the new setpoint.
FOLLOW_TOLERANCE_AMPS: Final = 1.0
# After this long without the readings showing it, the car did not follow.
FOLLOW_DEADLINE_SECS: Final = 60.0

Kind = Literal[
    "cut",
    "pause",
    "escalation",
    "relay_off",
    "relay_on",
    "grid_limit_on",
    "grid_limit_off",
    "capacity_cut",
]
KINDS: Final[tuple[str, ...]] = get_args(Kind)
Followed = Literal["yes", "no", "not yet", "n/a"]
CSV_COLUMNS: Final = (
    "id",
    "time",
    "kind",
    "car",
    "reason",
    "amps",
    "result",
    "supply_before_a",
    "car_before_a",
    "supply_after_a",
    "car_after_a",
    "followed",
)


@dataclass(frozen=True, slots=True)
class Readings:
    """What the meter showed: supply amps per phase (signed, import positive), the car's amps."""

    supply: tuple[float, ...] | None = None
    car: float | None = None

    @classmethod
    def of(cls, reading: MeterReading | None, car: float | None = None) -> Readings:
        """From a meter reading (None or invalid: nothing known); `car` overrides its car_amps."""
        if reading is None or not reading.valid:
            return cls(None, car)
        amps = car if car is not None else reading.car_amps
        return cls(tuple(round(a, 2) for a in reading.phase_amps), amps)

    def as_dict(self) -> dict[str, Any]:
        """JSON shape: `{"supply_amps": [...], "car_amps": n}`."""
        return {
            "supply_amps": list(self.supply) if self.supply is not None else None,
            "car_amps": None if self.car is None else round(self.car, 2),
        }

    @classmethod
    def from_dict(cls, raw: Any) -> Readings | None:
        """The inverse of as_dict; anything malformed is None (an old or damaged line)."""
        if not isinstance(raw, dict):
            return None
        supply = raw.get("supply_amps")
        car = raw.get("car_amps")
        try:
            phases = tuple(float(a) for a in supply) if isinstance(supply, list) else None
            return cls(phases, float(car) if isinstance(car, int | float) else None)
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Entry:
    """One protective action."""

    id: int
    at: float  # wall clock, seconds
    kind: str
    reason: str
    car: str | None = None
    amps: float | None = None  # the setpoint or limit the action set, if any
    result: str = "ok"  # the command's outcome: ok, or why it failed
    before: Readings | None = None
    after: Readings | None = None
    followed: str = "not yet"

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of /api/journal and of a journal line."""
        return {
            "id": self.id,
            "time": iso(self.at),
            "at": round(self.at, 3),
            "kind": self.kind,
            "car": self.car,
            "reason": self.reason,
            "amps": self.amps,
            "result": self.result,
            "before": self.before.as_dict() if self.before else None,
            "after": self.after.as_dict() if self.after else None,
            "followed": self.followed,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Entry | None:
        """An entry from a journal line, or None when the line is not one."""
        try:
            amps = raw.get("amps")
            return cls(
                id=int(raw["id"]),
                at=float(raw["at"]),
                kind=str(raw["kind"]),
                reason=str(raw.get("reason", "")),
                car=None if raw.get("car") is None else str(raw["car"]),
                amps=float(amps) if isinstance(amps, int | float) else None,
                result=str(raw.get("result", "ok")),
                before=Readings.from_dict(raw.get("before")),
                after=Readings.from_dict(raw.get("after")),
                followed=str(raw.get("followed", "not yet")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def iso(wall: float) -> str:
    """ISO 8601 in UTC with milliseconds: what a spreadsheet and a person both read."""
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


def _amps(values: Sequence[float] | None) -> str:
    return "" if values is None else " ".join(f"{a:.2f}" for a in values)


def to_csv(entries: Iterable[Entry]) -> str:
    """CSV with a header row, RFC 4180 quoting and CRLF line ends (any spreadsheet opens it).

    Supply amps per phase are one cell ("12.30 11.90 13.00"), so the columns never depend on
    the number of phases.
    """
    out = io.StringIO()
    writer = csv.writer(out, dialect="excel", lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(CSV_COLUMNS)
    for e in entries:
        b, a = e.before or Readings(), e.after or Readings()
        writer.writerow(
            [
                e.id,
                iso(e.at),
                e.kind,
                e.car or "",
                e.reason,
                "" if e.amps is None else f"{e.amps:g}",
                e.result,
                _amps(b.supply),
                "" if b.car is None else f"{b.car:.2f}",
                _amps(a.supply),
                "" if a.car is None else f"{a.car:.2f}",
                e.followed,
            ]
        )
    return out.getvalue()


class Journal:
    """The entries in memory (newest last) and their durable copy on disk."""

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = MAX_BYTES,
        files: int = FILES,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.files = max(1, files)
        self._wall = wall
        self.entries: deque[Entry] = deque(maxlen=MEMORY_ENTRIES)
        self._unwritten: deque[bytes] = deque(maxlen=UNWRITTEN_MAX)
        self.disk_failing = False  # the condition is logged once when it starts and ends
        self.lines_written = 0
        self._size = 0
        self._next_id = 1
        self._listeners: list[Callable[[Entry], None]] = []
        if path is not None:
            self._load(path)

    # --- the API other parts call -------------------------------------------------------------
    def record(
        self,
        kind: str,
        reason: str,
        *,
        car: str | None = None,
        before: Readings | None = None,
        after: Readings | None = None,
        amps: float | None = None,
        result: str = "ok",
        followed: str | None = None,
        at: float | None = None,
    ) -> Entry:
        """Append one protective action; never raises for the disk (control must go on).

        `followed` defaults to "not yet" for an action the car must follow (cut, pause, capacity
        cut) and "n/a" for the others.
        """
        if followed is None:
            followed = "not yet" if kind in ("cut", "pause", "capacity_cut") else "n/a"
        entry = Entry(
            id=self._next_id,
            at=round(
                self._wall() if at is None else at, 3
            ),  # as on disk: a restart changes nothing
            kind=kind,
            reason=reason,
            car=car,
            amps=amps,
            result=result,
            before=before,
            after=after,
            followed=followed,
        )
        self._next_id += 1
        self.entries.append(entry)
        self._append(entry.as_dict())
        for listener in self._listeners:
            listener(entry)
        return entry

    def update(self, entry_id: int, *, followed: str, after: Readings | None) -> Entry | None:
        """Fill in whether the car followed (and the reading that shows it)."""
        for i in range(len(self.entries) - 1, -1, -1):
            old = self.entries[i]
            if old.id == entry_id:
                new = replace(old, followed=followed, after=after)
                self.entries[i] = new
                change = {"followed": followed, "after": after.as_dict() if after else None}
                self._append({"id": entry_id, "update": change})
                for listener in self._listeners:
                    listener(new)
                return new
        return None

    def add_listener(self, callback: Callable[[Entry], None]) -> None:
        """Call `callback` with every new or updated entry (the dashboard's table)."""
        self._listeners.append(callback)

    def select(self, since: float | None = None, limit: int | None = None) -> list[Entry]:
        """Entries at or after `since` (wall clock), oldest first; the newest `limit` of them."""
        chosen = [e for e in self.entries if since is None or e.at >= since]
        if limit is not None:
            chosen = chosen[-limit:] if limit > 0 else []
        return chosen

    # --- disk ---------------------------------------------------------------------------------
    def _paths(self) -> list[Path]:
        """Oldest first: journal.jsonl.(files-1) ... journal.jsonl.1, journal.jsonl."""
        assert self.path is not None  # noqa: S101
        older = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.files - 1, 0, -1)]
        return [*older, self.path]

    def _load(self, path: Path) -> None:
        by_id: dict[int, Entry] = {}
        for file in self._paths():
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as err:
                _LOG.warning(
                    "journal: cannot read %s (%s): earlier entries not shown", file, err.strerror
                )
                continue
            if file == path:
                self._size = len(data)
            for line in data.splitlines():
                self._load_line(line, by_id)
        for entry in sorted(by_id.values(), key=lambda e: e.id):
            self.entries.append(entry)
        if by_id:
            self._next_id = max(by_id) + 1

    @staticmethod
    def _load_line(line: bytes, by_id: dict[int, Entry]) -> None:
        try:
            raw = json.loads(line)
        except ValueError:
            return  # a line cut short by a power cut: the rest is still good
        if not isinstance(raw, dict):
            return
        change = raw.get("update")
        if isinstance(change, dict):
            old = by_id.get(raw.get("id"))  # type: ignore[arg-type]
            if old is not None:
                by_id[old.id] = replace(
                    old,
                    followed=str(change.get("followed", old.followed)),
                    after=Readings.from_dict(change.get("after")),
                )
            return
        entry = Entry.from_dict(raw)
        if entry is not None:
            by_id[entry.id] = entry

    def _append(self, obj: dict[str, Any]) -> None:
        if self.path is None:
            return
        self._unwritten.append(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        try:
            self._flush()
        except OSError as err:
            if not self.disk_failing:
                self.disk_failing = True
                _LOG.warning(
                    "journal: cannot write %s (%s): protective actions are kept in memory "
                    "only, and written once the disk takes them again",
                    self.path,
                    err.strerror or err,
                )
            return
        if self.disk_failing:
            self.disk_failing = False
            _LOG.info("journal: %s is written again", self.path)

    def _flush(self) -> None:
        """Write every line waiting, rotating first when the file would grow past max_bytes."""
        assert self.path is not None  # noqa: S101
        while self._unwritten:
            line = self._unwritten[0]
            if self._size > 0 and self._size + len(line) > self.max_bytes:
                self._rotate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._size += len(line)
            self.lines_written += 1
            self._unwritten.popleft()

    def _rotate(self) -> None:
        """journal.jsonl -> .1 -> .2 ...; the oldest goes. Each step is one atomic rename."""
        paths = self._paths()  # oldest first
        if len(paths) == 1:
            paths[0].unlink(missing_ok=True)
        else:
            for older, newer in itertools.pairwise(paths):
                if newer.exists():
                    os.replace(newer, older)
        self._fsync_dir()
        self._size = 0

    def _fsync_dir(self) -> None:
        assert self.path is not None  # noqa: S101
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


# --- filling the journal from what the controllers keep ----------------------------------------


@dataclass
class _Pending:
    """An action whose effect the readings have not shown yet."""

    entry_id: int
    at: float  # monotonic
    expect_car: float  # the car's amps once it has followed
    before: Readings
    drop: float  # how far the car's amps should fall


@dataclass
class _CarWatch:
    label: str | None
    service: ChargeService
    seen: CommandRecord | None = None
    amps: float | None = None  # the car's setpoint as the journal last knew it
    level: str = "none"
    last: Readings = field(default_factory=Readings)  # the readings at the previous event
    pending: list[_Pending] = field(default_factory=list)


class JournalWatch:
    """A listener on each charge service: new commands and escalation steps become entries.

    A lowering `set_charging_amps` is a cut, `charge_stop` a pause; the escalation's level
    going up is a step (to `relay_off`: the relay switched off), coming back from `relay_off`
    the relay switched on. The readings that follow fill in whether the car followed.
    """

    def __init__(
        self,
        journal: Journal,
        cars: Sequence[tuple[str | None, ChargeService]],
        *,
        real_reading: Callable[[], MeterReading | None],
        clock: Callable[[], float] = time.monotonic,
        deadline: float = FOLLOW_DEADLINE_SECS,
    ) -> None:
        self.journal = journal
        self._cars = [_CarWatch(label, service) for label, service in cars]
        self._real = real_reading
        self._clock = clock
        self._deadline = deadline
        for car in self._cars:
            car.seen = car.service.commands[-1] if car.service.commands else None
            car.amps = (
                None if car.service.state.setpoint is None else float(car.service.state.setpoint)
            )
            car.service.add_listener(self.check)

    def readings(self, car: _CarWatch) -> Readings:
        """The real supply and this car's own amps (its charger channel, when one measures it)."""
        state = car.service.state.reading
        own = state.car_amps if state is not None and state.valid else None
        return Readings.of(self._real(), own)

    def check(self) -> None:
        """Service listener: never raises into the controller's loop."""
        try:
            self._check()
        except Exception:  # noqa: BLE001 (the journal must never stop control)
            _LOG.exception("journal: could not note an action")

    def _check(self) -> None:
        now = self._clock()
        for car in self._cars:
            before = car.last if car.last.supply is not None else self.readings(car)
            for record in self._new_commands(car):
                self._command(car, record, before, now)
            self._escalation(car, before, now)
            self._follow(car, now)
            car.last = self.readings(car)

    @staticmethod
    def _new_commands(car: _CarWatch) -> list[CommandRecord]:
        commands = car.service.commands
        new: list[CommandRecord] = []
        for record in reversed(commands):
            if record is car.seen:
                break
            new.append(record)
        if commands:
            car.seen = commands[-1]
        return list(reversed(new))

    def _command(self, car: _CarWatch, record: CommandRecord, before: Readings, now: float) -> None:
        state = car.service.state
        old = car.amps
        if state.command_from is not None and state.setpoint == record.amps:
            old = float(state.command_from)  # the controller's own command: what it lowered from
        car_before = before
        if record.command == "set_charging_amps" and record.amps is not None:
            amps = float(record.amps)
            if record.result == "ok":
                car.amps = amps
            if old is None or amps >= old:
                return  # a raise (or the first setpoint) is not protective
            # Held under the capacity tariff's ceiling, not the breaker's: the tariff's cut.
            kind = "capacity_cut" if state.capacity_bound else "cut"
            entry = self.journal.record(
                kind,
                record.reason,
                car=car.label,
                before=car_before,
                amps=amps,
                result=record.result,
                followed="not yet" if record.result == "ok" else "no",
                at=record.at,
            )
            if record.result == "ok":
                car.pending.append(_Pending(entry.id, now, amps, car_before, old - amps))
        elif record.command == "charge_stop":
            entry = self.journal.record(
                "pause",
                record.reason,
                car=car.label,
                before=car_before,
                result=record.result,
                followed="not yet" if record.result == "ok" else "no",
                at=record.at,
            )
            if record.result == "ok":
                drop = old if old is not None else (car_before.car or 0.0)
                car.pending.append(_Pending(entry.id, now, 0.0, car_before, drop))
        elif record.command == "charge_start" and record.result == "ok":
            car.amps = None  # known again from the next setpoint

    def _escalation(self, car: _CarWatch, before: Readings, now: float) -> None:
        escalator = car.service.escalation
        level = escalator.level if escalator is not None else "none"
        if level == car.level:
            return
        old, car.level = car.level, level
        if level != "none" and old != "relay_off":
            # The escalation stepped in: what was still awaited was not followed by the car
            # (a drop from here on is the stop's or the relay's doing, not the car's).
            after = self.readings(car)
            for p in [p for p in car.pending if p.at < now]:
                self.journal.update(p.entry_id, followed="no", after=after)
            car.pending = [p for p in car.pending if p.at >= now]
        if old == "relay_off":
            self.journal.record(
                "relay_on", "the car's circuit is powered again", car=car.label, before=before
            )
        if level == "none":
            self.journal.record(
                "escalation",
                "escalation resolved: back to normal control",
                car=car.label,
                before=before,
            )
            return
        if level == "relay_off":
            self.journal.record(
                "relay_off",
                "the car did not stop: the safety relay cut its circuit",
                car=car.label,
                before=before,
            )
        self.journal.record(
            "escalation",
            f"escalation step {level}: the car ignored the cut",
            car=car.label,
            before=before,
            result=level,
        )

    def _follow(self, car: _CarWatch, now: float) -> None:
        if not car.pending:
            return
        after = self.readings(car)
        keep: list[_Pending] = []
        for p in car.pending:
            verdict = _followed(p, after)
            if verdict:
                self.journal.update(p.entry_id, followed="yes", after=after)
            elif now - p.at >= self._deadline:
                # No meter (push mode): nothing can show it either way.
                seen = after.supply is not None or after.car is not None
                self.journal.update(p.entry_id, followed="no" if seen else "n/a", after=after)
            else:
                keep.append(p)
        car.pending = keep


def _followed(p: _Pending, after: Readings) -> bool:
    """The car's own amps reached the new setpoint, or (no channel measures the car) the supply
    fell by at least half of what the car was asked to give up."""
    if after.car is not None:
        return after.car <= p.expect_car + FOLLOW_TOLERANCE_AMPS
    if after.supply is None or p.before.supply is None or not after.supply:
        return False
    fell = max(p.before.supply) - max(after.supply)
    return fell >= max(0.5 * p.drop, FOLLOW_TOLERANCE_AMPS)
