"""Log output: human lines by default, one JSON object per line for log shippers.

A `RedactingFilter` on our handler replaces every registered secret with `***`, as defence
in depth: code must not log secrets in the first place, but a token inside an exception
message from a library must not reach the journal either.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, TextIO
from urllib.parse import quote

from aiohttp.http_exceptions import HttpProcessingError

if TYPE_CHECKING:
    from tesla_smart_charger.config.settings import Settings

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PLAIN_DATEFMT = "%Y-%m-%d %H:%M:%S"
REDACTED = "***"
# Shorter values would mask ordinary words and numbers in every line.
MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Mask this value (and its URL-encoded form) in every log line from now on."""
    global _secrets  # noqa: PLW0603 (one process-wide registry, swapped atomically)
    if len(value) < MIN_SECRET_LENGTH:
        return
    variants = {value, quote(value, safe="")}
    with _lock:
        # Longest first, so a secret containing another is masked whole.
        _secrets = tuple(sorted(set(_secrets) | variants, key=len, reverse=True))


def register_config_secrets(s: Settings) -> None:
    """Mask every secret of the configuration: the daemon and the setup commands alike."""
    for secret in (
        s.tesla_access_token,
        s.tesla_refresh_token,
        s.tesla_client_secret,
        s.api_token,
        s.energy_monitor_password,
        s.safety_relay_password,
        s.grid_limit_input_password,
        s.alert_webhook,
    ):
        if secret is not None:
            register_secret(secret.get_secret_value())
    if s.mqtt_url is not None and "@" in s.mqtt_url.get_secret_value():
        # The whole URL carries the broker password (the bridge also masks the password alone);
        # without credentials it stays readable, so log lines can name the broker.
        register_secret(s.mqtt_url.get_secret_value())


def clear_secrets() -> None:
    """Forget every registered secret (tests; a reload that replaces tokens)."""
    global _secrets  # noqa: PLW0603 (see register_secret)
    with _lock:
        _secrets = ()


def redact(text: str) -> str:
    """The text with every registered secret replaced by `***`."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


# A JWT (three base64url parts), or any long unbroken base64/base64url run: what a token looks
# like even when we do not hold it (an echoed header, someone else's token). Paths, host names
# and VINs have separators or are shorter.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*)?")
_LONG_RUN = re.compile(r"(?<![A-Za-z0-9+_-])[A-Za-z0-9+_-]{32,}={0,2}")


def _mask_random(match: re.Match[str]) -> str:
    """Mask a long run only if it looks random: upper, lower case and digits mixed."""
    run = match.group(0)
    if (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
    ):
        return REDACTED
    return run


def scrub(text: str) -> str:
    """Text that came from outside, with every secret we hold and anything token-shaped masked.

    The one mechanism for every surface (logs, /status, /events, /api/history, CLI output):
    call it on reply bodies, error fields and exception messages BEFORE truncating or
    storing them, so no prefix of a token survives a cut.
    """
    return _LONG_RUN.sub(_mask_random, _JWT.sub(REDACTED, redact(text)))


class RedactingFilter(logging.Filter):
    """Rewrites the record's message and exception text with secrets masked; drops nothing."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (bad %-args: logging must not raise, nor print the args)
            message = f"{record.msg} [unformattable log arguments dropped]"
        record.msg = scrub(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a malformed HTTP request (bad Content-Length, header too long, …) as an
    ERROR with a traceback, once per request: anyone on the network could flood the journal.
    Such a record becomes one DEBUG line without the traceback (dropped unless DEBUG is on).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(exc, HttpProcessingError):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        record.msg = f"{record.getMessage()}: malformed request ({scrub(first)[:200]})"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg"}` plus `exc_info` (the traceback text) when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry)


class _Handler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed, so a second configure_logging replaces it."""


def _level(level: str) -> int:
    number = logging.getLevelNamesMapping().get(level.strip().upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING or ERROR)")
    return number


def configure_logging(
    level: str = "INFO",
    fmt: Literal["plain", "json"] = "plain",
    stream: TextIO | None = None,
) -> None:
    """Install one handler on the root logger (replacing ours from an earlier call)."""
    number = _level(level)
    if fmt not in ("plain", "json"):
        raise ValueError(f"unknown log format {fmt!r} (use plain or json)")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(sys.stderr if stream is None else stream)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter(PLAIN_FORMAT, PLAIN_DATEFMT)
    )
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(number)
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequestFilter) for f in server.filters):
        server.addFilter(MalformedRequestFilter())
    # One access line per meter push or dashboard poll drowns everything else.
    logging.getLogger("aiohttp.access").setLevel(
        logging.NOTSET if number <= logging.DEBUG else logging.WARNING
    )
