"""A real mosquitto on a free 127.0.0.1 port, and a bridge child process, for tests/integration/test_mqtt.py.

`python -m tests.helpers.mqtt_broker PORT` runs an MqttBridge with a stub snapshot until killed, so the
tests can SIGKILL a real client and watch the broker publish its last will.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tesla_smart_charger.config.mqtt_url import MqttUrl
from tesla_smart_charger.homeassistant.mqtt import BridgeConfig, Car, MqttBridge
from tests.helpers.status import sample_status

_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
MOSQUITTO = shutil.which("mosquitto", path=_PATH)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd", path=_PATH)


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Broker:
    """mosquitto with a generated config: no persistence, 127.0.0.1 only.

    Anonymous, or with `users` ({name: password}) only those users may connect.
    """

    def __init__(
        self, folder: Path, port: int | None = None, users: dict[str, str] | None = None
    ) -> None:
        assert MOSQUITTO is not None
        # mosquitto cannot listen on port 0 and report it: a port that was free a moment ago,
        # and another one if a suite beside us took it meanwhile (see start).
        self.chosen = port is None
        self.port = port or free_port()
        self.access = ""
        self.conf = folder / "mosquitto.conf"
        self.log = folder / "mosquitto.log"
        access = "allow_anonymous true\n"
        if users:
            assert MOSQUITTO_PASSWD is not None
            passwords = folder / "passwords"
            for i, (name, password) in enumerate(users.items()):
                subprocess.run(  # noqa: S603 (the system's mosquitto_passwd, test values)
                    [
                        MOSQUITTO_PASSWD,
                        "-b",
                        *(["-c"] if i == 0 else []),
                        str(passwords),
                        name,
                        password,
                    ],
                    check=True,
                    capture_output=True,
                )
            passwords.chmod(0o600)
            access = f"allow_anonymous false\npassword_file {passwords}\n"
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # As root, mosquitto would switch to its own user, who cannot read pytest's tmp dir.
            access += "user root\n"
        self.access = access
        self.write_conf()
        self.proc: subprocess.Popen[bytes] | None = None

    def write_conf(self) -> None:
        """mosquitto.conf for the current port."""
        access = self.access
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            f"{access}"
            "persistence false\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n",
            encoding="utf-8",
        )

    def start(self, timeout: float = 30.0) -> None:
        """Start and wait until the port accepts connections (on a fresh port if ours was taken)."""
        for _ in range(2):
            try:
                self._start(timeout)
            except RuntimeError:
                if not self.chosen or not self.port_taken():
                    raise
            else:
                return
            self.port = free_port()
            self.write_conf()
        self._start(timeout)

    def port_taken(self) -> bool:
        """mosquitto exited because another process listens on our port."""
        return "Address already in use" in (self.log.read_text() if self.log.exists() else "")

    def _start(self, timeout: float) -> None:
        assert MOSQUITTO is not None
        self.proc = subprocess.Popen(  # noqa: S603 (the system's mosquitto, our own config)
            [MOSQUITTO, "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text() if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)  # polling for readiness with a deadline, not synchronisation
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None


def bridge_config(port: int) -> BridgeConfig:
    """The bridge settings the tests use: one car, three phases."""
    return BridgeConfig(
        url=MqttUrl(host="127.0.0.1", port=port),
        cars=(Car(vin="5YJ3E7EB2KF000001", min_amps=6, max_amps=16),),
        home_max_amps=25.0,
        supply_phases=3,
    )


class _NoControls:
    def set_driver_limit(self, vin: str, amps: int) -> str | None:
        return None

    def set_mode(self, vin: str, mode: str) -> str | None:
        return None


async def _child(port: int) -> None:
    bridge = MqttBridge(bridge_config(port), sample_status, _NoControls())
    await bridge.run()


if __name__ == "__main__":
    asyncio.run(_child(int(sys.argv[1])))
