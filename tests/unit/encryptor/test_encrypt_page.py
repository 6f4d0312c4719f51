"""The encrypt page: HTML for browsers at `/`, Kamus's `welcome` for every other client, its own
assets only, under a strict Content-Security-Policy. (In a real browser: tests/integration/
test_encrypt_page_in_chromium.py.)"""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from kamus_encryptor import create_app
from kamus_kms.keyring import Keyring
from kamus_kms.providers.local import LocalKeyringProvider
from kamus_kms.sealingkeys import SealingKeyring
from kamus_service.settings import Settings

CHROME = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"
FIREFOX = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def _client(keyring: Keyring, *, web_page: bool = True) -> FlaskClient:
    settings = Settings(service="encryptor", keyring=keyring.to_json(), web_page=web_page)
    return create_app(settings).test_client()


@pytest.mark.parametrize("accept", [CHROME, FIREFOX, "text/html"])
def test_browsers_get_the_page_at_the_root(keyring: Keyring, accept: str) -> None:
    response = _client(keyring).get("/", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<title>Kamus: encrypt a secret</title>" in response.data
    assert response.headers["Vary"] == "Accept"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "accept",
    [
        None,  # Python's urllib, Go's http client
        "*/*",  # curl, wget, kubelet probes
        "application/json, text/plain, */*",  # the original kamus-cli (axios)
        "text/plain",
        "application/json",
    ],
)
def test_every_other_client_still_gets_kamus_s_welcome(
    keyring: Keyring, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = _client(keyring).get("/", headers=headers)
    assert (response.status_code, response.data) == (200, b"welcome")
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_the_page_is_off_when_the_setting_says_so(keyring: Keyring) -> None:
    client = _client(keyring, web_page=False)
    assert client.get("/", headers={"Accept": CHROME}).data == b"welcome"
    assert client.get("/ui/encrypt.js").status_code == 404


def test_page_and_assets_carry_a_strict_content_security_policy(keyring: Keyring) -> None:
    client = _client(keyring)
    for path, content_type in [
        ("/", "text/html; charset=utf-8"),
        ("/ui/encrypt.js", "text/javascript; charset=utf-8"),
        ("/ui/encrypt.css", "text/css; charset=utf-8"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ]:
        response = client.get(path, headers={"Accept": CHROME})
        assert (response.status_code, response.headers["Content-Type"]) == (200, content_type)
        policy = dict(
            directive.strip().split(" ", 1)
            for directive in response.headers["Content-Security-Policy"].split(";")
        )
        assert policy["default-src"] == "'none'"
        assert policy["connect-src"] == "'self'"  # the secret can go to this origin only
        assert policy["form-action"] == "'none'"  # never into a URL by a plain form submission
        assert policy["frame-ancestors"] == "'none'"
        assert policy["require-trusted-types-for"] == "'script'"
        assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_page_loads_only_its_own_files_and_runs_no_inline_code(keyring: Keyring) -> None:
    html = _client(keyring).get("/", headers={"Accept": CHROME}).get_data(as_text=True)
    assert not re.search(r"(https?:)?//", html)  # no other origin, not even a link
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(referenced) == ["ui/encrypt.css", "ui/encrypt.js", "ui/favicon.svg"]
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
    assert not re.search(r"\son[a-z]+=|\sstyle=", html)


def test_the_script_builds_no_html_from_strings(keyring: Keyring) -> None:
    script = _client(keyring).get("/ui/encrypt.js").get_data(as_text=True)
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script
    # The secret goes to the encrypt APIs only, by same-origin relative URLs.
    urls = set(re.findall(r'"(api/v1/[a-z/-]+)"', script))
    assert urls == {"api/v1/encrypt", "api/v1/seal"}
    assert not re.search(r"https?:", script)


def test_the_other_clusters_option_shows_only_where_there_is_a_sealing_key(
    keyring: Keyring,
) -> None:
    hidden = _client(keyring).get("/", headers={"Accept": CHROME}).get_data(as_text=True)
    assert '<details id="clusters" hidden>' in hidden
    provider = LocalKeyringProvider(keyring)
    ring, _ = SealingKeyring([]).with_new_key(provider, kem="X25519", cluster="prod")
    settings = Settings(service="encryptor", keyring=keyring.to_json(), sealing_keys=ring.dumps())
    shown = create_app(settings).test_client().get("/", headers={"Accept": CHROME})
    assert '<details id="clusters">' in shown.get_data(as_text=True)
