"""What to do when a cut does not land: a pure state machine, the clock passed in.

A lowering command that errors, or that the car accepts and does not follow (after
`carSettleSecs` the charger channel, or else the meter, still shows the old current), is a
*failed cut*. Then, in order:

1. retry the cut once on the other road (BLE <-> cloud), never above the controller's
   current target (the controller owns the setpoint: a retry never undoes a newer, lower cut);
2. still above `homeMaxAmps` `escalateAfterSecs` after the first failed cut: `charge_stop`;
3. still above another `escalateAfterSecs` later, and a relay is configured: the charger
   circuit off (the relay is switched again every `RELAY_RETRY_SECS` until it confirms);
4. once room for `chargerMinAmps` has lasted `RESUME_AFTER_SECS` (60 s): the relay back on and
   normal control resumed, but only when a road carried the car's safe current (the
   `chargerMinAmps` set first) or the house alone leaves room for the car's last known draw.
   Without either it stays off: the car would come back at its old current and overload the
   house again. The safe current is asked for again when the failing road's policy allows.

An overload while no road reaches the car (every call failed since the last that got through:
the proxy refused or answering 500, the token endpoint failing) is a failed cut of its own,
whether or not a cut was ever sent: nothing the controller sends can land. With a relay, it goes
straight to the relay after `escalateAfterSecs` (a `charge_stop` could not land either); without
one it is alerted once, and the controller's cut goes when a road is back.

With several cars on one meter and no charger channel of its own (`judge_by_look`), the meter
cannot tell whose cut did not land: a cut still followed by an overload after `carSettleSecs`
is then judged by one look at that car (`LookAtCar`; its `charger_actual_current` comes back as
`CarReported`), so only the car that ignored its cut escalates.

A failed cut without an overload ends by itself once the worst phase has stayed at or below the
limit for `escalateAfterSecs`. Like `controller.decide`, `step()` does no I/O: the shell executes
the actions and feeds their outcomes back as inputs. `level` is `controller.escalation` in
/status (`none`, `charge_stop`, `relay_off`); `/health` is 503 while it is not `none`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

Level = Literal["none", "charge_stop", "relay_off"]

RESUME_AFTER_SECS: Final = 60.0  # room for chargerMinAmps this long before the relay goes on
RELAY_RETRY_SECS: Final = 5.0  # a relay that did not switch is asked again this often
# A cut counts as followed when the charger channel shows at most this much above the target,
# or the meter shows at least this share of the expected drop.
FOLLOW_TOLERANCE_AMPS: Final = 1.0
FOLLOW_SHARE: Final = 0.5
# The car answered the safe current "asleep" (or Tesla's cloud says so of a car it cannot
# reach) or refused it: asked again this much later, not at the policy's "now" (every try is a
# command to the car). A sleeping car wakes at its old current when power returns, so the relay
# waits meanwhile (or for the house to leave room for its last draw).
CAR_ANSWER_RETRY_SECS: Final = 60.0


@dataclass(frozen=True, slots=True)
class EscalationConfig:
    """The settings the escalation needs, copied out of `Settings`."""

    home_max_amps: float
    charger_min_amps: float
    car_settle_secs: float = 8.0
    escalate_after_secs: float = 20.0
    relay_configured: bool = False
    safety_margin_amps: float = 0.0
    judge_by_look: bool = False  # several cars on the meter: ask the car, not the supply


# --- inputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    """A valid meter reading: worst phase, and the charger channel when there is one."""

    worst_amps: float
    car_amps: float | None = None
    # With several cars: the supply this car must fit its minimum under to resume (the house
    # without cars plus every other car's minimum); None: the worst phase.
    room_worst: float | None = None


@dataclass(frozen=True, slots=True)
class CutAccepted:
    """A lowering `set_charging_amps` from `from_amps` to `to_amps` was accepted on `road`."""

    road: str
    from_amps: float
    to_amps: float


@dataclass(frozen=True, slots=True)
class CutErrored:
    """A lowering command failed on `road` (every road the call tried failed)."""

    road: str
    to_amps: float
    error: str


@dataclass(frozen=True, slots=True)
class StopOutcome:
    """The `charge_stop` the escalation asked for was accepted (`ok`) or failed."""

    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """The relay confirmed it is now `on`, or (`ok` False) did not answer / switch."""

    on: bool
    ok: bool
    error: str = ""


@dataclass(frozen=True, slots=True)
class RoadStatus:
    """Whether some road to the car works now (a command or look just succeeded or failed).

    `retry_at`: with `up` False, when the failing road's retry policy allows the next call.
    """

    up: bool
    retry_at: float = 0.0


@dataclass(frozen=True, slots=True)
class AmpsOutcome:
    """The safe current the escalation asked for (`SetAmps`) landed (`ok`) or failed.

    `retry_at`: when it failed, when the failing road's retry policy allows the next call.
    `answer`: the car itself answered `asleep` or `refused` (the road works, the car did not
    take it), else "".
    """

    ok: bool
    error: str = ""
    retry_at: float = 0.0
    answer: Literal["", "asleep", "refused"] = ""


@dataclass(frozen=True, slots=True)
class ControllerTarget:
    """The controller's current target (amps; None: none). A retry never sends more."""

    amps: float | None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed without a reading: deadlines are checked against the last known reading."""


@dataclass(frozen=True, slots=True)
class CarReported:
    """What the car says it draws (`charger_actual_current`); None: the look failed."""

    amps: float | None
    error: str = ""


Input = (
    Measured
    | CutAccepted
    | CutErrored
    | StopOutcome
    | RelayOutcome
    | RoadStatus
    | AmpsOutcome
    | ControllerTarget
    | Tick
    | CarReported
)


# --- outputs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryCut:
    """Send the cut again, on `road` only."""

    road: str
    amps: float


@dataclass(frozen=True, slots=True)
class ChargeStop:
    """Send `charge_stop` (BLE first, then the cloud)."""


@dataclass(frozen=True, slots=True)
class SwitchRelay:
    """Switch the charger circuit on or off."""

    on: bool


@dataclass(frozen=True, slots=True)
class SetAmps:
    """Set the car's amps (before the relay powers the charger again); `AmpsOutcome` follows."""

    amps: float


@dataclass(frozen=True, slots=True)
class Resume:
    """Normal control takes over again; `restart_charging` when we stopped the car."""

    restart_charging: bool


@dataclass(frozen=True, slots=True)
class Alert:
    """One episode step for the alert webhook and the log."""

    event: str
    message: str


@dataclass(frozen=True, slots=True)
class LookAtCar:
    """Ask the car what it draws (one billed data call; never a wake)."""


Action = RetryCut | ChargeStop | SwitchRelay | SetAmps | Resume | Alert | LookAtCar


# --- state -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PendingCut:
    """A cut the car accepted and has `car_settle_secs` to follow."""

    at: float
    road: str
    from_amps: float
    to_amps: float
    worst_at_send: float | None
    looking: bool = False  # judge_by_look: the car was asked, its answer is awaited


@dataclass(frozen=True, slots=True)
class EscalationState:
    """Everything `step()` remembers between inputs."""

    level: Level = "none"
    first_failed_at: float | None = None  # start of the episode
    retried_other_road: bool = False
    pending: PendingCut | None = None
    stop_at: float | None = None  # when charge_stop was asked for
    relay_at: float | None = None  # when the relay was last asked to switch
    relay_off_confirmed: bool = False
    off_confirmed_at: float | None = None  # when the relay confirmed it is off
    relay_on_requested: bool = False
    within_limit_since: float | None = None
    room_since: float | None = None
    last_worst: float | None = None
    last_car: float | None = None
    last_room: float | None = None
    road_up: bool = True
    road_retry_at: float = 0.0  # when the failing road may be tried again (its policy)
    alerted: frozenset[str] = frozenset()  # failure alerts already sent in this episode
    # The episode opened on an overload while no road reached the car (no cut could land);
    # a road that works again hands the overload back to the controller.
    no_road: bool = False
    amps_at: float | None = None  # when the safe current was last asked for (relay off)
    target: float | None = None  # the controller's current target: retries never send more
    # The car's last known draw (its charger channel, or the drop the relay's cut showed):
    # with the house alone leaving room for it, the relay may go on without a road.
    draw: float | None = None
    worst_at_off: float | None = None  # the supply when the relay was switched off
    house_off: float | None = None  # the lowest supply just after: the house alone
    fit_since: float | None = None  # the house alone leaves room for `draw` since

    @property
    def active(self) -> bool:
        """An escalation step is in force: /health is 503."""
        return self.level != "none"

    @property
    def cut_failed(self) -> bool:
        """A failed-cut episode is open (escalation may follow)."""
        return self.first_failed_at is not None


Step = tuple[EscalationState, tuple[Action, ...]]


def _calm(state: EscalationState) -> EscalationState:
    """No episode: forget everything but the last reading, the road's health and the car."""
    return EscalationState(
        road_up=state.road_up,
        road_retry_at=state.road_retry_at,
        last_worst=state.last_worst,
        last_car=state.last_car,
        last_room=state.last_room,
        target=state.target,
        draw=state.draw,
    )


def _capped(amps: float, state: EscalationState) -> float:
    """`amps`, never above the controller's current target (it owns the setpoint)."""
    return amps if state.target is None else min(amps, state.target)


def _alert_once(state: EscalationState, event: str, message: str) -> Step:
    """A failure alert, sent once per episode however often the failure repeats."""
    if event in state.alerted:
        return state, ()
    return replace(state, alerted=state.alerted | {event}), (Alert(event, message),)


def _other(road: str) -> str:
    return "cloud" if road == "ble" else "ble"


def _followed(cut: PendingCut, reading: Measured, cfg: EscalationConfig) -> bool:
    """Did the car follow `cut`, judging by the charger channel or else the meter?"""
    if reading.car_amps is not None:
        return reading.car_amps <= cut.to_amps + FOLLOW_TOLERANCE_AMPS
    if reading.worst_amps <= cfg.home_max_amps or cut.worst_at_send is None:
        return True  # within the limit: nothing to escalate, whatever the car did
    expected = cut.from_amps - cut.to_amps
    return cut.worst_at_send - reading.worst_amps >= FOLLOW_SHARE * expected


def _failed_cut(state: EscalationState, road: str, amps: float, now: float, why: str) -> Step:
    """Open (or continue) the episode; retry once on the other road."""
    actions: list[Action] = []
    first = state.first_failed_at if state.first_failed_at is not None else now
    retried = state.retried_other_road
    if not retried and state.level == "none":
        actions.append(RetryCut(_other(road), _capped(amps, state)))
        retried = True
    if state.first_failed_at is None:
        actions.append(Alert("cut_failed", f"the car did not take the cut to {amps:g} A: {why}"))
    new = replace(state, first_failed_at=first, retried_other_road=retried, pending=None)
    return new, tuple(actions)


def step(state: EscalationState, event: Input, now: float, cfg: EscalationConfig) -> Step:
    """Advance the escalation by one input at time `now`; returns the new state and actions."""
    if isinstance(event, CutAccepted):
        if state.level != "none" or event.to_amps >= event.from_amps:
            return state, ()
        pending = PendingCut(now, event.road, event.from_amps, event.to_amps, state.last_worst)
        return replace(state, pending=pending), ()
    if isinstance(event, CutErrored):
        if state.level != "none":
            return state, ()
        return _failed_cut(state, event.road, event.to_amps, now, event.error)
    if isinstance(event, ControllerTarget):
        return replace(state, target=event.amps), ()
    if isinstance(event, RoadStatus):
        return _road_status(state, event.up, event.retry_at), ()
    if isinstance(event, AmpsOutcome):
        return _amps_outcome(state, event, now)
    if isinstance(event, StopOutcome):
        if state.level == "charge_stop" and not event.ok:
            # Retried at the next deadline; the relay step follows on the same clock.
            return _alert_once(state, "charge_stop_failed", f"charge_stop failed: {event.error}")
        return state, ()
    if isinstance(event, RelayOutcome):
        return _relay_outcome(state, event, now)
    if isinstance(event, CarReported):
        return _car_reported(state, event, now, cfg)
    if isinstance(event, Measured):
        state = replace(
            state,
            last_worst=event.worst_amps,
            last_car=event.car_amps,
            last_room=event.room_worst,
        )
        return _evaluate(_note_draw(state, event, now, cfg), event, now, cfg, fresh=True)
    if state.last_worst is None:
        return state, ()
    last = Measured(state.last_worst, state.last_car, state.last_room)
    return _evaluate(state, last, now, cfg, fresh=False)


def _note_draw(
    state: EscalationState, reading: Measured, now: float, cfg: EscalationConfig
) -> EscalationState:
    """Keep the car's last known draw: its charger channel while the circuit is powered, or
    (meter only) the drop the relay's cut showed within `car_settle_secs` of switching off."""
    circuit_off = state.level == "relay_off" and state.relay_off_confirmed
    if reading.car_amps is not None:
        if reading.car_amps > 0 and not circuit_off:
            return replace(state, draw=reading.car_amps)
        return state
    if (
        not circuit_off
        or state.worst_at_off is None
        or state.off_confirmed_at is None
        or now - state.off_confirmed_at > cfg.car_settle_secs
    ):
        return state
    # The lowest reading of the first seconds: one taken just before the switch would
    # otherwise make the car's draw look like nothing.
    house = (
        reading.worst_amps if state.house_off is None else min(state.house_off, reading.worst_amps)
    )
    return replace(state, house_off=house, draw=max(0.0, state.worst_at_off - house))


def _car_reported(
    state: EscalationState, event: CarReported, now: float, cfg: EscalationConfig
) -> Step:
    """The look a settled cut asked for: the car's own word on whether it followed."""
    cut = state.pending
    if cut is None or not cut.looking or state.level != "none":
        return state, ()
    if event.amps is not None and event.amps <= cut.to_amps + FOLLOW_TOLERANCE_AMPS:
        return _calm(state), ()
    why = (
        f"it still draws {event.amps:g} A after {cfg.car_settle_secs:g} s"
        if event.amps is not None
        else f"the look to confirm it failed ({event.error})"
    )
    return _failed_cut(state, cut.road, cut.to_amps, now, why)


def _road_status(state: EscalationState, up: bool, retry_at: float) -> EscalationState:
    """A road's health changed; a road back at no step yet ends a no-road episode."""
    state = replace(state, road_up=up, road_retry_at=0.0 if up else retry_at)
    if up and state.no_road and state.level == "none":
        # The controller's cut can land now: it is judged as any other cut.
        return _calm(state)
    return state


def _amps_outcome(state: EscalationState, event: AmpsOutcome, now: float) -> Step:
    """The safe current landed: a road carries commands, so the relay may go back on."""
    retry_at = now + CAR_ANSWER_RETRY_SECS if event.answer else event.retry_at
    state = _road_status(state, event.ok, retry_at)
    if (
        not event.ok
        or state.level != "relay_off"
        or state.relay_on_requested
        or state.room_since is None
        or now - state.room_since < RESUME_AFTER_SECS
    ):
        return state, ()
    return replace(state, relay_on_requested=True, relay_at=now), (
        SwitchRelay(on=True),
        Alert(
            "relay_on",
            "room for the car has lasted 60 s and the car took its minimum current: "
            "charger circuit on",
        ),
    )


def _relay_outcome(state: EscalationState, event: RelayOutcome, now: float) -> Step:
    if not event.ok:
        return _alert_once(state, "relay_failed", f"the safety relay did not switch: {event.error}")
    if not event.on and state.level == "relay_off":
        if state.relay_off_confirmed:
            return state, ()
        return replace(state, relay_off_confirmed=True, off_confirmed_at=now, house_off=None), ()
    if event.on and state.relay_on_requested:
        return _calm(state), (
            Resume(restart_charging=True),
            Alert("resolved", "charger circuit powered again: normal control resumes"),
        )
    return state, ()


def _evaluate(
    state: EscalationState, reading: Measured, now: float, cfg: EscalationConfig, *, fresh: bool
) -> Step:
    actions: list[Action] = []
    over = reading.worst_amps > cfg.home_max_amps
    if state.pending is not None and now - state.pending.at >= cfg.car_settle_secs and fresh:
        cut = state.pending
        if (
            cfg.judge_by_look
            and reading.car_amps is None
            and reading.worst_amps > cfg.home_max_amps
        ):
            # Several cars, one meter: whose cut did not land? The car alone can say.
            if not cut.looking:
                state = replace(state, pending=replace(cut, looking=True))
                actions.append(LookAtCar())
        elif _followed(cut, reading, cfg):
            # The road works and the car listens: whatever overload is left is the
            # controller's to handle, not an escalation.
            state = _calm(state)
        else:
            shown = reading.car_amps if reading.car_amps is not None else reading.worst_amps
            state, acts = _failed_cut(
                state,
                cut.road,
                cut.to_amps,
                now,
                f"still {shown:g} A after {cfg.car_settle_secs:g} s",
            )
            actions += acts
    if state.level == "none":
        return _level_none(state, reading, now, cfg, over=over, fresh=fresh, actions=actions)
    return _escalated(state, reading, now, cfg, over=over, fresh=fresh, actions=actions)


def _level_none(
    state: EscalationState,
    reading: Measured,
    now: float,
    cfg: EscalationConfig,
    *,
    over: bool,
    fresh: bool,
    actions: list[Action],
) -> Step:
    """No step taken yet: end a calm episode, or stop charging when it has lasted."""
    first_failed = state.first_failed_at
    if first_failed is None and over and not state.road_up:
        # Over the limit and no road reaches the car: nothing the controller sends can land
        # (it may send nothing at all), so this is a failed cut (no retry: no road works).
        # Said once, with what is done about it, when the relay goes off.
        state = replace(state, first_failed_at=now, retried_other_road=True, no_road=True)
        return state, tuple(actions)
    if first_failed is None:
        return state, tuple(actions)
    if not over:
        if not fresh:
            return state, tuple(actions)
        since = state.within_limit_since if state.within_limit_since is not None else now
        if now - since >= cfg.escalate_after_secs:
            return _calm(state), tuple(actions)
        return replace(state, within_limit_since=since), tuple(actions)
    state = replace(state, within_limit_since=None)
    if now - first_failed < cfg.escalate_after_secs:
        return state, tuple(actions)
    if state.no_road and not cfg.relay_configured:
        # No relay and no road: nothing can stop the car. Said once; the controller's cut goes
        # the moment a road is back (a charge_stop queued meanwhile would stop the car then).
        return _alert_once(
            state,
            "cut_failed",
            f"above {cfg.home_max_amps:g} A for {now - first_failed:.0f} s and no road reaches "
            "the car; with no safety relay nothing can stop it until a road is back",
        )
    if not state.road_up and cfg.relay_configured:
        # No road would carry a charge_stop either: the relay is the one lever that works.
        state = _relay_off(replace(state, pending=None), reading.worst_amps, now)
        actions += [
            SwitchRelay(on=False),
            Alert(
                "relay_off",
                f"above {cfg.home_max_amps:g} A for {now - first_failed:.0f} s and no road "
                "reaches the car: the charger circuit is switched off",
            ),
        ]
    else:
        state = replace(state, level="charge_stop", stop_at=now, pending=None)
        actions += [
            ChargeStop(),
            Alert(
                "charge_stop",
                f"the car ignored the cut and the house is still above {cfg.home_max_amps:g} A: "
                "asking the car to stop charging",
            ),
        ]
    return state, tuple(actions)


def _relay_off(state: EscalationState, worst: float, now: float) -> EscalationState:
    """The relay is asked to switch off now; `worst` is the supply with the car on it."""
    return replace(
        state,
        level="relay_off",
        relay_at=now,
        relay_off_confirmed=False,
        off_confirmed_at=None,
        worst_at_off=worst,
        house_off=None,
    )


def _escalated(
    state: EscalationState,
    reading: Measured,
    now: float,
    cfg: EscalationConfig,
    *,
    over: bool,
    fresh: bool,
    actions: list[Action],
) -> Step:
    """charge_stop or relay_off in force: the next step while over, resuming once room lasts."""
    # Another car may use the room this one left: with several cars it resumes once the
    # house leaves room for its minimum beside every other car's (what the sharing gives it).
    basis = reading.room_worst if reading.room_worst is not None else reading.worst_amps
    room = cfg.home_max_amps - cfg.safety_margin_amps - basis
    if over:
        state = replace(state, room_since=None, fit_since=None)
        since = state.relay_at if state.level == "relay_off" else state.stop_at
        due = since is not None and now - since >= cfg.escalate_after_secs
        if state.level == "charge_stop" and due:
            if cfg.relay_configured:
                state = _relay_off(state, reading.worst_amps, now)
                actions += [
                    SwitchRelay(on=False),
                    Alert(
                        "relay_off",
                        "charge_stop did not stop the overload: the charger circuit is switched off",
                    ),
                ]
            else:
                state = replace(state, stop_at=now)
                actions.append(ChargeStop())  # no relay: the only lever left, asked again
        elif (
            state.level == "relay_off"
            and not state.relay_off_confirmed
            and state.relay_at is not None
            and now - state.relay_at >= RELAY_RETRY_SECS
        ):
            state = replace(state, relay_at=now)
            actions.append(SwitchRelay(on=False))
        return state, tuple(actions)
    if not fresh or room < cfg.charger_min_amps:
        if not fresh:
            return state, tuple(actions)
        return replace(state, room_since=None, fit_since=None), tuple(actions)
    since = state.room_since if state.room_since is not None else now
    fits = state.draw is not None and room >= state.draw
    fit_since = (state.fit_since if state.fit_since is not None else now) if fits else None
    state = replace(state, room_since=since, fit_since=fit_since)
    if now - since < RESUME_AFTER_SECS:
        return state, tuple(actions)
    if state.level == "charge_stop":
        if state.road_up:
            actions.append(SetAmps(_capped(cfg.charger_min_amps, state)))
        actions += [
            Resume(restart_charging=True),
            Alert("resolved", "room for the car again: normal control resumes"),
        ]
        return _calm(state), tuple(actions)
    if state.relay_on_requested:
        if state.relay_at is not None and now - state.relay_at < RELAY_RETRY_SECS:
            return state, tuple(actions)
        return replace(state, relay_at=now), (*actions, SwitchRelay(on=True))
    return _relay_on(state, now, cfg, actions)


def _relay_on(
    state: EscalationState, now: float, cfg: EscalationConfig, actions: list[Action]
) -> Step:
    """Room has lasted with the circuit off: power it only when the car cannot overload again.

    A road that works carries the safe current first (`AmpsOutcome` then switches the relay);
    without one the relay goes on only when the house alone leaves room for the car's last
    known draw. Otherwise the safe current is asked for again when the road's policy allows:
    the moment it lands, the road is back.
    """
    fits = state.fit_since is not None and now - state.fit_since >= RESUME_AFTER_SECS
    if not state.road_up and fits:
        actions += [
            SwitchRelay(on=True),
            Alert(
                "relay_on",
                f"the house alone leaves room for the car's last draw ({state.draw:g} A): "
                "charger circuit on",
            ),
        ]
        return replace(state, relay_on_requested=True, relay_at=now), tuple(actions)
    if state.amps_at is not None and now - state.amps_at < RELAY_RETRY_SECS:
        return state, tuple(actions)
    if not state.road_up and now < state.road_retry_at:
        return state, tuple(actions)
    actions.append(SetAmps(_capped(cfg.charger_min_amps, state)))
    return replace(state, amps_at=now), tuple(actions)


def next_deadline(state: EscalationState, cfg: EscalationConfig) -> float | None:
    """When a `Tick` may change something without a new reading (meter silent), or None."""
    if state.level == "none" and state.first_failed_at is not None:
        if state.no_road and not cfg.relay_configured and "cut_failed" in state.alerted:
            return None  # said; nothing left to do until a road is back
        return state.first_failed_at + cfg.escalate_after_secs
    if state.level == "charge_stop" and state.stop_at is not None:
        return state.stop_at + cfg.escalate_after_secs
    if state.level == "relay_off" and not state.relay_off_confirmed and state.relay_at is not None:
        return state.relay_at + RELAY_RETRY_SECS
    return None
