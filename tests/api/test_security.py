"""A hostile client against the API: nothing it sends may corrupt the store, run SQL, exhaust
the server, or write from another site's page. Each test is one finding of a bad-input and
security battery; together they are the contract `api.guard` and the store keep."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from pipelines import demo
from pipelines.cli import build_parser
from pipelines.loop import retraining_runs
from pipelines.schema import FEATURE_NAME_RULE
from pipelines.store import Store
from tests.conftest import make_settings
from tests.helpers import ApiServer

GOOD = demo.records(demo.demo_split(name="survey").live.head(3))
KEY = "s3cret"


def local(app: Any) -> TestClient:
    return TestClient(app, base_url="http://localhost")


def rows_of(settings_dir: Path, table: str) -> int:
    store = Store.open(make_settings(settings_dir), read_only=True)
    try:
        return int(store.lake.scalar(f"SELECT count(*) FROM lake.{table}"))
    finally:
        store.close()


# -- the store: names never reach SQL unquoted, a refused first batch writes nothing ----------


def test_a_feature_name_cannot_run_sql_and_is_refused_with_the_rule(tmp_path: Path) -> None:
    data = tmp_path / "data"
    target = tmp_path / "file.csv"
    injection = f"x\" DOUBLE); COPY (SELECT 42 AS answer) TO '{target}'; --"
    with local(create_app(make_settings(data))) as c:
        for names in ([injection], ['a"b'], [""], ["a", "A"], ["x" * 65], [" x"]):
            record = {name: float(i) for i, name in enumerate(names)}
            r = c.post("/ingest/batch", json={"records": [record], "labels": [0]})
            assert r.status_code == 422, (names, r.text)
            assert "feature name" in r.json()["detail"]
        assert (
            FEATURE_NAME_RULE
            in c.post("/ingest/batch", json={"records": [{injection: 1.0}]}).json()["detail"]
        )
        assert not target.exists()
        assert rows_of(data, "datasets") == 0
        ok = c.post(
            "/ingest/batch",
            json={"records": [{"petal length (cm)": 1.5, "größe": "a"}], "labels": [0]},
        )
        assert ok.status_code == 200, ok.text
        assert ok.json()["features"] == ["petal length (cm)", "größe"]
        again = c.post("/ingest/batch", json={"records": [{"petal length (cm)": 2, "größe": "b"}]})
        assert again.status_code == 200


def test_a_refused_first_batch_fixes_no_schema(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with local(create_app(make_settings(data))) as c:
        r = c.post("/ingest/batch", json={"records": [{"x": 1.0, "c": "a"}], "labels": [1.5]})
        assert r.status_code == 422 and "1.5" in r.json()["detail"]
        r = c.post("/ingest/batch", json={"records": [{"x": 1.0, "c": 5}, {"x": 2.0, "c": "a"}]})
        assert r.status_code == 422
        assert rows_of(data, "datasets") == 0 and rows_of(data, "ingested_rows") == 0
        ok = c.post("/ingest/batch", json={"features": [[1.0, 2.0, 3.0]], "labels": ["a"]})
        assert ok.status_code == 200 and ok.json()["features"] == ["f0", "f1", "f2"]


def test_negative_zero_is_stored_as_zero_and_breaks_no_read(client: TestClient) -> None:
    """`-0.0` in an inlined STRUCT breaks every later read of its table, so it is stored as
    0.0 (see `pipelines.schema.stored_number`) and every reader keeps working."""
    row = [-0.0, 27, 13, 3, 1, 14, "white-collar", "professional"]
    out = client.post("/predict", json={"features": [row]})
    assert out.status_code == 200
    pid = out.json()["prediction_ids"][0]
    state = client.app.state.driftlab  # type: ignore[attr-defined]
    state.log.flush()
    ingested = client.post("/ingest/batch", json={"features": [row], "labels": [1]})
    assert ingested.status_code == 200
    logs = client.get("/api/inspection-logs", params={"limit": 5})
    assert logs.status_code == 200
    (item,) = [i for i in logs.json()["items"] if i["prediction_id"] == pid]
    assert str(item["features"]["rate_marriage"]) == "0.0"
    assert client.post("/monitoring/run").status_code == 200
    trained_on = state.store.labeled_rows()  # what a retrain reads
    at = trained_on.record_ids.index(f"{ingested.json()['batch_id']}:0")
    assert str(trained_on.columns["rate_marriage"][at]) == "0.0"


# -- limits before work -----------------------------------------------------------------------

WRITES = [
    ("/feedback", {"prediction_id": "x", "label": 1}),
    ("/api/labeling-queue/x/label", {"label": 1}),
    ("/api/labeling-queue/x/skip", {"who": "a"}),
    ("/api/models/promote", {"version": "1"}),
    ("/api/models/rollback", {}),
    ("/api/retraining/trigger", {}),
    ("/webhook/alert", {"alerts": []}),
    ("/ingest/batch", {"records": GOOD}),
    ("/predict", {"records": GOOD}),
]


@pytest.fixture(scope="module")
def keyed(trained_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """An app with a key and a 1 MB body limit, shared by tests whose requests it refuses."""
    data = tmp_path_factory.mktemp("keyed") / "data"
    shutil.copytree(trained_dir, data)
    with local(create_app(make_settings(data, api_key=KEY, max_body_bytes=1_000_000))) as c:
        yield c


@pytest.mark.parametrize(("path", "body"), WRITES)
def test_every_write_checks_key_size_and_type_before_its_body(
    keyed: TestClient, path: str, body: dict
) -> None:
    big = b'{"x": "' + b"a" * 2_000_000 + b'"}'
    r = keyed.post(path, content=big, headers={"content-type": "application/json"})
    assert r.status_code == 401, r.text  # the key first: an anonymous body is never read
    assert r.headers["www-authenticate"] == "Bearer"
    key = {"X-API-Key": KEY}
    r = keyed.post(path, content=big, headers={**key, "content-type": "application/json"})
    assert r.status_code == 413 and "1000000-byte limit" in r.json()["detail"]
    r = keyed.post(path, content=orjson.dumps(body), headers={**key, "content-type": "text/plain"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_ndjson_stream_is_limited_like_any_body(trained_copy: Path) -> None:
    app = create_app(make_settings(trained_copy, max_body_bytes=1_000_000))
    line = orjson.dumps({"record": GOOD[0]}) + b"\n"
    with local(app) as c:
        r = c.post(
            "/ingest/stream",
            content=line * (1_000_000 // len(line) + 1),
            headers={"content-type": "application/x-ndjson"},
        )
        assert r.status_code == 413
        r = c.post("/ingest/stream", content=line, headers={"content-type": "text/csv"})
        assert r.status_code == 415 and "application/x-ndjson" in r.json()["detail"]


def raw_request(port: int, head: bytes, body: bytes = b"", *, wait: float = 10.0) -> bytes:
    """Send `head` (and `body`) on a fresh connection; the answer, as far as it came."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(head + body)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks):
                    break
        except TimeoutError:
            pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer else 0


@pytest.fixture
def server(trained_copy: Path) -> Any:
    api = ApiServer(trained_copy, DRIFTLAB_API_KEY=KEY, DRIFTLAB_MAX_BODY_BYTES="1000000")
    api.start()
    yield api
    api.stop()


def rss_peak_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.e2e
def test_a_real_server_answers_before_reading_what_it_refuses(server: ApiServer) -> None:
    port = server.port
    head = f"POST /feedback HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode()
    # A declared length over the limit with 8 bytes sent: 413 at once, not a wait.
    lying = raw_request(
        port,
        head + b"X-API-Key: s3cret\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2000000\r\n\r\n",
        b'{"a": 1}',
    )
    assert status_of(lying) == 413, lying
    # Chunked, without a key: 401 before a single chunk.
    anonymous = raw_request(
        port, head + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert status_of(anonymous) == 401, anonymous
    # Not HTTP at all: uvicorn's own 400, as JSON like every other error.
    garbage = raw_request(port, b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
    assert status_of(garbage) == 400
    assert orjson.loads(garbage.split(b"\r\n\r\n", 1)[1])["detail"].startswith("malformed HTTP")

    # Headers without end: 431 past 1 MB, not 100 MB held.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for i in range(3000):
                sock.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 32768))
        except OSError:
            pass  # answered and closed
        answer = sock.recv(65536)
    assert status_of(answer) == 431, answer
    assert "headers are over" in orjson.loads(answer.split(b"\r\n\r\n", 1)[1])["detail"]
    # 48 MB chunked, with and without the key: refused after the first chunks, and the server
    # holds about the limit meanwhile, never the body.
    pid = server.proc.pid  # type: ignore[union-attr]
    before = rss_peak_kb(pid)
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"
    for key, refusal in ((b"", 401), (b"X-API-Key: s3cret\r\n", 413)):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                head + key + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            for _ in range(20):  # 1.3 MB: past the 1 MB limit
                sock.sendall(chunk)
            assert status_of(sock.recv(65536)) == refusal
            try:
                for _ in range(48 * 16 - 20):
                    sock.sendall(chunk)
            except OSError:
                pass  # the server closed the connection: fine too
    assert rss_peak_kb(pid) - before < 40_000  # kB


# -- same origin ---------------------------------------------------------------------------


def test_cross_site_writes_and_foreign_hosts_are_refused(client: TestClient) -> None:
    before = client.get("/api/metrics").json()["rows"]["ingested_rows"]
    form = client.post(
        "/ingest/batch",
        content=orjson.dumps({"records": GOOD}),
        headers={"content-type": "text/plain"},
    )
    assert form.status_code == 415
    foreign = client.post(
        "/ingest/batch", json={"records": GOOD}, headers={"origin": "http://evil.example"}
    )
    assert foreign.status_code == 403 and "evil.example" in foreign.json()["detail"]
    assert (
        client.post("/predict", json={"records": GOOD}, headers={"origin": "null"}).status_code
        == 403
    )
    rebound = client.get("/api/metrics", headers={"host": "evil.example:8000"})
    assert rebound.status_code == 400 and "DRIFTLAB_ALLOWED_HOSTS" in rebound.json()["detail"]
    assert client.get("/api/metrics").json()["rows"]["ingested_rows"] == before
    own = client.post(
        "/ingest/batch", json={"records": GOOD}, headers={"origin": "http://localhost"}
    )
    assert own.status_code == 200, own.text


def test_allowed_hosts_and_origins_are_settings(trained_copy: Path) -> None:
    settings = make_settings(
        trained_copy,
        allowed_hosts="driftlab.example",
        allowed_origins="https://ui.example",
    )
    with TestClient(create_app(settings), base_url="http://driftlab.example") as c:
        assert c.get("/health").status_code == 200
        r = c.post("/predict", json={"records": GOOD}, headers={"origin": "https://ui.example"})
        assert r.status_code == 200
        r = c.post("/predict", json={"records": GOOD}, headers={"origin": "https://other.example"})
        assert r.status_code == 403
    anywhere = make_settings(trained_copy, allowed_hosts="*")
    with TestClient(create_app(anywhere), base_url="http://any.example") as c:
        assert c.get("/health").status_code == 200


# -- keys, and the low findings ------------------------------------------------------------


def test_the_key_is_compared_as_bytes_once_and_also_taken_as_bearer(trained_copy: Path) -> None:
    with local(create_app(make_settings(trained_copy, api_key=KEY))) as c:
        for path in ("/predict", "/feedback"):
            body = {"records": GOOD} if path == "/predict" else {"prediction_id": "x", "label": 1}
            r = c.post(path, json=body, headers={"X-API-Key": "s3crét".encode()})
            assert r.status_code == 401, (path, r.text)
            r = c.post(path, json=body, headers=[("X-API-Key", KEY), ("X-API-Key", "wrong")])
            assert r.status_code == 400 and "one X-API-Key" in r.json()["detail"]
            r = c.post(path, json=body, headers=[("X-API-Key", "wrong"), ("X-API-Key", KEY)])
            assert r.status_code == 400
        r = c.post("/predict", json={"records": GOOD}, headers={"Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200
        r = c.post("/predict", json={"records": GOOD}, headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        spec = c.get("/openapi.json").json()
        assert set(spec["components"]["securitySchemes"]) == {"APIKey", "Bearer"}
        assert spec["paths"]["/feedback"]["post"]["security"]
        assert "security" not in spec["paths"]["/health"]["get"]


def test_low_findings_are_4xx_that_name_the_problem(client: TestClient) -> None:
    r = client.get("/api/inspection-logs", params={"since": "2026-01-01T00:00:00"})
    assert r.status_code == 422 and "timezone" in r.json()["detail"]
    ok = client.get("/api/inspection-logs", params={"since": "2026-01-01T00:00:00Z"})
    assert ok.status_code == 200
    far = "ffffffffffff7" + "0" * 19  # an id whose embedded time is past the year 9999
    r = client.post("/feedback", json={"prediction_id": far, "label": 1})
    assert r.status_code == 404
    pid = client.post("/predict", json={"records": GOOD[:1]}).json()["prediction_ids"][0]
    for body in ({"label": True}, {"label": 1.0}, {"correct": "yes"}, {"correct": 1}):
        r = client.post("/feedback", json={"prediction_id": pid, **body})
        assert r.status_code == 422, (body, r.text)
    r = client.post("/api/labeling-queue/x/label", json={"label": True})
    assert r.status_code == 422
    r = client.get("/no/such/route")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}


def test_error_messages_never_echo_a_large_input(client: TestClient) -> None:
    huge = "a" * 900_000
    bodies = [
        ("/predict", {"records": [{**GOOD[0], "occupation": 1, "age": huge}]}),
        ("/predict", {"records": [{**GOOD[0], huge: 1}]}),
        ("/predict", {"records": GOOD, huge: 1}),
        ("/ingest/batch", {"records": GOOD, "labels": [huge, 0, 1]}),
        ("/ingest/batch", {"records": GOOD, "batch_id": huge}),
        ("/feedback", {"prediction_id": "x", "label": huge}),
        ("/feedback", {"prediction_id": huge, "label": 1}),
        ("/api/labeling-queue/x/label", {"label": 1, "who": huge}),
        ("/api/models/promote", {"version": huge}),
    ]
    for path, body in bodies:
        r = client.post(path, json=body)
        assert 400 <= r.status_code < 500, (path, r.status_code)
        assert len(r.content) < 2_000, (path, r.content[:300])


def test_the_retrain_command_line_takes_client_text_as_values_only(
    trained_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Client text reaches the retrain's argument parser only as a value: a `who` of "--help"
    taken as an option would print the help instead of running, leaving the run `queued`."""
    started: list[list[str]] = []

    class Recorder:
        def __init__(self, command: list[str], **_: Any) -> None:
            started.append(command)

    settings = make_settings(trained_copy)
    with local(create_app(settings)) as c:
        monkeypatch.setattr(subprocess, "Popen", Recorder)  # the app has started: no more need
        r = c.post("/api/retraining/trigger", json={"who": "--help", "reason": "--no-promote"})
        assert r.status_code == 202, r.text
        assert not r.json()["log"].startswith("/") and str(trained_copy) not in r.text
        assert r.json()["log"] == f"logs/retrain-{r.json()['event_id']}.log"
    (command,) = started
    assert command[:4] == [sys.executable, "-m", "pipelines.cli", "retrain"]
    args = build_parser().parse_args(command[3:])
    assert args.who == "--help" and orjson.loads(args.reasons) == ["--no-promote"]
    assert not args.no_promote


def test_status_and_history_show_no_server_paths(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = client.app.state.driftlab  # type: ignore[attr-defined]
    settings = state.settings
    # The run's paths are what is tested, not its training.
    monkeypatch.setattr(
        retraining_runs,
        "_train_and_gate",
        lambda *a, **k: {"status": "rejected", "decision": {"promote": False}},
    )
    retraining_runs.run(
        settings,
        state.store,
        state.registry,
        notebook=str(settings.runs_dir / "retrain-x.ipynb"),
        promote=False,
    )
    text = client.get("/api/retraining/status").text + client.get("/api/retraining/history").text
    assert str(settings.data_dir) not in text
    assert "runs/retrain-x.ipynb" in text
