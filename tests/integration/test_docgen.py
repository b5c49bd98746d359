"""The committed configuration reference is generated from the settings model and matches it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tesla_smart_charger.config.settings import FIELD_BY_KEY, SECRET_FIELDS, Settings
from tesla_smart_charger.devtools import docgen

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_committed_reference_is_current() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == docgen.render_config_reference(), (
        "docs/configuration.md is stale: run python -m tesla_smart_charger.devtools.docgen"
    )


def test_reference_lists_exactly_the_accepted_keys() -> None:
    text = docgen.render_config_reference()
    sections = set(re.findall(r"^### `([A-Za-z]+)`$", text, flags=re.MULTILINE))
    rows = set(re.findall(r"^\| \[`([A-Za-z]+)`\]", text, flags=re.MULTILINE))
    assert sections == set(FIELD_BY_KEY)
    assert rows == set(FIELD_BY_KEY)


def test_each_key_documents_env_range_default_and_secrecy() -> None:
    text = docgen.render_config_reference()
    chunks = dict(re.findall(r"^### `(\w+)`\n(.*?)(?=^### |\Z)", text, flags=re.M | re.S))
    for key, name in FIELD_BY_KEY.items():
        chunk = chunks[key]
        assert f"- Environment: `TSC_{name.upper()}`" in chunk
        assert ("- Secret: yes" in chunk) == (name in SECRET_FIELDS)
        description = Settings.model_fields[name].description
        assert description, f"{key} has no description in config.py"
        assert description in chunk
    assert "- Range: >= 0.05, <= 0.95" in chunks["downStepPercentage"]
    assert "- Range: >= 0, <= 65535" in chunks["apiPort"]
    assert "- Default: **required**" in chunks["homeMaxAmps"]
    assert '- Default: `"shelly-em"`' in chunks["energyMonitorType"]
    assert "list of integer (>= 0, <= 5)" in chunks["energyMonitorSupplyChannels"]


def test_check_mode_reports_stale_and_current(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    assert docgen.main(["--check", "--output", str(target)]) == 1
    assert docgen.main(["--output", str(target)]) == 0
    assert docgen.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "edit\n", encoding="utf-8")
    assert docgen.main(["--check", "--output", str(target)]) == 1


def test_unknown_annotation_is_a_loud_error() -> None:
    with pytest.raises(TypeError, match="no reader's name"):
        docgen._type_name(complex)


@pytest.mark.slow
async def test_api_examples_are_real_replies_of_this_version() -> None:
    """docs/api.md's /status and /health examples have exactly the keys a real run gives."""
    from tesla_smart_charger.devtools import apidocs  # noqa: PLC0415

    committed = apidocs.examples((REFERENCE.parent / "api.md").read_text(encoding="utf-8"))
    fresh = await apidocs.capture()
    for name in ("status", "health", "unhealthy"):
        assert apidocs.shape(committed[name]) == apidocs.shape(fresh[name]), (
            f"docs/api.md {name} example is stale: run python -m tesla_smart_charger.devtools.docgen --api"
        )
    assert committed["health"] == fresh["health"]
    assert fresh["status"]["meter"]["supply_phases"] == "auto"
    assert fresh["status"]["last_command"]["command"] == "set_charging_amps"
    assert any("energyMonitorPassword" in p for p in fresh["unhealthy"]["problems"])


def test_render_replaces_only_the_generated_block() -> None:
    from tesla_smart_charger.devtools import apidocs  # noqa: PLC0415

    text = (
        "before\n<!-- BEGIN generated: health -->\n```json\n{}\n```\n"
        "<!-- END generated: health -->\nafter\n"
    )
    out = apidocs.render(text, {"health": {"status": "ok"}})
    assert out.startswith("before\n")
    assert out.endswith("\nafter\n")
    assert '"status": "ok"' in out
    assert apidocs.shape({"a": {"b": 1}, "c": [{"d": 2}]}) == {"a", "a.b", "c[]", "c[].d"}
    with pytest.raises(ValueError, match="unhealthy"):
        apidocs.render(text, {"unhealthy": {}})
