"""Log formats, secret redaction and logger levels."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from tesla_smart_charger.config.settings import SECRET_FIELDS, Settings
from tesla_smart_charger.logging_setup import (
    RedactingFilter,
    clear_secrets,
    configure_logging,
    register_config_secrets,
    register_secret,
    scrub,
)

LOG = logging.getLogger("tesla_smart_charger.control")
TOKEN = "eyJhbGciOi.secret-access-token+/="


def _fail(err: Exception) -> None:
    raise err


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    access = logging.getLogger("aiohttp.access")
    access_level = access.level
    clear_secrets()
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    access.setLevel(access_level)
    clear_secrets()


def test_plain_lines_are_human_readable() -> None:
    out = io.StringIO()
    configure_logging("INFO", "plain", out)
    LOG.info("set %d A (%s)", 12, "headroom")
    LOG.debug("not shown at INFO")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO tesla_smart_charger\.control: set 12 A \(headroom\)",
        lines[0],
    )


def test_json_is_one_object_per_line_with_traceback() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", out)
    LOG.debug("reading %s", "ok")
    try:
        _fail(ValueError("bad field 'emeters'"))
    except ValueError:
        LOG.exception("meter reply rejected")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "msg"}
    assert first["level"] == "DEBUG"
    assert first["logger"] == "tesla_smart_charger.control"
    assert first["msg"] == "reading ok"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", first["ts"])
    assert second["level"] == "ERROR"
    assert "Traceback" in second["exc_info"]
    assert "ValueError: bad field 'emeters'" in second["exc_info"]


@pytest.mark.parametrize("fmt", ["plain", "json"])
def test_registered_secrets_are_masked_everywhere(fmt: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", "plain" if fmt == "plain" else "json", out)
    register_secret(TOKEN)
    LOG.info("token is %s", TOKEN)
    LOG.warning("url https://proxy/?token=%s", "eyJhbGciOi.secret-access-token%2B%2F%3D")
    try:
        _fail(RuntimeError(f"library echoed Bearer {TOKEN}"))
    except RuntimeError:
        LOG.exception("refresh failed")
    text = out.getvalue()
    assert "secret-access-token" not in text
    assert text.count("***") == 3  # the message, the URL-encoded form, the exception text


def test_short_values_are_not_registered() -> None:
    out = io.StringIO()
    configure_logging("INFO", "plain", out)
    register_secret("12345")
    register_secret("")
    LOG.info("limit 12345 A")
    assert "limit 12345 A" in out.getvalue()


def test_filter_survives_bad_format_arguments() -> None:
    register_secret(TOKEN)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d amps", (TOKEN,), None)
    assert RedactingFilter().filter(record)
    assert TOKEN not in record.getMessage()
    assert "unformattable" in record.getMessage()


def test_reconfiguring_replaces_our_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "plain", first)
    configure_logging("INFO", "json", second)
    LOG.info("once")
    assert first.getvalue() == ""
    assert json.loads(second.getvalue())["msg"] == "once"


def test_aiohttp_access_is_quiet_unless_debug() -> None:
    access = logging.getLogger("aiohttp.access")
    configure_logging("INFO", "plain", io.StringIO())
    assert access.getEffectiveLevel() == logging.WARNING
    configure_logging("DEBUG", "plain", io.StringIO())
    assert access.getEffectiveLevel() == logging.DEBUG


def test_unknown_level_or_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD")
    with pytest.raises(ValueError, match="unknown log format"):
        configure_logging("INFO", "xml", io.StringIO())  # type: ignore[arg-type]


def test_every_secret_of_the_config_is_masked() -> None:
    # The daemon and the setup commands (doctor) register the same list; a new secret key
    # left out of it fails here.
    values = {name: SecretStr(f"s3cret-{name}-value") for name in SECRET_FIELDS}
    values["mqtt_url"] = SecretStr("mqtt://ha:brokerpass@127.0.0.1:1883")
    fields: dict[str, Any] = dict(values)
    register_config_secrets(Settings.model_construct(**fields))
    for name, value in values.items():
        assert scrub(f"got {value.get_secret_value()} here") == "got *** here", name
    clear_secrets()
    # an MQTT URL without credentials stays readable (log lines name the broker)
    register_config_secrets(Settings.model_construct(mqtt_url=SecretStr("mqtt://127.0.0.1:1883")))
    assert scrub("broker mqtt://127.0.0.1:1883") == "broker mqtt://127.0.0.1:1883"
