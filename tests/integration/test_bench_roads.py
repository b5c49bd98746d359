"""The cloud-outage benchmark: BLE carries the cuts, the relay bounds the overload."""

from __future__ import annotations

from tesla_smart_charger.bench import roads as bench_roads


def test_outage_variants_rank_as_the_design_intends() -> None:
    runs = {v: bench_roads.run_variant(v) for v in bench_roads.VARIANTS}
    before = runs["no-escalation"].result
    cloud = runs["cloud"].result
    relay = runs["cloud+relay"]
    ble = runs["ble+cloud"].result
    # Without BLE the cuts during the outage do not land: overload long and large.
    assert before.longest_overload >= 300
    assert ble.overload_amp_secs < cloud.overload_amp_secs < before.overload_amp_secs
    # The relay bounds each overload in the outage to about 2 x escalateAfterSecs (+ a reading
    # or two); it stays off while no road could set the car's current, so no overload repeats.
    assert relay.relay_offs >= 1
    assert relay.longest_in_outage <= 2 * bench_roads.ESCALATE_AFTER + 5
    assert relay.result.overload_amp_secs < cloud.overload_amp_secs
    # BLE: no escalation needed, nothing billed, the breaker replicas never trip.
    assert runs["ble+cloud"].charge_stops == 0
    assert ble.cost == 0.0
    assert ble.trips == 0
    assert runs["ble+cloud+relay"].relay_offs == 0
    assert all(r.result.wakes == 0 for r in runs.values())


def test_outage_table_has_a_row_per_variant() -> None:
    text = bench_roads.report()
    assert bench_roads.HEADER in text
    for variant in bench_roads.VARIANTS:
        assert any(line.startswith(variant + " ") for line in text.splitlines())
