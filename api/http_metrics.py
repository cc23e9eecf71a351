"""Every HTTP response counted by route and status code (`driftlab_http_requests_total`).

The outermost middleware, so that what the guard refuses (401, 413…) and what fails (500)
count too. The `handler` label is a route's path as the app declares it ("/predict",
"/api/labeling/{prediction_id}"), never the path a client sent: a label set must stay
bounded, and a scanner trying ten thousand URLs would otherwise make ten thousand series.
Paths no route declares count as "other".
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.metrics import OTHER


class CountResponses:
    def __init__(self, app: ASGIApp, *, paths: frozenset[str]) -> None:
        """`paths`: the app's routes without parameters (one set lookup names them)."""
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the server-error middleware answers when an exception escapes

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            self._count(scope, status)

    def _count(self, scope: Scope, status: int) -> None:
        state = getattr(scope["app"].state, "driftlab", None)
        if state is not None:  # None before start-up finished
            state.metrics.count_response(self._handler(scope), status)

    def _handler(self, scope: Scope) -> str:
        if scope["path"] in self.paths:
            return scope["path"]
        route = scope.get("route")  # set by the router once it matched a parametrized route
        return getattr(route, "path", OTHER)
