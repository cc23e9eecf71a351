"""The lake's tables. Names are part of driftlab's contract; `features` follows the dataset.

`ingested_rows.features` and `predictions.features` are STRUCT columns whose fields are the
dataset's features (typed columns in Parquet: a drift window reads them as columns of numbers,
where JSON text would be parsed again on every read). They are added when the first batch fixes
the dataset schema; every other column exists from `init`, whatever the modality.
"""

from __future__ import annotations

import pyarrow as pa

TABLES: dict[str, str] = {
    "datasets": """
        name VARCHAR, schema_json VARCHAR, created_at TIMESTAMPTZ""",
    "ingested_rows": """
        record_id VARCHAR, batch_id VARCHAR, label VARCHAR, source VARCHAR,
        ingested_at TIMESTAMPTZ""",
    "predictions": """
        prediction_id VARCHAR, ts TIMESTAMPTZ, model_name VARCHAR, model_version VARCHAR,
        prediction VARCHAR, confidence DOUBLE, probabilities DOUBLE[], latency_ms DOUBLE,
        uncertain BOOLEAN, image_ref VARCHAR, task VARCHAR, origin VARCHAR""",
    "detections": """
        prediction_id VARCHAR, ts TIMESTAMPTZ, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE,
        class VARCHAR, confidence DOUBLE, uncertain BOOLEAN, class_index BIGINT""",
    "feedback": """
        feedback_id VARCHAR, prediction_id VARCHAR, label VARCHAR, correct BOOLEAN,
        source VARCHAR, who VARCHAR, model_version VARCHAR, ts TIMESTAMPTZ""",
    "labeling_queue": """
        event_id VARCHAR, prediction_id VARCHAR, event VARCHAR, score DOUBLE, label VARCHAR,
        who VARCHAR, model_version VARCHAR, ts TIMESTAMPTZ, prediction_ts TIMESTAMPTZ""",
    "drift_results": """
        run_id VARCHAR, ts TIMESTAMPTZ, model_version VARCHAR, window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ, n_reference BIGINT, n_current BIGINT, feature VARCHAR,
        kind VARCHAR, test VARCHAR, statistic DOUBLE, p_value DOUBLE, p_adjusted DOUBLE,
        effect_size DOUBLE, effect_metric VARCHAR, threshold DOUBLE, drifted BOOLEAN,
        dataset_drift BOOLEAN, drift_share DOUBLE, role VARCHAR, status VARCHAR,
        missing_share DOUBLE, method VARCHAR, trigger VARCHAR, modality VARCHAR""",
    # Per check and metric: the performance estimated from the window's probabilities, its
    # band, what labels realized on the same window, and the champion's reference figure.
    "performance_estimates": """
        run_id VARCHAR, ts TIMESTAMPTZ, model_version VARCHAR, window_start TIMESTAMPTZ,
        window_end TIMESTAMPTZ, n_window BIGINT, metric VARCHAR, estimated DOUBLE, low DOUBLE,
        high DOUBLE, std DOUBLE, realized DOUBLE, n_labeled BIGINT, reference DOUBLE,
        n_reference BIGINT, calibrated BOOLEAN, trigger VARCHAR""",
    "retraining_events": """
        event_id VARCHAR, ts TIMESTAMPTZ, trigger VARCHAR, reasons VARCHAR, status VARCHAR,
        snapshot_id BIGINT, champion_version VARCHAR, candidate_version VARCHAR,
        metrics VARCHAR, decision VARCHAR, who VARCHAR, notebook VARCHAR, error VARCHAR,
        model_name VARCHAR""",
    # Champion moves and rollouts. A rollout's rows share its `rollout_id`; `details` is JSON
    # (mode, share, the live test's counts, statistic and p-value).
    "model_events": """
        event_id VARCHAR, ts TIMESTAMPTZ, model_name VARCHAR, event VARCHAR,
        from_version VARCHAR, to_version VARCHAR, who VARCHAR, why VARCHAR,
        rollout_id VARCHAR, details VARCHAR""",
    # What a shadow challenger answered, under the served prediction's id; never served, so
    # no reader of `predictions` sees it. `role` is "shadow".
    "shadow_predictions": """
        prediction_id VARCHAR, ts TIMESTAMPTZ, rollout_id VARCHAR, model_name VARCHAR,
        model_version VARCHAR, role VARCHAR, prediction VARCHAR, confidence DOUBLE,
        probabilities DOUBLE[]""",
    # -- vision ----------------------------------------------------------------------------
    # The original labeled images a vision model is trained on (the image itself lives in the
    # content-addressed image store; `label` is a class name, or JSON boxes for detection).
    "ingested_images": """
        record_id VARCHAR, batch_id VARCHAR, image_ref VARCHAR, task VARCHAR, split VARCHAR,
        label VARCHAR, source VARCHAR, width BIGINT, height BIGINT, ingested_at TIMESTAMPTZ""",
    # Per image: quality features and output features, what image drift is measured on.
    # `origin` is api / edge for served images.
    "image_features": """
        prediction_id VARCHAR, ts TIMESTAMPTZ, model_name VARCHAR, model_version VARCHAR,
        origin VARCHAR, brightness DOUBLE, contrast DOUBLE, blur DOUBLE, mean_r DOUBLE,
        mean_g DOUBLE, mean_b DOUBLE, saturation DOUBLE, width DOUBLE, height DOUBLE,
        n_detections DOUBLE, mean_box_area DOUBLE, mean_confidence DOUBLE, top_class VARCHAR,
        fps DOUBLE, inference_ms DOUBLE""",
}

# Tables whose `features` column is typed by the dataset schema.
FEATURE_TABLES = ("ingested_rows", "predictions")


def table_columns(ddl: str) -> list[str]:
    """`name TYPE` entries of a table's DDL (no nested commas in these types)."""
    return [part.strip() for part in ddl.split(",") if part.strip()]


_ARROW_TYPES = {
    "VARCHAR": pa.string(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "BOOLEAN": pa.bool_(),
}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a table's scalar columns, from its DDL in `TABLES`."""
    fields = (column.split() for column in table_columns(TABLES[table]))
    return pa.schema([(name, _ARROW_TYPES[kind]) for name, kind in fields])
