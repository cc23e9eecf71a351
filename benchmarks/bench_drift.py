"""Drift engine benchmark: driftlab against Evidently 0.7.23's DataDriftPreset, same data.

1. Speed: reference and current frames of 10 numeric + 2 categorical (string) columns at 100k
   and 1M rows. Each engine runs in its own subprocess, which reports the check's wall time
   and its peak RSS growth (ru_maxrss at the end minus the RSS right before the check).
   driftlab's reference profile is built once beforehand and excluded (that is how the
   worker uses it: once per champion model); its build time is printed separately.
2. Quality on real data shipped in installed packages (statsmodels' ``fair``, 6,366 rows;
   scikit-learn's ``breast_cancer``, 569 rows x 30), both windows resampled with replacement
   to 5k rows: no-drift pairs (false alarms) and pairs where one numeric feature, rotating
   over the numeric features, is shifted by 0.25 of its standard deviation (detections).
   Dataset-level verdicts: driftlab's default policy; Evidently's preset, where the dataset
   drifts when DriftedColumnsCount's share is >= 0.5 (its default drift_share).
3. From the store: a temp lake holds older unshifted predictions and then the current window
   (1M, or 100k with --quick) of shifted ones, written through ``Store.append_predictions`` in
   100k-row commits, plus a few human labels. A subprocess times ``Monitor.check`` end to end
   (finding the window, reading it from the lake, live performance, the drift check) against
   a reference profile cached beforehand (its build is reported, not timed), with its peak RSS
   growth, next to Evidently's in-memory figure from part 1 of the same run.

Usage::

    .venv/bin/python benchmarks/bench_drift.py              # full: 1M rows, 200+200 pairs
    .venv/bin/python benchmarks/bench_drift.py --quick      # 100k rows, fewer Evidently pairs
    .venv/bin/python benchmarks/bench_drift.py --window-50m # only: a 50M-row window from the store

``--window-50m`` (not in ``make bench``) writes 51M predictions (several GB of Parquet under the
system temp dir, removed afterwards) and runs one check of the last 50M, printing its time and
peak RSS: expect minutes of writing and of checking, and several GB of memory.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

N_NUMERIC, N_CATEGORICAL = 10, 2
SHIFT_STD = 0.25
WINDOW_ROWS = 5_000


# --- data -------------------------------------------------------------------------------------


def synthetic_frame(n_rows: int, seed: int, drift: bool) -> pd.DataFrame:
    """10 numeric columns of assorted shapes and 2 string columns; ``drift`` shifts some."""
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {}
    for i in range(N_NUMERIC):
        kind = i % 3
        if kind == 0:
            col = rng.normal(0.0, 1.0, n_rows)
        elif kind == 1:
            col = rng.lognormal(0.0, 0.5, n_rows)
        else:
            col = rng.integers(0, 50, n_rows).astype(np.float64)
        if drift and i < 3:
            col = col + 0.2 * col.std()
        data[f"num_{i}"] = col
    shares = [0.4, 0.3, 0.2, 0.1] if not drift else [0.3, 0.3, 0.2, 0.2]
    for j in range(N_CATEGORICAL):
        data[f"cat_{j}"] = rng.choice(
            np.array(["a", "b", "c", "d"], dtype=object), n_rows, p=shares
        )
    return pd.DataFrame(data)


def real_datasets() -> dict[str, tuple[pd.DataFrame, list[str], list[str]]]:
    """name → (frame, numeric columns, categorical columns)."""
    import statsmodels.api as sm
    from sklearn.datasets import load_breast_cancer

    fair = sm.datasets.fair.load_pandas().data
    categorical = ["occupation", "occupation_husb"]
    for col in categorical:
        # Occupation codes are categories, not quantities.
        fair[col] = fair[col].astype(int).astype(str).astype(object)
    fair_numeric = [c for c in fair.columns if c not in categorical]
    cancer = load_breast_cancer(as_frame=True).data
    return {
        "fair": (fair, fair_numeric, categorical),
        "breast_cancer": (cancer, list(cancer.columns), []),
    }


def window_pair(frame: pd.DataFrame, numeric: list[str], seed: int, shifted: str | None):
    """Two 5k-row windows resampled from ``frame``; ``shifted`` is moved by 0.25 std."""
    rng = np.random.default_rng(seed)
    ref = frame.iloc[rng.integers(0, len(frame), WINDOW_ROWS)].reset_index(drop=True)
    cur = frame.iloc[rng.integers(0, len(frame), WINDOW_ROWS)].reset_index(drop=True)
    if shifted is not None:
        cur[shifted] = cur[shifted] + SHIFT_STD * frame[shifted].std(ddof=0)
    return ref, cur


# --- engines ----------------------------------------------------------------------------------


def evidently_dataset_drift(ref: pd.DataFrame, cur: pd.DataFrame) -> bool:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
    for metric in snapshot.dict()["metrics"]:
        if metric["metric_name"].startswith("DriftedColumnsCount"):
            share_threshold = metric["config"].get("drift_share", 0.5)
            return metric["value"]["share"] >= share_threshold
    raise RuntimeError("DriftedColumnsCount not found in Evidently's report")


def _rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def speed_worker(engine: str, n_rows: int, repeats: int) -> dict:
    """Runs inside a subprocess: one engine, one size."""
    ref = synthetic_frame(n_rows, seed=1, drift=False)
    cur = synthetic_frame(n_rows, seed=2, drift=True)
    result: dict = {"engine": engine, "rows": n_rows}
    if engine == "driftlab":
        from pipelines.drift import build_reference_profile, check_drift

        start = time.perf_counter()
        profile = build_reference_profile(ref)
        result["profile_s"] = time.perf_counter() - start
        run = lambda: check_drift(profile, cur)  # noqa: E731
    else:
        from evidently import Report
        from evidently.presets import DataDriftPreset

        run = lambda: Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)  # noqa: E731
    before = _rss_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    result["seconds"] = min(times)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_rss_growth_mb"] = result["peak_rss_mb"] - before
    if engine == "driftlab":
        result["drifted"] = out.drifted_features()
    return result


def run_speed(engine: str, n_rows: int, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, "--rows", str(n_rows)]
    cmd += ["--repeats", str(repeats)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_quality(n_pairs: int, n_pairs_evidently: int) -> list[dict]:
    from pipelines.drift import DriftPolicy, build_reference_profile, check_drift

    policy = DriftPolicy()
    rows = []
    for name, (frame, numeric, categorical) in real_datasets().items():
        for engine, pairs in (("driftlab", n_pairs), ("evidently", n_pairs_evidently)):
            start = time.perf_counter()
            alarms = detections = 0
            for i in range(pairs):
                ref, cur = window_pair(frame, numeric, seed=10_000 + i, shifted=None)
                shifted = numeric[i % len(numeric)]
                ref_d, cur_d = window_pair(frame, numeric, seed=20_000 + i, shifted=shifted)
                if engine == "driftlab":
                    columns = {"numeric": numeric, "categorical": categorical}
                    alarms += check_drift(
                        build_reference_profile(ref, **columns), cur, policy
                    ).dataset_drift
                    detections += check_drift(
                        build_reference_profile(ref_d, **columns), cur_d, policy
                    ).dataset_drift
                else:
                    alarms += evidently_dataset_drift(ref, cur)
                    detections += evidently_dataset_drift(ref_d, cur_d)
            rows.append(
                {
                    "dataset": name,
                    "engine": engine,
                    "pairs": pairs,
                    "false_alarm_rate": alarms / pairs,
                    "detection_rate": detections / pairs,
                    "seconds": time.perf_counter() - start,
                }
            )
    return rows


# --- from the store ---------------------------------------------------------------------------

CLASSES = ("0", "1", "2")
MODEL_NAME, MODEL_VERSION = "bench", "1"
N_LABELS = 150  # human labels on predictions in the window: the label join has work to do


def bench_schema():
    from pipelines.schema import CATEGORICAL, Feature, FeatureSchema

    numeric = tuple(Feature(f"num_{i}") for i in range(N_NUMERIC))
    categorical = tuple(
        Feature(f"cat_{j}", CATEGORICAL, ("a", "b", "c", "d")) for j in range(N_CATEGORICAL)
    )
    return FeatureSchema(numeric + categorical, label_type="str", classes=CLASSES)


def bench_model():
    """A stand-in champion: `Monitor.check` reads only its name, version, schema and classes."""
    from pipelines.serving.model import ServingModel

    def no_predictions(x: np.ndarray) -> np.ndarray:
        raise NotImplementedError("the benchmark's reference profile is cached")

    return ServingModel(MODEL_NAME, MODEL_VERSION, bench_schema(), no_predictions, "sklearn")


def _settings(data_dir: Path):
    from pipelines.settings import Settings

    return Settings(data_dir=data_dir, _env_file=None)  # type: ignore[call-arg]


def prediction_chunk(start: int, n_rows: int, seed: int, drift: bool):
    """Rows start..start+n_rows of the predictions table, one microsecond apart."""
    import pyarrow as pa
    import pyarrow.compute as pc

    frame = synthetic_frame(n_rows, seed, drift)
    rng = np.random.default_rng(seed)
    numbers = pa.array(np.arange(start, start + n_rows)).cast(pa.string())
    t0 = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp() * 1e6)
    return pa.table(
        {
            "prediction_id": pc.binary_join_element_wise("p", numbers, ""),
            "ts": pa.array(t0 + np.arange(start, start + n_rows), pa.int64()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "model_name": pa.repeat(pa.scalar(MODEL_NAME), n_rows),
            "model_version": pa.repeat(pa.scalar(MODEL_VERSION), n_rows),
            "prediction": pa.array(CLASSES).take(pa.array(rng.integers(0, 3, n_rows))),
            "confidence": pa.array(rng.uniform(0.34, 1.0, n_rows)),
            "latency_ms": pa.array(rng.uniform(0.5, 5.0, n_rows)),
            "uncertain": pa.array(np.zeros(n_rows, dtype=bool)),
            "features": bench_schema().to_arrow({c: frame[c].to_numpy() for c in frame.columns}),
        }
    )


def fill_store(data_dir: Path, window: int, older: int, chunk: int) -> dict:
    """A lake with `older` unshifted predictions, then `window` shifted ones, a few labels and
    the champion's reference profile in the monitor's on-disk cache."""
    from pipelines.drift import build_reference_profile
    from pipelines.store import Store

    settings = _settings(data_dir)
    store = Store.open(settings)
    store.fix_dataset_schema(bench_schema())
    started = time.perf_counter()
    total = older + window
    for first, stop, drift in ((0, older, False), (older, total, True)):
        for start in range(first, stop, chunk):
            n = min(chunk, stop - start)
            store.append_predictions(prediction_chunk(start, n, seed=100 + start, drift=drift))
    rng = np.random.default_rng(3)
    for i in rng.choice(window, N_LABELS, replace=False):
        store.add_feedback(f"p{older + int(i)}", label=str(rng.choice(CLASSES)), correct=None)
    fill_s = time.perf_counter() - started
    store.close()

    started = time.perf_counter()
    ref = synthetic_frame(min(window, 1_000_000), seed=1, drift=False)
    rng = np.random.default_rng(4)
    ref["prediction"] = np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, len(ref))]
    ref["label"] = np.asarray(CLASSES, dtype=object)[rng.integers(0, 3, len(ref))]
    profile = build_reference_profile(
        ref,
        numeric=[f"num_{i}" for i in range(N_NUMERIC)],
        categorical=[*(f"cat_{j}" for j in range(N_CATEGORICAL)), "prediction", "label"],
        roles={"prediction": "prediction", "label": "label"},
    )
    profile_s = time.perf_counter() - started
    # Where Monitor.reference keeps a champion's profile between processes.
    cache = settings.reference_cache(MODEL_NAME, MODEL_VERSION)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(profile))
    return {"fill_s": fill_s, "profile_s": profile_s, "rows_stored": total}


def store_worker(data_dir: Path, window: int, repeats: int) -> dict:
    """Runs inside a subprocess: `Monitor.check` on the last `window` predictions."""
    from pipelines.loop.monitoring import Monitor
    from pipelines.store import Store

    settings = _settings(data_dir)
    store = Store.open(settings)
    monitor = Monitor(settings, store, registry=None)  # type: ignore[arg-type]
    model = bench_model()
    monitor.reference(model)  # the cached profile, loaded once as the worker process does
    before = _rss_mb()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = monitor.check(model=model, window_size=window, save=False)
        times.append(time.perf_counter() - start)
    rusage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert result.report is not None and result.n_current == window, result.summary()
    return {
        "seconds": min(times),
        "first_s": times[0],
        "peak_rss_mb": rusage,
        "peak_rss_growth_mb": rusage - before,
        "n_current": result.n_current,
        "n_labeled": result.performance["n_labeled"],
        "drifted": result.report.drifted_features(),
    }


def run_store(window: int, older: int, chunk: int, repeats: int) -> dict:
    """Fill a temp lake, then time the check in a fresh process; the lake is removed after."""
    tmp = Path(tempfile.mkdtemp(prefix="driftlab-bench-"))
    try:
        filled = fill_store(tmp / "data", window, older, chunk)
        cmd = [sys.executable, __file__, "--worker", "store", "--rows", str(window)]
        cmd += ["--repeats", str(repeats), "--data-dir", str(tmp / "data")]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
        return {**filled, **json.loads(done.stdout.strip().splitlines()[-1])}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def print_store(ours: dict, theirs: dict | None) -> None:
    print(
        f"{ours['n_current']:>9,} {'driftlab':>10} {ours['seconds']:>9.3f} "
        f"{ours['peak_rss_growth_mb']:>8.0f} {ours['peak_rss_mb']:>8.0f} {'':>7}  "
        f"Monitor.check from the lake ({ours['rows_stored']:,} rows stored, "
        f"{ours['n_labeled']} labeled); first run {ours['first_s']:.3f} s; drifted "
        f"{ours['drifted']}"
    )
    print(
        f"{'':>9} {'':>10} {'':>9} {'':>8} {'':>8} {'':>7}  filled in {ours['fill_s']:.0f} s; "
        f"reference profile built once in {ours['profile_s']:.2f} s (not timed)"
    )
    if theirs is not None:
        ratio = theirs["seconds"] / ours["seconds"]
        print(
            f"{ours['n_current']:>9,} {'evidently':>10} {theirs['seconds']:>9.3f} "
            f"{theirs['peak_rss_growth_mb']:>8.0f} {theirs['peak_rss_mb']:>8.0f} "
            f"{ratio:>6.0f}x  in memory, from part 1 (frames already loaded)"
        )


def store_header(title: str) -> None:
    print(title)
    print(
        f"{'rows':>9} {'engine':>10} {'seconds':>9} {'grew MB':>8} {'peak MB':>8} {'ratio':>7}"
        "  notes"
    )


# --- main -------------------------------------------------------------------------------------


def main(quick: bool = False, argv: list[str] | None = None) -> None:
    """Parts 1-3 (``quick``: 100k rows only); the command line adds ``--window-50m``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows only, fewer pairs")
    parser.add_argument(
        "--window-50m",
        action="store_true",
        help="only: one check of a 50M-row window read from the store (~5 min, GBs of disk)",
    )
    parser.add_argument(
        "--worker", choices=["driftlab", "evidently", "store"], help=argparse.SUPPRESS
    )
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    # `python -m benchmarks` calls main(quick=...): its own command line is not ours to parse.
    args = parser.parse_args([] if argv is None else argv)
    quick = quick or args.quick
    if args.worker == "store":
        print(json.dumps(store_worker(args.data_dir, args.rows, args.repeats)))
        return
    if args.worker:
        print(json.dumps(speed_worker(args.worker, args.rows, args.repeats)))
        return
    if args.window_50m:
        store_header("== from the store: a 50M-row window, Monitor.check end to end ==")
        print_store(run_store(50_000_000, 1_000_000, chunk=1_000_000, repeats=1), None)
        print("Evidently is not run at 50M (78 s and 1.1 GB at 1M on this machine).")
        return

    sizes = [100_000] if quick else [100_000, 1_000_000]
    print(f"== speed: {N_NUMERIC} numeric + {N_CATEGORICAL} categorical columns, check only ==")
    print(f"{'rows':>9} {'engine':>10} {'seconds':>9} {'peak MB':>8} {'ratio':>7}  notes")
    evidently = {}
    for n_rows in sizes:
        ours = run_speed("driftlab", n_rows, repeats=3)
        # Evidently at 1M takes over a minute per run: once is enough.
        theirs = run_speed("evidently", n_rows, repeats=1 if n_rows >= 1_000_000 else 2)
        evidently[n_rows] = theirs
        note = f"profile built once in {ours['profile_s']:.2f} s; drifted {ours['drifted']}"
        print(
            f"{n_rows:>9,} {'driftlab':>10} {ours['seconds']:>9.3f} "
            f"{ours['peak_rss_growth_mb']:>8.0f} {'':>7}  {note}"
        )
        ratio = theirs["seconds"] / ours["seconds"]
        print(
            f"{n_rows:>9,} {'evidently':>10} {theirs['seconds']:>9.3f} "
            f"{theirs['peak_rss_growth_mb']:>8.0f} {ratio:>6.0f}x  DataDriftPreset()"
        )

    window = sizes[-1]
    print()
    store_header(
        "== end to end from the store: window read + live performance + check "
        "(grew = peak RSS growth during the check; peak = the process's peak RSS) =="
    )
    ours = run_store(window, older=window // 5, chunk=100_000, repeats=3)
    print_store(ours, evidently[window])

    n_pairs = 200
    # Evidently takes seconds per 5k-row report, so it sees fewer pairs.
    n_evidently = 10 if args.quick else 30
    print()
    print(
        f"== quality: {WINDOW_ROWS:,}-row windows resampled from real data; drift = one numeric "
        f"feature shifted by {SHIFT_STD} std =="
    )
    print(
        f"{'dataset':>14} {'engine':>10} {'pairs':>6} {'false alarms':>13} {'detected':>9} {'s':>6}"
    )
    for row in run_quality(n_pairs, n_evidently):
        print(
            f"{row['dataset']:>14} {row['engine']:>10} {row['pairs']:>6} "
            f"{row['false_alarm_rate']:>13.1%} {row['detection_rate']:>9.1%} {row['seconds']:>6.0f}"
        )
    print("targets: false alarms <= 5%, detection >= 90% (driftlab default policy:")
    from pipelines.drift import DriftPolicy

    print(f"  {DriftPolicy().describe()})")
    print("Evidently: dataset drift when its DriftedColumnsCount share >= 0.5 (its default).")


if __name__ == "__main__":
    main(argv=sys.argv[1:])
