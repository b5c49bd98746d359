"""The benchmark runs and its arithmetic is right (its figures are the controller's business)."""

from __future__ import annotations

import math
import re

import pytest

from tesla_smart_charger import bench


def test_metrics_on_a_hand_made_trace() -> None:
    m = bench.Metrics(limit=30.0, phases=1)
    # 3 s at 2 A over, one quiet second, 1 s at 4 A over (above 1.13 x 30 = 33.9 A).
    for worst in (32.0, 32.0, 32.0, 29.0, 34.0):
        m.add(worst, 16.0)
    assert m.overload_amp_secs == pytest.approx(6.0 + 4.0)
    assert m.longest_overload == 3
    assert m.secs_above_overshoot == 1
    assert m.energy_kwh == pytest.approx(5 * 16.0 * 230.0 / 3.6e6)


def test_metrics_exactly_at_the_limit_is_not_an_overload() -> None:
    m = bench.Metrics(limit=30.0, phases=1)
    m.add(30.0, 0.0)
    assert (m.overload_amp_secs, m.longest_overload) == (0.0, 0)


def test_metrics_count_every_phase_of_a_three_phase_car() -> None:
    m = bench.Metrics(limit=25.0, phases=3)
    m.add(20.0, 10.0)
    assert m.energy_kwh == pytest.approx(10.0 * 3 * 230.0 / 3.6e6)


def test_metrics_split_overload_the_car_could_not_avoid() -> None:
    m = bench.Metrics(limit=30.0, phases=1)
    m.add(31.0, 6.0, house_worst=25.0)  # house leaves 5 A < chargerMinAmps: "tight"
    m.add(33.0, 8.0, house_worst=25.0)
    m.add(32.0, 10.0, house_worst=22.0)  # the car could have fitted: "loose"
    assert m.tight_amp_secs == pytest.approx(4.0)
    assert m.longest_overload == 3
    assert m.longest_loose == 1


def _result(policy: str, overload: float, *, wakes: int = 0, energy: float = 10.0) -> bench.Result:
    return bench.Result(policy, overload, 3, 0, energy, 10, 10, wakes, 0.01, 86_400)


def test_targets_are_computed_from_the_numbers() -> None:
    results = {
        "winter-evening": {
            "step": _result("step", 100.0),
            "evcc-like": _result("evcc-like", 50.0),
            "ours": _result("ours", 5.0, energy=9.8),
            "ours-min0": _result("ours-min0", 4.0, energy=9.7),
            "oracle": _result("oracle", 0.0),
        }
    }
    verdicts = {v.target: v for v in bench.targets(results)}
    assert verdicts["ours: zero wakes"].passed
    assert verdicts["ours >= 97 % of oracle energy [winter-evening]"].passed
    assert verdicts["ours overload A*s <= 10 % of step [winter-evening]"].passed
    assert verdicts["ours overload A*s <= 10 % of evcc-like [winter-evening]"].passed
    results["winter-evening"]["ours"] = _result("ours", 6.0, wakes=1, energy=9.0)
    verdicts = {v.target: v for v in bench.targets(results)}
    assert not verdicts["ours: zero wakes"].passed
    assert not verdicts["ours >= 97 % of oracle energy [winter-evening]"].passed
    assert verdicts["ours overload A*s <= 10 % of step [winter-evening]"].passed
    assert not verdicts["ours overload A*s <= 10 % of evcc-like [winter-evening]"].passed


def test_cost_per_day_scales_a_trace_to_24_hours() -> None:
    three_hours = bench.Result("ours", 0.0, 0, 0, 1.0, 1, 1, 0, 0.03, 3 * 3600)
    assert three_hours.cost_per_day == pytest.approx(0.24)


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
    trace = bench.build_trace("winter-evening", quick=True)
    result = bench.run_oracle(trace)
    assert result.overload_amp_secs == 0.0
    assert result.commands == result.data_calls == result.wakes == 0
    assert result.energy_kwh > 0


ROW = re.compile(
    r"^(?P<policy>\S+)\s+(?P<overload>[\d.]+)\s+(?P<longest>\d+)\s+(?P<above>\d+)\s+"
    r"(?P<kwh>[\d.]+)\s+(?P<pct>[\d.]+)%\s+(?P<commands>\d+)\s+(?P<data>\d+)\s+"
    r"(?P<wakes>\d+)\s+(?P<cost>[\d.]+)$"
)


def test_quick_benchmark_prints_one_table_per_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    tables = [block for block in out.split("\n\n") if bench.HEADER in block]
    assert len(tables) == len(bench.TRACE_KEYS)
    for table in tables:
        lines = table.splitlines()
        assert lines[1] == bench.HEADER
        for column in ("overload", "longest", ">1.13x", "energy", "commands", "data", "wakes"):
            assert column in lines[1]
        assert "[A*s]" in lines[2]
        assert "per day" in lines[2]
        rows = {m["policy"]: m for m in map(ROW.match, lines[4:]) if m}
        assert list(rows) == list(bench.POLICIES)
        assert float(rows["oracle"]["pct"]) == 100.0
        assert int(rows["oracle"]["commands"]) == 0
    assert "targets (issue 6)" in out
    verdicts = [line for line in out.splitlines() if re.search(r"\s(PASS|FAIL)\s", line)]
    # wakes; per trace: energy, 2 overload ratios, longest for ours and for ours-min0; cost
    assert len(verdicts) == 1 + 5 * len(bench.TRACE_KEYS) + 1


def test_trace_option_runs_only_that_trace(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--quick", "--jobs", "1", "--trace", "three-phase-evening"]) == 0
    out = capsys.readouterr().out
    assert out.count(bench.HEADER) == 1
    assert "three-phase evening" in out
    assert "winter evening" not in out
    assert "[random-week]" not in out  # no cost target without the week


def test_quick_run_is_deterministic() -> None:
    first = bench.run_all(["winter-evening"], quick=True, jobs=1)
    second = bench.run_all(["winter-evening"], quick=True, jobs=1)
    assert first == second
    ours = first["winter-evening"]["ours"]
    assert ours.wakes == 0
    assert math.isfinite(ours.cost_per_day)


def test_unknown_trace_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trace"):
        bench.build_trace("summer")
