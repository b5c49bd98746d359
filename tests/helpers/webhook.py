"""A webhook endpoint on 127.0.0.1 that records the alerts it is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

SECRET_PATH = "/api/webhook/tsc-SECRET-id"


class Receiver:
    """A webhook endpoint that records bodies; `status` or `hang` make it misbehave."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.requests = 0
        self.status = 200
        self.hang = False
        self._seen = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        async with self._seen:
            self.requests += 1
            self._seen.notify_all()
        if self.hang:
            await asyncio.Event().wait()
        if self.status == 200:
            self.bodies.append(await request.json())
        return web.json_response({}, status=self.status)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout), self._seen:
            await self._seen.wait_for(predicate)

    async def start(self, port: int = 0) -> str:
        app = web.Application()
        app.router.add_post(SECRET_PATH, self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}{SECRET_PATH}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
