"""`kamus-audit report --html` opened in headless Chromium: the page renders its charts and tables,
asks for nothing but itself, and its Content-Security-Policy stops even content injected into it
from reaching the network."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from browser import Browser, chromium
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gunicorn_process import base_environment
from selenium.webdriver.common.by import By

from kamus_decryptor.auditfile import AuditDirectory

START = datetime(2026, 11, 27, tzinfo=UTC)
HOSTILE = '<img src="http://127.0.0.1:9/x.png"><script>window.pwned = 1</script>'
NAMESPACES = ("payments", "checkout", "search", "team-a")


def _event(number: int) -> dict[str, Any]:
    namespace = NAMESPACES[number % len(NAMESPACES)]
    denied = number % 9 == 0
    return {
        "time": (START + timedelta(minutes=13 * number)).isoformat(timespec="milliseconds"),
        "audit": True,
        "action": "decrypt",
        "request_id": f"r{number}",
        "outcome": "denied" if denied else "allowed",
        "reason": "scope_mismatch" if denied else "ok",
        "caller": {"username": f"system:serviceaccount:{namespace}:app", "pod": HOSTILE},
        "items": [
            {
                "name": HOSTILE,
                "fingerprint": "ab" * 16,
                "namespace": "billing" if denied else namespace,
                "service_account": "app",
                "provider": "local",
                "key_id": f"k{number % 3}",
            }
        ],
        "source_ip": "10.0.0.1",
        "user_agent": HOSTILE,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML report of two decryptor processes' chains, made by the kamus-audit program."""
    folder = tmp_path_factory.mktemp("audit")
    chains = AuditDirectory(folder, b"k" * 32, fsync=False, signer=Ed25519PrivateKey.generate())
    for number in range(300):
        chains.append(_event(number))
    target = folder.parent / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "kamus_cli.audit", "report", str(folder), "--html", str(target)],
        capture_output=True, text=True, env=base_environment({}), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with chromium(tmp_path / "profile") as running:
        running.requested_urls()
        yield running


def test_the_report_renders_its_charts_and_asks_for_nothing_but_itself(
    browser: Browser, report: Path
) -> None:
    driver = browser.driver
    driver.get(report.as_uri())
    assert driver.title == "Kamus audit report"
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 6
    for chart in charts:
        assert chart.size["width"] > 100
        assert chart.size["height"] > 20
        assert chart.find_elements(By.CSS_SELECTOR, "rect.bar")
    # 300 events over 65 hours: 11 six-hour columns (hourly ones would be more than 60), each
    # stacking the 4 namespaces of the allowed decrypts.
    timeline = driver.find_element(By.ID, "timeline")
    assert len(timeline.find_elements(By.CSS_SELECTOR, "rect.bar")) == 11 * 4
    legend = driver.find_element(By.CSS_SELECTOR, "#decrypts .legend").text.split()
    assert sorted(legend) == sorted(NAMESPACES)
    # The tables behind the charts: the probe into billing shows under the denied callers.
    denied = driver.find_element(By.CSS_SELECTOR, "#denied-scopes table").text
    assert "billing/app" in denied
    keys = driver.find_element(By.CSS_SELECTOR, "#keys table").text
    assert {"local:k0", "local:k1", "local:k2"} <= set(keys.split())
    totals = driver.find_element(By.CSS_SELECTOR, ".totals").text.split()
    assert totals[:2] == ["300", "events"]

    assert browser.requested_urls() == [report.as_uri()]
    assert browser.console_errors() == []
    # The attacker-chosen values are text: no element was made of them, no script ran.
    assert driver.find_elements(By.CSS_SELECTOR, "img, script") == []
    assert driver.execute_script("return typeof window.pwned") == "undefined"


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_even_content_injected_into_the_page_cannot_reach_the_network(
    browser: Browser, report: Path
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        browser.driver.get(report.as_uri())
        browser.driver.execute_script(
            "for (const tag of ['img', 'iframe']) {"
            "  const element = document.createElement(tag);"
            "  element.src = arguments[0] + '/' + tag;"
            "  document.body.appendChild(element);"
            "}"
            "const link = document.createElement('link');"
            "link.rel = 'stylesheet'; link.href = arguments[0] + '/style';"
            "document.head.appendChild(link);"
            "fetch(arguments[0] + '/fetch').catch(() => {});",
            url,
        )
        # Wait until the browser has refused all four (not a fixed pause a slow machine could
        # outlast): an image, a frame, a stylesheet and a connection.
        kinds = ("Loading the image", "Framing", "Loading the stylesheet", "Connecting to")
        refusals: list[str] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            refusals += browser.console_errors()
            if all(any(kind in line for line in refusals) for kind in kinds):
                break
            time.sleep(0.05)
        assert all(any(kind in line for line in refusals) for kind in kinds), refusals
        assert all("Content Security Policy" in line for line in refusals)
        assert _Counting.hits == []
    finally:
        server.shutdown()
        server.server_close()
