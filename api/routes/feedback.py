"""POST /feedback: a person (or a downstream system) says what the right answer was."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr, model_validator

from api.deps import StateDep
from pipelines.loop.feedback import InvalidFeedback, NoSchema, PredictionNotFound, give

router = APIRouter(tags=["feedback"])


class FeedbackIn(BaseModel):
    prediction_id: str = Field(pattern=r"^[A-Za-z0-9_:.\-]{1,128}$", examples=["5f0c9a…"])
    label: StrictInt | StrictStr | None = Field(None, description="The true class.", examples=[1])
    correct: StrictBool | None = Field(None, description="Whether the prediction was right.")
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
    """Record the true class of a prediction, or whether it was right (checked as
    `pipelines.loop.feedback.give` checks it)."""
    serving = state.models.model
    schema = serving.schema if serving is not None else state.store.dataset_schema()
    try:
        row = give(
            state.store,
            state.log,
            schema,
            body.prediction_id,
            label=body.label,
            correct=body.correct,
            source=body.source,
            who=body.who,
        )
    except PredictionNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    except NoSchema as exc:
        raise HTTPException(409, str(exc)) from None
    except InvalidFeedback as exc:
        raise HTTPException(422, str(exc)) from None
    state.metrics.feedback.labels("label" if row.label is not None else "correct").inc()
    return FeedbackOut(
        feedback_id=row.feedback_id, prediction_id=row.prediction_id, correct=row.correct
    )
