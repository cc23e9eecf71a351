"""What every request must pass before the app reads a byte of its body.

`RequestGuard` is a plain ASGI middleware, outermost in the app. In this order:

1. **Host.** The `Host` header must name this server (`pipelines.sameorigin`): a page that
   rebinds its own domain to 127.0.0.1 (DNS rebinding) is refused, reads included. 400.
2. For every method but GET, HEAD and OPTIONS (all of them write):
   - **Origin.** A browser names the page that sent a request; a write from another site's
     page is refused. 403.
   - **API key**, when `DRIFTLAB_API_KEY` is set: one `X-API-Key` header, or
     `Authorization: Bearer <key>` (what Alertmanager and Grafana send), compared in
     constant time. 401, before the body is read.
   - **Content type.** A body must be JSON, or one of the few other types its route reads
     (NDJSON, an image, a multipart upload). A cross-site form can only send the types a
     browser sends without asking first (text/plain, forms), so this closes the rest. 415.
   - **Size.** A declared `Content-Length` over `DRIFTLAB_MAX_BODY_BYTES` is refused at once;
     a chunked or lying body is cut off as soon as it passes the limit. 413.

Each refusal is a JSON `{"detail": …}` that says what to change.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipelines.sameorigin import READS, SameOrigin
from pipelines.schema import brief
from pipelines.settings import Settings

JSON = ("application/json",)
BODY_TYPES: dict[str, tuple[str, ...]] = {
    "/ingest/stream": (*JSON, "application/x-ndjson", "application/jsonl"),
    "/predict/image": (*JSON, "multipart/form-data", "image/", "application/octet-stream"),
}
"""The routes that read a body other than JSON, and the media types they read (a trailing
`/` accepts the whole family). Every other route reads JSON only."""

REMEMBERED = 256
"""Header values found good (a Host, a route's Content-Type) are remembered, up to this many
each: parsing one costs more than all the rest of the guard, and a server sees few."""


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.same_origin = SameOrigin.of(
            settings.api_host, settings.allowed_hosts, settings.allowed_origins
        )
        self.key = settings.api_key.encode() if settings.api_key else None
        self.good_hosts: set[bytes] = set()
        self.good_types: set[tuple[str, bytes]] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            headers = _headers(scope)
            self._check_host(headers)
            if scope["method"] not in READS:
                self._check_origin(headers)
                self._check_key(headers)
                self._check_body(scope["path"], headers)
                receive = _limited(receive, self.settings.max_body_bytes)
        except HTTPException as exc:
            await _refuse(send, exc)
            return
        await self.app(scope, receive, send)

    def _check_host(self, headers: dict[bytes, list[bytes]]) -> None:
        hosts = headers.get(b"host", [])
        if len(hosts) != 1:
            raise HTTPException(400, "send exactly one Host header")
        if hosts[0] in self.good_hosts:
            return
        host = hosts[0].decode("latin-1")
        if not self.same_origin.host_allowed(host):
            raise HTTPException(
                400,
                f"this server does not answer to the host {brief(host)}: add its name to "
                "DRIFTLAB_ALLOWED_HOSTS",
            )
        _remember(self.good_hosts, hosts[0])

    def _check_origin(self, headers: dict[bytes, list[bytes]]) -> None:
        for value in headers.get(b"origin", []):
            origin = value.decode("latin-1")
            host = headers[b"host"][0].decode("latin-1")
            if not self.same_origin.origin_allowed(origin, host):
                raise HTTPException(
                    403,
                    f"a write from the page at {brief(origin)} is refused: only this server's "
                    "own pages and DRIFTLAB_ALLOWED_ORIGINS may write",
                )

    def _check_key(self, headers: dict[bytes, list[bytes]]) -> None:
        if self.key is None:
            return
        keys = headers.get(b"x-api-key", [])
        if len(keys) > 1:
            raise HTTPException(400, "send one X-API-Key header, not several")
        given = keys[0] if keys else _bearer(headers.get(b"authorization", []))
        if given is None or not hmac.compare_digest(given, self.key):
            raise HTTPException(
                401,
                "missing or wrong API key: send it as X-API-Key, or as Authorization: Bearer",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def _check_body(self, path: str, headers: dict[bytes, list[bytes]]) -> None:
        lengths = headers.get(b"content-length", [])
        if len(lengths) > 1 or (lengths and not lengths[0].isdigit()):
            raise HTTPException(400, "send one Content-Length header with a number of bytes")
        limit = self.settings.max_body_bytes
        if lengths and int(lengths[0]) > limit:
            raise HTTPException(
                413, f"request body of {int(lengths[0])} bytes is over the {limit}-byte limit"
            )
        has_body = (lengths and int(lengths[0]) > 0) or b"transfer-encoding" in headers
        if not has_body:
            return
        raw = headers.get(b"content-type", [b""])[0]
        if (path, raw) in self.good_types:
            return
        accepted = BODY_TYPES.get(path, JSON)
        given = raw.decode("latin-1")
        media = given.split(";", 1)[0].strip().lower()
        if not any(media == t or (t.endswith("/") and media.startswith(t)) for t in accepted):
            raise HTTPException(
                415,
                f"Content-Type {brief(given or 'none')} is not read here: send "
                f"{' or '.join(t + '*' if t.endswith('/') else t for t in accepted)}",
            )
        _remember(self.good_types, (path, raw))


def _remember(good: set[Any], value: Any) -> None:
    if len(good) < REMEMBERED:
        good.add(value)


CHECKED = frozenset(
    (b"host", b"origin", b"x-api-key", b"authorization")
    + (b"content-length", b"content-type", b"transfer-encoding")
)


def _headers(scope: Scope) -> dict[bytes, list[bytes]]:
    """The headers the guard reads, each with every value it was sent with."""
    out: dict[bytes, list[bytes]] = {}
    for name, value in scope["headers"]:
        if name in CHECKED:
            out.setdefault(name, []).append(value)
    return out


def _bearer(values: list[bytes]) -> bytes | None:
    if len(values) != 1:
        return None
    scheme, _, token = values[0].partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" and token.strip() else None


def _limited(receive: Receive, limit: int) -> Receive:
    """`receive` that stops a body with a 413 as soon as it passes `limit` bytes, whatever its
    Content-Length said (or chunked, without one)."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise HTTPException(413, f"request body is over the {limit}-byte limit")
        return message

    return limited


async def _refuse(send: Send, exc: HTTPException) -> None:
    body = orjson.dumps({"detail": exc.detail})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
