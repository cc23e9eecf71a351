"""The human loop, measured: how many labels the queue saves, and how fast a retrain serves.

    python -m benchmarks --only loop [--quick]

(1) Labels needed after a shift, queue-ranked vs random (target: >= 30% fewer). Real
data shipped with scikit-learn: the 1,797 handwritten digits (8x8). A forest is trained on 600 of
them; the rest arrive shifted the way a new population of writers would write (slanted by 25
degrees, thicker pen strokes: `demo.shift_digits`), split into a labeled-on-demand pool and a test
set. Both strategies label the pool in the same budget steps and retrain on the original rows plus
the labels after each step (as a retrain does: history plus new labels); the queue takes the most
informative predictions (`pipelines.loop.labeling_policy`, the ranking the labeling queue uses; the
uncertainty band is left wide open here so that both strategies spend the same budget), random takes
a random sample. "Labels needed" is the first step at which the mean test accuracy over the random
seeds reaches 97% of what labeling the whole pool gives.

(2) Trigger to new champion serving, 100k training rows (target <= 60 s). A real `driftlab api`
serves a champion trained on 80k clean digits (drawn with replacement, with a little pixel
noise); 20k shifted digits are served and their true labels come back as feedback; POST
/api/retraining/trigger starts `driftlab retrain` (papermill notebook: challenger on the history
plus the labels, ONNX export and check, MLflow registration, gate on the shared held-out rows,
promotion); the clock stops when /predict answers with the new version. The baseline is the
bare scikit-learn fit of the same forest on the same rows in this process: the ratio is what
the whole loop costs on top of the fit itself.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score

from benchmarks.bench_serving import base_env, free_port, say, server, verdict
from pipelines import demo
from pipelines.loop.labeling_policy import QueuePolicy
from pipelines.models import training
from pipelines.serving.band import Band

TARGET_SAVING, TARGET_RETRAIN_S = 0.30, 60.0
STEPS = (0, 25, 50, 75, 100, 150, 200, 250, 300, 400, 500, 600, 797)
TRAIN_DIGITS, TEST_DIGITS = 600, 400


# -- (1) labels needed -------------------------------------------------------------------------


def learning_curve(seed: int, strategy: str) -> list[float]:
    """Test accuracy after each budget step, labeling the pool by `strategy`."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    first, rest = order[:TRAIN_DIGITS], order[TRAIN_DIGITS:]
    x0, y0 = digits.images[first].reshape(len(first), -1), digits.target[first]
    shifted = demo.shift_digits(digits.images[rest])
    x_test, y_test = shifted[:TEST_DIGITS], digits.target[rest][:TEST_DIGITS]
    x_pool, y_pool = shifted[TEST_DIGITS:], digits.target[rest][TEST_DIGITS:]
    policy = QueuePolicy(method="margin", band=Band(0.0, 1.0), budget_per_hour=10**9)

    def fit(mask: np.ndarray) -> RandomForestClassifier:
        x = np.vstack([x0, x_pool[mask]])
        y = np.concatenate([y0, y_pool[mask]])
        return RandomForestClassifier(100, random_state=seed, n_jobs=-1).fit(x, y)

    labeled = np.zeros(len(y_pool), dtype=bool)
    model = fit(labeled)
    curve = []
    for step in STEPS:
        need = min(step, len(y_pool)) - int(labeled.sum())
        unlabeled = np.flatnonzero(~labeled)
        if need > 0:
            if strategy == "random":
                picked = rng.choice(unlabeled, need, replace=False)
            else:
                chosen, _ = policy.select(model.predict_proba(x_pool[unlabeled]), need)
                picked = unlabeled[chosen]
            labeled[picked] = True
            model = fit(labeled)
        curve.append(float(accuracy_score(y_test, model.predict(x_test))))
    return curve


def labels_needed(curve: np.ndarray, target: float) -> int:
    reached = np.flatnonzero(curve >= target)
    return STEPS[int(reached[0])] if len(reached) else STEPS[-1]


def bench_labels(seeds: int) -> dict[str, float]:
    curves = {
        s: np.array([learning_curve(i, s) for i in range(seeds)]) for s in ("queue", "random")
    }
    mean = {s: c.mean(axis=0) for s, c in curves.items()}
    full = float(np.mean([mean["queue"][-1], mean["random"][-1]]))
    target = 0.97 * full
    need = {s: labels_needed(m, target) for s, m in mean.items()}
    say(
        f"\n(1) labels to reach {target:.3f} test accuracy (97% of {full:.3f}, the whole pool "
        f"labeled) after the shift, mean of {seeds} seeds, digits (scikit-learn)"
    )
    say(f"    {'labels':>8} " + " ".join(f"{s:>6}" for s in STEPS))
    for s, m in mean.items():
        say(f"    {s:>8} " + " ".join(f"{v:6.3f}" for v in m))
    saving = 1 - need["queue"] / need["random"]
    say(
        f"    queue-ranked needs {need['queue']} labels, random {need['random']}: "
        f"{saving:.0%} fewer (target >= {TARGET_SAVING:.0%}) {verdict(saving >= TARGET_SAVING)}"
    )
    return {"queue": need["queue"], "random": need["random"], "saving": saving}


# -- (2) trigger to serving --------------------------------------------------------------------


def digit_rows(n: int, *, shifted: bool, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """`n` digits drawn with replacement (clean or shifted), each nudged by a little pixel
    noise so that rows differ; one column per pixel."""
    frame = demo.digits_frame(shifted=shifted)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(frame), n)
    pixels = frame[demo.DIGIT_PIXELS].to_numpy()[pick] + rng.normal(0, 0.5, (n, 64))
    return (
        pd.DataFrame(np.clip(pixels, 0, 16), columns=demo.DIGIT_PIXELS),
        frame["digit"].to_numpy()[pick],
    )


def bench_retrain(rows: int) -> dict[str, float]:
    from pipelines.loop.ingestion import ingest
    from pipelines.models.registry import Registry
    from pipelines.settings import Settings
    from pipelines.store import Store

    first, first_y = digit_rows(rows * 4 // 5, shifted=False, seed=1)
    new, new_y = digit_rows(rows // 5, shifted=True, seed=2)
    with tempfile.TemporaryDirectory(prefix="driftlab-bench-loop-") as tmp:
        data = Path(tmp) / "data"
        settings = Settings(data_dir=data, _env_file=None)  # type: ignore[call-arg]
        store = Store.open(settings)
        for start in range(0, len(first), 20_000):
            part = first.iloc[start : start + 20_000]
            ingest(
                store,
                records=part.to_dict("records"),
                labels=first_y[start : start + len(part)].tolist(),
            )
        registry = Registry.from_settings(settings)
        training.train(store, registry, training.TrainConfig())
        store.close()

        port = free_port()
        env = {**base_env(data, port), "DRIFTLAB_RELOAD_INTERVAL": "0.5"}
        cmd = [sys.executable, "-m", "pipelines.cli", "api"]
        with server("driftlab api", cmd, env, port, Path(tmp) / "api.log") as api:
            http = httpx.Client(base_url=api.url, timeout=120)
            # The new population is served, and its true labels come back as feedback.
            ids: list[str] = []
            for start in range(0, len(new), 5000):
                part = new.iloc[start : start + 5000].to_dict("records")
                ids += http.post("/predict", json={"records": part}).json()["prediction_ids"]
            time.sleep(1.0)  # the API's prediction log flushes every 0.5 s
            store = Store.open(settings)
            store.add_labels(ids, [str(v) for v in new_y], source="benchmark")
            store.close()
            probe = {"records": new.head(1).to_dict("records")}
            started = time.perf_counter()
            r = http.post("/api/retraining/trigger", json={"reason": "benchmark"})
            r.raise_for_status()
            event = r.json()["event_id"]
            version = "1"
            while version == "1":
                if time.perf_counter() - started > 600:
                    raise RuntimeError(f"no new champion after 600 s; logs in {data}/logs")
                status = http.get("/api/retraining/status").json()["latest"]
                if status and status["event_id"] == event and status["status"] == "rejected":
                    raise RuntimeError(f"the gate rejected the challenger: {status['decision']}")
                if status and status["status"] == "failed":
                    raise RuntimeError(f"the retrain failed: {status['error']}")
                version = http.post("/predict", json=probe).json()["model_version"]
                time.sleep(0.2)
            elapsed = time.perf_counter() - started
            run = http.get("/api/retraining/status").json()["latest"]

    x = np.vstack([first.to_numpy(np.float32), new.to_numpy(np.float32)])
    y = np.concatenate([first_y, new_y])
    t0 = time.perf_counter()
    training.TrainConfig().build().fit(x, y)
    fit_s = time.perf_counter() - t0
    in_run = run["metrics"]["seconds"]
    recent = run["metrics"]["challenger"]["recent"]["accuracy"]
    before = run["metrics"]["champion"]["recent"]["accuracy"]
    say(
        f"\n(2) trigger -> new champion serving, {rows:,} labeled rows (80% clean digits, 20% "
        f"shifted ones labeled through feedback), random forest 100 trees depth 10\n"
        f"    trigger -> /predict answers with version {version}: {elapsed:6.1f} s "
        f"(target <= {TARGET_RETRAIN_S:.0f} s) {verdict(elapsed <= TARGET_RETRAIN_S)}\n"
        f"    of which the run itself (train, export, register, gate, promote): {in_run:6.1f} s\n"
        f"    baseline: the bare forest fit on the same rows in this process: {fit_s:6.1f} s\n"
        f"    trigger -> serving / bare fit: {elapsed / fit_s:5.1f}x\n"
        f"    (accuracy on held-out shifted labels: champion {before:.3f}, new {recent:.3f})"
    )
    return {"seconds": elapsed, "run_s": in_run, "fit_s": fit_s}


def main(quick: bool = False) -> None:
    bench_labels(seeds=2 if quick else 5)
    bench_retrain(rows=20_000 if quick else 100_000)


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
