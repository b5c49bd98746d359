"""The sd_notify protocol, spoken directly: READY, STATUS, WATCHDOG and STOPPING datagrams.

systemd (`Type=notify`) passes `NOTIFY_SOCKET`; we send newline-separated `KEY=value` lines as
one datagram to that AF_UNIX socket. No libsystemd dependency: the protocol is a single
`sendto`. Without `NOTIFY_SOCKET` (a terminal, a container) every call is a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Final

_LOG = logging.getLogger(__name__)

# A datagram to a local socket either goes at once or the receiver is wedged: never block
# the event loop for longer than this.
SEND_TIMEOUT: Final = 0.5


def _address(socket_path: str) -> str | None:
    """Socket address for a NOTIFY_SOCKET value; None for forms we do not speak (vsock:)."""
    if socket_path.startswith("/"):
        return socket_path
    if socket_path.startswith("@") and len(socket_path) > 1 and sys.platform == "linux":
        # Abstract namespace: a leading NUL byte instead of the '@'.
        return "\0" + socket_path[1:]
    return None


def _clean(value: str) -> str:
    """One protocol line per field: a newline inside a value would start a forged field."""
    return value.replace("\r", " ").replace("\n", " ")


class Notifier:
    """Send sd_notify messages to systemd; silently disabled when NOTIFY_SOCKET is unset."""

    def __init__(self, socket_path: str | None = None) -> None:
        raw = os.environ.get("NOTIFY_SOCKET", "") if socket_path is None else socket_path
        self._address = _address(raw) if raw else None
        if raw and self._address is None:
            _LOG.debug("NOTIFY_SOCKET %r is not an AF_UNIX path; sd_notify disabled", raw)
        self._failure_logged = False

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify."""
        return self._address is not None

    def notify(self, **fields: str) -> None:
        """Send the fields as one datagram (`READY="1"` -> `READY=1`); never raises."""
        if self._address is None or not fields:
            return
        message = "\n".join(f"{key}={_clean(value)}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto(message.encode("utf-8"), self._address)
        except OSError as err:
            # systemd may be gone during shutdown; one line is enough to diagnose a bad socket.
            if not self._failure_logged:
                self._failure_logged = True
                _LOG.debug("sd_notify to %r failed: %s", self._address.lstrip("\0"), err)

    def ready(self, status: str) -> None:
        """Startup finished: systemd considers the unit started."""
        self.notify(READY="1", STATUS=status)

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.notify(STOPPING="1")

    def status(self, text: str) -> None:
        """Free-form status shown by `systemctl status`."""
        self.notify(STATUS=text)

    def watchdog(self) -> None:
        """Keep-alive ping for `WatchdogSec=`."""
        self.notify(WATCHDOG="1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog applies to us."""
        if not self.enabled:
            return None
        usec = os.environ.get("WATCHDOG_USEC", "").strip()
        pid = os.environ.get("WATCHDOG_PID", "").strip()
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None  # meant for another process (we were exec'd by a wrapper)
            except ValueError:
                return None
        try:
            period = int(usec)
        except ValueError:
            return None
        if period <= 0:
            return None
        return period / 1_000_000 / 2


async def watchdog_loop(
    notifier: Notifier,
    healthy: Callable[[], bool],
    status: Callable[[], str],
    *,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Ping the watchdog with the current status while healthy; returns at once without one.

    When `healthy()` is False (or raises) the ping is withheld, so systemd kills and restarts
    a daemon whose control loop has stalled instead of keeping a zombie alive.
    """
    interval = notifier.watchdog_interval()
    if interval is None:
        return
    was_healthy = True
    while True:
        try:
            ok = healthy()
            text = status() if ok else ""
        except Exception:  # noqa: BLE001 (any failure of the probe means "unhealthy")
            if was_healthy:
                _LOG.exception("health check raised; withholding watchdog pings")
            was_healthy = False
        else:
            if ok:
                notifier.notify(WATCHDOG="1", STATUS=text)
                if not was_healthy:
                    _LOG.info("healthy again; watchdog pings resumed")
            elif was_healthy:
                _LOG.warning(
                    "unhealthy; withholding watchdog pings so systemd restarts the service"
                )
            was_healthy = ok
        await sleep(interval)
