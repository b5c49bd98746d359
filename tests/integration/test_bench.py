"""The benchmark runs, its arithmetic is right and a missed target fails `make bench`."""

from __future__ import annotations

import math
import re
from dataclasses import replace

import pytest

from tesla_smart_charger.bench import common, tables
from tesla_smart_charger.bench import evening as bench
from tesla_smart_charger.control import breaker


def test_metrics_on_a_hand_made_trace() -> None:
    m = common.Metrics(limit=30.0, phases=1, preload=(20.0,))
    # 3 s at 2 A over, one quiet second, 1 s at 4 A over.
    for worst in (32.0, 32.0, 32.0, 29.0, 34.0):
        m.add((worst,), 16.0)
    m.finish()
    assert m.overload_amp_secs == pytest.approx(6.0 + 4.0)
    assert m.events == [3, 1]
    assert m.longest_overload == 3
    assert m.energy_kwh == pytest.approx(5 * 16.0 * 230.0 / 3.6e6)
    assert m.conservative.trips == 0


def test_metrics_exactly_at_the_limit_is_not_an_overload() -> None:
    m = common.Metrics(limit=30.0, phases=1)
    m.add((30.0,), 0.0)
    m.finish()
    assert (m.overload_amp_secs, m.longest_overload, m.events) == (0.0, 0, [])


def test_metrics_count_every_phase_of_a_three_phase_car() -> None:
    m = common.Metrics(limit=25.0, phases=3)
    m.add((20.0, 20.0, 20.0), 10.0)
    assert m.energy_kwh == pytest.approx(10.0 * 3 * 230.0 / 3.6e6)


def test_a_long_small_overload_is_harmless_a_short_large_one_trips() -> None:
    # Both are 600 A*s: 1 A over for 600 s (1.03 In) and 30 A over for 20 s (2 In).
    small = common.Metrics(limit=30.0, phases=1, preload=(29.0,))
    for _ in range(600):
        small.add((31.0,), 0.0)
    small.finish()
    large = common.Metrics(limit=30.0, phases=1, preload=(29.0,))
    for _ in range(20):
        large.add((60.0,), 0.0)
    large.finish()
    assert small.overload_amp_secs == pytest.approx(large.overload_amp_secs)
    assert small.conservative.trips == 0
    assert large.conservative.trips == 1
    assert large.typical.trips == 0  # the typical breaker takes 104 s at 2 In from cold


def test_held_supply_gives_the_same_heat_as_second_by_second() -> None:
    # The metrics advance the replicas per constant stretch; the figures must not change.
    supply = [25.0] * 50 + [36.0] * 40 + [28.0] * 100 + [45.0] * 30 + [10.0] * 200
    m = common.Metrics(limit=30.0, phases=1, preload=(25.0,))
    for a in supply:
        m.add((a,), 0.0)
    m.finish()
    ref = breaker.ThermalReplica(breaker.CONSERVATIVE, 30.0, [25.0])
    hot = 0
    for a in supply:
        ref.step([a])
        hot += max(ref.heat) >= common.HOT_RATIO * ref.cal.trip_heat
    assert m.conservative.trips == ref.trips
    assert m.conservative.peak == pytest.approx(ref.peak)
    assert m.conservative.heat == pytest.approx(ref.heat)
    assert m.secs_hot == hot
    assert hot > 0


def _result(
    policy: str,
    *,
    trips: int = 0,
    peak: float = 80.0,
    wakes: int = 0,
    energy: float = 9.9,
    cost: float = 0.01,
) -> common.Result:
    return common.Result(
        policy,
        trips,
        0,
        0,
        peak,
        0,
        (4, 4),
        10.0,
        4,
        energy,
        10,
        10,
        wakes,
        cost,
        86_400,
        matched_kwh=10.0,
        oracle_kwh=10.0,
    )


def test_targets_are_computed_from_every_run() -> None:
    results = {"random-week": {"ours": [_result("ours"), _result("ours", energy=9.85)]}}
    verdicts = {v.target: v for v in bench.targets(results)}
    assert all(v.passed for v in verdicts.values())
    assert "ours: Fleet API cost <= $0.05/day [random-week]" in verdicts
    results["random-week"]["ours"].append(
        _result("ours", trips=1, peak=95.0, wakes=1, energy=9.7, cost=0.06)
    )
    verdicts = {v.target: v for v in bench.targets(results)}
    assert not verdicts["ours: 0 trips, conservative [random-week]"].passed
    assert verdicts["ours: 0 trips, typical [random-week]"].passed
    assert not verdicts["ours: peak <= 90 % of conservative trip [random-week]"].passed
    assert not verdicts["ours: energy >= 98 % of matched oracle [random-week]"].passed
    assert verdicts["ours: energy >= 98 % of matched oracle [random-week]"].detail == "min 97.0 %"
    assert not verdicts["ours: Fleet API cost <= $0.05/day [random-week]"].passed
    assert not verdicts["ours: 0 wakes [all traces]"].passed


def test_issue_targets_gate_and_the_context_lines_do_not() -> None:
    def run(peak: float, matched_peak: float, energy: float, data_cost: float) -> common.Result:
        r = _result("ours", peak=peak, energy=energy, cost=0.07)
        return replace(r, matched_peak_pct=matched_peak, held_kwh=9.6, data_cost=data_cost)

    results = {"random-week": {"ours": [run(92.5, 92.5, 9.6, 0.03)]}}
    verdicts = {v.target: v for v in bench.targets(results)}
    context = {t: v.passed for t, v in verdicts.items() if not v.gating}
    gating = {t: v.passed for t, v in verdicts.items() if v.gating}
    assert context["ours: peak <= 90 % or <= matched oracle's [random-week]"]
    assert context["ours: energy >= 98 % of held oracle [random-week]"]
    assert context["ours: Fleet API cost <= $0.05/day, BLE commands [random-week]"]
    assert not gating["ours: peak <= 90 % of conservative trip [random-week]"]
    assert not gating["ours: energy >= 98 % of matched oracle [random-week]"]
    assert not gating["ours: Fleet API cost <= $0.05/day [random-week]"]
    assert len(context) == 3
    # above the matched oracle's own peak, too little of the held oracle, too many data calls
    results["random-week"]["ours"].append(run(92.6, 92.5, 9.3, 0.06))
    verdicts = {v.target: v for v in bench.targets(results)}
    assert not verdicts["ours: peak <= 90 % or <= matched oracle's [random-week]"].passed
    assert not verdicts["ours: energy >= 98 % of held oracle [random-week]"].passed
    assert verdicts["ours: energy >= 98 % of held oracle [random-week]"].detail == "min 96.9 %"
    assert not verdicts["ours: Fleet API cost <= $0.05/day, BLE commands [random-week]"].passed


def test_cost_per_day_scales_a_trace_to_24_hours() -> None:
    three_hours = common.Result("ours", 0, 0, 0, 0.0, 0, (), 0.0, 0, 1.0, 1, 1, 0, 0.03, 3 * 3600)
    assert three_hours.cost_per_day == pytest.approx(0.24)


def test_spread_and_percentile() -> None:
    assert bench.spread([3, 3, 3]) == "3"
    assert bench.spread([1.0, 2.0, 9.0], 1) == "2.0 [1.0-9.0]"
    assert bench.percentile([5, 1, 3, 2, 4], 50) == 3
    assert bench.percentile(list(range(1, 101)), 95) == 95


def test_clock_runs_callbacks_in_time_order() -> None:
    clock = bench.Clock()
    seen: list[tuple[float, str]] = []
    clock.at(2.0, lambda: seen.append((clock.now, "b")))
    clock.at(0.5, lambda: seen.append((clock.now, "a")))
    clock.at(2.0, lambda: seen.append((clock.now, "c")))
    clock.run_until(1.0)
    assert seen == [(0.5, "a")]
    clock.run_until(2.0)
    assert seen == [(0.5, "a"), (2.0, "b"), (2.0, "c")]


def test_oracle_never_overloads_a_house_that_fits() -> None:
    trace = common.build_trace("winter-evening", quick=True)
    result = bench.run_oracle(trace)
    assert result.overload_amp_secs == 0.0
    assert result.trips == result.secs_hot == 0
    assert result.commands == result.data_calls == result.wakes == 0
    assert result.energy_kwh > 0


def test_matched_oracle_keeps_the_margin_and_the_shipped_pause_rule() -> None:
    trace = common.build_trace("three-phase-evening", quick=True)
    cfg = common.control_config(trace)
    matched = bench.run_matched_oracle(trace)
    # The shipped defaults pause where even the minimum does not fit: no overload at all, and
    # the margin costs energy against the unmatched oracle.
    assert cfg.pause_when_overloaded
    assert matched.overload_amp_secs == 0.0
    assert matched.energy_kwh < bench.run_oracle(trace).energy_kwh
    # Holding 6 A there instead (pauseWhenOverloaded false): more energy, and some overload.
    held = bench.run_oracle(trace, margin=cfg.safety_margin, minimum=6, pause=False)
    assert held.energy_kwh > matched.energy_kwh
    assert held.overload_amp_secs > 0


def _hand_trace(house: list[float]) -> common.Trace:
    return common.Trace("hand", "hand-made", 1, 30.0, tuple((a,) for a in house), True)


@pytest.mark.parametrize(
    ("house", "car"),
    [
        # room for 9 A, then for 16 A: the held oracle keeps 9 A until the room for 16 A has
        # lasted 20 s, then lowers to 9 A in the very second the house needs it
        ([20.0] * 10 + [5.0] * 60 + [20.0] * 10, [9] * 30 + [16] * 40 + [9] * 10),
        # a 19 s gap in the load is never enough room to raise
        ([20.0] * 10 + [5.0] * 19 + [20.0] * 10, [9] * 39),
        # less room than the minimum: it pauses, as ours does with the shipped defaults
        ([26.0] * 5 + [5.0] * 30, [0] * 25 + [16] * 10),
    ],
)
def test_held_oracle_raises_only_after_the_room_lasted_sleep_time(
    house: list[float], car: list[int]
) -> None:
    trace = _hand_trace(house)
    held = bench.run_held_oracle(trace)
    assert held.energy_kwh == pytest.approx(sum(car) * common.VOLTS / 3.6e6)
    assert held.energy_kwh <= bench.run_matched_oracle(trace).energy_kwh


def test_evcc_tick_offset_moves_its_ticks() -> None:
    trace = common.build_trace("winter-evening", quick=True)
    runs = {o: bench.run_policy(trace, "evcc-like", o) for o in (0, 7)}
    assert runs[0].offset == 0
    assert runs[7].offset == 7
    assert runs[0] != runs[7]


def test_week_seeds_and_offsets_follow_the_plan() -> None:
    plan = bench.Plan()
    assert plan.seed_list("winter-evening") == [1, 2, 3, 4, 5]
    assert plan.seed_list("random-week") == [7]
    assert plan.offsets("winter-evening", "evcc-like") == list(range(30))
    assert plan.offsets("winter-evening", "evcc-10s") == list(range(10))
    assert plan.offsets("random-week", "evcc-like") == [0, 5, 10, 15, 20, 25]
    assert plan.offsets("winter-evening", "ours") == [0]
    assert "ours-min0" not in plan.policies("random-week")


ROW = re.compile(r"^(?P<policy>\S+)\s+(?P<runs>\d+)\s+(?P<trips>\d+)")


def test_quick_benchmark_prints_both_tables_per_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code = tables.main(["--quick", "--jobs", "1"])
    captured = capsys.readouterr()
    out = captured.out
    assert out.count(bench.SAFETY_HEADER) == len(common.TRACE_KEYS)
    assert out.count(bench.ENERGY_HEADER) == len(common.TRACE_KEYS)
    for block in out.split("\n\n"):
        lines = block.splitlines()
        if bench.SAFETY_HEADER in lines:
            rows = {m["policy"]: m for m in map(ROW.match, lines[3:]) if m}
            assert set(rows) >= {"step", "evcc-like", "ours", "oracle-matched", "oracle"}
            assert int(rows["oracle"]["trips"]) == 0
            assert int(rows["evcc-like"]["runs"]) > int(rows["ours"]["runs"])
    verdicts = [line for line in out.splitlines() if re.search(r"\s(PASS|FAIL)\s", line)]
    # trips x 2 calibrations, peak, energy per trace; cost on the week; wakes
    assert len(verdicts) == 4 * len(common.TRACE_KEYS) + 2
    # context lines (what ours' rules allow) for peak and energy per trace, cost on the week
    shown = [line for line in out.splitlines() if re.search(r"\s(met |MISS)\s", line)]
    assert len(shown) == 2 * len(common.TRACE_KEYS) + 1
    failed = any(" FAIL " in line for line in verdicts)
    assert code == (1 if failed else 0)
    assert ("target was missed" in captured.err) == failed


def test_a_missed_target_fails_main(monkeypatch: pytest.MonkeyPatch) -> None:
    # The three-phase evening alone: no roads or solar tables, so both runs take a second.
    argv = ["--quick", "--jobs", "1", "--trace", "three-phase-evening"]
    monkeypatch.setattr(bench, "ENERGY_TARGET", 200.0)  # nothing reaches 200 % of its oracle
    assert tables.main(argv) == 1
    monkeypatch.setattr(bench, "ENERGY_TARGET", 0.0)
    monkeypatch.setattr(bench, "PEAK_TARGET", 1000.0)
    assert tables.main(argv) == 0


def test_trace_option_runs_only_that_trace(capsys: pytest.CaptureFixture[str]) -> None:
    tables.main(["--quick", "--jobs", "1", "--trace", "three-phase-evening"])
    out = capsys.readouterr().out
    assert out.count(bench.SAFETY_HEADER) == 1
    assert "three-phase evening" in out
    assert "winter evening" not in out
    assert "[random-week]" not in out  # no cost target without the week


def test_quick_run_is_deterministic_and_parallel_gives_the_same_tables() -> None:
    first = bench.run_all(["winter-evening"], bench.QUICK_PLAN, jobs=1)
    second = bench.run_all(["winter-evening"], bench.QUICK_PLAN, jobs=2)
    assert first == second
    ours = first["winter-evening"]["ours"]
    assert [r.seed for r in ours] == [1, 2]
    assert all(r.wakes == 0 and math.isfinite(r.cost_per_day) for r in ours)
    assert all(r.matched_kwh > 0 for r in ours)


def test_unknown_trace_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trace"):
        common.build_trace("summer")


def test_a_busy_full_evening_gives_the_car_what_the_held_oracle_gets() -> None:
    """Regression guard on the real winter evening (the quick traces are too short to show it).

    `make bench` exits 1 on issue 13's targets as written, so a drop in energy does not change
    its exit status: counting the breaker's cuts against cloudCommandsPerHour once cost 8 % of
    the car's energy here (held oracle 99.9 % -> 91.6 %) and went unseen.
    """
    plan = replace(bench.Plan(), seeds=2, offset_step=30)
    ours = bench.run_all(["winter-evening", "three-phase-evening"], plan, jobs=1)
    for key, rows in ours.items():
        for r in rows["ours"]:
            assert r.held_pct >= 98.0, (key, r.seed, r.held_pct)
            assert r.wakes == 0
