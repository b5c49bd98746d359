"""GET /openapi.json: an OpenAPI 3.0.3 document for every endpoint the daemon serves.

Written by hand as a dict (the API is small and stable), except the /status document and its
parts, which are generated from the model the daemon serializes (runtime/status.py), so the
two cannot drift. A test compares the document with the routes the app really has, and a
schemathesis run fuzzes the app against it.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import TypeAdapter

from tesla_smart_charger import __version__
from tesla_smart_charger.httpapi.dashboard import STATIC_FILES
from tesla_smart_charger.runtime.journal import KINDS
from tesla_smart_charger.runtime.status import DaemonStatus

if TYPE_CHECKING:
    from tesla_smart_charger.httpapi.view import DaemonView


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _text(description: str, *kinds: str) -> dict[str, Any]:
    """A reply whose body is a string in one of the media types `kinds` (HTML, metrics, SSE)."""
    return {
        "description": description,
        "content": {kind: {"schema": {"type": "string"}} for kind in kinds},
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": True, **extra}


_NOT_FOUND = _json(_ref("Error"), "No such file.")

_OVERLOAD_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "token",
        "in": "query",
        "required": False,
        "description": "The apiToken, for callers that cannot send headers (Shelly URL actions). "
        "Alternatively send `Authorization: Bearer <apiToken>`.",
        "schema": {"type": "string"},
    },
    {
        "name": "source",
        "in": "query",
        "required": False,
        "description": "Free text naming the caller, shown in the log.",
        "schema": {"type": "string"},
    },
]


def _overload(method: str) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": f"overload{method.capitalize()}",
        "summary": "Report an overload: the charger lowers the car's current.",
        "description": "Queues one overload event and returns at once (a burst of calls is one "
        "event). In measured mode it also triggers an immediate meter read. With `apiToken` set "
        "the token is required (query `token` or a bearer header); without it nothing changes.",
        "tags": ["control"],
        "parameters": _OVERLOAD_PARAMETERS,
        "security": [{}, {"bearerAuth": []}],
        "responses": {
            "202": _json(
                _ref("OverloadAccepted"), "Accepted; `queued` is false when one was already queued."
            ),
            "401": _json(_ref("Error"), "apiToken is set and the request did not carry it."),
            "413": _json(_ref("Error"), "The body is larger than 64 KiB."),
        },
    }
    if method == "post":
        op["requestBody"] = {
            "required": False,
            "description": "Ignored (webhooks may send anything); configuration is in the URL.",
            "content": {"application/json": {"schema": {}}},
        }
    return op


def _vehicle_post(
    op_id: str,
    *,
    summary: str,
    description: str,
    field: str,
    field_help: str,
    schema: dict[str, Any],
    accepted: tuple[str, str],
    bad_request: str,
) -> dict[str, Any]:
    """A POST /vehicles/{vin}/<field> operation: the value comes as `?<field>=` or a JSON body.

    The limit and the mode endpoints share the path parameter, the token, the body shape and
    the error replies, so one builder keeps them from drifting apart.
    """
    status, reply = accepted
    return {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": ["control"],
        "parameters": [
            {
                "name": "vin",
                "in": "path",
                "required": True,
                "description": "The car's VIN (or teslaVehicleId), any case.",
                "schema": {"type": "string"},
            },
            {
                "name": field,
                "in": "query",
                "required": False,
                "description": field_help,
                "schema": copy.deepcopy(schema),
            },
            _OVERLOAD_PARAMETERS[0],
        ],
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: copy.deepcopy(schema)},
                    }
                }
            },
        },
        "security": [{}, {"bearerAuth": []}],
        "responses": {
            status: _json(_ref(reply), "Queued for the charge controller."),
            "400": _json(_ref("Error"), bad_request),
            "401": _json(_ref("Error"), "apiToken is set and the request did not carry it."),
            "403": _json(_ref("Error"), "A browser request from another site (no apiToken set)."),
            "404": _json(_ref("Error"), "This daemon does not charge that car."),
            "413": _json(_ref("Error"), "The body is larger than 64 KiB."),
        },
    }


def _limit() -> dict[str, Any]:
    """POST /vehicles/{vin}/limit: the driver's amps ceiling, as Home Assistant's number sets it."""
    return _vehicle_post(
        "setVehicleLimit",
        summary="Set the car's amps ceiling, like the driver's own setting in the app.",
        description="The charger never sets the car above it: a car set higher is lowered at "
        "once, a higher ceiling is reached by the normal raise rules. It is kept across restarts "
        "until the driver changes the setting in the app (the last writer wins). Give the value "
        'as `?amps=N` or as a JSON body `{"amps": N}`: a whole number from chargerMinAmps to '
        "chargerMaxAmps. The same validation as the MQTT number. With `apiToken` set the token is "
        "required; without it a browser request from another site is refused (403).",
        field="amps",
        field_help="The ceiling in amps, for clients that cannot send a body.",
        schema={"type": "integer"},
        accepted=("202", "LimitAccepted"),
        bad_request="The value is missing or invalid; `error` names the field.",
    )


def _mode() -> dict[str, Any]:
    """POST /vehicles/{vin}/mode: how the car charges, as Home Assistant's select sets it."""
    return _vehicle_post(
        "setVehicleMode",
        summary="Choose how the car charges: fast, solar or minsolar.",
        description="`fast`: as many amps as the breaker allows. `solar`: only the export "
        "surplus (docs/solar.md). `minsolar`: chargerMinAmps always plus the surplus. The breaker "
        'limit wins over every mode. Give it as `?mode=solar` or a JSON body `{"mode": "solar"}`; '
        "kept across restarts. With `apiToken` set the token is required; without it a browser "
        "request from another site is refused (403).",
        field="mode",
        field_help="The mode, for clients that cannot send a body.",
        schema={"type": "string", "enum": ["fast", "solar", "minsolar"]},
        accepted=("200", "ModeAccepted"),
        bad_request="The mode is missing or unknown; `error` says which.",
    )


_GRID_LIMIT: dict[str, Any] = {
    "type": "object",
    "required": ["active", "source", "since", "limit_kw", "reason", "sources"],
    "properties": {
        "active": {"type": "boolean"},
        "source": _nullable("string", description="the sources holding it on: input, mqtt, api"),
        "since": _nullable("string", description="ISO 8601: when it came on or ended"),
        "limit_kw": {"type": "number", "description": "gridLimitKw: all chargers together"},
        "car_kw": {"type": "number", "description": "each car's even share"},
        "reason": _nullable("string"),
        "lost": {"type": "array", "items": {"type": "string"}},
        "sources": {"type": "object", "additionalProperties": True},
        "accepted": {"type": "boolean"},
    },
}


def _grid_limit() -> dict[str, Any]:
    """GET and POST /grid-limit: the grid operator's limit (§14a-style)."""
    state = _json(_ref("GridLimit"), "The limit and what each source says.")
    return {
        "get": {
            "operationId": "getGridLimit",
            "summary": "The grid operator's limit: on or off, why and since when.",
            "tags": ["state"],
            "responses": {"200": state},
        },
        "post": {
            "operationId": "setGridLimit",
            "summary": "Switch the API's own word on the grid operator's limit.",
            "description": "While on, the chargers together stay under gridLimitKw (lowering at "
            "once; raising after it ends by the usual rules). The limit stays on while the Shelly "
            'input or the MQTT topic says so. `{"active": true}` or `?active=true`. With '
            "`apiToken` set the token is required; without it a browser request from another "
            "site is refused (403). Not kept across a restart.",
            "tags": ["control"],
            "parameters": [
                {
                    "name": "active",
                    "in": "query",
                    "required": False,
                    "description": "true or false, for clients that cannot send a body.",
                    "schema": {"type": "boolean"},
                },
                _OVERLOAD_PARAMETERS[0],
            ],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["active"],
                            "properties": {"active": {"type": "boolean"}},
                        }
                    }
                },
            },
            "security": [{}, {"bearerAuth": []}],
            "responses": {
                "200": state,
                "400": _json(_ref("Error"), "`active` is missing or not true/false."),
                "401": _json(_ref("Error"), "apiToken is set and the request did not carry it."),
                "403": _json(_ref("Error"), "A browser request from another site (no apiToken)."),
                "413": _json(_ref("Error"), "The body is larger than 64 KiB."),
            },
        },
    }


def _get(
    op_id: str, summary: str, responses: dict[str, Any], tag: str = "state", **extra: Any
) -> dict[str, Any]:
    return {
        "get": {
            "operationId": op_id,
            "summary": summary,
            "tags": [tag],
            "responses": responses,
            **extra,
        }
    }


_SCHEMAS: dict[str, Any] = {
    "GridLimit": _GRID_LIMIT,
    "Error": {
        "type": "object",
        "required": ["error", "status"],
        "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
    },
    "OverloadAccepted": {
        "type": "object",
        "required": ["accepted", "queued"],
        "properties": {"accepted": {"type": "boolean"}, "queued": {"type": "boolean"}},
    },
    "LimitAccepted": {
        "type": "object",
        "required": ["accepted", "vin", "amps"],
        "properties": {
            "accepted": {"type": "boolean"},
            "vin": {"type": "string"},
            "amps": {"type": "integer"},
        },
    },
    "ModeAccepted": {
        "type": "object",
        "required": ["accepted", "vin", "mode"],
        "properties": {
            "accepted": {"type": "boolean"},
            "vin": {"type": "string"},
            "mode": {"type": "string", "enum": ["fast", "solar", "minsolar"]},
        },
    },
    "Sample": {
        "type": "object",
        "description": "One chart point: the controller's state after an event.",
        "required": ["t", "supply", "car", "setpoint", "target", "reason", "state"],
        "properties": {
            "t": {"type": "number", "description": "Unix time, seconds"},
            "supply": _nullable(
                "array",
                items={"type": "number"},
                description="Amps per supply phase; null in push mode",
            ),
            "car": _nullable("number", description="Car amps, measured or inferred"),
            "setpoint": _nullable("integer"),
            "target": _nullable("integer"),
            "reason": {"type": "string"},
            "state": {
                "type": "string",
                "enum": ["normal", "failsafe", "paused", "rate_limited", "auth_lost"],
            },
            "breaker": _nullable(
                "array",
                items={"type": "number"},
                description="Main breaker's heat per phase, % of trip; null without a meter",
            ),
        },
    },
    "Readings": {
        "type": "object",
        "nullable": True,
        "properties": {
            "supply_amps": _nullable("array", items={"type": "number"}),
            "car_amps": _nullable("number"),
        },
    },
    "Journal": {
        "type": "object",
        "required": ["entries", "disk"],
        "properties": {
            "disk": {"type": "string", "enum": ["ok", "failing"]},
            "entries": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "time", "kind", "reason", "followed"],
                    "properties": {
                        "id": {"type": "integer"},
                        "time": {"type": "string", "format": "date-time"},
                        "at": {"type": "number"},
                        "kind": {
                            "type": "string",
                            "enum": list(KINDS),
                        },
                        "car": _nullable("string"),
                        "reason": {"type": "string"},
                        "amps": _nullable("number"),
                        "result": {"type": "string"},
                        "before": _ref("Readings"),
                        "after": _ref("Readings"),
                        "followed": {"type": "string", "enum": ["yes", "no", "not yet", "n/a"]},
                    },
                },
            },
        },
    },
    "History": {
        "type": "object",
        "required": ["now", "config", "history", "commands", "api_calls"],
        "properties": {
            "now": {"type": "number"},
            "config": {
                "type": "object",
                "required": ["homeMaxAmps", "phases", "mode"],
                "properties": {
                    "homeMaxAmps": {"type": "number"},
                    "limitAmps": {"type": "number"},
                    "phases": {"type": "integer", "minimum": 1, "maximum": 3},
                    "mode": {"type": "string", "enum": ["push", "measured"]},
                    "chargerMinAmps": {"type": "integer"},
                    "chargerMaxAmps": {"type": "integer"},
                    "historySecs": {"type": "integer"},
                },
            },
            "history": {"type": "array", "items": _ref("Sample")},
            "commands": {"type": "array", "items": _ref("Command")},
            "api_calls": _ref("ApiCalls"),
            "vehicle": {"type": "object"},
            "vehicles": {"type": "array", "items": {"type": "object"}},
            "auth": {"type": "string"},
        },
    },
}


def _openapi30(node: Any) -> Any:
    """A JSON Schema (2020-12, as pydantic writes it) in OpenAPI 3.0.3's dialect.

    `X | None` becomes `nullable`, a one-value Literal's `const` an `enum`; titles go (the
    component's name says it).
    """
    if isinstance(node, list):
        return [_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue
        if key == "properties":
            out[key] = {name: _openapi30(prop) for name, prop in value.items()}
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = _openapi30(value)
    options = out.get("anyOf")
    if options is not None and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            # a $ref ignores its siblings in 3.0: wrap it so `nullable` counts
            base = {"allOf": rest} if "$ref" in rest[0] else rest[0]
            out = {**base, **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def status_schemas() -> dict[str, Any]:
    """`Status` (the /status document) and its parts, from the model /status serializes."""
    schema = TypeAdapter(DaemonStatus).json_schema(
        ref_template="#/components/schemas/{model}", mode="serialization"
    )
    parts = schema.pop("$defs", {})
    out = {name: _openapi30(part) for name, part in parts.items()}
    out["Status"] = _openapi30(schema)
    return out


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0.3 document (a fresh dict each call)."""
    paths: dict[str, Any] = {
        "/overload": {"get": _overload("get"), "post": _overload("post")},
        "/vehicles/{vin}/limit": {"post": _limit()},
        "/vehicles/{vin}/mode": {"post": _mode()},
        "/grid-limit": _grid_limit(),
        "/status": _get(
            "getStatus", "The daemon's state.", {"200": _json(_ref("Status"), "The state.")}
        ),
        "/config": _get(
            "getConfig",
            "The effective configuration, secrets redacted.",
            {
                "200": _json(
                    {"type": "object", "additionalProperties": True},
                    "camelCase keys as in config.json.",
                )
            },
        ),
        "/health": _get(
            "getHealth",
            "Liveness for systemd, containers and monitors.",
            {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {
                            "status": {"type": "string", "enum": ["ok"]},
                            "version": {"type": "string"},
                        },
                    },
                    "Everything runs.",
                ),
                "503": _json(
                    {
                        "type": "object",
                        "required": ["status", "problems"],
                        "properties": {
                            "status": {"type": "string", "enum": ["unhealthy"]},
                            "problems": {"type": "array", "items": {"type": "string"}},
                        },
                    },
                    "Something does not work; `problems` says what.",
                ),
            },
        ),
        "/metrics": _get(
            "getMetrics",
            "Prometheus metrics (text format; OpenMetrics when asked for via Accept).",
            {"200": _text("Metrics.", "text/plain", "application/openmetrics-text")},
            tag="observe",
        ),
        "/": _get(
            "getDashboard",
            "The dashboard page.",
            {"200": _text("HTML.", "text/html")},
            tag="observe",
        ),
        "/web/{name}": _get(
            "getDashboardFile",
            "The dashboard's script, style sheet and icon.",
            {
                "200": _text("The file.", *sorted(set(STATIC_FILES.values()))),
                "404": _NOT_FOUND,
            },
            tag="observe",
            parameters=[
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": sorted(STATIC_FILES)},
                }
            ],
        ),
        "/events": _get(
            "getEvents",
            "Server-sent events: `init` (config and history), `sample` (at most 2/s), `panel` (commands and API calls, on change); a comment heartbeat every 15 s.",
            {"200": _text("An endless event stream; `data` is JSON.", "text/event-stream")},
            tag="observe",
        ),
        "/api/history": _get(
            "getHistory",
            "The last 15 minutes (one sample per second), the config summary and the panel.",
            {"200": _json(_ref("History"), "Same as the stream's `init` event.")},
            tag="observe",
        ),
        "/api/journal": _get(
            "getJournal",
            "Every protective action (cut, pause, escalation step, relay switch, grid limit, "
            "capacity cut): time, car, reason, readings before and after, whether the car "
            "followed. Kept on disk across restarts.",
            {
                "200": {
                    "description": "JSON, or CSV (header row, RFC 4180) with `format=csv` or "
                    "`Accept: text/csv`.",
                    "content": {
                        "application/json": {"schema": _ref("Journal")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "400": _json(_ref("Error"), "A bad `format`, `since` or `limit`."),
            },
            tag="observe",
            parameters=[
                {
                    "name": "format",
                    "in": "query",
                    "required": False,
                    "description": "`json` (the default) or `csv`.",
                    "schema": {"type": "string", "enum": ["json", "csv"]},
                },
                {
                    "name": "since",
                    "in": "query",
                    "required": False,
                    "description": "Only entries at or after this time: ISO 8601 "
                    "(`2026-12-03T15:00:00Z`) or Unix seconds.",
                    "schema": {"type": "string"},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "description": "Only the newest N entries (0 to 5000).",
                    "schema": {"type": "integer", "minimum": 0, "maximum": 5000},
                },
            ],
        ),
        "/openapi.json": _get(
            "getOpenApi",
            "This document.",
            {"200": _json({"type": "object"}, "OpenAPI 3.0.3.")},
            tag="observe",
        ),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "tesla-smart-charger",
            "version": __version__,
            "description": "Charges a Tesla as fast as the house allows. Read-only endpoints are open; "
            "with `apiToken` set, `/overload` and `/vehicles/{vin}/limit` need the token. Errors are JSON `{error, status}`.",
            "license": {"name": "MIT"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "control", "description": "What changes the charger's behaviour."},
            {"name": "state", "description": "What the charger knows."},
            {"name": "observe", "description": "Dashboard, metrics and this document."},
        ],
        "paths": paths,
        "components": {
            "schemas": {**_SCHEMAS, **status_schemas()},
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "description": "The apiToken."},
            },
        },
    }


def openapi_routes(daemon: DaemonView) -> list[web.RouteDef]:
    """GET /openapi.json (`daemon` is unused: the document is static; kept for symmetry)."""
    document = openapi_document()

    async def openapi(request: web.Request) -> web.Response:
        """The OpenAPI document."""
        return web.json_response(document)

    return [web.get("/openapi.json", openapi)]
