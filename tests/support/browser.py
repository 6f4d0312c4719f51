"""Debian's Chromium, headless, driven through its chromedriver with Selenium, for the tests of the
pages people look at (the encrypt page, the audit report).

Nothing is downloaded: the driver is given by path, so Selenium Manager never runs. The flags turn
off everything Chromium would reach the network for on its own (updates, sync, safe browsing,
field trials), so that any request seen in the log is one the page made.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService

CHROMIUM = "/usr/bin/chromium"
_BROWSER_OWN = ("chrome:", "chrome-untrusted:", "devtools:", "data:", "about:")
CHROMEDRIVER = "/usr/bin/chromedriver"
_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--window-size=1200,900",
)


@dataclass
class Browser:
    """A running headless Chromium and what it logged."""

    driver: webdriver.Chrome

    def _performance(self) -> list[dict[str, Any]]:
        entries = self.driver.get_log("performance")  # type: ignore[no-untyped-call]
        return [json.loads(entry["message"])["message"] for entry in entries]

    def requested_urls(self) -> list[str]:
        """Every URL the browser asked for since the last call (from the DevTools network log),
        but its own pages (chrome:, the new-tab page it opens with) and inline data: URLs."""
        urls = [
            event["params"]["request"]["url"]
            for event in self._performance()
            if event["method"] == "Network.requestWillBeSent"
        ]
        return [url for url in urls if not url.startswith(_BROWSER_OWN)]

    def console_errors(self) -> list[str]:
        """Errors the page logged since the last call, Content-Security-Policy refusals included."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")  # type: ignore[no-untyped-call]
            if entry["level"] in {"SEVERE", "ERROR"}
        ]


def installed() -> bool:
    return shutil.which(CHROMIUM) is not None and shutil.which(CHROMEDRIVER) is not None


@contextmanager
def chromium(profile: Path, *flags: str) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile in ``profile`` (and extra command-line
    ``flags``), quit when the block ends."""
    assert installed(), "Chromium is missing: run scripts/bootstrap.sh --test"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in _FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    for flag in flags:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=DriverService(executable_path=CHROMEDRIVER))
    try:
        yield Browser(driver)
    finally:
        driver.quit()
