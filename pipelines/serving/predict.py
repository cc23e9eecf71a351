"""The prediction path shared by the API and the dashboard: validate, predict, flag, log.

`predict` answers one request. `predict_many` answers several validated requests with one model
call and one log write; `Batcher` feeds it the requests that reach the API's event loop in the
same turn (opportunistic micro-batching, like Triton's dynamic batcher with no added delay: a
lone request is answered at once, a burst shares the fixed costs of the model call, the ids, the
spool write and the metrics).

A `Shadow` (a running shadow rollout and its log) makes the challenger answer the shadowed
requests in the same call: one more model call on the same encoded rows, its answers logged
to `shadow_predictions` under the served ids, never returned. A failing shadow is logged and
counted; the served answers go out all the same.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.schema import SchemaError
from pipelines.serving.band import Band
from pipelines.serving.model import ServingModel
from pipelines.serving.rollout import LiveRollout
from pipelines.serving.shadow_log import ShadowLog
from pipelines.store.ids import request_ids
from pipelines.store.spool import PredictionLog

logger = logging.getLogger(__name__)

Columns = dict[str, np.ndarray]
"""A validated request: one array per feature (`FeatureSchema.columns`)."""


@dataclass(frozen=True)
class Shadow:
    """A shadow rollout to run beside the champion, and the log of its answers."""

    rollout: LiveRollout
    log: ShadowLog


def predict(
    model: ServingModel,
    log: PredictionLog,
    band: Band,
    *,
    features: list[list[Any]] | None = None,
    records: list[dict[str, Any]] | None = None,
    max_rows: int | None = None,
    shadow: Shadow | None = None,
) -> dict[str, Any]:
    """Predict a payload and log every row durably before returning the answer."""
    started = time.perf_counter()
    columns = model.schema.columns(features, records, max_rows=max_rows)
    shadowed = [shadow is not None and shadow.rollout.shadows()]
    return predict_many(model, log, band, [(columns, started)], shadow, shadowed)[0]


def predict_many(
    model: ServingModel,
    log: PredictionLog,
    band: Band,
    requests: Sequence[tuple[Columns, float]],
    shadow: Shadow | None = None,
    shadowed: Sequence[bool] = (),
) -> list[dict[str, Any]]:
    """Answer validated requests (columns, perf_counter at their start) with one model call,
    logging all their rows durably in one spool write before any answer is returned; with
    `shadow`, the requests flagged in `shadowed` are answered by the shadow too (logged,
    not returned)."""
    schema, classes = model.schema, model.classes
    if not classes:
        raise SchemaError("the serving model has no classes")
    sizes = [len(next(iter(columns.values()))) for columns, _ in requests]
    if len(requests) == 1:
        columns = requests[0][0]
    else:
        columns = {
            f.name: np.concatenate([c[f.name] for c, _ in requests]) for f in schema.features
        }
    x = schema.encode(columns)
    index, proba = model.predict(x)
    # Plain lists for the answers (one conversion each; the log record shares a few of them).
    labels = model.class_array[index].tolist()
    confidence = proba.max(axis=1)  # the probability of the argmax class
    uncertain = band.uncertain(confidence).tolist()
    confidence_list = confidence.tolist()
    proba_list = proba.tolist()  # one small list per row: the answers' only, see `log.append`
    done, ts = time.perf_counter(), time.time()
    answers, ids, id_ranges, latency_ms = [], [], [], []
    start = 0
    for (_, started), n in zip(requests, sizes, strict=True):
        rows = slice(start, start + n)
        start += n
        # The ids carry `ts` (feedback finds them without a scan) and share a request part.
        request, row_ids = request_ids(n, ts)
        ids += row_ids
        id_ranges.append((request, n))
        latency_ms += [(done - started) * 1000.0] * n
        answers.append(
            {
                "predictions": labels[rows],
                "probabilities": confidence_list[rows],
                "class_probabilities": proba_list[rows],
                "classes": list(classes),
                "prediction_ids": row_ids,
                "model_version": model.version,
                "uncertain": uncertain[rows],
            }
        )
    log.append(
        {
            "ids": ids,
            "id_ranges": id_ranges,
            "ts": ts,
            "model_name": model.name,
            "model_version": model.version,
            # Arrays, not lists: the buffer holds up to `flush_interval` seconds of rows, and
            # a list per row (the probabilities) would give the cyclic GC 10k objects to walk
            # per buffered 10k-row request; the flusher also concatenates arrays faster.
            "features": columns,
            "prediction": model.class_texts[index].tolist(),
            "confidence": confidence,
            "probabilities": proba,
            "latency_ms": latency_ms,
            "uncertain": uncertain,
        }
    )
    if shadow is not None and any(shadowed):
        _run_shadow(shadow, model, columns, x, ids, sizes, shadowed, ts)
    return answers


def _run_shadow(
    shadow: Shadow,
    champion: ServingModel,
    columns: Columns,
    x: np.ndarray,
    ids: list[str],
    sizes: list[int],
    shadowed: Sequence[bool],
    ts: float,
) -> None:
    """The shadow's answers to the flagged requests' rows, logged under their served ids."""
    try:
        challenger = shadow.rollout.model
        rows = np.concatenate(
            [
                np.arange(start, start + n)
                for start, n, on in zip(np.cumsum([0, *sizes[:-1]]), sizes, shadowed, strict=True)
                if on
            ]
        )
        every = len(rows) == len(ids)
        if challenger.schema == champion.schema:  # same categories: the same encoded rows
            xs = x if every else x[rows]
        else:
            xs = challenger.schema.encode(
                columns if every else {k: v[rows] for k, v in columns.items()}
            )
        index, proba = challenger.predict(xs)
        shadow.log.append(
            {
                "ids": ids if every else [ids[i] for i in rows],
                "ts": ts,
                "rollout_id": shadow.rollout.rollout_id,
                "model_name": challenger.name,
                "model_version": challenger.version,
                "prediction": challenger.class_texts[index].tolist(),
                "confidence": proba.max(axis=1),
                "probabilities": proba,
            }
        )
        shadow.log.answered += len(rows)
    except Exception:  # the served answers stand; the shadow's failure is counted
        shadow.log.failed += 1
        logger.exception("shadow v%s failed", shadow.rollout.model.version)


class Batcher:
    """Predicts together the requests that reach the event loop in the same turn.

    `predict` queues a validated request and, if it is the first in the queue, schedules one
    run with `call_soon`: the run comes after every request task that is already runnable has
    reached its own `await`, so all requests read in one wakeup share a model call, and no
    request waits for a timer. Requests of `alone_rows` rows or more skip the queue (a 10k-row
    batch would hold up the single rows behind it, and has nothing to gain) and are answered
    on a worker thread, so the loop goes on serving while they run.
    """

    def __init__(self, log: PredictionLog, band: Band, *, alone_rows: int = 256) -> None:
        self.log = log
        self.band = band
        self.alone_rows = alone_rows
        self._queue: list[tuple[ServingModel, Columns, float, asyncio.Future, Shadow | None]] = []
        self.batches = 0  # model calls made, and the requests they answered
        self.requests = 0

    async def predict(
        self, model: ServingModel, columns: Columns, started: float, shadow: Shadow | None = None
    ) -> dict:
        """The answer to one validated request; with `shadow`, the shadow answers it too."""
        if len(next(iter(columns.values()))) >= self.alone_rows:
            self._count(1)
            # On a worker thread: the event loop reads and parses the next requests while
            # the model call and the spool write of this one run without the GIL.
            answers = await asyncio.to_thread(
                predict_many,
                model,
                self.log,
                self.band,
                [(columns, started)],
                shadow,
                [shadow is not None],
            )
            return answers[0]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._queue:
            loop.call_soon(self._run)
        self._queue.append((model, columns, started, future, shadow))
        return await future

    def _run(self) -> None:
        queue, self._queue = self._queue, []
        groups: dict[int, list] = {}  # by model object: a hot swap may split one turn in two
        for item in queue:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            self._count(len(items))
            futures = [item[3] for item in items]
            # One shadow per call: the one of the turn's first shadowed request (a rollout
            # that changed within the turn shadows the requests that asked for it).
            shadow = next((item[4] for item in items if item[4] is not None), None)
            try:
                answers = predict_many(
                    items[0][0],
                    self.log,
                    self.band,
                    [(c, s) for _, c, s, *_ in items],
                    shadow,
                    [item[4] is shadow and shadow is not None for item in items],
                )
            except Exception as exc:  # the model or the spool failed: every request says so
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for future, answer in zip(futures, answers, strict=True):
                if not future.done():  # a client that hung up: its rows are logged all the same
                    future.set_result(answer)

    def _count(self, requests: int) -> None:
        self.batches += 1
        self.requests += requests
