"""The edge client: `driftlab stream --source <video | camera index | image folder> --api URL`.

It reads frames with OpenCV (at most ``--max-fps``, 30 by default, resized to 640×480), runs
the current vision champion locally through ONNX Runtime (downloaded from the API's
``/api/vision/model/onnx`` and re-downloaded when the champion's version changes), and posts
each frame's detections to ``POST /log``, with the frame itself (JPEG) when a detection
is uncertain so a person can label it. ``--remote`` sends every frame to ``POST
/predict/image`` instead (no local model).

A log gets its id when the frame is taken (``<client id>-<frame number>``). When the API can't
be reached (or answers 5xx), the log is written to the spool folder (one JSON file per log,
written aside and renamed) and the client carries on; every later send first resends what
the spool holds, oldest first. The API keys logs by that id, so a log whose answer was lost
and is sent again is recognised and stored once: nothing is lost, nothing is duplicated.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines.serving.band import Band
from pipelines.vision.images import image_features

logger = logging.getLogger(__name__)

FRAME_SIZE = (640, 480)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass
class StreamStats:
    """What a stream did: frames, speed, and where its logs went."""

    frames: int = 0
    sent: int = 0
    spooled: int = 0
    resent: int = 0
    duplicates: int = 0
    rejected: int = 0
    no_model: int = 0
    model_version: str | None = None
    seconds: float = 0.0
    inference_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "inference_ms"}
        times = np.array(self.inference_ms or [np.nan])
        out.update(
            fps=round(self.fps, 2),
            inference_ms_mean=round(float(np.nanmean(times)), 2) if self.inference_ms else None,
            inference_ms_p99=round(float(np.nanpercentile(times, 99)), 2)
            if self.inference_ms
            else None,
        )
        return out


class Spool:
    """Logs waiting for the API: one JSON file each, named so they sort oldest first."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def put(self, payload: dict[str, Any]) -> Path:
        path = self.folder / f"{time.time_ns():020d}-{payload['id']}.json"
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".incoming-")
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a crash leaves a whole file or none
        return path

    def pending(self) -> list[Path]:
        return sorted(self.folder.glob("*.json"))

    def __len__(self) -> int:
        return len(self.pending())


class Unreachable(RuntimeError):
    """The API could not be reached, or answered with a status worth retrying."""


class EdgeClient:
    """Frames in, detections out to the API; see the module docstring.

    Args:
        api: The API's base URL.
        spool_dir: Where logs wait while the API is unreachable.
        http: An ``httpx.Client``-like object (tests pass the app's TestClient); default: a
            client on ``api``.
        remote: Send frames to POST /predict/image instead of predicting locally.
        model_dir: Where the downloaded ONNX champion is kept.
        band: Confidence band of an uncertain detection (the frame is sent with the log).
        max_fps: Frames per second at most (a faster source is throttled).
        refresh_s: How often to ask the API whether the champion changed.
        client_id: Prefix of this client's log ids (default: random per run).
    """

    def __init__(
        self,
        api: str,
        spool_dir: Path,
        *,
        http: Any = None,
        remote: bool = False,
        model_dir: Path | None = None,
        band: Band | None = None,
        max_fps: float = 30.0,
        refresh_s: float = 30.0,
        api_key: str | None = None,
        client_id: str | None = None,
        timeout: float = 5.0,
        jpeg_quality: int = 90,
    ) -> None:
        import httpx

        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = http or httpx.Client(base_url=api.rstrip("/"), timeout=timeout, headers=headers)
        self.spool = Spool(spool_dir)
        self.remote = remote
        self.model_dir = Path(model_dir or Path(spool_dir).parent / "model")
        self.band = band or Band()
        self.max_fps = max_fps
        self.refresh_s = refresh_s
        self.client_id = client_id or f"edge-{uuid.uuid4().hex[:12]}"
        if not re.match(r"^[A-Za-z0-9_.\-]{1,100}$", self.client_id):
            raise ValueError("client_id: letters, digits, '_', '-' and '.' only")
        self.jpeg_quality = jpeg_quality
        self.predictor: Any = None
        self.version: str | None = None
        self._last_refresh = -float("inf")
        self._seq = 0
        self.stats = StreamStats()

    # -- talking to the API --

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = getattr(self.http, method)(path, **kwargs)
        except (httpx.TransportError, OSError) as exc:
            raise Unreachable(f"{method.upper()} {path}: {exc}") from None
        if response.status_code in RETRY_STATUSES:
            raise Unreachable(f"{method.upper()} {path}: HTTP {response.status_code}")
        return response

    def refresh_model(self, *, force: bool = False) -> bool:
        """Download the champion's ONNX when its version changed; True if a new one loaded.

        An unreachable API keeps the model in hand (or none)."""
        if self.remote:
            return False
        now = time.monotonic()
        if not force and now - self._last_refresh < self.refresh_s:
            return False
        self._last_refresh = now
        try:
            info = self._call("get", "/api/vision/model")
            if info.status_code != 200:
                logger.warning("no vision champion to run: %s", info.text[:200])
                return False
            version = str(info.json()["version"])
            if version == self.version:
                return False
            blob = self._call("get", "/api/vision/model/onnx")
        except Unreachable as exc:
            logger.warning("could not check the champion: %s", exc)
            return False
        if blob.status_code != 200:
            logger.warning("could not download the champion's ONNX: %s", blob.text[:200])
            return False
        from pipelines.vision.predictor import Predictor

        self.model_dir.mkdir(parents=True, exist_ok=True)
        path = self.model_dir / f"model-v{version}.onnx"
        path.write_bytes(blob.content)
        self.predictor = Predictor.from_onnx(path)
        logger.info("edge model v%s loaded (was v%s)", version, self.version)
        self.version = self.stats.model_version = version
        return True

    def flush_spool(self) -> int:
        """Resend spooled logs, oldest first, until one fails; returns how many went."""
        sent = 0
        for path in self.spool.pending():
            payload = json.loads(path.read_text())
            try:
                self._send(payload)
            except Unreachable:
                break
            path.unlink()
            sent += 1
            self.stats.resent += 1
        return sent

    def _send(self, payload: dict[str, Any]) -> None:
        response = self._call("post", "/log", json=payload)
        if response.status_code == 200:
            if response.json().get("duplicate"):
                self.stats.duplicates += 1
            return
        # A 4xx will not get better by resending: report it and drop it.
        self.stats.rejected += 1
        logger.error("log %s rejected: %s %s", payload["id"], response.status_code, response.text)

    def deliver(self, payload: dict[str, Any]) -> None:
        """Send a log now if the API is reachable (after the spool's backlog), else spool it."""
        try:
            if len(self.spool):
                self.flush_spool()
                if len(self.spool):
                    raise Unreachable("backlog not drained")
            self._send(payload)
            self.stats.sent += 1
        except Unreachable as exc:
            self.spool.put(payload)
            self.stats.spooled += 1
            logger.debug("spooled %s: %s", payload["id"], exc)

    # -- frames --

    def process(self, frame_bgr: np.ndarray) -> dict[str, Any] | None:
        """One frame: resize, predict (locally or through the API), log; returns the log."""
        frame = cv2.resize(frame_bgr, FRAME_SIZE, interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        self._seq += 1
        self.stats.frames += 1
        log_id = f"{self.client_id}-{self._seq:08d}"
        if self.remote:
            return self._remote(frame, log_id)
        self.refresh_model()
        if self.predictor is None:
            self.stats.no_model += 1
            return None
        result = self.predictor.predict(rgb)
        self.stats.inference_ms.append(result.latency_ms)
        detections = [d.to_dict() for d in result.detections]
        payload: dict[str, Any] = {
            "id": log_id,
            "ts": time.time(),
            "model_version": self.version,
            "task": result.task,
            "width": FRAME_SIZE[0],
            "height": FRAME_SIZE[1],
            "detections": [{k: d[k] for k in ("box", "class", "confidence")} for d in detections],
            "quality": image_features(rgb),
            "fps": round(self.stats.fps, 3) if self.stats.seconds else None,
            "inference_ms": result.latency_ms,
        }
        if result.task == "classify":
            payload["probabilities"] = list(result.probabilities)
            uncertain = bool(self.band.uncertain(np.array([result.confidence or 0.0]))[0])
        else:
            confidences = np.array([d["confidence"] for d in detections])
            uncertain = bool(self.band.uncertain(confidences).any()) if len(confidences) else False
        if uncertain:
            ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if ok:
                payload["frame"] = base64.b64encode(jpeg.tobytes()).decode()
        self.deliver(payload)
        return payload

    def _remote(self, frame: np.ndarray, log_id: str) -> dict[str, Any] | None:
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        started = time.perf_counter()
        try:
            response = self._call(
                "post", "/predict/image", files={"file": (f"{log_id}.jpg", jpeg.tobytes())}
            )
        except Unreachable as exc:
            # The API makes and logs remote predictions itself: without it there is nothing
            # to log, and the frame is dropped (a local model is what survives outages).
            logger.warning("frame %s not predicted: %s", log_id, exc)
            self.stats.no_model += 1
            return None
        self.stats.inference_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code == 200:
            self.stats.sent += 1
            return response.json()  # type: ignore[no-any-return]
        self.stats.rejected += 1
        return None

    def run(self, frames: Iterator[np.ndarray], max_frames: int | None = None) -> StreamStats:
        """Process frames at most `max_fps` per second; resend the spool at the end."""
        self.refresh_model(force=True)
        interval = 1.0 / self.max_fps if self.max_fps > 0 else 0.0
        started = time.perf_counter()
        next_at = started
        for frame in frames:
            wait = next_at - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            next_at = max(next_at + interval, time.perf_counter())
            self.process(frame)
            self.stats.seconds = time.perf_counter() - started
            if self.stats.frames % 100 == 0:
                logger.info("%s", self.stats.summary())
            if max_frames is not None and self.stats.frames >= max_frames:
                break
        self.flush_spool()
        self.stats.seconds = time.perf_counter() - started
        return self.stats


def open_source(source: str) -> Iterator[np.ndarray]:
    """BGR frames of a camera index ("0"), a video file, or a folder of images (sorted)."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}")
        for file in files:
            frame = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if frame is None:
                logger.warning("skipping unreadable %s", file)
                continue
            yield frame
        return
    if source.isdigit():
        capture = cv2.VideoCapture(int(source))
    elif path.is_file():
        capture = cv2.VideoCapture(str(path))
    else:
        raise FileNotFoundError(f"{source!r} is not a camera index, a video file or a folder")
    if not capture.isOpened():
        raise OSError(f"OpenCV could not open {source!r}")
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


def write_test_video(path: Path, n_frames: int = 60, fps: float = 30.0, seed: int = 0) -> Path:
    """A 640×480 MJPG video of handwritten-digit canvases (for tests and the benchmark)."""
    from pipelines.vision.data import make_detection_set

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, FRAME_SIZE)
    if not writer.isOpened():
        raise OSError(f"OpenCV could not write {path}")
    try:
        for item in make_detection_set(n_frames, split="test", size=FRAME_SIZE[0], seed=seed):
            assert isinstance(item.image, np.ndarray)  # generated in memory
            frame = item.image[: FRAME_SIZE[1]]
            writer.write(cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path


# -- the CLI ------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add `driftlab stream` to the CLI's subcommands."""
    p = subparsers.add_parser(
        "stream",
        help="edge client: frames from a camera, video or folder → detections → POST /log",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--source", required=True, help="camera index (0), video file or image folder")
    p.add_argument("--api", help="API base URL (default from DRIFTLAB_API_HOST/PORT)")
    p.add_argument("--remote", action="store_true", help="predict through POST /predict/image")
    p.add_argument("--max-fps", type=float, default=30.0, help="frames per second at most")
    p.add_argument("--max-frames", type=int, help="stop after this many frames")
    p.add_argument("--spool", type=Path, help="spool folder (default <data_dir>/edge/spool)")
    p.add_argument("--refresh", type=float, default=30.0, help="seconds between champion checks")
    p.add_argument("--client-id", help="prefix of this client's log ids (default: random)")
    p.set_defaults(func=cmd_stream)


def cmd_stream(args: argparse.Namespace, settings: Any) -> int:
    api = args.api or f"http://{settings.api_host}:{settings.api_port}"
    client = EdgeClient(
        api,
        args.spool or settings.data_dir / "edge" / "spool",
        remote=args.remote,
        model_dir=settings.data_dir / "edge" / "model",
        band=Band(settings.uncertainty_low, settings.uncertainty_high),
        max_fps=args.max_fps,
        refresh_s=args.refresh,
        api_key=settings.api_key,
        client_id=args.client_id,
    )
    try:
        stats = client.run(open_source(args.source), max_frames=args.max_frames)
    except KeyboardInterrupt:
        stats = client.stats
    sys.stdout.write(json.dumps(stats.summary(), indent=1) + "\n")
    return 0
