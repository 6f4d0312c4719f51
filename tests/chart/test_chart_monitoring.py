"""The chart's alert rules and Grafana dashboard: the rules pass `promtool check rules` and their
unit tests (`promtool test rules`, tests/chart/promtool), and every query of both names only
metrics and labels the services export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

from kamus_decryptor.app import create_app as create_decryptor
from kamus_dev.kubeconfig import write_kubeconfig
from kamus_encryptor.app import create_app as create_encryptor
from kamus_kms.envelope import KmsMetrics
from kamus_kms.keyring import Keyring
from kamus_service.settings import Settings

CHART = Path(__file__).resolve().parents[2] / "charts" / "kamus"

Manifests = Callable[[str], list[dict[str, Any]]]
PROMTOOL_TESTS = Path(__file__).parent / "promtool" / "kamus_alerts_test.yaml"
# Labels Prometheus gives every series from its target (Prometheus Operator's ServiceMonitor).
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}
_METRIC = re.compile(r"\b(kamus_[a-z0-9_]+)(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
# Grafana's variables, as Grafana substitutes them, so that promtool can parse the queries.
_GRAFANA = {"$__rate_interval": "1m", "$__range": "6h", "$namespace": "kamus", "$job": ".+"}


def promtool() -> str:
    """Debian's promtool, which scripts/bootstrap.sh puts into the venv."""
    found = Path(sys.prefix) / "bin" / "promtool"
    path = str(found) if found.exists() else shutil.which("promtool")
    assert path, "promtool is missing: run scripts/bootstrap.sh --test"
    return path


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rule_groups(manifests: Manifests) -> dict[str, Any]:
    (rule,) = [m for m in manifests("monitoring") if m["kind"] == "PrometheusRule"]
    return {"groups": rule["spec"]["groups"]}


def dashboard(manifests: Manifests) -> dict[str, Any]:
    (config_map,) = [m for m in manifests("monitoring") if m["kind"] == "ConfigMap"]
    loaded: dict[str, Any] = json.loads(config_map["data"]["kamus.json"])
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries(board: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in panels(board) for target in panel.get("targets", [])]


def alert_queries(groups: dict[str, Any]) -> list[str]:
    return [rule["expr"] for group in groups["groups"] for rule in group["rules"]]


def exported_metrics(kubeconfig: Path) -> dict[str, set[str]]:
    """Every series name the services can expose, with its label names: the families registered by
    the encryptor and decryptor apps (HTTP, readiness, decrypt, TokenReview) and by the remote
    KMS providers (KmsMetrics, registered into the app's registry when a KMS is configured)."""
    keyring = Keyring.generate().to_json()
    encryptor, decryptor = CollectorRegistry(), CollectorRegistry()
    create_encryptor(Settings(service="encryptor", keyring=keyring), registry=encryptor)
    settings = Settings(
        service="decryptor", keyring=keyring, audit_key=b"k" * 32, kubeconfig=kubeconfig
    )
    create_decryptor(settings, registry=decryptor)
    registries = [encryptor, decryptor]
    kms_registry = CollectorRegistry()
    KmsMetrics(kms_registry)
    registries.append(kms_registry)

    exported: dict[str, set[str]] = {}
    for registry in registries:
        for collector in list(registry._collector_to_names):  # no public listing of collectors
            if not isinstance(collector, MetricWrapperBase):
                continue
            name, labels = collector._name, set(collector._labelnames)
            if isinstance(collector, Counter):
                exported[f"{name}_total"] = labels
            elif isinstance(collector, Histogram):
                for suffix in ("_sum", "_count"):
                    exported[name + suffix] = labels
                exported[f"{name}_bucket"] = labels | {"le"}
            elif isinstance(collector, Gauge):
                exported[name] = labels
    return exported


def unknown_references(query: str, exported: dict[str, set[str]]) -> list[str]:
    """Metric names, matchers and groupings of a query that no exported series has."""
    problems = []
    known_labels = set(TARGET_LABELS)
    used = _METRIC.findall(query)
    assert used, f"no Kamus metric in {query!r}"
    for name, matchers in used:
        if name not in exported:
            problems.append(f"metric {name}")
            continue
        labels = exported[name] | TARGET_LABELS
        known_labels |= labels
        problems += [f"{name} has no label {label}" for label in _MATCHER.findall(matchers)
                     if label not in labels]  # fmt: skip
    for grouping in _GROUPING.findall(query):
        for label in filter(None, (part.strip() for part in grouping.split(","))):
            if label not in known_labels:
                problems.append(f"grouping by {label}")
    return problems


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    # The decryptor's TokenReview client is made (and its metrics registered) but never called.
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    write_kubeconfig(kubeconfig, "https://127.0.0.1:9", "unused")
    return exported_metrics(kubeconfig)


def test_the_alert_rules_pass_promtool_check(manifests: Manifests, tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(manifests)))
    result = run_promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def run_rule_tests(groups: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of tests/chart/promtool over these rule groups."""
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups))
    shutil.copy(PROMTOOL_TESTS, tmp_path / "tests.yaml")
    return run_promtool("test", "rules", "tests.yaml", cwd=tmp_path)


def test_the_alerts_fire_when_they_should_and_only_then(
    manifests: Manifests, tmp_path: Path
) -> None:
    result = run_rule_tests(rule_groups(manifests), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_tests_do_fail_on_a_wrong_expectation(
    manifests: Manifests, tmp_path: Path
) -> None:
    # The unit tests above can fail: with a lower threshold the second caller probes too.
    groups = rule_groups(manifests)
    probing = groups["groups"][0]["rules"][1]
    assert probing["alert"] == "KamusScopeProbing"
    probing["expr"] = probing["expr"].replace(">= 3", ">= 2")
    result = run_rule_tests(groups, tmp_path)
    assert result.returncode != 0
    assert "team-c" in result.stdout + result.stderr


def test_alerts_query_only_this_release_s_series(manifests: Manifests) -> None:
    for query in alert_queries(rule_groups(manifests)):
        for _, matchers in _METRIC.findall(query):
            assert 'namespace="kamus",job=~"kamus-(encryptor|decryptor)"' in matchers, query


def test_a_selector_given_as_a_value_replaces_the_default(
    objects_of: Callable[..., list[dict[str, Any]]], keys: dict[str, Any]
) -> None:
    # Prometheus set up without the Operator's ServiceMonitor names jobs its own way.
    values = {**keys, "prometheusRule": {"enabled": True, "selector": 'kubernetes_namespace="sec"'}}
    (rule,) = [m for m in objects_of(CHART, values) if m["kind"] == "PrometheusRule"]
    for query in alert_queries({"groups": rule["spec"]["groups"]}):
        for _, matchers in _METRIC.findall(query):
            assert matchers.startswith('{kubernetes_namespace="sec"'), query
            assert "job=" not in matchers


def test_every_alert_and_dashboard_query_names_exported_metrics_and_labels(
    manifests: Manifests, exported: dict[str, set[str]]
) -> None:
    queries = alert_queries(rule_groups(manifests)) + dashboard_queries(dashboard(manifests))
    problems = {query: unknown_references(query, exported) for query in queries}
    assert {query: found for query, found in problems.items() if found} == {}
    # Everything a security team would look for has a panel or an alert.
    referenced = {name for query in queries for name, _ in _METRIC.findall(query)}
    expected = {"kamus_decrypt_denials_total", "kamus_decrypt_key_opens_total",
                "kamus_tokenreview_duration_seconds_bucket", "kamus_dependency_ready"}  # fmt: skip
    assert expected <= referenced


def test_the_metric_check_finds_a_misspelt_metric_or_label(exported: dict[str, set[str]]) -> None:
    assert unknown_references("sum(rate(kamus_decrypt_denial_total[5m]))", exported) == [
        "metric kamus_decrypt_denial_total"
    ]
    assert unknown_references('kamus_decrypt_total{reson="ok"}', exported) == [
        "kamus_decrypt_total has no label reson"
    ]
    assert unknown_references("sum by (caller) (kamus_decrypt_denials_total)", exported) == [
        "grouping by caller"
    ]


def test_every_dashboard_query_is_valid_promql(manifests: Manifests, tmp_path: Path) -> None:
    # promtool parses queries inside rule files: each query becomes a recording rule.
    queries = dashboard_queries(dashboard(manifests))
    rules = []
    for index, query in enumerate(queries):
        substituted = query
        for variable, value in _GRAFANA.items():
            substituted = substituted.replace(variable, value)
        assert "$" not in substituted, query
        rules.append({"record": f"kamus:dashboard_query_{index}", "expr": substituted})
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]})
    )
    result = run_promtool("check", "rules", "queries.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_self_contained_for_grafana_s_sidecar(manifests: Manifests) -> None:
    (config_map,) = [m for m in manifests("monitoring") if m["kind"] == "ConfigMap"]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Security"}
    board = dashboard(manifests)
    assert board["uid"] == "kamus-overview"
    ids = [panel["id"] for panel in panels(board)]
    assert len(ids) == len(set(ids))
    # Every panel reads the data source picked in the dashboard, none a fixed one of some Grafana.
    for panel in panels(board):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
    assert not re.search(r"https?://", json.dumps(board))
