"""Request bodies parsed with orjson and checked by hand (fast on the hot path), documented in
OpenAPI through the pydantic models they follow."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from pydantic import BaseModel

from api.deps import parse_json
from pipelines.schema import FeatureSchema, brief
from pipelines.serving.bulkjson import Bulk, read_bulk


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` that shows `model` as the JSON request body in /docs."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def fields(payload: Any, allowed: dict[str, type | tuple[type, ...]]) -> dict[str, Any]:
    """Check a body is an object with known keys of the right JSON types."""
    if not isinstance(payload, dict):
        raise HTTPException(422, "the body must be a JSON object")
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise HTTPException(
            422, f"unknown field(s) {brief(unknown)}; expected some of {sorted(allowed)}"
        )
    for key, types in allowed.items():
        value = payload.get(key)
        if value is not None and not isinstance(value, types):
            raise HTTPException(422, f'"{key}" has the wrong type ({type(value).__name__})')
    return payload


def rows_body(
    body: bytes,
    schema: FeatureSchema | None,
    allowed: dict[str, type | tuple[type, ...]],
) -> tuple[dict[str, Any], Bulk | None]:
    """A body of rows ("features" or "records", and `allowed`'s other keys) checked by `fields`,
    and its rows already read into columns when `pipelines.serving.bulkjson` could read it (a large
    body, with a known schema); otherwise it is parsed by orjson and the Bulk is None."""
    bulk = None if schema is None else read_bulk(body, schema, list(allowed))
    if bulk is None:
        return fields(parse_json(body), allowed), None
    return fields(bulk.others, allowed), bulk
