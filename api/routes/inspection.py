"""GET /api/inspection-logs: recent predictions, paged and filterable."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from api.deps import StoreDep
from pipelines.store import queries

router = APIRouter(prefix="/api", tags=["monitoring"])

# Filter values reach DuckLake's file pruning, which embeds them in catalog SQL and breaks on
# control characters (a NUL ends the string early): such values can't be real ones anyway.
PLAIN_TEXT = r"^[^\x00-\x1f\x7f]{1,256}$"


@router.get("/inspection-logs")
def inspection_logs(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    model_version: Annotated[str | None, Query(pattern=PLAIN_TEXT)] = None,
    prediction: Annotated[str | None, Query(pattern=PLAIN_TEXT)] = None,
    uncertain: bool | None = None,
    since: Annotated[
        AwareDatetime | None, Query(description="ISO 8601 with a timezone (Z or +hh:mm)")
    ] = None,
    until: Annotated[AwareDatetime | None, Query(description="Same form; exclusive")] = None,
) -> dict[str, Any]:
    total, items = queries.inspection_page(
        store,
        limit=limit,
        offset=offset,
        model_version=model_version,
        prediction=prediction,
        uncertain=uncertain,
        since=since,
        until=until,
    )
    return {"total": total, "limit": limit, "offset": offset, "items": items}
