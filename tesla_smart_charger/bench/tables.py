"""Every table of the benchmark and the targets: `python -m tesla_smart_charger.bench`.

The composition lives here, apart from the tables, so no table module imports another's
caller (bench/ has no import circles).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import replace

from tesla_smart_charger.bench import capacity, roads, solar
from tesla_smart_charger.bench.common import (
    CHARGER_MAX_AMPS,
    CHARGER_MIN_AMPS,
    COMMAND_LATENCY,
    DATA_LATENCY,
    DRIVER_AMPS,
    RAMP_DELAY,
    TRACE_KEYS,
    build_trace,
    control_config,
)
from tesla_smart_charger.bench.evening import (
    QUICK_PLAN,
    Plan,
    format_table,
    format_targets,
    nth,
    run_all,
    targets,
)
from tesla_smart_charger.control import breaker


def report(keys: Sequence[str], plan: Plan | None = None, *, jobs: int = 2) -> tuple[str, bool]:
    """The whole benchmark as text (deterministic) and whether every target was met."""
    plan = plan or Plan()
    results = run_all(keys, plan, jobs=jobs)
    traces = {k: build_trace(k, quick=plan.quick) for k in keys}
    cfg = control_config(traces[keys[0]])
    model = (
        f"model: meter read every 1 s; command latency {COMMAND_LATENCY:g} s; data read"
        f" {DATA_LATENCY:g} s; car ramp {RAMP_DELAY:g} s; driver {DRIVER_AMPS} A,\n"
        f"       chargerMinAmps {CHARGER_MIN_AMPS}, chargerMaxAmps {CHARGER_MAX_AMPS};"
        " overload is judged against homeMaxAmps (= the breaker's In)\n"
        f"breaker replica: H' = ((I/In)^2 - H)/tau, trips at H > k^2, warm start;\n"
        f"       conservative k {breaker.CONSERVATIVE.k:g}, tau {breaker.CONSERVATIVE.tau:g} s;"
        f" typical k {breaker.TYPICAL.k:g}, tau {breaker.TYPICAL.tau:g} s; fuse: gG curve\n"
        f"runs:  evenings at {plan.seeds} seeds, the week at {plan.week_seeds};"
        f" evcc rows at every {nth(plan.offset_step)}tick offset on the evenings,"
        f" every {nth(plan.week_offset_step)}on the week"
    )
    ours = (
        "ours:  measured mode, shipped defaults: safetyMarginAmps"
        f" {cfg.safety_margin:g}, sleepTimeSecs {cfg.sleep_secs:g}, carSettleSecs"
        f" {cfg.settle_secs:g},\n       vehicleCheckSecs {cfg.vehicle_check_secs:g},"
        f" pauseWhenOverloaded {str(cfg.pause_when_overloaded).lower()}"
        f" (pauseAfterSecs {cfg.pause_after_secs:g});\n       oracle-matched keeps the same"
        " margin, minimum and pause rule; oracle-held also raises only after"
        f" {cfg.sleep_secs:g} s of room"
    )
    parts = [model + (" [--quick: shortened traces]" if plan.quick else "") + "\n" + ours]
    parts += [format_table(traces[k], results[k]) for k in keys]
    if "winter-evening" in keys:  # an hour of it with the cloud road failing
        parts.append(roads.report())
        # a solar day and a two-car evening
        parts.append(solar.report(quick=plan.quick))
        # a capacity tariff evening (2.5 kW in 15-minute windows)
        parts.append(capacity.report(quick=plan.quick))
    verdicts = targets(results)
    parts.append(format_targets(verdicts))
    return "\n\n".join(parts), all(v.passed for v in verdicts if v.gating)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m tesla_smart_charger.bench`: exit 1 when a target is missed."""
    parser = argparse.ArgumentParser(
        prog="python -m tesla_smart_charger.bench",
        description="Benchmark charging policies through reference house traces (virtual time).",
    )
    parser.add_argument("--trace", choices=TRACE_KEYS, action="append", help="only this trace")
    parser.add_argument("--quick", action="store_true", help="short traces (for the test suite)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seeds", type=int, help="seeds per evening trace (default 5)")
    parser.add_argument("--week-seeds", type=int, help="seeds for the week (default 1)")
    parser.add_argument(
        "--all-offsets", action="store_true", help="every tick offset on the week too (slow)"
    )
    parser.add_argument("--week-min0", action="store_true", help="run ours-min0 on the week")
    args = parser.parse_args(argv)
    keys = list(dict.fromkeys(args.trace)) if args.trace else list(TRACE_KEYS)
    plan = QUICK_PLAN if args.quick else Plan()
    plan = replace(
        plan,
        seeds=args.seeds or plan.seeds,
        week_seeds=args.week_seeds or plan.week_seeds,
        week_offset_step=1 if args.all_offsets else plan.week_offset_step,
        week_min0=args.week_min0 or plan.week_min0,
    )
    started = time.perf_counter()
    text, passed = report(keys, plan, jobs=max(1, args.jobs))
    print(text)
    print(
        f"\nruntime {time.perf_counter() - started:.1f} s with {max(1, args.jobs)} worker(s)",
        file=sys.stderr,
    )
    if not passed:
        print("bench: a target was missed (FAIL above); exit 1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
