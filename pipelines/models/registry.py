"""The model registry: the only module that speaks to MLflow.

A registered version carries the scikit-learn model, an ONNX export for serving, the feature
schema, its metrics and params, and the DuckLake snapshot id of the data it was trained on (so
the exact training set can be read back). Aliases `champion` and `challenger` mark roles.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pipelines.serving.forest import CompiledForest
from pipelines.settings import Settings
from pipelines.store.object_storage import ObjectStorage, is_object_store

logger = logging.getLogger(__name__)

EXPERIMENT = "driftlab"
SERVING_DIR = "serving"  # run artifacts: schema.json, model.onnx, and FOREST_FILE for forests
FOREST_FILE = (
    "forest.npz"  # pipelines.serving.forest.CompiledForest: what serving runs for tree ensembles
)
CHAMPION, CHALLENGER = "champion", "challenger"
# A vision version's serving folder: metadata, PyTorch weights, ONNX export.
VISION_META, VISION_WEIGHTS, VISION_ONNX = "vision.json", "best.pt", "model.onnx"
VISION_ONNX_INT8 = "model-int8.onnx"  # served instead of VISION_ONNX when registered


def sqlalchemy_uri(tracking_uri: str) -> str:
    """A `postgresql://` tracking URI with the driver driftlab installs (psycopg 3); SQLAlchemy
    would otherwise look for psycopg2."""
    for scheme in ("postgresql://", "postgres://"):
        if tracking_uri.startswith(scheme):
            return "postgresql+psycopg://" + tracking_uri.removeprefix(scheme)
    return tracking_uri


def quiet_mlflow_env() -> None:
    """No telemetry, no lookups: set before mlflow is imported or used."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@dataclass
class VersionInfo:
    version: str
    run_id: str
    aliases: list[str]
    created_at_ms: int
    snapshot_id: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


class Registry:
    """MLflow tracking + registry for one model name."""

    def __init__(self, tracking_uri: str, model_name: str, artifacts: str | None = None):
        """`artifacts`: a folder or an object-store URL for new runs' artifacts (None: MLflow's
        default, `./mlruns`)."""
        quiet_mlflow_env()
        self.tracking_uri = sqlalchemy_uri(tracking_uri)
        self.model_name = model_name
        self.artifacts = artifacts
        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        """The registry the settings point at (tracking URI, model name, artifact location)."""
        return cls._for(settings, settings.model_name)

    @classmethod
    def _for(cls, settings: Settings, model_name: str) -> Registry:
        if is_object_store(settings.mlflow_artifacts) or settings.s3_key_id:
            ObjectStorage.from_settings(settings).export_for_boto()  # MLflow's S3 store reads it
        return cls(settings.mlflow_uri, model_name, settings.mlflow_artifacts)

    @cached_property
    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        location = self.artifacts
        if location is not None and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:", location):
            location = Path(location).resolve().as_uri()  # a folder; URIs (s3:, …) as they are
        try:
            return str(self.client.create_experiment(EXPERIMENT, artifact_location=location))
        except Exception:  # another process created it first
            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is None:
                raise
            return str(exp.experiment_id)

    # -- writing -------------------------------------------------------------------------------

    def log_model(
        self,
        *,
        estimator: Any,
        schema: dict[str, Any],
        metrics: dict[str, float],
        params: dict[str, Any],
        snapshot_id: int,
        onnx_model: bytes | None,
        tags: dict[str, str] | None = None,
        extra_files: dict[str, bytes] | None = None,
    ) -> str:
        """Log a trained model with everything needed to serve and audit it; returns the version."""
        import mlflow
        import mlflow.sklearn
        import sklearn
        import skops.io

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        all_tags = {"snapshot_id": str(snapshot_id), **(tags or {})}
        with mlflow.start_run(experiment_id=self._experiment_id(), tags=all_tags) as run:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / SERVING_DIR
                folder.mkdir()
                (folder / "schema.json").write_text(json.dumps(schema, indent=1))
                if onnx_model is not None:
                    (folder / "model.onnx").write_bytes(onnx_model)
                forest = CompiledForest.from_estimator(estimator)
                if forest is not None:
                    (folder / FOREST_FILE).write_bytes(forest.to_bytes())
                for name, content in (extra_files or {}).items():
                    (folder / name).write_bytes(content)
                mlflow.log_artifacts(str(folder), artifact_path=SERVING_DIR)
            # Explicit requirements: inferring them spawns a subprocess and costs seconds.
            # We trained this estimator ourselves, so the types it holds are the ones to trust.
            info = mlflow.sklearn.log_model(
                estimator,
                name="model",
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
                registered_model_name=self.model_name,
                skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(estimator)),
            )
        version = str(info.registered_model_version)
        for key, value in all_tags.items():
            self.client.set_model_version_tag(self.model_name, version, key, value)
        self.client.set_model_version_tag(self.model_name, version, "run_id", run.info.run_id)
        logger.info("registered %s version %s (snapshot %s)", self.model_name, version, snapshot_id)
        return version

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        try:
            self.client.delete_registered_model_alias(self.model_name, alias)
        except Exception:
            logger.debug("alias %s was not set", alias)

    # -- reading -------------------------------------------------------------------------------

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at, or None (no model registered yet, or no alias)."""
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except Exception:
            return None

    def version(self, version: str) -> VersionInfo:
        mv = self.client.get_model_version(self.model_name, str(version))
        return self._info(mv)

    def versions(self) -> list[VersionInfo]:
        """Every registered version, newest first, with its metrics and training snapshot."""
        try:
            found = self.client.search_model_versions(f"name = '{self.model_name}'")
            aliases = dict(self.client.get_registered_model(self.model_name).aliases or {})
        except Exception:
            return []
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        infos = [self._info(mv, by_version.get(str(mv.version), [])) for mv in found]
        return sorted(infos, key=lambda v: -int(v.version))

    def _info(self, mv: Any, aliases: list[str] | None = None) -> VersionInfo:
        run = self.client.get_run(mv.run_id) if mv.run_id else None
        tags = dict(mv.tags or {})
        snap = tags.get("snapshot_id")
        return VersionInfo(
            version=str(mv.version),
            run_id=str(mv.run_id or tags.get("run_id", "")),
            aliases=list(mv.aliases or []) if aliases is None else aliases,
            created_at_ms=int(mv.creation_timestamp or 0),
            snapshot_id=int(snap) if snap not in (None, "") else None,
            metrics=dict(run.data.metrics) if run else {},
            params=dict(run.data.params) if run else {},
            tags=tags,
        )

    def trained_snapshots(self) -> list[int]:
        """Snapshots that registered models were trained on: compaction must keep them."""
        return sorted({v.snapshot_id for v in self.versions() if v.snapshot_id is not None})

    def serving_files(self, version: str, dest: Path) -> Path:
        """Download a version's serving folder (schema.json, model.onnx, forest.npz) into `dest`."""
        run_id = self.version(version).run_id
        dest.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, SERVING_DIR, str(dest)))

    def load_estimator(self, version: str) -> Any:
        import mlflow
        import mlflow.sklearn

        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.sklearn.load_model(f"models:/{self.model_name}/{version}")

    # -- vision models -------------------------------------------------------------------------
    # A YOLO version is not an MLflow "flavor" model: its run holds the serving folder
    # (best.pt, model.onnx, vision.json) and the version points at that folder. Everything that
    # reads versions (aliases, metrics, snapshot, `serving_files`) works the same for both.

    @classmethod
    def vision_from_settings(cls, settings: Settings) -> Registry:
        """The registry of the vision model (`vision_model_name`), same tracking store."""
        return cls._for(settings, settings.vision_model_name)

    def log_vision_model(
        self,
        *,
        weights: Path,
        onnx_file: Path | None,
        int8_file: Path | None = None,
        task: str,
        names: list[str],
        imgsz: int,
        metrics: dict[str, float],
        params: dict[str, Any],
        snapshot_id: int,
        tags: dict[str, str] | None = None,
    ) -> str:
        """Register a YOLO model: weights, ONNX export, task/names/imgsz and the snapshot of
        the images it was trained on; returns the version.

        Args:
            weights: The ``.pt`` to serve with PyTorch and to fine-tune the next model from.
            onnx_file: Its ONNX export (served when present; several times faster on CPU).
            int8_file: Its int8 export (`yolo.quantize_onnx`), served instead of the float one:
                register it only once it agrees with it.
            task: "detect" or "classify".
            names: Class names by index.
            imgsz: Input side it was trained at.
            metrics: Validation figures (``map50_95`` / ``top1`` and the rest).
            params: Training parameters, logged for the audit trail.
            snapshot_id: The store snapshot its training images were read at.
            tags: Extra version tags (trigger, retrain event, counts).
        """
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        all_tags = {"snapshot_id": str(snapshot_id), "task": task, **(tags or {})}
        meta = {"task": task, "names": list(names), "imgsz": int(imgsz)}
        with mlflow.start_run(experiment_id=self._experiment_id(), tags=all_tags) as run:
            mlflow.log_params({k: str(v) for k, v in params.items()})
            mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / SERVING_DIR
                folder.mkdir()
                (folder / VISION_META).write_text(json.dumps(meta, indent=1))
                (folder / VISION_WEIGHTS).write_bytes(Path(weights).read_bytes())
                if onnx_file is not None:
                    (folder / VISION_ONNX).write_bytes(Path(onnx_file).read_bytes())
                if int8_file is not None:
                    (folder / VISION_ONNX_INT8).write_bytes(Path(int8_file).read_bytes())
                mlflow.log_artifacts(str(folder), artifact_path=SERVING_DIR)
            source = f"{run.info.artifact_uri}/{SERVING_DIR}"
        try:
            self.client.create_registered_model(self.model_name)
        except Exception:  # it exists (or another process just made it)
            logger.debug("registered model %s exists", self.model_name)
        mv = self.client.create_model_version(
            self.model_name, source, run_id=run.info.run_id, tags=all_tags
        )
        version = str(mv.version)
        self.client.set_model_version_tag(self.model_name, version, "run_id", run.info.run_id)
        logger.info("registered %s version %s (snapshot %s)", self.model_name, version, snapshot_id)
        return version


def kept_snapshots(settings: Settings) -> list[int]:
    """Every snapshot a registered model of either kind (tabular or vision) was trained on:
    compaction keeps them readable, so every model's training set can be read back."""
    models = (Registry.from_settings(settings), Registry.vision_from_settings(settings))
    return sorted({snapshot for r in models for snapshot in r.trained_snapshots()})
