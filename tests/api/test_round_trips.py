"""Every value a client sends comes back from the lake exactly: floats bit for bit (-0.0,
subnormals and extremes included), any text (quotes, backslashes, control characters, any
script), through every write path and every reader: the API's JSON, a read-only attach (the
dashboard, a notebook), the worker's monitoring window and the retrain's training set.

Hypothesis draws the values; each write path sends them through the real app."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.main import create_app
from pipelines import demo
from pipelines.schema import stored_number
from pipelines.store import Store
from pipelines.vision.images import FEATURE_COLUMNS
from tests.conftest import make_settings

pytestmark = pytest.mark.slow  # hypothesis: 20 drawn examples per write path

SPLIT = demo.demo_split(name="survey")
CATEGORICAL = ["occupation", "occupation_husb"]
NUMERIC = [name for name in SPLIT.features if name not in CATEGORICAL]

numbers = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [-0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, 1e22, 2**53 + 2.0]
)
texts = st.text(max_size=24) | st.sampled_from(
    ["it's", "back\\slash", "'", "\\'", "''", "nul\x00x", '"', "{'a': 1}", "CAST('-0.0' AS X)", ""]
)
printable = st.text(
    st.characters(
        blacklist_categories=("Cs",), blacklist_characters=[chr(c) for c in range(32)] + ["\x7f"]
    ),
    min_size=1,
    max_size=40,
)
record = st.fixed_dictionaries(
    {**{name: numbers for name in NUMERIC}, **{name: texts for name in CATEGORICAL}}
)
SLOW = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def bits(x: Any) -> Any:
    return struct.pack("<d", x) if isinstance(x, float) else x


def exact(a: Any, b: Any) -> bool:
    """Equal, floats bit for bit."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(exact(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(exact, a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and bits(a) == bits(b)
    return a == b


def as_floats(rec: dict[str, Any]) -> dict[str, Any]:
    """A record as the store keeps it: numbers as floats, zero unsigned (`stored_number`)."""
    return {k: stored_number(v) if k in NUMERIC else v for k, v in rec.items()}


@pytest.fixture(scope="module")
def app_client(tmp_path_factory: pytest.TempPathFactory, trained_dir: Path) -> Iterator[TestClient]:
    import shutil

    data = tmp_path_factory.mktemp("round-trips") / "data"
    shutil.copytree(trained_dir, data)
    app = create_app(make_settings(data, flush_interval=0.1))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def reader(app_client: TestClient) -> Iterator[Store]:
    """A second, read-only attachment of the lake: what the dashboard and notebooks open."""
    state = app_client.app.state.driftlab  # type: ignore[attr-defined]
    store = Store.open(state.settings, read_only=True)
    yield store
    store.close()


def state_of(client: TestClient) -> Any:
    return client.app.state.driftlab  # type: ignore[attr-defined]


def stored_batch(reader: Store, batch_id: str) -> list[tuple[str | None, dict[str, Any]]]:
    rows = reader.lake.query(
        "SELECT label, features FROM lake.ingested_rows WHERE batch_id = ? ORDER BY record_id",
        [batch_id],
    )
    return list(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))


@SLOW
@given(rows=st.lists(record, min_size=1, max_size=5), form=st.sampled_from(["records", "features"]))
def test_ingest_batch_round_trips(
    app_client: TestClient, reader: Store, rows: list[dict], form: str
) -> None:
    labels = [i % 2 for i in range(len(rows))]
    body: dict[str, Any] = {"labels": labels}
    if form == "records":
        body["records"] = rows
    else:
        body["features"] = [[r[name] for name in SPLIT.features] for r in rows]
    r = app_client.post("/ingest/batch", json=body)
    assert r.status_code == 200, r.text
    batch = r.json()["batch_id"]
    got = stored_batch(reader, batch)
    assert [label for label, _ in got] == [str(label) for label in labels]
    assert all(exact(as_floats(want), have) for want, (_, have) in zip(rows, got, strict=True))
    # The retrain reads the same values (first row of the batch, by its record id).
    trained_on = state_of(app_client).store.labeled_rows()
    at = trained_on.record_ids.index(f"{batch}:0")
    for name in SPLIT.features:
        assert exact(
            as_floats(rows[0])[name],
            trained_on.columns[name][at].item()
            if hasattr(trained_on.columns[name][at], "item")
            else trained_on.columns[name][at],
        )


@SLOW
@given(rows=st.lists(record, min_size=1, max_size=4), ndjson=st.booleans())
def test_ingest_stream_round_trips(
    app_client: TestClient, reader: Store, rows: list[dict], ndjson: bool
) -> None:
    if ndjson:
        body = b"\n".join(orjson.dumps({"record": r, "label": 1}) for r in rows)
        r = app_client.post(
            "/ingest/stream", content=body, headers={"content-type": "application/x-ndjson"}
        )
    else:
        rows = rows[:1]
        r = app_client.post("/ingest/stream", json={"record": rows[0], "label": 1})
    assert r.status_code == 200, r.text
    got = stored_batch(reader, r.json()["batch_id"])
    assert all(exact(as_floats(want), have) for want, (_, have) in zip(rows, got, strict=True))


def predicted(client: TestClient, rows: list[dict]) -> list[str]:
    r = client.post("/predict", json={"records": rows})
    assert r.status_code == 200, r.text
    state_of(client).log.flush()
    return r.json()["prediction_ids"]


@SLOW
@given(rows=st.lists(record, min_size=1, max_size=5))
def test_predictions_round_trip_to_every_reader(
    app_client: TestClient, reader: Store, rows: list[dict]
) -> None:
    ids = predicted(app_client, rows)
    want = {pid: as_floats(row) for pid, row in zip(ids, rows, strict=True)}
    # The API's JSON (the inspection page of the API and the dashboard).
    page = app_client.get("/api/inspection-logs", params={"limit": 50}).json()["items"]
    api = {
        item["prediction_id"]: item["features"] for item in page if item["prediction_id"] in want
    }
    assert api.keys() == want.keys()
    assert all(exact(want[pid], api[pid]) for pid in want)
    # A read-only attach: the dashboard's and a notebook's view.
    table = reader.lake.query(
        "SELECT prediction_id, features FROM lake.predictions WHERE prediction_id IN "
        "(SELECT unnest(?::VARCHAR[]))",
        [ids],
    ).to_pylist()
    assert all(exact(want[row["prediction_id"]], row["features"]) for row in table)
    assert len(table) == len(ids)
    # The worker's monitoring window: its newest rows are these.
    store = state_of(app_client).store
    window = store.window_columns(store.window_bounds(limit=len(ids)), SPLIT.features)
    columns = [window.column(name).to_pylist() for name in SPLIT.features]
    seen = sorted(tuple(map(bits, values)) for values in zip(*columns, strict=True))
    sent = sorted(tuple(bits(row[name]) for name in SPLIT.features) for row in want.values())
    assert seen == sent


simple_numbers = st.integers(-(10**9), 10**9).map(lambda i: i / 1000) | st.just(-0.0)
simple_texts = st.text(
    st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"\\'), max_size=12
)


@SLOW
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {**{n: simple_numbers for n in NUMERIC}, **{n: simple_texts for n in CATEGORICAL}}
        ),
        min_size=150,
        max_size=200,
    )
)
def test_bulk_predictions_round_trip(
    app_client: TestClient, reader: Store, rows: list[dict]
) -> None:
    """A large body is read by the bulk JSON kernel (`pipelines.serving.bulkjson`), not orjson."""
    assert len(orjson.dumps({"records": rows})) >= 16_384
    ids = predicted(app_client, rows)
    table = (
        reader.lake.query(
            "SELECT prediction_id, features FROM lake.predictions WHERE prediction_id IN "
            "(SELECT unnest(?::VARCHAR[])) ORDER BY prediction_id",
            [ids],
        )
        .column(1)
        .to_pylist()
    )
    bad = [(w, h) for w, h in zip(rows, table, strict=True) if not exact(as_floats(w), h)]
    assert not bad, repr(bad[:1])[:600]


@SLOW
@given(who=printable, label=st.sampled_from([0, 1, "0", "1"]))
def test_feedback_and_queue_labels_round_trip(
    app_client: TestClient, reader: Store, who: str, label: Any
) -> None:
    (pid,) = predicted(app_client, [demo.records(SPLIT.live.head(1))[0]])
    r = app_client.post(
        "/feedback", json={"prediction_id": pid, "label": label, "who": who, "source": who}
    )
    assert r.status_code == 200, r.text
    row = reader.lake.query(
        "SELECT label, who, source FROM lake.feedback WHERE prediction_id = ?", [pid]
    ).to_pylist()
    assert row == [{"label": str(label), "who": who, "source": who}]
    # The same prediction answered in the labeling queue.
    state = state_of(app_client)
    ts = state.store.prediction(pid)["ts"]
    state.store.enqueue(
        pa.table(
            {
                "prediction_id": [pid],
                "score": [0.5],
                "model_version": ["1"],
                "prediction_ts": pa.array([ts], pa.timestamp("us", tz="UTC")),
            }
        )
    )
    r = app_client.post(f"/api/labeling-queue/{pid}/label", json={"label": label, "who": who})
    assert r.status_code == 200, r.text
    answers = reader.lake.query(
        "SELECT label, who FROM lake.labeling_queue WHERE prediction_id = ? AND event = 'labeled'",
        [pid],
    ).to_pylist()
    assert answers == [{"label": str(label), "who": who}]


@pytest.fixture(scope="module")
def fresh_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An API over an empty store: the first batch names the features and the label type."""
    app = create_app(make_settings(tmp_path_factory.mktemp("fresh") / "data"))
    with TestClient(app, base_url="http://localhost") as c:
        yield c


@SLOW
@given(labels=st.lists(texts, min_size=1, max_size=6), x=numbers)
def test_text_labels_round_trip(fresh_client: TestClient, labels: list[str], x: float) -> None:
    rows = [{"x": x, "name (text)": label} for label in labels]
    r = fresh_client.post("/ingest/batch", json={"records": rows, "labels": labels})
    assert r.status_code == 200, r.text
    store = state_of(fresh_client).store
    got = store.lake.query(
        "SELECT label, features FROM lake.ingested_rows WHERE batch_id = ? ORDER BY record_id",
        [r.json()["batch_id"]],
    ).to_pylist()
    assert [g["label"] for g in got] == labels
    assert all(
        exact(g["features"], {"x": stored_number(x), "name (text)": lab})
        for g, lab in zip(got, labels, strict=True)
    )


@SLOW
@given(
    box=st.lists(st.floats(0, 1e6), min_size=4, max_size=4),
    confidence=st.floats(0, 1),
    name=printable.filter(lambda s: len(s) <= 64),
    quality=st.fixed_dictionaries({k: numbers for k in FEATURE_COLUMNS}),
    fps=numbers,
    version=printable.filter(lambda s: len(s) <= 64),
    n=st.integers(0, 10**9),
)
def test_edge_logs_round_trip(
    app_client: TestClient,
    reader: Store,
    box: list[float],
    confidence: float,
    name: str,
    quality: dict[str, float],
    fps: float,
    version: str,
    n: int,
) -> None:
    box = [min(box[0], box[2]), min(box[1], box[3]), max(box[0], box[2]), max(box[1], box[3])]
    log = {
        "id": f"round-trip-{n}",
        "model_version": version,
        "detections": [{"box": box, "class": 1, "confidence": confidence, "name": name}],
        "quality": quality,
        "fps": fps,
    }
    r = app_client.post("/log", json=log)
    assert r.status_code == 200, r.text
    if not r.json()["stored"]:
        return  # hypothesis drew an id it had already sent
    state = state_of(app_client)
    state.image_log.flush()
    pid = r.json()["prediction_id"]
    (det,) = reader.lake.query(
        "SELECT x1, y1, x2, y2, class, confidence FROM lake.detections WHERE prediction_id = ?",
        [pid],
    ).to_pylist()
    assert exact([det["x1"], det["y1"], det["x2"], det["y2"]], [stored_number(v) for v in box])
    assert det["class"] == name and exact(det["confidence"], stored_number(confidence))
    (features,) = reader.lake.query(
        f"SELECT {', '.join(FEATURE_COLUMNS)}, fps FROM lake.image_features "
        "WHERE prediction_id = ?",
        [pid],
    ).to_pylist()
    assert exact(
        features, {**{k: stored_number(v) for k, v in quality.items()}, "fps": stored_number(fps)}
    )
    (stored_version,) = reader.lake.rows(
        "SELECT model_version FROM lake.predictions WHERE prediction_id = ?", [pid]
    )[0]
    assert stored_version == version and not math.isnan(fps)
