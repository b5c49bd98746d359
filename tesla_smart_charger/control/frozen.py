"""A meter whose values froze: pure, the clock passed in.

A Shelly that keeps answering with the same numbers (a hung metering chip, a stuck cloud
relay, a firmware bug) looks healthy to every other check, and the controller would go on
trusting a house that no longer changes. A real meter's readings carry noise in their
decimals, so bit-identical values are a strong sign, but a house can be truly steady (everything
off, the car not charging). The meter is judged frozen only when the car's draw must have
shown on it:

1. every value of the reading (each phase's current, and the charger channel when there is
   one) has been bit-identical since before a command changed the car's current by at least
   `FREEZE_STEP_AMPS`, and that command landed at least `carSettleSecs + energyMonitorStaleSecs`
   ago: the car had time to follow, and the meter time to show it; or
2. every value has been bit-identical for `FROZEN_CHARGING_SECS` while the car was charging
   throughout (a charging car's current is never steady to the last decimal for minutes).

A frozen meter is then treated like a silent one (fail-safe: chargerMinAmps) until a reading
differs from the frozen values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# A setpoint change this large must show on the meter (a Shelly reads to about 0.01 A).
FREEZE_STEP_AMPS: Final = 2.0
# Bit-identical values this long while the car charges: frozen, whatever was commanded.
FROZEN_CHARGING_SECS: Final = 300.0


@dataclass(frozen=True, slots=True)
class FreezeState:
    """What the watch remembers between readings."""

    values: tuple[float, ...] = ()
    since: float | None = None  # the first reading with exactly these values
    charging_since: float | None = None  # the car has charged throughout the run since then
    frozen: bool = False
    why: str = ""  # in words, once frozen


def observe(
    state: FreezeState,
    values: tuple[float, ...],
    now: float,
    *,
    moved_at: float | None,
    moved_amps: float,
    charging: bool,
    settle_secs: float,
    stale_secs: float,
) -> FreezeState:
    """Fold one valid reading's values in.

    `moved_at`/`moved_amps`: when the last command that changed the car's current by at least
    FREEZE_STEP_AMPS landed, and by how much (None: none yet). `charging`: the car is charging
    now, as far as the controller knows.
    """
    if values != state.values or state.since is None:
        return FreezeState(values, now, now if charging else None)
    charging_since = (
        (state.charging_since if state.charging_since is not None else now) if (charging) else None
    )
    if state.frozen:
        return FreezeState(values, state.since, charging_since, True, state.why)
    same_for = now - state.since
    if (
        moved_at is not None
        and moved_at >= state.since
        and moved_amps >= FREEZE_STEP_AMPS
        and now - moved_at >= settle_secs + stale_secs
    ):
        why = (
            f"every value has read exactly the same for {same_for:.0f} s although the car's "
            f"current was changed by {moved_amps:.0f} A {now - moved_at:.0f} s ago"
        )
        return FreezeState(values, state.since, charging_since, True, why)
    if charging_since is not None and now - charging_since >= FROZEN_CHARGING_SECS:
        why = f"every value has read exactly the same for {same_for:.0f} s while the car charged"
        return FreezeState(values, state.since, charging_since, True, why)
    return FreezeState(values, state.since, charging_since)
