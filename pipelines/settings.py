"""The one settings object: every knob of driftlab, read from `DRIFTLAB_*` env vars and `.env`.

Nothing happens at import time: paths are derived, not created. Call `get_settings()`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """driftlab configuration. Each field is `DRIFTLAB_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLAB_", env_file=".env", extra="ignore", validate_default=True
    )

    data_dir: Path = Field(Path("data"), description="Runtime data: lake, mlflow, spool, runs.")
    cache_dir_override: Path | None = Field(
        None,
        alias="DRIFTLAB_CACHE_DIR",
        description="What can be rebuilt from the lake and the registry: drift references, "
        "downloaded model files (default <data_dir>/cache).",
    )
    catalog_uri: str = Field(
        "",
        description="DuckLake catalog: 'sqlite:<path>' (default <data_dir>/lake/catalog.sqlite) "
        "or 'postgres:dbname=… host=…' for a shared catalog.",
    )
    data_path: str = Field("", description="DuckLake data files (default <data_dir>/lake/files/).")
    mlflow_uri: str = Field(
        "", description="MLflow tracking + registry URI (default sqlite under <data_dir>/mlflow)."
    )
    model_name: str = Field("driftlab-tabular", description="Registered model name served.")
    api_host: str = Field("127.0.0.1", description="API bind address.")
    api_port: int = Field(8000, description="API port.")
    api_workers: int = Field(
        1, ge=1, description="API worker processes (each with its own spool and flusher)."
    )
    dashboard_port: int = Field(8050, description="Dashboard port.")
    demo: Literal["digits", "survey"] = Field(
        "digits",
        description="Demo data `make up` seeds and `make simulate` replays: digits (handwritten, "
        "a shift that labels fix, so a retrain is promoted) or survey (Fair's affairs).",
    )
    api_key: str | None = Field(
        None,
        description="If set, every write (API and dashboard) needs it: X-API-Key or "
        "Authorization: Bearer.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API and dashboard answer to besides localhost and the "
        "API's bind address (comma-separated; * for any).",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (scheme://host:port, comma-separated) whose pages may write, "
        "besides the server's own.",
    )

    uncertainty_low: float = Field(0.4, description="Predictions with confidence above this ...")
    uncertainty_high: float = Field(0.7, description="... and below this are uncertain.")
    flush_interval: float = Field(0.5, description="Seconds between prediction-log flushes.")
    flush_max_rows: int = Field(50_000, description="Rows that force an early flush.")
    reload_interval: float = Field(2.0, description="Seconds between champion-alias polls.")
    max_body_bytes: int = Field(64 * 1024 * 1024, description="Largest accepted request body.")
    max_rows_per_request: int = Field(100_000, description="Largest batch accepted per request.")
    inlining_row_limit: int = Field(
        200, description="DuckLake commits up to this many rows stay in the catalog."
    )
    api_db_threads: int = Field(
        1, ge=1, description="DuckDB threads in an API process (its writes are small and many)."
    )

    # The default data path moves with the data dir (a copied or moved data dir keeps working).
    _data_path_follows_data_dir: bool = PrivateAttr(default=False)

    check_interval: float = Field(60.0, description="Seconds between the worker's drift checks.")
    window_size: int = Field(1000, description="Predictions in the current drift window.")
    min_samples: int = Field(100, description="Predictions needed before any drift verdict.")
    drift_alpha: float = Field(0.05, description="Significance level after correction.")
    drift_correction: Literal["bh", "bonferroni", "none"] = Field(
        "bh", description="Multiple testing: bh, bonferroni or none."
    )
    drift_share_threshold: float = Field(
        0.3, description="Share of drifted features the retraining policy treats as drift."
    )
    compact_interval: float = Field(
        300.0,
        description="Seconds between the worker's compactions (each prediction-log flush is a "
        "small Parquet file until they are merged).",
    )

    queue_method: Literal["margin", "entropy", "confidence"] = Field(
        "margin", description="Informativeness that ranks the queue: margin, entropy, confidence."
    )
    queue_budget_per_hour: int = Field(
        100, ge=0, description="Most predictions enqueued for labeling per rolling hour."
    )
    queue_interval: float = Field(
        10.0, description="Seconds between the worker's scans for uncertain predictions."
    )
    retrain_min_new_labels: int = Field(
        50, ge=0, description="New labels needed before drift triggers a retrain."
    )
    retrain_fail_threshold: int = Field(
        10, ge=0, description="Errors on one class (labels, feedback) that trigger a retrain."
    )
    retrain_accuracy_floor: float = Field(
        0.6, ge=0, le=1, description="Live accuracy from feedback below this triggers a retrain."
    )
    retrain_min_feedback: int = Field(
        30, ge=0, description="Labeled predictions needed before live accuracy counts."
    )
    retrain_cooldown: float = Field(
        600.0, ge=0, description="Seconds after a retrain before another may start."
    )
    retrain_auto: bool = Field(
        True, description="The worker starts a retrain when the policy says so."
    )
    retrain_optuna_trials: int = Field(
        0, ge=0, description="Optuna trials per retrain (0: the champion's hyperparameters)."
    )
    retrain_optuna_timeout: float = Field(
        60.0, gt=0, description="Seconds an Optuna search may take at most."
    )
    gate_metric: Literal["macro_f1", "accuracy"] = Field(
        "macro_f1", description="Metric the promotion gate compares: macro_f1 or accuracy."
    )
    gate_margin: float = Field(
        0.005, ge=0, description="How much the challenger must beat the champion by."
    )
    gate_class_tolerance: float = Field(
        0.05, ge=0, le=1, description="Most any class's recall may drop on promotion."
    )

    # -- vision: YOLO detection / classification through the same loop ------------------------
    images_dir_override: Path | None = Field(
        None,
        alias="DRIFTLAB_IMAGES_DIR",
        description="Content-addressed image store (default <data_dir>/images).",
    )
    yolo_config_dir_override: Path | None = Field(
        None,
        alias="DRIFTLAB_YOLO_CONFIG_DIR",
        description="Ultralytics' settings and fonts (default <data_dir>/yolo).",
    )
    image_max_bytes: int = Field(
        20 * 1024 * 1024, ge=1, description="Largest accepted image upload in bytes."
    )
    image_max_pixels: int = Field(
        40_000_000, ge=1, description="Largest accepted width × height (checked before decoding)."
    )
    vision_model_name: str = Field(
        "driftlab-vision", description="Registered model name of the vision model served."
    )
    vision_task: Literal["detect", "classify"] = Field(
        "detect", description="Vision task: detect or classify."
    )
    vision_architecture: str = Field(
        "yolo11n", description="Ultralytics architecture when training from scratch."
    )
    vision_weights: Path | None = Field(
        None, description="Your own pretrained .pt to start the first vision model from."
    )
    vision_imgsz: int = Field(
        320, ge=32, multiple_of=32, description="Vision model input side in pixels."
    )
    vision_epochs: int = Field(10, ge=1, description="Epochs of a vision retrain (fine-tune).")
    vision_conf: float = Field(
        0.25, gt=0, lt=1, description="Detections below this confidence are dropped."
    )
    vision_int8: bool = Field(
        False,
        description="Also register an int8 ONNX export of each vision retrain (2.5-3x the torch "
        "path on CPU) and serve it when it agrees with the float export (see next).",
    )
    vision_int8_min_agreement: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the float export's boxes (classes, for a classifier) on the "
        "held-out images that the int8 export must reproduce to be served.",
    )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.catalog_uri:
            self.catalog_uri = f"sqlite:{self.data_dir / 'lake' / 'catalog.sqlite'}"
        if not self.data_path:
            self.data_path = f"{self.data_dir / 'lake' / 'files'}/"
            self._data_path_follows_data_dir = True
        if not self.mlflow_uri:
            self.mlflow_uri = f"sqlite:///{self.data_dir / 'mlflow' / 'mlflow.db'}"
        if self.uncertainty_low >= self.uncertainty_high:
            raise ValueError("uncertainty_low must be below uncertainty_high")
        return self

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def cache_dir(self) -> Path:
        return (self.cache_dir_override or self.data_dir / "cache").expanduser().resolve()

    @property
    def vision_cache_dir(self) -> Path:
        """The vision versions' files (weights, ONNX), one folder per version."""
        return self.cache_dir / "vision"

    def reference_cache(self, model_name: str, version: str) -> Path:
        """Where a model version's drift reference profile is kept once computed."""
        return self.cache_dir / f"reference-{model_name}-v{version}.pkl"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def reports_dir(self) -> Path:
        return self.data_dir / "reports"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.data_dir / "mlflow" / "artifacts"

    @property
    def images_dir(self) -> Path:
        return (self.images_dir_override or self.data_dir / "images").expanduser().resolve()

    @property
    def yolo_config_dir(self) -> Path:
        return (self.yolo_config_dir_override or self.data_dir / "yolo").expanduser().resolve()

    @property
    def data_path_follows_data_dir(self) -> bool:
        return self._data_path_follows_data_dir

    def process_env(self) -> dict[str, str]:
        """Variables that make a child process (kernel, worker) open the same store and registry.

        Also switches off telemetry and downloads for MLflow and Ultralytics.
        """
        return {
            "DRIFTLAB_DATA_DIR": str(self.data_dir),
            "DRIFTLAB_CATALOG_URI": self.catalog_uri,
            "DRIFTLAB_MLFLOW_URI": self.mlflow_uri,
            "DRIFTLAB_MODEL_NAME": self.model_name,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "false",
            "YOLO_CONFIG_DIR": str(self.yolo_config_dir),
            "DRIFTLAB_VISION_MODEL_NAME": self.vision_model_name,
        }

    def relative(self, path: str | Path | None) -> str | None:
        """`path` relative to the data dir when it lies inside it, as the store records and
        the API shows it: the data dir may move, and where it lies is the server's business."""
        if path is None:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.data_dir))
        except ValueError:
            return str(path)

    def is_loopback(self) -> bool:
        return self.api_host in {"127.0.0.1", "localhost", "::1"}


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call `get_settings.cache_clear()`)."""
    return Settings()
