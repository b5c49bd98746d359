"""Simulated rooftop PV: a clear and a cloudy day at 1 s resolution, seeded.

The solar controller must follow the sun through passing clouds, so the benchmark and the demo
need second-by-second generation with realistic cloud edges, not hourly averages. The model:

- Clear sky: a bell from sunrise to sunset, `sin(pi * x) ** 1.3` of the day fraction `x`
  (a fair stand-in for the clear-sky irradiance on a south-facing roof at mid latitude).
- Clouds: each passing cloud dims the array to `1 - opacity` for `duration` seconds, with
  `edge` seconds of linear shading in and out (a cumulus edge crossing a 10 m roof at a few
  m/s takes 10-30 s). A clear day has a few thin clouds; a cloudy day many thick ones and a
  lower ceiling (thin overcast).
- Power: irradiance fraction x `peak_kw` (DC rating) x `derate` 0.85 (hot modules, wiring,
  inverter: a 6 kWp roof feeds about 5.1 kW AC at best, ~40 kWh on a clear summer day); current = power / volts, split over `phases` when
  the inverter feeds three phases (it then feeds each equally).

Everything is precomputed into one list of per-second fractions, so `amps(t)` is a lookup and a
day is built in well under a second. The same seed always gives the same day.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Literal

DAY = 86_400
Sky = Literal["clear", "cloudy"]


@dataclass(frozen=True)
class Cloud:
    """One cloud crossing the array."""

    start: float
    duration: float
    opacity: float  # 0..1: fraction of the clear-sky power it removes at its core
    edge: float = 15.0


@dataclass(frozen=True)
class SkyProfile:
    """How a kind of day is drawn: the ceiling and the cloud statistics."""

    ceiling: float  # fraction of the clear-sky bell reaching the array without clouds
    clouds_per_hour: float
    duration_s: tuple[float, float]
    opacity: tuple[float, float]


SKIES: dict[str, SkyProfile] = {
    "clear": SkyProfile(ceiling=1.0, clouds_per_hour=1.5, duration_s=(20, 120), opacity=(0.2, 0.5)),
    "cloudy": SkyProfile(
        ceiling=0.8, clouds_per_hour=14.0, duration_s=(30, 600), opacity=(0.5, 0.85)
    ),
}


@dataclass
class PvArray:
    """A PV array on one day: `amps(t)` per supply phase at second `t` of the day."""

    peak_kw: float = 6.0
    sky: Sky = "clear"
    seed: int = 1
    sunrise_h: float = 6.0
    sunset_h: float = 20.0
    phases: int = 1  # inverter phases (1: all on L1; 3: split evenly)
    volts: float = 230.0
    derate: float = 0.85  # AC out at full sun per kWp (temperature, wiring, inverter losses)
    period: float | None = None  # repeat every `period` seconds (the demo); None: one day
    clouds: tuple[Cloud, ...] = field(init=False)
    _fraction: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.sky not in SKIES:
            raise ValueError(f"sky must be one of {sorted(SKIES)}, not {self.sky!r}")
        if self.peak_kw < 0:
            raise ValueError("peak_kw must not be negative")
        if self.phases not in (1, 2, 3):
            raise ValueError("phases must be 1, 2 or 3")
        if not 0 <= self.sunrise_h < self.sunset_h <= 24:
            raise ValueError("need 0 <= sunrise_h < sunset_h <= 24")
        self.clouds = self._draw_clouds()
        self._fraction = self._build()

    def _draw_clouds(self) -> tuple[Cloud, ...]:
        profile = SKIES[self.sky]
        rng = random.Random(f"pv:{self.sky}:{self.seed}")
        rise, day_len = self.sunrise_h * 3600, (self.sunset_h - self.sunrise_h) * 3600
        out: list[Cloud] = []
        t = rise
        mean_gap = 3600.0 / profile.clouds_per_hour
        while True:
            t += rng.expovariate(1.0 / mean_gap)
            if t >= rise + day_len:
                break
            out.append(
                Cloud(
                    start=t,
                    duration=rng.uniform(*profile.duration_s),
                    opacity=rng.uniform(*profile.opacity),
                    edge=rng.uniform(10.0, 30.0),
                )
            )
        return tuple(out)

    def _build(self) -> list[float]:
        ceiling = SKIES[self.sky].ceiling
        rise, sset = self.sunrise_h * 3600, self.sunset_h * 3600
        frac = [0.0] * DAY
        for s in range(int(rise), min(DAY, math.ceil(sset))):
            x = (s - rise) / (sset - rise)
            frac[s] = ceiling * math.sin(math.pi * x) ** 1.3 if 0 < x < 1 else 0.0
        shade = [1.0] * DAY
        for c in self.clouds:
            lo, hi = int(c.start), min(DAY, int(c.start + c.duration + 2 * c.edge))
            for s in range(lo, hi):
                into = s - c.start
                if into < c.edge:
                    depth = c.opacity * into / c.edge
                elif into < c.edge + c.duration:
                    depth = c.opacity
                else:
                    depth = c.opacity * max(0.0, 1.0 - (into - c.edge - c.duration) / c.edge)
                # Overlapping clouds: the thicker one decides (shadows do not multiply much).
                shade[s] = min(shade[s], 1.0 - depth)
        return [f * sh for f, sh in zip(frac, shade, strict=True)]

    def fraction(self, t: float) -> float:
        """Irradiance as a fraction of the array's peak at second `t` (0 outside the day)."""
        if self.period is not None and t >= 0:
            t %= self.period
        s = int(t)
        return self._fraction[s] if 0 <= s < DAY else 0.0

    def watts(self, t: float) -> float:
        """AC power the inverter feeds in at `t`."""
        return self.fraction(t) * self.peak_kw * self.derate * 1000.0

    def amps(self, t: float, supply_phases: int) -> tuple[float, ...]:
        """Current fed in on each supply phase at `t` (positive = generated)."""
        total = self.watts(t) / self.volts
        used = min(self.phases, supply_phases)
        return tuple(round(total / used, 3) if i < used else 0.0 for i in range(supply_phases))

    def energy_kwh(self, start: float = 0.0, stop: float = DAY) -> float:
        """Energy generated between `start` and `stop` (whole seconds)."""
        lo, hi = max(0, int(start)), min(DAY, int(stop))
        return sum(self._fraction[lo:hi]) * self.peak_kw * self.derate / 3600.0


def solar_day(
    sky: Sky, *, seed: int = 1, peak_kw: float = 6.0, phases: int = 1, period: float | None = None
) -> PvArray:
    """The benchmark's and demo's array: 6 kWp, sun from 06:00 to 20:00 (a summer day)."""
    return PvArray(peak_kw=peak_kw, sky=sky, seed=seed, phases=phases, period=period)
