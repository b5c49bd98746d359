"""A meter whose values froze is told from a house that is truly steady (control/frozen.py)."""

from __future__ import annotations

from collections.abc import Sequence

from tesla_smart_charger.control.frozen import (
    FROZEN_CHARGING_SECS,
    FreezeState,
    observe,
)

SETTLE = 8.0
STALE = 10.0
STEADY = (26.0, 0.0)


def run(
    readings: Sequence[tuple[float, tuple[float, ...]]],
    *,
    moved_at: float | None = None,
    moved_amps: float = 0.0,
    charging: bool = False,
) -> list[bool]:
    """Feed (time, values) in order; whether the meter counted as frozen after each."""
    state = FreezeState()
    out = []
    for now, values in readings:
        state = observe(
            state,
            values,
            now,
            moved_at=moved_at,
            moved_amps=moved_amps,
            charging=charging,
            settle_secs=SETTLE,
            stale_secs=STALE,
        )
        out.append(state.frozen)
    return out


def every_second(
    until: float, values: tuple[float, ...] = STEADY
) -> list[tuple[float, tuple[float, ...]]]:
    return [(float(t), values) for t in range(int(until) + 1)]


def test_a_steady_house_without_a_charging_car_is_never_frozen() -> None:
    # everything off, the car not charging: identical for an hour is fine
    assert not any(run(every_second(3600)))


def test_identical_values_after_a_big_change_the_car_had_time_to_follow_are_frozen() -> None:
    frozen = run(every_second(40), moved_at=5.0, moved_amps=7.0, charging=True)
    first = frozen.index(True)
    assert first == 5 + SETTLE + STALE  # 23 s: the car followed, the meter should show it
    assert all(frozen[first:])


def test_a_change_below_two_amps_proves_nothing() -> None:
    assert not any(run(every_second(60), moved_at=5.0, moved_amps=1.0, charging=True))


def test_a_change_that_showed_before_the_values_stuck_proves_nothing() -> None:
    # the command landed at 5 s; the values changed at 6 s (the car followed) and stayed
    readings = [(float(t), (36.0, 0.0)) for t in range(6)] + [
        (float(t), STEADY) for t in range(6, 60)
    ]
    assert not any(run(readings, moved_at=5.0, moved_amps=7.0))


def test_noisy_readings_are_never_frozen() -> None:
    readings = [(float(t), (26.0 + (t % 7) * 0.013, 0.0)) for t in range(400)]
    assert not any(run(readings, moved_at=5.0, moved_amps=10.0, charging=True))


def test_identical_for_minutes_while_charging_is_frozen() -> None:
    frozen = run(every_second(FROZEN_CHARGING_SECS + 5), charging=True)
    assert frozen.index(True) == FROZEN_CHARGING_SECS


def test_a_pause_in_charging_restarts_the_long_rule() -> None:
    state = FreezeState()
    for t in range(int(FROZEN_CHARGING_SECS) + 10):
        charging = t != 100  # one reading with the car not charging
        state = observe(
            state,
            STEADY,
            float(t),
            moved_at=None,
            moved_amps=0.0,
            charging=charging,
            settle_secs=SETTLE,
            stale_secs=STALE,
        )
    assert not state.frozen  # 101 .. 309 s: less than FROZEN_CHARGING_SECS


def test_frozen_holds_until_a_value_changes_then_clears() -> None:
    readings = [*every_second(30), (31.0, (25.99, 0.0))]
    frozen = run(readings, moved_at=2.0, moved_amps=8.0, charging=True)
    assert frozen[29]
    assert frozen[30]
    assert frozen[-1] is False


def test_the_reason_is_in_words() -> None:
    state = FreezeState()
    for now, values in every_second(30):
        state = observe(
            state,
            values,
            now,
            moved_at=2.0,
            moved_amps=8.0,
            charging=True,
            settle_secs=SETTLE,
            stale_secs=STALE,
        )
    assert state.why.startswith("every value has read exactly the same for 20 s")
    assert "changed by 8 A" in state.why
