"""A Shelly input wired to the grid operator's control box contact (§14a-style limit).

Generation is detected once from the unauthenticated `GET /shelly` (Gen1 has no `gen` key).
Gen1 reads `GET /status` (`inputs[n].input`, 0 or 1); Gen2+ reads the RPC
`Input.GetStatus {"id": n}` (`state`, true or false; a button-type input has none). The HTTP
transport (Gen1 basic, Gen2 SHA-256 digest as admin, 429 handling) is the meter's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final, Literal

import aiohttp

from tesla_smart_charger.errors import InputAuthError, InputError
from tesla_smart_charger.shelly.http import ShellyHttp, Throttled, shelly_host

_LOG = logging.getLogger(__name__)

INPUT_CONNECT_TIMEOUT: Final = 1.0
INPUT_TOTAL_TIMEOUT: Final = 2.0
Generation = Literal[1, 2]


# --- pure parsers ----------------------------------------------------------------------------


def input_generation(info: Any) -> Generation:
    """1 or 2 from the `/shelly` reply (Gen3/Gen4 speak the Gen2 RPC: 2)."""
    if not isinstance(info, Mapping):
        raise InputError("/shelly: expected a JSON object")
    gen = info.get("gen")
    if gen is None:
        return 1
    if isinstance(gen, bool) or not isinstance(gen, int) or gen < 2:
        raise InputError(f"/shelly: gen: unexpected value {gen!r}")
    return 2


def parse_gen1_inputs(status: Any, index: int) -> bool:
    """`inputs[index].input` of a Gen1 `/status` (0 or 1; some firmware sends a bool)."""
    if not isinstance(status, Mapping):
        raise InputError("/status: expected a JSON object")
    inputs = status.get("inputs")
    if not isinstance(inputs, list) or index >= len(inputs):
        have = len(inputs) if isinstance(inputs, list) else 0
        raise InputError(
            f"/status: inputs[{index}]: this Shelly has {have} input(s) (gridLimitInputId)"
        )
    entry = inputs[index]
    value = entry.get("input") if isinstance(entry, Mapping) else None
    if value in (0, 1) and not isinstance(value, float):
        return bool(value)
    raise InputError(f"/status: inputs[{index}].input: expected 0 or 1, got {value!r}")


def parse_input_status(reply: Any, index: int) -> bool:
    """`state` of a Gen2 `Input.GetStatus` (a switch-type input; a button has no state)."""
    if not isinstance(reply, Mapping):
        raise InputError("Input.GetStatus: expected a JSON object")
    state = reply.get("state")
    if isinstance(state, bool):
        return state
    if state is None:
        raise InputError(
            f"Input.GetStatus: input {index} has no state: set it to the switch type "
            "(a button input only reports presses)"
        )
    raise InputError(f"Input.GetStatus: state: expected true or false, got {state!r}")


# --- the driver ------------------------------------------------------------------------------


class ShellyInput:
    """One input of a Shelly: `read()` says whether the contact is closed (input on)."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        input_id: int = 0,
        password: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> None:
        if input_id < 0:
            raise ValueError("gridLimitInputId must not be negative")
        self._id = input_id
        self._gen: Generation | None = None
        self._name = f"shelly-input@{shelly_host(base_url)}/{input_id}"
        self._http = ShellyHttp(
            base_url,
            session,
            name=self._name,
            user=None,
            password=password,
            timeout=timeout
            or aiohttp.ClientTimeout(total=INPUT_TOTAL_TIMEOUT, connect=INPUT_CONNECT_TIMEOUT),
            error=InputError,
            auth_error=InputAuthError,
            auth_problem=self._auth_problem,
            status_hint=self._status_hint,
            reply_noun="Shelly status",
        )

    @property
    def name(self) -> str:
        """`shelly-input@host/id`; never carries credentials."""
        return self._name

    def __repr__(self) -> str:
        return f"ShellyInput({self._name!r}, gen={self._gen!r})"

    async def read(self) -> bool:
        """The input's state now (True: on)."""
        if self._gen is None:
            info = await self._http.get_open("/shelly")
            try:
                self._gen = input_generation(info)
            except InputError as err:
                raise InputError(f"{self._name}: {err}") from err
            _LOG.info(
                "%s: Gen%d device (%s)", self._name, self._gen, info.get("app") or info.get("type")
            )
        try:
            if self._gen == 1:
                return parse_gen1_inputs(await self._http.get_basic("/status"), self._id)
            try:
                reply = await self._http.rpc("POST", "/rpc/Input.GetStatus", body={"id": self._id})
            except Throttled:
                raise InputError(f"{self._name}: Input.GetStatus answered 429 twice") from None
            return parse_input_status(reply, self._id)
        except InputAuthError:
            raise
        except InputError as err:
            if str(err).startswith(self._name):
                raise
            raise InputError(f"{self._name}: bad reply: {err}") from err

    def _auth_problem(self, sent: bool) -> str:
        if not sent:
            return f"{self._name}: authentication required: set gridLimitInputPassword"
        return f"{self._name}: authentication failed: check gridLimitInputPassword"

    def _status_hint(self, path: str, status: int) -> str:
        if status == 404 and path != "/shelly":
            return f" (does input {self._id} exist? gridLimitInputId)"
        return ""
