"""The FastAPI app: `create_app()` wires settings, state and one router per resource."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import duckdb
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig

from api.guard import RequestGuard
from api.http_metrics import CountResponses
from api.routes import (
    feedback,
    health,
    images,
    ingest,
    inspection,
    labeling,
    metrics,
    models,
    monitoring,
    predict,
    retraining,
)
from api.state import AppState
from pipelines.sameorigin import READS
from pipelines.schema import BRIEF_CHARS
from pipelines.settings import Settings, get_settings

logger = logging.getLogger(__name__)

STORE_UNREACHABLE = (duckdb.IOException, duckdb.ConnectionException, psycopg.OperationalError)
"""Errors of a catalog or bucket that does not answer (PostgreSQL or S3 down, a network cut):
503, not 500. A write that fails this way is rolled back whole."""

SHOWN_ERRORS = 5
"""A 422 names this many of a request's problems (a list of 100k bad items has 100k)."""


def telemetry_config() -> TelemetryConfig:
    """FastAPI's OpenTelemetry spans, metrics and logs: on when the environment configures
    OpenTelemetry (an `OTEL_*` variable, or `FASTAPI_OTEL_AUTO_CONFIGURE`), off otherwise.

    With them on and nothing configured, FastAPI asks the OpenTelemetry API for its global
    providers on every request to find out that there are none: a cost that a single-row
    /predict pays on the event loop for nothing (`python -m benchmarks --only serving`
    measures its requests/s)."""
    on = (
        any(k.startswith("OTEL_") for k in os.environ)
        or "FASTAPI_OTEL_AUTO_CONFIGURE" in os.environ
    )
    return TelemetryConfig(tracing=on, metrics=on, logs=on)


async def sample_metrics(state: AppState, every: float = 1.0) -> None:
    """Keep this process's series current between scrapes (`Metrics.sample`)."""
    while True:
        await asyncio.sleep(every)
        state.metrics.sample(state.batcher, state.log, state.serving.shadow_log)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state.driftlab = AppState.start(settings)
        sampling = asyncio.create_task(sample_metrics(state))
        try:
            yield
        finally:
            sampling.cancel()
            state.stop()

    app = FastAPI(
        title="driftlab",
        version="0.1.0",
        summary="Serve, log, monitor and retrain: the closed ML loop.",
        lifespan=lifespan,
        telemetry=telemetry_config(),
    )

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        problems = [
            f"{'.'.join(str(p)[:BRIEF_CHARS] for p in err['loc'])}: {err['msg']}"
            for err in errors[:SHOWN_ERRORS]
        ]
        if len(errors) > SHOWN_ERRORS:
            problems.append(f"and {len(errors) - SHOWN_ERRORS} more")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        if isinstance(exc, STORE_UNREACHABLE):  # the client may retry; nothing was written
            return JSONResponse(
                {"detail": f"the store is unreachable ({type(exc).__name__}); retry later"},
                status_code=503,
                headers={"Retry-After": "5"},
            )
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    routers = (health, ingest, predict, feedback, models, inspection, metrics, monitoring)
    routes = [*app.routes]  # /docs, /openapi.json…
    for module in (*routers, labeling, retraining, images):
        app.include_router(module.router)
        routes += module.router.routes
    app.add_middleware(predict.PredictFastPath)
    app.add_middleware(RequestGuard, settings=settings)
    static = frozenset(p for r in routes if "{" not in (p := getattr(r, "path", "{")))
    app.add_middleware(CountResponses, paths=static)  # added last: it sees every answer
    document_api_key(app)
    return app


def document_api_key(app: FastAPI) -> None:
    """Show in /docs that every write takes the API key (`RequestGuard` checks it)."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = default()
        schema.setdefault("components", {})["securitySchemes"] = {
            "APIKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "Bearer": {"type": "http", "scheme": "bearer"},
        }
        for path in schema["paths"].values():
            for method, operation in path.items():
                if method.upper() not in READS:
                    operation["security"] = [{"APIKey": []}, {"Bearer": []}]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
