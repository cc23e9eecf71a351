"""Every bad input is a 4xx with a message that names the problem; nothing is stored."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from pipelines import demo

GOOD = demo.records(demo.demo_split(name="survey").live.head(3))
NAMES = list(GOOD[0])


def row(**change: object) -> dict:
    return {**GOOD[0], **change}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"features": [[1, 2]]}, "has 2 values, expected 8"),
        ({"features": [[4, 27, 6, 1, 3, 14, "white-collar"]]}, "expected 8"),
        ({"records": [row(height=3)]}, "unknown feature(s) ['height']"),
        (
            {"records": [{k: v for k, v in GOOD[0].items() if k != "age"}]},
            "missing feature(s) ['age']",
        ),
        ({"records": [row(age="old")]}, "feature 'age': expected a finite number, got 'old'"),
        ({"records": [row(age=True)]}, "feature 'age': expected a finite number, got True"),
        ({"records": [row(occupation=3)]}, "feature 'occupation': expected text"),
        ({"features": []}, "no rows"),
        ({"records": []}, "no rows"),
        ({}, 'give exactly one of "features"'),
        ({"features": [[1] * 8], "records": GOOD}, 'give exactly one of "features"'),
        ({"features": "abc"}, '"features" has the wrong type'),
        ({"features": [[1] * 8], "extra": 1}, "unknown field(s) ['extra']"),
        ([1, 2], "must be a JSON object"),
        ({"features": [None]}, "features[0] must be a list"),
    ],
)
def test_predict_rejects(refusing_client: TestClient, body: object, message: str) -> None:
    r = refusing_client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize("raw", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_predict_rejects_non_finite(refusing_client: TestClient, raw: bytes) -> None:
    body = b'{"features": [[4, %s, 6, 1, 3, 14, "white-collar", "professional"]]}' % raw
    r = refusing_client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert "age" in r.json()["detail"] or "JSON" in r.json()["detail"]


MANY = 300  # good rows before a bad one: the body is over bulkjson.MIN_BYTES (fast path first)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"features": [[1, 2]]}, f"features[{MANY}] has 2 values, expected 8"),
        ({"records": [row(height=3)]}, f"records[{MANY}]: unknown feature(s) ['height']"),
        ({"records": [row(age="old")]}, f"row {MANY}, feature 'age': expected a finite number"),
        ({"records": [row(age=None)]}, f"row {MANY}, feature 'age': expected a finite number"),
        ({"records": [row(occupation=3)]}, f"row {MANY}, feature 'occupation': expected text"),
        ({"records": [row()], "extra": 1}, "unknown field(s) ['extra']"),
    ],
)
def test_a_large_body_gets_the_same_messages(
    refusing_client: TestClient, body: dict, message: str
) -> None:
    form = "features" if "features" in body else "records"
    good = [list(r.values()) for r in GOOD] if form == "features" else GOOD
    large = {**body, form: good * (MANY // len(GOOD)) + body[form]}
    for path in ("/predict", "/ingest/batch"):
        r = refusing_client.post(path, json=large)
        assert r.status_code == 422, r.text
        assert message in r.json()["detail"]


def test_a_large_body_is_answered_as_its_rows_one_by_one(client: TestClient) -> None:
    rows = demo.records(demo.demo_split(name="survey").live.head(400))
    names = list(rows[0])
    large = client.post("/predict", json={"features": [[r[k] for k in names] for r in rows]})
    assert large.status_code == 200, large.text
    alone = [client.post("/predict", json={"records": [r]}).json() for r in rows[:40]]
    got = large.json()
    assert got["predictions"][:40] == [a["predictions"][0] for a in alone]
    assert got["class_probabilities"][:40] == [a["class_probabilities"][0] for a in alone]
    labels = [i % 2 for i in range(len(rows))]
    r = client.post("/ingest/batch", json={"records": rows, "labels": labels, "batch_id": "big"})
    assert r.status_code == 200 and r.json()["rows"] == 400 and r.json()["labeled"] == 400


def test_invalid_json_and_empty_body(client: TestClient) -> None:
    r = client.post("/predict", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
    r = client.post("/predict", content=b"")
    assert r.status_code == 422 and "empty request body" in r.json()["detail"]


def test_oversized_body_is_413(trained_copy, tmp_path) -> None:
    from api.main import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(trained_copy, max_body_bytes=1000))
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/predict", json={"records": GOOD * 50})
        assert r.status_code == 413 and "limit" in r.json()["detail"]
        r = c.post("/ingest/batch", json={"records": GOOD * 50})
        assert r.status_code == 413


def test_too_many_rows(trained_copy) -> None:
    from api.main import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(trained_copy, max_rows_per_request=2))
    with TestClient(app, base_url="http://localhost") as c:
        r = c.post("/predict", json={"records": GOOD})
        assert (
            r.status_code == 422 and "3 rows in one request; the limit is 2" in r.json()["detail"]
        )
        for path in ("/predict", "/ingest/batch"):  # large bodies: read by the fast path
            r = c.post(path, json={"records": GOOD * 100})
            assert r.status_code == 422
            assert "300 rows in one request; the limit is 2" in r.json()["detail"]


def test_bad_ingest_stores_nothing(client: TestClient) -> None:
    before = client.get("/api/metrics").json()["rows"]["ingested_rows"]
    for body, message in [
        ({"records": GOOD, "labels": [0, 1]}, "2 labels for 3 rows"),
        ({"records": GOOD, "labels": [0, 1, "x"]}, "not an integer class label"),
        ({"records": GOOD, "batch_id": 5}, '"batch_id" has the wrong type'),
    ]:
        r = client.post("/ingest/batch", json=body)
        assert r.status_code == 422, (body, r.text)
        assert message in r.json()["detail"]
    raw = b'{"features": [[4, NaN, 6, 1, 3, 14, "white-collar", "professional"]]}'
    r = client.post("/ingest/batch", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422
    r = client.post(
        "/ingest/stream",
        content=b'{"record": {"age": 1}}\n{"bad json\n',
        headers={"content-type": "application/x-ndjson"},
    )
    assert r.status_code == 422 and "line 1" in r.json()["detail"]
    assert client.get("/api/metrics").json()["rows"]["ingested_rows"] == before


def test_feedback_errors(client: TestClient) -> None:
    pid = client.post("/predict", json={"records": GOOD[:1]}).json()["prediction_ids"][0]
    r = client.post("/feedback", json={"prediction_id": "no-such-id", "label": 1})
    assert r.status_code == 404 and "no prediction with id" in r.json()["detail"]
    r = client.post("/feedback", json={"prediction_id": pid})
    assert r.status_code == 422 and 'give "label"' in r.json()["detail"]
    r = client.post("/feedback", json={"prediction_id": pid, "label": 9})
    assert r.status_code == 422 and "not one of the classes [0, 1]" in r.json()["detail"]
    r = client.post("/feedback", json={"prediction_id": pid, "label": 1})
    assert r.status_code == 200 and r.json()["correct"] in (True, False)


def test_predict_before_any_model_is_503_and_ingest_fixes_schema(empty_client: TestClient) -> None:
    r = empty_client.post("/predict", json={"features": [[1.0, 2.0]]})
    assert r.status_code == 503 and "no model is being served yet" in r.json()["detail"]
    assert r.headers["retry-after"] == "2"  # the champion alias is polled every 2 s
    r = empty_client.post(
        "/ingest/batch", json={"features": [[1.0, 2.0], [3.0, 4.0]], "labels": [0, 1]}
    )
    assert r.status_code == 200 and r.json()["features"] == ["f0", "f1"]
    r = empty_client.post("/ingest/batch", json={"features": [[1.0, 2.0, 3.0]]})
    assert r.status_code == 422 and "expected 2" in r.json()["detail"]


def test_write_endpoints_need_the_api_key(trained_copy) -> None:
    from api.main import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(trained_copy, api_key="s3cret"))
    with TestClient(app, base_url="http://localhost") as c:
        assert c.post("/predict", json={"records": GOOD}).status_code == 401
        assert c.post("/ingest/batch", json={"records": GOOD}).status_code == 401
        assert c.post("/feedback", json={"prediction_id": "x", "label": 1}).status_code == 401
        ok = c.post("/predict", json={"records": GOOD}, headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        assert c.get("/health").status_code == 200  # reads stay open


def test_the_fast_path_answers_as_the_documented_route(trained_copy) -> None:
    """`PredictFastPath` answers /predict ahead of FastAPI; the route it shadows (what OpenAPI
    documents) must give the same statuses and messages."""
    from api.main import create_app
    from api.routes.predict import PredictFastPath
    from tests.conftest import make_settings

    bodies = [
        b'{"records": ' + orjson.dumps(GOOD) + b"}",
        b'{"features": [[1, 2]]}',
        b"not json",
        b"",
        b'{"records": [], "extra": 1}',
        b'{"features": [[1e999, 27, 6, 1, 3, 14, "white-collar", "managerial/business"]]}',
        b'{"records": ' + orjson.dumps(GOOD * 40) + b"}",  # over the body limit
    ]
    answers = {}
    for fast in (True, False):
        app = create_app(make_settings(trained_copy, max_body_bytes=4000, api_key="k"))
        if not fast:
            app.user_middleware = [m for m in app.user_middleware if m.cls is not PredictFastPath]
        with TestClient(app, base_url="http://localhost") as c:
            headers = {"X-API-Key": "k", "Content-Type": "application/json"}
            got = [c.post("/predict", content=b, headers=headers) for b in bodies]
            got.append(c.post("/predict", content=bodies[0], headers={"X-API-Key": "wrong"}))
            answers[fast] = [(r.status_code, _comparable(r.json())) for r in got]
    assert answers[True] == answers[False]
    assert [status for status, _ in answers[True]] == [200, 422, 422, 422, 422, 422, 413, 401]


def _comparable(body: dict) -> dict:
    """An answer without what differs between two calls (ids, and nothing else)."""
    return {k: v for k, v in body.items() if k != "prediction_ids"}
