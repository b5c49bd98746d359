"""The capacity tariff benchmark: the daemon's runtime, the oracle and the evcc-like rule on the
capacity evening (its first hour: four 15-minute windows)."""

from __future__ import annotations

from tesla_smart_charger.bench import capacity as bench


def test_no_window_over_the_limit_and_most_of_the_oracles_energy() -> None:
    trace = bench.build_trace(quick=True)
    ours = bench.run_ours(trace)
    oracle = bench.run_oracle(trace)
    assert len(ours.windows) == 4
    assert ours.windows_over == 0, ours.windows
    assert oracle.windows_over == 0
    assert max(oracle.windows) > trace.limit_kw - 0.01  # the oracle fills each window
    assert 0.8 * oracle.car_kwh < ours.car_kwh <= oracle.car_kwh
    assert ours.overload_secs == 0
    assert ours.commands < 30  # no flapping between two setpoints


def test_an_instantaneous_limit_lets_windows_over_after_surges() -> None:
    trace = bench.build_trace(quick=True)
    evcc = bench.run_evcc_like(trace)
    assert evcc.windows_over >= 1, evcc.windows
    assert evcc.worst_kw > trace.limit_kw


def test_the_oracle_respects_the_minimum_and_the_breaker() -> None:
    trace = bench.CapacityTrace(house=(4.0,) * 900 + (26.0,) * 900)
    oracle = bench.run_oracle(trace)
    # first window: 2.5 kW x 900 s less the house's 4 A leaves 6.87 A on average for the car
    assert abs(oracle.windows[0] - 2.5) < 1e-6
    # second: the house alone is over the limit: nothing for the car
    assert oracle.windows[1] == 26.0 * 230 / 1000
    assert oracle.overload_secs == 0


def test_the_table_names_every_row() -> None:
    trace = bench.build_trace(quick=True)
    text = bench.format_table(trace, [bench.run_oracle(trace), bench.run_evcc_like(trace)])
    assert "| oracle | " in text
    assert "| evcc-like | " in text
    assert "2.5 kW import limit" in text
