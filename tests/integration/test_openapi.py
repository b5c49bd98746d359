"""GET /openapi.json: it describes exactly the routes the app has, and the app survives fuzzing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tesla_smart_charger.httpapi.openapi import openapi_document
from tesla_smart_charger.simulator.world import World
from tests.helpers.e2e import LOADED, WAIT_SECS
from tests.helpers.observe import Running, charging_car, observed_daemon

Operation = schemathesis.APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Operation]

API_TOKEN = "fuzz-api-token-SECRET"
FAST: dict[str, Any] = {"energyMonitorPollSecs": 0.2}
EXAMPLES = 40  # per operation and generation mode (x ~15 operations x 2 modes: ~1,000 calls a run)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def operations(schema: schemathesis.BaseSchema) -> list[Operation]:
    """Every operation of a schema that loaded without errors."""
    out = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        out.append(result.ok())
    return out


def app_routes(run: Running) -> set[tuple[str, str]]:
    """(path template, METHOD) of every route, without the HEAD twins of GET routes."""
    out = set()
    for route in run.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str), info
        if route.method != "HEAD":
            out.add((path, route.method))
    return out


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    """(path, METHOD) of every operation in the document."""
    return {(path, method.upper()) for path, item in doc["paths"].items() for method in item}


async def test_document_lists_exactly_the_app_routes(tmp_path: Path) -> None:
    async with observed_daemon(tmp_path, World(), **FAST) as run:
        code, doc = await run.get("/openapi.json")
        assert code == 200
        assert doc["openapi"] == "3.0.3"
        assert documented_routes(doc) == app_routes(run)
        assert doc == json.loads(json.dumps(openapi_document()))


def test_document_is_valid_openapi() -> None:
    # schemathesis validates the document against the OpenAPI 3.0 meta-schema while loading.
    schema = schemathesis.openapi.from_dict(openapi_document())
    labels = {op.label for op in operations(schema)}
    assert "GET /overload" in labels
    assert "POST /overload" in labels
    assert "GET /web/{name}" in labels
    overload = schema["/overload"]["GET"]
    assert {p.name for p in overload.query} == {"token", "source"}
    assert set(overload.definition.raw["responses"]) >= {"202", "401"}
    status = openapi_document()["components"]["schemas"]["Status"]
    assert set(status["required"]) == {
        "vehicle",
        "controller",
        "last_command",
        "vehicles",
        "api_calls",
        "meter",
        "auth",
        "daemon",
        "breaker",
        "dependencies",
    }


# Keys only some set-ups have (BLE roads, alerts, MQTT, a relay, tokens held in memory, a retry
# scheduled): absent from a plain daemon's /status, and never required by the schema.
SET_UP_KEYS = {
    "roads",
    "alerts",
    "ble_bridge",
    "safety_relay",
    "mqtt",
    "grid_limit_input",
    "saved",
    "store_problem",
    "retry_in_secs",
    "car",  # a command's car, only where several cars' commands are listed together
}


def _resolve(schema: dict[str, Any], parts: dict[str, Any]) -> dict[str, Any]:
    """The schema behind a $ref or a nullable allOf wrapper."""
    while True:
        if "$ref" in schema:
            schema = parts[schema["$ref"].rsplit("/", 1)[1]]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def differences(reply: Any, schema: dict[str, Any], parts: dict[str, Any], path: str) -> list[str]:
    """Where a /status reply and its schema disagree on keys: one line per key, with its path."""
    schema = _resolve(schema, parts)
    out: list[str] = []
    if isinstance(reply, list):
        for i, item in enumerate(reply):
            out += differences(item, schema.get("items", {}), parts, f"{path}[{i}]")
    elif isinstance(reply, dict) and "properties" in schema:
        props = schema["properties"]
        out += [f"{path}.{k}: in the reply, not in the schema" for k in set(reply) - set(props)]
        for key in set(props) - set(reply):
            if key in schema.get("required", ()) or key not in SET_UP_KEYS:
                out.append(f"{path}.{key}: in the schema, not in the reply")
        for key in set(reply) & set(props):
            out += differences(reply[key], props[key], parts, f"{path}.{key}")
    elif isinstance(reply, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, value in reply.items():
            out += differences(value, schema["additionalProperties"], parts, f"{path}.{key}")
    return out


async def test_status_reply_and_schema_come_from_one_model(tmp_path: Path) -> None:
    """Every key of a real /status reply is in the published schema and vice versa, at every
    depth: the schema is generated from the model the reply is serialized from."""
    parts = openapi_document()["components"]["schemas"]
    world = World(car=charging_car(16), manual_house=(20.0,))  # 36 A on a 30 A main: a cut
    async with observed_daemon(tmp_path, world, **FAST) as run:
        # Until the cut went, so last_command is an object, not null.
        deadline = asyncio.get_running_loop().time() + WAIT_SECS * LOADED
        while True:
            code, reply = await run.get("/status")
            assert code == 200
            if reply["last_command"] is not None and reply["meter"]["valid"]:
                break
            assert asyncio.get_running_loop().time() < deadline, reply
            await asyncio.sleep(0.1)
    assert differences(reply, parts["Status"], parts, "status") == []
    # The comparison is not vacuous: it sees a key the schema lacks, and one the reply lacks.
    reply["controller"]["renamed_amps"] = reply["controller"].pop("setpoint_amps")
    assert sorted(differences(reply, parts["Status"], parts, "status")) == [
        "status.controller.renamed_amps: in the reply, not in the schema",
        "status.controller.setpoint_amps: in the schema, not in the reply",
    ]


def fuzz(base_url: str) -> list[str]:
    """Fuzz every operation but /events (an endless stream) in both generation modes.

    Runs in a worker thread: schemathesis' requests are blocking while the daemon serves
    from the test's event loop. Returns what was called, for the test's own assertions.
    """
    loaded = schemathesis.openapi.from_url(base_url + "/openapi.json", timeout=WAIT_SECS)
    schema = loaded.exclude(path="/events")
    session = requests.Session()
    seen: list[str] = []

    def run(strategy: st.SearchStrategy[Case]) -> None:
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def call(case: Case) -> None:
            response = case.call(base_url=base_url, session=session, timeout=WAIT_SECS)
            seen.append(f"{case.method} {case.operation.path} {response.status_code}")
            case.validate_response(response, checks=CHECKS)

        call()

    try:
        for operation in operations(schema):
            run(operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE))
            if operation.definition.raw.get("parameters") or operation.body:
                run(operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE))
    finally:
        session.close()
    return seen


async def test_fuzzing_finds_no_5xx_and_no_state_change_without_the_token(
    tmp_path: Path,
) -> None:
    # Push mode: only an /overload makes the daemon act (a look at the car, then a command).
    world = World(car=charging_car(16))
    async with observed_daemon(tmp_path, world, monitor=False, apiToken=API_TOKEN) as run:
        service = run.daemon.service
        api_before = run.daemon.counter.counts()

        seen = await asyncio.to_thread(fuzz, run.url)

        overload_calls = [s for s in seen if "/overload" in s]
        assert len(overload_calls) > 20
        assert all(s.endswith(" 401") for s in overload_calls), overload_calls[:5]
        assert {s.split()[0] for s in overload_calls} == {"GET", "POST"}
        assert run.overloads == []  # nothing reached the daemon
        assert service.state.last_overload_at is None
        assert not service.overload_queued
        assert list(service.commands) == []
        assert run.daemon.counter.counts() == api_before
        # Every path but the endless stream (and the document itself, which schemathesis loads).
        documented = set(openapi_document()["paths"]) - {"/events", "/openapi.json"}
        assert {s.split()[1] for s in seen} == documented

        # The spy does see an authorised call, so the silence above means something.
        code, body = await run.get("/overload", params={"token": API_TOKEN, "source": "ok"})
        assert code == 202
        assert body["accepted"] is True
        assert run.overloads == ["ok"]
        await world.proxy.wait_for_command("set_charging_amps", timeout=3 * LOADED)


async def test_fuzzing_without_an_api_token_finds_no_5xx(tmp_path: Path) -> None:
    """Without apiToken /overload is open: the 202 replies must match the document too."""
    async with observed_daemon(tmp_path, World(car=charging_car(16)), monitor=False) as run:
        seen = await asyncio.to_thread(fuzz, run.url)
        assert any(s.startswith("POST /overload 202") for s in seen)
        assert any(s.startswith("GET /overload 202") for s in seen)
        assert not [s for s in seen if s.endswith(" 401")]
        assert len(run.overloads) == len([s for s in seen if "/overload 202" in s])
