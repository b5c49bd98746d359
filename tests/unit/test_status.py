"""The typed status: keys only some set-ups have are left out of the JSON, never sent as null."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tesla_smart_charger.runtime.status import AlertsView, DaemonStatus, Dependencies
from tests.helpers.status import SAMPLE, sample_status


def test_set_up_keys_are_absent_not_null() -> None:
    plain = sample_status().as_json()
    assert "roads" not in plain
    assert "alerts" not in plain
    assert "saved" not in plain["auth"]
    assert set(plain["dependencies"]) == {"car_link", "token_endpoint", "token_store", "tasks"}
    assert plain["breaker"] is None  # always there: null in push mode
    alerts = AlertsView(sent=1, failed=0, dropped=0, queued=0, failing=False)
    with_alerts = sample_status().model_copy(update={"alerts": alerts}).as_json()
    assert with_alerts["alerts"] == {
        "sent": 1,
        "failed": 0,
        "dropped": 0,
        "queued": 0,
        "failing": False,
    }
    assert sample_status(auth={"saved": False}).as_json()["auth"]["saved"] is False


def test_dependencies_in_status_order() -> None:
    deps = Dependencies.model_validate(
        {**SAMPLE["dependencies"], "mqtt": SAMPLE["dependencies"]["tasks"]}
    )
    assert [name for name, _ in deps.items()] == [
        "car_link",
        "token_endpoint",
        "token_store",
        "mqtt",
        "tasks",
    ]


def test_a_renamed_or_unknown_field_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="headroom_amps"):
        sample_status(controller={"headroom_amps": 3.0})
    with pytest.raises(ValidationError, match="state"):
        sample_status(vehicle={"state": "parked"})
    assert DaemonStatus.model_validate(sample_status().as_json()) == sample_status()
