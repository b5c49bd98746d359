"""One error hierarchy: transient faults are retried, permanent ones are not.

Transport errors (aiohttp, OSError, timeouts) are converted into these at the edge with
`raise ... from err`, so the controller and the retry policy never see library types.
Messages never contain secrets: callers pass field names and statuses, not tokens.
"""

from __future__ import annotations


class ChargerError(Exception):
    """Root of every error this package raises on purpose.

    `retry_after` is set by the retry policy of the dependency that failed: seconds until it
    may be tried again (0: at once), so callers schedule the next attempt instead of guessing.
    """

    retry_after: float = 0.0


class TransientError(ChargerError):
    """A fault that may go away by itself: retry with backoff."""


class PermanentError(ChargerError):
    """A fault that retrying will not fix: report it, do not retry."""


class ConfigError(PermanentError):
    """The configuration is invalid; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- Tesla Fleet API / tesla-http-proxy ----------------------------------------------------


class TeslaError(ChargerError):
    """Base for Fleet API problems (mixed in with Transient/Permanent below)."""


class VehicleAsleep(TeslaError, PermanentError):
    """408 (or a 500 'vehicle unavailable' on a command): the car sleeps. Never wake it."""


class TeslaAuthError(TeslaError, PermanentError):
    """401/403: the access token is missing, expired or lacks scopes."""


class RateLimited(TeslaError, TransientError):
    """429: back off for `retry_after` seconds; retrying sooner only burns budget."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after: float = retry_after


class CommandRefused(TeslaError, PermanentError):
    """The car answered `result: false` with a reason; a blind retry would be refused again."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"{command} refused by the car: {reason}")
        self.command = command
        self.reason = reason


class TeslaTransientError(TeslaError, TransientError):
    """5xx, timeouts and connection errors talking to the proxy."""


class TeslaProtocolError(TeslaError, PermanentError):
    """A reply we cannot parse, or a 4xx that is not one of the cases above."""


class CommandSigningError(TeslaProtocolError):
    """A signed command failed a check: key not paired, bad tag, stale counter, expired.

    Permanent for the retry policy: resending the same thing cannot help, and the car's own
    re-sync (fresh session info in its fault reply) has already been tried once.
    """

    def __init__(self, message: str, fault: int = 0) -> None:
        super().__init__(message)
        self.fault = fault


# --- Meters --------------------------------------------------------------------------------


class MeterError(TransientError):
    """The meter did not give a usable reading this time (timeout, bad JSON, invalid flag)."""


class MeterAuthError(MeterError):
    """The meter rejected our credentials; the daemon stays in fail-safe until fixed."""


# --- OAuth tokens --------------------------------------------------------------------------


class TokenError(ChargerError):
    """Base for token-store and token-endpoint problems."""


class LoginRequired(TokenError, PermanentError):
    """The refresh token is used, expired or revoked: the owner must log in again."""


class TokenEndpointError(TokenError, TransientError):
    """Network or 5xx from the token endpoint: retry while the access token lasts."""


# --- BLE bridge, safety relay, alerts ---------------------------------------------------


class BleUnavailable(TeslaTransientError):
    """The BLE bridge or its Bluetooth link failed (not the car): fall back to the cloud.

    A subclass of TeslaTransientError so code that handles "the road failed" treats both
    roads alike; a refusal by the car stays `CommandRefused` and is never failed over.
    """


class RelayError(TransientError):
    """The safety relay did not answer or did not switch; the next step may try again."""


class RelayAuthError(RelayError):
    """The safety relay rejected our credentials (safetyRelayUser / safetyRelayPassword)."""


class InputError(TransientError):
    """The grid limit's Shelly input did not answer or gave a reply we cannot read."""


class InputAuthError(InputError):
    """That Shelly rejected our credentials (gridLimitInputPassword)."""


class AlertError(TransientError):
    """The alert webhook did not accept a POST; alerts are retried, never block control."""
