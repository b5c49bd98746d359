"""Setup commands end to end: keygen, auth url/exchange/register/refresh and doctor.

The commands call `asyncio.run` themselves, so tests that need local servers run them in a
worker thread while the servers (SimulatedOAuth, a tiny proxy, a Shelly) serve this loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import ssl
import stat
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tesla_smart_charger.car.tokens import FIX_REAUTH, TokenStore, jwt_claims
from tesla_smart_charger.cli.setup import (
    USER_SCOPES,
    Row,
    parse_code,
    render_table,
)
from tesla_smart_charger.config.settings import FLEET_API_BASES
from tesla_smart_charger.errors import ChargerError
from tesla_smart_charger.logging_setup import clear_secrets
from tesla_smart_charger.simulator.oauth import SimulatedOAuth
from tests.helpers.doctor import doctor_rows, squeezed
from tests.helpers.fixtures import FIXTURES, load_fixture
from tests.helpers.setup_cli import (
    CLIENT,
    REDIRECT,
    SECRET,
    VIN,
    WriteConfig,
    oauth_config,
    run,
    seed_store,
)
from tests.helpers.storage import tiny_tmpfs
from tests.helpers.tls import write_self_signed_cert

PartnerAccounts = Callable[[web.Request], Awaitable[web.Response]]


async def register_against(
    partner_accounts: PartnerAccounts, write_config: WriteConfig, oauth: SimulatedOAuth
) -> int:
    """`auth register --domain charger.example.com` against a local Fleet API serving it."""
    app = web.Application()
    app.router.add_post("/api/1/partner_accounts", partner_accounts)
    async with TestServer(app, host="127.0.0.1") as fleet:
        base = str(fleet.make_url("")).rstrip("/")
        config = oauth_config(write_config, oauth, teslaFleetApiUrl=base)
        return await asyncio.to_thread(
            run, "--config", str(config), "auth", "register", "--domain", "charger.example.com"
        )


# --- keygen --------------------------------------------------------------------------------


def openssl(*args: str) -> str:
    exe = shutil.which("openssl")
    assert exe is not None
    done = subprocess.run(  # noqa: S603 (fixed argv, no shell)
        [exe, *args], capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout + done.stderr


def test_keygen_writes_p256_pair_and_refuses_to_overwrite(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config()
    assert run("--config", str(config), "keygen") == 0
    private, public = config.parent / "private-key.pem", config.parent / "public-key.pem"
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    key = serialization.load_pem_private_key(private.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    pub = serialization.load_pem_public_key(public.read_bytes())
    assert isinstance(pub, ec.EllipticCurvePublicKey)
    assert pub.public_numbers() == key.public_key().public_numbers()
    out = capsys.readouterr().out
    assert "/.well-known/appspecific/com.tesla.3p.public-key.pem" in out
    assert "-key-file" in out
    assert "PRIVATE KEY" not in out

    before = private.read_bytes()
    assert run("--config", str(config), "keygen") == 2
    err = capsys.readouterr().err
    assert "--force" in err
    assert "private-key.pem" in err
    assert private.read_bytes() == before

    assert run("--config", str(config), "keygen", "--force") == 0
    assert private.read_bytes() != before
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_keygen_output_is_accepted_by_openssl_as_p256(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (make system-deps installs it)")
    assert run("keygen", "--out-dir", str(tmp_path)) == 0
    priv = openssl("ec", "-in", str(tmp_path / "private-key.pem"), "-noout", "-text")
    pub = openssl("pkey", "-pubin", "-in", str(tmp_path / "public-key.pem"), "-noout", "-text")
    for text in (priv, pub):
        assert "prime256v1" in text or "P-256" in text


def test_keygen_out_dir_is_created_0700_and_no_git_warning_outside_a_repo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "keys" / "tesla"
    assert run("keygen", "--out-dir", str(folder)) == 0
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "private-key.pem").st_mode) == 0o600
    captured = capsys.readouterr()
    assert f"Created folder {folder} (mode 0700)" in captured.out
    assert "git" not in captured.err


def test_keygen_warns_when_the_private_key_lands_in_a_git_work_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".git").mkdir()
    folder = tmp_path / "deploy"
    assert run("keygen", "--out-dir", str(folder)) == 0
    err = capsys.readouterr().err
    assert "warning:" in err
    assert f"inside the git work tree {tmp_path.resolve()}" in err
    assert "Never commit it" in err


def test_repository_gitignore_covers_every_file_setup_and_daemon_write(tmp_path: Path) -> None:
    """`git add .` after keygen, auth and a daemon run must not stage a secret or state."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    root = Path(__file__).resolve().parents[2]
    shutil.copy(root / ".gitignore", tmp_path / ".gitignore")
    written = [
        "private-key.pem",
        "public-key.pem",
        "tokens.json",
        "tokens.json.lock",
        ".tokens.json.abc123.tmp",
        "charger-state.json",
        ".charger-state.json.k2j4.tmp",
        "signing-sessions.json",
        ".signing-sessions.json.q9x1.tmp",
        ".venv-demo/bin/python",
        ".venv/bin/python",
        "build/lib/x.py",
        "tesla_smart_charger.egg-info/PKG-INFO",
        "deploy/private-key.pem",
    ]
    for name in written:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True, timeout=10)  # noqa: S603
    status = subprocess.run(  # noqa: S603 (fixed argv)
        [git, "-C", str(tmp_path), "status", "--porcelain", "--untracked-files=all"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    assert status.splitlines() == ["?? .gitignore"]


# --- auth url ------------------------------------------------------------------------------


def test_auth_url_has_scopes_redirect_and_random_state(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(teslaRedirectUri=REDIRECT, teslaClientId=CLIENT)
    states = []
    for _ in range(2):
        assert run("--config", str(config), "auth", "url") == 0
        (url,) = [
            line for line in capsys.readouterr().out.splitlines() if line.startswith("https://")
        ]
        parts = urlsplit(url)
        assert (parts.netloc, parts.path) == ("auth.tesla.com", "/oauth2/v3/authorize")
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        assert q["response_type"] == "code"
        assert q["client_id"] == CLIENT
        assert q["redirect_uri"] == REDIRECT
        assert q["scope"] == USER_SCOPES
        assert set(q["scope"].split()) >= {"offline_access", "vehicle_charging_cmds"}
        assert q["prompt"] == "login"
        assert len(q["state"]) >= 16
        states.append(q["state"])
    assert states[0] != states[1]


def test_auth_url_names_the_missing_key(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--config", str(write_config()), "auth", "url") == 2
    assert "teslaRedirectUri" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "missing"),
    [
        (("auth", "url"), ["teslaClientId", "teslaRedirectUri"]),
        (("auth", "exchange", "abc"), ["teslaClientId", "teslaClientSecret", "teslaRedirectUri"]),
        (("auth", "register", "--domain", "x.example.com"), ["teslaClientId", "teslaClientSecret"]),
    ],
)
def test_auth_commands_name_every_missing_key_at_once(
    write_config: WriteConfig,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    missing: list[str],
) -> None:
    config = write_config(teslaClientId=...)
    assert run("--config", str(config), *argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    for key in missing:
        assert key in err


def test_doctor_report_fits_80_columns_and_reads_back_whole() -> None:
    long_url = "https://tesla-http-proxy.home.example.org:4443/" + "x" * 90
    rows = [
        Row("configuration valid", "ok", "/home/pi/tesla-smart-charger/config.json"),
        Row(
            "proxy reachable",
            "FAIL",
            f"{long_url}/health: nothing listens on tesla-http-proxy.home.example.org:4443",
            "tesla-http-proxy at https://tesla-http-proxy.home.example.org:4443 not reachable: "
            "start it (see docs/setup.md) or fix teslaHttpProxy",
        ),
        Row("meter reading", "skip", "no energyMonitorIp"),
    ]
    text = render_table(rows)
    assert max(len(line) for line in text.splitlines()) <= 80
    found = doctor_rows(text)
    assert list(found) == ["configuration valid", "proxy reachable", "meter reading"]
    assert found["proxy reachable"].startswith("FAIL ")
    assert (
        "fix: tesla-http-proxy at https://tesla-http-proxy.home.example.org:4443 not "
        in (found["proxy reachable"])
    )
    assert found["meter reading"] == "skip no energyMonitorIp"
    verdicts = [line for line in text.splitlines() if not line.startswith(" ")]
    assert {len(line) for line in verdicts} == {80}  # the verdicts line up at the right edge


def test_parse_code_accepts_code_or_callback_url() -> None:
    assert parse_code("NA_abc") == "NA_abc"
    assert parse_code(f" {REDIRECT}?locale=en-US&code=EU_xyz&state=s1&issuer=x ") == "EU_xyz"
    assert parse_code("?code=NA_q&state=1") == "NA_q"
    with pytest.raises(ChargerError, match="access_denied"):
        parse_code(f"{REDIRECT}?error=access_denied&state=1")
    with pytest.raises(ChargerError, match="no code"):
        parse_code(f"{REDIRECT}?state=1")


# --- auth exchange / refresh / register ----------------------------------------------------


async def test_auth_exchange_with_callback_url_writes_0600_store(
    write_config: WriteConfig, oauth: SimulatedOAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    config = oauth_config(write_config, oauth)
    config_bytes = config.read_bytes()
    code = oauth.issue_code(redirect_uri=REDIRECT, region="EU")
    callback = f"{REDIRECT}?locale=en-US&code={code}&state=whatever&issuer=https%3A%2F%2Fauth"
    assert await asyncio.to_thread(run, "--config", str(config), "auth", "exchange", callback) == 0
    store = TokenStore(config.parent / "tokens.json")
    pair = store.load()
    assert pair is not None
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert oauth.is_valid_access(pair.access_token)
    assert oauth.is_valid_refresh(pair.refresh_token)
    assert pair.region == "eu"
    claims = jwt_claims(pair.access_token)
    assert claims is not None
    assert FLEET_API_BASES["eu"] in claims["aud"]  # audience = the code's region
    out, err = capsys.readouterr()
    assert str(store.path) in out
    for secret in (pair.access_token, pair.refresh_token, SECRET, code):
        assert secret not in out + err
    assert config.read_bytes() == config_bytes

    # Codes are single use: a second exchange fails and leaves the store alone.
    assert await asyncio.to_thread(run, "--config", str(config), "auth", "exchange", code) == 1
    assert "auth url" in capsys.readouterr().err
    assert store.load() == pair


async def test_auth_refresh_rotates_the_store(
    write_config: WriteConfig, oauth: SimulatedOAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    config = oauth_config(write_config, oauth)
    old = seed_store(config, oauth)
    assert await asyncio.to_thread(run, "--config", str(config), "auth", "refresh") == 0
    new = TokenStore(config.parent / "tokens.json").load()
    assert new is not None
    assert new.refresh_token != old.refresh_token
    assert oauth.refresh_count == 1
    out = capsys.readouterr().out
    assert "refreshed" in out
    assert new.refresh_token not in out
    # The old token is gone now: a second run from a stale copy would be refused.
    TokenStore(config.parent / "tokens.json").save(old)
    assert await asyncio.to_thread(run, "--config", str(config), "auth", "refresh") == 1
    assert "auth exchange" in capsys.readouterr().err


async def test_auth_register_posts_domain_with_partner_token(
    write_config: WriteConfig, oauth: SimulatedOAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[tuple[str, Any]] = []

    async def partner_accounts(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization", ""), await request.json()))
        return web.json_response({"response": {"domain": "charger.example.com", "ok": True}})

    code = await register_against(partner_accounts, write_config, oauth)
    assert code == 0
    ((auth, body),) = seen
    assert body == {"domain": "charger.example.com"}
    assert auth.startswith("Bearer ")
    assert oauth.is_valid_access(auth.removeprefix("Bearer "))
    assert oauth.partner_token_count == 1
    out = capsys.readouterr().out
    assert "Registered charger.example.com" in out
    assert auth.removeprefix("Bearer ") not in out


# --- doctor --------------------------------------------------------------------------------


def fake_proxy(sim: SimulatedOAuth, state: str = "asleep") -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def vehicle(request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if not sim.is_valid_access(token):
            return web.json_response({"error": "invalid bearer token"}, status=401)
        if request.match_info["vin"] != VIN:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response({"response": {"vin": VIN, "state": state}})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/api/1/vehicles/{vin}", vehicle)
    return app


def fake_shelly() -> web.Application:
    async def status(request: web.Request) -> web.Response:
        return web.json_response(load_fixture("shelly/gen1_em_status.json"))

    app = web.Application()
    app.router.add_get("/status", status)
    return app


async def test_doctor_all_green_against_local_servers(
    write_config: WriteConfig, oauth: SimulatedOAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (FIXTURES / "shelly/gen1_em_status.json").exists()
    async with (
        TestServer(fake_proxy(oauth), host="127.0.0.1") as proxy,
        TestServer(fake_shelly(), host="127.0.0.1") as shelly,
    ):
        config = oauth_config(
            write_config,
            oauth,
            teslaHttpProxy=str(proxy.make_url("")).rstrip("/"),
            teslaVehicleId=VIN,
            energyMonitorIp=f"127.0.0.1:{shelly.port}",
            energyMonitorType="shelly-em",
        )
        pair = seed_store(config, oauth, expired=True)
        code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "All checks passed" in out
    assert "FAIL" not in out
    assert f"{VIN}: asleep" in out
    assert "renewed" in out  # the expired access token was refreshed by the refresh check
    assert oauth.refresh_count == 1
    assert pair.refresh_token not in out
    lines = out.splitlines()
    order = ["configuration", "token store", "access token", "token refresh", "proxy", "vehicle"]
    order.append("meter")
    positions = [next(i for i, line in enumerate(lines) if line.startswith(o)) for o in order]
    assert positions == sorted(positions)


async def test_doctor_with_proxy_down_names_proxy_and_fix(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    capsys: pytest.CaptureFixture[str],
    refused_port: int,
) -> None:
    proxy = f"http://127.0.0.1:{refused_port}"
    config = oauth_config(
        write_config, oauth, teslaHttpProxy=proxy, teslaVehicleId=VIN, energyMonitorIp=...
    )
    seed_store(config, oauth)
    code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    out = capsys.readouterr().out
    assert code == 1
    row = doctor_rows(out)["proxy reachable"]
    assert "FAIL" in row
    assert f"tesla-http-proxy at {proxy} not reachable: start it" in row
    assert "teslaHttpProxy" in row
    vehicle = doctor_rows(out)["vehicle found"]
    assert "skip" in vehicle


CLASS_NAME = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)+(?:Error|Exception)\b|\b[A-Z]\w*Error\b")


def assert_plain_report(out: str) -> None:
    """The doctor speaks to a home owner: 80 columns, no exception class names."""
    assert max(len(line) for line in out.splitlines()) <= 80, out
    assert CLASS_NAME.findall(out) == [], out


async def test_doctor_refused_proxy_says_so_in_words_within_80_columns(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    capsys: pytest.CaptureFixture[str],
    refused_port: int,
) -> None:
    config = oauth_config(
        write_config,
        oauth,
        teslaHttpProxy=f"http://127.0.0.1:{refused_port}",
        teslaVehicleId=VIN,
        energyMonitorIp=...,
    )
    seed_store(config, oauth)
    code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    out = capsys.readouterr().out
    assert code == 1
    assert f"nothing listens on 127.0.0.1:{refused_port}" in doctor_rows(out)["proxy reachable"]
    assert "speaks HTTPS" not in out  # refused is not a scheme mix-up
    assert_plain_report(out)


async def test_doctor_names_http_for_a_proxy_that_speaks_https(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """The commonest proxy mistake: http:// in teslaHttpProxy for tesla-http-proxy (TLS only)."""
    cert, key = write_self_signed_cert(tmp_path)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    proxy = TestServer(fake_proxy(oauth), host="127.0.0.1")
    await proxy.start_server(ssl=tls)
    port = proxy.port
    try:
        config = oauth_config(
            write_config,
            oauth,
            teslaHttpProxy=f"http://127.0.0.1:{port}",
            teslaVehicleId=VIN,
            energyMonitorIp=...,
        )
        seed_store(config, oauth)
        code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    finally:
        await proxy.close()
    out = capsys.readouterr().out
    assert code == 1
    row = doctor_rows(out)["proxy reachable"]
    assert row.startswith("FAIL")
    assert f"fix: the proxy speaks HTTPS: set teslaHttpProxy to https://127.0.0.1:{port}" in row
    assert_plain_report(out)


async def test_doctor_dead_refresh_token_points_to_auth_commands(
    write_config: WriteConfig, oauth: SimulatedOAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    config = oauth_config(write_config, oauth, energyMonitorIp=...)
    pair = seed_store(config, oauth, expired=True)
    oauth.revoke_all()  # the owner changed the password: every refresh token is dead
    code = await asyncio.to_thread(run, "--config", str(config), "doctor")
    out = capsys.readouterr().out
    assert code == 1
    row = doctor_rows(out)["token refresh works"]
    assert "FAIL" in row
    assert "login_required" in row
    assert FIX_REAUTH in row
    assert pair.refresh_token not in out


def test_doctor_invalid_config_fails_first_row(
    write_config: WriteConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(homeMaxAmps=-1)
    assert run("--config", str(config), "doctor") == 1
    out = capsys.readouterr().out
    row = doctor_rows(out)["configuration valid"]
    assert "FAIL" in row
    assert "homeMaxAmps" in row


# --- help ----------------------------------------------------------------------------------

SUBCOMMANDS = [
    ["run"],
    ["check-config"],
    ["keygen"],
    ["auth"],
    ["auth", "url"],
    ["auth", "exchange"],
    ["auth", "register"],
    ["auth", "refresh"],
    ["doctor"],
    ["demo"],
]


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_help_has_a_description(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from tesla_smart_charger.cli.main import main  # noqa: PLC0415

    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    _usage, _, rest = out.partition("\n\n")
    description = rest.split("options:")[0].strip()
    assert len(description) > 80, out  # says what it does, not just the one-line summary
    assert any(word in description for word in ("Writes", "writes", "Needs", "needs", "Exit"))
    if argv == ["demo"]:
        assert "--config" not in out  # the demo writes its own config: offering it would lie
        assert "--log-format" not in out
    if argv in (["auth", "url"], ["auth", "exchange"], ["auth", "register"]):
        assert "teslaClientId" in description
    if argv == ["keygen"]:
        assert "0600" in description
        assert "0700" in out


def echoing_proxy() -> web.Application:
    """A careless proxy: every Fleet request gets a 401 that echoes the Authorization header."""

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def echo(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        return web.json_response({"error": f"invalid bearer token: {header}"}, status=401)

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_route("*", "/api/{tail:.*}", echo)
    return app


def assert_no_token_run(text: str, tokens: list[str]) -> None:
    for token in tokens:
        assert len(token) >= 16
        for i in range(len(token) - 15):
            assert token[i : i + 16] not in text, f"16-character run of a token at {i}: {text}"


async def test_cli_output_is_scrubbed_of_echoed_tokens(
    write_config: WriteConfig, oauth: SimulatedOAuth, capsys: pytest.CaptureFixture[str]
) -> None:
    clear_secrets()  # nothing registered by earlier tests: the CLI must do it itself
    async with TestServer(echoing_proxy(), host="127.0.0.1") as proxy:
        config = oauth_config(
            write_config,
            oauth,
            teslaHttpProxy=str(proxy.make_url("")).rstrip("/"),
            teslaVehicleId=VIN,
            energyMonitorIp=...,
        )
        pair = seed_store(config, oauth, expired=True)
        oauth.fail("echo")  # the token endpoint echoes the refresh token in `error`
        doctor = await asyncio.to_thread(run, "--config", str(config), "doctor")
        doctor_out = capsys.readouterr()
        refresh = await asyncio.to_thread(run, "--config", str(config), "auth", "refresh")
        refresh_out = capsys.readouterr()
        oauth.fail(None)
        clear_secrets()
        fresh = seed_store(config, oauth)  # valid: the proxy's echoed 401 is what fails now
        clear_secrets()
        doctor2 = await asyncio.to_thread(run, "--config", str(config), "doctor")
        doctor2_out = capsys.readouterr()
    assert (doctor, refresh, doctor2) == (1, 1, 1)
    assert "token refresh works" in doctor_out.out
    assert "bad token" in doctor_out.out + refresh_out.err  # the error itself is still shown
    assert "invalid bearer token" in doctor2_out.out
    text = "\n".join(
        [doctor_out.out, doctor_out.err, refresh_out.out, refresh_out.err, doctor2_out.out]
    )
    text += doctor2_out.err
    assert_no_token_run(
        text, [pair.access_token, pair.refresh_token, fresh.access_token, fresh.refresh_token]
    )


@pytest.mark.parametrize("status", [400, 200])
async def test_auth_register_output_is_scrubbed_of_an_echoed_partner_token(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    capsys: pytest.CaptureFixture[str],
    status: int,
) -> None:
    clear_secrets()
    seen: list[str] = []

    async def partner_accounts(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        seen.append(header.removeprefix("Bearer "))
        body: dict[str, Any] = {
            "error": f"you sent {header}",
            "error_description": f"again: {header}",
        }
        if status == 200:
            body = {"response": {"domain": "charger.example.com", "echo": header}}
        return web.json_response(body, status=status)

    code = await register_against(partner_accounts, write_config, oauth)
    out = capsys.readouterr()
    assert code == (0 if status == 200 else 1)
    assert "***" in out.out + out.err  # the echo is shown, masked
    assert_no_token_run(out.out + out.err, [*seen, SECRET])


async def test_auth_exchange_on_a_read_only_store_says_so_without_a_traceback(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "state"
    with tiny_tmpfs(folder) as storage:
        config = oauth_config(write_config, oauth, tokenFile=str(folder / "tokens.json"))
        storage.read_only()
        code = oauth.issue_code(redirect_uri=REDIRECT, region="EU")
        assert await asyncio.to_thread(run, "--config", str(config), "auth", "exchange", code) == 1
        storage.writable()
    err = capsys.readouterr().err
    assert f"cannot write token store {folder / 'tokens.json'}: Read-only file system" in err
    assert "auth url" in err
    assert "Traceback" not in err


async def test_doctor_on_a_read_only_folder_without_a_store_says_it_cannot_create_it(
    write_config: WriteConfig,
    oauth: SimulatedOAuth,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "state"
    with tiny_tmpfs(folder) as storage:
        access, refresh = oauth.issue_initial()
        config = write_config(
            teslaTokenUrl=oauth.token_url,
            teslaClientId=CLIENT,
            energyMonitorIp=...,
            teslaAccessToken=access,
            teslaRefreshToken=refresh,
            tokenFile=str(folder / "tokens.json"),
        )
        storage.read_only()
        code = await asyncio.to_thread(run, "--config", str(config), "doctor")
        storage.writable()
    out = capsys.readouterr().out
    assert code == 1
    row = doctor_rows(out)["token store readable"]
    assert "FAIL" in row
    assert squeezed(f"cannot create {folder / 'tokens.json'}") in squeezed(row)
    assert "not writable" in row
    assert not (folder / "tokens.json").exists()
