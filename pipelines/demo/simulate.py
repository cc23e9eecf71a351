"""`driftlab simulate`: live traffic and people, against a running API, to watch the loop turn.

The demo stream (`demo.replay`, `DRIFTLAB_DEMO`) is sent to POST /predict at a steady rate:
first rows of the population the champion was trained on, then the shift (on the default
digits demo, digits slanted and written with a thicker pen; on the survey, the older cohort).
Meanwhile it behaves like the people around a model: a downstream system sends the true label
back for a share of the predictions (POST /feedback), and a reviewer works through the labeling
queue, labeling most items with their true class and skipping the rest. With `make up` running,
the worker then sees the drift, the queue fills, the retraining policy's conditions become
true, a retrain runs and (on the digits) the new champion takes over; the progress bar shows
each of these as it happens. With a rollout (`DRIFTLAB_ROLLOUT`, shadow by default) the
retrained challenger first runs beside the champion: the simulation goes on sending the
shifted rows, with their feedback, until the live test promotes or stops it. Everything is
drawn from one seed, so two runs send the same requests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pandas as pd

from pipelines import demo
from pipelines.demo.datasets import DEFAULT_DEMO


@dataclass(frozen=True)
class SimulationConfig:
    """What the simulation sends, and how fast.

    Attributes:
        api: Base URL of the running API.
        in_distribution: Rows of the training population sent before the shift (at most the
            demo's: 200 digits, 967 survey answers).
        shifted: Rows of the shifted population (None: all of them, 697 digits or 2,496
            survey answers).
        rate: Rows per second.
        batch: Rows per /predict request.
        feedback_share: Share of predictions whose true label comes back as feedback.
        answer_share: Share of queue items the reviewer labels; the others are skipped.
        review_every: Seconds between the reviewer's visits to the queue.
        wait: Seconds to keep watching for a retrain after the stream ends.
        seed: Seeds the stream's order and every choice.
        api_key: Sent as X-API-Key when the API needs one.
        demo: Which demo stream (`DRIFTLAB_DEMO`): the API's model must have been trained
            on the same demo.
    """

    api: str = "http://127.0.0.1:8000"
    in_distribution: int = 600
    shifted: int | None = None
    rate: float = 40.0
    batch: int = 10
    feedback_share: float = 0.25
    answer_share: float = 0.8
    review_every: float = 5.0
    wait: float = 180.0
    seed: int = 0
    api_key: str | None = None
    demo: str = DEFAULT_DEMO

    def __post_init__(self) -> None:
        for name in ("feedback_share", "answer_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.rate <= 0 or self.batch < 1:
            raise ValueError("rate must be > 0 and batch >= 1")


@dataclass
class Tally:
    predictions: int = 0
    feedback: int = 0
    labeled: int = 0
    skipped: int = 0
    errors: int = 0


def parts(config: SimulationConfig) -> tuple[list[pd.DataFrame], str]:
    """The rows to send, in order (the training population, then the shift), and the label."""
    split = demo.demo_split(config.seed, name=config.demo)
    live = split.live.head(config.in_distribution)
    shifted = split.shifted if config.shifted is None else split.shifted.head(config.shifted)
    return [live, shifted], split.label


def stream(config: SimulationConfig) -> Iterator[tuple[list[dict[str, Any]], list[int]]]:
    """Batches of (records, true labels): the training population first, then the shift."""
    frames, label = parts(config)
    for part in frames:
        yield from _batches(part, label, config.batch)


def _batches(
    frame: pd.DataFrame, label: str, batch: int
) -> Iterator[tuple[list[dict[str, Any]], list[int]]]:
    for start in range(0, len(frame), batch):
        chunk = frame.iloc[start : start + batch]
        yield demo.records(chunk), chunk[label].tolist()


def run(config: SimulationConfig, *, progress: bool = True) -> dict[str, Any]:
    """Send the stream, answer feedback and the queue, then watch for a retrain; returns what
    happened (also printed by the CLI)."""
    from tqdm import tqdm

    headers = {"X-API-Key": config.api_key} if config.api_key else {}
    http = httpx.Client(base_url=config.api, timeout=30, headers=headers)
    rng = np.random.default_rng(config.seed)
    truth: dict[str, int] = {}
    tally = Tally()
    start_version = _wait_for_champion(http, timeout_s=120)
    frames = parts(config)[0]
    _check_same_demo(_status(http), list(demo.records(frames[0].head(1))[0]), config.demo)
    n_rows = sum(len(part) for part in frames)
    bar = tqdm(total=n_rows, unit="row", disable=not progress, desc="simulate")
    started = time.monotonic()
    next_review = started + config.review_every
    for records, labels in stream(config):
        if not _send(http, records, labels, truth, rng, config, tally):
            continue
        bar.update(len(records))
        if time.monotonic() >= next_review:
            _review(http, truth, rng, config, tally)
            bar.set_postfix(_postfix(http, tally), refresh=False)
            next_review = time.monotonic() + config.review_every
        # Keep the rate: sleep what is left of this batch's share of time.
        behind = started + tally.predictions / config.rate - time.monotonic()
        if behind > 0:
            time.sleep(behind)
    bar.close()

    deadline = time.monotonic() + config.wait
    status = _status(http)
    shifted = _cycle(frames[-1], parts(config)[1], config.batch)
    while time.monotonic() < deadline and status["version"] == start_version:
        _review(http, truth, rng, config, tally)
        if progress:
            print(f"  waiting for a retrain: {_line(_postfix(http, tally))}", flush=True)  # noqa: T201
        if _rollout_running(http):
            # The challenger is judged on live traffic: keep it coming, at the same rate.
            until = time.monotonic() + config.review_every
            while time.monotonic() < until:
                _send(http, *next(shifted), truth, rng, config, tally)
                time.sleep(config.batch / config.rate)
        else:
            time.sleep(config.review_every)
        status = _status(http)
    return {
        **tally.__dict__,
        "champion_before": start_version,
        "champion_after": status["version"],
        "drift": _get(http, "/api/metrics/drift", {}).get("dataset_drift"),
        "latest_retrain": (_get(http, "/api/retraining/status", {}) or {}).get("latest"),
        "rollout": _get(http, "/api/models/rollout", {}),
    }


def _send(
    http: httpx.Client,
    records: list[dict[str, Any]],
    labels: list[int],
    truth: dict[str, int],
    rng: np.random.Generator,
    config: SimulationConfig,
    tally: Tally,
) -> bool:
    """One /predict request, and the true labels of a share of its answers as feedback;
    False when the request failed."""
    r = _post(http, "/predict", {"records": records})
    if r is None or r.status_code != 200:
        tally.errors += 1
        return False
    out = r.json()
    tally.predictions += len(records)
    for pid, label in zip(out["prediction_ids"], labels, strict=True):
        truth[pid] = label
        if rng.random() < config.feedback_share:
            sent = _post(http, "/feedback", {"prediction_id": pid, "label": label})
            ok = sent is not None and sent.status_code == 200
            tally.feedback += ok
            tally.errors += not ok
    return True


def _cycle(
    frame: pd.DataFrame, label: str, batch: int
) -> Iterator[tuple[list[dict[str, Any]], list[int]]]:
    """The frame's rows in batches, over and over."""
    while True:
        yield from _batches(frame, label, batch)


def _rollout_running(http: httpx.Client) -> bool:
    return bool(_get(http, "/api/models/rollout", {}).get("state") == "running")


def _review(
    http: httpx.Client,
    truth: dict[str, int],
    rng: np.random.Generator,
    config: SimulationConfig,
    tally: Tally,
) -> None:
    """One visit of the reviewer: answer what is pending, most informative first."""
    items = _get(http, "/api/labeling-queue", {}, params={"limit": 20}).get("items", [])
    for item in items:
        pid = item["prediction_id"]
        if pid in truth and rng.random() < config.answer_share:
            body = {"label": truth[pid], "who": "simulate"}
            r = _post(http, f"/api/labeling-queue/{pid}/label", body)
            tally.labeled += r is not None and r.status_code == 200
        else:
            r = _post(http, f"/api/labeling-queue/{pid}/skip", {"who": "simulate"})
            tally.skipped += r is not None and r.status_code == 200
        tally.errors += r is None


def _post(http: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response | None:
    """POST, or None when the connection failed: a simulation counts errors and goes on, as
    a client of a flaky service would."""
    try:
        return http.post(path, json=body)
    except httpx.HTTPError:
        return None


def _wait_for_champion(http: httpx.Client, timeout_s: float) -> str:
    """The version the API serves, once it serves one (`make up` may still be training)."""
    deadline = time.monotonic() + timeout_s
    while (version := _status(http)["version"]) is None:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"no model served at {http.base_url} after {timeout_s:.0f} s: is `make up` running?"
            )
        time.sleep(1.0)
    return str(version)


def _check_same_demo(status: dict[str, Any], features: list[str], name: str) -> None:
    """Stop with a clear message when the served champion was trained on other features than
    the demo about to be sent (a store seeded with the other demo): every request would fail."""
    served = [f["name"] for f in status.get("features") or []]
    if served and set(served) != set(features):
        raise SystemExit(
            f"the served model takes {len(served)} features ({', '.join(served[:4])}, …), but the "
            f"{name!r} demo sends {len(features)} ({', '.join(features[:4])}, …): run "
            "`make simulate` with the DRIFTLAB_DEMO that `make up` seeded the store with "
            "(DRIFTLAB_DEMO=survey for a store seeded before digits became the default)"
        )


def _status(http: httpx.Client) -> dict[str, Any]:
    return _get(http, "/api/model-status", {"version": None})


def _get(http: httpx.Client, path: str, default: Any, **kwargs: Any) -> Any:
    try:
        r = http.get(path, **kwargs)
    except httpx.HTTPError:
        return default
    return r.json() if r.status_code == 200 else default


def _postfix(http: httpx.Client, tally: Tally) -> dict[str, Any]:
    drift = _get(http, "/api/metrics/drift", {})
    retrain = (_get(http, "/api/retraining/status", {}) or {}).get("latest") or {}
    return {
        "champion": _status(http)["version"],
        "drift": drift.get("drift_share"),
        "queue": _get(http, "/api/labeling-queue", {}, params={"limit": 1}).get("total"),
        "labeled": tally.labeled,
        "retrain": retrain.get("status", "-"),
        "rollout": _rollout_figures(_get(http, "/api/models/rollout", {})),
    }


def _rollout_figures(status: dict[str, Any]) -> str:
    """The running rollout in a few words: mode, challenger, labels and verdict so far."""
    if status.get("state") != "running":
        return "-"
    verdict = status["verdict"]
    counts = verdict["comparison"]["counts"]
    labels = counts.get("n", counts.get("n_challenger", 0))
    return f"{status['mode']} v{status['challenger_version']} {labels} labels {verdict['action']}"


def _line(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())
