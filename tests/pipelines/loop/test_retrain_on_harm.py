"""The digits loop decides on harm: a champion hurt by the shift is retrained, the adapted one is
left alone while drift persists against its training data, and a further shift that hurts it
retrains again. Real store, registry, calibrated models, prediction log and checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from pipelines import demo
from pipelines.demo.datasets import DIGIT_INK
from pipelines.loop import retraining_conditions
from pipelines.loop.ingestion import ingest
from pipelines.loop.monitoring import Monitor
from pipelines.loop.retraining_policy import Decision, RetrainPolicy, decide
from pipelines.models import training
from pipelines.models.registry import CHAMPION, Registry
from pipelines.serving.band import Band
from pipelines.serving.model import load_version
from pipelines.serving.predict import predict
from pipelines.settings import Settings
from pipelines.store import Store
from pipelines.store.spool import PredictionLog
from tests.conftest import make_settings

pytestmark = pytest.mark.slow  # two trainings of the digits forest

SPLIT = demo.demo_split(name="digits")
PIXELS = [c for c in SPLIT.shifted.columns if c != SPLIT.label]


def counter_slanted(frame: pd.DataFrame) -> pd.DataFrame:
    """The shifted digits turned 50 degrees the other way: a shift the adapted model never saw."""
    images = frame[PIXELS].to_numpy().reshape(-1, 8, 8)
    turned = [
        np.clip(ndimage.rotate(im, -50, reshape=False, order=1), 0, DIGIT_INK) for im in images
    ]
    out = frame.copy()
    out[PIXELS] = np.array(turned).reshape(len(frame), 64)
    return out


def serve_and_decide(
    settings: Settings, store: Store, registry: Registry, frame: pd.DataFrame, *, label: int = 0
) -> tuple[dict, Decision]:
    """Serve `frame` through the champion and the prediction log, give the first `label` rows
    their true class as feedback, check the window, and decide."""
    model = load_version(registry, registry.alias_version(CHAMPION) or "")
    log = PredictionLog(store, settings.spool_dir)
    log.start()
    out = predict(model, log, Band(), records=demo.records(frame))
    log.close()
    truth = frame[SPLIT.label].tolist()
    for pid, cls in list(zip(out["prediction_ids"], truth, strict=True))[:label]:
        store.add_feedback(
            pid, label=str(cls), correct=None, source="test", model_version=model.version
        )
    result = Monitor(settings, store, registry).check(window_size=len(frame))
    assert result.report is not None and result.estimate is not None
    figures = retraining_conditions.conditions(settings, store, registry)
    return result.estimate.metrics["accuracy"], decide(
        figures, RetrainPolicy.from_settings(settings)
    )


def test_the_loop_retrains_on_harm_and_not_on_drift_it_adapted_to(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", retrain_optuna_trials=0)
    store = Store.open(settings)
    demo.seed_store(store, name="digits")
    registry = Registry.from_settings(settings)
    training.train(store, registry)

    # v1 meets the slanted digits: the estimate sees the drop before any label arrives.
    hurt, decision = serve_and_decide(settings, store, registry, SPLIT.shifted.iloc[:300])
    assert hurt["drop_low"] > 0 and hurt["drop"] >= 0.05, hurt
    assert not decision.should_retrain  # nothing to learn from yet
    assert any("estimated accuracy drop" in n and "0 new labels" in n for n in decision.not_met)

    # Labels of the shift arrive; v2 learns them and becomes the champion.
    labeled = SPLIT.shifted.iloc[300:]
    ingest(
        store, records=demo.records(labeled), labels=labeled[SPLIT.label].tolist(), batch_id="shift"
    )
    training.train(store, registry)
    assert registry.alias_version(CHAMPION) == "2"

    # The first population again: it drifted from v2's training data (which holds the shift),
    # and people label some of it, but v2 is not hurt: no retrain.
    held, decision = serve_and_decide(settings, store, registry, SPLIT.live.iloc[:150], label=60)
    assert held["drop_low"] <= 0 < held["drop_high"], held
    assert not decision.should_retrain, decision
    assert [n for n in decision.not_met if n.startswith("drift without estimated impact")]

    # The same labels, under the drift rule, would have retrained v2 for nothing.
    figures = retraining_conditions.conditions(settings, store, registry)
    assert decide(figures, RetrainPolicy(retrain_on="drift")).should_retrain

    # A further shift hurts v2: retrain.
    hurt, decision = serve_and_decide(
        settings, store, registry, counter_slanted(SPLIT.shifted.iloc[:300])
    )
    assert hurt["drop_low"] > 0 and hurt["drop"] >= 0.05, hurt
    assert decision.should_retrain, decision
    assert "estimated accuracy drop" in decision.reasons[0]
