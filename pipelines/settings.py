"""The one settings object: every knob of driftlab, read from `DRIFTLAB_*` env vars and `.env`.

Nothing happens at import time: paths are derived, not created. Call `get_settings()`. Every
setting with its description lives here, so that `docs/configuration.md` is generated from one
place: longer than most modules, and kept whole.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """driftlab configuration. Each field is `DRIFTLAB_<FIELD>` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="DRIFTLAB_", env_file=".env", extra="ignore", validate_default=True
    )

    data_dir: Path = Field(
        Path("data"),
        description="Folder of all runtime data: the lake, the MLflow registry, the prediction "
        "spool, images, executed notebooks, reports, logs and caches. Every other path defaults "
        "to a place inside it.",
    )
    cache_dir_override: Path | None = Field(
        None,
        alias="DRIFTLAB_CACHE_DIR",
        description="What can be rebuilt from the lake and the registry: drift reference "
        "profiles, vision model files. Default `<data_dir>/cache`.",
    )
    catalog_uri: str = Field(
        "",
        description="DuckLake catalog: `sqlite:<path>` for processes on one machine (default "
        "`<data_dir>/lake/catalog.sqlite`), or `postgres:<libpq connection string>` (such as "
        "`postgres:dbname=lake host=db user=driftlab`) for a catalog shared by several machines.",
    )
    data_path: str = Field(
        "",
        description="Where the lake's Parquet files go: a folder (default "
        "`<data_dir>/lake/files/`, which follows the data dir when it is moved) or an "
        "`s3://bucket/prefix/` URL on "
        "S3-compatible object storage (see the `DRIFTLAB_S3_*` settings).",
    )
    mlflow_uri: str = Field(
        "",
        description="MLflow tracking and registry URI: default "
        "`sqlite:///<data_dir>/mlflow/mlflow.db`; `postgresql://user@host:port/db` for a "
        "registry shared by several machines; an `http://` URL uses an MLflow server.",
    )
    mlflow_artifacts: str = Field(
        "",
        description="Where new MLflow runs keep their artifacts (models, ONNX exports): default "
        "`<data_dir>/mlflow/artifacts`, or an `s3://bucket/prefix` URL that every machine "
        "reaches. Fixed when the registry's experiment is created.",
    )
    s3_endpoint: str = Field(
        "",
        description="Host and port of an S3-compatible server (MinIO, Ceph, moto), such as "
        "`minio:9000`; empty for AWS S3. Used by the lake's files and MLflow's artifacts.",
    )
    s3_key_id: str = Field("", description="Access key id for object storage.")
    s3_secret: SecretStr = Field(
        SecretStr(""), description="Secret access key for object storage (never shown)."
    )
    s3_region: str = Field("us-east-1", description="Region of the object storage.")
    s3_url_style: Literal["vhost", "path"] = Field(
        "vhost",
        description="`vhost` (bucket in the host name, AWS's default) or `path` (MinIO, moto).",
    )
    s3_use_ssl: bool = Field(
        True, description="Talk HTTPS to the object storage (false for a local MinIO or moto)."
    )
    lease_interval: float = Field(
        10.0,
        gt=0,
        description="With a PostgreSQL catalog: the worker lease lasts 1.5 intervals and is "
        "renewed every half interval, so exactly one worker acts and a standby takes over "
        "within two intervals of the active one dying; a retrain's lease is renewed every "
        "interval and lasts six. Unused on the embedded SQLite catalog (one machine).",
    )
    model_name: str = Field(
        "driftlab-tabular",
        description="Registered model name of the tabular model: the API serves its `champion` "
        "alias, and retrains register their challengers under it.",
    )
    api_host: str = Field(
        "127.0.0.1",
        description="Address `driftlab api` binds to (the API also answers to it as a host name). "
        "Anything but 127.0.0.1, localhost or ::1 requires `DRIFTLAB_API_KEY`.",
    )
    api_port: int = Field(8000, description="Port of `driftlab api` (`--port` overrides it).")
    api_workers: int = Field(
        1,
        ge=1,
        description="API worker processes, each with its own spool, flusher and model poller; one "
        "per core helps concurrent bulk requests. `/metrics` sums the counters of every process. "
        "They stop with `driftlab api`, even when it is killed with -9 (Linux).",
    )
    dashboard_port: int = Field(
        8050, description="Port of the dashboard, which always binds to 127.0.0.1."
    )
    observe: bool = Field(
        False,
        description="Whether `driftlab up` also starts Prometheus and Alertmanager with the "
        "configuration in `ops/` (`make up OBSERVE=1` sets it).",
    )
    prometheus_port: int = Field(
        9090, description="Port of the Prometheus that `driftlab observe` starts on 127.0.0.1."
    )
    alertmanager_port: int = Field(
        9093, description="Port of the Alertmanager that `driftlab observe` starts on 127.0.0.1."
    )
    demo: Literal["digits", "survey"] = Field(
        "digits",
        description="Demo data `make up` seeds into an empty store and `make simulate` replays: "
        "`digits` (handwritten 8×8 digits, 64 pixel features; the shift, slanted and thicker "
        "writing, is one that labels fix, so a retrain gets promoted) or `survey` (Fair's affairs "
        "survey, 8 answers; the shift is an older cohort, and the gate usually rejects the "
        "challenger).",
    )
    api_key: str | None = Field(
        None,
        description="If set, every write needs it: on the API as `X-API-Key` or `Authorization: "
        "Bearer`, on the dashboard once per browser session. Reads stay open. Required to bind "
        "the API beyond loopback.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API and dashboard answer to besides localhost, 127.0.0.1, ::1 "
        "and the API's bind address (comma-separated; `*` for any). Any other `Host` gets a 400.",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (`scheme://host:port`, comma-separated) whose pages may write, "
        "besides the server's own; a write from any other page gets a 403.",
    )

    uncertainty_low: float = Field(
        0.4,
        description="Lower edge of the uncertainty band: a prediction whose confidence (the "
        "probability of its class) lies strictly between this and `DRIFTLAB_UNCERTAINTY_HIGH` is "
        "flagged uncertain and may go to the labeling queue.",
    )
    uncertainty_high: float = Field(
        0.7, description="Upper edge of the uncertainty band (above `DRIFTLAB_UNCERTAINTY_LOW`)."
    )
    flush_interval: float = Field(
        0.5,
        description="Seconds between the prediction log's flushes from the spool to the lake, one "
        "commit each: other processes see a prediction within about this long.",
    )
    flush_max_rows: int = Field(
        50_000, description="Buffered predictions that start a flush before the interval is up."
    )
    reload_interval: float = Field(
        2.0,
        description="Seconds between polls of the `champion` alias: a promotion is served within "
        "this long (`POST /api/models/reload` checks at once).",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        description="Largest request body in bytes (64 MiB); a larger one gets a 413 before it is "
        "read, or as soon as it passes the limit.",
    )
    max_rows_per_request: int = Field(
        100_000,
        description="Most rows one `/predict` or `/ingest` request may carry; more get a 422.",
    )
    inlining_row_limit: int = Field(
        200,
        description="DuckLake commits of up to this many rows are kept inside the catalog instead "
        "of a Parquet file (small writes: labels, events). Never for `ingested_rows` and "
        "`predictions`, whose feature values read back exactly only from Parquet.",
    )
    api_db_threads: int = Field(
        1,
        ge=1,
        description="DuckDB threads in each API process: one leaves the other cores to requests, "
        "and a lake write takes about as long with less CPU (`python -m benchmarks --only "
        "store`).",
    )

    # The default data path moves with the data dir (a copied or moved data dir keeps working).
    _data_path_follows_data_dir: bool = PrivateAttr(default=False)

    check_interval: float = Field(
        60.0,
        description="Seconds between the worker's rounds of drift checks and retraining decisions.",
    )
    window_size: int = Field(
        1000,
        description="Latest predictions in a drift check's current window, compared with the "
        "champion's training data.",
    )
    min_samples: int = Field(
        100,
        description="New predictions (or images) the worker waits for before a drift check, and "
        "usable values a column needs on each side for a verdict.",
    )
    drift_alpha: float = Field(
        0.05,
        description="Significance level a feature's p-value must fall below after the correction "
        "for it to drift (its effect size must also reach 0.1).",
    )
    drift_correction: Literal["bh", "bonferroni", "none"] = Field(
        "bh",
        description="Multiple-testing correction across a check's columns: `bh` "
        "(Benjamini–Hochberg), `bonferroni` or `none`.",
    )
    drift_share_threshold: float = Field(
        0.3,
        description="Share of drifted features that the retraining policy counts as drift, like a "
        "drifted dataset (0.3: 30%).",
    )
    compact_interval: float = Field(
        300.0,
        description="Seconds between the worker's compactions: small files merged (each "
        "prediction-log flush writes one), snapshots older than 24 hours expired except those a "
        "registered model was trained on.",
    )

    queue_method: Literal["margin", "entropy", "confidence"] = Field(
        "margin",
        description="How uncertain predictions are ranked for labeling: `margin` (1 − (top1 − "
        "top2)), `entropy` (normalized) or `confidence` (1 − top1).",
    )
    queue_budget_per_hour: int = Field(
        100,
        ge=0,
        description="Most predictions the worker enqueues for labeling per rolling hour, most "
        "informative first.",
    )
    queue_interval: float = Field(
        10.0,
        description="Seconds between the worker's scans of the last hour's uncertain predictions "
        "for the labeling queue.",
    )
    retrain_on: Literal["impact", "drift"] = Field(
        "impact",
        description="What drift must come with to trigger a retrain: `impact`, a significant "
        "estimated or realized performance drop from the champion's reference (drift a model "
        "has adapted to retrains nothing); `drift`, drift and new labels alone.",
    )
    retrain_estimated_drop: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Estimated (or realized) accuracy drop from the champion's held-out "
        "accuracy that counts as harm, when its band also excludes zero. With new labels to "
        "learn from, such a drop triggers a retrain on its own.",
    )
    retrain_on_output_drift: bool = Field(
        False,
        description="Whether drift of the model's outputs (predicted class mix, confidence, "
        "detections per image) counts as drift for a retrain on its own. Off: output drift is "
        "reported beside input drift, and the drift share counts inputs only.",
    )
    retrain_min_new_labels: int = Field(
        50,
        ge=0,
        description="Labels since the champion's training snapshot needed before drift triggers a "
        "retrain.",
    )
    retrain_fail_threshold: int = Field(
        10,
        ge=0,
        description="Errors on one class, in labels and feedback, that trigger a retrain on their "
        "own.",
    )
    retrain_accuracy_floor: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Live accuracy (from feedback) below which a retrain is due, once "
        "`DRIFTLAB_RETRAIN_MIN_FEEDBACK` labeled predictions back it.",
    )
    retrain_min_feedback: int = Field(
        30, ge=0, description="Labeled predictions needed before the live accuracy counts."
    )
    retrain_cooldown: float = Field(
        600.0,
        ge=0,
        description="Seconds after a model's last retrain before the worker or an alert webhook "
        "may start another; a person may start one at any time.",
    )
    retrain_auto: bool = Field(
        True,
        description="Whether the worker starts a retrain when the policy says one is due; with "
        "`false`, retrains start only when asked (API, dashboard, CLI, alert webhook).",
    )
    retrain_optuna_trials: int = Field(
        0,
        ge=0,
        description="Optuna trials of a hyperparameter search in each tabular retrain, scored on "
        "a validation cut of the training rows (0: no search, the champion's hyperparameters).",
    )
    retrain_optuna_timeout: float = Field(
        60.0, gt=0, description="Most seconds one retrain's Optuna search may take."
    )
    gate_metric: Literal["macro_f1", "accuracy"] = Field(
        "macro_f1",
        description="Metric the promotion gate compares for the tabular model: `macro_f1` or "
        "`accuracy` (the vision model uses mAP50-95 or top-1).",
    )
    gate_margin: float = Field(
        0.005,
        ge=0,
        description="How much the challenger must beat the champion by on the gate metric, on the "
        "held-out recent labels (on the fixed held-out rows when fewer than 30 recent ones "
        "exist).",
    )
    gate_class_tolerance: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Most the challenger may lose on the fixed held-out rows, and most any "
        "class's recall may drop (plus two standard errors of that recall), for a promotion.",
    )

    # -- rollouts: a challenger beside the champion on live traffic ----------------------------
    rollout: Literal["direct", "shadow", "canary"] = Field(
        "shadow",
        description="What a tabular retrain that passes the gate does: `direct` promotes it at "
        "once; `shadow` runs it beside the champion on live requests (answers logged, never "
        "served) and `canary` serves it a share of requests, both until the live test on "
        "labels decides.",
    )
    rollout_shadow_share: float = Field(
        1.0, gt=0, le=1, description="Share of requests a retrain's shadow challenger also answers."
    )
    rollout_canary_share: float = Field(
        0.1, gt=0, lt=1, description="Share of requests a retrain's canary challenger serves."
    )
    rollout_alpha: float = Field(
        0.05,
        gt=0,
        lt=0.5,
        description="False-decision rate of the live test: the chance of promoting a challenger "
        "worse than the champion by more than the margin, or of stopping one as good as it, "
        "over every look (each look tests at this divided by `DRIFTLAB_ROLLOUT_LOOKS`).",
    )
    rollout_margin: float = Field(
        0.01,
        ge=0,
        lt=1,
        description="Non-inferiority margin in accuracy: a challenger shown to lose less than "
        "this, and better on the point estimate, is promoted.",
    )
    rollout_label_budget: int = Field(
        400,
        ge=20,
        description="Most labeled predictions the live test uses (labeled pairs for a shadow, "
        "labeled canary answers for a canary); at the budget without a verdict the challenger "
        "is stopped and the champion stays.",
    )
    rollout_looks: int = Field(
        4,
        ge=1,
        le=20,
        description="How many times the live test looks at the labels, at equal steps up to the "
        "budget.",
    )
    rollout_guard_factor: float = Field(
        3.0,
        gt=1,
        description="A canary is rolled back at once when, over the last minute, its 5xx share or "
        "its p99 latency exceeds the champion's by this factor.",
    )

    # -- vision: YOLO detection / classification through the same loop ------------------------
    images_dir_override: Path | None = Field(
        None,
        alias="DRIFTLAB_IMAGES_DIR",
        description="Content-addressed store of uploaded and logged images "
        "(`ab/cd/<sha256>.<ext>`), which the lake refers to. Default `<data_dir>/images`.",
    )
    yolo_config_dir_override: Path | None = Field(
        None,
        alias="DRIFTLAB_YOLO_CONFIG_DIR",
        description="Ultralytics' settings and fonts, kept out of the home folder. Default "
        "`<data_dir>/yolo`.",
    )
    image_max_bytes: int = Field(
        20 * 1024 * 1024,
        ge=1,
        description="Largest image upload in bytes (20 MiB); a larger one gets a 413.",
    )
    image_max_pixels: int = Field(
        40_000_000,
        ge=1,
        description="Largest width × height an image may declare, checked from its header before "
        "decoding; a larger one gets a 413.",
    )
    vision_model_name: str = Field(
        "driftlab-vision",
        description="Registered model name of the vision model, with its own versions and "
        "`champion` alias in the same registry.",
    )
    vision_task: Literal["detect", "classify"] = Field(
        "detect",
        description="What a first vision model learns: `detect` (boxes) or `classify` (one class "
        "per image).",
    )
    vision_architecture: str = Field(
        "yolo11n",
        description="Ultralytics architecture of a vision model trained from scratch, built from "
        "its `.yaml` with random weights (nothing is downloaded).",
    )
    vision_weights: Path | None = Field(
        None, description="Your own pretrained `.pt` file to start the first vision model from."
    )
    vision_imgsz: int = Field(
        128,
        ge=32,
        multiple_of=32,
        description="Input side of the vision model in pixels (a multiple of 32); the demo's "
        "canvases are drawn at it. Raise it for camera images with small objects (320, 640).",
    )
    vision_flip: bool = Field(
        False,
        description="Train vision models on horizontally mirrored images too (Ultralytics' "
        "`fliplr` 0.5): on where a mirror image is the same class (most scenes), off for digits "
        "and text, like the demo's.",
    )
    vision_epochs: int = Field(10, ge=1, description="Epochs of a vision retrain's fine-tuning.")
    vision_device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|[0-9]{1,2}(,[0-9]{1,2})*)$",
        description="Where vision models train and run: `auto` (a CUDA GPU when torch, or ONNX "
        "Runtime for serving, sees one; else the CPU), `cpu`, or CUDA device indices (`0`, "
        "`0,1`). Nothing requires a GPU.",
    )
    vision_conf: float = Field(
        0.25, gt=0, lt=1, description="Confidence below which detections are dropped."
    )
    vision_int8: bool = Field(
        False,
        description="Also register an int8 ONNX export with each vision retrain, served instead "
        "of the float export when it agrees with it (next setting); the gate scores the `.pt` "
        "weights either way (`python -m benchmarks --only vision` compares the runtimes).",
    )
    vision_int8_min_agreement: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of the float export's answers on held-out images (boxes matched by "
        "class at IoU ≥ 0.5, or classes) that the int8 export must reproduce to be served.",
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
        if not self.mlflow_artifacts:
            self.mlflow_artifacts = str(self.data_dir / "mlflow" / "artifacts")
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
    def shared_catalog(self) -> bool:
        """Whether the catalog is PostgreSQL, shared by processes on several machines (then
        commits, the worker and retrains take turns through it, not through local files)."""
        return self.catalog_uri.startswith("postgres:")

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
        env = {
            "DRIFTLAB_DATA_DIR": str(self.data_dir),
            "DRIFTLAB_CATALOG_URI": self.catalog_uri,
            "DRIFTLAB_MLFLOW_URI": self.mlflow_uri,
            "DRIFTLAB_MLFLOW_ARTIFACTS": self.mlflow_artifacts,
            "DRIFTLAB_MODEL_NAME": self.model_name,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "YOLO_OFFLINE": "1",
            "YOLO_AUTOINSTALL": "false",
            "YOLO_CONFIG_DIR": str(self.yolo_config_dir),
            "DRIFTLAB_VISION_MODEL_NAME": self.vision_model_name,
        }
        if not self.data_path_follows_data_dir:
            env["DRIFTLAB_DATA_PATH"] = self.data_path
        if self.s3_endpoint or self.s3_key_id:
            env |= {
                "DRIFTLAB_S3_ENDPOINT": self.s3_endpoint,
                "DRIFTLAB_S3_KEY_ID": self.s3_key_id,
                "DRIFTLAB_S3_SECRET": self.s3_secret.get_secret_value(),
                "DRIFTLAB_S3_REGION": self.s3_region,
                "DRIFTLAB_S3_URL_STYLE": self.s3_url_style,
                "DRIFTLAB_S3_USE_SSL": str(self.s3_use_ssl).lower(),
            }
        return env

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
