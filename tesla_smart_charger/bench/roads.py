"""Benchmark: Tesla's cloud fails for 10 minutes in the middle of an evening (issue 11).

One hour of the winter evening (18:00-19:00, seed 1), during which the cloud road answers the
way vehicle-command issue 452 reports it: every command `500 vehicle unavailable: vehicle is
offline or asleep` and every `vehicle_data` 408 while the car is visibly charging. The
daemon's shell (`ChargeService` with its `Escalator`, bench/shell.py) runs on virtual time,
with and without a BLE bridge (the daemon's `BleVehicle` and failover, answered in process:
free, 0.5 s, unaffected by the outage) and a safety relay (0.2 s). Reported: overload A*s and the longest overload, the breaker replicas' trips and
peak, energy, escalation steps and the Fleet API cost. Part of `make bench`; `--quick` runs the
same hour (it takes about a second per variant).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

from tesla_smart_charger.bench import common as bench
from tesla_smart_charger.bench.common import Metrics, Result, Trace, control_config, make_car
from tesla_smart_charger.bench.shell import (
    BLE_LATENCY,
    RELAY_LATENCY,
    Counts,
    Shell,
    quietly,
    settings_for,
)
from tesla_smart_charger.simulator.car import unavailable_reply
from tesla_smart_charger.simulator.inprocess import Reply

WINDOW: Final = (3600, 7200)  # 18:00-19:00 of the winter evening (it starts at 17:00)
OUTAGE: Final = (1500.0, 2100.0)  # s into the window: 18:25-18:35
ESCALATE_AFTER: Final = 20.0  # escalateAfterSecs, the shipped default
Variant = Literal["no-escalation", "cloud", "cloud+relay", "ble+cloud", "ble+cloud+relay"]
# no-escalation: the cloud road alone as before issue 11 (no failed-cut detection).
VARIANTS: Final[tuple[Variant, ...]] = (
    "no-escalation",
    "cloud",
    "cloud+relay",
    "ble+cloud",
    "ble+cloud+relay",
)


def outage_trace() -> Trace:
    """The hour of the winter evening the outage falls into."""
    full = bench.build_trace("winter-evening")
    start, stop = WINDOW
    return replace(
        full,
        key="cloud-outage",
        title="cloud outage: winter evening 18:00-19:00, the cloud road fails 18:25-18:35",
        house=full.house[start:stop],
    )


def outage(method: str, path: str, now: float) -> Reply | None:
    """Inside OUTAGE the cloud answers as in vehicle-command issue 452; else the car answers.

    Every command: 500 "vehicle unavailable" (not billed); every vehicle_data: 408 (billed),
    though the car is awake and charging. The vehicle state call still answers.
    """
    if not OUTAGE[0] <= now < OUTAGE[1]:
        return None
    if "/command/" in path:
        return unavailable_reply(500)
    if path.endswith("/vehicle_data"):
        return unavailable_reply(408)
    return None


@dataclass(frozen=True)
class OutageResult:
    """One variant on the outage hour."""

    variant: str
    result: Result
    charge_stops: int
    relay_offs: int
    alerts: int
    # The longest overload that began while the cloud road was down (the escalation's part;
    # an overload after it, with the car held at its minimum, is the controller's).
    longest_in_outage: int = 0


async def _variant(variant: Variant) -> OutageResult:
    trace = outage_trace()
    cfg = control_config(trace)
    car = make_car(trace)
    relay = variant.endswith("relay")
    shell = Shell(
        [car],
        cfg,
        settings_for(trace.limit, cfg, relay=relay),
        seed=trace.seed,
        ble=variant.startswith("ble"),
        relay=relay,
        escalate=variant != "no-escalation",
    )
    shell.api.inject = outage
    shell.start()
    m = Metrics(trace.limit, trace.phases, (trace.house[0][0] + car.current_draw(0.0),))
    began: float | None = None  # the overload under way began at this second in the outage
    longest = 0
    for t, load in enumerate(trace.house):
        now = float(t)
        await shell.at(now)
        draw = car.current_draw(now)
        supply = (load[0] + draw,)
        m.add(supply, draw)
        if supply[0] <= trace.limit:
            began = None
        elif began is None and OUTAGE[0] <= now < OUTAGE[1]:
            began = now
        if began is not None:
            longest = max(longest, t + 1 - int(began))
        await shell.read(supply)
    await shell.stop()
    result = bench.result(variant, m, Counts(shell.api, car.wakes), trace)  # billed: cloud only
    if shell.ble:
        commands = shell.ble[0].commands + shell.api.commands
        result = replace(result, commands=commands, data_calls=shell.api.data_calls)
    escalation = shell.services[0].escalation
    steps = escalation.steps if escalation is not None else {}
    return OutageResult(
        variant,
        result,
        steps.get("charge_stop", 0),
        steps.get("relay_off", 0),
        len(shell.alerts.sent),
        longest,
    )


def run_variant(variant: Variant) -> OutageResult:
    """Drive the outage hour with one road/relay combination, on the daemon's shell."""
    return quietly(_variant(variant))


HEADER: Final = (
    f"{'roads':<16} {'A*s':>7} {'longest':>8} {'trips':>6} {'trips':>6} {'peak':>6}"
    f" {'energy':>7} {'charge':>7} {'relay':>6} {'alerts':>6} {'Fleet':>7} {'wakes':>5}"
)
UNITS: Final = (
    f"{'':<16} {'[A*s]':>7} {'[s]':>8} {'cons.':>6} {'typ.':>6} {'[%]':>6}"
    f" {'[kWh]':>7} {'stops':>7} {'offs':>6} {'':>6} {'calls $':>7} {'':>5}"
)


def report() -> str:
    """The outage table (deterministic)."""
    lines = [
        f"{outage_trace().title}, 1 h, seed 1; escalateAfterSecs {ESCALATE_AFTER:g};"
        f" BLE {BLE_LATENCY:g} s, relay {RELAY_LATENCY:g} s",
        HEADER,
        UNITS,
        "-" * len(HEADER),
    ]
    for variant in VARIANTS:
        o = run_variant(variant)
        r = o.result
        lines.append(
            f"{variant:<16} {r.overload_amp_secs:>7.0f} {r.longest_overload:>8} {r.trips:>6}"
            f" {r.trips_typical:>6} {r.peak_pct:>6.1f} {r.energy_kwh:>7.2f} {o.charge_stops:>7}"
            f" {o.relay_offs:>6} {o.alerts:>6} {r.cost:>7.3f} {r.wakes:>5}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
