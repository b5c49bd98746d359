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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tesla_smart_charger.errors import ConfigError

_LOG = logging.getLogger(__name__)

ENV_PREFIX = "TSC_"
DEFAULT_TOKEN_URL = "https://fleet-auth.prd.vn.cloud.tesla.com/oauth2/v3/token"  # noqa: S105 (a URL)
DEFAULT_AUTHORIZE_URL = "https://auth.tesla.com/oauth2/v3/authorize"
FLEET_API_BASES: dict[str, str] = {
    "na": "https://fleet-api.prd.na.vn.cloud.tesla.com",
    "eu": "https://fleet-api.prd.eu.vn.cloud.tesla.com",
    "cn": "https://fleet-api.prd.cn.vn.cloud.tesla.cn",
}
METER_TYPES = ("shelly-em", "shelly-3em", "shelly-gen2", "shelly")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


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


Port = Annotated[int, BeforeValidator(_as_int), Field(ge=1, le=65535)]
OptStr = Annotated[str | None, BeforeValidator(_empty_as_none)]
OptSecret = Annotated[SecretStr | None, BeforeValidator(_empty_as_none)]
PositiveSecs = Annotated[float, Field(gt=0)]


def _check_http_url(value: str, key: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key} must be an http:// or https:// URL with a host")
    try:
        _ = parts.port
    except ValueError as err:
        raise ValueError(f"{key} has an invalid port") from err
    return value.strip().rstrip("/")


def normalize_host_url(value: str) -> str:
    """Turn `host`, `host:port` or `http://host[:port]` into `http://host[:port]`."""
    text = value.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    if parts.scheme != "http":
        raise ValueError("must be a host, host:port or an http:// URL (Shelly speaks plain HTTP)")
    host = parts.hostname or ""
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


class Settings(BaseSettings):
    """Every configuration key. Field names are snake_case; the file uses camelCase."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        hide_input_in_errors=True,
    )

    # --- the seed's keys (names and meaning unchanged) ----------------------------------
    home_max_amps: Annotated[
        float,
        Field(
            gt=0, description="Supply limit of the house per phase (A): the main breaker's rating."
        ),
    ]
    charger_max_amps: Annotated[
        float, Field(gt=0, description="Most amps the car may be asked to charge at.")
    ] = 16.0
    charger_min_amps: Annotated[
        float,
        Field(
            ge=0,
            description="Fewest amps the controller commands (the fail-safe value). Below 5 A is sent twice, as the car requires.",
        ),
    ] = 6.0
    down_step_percentage: Annotated[
        float,
        Field(gt=0, le=1, description="Push mode: on /overload, new amps = floor(amps x this)."),
    ] = 0.5
    up_step_percentage: Annotated[
        float,
        Field(
            gt=0,
            le=1,
            description="Push mode: after each quiet sleepTimeSecs, raise by this share of the amps (at least 1 A).",
        ),
    ] = 0.25
    sleep_time_secs: Annotated[
        PositiveSecs,
        Field(
            description="Settle time after a change; also how long headroom must last before a raise."
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
    api_port: Annotated[Port, Field(description="Port of the HTTP API.")] = 8000
    tesla_vehicle_id: Annotated[
        str,
        BeforeValidator(_as_str),
        Field(
            min_length=1,
            description="The car's 17-character VIN, or its numeric Fleet id (the VIN is then looked up once).",
        ),
    ]
    tesla_access_token: Annotated[
        OptSecret,
        Field(description="Seeds the token store on first start; the store wins afterwards."),
    ] = None
    tesla_refresh_token: Annotated[
        OptSecret,
        Field(description="Seeds the token store on first start; the store wins afterwards."),
    ] = None
    tesla_http_proxy: Annotated[
        str, Field(description="URL of tesla-http-proxy (http or https).")
    ] = "https://localhost:4443"
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
    tesla_http_proxy_ca_file: Annotated[
        Path | None,
        BeforeValidator(_empty_as_none),
        Field(
            description="CA certificate that signed the proxy's TLS certificate. Verification stays on for https."
        ),
    ] = None
    energy_monitor_poll_secs: Annotated[
        PositiveSecs, Field(description="Meter poll period in measured mode.")
    ] = 1.0
    energy_monitor_stale_secs: Annotated[
        PositiveSecs,
        Field(description="No valid reading for this long: fall back to chargerMinAmps."),
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
        float, Field(gt=0, le=500, description="Volts, used only where the meter reports none.")
    ] = 230.0
    safety_margin_amps: Annotated[
        float,
        Field(ge=0, description="Measured mode keeps the worst phase this far below homeMaxAmps."),
    ] = 1.0
    pause_when_overloaded: Annotated[
        bool,
        Field(
            description="Stop charging when the house alone exceeds the limit for pauseAfterSecs; start again when room returns."
        ),
    ] = False
    pause_after_secs: Annotated[
        PositiveSecs,
        Field(
            description="How long an overload the car cannot resolve lasts before charging is paused."
        ),
    ] = 120.0
    car_settle_secs: Annotated[
        PositiveSecs,
        Field(
            description="How long the car takes to follow a new setpoint; readings are judged against the commanded value meanwhile."
        ),
    ] = 8.0
    vehicle_check_secs: Annotated[
        PositiveSecs,
        Field(
            description="While charging, how often the car is looked at when the meter gives no reason to (one billed data call each)."
        ),
    ] = 3600.0
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
    def _proxy_url(cls, value: str) -> str:
        return _check_http_url(value, "teslaHttpProxy")

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
    if s.charger_min_amps > s.charger_max_amps:
        problems.append(
            (
                "charger_min_amps",
                f"chargerMinAmps ({s.charger_min_amps:g}) must not exceed chargerMaxAmps ({s.charger_max_amps:g})",
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
    if s.supply_phases != "auto" and s.charger_phase > s.supply_phases:
        problems.append(
            (
                "charger_phase",
                f"chargerPhase ({s.charger_phase}) must not exceed supplyPhases ({s.supply_phases})",
            )
        )
    return problems


def read_config_file(path: Path) -> dict[str, Any]:
    """Read the JSON file; malformed JSON is reported with line and column."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (pass --config PATH)"]) from None
    except OSError as err:
        raise ConfigError([f"{path}: cannot read: {err.strerror}"]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            [f"{path}: line {err.lineno}, column {err.colno}: invalid JSON: {err.msg}"]
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a JSON object"])
    return data


def load_config(path: Path | str) -> LoadedConfig:
    """Read, validate and return the configuration, or raise ConfigError listing every problem.

    `TSC_*` environment variables override the file's values.
    """
    path = Path(path)
    env = os.environ
    raw = read_config_file(path)
    warnings: list[str] = []
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
            key = KEY_BY_FIELD.get(name, name)
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
    return LoadedConfig(settings=settings, path=path, warnings=warnings)


def redacted(settings: Settings) -> dict[str, Any]:
    """The effective configuration with camelCase keys and every secret replaced by '***'."""
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        value = getattr(settings, name)
        if name in SECRET_FIELDS:
            out[KEY_BY_FIELD[name]] = None if value is None else "***"
        elif isinstance(value, Path):
            out[KEY_BY_FIELD[name]] = str(value)
        else:
            out[KEY_BY_FIELD[name]] = value
    return out
