"""Sharing one supply between several cars (issue 14): the pure allocation."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from tesla_smart_charger.control import ControllerState, unresolved_problem
from tesla_smart_charger.control.allocation import CarDemand, Share, plan, room_per_phase, share
from tesla_smart_charger.control.models import MeterReading


def car(
    vin: str,
    priority: int = 0,
    *,
    setpoint: int | None = 16,
    phases: tuple[int, ...] = (0,),
    lo: int = 5,
    hi: int = 16,
    charging: bool = True,
) -> CarDemand:
    return CarDemand(vin, priority, lo, hi, phases, setpoint, charging)


def amps(shares: tuple[Share, ...]) -> dict[str, int]:
    return {s.vin: s.amps for s in shares}


def test_equal_priority_splits_evenly_within_one_amp() -> None:
    # homeMaxAmps 30, margin 1, house 10: 19 A for two cars
    cars = (car("A"), car("B"))
    got = amps(share(cars, room_per_phase(29.0, (10.0,)), pause_when_overloaded=False))
    assert sum(got.values()) == 19
    assert abs(got["A"] - got["B"]) <= 1


def test_higher_priority_served_first_low_priority_cut() -> None:
    cars = (car("LOW", 0), car("HIGH", 1))
    got = amps(share(cars, (19.0,), pause_when_overloaded=False))
    assert got == {"HIGH": 14, "LOW": 5}
    changes = plan(cars, share(cars, (19.0,), pause_when_overloaded=False))
    assert [c.vin for c in changes] == ["LOW", "HIGH"]  # cuts, lowest priority first
    assert all(c.cut for c in changes)


def test_room_for_both_maxima_gives_each_its_own_maximum() -> None:
    cars = (car("A", hi=16), car("B", hi=10, setpoint=10))
    got = amps(share(cars, (40.0,), pause_when_overloaded=False))
    assert got == {"A": 16, "B": 10}
    assert plan(cars, share(cars, (40.0,), pause_when_overloaded=False)) == ()


@pytest.mark.parametrize("pause", [False, True])
def test_no_room_for_every_minimum_gives_up_the_lowest_priority(pause: bool) -> None:
    cars = (car("LOW", 0), car("HIGH", 2), car("MID", 1))
    shares = share(cars, (12.0,), pause_when_overloaded=pause)
    by = {s.vin: s for s in shares}
    # LOW still draws its minimum until its pause lands: its room is not handed out yet
    assert by["HIGH"].amps == 5
    assert by["LOW"].paused is pause
    assert by["MID"].paused is False
    assert by["LOW"].amps == 5
    if pause:
        # once LOW is paused, its room goes to the highest priority
        landed = (replace(cars[0], paused=True), *cars[1:])
        by = {s.vin: s for s in share(landed, (12.0,), pause_when_overloaded=True)}
        assert by["HIGH"].amps == 7
        assert by["LOW"].paused is True


def test_per_phase_a_car_counts_only_on_its_phases() -> None:
    # phase 1 is full, phase 2 has room: the car on phase 2 gets its maximum
    cars = (car("P1", phases=(0,)), car("P2", phases=(1,)))
    got = amps(share(cars, (6.0, 30.0, 30.0), pause_when_overloaded=False))
    assert got == {"P1": 6, "P2": 16}
    three = (car("T", phases=(0, 1, 2)), car("S", phases=(2,)))
    got = amps(share(three, (30.0, 30.0, 20.0), pause_when_overloaded=False))
    assert got["T"] + got["S"] <= 20
    assert abs(got["T"] - got["S"]) <= 1


def test_cars_not_charging_get_no_share_and_no_command() -> None:
    cars = (car("A"), car("B", charging=False))
    shares = share(cars, (19.0,), pause_when_overloaded=False)
    assert amps(shares) == {"A": 16}
    assert plan(cars, shares) == ()


def test_raises_highest_priority_first_one_command_per_car() -> None:
    cars = (car("LOW", 0, setpoint=5), car("HIGH", 1, setpoint=5))
    changes = plan(cars, share(cars, (40.0,), pause_when_overloaded=False))
    assert [(c.vin, c.amps, c.cut) for c in changes] == [("HIGH", 16, False), ("LOW", 16, False)]


def test_split_reading_shows_each_car_its_share_as_headroom() -> None:
    from tesla_smart_charger.control.allocation import CarView, split_reading  # noqa: PLC0415
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    views = (CarView(car("A"), 16.0), CarView(car("B"), 16.0))
    real = MeterReading((42.0,), (230.0,), None, True, 5.0)  # house 10 A + two cars at 16 A
    readings, shares = split_reading(views, real, 29.0, pause_when_overloaded=False)
    got = amps(shares)
    assert sum(got.values()) == 19
    for view, mine in zip(views, readings, strict=True):
        # the car's controller: headroom = limit - (supply - own draw) = its share
        assert 29.0 - (mine.phase_amps[0] - view.draw) == got[view.demand.vin]
        assert mine.at == real.at
    idle = (CarView(car("A"), 16.0), CarView(car("B", charging=False), 0.0))
    readings, _ = split_reading(
        idle, MeterReading((26.0,), (230.0,), None, True, 6.0), 29.0, pause_when_overloaded=False
    )
    assert readings[1].phase_amps == (10.0,)  # the car not charging sees the house alone


def test_a_solar_car_is_capped_by_the_surplus_and_sees_the_real_export() -> None:
    from tesla_smart_charger.control.allocation import CarView, split_reading  # noqa: PLC0415
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    # house -8 A (export), fast car at 16 A, solar car at 6 A: supply 14 A
    views = (CarView(car("FAST"), 16.0), CarView(car("SUN", setpoint=6), 6.0, solar=True))
    real = MeterReading((14.0,), (230.0,), None, True, 1.0)
    readings, shares = split_reading(views, real, 29.0, pause_when_overloaded=False)
    assert amps(shares) == {"FAST": 16, "SUN": 8}
    assert readings[1].phase_amps == (-2.0,)  # house -8 A plus its own 6 A: the real export


def test_car_view_counts_the_old_setpoint_while_a_cut_settles() -> None:
    from dataclasses import replace  # noqa: PLC0415

    from tesla_smart_charger import control as core  # noqa: PLC0415
    from tesla_smart_charger.control.allocation import car_view  # noqa: PLC0415
    from tests.unit.test_controller import MEASURED, charging  # noqa: PLC0415

    state = replace(
        core.initial_state(0.0, charge_mode="solar"),
        vehicle=charging(16),
        setpoint=8,
        command_from=16,
        commanded_at=10.0,
    )
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    settling = car_view(
        state, MEASURED, MeterReading((30.0,), (230.0,), None, True, 12.0), vin="A", priority=3
    )
    settled = car_view(
        state, MEASURED, MeterReading((30.0,), (230.0,), None, True, 30.0), vin="A", priority=3
    )
    assert (settling.draw, settled.draw) == (16.0, 8.0)
    assert settling.solar
    assert settling.demand.priority == 3
    assert (settling.demand.min_amps, settling.demand.max_amps) == (6, 16)


# --- two cars through the real controllers, virtual time (issue 14 start-up bug) -----------

LAG = 3  # seconds a car takes to follow a command


class TwoCars:
    """Two controllers behind `split_reading`, as the fleet runs them, on a simulated house.

    Pure: `tests.helpers.pure_fleet.PureFleet` (`decide` per car, the cars follow commands after LAG
    seconds, one reading a second), here with priorities and a house given as step changes.
    """

    def __init__(
        self,
        *,
        pause_after: float = 5.0,
        draws: tuple[float, float] = (16.0, 16.0),
        pause: bool = True,
    ):
        from tests.helpers.pure_fleet import PureFleet  # noqa: PLC0415
        from tests.unit.test_controller import MEASURED  # noqa: PLC0415

        self.cfg = replace(
            MEASURED, pause_when_overloaded=pause, pause_after_secs=pause_after, sleep_secs=10
        )
        self.vins = ("HIGH", "LOW")
        self.fleet = PureFleet(self.cfg, 2, draws=draws, vins=self.vins, priorities=(1, 0), lag=LAG)
        self.sent = self.fleet.sent  # (t, vin, command)
        self.supply: dict[int, float] = {}

    @property
    def states(self) -> dict[str, ControllerState]:
        return dict(zip(self.vins, self.fleet.states, strict=True))

    def run(self, house: dict[int, float], until: int) -> None:
        load = 0.0
        for t in range(until):
            load = house.get(t, load)
            self.supply[t] = self.fleet.step(float(t), load)

    def commands(self, vin: str, kind: str) -> list[float]:
        return [t for t, v, c in self.sent if v == vin and c.startswith(kind)]


@pytest.mark.parametrize(
    ("house", "until", "setpoints", "stops", "starts"),
    [
        # symptom 1: house 10 A leaves room for 13 + 6 A: nobody is paused at start-up
        ({0: 10.0}, 40, {"HIGH": 13, "LOW": 6}, {"HIGH": 0, "LOW": 0}, {"HIGH": 0, "LOW": 0}),
        # the kettle (+12 A) at 15 s: the low-priority car is paused, the other one never
        ({0: 10.0, 15: 22.0}, 60, {"HIGH": 7}, {"HIGH": 0, "LOW": 1}, {"HIGH": 0, "LOW": 0}),
        # symptom 3, the oven (+13 A): the high-priority car keeps its share (6 A), LOW pauses
        ({0: 10.0, 20: 23.0}, 60, {"HIGH": 6}, {"HIGH": 0, "LOW": 1}, {"HIGH": 0, "LOW": 0}),
        # symptom 2: both paused (house alone 25 A), then room for one car only (house 18 A:
        # 11 A, one minimum plus 1): only the high-priority car resumes, and only once
        (
            {0: 25.0, 40: 18.0},
            90,
            {},
            {"HIGH": 1, "LOW": 1},
            {"HIGH": 1, "LOW": 0},
        ),
    ],
)
def test_two_cars_through_their_controllers(
    house: dict[int, float],
    until: int,
    setpoints: dict[str, int],
    stops: dict[str, int],
    starts: dict[str, int],
) -> None:
    sim = TwoCars()
    sim.run(house, until)
    for vin, amps_now in setpoints.items():
        assert sim.states[vin].setpoint == amps_now, (vin, sim.sent)
    for vin in sim.vins:
        assert len(sim.commands(vin, "stop")) == stops[vin], (vin, sim.sent)
        assert len(sim.commands(vin, "start")) == starts[vin], (vin, sim.sent)
    # the breaker: over the limit at most while a cut lands and pauseAfterSecs run (the other
    # car's cut settling no longer restarts the countdown); then never again
    over = [t for t, a in sim.supply.items() if a > 30.0]
    start = LAG + 1  # both cars at 16 A until the first cut lands
    assert len(over) <= start + 1 + 5 + LAG + 1, (over, sim.sent)
    assert not sim.states["HIGH"].paused
    assert sim.states["LOW"].paused is (stops["LOW"] > 0)
    assert all(a <= 30.0 for t, a in sim.supply.items() if t >= until - 10), sim.supply


def test_a_given_up_car_knows_how_far_over_the_limit_it_leaves_the_supply() -> None:
    from tesla_smart_charger.control.allocation import CarView, split_reading  # noqa: PLC0415
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    # limit 29, house 22: room 7: HIGH keeps its 5 A minimum, LOW (5 A) leaves 3 A over
    cars = (car("LOW", 0), car("HIGH", 1))
    by = {s.vin: s for s in share(cars, (7.0,), pause_when_overloaded=True)}
    assert (by["LOW"].paused, by["LOW"].over) == (True, 3.0)
    assert (by["HIGH"].paused, by["HIGH"].over) == (False, 0.0)
    # its controller is shown the room it really has at its minimum (5 - 3 = 2 A), so the
    # supply it projects at its minimum is the real one: limit + 3 A
    views = (CarView(cars[0], 5.0), CarView(cars[1], 5.0))
    real = MeterReading((32.0,), (230.0,), None, True, 1.0)
    readings, _ = split_reading(views, real, 29.0, pause_when_overloaded=True)
    low_house = readings[0].phase_amps[0] - 5.0
    assert 29.0 - low_house == pytest.approx(2.0)
    assert low_house + 5 == pytest.approx(29.0 + 3.0)
    # once its pause landed it is shown no room at all (it resumes only when the shares say)
    landed = (CarView(replace(cars[0], paused=True), 0.0), CarView(cars[1], 5.0))
    readings, _ = split_reading(
        landed, MeterReading((27.0,), (230.0,), None, True, 2.0), 29.0, pause_when_overloaded=True
    )
    assert readings[0].phase_amps[0] == pytest.approx(29.0)


def test_house_floor_holds_the_house_at_the_command_while_a_car_settles() -> None:
    from tesla_smart_charger.control.allocation import (  # noqa: PLC0415
        CarView,
        house_floor,
        split_reading,
    )
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    def at(t: float, supply: float) -> MeterReading:
        return MeterReading((supply,), (230.0,), None, True, t)

    # house 22 A, both cars at 10 A, nothing settling: no floor
    before = (CarView(car("A", setpoint=10), 10.0), CarView(car("B", setpoint=10), 10.0))
    assert house_floor(before, at(1.0, 42.0), None) is None

    # both cut to 5 A at 1 s; on the first reading after it the cars have not moved yet
    def settling(a_at: float = 1.0) -> tuple[CarView, CarView]:
        return (
            CarView(car("A", setpoint=5), 10.0, settling=True, commanded_at=a_at),
            CarView(car("B", setpoint=5), 10.0, settling=True, commanded_at=1.0),
        )

    floor = house_floor(settling(), at(2.0, 42.0), None)
    assert floor is not None
    assert floor.house == (22.0,)
    # A already ramped down, its old 10 A still counted: the estimate says house 17 A, which
    # would give room for both minimums; the floor keeps 22 A while anything settles
    ramping = at(3.0, 37.0)
    assert house_floor(settling(), ramping, floor) == floor
    _, shares = split_reading(settling(), ramping, 29.0, pause_when_overloaded=True, floor=floor)
    assert [s.paused for s in shares] == [False, True]  # B stays given up: no restart
    _, unfloored = split_reading(settling(), ramping, 29.0, pause_when_overloaded=True)
    assert [s.paused for s in unfloored] == [False, False]  # what the old estimate did
    # a further command to A while B still settles keeps the higher house
    again = house_floor(settling(a_at=3.0), ramping, floor)
    assert again is not None
    assert again.house == (22.0,)
    # settled: no floor, the estimate is trusted again
    settled = (CarView(car("A", setpoint=5), 5.0), CarView(car("B", setpoint=5), 5.0))
    assert house_floor(settled, at(20.0, 30.0), again) is None


def test_given_up_car_pauses_on_the_breakers_deadline_with_the_shipped_pause_after() -> None:
    # house 23 A: room 6 A, HIGH keeps 6 A and LOW's 6 A make 35 A on 30 A: the conservative
    # replica would reach /health's warning in about 21 s from a house at its limit (and trip
    # in 58 s), so LOW pauses then, not after the shipped 120 s
    sim = TwoCars(pause_after=120.0)
    sim.run({0: 10.0, 20: 23.0}, 90)
    stops = sim.commands("LOW", "stop")
    assert stops
    # (sooner than 21 s when both cars' ramp down from 13 and 16 A heated it on the way)
    assert 20.0 + sim.cfg.settle_secs <= stops[0] <= 20.0 + 25.0, sim.sent
    assert sim.commands("HIGH", "stop") == []
    before = TwoCars(pause_after=120.0)
    before.run({0: 10.0, 20: 23.0}, int(stops[0]))  # up to the second before the pause
    assert "would heat the main breaker: pausing charging before it does" in (
        before.states["LOW"].reason
    )
    at = TwoCars(pause_after=120.0)
    at.run({0: 10.0, 20: 23.0}, int(stops[0]) + 1)  # up to the pause itself: it names figures
    assert "35.0 A with the car at 6 A on a 30 A supply would heat the main breaker" in (
        at.states["LOW"].reason
    )


def test_a_cut_settling_does_not_restart_the_given_up_cars_countdown() -> None:
    # the kettle (+12 A) at 15 s: both cars are cut; while HIGH's cut settles its old draw is
    # counted, which used to give LOW room again and restart its pauseAfterSecs (5 s here)
    sim = TwoCars()
    since: set[float] = set()
    load = 0.0
    for t in range(60):
        load = {0: 10.0, 15: 22.0}.get(t, load)
        sim.supply[t] = sim.fleet.step(float(t), load)
        if sim.states["LOW"].unresolvable_since is not None:
            since.add(sim.states["LOW"].unresolvable_since)
    assert since == {15.0}
    assert sim.commands("LOW", "stop") == [15.0 + sim.cfg.pause_after_secs]
    over = [t for t, a in sim.supply.items() if t >= 15 and a > 30.0]
    # over the limit only until LOW's pause lands: pauseAfterSecs plus the lag, no settle time
    assert len(over) <= sim.cfg.pause_after_secs + LAG, over


# --- equal priorities: the car that has had less is kept (issue 14 follow-up) --------------


def test_equal_priority_the_car_that_has_had_less_is_kept_and_gets_the_odd_amp() -> None:
    cars = (car("A"), car("B"))
    # room for one minimum only: the order of `ties`, not the VIN, decides who is given up
    for ties, kept in ((("A", "B"), "A"), (("B", "A"), "B")):
        by = {s.vin: s for s in share(cars, (8.0,), pause_when_overloaded=True, ties=ties)}
        assert by[kept].paused is False
        assert [s.vin for s in by.values() if s.paused] == [v for v in "AB" if v != kept]
    # 19 A for two: the odd amp goes to the car ahead in `ties`
    assert amps(share(cars, (19.0,), pause_when_overloaded=False, ties=("B", "A"))) == {
        "A": 9,
        "B": 10,
    }
    assert amps(share(cars, (19.0,), pause_when_overloaded=False, ties=("A", "B"))) == {
        "A": 10,
        "B": 9,
    }


def test_priorities_decide_before_what_a_car_has_had() -> None:
    cars = (car("LOW", 0), car("HIGH", 1))
    by = {s.vin: s for s in share(cars, (8.0,), pause_when_overloaded=True, ties=("LOW", "HIGH"))}
    assert by["LOW"].paused
    assert not by["HIGH"].paused
    assert not by["HIGH"].yielding  # a higher priority never yields to a lower one
    paused_high = (car("LOW", 0), replace(car("HIGH", 1), paused=True))
    by = {s.vin: s for s in share(paused_high, (8.0,), pause_when_overloaded=True)}
    assert not by["HIGH"].paused  # as before: the higher priority resumes, LOW is given up
    assert by["LOW"].paused
    assert not by["LOW"].yielding


def test_a_drawing_car_yields_to_an_equal_one_that_has_had_less_without_an_overload() -> None:
    drawing, waiting = car("A", setpoint=8), replace(car("B", setpoint=8), paused=True)
    cars = (drawing, waiting)
    # B has had less (ahead in ties): A is told to give way, B stays paused until A's pause
    # has landed, so the room A still draws is never handed to B meanwhile
    by = {s.vin: s for s in share(cars, (8.0,), pause_when_overloaded=True, ties=("B", "A"))}
    assert by["A"] == Share("A", 5, paused=True, over=1.0, yielding=True)
    assert by["B"].paused
    assert not by["B"].yielding
    # A's pause landed: B resumes into the room, A waits its turn
    landed = (replace(drawing, paused=True), waiting)
    by = {s.vin: s for s in share(landed, (8.0,), pause_when_overloaded=True, ties=("B", "A"))}
    assert (by["B"].amps, by["B"].paused) == (8, False)
    assert by["A"].paused
    assert not by["A"].yielding
    # A ahead in ties: it keeps charging; B stays paused (a drawing car is never given up
    # for a paused one that has had more)
    by = {s.vin: s for s in share(cars, (8.0,), pause_when_overloaded=True, ties=("A", "B"))}
    assert (by["A"].amps, by["A"].paused, by["B"].paused) == (8, False, True)
    # no room for B's minimum (+1 to resume) even without A: A does not yield
    by = {s.vin: s for s in share(cars, (5.5,), pause_when_overloaded=True, ties=("B", "A"))}
    assert not by["A"].paused
    # without pauseWhenOverloaded nobody yields (nobody is paused by the shares)
    by = {s.vin: s for s in share(cars, (8.0,), pause_when_overloaded=False, ties=("B", "A"))}
    assert not any(s.yielding for s in by.values())


def _ledger_views(draw_a: float, draw_b: float, *, unplugged_b: bool = False) -> tuple:  # type: ignore[type-arg]
    from tesla_smart_charger.control.allocation import CarView  # noqa: PLC0415

    return (
        CarView(car("A", lo=6), draw_a),
        CarView(car("B", lo=6), draw_b, unplugged=unplugged_b),
    )


def test_the_ledger_counts_amp_seconds_and_swaps_only_past_the_margin() -> None:
    from tesla_smart_charger.control.allocation import (  # noqa: PLC0415
        FAIR_MARGIN_SECS,
        advance_ledger,
    )

    ledger = advance_ledger(_ledger_views(10.0, 0.0), 0.0, None)
    assert ledger.order == ("A", "B")  # nothing had yet: by VIN
    margin = FAIR_MARGIN_SECS * 6  # amp-seconds at the larger minimum (6 A)
    t = 0.0
    # A draws 10 A, B nothing: A stays ahead until it has had more than the margin more
    while 10.0 * (t + 1.0) <= margin:
        t += 1.0
        ledger = advance_ledger(_ledger_views(10.0, 0.0), t, ledger)
        assert ledger.order == ("A", "B"), t
    assert dict(ledger.had) == {"A": pytest.approx(10.0 * t), "B": 0.0}
    ledger = advance_ledger(_ledger_views(10.0, 0.0), t + 1.0, ledger)
    assert ledger.order == ("B", "A")
    # both at the same amps from here: the order stays (no swap every reading)
    for k in range(2, 200):
        ledger = advance_ledger(_ledger_views(8.0, 8.0), t + k, ledger)
        assert ledger.order == ("B", "A")
    # a gap without readings counts at most LEDGER_MAX_GAP; an unplugged car starts afresh
    before = dict(ledger.had)["A"]
    ledger = advance_ledger(_ledger_views(8.0, 8.0), t + 10_000.0, ledger)
    assert dict(ledger.had)["A"] == pytest.approx(before + 8.0 * 60.0)
    ledger = advance_ledger(_ledger_views(8.0, 0.0, unplugged_b=True), t + 10_001.0, ledger)
    assert ledger.order == ("A",)
    ledger = advance_ledger(_ledger_views(8.0, 0.0), t + 10_002.0, ledger)
    assert dict(ledger.had)["B"] == 0.0
    assert ledger.order == ("B", "A")  # it has had far less than A this session


def test_two_equal_cars_take_turns_through_their_controllers_without_an_overload() -> None:
    from tesla_smart_charger.control.allocation import FAIR_MARGIN_SECS  # noqa: PLC0415
    from tests.helpers.pure_fleet import PureFleet  # noqa: PLC0415
    from tests.unit.test_controller import MEASURED  # noqa: PLC0415

    cfg = replace(MEASURED, pause_when_overloaded=True, pause_after_secs=5.0, sleep_secs=10)
    fleet = PureFleet(cfg, 2, draw=16.0, vins=("A", "B"), lag=LAG)
    # house 18 A: room 11 A under the 29 A limit, one car's minimum (6 A) and not two
    supply: dict[int, float] = {}
    said: set[str] = set()
    for t in range(2400):
        supply[t] = fleet.step(float(t), 18.0)
        for c in fleet.cars:
            c.amp_secs += c.draw
        said.update(st.reason for st in fleet.states if st.paused or st.giving_turn)
    stops = {v: [t for t, w, c in fleet.sent if w == v and c == "stop"] for v in ("A", "B")}
    starts = {v: [t for t, w, c in fleet.sent if w == v and c == "start"] for v in ("A", "B")}
    # B is given up first (by VIN), then they take turns: each has been paused and resumed
    assert all(stops[v] and starts[v] for v in ("A", "B")), fleet.sent
    # a turn lasts until the car charging has had the margin more (at 11 A: >= 5 min)
    turn = FAIR_MARGIN_SECS * 6 / 11
    every_stop = sorted(stops["A"] + stops["B"])
    assert all(b - a >= turn for a, b in itertools.pairwise(every_stop[1:]))
    # one raise per turn, not a raise cut back a second later (the house floor of a raise)
    sets = [t for t, _, c in fleet.sent if c.startswith("set")]
    assert len(sets) <= 2 * len(every_stop) + 2, fleet.sent
    # a swap never overloads: the car that yields pauses before the other resumes
    assert all(a <= 30.0 for t, a in supply.items() if t > 60), fleet.sent
    # a swap is said as one (no overload to speak of), not as an overload the car cannot resolve
    assert any(r.startswith("taking turns with a car of the same priority") for r in said), said
    assert (
        "taking turns: pausing charging so a car of the same priority that has had less can charge"
        in said
    ), said
    energy = [c.energy_kwh for c in fleet.cars]
    assert min(energy) > 0.3  # both charged: 40 min at 11 A for one car is 1.7 kWh
    assert abs(energy[0] - energy[1]) <= 2 * FAIR_MARGIN_SECS * 6 * 230 / 3.6e6 + 0.05


def test_the_house_floor_of_a_raise_counts_the_old_value_the_car_still_draws() -> None:
    from tesla_smart_charger.control.allocation import CarView, house_floor  # noqa: PLC0415
    from tesla_smart_charger.control.models import MeterReading  # noqa: PLC0415

    # A raised 6 -> 11 A at 20 s (its draw counts the new 11 A), B paused; house 18 A, so
    # on the first reading after the raise the meter shows 18 + 6 = 24 A
    raised = CarView(
        car("A", setpoint=11, lo=6), 11.0, settling=True, commanded_at=20.0, before=6.0
    )
    paused = CarView(replace(car("B", lo=6), paused=True), 0.0)
    floor = house_floor((raised, paused), MeterReading((24.0,), (230.0,), None, True, 21.0), None)
    assert floor is not None
    assert floor.house == (18.0,)  # not 24 - 11 = 13 A, which gave B room to resume


def _problem(sim: TwoCars, t: int) -> str | None:
    states = tuple(sim.states.values())
    real = MeterReading((sim.supply[t],), (230.0,), None, True, float(t))
    return unresolved_problem(states, real, sim.cfg)


def test_minimums_that_do_not_fit_pause_the_lowest_priority_car_and_health_says_so() -> None:
    # house 23 A on 30 A: HIGH's 6 A fits, LOW's does not (35 A). The shipped configuration
    # pauses LOW on the breaker's deadline; /health names the overload until the supply is
    # back under 30 A, and only then
    sim = TwoCars(pause_after=120.0)
    sim.run({0: 10.0, 20: 23.0}, 90)
    (stop,) = sim.commands("LOW", "stop")
    assert sim.commands("HIGH", "stop") == []
    over = [t for t in range(25, 90) if sim.supply[t] > 30.0]
    assert over
    assert max(over) <= stop + LAG
    probe = TwoCars(pause_after=120.0)
    for t in range(90):
        probe.supply[t] = probe.fleet.step(float(t), 10.0 if t < 20 else 23.0)
        problem = _problem(probe, t)
        if probe.supply[t] > 30.0 and t >= 20 + LAG:
            assert problem is not None, t
            if t < stop:
                assert "pausing charging (lowest priority first)" in problem, t
        if probe.supply[t] <= 30.0:
            assert problem is None, t
    assert max(probe.supply[t] for t in range(int(stop) + LAG + 1, 90)) <= 30.0


def test_held_minimums_show_the_overload_to_the_given_up_car_and_health_fails() -> None:
    # pauseWhenOverloaded false: nobody pauses, the given-up car is shown the real overload
    # (its reason says it cannot resolve it), and /health says the breaker is not protected
    sim = TwoCars(pause_after=5.0, pause=False)
    sim.run({0: 10.0, 20: 23.0}, 60)
    assert sim.commands("LOW", "stop") == sim.commands("HIGH", "stop") == []
    assert sim.supply[59] == pytest.approx(35.0)
    low = sim.states["LOW"]
    assert low.unresolvable_since is not None
    assert "never pausing (pauseWhenOverloaded is false)" in low.reason
    problem = _problem(sim, 59)
    assert problem is not None
    assert "pauseWhenOverloaded is false" in problem
    assert "not protected" in problem
    assert "35.0 A on a 30 A main breaker" in problem


def test_eight_cars_on_a_10_a_house_pause_the_lowest_priorities_until_the_supply_fits() -> None:
    # the second case: 8 cars at 6 A and a 10 A house held 58 A on a 30 A main; with
    # the shipped defaults the cars whose minimum does not fit (the lowest priorities) pause
    from tests.helpers.pure_fleet import PureFleet  # noqa: PLC0415
    from tests.unit.test_controller import MEASURED  # noqa: PLC0415

    cfg = replace(MEASURED, pause_after_secs=120.0)
    assert cfg.pause_when_overloaded  # the default
    vins = tuple(f"CAR{i}" for i in range(8))
    fleet = PureFleet(
        cfg, 8, draws=(6.0,) * 8, vins=vins, priorities=tuple(range(8, 0, -1)), lag=LAG
    )
    supply = [fleet.step(float(t), 10.0) for t in range(200)]
    assert supply[0] == pytest.approx(58.0)
    stopped = {vin for _, vin, c in fleet.sent if c == "stop"}
    assert stopped == set(vins[3:])  # 29 - 10 = 19 A: room for three minimums, the highest
    assert max(supply[150:]) <= 30.0
