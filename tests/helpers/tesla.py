"""A VIN and a token source for the Fleet API client's tests."""

from __future__ import annotations

VIN = "LRWXF7EK4KC700000"


TOKEN = "tok-SECRET-0123456789"


NEW_TOKEN = "tok-SECRET-refreshed-9876"


class FakeTokens:
    """A TokenSource that can refresh once to NEW_TOKEN (or refuse to)."""

    def __init__(self, *, can_refresh: bool = True) -> None:
        self.token = TOKEN
        self.can_refresh = can_refresh
        self.rejected: list[str] = []

    async def access_token(self) -> str:
        return self.token

    async def handle_unauthorized(self, rejected: str) -> bool:
        self.rejected.append(rejected)
        if self.can_refresh:
            self.token = NEW_TOKEN
        return self.can_refresh
