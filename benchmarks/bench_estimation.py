"""Performance estimation without labels: driftlab's CBPE against the constant baseline and
NannyML 0.13.1's CBPE, on the same calibrated probabilities and labels.

1. Quality, on three streams of 500-prediction windows. Each stream has the product's default
   RandomForest (100 trees, depth 10) fitted on one split of its training population and
   calibrated on another (`pipelines.models.calibration.fit_calibration`: the method with the
   lowest out-of-fold log-loss), a labeled reference of held-out rows of that population, a pool
   of clean rows and a pool of shifted ones. A window is 500 rows drawn with replacement from
   the two pools, the shifted share following ``SCHEDULE`` (three clean windows, a ramp, three
   fully shifted ones); the schedule runs ``PASSES`` times with new draws.

   - digits: `demo_split(name="digits")`: fitted on 600 of its 900 training digits,
     calibrated on the other 300; the 200 clean `live` digits are the reference and the clean
     pool, the 697 slanted, thicker `shifted` digits the shifted pool (10 classes).
   - survey: `demo_split(name="survey")`: fitted on 60% of the young cohort's training rows,
     calibrated on the rest; the young `live` rows are the reference and the clean pool, the
     older cohort the shifted pool (binary).
   - randhie: statsmodels' RAND Health Insurance Experiment (20,190 person-years; label: any
     outpatient visit, `mdvis > 0`; 9 features), split at the median of `fmde` (the log of the
     plan's maximum deductible): the model is fitted, calibrated and referenced on the low
     half (40/30/30%), the high half is the shifted pool. A covariate shift: the same
     p(y|x), rows the model never saw the like of.

   Per stream: the mean absolute error of the estimated accuracy against the window's
   realized accuracy, the share of windows whose band covers the realized value, and the same
   error for the constant baseline (accuracy stays at the reference's). NannyML's CBPE
   (fitted on the reference, run with chunk_size=500 on the same windows; it recalibrates the
   probabilities on the reference when it finds them off, which driftlab does not) runs in
   its own virtual environment, ``data/bench/nannyml-venv``, created on first use; if it
   cannot be installed the benchmark says why and skips its lines. Its coverage is of value
   ± 1.96 of its sampling error (its own boundaries are ± 3), the same z as driftlab's band.

2. Speed: the estimate of a 1M-row, 10-class window against the drift check of the same
   window (`pipelines.drift.check_drift` on a frame of 10 numeric and 2 categorical features,
   as `bench_drift.py` builds it, plus the predicted class), in the same process; the reference
   profile is built once beforehand and not timed. Best of 3 each.

``--quick``: one pass, no 1M-row line, no NannyML.

Usage::

    .venv/bin/python -m benchmarks --only estimation [--quick]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WINDOW = 500
SCHEDULE = (0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0)
"""The shifted share of each window of one pass."""
PASSES, QUICK_PASSES = 5, 1
SPEED_ROWS, SPEED_CLASSES = 1_000_000, 10
NANNYML = "nannyml==0.13.1"
NANNYML_VENV = REPO / "data" / "bench" / "nannyml-venv"

# Targets.
MAX_MAE_COVARIATE, MIN_COVERAGE_COVARIATE = 0.03, 0.85
MAX_SPEED_SHARE = 0.25


# --- streams ----------------------------------------------------------------------------------


@dataclass
class Stream:
    """A model's calibrated probabilities on a labeled reference and on two pools of rows."""

    name: str
    reference: tuple[np.ndarray, np.ndarray]
    clean: tuple[np.ndarray, np.ndarray]
    shifted: tuple[np.ndarray, np.ndarray]
    calibration: str
    windows: list[tuple[float, np.ndarray, np.ndarray]] = field(default_factory=list)

    @property
    def reference_accuracy(self) -> float:
        proba, y = self.reference
        return float((proba.argmax(axis=1) == y).mean())


def calibrated_forest(
    x_fit: np.ndarray, y_fit: np.ndarray, x_cal: np.ndarray, y_cal: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """The product's default forest (`pipelines.models.training.ESTIMATORS`) and its
    calibration map: x → calibrated probabilities, and the map's method with the reason it was
    chosen."""
    from sklearn.base import clone

    from pipelines.models.calibration import fit_calibration
    from pipelines.models.training import ESTIMATORS

    forest = clone(ESTIMATORS["random_forest"]).set_params(random_state=0, n_jobs=2)
    forest.fit(x_fit, y_fit)
    calibration = fit_calibration(forest.predict_proba(x_cal), y_cal, forest.classes_)

    def proba(x: np.ndarray) -> np.ndarray:
        return calibration.apply(forest.predict_proba(x))

    return proba, f"{calibration.method} ({calibration.why})"


def _cut(n: int, shares: tuple[float, ...], seed: int) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    ends = np.round(np.cumsum(shares) * n).astype(int)
    return np.split(order, ends[:-1])


def digits_stream() -> Stream:
    from pipelines.demo import DIGIT_PIXELS, demo_split

    split = demo_split(name="digits")
    x = split.train[DIGIT_PIXELS].to_numpy(float)
    y = split.train[split.label].to_numpy(int)
    fit, cal = _cut(len(y), (600 / 900, 300 / 900), seed=1)
    proba, how = calibrated_forest(x[fit], y[fit], x[cal], y[cal])
    live = (proba(split.live[DIGIT_PIXELS].to_numpy(float)), split.live[split.label].to_numpy(int))
    shifted = split.shifted
    shifted_pool = (
        proba(shifted[DIGIT_PIXELS].to_numpy(float)),
        shifted[split.label].to_numpy(int),
    )
    return Stream("digits", live, live, shifted_pool, how)


def survey_stream() -> Stream:
    from pipelines.demo import OCCUPATIONS, demo_split

    split = demo_split(name="survey")
    codes = {name: code for code, name in OCCUPATIONS.items()}

    def features(frame):  # occupations back to their codes: a forest splits them as numbers
        out = frame[split.features].copy()
        for col in ("occupation", "occupation_husb"):
            out[col] = out[col].map(codes)
        return out.to_numpy(float)

    x, y = features(split.train), split.train[split.label].to_numpy(int)
    fit, cal = _cut(len(y), (0.6, 0.4), seed=1)
    proba, how = calibrated_forest(x[fit], y[fit], x[cal], y[cal])
    live = (proba(features(split.live)), split.live[split.label].to_numpy(int))
    shifted = (proba(features(split.shifted)), split.shifted[split.label].to_numpy(int))
    return Stream("survey", live, live, shifted, how)


def randhie_stream() -> Stream:
    import statsmodels.api as sm

    data = sm.datasets.randhie.load_pandas().data
    y = (data.pop("mdvis") > 0).to_numpy(int)
    x = data.to_numpy(float)
    feature = data["fmde"].to_numpy()
    low = np.flatnonzero(feature < np.quantile(feature, 0.5))
    high = np.flatnonzero(feature >= np.quantile(feature, 0.5))
    fit, cal, ref = (low[part] for part in _cut(len(low), (0.4, 0.3, 0.3), seed=1))
    proba, how = calibrated_forest(x[fit], y[fit], x[cal], y[cal])
    reference = (proba(x[ref]), y[ref])
    return Stream("randhie", reference, reference, (proba(x[high]), y[high]), how)


def draw_windows(stream: Stream, passes: int, seed: int = 0) -> None:
    """`passes` runs of `SCHEDULE`: each window 500 rows drawn with replacement."""
    rng = np.random.default_rng(seed)
    stream.windows = []
    for _ in range(passes):
        for share in SCHEDULE:
            n_shifted = round(share * WINDOW)
            parts = [
                (pool, rng.integers(0, len(pool[1]), size))
                for pool, size in ((stream.clean, WINDOW - n_shifted), (stream.shifted, n_shifted))
            ]
            proba = np.concatenate([pool[0][idx] for pool, idx in parts])
            labels = np.concatenate([pool[1][idx] for pool, idx in parts])
            stream.windows.append((share, proba, labels))


# --- quality ----------------------------------------------------------------------------------


def score_stream(stream: Stream) -> dict:
    """driftlab's estimate and the constant baseline on every window of the stream."""
    from pipelines.estimation import estimate, realized

    reference = stream.reference_accuracy
    rows = []
    started = time.perf_counter()
    for share, proba, labels in stream.windows:
        est = estimate(proba).accuracy
        rows.append((share, realized(proba, labels)["accuracy"], est))
    seconds = time.perf_counter() - started
    real = np.array([r for _, r, _ in rows])
    value = np.array([e.value for _, _, e in rows])
    # The band's high end below the reference in one of the first two shifted windows of
    # every pass.
    early = []
    for start in range(0, len(rows), len(SCHEDULE)):
        shifted = [e for share, _, e in rows[start : start + len(SCHEDULE)] if share > 0][:2]
        early.append(any(e.high < reference for e in shifted))
    # The same alarm on a clean window is a false one.
    false_alarms = [e.high < reference for share, _, e in rows if share == 0]
    return {
        "rows": rows,
        "reference": reference,
        "mae": float(np.abs(value - real).mean()),
        "coverage": float(np.mean([e.covers(r) for _, r, e in rows])),
        "baseline_mae": float(np.abs(reference - real).mean()),
        "early": early,
        "false_alarms": false_alarms,
        "seconds": seconds,
    }


NANNYML_SCRIPT = r"""
import json, sys, time, warnings
import numpy as np, pandas as pd
warnings.filterwarnings("ignore")
import nannyml as nml

d = np.load(sys.argv[1])
k = d["ref_proba"].shape[1]
classes = list(range(k))
def frame(proba, y):
    out = pd.DataFrame({f"p{c}": proba[:, c] for c in classes})
    out["y_pred"] = proba.argmax(axis=1)
    out["y_true"] = y
    return out
ref, ana = frame(d["ref_proba"], d["ref_y"]), frame(d["ana_proba"], d["ana_y"])
if k == 2:
    kind, proba_cols = "classification_binary", "p1"
else:
    kind, proba_cols = "classification_multiclass", {c: f"p{c}" for c in classes}
started = time.perf_counter()
cbpe = nml.CBPE(y_pred_proba=proba_cols, y_pred="y_pred", y_true="y_true",
                metrics=["accuracy"], chunk_size=int(d["chunk"]), problem_type=kind)
cbpe.fit(ref)
res = cbpe.estimate(ana.drop(columns=["y_true"])).filter(period="analysis").to_df()
seconds = time.perf_counter() - started
print(json.dumps({
    "value": res[("accuracy", "value")].astype(float).tolist(),
    "sampling_error": res[("accuracy", "sampling_error")].astype(float).tolist(),
    "seconds": seconds,
    "version": nml.__version__,
}))
"""


def nannyml_python() -> tuple[Path | None, str]:
    """The NannyML venv's interpreter, creating the venv on first use; else (None, why)."""
    python = NANNYML_VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run(
            [str(python), "-c", "import nannyml"], capture_output=True, text=True, check=False
        )
        if check.returncode == 0:
            return python, "ready"
    base = shutil.which("python3.11") or sys.executable
    print(f"creating {NANNYML_VENV.relative_to(REPO)} with {NANNYML} (first use: minutes)")
    steps = [
        [base, "-m", "venv", str(NANNYML_VENV)],
        [str(python), "-m", "pip", "install", "-q", NANNYML, "statsmodels"],
    ]
    for cmd in steps:
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(cmd[:3])}: {exc}"
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            return None, f"{' '.join(cmd[:4])} failed: {' '.join(tail)}"
    return python, "installed"


def run_nannyml(python: Path, stream: Stream) -> dict:
    """NannyML's CBPE on the stream's windows, in its own interpreter."""
    from pipelines.estimation import realized

    ana_proba = np.concatenate([p for _, p, _ in stream.windows])
    ana_y = np.concatenate([y for _, _, y in stream.windows])
    with tempfile.TemporaryDirectory(prefix="driftlab-nml-") as tmp:
        data, script = Path(tmp) / "windows.npz", Path(tmp) / "cbpe.py"
        np.savez(
            data,
            ref_proba=stream.reference[0],
            ref_y=stream.reference[1],
            ana_proba=ana_proba,
            ana_y=ana_y,
            chunk=WINDOW,
        )
        script.write_text(NANNYML_SCRIPT)
        done = subprocess.run(
            [str(python), str(script), str(data)], capture_output=True, text=True, check=False
        )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr else "failed")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    value, error = np.array(out["value"]), np.array(out["sampling_error"])
    real = np.array([realized(p, y)["accuracy"] for _, p, y in stream.windows])
    if len(value) != len(real):
        raise RuntimeError(f"NannyML returned {len(value)} chunks for {len(real)} windows")
    return {
        "mae": float(np.abs(value - real).mean()),
        "coverage": float(np.mean(np.abs(value - real) <= 1.96 * error)),
        "seconds": out["seconds"],
        "version": out["version"],
    }


# --- speed ------------------------------------------------------------------------------------


def run_speed(repeats: int = 3) -> dict:
    """The estimate and the drift check of the same 1M-row, 10-class window, best of 3."""
    from benchmarks.bench_drift import N_CATEGORICAL, N_NUMERIC, synthetic_frame
    from pipelines.drift import build_reference_profile, check_drift
    from pipelines.estimation import estimate

    def window(seed: int, drift: bool):
        rng = np.random.default_rng(seed)
        logits = rng.normal(size=(SPEED_ROWS, SPEED_CLASSES)) * 2.0
        proba = np.exp(logits)
        proba /= proba.sum(axis=1, keepdims=True)
        frame = synthetic_frame(SPEED_ROWS, seed, drift)
        frame["prediction"] = proba.argmax(axis=1).astype(str).astype(object)
        return proba, frame

    _, reference = window(1, drift=False)
    proba, current = window(2, drift=True)
    profile = build_reference_profile(
        reference,
        numeric=[f"num_{i}" for i in range(N_NUMERIC)],
        categorical=[*(f"cat_{j}" for j in range(N_CATEGORICAL)), "prediction"],
        roles={"prediction": "prediction"},
    )
    est_s, drift_s = [], []
    for _ in range(repeats):  # interleaved, so both see the same minutes of the machine
        started = time.perf_counter()
        estimate(proba)
        est_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        check_drift(profile, current)
        drift_s.append(time.perf_counter() - started)
    return {"estimate_s": min(est_s), "drift_s": min(drift_s)}


# --- main -------------------------------------------------------------------------------------


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def print_trace(stream: Stream, scored: dict) -> None:
    """The first pass, window by window."""
    cells = []
    for share, real, est in scored["rows"][: len(SCHEDULE)]:
        cells.append(f"{share:.2f}: {real:.3f} est {est.value:.3f} [{est.low:.3f}, {est.high:.3f}]")
    print(f"  {stream.name} first pass (shifted share: realized, estimate [band]):")
    for i in range(0, len(cells), 3):
        print("    " + "   ".join(cells[i : i + 3]))


def main(quick: bool = False, argv: list[str] | None = None) -> int:
    """Quality on three streams and (unless ``quick``) the speed line and NannyML."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one pass, no 1M line, no NannyML")
    args = parser.parse_args([] if argv is None else argv)
    quick = quick or args.quick
    passes = QUICK_PASSES if quick else PASSES

    streams = [digits_stream(), survey_stream(), randhie_stream()]
    for stream in streams:
        draw_windows(stream, passes)

    nml_python, nml_status = (None, "skipped (--quick)") if quick else nannyml_python()
    n_windows = passes * len(SCHEDULE)
    print(
        f"== quality: {n_windows} windows of {WINDOW} per stream (shifted share per pass "
        f"{', '.join(f'{s:g}' for s in SCHEDULE)}); accuracy, estimate vs realized =="
    )
    print(f"{'stream':>8} {'engine':>9} {'MAE':>7} {'coverage':>9} {'ratio':>7}  notes")
    results = {}
    for stream in streams:
        scored = score_stream(stream)
        results[stream.name] = scored
        ratio = scored["baseline_mae"] / scored["mae"]
        print(
            f"{stream.name:>8} {'driftlab':>9} {scored['mae']:>7.4f} {scored['coverage']:>9.1%} "
            f"{ratio:>6.1f}x  estimate(), {scored['seconds'] * 1000:.0f} ms for all windows"
        )
        print(
            f"{stream.name:>8} {'baseline':>9} {scored['baseline_mae']:>7.4f} {'':>9} {'':>7}  "
            f"accuracy stays at the reference's, {scored['reference']:.3f} "
            f"({len(stream.reference[1])} held-out rows)"
        )
        if nml_python is not None:
            try:
                theirs = run_nannyml(nml_python, stream)
                print(
                    f"{stream.name:>8} {'nannyml':>9} {theirs['mae']:>7.4f} "
                    f"{theirs['coverage']:>9.1%} {theirs['mae'] / scored['mae']:>6.1f}x  "
                    f"CBPE {theirs['version']}, {theirs['seconds']:.1f} s; ratio = its MAE / "
                    "driftlab's"
                )
            except (RuntimeError, ValueError, OSError) as exc:
                print(f"{stream.name:>8} {'nannyml':>9} failed: {exc}")
        print(f"{'':>8} {'':>9} calibration: {stream.calibration}")
    if nml_python is None:
        print(f"NannyML: {nml_status}")
    print("ratio = baseline MAE / driftlab MAE (above 1: the estimate is closer)")
    print()
    for stream in streams:
        print_trace(stream, results[stream.name])

    print()
    print("targets:")
    for stream in streams:
        scored = results[stream.name]
        print(
            f"  {stream.name}: estimate beats the constant baseline: "
            f"{_met(scored['mae'] < scored['baseline_mae'])}"
        )
    cov = results["randhie"]
    print(
        f"  randhie: MAE <= {MAX_MAE_COVARIATE} and coverage >= {MIN_COVERAGE_COVARIATE:.0%}: "
        f"{_met(cov['mae'] <= MAX_MAE_COVARIATE and cov['coverage'] >= MIN_COVERAGE_COVARIATE)}"
    )
    early = results["digits"]["early"]
    print(
        "  digits: band's high end below the reference within the first two shifted windows: "
        f"{_met(all(early))} ({sum(early)}/{len(early)} passes)"
    )
    print("not a target: clean windows whose band's high end is below the reference (a false")
    print("alarm of the same rule):")
    for stream in streams:
        alarms = results[stream.name]["false_alarms"]
        print(f"  {stream.name}: {sum(alarms)}/{len(alarms)}")

    if not quick:
        print()
        print(
            f"== speed: a {SPEED_ROWS:,}-row, {SPEED_CLASSES}-class window, best of 3, same run =="
        )
        speed = run_speed()
        share = speed["estimate_s"] / speed["drift_s"]
        print(f"{'engine':>9} {'seconds':>9} {'ratio':>7}  notes")
        print(f"{'driftlab':>9} {speed['estimate_s']:>9.3f} {share:>6.0%}   estimate(proba)")
        print(
            f"{'baseline':>9} {speed['drift_s']:>9.3f} {'':>7}  check_drift on the same rows "
            f"({N_FEATURES} features + prediction; profile built beforehand)"
        )
        print(
            f"target: estimate <= {MAX_SPEED_SHARE:.0%} of the drift check: "
            f"{_met(share <= MAX_SPEED_SHARE)}"
        )
    return 0


N_FEATURES = 12  # bench_drift's frame: 10 numeric and 2 categorical columns


if __name__ == "__main__":
    raise SystemExit(main(argv=sys.argv[1:]))
