"""The car through a local BLE bridge (TeslaBleHttpProxy on a Pi, ESPHome Tesla BLE on an ESP32).

These bridges speak the Fleet API's shapes on the same paths, so the pure parsers of
`tesla.py` do the parsing; this module only unwraps the bridge's doubled envelope and decides
who failed. The distinction matters to the failover in `roads.py`:

- the bridge or its Bluetooth link failed (timeout, connection refused, 5xx, a `result: false`
  whose reason is not the car's): `BleUnavailable`, and the cloud road gets the command;
- the car itself refused (`car could not execute command: is_charging`): `CommandRefused`,
  and no other road is tried, because the car would refuse that one too.

No bearer token (the bridge holds the car's key), ~5 s timeouts (a local hop plus one BLE
round trip), no retries here: failing over to the cloud is the retry. Never wakes the car:
there is no wake endpoint here and no `wakeup` parameter is ever sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from tesla_smart_charger.car.fleet_api import (
    MALFORMED,
    _command_reply,  # shared with the cloud client: one parser for the command shape
    _refusal_reason,
    interpret_reply,
    is_vin,
    parse_charge_state,
)
from tesla_smart_charger.control.models import ChargeState, VehicleSnapshot, VehicleState
from tesla_smart_charger.errors import (
    BleUnavailable,
    CommandRefused,
    TeslaError,
    TeslaProtocolError,
)

_LOGGER = logging.getLogger(__name__)

BLE_CONNECT_TIMEOUT: Final = 2.0
# A BLE bridge has to connect to the car for each request; more than this and the cloud is
# faster anyway.
BLE_TOTAL_TIMEOUT: Final = 5.0
# The car's own refusals, as vehicle-command words them on both roads.
_CAR_REFUSAL_PREFIX: Final = "car could not execute command"
_CAR_REASONS: Final = frozenset(
    {"is_charging", "not_charging", "complete", "disconnected", "already_set", "no_power"}
)
_SLEEP_STATES: Final[Mapping[str, VehicleState]] = {
    "VEHICLE_SLEEP_STATUS_AWAKE": VehicleState.ONLINE,
    "VEHICLE_SLEEP_STATUS_ASLEEP": VehicleState.ASLEEP,
}
_MIN_SINGLE_SEND_AMPS: Final = 5
_MAX_REASON: Final = 200

VinSource = str | Callable[[], Awaitable[str]]


def is_car_refusal(reason: str) -> bool:
    """True when `reason` is the car saying no, not the bridge failing to reach it."""
    text = reason.strip().lower()
    if text.startswith(_CAR_REFUSAL_PREFIX):
        return True
    return text in _CAR_REASONS


def unwrap(payload: Any, what: str, *, status: int = 200) -> Any:
    """The inner `response` of the bridge's doubled envelope, as the Fleet API would send it.

    `{"response": {"result": true, "response": X}}` becomes `{"response": X}`; a plain Fleet
    envelope is returned unchanged. A `result: false` here means the bridge could not get the
    answer from the car (out of range, BLE busy): `BleUnavailable`.
    """
    if not isinstance(payload, dict):
        raise BleUnavailable(f"{what}: reply is not a JSON object (HTTP {status})")
    outer = payload.get("response")
    if isinstance(outer, dict) and isinstance(outer.get("result"), bool):
        if outer["result"] is False:
            reason = str(_refusal_reason(outer))[:_MAX_REASON]
            raise BleUnavailable(f"{what}: the bridge could not read the car: {reason}")
        if status == 200 and "response" in outer:
            return {"response": outer["response"]}
    if status != 200:
        raise BleUnavailable(f"{what}: HTTP {status}")
    return payload


def parse_sleep_status(
    payload: Any, what: str = "body_controller_state", *, status: int = 200
) -> VehicleState:
    """`vehicle_sleep_status` of `body_controller_state`, in either envelope.

    Anything but AWAKE or ASLEEP (UNKNOWN: the bridge does not see the car) is a bridge
    problem, so the cloud is asked instead of guessing.
    """
    inner = unwrap(payload, what, status=status).get("response")
    if not isinstance(inner, dict) or "vehicle_sleep_status" not in inner:
        raise BleUnavailable(f"{what}: response.vehicle_sleep_status missing")
    status = inner["vehicle_sleep_status"]
    state = _SLEEP_STATES.get(status) if isinstance(status, str) else None
    if state is None:
        raise BleUnavailable(f"{what}: response.vehicle_sleep_status is {status!r}")
    return state


def classify_command_reply(status: int, payload: Any, *, what: str, command: str) -> None:
    """Raise the right error for a command reply; return when the car executed it.

    The car's refusal (whatever the HTTP status the bridge chose) is `CommandRefused`;
    everything else that is not success is `BleUnavailable`.
    """
    response = _command_reply(payload)
    if response is not None and response["result"] is False:
        reason = str(_refusal_reason(response))[:_MAX_REASON]
        if is_car_refusal(reason):
            raise CommandRefused(command, reason)
        raise BleUnavailable(f"{what}: the bridge could not deliver it: {reason} (HTTP {status})")
    if status == 404:
        raise BleUnavailable(f"{what}: HTTP 404 (is the VIN known to the bridge?)")
    _, error = interpret_reply(status, payload, what=what, command=command)
    if error is None:
        return
    if isinstance(error, CommandRefused):  # pragma: no cover - handled above
        raise error
    raise BleUnavailable(f"{what}: {error}") from error


class BleVehicle:
    """The car through a BLE bridge (implements `api.Vehicle`); never wakes it.

    `vin` is the VIN, or an async callable that returns it (the cloud client's
    `resolve_vin` when teslaVehicleId is numeric): the bridge only knows VINs.
    """

    name: Final = "ble"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        vin: VinSource,
        *,
        timeout: aiohttp.ClientTimeout | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._vin_source = vin
        self._vin: str | None = vin.upper() if isinstance(vin, str) and is_vin(vin) else None
        if isinstance(vin, str) and self._vin is None:
            raise ValueError("the BLE bridge needs the 17-character VIN")
        self._timeout = timeout or aiohttp.ClientTimeout(
            total=BLE_TOTAL_TIMEOUT, connect=BLE_CONNECT_TIMEOUT
        )
        self._clock = clock
        self.calls: Counter[str] = Counter()  # outcome -> requests; never billed by Tesla

    def __repr__(self) -> str:
        return f"BleVehicle(base_url={self._host()!r})"

    def _host(self) -> str:
        parts = urlsplit(self._base)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"

    async def vin(self) -> str:
        """The VIN the bridge is asked about."""
        if self._vin is None:
            source = self._vin_source
            assert callable(source)  # noqa: S101 - a str VIN was resolved in __init__
            self._vin = (await source()).upper()
        return self._vin

    async def sleep_state(self) -> VehicleState:
        """ONLINE or ASLEEP from `body_controller_state`: readable without waking the car."""
        vin = await self.vin()
        what = "BLE GET body_controller_state"
        status, payload = await self._request("GET", f"/api/1/vehicles/{vin}/body_controller_state")
        try:
            state = parse_sleep_status(payload, what, status=status)
        except BleUnavailable:
            self.calls["error"] += 1
            raise
        self.calls["ok"] += 1
        return state

    async def charge_state(self) -> ChargeState:
        """`charge_state` via `vehicle_data?endpoints=charge_state` (doubled envelope)."""
        vin = await self.vin()
        what = "BLE GET vehicle_data"
        status, payload = await self._request(
            "GET", f"/api/1/vehicles/{vin}/vehicle_data", params={"endpoints": "charge_state"}
        )
        try:
            charge = parse_charge_state(unwrap(payload, what, status=status))
        except TeslaProtocolError as err:
            self.calls["error"] += 1
            raise BleUnavailable(f"{what}: {err}") from err
        except BleUnavailable:
            self.calls["error"] += 1
            raise
        self.calls["ok"] += 1
        return charge

    async def snapshot(
        self, *, with_charge_state: bool = True, known_online: bool = False
    ) -> VehicleSnapshot:
        """Sleep state (never wakes), then `charge_state` only when the car is awake."""
        state = VehicleState.ONLINE if known_online else await self.sleep_state()
        if state is not VehicleState.ONLINE or not with_charge_state:
            return VehicleSnapshot(state=state, charge=None, at=self._clock())
        charge = await self.charge_state()
        return VehicleSnapshot(state=VehicleState.ONLINE, charge=charge, at=self._clock())

    async def set_charging_amps(self, amps: int) -> None:
        """Set the charging current; below 5 A sent twice (the car applies it on a repeat)."""
        if amps < 0:
            raise ValueError(f"charging amps must not be negative, got {amps}")
        await self._command("set_charging_amps", {"charging_amps": amps})
        if amps < _MIN_SINGLE_SEND_AMPS:
            await self._command("set_charging_amps", {"charging_amps": amps})

    async def charge_start(self) -> None:
        """Resume charging."""
        await self._command("charge_start", {})

    async def charge_stop(self) -> None:
        """Pause charging."""
        await self._command("charge_stop", {})

    async def _command(self, name: str, body: dict[str, Any]) -> None:
        vin = await self.vin()
        what = f"BLE {name}"
        status, payload = await self._request(
            "POST", f"/api/1/vehicles/{vin}/command/{name}", body=body
        )
        try:
            classify_command_reply(status, payload, what=what, command=name)
        except CommandRefused as err:
            self.calls["refused"] += 1
            _LOGGER.warning("command %s refused by the car (via BLE): %s", name, err.reason)
            raise
        except TeslaError:
            self.calls["error"] += 1
            raise
        self.calls["ok"] += 1

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> tuple[int, Any]:
        """One HTTP exchange; every transport fault becomes `BleUnavailable`."""
        what = f"BLE {method} {path.rsplit('/', 1)[-1]}"
        try:
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                json=body,
                timeout=self._timeout,
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError as err:
            self.calls["timeout"] += 1
            raise BleUnavailable(
                f"{what}: no answer from the BLE bridge within {self._timeout.total:g} s"
            ) from err
        except (aiohttp.ClientError, OSError) as err:
            self.calls["unreachable"] += 1
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise BleUnavailable(f"{what}: cannot reach the BLE bridge: {reason}") from err
        payload: Any
        try:
            payload = json.loads(raw) if raw.strip() else None
        except ValueError:
            payload = MALFORMED
        return status, payload
