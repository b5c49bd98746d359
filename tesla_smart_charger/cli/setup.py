"""Setup commands: `keygen`, `auth url|exchange|register|refresh` and `doctor`.

They replace the seed README's page of curl and Go commands. Each command prints what it did
and what to do next, never a token or the client secret. Exit codes: 0 done, 1 the remote
side or a check failed, 2 a usage or configuration problem (the message names the key).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import textwrap
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tesla_smart_charger.car.ble import BleVehicle
from tesla_smart_charger.car.fleet_api import (
    ApiCallCounter,
    TeslaClient,
    certificate_fix_hint,
    client_for,
    describe_road,
    is_vin,
    ssl_context_for,
)
from tesla_smart_charger.car.tokens import (
    FIX_REAUTH,
    DaemonLock,
    TokenManager,
    TokenPair,
    TokenStore,
    atomic_write_bytes,
    pair_from_reply,
    post_token_request,
    region_of,
)
from tesla_smart_charger.config.settings import FLEET_API_BASES, LoadedConfig, Settings, load_config
from tesla_smart_charger.control.interfaces import TokenSource
from tesla_smart_charger.control.models import VehicleState
from tesla_smart_charger.errors import (
    BleUnavailable,
    ChargerError,
    CommandSigningError,
    ConfigError,
    LoginRequired,
    MeterAuthError,
    MeterError,
    RateLimited,
    RelayAuthError,
    RelayError,
    TeslaAuthError,
    TeslaError,
    TeslaTransientError,
    TokenEndpointError,
    TokenError,
)
from tesla_smart_charger.logging_setup import register_config_secrets, register_secret, scrub
from tesla_smart_charger.retry import describe_transport_error
from tesla_smart_charger.runtime.safety import build_relay
from tesla_smart_charger.shelly.build import create_meter

USER_SCOPES: Final = "openid offline_access vehicle_device_data vehicle_cmds vehicle_charging_cmds"
PARTNER_SCOPES: Final = "openid vehicle_device_data vehicle_cmds vehicle_charging_cmds"
PUBLIC_KEY_PATH: Final = "/.well-known/appspecific/com.tesla.3p.public-key.pem"
PRIVATE_KEY_FILE: Final = "private-key.pem"
PUBLIC_KEY_FILE: Final = "public-key.pem"
HTTP_TIMEOUT_SECS: Final = 15.0
DOCTOR_TIMEOUT_SECS: Final = 10.0

Func = Callable[[argparse.Namespace], int]


class UsageError(ChargerError):
    """Bad arguments or a missing configuration key: exit 2."""


class CommandFailed(ChargerError):
    """The remote side refused or could not be reached: exit 1."""


def _out(text: str = "") -> None:
    print(text, flush=True)


def _err(text: str) -> None:
    # Every error message may carry text from outside (a reply body, an exception).
    print(scrub(text), file=sys.stderr, flush=True)


def _guarded(body: Callable[[argparse.Namespace], int]) -> Func:
    """Turn our errors into one clear message and an exit code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except ConfigError as err:
            _err("configuration problems:\n  " + "\n  ".join(err.problems))
            return 2
        except UsageError as err:
            _err(f"error: {err}")
            return 2
        except ChargerError as err:
            _err(f"error: {err}")
            return 1

    return run


def _async(body: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> Func:
    return _guarded(lambda args: asyncio.run(body(args)))


def _config_path(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "config", None) or "config.json")


def _load(args: argparse.Namespace) -> LoadedConfig:
    loaded = load_config(_config_path(args))
    register_config_secrets(loaded.settings)
    return loaded


Need = tuple[str, str, str]  # (settings field, config key, what it is)

CLIENT_ID: Final[Need] = (
    "tesla_client_id",
    "teslaClientId",
    "the client id of your app at developer.tesla.com",
)
CLIENT_SECRET: Final[Need] = (
    "tesla_client_secret",
    "teslaClientSecret",
    "the client secret of your app (only the setup commands use it)",
)
REDIRECT_URI: Final[Need] = (
    "tesla_redirect_uri",
    "teslaRedirectUri",
    "the redirect URI registered with your app at developer.tesla.com",
)


def _require_all(settings: Settings, *needs: Need) -> list[str]:
    """The values of `needs`, or one UsageError naming every missing key at once."""
    values: list[str] = []
    missing: list[str] = []
    for field, key, why in needs:
        value = getattr(settings, field)
        if value is None:
            missing.append(f"{key} ({why})")
            continue
        values.append(
            value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
        )
    if missing:
        keys = "; ".join(missing)
        raise UsageError(f"not set in the configuration: {keys}")
    return values


def _client_id(s: Settings) -> str:
    return _require_all(s, CLIENT_ID)[0]


def fleet_base(settings: Settings, region_hint: str | None = None) -> tuple[str, str]:
    """(region, Fleet API base): teslaRegion, else the token/code prefix, else na."""
    region = settings.tesla_region or (
        region_hint if region_hint in FLEET_API_BASES else settings.region
    )
    return region, settings.tesla_fleet_api_url or FLEET_API_BASES[region]


def _remote_error(payload: Any) -> str:
    if isinstance(payload, dict):
        parts = [
            scrub(str(payload.get(k)))[:200]
            for k in ("error", "error_description")
            if payload.get(k)
        ]
        if parts:
            return ": ".join(parts)
    return "no error details"


def _hours(secs: float) -> str:
    secs = max(0.0, secs)
    if secs >= 3600:
        return f"{int(secs // 3600)} h {int(secs % 3600 // 60)} min"
    if secs >= 60:
        return f"{int(secs // 60)} min"
    return f"{int(secs)} s"


# --- keygen --------------------------------------------------------------------------------


def _keygen(args: argparse.Namespace) -> int:
    if args.out_dir:
        out_dir = Path(args.out_dir)
    elif getattr(args, "config", None):
        out_dir = _config_path(args).parent
    else:
        out_dir = Path()
    if args.out_dir and not out_dir.exists():
        # Only the owner may list the folder that holds the private key.
        out_dir.mkdir(mode=0o700, parents=True)
        out_dir.chmod(0o700)
        _out(f"Created folder {out_dir} (mode 0700)")
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} is not a folder (pass --out-dir DIR)")
    private, public = out_dir / PRIVATE_KEY_FILE, out_dir / PUBLIC_KEY_FILE
    existing = [str(p) for p in (private, public) if p.exists()]
    if existing and not args.force:
        raise UsageError(
            f"{' and '.join(existing)} already exist(s); refusing to overwrite. A new key means "
            "pairing it with the car again. Pass --force to replace it anyway."
        )
    key = ec.generate_private_key(ec.SECP256R1())
    # SEC1 "EC PRIVATE KEY", as `openssl ecparam -genkey -name prime256v1` writes it.
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write_bytes(private, private_pem, mode=0o600)
    atomic_write_bytes(public, public_pem, mode=0o644)
    _out(f"Private key (P-256, mode 0600): {private}")
    repo = git_work_tree(out_dir)
    if repo is not None:
        _err(
            f"warning: {private} is inside the git work tree {repo}. Never commit it: anyone "
            "with this file can command your car. Keep it outside the repository (keygen "
            "--out-dir /etc/tesla-smart-charger) or make sure .gitignore lists private-key.pem."
        )
    _out(f"  keep it secret; start the proxy with: tesla-http-proxy -key-file {private} ...")
    _out(f"Public key: {public}")
    _out(f"  host it at https://<your-domain>{PUBLIC_KEY_PATH}")
    _out("Then register the domain:  tesla-smart-charger auth register --domain <your-domain>")
    _out("and pair the key with the car:  open https://tesla.com/_ak/<your-domain> on your phone")
    return 0


def git_work_tree(folder: Path) -> Path | None:
    """The git work tree `folder` lies in (a `.git` folder or file above it), else None."""
    here = folder.resolve()
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


# --- auth url / exchange -------------------------------------------------------------------


def authorize_url(settings: Settings, state: str) -> str:
    """The URL the owner opens to log in and grant our scopes."""
    client_id, redirect = _require_all(settings, CLIENT_ID, REDIRECT_URI)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": USER_SCOPES,
        "state": state,
        "locale": "en-US",
        "prompt": "login",
    }
    return f"{settings.tesla_authorize_url}?{urlencode(params, quote_via=quote)}"


def _auth_url(args: argparse.Namespace) -> int:
    settings = _load(args).settings
    url = authorize_url(settings, secrets.token_urlsafe(16))
    _out("Open this URL, log in and allow access:")
    _out()
    _out(url)
    _out()
    _out("Tesla then redirects to your redirect URI with ?code=... in the address. Run:")
    _out("  tesla-smart-charger auth exchange '<the whole URL you were redirected to>'")
    _out("(the code is single use and expires after a few minutes)")
    return 0


def parse_code(text: str) -> str:
    """The authorization code from a bare code or from the whole callback URL."""
    text = text.strip()
    if "://" in text or text.startswith("?") or "code=" in text:
        query = urlsplit(text).query if "://" in text else text.lstrip("?")
        params = parse_qs(query)
        if "error" in params:
            detail = scrub(params.get("error_description", [""])[0])[:200]
            raise UsageError(
                f"the callback URL carries error={scrub(params['error'][0])[:64]}"
                + (f" ({detail})" if detail else "")
                + ": run auth url again"
            )
        codes = params.get("code")
        if not codes or not codes[0].strip():
            raise UsageError("no code= parameter in the callback URL")
        return codes[0].strip()
    if not text:
        raise UsageError("empty code")
    return text


async def _auth_exchange(args: argparse.Namespace) -> int:
    loaded = _load(args)
    settings = loaded.settings
    client_id, secret, redirect = _require_all(settings, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    code = parse_code(args.code)
    region, audience = fleet_base(settings, region_of(code))
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": secret,
        "code": code,
        "audience": audience,
        "redirect_uri": redirect,
    }
    issued_at = time.time()
    async with aiohttp.ClientSession() as session:
        try:
            reply = await post_token_request(session, settings.tesla_token_url, form)
        except LoginRequired as err:
            raise CommandFailed(
                f"{err}. Codes are single use and expire after a few minutes: run auth url again"
            ) from None
    pair = pair_from_reply(reply, issued_at=issued_at)
    if pair.region is None:
        pair = TokenPair(pair.access_token, pair.refresh_token, pair.expires_at, issued_at, region)
    store = TokenStore(loaded.token_file)
    try:
        async with store.alock():
            store.save(pair)
    except OSError as err:
        # The code is spent: say so, rather than a traceback.
        raise CommandFailed(
            f"cannot write token store {store.path}: {err.strerror or err}. Make its folder "
            "writable (or free space), then run auth url and auth exchange again"
        ) from None
    _out(f"Tokens saved to {store.path} (mode 0600); region {pair.region or region}.")
    _out(f"The access token is valid for {_hours(pair.expires_at - time.time())}.")
    _out("A running daemon picks them up within a few seconds; no restart needed.")
    return 0


# --- auth register -------------------------------------------------------------------------


def _domain(text: str) -> str:
    host = urlsplit(text).hostname if "://" in text else text.strip().strip("/")
    if not host or "/" in host or " " in host or "." not in host:
        raise UsageError(f"--domain {text!r} is not a domain name (e.g. charger.example.com)")
    return host.lower()


async def _auth_register(args: argparse.Namespace) -> int:
    loaded = _load(args)
    settings = loaded.settings
    client_id, secret = _require_all(settings, CLIENT_ID, CLIENT_SECRET)
    domain = _domain(args.domain)
    try:
        pair = TokenStore(loaded.token_file).load()
    except TokenError:
        pair = None
    store_region = pair.region if pair else None
    region, base = fleet_base(settings, store_region)
    async with aiohttp.ClientSession() as session:
        try:
            reply = await post_token_request(
                session,
                settings.tesla_token_url,
                {
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": secret,
                    "scope": PARTNER_SCOPES,
                    "audience": base,
                },
            )
        except LoginRequired as err:
            raise CommandFailed(f"partner token refused: {err}") from None
        partner = reply.get("access_token")
        if not isinstance(partner, str) or not partner:
            raise CommandFailed("partner token reply lacks field 'access_token'")
        register_secret(partner)  # a reply that echoes it must not print it
        url = f"{base}/api/1/partner_accounts"
        try:
            async with (
                asyncio.timeout(HTTP_TIMEOUT_SECS),
                session.post(
                    url,
                    json={"domain": domain},
                    headers={"Authorization": f"Bearer {partner}"},
                ) as resp,
            ):
                status = resp.status
                text = await resp.text()
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            where = describe_transport_error(err, host=urlsplit(url).netloc)
            raise CommandFailed(f"{url} unreachable: {where}") from err
    try:
        payload: Any = json.loads(text) if text else None
    except ValueError:
        payload = None
    if status != 200:
        hint = (
            f"; check that https://{domain}{PUBLIC_KEY_PATH} serves public-key.pem"
            if status in (400, 404, 422, 424)
            else ""
        )
        raise CommandFailed(f"registration failed (HTTP {status}): {_remote_error(payload)}{hint}")
    _out(f"Registered {domain} with the Fleet API ({region}: {base}).")
    response = payload.get("response") if isinstance(payload, dict) else None
    if response is not None:
        _out(scrub(json.dumps(response, indent=2, sort_keys=True)))
    return 0


# --- auth refresh --------------------------------------------------------------------------


def _daemon_words(lock: DaemonLock, pid: int) -> str:
    who = f"pid {pid}" if pid else "pid unknown"
    return f"a tesla-smart-charger daemon ({who}, holding {lock.path}) runs on this token store"


async def _auth_refresh(args: argparse.Namespace) -> int:
    loaded = _load(args)
    settings = loaded.settings
    client_id = _client_id(settings)
    store = TokenStore(loaded.token_file)
    lock = DaemonLock(store.path)
    pid = lock.running_daemon()
    if pid is not None:
        # It renews the tokens itself and may hold newer ones than the file (a store it
        # cannot write): a refresh from the file here could break its chain.
        raise CommandFailed(
            f"{_daemon_words(lock, pid)} and renews the tokens itself; nothing done "
            "(stop the daemon first to refresh by hand)"
        )
    if store.load() is None:
        raise CommandFailed(f"no token store at {store.path}: {FIX_REAUTH}")
    async with aiohttp.ClientSession() as session:
        manager = TokenManager(
            store, session, token_url=settings.tesla_token_url, client_id=client_id
        )
        try:
            pair = await manager.refresh(force=True)
        except LoginRequired as err:
            raise CommandFailed(f"{err}: {FIX_REAUTH}") from None
    _out(
        f"Tokens refreshed and saved to {store.path}; the access token is valid for "
        f"{_hours(pair.expires_at - time.time())}."
    )
    return 0


# --- doctor --------------------------------------------------------------------------------

Verdict = Literal["ok", "FAIL", "skip"]


@dataclass
class Row:
    """One line of the doctor's table."""

    check: str
    verdict: Verdict
    result: str
    fix: str = ""


# A terminal, an SSH session on a Pi, a pasted support request: 80 columns is what they all show.
REPORT_WIDTH: Final = 80


def render_table(rows: list[Row], width: int = REPORT_WIDTH) -> str:
    """One block per check: its name and verdict on one line, then what was found and the fix.

    Every line fits `width` columns: a long result or fix wraps under its own indent, so the
    report reads the same in an 80-column terminal and in a pasted issue.
    """
    lines: list[str] = []
    for row in rows:
        dots = max(width - len(row.check) - len(row.verdict) - 2, 3)
        lines.append(f"{row.check} {'.' * dots} {row.verdict}")
        lines.extend(_wrap(row.result, width, "  ", "  "))
        if row.fix:
            lines.extend(_wrap(row.fix, width, "  fix: ", "       "))
    return "\n".join(lines)


def _wrap(text: str, width: int, first: str, rest: str) -> list[str]:
    """Wrap at spaces; a URL or path longer than a line is cut, never left overlong."""
    return textwrap.wrap(
        text,
        width,
        initial_indent=first,
        subsequent_indent=rest,
        break_on_hyphens=False,
        break_long_words=True,
    ) or [first.rstrip()]


def proxy_scheme_hint(base: str, err: BaseException | None = None, body: str = "") -> str | None:
    """The likely cause when the proxy's URL has the wrong scheme, or None.

    tesla-http-proxy only speaks HTTPS; plain http:// to it gets Go's "HTTP request to an
    HTTPS server" 400 or a closed connection. The reverse (https:// to a plain HTTP server)
    fails the TLS handshake with "wrong version number".
    """
    scheme, _, rest = base.partition("://")
    if scheme == "http" and (
        "HTTPS server" in body
        or (
            isinstance(err, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
            and not isinstance(err, aiohttp.ClientConnectorError)  # refused: nothing listens
        )
    ):
        return f"the proxy speaks HTTPS: set teslaHttpProxy to https://{rest}"
    text = str(err) if err is not None else ""
    if scheme == "https" and ("WRONG_VERSION_NUMBER" in text or "wrong version number" in text):
        return f"that server speaks plain HTTP, not TLS: is teslaHttpProxy right (http://{rest})?"
    return None


class StoredToken:
    """The store's access token as it is, never refreshed: doctor's view while a daemon runs."""

    def __init__(self, store: TokenStore) -> None:
        self._store = store

    async def access_token(self) -> str:
        """Whatever the daemon last saved (it keeps the store fresh)."""
        pair = self._store.load()
        if pair is None:
            raise LoginRequired(f"no Tesla tokens in {self._store.path}: {FIX_REAUTH}")
        return pair.access_token

    async def handle_unauthorized(self, rejected: str) -> bool:
        """A 401: only the daemon may refresh; a newer token in the store is worth a retry."""
        pair = self._store.load()
        return pair is not None and pair.access_token != rejected


class _Doctor:
    """The checks, in order; each later check uses what the earlier ones found."""

    def __init__(self, args: argparse.Namespace, session: aiohttp.ClientSession) -> None:
        self.args = args
        self.session = session
        self.rows: list[Row] = []

    def add(self, check: str, verdict: Verdict, result: str, fix: str = "") -> None:
        # Results quote replies and exception messages: scrubbed before they are shown.
        self.rows.append(Row(check, verdict, scrub(result), fix))

    async def run(self) -> list[Row]:
        path = _config_path(self.args)
        try:
            loaded = load_config(path)
        except ConfigError as err:
            self.add(
                "configuration valid", "FAIL", "; ".join(err.problems), f"fix the keys in {path}"
            )
            for name in (
                "token store readable",
                "access token not expired",
                "token refresh works",
                "car commands",
                "vehicle found",
                "meter reading",
            ):
                self.add(name, "skip", "needs a valid configuration")
            return self.rows
        self.add("configuration valid", "ok", str(path))
        settings = loaded.settings
        manager = await self.tokens(loaded)
        if loaded.command_road == "signed":
            self.add("car commands", "ok", describe_road(loaded))
            client = await self.vehicle(loaded, manager)
            await self.key_paired(loaded, client)
        else:
            self.add("car commands", "ok", describe_road(loaded))
            proxy_ok = await self.proxy(loaded)
            await self.vehicle(loaded, manager if proxy_ok else None)
        await self.meter(settings)
        if settings.tesla_ble_proxy is not None:
            await self.ble_bridge(settings)
        if settings.safety_relay_ip is not None:
            await self.relay(settings)
        return self.rows

    async def tokens(self, loaded: LoadedConfig) -> TokenSource | None:
        settings = loaded.settings
        store = TokenStore(loaded.token_file)
        pair: TokenPair | None = None
        try:
            pair = store.load()
            seeded = store.seed_from_config(settings) if pair is None else None
            if seeded is not None and store.unsaved is not None:
                pair = seeded
                self.add(
                    "token store readable",
                    "FAIL",
                    f"cannot create {store.path}: its folder is not writable",
                    "make the folder writable for the daemon's user (rotated tokens must be saved)",
                )
            elif seeded is not None:
                pair = store.load()
                self.add(
                    "token store readable", "ok", f"{store.path} (created from the config's tokens)"
                )
            elif pair is None:
                self.add(
                    "token store readable", "FAIL", f"no token store at {store.path}", FIX_REAUTH
                )
            else:
                self.add("token store readable", "ok", str(store.path))
        except (TokenError, OSError) as err:
            self.add("token store readable", "FAIL", str(err), f"write a new one: {FIX_REAUTH}")
        if pair is None:
            self.add("access token not expired", "skip", "no tokens")
            self.add("token refresh works", "skip", "no tokens")
            return None
        lock = DaemonLock(store.path)
        pid = lock.running_daemon()
        if pid is not None:
            # Read-only while a daemon runs: it renews the tokens itself, and a refresh here
            # could race it (or break the chain of tokens it holds and cannot save yet).
            self.add(
                "access token not expired",
                "skip",
                f"not checked here: {_daemon_words(lock, pid)}; see its /status `auth`",
            )
            self.add(
                "token refresh works",
                "skip",
                f"not renewed: {_daemon_words(lock, pid)} and renews them itself",
            )
            return StoredToken(store)
        left = pair.expires_at - time.time()
        expiry_row = len(self.rows)
        if left > 0:
            self.add("access token not expired", "ok", f"valid for {_hours(left)}")
        else:
            self.add("access token not expired", "FAIL", f"expired {_hours(-left)} ago", FIX_REAUTH)
        if settings.tesla_client_id is None:
            self.add(
                "token refresh works",
                "FAIL",
                "teslaClientId is not set",
                "set teslaClientId to your app's client id (developer.tesla.com)",
            )
            return None
        manager = TokenManager(
            store,
            self.session,
            token_url=settings.tesla_token_url,
            client_id=settings.tesla_client_id,
        )
        try:
            new = await manager.refresh(force=True)
        except LoginRequired as err:
            self.add("token refresh works", "FAIL", str(err), FIX_REAUTH)
            return None
        except TokenEndpointError as err:
            self.add(
                "token refresh works",
                "FAIL",
                str(err),
                f"check the network and teslaTokenUrl ({settings.tesla_token_url})",
            )
            return manager if left > 0 else None
        except TokenError as err:
            self.add("token refresh works", "FAIL", str(err), f"check {store.path} and its folder")
            return None
        self.add(
            "token refresh works",
            "ok",
            f"new tokens saved; valid for {_hours(new.expires_at - time.time())}",
        )
        if left <= 0:  # renewed just now: nothing left to fix
            self.rows[expiry_row] = Row(
                "access token not expired", "ok", f"had expired {_hours(-left)} ago; renewed"
            )
        return manager

    async def proxy(self, loaded: LoadedConfig) -> bool:
        base = loaded.car_api_url
        name = "proxy reachable"
        try:
            ctx = ssl_context_for(base, loaded.proxy_ca_file)
        except ConfigError as err:
            self.add(name, "FAIL", "; ".join(err.problems), "fix teslaHttpProxyCaFile")
            return False
        url = f"{base}/health"
        try:
            async with (
                asyncio.timeout(DOCTOR_TIMEOUT_SECS),
                self.session.get(url, ssl=ctx if ctx is not None else True) as resp,
            ):
                status = resp.status
                body = (await resp.content.read(4096)).decode("utf-8", "replace")
        except aiohttp.ClientConnectorCertificateError as err:
            self.add(
                name,
                "FAIL",
                f"tesla-http-proxy at {base}: TLS certificate not accepted ({err.certificate_error})",
                f"{certificate_fix_hint(err.certificate_error)} (see docs/setup.md)",
            )
            return False
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            host = urlsplit(base).netloc
            hint = proxy_scheme_hint(base, err)
            self.add(
                name,
                "FAIL",
                f"{url}: {describe_transport_error(err, host=host, service='tesla-http-proxy')}",
                hint
                or f"tesla-http-proxy at {base} not reachable: start it (see docs/setup.md) "
                "or fix teslaHttpProxy",
            )
            return False
        if status != 200:
            self.add(
                name,
                "FAIL",
                f"{url} answered HTTP {status}",
                proxy_scheme_hint(base, body=body)
                or "is teslaHttpProxy really tesla-http-proxy (v0.3.4 or later has /health)?",
            )
            return False
        self.add(name, "ok", f"tesla-http-proxy at {base} answered /health")
        return True

    async def vehicle(
        self, loaded: LoadedConfig, manager: TokenSource | None
    ) -> TeslaClient | None:
        """The car's state without waking it; the client when the car is online."""
        settings = loaded.settings
        name = "vehicle found"
        if manager is None:
            self.add(name, "skip", "needs a reachable proxy and working tokens")
            return None
        try:
            client = client_for(
                loaded, self.session, settings.tesla_vehicle_id, manager, ApiCallCounter(),
                retry_attempts=1,
            )  # fmt: skip
        except ConfigError as err:
            self.add(name, "FAIL", "; ".join(err.problems), "fix teslaPrivateKey (or run keygen)")
            return None
        try:
            async with asyncio.timeout(DOCTOR_TIMEOUT_SECS * 2):
                snap = await client.snapshot(with_charge_state=False)
        except TeslaAuthError as err:
            self.add(
                name,
                "FAIL",
                str(err),
                "run: tesla-smart-charger auth refresh; on 403 log in again granting all "
                f"scopes ({FIX_REAUTH})",
            )
            return None
        except RateLimited as err:
            self.add(name, "FAIL", str(err), "wait, then run doctor again")
            return None
        except TeslaTransientError as err:
            self.add(
                name,
                "FAIL",
                str(err),
                "the proxy could not reach the Fleet API: check the proxy's log (-verbose)",
            )
            return None
        except (TeslaError, TimeoutError) as err:
            text = str(err) or "timed out"
            fix = (
                "register your app's domain: tesla-smart-charger auth register --domain <domain>"
                if "412" in text
                else "check teslaVehicleId (the car's VIN) and that the car is on this account"
            )
            self.add(name, "FAIL", text, fix)
            return None
        self.add(
            name, "ok", f"{client.vin or settings.tesla_vehicle_id}: {snap.state.value} (not woken)"
        )
        return client if snap.state is VehicleState.ONLINE else None

    async def key_paired(self, loaded: LoadedConfig, client: TeslaClient | None) -> None:
        """One handshake with the car (one billed request): the car knows our key."""
        name = "key paired with the car"
        if client is None:
            self.add(
                name, "skip", "needs the car online and working tokens (doctor never wakes it)"
            )
            return
        try:
            async with asyncio.timeout(DOCTOR_TIMEOUT_SECS * 2):
                await client.check_pairing()
        except CommandSigningError as err:
            fix = (
                "pair the key: open https://tesla.com/_ak/<your-domain> on your phone and "
                "approve it on the car's key card"
                if err.fault in (3, 4)
                else "run doctor again; if it persists, check the clock and teslaPrivateKey"
            )
            self.add(name, "FAIL", str(err), fix)
            return
        except (TeslaError, TimeoutError) as err:
            self.add(name, "FAIL", str(err) or "timed out", "run doctor again in a minute")
            return
        self.add(
            name,
            "ok",
            f"the car answered our handshake ({loaded.private_key_file}); session cached",
        )

    async def meter(self, settings: Settings) -> None:
        name = "meter reading"
        if settings.energy_monitor_ip is None:
            self.add(name, "skip", "no energyMonitorIp configured (push mode: /overload only)")
            return
        where = f"{settings.energy_monitor_type} at {settings.energy_monitor_ip}"
        try:
            meter = create_meter(settings, self.session)
            async with asyncio.timeout(DOCTOR_TIMEOUT_SECS):
                reading = await meter.read()
        except MeterAuthError as err:
            self.add(name, "FAIL", str(err), "check energyMonitorUser / energyMonitorPassword")
            return
        except ConfigError as err:
            self.add(
                name, "FAIL", "; ".join(err.problems), "fix the meter keys in the configuration"
            )
            return
        except (MeterError, TimeoutError) as err:
            self.add(
                name,
                "FAIL",
                str(err) if str(err) else f"{where}: no reading within {DOCTOR_TIMEOUT_SECS:g} s",
                "check that the meter is powered and reachable, and energyMonitorIp / "
                "energyMonitorType",
            )
            return
        if not reading.valid:
            self.add(
                name,
                "FAIL",
                f"{where}: invalid reading ({reading.error or 'no reason given'})",
                "check energyMonitorSupplyChannels and the meter's clamps",
            )
            return
        amps = ", ".join(f"{a:.1f}" for a in reading.phase_amps)
        self.add(name, "ok", f"{where}: phase amps {amps}")

    async def ble_bridge(self, settings: Settings) -> None:
        """Reachable, VIN known, sleep state readable: three rows, none wakes the car."""
        url = settings.tesla_ble_proxy
        assert url is not None  # noqa: S101 - only called when configured
        vin = settings.tesla_vehicle_id.strip().upper()
        fix_up = "start the BLE bridge (docs/ble.md) or fix teslaBleProxy"
        try:
            async with (
                asyncio.timeout(DOCTOR_TIMEOUT_SECS),
                self.session.get(url) as resp,
            ):
                await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            where = describe_transport_error(err, host=urlsplit(url).netloc, service="the bridge")
            self.add("BLE bridge reachable", "FAIL", f"{url}: {where}", fix_up)
            self.add("BLE bridge knows the VIN", "skip", "bridge not reachable")
            self.add("BLE sleep state readable", "skip", "bridge not reachable")
            return
        self.add("BLE bridge reachable", "ok", f"{url} answered HTTP {resp.status}")
        if not is_vin(vin):
            self.add(
                "BLE bridge knows the VIN",
                "FAIL",
                f"teslaVehicleId {vin!r} is not a VIN",
                "set teslaVehicleId to the car's 17-character VIN (the bridge only knows VINs)",
            )
            self.add("BLE sleep state readable", "skip", "needs the VIN")
            return
        ble = BleVehicle(self.session, url, vin)
        try:
            state = await ble.sleep_state()
        except BleUnavailable as err:
            text = str(err)
            if "404" in text or "unknown VIN" in text:
                self.add(
                    "BLE bridge knows the VIN",
                    "FAIL",
                    text,
                    "pair the bridge with this car (docs/ble.md) or fix teslaVehicleId",
                )
                self.add("BLE sleep state readable", "skip", "the bridge does not know the VIN")
                return
            self.add("BLE bridge knows the VIN", "ok", vin)
            self.add(
                "BLE sleep state readable",
                "FAIL",
                text,
                "move the bridge closer to the car (BLE range) and check its key is paired",
            )
            return
        self.add("BLE bridge knows the VIN", "ok", vin)
        self.add("BLE sleep state readable", "ok", f"car {state.value} (not woken)")

    async def relay(self, settings: Settings) -> None:
        """Reachable and its current state (read only: the doctor never switches it)."""
        built = build_relay(self.session, settings)
        assert built is not None  # noqa: S101 - only called when configured
        relay = built[0]
        try:
            on = await relay.is_on()
        except RelayAuthError as err:
            self.add(
                "safety relay", "FAIL", str(err), "check safetyRelayUser / safetyRelayPassword"
            )
            return
        except RelayError as err:
            self.add(
                "safety relay",
                "FAIL",
                str(err),
                "check that the relay is powered and reachable, and safetyRelayIp / "
                "safetyRelayChannel",
            )
            return
        gen = relay.generation
        if not on:
            self.add(
                "safety relay",
                "FAIL",
                f"{relay.name} (Gen{gen}): the charger circuit is OFF",
                "switch it on (the car cannot charge); see docs/relay.md",
            )
            return
        self.add("safety relay", "ok", f"{relay.name} (Gen{gen}): charger circuit on")


async def _doctor(args: argparse.Namespace) -> int:
    async with aiohttp.ClientSession() as session:
        rows = await _Doctor(args, session).run()
    _out(render_table(rows))
    failed = [r for r in rows if r.verdict == "FAIL"]
    _out()
    _out(f"{len(failed)} check(s) failed." if failed else "All checks passed.")
    return 1 if failed else 0


# --- argparse wiring -----------------------------------------------------------------------

KEYGEN_HELP: Final = (
    """\
Create the P-256 key pair tesla-http-proxy signs commands with.

Writes, in --out-dir (default: the folder of --config):
  private-key.pem  mode 0600  the proxy's signing key: keep it secret, never commit it
  public-key.pem   mode 0644  host it at https://<your-domain>"""
    + PUBLIC_KEY_PATH
    + """
Refuses to overwrite an existing pair without --force (a new key must be paired with
the car again). Warns when the private key lands inside a git work tree.
Needs no configuration key and no network."""
)

AUTH_HELP: Final = """\
Log in to Tesla and keep the tokens the daemon uses. In order:
  auth register --domain D   once per region: tell the Fleet API your app's domain
  auth url                   print the login URL; log in and allow access
  auth exchange URL          turn the redirected URL's code into stored tokens
  auth refresh               renew the tokens now (the daemon also does this by itself)
Which keys each one needs and which files it writes: auth ACTION --help."""

AUTH_URL_HELP: Final = """\
Print the URL to open in a browser: log in to Tesla and allow this app to read the car
and control charging. Tesla then redirects to teslaRedirectUri with ?code=...

Needs: teslaClientId, teslaRedirectUri. Writes nothing, sends nothing."""

AUTH_EXCHANGE_HELP: Final = """\
Exchange the code from `auth url` (or the whole redirected URL) for an access and a
refresh token at teslaTokenUrl, and save them in the token store.

Needs: teslaClientId, teslaClientSecret, teslaRedirectUri.
Writes: tokenFile (default tokens.json beside the config; mode 0600) and its lock file
tokens.json.lock. Allowed while the daemon runs (it is how you log in again): the daemon
picks the new tokens up within a few seconds; no restart needed."""

AUTH_REGISTER_HELP: Final = (
    """\
Register your app's domain with the Fleet API of your region (once per region, before
the first command to a car). Tesla fetches the public key from
  https://<domain>"""
    + PUBLIC_KEY_PATH
    + """
so host public-key.pem there first.

Needs: teslaClientId, teslaClientSecret (a partner token is requested with them).
Writes nothing locally."""
)

AUTH_REFRESH_HELP: Final = """\
Use the stored refresh token to get new tokens now and save them (Tesla's refresh
tokens rotate: the old one stops working). Refused while a daemon runs on the same token
store (it holds tokens.json.daemon.lock): the daemon renews the tokens itself.

Needs: teslaClientId and a token store (auth exchange). Writes: tokenFile (mode 0600)."""

DOCTOR_HELP: Final = """\
Check the whole setup, in order, and print one row per check with what to fix:
  configuration valid, token store readable, access token not expired, token refresh
  works, proxy reachable (teslaHttpProxy, teslaHttpProxyCaFile), vehicle found
  (teslaVehicleId; without waking the car), meter reading (energyMonitorIp), and when
  configured: the BLE bridge (teslaBleProxy: reachable, VIN known, sleep state readable)
  and the safety relay (safetyRelayIp: reachable, current state; never switched).
The refresh check renews the tokens and saves them to tokenFile (mode 0600); while a
daemon runs on the same token store it only reads the store (the daemon renews them).
Exit 0 when every check passes, 1 otherwise."""


def add_subcommands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser] | None = None,
) -> None:
    """Register keygen, auth (url, exchange, register, refresh) and doctor.

    `parents` carries the global options, so `doctor --config x` works as well as
    `--config x doctor`.
    """
    common = parents or []

    def command(
        group: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        summary: str,
        description: str,
    ) -> argparse.ArgumentParser:
        """Every command takes the global options and keeps its help text's line breaks."""
        return group.add_parser(
            name,
            parents=common,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            help=summary,
            description=description,
        )

    keygen = command(
        subparsers,
        "keygen",
        "create the P-256 key pair for tesla-http-proxy and your domain",
        KEYGEN_HELP,
    )
    keygen.add_argument(
        "--out-dir",
        metavar="DIR",
        help="folder for private-key.pem and public-key.pem, created 0700 if missing "
        "(default: the folder of --config)",
    )
    keygen.add_argument("--force", action="store_true", help="overwrite an existing key pair")
    keygen.set_defaults(func=_guarded(_keygen))

    auth = command(subparsers, "auth", "log in to Tesla and manage tokens", AUTH_HELP)
    actions = auth.add_subparsers(dest="auth_action", metavar="ACTION", required=True)
    url = command(actions, "url", "print the URL to log in and grant access", AUTH_URL_HELP)
    url.set_defaults(func=_guarded(_auth_url))
    exchange = command(
        actions, "exchange", "turn the login's code into stored tokens", AUTH_EXCHANGE_HELP
    )
    exchange.add_argument(
        "code", metavar="CODE_OR_CALLBACK_URL", help="the code, or the whole redirected URL"
    )
    exchange.set_defaults(func=_async(_auth_exchange))
    register = command(
        actions,
        "register",
        "register your app's domain with the Fleet API (once per region)",
        AUTH_REGISTER_HELP,
    )
    register.add_argument(
        "--domain", required=True, help="the domain hosting the public key (charger.example.com)"
    )
    register.set_defaults(func=_async(_auth_register))
    refresh = command(
        actions,
        "refresh",
        "refresh the tokens now (refused while a daemon runs)",
        AUTH_REFRESH_HELP,
    )
    refresh.set_defaults(func=_async(_auth_refresh))

    doctor = command(subparsers, "doctor", "check the whole setup and say what to fix", DOCTOR_HELP)
    doctor.set_defaults(func=_async(_doctor))
