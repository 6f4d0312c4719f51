"""The chart's ServiceMonitor and PrometheusRule against the Prometheus Operator's own CRD schemas
(as @kubernetes-models/prometheus-operator compiles them; scripts/bootstrap.sh installs it from
tests/chart/operator-schemas/package-lock.json), in every value set that renders them. The API
server dry run registers these kinds without a schema; this is where their shape is checked."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

Manifests = Callable[[str], list[dict[str, Any]]]
SCHEMAS = Path(__file__).parent / "operator-schemas"
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


def validate(objects: list[dict[str, Any]], tmp_path: Path) -> list[str | None]:
    """None for each valid object, else the schema's complaint."""
    node = shutil.which("node")
    assert node, "Node.js is missing: run scripts/bootstrap.sh --test"
    assert (SCHEMAS / "node_modules").is_dir(), "run scripts/bootstrap.sh --test (npm ci)"
    given = tmp_path / "objects.json"
    given.write_text(json.dumps(objects))
    result = subprocess.run(
        [node, str(SCHEMAS / "validate.mjs"), str(given)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answers: list[str | None] = json.loads(result.stdout)
    return answers


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
