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

The vision model goes through the same decision: `vision_conditions` gathers its figures (its
image drift check, the image labels since its training snapshot, errors per class from image
labels) into the same `retraining.Conditions`, and `trigger(..., vision=True)` starts
`pipelines.vision.retrain`. Both models share the lock (one retrain at a time on a small
machine), but each has its own cooldown and "last retrain": the runs are told apart by the
`model_name` of their `retraining_events` rows.
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
from collections.abc import Callable, Iterator, Mapping, Sequence
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

TABULAR, VISION = "tabular", "vision"
MODELS = (TABULAR, VISION)


def model_name(settings: Settings, vision: bool = False) -> str:
    """The registered model a retrain of this kind trains."""
    return settings.vision_model_name if vision else settings.model_name


def last_retrain_at(settings: Settings, store: Store, *, vision: bool = False) -> float | None:
    """When the model's last run started (epoch seconds), None if never: its cooldown.

    Per model: a vision run must not hold back the tabular loop, nor the reverse.
    """
    runs = store.retraining_runs(
        limit=1, model_name=model_name(settings, vision), unnamed_as=settings.model_name
    )
    return runs[0]["started_at"].timestamp() if runs else None


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
        last_retrain_at=last_retrain_at(settings, store),
        running=is_running(settings),
    )


def vision_conditions(
    settings: Settings, store: Store, registry: Registry, *, now: float | None = None
) -> Conditions:
    """The vision champion's figures for the same `retraining.decide`.

    `registry` is the vision model's (`Registry.vision_from_settings`). Drift is the latest
    image drift check of the current vision champion; new labels are the image labels since
    its training snapshot (`Store.vision_new_labels`); errors per class come from the image
    labels and feedback that found it wrong (`image_errors_per_class`). Live accuracy is not
    gathered for images: a box list is rarely "right" as a whole, and the per-class errors
    already carry what people corrected. `running` is the shared lock: while any retrain
    runs, none can start.
    """
    champion = registry.alias_version(CHAMPION)
    info = registry.version(champion) if champion else None
    drift = [r for r in store.latest_vision_drift() if r["model_version"] == champion]
    columns = [r for r in drift if r["role"] != "target"]
    p_values = [r["p_adjusted"] for r in columns if r["p_adjusted"] is not None]
    name = registry.model_name
    metric = info.metrics.get("top1") if info else None
    return Conditions(
        now=time.time() if now is None else now,
        dataset_drift=bool(drift and drift[0]["dataset_drift"]),
        drift_share=float(drift[0]["drift_share"] or 0.0) if drift else 0.0,
        drifted_features=tuple(r["feature"] for r in columns if r["drifted"]),
        min_p_value=min(p_values) if p_values else None,
        new_labels=store.vision_new_labels(name, info.snapshot_id if info else None),
        errors_per_class=image_errors_per_class(store.vision_label_outcomes(name, champion)),
        champion_accuracy=metric,
        last_retrain_at=last_retrain_at(settings, store, vision=True),
        running=is_running(settings),
    )


def image_errors_per_class(rows: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Errors per class from people's answers on wrong image predictions (pure).

    A classification counts against its true class (or, for a bare "wrong", against the
    predicted one, as the tabular count does). A detection compares the reviewed boxes with
    the predicted ones per class: every object a class is short of (missed, or given another
    class) and every extra box of a class (a false detection) is one error of that class.
    Boxes are matched by count, not position: a moved box is the reviewer's correction of a
    location, not a class the model fails on.
    """
    errors: dict[str, int] = {}
    for row in rows:
        if row["task"] == "classify":
            cls = row["label"] if row["label"] is not None else row["prediction"]
            if cls is not None:
                errors[str(cls)] = errors.get(str(cls), 0) + 1
            continue
        predicted = json.loads(row["prediction"] or "[]")
        # Reviewed boxes carry class indices; predicted ones also their names.
        names = {int(p["class"]): str(p.get("name", p["class"])) for p in predicted}
        if row["label"] is None:  # a bare "wrong": against the best box's class
            if predicted:
                cls = names[int(predicted[0]["class"])]
                errors[cls] = errors.get(cls, 0) + 1
            continue
        reviewed = json.loads(row["label"])
        count: dict[int, int] = {}
        for p in predicted:
            count[int(p["class"])] = count.get(int(p["class"]), 0) - 1
        for b in reviewed:
            count[int(b["class"])] = count.get(int(b["class"]), 0) + 1
        for index, diff in count.items():
            if diff:
                cls = names.get(index, str(index))
                errors[cls] = errors.get(cls, 0) + abs(diff)
    return dict(sorted(errors.items()))


def check(
    settings: Settings, store: Store, registry: Registry, *, vision: bool = False
) -> dict[str, Any]:
    """The decision with every figure and threshold behind it (GET /api/retraining/conditions).

    Args:
        registry: The tabular model's registry; with `vision`, the vision model's registry
            is opened from the settings instead.
        vision: Decide for the vision model.
    """
    policy = RetrainPolicy.from_settings(settings)
    if vision:
        registry = Registry.vision_from_settings(settings)
        figures = vision_conditions(settings, store, registry)
    else:
        figures = conditions(settings, store, registry)
    decision = decide(figures, policy)
    return {
        **decision.to_dict(),
        "model": VISION if vision else TABULAR,
        "model_name": registry.model_name,
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
            # Client text only ever as `--option=value`: a value like "--help" stays a value.
            f"--who={who}",
            f"--reasons={json.dumps(reasons or [])}",
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
    return {"event_id": event_id, "status": "queued", "log": settings.relative(log_path)}


def status(settings: Settings, store: Store, *, vision: bool = False) -> dict[str, Any]:
    """The model's run in progress (if any) and its latest one.

    `running` is whether a run of this model is in progress; `busy` whether any retrain
    holds the shared lock (then none can start, whichever model). A run still marked queued
    or running while no process holds the lock has died (killed, or its kernel failed to
    start); it is reported as `lost`.
    """
    busy = is_running(settings)
    name = model_name(settings, vision)
    runs = store.retraining_runs(limit=1, model_name=name, unnamed_as=settings.model_name)
    latest = runs[0] if runs else None
    in_progress = latest is not None and latest["status"] in {"queued", "running"}
    if latest is not None and in_progress and not busy:
        age = (utcnow() - latest["updated_at"]).total_seconds()
        if age > 30:  # a queued run takes a few seconds to start its process and take the lock
            latest = {**latest, "status": "lost"}
    running = busy and in_progress
    return {
        "model": VISION if vision else TABULAR,
        "model_name": name,
        "running": running,
        "busy": busy,
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
    base = {
        "event_id": event_id,
        "trigger": trigger,
        "who": who,
        "notebook": settings.relative(notebook),
        "model_name": registry.model_name,
        "reasons": reasons or [],
    }
    return recorded(
        settings,
        store,
        registry,
        base=base,
        hold_lock=hold_lock,
        body=lambda run: _train_and_gate(
            settings,
            store,
            registry,
            run=run,
            config=config,
            trials=optuna_trials,
            timeout=optuna_timeout,
            promote=promote,
        ),
    )


def recorded(
    settings: Settings,
    store: Store,
    registry: Registry,
    *,
    base: dict[str, Any],
    hold_lock: bool,
    body: Callable[[dict[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """One retraining run's bookkeeping, the same for every model: the lock, then its states
    as `retraining_events` rows (`running`, then `body`'s outcome or `failed`; `skipped` when
    another run holds the lock).

    Args:
        base: The run's fields (event_id, trigger, who, reasons, model_name…); the store
            snapshot and the champion's version are added before `body` runs.
        hold_lock: Take the lock; False when the caller already holds it.
        body: Trains, evaluates and gates, given `base`; returns `status`,
            `candidate_version`, `metrics` and `decision`.

    Raises:
        RetrainBusy: Another run holds the lock.
    """
    try:
        with _lock(settings) if hold_lock else contextlib.nullcontext():
            started = time.perf_counter()
            run = {
                **base,
                "snapshot_id": store.snapshot_id(),
                "champion_version": registry.alias_version(CHAMPION),
            }
            store.add_retraining_event({**run, "status": "running"})
            try:
                outcome = body(run)
            except Exception as exc:
                logger.exception("retrain %s of %s failed", run["event_id"], run["model_name"])
                store.add_retraining_event({**run, "status": "failed", "error": f"{exc}"[:2000]})
                raise
            seconds = time.perf_counter() - started
            final = {**run, **outcome}
            final["metrics"] = {**outcome.get("metrics", {}), "seconds": round(seconds, 2)}
            store.add_retraining_event(final)
            logger.info(
                "retrain %s of %s: %s version %s in %.1f s",
                run["event_id"],
                run["model_name"],
                final["status"],
                final.get("candidate_version"),
                seconds,
            )
            return final
    except RetrainBusy as exc:
        store.add_retraining_event({**base, "status": "skipped", "error": str(exc)})
        raise


def gate_and_promote(
    store: Store,
    registry: Registry,
    run: dict[str, Any],
    version: str,
    scores: dict[str, Any],
    policy: RetrainPolicy,
    *,
    promote: bool,
) -> tuple[str, dict[str, Any]]:
    """Gate the challenger `version` on `scores` (`{"challenger": sets, "champion": sets}`;
    no champion: nothing to gate) and promote it if it passes; returns (status, decision)."""
    if "champion" not in scores:
        decision: dict[str, Any] = {"promote": True, "reasons": ["no champion to gate"]}
    else:
        decision = gate_sets(scores["champion"], scores["challenger"], policy).to_dict()
    promoted = bool(decision["promote"]) and promote
    if promoted:
        why = f"retrain {run['event_id']} ({run['trigger']}): gate passed"
        models.promote(store, registry, version, who=run["who"] or "retrain", why=why)
        registry.delete_alias(CHALLENGER)
    return ("promoted" if promoted else "rejected"), decision


def _train_and_gate(
    settings: Settings,
    store: Store,
    registry: Registry,
    *,
    run: dict[str, Any],
    config: training.TrainConfig | None,
    trials: int,
    timeout: float,
    promote: bool,
) -> dict[str, Any]:
    champion, snapshot = run["champion_version"], run["snapshot_id"]
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
            "retrain_event": run["event_id"],
            "trigger": run["trigger"],
        },
    )
    registry.set_alias(CHALLENGER, version)
    sets = evaluation_sets(data, config.test_size)
    scores = {"challenger": evaluate_on(load_version(registry, version), data, sets)}
    if champion is not None:
        scores["champion"] = evaluate_on(load_version(registry, champion), data, sets)
    policy = RetrainPolicy.from_settings(settings)
    status, decision = gate_and_promote(
        store, registry, run, version, scores, policy, promote=promote
    )
    return {
        "status": status,
        "candidate_version": version,
        "metrics": {
            **scores,
            "training": metrics,
            "n_train": n_train,
            "n_test": n_test,
            "search": search,
        },
        "decision": decision,
    }


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
