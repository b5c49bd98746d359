"""GET /api/journal: the protective actions as JSON, or CSV for a spreadsheet.

`?format=csv` (or `Accept: text/csv`) gives CSV with a header row; `?since=` (ISO 8601 time or
Unix seconds) and `?limit=` narrow it. Read-only, like /status.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from tesla_smart_charger.httpapi.server import json_error
from tesla_smart_charger.runtime.journal import Journal, to_csv

MAX_LIMIT = 5000


def parse_since(raw: str) -> float:
    """`since` as wall-clock seconds: an ISO 8601 time (UTC unless it says) or Unix seconds."""
    text = raw.strip()
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def wants_csv(request: web.Request) -> bool:
    """?format=csv wins; else an Accept header that names text/csv before JSON."""
    fmt = request.query.get("format", "").strip().lower()
    if fmt:
        return fmt == "csv"
    accept = request.headers.get("Accept", "").lower()
    return "text/csv" in accept and "application/json" not in accept


def journal_routes(journal: Journal | None) -> list[web.RouteDef]:
    """GET /api/journal for `journal` (None: the daemon keeps none, an empty list)."""

    async def handler(request: web.Request) -> web.Response:
        fmt = request.query.get("format", "").strip().lower()
        if fmt not in ("", "json", "csv"):
            return json_error(400, f"format: {fmt[:20]!r} is not json or csv")
        since = None
        if "since" in request.query:
            try:
                since = parse_since(request.query["since"])
            except ValueError:
                return json_error(
                    400, "since: expected an ISO 8601 time (2026-12-03T15:00:00Z) or Unix seconds"
                )
        limit = None
        if "limit" in request.query:
            try:
                limit = int(request.query["limit"])
            except ValueError:
                return json_error(400, "limit: expected a whole number")
            if not 0 <= limit <= MAX_LIMIT:
                return json_error(400, f"limit: expected 0 to {MAX_LIMIT}")
        entries = journal.select(since, limit) if journal is not None else []
        if wants_csv(request):
            return web.Response(
                text=to_csv(entries),
                content_type="text/csv",
                charset="utf-8",
                headers={"Content-Disposition": 'attachment; filename="journal.csv"'},
            )
        body = {
            "entries": [e.as_dict() for e in entries],
            "disk": "failing" if journal is not None and journal.disk_failing else "ok",
        }
        return web.json_response(body)

    return [web.get("/api/journal", handler)]
