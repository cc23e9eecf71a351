"""The loop's figures for Prometheus, read from the store at each scrape.

Drift, estimated and live performance, the labeling queue, retrains and the champion's age
are written to the store by other processes (the worker, a retrain, a person in the
dashboard). Read per scrape, they are the same whichever API process answers, they cannot go
stale in one process while another updates them, and a label value (a feature) disappears
when the latest check no longer has it. The thresholds the alert rules compare them to are
exported beside them from the settings, so a rule never repeats a number a setting holds
(`ops/prometheus/rules/`).

When the store cannot be read, a scrape still answers: `driftlab_store_up` is 0 and the
store's figures are absent, which is what the `DriftlabStoreUnavailable` alert watches.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.loop import estimated_performance, retraining_control, rollouts
from pipelines.loop.monitoring import latest_summary
from pipelines.store.core import utcnow

if TYPE_CHECKING:
    from api.state import AppState

logger = logging.getLogger(__name__)

PERFORMANCE_KINDS = (
    ("estimated", "estimated", "Performance estimated from calibrated probabilities"),
    ("estimated_low", "low", "Lower end of the estimate's band"),
    ("estimated_high", "high", "Upper end of the estimate's band"),
    ("realized", "realized", "Performance on the labeled predictions of the latest check"),
    ("reference", "reference", "The champion's held-out performance"),
)
"""(series kind, key in an estimate's figures, help) for `driftlab_<kind>_performance`."""

RETRAIN_OUTCOMES = {
    "promoted": "succeeded",
    "in_rollout": "succeeded",
    "rejected": "succeeded",
    "failed": "failed",
}
"""A run's final status -> the outcome its timestamp is exported under. A rejected challenger
is a retrain that worked: the gate kept the champion."""


def gauge(name: str, text: str, value: float | None) -> Iterator[Metric]:
    """A single-value gauge, or nothing when the value is unknown."""
    if value is not None:
        yield GaugeMetricFamily(name, text, value=float(value))


def labeled(name: str, text: str, label: str, values: Iterable[tuple[str, float | None]]) -> Metric:
    """A gauge with one label, one sample per known value."""
    family = GaugeMetricFamily(name, text, labels=[label])
    for key, value in values:
        if value is not None:
            family.add_metric([key], float(value))
    return family


class StoreFigures(Collector):
    """A collector (prometheus_client calls `collect` at each scrape) over one app's state."""

    def __init__(self, state: AppState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # registering must not read the store: the families are known at scrape

    def collect(self) -> Iterator[Metric]:
        try:
            figures = list(self._figures())
        except Exception:
            logger.exception("reading the store for /metrics failed")
            yield from gauge("driftlab_store_up", "1 if the store answered this scrape", 0)
            return
        yield from gauge("driftlab_store_up", "1 if the store answered this scrape", 1)
        yield from figures

    def _figures(self) -> Iterator[Metric]:
        yield from self._champion()
        yield from self._drift()
        yield from self._performance()
        yield from self._labels()
        yield from self._retrains()
        yield from self._rollout()
        yield from self._vision()

    def _rollout(self) -> Iterator[Metric]:
        """The running rollout (none: `driftlab_rollout_active` 0 and nothing else) and its
        live test: labels, each model's accuracy on them, the p-values, the agreement."""
        status = rollouts.status(self.state.settings, self.state.store, self.state.registry)
        running = status["state"] == "running"
        family = GaugeMetricFamily(
            "driftlab_rollout_active",
            "1 while a rollout runs beside the champion, by mode (shadow, canary)",
            labels=["mode"],
        )
        for mode in rollouts.MODES:
            family.add_metric([mode], float(running and status["mode"] == mode))
        yield family
        if not running:
            return
        verdict = status["verdict"]
        test = verdict["comparison"]
        counts = test["counts"]
        yield from gauge(
            "driftlab_rollout_share", "Share of requests the challenger answers", status["share"]
        )
        yield from gauge(
            "driftlab_rollout_challenger_version",
            "Version of the rollout's challenger",
            int(status["challenger_version"]),
        )
        yield from gauge(
            "driftlab_rollout_labels",
            "Labels the live test has (pairs for a shadow, challenger answers for a canary)",
            counts.get("n", counts.get("n_challenger")),
        )
        yield labeled(
            "driftlab_rollout_accuracy",
            "Accuracy on the live test's labels, by arm",
            "arm",
            [("champion", test["champion_accuracy"]), ("challenger", test["challenger_accuracy"])],
        )
        yield from gauge(
            "driftlab_rollout_p_value", "The live test's p-value of no difference", test["p_value"]
        )
        yield from gauge(
            "driftlab_rollout_noninferiority_p_value",
            "The live test's p-value of a challenger worse by the margin",
            test["p_noninferior"],
        )
        yield from gauge(
            "driftlab_rollout_agreement",
            "Share of shadowed requests where the shadow answered what the champion served",
            status.get("agreement", {}).get("agreement"),
        )

    def _champion(self) -> Iterator[Metric]:
        s, serving = self.state.settings, self.state.models.model
        if serving is None:
            return
        if serving.version.isdigit():
            yield from gauge(
                "driftlab_model_version", "Version of the champion served", int(serving.version)
            )
        since = self.state.store.serving_since(s.model_name, serving.version)
        yield from gauge(
            "driftlab_champion_promoted_timestamp_seconds",
            "When the served champion was promoted (or rolled back to)",
            since.timestamp() if since else None,
        )

    def _drift(self) -> Iterator[Metric]:
        """The latest drift check of each model (`model` label: tabular, vision), per column
        with its `role`: `feature` (an input, what the share and the verdict count),
        `prediction` (the model's output) or `label`."""
        store, s = self.state.store, self.state.settings
        yield from gauge(
            "driftlab_drift_check_interval_seconds",
            "Seconds between the worker's drift checks (DRIFTLAB_CHECK_INTERVAL)",
            s.check_interval,
        )
        models = ["tabular"] + (["vision"] if self.state.vision is not None else [])
        checks = {m: latest_summary(store, vision=m == "vision") for m in models}
        checks = {m: c for m, c in checks.items() if c["run_id"] is not None}

        def per_column(name: str, text: str, value: Callable[[dict], float]) -> Metric:
            family = GaugeMetricFamily(name, text, labels=["model", "feature", "role"])
            for model, check in checks.items():
                for r in check["features"]:
                    family.add_metric([model, r["feature"], r["role"]], value(r))
            return family

        yield per_column(
            "driftlab_drift_effect_size",
            "Effect size (normalized Wasserstein / Jensen-Shannon) per column, latest check",
            lambda r: r["effect_size"] or 0.0,
        )
        yield per_column(
            "driftlab_drift_detected",
            "1 if the column drifted in the latest check",
            lambda r: 1.0 if r["drifted"] else 0.0,
        )
        yield labeled(
            "driftlab_drift_share",
            "Share of drifted inputs (role feature), latest check",
            "model",
            [(m, c["drift_share"]) for m, c in checks.items()],
        )
        yield labeled(
            "driftlab_dataset_drift",
            "1 if the latest check found dataset drift in the inputs",
            "model",
            [(m, float(c["dataset_drift"])) for m, c in checks.items()],
        )
        yield labeled(
            "driftlab_output_drift",
            "Drifted model outputs (role prediction) in the latest check",
            "model",
            [(m, len(c["drifted_outputs"])) for m, c in checks.items()],
        )
        yield labeled(
            "driftlab_dataset_drift_streak",
            "Consecutive drift checks, up to the latest, that found dataset drift",
            "model",
            [(m, store.drift_check_streak(image=m == "vision")) for m in checks],
        )
        yield labeled(
            "driftlab_drift_check_timestamp_seconds",
            "When the latest drift check ran",
            "model",
            [(m, c["ts"].timestamp()) for m, c in checks.items()],
        )

    def _performance(self) -> Iterator[Metric]:
        s = self.state.settings
        serving = self.state.models.model
        estimate = estimated_performance.latest(self.state.store) or {}
        metrics: dict[str, Any] = estimate.get("metrics", {})
        for kind, key, text in PERFORMANCE_KINDS:
            values = [(name, f[key]) for name, f in metrics.items() if f.get(key) is not None]
            if values:
                name = f"driftlab_{kind}_performance"
                yield labeled(name, f"{text}, latest check", "metric", values)
        yield from gauge(
            "driftlab_estimated_drop_threshold",
            "Accuracy drop from the reference that counts as harm "
            "(DRIFTLAB_RETRAIN_ESTIMATED_DROP)",
            s.retrain_estimated_drop,
        )
        live = self.state.store.feedback_accuracy(serving.version if serving else None)
        yield from gauge(
            "driftlab_live_accuracy",
            "Accuracy of the champion's predictions, from feedback",
            live["accuracy"],
        )
        yield from gauge(
            "driftlab_live_accuracy_labeled",
            "Predictions of the champion that feedback labeled (what the live accuracy rests on)",
            live["n"],
        )
        yield from gauge(
            "driftlab_live_accuracy_floor",
            "Live accuracy below which a retrain is due (DRIFTLAB_RETRAIN_ACCURACY_FLOOR)",
            s.retrain_accuracy_floor,
        )
        yield from gauge(
            "driftlab_live_accuracy_min_labeled",
            "Labeled predictions needed before the live accuracy counts "
            "(DRIFTLAB_RETRAIN_MIN_FEEDBACK)",
            s.retrain_min_feedback,
        )

    def _labels(self) -> Iterator[Metric]:
        pending = self.state.store.queue_progress(utcnow())["pending"]
        yield from gauge(
            "driftlab_labeling_queue_pending", "Queue items waiting for a person's label", pending
        )

    def _retrains(self) -> Iterator[Metric]:
        s = self.state.settings
        yield from gauge(
            "driftlab_retrain_running",
            "1 while a retrain holds the retrain lock",
            1.0 if retraining_control.is_running(s) else 0.0,
        )
        last: dict[str, float] = {}
        runs = self.state.store.retraining_runs(
            limit=100, model_name=s.model_name, unnamed_as=s.model_name
        )
        for run in runs:  # newest first: the first run seen of each outcome is its latest
            outcome = RETRAIN_OUTCOMES.get(run["status"])
            if outcome is not None and outcome not in last:
                last[outcome] = run["updated_at"].timestamp()
        if last:
            yield labeled(
                "driftlab_retrain_last_timestamp_seconds",
                "When the latest retrain that ended so ended (succeeded: promoted or rejected "
                "by the gate)",
                "status",
                sorted(last.items()),
            )

    def _vision(self) -> Iterator[Metric]:
        if self.state.vision is None:
            return
        hour_ago = utcnow() - dt.timedelta(hours=1)
        yield from gauge(
            "driftlab_defect_rate",
            "Share of the last hour's images (API and edge) with at least one detection",
            self.state.store.defect_rate(self.state.settings.vision_model_name, hour_ago),
        )
