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

Usage::

    .venv/bin/python benchmarks/bench_drift.py            # full: 1M rows, 200+200 pairs
    .venv/bin/python benchmarks/bench_drift.py --quick    # 100k rows, fewer Evidently pairs
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
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
    result["peak_rss_growth_mb"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    )
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


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows only, fewer pairs")
    parser.add_argument("--worker", choices=["driftlab", "evidently"], help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(speed_worker(args.worker, args.rows, args.repeats)))
        return

    sizes = [100_000] if args.quick else [100_000, 1_000_000]
    print(f"== speed: {N_NUMERIC} numeric + {N_CATEGORICAL} categorical columns, check only ==")
    print(f"{'rows':>9} {'engine':>10} {'seconds':>9} {'peak MB':>8} {'ratio':>7}  notes")
    for n_rows in sizes:
        ours = run_speed("driftlab", n_rows, repeats=3)
        # Evidently at 1M takes over a minute per run: once is enough.
        theirs = run_speed("evidently", n_rows, repeats=1 if n_rows >= 1_000_000 else 2)
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

    n_pairs = 200
    # Evidently takes 1-3 s per 5k-row report here, so it sees fewer pairs.
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
    main()
