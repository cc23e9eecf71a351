"""The two reference servers of `bench_serving`, as uvicorn app factories.

- `ceiling_app`: a trivial async JSON endpoint, the most this machine's FastAPI + uvicorn can serve.
- `naive_app`: what a first version of a model server looks like: FastAPI, a pydantic body, and
  scikit-learn's `predict_proba` on the same champion forest for every request, no logging. It is
  `async def`, the faster of the two ways to write it (a sync `def` also pays the threadpool hop).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


def ceiling_app() -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict() -> dict[str, Any]:
        return {"predictions": [0], "probabilities": [1.0]}

    return app


class PredictIn(BaseModel):
    features: list[list[float | str]]


def naive_app() -> FastAPI:
    """Loads the champion of the registry in `DRIFTLAB_DATA_DIR` as a plain sklearn estimator."""
    from pipelines.models.registry import CHAMPION, Registry
    from pipelines.serving.model import load_version
    from pipelines.settings import get_settings

    settings = get_settings()
    registry = Registry.from_settings(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        raise RuntimeError(f"no champion in {settings.mlflow_uri}: run `driftlab train` first")
    schema = load_version(registry, version).schema  # only for its category encoding
    estimator = registry.load_estimator(version)
    classes = estimator.classes_
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    async def predict(payload: PredictIn) -> dict[str, Any]:
        x = schema.encode(schema.columns(features=payload.features))
        proba = estimator.predict_proba(x)
        best = proba.argmax(axis=1)
        return {
            "predictions": classes[best].tolist(),
            "probabilities": proba.max(axis=1).tolist(),
        }

    return app
