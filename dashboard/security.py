"""Who may reach the dashboard, and which browser may make it write.

The dashboard binds to 127.0.0.1, yet any page the operator opens can reach it through the
operator's browser: post to it from another site, or rebind its own domain name to 127.0.0.1
and read the answers (DNS rebinding). Its callbacks promote models, label, retrain and log
predictions, so two layers stand in front of them:

1. **Host and Origin** (`Guard.check`, a Flask `before_request` hook, the API's rules from
   `pipelines.sameorigin`): a request whose `Host` is not this server's is refused with 400,
   reads included; a write (any method but GET, HEAD and OPTIONS: every Dash callback is a
   POST to `/_dash-update-component`) whose `Origin` is another site's page is refused with
   403. Browsers always name the origin of a cross-site POST; a request without one comes
   from a program, not a page, and still needs the key below to write.
2. **The API key**, when `DRIFTLAB_API_KEY` is set: the navbar asks for it once per browser
   session (`shell_control`, `unlock`), compares it in constant time, and marks the Flask
   session cookie (signed, HttpOnly, SameSite=Strict). Every write callback asks
   `may_write()` first and answers `LOCKED` instead of writing. Reads are never locked.

The cookie is signed with random bytes drawn when the process starts, so restarting the
dashboard asks every browser for the key again. Without a key, writes need no unlock.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from dash import Dash, Input, Output, State, dcc, html, no_update
from flask import Response, current_app, has_request_context, jsonify, request, session

from pipelines.sameorigin import READS, SameOrigin
from pipelines.schema import brief
from pipelines.settings import Settings

EXTENSION = "driftlab.guard"  # where the app's `Guard` lives in `flask.Flask.extensions`
UNLOCKED = "unlocked"  # the session entry an accepted key sets

LOCKED = "enter the API key (top right) to promote, label, retrain or predict"
"""What a write callback shows instead of writing while the browser is locked."""


@dataclass(frozen=True)
class Guard:
    """The hosts and origins the dashboard accepts, and the key that unlocks writes.

    Attributes:
        same_origin: The hosts it answers to and the other origins whose pages may write.
        key: `DRIFTLAB_API_KEY` as bytes; None when writes need no key.
    """

    same_origin: SameOrigin
    key: bytes | None

    def check(self) -> Response | None:
        """Refuse a request for a foreign host, or a write from a foreign page; None lets
        it through."""
        host = request.environ.get("HTTP_HOST")
        if not host:
            return _refuse(400, "send a Host header")
        if not self.same_origin.host_allowed(host):
            return _refuse(
                400,
                f"this server does not answer to the host {brief(host)}: add its name to "
                "DRIFTLAB_ALLOWED_HOSTS",
            )
        origin = request.environ.get("HTTP_ORIGIN")
        if (
            request.method not in READS
            and origin is not None
            and not self.same_origin.origin_allowed(origin, host)
        ):
            return _refuse(
                403,
                f"a write from the page at {brief(origin)} is refused: only this server's "
                "own pages and DRIFTLAB_ALLOWED_ORIGINS may write",
            )
        return None

    def matches(self, given: str | None) -> bool:
        """Whether `given` is the key (compared in constant time)."""
        if self.key is None or not isinstance(given, str) or not given:
            return False  # a hostile client can post any JSON value
        return hmac.compare_digest(given.encode(), self.key)


def install(app: Dash, settings: Settings, bound: str) -> Guard:
    """Guard every request of `app`, a dashboard bound to the address `bound`, and register
    the unlock callback when a key is configured."""
    guard = Guard(
        same_origin=SameOrigin.of(bound, settings.allowed_hosts, settings.allowed_origins),
        key=settings.api_key.encode() if settings.api_key else None,
    )
    server = app.server
    server.extensions[EXTENSION] = guard
    server.secret_key = secrets.token_bytes(32)
    server.config.update(
        SESSION_COOKIE_NAME="driftlab_dashboard",
        SESSION_COOKIE_HTTPONLY=True,  # page scripts never see it
        SESSION_COOKIE_SAMESITE="Strict",  # another site's requests don't carry it
    )
    server.before_request(guard.check)
    if guard.key is not None:
        _register_unlock(app)
    return guard


def may_write() -> bool:
    """Whether the browser behind this callback may write: always without a configured key,
    else once it has been unlocked with the key. Every write callback asks this first."""
    return has_request_context() and _unlocked(current_app.extensions[EXTENSION])


def shell_control(guard: Guard) -> list[Any]:
    """The navbar's key field and Unlock button: only while a key is configured and this
    browser is locked (the shell is built per page load, in the browser's request)."""
    if _unlocked(guard):
        return []
    return [
        html.Div(
            [
                dcc.Input(
                    id="shell-key",
                    type="password",
                    placeholder="API key",
                    autoComplete="off",
                ),
                html.Button("Unlock", id="shell-unlock"),
                html.Span(id="shell-key-message", className="lock-message"),
            ],
            id="shell-lock",
            className="lock",
            title="writes (promote, label, retrain, predict) need the API key",
        )
    ]


def _register_unlock(app: Dash) -> None:
    @app.callback(
        Output("shell-lock", "style"),
        Output("shell-key-message", "children"),
        Output("shell-key", "value"),
        Input("shell-unlock", "n_clicks"),
        Input("shell-key", "n_submit"),
        State("shell-key", "value"),
        prevent_initial_call=True,
    )
    def unlock(_clicks: int | None, _submits: int | None, given: str | None) -> tuple[Any, ...]:
        """Mark this browser's session as unlocked if `given` is the key; the field is
        cleared either way."""
        guard: Guard = current_app.extensions[EXTENSION]
        if not guard.matches(given):
            return no_update, "wrong key", ""
        session[UNLOCKED] = True
        return {"display": "none"}, "", ""


def _unlocked(guard: Guard) -> bool:
    if guard.key is None:
        return True
    return has_request_context() and session.get(UNLOCKED) is True


def _refuse(status: int, detail: str) -> Response:
    response = jsonify(detail=detail)
    response.status_code = status
    return response
