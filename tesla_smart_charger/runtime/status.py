"""What the daemon knows, as one typed model: /status, its OpenAPI schema, /metrics, MQTT and
the dashboard all read `DaemonStatus`, so a renamed field fails type checking, not a consumer.

The models are frozen pydantic models: the /status JSON is `DaemonStatus.model_dump(mode="json")`
and the schema is generated from the same classes (httpapi/openapi.py). A field that is only
there in some set-ups (BLE roads, alerts, a token pair held in memory) is left out of the JSON
when it is None, as /status always did; every other field is always present, null or not.

The `*_view` functions build each part from the running object that owns it; the daemon puts
them together in `Daemon.status()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from tesla_smart_charger.car.failover import RoadStats
    from tesla_smart_charger.car.fleet_api import ApiCallCounter
    from tesla_smart_charger.retry import Health
    from tesla_smart_charger.runtime.alerts import AlertSender
    from tesla_smart_charger.runtime.breaker_monitor import BreakerMonitor
    from tesla_smart_charger.runtime.capacity import CapacityGuard
    from tesla_smart_charger.runtime.service import ChargeService, CommandRecord, MeterPoller

HealthState = Literal["ok", "degraded", "down"]
Escalation = Literal["none", "charge_stop", "relay_off"]
ChargeMode = Literal["fast", "solar", "minsolar"]


def _omitted_when_none() -> Any:
    """A field only some set-ups have: absent from the JSON (not null) when None."""
    return Field(default=None, exclude_if=lambda v: v is None)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VehicleView(_Model):
    """The first car as the controller last saw it."""

    state: Literal["online", "asleep", "offline", "unknown"]
    charging_state: str | None
    amps_actual: int | None
    amps_requested: int | None
    checked_secs_ago: float | None


class ControllerView(_Model):
    """The controller's decision state (the first car's; `escalation` is every car's worst)."""

    mode: Literal["push", "measured"]
    charge_mode: ChargeMode = Field(description="how the car charges (POST /vehicles/{vin}/mode)")
    target_amps: int | None
    setpoint_amps: int | None
    driver_amps: int | None
    driver_limit_amps: int | None = Field(
        description="the most the car may be set to: the driver's setting from the app, "
        "POST /vehicles/{vin}/limit or Home Assistant"
    )
    reason: str
    failsafe: bool
    paused: bool
    rate_limited_for_secs: float = Field(ge=0)
    car_calls_wait_secs: float = Field(ge=0)
    car_calls_wait_reason: str | None
    command_in_flight: bool
    escalation: Escalation = Field(
        description="the escalation step in force after a cut the car did not follow "
        "(docs/relay.md); with several cars the furthest of theirs; /health is 503 while not none"
    )


class Command(_Model):
    """One command sent to the car."""

    at: str = Field(json_schema_extra={"format": "date-time"})
    command: str = Field(description="set_charging_amps, charge_start or charge_stop")
    amps: int | None
    result: str = Field(
        description="ok, or why it failed (asleep, rate_limited, auth, refused, transient, error)"
    )
    reason: str
    car: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="which car, where several cars' commands are listed together (the dashboard)",
    )


class VehicleEntry(_Model):
    """One car of /status `vehicles`: the car, its mode and the controller's view of it."""

    vin: str | None
    name: str | None
    mode: ChargeMode
    state: Literal["online", "asleep", "offline", "unknown"]
    charging_state: str | None
    setpoint_amps: int | None
    target_amps: int | None
    driver_amps: int | None
    driver_limit_amps: int | None
    reason: str
    escalation: Escalation = Field(
        description="this car's own escalation after a cut it did not follow (docs/relay.md)"
    )


class ApiCalls(_Model):
    """Fleet API calls by category, their outcomes, and what they cost."""

    data: int = Field(ge=0)
    command: int = Field(ge=0)
    wake: int = Field(ge=0)
    by_outcome: dict[str, dict[str, int]]
    cost_usd: float = Field(ge=0)
    cost_last_24h_usd: float = Field(ge=0)


class AuthView(_Model):
    """The Tesla login: its state, and when the access token expires."""

    state: Literal["ok", "refreshing", "reauth_required", "missing", "expired", "refresh_failing"]
    access_expires_in_secs: int | None
    last_refresh_at: str | None
    saved: bool | None = _omitted_when_none()
    store_problem: str | None = _omitted_when_none()


class MeterView(_Model):
    """The last meter reading (null in push mode)."""

    type: str
    name: str
    amps: list[float] | None
    phases: int | None = Field(description="supply phases the meter reports")
    volts: list[float | None] | None
    car_amps: float | None
    age_secs: float | None
    valid: bool
    error: str | None
    supply_phases: int | Literal["auto"] = Field(
        description="the supplyPhases setting: 1, 3 or auto (see phases)"
    )


class DaemonInfo(_Model):
    """The process itself."""

    version: str
    uptime_secs: float


class BreakerView(_Model):
    """The main breaker's thermal replica (docs/benchmarks.md)."""

    heat_pct: list[float] | None = Field(
        description="Heat per phase, % of what trips it; null before a reading"
    )
    calibration: str
    rating_amps: float
    trips: int = Field(description="Times the model tripped since the daemon started")
    over_too_long: bool = Field(
        description="The supply has been over rating_amps longer than the model allows "
        "(latched from a modelled trip until it is back under; /health is 503 meanwhile)"
    )


class DependencyHealth(_Model):
    """One dependency: ok / degraded / down, since when, the last error in words."""

    state: HealthState
    since: str | None
    last_error: str | None
    failures: int
    retry_in_secs: float | None = _omitted_when_none()


class Dependencies(_Model):
    """Every dependency the daemon has in this set-up (the others are left out)."""

    meter: DependencyHealth | None = _omitted_when_none()
    ble_bridge: DependencyHealth | None = _omitted_when_none()
    car_link: DependencyHealth | None = _omitted_when_none()
    safety_relay: DependencyHealth | None = _omitted_when_none()
    token_endpoint: DependencyHealth
    token_store: DependencyHealth
    mqtt: DependencyHealth | None = _omitted_when_none()
    grid_limit_input: DependencyHealth | None = _omitted_when_none()
    tasks: DependencyHealth

    def items(self) -> list[tuple[str, DependencyHealth]]:
        """(name, health) of the dependencies present, in /status order (for /metrics)."""
        return [
            (name, value)
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), DependencyHealth)
        ]


class RoadView(_Model):
    """One command road (ble, cloud): its calls and its last fault."""

    calls: int
    ok: int
    failed: int
    refused: int
    skipped: int
    fallbacks: int
    last_error: str | None
    down: bool


class AlertsView(_Model):
    """The alert webhook's counters."""

    sent: int
    failed: int
    dropped: int
    queued: int
    failing: bool


class GridLimitSource(_Model):
    """One source of the grid operator's signal as last heard."""

    state: Literal["active", "inactive", "lost", "unknown"]
    detail: str | None


class GridLimitView(_Model):
    """The grid operator's limit (§14a-style): whether it holds, from which source, since when."""

    active: bool
    source: str | None
    since: str | None
    limit_kw: float = Field(description="the most the chargers together may draw while active")
    car_kw: float = Field(description="each car's share of limit_kw")
    reason: str | None
    lost: list[str] = Field(description="sources that cannot be read (they count as on)")
    sources: dict[str, GridLimitSource]


class CapacityView(_Model):
    """The capacity tariff's current window (importLimitKw over importWindowMins)."""

    limit_kw: float
    window_mins: int
    window_start: str = Field(description="local wall-clock start of the current window")
    window_avg_kw: float = Field(description="average import of the window so far")
    projection_kw: float | None = Field(
        description="the window's average if the import stays as it is until it ends"
    )
    last_window_kw: float | None
    month_peak_kw: float = Field(description="the highest completed window this month")
    import_ceiling_kw: float | None = Field(
        description="the house import the rest of the window allows"
    )
    active: bool = Field(description="the tariff holds a car below what the breaker allows")


class DaemonStatus(_Model):
    """The /status document. The top-level names are stable; tools may poll them."""

    vehicle: VehicleView
    controller: ControllerView
    last_command: Command | None
    vehicles: list[VehicleEntry] = Field(
        description="every car; the single-car objects describe the first"
    )
    api_calls: ApiCalls
    auth: AuthView
    meter: MeterView | None = Field(description="null in push mode")
    daemon: DaemonInfo
    breaker: BreakerView | None = Field(description="null in push mode")
    dependencies: Dependencies
    roads: dict[str, RoadView] | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="only with teslaBleProxy: per road (ble, cloud) its calls",
    )
    alerts: AlertsView | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="only with alertWebhook: alerts sent, failed, dropped, queued",
    )
    capacity: CapacityView | None = Field(
        default=None, description="null unless importLimitKw is set"
    )
    grid_limit: GridLimitView | None = Field(
        default=None,
        description="null unless a grid limit source is configured (gridLimitInput, "
        "gridLimitTopic) or POST /grid-limit has been used",
    )

    def as_json(self) -> dict[str, Any]:
        """The /status JSON."""
        return self.model_dump(mode="json")


# --- built from the running parts ------------------------------------------------------------


def _iso(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="seconds")


def vehicle_view(service: ChargeService) -> VehicleView:
    """/status `vehicle`: the controller's last look at the car."""
    v = service.state.vehicle
    charge = v.charge if v else None
    return VehicleView(
        state=v.state.value if v else "unknown",
        charging_state=charge.charging_state if charge else None,
        amps_actual=charge.charger_actual_current if charge else None,
        amps_requested=charge.charge_current_request if charge else None,
        checked_secs_ago=round(service.now() - v.at, 1) if v else None,
    )


def controller_view(service: ChargeService, escalation: str) -> ControllerView:
    """/status `controller`; `escalation` is the worst of every car's."""
    s = service.state
    now = service.now()
    return ControllerView(
        mode=service.cfg.mode,
        charge_mode=s.charge_mode,  # type: ignore[arg-type]  # one of CHARGE_MODES
        target_amps=s.target,
        setpoint_amps=s.setpoint,
        driver_amps=s.driver_amps,
        driver_limit_amps=s.driver_amps if s.driver_amps is not None else s.setpoint,
        reason=s.reason,
        failsafe=s.failsafe,
        paused=s.paused,
        rate_limited_for_secs=(
            round(max(0.0, s.blocked_until - now), 1) if s.blocked_kind == "rate_limited" else 0.0
        ),
        car_calls_wait_secs=round(max(0.0, s.blocked_until - now), 1),
        car_calls_wait_reason=s.blocked_reason if s.blocked_until > now else None,
        command_in_flight=service.in_flight is not None,
        escalation=escalation,  # type: ignore[arg-type]  # one of ESCALATION_LEVELS
    )


def command_view(record: CommandRecord) -> Command:
    """One command as /status `last_command` and the dashboard show it."""
    return Command(
        at=_iso(record.at) or "",
        command=record.command,
        amps=record.amps,
        result=record.result,
        reason=record.reason,
    )


def vehicle_entry(service: ChargeService, vin: str | None, name: str | None) -> VehicleEntry:
    """One entry of /status `vehicles`."""
    s = service.state
    v = s.vehicle
    return VehicleEntry(
        vin=vin,
        name=name,
        mode=s.charge_mode,  # type: ignore[arg-type]  # one of CHARGE_MODES
        state=v.state.value if v else "unknown",
        charging_state=v.charge.charging_state if v and v.charge else None,
        setpoint_amps=s.setpoint,
        target_amps=s.target,
        driver_amps=s.driver_amps,
        driver_limit_amps=s.driver_amps if s.driver_amps is not None else s.setpoint,
        reason=s.reason,
        escalation=service.escalation.level if service.escalation is not None else "none",
    )


def api_calls_view(counter: ApiCallCounter) -> ApiCalls:
    """/status `api_calls`."""
    counts = counter.counts()
    return ApiCalls(
        data=counts["data"],
        command=counts["command"],
        wake=counts["wake"],
        by_outcome=counter.by_outcome(),
        cost_usd=round(counter.cost_usd(), 6),
        cost_last_24h_usd=round(counter.cost_last_24h_usd(), 6),
    )


def auth_view(tokens: Mapping[str, Any], state: str) -> AuthView:
    """/status `auth` from the token manager's own report, with the state the daemon derived."""
    return AuthView(
        state=state,  # type: ignore[arg-type]  # the token manager's or the daemon's words
        access_expires_in_secs=tokens["access_expires_in_secs"],
        last_refresh_at=tokens["last_refresh_at"],
        saved=tokens.get("saved"),
        store_problem=tokens.get("store_problem"),
    )


def meter_view(poller: MeterPoller, meter_type: str, supply_phases: int | str) -> MeterView:
    """/status `meter`: the last reading the poller kept."""
    r = poller.last
    valid = r is not None and r.valid
    return MeterView(
        type=meter_type,
        name=poller.meter.name,
        amps=[round(a, 3) for a in r.phase_amps] if r is not None and r.phase_amps else None,
        phases=len(r.phase_amps) if r is not None and r.phase_amps else None,
        volts=list(r.phase_volts) if r is not None and r.phase_volts else None,
        car_amps=round(r.car_amps, 3) if r is not None and r.car_amps is not None else None,
        age_secs=round(poller.now() - r.at, 1) if valid and r is not None else None,
        valid=valid and poller.last_error is None,
        error=poller.last_error,
        supply_phases=supply_phases,  # type: ignore[arg-type]  # 1, 3 or "auto" (validated)
    )


def breaker_view(breaker: BreakerMonitor) -> BreakerView:
    """/status `breaker`: heat per phase in % of trip, and the calibration."""
    ratio = breaker.heat_ratio()
    return BreakerView(
        heat_pct=None if ratio is None else [round(100.0 * r, 1) for r in ratio],
        calibration=f"{breaker.cal.name} (k {breaker.cal.k:g}, tau {breaker.cal.tau:g} s)",
        rating_amps=breaker.rating,
        trips=breaker.trips,
        over_too_long=breaker.over_too_long,
    )


def health_view(health: Health) -> DependencyHealth:
    """One dependency's health as /status shows it (`since` as ISO 8601)."""
    return DependencyHealth(
        state=health.state,
        since=_iso(health.since),
        last_error=health.last_error,
        failures=health.failures,
        retry_in_secs=round(health.retry_in, 1) if health.retry_in is not None else None,
    )


def dependencies_view(healths: Mapping[str, Health]) -> Dependencies:
    """/status `dependencies` from the daemon's per-dependency health."""
    return Dependencies(**{name: health_view(h) for name, h in healths.items()})


def road_view(stats: RoadStats) -> RoadView:
    """One road's entry of /status `roads`."""
    return RoadView(
        calls=stats.calls,
        ok=stats.ok,
        failed=stats.failed,
        refused=stats.refused,
        skipped=stats.skipped,
        fallbacks=stats.fallbacks,
        last_error=stats.last_error,
        down=stats.down_since is not None,
    )


def alerts_view(sender: AlertSender) -> AlertsView:
    """/status `alerts`."""
    return AlertsView(
        sent=sender.sent,
        failed=sender.failed,
        dropped=sender.dropped,
        queued=sender.queued,
        failing=sender.failing,
    )


def capacity_view(guard: CapacityGuard) -> CapacityView:
    """/status `capacity`: the current window of the capacity tariff."""
    win = guard.window
    projection = guard.projection_kw()
    ceiling = guard.ceiling_w
    return CapacityView(
        limit_kw=guard.cfg.limit_kw,
        window_mins=guard.cfg.window_mins,
        window_start=win.start.isoformat(timespec="seconds"),
        window_avg_kw=round(guard.average_kw(), 3),
        projection_kw=round(projection, 3) if projection is not None else None,
        last_window_kw=round(win.last_window_kw, 3) if win.last_window_kw is not None else None,
        month_peak_kw=round(win.month_peak_kw, 3),
        import_ceiling_kw=round(ceiling / 1000.0, 3) if ceiling is not None else None,
        active=guard.bound(),
    )
