"""A retraining run: train a challenger, evaluate it beside the champion, gate, promote.

A run (`run`, executed inside notebooks/retrain.ipynb) trains a challenger on every labeled row
of one store snapshot (the historical training data plus the human labels: never the new
labels alone), registers it with the alias `challenger`, evaluates champion and challenger
through their serving artifacts on the same held-out rows (the fixed held-out rows of the
original data, and held-out human labels on recent predictions). Only if
`promotion_gate.gate_sets` passes, it is promoted, or (`DRIFTLAB_ROLLOUT` shadow or canary)
rolled out beside the champion for the live test to decide (`pipelines.loop.rollouts`).
Every state of a run is a `retraining_events` row (`recorded`, which the vision retrain
shares). The pure rules are in `pipelines.loop.retraining_policy`.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from pipelines.loop import rollouts
from pipelines.loop.promotion_gate import FIXED, RECENT, gate_sets
from pipelines.loop.retraining_control import RetrainBusy, lock
from pipelines.loop.retraining_policy import RetrainPolicy
from pipelines.models import promotion, training
from pipelines.models.registry import CHALLENGER, CHAMPION, Registry
from pipelines.schema import SchemaError
from pipelines.serving.model import ServingModel, load_version
from pipelines.settings import Settings
from pipelines.store import LabeledRows, Store, new_id

logger = logging.getLogger(__name__)

HUMAN_SOURCE = "feedback:"
"""`LabeledRows.sources` prefix of labels given by people (feedback and the queue)."""


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
        with lock(settings) if hold_lock else contextlib.nullcontext():
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
    rollout: tuple[rollouts.Mode, float] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Gate the challenger `version` on `scores` (`{"challenger": sets, "champion": sets}`;
    no champion: nothing to gate) and promote it if it passes; returns (status, decision).

    Args:
        rollout: (mode, share) to roll a challenger that passed out beside the champion
            instead of promoting it (status `in_rollout`; the live test decides); None
            promotes directly. A first model, with no champion, is always promoted.
    """
    if "champion" not in scores:
        decision: dict[str, Any] = {"promote": True, "reasons": ["no champion to gate"]}
    else:
        decision = gate_sets(scores["champion"], scores["challenger"], policy).to_dict()
    if not (decision["promote"] and promote):
        return "rejected", decision
    why = f"retrain {run['event_id']} ({run['trigger']}): gate passed"
    who = run["who"] or "retrain"
    if rollout is not None and "champion" in scores:
        mode, share = rollout
        started = rollouts.start(
            store,
            registry,
            mode=mode,
            version=version,
            share=share,
            who=who,
            why=why,
            retrain_event=run["event_id"],
            replace=True,
        )
        return "in_rollout", {**decision, "rollout": started}
    promotion.promote(store, registry, version, who=who, why=why)
    registry.delete_alias(CHALLENGER)
    return "promoted", decision


def rollout_plan(settings: Settings) -> tuple[rollouts.Mode, float] | None:
    """What a tabular retrain that passes the gate does (`DRIFTLAB_ROLLOUT`): None to
    promote at once, else the rollout's mode and share."""
    if settings.rollout == "shadow":
        return "shadow", settings.rollout_shadow_share
    if settings.rollout == "canary":
        return "canary", settings.rollout_canary_share
    return None


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
    fitted = training.fit(data, schema, config)
    metrics, n_train, n_test = fitted.metrics, fitted.n_train, fitted.n_test
    version = registry.log_model(
        estimator=fitted.estimator,
        schema=fitted.schema.to_dict(),
        metrics=metrics,
        params={"estimator": config.estimator, **fitted.estimator.get_params(), **asdict(config)},
        snapshot_id=snapshot,
        onnx_model=fitted.onnx_model,
        tags={
            "n_train": str(n_train),
            "n_test": str(n_test),
            "calibration": fitted.calibration.method,
            "retrain_event": run["event_id"],
            "trigger": run["trigger"],
        },
        extra_files=fitted.extra_files(),
    )
    registry.set_alias(CHALLENGER, version)
    sets = evaluation_sets(data, config.test_size)
    scores = {"challenger": evaluate_on(load_version(registry, version), data, sets)}
    if champion is not None:
        scores["champion"] = evaluate_on(load_version(registry, champion), data, sets)
    policy = RetrainPolicy.from_settings(settings)
    status, decision = gate_and_promote(
        store,
        registry,
        run,
        version,
        scores,
        policy,
        promote=promote,
        rollout=rollout_plan(settings),
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
