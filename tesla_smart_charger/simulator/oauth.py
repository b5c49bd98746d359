"""A simulated Tesla OAuth token endpoint with Tesla's real rotation rules.

`POST /oauth2/v3/token` (form-encoded) supports the three grants the daemon and the setup
commands use. Each refresh token works once; presenting a used or unknown one gets
`401 {"error": "login_required"}`, as Tesla answers when a token "has been cycled out".
Tesla also documents that the most recently used refresh token stays valid for 24 h as a
fallback; that is off by default (strict single use) and enabled with `reuse_grace`.

Access tokens are 3-part JWTs whose payload segment decodes with both URL-safe and standard
unpadded base64 (tesla-http-proxy uses Go's RawStdEncoding), so the simulated proxy and the
real one can read `aud`, `ou_code` and `exp`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

_LOG = logging.getLogger(__name__)

TOKEN_PATH: Final = "/oauth2/v3/token"  # noqa: S105 (a URL path)
FLEET_AUDIENCES: Final = {
    "NA": "https://fleet-api.prd.na.vn.cloud.tesla.com",
    "EU": "https://fleet-api.prd.eu.vn.cloud.tesla.com",
    "CN": "https://fleet-api.prd.cn.vn.cloud.tesla.cn",
}
CODE_TTL_SECS: Final = 600.0
PARTNER_SCOPES: Final = "openid vehicle_device_data vehicle_cmds vehicle_charging_cmds"
USER_SCOPES: Final = [
    "openid",
    "offline_access",
    "vehicle_device_data",
    "vehicle_cmds",
    "vehicle_charging_cmds",
]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    """A fake (unsigned) JWT whose payload segment avoids '-', '_', '+' and '/'.

    Such a segment is identical in the standard and the URL-safe alphabet, so any decoder
    reads it. A `jti` nonce is re-drawn until the encoding is clean (a few tries at most).
    """
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "sim"}).encode())
    while True:
        body = {**claims, "jti": secrets.token_hex(8)}
        payload = _b64url(json.dumps(body, separators=(",", ":")).encode())
        if not any(ch in payload for ch in "-_+/"):
            break
    signature = _b64url(secrets.token_bytes(32))
    return f"{header}.{payload}.{signature}"


@dataclass
class _Grant:
    """What a refresh token or code stands for: whose tokens, for which audience."""

    sub: str
    region: str
    audience: str
    scopes: list[str]


@dataclass
class _Access:
    expires_at: float
    grant: _Grant


class SimulatedOAuth:
    """Tesla's token endpoint on loopback, with counters for tests."""

    def __init__(
        self,
        *,
        access_ttl: float = 28800,
        region: str = "NA",
        clock: Callable[[], float] = time.time,
        client_id: str | None = None,
        client_secret: str | None = None,
        reuse_grace: float = 0.0,
    ) -> None:
        """`client_id`/`client_secret` None accept any non-empty value."""
        self.access_ttl = access_ttl
        self.region = region.upper()
        self.client_id = client_id
        self.client_secret = client_secret
        self.reuse_grace = reuse_grace
        self._clock = clock
        self._refresh: dict[str, _Grant] = {}
        self._used: tuple[str, float, _Grant, str] | None = None  # token, when, grant, its child
        self._consumed_at: dict[str, float] = {}
        self._codes: dict[str, tuple[_Grant, str | None, float]] = {}
        self._access: dict[str, _Access] = {}
        self._fail_next: list[int] = []
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.login_required_count = 0
        self.refresh_count = 0
        self.grace_reuse_count = 0
        self.expired_presented = 0
        self.code_exchange_count = 0
        self.partner_token_count = 0
        self.requests = 0
        # A failure on purpose for the fault tests: "500", "hang", "lost" (the refresh is done
        # but the reply never arrives) or "echo" (the refresh token echoed in `error`).
        self.failure: str | None = None
        self._release = asyncio.Event()

    def __repr__(self) -> str:
        return f"SimulatedOAuth(region={self.region!r}, access_ttl={self.access_ttl:g})"

    # --- helpers for tests and the other simulators ---

    @property
    def token_url(self) -> str:
        """The token endpoint URL once started."""
        return self.base_url + TOKEN_PATH

    def _issue(self, grant: _Grant, *, with_refresh: bool = True) -> dict[str, Any]:
        now = self._clock()
        claims = {
            "iss": "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/nts",
            "sub": grant.sub,
            "aud": [
                grant.audience,
                "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/clientinfo",
            ],
            "scp": grant.scopes,
            "ou_code": grant.region,
            "iat": int(now),
            "exp": int(now + self.access_ttl),
        }
        access = make_jwt(claims)
        self._access[access] = _Access(now + self.access_ttl, grant)
        reply: dict[str, Any] = {
            "access_token": access,
            "expires_in": self.access_ttl,
            "token_type": "Bearer",
        }
        if with_refresh:
            refresh = f"{grant.region}_{secrets.token_hex(32)}"
            self._refresh[refresh] = grant
            reply["refresh_token"] = refresh
            reply["id_token"] = make_jwt({"sub": grant.sub, "aud": "sim", "iat": int(now)})
        return reply

    def _user_grant(self, region: str | None = None, audience: str | None = None) -> _Grant:
        reg = (region or self.region).upper()
        return _Grant(
            sub=secrets.token_hex(8),
            region=reg,
            audience=audience or FLEET_AUDIENCES.get(reg, FLEET_AUDIENCES["NA"]),
            scopes=list(USER_SCOPES),
        )

    def issue_initial(self) -> tuple[str, str]:
        """A fresh (access, refresh) pair, as if the owner had just logged in."""
        reply = self._issue(self._user_grant())
        return reply["access_token"], reply["refresh_token"]

    def issue_code(self, *, redirect_uri: str | None = None, region: str | None = None) -> str:
        """An authorization code (single use, 10 min), as the authorize page would redirect with."""
        reg = (region or self.region).upper()
        code = f"{reg}_{secrets.token_hex(24)}"
        self._codes[code] = (self._user_grant(reg), redirect_uri, self._clock() + CODE_TTL_SECS)
        return code

    def is_valid_access(self, token: str) -> bool:
        """True if `token` was issued here and has not expired (the simulated proxy asks)."""
        entry = self._access.get(token)
        if entry is None:
            return False
        if self._clock() >= entry.expires_at:
            self.expired_presented += 1
            return False
        return True

    def is_valid_refresh(self, token: str) -> bool:
        """True if a refresh grant with `token` would succeed now (does not use it)."""
        return token in self._refresh or self._grace_applies(token)

    def is_live_refresh(self, token: str) -> bool:
        """True if `token` was issued and never used (strict single use, no grace)."""
        return token in self._refresh

    def consumed_at(self, token: str) -> float | None:
        """When `token` was last exchanged for a new pair, if ever."""
        return self._consumed_at.get(token)

    def revoke_all(self) -> None:
        """Every refresh token stops working, as after the owner resets the password."""
        self._refresh.clear()
        self._used = None

    def fail_next(self, status: int, count: int = 1) -> None:
        """Answer the next `count` requests with `status` (e.g. 503) without touching tokens."""
        self._fail_next.extend([status] * count)

    async def wait_refreshes(self, count: int) -> None:
        """Wait until `refresh_count` reaches `count` (wrap in asyncio.timeout)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.refresh_count >= count)

    # --- the endpoint ---

    def _grace_applies(self, token: str) -> bool:
        return (
            self.reuse_grace > 0
            and self._used is not None
            and self._used[0] == token
            and self._clock() - self._used[1] <= self.reuse_grace
        )

    @staticmethod
    def _error(status: int, error: str, description: str) -> web.Response:
        return web.json_response({"error": error, "error_description": description}, status=status)

    def _client_ok(self, form: dict[str, str], *, secret: bool) -> bool:
        cid = form.get("client_id", "")
        if not cid or (self.client_id is not None and cid != self.client_id):
            return False
        if not secret:
            return True
        sec = form.get("client_secret", "")
        return bool(sec) and (self.client_secret is None or sec == self.client_secret)

    def _refresh_grant(self, form: dict[str, str]) -> web.Response:
        token = form.get("refresh_token", "")
        if not self._client_ok(form, secret=False):
            return self._error(401, "invalid_client", "unknown client_id")
        grant = self._refresh.pop(token, None)
        if grant is None and self._grace_applies(token) and self._used is not None:
            # Tesla's fallback: the most recently used token works again; its child dies.
            _, _, grant, child = self._used
            self._refresh.pop(child, None)
            self.grace_reuse_count += 1
        if grant is None:
            self.login_required_count += 1
            _LOG.info("simulated OAuth: refresh token reused or unknown -> login_required")
            return self._error(
                401,
                "login_required",
                "The refresh_token is invalid, expired, or has been cycled out",
            )
        reply = self._issue(grant)
        self._used = (token, self._clock(), grant, reply["refresh_token"])
        self._consumed_at[token] = self._clock()
        self.refresh_count += 1
        return web.json_response(reply)

    def _code_grant(self, form: dict[str, str]) -> web.Response:
        for key in ("client_id", "client_secret", "code", "redirect_uri", "audience"):
            if not form.get(key):
                return self._error(400, "invalid_request", f"missing {key}")
        if not self._client_ok(form, secret=True):
            return self._error(401, "invalid_client", "client authentication failed")
        entry = self._codes.pop(form["code"], None)
        if entry is None:
            return self._error(400, "invalid_grant", "authorization code invalid or used")
        grant, bound_uri, expires_at = entry
        if self._clock() > expires_at:
            return self._error(400, "invalid_grant", "authorization code expired")
        if bound_uri is not None and bound_uri != form["redirect_uri"]:
            return self._error(400, "invalid_grant", "redirect_uri does not match")
        grant.audience = form["audience"]
        self.code_exchange_count += 1
        return web.json_response(self._issue(grant))

    def _client_credentials(self, form: dict[str, str]) -> web.Response:
        if not self._client_ok(form, secret=True):
            return self._error(401, "invalid_client", "client authentication failed")
        audience = form.get("audience") or FLEET_AUDIENCES["NA"]
        scopes = (form.get("scope") or PARTNER_SCOPES).split()
        grant = _Grant(
            sub=f"partner-{form['client_id']}", region=self.region, audience=audience, scopes=scopes
        )
        self.partner_token_count += 1
        return web.json_response(self._issue(grant, with_refresh=False))

    def fail(self, mode: str | None) -> None:
        """Fail every request with `mode` from now on; None heals (and releases hung ones)."""
        if mode not in (None, "500", "hang", "lost", "echo"):
            raise ValueError(f"unknown failure mode {mode!r}")
        self.failure = mode
        if mode is None:
            self._release.set()
            self._release = asyncio.Event()

    async def _token(self, request: web.Request) -> web.Response:
        self.requests += 1
        try:
            if self.failure == "500":
                return self._error(500, "server_error", "injected failure")
            if self.failure == "hang":
                await self._release.wait()
                return self._error(503, "server_error", "was hung")
            if self.failure in ("lost", "echo"):
                posted = await request.post()
                token = str(posted.get("refresh_token", ""))
                if self.failure == "echo":
                    return self._error(400, f"bad token {token}", f"you sent {token}")
                # The grant is carried out, then the connection drops before the reply.
                self._refresh_grant({k: v for k, v in posted.items() if isinstance(v, str)})
                if request.transport is not None:
                    request.transport.abort()
                return self._error(500, "server_error", "never seen")
            if self._fail_next:
                status = self._fail_next.pop(0)
                return self._error(status, "server_error", "injected failure")
            posted = await request.post()
            form = {k: v for k, v in posted.items() if isinstance(v, str)}
            grant_type = form.get("grant_type", "")
            if grant_type == "refresh_token":
                return self._refresh_grant(form)
            if grant_type == "authorization_code":
                return self._code_grant(form)
            if grant_type == "client_credentials":
                return self._client_credentials(form)
            return self._error(400, "unsupported_grant_type", "unsupported grant_type")
        finally:
            async with self._changed:
                self._changed.notify_all()

    def app(self) -> web.Application:
        """The aiohttp application serving the token endpoint."""
        app = web.Application()
        app.router.add_post(TOKEN_PATH, self._token)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 = any free port); returns the base URL."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        addr = runner.addresses[0]
        self.base_url = f"http://{host}:{addr[1]}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving."""
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
