"""`driftlab simulate` against a real API and worker: traffic, feedback and a reviewer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pipelines.demo.simulate import SimulationConfig, run
from tests.helpers import ApiServer, CliProcess

pytestmark = pytest.mark.e2e

FAST = {
    "DRIFTLAB_FLUSH_INTERVAL": "0.2",
    "DRIFTLAB_CHECK_INTERVAL": "2",
    "DRIFTLAB_QUEUE_INTERVAL": "1",
    "DRIFTLAB_RETRAIN_AUTO": "false",
}


def test_simulation_sends_traffic_feedback_and_answers_the_queue(trained_copy: Path) -> None:
    api = ApiServer(trained_copy, **FAST)
    worker = CliProcess(trained_copy, "worker", **FAST)
    api.start()
    worker.start()
    try:
        # The store holds the survey: the default digits stream is refused before any request.
        with pytest.raises(SystemExit, match="DRIFTLAB_DEMO=survey"):
            run(SimulationConfig(api=api.url), progress=False)
        config = SimulationConfig(
            api=api.url,
            in_distribution=100,
            shifted=300,
            rate=100.0,
            batch=20,
            feedback_share=0.05,
            review_every=1.0,
            wait=8,  # the reviewer keeps visiting the queue after the stream
            seed=3,
            demo="survey",  # what the shared trained store was seeded with
        )
        out = run(config, progress=False)
        again = {"predictions": 400, "errors": 0}
        assert {k: out[k] for k in again} == again
        assert 8 < out["feedback"] < 40  # 5% of 400, drawn from the seed
        assert out["labeled"] > 0 and out["labeled"] + out["skipped"] > 0
        assert out["drift"] is True  # the worker saw the shift
        http = httpx.Client(base_url=api.url)
        labeled = http.get("/api/labeling-queue", params={"status": "labeled"}).json()
        assert labeled["total"] == out["labeled"]
        assert {i["who"] for i in labeled["items"]} == {"simulate"}
    finally:
        worker.stop()
        api.stop()
