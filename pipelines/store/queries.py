"""The dashboard's reads (and the API's inspection page), as plain functions of a `Store`.

Each is one aggregation that runs in DuckDB and returns a few hundred values at most, whatever
the number of predictions stored: the dashboard's budget is 300 ms per callback with 10M
predictions. Time-bounded reads filter on `ts`, which lets DuckLake skip whole files (the
prediction log writes them in time order).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines.schema import CATEGORICAL, FeatureSchema
from pipelines.store import Store
from pipelines.store.predictions import inspection_filter
from pipelines.store.sql import identifier

# Bins of a numeric feature's distribution chart: enough to see a shift, few enough to read.
HISTOGRAM_BINS = 30
# Categories beyond this many are folded into one "other" bar.
MAX_CATEGORIES = 30


def predictions_per_minute(
    store: Store, since: dt.datetime, until: dt.datetime | None = None
) -> list[dict[str, Any]]:
    """Predictions and uncertain predictions per minute in [since, until), oldest first."""
    return store.lake.query(
        """SELECT time_bucket(INTERVAL 1 minute, ts) AS minute, count(*) AS n,
                  count(*) FILTER (uncertain) AS uncertain
           FROM lake.predictions
           WHERE ts >= ? AND ts < coalesce(?, TIMESTAMPTZ 'infinity')
           GROUP BY minute ORDER BY minute""",
        [since, until],
    ).to_pylist()


def _training_rows(snapshot_id: int) -> str:
    """The labeled rows a model trained at `snapshot_id` saw (as `Store.labeled_rows` reads
    them): ingested labeled rows plus tabular predictions that got a human label by then
    (image predictions have no `features`)."""
    at = f"AT (VERSION => {int(snapshot_id)})"
    return f"""
        SELECT features FROM lake.ingested_rows {at} WHERE label IS NOT NULL
        UNION ALL
        SELECT p.features FROM lake.predictions AS p {at}
        SEMI JOIN (SELECT prediction_id FROM lake.feedback {at} WHERE label IS NOT NULL) f
        USING (prediction_id)
        WHERE p.features IS NOT NULL"""


def reference_ranges(
    store: Store, schema: FeatureSchema, snapshot_id: int
) -> dict[str, dict[str, Any]]:
    """Per feature, what the training data looked like: for numbers min, 5th percentile,
    median, 95th percentile and max; for categories the share of each (most common first).

    A person labeling an item or filling the Predict form reads a value against these.
    """
    numeric = [f.name for f in schema.features if f.kind != CATEGORICAL]
    out: dict[str, dict[str, Any]] = {}
    source = _training_rows(snapshot_id)
    if numeric:
        parts = ", ".join(
            f"min(features.{q}), quantile_cont(features.{q}, [0.05, 0.5, 0.95]), max(features.{q})"
            for q in map(identifier, numeric)
        )
        row = store.lake.rows(f"SELECT {parts} FROM ({source})")[0]
        for i, name in enumerate(numeric):
            low, (p05, p50, p95), high = row[3 * i], row[3 * i + 1] or (None,) * 3, row[3 * i + 2]
            out[name] = {
                "kind": "numeric",
                "min": low,
                "p05": p05,
                "median": p50,
                "p95": p95,
                "max": high,
            }
    for feat in schema.features:
        if feat.kind != CATEGORICAL:
            continue
        rows = store.lake.rows(
            f"""SELECT features.{identifier(feat.name)} AS v, count(*) AS n FROM ({source})
                GROUP BY v ORDER BY n DESC, v LIMIT {MAX_CATEGORIES}"""
        )
        total = sum(int(n) for _, n in rows) or 1
        out[feat.name] = {
            "kind": "categorical",
            "shares": {str(v): int(n) / total for v, n in rows if v is not None},
        }
    return out


def distribution(
    store: Store,
    feature: str,
    kind: str,
    *,
    snapshot_id: int,
    since: dt.datetime,
    until: dt.datetime,
) -> dict[str, Any]:
    """One feature's reference (training snapshot) and current ([since, until] of predictions)
    distributions over the same bins, counted in DuckDB.

    Returns:
        {"kind", "bins": labels (categories, or bin left edges for numbers), "width" (numbers),
        "reference": counts, "current": counts}; each side's counts line up with "bins".
    """
    column = f"features.{identifier(feature)}"
    reference = f"SELECT {column} AS v FROM ({_training_rows(snapshot_id)})"
    current = f"SELECT {column} AS v FROM lake.predictions WHERE ts >= ? AND ts <= ?"
    both = (
        f"SELECT 'reference' AS side, v FROM ({reference}) "
        f"UNION ALL SELECT 'current', v FROM ({current})"
    )
    params = [since, until]
    if kind == CATEGORICAL:
        rows = store.lake.rows(
            f"SELECT side, v, count(*) FROM ({both}) WHERE v IS NOT NULL GROUP BY side, v",
            params,
        )
        totals: dict[str, int] = {}
        for _, v, n in rows:
            totals[v] = totals.get(v, 0) + int(n)
        top = sorted(totals, key=lambda v: (-totals[v], v))[:MAX_CATEGORIES]
        counts = {("reference", v): 0 for v in top} | {("current", v): 0 for v in top}
        for side, v, n in rows:
            if (side, v) in counts:
                counts[(side, v)] += int(n)
        return {
            "kind": CATEGORICAL,
            "bins": top,
            "width": None,
            "reference": [counts[("reference", v)] for v in top],
            "current": [counts[("current", v)] for v in top],
        }
    low, high = store.lake.rows(
        f"SELECT min(v), max(v) FROM ({both}) WHERE isfinite(v)", [*params]
    )[0]
    if low is None:
        return {"kind": "numeric", "bins": [], "width": None, "reference": [], "current": []}
    n_bins = HISTOGRAM_BINS if high > low else 1
    width = (high - low) / n_bins if high > low else 1.0
    rows = store.lake.rows(
        f"""SELECT side, least(CAST(floor((v - ?) / ?) AS INTEGER), ?) AS b, count(*)
            FROM ({both}) WHERE isfinite(v) GROUP BY side, b""",
        [low, width, n_bins - 1, *params],
    )
    ref, cur = [0] * n_bins, [0] * n_bins
    for side, b, n in rows:
        (ref if side == "reference" else cur)[int(b)] += int(n)
    return {
        "kind": "numeric",
        "bins": [low + i * width for i in range(n_bins)],
        "width": width,
        "reference": ref,
        "current": cur,
    }


def latest_check_by(store: Store, trigger: str) -> dt.datetime | None:
    """When a drift check with this trigger (e.g. "worker") last ran: the worker's heartbeat."""
    return store.lake.scalar("SELECT max(ts) FROM lake.drift_results WHERE trigger = ?", [trigger])


def detections(store: Store, prediction_id: str) -> list[dict[str, Any]]:
    """The boxes of one image prediction, most confident first."""
    return store.lake.query(
        """SELECT x1, y1, x2, y2, class, confidence, uncertain FROM lake.detections
           WHERE prediction_id = ? ORDER BY confidence DESC""",
        [prediction_id],
    ).to_pylist()


def champion_since(store: Store, model_name: str, version: str) -> dt.datetime | None:
    """When `version` last became champion (promoted, or rolled back to)."""
    return store.lake.scalar(
        """SELECT max(ts) FROM lake.model_events
           WHERE model_name = ? AND to_version = ? AND event IN ('promoted', 'rolled_back')""",
        [model_name, version],
    )


def prediction_count(store: Store) -> int:
    """All predictions stored (DuckLake answers a bare count from its file statistics)."""
    return int(store.lake.scalar("SELECT count(*) FROM lake.predictions"))


def prediction_counts_by_version(store: Store) -> dict[str, int]:
    """How many predictions each model version answered, newest version first."""
    rows = store.lake.rows(
        """SELECT model_version, count(*) FROM lake.predictions
           WHERE model_version IS NOT NULL GROUP BY model_version"""
    )
    counts = {str(v): int(n) for v, n in rows}
    return {v: counts[v] for v in sorted(counts, key=_version_key, reverse=True)}


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def inspection_page(
    store: Store,
    *,
    limit: int = 50,
    offset: int = 0,
    model_version: str | None = None,
    prediction: str | None = None,
    uncertain: bool | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Recent predictions, newest first, filtered and paged (GET /api/inspection-logs, the
    Inspections page): the same page as a plain top-N query over the whole table, read from
    the newest files only.

    The plain top-N query reads the wide columns (features, probabilities) of every matching
    row, a cost that grows with the predictions stored (`python -m benchmarks --only
    dashboard` times the Inspections page over 10M). Predictions are written in time order,
    so the page is looked for in the last hour first, then in 4x wider spans back in time,
    until the span holds `offset + limit` matches; each probe is a count that DuckLake answers
    from the files of its span (or their statistics). Within that span the page's keys (`ts`,
    `prediction_id`) are sorted first, and whole rows are read for those keys only.
    """
    oldest, newest = store.lake.rows("SELECT min(ts), max(ts) FROM lake.predictions")[0]
    if oldest is None:
        return 0, []
    # A time bound that excludes nothing is dropped: it prunes no file, and evaluating it row
    # by row would add to a filtered count's cost over every row in range.
    if since is not None and since <= oldest:
        since = None
    if until is not None and until > newest:
        until = None
    cond, params = inspection_filter(model_version, prediction, uncertain, since, until)
    total = int(store.lake.scalar(f"SELECT count(*) FROM lake.predictions WHERE {cond}", params))
    if offset >= total:
        return total, []
    if until is not None:
        newest = store.lake.scalar("SELECT max(ts) FROM lake.predictions WHERE ts < ?", [until])
    span = dt.timedelta(hours=1)
    start: dt.datetime | None = newest - span
    while start is not None:
        if since is not None and start <= since:
            start = None  # the whole range: `total` is its count
            break
        found = int(
            store.lake.scalar(
                f"SELECT count(*) FROM lake.predictions WHERE {cond} AND ts >= ?",
                [*params, start],
            )
        )
        if found >= offset + limit or found == total:
            break
        span *= 4
        start = newest - span
    bound = "" if start is None else "AND ts >= ?"
    # The page's keys first (two narrow columns), then its whole rows from the page's own
    # time range: the wide columns are read for about `limit` rows, not for the span.
    keys = store.lake.rows(
        f"""SELECT ts, prediction_id FROM lake.predictions WHERE {cond} {bound}
            ORDER BY ts DESC, prediction_id LIMIT ? OFFSET ?""",
        [*params, *([] if start is None else [start]), int(limit), int(offset)],
    )
    if not keys:
        return total, []
    rows = store.lake.query(
        f"""SELECT * FROM lake.predictions WHERE {cond} AND ts >= ? AND ts <= ?
            ORDER BY ts DESC, prediction_id""",
        [*params, keys[-1][0], keys[0][0]],
    ).to_pylist()
    wanted = {pid for _, pid in keys}  # rows tied with the page's first or last ts may be others
    return total, [row for row in rows if row["prediction_id"] in wanted]
