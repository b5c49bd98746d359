"""The imperative shell: one coroutine consumes the event queue and carries out decisions.

It owns no policy. It asks `control.decide` what to do, calls the car through the `Vehicle`
protocol, turns the outcome (or our error types) back into events, and keeps what /status shows.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tesla_smart_charger import control as core
from tesla_smart_charger.car.tokens import atomic_write_bytes
from tesla_smart_charger.config.settings import CHARGE_MODES
from tesla_smart_charger.control.events import Event, MeterFailed, Overload, Reading
from tesla_smart_charger.control.frozen import FREEZE_STEP_AMPS, FreezeState, observe
from tesla_smart_charger.control.interfaces import Meter, Vehicle
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.errors import (
    ChargerError,
    CommandRefused,
    LoginRequired,
    MeterAuthError,
    MeterError,
    RateLimited,
    TeslaAuthError,
    TokenError,
    TransientError,
    VehicleAsleep,
)
from tesla_smart_charger.logging_setup import scrub
from tesla_smart_charger.retry import REMIND_SECS, FailureKind, RetryPolicy

if TYPE_CHECKING:
    from tesla_smart_charger.runtime.capacity import CapacityGuard
    from tesla_smart_charger.runtime.safety import Escalator

_LOG = logging.getLogger(__name__)

# A deadline in the past must not spin the loop (e.g. while a refresh is pending).
MIN_WAIT = 0.05
# With a login needed, car calls wait this long or until new tokens arrive (TokenRefreshed).
LOGIN_WAIT_SECS = 60.0

_Kind = Literal["asleep", "rate_limited", "auth", "token", "refused", "transient", "error"]
# A failed car call as the controller sees it: the first class the error is an instance of.
_KINDS: tuple[tuple[type[ChargerError], _Kind], ...] = (
    (VehicleAsleep, "asleep"),
    (RateLimited, "rate_limited"),
    (LoginRequired, "auth"),
    (TokenError, "token"),
    (TeslaAuthError, "auth"),
    (CommandRefused, "refused"),
    (TransientError, "transient"),
)


def unavailable(err: ChargerError, *, command: bool) -> core.VehicleUnavailable:
    """The error of a car call as the event `control.decide` handles (its policy already logged it).

    The policy's `retry_after` paces the next call; a sleeping car or a refusal has none (the
    controller's own timers decide), and a login needed waits at least LOGIN_WAIT_SECS.
    """
    kind: _Kind = next((k for cls, k in _KINDS if isinstance(err, cls)), "error")
    if isinstance(err, CommandRefused):
        return core.VehicleUnavailable(kind, err.reason, command=command)
    if kind == "asleep":
        return core.VehicleUnavailable(kind, str(err), command=command)
    wait = err.retry_after
    if isinstance(err, LoginRequired):
        wait = max(wait, LOGIN_WAIT_SECS)
    return core.VehicleUnavailable(kind, str(err), retry_after=wait, command=command)


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One command sent to the car, for /status and the dashboard."""

    at: float  # wall clock
    command: str
    amps: int | None
    result: str
    reason: str


class ChargeService:
    """Consumes the queue; the only place that commands the car."""

    def __init__(
        self,
        cfg: core.ControlConfig,
        vehicle: Vehicle,
        queue: asyncio.Queue[Event],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        kick_meter: Callable[[], None] | None = None,
        state_file: Path | None = None,
        charge_mode: str | None = None,
        label: str | None = None,
    ) -> None:
        """`charge_mode`: the configured mode, used when the state file remembers none.

        `label` names the car in every log line (several cars); None keeps the lines as one
        car's.
        """
        self.cfg = cfg
        self.label = label
        self._car = f"{label}: " if label else ""  # the car, in front of a log line's text
        self._vehicle = vehicle
        self.queue = queue
        self._clock = clock
        self._wall = wall
        self._kick_meter = kick_meter
        self._state_file = state_file
        remembered = load_remembered(state_file, self._car) if state_file else {}
        pending = bool(remembered.pop("overload_pending", None)) and cfg.mode == "push"
        pinned = bool(remembered.pop("driver_limit", None))
        stored = remembered.pop("mode", None)
        self._config_mode = charge_mode or "fast"
        # A mode chosen at runtime (API, Home Assistant) outlives a restart.
        mode = CHARGE_MODES[stored] if stored is not None else self._config_mode
        self.state = core.initial_state(
            clock(), **remembered, driver_pinned=pinned, charge_mode=mode
        )
        if pending:
            # The last run stopped with a reduction not yet sent: carry it out first.
            _LOG.warning(
                "%sa reduction was still pending when the daemon last stopped: sending it now",
                self._car,
            )
            self.state = replace(
                self.state,
                overload_pending=True,
                reason="reduction pending from before the restart",
            )
        self._remembered: tuple[int | None, int | None, bool, bool, str] = (
            self.state.setpoint,
            self.state.driver_amps,
            pending,
            self.state.driver_pinned,
            self.state.charge_mode,
        )
        self.commands: deque[CommandRecord] = deque(maxlen=50)
        self.overload_queued = False  # /overload coalesces: one queued Overload is enough
        self.alive = False
        self._listeners: list[Callable[[], None]] = []
        self._last_reason = ""
        self._reason_logged: dict[str, float] = {}
        self.in_flight: core.Action | None = None  # the car call being awaited, if any
        self._call: asyncio.Task[core.ControllerEvent] | None = None  # its task
        self._actions: deque[core.Action] = deque()  # decided, waiting for the call in flight
        self._stopping = False
        # Failed-cut detection and escalation (safety.py); None: no escalation (push mode).
        self.escalation: Escalator | None = None
        self._escalation_backlog: core.ControllerEvent | None = None  # seen during a call
        self._cut_since: float | None = None  # a cut has been decided and not landed since
        # The last landed command that changed the car's current by FREEZE_STEP_AMPS or more:
        # the meter must show it (frozen-meter detection).
        self.moved_at: float | None = None
        self.moved_amps = 0.0

    # --- observers (metrics, server-sent events) -------------------------------------------
    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every event the controller handled."""
        self._listeners.append(callback)

    @property
    def last_command(self) -> CommandRecord | None:
        """The newest command, if any."""
        return self.commands[-1] if self.commands else None

    # --- inputs ------------------------------------------------------------------------------
    def overload(self, source: str) -> bool:
        """Queue one Overload (a burst of calls is one event). True if it was queued now."""
        if self.cfg.mode == "measured" and self._kick_meter is not None:
            self._kick_meter()
        if self.overload_queued:
            return False
        self.overload_queued = True
        self.queue.put_nowait(Overload(at=self._clock(), source=source))
        return True

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume events forever; wake at the controller's own deadlines.

        A car call runs as its own task while the loop keeps taking events (readings, the
        fail-safe, /overload), so a hung proxy never stalls the controller. Its outcome comes
        back as the next event; `control.decide` knows a call is in flight and holds any further
        action until then (at most one car call at a time). A call task that dies with an
        unexpected error ends this loop with that error, so the daemon restarts.
        """
        self.alive = True
        getter: asyncio.Task[Event] | None = None
        try:
            while not (self._stopping and self._call is None and not self._actions):
                if getter is None:
                    getter = asyncio.create_task(self.queue.get(), name="controller queue")
                waits: set[asyncio.Future[Any]] = {getter}
                if self._call is not None:
                    waits.add(self._call)
                deadline = self._next_deadline()
                timeout = None if deadline is None else max(deadline - self._clock(), MIN_WAIT)
                # asyncio.wait never swallows our own cancellation (SIGTERM must not hang).
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                event: core.ControllerEvent
                if self._call is not None and self._call in done:
                    event = self._call_outcome()  # first: the state learns what really happened
                elif getter in done:
                    event, getter = getter.result(), None
                else:
                    event = core.Tick()
                await self.step(event)
        finally:
            self.alive = False
            if getter is not None:
                getter.cancel()
            if self._call is not None:
                # Shutdown: `in_flight` stays set, so persist_pending knows the cut did not land.
                self._call.cancel()

    def _next_deadline(self) -> float | None:
        """The controller's next deadline, or the escalation's when that is sooner."""
        deadline = core.next_deadline(self.state, self.cfg)
        extra = self.escalation.next_deadline() if self.escalation is not None else None
        if extra is None:
            return deadline
        return extra if deadline is None else min(deadline, extra)

    async def step(self, event: core.ControllerEvent) -> None:
        """The loop's one step: decide on `event`, start its car call, then feed the escalation."""
        self._dispatch(event)
        await self._escalate(event)

    async def handle(self, event: core.ControllerEvent) -> None:
        """`step` on one event, then on each car call's outcome until none is in flight (tests
        and one-shot callers: the same steps `run` takes, without waiting for the queue)."""
        await self.step(event)
        while self._call is not None:
            await asyncio.wait({self._call})
            await self.step(self._call_outcome())

    async def _escalate(self, event: core.ControllerEvent) -> None:
        """Feed the escalation (safety.py) after an event, between car calls, never during one.

        Its own steps (a retry on the other road, charge_stop, the relay) are rare and awaited
        here. The newest reading seen while a call was in flight is fed first when it is back.
        """
        if self.escalation is None:
            return
        if self._call is not None:
            if isinstance(event, Reading | MeterFailed | core.Tick):
                self._escalation_backlog = event  # the newest is fed once the call is back
            return
        backlog, self._escalation_backlog = self._escalation_backlog, None
        if backlog is not None and backlog is not event:
            # First what the meter showed while the call was out, then the call's outcome:
            # the order in which they happened.
            self.state = await self.escalation.after_event(backlog, self.state, self._clock())
        self.state = await self.escalation.after_event(event, self.state, self._clock())
        self._track_cut()

    def _dispatch(self, event: core.ControllerEvent) -> None:
        """Decide on one event; start its action unless a car call is already in flight."""
        if isinstance(event, Overload):
            self.overload_queued = False
        self._ask_core(event)
        self._start_next()
        self._track_cut()
        self._remember()
        self._log_reason(self.state.reason)
        for listener in self._listeners:
            listener()

    def _ask_core(self, event: core.ControllerEvent) -> None:
        """The shell's one call of `control.decide`: the new state, and its actions queued."""
        decision = core.decide(self.state, event, self._clock(), self.cfg)
        self.state = decision.state
        self._actions.extend(decision.actions)

    def _start_next(self) -> None:
        """Start the next decided action as the one car call, unless one is in flight.

        While escalated, a raise is answered by the escalation instead of being sent.
        """
        while self._call is None and self._actions:
            action = self._actions.popleft()
            held = self.escalation.hold(action, self.state) if self.escalation else None
            if held is not None:
                self._ask_core(held)
                continue
            self.in_flight = action
            self.state = core.call_started(self.state, action)
            self._call = asyncio.create_task(
                self._execute(action), name=f"car call {type(action).__name__}"
            )

    def _call_outcome(self) -> core.ControllerEvent:
        """The finished call's outcome event; an unexpected error in it is raised here."""
        call, self._call = self._call, None
        assert call is not None  # noqa: S101
        outcome = call.result()  # never silently lost: a bug in a call ends the loop
        action, self.in_flight = self.in_flight, None
        if isinstance(outcome, core.CommandDone):
            self._note_move(outcome)
        if self.escalation is not None and action is not None:
            self.escalation.command_outcome(action, outcome, self.state)
        return outcome

    def _log_reason(self, reason: str) -> None:
        """Each new reason once at INFO; one seen in the last 10 minutes again only at DEBUG.

        A failing dependency makes the reason alternate ("checking the car", "car
        unreachable"): that must not become a line per attempt.
        """
        if reason == self._last_reason:
            return
        self._last_reason = reason
        now = self._clock()
        last = self._reason_logged.get(reason)
        if last is not None and now - last < REMIND_SECS:
            _LOG.debug("controller: %s%s", self._car, reason)
            return
        if len(self._reason_logged) > 200:
            self._reason_logged = {
                r: t for r, t in self._reason_logged.items() if now - t < REMIND_SECS
            }
        self._reason_logged[reason] = now
        _LOG.info("controller: %s%s", self._car, reason)

    def _note_move(self, done: core.CommandDone) -> None:
        """Remember a landed command that changes the car's draw enough to show on the meter."""
        s = self.state
        if done.command == "set_charging_amps":
            if done.amps is None or s.command_from is None or not self.charging:
                return
            step = float(abs(done.amps - s.command_from))
        else:  # a start or a stop changes the draw by the whole setpoint
            step = float(s.setpoint or 0)
        if step >= FREEZE_STEP_AMPS:
            self.moved_at, self.moved_amps = self._clock(), step

    @property
    def charging(self) -> bool:
        """The car charges, as far as the controller knows (not paused by us)."""
        v = self.state.vehicle
        return v is not None and v.charging and not self.state.paused

    # --- what is waiting ---------------------------------------------------------------------
    @property
    def cut_needed(self) -> bool:
        """The controller wants the car lower than it is (or the meter shows the breaker over)."""
        s = self.state
        over_rating = (
            s.reading is not None
            and s.reading.valid
            and s.reading.worst_phase_amps > self.cfg.home_max_amps
        )
        return (
            s.overload_pending
            or over_rating
            or (s.target is not None and s.setpoint is not None and s.target < s.setpoint)
        )

    @property
    def cut_outstanding(self) -> bool:
        """A lowering is decided and the car has not confirmed it: in flight, queued, held
        back (a call in flight, a wait) or to be retried after a failure."""
        s = self.state
        lower = s.target is not None and s.setpoint is not None and s.target < s.setpoint
        return lower or self.reduction_pending

    def cut_late_secs(self) -> float:
        """How long the outstanding cut has waited to land (0 when none waits)."""
        return 0.0 if self._cut_since is None else max(0.0, self._clock() - self._cut_since)

    def _track_cut(self) -> None:
        """Note when a cut became outstanding; a landed (or no longer needed) one clears it."""
        if not self.cut_outstanding:
            self._cut_since = None
        elif self._cut_since is None:
            self._cut_since = self._clock()

    def cut_waits_for_link(self) -> bool:
        """A cut is needed and held back only because the car link failed (a transport fault)."""
        s = self.state
        return s.blocked_kind == "transient" and self._clock() < s.blocked_until and self.cut_needed

    # --- stopping ----------------------------------------------------------------------------
    @property
    def reduction_pending(self) -> bool:
        """A cut is decided but not yet confirmed by the car (in flight or waiting)."""
        action = self.in_flight or (self._actions[0] if self._actions else None)
        if isinstance(action, core.SetAmps) and (
            self.state.command_from is None or action.amps < self.state.command_from
        ):
            return True
        return self.state.overload_pending

    def request_stop(self) -> None:
        """Let `run()` return once the call in flight and what follows from it are done.

        SIGTERM with a cut pending; the daemon gives this DRAIN_SECS, then cancels.
        """
        self._stopping = True

    def persist_pending(self) -> bool:
        """On the way out: if a push-mode cut was not carried out, keep it for the next start.

        True when something was written. Measured mode needs nothing: the meter shows the
        overload again after a restart.
        """
        if self.cfg.mode != "push" or self._state_file is None or not self.reduction_pending:
            return False
        # A cut cancelled in flight (or not yet started) never landed: the car is still at
        # the value before it.
        action = self.in_flight or (self._actions[0] if self._actions else None)
        cut = isinstance(action, core.SetAmps)
        before = self.state.command_from if cut else self.state.setpoint
        self._write_state(before, self.state.driver_amps, pending=True)
        _LOG.warning(
            "%sstopping with a reduction not yet confirmed by the car: it is sent first on the next start",
            self._car,
        )
        return True

    async def _execute(self, action: core.Action) -> core.ControllerEvent:
        """Carry out one action and describe its outcome as an event."""
        command = isinstance(action, core.SetAmps | core.StartCharging | core.StopCharging)
        name = (
            "set_charging_amps"
            if isinstance(action, core.SetAmps)
            else "charge_start"
            if isinstance(action, core.StartCharging)
            else "charge_stop"
        )
        amps = action.amps if isinstance(action, core.SetAmps) else None
        try:
            if isinstance(action, core.RefreshVehicle):
                snapshot = await self._vehicle.snapshot(
                    with_charge_state=True, known_online=action.known_online
                )
                return core.VehicleUpdate(snapshot)
            if isinstance(action, core.SetAmps):
                await self._vehicle.set_charging_amps(action.amps)
                self._record(name, amps, "ok", action.reason)
                return core.CommandDone("set_charging_amps", action.amps)
            if isinstance(action, core.StartCharging):
                await self._vehicle.charge_start()
                self._record(name, None, "ok", action.reason)
                return core.CommandDone("charge_start")
            await self._vehicle.charge_stop()
            self._record(name, None, "ok", action.reason)
            return core.CommandDone("charge_stop")
        # No log lines here: each dependency's retry policy logs a condition once.
        except ChargerError as err:
            outcome = unavailable(err, command=command)
        if command:
            self._record(name, amps, outcome.kind, outcome.detail)
        return outcome

    def _remember(self) -> None:
        """Write our setpoint and the driver's setting when they change (rarely: on commands)."""
        now = (
            self.state.setpoint,
            self.state.driver_amps,
            False,
            self.state.driver_pinned,
            self.state.charge_mode,
        )
        if self._call is not None:
            return  # the setpoint of a call in flight is not the car's yet
        if self._state_file is None or now == self._remembered:
            return
        self._write_state(now[0], now[1], pending=False)

    def _write_state(self, setpoint: int | None, driver: int | None, *, pending: bool) -> None:
        if self._state_file is None:
            return
        pinned = self.state.driver_pinned
        self._remembered = (setpoint, driver, pending, pinned, self.state.charge_mode)
        data: dict[str, Any] = {"setpoint": setpoint, "driver_amps": driver}
        if pinned:  # set through the API or Home Assistant: kept until the app changes it
            data["driver_limit"] = True
        if pending:
            data["overload_pending"] = True
        if self.state.charge_mode != self._config_mode:  # chosen at runtime: kept
            data["mode"] = self.state.charge_mode
        try:
            atomic_write_bytes(self._state_file, json.dumps(data).encode() + b"\n", mode=0o600)
        except OSError as err:
            _LOG.warning(
                "%scannot write %s: %s (the driver's setting is not kept across restarts)",
                self._car,
                self._state_file,
                err.strerror,
            )

    def _record(self, command: str, amps: int | None, result: str, reason: str) -> None:
        self.commands.append(CommandRecord(self._wall(), command, amps, result, reason))
        _LOG.log(
            logging.INFO if result == "ok" else logging.DEBUG,  # failures: the policy logs them
            "%scommand %s%s: %s (%s)",
            self._car,
            command,
            f" {amps} A" if amps is not None else "",
            result,
            reason,
        )

    # --- what /status shows (runtime/status.py builds it) ------------------------------------
    def now(self) -> float:
        """The controller's clock, for the ages /status shows."""
        return self._clock()


def load_remembered(path: Path, car: str = "") -> dict[str, int | None]:
    """The previous run's setpoint and driver's setting; nothing if missing or unreadable.

    `car`: the car's label and ": " in front of the log line (several cars), else "".
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        _LOG.warning("%signoring %s: %s", car, path, err)
        return {}
    out: dict[str, int | None] = {}
    for key in ("setpoint", "driver_amps"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 80:
            out[key] = value
    if isinstance(data, dict) and data.get("overload_pending") is True:
        out["overload_pending"] = 1
    if isinstance(data, dict) and data.get("driver_limit") is True:
        out["driver_limit"] = 1
    if isinstance(data, dict) and data.get("mode") in CHARGE_MODES:
        out["mode"] = CHARGE_MODES.index(data["mode"])
    return out


def extra_read_due(now: float, last_extra: float | None, period: float) -> bool:
    """Whether a kick (an /overload in measured mode) reads the meter now: at most once a
    period, so a flood of /overload calls costs the meter one extra read a period."""
    return last_extra is None or now - last_extra >= period


class MeterPoller:
    """Reads the meter every period and puts typed readings on the queue.

    A failed poll is a transient fault: it becomes an invalid reading, and the controller's
    fail-safe decides when silence matters. Loss and recovery are logged once each.
    """

    def __init__(
        self,
        meter: Meter,
        queue: asyncio.Queue[Event],
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        settle_secs: float = 8.0,
        stale_secs: float = 10.0,
    ) -> None:
        """`settle_secs`, `stale_secs`: carSettleSecs and energyMonitorStaleSecs, for how long
        the car's change must be missing from the meter before its values count as frozen."""
        self.meter = meter
        self._queue = queue
        self._period = period
        self._clock = clock
        self._kick = asyncio.Event()
        self._last_extra: float | None = None  # when a kick last caused a read
        self.last: MeterReading | None = None
        self.last_error: str | None = None
        self.auth_failed = False
        self.alive = False
        self._settle_secs = settle_secs
        self._stale_secs = stale_secs
        self.freeze = FreezeState()
        # What the cars did that the meter must show: (moved_at, moved_amps, charging); set by
        # the daemon from the charge services. None: no frozen-meter detection.
        self.car_activity: Callable[[], tuple[float | None, float, bool]] | None = None
        # The capacity tariff guard (importLimitKw): each valid reading carries its ceiling.
        self.capacity: CapacityGuard | None = None
        # The meter keeps its poll rhythm; the policy only does log-once and health.
        self.policy = RetryPolicy(
            f"meter {meter.name}",
            logger=_LOG,
            clock=clock,
            backoff=False,
            back_words="readings are back",
        )

    def kick(self) -> None:
        """Read now instead of at the next period (used by /overload in measured mode)."""
        self._kick.set()

    async def poll_once(self) -> MeterReading:
        """One read; failures become an invalid reading with the reason."""
        try:
            reading = await self.meter.read()
        except MeterError as err:
            message = scrub(str(err))
            reading = MeterReading((), (), None, valid=False, at=self._clock(), error=message)
            kind: FailureKind = "fault" if isinstance(err, MeterAuthError) else "transient"
            self.policy.failure(
                kind, f"no reading: {message} (fail-safe after energyMonitorStaleSecs)"
            )
            self.last_error = message
            self.auth_failed = isinstance(err, MeterAuthError)
            self._put(MeterFailed(at=reading.at, error=message, auth=self.auth_failed))
            self.last = reading if self.last is None or not self.last.valid else self.last
            return reading
        reading = self._unless_frozen(reading)
        if not reading.valid:
            self.last_error = scrub(reading.error or "invalid reading")
            # A frozen meter may come back by itself (its values move again): not a fault.
            kind = "transient" if self.freeze.frozen else "fault"
            self.policy.failure(kind, f"invalid reading: {self.last_error}")
        elif self.last_error is not None or self.policy.failing:
            self.policy.success()  # logs "works again" once
            self.last_error = None
            self.auth_failed = False
        if reading.valid or self.last is None or not self.last.valid:
            self.last = reading
        ceiling, hold = None, None
        if reading.valid and self.capacity is not None:
            ceiling, hold = self.capacity.observe(reading)
        self._put(Reading(reading, import_ceiling_w=ceiling, hold_raises_until=hold))
        return reading

    def _unless_frozen(self, reading: MeterReading) -> MeterReading:
        """A valid reading, or an invalid one when the meter's values froze (control/frozen.py)."""
        if not reading.valid or self.car_activity is None:
            return reading
        moved_at, moved_amps, charging = self.car_activity()
        car = () if reading.car_amps is None else (reading.car_amps,)
        self.freeze = observe(
            self.freeze,
            (*reading.phase_amps, *car),
            reading.at,
            moved_at=moved_at,
            moved_amps=moved_amps,
            charging=charging,
            settle_secs=self._settle_secs,
            stale_secs=self._stale_secs,
        )
        if not self.freeze.frozen:
            return reading
        error = f"the meter's values are frozen ({self.freeze.why}): treated as silent"
        return replace(reading, valid=False, error=error)

    def _put(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            _LOG.debug("queue full: dropping a meter event")

    async def run(self) -> None:
        """Poll forever at the configured period, plus at most one kicked read a period."""
        self.alive = True
        try:
            while True:
                started = self._clock()
                await self.poll_once()
                self._kick.clear()  # a kick during the read is answered by that read
                await self._wait_for_next(started)
        finally:
            self.alive = False

    async def _wait_for_next(self, started: float) -> None:
        """Sleep until the next period, or until a kick that `extra_read_due` allows."""
        while (remaining := self._period - (self._clock() - started)) > 0:
            try:
                async with asyncio.timeout(remaining):
                    await self._kick.wait()
            except TimeoutError:
                return
            self._kick.clear()
            now = self._clock()
            if extra_read_due(now, self._last_extra, self._period):
                self._last_extra = now
                return

    def now(self) -> float:
        """The poller's clock, for the reading's age /status shows."""
        return self._clock()
