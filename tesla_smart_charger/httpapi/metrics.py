"""GET /metrics: the daemon's state in the Prometheus text format.

Values are read from the daemon at scrape time by one custom collector, so the exposition can
never drift from /status. Only what cannot be derived later is accumulated here, by a listener
the service calls after every event: seconds spent over the supply limit and commands by result
(the service keeps only the newest commands). Each daemon gets its own `CollectorRegistry`, never
the process-global one, so tests can run several daemons in one process.
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from tesla_smart_charger import __version__
from tesla_smart_charger.car.fleet_api import CATEGORIES
from tesla_smart_charger.config.settings import CHARGE_MODES
from tesla_smart_charger.control import ControllerState
from tesla_smart_charger.control.models import MeterReading, VehicleState
from tesla_smart_charger.control.supervisor import ESCALATION_LEVELS
from tesla_smart_charger.runtime.service import CommandRecord

if TYPE_CHECKING:
    from tesla_smart_charger.httpapi.view import DaemonView
    from tesla_smart_charger.runtime.status import (
        ApiCalls,
        ControllerView,
        DaemonStatus,
        VehicleEntry,
    )

_LOG = logging.getLogger(__name__)

PREFIX = "tesla_smart_charger_"
CONTROLLER_STATES = ("normal", "failsafe", "paused", "rate_limited", "auth_lost")
COMMANDS = ("set_charging_amps", "charge_start", "charge_stop")


# --- views shared with the dashboard ------------------------------------------------------------


def valid_reading(state: ControllerState) -> MeterReading | None:
    """The meter reading the controller acted on last, if it was valid."""
    return _valid(state.reading)


def _valid(r: MeterReading | None) -> MeterReading | None:
    return r if r is not None and r.valid and r.phase_amps else None


def meter_reading(daemon: DaemonView) -> MeterReading | None:
    """The last valid reading of the real meter.

    With several cars each controller sees only its share of the room (an adjusted reading), so
    the supply, headroom and overload figures come from the fleet's copy of the real one (one
    car is a fleet of one: the same reading).
    """
    return _valid(daemon.fleet.last_reading)


def car_amps(state: ControllerState) -> float | None:
    """Amps the car draws: measured when a meter channel sees the charger, else inferred.

    Inferred like the controller does: a charging car draws its setpoint; a car that is asleep,
    offline, stopped or paused draws nothing; None until we have looked at the car.
    """
    r = valid_reading(state)
    if r is not None and r.car_amps is not None:
        return max(0.0, r.car_amps)
    v = state.vehicle
    if v is None:
        return None
    if v.state is not VehicleState.ONLINE:
        return 0.0
    if v.charge is None:
        return None
    if not v.charge.charging or state.paused:
        return 0.0
    if state.setpoint is not None:
        return float(state.setpoint)
    return float(v.charge.charger_actual_current)


def controller_state(daemon: DaemonView, controller: ControllerView) -> str:
    """One of CONTROLLER_STATES; the most serious condition wins (`controller`: /status's)."""
    s = daemon.service.state
    if not s.auth_ok or daemon.tokens.state == "reauth_required":
        return "auth_lost"
    if s.failsafe:
        return "failsafe"
    if controller.rate_limited_for_secs > 0:
        return "rate_limited"
    if s.paused:
        return "paused"
    return "normal"


# --- what only a listener can know --------------------------------------------------------------


class EventTally:
    """Counters fed after every controller event: overload seconds and commands by result."""

    def __init__(self, daemon: DaemonView) -> None:
        self._daemon = daemon
        self.overload_seconds = 0.0
        self.commands: dict[tuple[str, str], int] = {(c, "ok"): 0 for c in COMMANDS}
        self._prev: MeterReading | None = None
        self._last_command: CommandRecord | None = None

    def on_event(self) -> None:
        """Fold the newest reading and any new commands into the counters.

        Runs inside the controller's loop: a bug here must cost a metric, never the controller.
        """
        try:
            self._fold_reading()
            self._fold_commands()
        except Exception:  # noqa: BLE001 (observability must not stop the charging control)
            _LOG.exception("metrics: could not update the counters")

    def _fold_reading(self) -> None:
        reading = self._daemon.fleet.last_reading
        if reading is None or reading is self._prev:
            return
        if not reading.valid or not reading.phase_amps:
            self._prev = None  # a gap in the readings is not counted either way
            return
        prev = self._prev
        cfg = self._daemon.service.cfg
        if prev is not None and prev.worst_phase_amps > cfg.home_max_amps:
            # The previous reading held until this one; a long silence counts only up to the
            # stale limit (after that the controller itself no longer trusts the reading).
            self.overload_seconds += min(max(0.0, reading.at - prev.at), cfg.stale_secs)
        self._prev = reading

    def _fold_commands(self) -> None:
        records = self._daemon.service.commands
        new: list[CommandRecord] = []
        for record in reversed(records):
            if record is self._last_command:
                break
            new.append(record)
        for record in new:
            key = (record.command, record.result)
            self.commands[key] = self.commands.get(key, 0) + 1
        if records:
            self._last_command = records[-1]


# --- the collector ------------------------------------------------------------------------------


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(PREFIX + name, doc)
    if value is not None:
        family.add_metric([], float(value))
    return family


def _one_hot(
    name: str, doc: str, label: str, names: Iterable[str], current: str
) -> GaugeMetricFamily:
    """A state set as a gauge: 1 for `current`, 0 for every other of `names`."""
    family = GaugeMetricFamily(PREFIX + name, doc, labels=[label])
    for each in names:
        family.add_metric([each], 1.0 if each == current else 0.0)
    return family


class DaemonCollector:
    """Reads the daemon at scrape time (prometheus_client's Collector protocol)."""

    def __init__(self, daemon: DaemonView, tally: EventTally) -> None:
        self._daemon = daemon
        self._tally = tally

    def collect(self) -> Iterator[Metric]:
        """Every metric, built fresh from the daemon's status (one snapshot per scrape)."""
        status = self._daemon.status()
        yield from self._control(status)
        yield from self._vehicles(status)
        yield from self._fleet_api(status.api_calls)
        yield from self._meter_and_auth(status)
        yield self._breaker()
        yield from self._capacity(status)
        yield from self._escalation(status)
        yield from self._grid_limit(status)
        build = GaugeMetricFamily(
            PREFIX + "build_info",
            "Version of the running daemon (value is always 1).",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1.0)
        yield build

    def _control(self, status: DaemonStatus) -> Iterable[Metric]:
        d = self._daemon
        state = d.service.state
        cfg = d.service.cfg
        reading = meter_reading(d)
        supply = GaugeMetricFamily(
            PREFIX + "supply_amps",
            "Current on each supply phase from the last valid meter reading (positive = import).",
            labels=["phase"],
        )
        if reading is not None:
            for i, amps in enumerate(reading.phase_amps, start=1):
                supply.add_metric([str(i)], amps)
        yield supply
        yield _gauge(
            "car_amps",
            "Current the car draws: measured by a meter channel, else inferred from its setpoint.",
            car_amps(state),
        )
        controller = status.controller
        yield _gauge("setpoint_amps", "Charging amps the car is set to.", controller.setpoint_amps)
        yield _gauge("target_amps", "Charging amps the controller wants.", controller.target_amps)
        yield _gauge(
            "headroom_amps",
            "homeMaxAmps minus the worst supply phase; negative while overloaded.",
            cfg.home_max_amps - reading.worst_phase_amps if reading is not None else None,
        )
        yield _gauge("limit_amps", "The supply limit per phase (homeMaxAmps).", cfg.home_max_amps)
        overload = CounterMetricFamily(
            PREFIX + "overload_seconds",
            "Seconds with the worst measured supply phase above homeMaxAmps.",
        )
        overload.add_metric([], self._tally.overload_seconds)
        yield overload
        commands = CounterMetricFamily(
            PREFIX + "commands",
            "Commands sent to the car, by command and result.",
            labels=["command", "result"],
        )
        for (command, result), count in sorted(self._tally.commands.items()):
            commands.add_metric([command, result], count)
        yield commands
        yield _one_hot(
            "controller_state",
            "The controller's condition: 1 for the current state, 0 for the others.",
            "state",
            CONTROLLER_STATES,
            controller_state(d, controller),
        )

    def _vehicles(self, status: DaemonStatus) -> Iterable[Metric]:
        """Every car of /status `vehicles`, labelled by VIN (one car too)."""
        cars = [(c.vin, c) for c in status.vehicles if c.vin]
        amps: dict[str, tuple[str, Callable[[VehicleEntry], int | None]]] = {
            "vehicle_setpoint_amps": (
                "Charging amps each car is set to.",
                lambda c: c.setpoint_amps,
            ),
            "vehicle_target_amps": (
                "Charging amps the controller wants per car.",
                lambda c: c.target_amps,
            ),
            "vehicle_driver_amps": (
                "The driver's amps ceiling per car (absent while none is set).",
                lambda c: c.driver_amps,
            ),
        }
        for name, (doc, field) in amps.items():
            family = GaugeMetricFamily(PREFIX + name, doc, labels=["vin"])
            for vin, car in cars:
                value = field(car)
                if value is not None:
                    family.add_metric([vin], float(value))
            yield family
        mode = GaugeMetricFamily(
            PREFIX + "vehicle_mode",
            "Each car's charging mode (fast, solar, minsolar): 1 for the current one.",
            labels=["vin", "mode"],
        )
        charging = GaugeMetricFamily(
            PREFIX + "vehicle_charging",
            "1 while the car reports charging_state Charging, else 0.",
            labels=["vin"],
        )
        info = GaugeMetricFamily(
            PREFIX + "vehicle_info",
            "Each car's name, link state and charging state as labels (value is always 1).",
            labels=["vin", "name", "state", "charging_state"],
        )
        for vin, car in cars:
            for name in CHARGE_MODES:
                mode.add_metric([vin, name], 1.0 if car.mode == name else 0.0)
            charging.add_metric([vin], 1.0 if car.charging_state == "Charging" else 0.0)
            info.add_metric([vin, car.name or "", car.state, car.charging_state or ""], 1.0)
        escalation = GaugeMetricFamily(
            PREFIX + "vehicle_escalation_level",
            "Each car's own escalation step (none, charge_stop, relay_off): 1 for the current one.",
            labels=["vin", "level"],
        )
        for vin, car in cars:
            for level in ESCALATION_LEVELS:
                escalation.add_metric([vin, level], 1.0 if car.escalation == level else 0.0)
        yield mode
        yield charging
        yield info
        yield escalation

    def _escalation(self, status: DaemonStatus) -> Iterable[Metric]:
        """Whether cuts land: the escalation step in force, its steps taken, and each road's calls."""
        d = self._daemon
        escalations = d.escalations()
        yield _one_hot(
            "escalation_level",
            "The escalation step in force (none, charge_stop, relay_off): 1 for the current one "
            "(with several cars the furthest of theirs).",
            "level",
            ESCALATION_LEVELS,
            status.controller.escalation,
        )
        steps = CounterMetricFamily(
            PREFIX + "escalation_steps",
            "Escalation steps taken since start (charge_stop, relay_off), every car together.",
            labels=["level"],
        )
        for name in ESCALATION_LEVELS:
            if name != "none":
                steps.add_metric([name], sum(e.steps[name] for _, e in escalations))
        yield steps
        if status.roads is not None:
            calls = CounterMetricFamily(
                PREFIX + "road_calls",
                "Looks and commands per road to the car (ble, cloud) by outcome.",
                labels=["road", "outcome"],
            )
            for name, road in status.roads.items():
                for outcome, count in (
                    ("ok", road.ok),
                    ("failed", road.failed),
                    ("refused", road.refused),
                    ("skipped", road.skipped),
                    ("fallbacks", road.fallbacks),
                ):
                    calls.add_metric([name, outcome], count)
            yield calls
        if status.alerts is not None:
            alerts = CounterMetricFamily(
                PREFIX + "alerts",
                "Alerts for the alertWebhook by outcome (sent, failed, dropped).",
                labels=["outcome"],
            )
            sent = status.alerts
            for outcome, count in (
                ("sent", sent.sent),
                ("failed", sent.failed),
                ("dropped", sent.dropped),
            ):
                alerts.add_metric([outcome], count)
            yield alerts

    def _breaker(self) -> Metric:
        heat = GaugeMetricFamily(
            PREFIX + "breaker_heat_ratio",
            "Main breaker's thermal replica per phase as a fraction of its trip heat"
            " (conservative calibration; 1 = would trip).",
            labels=["phase"],
        )
        breaker = self._daemon.breaker
        ratio = breaker.heat_ratio() if breaker is not None else None
        for i, value in enumerate(ratio or (), start=1):
            heat.add_metric([str(i)], value)
        return heat

    def _capacity(self, status: DaemonStatus) -> Iterable[Metric]:
        """The capacity tariff's window (no samples without importLimitKw)."""
        cap = status.capacity
        yield _gauge(
            "capacity_limit_kw",
            "The capacity tariff's import limit (importLimitKw).",
            cap.limit_kw if cap is not None else None,
        )
        yield _gauge(
            "capacity_window_average_kw",
            "Average import of the current capacity window so far.",
            cap.window_avg_kw if cap is not None else None,
        )
        yield _gauge(
            "capacity_window_projection_kw",
            "The current window's average if the import stays as it is until the window ends.",
            cap.projection_kw if cap is not None else None,
        )
        yield _gauge(
            "capacity_month_peak_kw",
            "The highest average import of a completed window this month (what the tariff bills).",
            cap.month_peak_kw if cap is not None else None,
        )
        yield _gauge(
            "capacity_active",
            "1 while the capacity tariff holds a car below what the breaker allows.",
            (1.0 if cap.active else 0.0) if cap is not None else None,
        )

    def _fleet_api(self, counter: ApiCalls) -> Iterable[Metric]:
        calls = CounterMetricFamily(
            PREFIX + "fleet_api_calls",
            "Fleet API requests by billing category and outcome.",
            labels=["category", "outcome"],
        )
        by_outcome = counter.by_outcome
        for category in CATEGORIES:
            outcomes = by_outcome.get(category) or {"ok": 0}
            for outcome, count in outcomes.items():
                calls.add_metric([category, outcome], count)
        yield calls
        cost = CounterMetricFamily(
            PREFIX + "fleet_api_cost_dollars",
            "Estimated Fleet API cost of all billed requests since start (USD).",
        )
        cost.add_metric([], counter.cost_usd)
        yield cost
        yield _gauge(
            "fleet_api_cost_last_24h_dollars",
            "Estimated Fleet API cost of the billed requests of the last 24 hours (USD).",
            counter.cost_last_24h_usd,
        )

    def _grid_limit(self, status: DaemonStatus) -> Iterable[Metric]:
        grid = status.grid_limit
        yield _gauge(
            "grid_limit_active",
            "1 while the grid operator's limit holds the chargers under gridLimitKw.",
            1.0 if grid is not None and grid.active else 0.0,
        )
        yield _gauge(
            "grid_limit_kw",
            "Most the chargers together may draw while the grid limit is on (gridLimitKw).",
            grid.limit_kw if grid is not None else None,
        )
        yield _gauge(
            "grid_limit_source_lost",
            "1 while a grid limit source cannot be read (the limit then counts as on).",
            1.0 if grid is not None and grid.lost else 0.0,
        )

    def _meter_and_auth(self, status: DaemonStatus) -> Iterable[Metric]:
        meter = status.meter
        age, valid = (meter.age_secs, meter.valid) if meter is not None else (None, False)
        yield _gauge("meter_reading_age_seconds", "Age of the last valid meter reading.", age)
        yield _gauge(
            "meter_valid",
            "1 while the meter gives valid readings (always 0 in push mode).",
            1.0 if valid else 0.0,
        )
        health = GaugeMetricFamily(
            PREFIX + "dependency_state",
            "1 for the state each dependency is in (ok, degraded, down), as in /status.",
            labels=["dependency", "state"],
        )
        failures = GaugeMetricFamily(
            PREFIX + "dependency_failures",
            "Failed attempts in a row per dependency (0 while it works).",
            labels=["dependency"],
        )
        for name, dep in status.dependencies.items():
            for state in ("ok", "degraded", "down"):
                health.add_metric([name, state], 1.0 if dep.state == state else 0.0)
            failures.add_metric([name], float(dep.failures))
        yield health
        yield failures
        expires = status.auth.access_expires_in_secs
        yield _gauge(
            "access_token_expires_in_seconds",
            "Seconds until the Tesla access token expires (0 when expired).",
            expires,
        )


# --- wiring -------------------------------------------------------------------------------------


def build_registry(daemon: DaemonView) -> CollectorRegistry:
    """A private registry for `daemon`, with the listener that feeds its counters."""
    tally = EventTally(daemon)
    daemon.service.add_listener(tally.on_event)
    registry = CollectorRegistry()
    registry.register(DaemonCollector(daemon, tally))
    return registry


def metrics_routes(daemon: DaemonView) -> list[web.RouteDef]:
    """GET /metrics for `daemon` (Prometheus text, or OpenMetrics when asked for)."""
    registry = build_registry(daemon)

    async def metrics(request: web.Request) -> web.Response:
        """Scrape: build every metric now."""
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    return [web.get("/metrics", metrics)]
