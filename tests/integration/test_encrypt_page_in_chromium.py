"""The encrypt page in headless Chromium against the real encryptor under gunicorn: type, submit,
read the ciphertext and its ConfigMap, copy it, and decrypt it through the real decryptor with a
pod's token. The page talks to nothing but its own origin and the browser reports no refusal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from browser import Browser, chromium
from gunicorn_process import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

SECRET = "pässwörd ✓\nsecond line with 'quotes' and $HOME"
PAGE_FILES = {"/", "/ui/encrypt.css", "/ui/encrypt.js", "/ui/favicon.svg"}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with chromium(tmp_path / "profile") as running:
        running.requested_urls()  # what the browser loaded by itself at start
        yield running


def _open(browser: Browser, encryptor: Service) -> None:
    browser.driver.get(encryptor.url + "/")
    WebDriverWait(browser.driver, 10).until(
        expected_conditions.element_to_be_clickable((By.ID, "encrypt"))
    )


def _fill(browser: Browser, namespace: str, service_account: str, secret: str) -> None:
    driver = browser.driver
    for field, value in (("namespace", namespace), ("service-account", service_account),
                         ("secret", secret)):  # fmt: skip
        element = driver.find_element(By.ID, field)
        element.clear()
        element.send_keys(value)
    driver.find_element(By.ID, "encrypt").click()


def _text(browser: Browser, element_id: str) -> str:
    text: str = browser.driver.find_element(By.ID, element_id).get_attribute("textContent") or ""
    return text


def test_encrypting_in_the_page_gives_a_ciphertext_the_pod_decrypts(
    browser: Browser,
    encryptor: Service,
    decryptor: Service,
    token: Callable[..., str],
) -> None:
    _open(browser, encryptor)
    assert browser.driver.title == "Kamus: encrypt a secret"
    assert not browser.driver.find_element(By.ID, "insecure").is_displayed()  # loopback is secure
    _fill(browser, "team-a", "app", SECRET)
    WebDriverWait(browser.driver, 10).until(
        expected_conditions.visibility_of_element_located((By.ID, "result"))
    )
    ciphertext = _text(browser, "ciphertext")
    assert ciphertext.startswith("kamus:v1:local:team-a:app:")
    assert browser.driver.find_element(By.ID, "secret").get_attribute("value") == ""
    assert "Encrypted for team-a/app" in _text(browser, "status")

    # The pod of team-a/app decrypts it; the page's snippets hold exactly that ciphertext.
    response = requests.post(
        decryptor.url + "/api/v1/decrypt",
        json={"data": ciphertext},
        headers={"Authorization": f"Bearer {token('team-a', 'app')}"},
        timeout=10,
    )
    assert (response.status_code, response.content.decode("utf-8")) == (200, SECRET)
    manifest = yaml.safe_load(_text(browser, "manifest"))
    assert manifest == {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "encrypted-secrets", "namespace": "team-a"},
        "data": {"secret": ciphertext},
    }
    browser.driver.find_element(By.ID, "key").send_keys("-db")
    assert yaml.safe_load(_text(browser, "manifest"))["data"] == {"secret-db": ciphertext}
    assert _text(browser, "kubectl") == (
        "kubectl create configmap 'encrypted-secrets' --namespace 'team-a' \\\n"
        f"  --from-literal='secret-db={ciphertext}'"
    )

    # Nothing but the page's own files and one encrypt call, all to the encryptor's origin; the
    # secret in no URL; no Content-Security-Policy refusal or script error.
    urls = browser.requested_urls()
    origin = urlsplit(encryptor.url)
    assert {(urlsplit(u).scheme, urlsplit(u).netloc) for u in urls} == {
        (origin.scheme, origin.netloc)
    }
    assert {urlsplit(u).path for u in urls} == PAGE_FILES | {"/api/v1/encrypt"}
    assert not any("p%C3%A4ssw" in u or "second" in u for u in urls)
    assert browser.console_errors() == []


def test_the_copy_button_puts_the_ciphertext_on_the_clipboard(
    browser: Browser, encryptor: Service
) -> None:
    origin = encryptor.url
    browser.driver.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    _open(browser, encryptor)
    _fill(browser, "team-a", "app", "to copy")
    WebDriverWait(browser.driver, 10).until(
        expected_conditions.visibility_of_element_located((By.ID, "result"))
    )
    button = browser.driver.find_element(By.CSS_SELECTOR, 'button[data-copy="ciphertext"]')
    button.click()
    WebDriverWait(browser.driver, 5).until(lambda _: button.text == "Copied")
    pasted = browser.driver.execute_async_script(
        "const done = arguments[0]; navigator.clipboard.readText().then(done, e => done('!' + e));"
    )
    assert pasted == _text(browser, "ciphertext")


def test_a_refusal_is_shown_with_kamus_s_reason_and_bad_names_never_leave_the_page(
    browser: Browser, encryptor: Service
) -> None:
    _open(browser, encryptor)
    # The browser checks names against Kubernetes' rules first: nothing is sent (counted below,
    # once the next submission's answer is in, so a late request would show too).
    _fill(browser, "Team_A", "app", "secret")
    assert browser.driver.find_element(By.ID, "result").get_attribute("hidden") is not None
    # What only the server knows comes back as its message, and the secret stays in the field.
    _fill(browser, "team-a", "default", "secret")
    WebDriverWait(browser.driver, 10).until(lambda _: "(400 " in _text(browser, "status"))
    sent = [u for u in browser.requested_urls() if urlsplit(u).path == "/api/v1/encrypt"]
    assert len(sent) == 1
    status = browser.driver.find_element(By.ID, "status")
    assert "default` service account" in status.text
    assert "(400 " in status.text
    assert status.get_attribute("class") == "error"
    assert browser.driver.find_element(By.ID, "result").get_attribute("hidden") is not None
    assert browser.driver.find_element(By.ID, "secret").get_attribute("value") == "secret"


def test_over_plain_http_to_another_host_the_page_warns(tmp_path: Path, encryptor: Service) -> None:
    # A host name other than localhost over http:// is not a secure context; Chromium maps the
    # name to the encryptor on 127.0.0.1, so nothing leaves the machine.
    port = urlsplit(encryptor.url).port
    rule = "--host-resolver-rules=MAP kamus.example.test 127.0.0.1"
    with chromium(tmp_path / "profile", rule) as browser:
        browser.driver.get(f"http://kamus.example.test:{port}/")
        warning = browser.driver.find_element(By.ID, "insecure")
        WebDriverWait(browser.driver, 10).until(lambda _: warning.is_displayed())
        assert "not loaded over HTTPS" in warning.text
