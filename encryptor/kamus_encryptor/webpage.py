"""The encrypt page: one HTML page, its script and its style, for people without kamus-cli.

Everything is served by the encryptor itself (no third-party assets) under a Content-Security-Policy
that lets the page load only these files and talk only to its own origin, refuses every form
submission (without its script, the browser would post the form itself, the secret included,
where no encrypt API listens) and requires Trusted Types (no HTML is ever built from strings).
"""

from __future__ import annotations

from importlib.resources import files

from flask import Response

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
ASSETS = {
    "/ui/encrypt.js": ("encrypt.js", "text/javascript; charset=utf-8"),
    "/ui/encrypt.css": ("encrypt.css", "text/css; charset=utf-8"),
    "/ui/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


_CLUSTERS_HIDDEN = b'<details id="clusters" hidden>'
_CLUSTERS_SHOWN = b'<details id="clusters">'


class WebPage:
    """The page and its assets, read from the package once."""

    def __init__(self, *, sealing: bool = False) -> None:
        folder = files("kamus_encryptor") / "ui"
        self._page = (folder / "index.html").read_bytes()
        if sealing:
            # Several clusters can be sealed for here (POST /api/v1/seal): show the option.
            self._page = self._page.replace(_CLUSTERS_HIDDEN, _CLUSTERS_SHOWN, 1)
        self._assets = {
            route: ((folder / name).read_bytes(), content_type)
            for route, (name, content_type) in ASSETS.items()
        }

    def page(self) -> Response:
        response = Response(self._page, content_type="text/html; charset=utf-8")
        response.headers.update(_HEADERS)
        return response

    def asset(self, route: str) -> Response:
        body, content_type = self._assets[route]
        response = Response(body, content_type=content_type)
        response.headers.update(_HEADERS)
        return response
