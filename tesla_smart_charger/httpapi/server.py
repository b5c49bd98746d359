"""The aiohttp API: /overload (Shelly URL actions, webhooks), /status, /config, /health.

Handlers never block and never talk to the car: /overload only queues an event and answers 202.
Every error is JSON; a malformed request is a 4xx, never a 500. There are no CORS headers, so a
random web page cannot read our state, and with `apiToken` set nothing changes state without it.
Without `apiToken`, a browser request from another site (a web page's <img src=/overload>) is
still refused: browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`), while a
Shelly URL action or curl sends neither header.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from tesla_smart_charger import __version__
from tesla_smart_charger.commands import DriverControls

_LOG = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Paths that change state even on GET (Shelly URL actions can only GET).
STATE_CHANGING_PATHS = frozenset({"/overload"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class ApiContext:
    """What the handlers read. The daemon fills it; tests can fill it with fakes."""

    overload: Callable[[str], bool]  # queue an Overload; True if newly queued
    status: Callable[[], dict[str, Any]]
    config: Callable[[], dict[str, Any]]  # already redacted
    health: Callable[[], list[str]]  # problems; empty = healthy
    # Conditions shown on /health that leave the breaker protected (no 503).
    warnings: Callable[[], list[str]] = list
    api_token: str | None = None
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    controls: DriverControls | None = None  # POST /vehicles/{vin}/limit


CTX: web.AppKey[ApiContext] = web.AppKey("ctx", ApiContext)
# Connections whose request a handler is working on (an /events stream, say): never evicted.
BUSY: web.AppKey[set[object]] = web.AppKey("busy", set)

# Connection hygiene (issue 10): a home API needs a handful of connections; 1,100 idle ones
# must neither exhaust file descriptors nor delay a cut.
MAX_CONNECTIONS = 256
KEEPALIVE_SECS = 15.0  # also the time a new connection gets to send its request headers
LISTEN_BACKLOG = 128


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
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    parts = urlsplit(origin.strip())
    if origin.strip().lower() == "null" or not parts.netloc:
        return "Origin: null"
    if parts.netloc.lower() != request.host.lower():
        return "Origin is another site"
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
    text = await request.text() if request.can_read_body else ""
    if not text.strip():
        return json_error(400, required)
    try:
        body = json.loads(text)
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
    MQTT command (`commands.parse_driver_limit`).
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


async def status(request: web.Request) -> web.Response:
    """The daemon's state: stable top-level names that tools poll."""
    return web.json_response(request.app[CTX].status(), dumps=_dumps)


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
        middlewares=[mark_busy, errors_as_json, refuse_cross_site], client_max_size=64 * 1024
    )
    app[CTX] = ctx
    app[BUSY] = set()
    app.router.add_route("GET", "/overload", overload)
    app.router.add_route("POST", "/overload", overload)
    app.router.add_post("/vehicles/{vin}/limit", vehicle_limit)
    app.router.add_post("/vehicles/{vin}/mode", vehicle_mode)
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
    the newcomer reset.
    """

    def __init__(self, server: web.Server, busy: set[object], limit: int) -> None:
        self._server = server
        self._busy = busy
        self.limit = limit
        self.evicted = 0
        self.refused = 0
        self._closing: set[object] = set()

    @property
    def open_connections(self) -> int:
        """API connections open right now."""
        return len(self._server.connections)

    def __call__(self) -> asyncio.BaseProtocol:
        connections = self._server.connections
        if len(connections) >= self.limit:
            self._closing.intersection_update(connections)
            victim = next(
                (c for c in connections if c not in self._busy and c not in self._closing), None
            )
            if victim is None:
                self.refused += 1
                return _Refuse()
            self._closing.add(victim)
            victim.force_close()
            self.evicted += 1
        return self._server()


async def listen(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    max_connections: int = MAX_CONNECTIONS,
    backlog: int = LISTEN_BACKLOG,
) -> tuple[asyncio.Server, ConnectionLimiter]:
    """Listen on host:port through a ConnectionLimiter (after `runner.setup()`).

    Close the returned server before `runner.cleanup()`, which closes the connections.
    """
    server = runner.server
    if server is None:
        raise RuntimeError("call runner.setup() first")
    limiter = ConnectionLimiter(server, runner.app[BUSY], max_connections)
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
