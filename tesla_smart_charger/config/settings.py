"""Configuration: the seed's `config.json` keys, kept, validated and documented.

The file uses the original camelCase keys (existing users keep their file). Environment
variables override it with a `TSC_` prefix and the snake_case name (`TSC_HOME_MAX_AMPS`).
Every problem is reported on its own line naming the key, the (masked) value and the source.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tesla_smart_charger.config.mqtt_url import check_topic_prefix, parse_mqtt_url
from tesla_smart_charger.errors import ConfigError

_LOG = logging.getLogger(__name__)

ENV_PREFIX = "TSC_"
# A house supply above this is a typo, not a breaker (and 10x it bounds plausible meter readings).
MAX_HOME_AMPS = 1000.0
# Below this a supply cannot feed a car at all: a typo (or a unit mix-up), not a breaker.
MIN_HOME_AMPS = 6.0
# The most any charger delivers (80 A: the old Wall Connector with the Model S dual charger).
MAX_CHARGER_AMPS = 80.0
# A margin this large leaves no room for a car on any house this daemon makes sense for.
MAX_SAFETY_MARGIN_AMPS = 20.0
DEFAULT_TOKEN_URL = "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token"  # noqa: S105 (a URL)
DEFAULT_AUTHORIZE_URL = "https://auth.tesla.com/oauth2/v3/authorize"
# tesla-http-proxy's URL when teslaHttpProxy is unset and there is no key to sign with.
DEFAULT_PROXY_URL = "https://localhost:4443"
# What `keygen` writes beside the config file; the signing key unless teslaPrivateKey says.
PRIVATE_KEY_FILE = "private-key.pem"

FLEET_API_BASES: dict[str, str] = {
    "na": "https://fleet-api.prd.na.vn.cloud.tesla.com",
    "eu": "https://fleet-api.prd.eu.vn.cloud.tesla.com",
    "cn": "https://fleet-api.prd.cn.vn.cloud.tesla.cn",
}
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


_NUMERIC_HOST_RE = re.compile(r"^[0-9.]+$")
# json.loads recurses per nesting level: refuse deep files before Python's stack does.
MAX_JSON_DEPTH = 32


def _as_str(value: Any) -> Any:
    """Accept numbers where the seed wrote ids as numbers (teslaVehicleId)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else str(value)
    return value


def _as_int(value: Any) -> Any:
    """Accept "8000" and "8000.0" (the seed stored every value as a string)."""
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text)
        except ValueError:
            return value
        if number.is_integer():
            return int(number)
    return value


def _empty_as_none(value: Any) -> Any:
    """An empty string in the file means "not set", as the seed's template did."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


# 0 lets the OS pick a free port: daemons side by side (tests, a second instance) never race.
Port = Annotated[int, BeforeValidator(_as_int), Field(ge=0, le=65535)]
OptStr = Annotated[str | None, BeforeValidator(_empty_as_none)]
OptSecret = Annotated[SecretStr | None, BeforeValidator(_empty_as_none)]


def _check_http_url(value: str, key: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL with a host")
    try:
        _ = parts.port
    except ValueError as err:
        raise ValueError(f"{key} has an invalid port") from err
    return value.strip().rstrip("/")


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_][a-z0-9_-]{0,62})*\.?$"
)


def _check_host_names(value: list[str]) -> list[str]:
    """Host names (or addresses) as a browser puts them in Host, without port or scheme."""
    out = []
    for raw in value:
        name = raw.strip().lower()
        bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if not _HOST_NAME.match(name):
                raise ValueError(
                    f"{raw!r} is not a host name (give names like charger.local, "
                    "without http:// or a port)"
                ) from None
        out.append(bare.rstrip("."))
    return out


def normalize_host_url(value: str) -> str:
    """Turn `host`, `host:port` or `http://host[:port]` into `http://host[:port]`."""
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise ValueError("must be a host, host:port or an http:// URL (Shelly speaks plain HTTP)")
    host = parts.hostname or ""
    if host and _NUMERIC_HOST_RE.match(host):
        # 999.1.1.1 passes as a host name, but no resolver will ever find it.
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError("is not a valid IP address") from None
    try:
        port = parts.port
    except ValueError as err:
        raise ValueError("has an invalid port") from err
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME_RE.match(host):
            raise ValueError("is not a valid host name or IP address") from None
    if parts.path not in ("", "/") or parts.query:
        raise ValueError("must not contain a path or query")
    netloc = f"[{host}]" if ":" in host else host
    return f"http://{netloc}" + (f":{port}" if port else "")


ChargeMode = Literal["fast", "solar", "minsolar"]
CHARGE_MODES: tuple[str, ...] = ("fast", "solar", "minsolar")


class VehicleSettings(BaseModel):
    """One car of `vehicles`; a key left out takes the top-level value (priority: 0)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,
        allow_inf_nan=False,
    )

    vin: Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9]+$")]
    name: Annotated[str | None, Field(max_length=60)] = None
    charger_min_amps: Annotated[float | None, Field(ge=0, le=MAX_CHARGER_AMPS)] = None
    charger_max_amps: Annotated[float | None, Field(ge=1, le=MAX_CHARGER_AMPS)] = None
    charger_phase: Annotated[int | None, Field(ge=1, le=3)] = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    mode: ChargeMode | None = None
    meter_charger_channel: Annotated[int | None, Field(ge=0, le=5)] = None
    tesla_ble_proxy: str | None = None


class Settings(BaseSettings):
    """Every configuration key. Field names are snake_case; the file uses camelCase."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
        # Infinity and NaN are valid JSON to Python and would switch protection off.
        allow_inf_nan=False,
    )

    # --- the seed's keys (names and meaning unchanged) ----------------------------------
    home_max_amps: Annotated[
        float,
        Field(
            ge=MIN_HOME_AMPS,
            le=MAX_HOME_AMPS,
            description="Supply limit of the house per phase (A): the main breaker's rating.",
        ),
    ]
    charger_max_amps: Annotated[
        float,
        Field(
            ge=1, le=MAX_CHARGER_AMPS, description="Most amps the car may be asked to charge at."
        ),
    ] = 16.0
    charger_min_amps: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_CHARGER_AMPS,
            description="Fewest amps the controller commands (the fail-safe value). Below 5 A is sent twice, as the car requires.",
        ),
    ] = 6.0
    down_step_percentage: Annotated[
        float,
        Field(
            ge=0.05,
            le=0.95,
            description="Push mode: on /overload, new amps = floor(amps x this). Below 1, or an overload would change nothing.",
        ),
    ] = 0.5
    up_step_percentage: Annotated[
        float,
        Field(
            ge=0.01,
            le=1,
            description="Push mode: after each quiet sleepTimeSecs, raise by this share of the amps (at least 1 A).",
        ),
    ] = 0.25
    sleep_time_secs: Annotated[
        float,
        Field(
            ge=1,
            le=3600,
            description="Settle time after a change; also how long headroom must last before a raise (raising is deliberate: at least a second).",
        ),
    ] = 20.0
    energy_monitor_ip: Annotated[
        OptStr,
        Field(
            description="Meter address: host, host:port or http://host[:port]. Needed for --monitor."
        ),
    ] = None
    energy_monitor_type: Annotated[
        Literal["shelly-em", "shelly-3em", "shelly-gen2", "shelly"],
        Field(
            description="Meter driver: shelly-em (Gen1 EM), shelly-3em (Gen1 3EM), shelly-gen2 (Pro/Gen2+ RPC) or shelly (detect)."
        ),
    ] = "shelly-em"
    host_ip: Annotated[
        OptStr,
        Field(
            description="Seed key, accepted and no longer needed: the meter loop no longer calls its own HTTP API."
        ),
    ] = None
    api_port: Annotated[
        Port,
        Field(
            description="Port of the HTTP API. 0 takes any free port: the log's `listening on` line and `run --port-file` name it."
        ),
    ] = 8000
    tesla_vehicle_id: Annotated[
        str,
        BeforeValidator(_as_str),
        Field(
            description="The car's 17-character VIN, or its numeric Fleet id (the VIN is then looked up once). Required unless `vehicles` lists the cars; left out then, it is the first car's VIN.",
        ),
    ] = ""
    tesla_access_token: Annotated[
        OptSecret,
        Field(description="Seeds the token store on first start; the store wins afterwards."),
    ] = None
    tesla_refresh_token: Annotated[
        OptSecret,
        Field(description="Seeds the token store on first start; the store wins afterwards."),
    ] = None
    tesla_http_proxy: Annotated[
        OptStr,
        Field(
            description="URL of tesla-http-proxy, if you run it (it speaks HTTPS only; http:// is accepted with a warning). Unset: the charger signs commands itself with teslaPrivateKey; without that key, https://localhost:4443 as before.",
        ),
    ] = None
    tesla_private_key: Annotated[
        Path | None,
        BeforeValidator(_empty_as_none),
        Field(
            description="The P-256 key that signs car commands when teslaHttpProxy is unset (keygen writes it). Default: private-key.pem beside the config file.",
        ),
    ] = None
    tesla_client_id: Annotated[
        OptStr,
        Field(
            description="Client id of your Tesla developer application (token refresh and setup)."
        ),
    ] = None

    # --- new keys -------------------------------------------------------------------------
    api_host: Annotated[
        str, Field(min_length=1, description="Address the HTTP API listens on.")
    ] = "0.0.0.0"
    api_token: Annotated[
        OptSecret,
        Field(
            description="Shared secret required by /overload and every state-changing endpoint (?token= or Authorization: Bearer)."
        ),
    ] = None
    api_allowed_hosts: Annotated[
        list[str],
        AfterValidator(_check_host_names),
        Field(
            description="More names the HTTP API answers to (a reverse proxy's or a DNS name such "
            "as charger.local). It always answers to localhost, 127.0.0.1, [::1] and apiHost, and, "
            "when apiHost is 0.0.0.0 or ::, to any IP address; a request for another name is "
            "refused with 421 (a web page using DNS rebinding)."
        ),
    ] = []
    tesla_http_proxy_ca_file: Annotated[
        Path | None,
        BeforeValidator(_empty_as_none),
        Field(
            description="CA certificate that signed the proxy's TLS certificate. Verification stays on for https."
        ),
    ] = None
    energy_monitor_poll_secs: Annotated[
        float,
        Field(
            ge=0.2,
            le=40,
            description="Meter poll period in measured mode; at most a third of energyMonitorStaleSecs.",
        ),
    ] = 1.0
    energy_monitor_stale_secs: Annotated[
        float,
        Field(
            ge=2,
            le=120,
            description="No valid reading for this long: fall back to chargerMinAmps.",
        ),
    ] = 10.0
    energy_monitor_user: Annotated[
        OptStr, Field(description="Meter user name (Gen1 basic auth; Gen2 always uses admin).")
    ] = None
    energy_monitor_password: Annotated[OptSecret, Field(description="Meter password.")] = None
    energy_monitor_supply_channels: Annotated[
        list[Annotated[int, Field(ge=0, le=5)]] | None,
        Field(
            description="Meter channels that measure the house supply, summed per phase. Default: every channel (as the seed did)."
        ),
    ] = None
    energy_monitor_charger_channel: Annotated[
        int | None,
        Field(ge=0, le=5, description="Meter channel that measures the charger circuit, if any."),
    ] = None
    supply_phases: Annotated[
        Literal["auto", 1, 3],
        BeforeValidator(_as_int),
        Field(
            description="Phases of the house supply: 1, 3, or auto (what the meter reports: "
            "three for a Shelly 3EM or a Pro 3EM in its triphase profile, else one)."
        ),
    ] = "auto"
    charger_phase: Annotated[
        int,
        BeforeValidator(_as_int),
        Field(
            ge=1, le=3, description="Supply phase a single-phase car charges on (3-phase houses)."
        ),
    ] = 1
    mains_voltage: Annotated[
        float,
        Field(
            ge=90,
            le=500,
            description="Volts, used only where the meter reports none (100 V in Japan to 480 V).",
        ),
    ] = 230.0
    safety_margin_amps: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_SAFETY_MARGIN_AMPS,
            description="Measured mode keeps the worst phase this far below homeMaxAmps; less than homeMaxAmps.",
        ),
    ] = 1.0
    pause_when_overloaded: Annotated[
        bool,
        Field(
            description="Pause charging when the house, with the car(s) at chargerMinAmps, stays over the limit (after pauseAfterSecs, or sooner when the main breaker would heat up; the lowest-priority car first); start again once room for the minimum has lasted sleepTimeSecs. On by default: only an explicit false turns it off, and then nothing brings such an overload down (check-config and the log warn, /health is 503 while the supply stays over homeMaxAmps)."
        ),
    ] = True
    pause_after_secs: Annotated[
        float,
        Field(
            ge=1,
            le=3600,
            description="How long an overload the car cannot resolve lasts before charging is paused (pauseWhenOverloaded). The pause comes sooner when that overload would heat the main breaker: before a conservative breaker model (k 1.13, tau 40 s) would reach the 90 % warning of /health, and within half its time to trip, e.g. 17 s at 1.2 x homeMaxAmps; never later.",
        ),
    ] = 120.0
    car_settle_secs: Annotated[
        float,
        Field(
            ge=1,
            le=120,
            description="How long the car takes to follow a new setpoint (seconds, a real car ramps in several); readings are judged against the commanded value meanwhile.",
        ),
    ] = 8.0
    vehicle_check_secs: Annotated[
        float,
        Field(
            ge=300,
            le=86400,
            description="While charging, how often the car is looked at when the meter gives no reason to (one billed data call each).",
        ),
    ] = 3600.0
    mode: Annotated[
        ChargeMode,
        Field(
            description="How the car charges: fast (as fast as the house allows), solar (only the export surplus) or minsolar (chargerMinAmps always, plus the surplus above it). Changeable at runtime (POST /vehicles/{vin}/mode); the last choice is kept across restarts."
        ),
    ] = "fast"
    solar_import_tolerance_amps: Annotated[
        float,
        Field(
            ge=0,
            le=10,
            description="Solar mode: how many amps the car may import from the grid before it counts as not covered by the sun.",
        ),
    ] = 1.0
    solar_start_secs: Annotated[
        float,
        Field(
            ge=1,
            le=3600,
            description="Solar mode: the surplus must cover chargerMinAmps this long before charge_start (car awake only).",
        ),
    ] = 60.0
    solar_stop_secs: Annotated[
        float,
        Field(
            ge=1,
            le=7200,
            description="Solar mode: importing more than solarImportToleranceAmps at chargerMinAmps this long means charge_stop.",
        ),
    ] = 300.0
    cloud_commands_per_hour: Annotated[
        int,
        BeforeValidator(_as_int),
        Field(
            ge=1,
            le=1000,
            description="Most billed (cloud) commands we choose per car per hour (raises, solar starts/stops, lowerings the sun asks for); cuts the breaker needs are always sent and not counted, BLE is exempt.",
        ),
    ] = 20
    import_limit_kw: Annotated[
        float | None,
        Field(
            ge=0.5,
            le=250,
            description="Capacity tariff (Belgium, the Netherlands, Norway): the most the house may import on average over each importWindowMins window, in kW. The car(s) are throttled so the window's average stays under it (a margin below; export counts negative); the breaker limit still wins. Measured mode only. Unset: no capacity guard.",
        ),
    ] = None
    import_window_mins: Annotated[
        int,
        BeforeValidator(_as_int),
        Field(
            ge=1,
            le=60,
            description="The capacity tariff's window in minutes, aligned to the wall clock (:00, :15, ...): 15 in Belgium and the Netherlands, 60 in Norway. Must divide an hour.",
        ),
    ] = 15
    random_start_delay_secs: Annotated[
        float,
        Field(
            ge=0,
            le=1800,
            description="UK-style start delay: a start or a raise due at a boundary (daemon start, a new capacity window) waits a random 0 to this many seconds, so many chargers do not all jump at once. Cuts are never delayed. 0: no delay.",
        ),
    ] = 0.0
    vehicles: Annotated[
        list[VehicleSettings] | None,
        Field(
            min_length=1,
            max_length=8,
            description="Several cars on one supply: a list of {vin, name, chargerMinAmps, chargerMaxAmps, chargerPhase, priority, mode, meterChargerChannel, teslaBleProxy}. Without it the top-level keys describe the one car.",
        ),
    ] = None
    token_file: Annotated[
        Path | None,
        BeforeValidator(_empty_as_none),
        Field(description="Token store (mode 0600). Default: tokens.json beside the config file."),
    ] = None
    tesla_token_url: Annotated[str, Field(description="OAuth token endpoint.")] = DEFAULT_TOKEN_URL
    tesla_authorize_url: Annotated[str, Field(description="OAuth authorize page (auth url).")] = (
        DEFAULT_AUTHORIZE_URL
    )
    tesla_redirect_uri: Annotated[
        OptStr,
        Field(
            description="Redirect URI registered with your Tesla application (auth url / exchange)."
        ),
    ] = None
    tesla_region: Annotated[
        Literal["na", "eu", "cn"] | None,
        BeforeValidator(_empty_as_none),
        Field(description="Fleet API region; default from the token's region prefix, else na."),
    ] = None
    tesla_client_secret: Annotated[
        OptSecret, Field(description="Client secret; only the setup commands need it.")
    ] = None
    tesla_fleet_api_url: Annotated[
        OptStr,
        Field(description="Override the region's Fleet API base URL (audience and registration)."),
    ] = None

    # --- Home Assistant through MQTT ------------------------------------------------------
    mqtt_url: Annotated[
        OptSecret,
        Field(
            description="MQTT broker for Home Assistant discovery: mqtt://[user[:password]@]host[:port] or mqtts://…. Unset: no MQTT."
        ),
    ] = None
    mqtt_topic_prefix: Annotated[
        str, Field(description="Root of our MQTT topics (availability, state, commands).")
    ] = "tesla-smart-charger"
    mqtt_discovery_prefix: Annotated[
        str, Field(description="Home Assistant's MQTT discovery prefix.")
    ] = "homeassistant"

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_mqtt_url(value.get_secret_value())
        return value

    @field_validator("mqtt_topic_prefix", "mqtt_discovery_prefix")
    @classmethod
    def _mqtt_prefix(cls, value: str, info: ValidationInfo) -> str:
        return check_topic_prefix(value, to_camel(info.field_name or "topic prefix"))

    # --- when a cut may not land: BLE road, escalation, safety relay, alerts ----------
    tesla_ble_proxy: Annotated[
        OptStr,
        AfterValidator(lambda v: None if v is None else _check_http_url(v, "teslaBleProxy")),
        Field(
            description="URL of a local BLE bridge (TeslaBleHttpProxy, ESPHome Tesla BLE): tried first for every look and command, the cloud proxy only when it fails."
        ),
    ] = None
    escalate_after_secs: Annotated[
        float,
        Field(
            ge=5,
            le=120,
            description="A cut the car did not follow, still over homeMaxAmps this long: charge_stop; as long again: the safety relay off.",
        ),
    ] = 20.0
    safety_relay_ip: Annotated[
        OptStr,
        AfterValidator(lambda v: None if v is None else normalize_host_url(v)),
        Field(
            description="Shelly relay on the charger circuit (host, host:port or http://host[:port]): the last resort, switched off only after charge_stop failed."
        ),
    ] = None
    safety_relay_channel: Annotated[
        int,
        BeforeValidator(_as_int),
        Field(ge=0, le=3, description="Relay output (switch id) that feeds the charger."),
    ] = 0
    safety_relay_user: Annotated[
        OptStr, Field(description="Relay user name (Gen1 basic auth; Gen2 always uses admin).")
    ] = None
    safety_relay_password: Annotated[OptSecret, Field(description="Relay password.")] = None
    alert_webhook: Annotated[
        OptSecret,  # a Home Assistant webhook id or an ntfy topic is as good as a password
        AfterValidator(
            lambda v: (
                None
                if v is None
                else SecretStr(_check_http_url(v.get_secret_value(), "alertWebhook"))
            )
        ),
        Field(
            description="URL that receives one JSON POST per episode (escalation, relay, fail-safe, login required, a road down > 5 min): Home Assistant webhook, ntfy..."
        ),
    ] = None

    # --- the grid operator's limit (§14a-style) -------------------------------------------
    grid_limit_input: Annotated[
        OptStr,
        AfterValidator(lambda v: None if v is None else normalize_host_url(v)),
        Field(
            description="Shelly whose input is wired to the grid operator's control box contact (host, host:port or http://host[:port]; Gen1 /status inputs or Gen2 Input.GetStatus): input on = the grid limit is on. Unreachable counts as on (fail-safe)."
        ),
    ] = None
    grid_limit_input_id: Annotated[
        int,
        BeforeValidator(_as_int),
        Field(ge=0, le=3, description="Which input of that Shelly (input id, 0 for the first)."),
    ] = 0
    grid_limit_input_inverted: Annotated[
        bool,
        Field(
            description="The contact opens to limit (a normally closed contact): input off = the grid limit is on."
        ),
    ] = False
    grid_limit_input_password: Annotated[
        OptSecret, Field(description="Password of that Shelly (Gen1 user admin, Gen2 digest).")
    ] = None
    grid_limit_input_poll_secs: Annotated[
        float,
        Field(ge=0.2, le=10, description="How often the grid limit input is read, in seconds."),
    ] = 1.0
    grid_limit_topic: Annotated[
        OptStr,
        Field(
            description="MQTT topic (on mqttUrl's broker) that switches the grid limit: ON/OFF, true/false or 1/0; publish it retained. The broker gone counts as on (fail-safe)."
        ),
    ] = None
    grid_limit_kw: Annotated[
        float | None,
        Field(
            ge=1.0,
            le=100.0,
            description="Most the chargers together may draw while the grid limit is on, in kW. Default 4.2 per car (§14a EnWG), shared evenly; the breaker limit still applies when lower.",
        ),
    ] = None

    @field_validator("grid_limit_topic")
    @classmethod
    def _grid_topic(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = value.strip()
        if not text or any(c in text for c in "+#\0"):
            raise ValueError("gridLimitTopic must be one topic (no MQTT wildcards + or #)")
        return text

    @property
    def grid_limit_total_kw(self) -> float:
        """`gridLimitKw`, else 4.2 kW for every car."""
        if self.grid_limit_kw is not None:
            return self.grid_limit_kw
        return 4.2 * max(1, len(self.vehicles or ()))

    @model_validator(mode="after")
    def _vehicle_id_from_vehicles(self) -> Settings:
        # With `vehicles`, teslaVehicleId may be left out: the first car's VIN stands in, so
        # every single-car reader (check-config, doctor, MQTT) keeps a VIN to show.
        if not self.tesla_vehicle_id.strip() and self.vehicles:
            self.tesla_vehicle_id = self.vehicles[0].vin
        return self

    @field_validator("energy_monitor_type", mode="before")
    @classmethod
    def _meter_type(cls, value: Any) -> Any:
        # The seed's code accepted shelly_em while its README said shelly-em: take both.
        return value.strip().lower().replace("_", "-") if isinstance(value, str) else value

    @field_validator("energy_monitor_ip")
    @classmethod
    def _meter_url(cls, value: str | None) -> str | None:
        return None if value is None else normalize_host_url(value)

    @field_validator("tesla_http_proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, "teslaHttpProxy")

    @field_validator("tesla_token_url", "tesla_authorize_url")
    @classmethod
    def _oauth_url(cls, value: str) -> str:
        return _check_http_url(value, "URL")

    @field_validator("tesla_fleet_api_url", "tesla_redirect_uri")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value, "URL")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The environment overrides the file (which arrives as init kwargs)."""
        return (env_settings, init_settings)

    # --- derived values -------------------------------------------------------------------
    @property
    def cars(self) -> tuple[VehicleSettings, ...]:
        """Every car the daemon controls: `vehicles`, else the one car the top-level keys
        describe (teslaVehicleId and its amps, phase, mode and BLE bridge).

        So one car is a fleet of one and the daemon has one path from here to the commands,
        while the user's file (and /config, check-config, the error messages) keeps the keys
        the user wrote. The entry is built, not validated: teslaVehicleId has its own rules
        and a numeric Fleet id is looked up later.
        """
        if self.vehicles:
            return tuple(self.vehicles)
        return (
            VehicleSettings.model_construct(
                vin=self.tesla_vehicle_id,
                charger_min_amps=self.charger_min_amps,
                charger_max_amps=self.charger_max_amps,
                charger_phase=self.charger_phase,
                mode=self.mode,
                tesla_ble_proxy=self.tesla_ble_proxy,
            ),
        )

    @property
    def fleet_api_base(self) -> str:
        """Fleet API base URL of the configured or inferred region."""
        if self.tesla_fleet_api_url:
            return self.tesla_fleet_api_url
        return FLEET_API_BASES[self.region]

    @property
    def region(self) -> str:
        """`teslaRegion`, else the refresh token's region prefix (`EU_...`), else na."""
        if self.tesla_region:
            return self.tesla_region
        token = self.tesla_refresh_token.get_secret_value() if self.tesla_refresh_token else ""
        prefix = token.split("_", 1)[0].lower() if "_" in token else ""
        return prefix if prefix in FLEET_API_BASES else "na"


SECRET_FIELDS = frozenset(
    name
    for name, info in Settings.model_fields.items()
    if info.annotation is not None and "SecretStr" in str(info.annotation)
)
FIELD_BY_KEY: dict[str, str] = {to_camel(name): name for name in Settings.model_fields}
KEY_BY_FIELD: dict[str, str] = {name: key for key, name in FIELD_BY_KEY.items()}
REQUIRED_KEYS = frozenset(
    KEY_BY_FIELD[n] for n, info in Settings.model_fields.items() if info.is_required()
)


@dataclass(frozen=True)
class LoadedConfig:
    """The validated settings, where they came from, and warnings worth logging."""

    settings: Settings
    path: Path
    warnings: list[str] = field(default_factory=list)

    @property
    def token_file(self) -> Path:
        """The token store: `tokenFile`, relative to the config file, default tokens.json."""
        configured = self.settings.token_file
        if configured is None:
            return self.path.parent / "tokens.json"
        return configured if configured.is_absolute() else self.path.parent / configured

    @property
    def private_key_file(self) -> Path:
        """`teslaPrivateKey`, relative to the config file; default private-key.pem beside it."""
        configured = self.settings.tesla_private_key
        if configured is None:
            return self.path.parent / PRIVATE_KEY_FILE
        return configured if configured.is_absolute() else self.path.parent / configured

    @property
    def command_road(self) -> Literal["proxy", "signed"]:
        """How commands reach the car: tesla-http-proxy when configured, else signed by us
        when the private key exists, else the proxy at its old default URL."""
        if self.settings.tesla_http_proxy is not None:
            return "proxy"
        return "signed" if self.private_key_file.is_file() else "proxy"

    @property
    def car_api_url(self) -> str:
        """Where the car client sends requests: the proxy, or the region's Fleet API."""
        if self.command_road == "signed":
            return self.settings.fleet_api_base
        return self.settings.tesla_http_proxy or DEFAULT_PROXY_URL

    @property
    def proxy_ca_file(self) -> Path | None:
        """`teslaHttpProxyCaFile`, relative to the config file like every other path."""
        configured = self.settings.tesla_http_proxy_ca_file
        if configured is None or configured.is_absolute():
            return configured
        return self.path.parent / configured


def _mask(name: str, value: Any) -> str:
    if name in SECRET_FIELDS:
        return "'***'"
    return (
        json.dumps(value)
        if isinstance(value, str | int | float | bool | None | list)
        else repr(value)
    )


def _source(name: str, path: Path, environ: Mapping[str, str]) -> str:
    env_name = f"{ENV_PREFIX}{name.upper()}"
    if any(k.upper() == env_name for k in environ):
        return f"environment {env_name}"
    return str(path)


def cross_check(s: Settings) -> list[tuple[str, str]]:
    """Rules that involve more than one key: (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if not s.tesla_vehicle_id.strip():
        problems.append(
            (
                "tesla_vehicle_id",
                "teslaVehicleId: required key is missing: give the car's VIN here, "
                "or list the cars in `vehicles` (each with its vin)",
            )
        )
    if s.charger_min_amps > s.charger_max_amps:
        problems.append(
            (
                "charger_min_amps",
                f"chargerMinAmps ({s.charger_min_amps:g}) must not exceed chargerMaxAmps ({s.charger_max_amps:g})",
            )
        )
    if s.safety_margin_amps >= s.home_max_amps:
        problems.append(
            (
                "safety_margin_amps",
                f"safetyMarginAmps ({s.safety_margin_amps:g}) must be less than homeMaxAmps ({s.home_max_amps:g})",
            )
        )
    if s.charger_max_amps > s.home_max_amps:
        problems.append(
            (
                "charger_max_amps",
                f"chargerMaxAmps ({s.charger_max_amps:g}) must not exceed homeMaxAmps ({s.home_max_amps:g})",
            )
        )
    if (
        s.energy_monitor_charger_channel is not None
        and s.energy_monitor_supply_channels
        and s.energy_monitor_charger_channel in s.energy_monitor_supply_channels
    ):
        problems.append(
            (
                "energy_monitor_charger_channel",
                "energyMonitorChargerChannel must not also be one of energyMonitorSupplyChannels",
            )
        )
    if s.energy_monitor_poll_secs > s.energy_monitor_stale_secs / 3:
        problems.append(
            (
                "energy_monitor_poll_secs",
                f"energyMonitorPollSecs ({s.energy_monitor_poll_secs:g}) must be at most a third of energyMonitorStaleSecs ({s.energy_monitor_stale_secs:g}), so a missed poll or two does not trip the fail-safe",
            )
        )
    if s.supply_phases != "auto" and s.charger_phase > s.supply_phases:
        problems.append(
            (
                "charger_phase",
                f"chargerPhase ({s.charger_phase}) must not exceed supplyPhases ({s.supply_phases})",
            )
        )
    if s.grid_limit_topic is not None and s.mqtt_url is None:
        problems.append(
            ("grid_limit_topic", "gridLimitTopic needs mqttUrl: the broker the topic is on")
        )
    if 60 % s.import_window_mins:
        problems.append(
            (
                "import_window_mins",
                f"importWindowMins ({s.import_window_mins}) must divide an hour (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30 or 60), so the windows follow the clock",
            )
        )
    problems += [("vehicles", msg) for msg in _check_vehicles(s)]
    return problems


def _check_vehicles(s: Settings) -> list[str]:
    """`vehicles`: unique VINs, each car's amps within its own and the house's range."""
    problems: list[str] = []
    seen: set[str] = set()
    channels: dict[int, str] = {}  # meterChargerChannel -> the entry that measures on it
    for i, v in enumerate(s.vehicles or ()):
        where = f"vehicles[{i}]"
        if v.vin.upper() in seen:
            problems.append(f"{where}.vin: {v.vin[:40]!r} appears twice")
        seen.add(v.vin.upper())
        low = v.charger_min_amps if v.charger_min_amps is not None else s.charger_min_amps
        high = v.charger_max_amps if v.charger_max_amps is not None else s.charger_max_amps
        if low > high:
            problems.append(
                f"{where}.chargerMinAmps ({low:g}) must not exceed chargerMaxAmps ({high:g})"
            )
        if high > s.home_max_amps:
            problems.append(
                f"{where}.chargerMaxAmps ({high:g}) must not exceed homeMaxAmps ({s.home_max_amps:g})"
            )
        phase = v.charger_phase if v.charger_phase is not None else s.charger_phase
        if s.supply_phases != "auto" and phase > s.supply_phases:
            problems.append(
                f"{where}.chargerPhase ({phase}) must not exceed supplyPhases ({s.supply_phases})"
            )
        problems += _check_car_channel(s, where, v.meter_charger_channel, channels)
        if v.meter_charger_channel is not None:
            channels[v.meter_charger_channel] = where
    return problems


def _check_car_channel(
    s: Settings, where: str, channel: int | None, taken: dict[int, str]
) -> list[str]:
    """A car's meterChargerChannel measures that car alone: no supply channel, no other car's."""
    if channel is None:
        return []
    key = f"{where}.meterChargerChannel ({channel})"
    if s.energy_monitor_supply_channels and channel in s.energy_monitor_supply_channels:
        return [f"{key} must not also be one of energyMonitorSupplyChannels"]
    if channel in taken:
        return [f"{key} is already {taken[channel]}'s: each car needs its own channel"]
    if channel == s.energy_monitor_charger_channel and len(s.vehicles or ()) > 1:
        return [f"{key} must not be energyMonitorChargerChannel (that one measures every car)"]
    return []


def _json_depth_ok(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """False when brackets nest deeper than `limit` (strings skipped); cheap and iterative."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def parse_config_text(path: Path, data: bytes) -> tuple[dict[str, Any], list[str]]:
    """(the top-level object, warnings); ConfigError naming the file for every bad input."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(
            [f"{path}: not UTF-8 text (byte {err.start}); save the file as UTF-8"]
        ) from None
    if not _json_depth_ok(text):
        raise ConfigError(
            [f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels; a config file is flat"]
        )
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out and key not in duplicates:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        parsed = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as err:
        raise ConfigError(
            [f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"]
        ) from None
    except (RecursionError, ValueError) as err:
        raise ConfigError([f"{path}: invalid JSON: {type(err).__name__}"]) from None
    if not isinstance(parsed, dict):
        raise ConfigError([f"{path}: the top level must be a JSON object"])
    warnings = [
        f"{path}: key {key!r} appears more than once; the last value is used" for key in duplicates
    ]
    return parsed, warnings


def _read_config(path: Path) -> tuple[dict[str, Any], list[str]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config PATH)"]) from None
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    return parse_config_text(path, data)


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _config_warnings(path: Path, raw: Mapping[str, Any], s: Settings) -> list[str]:
    """Settings that work but leave a door open: worth a line at every start."""
    warnings: list[str] = []
    if s.tesla_http_proxy is not None and urlsplit(s.tesla_http_proxy).scheme == "http":
        warnings.append(
            f"teslaHttpProxy: {s.tesla_http_proxy} is http://, but tesla-http-proxy speaks HTTPS only; "
            "use https:// (with teslaHttpProxyCaFile for its self-signed certificate)"
        )
    secrets_in_file = sorted(
        key
        for key, value in raw.items()
        if FIELD_BY_KEY.get(key) in SECRET_FIELDS and isinstance(value, str) and value.strip()
    )
    if secrets_in_file:
        try:
            mode = path.stat().st_mode
        except OSError:
            mode = 0
        if mode & 0o044:
            warnings.append(
                f"{path} holds secrets ({', '.join(secrets_in_file)}) and other users can read it: "
                f"run chmod 600 {path}"
            )
    if not s.pause_when_overloaded:
        warnings.append(
            "pauseWhenOverloaded is false: when the house with the car(s) at chargerMinAmps is"
            " over homeMaxAmps, nothing pauses charging and the main breaker is not protected;"
            " remove the key (pausing is on by default)"
        )
    if s.api_token is None and not _is_loopback(s.api_host):
        warnings.append(
            f"apiToken is not set and apiHost {s.api_host} is reachable from the network: anyone on it "
            "can call /overload; set apiToken (web pages are refused either way)"
        )
    cars = max(1, len(s.vehicles or ()))
    share_w = s.grid_limit_total_kw * 1000.0 / cars
    floor_w = s.charger_min_amps * s.mains_voltage  # one phase: the least a car can draw
    if s.grid_limit_kw is not None and share_w < floor_w:
        warnings.append(
            f"gridLimitKw {s.grid_limit_kw:g} kW gives each of {cars} car(s) {share_w / 1000:.2f} kW, "
            f"less than chargerMinAmps at mainsVoltage ({floor_w / 1000:.2f} kW): while the grid "
            "limit is on the cars stay at chargerMinAmps, above it"
        )
    return warnings


def load_config(path: Path | str) -> LoadedConfig:
    """Read, validate and return the configuration, or raise ConfigError listing every problem.

    `TSC_*` environment variables override the file's values.
    """
    path = Path(path)
    env = os.environ
    raw, warnings = _read_config(path)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        name = FIELD_BY_KEY.get(key)
        if name is None:
            warnings.append(f"{path}: unknown key {key!r} ignored")
            continue
        kwargs[name] = value
    try:
        settings = Settings(**kwargs)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            loc = e["loc"]
            name = str(loc[0]) if loc else ""
            key = KEY_BY_FIELD.get(name, name) + "".join(
                f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:]
            )
            where = _source(name, path, env)
            if e["type"] == "missing":
                problems.append(f"{where}: {key}: required key is missing")
                continue
            value = kwargs.get(name, e.get("input"))
            msg = e["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {key} = {_mask(name, value)}: {msg}")
        raise ConfigError(problems) from None
    cross = cross_check(settings)
    if cross:
        raise ConfigError([f"{_source(name, path, env)}: {msg}" for name, msg in cross])
    warnings += _config_warnings(path, raw, settings)
    return LoadedConfig(settings=settings, path=path, warnings=warnings)


def preflight(loaded: LoadedConfig, *, monitor: bool) -> None:
    """Checks that need the file system or the mode: ConfigError naming the key.

    Both `check-config` and the daemon run these (through `check_config`), so check-config
    never calls valid a configuration the daemon then refuses.
    """
    s = loaded.settings
    problems: list[str] = []
    if monitor and s.energy_monitor_ip is None:
        problems.append(
            f"{loaded.path}: energyMonitorIp: required with --monitor (the meter's host, host:port or http:// URL)"
        )
    token_file = loaded.token_file
    folder = token_file.parent
    if not folder.is_dir():
        problems.append(
            f"{loaded.path}: tokenFile: folder {folder} does not exist (create it, or change tokenFile)"
        )
    elif not os.access(folder, os.W_OK | os.X_OK):
        readable = token_file.exists() and os.access(token_file, os.R_OK)
        if readable or s.tesla_refresh_token is not None:
            # Start with what can be read: the tokens are then kept in memory and the save is
            # retried (a restart before the folder is writable again loses the login).
            loaded.warnings.append(
                f"{loaded.path}: tokenFile: folder {folder} is not writable: rotated Tesla tokens "
                "are kept in memory only until it is"
            )
        else:
            problems.append(
                f"{loaded.path}: tokenFile: folder {folder} is not writable and holds no tokens: "
                "nothing to start from"
            )
    elif token_file.exists() and not os.access(token_file, os.R_OK):
        problems.append(f"{loaded.path}: tokenFile: {token_file} is not readable by this user")
    if s.tesla_private_key is not None and s.tesla_http_proxy is None:
        key_file = loaded.private_key_file
        if not key_file.is_file():
            problems.append(
                f"{loaded.path}: teslaPrivateKey: {key_file} does not exist (run tesla-smart-charger keygen, or set teslaHttpProxy)"
            )
    if loaded.command_road == "signed":
        from tesla_smart_charger.config.keys import (  # noqa: PLC0415 - only when signing
            SigningKeyError,
            load_private_key,
        )

        try:
            load_private_key(loaded.private_key_file)
        except SigningKeyError as err:
            problems.append(f"{loaded.path}: teslaPrivateKey: {err}")
    ca_file = loaded.proxy_ca_file
    if ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(ca_file))
        except OSError as err:
            problems.append(
                f"{loaded.path}: teslaHttpProxyCaFile: cannot read {ca_file}: {err.strerror or err}"
            )
        except ssl.SSLError as err:
            problems.append(
                f"{loaded.path}: teslaHttpProxyCaFile: {ca_file} is not a PEM CA certificate ({err.reason or err})"
            )
    if problems:
        raise ConfigError(problems)


def check_config(path: Path | str, *, monitor: bool) -> LoadedConfig:
    """`load_config` plus `preflight`: the one check the daemon and check-config both run."""
    loaded = load_config(path)
    preflight(loaded, monitor=monitor)
    return loaded


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration with camelCase keys and every secret replaced by '***'."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in SECRET_FIELDS:
            out[KEY_BY_FIELD[name]] = None if value is None else "***"
        elif name == "vehicles" and value is not None:
            out[KEY_BY_FIELD[name]] = [
                v.model_dump(by_alias=True, exclude_none=True) for v in value
            ]
        elif isinstance(value, Path):
            out[KEY_BY_FIELD[name]] = str(value)
        else:
            out[KEY_BY_FIELD[name]] = value
    return out
