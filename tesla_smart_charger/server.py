"""The aiohttp API: /overload (Shelly URL actions, webhooks), /status, /config, /health.

Handlers never block and never talk to the car: /overload only queues an event and answers 202.
Every error is JSON; a malformed request is a 4xx, never a 500. There are no CORS headers, so a
random web page cannot read our state, and with `apiToken` set nothing changes state without it.
Without `apiToken`, a browser request from another site (a web page's <img src=/overload>) is
still refused: browsers say where a request comes from (`Sec-Fetch-Site`, `Origin`), while a
Shelly URL action or curl sends neither header.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from tesla_smart_charger import __version__

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
    api_token: str | None = None
    extra_routes: list[web.RouteDef] = field(default_factory=list)


CTX: web.AppKey[ApiContext] = web.AppKey("ctx", ApiContext)


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


async def status(request: web.Request) -> web.Response:
    """The daemon's state: stable top-level names that tools poll."""
    return web.json_response(request.app[CTX].status(), dumps=_dumps)


async def config(request: web.Request) -> web.Response:
    """The effective configuration, secrets redacted."""
    return web.json_response(request.app[CTX].config(), dumps=_dumps)


async def health(request: web.Request) -> web.Response:
    """200 when everything runs, else 503 with the reasons."""
    problems = request.app[CTX].health()
    if problems:
        return web.json_response({"status": "unhealthy", "problems": problems}, status=503)
    return web.json_response({"status": "ok", "version": __version__})


def _dumps(obj: Any) -> str:
    return json.dumps(obj, default=str)


def build_app(ctx: ApiContext) -> web.Application:
    """The aiohttp application with every route."""
    app = web.Application(
        middlewares=[errors_as_json, refuse_cross_site], client_max_size=64 * 1024
    )
    app[CTX] = ctx
    app.router.add_route("GET", "/overload", overload)
    app.router.add_route("POST", "/overload", overload)
    app.router.add_get("/status", status)
    app.router.add_get("/config", config)
    app.router.add_get("/health", health)
    app.router.add_routes(ctx.extra_routes)
    return app
