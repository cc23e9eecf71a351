"""Images: POST /predict/image, POST /log (edge clients), stored images, the vision champion.

Every image answer is logged like a tabular prediction (the image log's spool write comes
before the answer). Decoding, prediction and storage run in the threadpool: a 640-pixel image
takes tens of milliseconds, which would otherwise stall every other request on the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from api.deps import StateDep
from api.routes._body import fields
from api.state import AppState
from pipelines.schema import brief

if TYPE_CHECKING:
    from pipelines.vision.image_log import ImageLog

router = APIRouter(tags=["images"])

UPLOAD_FIELDS = ("file", "image")


class ImagePredictIn(BaseModel):
    """JSON alternative to a multipart upload."""

    image: str = Field(description="The image file's bytes, base64 (a data: URL is accepted).")


class DetectionOut(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels of the uploaded image.")
    class_: str = Field(alias="class")
    class_index: int
    confidence: float
    uncertain: bool


class ImagePredictOut(BaseModel):
    prediction_id: str = Field(description="Id to label or send feedback for.")
    model_name: str
    model_version: str
    task: str = Field(description="detect or classify")
    uncertain: bool = Field(description="A box (or the class) inside the uncertainty band.")
    image_ref: str | None = Field(description="Where the image is stored (GET /api/images/…).")
    width: int
    height: int
    latency_ms: float
    runtime: str | None
    detections: list[DetectionOut] | None = None
    class_: str | None = Field(None, alias="class")
    confidence: float | None = None
    probabilities: dict[str, float] | None = None


class EdgeDetectionIn(BaseModel):
    box: list[float] = Field(examples=[[12.0, 30.5, 88.0, 120.0]])
    class_: int = Field(alias="class", ge=0)
    confidence: float = Field(ge=0, le=1)
    name: str | None = None


class EdgeLogIn(BaseModel):
    """One frame's result computed at the edge."""

    id: str = Field(description="Client-chosen unique id: resending it never duplicates.")
    ts: float | None = Field(None, description="When the frame was taken (epoch seconds).")
    model_version: str | None = None
    task: str = "detect"
    width: float | None = None
    height: float | None = None
    detections: list[EdgeDetectionIn] = []
    probabilities: list[float] | None = None
    quality: dict[str, float] | None = Field(None, description="pipelines.vision.images features")
    frame: str | None = Field(None, description="The frame, base64, when uncertain.")
    fps: float | None = None
    inference_ms: float | None = None


def _vision(state: AppState) -> Any:
    if state.vision is None or state.image_log is None:
        raise HTTPException(
            503, "vision is not available: install the `vision` extra (pip install -e '.[vision]')"
        )
    return state.vision


def _image_log(state: AppState) -> ImageLog:
    _vision(state)  # the same 503 when the extra is missing
    assert state.image_log is not None
    return state.image_log


def _vision_model(state: AppState) -> Any:
    model = _vision(state).model
    if model is None:
        # 409, not 503: the server is fine; the store has no vision champion yet.
        raise HTTPException(
            409,
            "no vision model is being served yet: ingest labeled images, run "
            "`python -m pipelines.vision.retrain` (it promotes the first model to champion of "
            f"{state.settings.vision_model_name!r}); the API picks it up within seconds",
        )
    return model


async def _limited_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body of {declared} bytes is over the {limit}-byte limit")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise HTTPException(413, f"request body is over the {limit}-byte limit")
    return bytes(body)


async def _upload_bytes(request: Request, state: AppState) -> bytes:
    """The image of a multipart upload (field `file` or `image`) or of a JSON body."""
    from pipelines.vision.image_log import InvalidPayload
    from pipelines.vision.predict import Limits, decode_payload_image

    s = state.settings
    # Multipart framing and base64 both add to the image's own size.
    limit = min(s.max_body_bytes, s.image_max_bytes * 4 // 3 + 64 * 1024)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPException(
                413, f"upload of {declared} bytes is over the {s.image_max_bytes:,}-byte limit"
            )
        try:
            form = await request.form(max_files=1, max_fields=10)
        except Exception as exc:  # malformed multipart
            raise HTTPException(400, f"could not read the multipart body: {exc}") from None
        try:
            upload = next((form[k] for k in UPLOAD_FIELDS if k in form), None)
            if upload is None or isinstance(upload, str):
                raise HTTPException(
                    422, "send the image as a file in the multipart field 'file' (or 'image')"
                )
            data = await upload.read(s.image_max_bytes + 1)
        finally:
            await form.close()
        return data
    if content_type.startswith("application/json"):
        body = await _limited_body(request, limit)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HTTPException(422, f"request body is not valid JSON: {exc}") from None
        payload = fields(payload, {"image": str})
        if not payload.get("image"):
            raise HTTPException(422, '"image" is required: the image bytes, base64')
        try:
            return decode_payload_image(payload["image"], Limits(s.image_max_bytes, 2**62))
        except InvalidPayload as exc:
            raise HTTPException(422, str(exc)) from None
    if content_type.startswith("image/") or content_type == "application/octet-stream":
        return await _limited_body(request, s.image_max_bytes)
    raise HTTPException(
        415,
        "send the image as multipart/form-data (field 'file'), as raw image/* bytes, or as "
        'JSON {"image": "<base64>"}',
    )


@router.post(
    "/predict/image",
    response_model=ImagePredictOut,
    response_model_by_alias=True,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                        "required": ["file"],
                    }
                },
                "application/json": {"schema": ImagePredictIn.model_json_schema()},
            },
        }
    },
)
async def predict_image(request: Request) -> Response:
    """Detections (box, class, confidence, uncertain) or a class with probabilities for one
    image, with a prediction_id; the image is stored by content and the prediction logged."""
    from pipelines.vision.images import ImageError
    from pipelines.vision.predict import Limits, predict_image

    state: AppState = request.app.state.driftlab
    model = _vision_model(state)
    data = await _upload_bytes(request, state)
    s = state.settings
    try:
        out = await run_in_threadpool(
            predict_image,
            model,
            _image_log(state),
            state.band,
            data,
            images_dir=s.images_dir,
            limits=Limits(s.image_max_bytes, s.image_max_pixels),
            conf=s.vision_conf,
        )
    except ImageError as exc:
        raise HTTPException(exc.status, str(exc)) from None
    state.metrics.observe_image(out, origin="api")
    return Response(orjson.dumps(out), media_type="application/json")


@router.post(
    "/log",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": EdgeLogIn.model_json_schema()}},
        }
    },
)
async def log(request: Request) -> Response:
    """An edge client's own detections for one frame (with the frame when uncertain).

    Idempotent by `id`: a resend (after a timeout, or from the client's disk spool) answers
    `duplicate: true` and stores nothing new.
    """
    from pipelines.vision.edge_log import log_edge
    from pipelines.vision.image_log import InvalidPayload
    from pipelines.vision.images import ImageError
    from pipelines.vision.predict import Limits

    state: AppState = request.app.state.driftlab
    _vision(state)
    s = state.settings
    body = await _limited_body(request, min(s.max_body_bytes, s.image_max_bytes * 4 // 3 + 2**20))
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HTTPException(422, f"request body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise HTTPException(422, "the body must be a JSON object")
    unknown = sorted(set(payload) - set(EdgeLogIn.model_fields) - {"class", "model_name"})
    if unknown:
        raise HTTPException(422, f"unknown field(s) {brief(unknown)}")
    serving = state.vision.model if state.vision is not None else None
    try:
        out = await run_in_threadpool(
            log_edge,
            _image_log(state),
            state.band,
            payload,
            model_name=s.vision_model_name,
            names=serving.names if serving is not None else None,
            images_dir=s.images_dir,
            limits=Limits(s.image_max_bytes, s.image_max_pixels),
        )
    except InvalidPayload as exc:
        raise HTTPException(422, str(exc)) from None
    except ImageError as exc:
        raise HTTPException(exc.status, f"frame: {exc}") from None
    if out["stored"]:
        state.metrics.observe_edge(
            payload,
            version=serving.version if serving is not None else None,
            names=serving.names if serving is not None else None,
        )
    return Response(orjson.dumps(out), media_type="application/json")


@router.get("/api/images/{ref:path}", response_class=FileResponse)
async def image(state: StateDep, ref: str) -> FileResponse:
    """A stored image by its ref (``ab/cd/<sha256>.<ext>``), for the dashboard."""
    from pipelines.vision.images import SUFFIXES, resolve_ref

    try:
        path = resolve_ref(state.settings.images_dir, ref)
    except ValueError:
        raise HTTPException(404, f"not an image ref: {brief(ref)}") from None
    if not path.is_file():
        raise HTTPException(404, f"no stored image {brief(ref)}")
    media = {v: f"image/{k.lower()}" for k, v in SUFFIXES.items()}.get(path.suffix, "image/png")
    # The name is the content's hash: it never changes.
    return FileResponse(
        path, media_type=media, headers={"Cache-Control": "max-age=31536000, immutable"}
    )


@router.get("/api/vision/model")
def vision_model(state: StateDep) -> dict[str, Any]:
    """The vision champion being served (what an edge client compares its copy with)."""
    model = _vision_model(state)
    return {
        "name": model.name,
        "version": model.version,
        "task": model.task,
        "names": list(model.names),
        "imgsz": model.imgsz,
        "runtime": model.runtime,
        "snapshot_id": model.snapshot_id,
        "has_onnx": (model.folder / "model.onnx").exists(),
    }


@router.get("/api/vision/model/onnx", response_class=FileResponse)
def vision_model_onnx(state: StateDep) -> FileResponse:
    """The served vision champion's ONNX export (header `X-Model-Version`), for edge clients."""
    model = _vision_model(state)
    path = model.folder / "model.onnx"
    if not path.is_file():
        raise HTTPException(404, f"vision model v{model.version} has no ONNX export")
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"X-Model-Version": model.version, "X-Model-Name": model.name},
    )


@router.post("/api/vision/reload")
def vision_reload(state: StateDep) -> dict:
    """Load the vision champion now instead of at the next poll."""
    holder = _vision(state)
    swapped = holder.refresh()
    model = holder.model
    return {"swapped": swapped, "version": model.version if model else None}


@router.get("/api/vision/metrics")
def vision_metrics(state: StateDep) -> dict[str, Any]:
    """FPS, inference time, confidence histogram, defect rate and per-class figures."""
    return state.store.vision_stats(state.settings.vision_model_name)
