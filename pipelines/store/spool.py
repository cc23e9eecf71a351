"""Durable, batched prediction logging: a local append-only spool in front of the lake.

The API acknowledges a prediction only after its log record is written to the spool file (an
`os.write` to the page cache: it survives `kill -9` of the process). A background thread moves
the buffered records to the lake in one commit every `flush_interval` seconds, then deletes
that spool segment. At start-up, segments left by a dead process are replayed (rows already in
the lake are skipped, so a crash between commit and delete duplicates nothing).

A segment (`.spool`) is a sequence of records, each a 9-byte header (a tag, the payload's
length) and its payload: `j` a chunk as JSON, `a` a prepared chunk's table as an Arrow IPC
stream (writing it is a copy of its buffers, where JSON formats every value).
Segments of the older format (`.ndjson`, one JSON chunk per line) are replayed too.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import itertools
import logging
import os
import struct
import threading
from pathlib import Path
from typing import Any, Self

import numpy as np
import orjson
import pyarrow as pa

from pipelines.schema import NUMERIC, Feature, FeatureSchema
from pipelines.settings import Settings
from pipelines.store.ids import prediction_id_row
from pipelines.store.store import Store

logger = logging.getLogger(__name__)

_PREFIX = "predictions-"

PREPARE_MIN_ROWS = 256
"""Chunks of at least this many rows are converted to Arrow when logged (`_prepared`)."""


class PredictionLog:
    """Buffer + spool + flusher for one process. Thread-safe; `append` is the hot path.

    A chunk is one request's predictions, column-wise: `ids`, `ts` (epoch seconds),
    `model_name`, `model_version`, `features` ({name: values}), `prediction`, `confidence`,
    `probabilities`, `latency_ms` (one per row), `uncertain`, optional `image_ref`, and
    optional `id_ranges`: [(request part, rows)] when the ids are exactly those that
    `prediction_ids` made for these requests (`prediction_id_row` reads them back), so that a
    large chunk's pending rows are tracked as ranges rather than 10k strings in a set.

    Subclasses log other kinds of rows through the same spool: they set `prefix` (their own
    spool segments) and override `_prepared`, `_commit`, `_present` and `_drop_present`.
    """

    prefix = _PREFIX

    def __init__(
        self, store: Store, spool_dir: Path, *, flush_interval: float = 0.5, max_rows: int = 50_000
    ) -> None:
        self.store = store
        self.spool_dir = Path(spool_dir)
        self.flush_interval = flush_interval
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: list[dict[str, Any]] = []
        self._rows = 0
        self._pending_ids: set[str] = set()
        # Large chunks' rows, by request: an id's request part -> its rows (`id_ranges`).
        self._pending_requests: dict[str, int] = {}
        self._seq = itertools.count()
        self._fd: int | None = None
        self._path: Path | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.flushed_rows = 0
        self.flush_errors = 0  # failed commits (each retried): for /metrics
        self.last_error: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    @classmethod
    def started(cls, store: Store, settings: Settings) -> Self:
        """A log configured by `settings` (spool dir, flush interval and size), started: what
        the spool left by a crashed process is replayed first."""
        log = cls(
            store,
            settings.spool_dir,
            flush_interval=settings.flush_interval,
            max_rows=settings.flush_max_rows,
        )
        log.start()
        return log

    def start(self) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.replay_orphans()
        with self._lock:
            self._open_segment()
        self._thread = threading.Thread(target=self._run, name="prediction-flusher", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Flush what is buffered and stop the flusher."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._path is not None and self._path.exists() and self._path.stat().st_size == 0:
                self._path.unlink()

    # -- hot path ------------------------------------------------------------------------------

    def append(self, chunk: dict[str, Any]) -> None:
        """Make a chunk durable (spool) and queue it for the lake. Returns once it is safe."""
        item = self._prepared(chunk)
        record = _record(item)
        with self._lock:
            if self._fd is None:
                raise RuntimeError("prediction log is not started")
            os.write(self._fd, record)
            self._buffer.append(item)
            if "id_ranges" in item:
                self._pending_requests.update(item["id_ranges"])
            else:
                self._pending_ids.update(chunk["ids"])
            self._rows += len(chunk["ids"])
            full = self._rows >= self.max_rows
        if full:
            self._wake.set()

    @property
    def pending_rows(self) -> int:
        """Acknowledged predictions not yet in the lake."""
        with self._lock:
            return len(self._pending_ids) + sum(self._pending_requests.values())

    def is_pending(self, prediction_id: str) -> bool:
        """True while a prediction is acknowledged but not yet in the lake."""
        row = prediction_id_row(prediction_id)
        with self._lock:
            if prediction_id in self._pending_ids:
                return True
            return row is not None and row[1] < self._pending_requests.get(row[0], 0)

    # -- flushing ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # keep serving; the spool still holds every row
                self.flush_errors += 1
                self.last_error = str(exc)
                logger.exception("flushing predictions failed; will retry")

    def flush(self) -> int:
        """Write everything buffered to the lake in one commit; returns the rows written."""
        with self._flush_lock:
            with self._lock:
                if not self._buffer:
                    return 0
                chunks, self._buffer, self._rows = self._buffer, [], 0
                done_path = self._path
                self._open_segment()  # new appends go to a fresh segment
            try:
                self._commit(chunks)
            except Exception:
                with self._lock:  # put them back in front; their segment stays on disk
                    self._buffer[:0] = chunks
                    self._rows += sum(len(c["ids"]) for c in chunks)
                raise
            if done_path is not None:
                done_path.unlink(missing_ok=True)
            n = sum(len(c["ids"]) for c in chunks)
            with self._lock:
                for c in chunks:
                    if "id_ranges" in c:
                        for request, _ in c["id_ranges"]:
                            self._pending_requests.pop(request, None)
                    else:
                        self._pending_ids.difference_update(c["ids"])
            self.flushed_rows += n
            self.last_error = None
            return n

    def _prepared(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """What the buffer keeps of a chunk until it is committed: a large one as its ids and
        its rows in the Arrow table `lake.predictions` takes; a small one as it is.

        A large chunk is converted here, on the thread that made its predictions, so that the
        flusher's thread mostly concatenates tables and waits on DuckDB, both without the GIL.
        Converted in the flusher, a buffer of 10k-row batches would hold the GIL for tens of ms,
        and each time the request thread let go of it (the model call, the spool write) it
        would wait its turn to take it back. A small chunk (single rows, micro-batches) costs
        about as much to convert alone as its whole request costs to answer, and is converted
        with the rest of its flush.
        """
        if len(chunk["ids"]) < PREPARE_MIN_ROWS:
            return chunk
        item = {"ids": chunk["ids"], "table": chunks_to_table([chunk], self._schema())}
        if "id_ranges" in chunk:  # then its pending rows are a few ranges, not a set of ids
            item["id_ranges"] = chunk["id_ranges"]
        return item

    def _commit(self, chunks: list[dict[str, Any]]) -> None:
        """Write chunks, prepared or not, to the lake in one commit."""
        tables = [c["table"] for c in chunks if "table" in c]
        raw = [c for c in chunks if "table" not in c]
        if raw:
            tables.append(chunks_to_table(raw, self._schema()))
        self.store.append_predictions(pa.concat_tables(tables))

    def _present(self, ids: list[str]) -> set[str]:
        """Which of these ids the lake holds already (replay skips them)."""
        return self.store.existing_prediction_ids(ids)

    def _drop_present(self, chunks: list[dict[str, Any]], present: set[str]) -> list[dict]:
        """The chunks without the rows whose ids are already in the lake."""
        kept = [_without(c, present) for c in chunks]
        return [c for c in kept if c["ids"]]

    def _schema(self) -> FeatureSchema:
        schema = self.store.dataset_schema()
        if schema is None:
            raise RuntimeError("predictions logged before the dataset schema exists")
        return schema

    def _open_segment(self) -> None:
        """Start a new spool file, held under an exclusive lock while this process lives."""
        old_fd = self._fd
        path = (
            self.spool_dir
            / f"{self.prefix}{os.getpid()}-{os.urandom(4).hex()}-{next(self._seq)}{_SUFFIX}"
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd, self._path = fd, path
        if old_fd is not None:
            os.close(old_fd)  # its lock goes with it; the file is deleted after its commit

    # -- recovery ------------------------------------------------------------------------------

    def replay_orphans(self) -> int:
        """Move spool segments of dead processes into the lake; returns rows recovered."""
        recovered = 0
        segments = [*self.spool_dir.glob(f"{self.prefix}*{_SUFFIX}")]
        segments += self.spool_dir.glob(f"{self.prefix}*.ndjson")  # the older format
        for path in sorted(segments):
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                chunks = _read_segment(path)
                ids = [i for c in chunks for i in c["ids"]]
                if ids:
                    chunks = self._drop_present(chunks, self._present(ids))
                if chunks:
                    self._commit(chunks)
                    recovered += sum(len(c["ids"]) for c in chunks)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        if recovered:
            logger.info("replayed %d acknowledged predictions from the spool", recovered)
        return recovered


_SUFFIX = ".spool"
_HEADER = struct.Struct("<cQ")  # tag, payload length
_JSON, _ARROW = b"j", b"a"


def _record(item: dict[str, Any]) -> bytes:
    """One spool record: a prepared chunk's table as Arrow IPC, any other chunk as JSON."""
    if "table" not in item:
        payload = orjson.dumps(item, default=_as_list, option=orjson.OPT_SERIALIZE_NUMPY)
        return _HEADER.pack(_JSON, len(payload)) + payload
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, item["table"].schema) as writer:
        writer.write_table(item["table"])
    ipc = sink.getvalue()
    return _HEADER.pack(_ARROW, ipc.size) + memoryview(ipc)


def _read_segment(path: Path) -> list[dict[str, Any]]:
    """The chunks of a spool segment, as `append` buffered them."""
    data = path.read_bytes()
    if path.suffix == ".ndjson":
        return _read_lines(path.name, data)
    chunks, at = [], 0
    while at < len(data):
        if at + _HEADER.size > len(data):
            break
        tag, size = _HEADER.unpack_from(data, at)
        payload = memoryview(data)[at + _HEADER.size : at + _HEADER.size + size]
        if len(payload) < size:
            break
        at += _HEADER.size + size
        if tag == _ARROW:
            table = pa.ipc.open_stream(pa.py_buffer(payload)).read_all()
            chunks.append({"ids": table.column("prediction_id").to_pylist(), "table": table})
        else:
            chunks.append(orjson.loads(payload))
    if at < len(data):
        # Only a write cut by the crash can be torn, and it was never acknowledged.
        logger.warning("skipping a torn record at the end of %s", path.name)
    return chunks


def _read_lines(name: str, data: bytes) -> list[dict[str, Any]]:
    chunks = []
    for line in data.splitlines():
        try:
            chunks.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            logger.warning("skipping a torn line in %s", name)
    return chunks


def _without(chunk: dict[str, Any], present: set[str]) -> dict[str, Any]:
    keep = [i for i, pid in enumerate(chunk["ids"]) if pid not in present]
    if len(keep) == len(chunk["ids"]):
        return chunk
    if "table" in chunk:
        rows = pa.array(keep, pa.int64())
        return {"ids": [chunk["ids"][i] for i in keep], "table": chunk["table"].take(rows)}
    out = dict(chunk)
    for key in ("ids", "prediction", "confidence", "probabilities", "latency_ms", "uncertain"):
        out[key] = [chunk[key][i] for i in keep]
    out["features"] = {k: [v[i] for i in keep] for k, v in chunk["features"].items()}
    return out


def _as_list(value: Any) -> Any:
    """orjson's fallback: numpy arrays it does not write itself (text, strided views)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def chunks_to_table(chunks: list[dict[str, Any]], schema: FeatureSchema) -> pa.Table:
    """Concatenate column-wise chunks into one Arrow table shaped like `lake.predictions`.

    It runs inside the API process (on a large request's thread, or in the flusher for a
    flush's small chunks), so it is built to cost little CPU. A chunk
    from `append` holds numpy arrays (features, confidence, the probability matrix), which are
    concatenated as arrays; one replayed from the spool holds the same values as JSON lists,
    which numpy reads the same way. Per-chunk values (ts, model) are converted once per chunk
    and repeated with `take`.
    """
    chain = itertools.chain.from_iterable
    counts = np.fromiter((len(c["ids"]) for c in chunks), np.int64, len(chunks))
    owner = pa.array(np.repeat(np.arange(len(chunks)), counts))  # row -> its chunk

    def rows(key: str) -> list[Any]:
        return list(chain(c[key] for c in chunks))

    def array(key: str, dtype: type) -> np.ndarray:
        return np.concatenate([np.asarray(c[key], dtype=dtype) for c in chunks])

    def per_chunk(values: list[Any], type_: pa.DataType) -> pa.Array:
        return pa.array(values, type_).take(owner)

    def feature(feat: Feature) -> np.ndarray:
        kind = float if feat.kind == NUMERIC else object
        return np.concatenate([np.asarray(c["features"][feat.name], dtype=kind) for c in chunks])

    ts = [dt.datetime.fromtimestamp(c["ts"], dt.UTC) for c in chunks]
    image_refs = [c.get("image_ref") or itertools.repeat(None, len(c["ids"])) for c in chunks]
    return pa.table(
        {
            "prediction_id": pa.array(rows("ids"), pa.string()),
            "ts": per_chunk(ts, pa.timestamp("us", tz="UTC")),
            "model_name": per_chunk([c["model_name"] for c in chunks], pa.string()),
            "model_version": per_chunk([c["model_version"] for c in chunks], pa.string()),
            "prediction": pa.array(rows("prediction"), pa.string()),
            "confidence": pa.array(array("confidence", float)),
            "probabilities": probability_lists(chunks),
            "latency_ms": pa.array(array("latency_ms", float)),
            "uncertain": pa.array(array("uncertain", bool)),
            "image_ref": pa.array(list(chain(image_refs)), pa.string()),
            "features": schema.to_arrow({f.name: feature(f) for f in schema.features}),
        }
    )


def probability_lists(chunks: list[dict[str, Any]]) -> pa.ListArray:
    """All chunks' probability rows as one list<double> array: flat values plus offsets.

    A chunk's rows all have one width (its model's classes); chunks of models with other
    classes may differ."""
    widths = np.concatenate(
        [np.full(len(c["ids"]), np.shape(c["probabilities"])[1]) for c in chunks]
    )
    values = np.concatenate([np.ravel(np.asarray(c["probabilities"], float)) for c in chunks])
    offsets = np.zeros(len(widths) + 1, dtype=np.int32)
    np.cumsum(widths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
