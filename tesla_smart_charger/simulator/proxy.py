"""tesla-http-proxy plus the Fleet API behind it, as one local HTTP server around a `CarModel`.

Fleet's own `POST /api/1/vehicles/{vin}/signed_command` is served too, for clients that sign
commands themselves: each car then has a `SignedCar` (its key pair and verifier), and a
command reaches the car model only after the verifier accepted it. Every signed_command
request, handshakes included, is billed as a command; `signed_requests` counts them.

The real proxy cannot be pointed at a fake Fleet API (it picks the host from the token), so we
emulate the surface our daemon talks to: the proxy's own checks (OAuth header, 17-character VIN
in command paths, POST only, parameter validation; answered locally and never billed) and
Fleet's answers behind it (408 for a sleeping car, 500 for a command to one, 429/5xx on demand,
billed per category whenever the status is below 500). Facts: reference tesla-fleet-api.md §2, §4.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import http
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ssl import SSLContext
from typing import Any, Final

from aiohttp import web

from tesla_smart_charger.car.signing.messages import CarResponse
from tesla_smart_charger.simulator.car import (
    BillingCounter,
    CarModel,
    envelope,
    unavailable_reply,
    validate_command,
)
from tesla_smart_charger.simulator.signed import SignedCar

__all__ = ["BillingCounter", "SimulatedProxy"]

_LOGGER = logging.getLogger(__name__)

NO_TOKEN = "client did not provide an OAuth token"  # noqa: S105 - a message
MALFORMED_TOKEN = "client provided malformed OAuth token"  # noqa: S105 - a message
TOKEN_EXPIRED = "token expired (401)"  # noqa: S105 - a message
VIN_EXPECTED = "expected 17-character VIN in path (do not user Fleet API ID)"  # sic, as the proxy


@dataclass
class _Injection:
    status: int
    remaining: int
    retry_after: float | None
    paths: str


def _format_seconds(value: float) -> str:
    """Retry-After in whole seconds when it is whole (as Tesla sends it), else as a decimal."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# Ways the proxy can fail on purpose (`SimulatedProxy.fail`), for the fault tests.
FAILURE_MODES: Final = (
    "404", "412", "500", "garbage", "html", "truncated", "hang", "echo401", "slow",
)  # fmt: skip
# How long the `slow` mode holds each request before answering it normally.
SLOW_SECS: Final = 11.0


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


class SimulatedProxy:
    """The HTTP surface of tesla-http-proxy and Fleet for one or several simulated cars.

    `car` is one `CarModel` or a sequence of them (distinct VINs): one account, one proxy,
    routed by VIN or numeric id as the real proxy and Fleet do; billing is per account. `car`
    (the attribute) is the first car, so single-car callers are unchanged.
    `clock` drives the car model; tests pass a fake clock to make time-dependent behaviour
    (ramps, falling asleep) deterministic. `latency` delays every command reply, like the
    1-3 s round trip to a real car.
    """

    def __init__(
        self,
        car: CarModel | Sequence[CarModel],
        *,
        token_validator: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        latency: float = 0.0,
    ) -> None:
        self.cars: tuple[CarModel, ...] = (car,) if isinstance(car, CarModel) else tuple(car)
        if not self.cars:
            raise ValueError("the proxy needs at least one car")
        vins = [c.vin for c in self.cars]
        if len(set(vins)) != len(vins):
            raise ValueError(f"two cars share a VIN: {vins}")
        self.car = self.cars[0]
        self.token_validator = token_validator
        self.clock = clock
        self.latency = latency
        self.billing = BillingCounter()
        self.commands: list[tuple[float, str, dict[str, Any]]] = []
        self.command_vins: list[str] = []  # the VIN each entry of `commands` was sent to
        self.requests: list[tuple[float, str, str, int]] = []
        self.expired_token_requests = 0
        self._injections: list[_Injection] = []
        self._changed = asyncio.Condition()
        self._command_locks = {c.vin: asyncio.Lock() for c in self.cars}  # one queue per VIN
        self._runner: web.AppRunner | None = None
        self.failure: str | None = None
        self.failure_paths = ""
        self.seen = 0  # every request that reached the server, answered or not
        self.slow_secs = SLOW_SECS  # the `slow` failure mode's delay
        self._release = asyncio.Event()
        # Each car's infotainment verifier (own key pair); pair client keys with `.pair()`.
        self.signed = {c.vin: SignedCar(c.vin) for c in self.cars}
        self.signed_requests = 0  # signed_command requests that reached a car's verifier

    # --- test hooks ------------------------------------------------------------------------

    def inject(
        self,
        status: int,
        count: int = 1,
        *,
        retry_after: float | None = None,
        paths: str = "",
    ) -> None:
        """Answer the next `count` Fleet requests whose path contains `paths` with `status`.

        Only requests that pass the proxy's local checks are affected (a fault comes from
        Fleet). A 429 always carries Retry-After (`retry_after`, default 1 s).
        """
        if not 400 <= status <= 599:
            raise ValueError("inject a 4xx or 5xx status")
        if count < 1:
            raise ValueError("count must be at least 1")
        if status == 429 and retry_after is None:
            retry_after = 1.0
        self._injections.append(_Injection(status, count, retry_after, paths))

    def fail(self, mode: str | None, *, paths: str = "") -> None:
        """Answer every Fleet request with failure `mode` (one of FAILURE_MODES); None heals.

        `hang` never answers (until healed or stopped) and applies nothing; `echo401` echoes
        the Authorization header in a 401 body, as a careless proxy might; `slow` answers
        normally after `slow_secs` (a command reaches the car then, whether or not the client
        still waits, like a proxy stuck behind a slow Fleet).
        """
        if mode is not None and mode not in FAILURE_MODES:
            raise ValueError(f"unknown failure mode {mode!r} (use one of {FAILURE_MODES})")
        self.failure = mode
        self.failure_paths = paths  # only requests whose path contains this fail
        if mode is None:
            self._release.set()
            self._release = asyncio.Event()

    async def _slow(self, request: web.Request) -> web.Response:
        await request.read()  # kept by aiohttp: the command is there after a hang-up too
        await asyncio.sleep(self.slow_secs)
        return await self._dispatch(request, self.clock())

    async def _failure_reply(self, request: web.Request, mode: str) -> web.Response:
        if mode == "hang":
            await self._release.wait()
            return _json(503, envelope(None, "upstream unavailable"))
        if mode in ("404", "412", "500"):
            status = int(mode)
            return _json(status, envelope(None, http.HTTPStatus(status).phrase.lower()))
        if mode == "garbage":
            return web.Response(body=b"\x00\xff\xfe garbage \x81", content_type="application/json")
        if mode == "html":
            return web.Response(
                text="<html><body>502 Bad Gateway</body></html>", content_type="text/html"
            )
        if mode == "truncated":
            return web.Response(text='{"response": {"result": tr', content_type="application/json")
        header = request.headers.get("Authorization", "")
        return _json(401, envelope(None, f"invalid bearer token: {header}"))

    async def wait_until(
        self,
        predicate: Callable[[], bool],
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for failures: generous (loaded CI)
    ) -> None:
        """Wait until `predicate()` holds, re-checked after every request; TimeoutError if not."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def wait_for_command(
        self,
        name: str | None = None,
        timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for failures: generous (loaded CI)
        *,
        since: int = 0,
    ) -> tuple[float, str, dict[str, Any]]:
        """The first command (named `name`, if given) at index >= `since` in `commands`.

        Returns at once if it already arrived, so there is no race with the sender; pass
        `since=len(proxy.commands)` to wait for a new one.
        """

        def found() -> tuple[float, str, dict[str, Any]] | None:
            for entry in self.commands[since:]:
                if name is None or entry[1] == name:
                    return entry
            return None

        await self.wait_until(lambda: found() is not None, timeout)
        entry = found()
        assert entry is not None  # noqa: S101 - wait_until guaranteed it
        return entry

    def commands_named(self, name: str) -> list[tuple[float, str, dict[str, Any]]]:
        """Every command called `name` received so far."""
        return [entry for entry in self.commands if entry[1] == name]

    def commands_for(self, vin: str) -> list[tuple[float, str, dict[str, Any]]]:
        """Every command sent to `vin` so far (several cars behind one proxy)."""
        return [e for e, v in zip(self.commands, self.command_vins, strict=True) if v == vin]

    def car_for(self, id_or_vin: str) -> CarModel | None:
        """The car with this VIN or numeric id, if the account has it."""
        for car in self.cars:
            if id_or_vin in (car.vin, str(car.numeric_id)):
                return car
        return None

    # --- server lifecycle ------------------------------------------------------------------

    def app(self) -> web.Application:
        """The aiohttp application (one catch-all route: the proxy routes by path segments)."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None
    ) -> str:
        """Serve on `host:port` (0 = any free port); returns the base URL."""
        if self._runner is not None:
            raise RuntimeError("SimulatedProxy is already started")
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ssl)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_port = runner.addresses[0][1]
        scheme = "https" if ssl is not None else "http"
        _LOGGER.info("simulated tesla-http-proxy on %s://%s:%s", scheme, host, bound_port)
        return f"{scheme}://{host}:{bound_port}"

    async def stop(self) -> None:
        """Stop serving (idempotent)."""
        self._release.set()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # --- request handling ------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        now = self.clock()
        self.seen += 1
        try:
            path = request.path
            failing = (
                self.failure is not None and path.startswith("/api/") and self.failure_paths in path
            )
            if failing and self.failure == "slow":
                # Shielded: the car gets the command even if the client gave up meanwhile.
                response = await asyncio.shield(self._slow(request))
            elif failing and self.failure is not None:
                response = await self._failure_reply(request, self.failure)
            else:
                response = await self._dispatch(request, now)
        except Exception:  # a simulator bug must show up as a 500, not a dropped connection
            _LOGGER.exception("simulated proxy failed on %s %s", request.method, request.path)
            response = _json(500, envelope(None, "internal error in simulator"))
        self.requests.append((now, request.method, request.path, response.status))
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _dispatch(self, request: web.Request, now: float) -> web.Response:
        path = request.path
        if path == "/health":
            if request.method != "GET":
                return _json(405, envelope(None, "method not allowed"))
            return web.Response(text="OK")
        parts = path.strip("/").split("/")
        if parts[:3] != ["api", "1", "vehicles"]:
            return _json(404, envelope(None, "not_found", "no such endpoint"))

        auth = self._check_auth(request)
        if auth is not None:
            return auth

        rest = parts[3:]
        if len(rest) == 3 and rest[1] == "command":
            return await self._command(request, rest[0], rest[2], now)
        if not rest:
            return self._fleet(request, "GET", "data", lambda: self._list(now))
        if len(rest) == 1:
            return self._fleet(request, "GET", "data", lambda: self._vehicle(rest[0], now))
        if len(rest) == 2 and rest[1] == "vehicle_data":
            return self._fleet(
                request, "GET", "data", lambda: self._vehicle_data(request, rest[0], now)
            )
        if len(rest) == 2 and rest[1] == "signed_command":
            return await self._signed_command(request, rest[0], now)
        if len(rest) == 2 and rest[1] == "wake_up":
            return self._fleet(request, "POST", "wake", lambda: self._wake(rest[0], now))
        return _json(404, envelope(None, "not_found", "no such endpoint"))

    def _check_auth(self, request: web.Request) -> web.Response | None:
        """The proxy's header checks (403, local), then Fleet's token check (401)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _json(403, envelope(None, NO_TOKEN))
        segments = token.split(".")
        if len(segments) != 3 or not all(segments):
            return _json(403, envelope(None, MALFORMED_TOKEN))
        if self.token_validator is not None and not self.token_validator(token):
            self.expired_token_requests += 1
            return _json(401, envelope(None, TOKEN_EXPIRED))
        return None

    def _injected(self, path: str) -> web.Response | None:
        """Consume one matching injected fault, if any."""
        for injection in self._injections:
            if injection.paths in path:
                injection.remaining -= 1
                if injection.remaining <= 0:
                    self._injections.remove(injection)
                return self._fault(injection)
        return None

    def _fault(self, injection: _Injection) -> web.Response:
        status = injection.status
        headers: dict[str, str] = {}
        if injection.retry_after is not None:
            headers["Retry-After"] = _format_seconds(injection.retry_after)
        if status == 408:
            return _json(*unavailable_reply(408))
        if status == 429:
            reset = str(math.ceil(injection.retry_after or 1.0))
            headers.update({"RateLimit-Limit": "60", "RateLimit-Remaining": "0"})
            headers["RateLimit-Reset"] = reset
            return _json(429, envelope(None, "rate limit exceeded", "Too Many Requests"), headers)
        phrase = http.HTTPStatus(status).phrase.lower()
        return _json(status, envelope(None, phrase), headers)

    def _fleet(
        self,
        request: web.Request,
        method: str,
        category: str,
        answer: Callable[[], tuple[int, dict[str, Any]]],
    ) -> web.Response:
        """A request the proxy forwards to Fleet unchanged: injected faults, then billing."""
        if request.method != method:
            return _json(405, envelope(None, "method not allowed"))
        response = self._injected(request.path)
        if response is None:
            status, body = answer()
            response = _json(status, body)
        self.billing.record(category, response.status)
        return response

    def _list(self, now: float) -> tuple[int, dict[str, Any]]:
        for car in self.cars:
            car.advance(now)
        body = envelope([car.vehicle_json() for car in self.cars])
        body["pagination"] = {
            "previous": None,
            "next": None,
            "current": 1,
            "per_page": 100,
            "count": len(self.cars),
            "pages": 1,
        }
        body["count"] = len(self.cars)
        return 200, body

    def _not_found(self) -> tuple[int, dict[str, Any]]:
        return 404, envelope(None, "not_found", "vehicle not found")

    def _vehicle(self, id_or_vin: str, now: float) -> tuple[int, dict[str, Any]]:
        """Vehicle state: answers for a sleeping car too and never wakes it."""
        car = self.car_for(id_or_vin)
        if car is None:
            return self._not_found()
        car.advance(now)
        return 200, envelope(car.vehicle_json(), None)

    def _vehicle_data(
        self, request: web.Request, id_or_vin: str, now: float
    ) -> tuple[int, dict[str, Any]]:
        """charge_state for an online car; 408 (billed, no wake) for a sleeping one."""
        car = self.car_for(id_or_vin)
        if car is None:
            return self._not_found()
        car.touch(now)
        if car.state != "online":
            return unavailable_reply(408)
        wanted = request.query.get("endpoints", "").split(";")
        response = car.vehicle_json()
        if "charge_state" in wanted:
            charge = car.charge_state_json()
            charge["timestamp"] = int(time.time() * 1000)  # wall-clock ms, as Tesla sends
            response["charge_state"] = charge
        return 200, envelope(response, None)

    def _wake(self, id_or_vin: str, now: float) -> tuple[int, dict[str, Any]]:
        car = self.car_for(id_or_vin)
        if car is None:
            return self._not_found()
        _LOGGER.warning("simulated car received an API wake_up (billed as a wake)")
        car.wake(now)
        return 200, envelope(car.vehicle_json(), None)

    async def _command(self, request: web.Request, vin: str, name: str, now: float) -> web.Response:
        """A signed command: local VIN/method/parameter checks, then the car itself."""
        if len(vin) != 17:
            return _json(404, envelope(None, VIN_EXPECTED))
        if request.method != "POST":
            return _json(405, envelope(None, "method not allowed"))
        raw = await request.read()
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return _json(400, envelope({"result": False, "reason": "invalid JSON body"}))
        if not isinstance(body, dict):
            return _json(400, envelope({"result": False, "reason": "invalid JSON body"}))
        self.commands.append((now, name, body))
        self.command_vins.append(vin)
        invalid = validate_command(name, body)
        if invalid is not None:
            return _json(*invalid)
        category = "wake" if name == "wake_up" else "command"
        car = self.car_for(vin) if len(vin) == 17 else None
        if car is None or vin != car.vin:
            unknown = self._injected(request.path) or _json(*self._not_found())
            self.billing.record(category, unknown.status)
            return unknown
        async with self._command_locks[car.vin]:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            response = self._injected(request.path)
            if response is None:
                status, reply = car.command(name, body, self.clock())
                response = _json(status, reply)
        self.billing.record(category, response.status)
        return response

    async def _signed_command(self, request: web.Request, vin: str, now: float) -> web.Response:
        """Fleet's signed_command: the car verifies the message, then executes the command."""
        if request.method != "POST":
            return _json(405, envelope(None, "method not allowed"))
        car = self.car_for(vin) if len(vin) == 17 else None
        if car is None or vin != car.vin:
            response = self._injected(request.path) or _json(*self._not_found())
            self.billing.record("command", response.status)
            return response
        try:
            body = json.loads(await request.read())
            raw = base64.b64decode(body["routable_message"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error):
            response = _json(400, envelope(None, "invalid_command", "routable_message missing"))
            self.billing.record("command", response.status)
            return response
        async with self._command_locks[car.vin]:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            response = self._injected(request.path) or self._verify_and_run(car, raw)
        self.billing.record("command", response.status)
        return response

    def _verify_and_run(self, car: CarModel, raw: bytes) -> web.Response:
        now = self.clock()
        car.advance(now)
        if car.state != "online":
            return _json(*unavailable_reply(500))  # Fleet cannot reach a sleeping car
        self.signed_requests += 1
        signed = self.signed[car.vin]
        verdict = signed.handle(raw)
        reply = verdict.reply
        if verdict.action is not None:
            name, body = verdict.action.name, verdict.action.body
            self.commands.append((now, name, body))
            self.command_vins.append(car.vin)
            status, answer = car.command(name, body, now)
            if status >= 500:
                return _json(status, answer)  # e.g. "vehicle unavailable" while charging
            result = answer.get("response") or {}
            if result.get("result") is True:
                outcome = CarResponse(True)
            else:
                reason = str(result.get("reason") or answer.get("error") or "unknown")
                outcome = CarResponse(False, reason.removeprefix("car could not execute command: "))
            reply = signed.answer(verdict, outcome)
        encoded = base64.b64encode(reply.encode()).decode("ascii")
        return _json(200, {"response": encoded})
