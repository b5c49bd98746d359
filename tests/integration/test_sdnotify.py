"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tesla_smart_charger.app.sdnotify import Notifier, watchdog_loop


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def systemd(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound datagram socket, as systemd provides, and its path."""
    path = str(tmp_path / "notify.sock")
    assert len(path) < 100, "AF_UNIX paths are limited to 108 bytes"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.setblocking(False)
        yield path, sock


def received(sock: socket.socket) -> list[str]:
    """Every datagram queued on the socket (sendto has completed before we read)."""
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096).decode("utf-8"))
        except BlockingIOError:
            return out


def test_each_message_is_one_exact_datagram(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    notifier = Notifier(path)
    assert notifier.enabled
    notifier.ready("measured mode, 16 A")
    notifier.status("holding 12 A")
    notifier.watchdog()
    notifier.stopping()
    assert received(sock) == [
        "READY=1\nSTATUS=measured mode, 16 A",
        "STATUS=holding 12 A",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_socket_path_defaults_to_environment(
    systemd: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = systemd
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    Notifier().notify(STATUS="from env")
    assert received(sock) == ["STATUS=from env"]


def test_newline_in_a_value_cannot_forge_a_field(systemd: tuple[str, socket.socket]) -> None:
    path, sock = systemd
    Notifier(path).status("line one\nREADY=1")
    assert received(sock) == ["STATUS=line one READY=1"]


@pytest.mark.skipif(sys.platform != "linux", reason="abstract namespace sockets are Linux-only")
def test_abstract_namespace_socket() -> None:
    name = f"tsc-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        Notifier("@" + name).ready("up")
        assert received(sock) == ["READY=1\nSTATUS=up"]


def test_disabled_without_socket_is_a_no_op() -> None:
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("up")  # must not raise
    notifier.watchdog()
    assert notifier.watchdog_interval() is None
    assert not Notifier("").enabled
    assert not Notifier("vsock:2:1234").enabled  # a form we do not speak: disabled, not broken


def test_send_failure_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert notifier.enabled
    with caplog.at_level(logging.DEBUG, logger="tesla_smart_charger.app.sdnotify"):
        notifier.watchdog()
        notifier.watchdog()
    failures = [r for r in caplog.records if "sd_notify" in r.getMessage()]
    assert len(failures) == 1
    assert failures[0].levelno == logging.DEBUG


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 15.0),
        ("30000000", "self", 15.0),
        ("30000000", "other", None),
        ("0", None, None),
        ("junk", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval_is_half_the_period(
    systemd: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    usec: str | None,
    pid: str | None,
    expected: float | None,
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid == "self":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    elif pid == "other":
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier(systemd[0]).watchdog_interval() == expected


class _Stop(Exception):
    """Ends the otherwise endless loop from the injected sleep."""


async def test_watchdog_loop_pings_only_while_healthy(
    systemd: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, sock = systemd
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    # One health answer per tick; the loop's own sleep is the clock we drive.
    health = iter([True, False, False, True])
    ticks: list[float] = []
    seen_per_tick: list[list[str]] = []

    async def fake_sleep(seconds: float) -> None:
        ticks.append(seconds)
        seen_per_tick.append(received(sock))
        if len(ticks) == 4:
            raise _Stop

    states = iter(["idle", "charging 10 A"])
    with pytest.raises(_Stop):
        await watchdog_loop(
            Notifier(path), lambda: next(health), lambda: next(states), sleep=fake_sleep
        )
    assert ticks == [5.0] * 4
    assert seen_per_tick == [
        ["WATCHDOG=1\nSTATUS=idle"],
        [],
        [],
        ["WATCHDOG=1\nSTATUS=charging 10 A"],
    ]


async def test_watchdog_loop_withholds_ping_when_health_check_raises(
    systemd: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path, sock = systemd
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    calls = 0

    def broken() -> bool:
        raise RuntimeError("controller task died")

    async def fake_sleep(seconds: float) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise _Stop

    with caplog.at_level(logging.ERROR), pytest.raises(_Stop):
        await watchdog_loop(Notifier(path), broken, lambda: "x", sleep=fake_sleep)
    assert received(sock) == []
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1  # not every tick


async def test_watchdog_loop_returns_at_once_without_watchdog(
    systemd: tuple[str, socket.socket],
) -> None:
    async def never(seconds: float) -> None:
        raise AssertionError("must not sleep")

    await watchdog_loop(Notifier(systemd[0]), lambda: True, lambda: "x", sleep=never)
    await watchdog_loop(Notifier(""), lambda: True, lambda: "x", sleep=never)
    assert received(systemd[1]) == []
