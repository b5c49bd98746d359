"""Shelly meters over plain HTTP: pure parsers for each reply shape, and one polling driver.

The parsers turn wire JSON into `ChannelSample`s (one per CT channel or phase) and raise
`MeterError` naming the field when the shape is wrong; `compose_reading` maps channels onto
supply phases. `ShellyMeter` is the thin I/O shell: one GET (or two for EM1 devices) per read on
the shared session, Gen1 basic or Gen2 SHA-256 digest auth, and every transport fault turned
into `MeterError`/`MeterAuthError` with a one-line reason naming the meter.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import aiohttp

from tesla_smart_charger import const
from tesla_smart_charger.control.models import MeterReading
from tesla_smart_charger.errors import MeterAuthError, MeterError
from tesla_smart_charger.shelly.http import (
    GEN1_DEFAULT_USER,
    MAX_REPLY_BYTES,
    THROTTLE_BACKOFF_SECS,
    ShellyHttp,
    Throttled,
    shelly_host,
)

_LOG = logging.getLogger(__name__)

MeterType = Literal["shelly-em", "shelly-3em", "shelly-gen2", "shelly"]
# What detect_kind() returns: the two Gen1 drivers, or the Gen2 RPC component to poll.
Kind = Literal["shelly-em", "shelly-3em", "em", "em1", "switch"]

# After rejected credentials, stay off the device for a while: Gen2 fw 2.x counts failed logins
# and then locks everyone out with 429s, and a 1 s poll would hit that within seconds.
AUTH_RETRY_SECS: Final = 30.0
# |amps| above homeMaxAmps times this is a broken CT or firmware, not a house.
PLAUSIBLE_FACTOR: Final = 10.0
_SUPPLY_KEY: Final = "energyMonitorSupplyChannels"
_CHARGER_KEY: Final = "energyMonitorChargerChannel"


@dataclass(frozen=True, slots=True)
class ChannelSample:
    """One CT channel or phase as the device reports it."""

    amps: float  # signed: positive = import (sign taken from active power)
    volts: float | None
    valid: bool
    error: str | None = None
    # Where the amps came from ("emeters[0].current"), for error messages; not part of the value.
    field: str = dataclasses.field(default="", compare=False)


class _NotFinite(MeterError):
    """NaN or ±Infinity where a measurement belongs: an invalid reading, not a parse error."""


def _invalid(error: str, field: str) -> ChannelSample:
    return ChannelSample(0.0, None, valid=False, error=error, field=field)


# --- pure parsers ----------------------------------------------------------------------------


def _number(obj: Mapping[str, Any], key: str, where: str) -> float:
    """A finite JSON number at obj[key]; MeterError naming `where.key` otherwise."""
    if key not in obj:
        raise MeterError(f"{where}{key}: missing")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MeterError(f"{where}{key}: expected a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise _NotFinite(f"{where}{key}: not a finite number ({value})")
    return result


def _optional_volts(obj: Mapping[str, Any], key: str, where: str) -> float | None:
    """Volts if reported and non-zero; None when absent, null or 0 (not measured)."""
    if obj.get(key) is None:
        return None
    volts = _number(obj, key, where)
    return volts if volts > 0 else None


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MeterError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _errors(obj: Mapping[str, Any], key: str, where: str) -> list[str]:
    """The optional `*_errors` / `errors` array of Gen2 EM components."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MeterError(f"{where}{key}: expected an array, got {type(value).__name__}")
    return [str(item) for item in value]


def _signed(magnitude: float, power: float) -> float:
    """Current takes the sign of active power: negative only while exporting."""
    return -abs(magnitude) if power < 0 else abs(magnitude)


def _emeters(status: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = _object(status, "status")
    meters = status.get("emeters")
    if not isinstance(meters, list) or not meters:
        raise MeterError("emeters: missing or not a non-empty array")
    return [_object(m, f"emeters[{i}]") for i, m in enumerate(meters)]


def _gen1_valid(meter: Mapping[str, Any], where: str) -> bool:
    value = meter.get("is_valid", True)
    if not isinstance(value, bool):
        raise MeterError(f"{where}is_valid: expected true or false")
    return value


def _gen1_samples(
    status: Mapping[str, Any],
    field: str,
    measure: Callable[[Mapping[str, Any], str], tuple[float, float, float | None]],
) -> list[ChannelSample]:
    """One sample per `emeters[i]`: `measure` gives (amps, power, volts); the sign is power's."""
    samples = []
    for i, meter in enumerate(_emeters(status)):
        where = f"emeters[{i}]."
        if not _gen1_valid(meter, where):
            samples.append(ChannelSample(0.0, None, valid=False, error="is_valid is false"))
            continue
        try:
            amps, power, volts = measure(meter, where)
        except _NotFinite as err:
            samples.append(_invalid(str(err), f"{where}{field}"))
            continue
        samples.append(
            ChannelSample(_signed(amps, power), volts, valid=True, field=f"{where}{field}")
        )
    return samples


def parse_gen1_em_status(status: Mapping[str, Any], mains_voltage: float) -> list[ChannelSample]:
    """Shelly EM Gen1 `/status`: it reports no current, so I = sqrt(P² + Q²) / V, sign of P.

    Works for a single `/emeter/N` object too when wrapped as `{"emeters": [obj]}`.
    """

    def measure(meter: Mapping[str, Any], where: str) -> tuple[float, float, float | None]:
        power = _number(meter, "power", where)
        reactive = _number(meter, "reactive", where)
        volts = _optional_volts(meter, "voltage", where)
        return math.hypot(power, reactive) / (volts or mains_voltage), power, volts

    return _gen1_samples(status, "power", measure)


def parse_gen1_3em_status(status: Mapping[str, Any], mains_voltage: float) -> list[ChannelSample]:
    """Shelly 3EM Gen1 `/status`: `emeters[i].current` per phase, sign from `power`.

    `mains_voltage` is unused (the 3EM measures current) but kept so both Gen1 parsers share
    one signature.
    """
    del mains_voltage

    def measure(meter: Mapping[str, Any], where: str) -> tuple[float, float, float | None]:
        current = _number(meter, "current", where)
        power = _number(meter, "power", where)
        return current, power, _optional_volts(meter, "voltage", where)

    return _gen1_samples(status, "current", measure)


def parse_em_status(em: Mapping[str, Any]) -> list[ChannelSample]:
    """Gen2 `EM.GetStatus` (Pro 3EM triphase, 3EM-63): one sample per phase a, b, c.

    `a_errors` etc. make that phase invalid; a top-level `errors` array makes all of them invalid.
    """
    em = _object(em, "EM.GetStatus")
    common = _errors(em, "errors", "")
    samples = []
    for phase in ("a", "b", "c"):
        problems = common + _errors(em, f"{phase}_errors", "")
        if problems:
            error = f"phase {phase} errors: {', '.join(problems)}"
            samples.append(ChannelSample(0.0, None, valid=False, error=error))
            continue
        try:
            current = _number(em, f"{phase}_current", "")
            power = _number(em, f"{phase}_act_power", "")
            volts = _optional_volts(em, f"{phase}_voltage", "")
        except _NotFinite as err:
            samples.append(_invalid(str(err), f"{phase}_current"))
            continue
        samples.append(
            ChannelSample(_signed(current, power), volts, valid=True, field=f"{phase}_current")
        )
    return samples


def parse_em1_status(em1: Mapping[str, Any]) -> list[ChannelSample]:
    """Gen2 `EM1.GetStatus` (Pro EM, EM Gen3, Pro 3EM monophase): one channel."""
    em1 = _object(em1, "EM1.GetStatus")
    problems = _errors(em1, "errors", "")
    if problems:
        return [ChannelSample(0.0, None, valid=False, error=f"errors: {', '.join(problems)}")]
    try:
        current = _number(em1, "current", "")
        power = _number(em1, "act_power", "")
        volts = _optional_volts(em1, "voltage", "")
    except _NotFinite as err:
        return [_invalid(str(err), "current")]
    return [ChannelSample(_signed(current, power), volts, valid=True, field="current")]


def parse_switch_status(sw: Mapping[str, Any]) -> list[ChannelSample]:
    """Gen2 `Switch.GetStatus` (Plus/Pro 1PM class): one channel.

    A switch's `errors` (overtemp, overpower...) are about the relay, not the measurement,
    so they do not invalidate the reading.
    """
    sw = _object(sw, "Switch.GetStatus")
    try:
        current = _number(sw, "current", "")
        power = _number(sw, "apower", "")
        volts = _optional_volts(sw, "voltage", "")
    except _NotFinite as err:
        return [_invalid(str(err), "current")]
    return [ChannelSample(_signed(current, power), volts, valid=True, field="current")]


def check_plausible(channels: Sequence[ChannelSample], max_amps: float) -> list[ChannelSample]:
    """Mark channels whose |amps| exceed `max_amps` invalid, naming the field.

    A CT that reads 5,000 A on a 30 A house would otherwise drive the car to its minimum (or,
    negative, hide a real overload); the fail-safe is the honest answer.
    """
    out = []
    for sample in channels:
        if sample.valid and abs(sample.amps) > max_amps:
            where = sample.field or "current"
            error = f"{where}: {sample.amps:.0f} A is implausible (more than {max_amps:g} A, 10 x homeMaxAmps)"
            out.append(dataclasses.replace(sample, valid=False, error=error))
        else:
            out.append(sample)
    return out


def detect_kind(shelly_info: Mapping[str, Any]) -> Kind:
    """Pick the driver from the unauthenticated `GET /shelly` reply (as evcc does).

    Gen1 has no `gen` key and names itself by `type`; Gen2+ by `app` and `profile`. App names
    are matched loosely ("3EM" = three-phase EM component unless in the monophase profile,
    other "EM" apps = EM1 channels) so new hardware generations need no code change.
    """
    info = _object(shelly_info, "/shelly")
    gen = info.get("gen")
    if gen is None:
        device_type = info.get("type")
        if device_type == "SHEM":
            return "shelly-em"
        if device_type == "SHEM-3":
            return "shelly-3em"
        raise MeterError(f"type: unsupported Gen1 device {device_type!r} (need SHEM or SHEM-3)")
    if isinstance(gen, bool) or not isinstance(gen, int) or gen < 2:
        raise MeterError(f"gen: unexpected value {gen!r}")
    app = str(info.get("app") or "").upper()
    profile = str(info.get("profile") or "").lower()
    if "EM" in app:
        if profile == "monophase" or "3EM" not in app:
            return "em1"
        return "em"
    return "switch"


def phases_of(kind: Kind) -> int:
    """Supply phases a meter reports (supplyPhases auto): three for an EM component (Pro 3EM
    in its triphase profile, 3EM-63) and a Gen1 3EM, one for everything else."""
    return 3 if kind in ("em", "shelly-3em") else 1


def em1_channel_ids(shelly_info: Mapping[str, Any]) -> tuple[int, ...]:
    """EM1 component ids: 0..2 on a Pro 3EM in the monophase profile, else 0 and 1."""
    app = str(_object(shelly_info, "/shelly").get("app") or "").upper()
    return (0, 1, 2) if "3EM" in app else (0, 1)


def compose_reading(
    channels: Sequence[ChannelSample],
    *,
    supply_channels: Sequence[int] | None,
    charger_channel: int | None,
    supply_phases: int,
    at: float,
    car_channels: Sequence[int] = (),
) -> MeterReading:
    """Map channels onto supply phases: the one place channel roles are applied.

    Supply channels (default: every channel but the charger's) are summed per phase: all onto
    phase 1 when `supply_phases` is 1 (as the seed summed both EM channels), channel i onto
    phase i % 3 when it is 3. Any invalid supply channel makes the whole reading invalid; an
    invalid charger channel only loses `car_amps`. `car_channels` (each car's own charger
    channel, several cars) are left out of the default supply like the charger's, and reported
    in `car_channel_amps`.
    """
    if supply_phases not in (1, 3):
        raise MeterError(f"supplyPhases: must be 1 or 3, got {supply_phases}")
    count = len(channels)

    def check(index: int, key: str) -> None:
        if not 0 <= index < count:
            raise MeterError(
                f"{key}: channel {index} does not exist (the meter has {count} channel(s), 0-{count - 1})"
            )

    if charger_channel is not None:
        check(charger_channel, _CHARGER_KEY)
    for index in car_channels:
        check(index, "vehicles[].meterChargerChannel")
    if supply_channels:
        supply = list(supply_channels)
        for index in supply:
            check(index, _SUPPLY_KEY)
    else:
        supply = [i for i in range(count) if i != charger_channel and i not in car_channels]
    if not supply:
        raise MeterError(f"{_SUPPLY_KEY}: no channel left to measure the house supply")

    amps = [0.0] * supply_phases
    volts: list[float | None] = [None] * supply_phases
    seen = [False] * supply_phases
    error = None
    for index in supply:
        sample = channels[index]
        if not sample.valid and error is None:
            error = f"channel {index} invalid: {sample.error or 'flagged by the meter'}"
        phase = 0 if supply_phases == 1 else index % 3
        amps[phase] += sample.amps
        if not seen[phase]:
            volts[phase] = sample.volts
            seen[phase] = True

    car_amps = None
    if charger_channel is not None and channels[charger_channel].valid:
        # The car only draws (no V2G): a CT clamped the wrong way round must not flip the sign.
        car_amps = abs(channels[charger_channel].amps)
    return MeterReading(
        phase_amps=tuple(amps),
        phase_volts=tuple(volts),
        car_amps=car_amps,
        valid=error is None,
        at=at,
        error=error,
        car_channel_amps=tuple(
            (i, abs(channels[i].amps)) for i in car_channels if channels[i].valid
        ),
    )


# --- the driver (I/O shell) ------------------------------------------------------------------


class ShellyMeter:
    """Polls one Shelly over HTTP and returns `MeterReading`s (implements `api.Meter`).

    `meter_type` "shelly-em"/"shelly-3em" poll Gen1 `/status` straight away (the seed's
    behaviour, no extra request); "shelly-gen2" and "shelly" ask the unauthenticated `/shelly`
    on the first read which component to poll, and cache the answer.
    """

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        meter_type: MeterType = "shelly",
        user: str | None = None,
        password: str | None = None,
        supply_channels: Sequence[int] | None = None,
        charger_channel: int | None = None,
        car_channels: Sequence[int] = (),
        supply_phases: int | Literal["auto"] = 1,
        mains_voltage: float = 230.0,
        clock: Callable[[], float] = time.monotonic,
        timeout: aiohttp.ClientTimeout | None = None,
        throttle_backoff: float = THROTTLE_BACKOFF_SECS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        auth_retry_secs: float = AUTH_RETRY_SECS,
        max_amps: float | None = None,
        max_reply_bytes: int = MAX_REPLY_BYTES,
    ) -> None:
        self._type = meter_type
        self._supply_channels = tuple(supply_channels) if supply_channels else None
        self._charger_channel = charger_channel
        self._car_channels = tuple(car_channels)
        self._supply_phases = supply_phases  # "auto": resolved from /shelly in _detect
        self._mains_voltage = mains_voltage
        self._clock = clock
        self._auth_retry_secs = auth_retry_secs
        self._max_amps = max_amps
        self._auth_error: MeterAuthError | None = None
        self._auth_error_at = 0.0
        self._lock = asyncio.Lock()
        self._kind: Kind | None = None
        self._em1_ids: tuple[int, ...] = (0, 1)
        if meter_type in ("shelly-em", "shelly-3em"):
            self._kind = meter_type
            if supply_phases == "auto":
                self._supply_phases = phases_of(meter_type)
        self._name = f"{meter_type}@{shelly_host(base_url)}"
        self._http = ShellyHttp(
            base_url,
            session,
            name=self._name,
            user=user or GEN1_DEFAULT_USER,
            password=password,
            timeout=timeout
            or aiohttp.ClientTimeout(
                total=const.METER_TOTAL_TIMEOUT, connect=const.METER_CONNECT_TIMEOUT
            ),
            sleep=sleep,
            throttle_backoff=throttle_backoff,
            max_reply_bytes=max_reply_bytes,
            error=MeterError,
            auth_error=MeterAuthError,
            auth_problem=self._auth_problem,
            status_hint=_status_hint,
            reply_noun="meter reading",
        )

    @property
    def name(self) -> str:
        """`type@host[:port]` for logs and /status; never carries credentials."""
        return self._name

    @property
    def kind(self) -> Kind | None:
        """The driver in use, once known (after the first successful detection)."""
        return self._kind

    def __repr__(self) -> str:
        return f"ShellyMeter({self._name!r}, kind={self._kind!r})"

    async def read(self) -> MeterReading:
        """Poll the device once; MeterError (transient) or MeterAuthError when it cannot.

        Reads are serialised (the device's small HTTP server prefers one request at a time).
        After an auth failure the same MeterAuthError is raised without contacting the device
        until `auth_retry_secs` have passed.
        """
        async with self._lock:
            failed = self._auth_error
            if failed is not None and self._clock() - self._auth_error_at < self._auth_retry_secs:
                raise MeterAuthError(str(failed))
            try:
                reading = await self._read()
            except MeterAuthError as err:
                self._auth_error, self._auth_error_at = err, self._clock()
                raise
            self._auth_error = None
            return reading

    async def _read(self) -> MeterReading:
        kind = self._kind or await self._detect()
        if kind in ("shelly-em", "shelly-3em"):
            status = await self._http.get_basic("/status")
            parse = parse_gen1_em_status if kind == "shelly-em" else parse_gen1_3em_status
            channels = self._parse("/status", lambda s: parse(s, self._mains_voltage), status)
        elif kind == "em":
            channels = self._parse(
                "EM.GetStatus", parse_em_status, await self._get_rpc("EM.GetStatus", 0)
            )
        elif kind == "em1":
            channels = []
            for cid in self._em1_ids:
                em1 = await self._get_rpc("EM1.GetStatus", cid)
                channels += [
                    dataclasses.replace(c, field=f"EM1.GetStatus id={cid} {c.field}")
                    for c in self._parse(f"EM1.GetStatus id={cid}", parse_em1_status, em1)
                ]
        else:
            sw = await self._get_rpc("Switch.GetStatus", 0)
            channels = self._parse("Switch.GetStatus", parse_switch_status, sw)
        if self._max_amps is not None:
            channels = check_plausible(channels, self._max_amps)
        try:
            return compose_reading(
                channels,
                supply_channels=self._supply_channels,
                charger_channel=self._charger_channel,
                car_channels=self._car_channels,
                supply_phases=self._supply_phases if self._supply_phases != "auto" else 1,
                at=self._clock(),
            )
        except MeterError as err:
            raise MeterError(f"{self._name}: {err}") from err

    def _parse(
        self, what: str, parse: Callable[[Any], list[ChannelSample]], reply: Any
    ) -> list[ChannelSample]:
        try:
            return parse(reply)
        except MeterError as err:
            raise MeterError(f"{self._name}: bad reply to {what}: {err}") from err

    async def _detect(self) -> Kind:
        info = await self._http.get_open("/shelly")
        try:
            kind = detect_kind(info)
            em1_ids = em1_channel_ids(info)
        except MeterError as err:
            raise MeterError(f"{self._name}: cannot tell the device from /shelly: {err}") from err
        if self._type == "shelly-gen2" and kind in ("shelly-em", "shelly-3em"):
            _LOG.warning(
                "%s: energyMonitorType is shelly-gen2 but the device is a Gen1 %s; using %s",
                self._name,
                info.get("type"),
                kind,
            )
        _LOG.info(
            "%s: detected %s (gen %s, profile %s): polling %s",
            self._name,
            info.get("app") or info.get("type"),
            info.get("gen", 1),
            info.get("profile", "-"),
            kind,
        )
        self._kind, self._em1_ids = kind, em1_ids
        if self._supply_phases == "auto":
            self._supply_phases = phases_of(kind)
            _LOG.info(
                "%s: supplyPhases auto: %s",
                self._name,
                "three phases (a three-phase meter)"
                if self._supply_phases == 3
                else "one phase (all channels summed)",
            )
        return kind

    async def _get_rpc(self, method: str, cid: int) -> Any:
        path = f"/rpc/{method}"
        try:
            return await self._http.rpc("GET", path, params={"id": str(cid)})
        except Throttled:
            if self._auth_error is not None:
                # Locked out after our own failed logins: keep reporting the real cause.
                raise MeterAuthError(
                    f"{self._name}: authentication failed and the meter now refuses logins (HTTP 429): check energyMonitorPassword"
                ) from None
            raise MeterError(
                f"{self._name}: {path} answered 429 twice: the meter is throttling authentication"
            ) from None

    def _auth_problem(self, sent: bool) -> str:
        if not sent:
            return f"{self._name}: authentication required: set energyMonitorPassword"
        if self._kind in ("shelly-em", "shelly-3em"):
            return f"{self._name}: authentication failed: check energyMonitorUser and energyMonitorPassword"
        return f"{self._name}: authentication failed: check energyMonitorPassword"


def _status_hint(path: str, status: int) -> str:
    if status == 404 and path == "/status":
        return " (a Gen2+ device? set energyMonitorType to shelly to detect it)"
    return ""
