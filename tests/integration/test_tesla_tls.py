"""The Tesla client against a real HTTPS server on 127.0.0.1 playing tesla-http-proxy.

The proxy only speaks HTTPS, usually with a self-signed certificate: teslaHttpProxyCaFile must
make that work with verification on, and without it the request must fail, not be trusted.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import SecretStr
from tenacity import wait_none

from tesla_smart_charger.car.fleet_api import (
    ApiCallCounter,
    StaticTokenSource,
    TeslaClient,
    certificate_fix_hint,
    ssl_context_for,
)
from tesla_smart_charger.errors import TeslaTransientError
from tests.helpers.fixtures import load_fixture
from tests.helpers.tls import write_self_signed_cert

VIN = "LRWXF7EK4KC700000"
TOKEN = "tls-test-token-SECRET"


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[TestServer, Path, list[str]]]:
    """A fake proxy over HTTPS; yields the server, its CA file and the paths it was asked for."""
    cert_path, key_path = write_self_signed_cert(tmp_path)
    seen: list[str] = []

    async def vehicle(request: web.Request) -> web.Response:
        seen.append(request.path)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return web.json_response({"error": "invalid bearer token"}, status=401)
        return web.json_response(load_fixture("tesla/vehicle_asleep.json"))

    app = web.Application()
    app.router.add_get("/api/1/vehicles/{vin}", vehicle)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server(ssl=server_ctx)
    try:
        yield server, cert_path, seen
    finally:
        await server.close()


async def test_https_proxy_with_self_signed_ca_file(
    proxy: tuple[TestServer, Path, list[str]],
) -> None:
    server, ca_file, seen = proxy
    base = f"https://127.0.0.1:{server.port}"
    tokens = StaticTokenSource(SecretStr(TOKEN))

    async with aiohttp.ClientSession() as session:
        trusted = ssl_context_for(base, ca_file)
        assert trusted is not None
        assert trusted.verify_mode is ssl.CERT_REQUIRED
        counter = ApiCallCounter()
        client = TeslaClient(
            session, base, VIN, tokens, counter, ssl_context=trusted, retry_wait=wait_none()
        )
        snap = await client.snapshot()
        assert snap.state.value == "asleep"
        assert seen == [f"/api/1/vehicles/{VIN}"]

        # Without the CA file the self-signed certificate is refused: verification stays on.
        untrusted = TeslaClient(
            session,
            base,
            VIN,
            tokens,
            ApiCallCounter(),
            ssl_context=ssl_context_for(base, None),
            retry_wait=wait_none(),
        )
        with pytest.raises(TeslaTransientError, match="teslaHttpProxyCaFile"):
            await untrusted.snapshot()
        assert seen == [f"/api/1/vehicles/{VIN}"]  # the handshake failed before any request


def test_certificate_hint_tells_name_mismatch_from_untrusted() -> None:
    mismatch = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] Hostname mismatch")
    mismatch.verify_code = 62
    untrusted = ssl.SSLCertVerificationError(1, "self-signed certificate")
    untrusted.verify_code = 18
    assert "subjectAltName" in certificate_fix_hint(mismatch)
    assert "teslaHttpProxyCaFile" in certificate_fix_hint(untrusted)
