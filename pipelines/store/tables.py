"""The lake's tables. Names are part of driftlab's contract; `features` follows the dataset.

`ingested_rows.features` and `predictions.features` are STRUCT columns whose fields are the
dataset's features (typed columns in Parquet: a drift window reads 1M rows × 12 features in
~0.1 s, where the same data as JSON text takes ~1.5 s). They are added when the first batch fixes
the dataset schema; every other column exists from `init`, whatever the modality.
"""

from __future__ import annotations

TABLES: dict[str, str] = {
    "datasets": """
        name VARCHAR, schema_json VARCHAR, created_at TIMESTAMPTZ""",
    "ingested_rows": """
        record_id VARCHAR, batch_id VARCHAR, label VARCHAR, source VARCHAR,
        ingested_at TIMESTAMPTZ""",
    "predictions": """
        prediction_id VARCHAR, ts TIMESTAMPTZ, model_name VARCHAR, model_version VARCHAR,
        prediction VARCHAR, confidence DOUBLE, probabilities DOUBLE[], latency_ms DOUBLE,
        uncertain BOOLEAN, image_ref VARCHAR""",
    "detections": """
        prediction_id VARCHAR, ts TIMESTAMPTZ, x1 DOUBLE, y1 DOUBLE, x2 DOUBLE, y2 DOUBLE,
        class VARCHAR, confidence DOUBLE, uncertain BOOLEAN""",
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
        missing_share DOUBLE, method VARCHAR, trigger VARCHAR""",
    "retraining_events": """
        event_id VARCHAR, ts TIMESTAMPTZ, trigger VARCHAR, reasons VARCHAR, status VARCHAR,
        snapshot_id BIGINT, champion_version VARCHAR, candidate_version VARCHAR,
        metrics VARCHAR, decision VARCHAR, who VARCHAR, notebook VARCHAR, error VARCHAR""",
    "model_events": """
        event_id VARCHAR, ts TIMESTAMPTZ, model_name VARCHAR, event VARCHAR,
        from_version VARCHAR, to_version VARCHAR, who VARCHAR, why VARCHAR""",
}

# Tables whose `features` column is typed by the dataset schema.
FEATURE_TABLES = ("ingested_rows", "predictions")
