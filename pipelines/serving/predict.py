"""The prediction path shared by the API and the dashboard: validate, predict, flag, log.

`predict` answers one request. `predict_many` answers several validated requests with one model
call and one log write; `Batcher` feeds it the requests that reach the API's event loop in the
same turn (opportunistic micro-batching, like Triton's dynamic batcher with no added delay: a
lone request is answered at once, a burst shares the fixed costs of the model call, the ids, the
spool write and the metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines.schema import SchemaError
from pipelines.serving.band import Band
from pipelines.serving.model import ServingModel
from pipelines.store.ids import request_ids
from pipelines.store.spool import PredictionLog

Columns = dict[str, np.ndarray]
"""A validated request: one array per feature (`FeatureSchema.columns`)."""


def predict(
    model: ServingModel,
    log: PredictionLog,
    band: Band,
    *,
    features: list[list[Any]] | None = None,
    records: list[dict[str, Any]] | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Predict a payload and log every row durably before returning the answer."""
    started = time.perf_counter()
    columns = model.schema.columns(features, records, max_rows=max_rows)
    return predict_many(model, log, band, [(columns, started)])[0]


def predict_many(
    model: ServingModel,
    log: PredictionLog,
    band: Band,
    requests: Sequence[tuple[Columns, float]],
) -> list[dict[str, Any]]:
    """Answer validated requests (columns, perf_counter at their start) with one model call,
    logging all their rows durably in one spool write before any answer is returned."""
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
    index, proba = model.predict(schema.encode(columns))
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
    return answers


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
        self._queue: list[tuple[ServingModel, Columns, float, asyncio.Future]] = []
        self.batches = 0  # model calls made, and the requests they answered
        self.requests = 0

    async def predict(self, model: ServingModel, columns: Columns, started: float) -> dict:
        if len(next(iter(columns.values()))) >= self.alone_rows:
            self._count(1)
            # On a worker thread: the event loop reads and parses the next requests while
            # the model call and the spool write of this one run without the GIL.
            answers = await asyncio.to_thread(
                predict_many, model, self.log, self.band, [(columns, started)]
            )
            return answers[0]
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._queue:
            loop.call_soon(self._run)
        self._queue.append((model, columns, started, future))
        return await future

    def _run(self) -> None:
        queue, self._queue = self._queue, []
        groups: dict[int, list] = {}  # by model object: a hot swap may split one turn in two
        for item in queue:
            groups.setdefault(id(item[0]), []).append(item)
        for items in groups.values():
            self._count(len(items))
            futures = [future for *_, future in items]
            try:
                answers = predict_many(
                    items[0][0], self.log, self.band, [(c, s) for _, c, s, _ in items]
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
