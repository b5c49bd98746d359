"""A simulated Tesla, as the Fleet API and tesla-http-proxy let us see and command it.

Pure model, driven by an explicit clock: every method that depends on time takes `now`
(seconds, any epoch, never decreasing). The benchmark drives it in virtual time; the HTTP
`SimulatedProxy` drives it with `time.monotonic()`.

Behaviour modelled (sources in docs/reference tesla-fleet-api.md §1, §2, §5):
- `charger_actual_current` follows `min(charge_current_request, charger_pilot_current)`
  `ramp_delay` seconds after the change that caused it, in one step. The real ramp is not
  documented; IEC 61851-1 gives the car 5 s to follow a lowered pilot.
- `set_charging_amps` with N < 5 lands at 5 A unless the previous `set_charging_amps` was
  also N and the car is charging (the "send it twice" rule); 0 A is accepted and pauses.
  Requests above the EVSE's pilot are clamped to it, like `charge_current_request_max`.
- `charge_start`/`charge_stop` refuse with Tesla's reasons (`is_charging`, `complete`,
  `disconnected`, `not_charging`) as HTTP 200 `result:false`.
- Online and not charging for `sleep_after` seconds -> asleep. Commands to a sleeping or
  offline car answer 500 "vehicle unavailable"; only `wake()` wakes it, and counts a wake.
- `vehicle_data` reads keep an idle car awake (`data_keeps_awake`): polling charge_state of
  an idle car is what stops real Teslas from sleeping. The vehicle-state call does not.
- Faults, for the failed-cut tests: `fault="ignores_commands"` accepts every command and
  follows none (the cut that does not land); `fault="unavailable_while_charging"` answers
  commands over the cloud road with 500 "vehicle unavailable" although the car charges
  (vehicle-command issue 452); the BLE road is unaffected. `set_circuit(False)` is the safety
  relay cutting the charger circuit: the car draws 0 A and reports `NoPower` until power
  returns.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tesla_smart_charger.const import PRICE_PER_CALL

UNAVAILABLE_ERROR = "vehicle unavailable: vehicle is offline or asleep"

# Commands `CarModel.command` understands besides `wake_up`.
KNOWN_COMMANDS = frozenset({"set_charging_amps", "charge_start", "charge_stop"})

# Below this the Tesla app refuses, and a single Fleet command lands at this value.
MIN_SINGLE_SEND_AMPS = 5

Reply = tuple[int, dict[str, Any]]
CarFault = Literal["none", "ignores_commands", "unavailable_while_charging"]
Road = Literal["cloud", "ble"]


def envelope(response: Any, error: str | None = "", description: str = "") -> dict[str, Any]:
    """Tesla's reply envelope: every Fleet API and proxy body has these three keys."""
    return {"response": response, "error": error, "error_description": description}


def unavailable_reply(status: int = 500) -> Reply:
    """A sleeping/offline car: 500 from the proxy on a command, 408 from Fleet on a read."""
    return status, envelope(None, UNAVAILABLE_ERROR)


def ok_reply() -> Reply:
    """The proxy's reply to a command the car executed."""
    return 200, envelope({"result": True, "reason": ""})


def refused_reply(reason: str) -> Reply:
    """The car refused: HTTP 200 with `result:false`, exactly as tesla-http-proxy words it."""
    return 200, envelope({"result": False, "reason": f"car could not execute command: {reason}"})


def bad_param_reply(reason: str) -> Reply:
    """The proxy rejected a parameter before signing anything: 400 with `result:false`."""
    return 400, envelope({"result": False, "reason": reason})


def validate_command(name: str, body: Mapping[str, Any]) -> Reply | None:
    """The proxy's own parameter checks (no car involved); None when the command may go out.

    Kept separate from `CarModel.command` so the HTTP layer can answer these locally, unbilled,
    before it consults the car or an injected fault, as the real proxy does.
    """
    if name == "set_charging_amps":
        if "charging_amps" not in body or body["charging_amps"] is None:
            return bad_param_reply("missing charging_amps param")
        value = body["charging_amps"]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            return bad_param_reply("invalid charging_amps param")
        if value < 0:
            return bad_param_reply("invalid charging_amps param")
        return None
    if name in KNOWN_COMMANDS or name == "wake_up":
        return None
    return 400, envelope(None, f"unsupported command: {name}")


@dataclass
class BillingCounter:
    """Fleet API calls per pricing category; Tesla bills every answer below 500 (§4)."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRICE_PER_CALL, 0))
    unbilled: int = 0  # 5xx answers: not billed by Tesla

    def record(self, category: str, status: int) -> None:
        """Count one answer of `category` ("data", "command", "wake") with HTTP `status`."""
        if category not in self.counts:
            raise ValueError(f"unknown billing category: {category}")
        if status < 500:
            self.counts[category] += 1
        else:
            self.unbilled += 1

    @property
    def data(self) -> int:
        """Billed data requests."""
        return self.counts["data"]

    @property
    def command(self) -> int:
        """Billed commands."""
        return self.counts["command"]

    @property
    def wake(self) -> int:
        """Billed wakes."""
        return self.counts["wake"]

    def cost(self) -> float:
        """US dollars for everything counted so far, at Tesla's 2025 prices."""
        return sum(n * PRICE_PER_CALL[category] for category, n in self.counts.items())

    def cost_per_day(self, elapsed_s: float) -> float:
        """The cost so far scaled to 24 hours of the same behaviour."""
        if elapsed_s <= 0:
            raise ValueError("elapsed_s must be positive")
        return self.cost() * 86_400.0 / elapsed_s


@dataclass
class CarModel:
    """One simulated car and its charger connection (see the module docstring)."""

    vin: str = "5YJ3E1EA7KF000001"
    numeric_id: int = 100021
    state: Literal["online", "asleep", "offline"] = "online"
    plugged: bool = True
    charging_state: str = "Charging"  # Charging / Stopped / Complete / Disconnected
    request_amps: int = 16  # charge_current_request: the driver's, or ours
    pilot_amps: int = 32  # the EVSE's limit: charger_pilot_current and charge_current_request_max
    # charger_actual_current. NaN (the default) means "settled": min(request, pilot) when charging.
    actual_amps: float = math.nan
    phases: int = 1
    voltage: int = 230
    ramp_delay: float = 2.0  # seconds before actual follows a new target (then it steps)
    sleep_after: float = 600.0  # online and not charging this long -> asleep
    battery_level: float = 50.0  # percent
    charge_limit_soc: int = 80  # reaching it ends the session: charging_state "Complete"
    capacity_kwh: float | None = 75.0  # None: a bottomless battery that never completes
    data_keeps_awake: bool = True
    display_name: str = "Simulated Model 3"
    vehicle_id: int = 99999
    fault: CarFault = "none"
    circuit_on: bool = True  # the charger circuit is powered (a safety relay can cut it)
    supply_phase: int = 1  # the supply phase a 1-phase car's charger is wired to (chargerPhase)

    wakes: int = field(default=0, init=False)  # times wake() was called (API wakes)
    energy_added_kwh: float = field(default=0.0, init=False)
    _pending: list[tuple[float, float]] = field(default_factory=list, init=False, repr=False)
    _now: float | None = field(default=None, init=False, repr=False)
    _idle_since: float | None = field(default=None, init=False, repr=False)
    _last_set_amps: int | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Make the starting state consistent rather than trusting every combination."""
        if len(self.vin) != 17:
            raise ValueError("vin must have 17 characters")
        if self.phases not in (1, 2, 3):
            raise ValueError("phases must be 1, 2 or 3")
        if self.supply_phase not in (1, 2, 3):
            raise ValueError("supply_phase must be 1, 2 or 3")
        if not self.plugged:
            self.charging_state = "Disconnected"
        if self.state != "online" and self.charging_state == "Charging":
            self.charging_state = "Stopped"  # a sleeping car does not charge
        if math.isnan(self.actual_amps):
            self.actual_amps = float(self._target())
        if not self.charging:
            self.actual_amps = 0.0

    # --- time ----------------------------------------------------------------------------

    @property
    def charging(self) -> bool:
        """True while the car is in a charging session (even when paused at 0 A)."""
        return self.state == "online" and self.plugged and self.charging_state == "Charging"

    @property
    def now(self) -> float | None:
        """The latest time the model has been advanced to (None before the first call)."""
        return self._now

    def advance(self, now: float) -> None:
        """Apply due ramps, charge energy, completion and falling asleep up to `now`."""
        if self._now is None:
            self._now = now
            if not self.charging and self._idle_since is None:
                self._idle_since = now
        if now < self._now:
            return  # time never runs backwards; a late caller sees the current state
        t = self._now
        while self._pending and self._pending[0][0] <= now:
            at, target = self._pending[0]
            t = self._integrate(t, max(at, t))
            if self._pending:  # reaching the charge limit cancels every pending ramp
                self._pending.pop(0)
                self.actual_amps = target
        self._integrate(t, now)
        self._now = now
        if (
            self.state == "online"
            and not self.charging
            and self._idle_since is not None
            and now - self._idle_since >= self.sleep_after
        ):
            self.state = "asleep"
            self.actual_amps = 0.0
            self._pending.clear()

    def _integrate(self, start: float, end: float) -> float:
        """Add energy drawn between `start` and `end`; end the session at the charge limit."""
        if end <= start or self.actual_amps <= 0:
            return end
        kw = self.actual_amps * self.voltage * self.phases / 1000.0
        hours = (end - start) / 3600.0
        if self.capacity_kwh is None or not self.charging:
            self.energy_added_kwh += kw * hours
            return end
        room_kwh = max(
            0.0, (self.charge_limit_soc - self.battery_level) / 100.0 * self.capacity_kwh
        )
        if kw * hours < room_kwh:
            self.energy_added_kwh += kw * hours
            self.battery_level += kw * hours / self.capacity_kwh * 100.0
            return end
        full_at = start + room_kwh / kw * 3600.0
        self.energy_added_kwh += room_kwh
        self.battery_level = float(self.charge_limit_soc)
        self.charging_state = "Complete"
        self.actual_amps = 0.0
        self._pending.clear()
        self._idle_since = full_at
        return end

    def _target(self) -> int:
        """Where charger_actual_current heads for in the current state."""
        if not self.charging or not self.circuit_on:
            return 0
        return min(self.request_amps, self.pilot_amps)

    def _schedule(self, now: float) -> None:
        """Have actual current follow the current target after the ramp delay."""
        target = float(self._target())
        if self.ramp_delay <= 0:
            self._pending.clear()
            self.actual_amps = target
            return
        bisect.insort(self._pending, (now + self.ramp_delay, target))

    def _keep_awake(self, now: float) -> None:
        """Restart the idle timer (or stop it while charging)."""
        self._idle_since = None if self.charging else now

    # --- the physical world (not API calls) -----------------------------------------------

    def current_draw(self, now: float) -> float:
        """Amps the car draws per phase it uses at `now` (0 when not charging)."""
        self.advance(now)
        return self.actual_amps if self.state == "online" else 0.0

    def phase_draw(self, now: float, supply_phases: int) -> tuple[float, ...]:
        """The car's draw on each supply phase: a 1-phase car loads its `supply_phase`
        (L1 by default), a 3-phase car all of them."""
        amps = self.current_draw(now)
        used = min(self.phases, supply_phases)
        first = (
            self.supply_phase - 1 if self.phases == 1 and self.supply_phase <= supply_phases else 0
        )
        return tuple(amps if first <= i < first + used else 0.0 for i in range(supply_phases))

    def plug_in(self, now: float, *, start: bool = True) -> None:
        """The driver plugs in: the car wakes (no API wake) and, by default, starts charging.

        Re-plugging resets a sub-5 A request to 5 A (esphome-tesla-ble PR #120).
        """
        self.advance(now)
        self.plugged = True
        self.state = "online"
        self.request_amps = max(self.request_amps, MIN_SINGLE_SEND_AMPS)
        self._last_set_amps = None
        full = self.capacity_kwh is not None and self.battery_level >= self.charge_limit_soc
        self.charging_state = "Complete" if full else ("Charging" if start else "Stopped")
        self._keep_awake(now)
        self._schedule(now)

    def unplug(self, now: float) -> None:
        """The driver unplugs: current stops at once, the car may then fall asleep."""
        self.advance(now)
        self.plugged = False
        self.charging_state = "Disconnected"
        self.actual_amps = 0.0
        self._pending.clear()
        self._keep_awake(now)

    def set_pilot(self, amps: int, now: float) -> None:
        """The EVSE changes its advertised limit (e.g. a hot cable); the car follows it."""
        self.advance(now)
        self.pilot_amps = amps
        self._schedule(now)

    def set_circuit(self, on: bool, now: float) -> None:
        """The safety relay switches the charger circuit: off stops the draw at once."""
        self.advance(now)
        if on == self.circuit_on:
            return
        self.circuit_on = on
        if not on:
            self.actual_amps = 0.0
            self._pending.clear()
        else:
            self._schedule(now)  # power is back: the session resumes after the ramp delay

    def wake(self, now: float) -> bool:
        """An API wake_up (counted, priced as a wake); True when the car is now online."""
        self.advance(now)
        self.wakes += 1
        if self.state == "asleep":
            self.state = "online"
            self._keep_awake(now)
        return self.state == "online"

    def touch(self, now: float) -> None:
        """A vehicle_data read reached the car: it keeps an idle car awake."""
        self.advance(now)
        if self.state == "online" and self.data_keeps_awake:
            self._keep_awake(now)

    # --- the API --------------------------------------------------------------------------

    def command(
        self, name: str, body: Mapping[str, Any], now: float, *, road: Road = "cloud"
    ) -> Reply:
        """Execute one command arriving by `road`; returns (HTTP status, Tesla-envelope body)."""
        self.advance(now)
        if name == "wake_up":
            self.wake(now)
            return 200, envelope(self.vehicle_json())
        invalid = validate_command(name, body)
        if invalid is not None:
            return invalid
        if self.state != "online":
            return unavailable_reply(500)
        if self.fault == "unavailable_while_charging" and road == "cloud" and self.charging:
            return unavailable_reply(500)
        if self.fault == "ignores_commands":
            return ok_reply()  # accepted, and nothing changes: the cut does not land
        if name == "set_charging_amps":
            return self._set_charging_amps(int(body["charging_amps"]), now)
        if name == "charge_start":
            return self._charge_start(now)
        return self._charge_stop(now)

    def _set_charging_amps(self, amps: int, now: float) -> Reply:
        previous, self._last_set_amps = self._last_set_amps, amps
        applied = amps
        if 0 < amps < MIN_SINGLE_SEND_AMPS and not (self.charging and previous == amps):
            applied = MIN_SINGLE_SEND_AMPS
        self.request_amps = min(applied, self.pilot_amps)
        self._keep_awake(now)
        self._schedule(now)
        return ok_reply()

    def _charge_start(self, now: float) -> Reply:
        if not self.plugged or self.charging_state == "Disconnected":
            return refused_reply("disconnected")
        if self.charging_state == "Charging":
            return refused_reply("is_charging")
        full = self.capacity_kwh is not None and self.battery_level >= self.charge_limit_soc
        if self.charging_state == "Complete" or full:
            self.charging_state = "Complete"
            return refused_reply("complete")
        self.charging_state = "Charging"
        self._keep_awake(now)
        self._schedule(now)
        return ok_reply()

    def _charge_stop(self, now: float) -> Reply:
        if self.charging_state != "Charging":
            return refused_reply("not_charging")
        self.charging_state = "Stopped"
        self._keep_awake(now)
        self._schedule(now)
        return ok_reply()

    def vehicle_json(self) -> dict[str, Any]:
        """The vehicle object of `GET /api/1/vehicles/{vin}` (and of the list)."""
        return {
            "id": self.numeric_id,
            "user_id": 1234,
            "vehicle_id": self.vehicle_id,
            "vin": self.vin,
            "color": None,
            "access_type": "OWNER",
            "display_name": self.display_name,
            "granular_access": {"hide_private": False},
            "tokens": [],
            "state": self.state,
            "in_service": False,
            "id_s": str(self.numeric_id),
            "calendar_enabled": True,
            "api_version": 71,
            "backseat_token": None,
            "backseat_token_updated_at": None,
            "ble_autopair_enrolled": False,
        }

    def charge_state_json(self) -> dict[str, Any]:
        """`charge_state` as vehicle_data returns it (keys of the recorded fixtures)."""
        actual = round(self.actual_amps) if self.state == "online" else 0
        drawing = actual > 0
        power_kw = round(actual * self.voltage * self.phases / 1000.0) if drawing else 0
        level = round(self.battery_level)
        range_mi = round(self.battery_level * 3.47, 2)
        return {
            "battery_heater_on": False,
            "battery_level": level,
            "battery_range": range_mi,
            "charge_amps": self.request_amps,
            "charge_current_request": self.request_amps,
            "charge_current_request_max": self.pilot_amps,
            "charge_enable_request": self.charging_state == "Charging",
            "charge_energy_added": round(self.energy_added_kwh, 2),
            "charge_limit_soc": self.charge_limit_soc,
            "charge_limit_soc_max": 100,
            "charge_limit_soc_min": 50,
            "charge_limit_soc_std": 80,
            "charge_miles_added_ideal": round(self.energy_added_kwh * 4.0, 1),
            "charge_miles_added_rated": round(self.energy_added_kwh * 4.0, 1),
            "charge_port_cold_weather_mode": False,
            "charge_port_color": "<invalid>",
            "charge_port_door_open": self.plugged,
            "charge_port_latch": "Engaged" if self.plugged else "Disengaged",
            "charge_rate": round(actual * self.voltage * self.phases / 1000.0 * 4.0, 1),
            "charger_actual_current": actual,
            "charger_phases": self.phases if drawing else None,
            "charger_pilot_current": self.pilot_amps if self.plugged else 0,
            "charger_power": power_kw,
            "charger_voltage": self.voltage if drawing else 2,
            "charging_state": (
                "NoPower"
                if not self.circuit_on and self.charging_state == "Charging"
                else self.charging_state
            ),
            "conn_charge_cable": "IEC" if self.plugged else "<invalid>",
            "est_battery_range": range_mi,
            "fast_charger_brand": "<invalid>",
            "fast_charger_present": False,
            "fast_charger_type": "ACSingleWireCAN" if self.plugged else "<invalid>",
            "ideal_battery_range": range_mi,
            "max_range_charge_counter": 0,
            "minutes_to_full_charge": self._minutes_to_full(),
            "not_enough_power_to_heat": None,
            "off_peak_charging_enabled": False,
            "off_peak_charging_times": "all_week",
            "off_peak_hours_end_time": 900,
            "preconditioning_enabled": False,
            "preconditioning_times": "all_week",
            "scheduled_charging_mode": "Off",
            "scheduled_charging_pending": False,
            "scheduled_charging_start_time": None,
            "scheduled_charging_start_time_app": 600,
            "scheduled_departure_time": 1704837600,
            "scheduled_departure_time_minutes": 480,
            "supercharger_session_trip_planner": False,
            "time_to_full_charge": round(self._minutes_to_full() / 60.0, 2),
            "timestamp": int((self._now or 0.0) * 1000),
            "trip_charging": False,
            "usable_battery_level": level,
            "user_charge_enable_request": None,
            "module_temp_min": 16.5,
            "module_temp_max": 18,
            "energy_remaining": round(self.battery_level / 100.0 * (self.capacity_kwh or 75.0), 2),
            "lifetime_energy_used": 20505.629,
            "charging_schedule_override": False,
        }

    def _minutes_to_full(self) -> int:
        if self.capacity_kwh is None or self.actual_amps <= 0 or not self.charging:
            return 0
        kw = self.actual_amps * self.voltage * self.phases / 1000.0
        room = max(0.0, (self.charge_limit_soc - self.battery_level) / 100.0 * self.capacity_kwh)
        return round(room / kw * 60.0)
