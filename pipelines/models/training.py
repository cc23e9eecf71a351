"""Training: fit a classifier on the labeled rows of a store snapshot and register it.

The training set is every labeled row at one DuckLake snapshot (ingested batches plus human
labels), so the snapshot id recorded with the model is enough to read it back exactly.

Which rows are held out is decided by a hash of each row's id (`heldout_mask`), not by a random
split of whatever the snapshot holds: a row held out once is held out from every later model
too, so a champion and a challenger trained on different snapshots are compared on rows
neither has seen (the promotion gate relies on it).

Every model serves calibrated probabilities: a second hash cut of the training rows
(`CALIBRATION_SHARE`) is kept from the estimator, and a calibration map
(`pipelines.models.calibration`) is fitted on its raw probabilities there. The map is registered
beside the model (`calibration.json`) and applied after whichever runtime serves it; the ONNX
export and the compiled forest stay exports of the raw estimator.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, clone
from sklearn.ensemble import (
    ExtraTreesClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss, recall_score

from pipelines.loop.promotion_gate import LOWER_IS_BETTER
from pipelines.models.calibration import (
    CALIBRATION_FILE,
    Calibration,
    expected_calibration_error,
    fit_calibration,
    reliability_curve,
    unfit_reason,
)
from pipelines.models.registry import CHAMPION, Registry
from pipelines.schema import FeatureSchema, SchemaError
from pipelines.store import LabeledRows, Store

logger = logging.getLogger(__name__)

ESTIMATORS: dict[str, ClassifierMixin] = {
    "random_forest": RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=-1),
    "extra_trees": ExtraTreesClassifier(n_estimators=100, max_depth=10, n_jobs=-1),
    "hist_gradient_boosting": HistGradientBoostingClassifier(),
    "logistic_regression": LogisticRegression(max_iter=1000),
}

CALIBRATION_SHARE = 0.25
"""Share of the training rows (those not held out) kept from the estimator to fit its
calibration map on: chosen by a hash of the row id salted with "calibration:", so the cut is
as stable as the held-out one and independent of it and of `search`'s validation cut."""
RELIABILITY_FILE = "reliability.json"


@dataclass
class TrainConfig:
    """What to train. `params` override the estimator's defaults in `ESTIMATORS` (the forests:
    100 trees, depth 10)."""

    estimator: str = "random_forest"
    params: dict[str, Any] = field(default_factory=dict)
    test_size: float = 0.2
    random_state: int = 42

    def build(self) -> ClassifierMixin:
        if self.estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {self.estimator!r}; one of {sorted(ESTIMATORS)}")
        est = clone(ESTIMATORS[self.estimator])
        if "random_state" in est.get_params():
            est.set_params(random_state=self.random_state)
        return est.set_params(**self.params)


@dataclass
class Fitted:
    """What `fit` makes: the estimator, the schema it was trained with, its held-out metrics,
    its ONNX export (None when there is none or it disagrees with scikit-learn), the calibration
    map served after it, the reliability curves of the held-out rows, and the row counts.

    `n_train` counts every training row: the estimator's and the calibration cut's
    (`metrics["calibration_rows"]`).
    """

    estimator: Any
    schema: FeatureSchema
    metrics: dict[str, float]
    onnx_model: bytes | None
    calibration: Calibration
    reliability: dict[str, Any]
    n_train: int
    n_test: int

    def extra_files(self) -> dict[str, bytes]:
        """The files registered beside the model: its calibration map (which serving applies)
        and the held-out reliability curves, calibrated and raw."""
        return {
            CALIBRATION_FILE: json.dumps(self.calibration.to_dict(), indent=1).encode(),
            RELIABILITY_FILE: json.dumps(self.reliability, indent=1).encode(),
        }


@dataclass
class TrainResult:
    version: str
    snapshot_id: int
    metrics: dict[str, float]
    n_train: int
    n_test: int
    runtime: str
    seconds: float
    promoted: bool


def evaluate(proba: np.ndarray, y: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    """Held-out metrics: accuracy, macro-F1, per-class recall and support, log-loss, calibration
    error."""
    pred = classes[proba.argmax(axis=1)]
    metrics = {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=classes, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-15, 1), labels=classes)),
        "ece": expected_calibration_error(proba, y, classes),
    }
    recalls = recall_score(y, pred, average=None, labels=classes, zero_division=0)
    for cls, rec in zip(classes, recalls, strict=True):
        metrics[f"recall_{cls}"] = float(rec)
        metrics[f"support_{cls}"] = float(np.sum(y == cls))  # the gate weighs recall by it
    return metrics


def to_onnx(estimator: Any, x: np.ndarray) -> bytes | None:
    """The estimator as ONNX (label + probability outputs), or None if it can't be converted."""
    try:
        from skl2onnx import to_onnx as convert

        onx = convert(estimator, x[:1], options={id(estimator): {"zipmap": False}})
        return onx.SerializeToString()
    except Exception as exc:
        logger.warning("no ONNX export for %s: %s", type(estimator).__name__, exc)
        return None


def onnx_matches(onnx_model: bytes, estimator: Any, x: np.ndarray, tol: float = 1e-4) -> float:
    """Largest probability difference between ONNX Runtime and scikit-learn on `x`."""
    from pipelines.serving.model import onnx_session

    session = onnx_session(onnx_model)
    got = session.run([session.get_outputs()[1].name], {session.get_inputs()[0].name: x})[0]
    return float(np.abs(got - estimator.predict_proba(x)).max())


def train(
    store: Store,
    registry: Registry,
    config: TrainConfig | None = None,
    *,
    snapshot_id: int | None = None,
    promote: bool = True,
    who: str = "train",
) -> TrainResult:
    """Train on the labeled rows at `snapshot_id` (default: now), register, optionally promote."""
    config = config or TrainConfig()
    started = time.perf_counter()
    data = store.labeled_rows(snapshot_id)
    schema = store.dataset_schema()
    if schema is None or len(data) == 0:
        raise SchemaError("no labeled rows in the store: ingest a labeled batch first")
    fitted = fit(data, schema, config)
    version = registry.log_model(
        estimator=fitted.estimator,
        schema=fitted.schema.to_dict(),
        metrics=fitted.metrics,
        params={"estimator": config.estimator, **fitted.estimator.get_params(), **asdict(config)},
        snapshot_id=data.snapshot_id,
        onnx_model=fitted.onnx_model,
        tags={
            "n_train": str(fitted.n_train),
            "n_test": str(fitted.n_test),
            "calibration": fitted.calibration.method,
        },
        extra_files=fitted.extra_files(),
    )
    promoted = False
    if promote:
        previous = registry.alias_version(CHAMPION)
        registry.set_alias(CHAMPION, version)
        store.add_model_event(
            registry.model_name, "promoted", previous, version, who=who, why="trained and promoted"
        )
        promoted = True
    return TrainResult(
        version=version,
        snapshot_id=data.snapshot_id,
        metrics=fitted.metrics,
        n_train=fitted.n_train,
        n_test=fitted.n_test,
        runtime="onnx" if fitted.onnx_model else "sklearn",
        seconds=time.perf_counter() - started,
        promoted=promoted,
    )


def heldout_mask(record_ids: Sequence[str], share: float) -> np.ndarray:
    """True for the rows held out from training: a stable hash of the id below `share`.

    The same id gets the same answer in every process and every later snapshot (unlike
    Python's salted `hash`), so held-out rows never leak into a later model's training set.
    """
    if not 0.0 < share < 1.0:
        raise ValueError(f"the held-out share must be within (0, 1), got {share}")
    cut = int(share * 2**32)
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(i.encode(), digest_size=4).digest(), "big") < cut
            for i in record_ids
        ),
        dtype=bool,
        count=len(record_ids),
    )


def fit(data: LabeledRows, schema: FeatureSchema, config: TrainConfig) -> Fitted:
    """Split, fit, calibrate, evaluate and export. Pure: no store, no registry.

    The estimator learns from the training rows outside the calibration cut
    (`CALIBRATION_SHARE`) and the calibration map from the cut; the held-out rows score the
    calibrated probabilities (`ece` and the rest, as served) and the raw ones
    (`ece_uncalibrated`, `log_loss_uncalibrated`). When the cut could not calibrate (too few
    rows, a class missing from it) or would leave the estimator without a class, the estimator
    learns from every training row and the map is the identity, which says why.
    """
    labels = np.array([schema.label_from_store(v) for v in data.labels])
    model_schema = schema.with_training_facts(data.columns, labels.tolist())
    x = model_schema.encode(data.columns)
    classes = np.array(model_schema.classes)
    test = heldout_mask(data.record_ids, config.test_size)
    if test.all() or not test.any():
        raise SchemaError(f"{len(labels)} labeled rows are too few to hold some out")
    x_tr, x_te, y_tr, y_te = x[~test], x[test], labels[~test], labels[test]
    train_ids = [r for r, held in zip(data.record_ids, test, strict=True) if not held]
    cal = heldout_mask([f"calibration:{i}" for i in train_ids], CALIBRATION_SHARE)
    why_not = unfit_reason(y_tr[cal], classes)
    if why_not is None and len(np.unique(y_tr[~cal])) < len(classes):
        why_not = "some class has no training rows outside the calibration cut"
    if why_not is not None:
        cal[:] = False
    estimator = config.build().fit(x_tr[~cal], y_tr[~cal])
    if list(estimator.classes_) != list(classes):
        raise SchemaError("every class needs training rows; some class is missing from the split")
    if why_not is None:
        calibration = fit_calibration(estimator.predict_proba(x_tr[cal]), y_tr[cal], classes)
    else:
        calibration = Calibration.identity(len(classes), why_not)
    logger.info("calibration: %s (%s)", calibration.method, calibration.why)
    raw_te = estimator.predict_proba(x_te)
    proba_te = calibration.apply(raw_te)
    metrics = evaluate(proba_te, y_te, classes)
    uncalibrated = evaluate(raw_te, y_te, classes)
    metrics["ece_uncalibrated"] = uncalibrated["ece"]
    metrics["log_loss_uncalibrated"] = uncalibrated["log_loss"]
    metrics["calibration_rows"] = float(cal.sum())
    metrics["n_train"], metrics["n_test"] = float(len(y_tr)), float(len(y_te))
    reliability = {
        "calibration": calibration.method,
        "calibrated": reliability_curve(proba_te, y_te, classes),
        "uncalibrated": reliability_curve(raw_te, y_te, classes),
    }
    onnx_model = to_onnx(estimator, x_tr)
    if onnx_model is not None:
        diff = onnx_matches(onnx_model, estimator, x_te)
        metrics["onnx_max_abs_diff"] = diff
        if diff > 1e-4:
            logger.warning("ONNX differs from scikit-learn by %.2g: serving sklearn", diff)
            onnx_model = None
    return Fitted(
        estimator=estimator,
        schema=model_schema,
        metrics=metrics,
        onnx_model=onnx_model,
        calibration=calibration,
        reliability=reliability,
        n_train=len(y_tr),
        n_test=len(y_te),
    )


SEARCH_SPACES: dict[str, dict[str, tuple[str, float, float]]] = {
    "random_forest": {
        "n_estimators": ("int", 50, 300),
        "max_depth": ("int", 3, 20),
        "min_samples_leaf": ("int", 1, 20),
    },
    "extra_trees": {
        "n_estimators": ("int", 50, 300),
        "max_depth": ("int", 3, 20),
        "min_samples_leaf": ("int", 1, 20),
    },
    "hist_gradient_boosting": {
        "learning_rate": ("log", 0.01, 0.3),
        "max_depth": ("int", 2, 12),
        "min_samples_leaf": ("int", 5, 100),
    },
    "logistic_regression": {"C": ("log", 1e-3, 100.0)},
}


def search(
    data: LabeledRows,
    schema: FeatureSchema,
    config: TrainConfig,
    *,
    trials: int,
    timeout_s: float,
    metric: str = "macro_f1",
) -> tuple[TrainConfig, dict[str, Any]]:
    """An Optuna (TPE) search over the estimator's hyperparameters, budgeted by trials and time.

    Trials are scored on a validation cut of the *training* rows (the held-out rows stay unseen:
    the gate compares models on them), by the raw probabilities of an estimator fitted on the
    rest: the gate's metrics (macro-F1, accuracy) hardly move with calibration, which `fit` adds
    to the chosen configuration. Returns the config with the best parameters and a summary.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = SEARCH_SPACES.get(config.estimator)
    if not space:
        raise ValueError(f"no search space for {config.estimator!r}")
    labels = np.array([schema.label_from_store(v) for v in data.labels])
    model_schema = schema.with_training_facts(data.columns, labels.tolist())
    x = model_schema.encode(data.columns)
    classes = np.array(model_schema.classes)
    train_rows = ~heldout_mask(data.record_ids, config.test_size)
    ids = [r for r, keep in zip(data.record_ids, train_rows, strict=True) if keep]
    x, labels = x[train_rows], labels[train_rows]
    # A second hash cut (salted differently) carves the validation rows out of the training ones.
    val = heldout_mask([f"validation:{i}" for i in ids], 0.25)

    def objective(trial: Any) -> float:
        params = {
            name: trial.suggest_int(name, int(lo), int(hi))
            if kind == "int"
            else trial.suggest_float(name, lo, hi, log=kind == "log")
            for name, (kind, lo, hi) in space.items()
        }
        candidate = TrainConfig(config.estimator, {**config.params, **params}, config.test_size)
        model = candidate.build().fit(x[~val], labels[~val])
        if list(model.classes_) != list(classes):
            return np.inf if lower else -np.inf
        return evaluate(model.predict_proba(x[val]), labels[val], classes)[metric]

    sampler = optuna.samplers.TPESampler(seed=config.random_state)
    lower = metric in LOWER_IS_BETTER
    study = optuna.create_study(direction="minimize" if lower else "maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials, timeout=timeout_s)
    best = TrainConfig(
        config.estimator,
        {**config.params, **study.best_params},
        config.test_size,
        config.random_state,
    )
    summary = {
        "trials": len(study.trials),
        "best_value": float(study.best_value),
        "best_params": study.best_params,
        "metric": metric,
    }
    return best, summary
