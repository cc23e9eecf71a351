"""Retraining: the policy's current verdict, starting a run, following it, alert webhooks."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import BodyDep, StateDep
from pipelines.loop import retraining_conditions, retraining_control

router = APIRouter(tags=["retraining"])


ModelKind = Literal["tabular", "vision"]
ModelQuery = Annotated[
    ModelKind, Query(description="Which model: the tabular one (default) or the vision one.")
]


class TriggerIn(BaseModel):
    model: ModelKind = Field("tabular", description="Which model to retrain.")
    who: str = Field("api", pattern=r"^[^\x00-\x1f\x7f]{1,128}$")
    reason: str = Field("manual trigger", max_length=500)

    model_config = {
        "json_schema_extra": {"examples": [{"model": "vision", "who": "ana", "reason": "new"}]}
    }


@router.get("/api/retraining/conditions")
def conditions(state: StateDep, model: ModelQuery = "tabular") -> dict[str, Any]:
    """should_retrain, the reasons (and what blocks or nearly holds), every figure and every
    threshold behind the decision of one model."""
    return retraining_conditions.check(
        state.settings, state.store, state.registry, vision=model == "vision"
    )


@router.post("/api/retraining/trigger", status_code=202)
async def trigger(state: StateDep, body: TriggerIn | None = None) -> dict[str, Any]:
    """Start a retrain of one model now, whatever the policy says (a person asked); 409 while
    any retrain runs (one at a time, whichever model). A vision retrain without a vision
    champion trains the first one from scratch on the ingested images."""
    body = body or TriggerIn()
    vision = body.model == "vision"
    return await _start(state, trigger="api", who=body.who, reasons=[body.reason], vision=vision)


@router.get("/api/retraining/status")
def status(state: StateDep, model: ModelQuery = "tabular") -> dict[str, Any]:
    """One model's run in progress, if any, and its latest run with its metrics and gate
    decision; `busy` says whether any retrain holds the shared lock."""
    return retraining_control.status(state.settings, state.store, vision=model == "vision")


@router.get("/api/retraining/history")
def history(state: StateDep, limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> dict[str, Any]:
    return {"items": retraining_control.history(state.store, limit)}


@router.post("/webhook/alert")
async def alert(state: StateDep, payload: BodyDep) -> JSONResponse:
    """An Alertmanager or Grafana alert webhook. Firing alerts start a retrain unless one is
    running or the cooldown since the last one has not passed (alert managers resend while an
    alert fires); resolved alerts are acknowledged. Answers 202 when a run started, else 200
    with the reason, so the sender does not retry. The first firing alert's `model` label
    (`vision`; anything else is the tabular model) says which model to retrain."""
    firing = _firing_alerts(payload)
    if not firing:
        return JSONResponse({"started": False, "why": "no firing alert in the payload"})
    vision = firing[0][2] == "vision"
    verdict = await run_in_threadpool(
        lambda: retraining_conditions.check(
            state.settings, state.store, state.registry, vision=vision
        )
    )
    if verdict["blocked_by"]:
        return JSONResponse({"started": False, "why": "; ".join(verdict["blocked_by"])})
    reasons = [f"alert {name}" + (f": {text}" if text else "") for name, text, _ in firing]
    trigger = "alert:" + re.sub(r"[^\w.:-]", "_", firing[0][0])[:100]  # the first alert's name
    try:
        run = await _start(
            state, trigger=trigger, who="alert-webhook", reasons=reasons, vision=vision
        )
    except HTTPException as exc:  # started by someone else in between
        return JSONResponse({"started": False, "why": exc.detail})
    return JSONResponse({"started": True, **run}, status_code=202)


async def _start(state: StateDep, **kwargs: Any) -> dict[str, Any]:
    try:
        return await run_in_threadpool(
            lambda: retraining_control.trigger(state.settings, state.store, **kwargs)
        )
    except retraining_control.RetrainBusy as exc:
        raise HTTPException(409, str(exc)) from None


def _firing_alerts(payload: Any) -> list[tuple[str, str, str]]:
    """(name, summary, `model` label) of each firing alert: Alertmanager's and Grafana's
    `alerts` list, or legacy Grafana's single `state: alerting`. Anything else is a 422 that
    says what is expected."""
    if not isinstance(payload, dict):
        raise HTTPException(422, "expected an alert webhook JSON object")
    if "alerts" in payload:
        alerts = payload["alerts"]
        if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts):
            raise HTTPException(422, '"alerts" must be a list of alert objects')
        out = []
        for a in alerts:
            if a.get("status", payload.get("status")) != "firing":
                continue
            labels = a.get("labels") if isinstance(a.get("labels"), dict) else {}
            notes = a.get("annotations") if isinstance(a.get("annotations"), dict) else {}
            name = str(labels.get("alertname") or a.get("title") or "unnamed")[:200]
            text = str(notes.get("summary") or notes.get("description") or "")[:300]
            out.append((name, text, str(labels.get("model") or "")))
        return out
    if "state" in payload:  # Grafana's legacy alerting
        if payload["state"] != "alerting":
            return []
        name = str(payload.get("ruleName") or payload.get("title") or "unnamed")[:200]
        return [(name, str(payload.get("message") or "")[:300], "")]
    raise HTTPException(
        422,
        'not an alert webhook: expected Alertmanager/Grafana "alerts" or Grafana legacy "state"',
    )
