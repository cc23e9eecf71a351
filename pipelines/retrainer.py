"""Retraining runs: the figures the policy decides on, one run at a time, the challenger, the
gate and the promotion. The pure rules are in `pipelines.retraining`; this module does the I/O.

A run (`run`, executed inside notebooks/retrain.ipynb) trains a challenger on every labeled row
of one store snapshot (the historical training data plus the human labels: never the new
labels alone), registers it with the alias `challenger`, evaluates champion and challenger
through their serving artifacts on the same held-out rows (the fixed held-out rows of the
original data, and held-out human labels on recent predictions), and promotes only if
`retraining.gate_sets` passes. Every state of a run is a `retraining_events` row.

`trigger` starts `driftlab retrain` in the background (the API, the worker and the dashboard
all call it); a file lock under `data/runs/` keeps it to one run at a time across processes.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipelines import models, training
from pipelines.registry import CHALLENGER, CHAMPION, Registry
from pipelines.retraining import (
    FIXED,
    RECENT,
    Conditions,
    RetrainPolicy,
    decide,
    gate_sets,
)
from pipelines.schema import SchemaError
from pipelines.serving import ServingModel, load_version
from pipelines.settings import Settings
from pipelines.store import LabeledRows, Store, new_id, utcnow

logger = logging.getLogger(__name__)

LOCK_NAME = "retrain.lock"
HUMAN_SOURCE = "feedback:"
"""`LabeledRows.sources` prefix of labels given by people (feedback and the queue)."""


class RetrainBusy(RuntimeError):
    """Another retrain holds the lock."""


# -- the decision ----------------------------------------------------------------------------


def conditions(
    settings: Settings, store: Store, registry: Registry, *, now: float | None = None
) -> Conditions:
    """Gather the figures `retraining.decide` needs from the store and the registry.

    Drift counts only from a check of the current champion: a verdict about the previous
    model says nothing about the one now serving.
    """
    champion = registry.alias_version(CHAMPION)
    info = registry.version(champion) if champion else None
    drift = store.latest_drift_results()
    current = [r for r in drift if r["model_version"] == champion]
    features = [r for r in current if r["role"] == "feature"]
    p_values = [r["p_adjusted"] for r in features if r["p_adjusted"] is not None]
    accuracy = store.feedback_accuracy(champion)
    runs = store.retraining_runs(limit=1)
    last = runs[0]["started_at"].timestamp() if runs else None
    return Conditions(
        now=time.time() if now is None else now,
        dataset_drift=bool(current and current[0]["dataset_drift"]),
        drift_share=float(current[0]["drift_share"] or 0.0) if current else 0.0,
        drifted_features=tuple(r["feature"] for r in features if r["drifted"]),
        min_p_value=min(p_values) if p_values else None,
        new_labels=store.new_labels(info.snapshot_id if info else None),
        errors_per_class=store.errors_per_class(champion),
        live_accuracy=accuracy["accuracy"],
        n_feedback=accuracy["n"],
        champion_accuracy=info.metrics.get("accuracy") if info else None,
        last_retrain_at=last,
        running=is_running(settings),
    )


def check(settings: Settings, store: Store, registry: Registry) -> dict[str, Any]:
    """The decision with every figure and threshold behind it (GET /api/retraining/conditions)."""
    policy = RetrainPolicy.from_settings(settings)
    figures = conditions(settings, store, registry)
    decision = decide(figures, policy)
    return {
        **decision.to_dict(),
        "champion_version": registry.alias_version(CHAMPION),
        "figures": figures.to_dict(),
        "thresholds": policy.to_dict(),
    }


# -- starting and following runs -------------------------------------------------------------


def is_running(settings: Settings) -> bool:
    """Whether some process holds the retrain lock right now."""
    try:
        with _lock(settings):
            return False
    except RetrainBusy:
        return True


def acquire(settings: Settings) -> int:
    """Take the retrain lock; returns its file descriptor (closing it releases the lock).

    An `flock` belongs to the open file, not the process: a child that inherits the
    descriptor holds the lock until it exits, which is how `trigger` hands it to the run.

    Raises:
        RetrainBusy: Another run holds it.
    """
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(settings.runs_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RetrainBusy("a retraining run is already in progress") from None
    return fd


@contextlib.contextmanager
def _lock(settings: Settings) -> Iterator[None]:
    fd = acquire(settings)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock, also when the process dies


def trigger(
    settings: Settings,
    store: Store,
    *,
    trigger: str,
    who: str,
    reasons: list[str] | None = None,
    vision: bool = False,
) -> dict[str, Any]:
    """Start a retrain in the background (`driftlab retrain`); returns its event at once.

    Args:
        vision: Retrain the vision model instead (`python -m pipelines.vision.retrain`, same
            arguments, same lock: one retrain at a time, whichever model).

    Raises:
        RetrainBusy: A run is in progress.
    """
    fd = acquire(settings)  # held from here to the end of the run, by the child
    try:
        event_id = new_id()
        store.add_retraining_event(
            {
                "event_id": event_id,
                "trigger": trigger,
                "reasons": reasons or [],
                "status": "queued",
                "who": who,
                "model_name": settings.vision_model_name if vision else settings.model_name,
            }
        )
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        log_path = settings.logs_dir / f"retrain-{event_id}.log"
        entry = ["pipelines.vision.retrain"] if vision else ["pipelines.cli", "retrain"]
        command = [
            sys.executable,
            "-m",
            *entry,
            "--event-id",
            event_id,
            "--trigger",
            trigger,
            "--who",
            who,
            "--reasons",
            json.dumps(reasons or []),
            "--lock-fd",
            str(fd),
        ]
        with open(log_path, "ab") as log:
            subprocess.Popen(
                command,
                env={**os.environ, **settings.process_env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                pass_fds=(fd,),
                start_new_session=True,  # survives the API's restart and its Ctrl-C
                cwd=Path(__file__).resolve().parent.parent,
            )
    finally:
        os.close(fd)  # the child's copy keeps the lock
    logger.info("retrain %s started (%s by %s): %s", event_id, trigger, who, reasons)
    return {"event_id": event_id, "status": "queued", "log": str(log_path)}


def status(settings: Settings, store: Store) -> dict[str, Any]:
    """The run in progress (if any) and the latest one.

    A run still marked queued or running while no process holds the lock has died (killed,
    or its kernel failed to start); it is reported as `lost`.
    """
    running = is_running(settings)
    runs = store.retraining_runs(limit=1)
    latest = runs[0] if runs else None
    if latest is not None and latest["status"] in {"queued", "running"} and not running:
        age = (utcnow() - latest["updated_at"]).total_seconds()
        if age > 30:  # a queued run takes a few seconds to start its process and take the lock
            latest = {**latest, "status": "lost"}
    return {
        "running": running,
        "current": latest if running else None,
        "latest": latest,
    }


def history(store: Store, limit: int = 50) -> list[dict[str, Any]]:
    return store.retraining_runs(limit=limit)


# -- the run ---------------------------------------------------------------------------------


def run(
    settings: Settings,
    store: Store,
    registry: Registry,
    *,
    trigger: str = "manual",
    who: str = "driftlab",
    reasons: list[str] | None = None,
    event_id: str | None = None,
    config: training.TrainConfig | None = None,
    optuna_trials: int | None = None,
    optuna_timeout: float | None = None,
    promote: bool = True,
    notebook: str | None = None,
    hold_lock: bool = True,
) -> dict[str, Any]:
    """One retraining run, start to finish; returns its final event (also in the store).

    Args:
        hold_lock: Take the retrain lock for the run. False when the caller already holds
            it (`driftlab retrain` takes it before starting the notebook's kernel).

    Raises:
        RetrainBusy: Another run holds the lock (recorded as `skipped` for this event).
    """
    event_id = event_id or new_id()
    if optuna_trials is None:
        optuna_trials = settings.retrain_optuna_trials
    if optuna_timeout is None:
        optuna_timeout = settings.retrain_optuna_timeout
    base = {"event_id": event_id, "trigger": trigger, "who": who, "notebook": notebook}
    try:
        with _lock(settings) if hold_lock else contextlib.nullcontext():
            return _run(
                settings,
                store,
                registry,
                base={**base, "reasons": reasons or []},
                config=config,
                trials=optuna_trials,
                timeout=optuna_timeout,
                promote=promote,
            )
    except RetrainBusy as exc:
        store.add_retraining_event({**base, "status": "skipped", "error": str(exc)})
        raise


def _run(
    settings: Settings,
    store: Store,
    registry: Registry,
    *,
    base: dict[str, Any],
    config: training.TrainConfig | None,
    trials: int,
    timeout: float,
    promote: bool,
) -> dict[str, Any]:
    started = time.perf_counter()
    champion = registry.alias_version(CHAMPION)
    snapshot = store.snapshot_id()
    base = {**base, "snapshot_id": snapshot, "champion_version": champion}
    store.add_retraining_event({**base, "status": "running"})
    try:
        data = store.labeled_rows(snapshot)
        schema = store.dataset_schema()
        if schema is None or len(data) == 0:
            raise SchemaError("no labeled rows in the store")
        config = config or champion_config(registry, champion)
        search = None
        if trials > 0:
            config, search = training.search(
                data,
                schema,
                config,
                trials=trials,
                timeout_s=timeout,
                metric=settings.gate_metric,
            )
        estimator, model_schema, metrics, onnx_model, n_train, n_test = training.fit(
            data, schema, config
        )
        version = registry.log_model(
            estimator=estimator,
            schema=model_schema.to_dict(),
            metrics=metrics,
            params={"estimator": config.estimator, **estimator.get_params(), **asdict(config)},
            snapshot_id=snapshot,
            onnx_model=onnx_model,
            tags={
                "n_train": str(n_train),
                "n_test": str(n_test),
                "retrain_event": base["event_id"],
                "trigger": base["trigger"],
            },
        )
        registry.set_alias(CHALLENGER, version)
        challenger = load_version(registry, version)
        sets = evaluation_sets(data, config.test_size)
        scores = {"challenger": evaluate_on(challenger, data, sets)}
        policy = RetrainPolicy.from_settings(settings)
        if champion is None:
            decision: dict[str, Any] = {"promote": True, "reasons": ["no champion to gate"]}
        else:
            scores["champion"] = evaluate_on(load_version(registry, champion), data, sets)
            decision = gate_sets(scores["champion"], scores["challenger"], policy).to_dict()
        promoted = bool(decision["promote"]) and promote
        if promoted:
            why = f"retrain {base['event_id']} ({base['trigger']}): gate passed"
            models.promote(store, registry, version, who=base["who"] or "retrain", why=why)
            registry.delete_alias(CHALLENGER)
        final = {
            **base,
            "status": "promoted" if promoted else "rejected",
            "candidate_version": version,
            "metrics": {
                **scores,
                "training": metrics,
                "n_train": n_train,
                "n_test": n_test,
                "search": search,
                "seconds": round(time.perf_counter() - started, 2),
            },
            "decision": decision,
        }
    except Exception as exc:
        logger.exception("retrain %s failed", base["event_id"])
        store.add_retraining_event({**base, "status": "failed", "error": f"{exc}"[:2000]})
        raise
    store.add_retraining_event(final)
    logger.info(
        "retrain %s: %s version %s in %.1f s",
        base["event_id"],
        final["status"],
        final["candidate_version"],
        time.perf_counter() - started,
    )
    return final


def champion_config(registry: Registry, champion: str | None) -> training.TrainConfig:
    """Train the challenger like the champion was trained (its estimator and parameters)."""
    if champion is None:
        return training.TrainConfig()
    params = registry.version(champion).params
    config = training.TrainConfig()
    config.estimator = params.get("estimator", config.estimator)
    with contextlib.suppress(ValueError, SyntaxError):
        config.params = dict(ast.literal_eval(params.get("params", "{}")))
    for key, cast in (("test_size", float), ("random_state", int)):
        if key in params:
            setattr(config, key, cast(params[key]))
    return config


def evaluation_sets(data: LabeledRows, test_size: float) -> dict[str, np.ndarray]:
    """Masks of the rows both models are judged on, held out from every model's training:
    `fixed` (held-out rows of ingested data) and `recent` (held-out human labels)."""
    held = training.heldout_mask(data.record_ids, test_size)
    human = np.fromiter((s.startswith(HUMAN_SOURCE) for s in data.sources), bool, len(data))
    return {FIXED: held & ~human, RECENT: held & human}


def evaluate_on(
    model: ServingModel, data: LabeledRows, sets: Mapping[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """`training.evaluate` metrics of a served model on each evaluation set, plus `n`."""
    out: dict[str, dict[str, float]] = {}
    schema = model.schema
    labels = np.array([schema.label_from_store(v) for v in data.labels])
    classes = np.array(model.classes)
    for name, mask in sets.items():
        # Rows of a class the model never learned can't be scored by it (log-loss needs the
        # class among its outputs); they are left out of its figures and counted.
        known = mask & np.isin(labels, classes)
        if not known.any():
            out[name] = {"n": 0.0}
            continue
        columns = {k: v[known] for k, v in data.columns.items()}
        _, proba = model.predict(schema.encode(columns))
        metrics = training.evaluate(proba, labels[known], classes)
        out[name] = {**metrics, "n": float(known.sum()), "unscored": float((mask & ~known).sum())}
    return out


def wait(store: Store, event_id: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Block until a run leaves queued/running (for the CLI and tests)."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = store.retraining_runs(limit=1, event_id=event_id)
        if runs and runs[0]["status"] not in {"queued", "running"}:
            return runs[0]
        if time.monotonic() > deadline:
            raise TimeoutError(f"retrain {event_id} still {runs[0]['status'] if runs else '?'}")
        time.sleep(0.5)
