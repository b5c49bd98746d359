"""Named timeouts and intervals, in seconds, so every network await has a visible bound."""

from typing import Final

# Tesla proxy: commands wait for the car (the proxy's own timeout is 10 s).
TESLA_CONNECT_TIMEOUT: Final = 3.0
TESLA_TOTAL_TIMEOUT: Final = 12.0
TESLA_RETRY_ATTEMPTS: Final = 3
TESLA_RETRY_MAX_WAIT: Final = 4.0
# One car call on the cloud road, whole: every in-place attempt, the VIN lookup and the repeat
# below 5 A. A healthy proxy answers within its own 10 s timeout (504 after it), so a call
# still open then has failed: it counts against the road, and a cut can go another way.
TESLA_CALL_DEADLINE: Final = 10.0
# A needed cut that has not landed this long after it was decided makes /health 503: a cut
# normally lands in 1-3 s, one behind a look in 2-5 s.
CUT_LATE_SECS: Final = 5.0
# Longest 429 back-off we honour before trying again anyway (Retry-After can be huge).
TESLA_MAX_RETRY_AFTER: Final = 3600.0
TESLA_DEFAULT_RETRY_AFTER: Final = 60.0
# While a cut waits for a proxy that refused the connection: a TCP connect (no HTTP request,
# nothing billed) this often, so the cut goes within seconds of the proxy coming back.
TESLA_PROBE_SECS: Final = 2.0
TESLA_PROBE_TIMEOUT: Final = 1.0

# Shelly meters are on Wi-Fi: fail fast, the next poll is a second away.
METER_CONNECT_TIMEOUT: Final = 1.0
METER_TOTAL_TIMEOUT: Final = 2.0

# Token endpoint.
TOKEN_TOTAL_TIMEOUT: Final = 15.0

# Shutdown must finish well inside systemd's and the container's stop timeout.
SHUTDOWN_TIMEOUT: Final = 4.0

# Fleet API pricing (USD per call), Tesla "Billing and Limits", since 2025-02-01.
# Every GET counts as "data": the vehicle-state call may be free, but we budget conservatively.
PRICE_PER_CALL: Final = {"data": 0.002, "command": 0.001, "wake": 0.02}
