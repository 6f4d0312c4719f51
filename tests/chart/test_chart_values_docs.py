"""Every value of both charts is documented with an `@param` comment, every comment names a real
value, and the defaults pass the chart's own schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

CHARTS = Path(__file__).resolve().parents[2] / "charts"
PARAM = re.compile(r"^\s*## @param (\S+)", re.MULTILINE)


def leaves(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Paths of the values a user sets; a non-empty mapping is documented through its children."""
    found: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            found |= leaves(value, path + ".")
        else:
            found.add(path)
    return found


def documented(text: str) -> set[str]:
    return set(PARAM.findall(text))


@pytest.mark.parametrize("chart", ["kamus", "kamus-example-workload"])
def test_every_value_is_documented(chart: str) -> None:
    text = (CHARTS / chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    params = documented(text)
    # A mapping documented as one [object] (e.g. resources) covers its children.
    undocumented = {
        path
        for path in leaves(values)
        if not any(path == p or path.startswith(p + ".") for p in params)
    }
    assert undocumented == set()


@pytest.mark.parametrize("chart", ["kamus", "kamus-example-workload"])
def test_every_param_comment_names_a_value(chart: str) -> None:
    text = (CHARTS / chart / "values.yaml").read_text()
    values = yaml.safe_load(text)
    for path in documented(text):
        node: Any = values
        for part in path.split("."):
            assert isinstance(node, dict), path
            assert part in node, path
            node = node[part]


@pytest.mark.parametrize("chart", ["kamus", "kamus-example-workload"])
def test_defaults_satisfy_the_draft_07_schema(chart: str) -> None:
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)


def test_keys_have_no_defaults() -> None:
    values = yaml.safe_load((CHARTS / "kamus" / "values.yaml").read_text())
    assert values["keyring"]["existingSecret"]["name"] == ""
    assert values["keyring"]["create"]["keyringJson"] == ""
    assert values["auditKey"]["existingSecret"]["name"] == ""
    assert values["auditKey"]["create"]["value"] == ""
    assert values["kms"]["namingKey"]["create"]["value"] == ""
