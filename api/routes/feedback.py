"""POST /feedback: a person (or a downstream system) says what the right answer was."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, model_validator

from api.deps import StateDep, WriteAccess
from pipelines.schema import SchemaError

router = APIRouter(tags=["feedback"], dependencies=[WriteAccess])


class FeedbackIn(BaseModel):
    prediction_id: str = Field(pattern=r"^[A-Za-z0-9_:.\-]{1,128}$", examples=["5f0c9a…"])
    label: int | str | None = Field(None, description="The true class.", examples=[1])
    correct: bool | None = Field(None, description="Whether the prediction was right.")
    source: str = Field("api", pattern=r"^[^\x00-\x1f\x7f]{1,64}$")
    who: str | None = Field(None, pattern=r"^[^\x00-\x1f\x7f]{1,128}$")

    @model_validator(mode="after")
    def _something(self) -> FeedbackIn:
        if self.label is None and self.correct is None:
            raise ValueError('give "label" (the true class) or "correct" (true/false)')
        return self


class FeedbackOut(BaseModel):
    feedback_id: str
    prediction_id: str
    correct: bool | None


@router.post("/feedback", response_model=FeedbackOut)
def feedback(state: StateDep, body: FeedbackIn) -> FeedbackOut:
    pending = state.log.is_pending(body.prediction_id)  # asked first: a flush may be under way
    row = state.store.prediction(body.prediction_id)
    if row is None and pending:
        state.log.flush()  # answered moments ago: put it in the lake now, then read it
        row = state.store.prediction(body.prediction_id)
    if row is None:
        raise HTTPException(404, f"no prediction with id {body.prediction_id!r}")
    serving = state.models.model
    schema = serving.schema if serving is not None else state.store.dataset_schema()
    if schema is None:
        raise HTTPException(409, "no dataset schema yet")
    label = None
    correct = body.correct
    if body.label is not None:
        try:
            label = schema.label_to_store(body.label)
        except SchemaError as exc:
            raise HTTPException(422, str(exc)) from None
        if row is not None:
            implied = row["prediction"] == label
            if correct is not None and correct != implied:
                raise HTTPException(
                    422, f'"correct": {correct} contradicts the label and the prediction'
                )
            correct = implied
    version = row["model_version"] if row else (serving.version if serving else None)
    feedback_id = state.store.add_feedback(
        body.prediction_id,
        label=label,
        correct=correct,
        source=body.source,
        who=body.who,
        model_version=version,
    )
    state.metrics.feedback.labels("label" if label is not None else "correct").inc()
    return FeedbackOut(feedback_id=feedback_id, prediction_id=body.prediction_id, correct=correct)
