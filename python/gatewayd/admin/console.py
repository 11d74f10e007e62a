"""The operator console's static files (python/gatewayd/console/, shipped in the wheel):
plain HTML, CSS and JavaScript modules, read once at start and served with an ETag. Every
admin answer carries the headers below; the console's own data comes from the JSON API."""

from __future__ import annotations

import hashlib
from importlib import resources

import msgspec

CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
MEDIA_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
}


class Asset(msgspec.Struct, frozen=True):
    body: bytes
    content_type: bytes
    etag: bytes


def load_assets() -> dict[str, Asset]:
    """URL path -> asset: `/` is the page, `/console/<file>` everything beside it."""
    assets = {}
    for entry in resources.files("gatewayd.console").iterdir():
        suffix = entry.name[entry.name.rfind(".") :]
        if not entry.is_file() or suffix not in MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        asset = Asset(body, MEDIA_TYPES[suffix], etag)
        assets[f"/console/{entry.name}"] = asset
        if entry.name == "index.html":
            assets["/"] = asset
    return assets
