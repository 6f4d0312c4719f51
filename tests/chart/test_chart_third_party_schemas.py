"""The chart's third-party objects against their owners' published schemas (scripts/bootstrap.sh
installs them from tests/chart/schemas/package-lock.json, run with Node.js):

- every ServiceMonitor and PrometheusRule of every value set against the Prometheus Operator's CRD
  schemas, as @kubernetes-models/prometheus-operator compiles them (the API server dry run
  registers these kinds without a schema);
- the Grafana dashboard against Grafana's own Dashboard type (@grafana/schema), type-checked by
  TypeScript as an object literal: unknown properties and wrong types are errors.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

Manifests = Callable[[str], list[dict[str, Any]]]
SCHEMAS = Path(__file__).parent / "schemas"
DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "kamus" / "dashboards" / "kamus.json"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def _node(script: str, document: Any, tmp_path: Path) -> Any:
    """What ``script`` (of tests/chart/schemas) prints about ``document``, as JSON."""
    node = shutil.which("node")
    assert node, "Node.js is missing: run scripts/bootstrap.sh --test"
    assert (SCHEMAS / "node_modules").is_dir(), "run scripts/bootstrap.sh --test (npm ci)"
    given = tmp_path / "document.json"
    given.write_text(json.dumps(document))
    result = subprocess.run(
        [node, str(SCHEMAS / script), str(given)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def validate(objects: list[dict[str, Any]], tmp_path: Path) -> list[str | None]:
    """None for each valid object, else the schema's complaint."""
    answers: list[str | None] = _node("validate-operator.mjs", objects, tmp_path)
    return answers


def dashboard_problems(model: dict[str, Any], tmp_path: Path) -> list[str]:
    """TypeScript's complaints about a dashboard model typed as Grafana's Dashboard."""
    problems: list[str] = _node("check-dashboard.mjs", model, tmp_path)
    return problems


def test_every_operator_object_of_every_value_set_fits_the_operator_s_schema(
    manifests: Manifests, case_names: list[str], tmp_path: Path
) -> None:
    found = {
        (case, m["kind"]): m
        for case in case_names
        for m in manifests(case)
        if m["kind"] in OPERATOR_KINDS
    }
    # The value sets cover both kinds, with TLS and without.
    assert {kind for _, kind in found} == OPERATOR_KINDS
    assert len(found) >= 4
    answers = validate(list(found.values()), tmp_path)
    assert {key: answer for key, answer in zip(found, answers, strict=True) if answer} == {}


def test_the_schemas_do_refuse_a_malformed_rule_and_monitor(
    manifests: Manifests, tmp_path: Path
) -> None:
    # Copies: the rendered objects are shared by the session's tests.
    objects = copy.deepcopy(manifests("monitoring"))
    (rule,) = [m for m in objects if m["kind"] == "PrometheusRule"]
    (monitor,) = [m for m in objects if m["kind"] == "ServiceMonitor"]
    rule["spec"]["groups"][0]["rules"][0]["for"] = 5  # a duration is a string
    monitor["spec"]["endpoints"] = {"port": "http"}  # a list
    answers = validate([rule, monitor], tmp_path)
    assert answers[0] is not None
    assert "for must be string" in answers[0]
    assert answers[1] is not None
    assert "endpoints must be array" in answers[1]


def test_the_dashboard_is_a_grafana_dashboard_by_grafana_s_own_schema(tmp_path: Path) -> None:
    assert dashboard_problems(json.loads(DASHBOARD.read_text("utf-8")), tmp_path) == []


def test_the_dashboard_check_finds_an_unknown_property_and_a_wrong_type(tmp_path: Path) -> None:
    model = json.loads(DASHBOARD.read_text("utf-8"))
    model["templating"]["list"][1]["definitio"] = "typo"
    model["panels"][1]["gridPos"]["w"] = "12"
    problems = dashboard_problems(model, tmp_path)
    assert len(problems) == 2
    assert "'\"definitio\"' does not exist" in problems[0]
    assert "Type 'string' is not assignable to type 'number'" in problems[1]
