"""The HTTP API with aiohttp's test server on 127.0.0.1: status codes, JSON errors, auth, CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from tesla_smart_charger.httpapi.server import ApiContext, build_app
from tesla_smart_charger.runtime.status import DaemonStatus
from tests.helpers.status import sample_status


class FakeDaemon:
    """Just enough of the daemon to count what the handlers did."""

    def __init__(self) -> None:
        self.overloads: list[str] = []
        self.problems: list[str] = []

    def overload(self, source: str) -> bool:
        self.overloads.append(source)
        return len(self.overloads) == 1

    def status(self) -> DaemonStatus:
        return sample_status(controller={"mode": "push"})

    def config(self) -> dict[str, Any]:
        return {"apiToken": "***"}

    def health(self) -> list[str]:
        return self.problems


async def _client(daemon: FakeDaemon, token: str | None) -> TestClient[Any, Any]:
    ctx = ApiContext(daemon.overload, daemon.status, daemon.config, daemon.health, api_token=token)
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(ctx), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
def daemon() -> FakeDaemon:
    return FakeDaemon()


@pytest.fixture
async def client(daemon: FakeDaemon) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(daemon, None)
    yield c
    await c.close()


@pytest.fixture
async def guarded(daemon: FakeDaemon) -> AsyncIterator[TestClient[Any, Any]]:
    c = await _client(daemon, "s3cret-token")
    yield c
    await c.close()


async def test_overload_get_without_body_is_accepted(
    client: TestClient[Any, Any], daemon: FakeDaemon
) -> None:
    r = await client.get("/overload")
    assert r.status == 202
    assert await r.json() == {"accepted": True, "queued": True}
    assert daemon.overloads == ["http"]


async def test_overload_post_with_any_body_is_accepted(
    client: TestClient[Any, Any], daemon: FakeDaemon
) -> None:
    r = await client.post("/overload?source=shelly", data=b"\x00not json{")
    assert r.status == 202
    assert daemon.overloads == ["shelly"]


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_wrong_method_is_json_405(client: TestClient[Any, Any], method: str) -> None:
    r = await client.request(method, "/overload")
    assert r.status == 405
    body = await r.json()
    assert body["status"] == 405


async def test_unknown_path_is_json_404(client: TestClient[Any, Any]) -> None:
    r = await client.get("/nope")
    assert r.status == 404
    assert (await r.json())["error"] == "Not Found"


async def test_oversized_body_is_413_not_500(client: TestClient[Any, Any]) -> None:
    r = await client.post("/overload", data=b"x" * (128 * 1024))
    assert r.status == 413


async def test_no_cors_headers(client: TestClient[Any, Any]) -> None:
    r = await client.get("/status", headers={"Origin": "https://evil.example"})
    assert r.status == 200
    assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_health_reports_problems_with_503(
    client: TestClient[Any, Any], daemon: FakeDaemon
) -> None:
    assert (await client.get("/health")).status == 200
    daemon.problems.append("fail-safe: no valid meter reading")
    r = await client.get("/health")
    assert r.status == 503
    assert (await r.json())["problems"] == ["fail-safe: no valid meter reading"]


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/overload", {}, 401),
        ("/overload?token=wrong", {}, 401),
        ("/overload?token=s3cret-token", {}, 202),
        ("/overload", {"Authorization": "Bearer s3cret-token"}, 202),
        ("/overload", {"Authorization": "Bearer nope"}, 401),
        ("/overload", {"Authorization": "Basic s3cret-token"}, 401),
    ],
)
async def test_token_required_when_configured(
    guarded: TestClient[Any, Any],
    daemon: FakeDaemon,
    path: str,
    headers: dict[str, str],
    expected: int,
) -> None:
    r = await guarded.get(path, headers=headers)
    assert r.status == expected
    assert len(daemon.overloads) == (1 if expected == 202 else 0)
    if expected == 401:
        assert "s3cret-token" not in await r.text()


async def test_read_only_endpoints_stay_open_with_token(guarded: TestClient[Any, Any]) -> None:
    for path in ("/status", "/config", "/health"):
        assert (await guarded.get(path)).status == 200
