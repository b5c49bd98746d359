"""The aiohttp API: /overload (Shelly URL actions, webhooks), /status, /config, /health.

Handlers never block and never talk to the car: /overload only queues an event and answers 202.
Every error is JSON; a malformed request is a 4xx, never a 500. There are no CORS headers, so a
random web page cannot read our state, and with `apiToken` set nothing changes state without it.
Without `apiToken`, a browser request from another site (a web page's <img src=/overload>) is
still refused: browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`), while a
Shelly URL action or curl sends neither header. A page whose name is re-pointed at the daemon
(DNS rebinding) is "same origin" to the browser; only its Host header gives it away, so the API
answers only to its own names and addresses (`HostPolicy`).

Held connections cannot lock the controls out: request bodies have a read deadline, and /events
streams and body-carrying requests have small caps (per client and in total), so the plain GETs
a Shelly or a monitor sends always find room.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tesla_smart_charger import __version__
from tesla_smart_charger.runtime.driver import DriverControls
from tesla_smart_charger.runtime.status import DaemonStatus

if TYPE_CHECKING:
    from tesla_smart_charger.runtime.grid_limit import GridLimitWatch

_LOG = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths that change state even on GET (Shelly URL actions can only GET).
STATE_CHANGING_PATHS = frozenset({"/overload"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Long-lived responses: each holds a connection for as long as the client likes.
STREAM_PATHS = frozenset({"/events"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})


def _host_name(host: str) -> str:
    """The name in a Host header, lower case, without port, brackets or trailing dot."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        name = host.split(":", 1)[0]
    else:
        name = host  # a bare name, or an unbracketed IPv6 literal
    return name.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class HostPolicy:
    """Which Host headers the API answers to (DNS rebinding sends the attacker's name).

    Bound to every address (0.0.0.0 or ::), any IP literal is ours: a Shelly calls the LAN
    address, and a rebinding attack always uses a name. Otherwise only the bound address.
    """

    names: frozenset[str]
    any_ip: bool = False

    @classmethod
    def for_bind(cls, bind: str, allowed: tuple[str, ...] | list[str] = ()) -> HostPolicy:
        """The policy for a server listening on `bind`, plus the names the owner listed."""
        names = set(LOOPBACK_NAMES) | {_host_name(n) for n in allowed if n.strip()}
        wildcard = bind.strip() in WILDCARD_BINDS
        if not wildcard:
            names.add(_host_name(bind))
        return cls(frozenset(names), any_ip=wildcard)

    def allows(self, host: str | None) -> bool:
        """True for our own names; a request without Host (HTTP/1.0, not a browser) too."""
        if host is None:
            return True
        name = _host_name(host)
        if not name:
            return False
        return name in self.names or (self.any_ip and _is_ip(name))


DEFAULT_HOSTS = HostPolicy.for_bind("127.0.0.1")


@dataclass
class ApiContext:
    """What the handlers read. The daemon fills it; tests can fill it with fakes."""

    overload: Callable[[str], bool]  # queue an Overload; True if newly queued
    status: Callable[[], DaemonStatus]  # what the daemon knows (runtime/status.py)
    config: Callable[[], dict[str, Any]]  # already redacted
    health: Callable[[], list[str]]  # problems; empty = healthy
    # Conditions shown on /health that leave the breaker protected (no 503).
    warnings: Callable[[], list[str]] = list
    api_token: str | None = None
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    controls: DriverControls | None = None  # POST /vehicles/{vin}/limit
    hosts: HostPolicy = DEFAULT_HOSTS
    grid_limit: GridLimitWatch | None = None  # GET/POST /grid-limit


CTX: web.AppKey[ApiContext] = web.AppKey("ctx", ApiContext)
# Connections whose request a handler is working on (an /events stream, say): never evicted.
BUSY: web.AppKey[set[object]] = web.AppKey("busy", set)

# Connection hygiene: a home API needs a handful of connections; 1,100 idle ones
# must neither exhaust file descriptors nor delay a cut.
MAX_CONNECTIONS = 256
KEEPALIVE_SECS = 15.0  # also the time a new connection gets to send its request headers
LISTEN_BACKLOG = 128
# A webhook's body arrives in milliseconds; one trickled byte by byte holds a connection.
BODY_READ_SECS = 5.0
# After refusing a request whose body was not read, wait this long for it before closing, so
# the client can read the refusal instead of a reset.
LINGER_SECS = 2.0
# Connections that may be held at once: an /events stream each (a dashboard tab), a request
# body being received. Far below MAX_CONNECTIONS, so the short GETs (/overload, /health)
# always find room; per client first, so one host cannot take every slot.
STREAMS_PER_CLIENT = 8
STREAMS_TOTAL = 32
BODIES_PER_CLIENT = 8
BODIES_TOTAL = 32
# A client misbehaving (aborting bodies, trickling them) is said once every this long.
SAY_AGAIN_SECS = 600.0

HeldKind = Literal["stream", "body"]


class RequestGate:
    """Counts the held requests (streams, bodies being received) per client and in total."""

    LIMITS: dict[HeldKind, tuple[int, int]] = {  # noqa: RUF012 (read-only table)
        "stream": (STREAMS_PER_CLIENT, STREAMS_TOTAL),
        "body": (BODIES_PER_CLIENT, BODIES_TOTAL),
    }

    def __init__(self) -> None:
        self._held: dict[tuple[HeldKind, str], int] = {}
        self._total: dict[HeldKind, int] = {"stream": 0, "body": 0}
        self._said: dict[str, float] = {}

    def enter(self, kind: HeldKind, client: str) -> int | None:
        """Take a slot, or the HTTP status that refuses it (429: this client; 503: everyone)."""
        per_client, total = self.LIMITS[kind]
        if self._held.get((kind, client), 0) >= per_client:
            return 429
        if self._total[kind] >= total:
            return 503
        self._held[(kind, client)] = self._held.get((kind, client), 0) + 1
        self._total[kind] += 1
        return None

    def leave(self, kind: HeldKind, client: str) -> None:
        """Give the slot back."""
        left = self._held.get((kind, client), 0) - 1
        if left > 0:
            self._held[(kind, client)] = left
        else:
            self._held.pop((kind, client), None)
        self._total[kind] = max(0, self._total[kind] - 1)

    def held(self, kind: HeldKind) -> int:
        """Slots of `kind` taken now."""
        return self._total[kind]

    def say_once(self, condition: str, message: str, now: float) -> None:
        """Log `message` when `condition` starts, then at most once every SAY_AGAIN_SECS."""
        last = self._said.get(condition)
        if last is not None and now - last < SAY_AGAIN_SECS:
            return
        self._said[condition] = now
        _LOG.info("%s (said once every %d minutes)", message, SAY_AGAIN_SECS // 60)


GATE: web.AppKey[RequestGate] = web.AppKey("gate", RequestGate)


def json_error(status: int, message: str) -> web.Response:
    """A JSON error body with the HTTP status."""
    return web.json_response({"error": message, "status": status}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTML errors into JSON, and an unexpected failure into a logged 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(exc.status, exc.reason)
    except ConnectionError:
        # The client went away mid-request (or its connection was closed to make room): the
        # reply goes nowhere, and it is not our failure.
        _LOG.debug("the client of %s %s went away", request.method, request.path)
        return json_error(400, "connection closed")
    except Exception:  # noqa: BLE001 (the last line of defence: a JSON 500, logged)
        _LOG.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal error (see the daemon's log)")


def authorized(request: web.Request) -> bool:
    """True when no apiToken is configured, or the request carries it (?token= or Bearer)."""
    token = request.app[CTX].api_token
    if not token:
        return True
    given = request.query.get("token", "")
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header.removeprefix("Bearer ").strip()
    return hmac.compare_digest(given.encode(), token.encode())


def cross_site(request: web.Request) -> str | None:
    """Why this looks like a browser request from another site, or None.

    `Sec-Fetch-Site` (every current browser) is trusted first; older browsers send `Origin`
    on cross-origin requests, compared with the Host the request was sent to.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site", "").strip().lower()
    if fetch_site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {fetch_site}"
    host = request.headers.get("Host", "").strip().lower()
    origin = request.headers.get("Origin")
    if origin is None:
        # Browsers without Sec-Fetch-Site send no Origin on a plain GET or form; the page's
        # address may still be in Referer.
        referer = urlsplit(request.headers.get("Referer", "").strip())
        if referer.netloc and referer.netloc.lower() != host:
            return "Referer is another site"
        return None
    parts = urlsplit(origin.strip())
    if origin.strip().lower() == "null" or not parts.netloc:
        return "Origin: null"
    if parts.netloc.lower() != host:
        return "Origin is another site"
    return None


@web.middleware
async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer only to our own names: a rebound DNS name reaches us with the attacker's Host."""
    host = request.headers.get("Host")
    if request.app[CTX].hosts.allows(host):
        return await handler(request)
    name = _host_name(host or "")[:100]
    request.app[GATE].say_once(
        "foreign host",
        f"HTTP API: refused a request for the name {name!r}, which is not this daemon's "
        "(a web page may be using DNS rebinding); if you reach the daemon by that name, add it "
        "to apiAllowedHosts",
        time.monotonic(),
    )
    return json_error(
        421,
        f"Host {name!r} is not a name of this daemon (a web page may be using DNS rebinding); "
        "if you reach the daemon by this name, add it to apiAllowedHosts",
    )


def _held_kind(request: web.Request) -> HeldKind | None:
    if request.path in STREAM_PATHS:
        return "stream"
    if request.body_exists:
        return "body"
    return None


def _closing(response: web.Response) -> web.Response:
    response.force_close()
    return response


@web.middleware
async def admit_held(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Streams and request bodies take a slot (per client, in total); a body is received here,
    within BODY_READ_SECS, before any handler sees the request."""
    kind = _held_kind(request)
    if kind is None:
        return await handler(request)
    gate = request.app[GATE]
    client = request.remote or "unknown"
    refused = gate.enter(kind, client)
    if refused is not None:
        what = "event streams" if kind == "stream" else "request bodies being sent"
        whose = f"this client ({client})" if refused == 429 else "all clients together"
        gate.say_once(
            f"{kind} cap {refused}",
            f"HTTP API: {whose} already hold the most {what} allowed; more are refused",
            time.monotonic(),
        )
        response = json_error(refused, f"too many {what} open by {whose}; try again later")
        response.headers["Retry-After"] = "5"
        return _closing(response)
    try:
        if kind == "stream":
            return await handler(request)
        failed = await _receive_body(request, gate, client)
    finally:
        gate.leave(kind, client)
    if failed is not None:
        return failed
    return await handler(request)


async def _receive_body(
    request: web.Request, gate: RequestGate, client: str
) -> web.Response | None:
    """Read the whole body into the request (handlers then read it from memory), or the reply
    that refuses it. Too large is aiohttp's 413, raised through."""
    try:
        async with asyncio.timeout(BODY_READ_SECS):
            await request.read()
    except TimeoutError:
        gate.say_once(
            "slow body",
            f"HTTP API: a client ({client}) took more than {BODY_READ_SECS:g} s to send a "
            "request body; such connections are closed",
            time.monotonic(),
        )
        return _closing(json_error(408, f"request body not received within {BODY_READ_SECS:g} s"))
    except (ConnectionError, RuntimeError) as err:
        if isinstance(err, RuntimeError) and request.protocol.connected:
            raise  # not the "Connection closed." of a client gone before its body was read
        gate.say_once(
            "aborted body",
            f"HTTP API: a client ({client}) closed its connection before sending the whole "
            "request body; nothing was done for it",
            time.monotonic(),
        )
        return _closing(json_error(400, "request body: the connection closed before it ended"))
    except HttpProcessingError as err:
        return _closing(json_error(400, f"request body: malformed ({err.message})"))
    return None


@web.middleware
async def mark_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Remember which connections are mid-request, so only idle ones are ever evicted."""
    busy = request.app[BUSY]
    protocol = request.protocol
    busy.add(protocol)
    try:
        return await handler(request)
    finally:
        busy.discard(protocol)


@web.middleware
async def refuse_cross_site(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Without apiToken, a web page must not change state through the owner's browser."""
    changes_state = request.method not in SAFE_METHODS or request.path in STATE_CHANGING_PATHS
    if changes_state and not request.app[CTX].api_token:
        reason = cross_site(request)
        if reason is not None:
            _LOG.debug("refused a cross-site %s %s (%s)", request.method, request.path, reason)
            return json_error(
                403,
                f"cross-site request refused ({reason}): a web page may not change state; "
                "set apiToken to allow other callers",
            )
    return await handler(request)


async def overload(request: web.Request) -> web.Response:
    """Queue an overload; Shelly calls with GET and no body, webhooks may POST anything."""
    if not authorized(request):
        return json_error(401, "missing or wrong token (use ?token= or Authorization: Bearer)")
    if request.method == "POST" and request.can_read_body:
        await request.read()  # drained and ignored: configuration is in the URL
    queued = request.app[CTX].overload(request.query.get("source", "http"))
    return web.json_response({"accepted": True, "queued": queued}, status=202)


async def _vehicle_value(
    request: web.Request, field: str, example: str, query: str
) -> tuple[DriverControls, str, object] | web.Response:
    """Token, car and the value of `field` for a per-car POST, or the error reply.

    The value comes from `?field=` for simple clients, else from a JSON body like `example`.
    """
    if not authorized(request):
        return json_error(401, "missing or wrong token (use ?token= or Authorization: Bearer)")
    controls = request.app[CTX].controls
    vin = request.match_info["vin"]
    car = controls.known(vin) if controls is not None else None
    if controls is None or car is None:
        return json_error(404, f"unknown vehicle {vin[:40]!r}: this daemon charges another car")
    raw: object = request.query.get(field)
    if raw is not None:
        return controls, car, raw
    required = f"{field}: required ({query} or a JSON body {example})"
    text = await request.text() if request.body_exists else ""
    if not text.strip():
        return json_error(400, required)
    try:
        body = json.loads(text)
    except RecursionError:
        return json_error(400, f"body: JSON nested too deeply (send {example} or use {query})")
    except ValueError:
        return json_error(400, f"body: not JSON (send {example} or use {query})")
    if not isinstance(body, dict):
        return json_error(400, f"body: expected a JSON object like {example}")
    if field not in body:
        return json_error(400, required)
    return controls, car, body[field]


async def vehicle_limit(request: web.Request) -> web.Response:
    """Set the car's amps ceiling, like the driver in the app (and Home Assistant's number).

    `?amps=N` for simple clients, else a JSON body `{"amps": N}`; validated exactly like the
    MQTT command (`runtime.driver.parse_driver_limit`).
    """
    got = await _vehicle_value(request, "amps", '{"amps": N}', "?amps=N")
    if isinstance(got, web.Response):
        return got
    controls, car, raw = got
    try:
        amps = controls.parse(raw)
    except ValueError as err:
        return json_error(400, str(err))
    refused = controls.set_driver_limit(car, amps)
    if refused is not None:
        return json_error(400, refused)
    _LOG.info("API set the amps ceiling of %s to %d A", car, amps)
    return web.json_response({"accepted": True, "vin": car, "amps": amps}, status=202)


async def vehicle_mode(request: web.Request) -> web.Response:
    """Choose how the car charges: `{"mode": "solar"}` or `?mode=` (fast, solar, minsolar)."""
    got = await _vehicle_value(request, "mode", '{"mode": "solar"}', "?mode=solar")
    if isinstance(got, web.Response):
        return got
    controls, car, raw = got
    refused = controls.set_mode(car, raw)
    if refused is not None:
        return json_error(400, refused)
    mode = str(raw).strip().lower()
    _LOG.info("API set the charging mode of %s to %s", car, mode)
    return web.json_response({"accepted": True, "vin": car, "mode": mode})


async def grid_limit_get(request: web.Request) -> web.Response:
    """The grid operator's limit: on or off, why, since when, and what each source says."""
    watch = request.app[CTX].grid_limit
    if watch is None:
        return json_error(404, "the grid limit is not available in this daemon")
    return web.json_response(watch.status().model_dump(mode="json"), dumps=_dumps)


async def grid_limit_post(request: web.Request) -> web.Response:
    """Switch the API's own word on the limit: `{"active": true}` or `?active=true`.

    The limit stays on while any other source (the Shelly input, the MQTT topic) says so.
    """
    if not authorized(request):
        return json_error(401, "missing or wrong token (use ?token= or Authorization: Bearer)")
    watch = request.app[CTX].grid_limit
    if watch is None:
        return json_error(404, "the grid limit is not available in this daemon")
    example = 'a JSON body {"active": true} or ?active=true'
    raw: object = request.query.get("active")
    if raw is None:
        data = await request.read() if request.body_exists else b""
        try:
            body = json.loads(data) if data.strip() else None
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return json_error(400, f"body: not JSON (send {example})")
        if not isinstance(body, dict) or "active" not in body:
            return json_error(400, f"active: required ({example})")
        raw = body["active"]
    if isinstance(raw, str):
        raw = {"true": True, "false": False, "1": True, "0": False}.get(raw.strip().lower(), raw)
    if not isinstance(raw, bool):
        return json_error(400, f"active: expected true or false, got {str(raw)[:40]!r}")
    _LOG.info("API set the grid limit %s", "on" if raw else "off")
    watch.set_api(raw)
    return web.json_response(
        {"accepted": True, **watch.status().model_dump(mode="json")}, dumps=_dumps
    )


async def status(request: web.Request) -> web.Response:
    """The daemon's state: stable top-level names that tools poll."""
    return web.json_response(request.app[CTX].status().as_json(), dumps=_dumps)


async def config(request: web.Request) -> web.Response:
    """The effective configuration, secrets redacted."""
    return web.json_response(request.app[CTX].config(), dumps=_dumps)


async def health(request: web.Request) -> web.Response:
    """200 when everything runs, else 503 with the reasons; `warnings` never make it 503."""
    problems = request.app[CTX].health()
    warnings = request.app[CTX].warnings()
    extra = {"warnings": warnings} if warnings else {}
    if problems:
        body = {"status": "unhealthy", "problems": problems, **extra}
        return web.json_response(body, status=503)
    return web.json_response({"status": "ok", "version": __version__, **extra})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def build_app(ctx: ApiContext) -> web.Application:
    """The aiohttp application with every route."""
    app = web.Application(
        middlewares=[check_host, mark_busy, errors_as_json, refuse_cross_site, admit_held],
        client_max_size=64 * 1024,
    )
    app[CTX] = ctx
    app[GATE] = RequestGate()
    app[BUSY] = set()
    app.router.add_route("GET", "/overload", overload)
    app.router.add_route("POST", "/overload", overload)
    app.router.add_post("/vehicles/{vin}/limit", vehicle_limit)
    app.router.add_post("/vehicles/{vin}/mode", vehicle_mode)
    app.router.add_get("/grid-limit", grid_limit_get)
    app.router.add_post("/grid-limit", grid_limit_post)
    app.router.add_get("/status", status)
    app.router.add_get("/config", config)
    app.router.add_get("/health", health)
    app.router.add_routes(ctx.extra_routes)
    return app


# --- connections and file descriptors ------------------------------------------------------


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (many distributions start at 1024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as err:
            _LOG.debug("cannot raise the open-file limit from %d to %d: %s", soft, target, err)
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_cap(fd_soft_limit: int, wanted: int = MAX_CONNECTIONS) -> int:
    """API connections allowed: `wanted`, but never more than half the descriptors left over."""
    if fd_soft_limit == resource.RLIM_INFINITY:
        return wanted
    return max(8, min(wanted, (fd_soft_limit - 64) // 2))


class _Refuse(asyncio.Protocol):
    """Every connection is mid-request and the cap is reached: reset, freeing the descriptor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.abort()
        else:
            transport.close()


class ConnectionLimiter:
    """Protocol factory in front of aiohttp's server: at most `limit` open API connections.

    At the cap, a new connection evicts the oldest idle one (connected but not mid-request),
    so a pile of idle or half-open connections cannot lock out a Shelly's /overload, nor eat
    the descriptors the meter and the car link need. Only when every connection is busy is
    the newcomer reset. One client address may hold at most `per_client` of them: past that,
    its own oldest idle connection (or, all busy, the newcomer) is closed, so one host on the
    LAN cannot take every place.
    """

    def __init__(
        self, server: web.Server, busy: set[object], limit: int, per_client: int | None = None
    ) -> None:
        self._server = server
        self._busy = busy
        self.limit = limit
        self.per_client = per_client if per_client is not None else max(8, limit // 2)
        self.evicted = 0
        self.refused = 0
        self.client_capped = 0

    @property
    def open_connections(self) -> int:
        """API connections open right now."""
        return len(self._server.connections)

    def __call__(self) -> asyncio.BaseProtocol:
        # A closed connection stays listed until its handler's task ends (aiohttp lingers up
        # to LINGER_SECS for an unread body): it holds no descriptor, so it does not count.
        live = [c for c in self._server.connections if c.transport is not None]
        if len(live) >= self.limit:
            victim = next((c for c in live if c not in self._busy), None)
            if victim is None:
                self.refused += 1
                return _Refuse()
            victim.force_close()
            self.evicted += 1
        handler = self._server()
        # The peer is known once connection_made has run, from a callback the transport
        # schedules after this factory returns: check one callback later.
        loop = asyncio.get_running_loop()
        loop.call_soon(loop.call_soon, self._cap_client, handler)
        return handler

    def _cap_client(self, newcomer: web.RequestHandler) -> None:
        peer = _peer(newcomer)
        if peer is None:
            return
        same = [c for c in self._server.connections if _peer(c) == peer]
        if len(same) <= self.per_client:
            return
        victim = next((c for c in same if c is not newcomer and c not in self._busy), newcomer)
        victim.force_close()
        self.client_capped += 1


def _peer(handler: web.RequestHandler) -> str | None:
    """The client address of an open connection (None once closed)."""
    transport = handler.transport
    if transport is None:
        return None
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    per_client: int | None = None,
    backlog: int = LISTEN_BACKLOG,
) -> tuple[asyncio.Server, ConnectionLimiter]:
    """Listen on host:port through a ConnectionLimiter (after `runner.setup()`).

    Close the returned server before `runner.cleanup()`, which closes the connections.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() first")
    limiter = ConnectionLimiter(server, runner.app[BUSY], max_connections, per_client)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(limiter, host, port, backlog=backlog, reuse_address=True)
    return listener, limiter


def make_runner(app: web.Application, *, keepalive_secs: float = KEEPALIVE_SECS) -> web.AppRunner:
    """The AppRunner with our limits: idle and slow connections close after `keepalive_secs`."""
    quiet_server_logs()
    return web.AppRunner(
        app,
        access_log=logging.getLogger("aiohttp.access"),
        shutdown_timeout=1.0,
        keepalive_timeout=keepalive_secs,
        max_line_size=8190,
        max_field_size=8190,
        max_headers=64,
        lingering_time=LINGER_SECS,
    )


class _MalformedRequestsToDebug(logging.Filter):
    """aiohttp logs ERROR plus a traceback for each malformed request; that is the client's
    problem, not ours, and anyone could flood the log with it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


class _OutOfDescriptorsOnce(logging.Filter):
    """asyncio logs a traceback for every failed accept() once descriptors run out (thousands
    a second); say it once every 10 minutes, in words, without the traceback."""

    PREFIX = "socket.accept() out of system resource"

    def __init__(self, every_secs: float = 600.0) -> None:
        super().__init__()
        self._every = every_secs
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not (isinstance(record.msg, str) and record.msg.startswith(self.PREFIX)):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self._every:
            return False
        self._last = now
        record.msg = (
            "the HTTP API is out of file descriptors and cannot accept connections for now "
            "(too many open connections; raise LimitNOFILE or find what holds them)"
        )
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def quiet_server_logs() -> None:
    """Install the two filters above once per process."""
    for name, flt in (
        ("aiohttp.server", _MalformedRequestsToDebug),
        ("asyncio", _OutOfDescriptorsOnce),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, flt) for f in logger.filters):
            logger.addFilter(flt())
