"""The broker address and topic prefixes of the MQTT keys, parsed without aiomqtt.

The settings validate these keys and the Home Assistant bridge connects with the result, so the
parsers live below both: the settings never import the bridge that reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_URL_HINT = "must be mqtt://[user[:password]@]host[:port] or mqtts://[user[:password]@]host[:port]"


@dataclass(frozen=True)
class MqttUrl:
    """The broker address; the password never appears in repr or str."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        """`mqtt://host:port`, without credentials (safe for logs)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


def parse_mqtt_url(text: str) -> MqttUrl:
    """Parse `mqttUrl`; the error names the key and never echoes the value (it holds a secret)."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"mqttUrl {_URL_HINT}")
    if not parts.hostname:
        raise ValueError(f"mqttUrl has no host: it {_URL_HINT}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("mqttUrl has an invalid port (1-65535)") from None
    if port == 0:
        raise ValueError("mqttUrl has an invalid port (1-65535)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("mqttUrl must not contain a path or query")
    tls = parts.scheme == "mqtts"
    return MqttUrl(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def check_topic_prefix(value: str, key: str) -> str:
    """A topic prefix: non-empty, no wildcards, no leading or trailing slash."""
    text = value.strip()
    if not text or text.startswith("/") or text.endswith("/"):
        raise ValueError(
            f"{key} must be a topic like 'tesla-smart-charger' (no leading or trailing /)"
        )
    if any(c in text for c in "+#\0"):
        raise ValueError(f"{key} must not contain the MQTT wildcards + or #")
    return text
