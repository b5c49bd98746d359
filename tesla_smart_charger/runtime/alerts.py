"""The `alertWebhook` sender: one JSON POST per episode step, never in the way of control.

`AlertSender.send()` is synchronous and only puts the alert on a bounded queue: the charge
controller never waits for a webhook. A tracked task (`run()`) delivers the queue in order, with
its own capped, jittered retries; when the queue is full the oldest alert is dropped and
counted. A webhook that stops accepting is logged once when that starts and once when it ends.
The body is plain JSON, which Home Assistant webhooks and ntfy take as is:
`{"event": ..., "message": ..., "at": "<ISO 8601>", "house_amps": [...], "limit": N}`.
The URL may carry a secret (a webhook id, an ntfy topic): logs name only its host.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)
from tenacity.wait import wait_base

from tesla_smart_charger.errors import AlertError

_LOGGER = logging.getLogger(__name__)

ALERT_TOTAL_TIMEOUT: Final = 10.0
ALERT_CONNECT_TIMEOUT: Final = 3.0
ALERT_ATTEMPTS: Final = 4
ALERT_RETRY_MAX_WAIT: Final = 30.0
ALERT_QUEUE_SIZE: Final = 32
DEFAULT_ALERT_WAIT: Final[wait_base] = wait_random_exponential(
    multiplier=1.0, max=ALERT_RETRY_MAX_WAIT
)


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """One alert as it goes on the wire."""

    event: str
    message: str
    at: str  # ISO 8601 with the UTC offset
    house_amps: tuple[float, ...]
    limit: float

    def as_json(self) -> dict[str, Any]:
        """The POST body."""
        return {
            "event": self.event,
            "message": self.message,
            "at": self.at,
            "house_amps": [round(a, 1) for a in self.house_amps],
            "limit": self.limit,
        }


class _Permanent(Exception):
    """A 4xx the webhook will give again (wrong URL): not retried."""


class AlertSender:
    """Queues alerts and delivers them to `alertWebhook` from its own task."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        queue_size: int = ALERT_QUEUE_SIZE,
        attempts: int = ALERT_ATTEMPTS,
        retry_wait: wait_base = DEFAULT_ALERT_WAIT,
        timeout: aiohttp.ClientTimeout | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if queue_size < 1 or attempts < 1:
            raise ValueError("queue_size and attempts must be at least 1")
        self._session = session
        self._url = url
        self._host = urlsplit(url).hostname or "?"
        self._queue: deque[AlertMessage] = deque()
        self._queue_size = queue_size
        self._wakeup = asyncio.Event()
        self._attempts = attempts
        self._retry_wait = retry_wait
        self._timeout = timeout or aiohttp.ClientTimeout(
            total=ALERT_TOTAL_TIMEOUT, connect=ALERT_CONNECT_TIMEOUT
        )
        self._wall_clock = wall_clock
        self._failing = False
        self._dropping = False
        self._in_flight = False
        self._settled = asyncio.Condition()
        self.sent = 0
        self.failed = 0  # alerts given up on after every attempt
        self.dropped = 0  # alerts pushed out of a full queue

    def __repr__(self) -> str:
        return f"AlertSender(host={self._host!r}, queued={len(self._queue)})"

    @property
    def queued(self) -> int:
        """Alerts waiting for delivery."""
        return len(self._queue)

    def send(
        self, event: str, message: str, *, house_amps: Sequence[float], limit: float
    ) -> AlertMessage:
        """Queue one alert and return at once; a full queue drops its oldest alert."""
        at = dt.datetime.fromtimestamp(self._wall_clock(), dt.UTC).isoformat(timespec="seconds")
        alert = AlertMessage(event, message, at, tuple(house_amps), limit)
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self.dropped += 1
            if not self._dropping:
                self._dropping = True
                _LOGGER.warning(
                    "alert webhook at %s is not keeping up: dropping the oldest alerts", self._host
                )
        self._queue.append(alert)
        self._wakeup.set()
        return alert

    @property
    def failing(self) -> bool:
        """The last alert could not be delivered (until one is again)."""
        return self._failing

    def as_dict(self) -> dict[str, Any]:
        """Counters for /status and /metrics."""
        return {
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "queued": self.queued,
            "failing": self._failing,
        }

    async def drain(self) -> None:
        """Return once every queued alert was delivered or given up (bound it with a timeout).

        For a shutdown that wants the last alerts out, and for tests.
        """
        async with self._settled:
            await self._settled.wait_for(lambda: not self._queue and not self._in_flight)

    async def run(self) -> None:
        """Deliver queued alerts forever (run it as a tracked task; cancel to stop)."""
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            alert = self._queue[0]
            self._in_flight = True
            try:
                ok = await self._deliver(alert)
            finally:
                self._in_flight = False
            if self._queue and self._queue[0] is alert:  # not dropped meanwhile
                self._queue.popleft()
            if not self._queue:
                self._dropping = False
            if ok:
                self.sent += 1
                if self._failing:
                    self._failing = False
                    _LOGGER.info("alert webhook at %s accepts alerts again", self._host)
            else:
                self.failed += 1
            async with self._settled:
                self._settled.notify_all()

    async def _deliver(self, alert: AlertMessage) -> bool:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(AlertError),
            stop=stop_after_attempt(self._attempts),
            wait=self._retry_wait,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post(alert)
        except (AlertError, _Permanent) as err:
            if not self._failing:
                self._failing = True
                _LOGGER.warning("alert %r not delivered: %s", alert.event, err)
            return False
        return True

    async def _post(self, alert: AlertMessage) -> None:
        try:
            async with self._session.post(
                self._url, json=alert.as_json(), timeout=self._timeout
            ) as resp:
                status = resp.status
                await resp.read()
        except TimeoutError as err:
            raise AlertError(
                f"alert webhook at {self._host}: no answer within {self._timeout.total:g} s"
            ) from err
        except (aiohttp.ClientError, OSError) as err:
            raise AlertError(f"alert webhook at {self._host}: cannot reach it") from err
        if 200 <= status < 300:
            return
        if 400 <= status < 500 and status not in (408, 429):
            raise _Permanent(
                f"alert webhook at {self._host} answered HTTP {status}: check alertWebhook"
            )
        raise AlertError(f"alert webhook at {self._host} answered HTTP {status}")
