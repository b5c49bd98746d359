"""A stand-in daemon for the token store's kill test: one TokenManager keeping one store fresh.

Run as a child process (`python -m tests.helpers.refresh_loop --refresh-loop STORE TOKEN_URL
CLIENT_ID`); it prints `ready`, then the name of every event the manager queues, so the parent
can kill it at random moments and check that no refreshed pair is ever lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import aiohttp

from tesla_smart_charger.car.tokens import TokenManager, TokenStore
from tesla_smart_charger.control.events import Event


async def _refresh_loop(store_path: Path, token_url: str, client_id: str) -> None:
    """Keep one store refreshed forever (used by the kill test as a stand-in daemon)."""
    queue: asyncio.Queue[Event] = asyncio.Queue()
    async with aiohttp.ClientSession() as session:
        manager = TokenManager(
            TokenStore(store_path),
            session,
            token_url=token_url,
            client_id=client_id,
            store_poll_secs=0.2,
        )
        task = asyncio.create_task(manager.run(queue))
        print("ready", flush=True)  # a protocol line for the parent
        try:
            while True:
                event = await queue.get()
                print(type(event).__name__, flush=True)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def main(argv: list[str] | None = None) -> int:
    """Entry point for the refresh loop."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4 or args[0] != "--refresh-loop":
        print(
            "usage: python -m tests.helpers.refresh_loop --refresh-loop STORE TOKEN_URL CLIENT_ID",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_refresh_loop(Path(args[1]), args[2], args[3]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
