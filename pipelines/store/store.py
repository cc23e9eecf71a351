"""The store: every read and write driftlab makes to the lake, as methods of one `Store`.

Each write is one short transaction (a batch of rows, one commit) so that the API, the worker,
the dashboard and notebooks can all write at once; reads return Arrow tables. The methods live
with their tables, one module per family:

- `ingested`: the dataset schema, ingested batches, the labeled rows a model trains on
- `predictions`: the prediction log and lookups by id
- `windows`: the monitoring windows a drift check reads
- `feedback`: people's answers, and what they say about a model
- `labeling_queue`: uncertain predictions waiting for a person
- `events`: drift checks, retraining runs, champion moves
- `rollouts`: challengers beside the champion, their shadow answers and the labels judging them
- `estimates`: the performance estimated on each check's window
- `images`: the vision tables
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence

import duckdb

from pipelines.settings import Settings
from pipelines.store.core import utcnow
from pipelines.store.estimates import Estimates
from pipelines.store.events import Events
from pipelines.store.feedback import Feedback
from pipelines.store.images import Images
from pipelines.store.ingested import IngestedRows
from pipelines.store.labeling_queue import LabelingQueue
from pipelines.store.lake import Lake
from pipelines.store.object_storage import ObjectStorage
from pipelines.store.predictions import Predictions
from pipelines.store.rollouts import Rollouts
from pipelines.store.tables import FEATURE_TABLES, TABLES, table_columns
from pipelines.store.windows import Windows

logger = logging.getLogger(__name__)


class Store(
    IngestedRows,
    Predictions,
    Windows,
    Feedback,
    LabelingQueue,
    Events,
    Rollouts,
    Estimates,
    Images,
):
    """driftlab's tables in one DuckLake, opened by any number of processes at once."""

    @classmethod
    def open(
        cls, settings: Settings, *, read_only: bool = False, threads: int | None = None
    ) -> Store:
        """The store `settings` name; `threads` caps the DuckDB threads of this attachment
        (default: one per core)."""
        lake = Lake(
            settings.catalog_uri,
            settings.data_path,
            read_only=read_only,
            inlining_row_limit=settings.inlining_row_limit,
            override_data_path=settings.data_path_follows_data_dir,
            threads=threads,
            object_storage=ObjectStorage.from_settings(settings),
        )
        store = cls(lake)
        if not read_only:
            store.init()
        return store

    def close(self) -> None:
        self.lake.close()

    def init(self) -> None:
        """Create missing tables and add missing columns (safe from many processes at once).

        A store made by an older driftlab gains the columns added since; nothing is dropped.
        """
        settled = self._never_inlined() >= set(FEATURE_TABLES)  # as this attachment read it
        existing = self._existing_columns()
        todo = []
        for name, ddl in TABLES.items():
            if name not in existing:
                todo.append(f"CREATE TABLE IF NOT EXISTS lake.{name} ({ddl})")
                continue
            for column in table_columns(ddl):
                if column.split()[0] not in existing[name]:
                    todo.append(f"ALTER TABLE lake.{name} ADD COLUMN IF NOT EXISTS {column}")
        if todo:
            self.lake.write(lambda cur: _run_all(cur, todo), what="create tables")
        self._never_inline(FEATURE_TABLES)
        if not settled:
            self.lake.reattach()  # read the options the catalog has now (`Lake.reattach`)

    def _never_inline(self, tables: Sequence[str]) -> None:
        """Make every commit to `tables` a Parquet file, never rows inlined in the catalog.

        DuckLake keeps an inlined STRUCT value as SQL text and reads it back with a cast that
        does not undo its own escaping: a text field `it's` comes back as `its`, a backslash
        is dropped, and a `-0.0` makes every later read of the table fail
        (`tests/pipelines/store/test_exact_values.py` shows it on plain DuckLake). The
        `features` columns are STRUCTs; the other tables' scalar columns read back exactly
        inlined, and keep the catalog's cheap small commits. The option is kept in the
        catalog, so it holds for every process and notebook that attaches the lake.
        """
        done = self._never_inlined()
        todo = [
            f"CALL lake.set_option('data_inlining_row_limit', 0, table_name => '{table}')"
            for table in tables
            if table not in done
        ]
        if todo:
            self.lake.write(lambda cur: _run_all(cur, todo), what="store tables as Parquet")

    def _never_inlined(self) -> set[str]:
        """The tables whose commits are never inlined, as this attachment sees the catalog."""
        rows = self.lake.rows(
            """SELECT scope_entry FROM ducklake_options('lake')
               WHERE option_name = 'data_inlining_row_limit' AND scope = 'TABLE'
                 AND value = '0'"""
        )
        return {str(row[0]).removeprefix("main.") for row in rows}

    def _existing_columns(self) -> dict[str, set[str]]:
        rows = self.lake.rows(
            "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = 'lake'"
        )
        out: dict[str, set[str]] = {}
        for table, column in rows:
            out.setdefault(table, set()).add(column)
        return out

    def count_rows(self) -> dict[str, int]:
        """Row counts of every table (for /health and the dashboard)."""
        parts = " UNION ALL ".join(f"SELECT '{name}', count(*) FROM lake.{name}" for name in TABLES)
        return {name: int(n) for name, n in self.lake.rows(parts)}

    def compact(self, keep_snapshots: Iterable[int] = (), older_than_hours: float = 24.0) -> dict:
        """Merge small files and expire old snapshots, never one in `keep_snapshots`.

        Snapshots that a registered model was trained on must be passed in `keep_snapshots`:
        they stay readable with `AT (VERSION => n)` (their files are kept).
        """
        keep = {int(s) for s in keep_snapshots}
        cutoff = utcnow() - dt.timedelta(hours=older_than_hours)
        before = self.lake.rows("SELECT count(*) FROM ducklake_snapshots('lake')")[0][0]
        latest = self.snapshot_id()
        expire = [
            int(sid)
            for (sid,) in self.lake.rows(
                "SELECT snapshot_id FROM ducklake_snapshots('lake') WHERE snapshot_time < ?",
                [cutoff],
            )
            if int(sid) not in keep and int(sid) != latest
        ]
        cur = self.lake.cursor()
        cur.execute("CALL ducklake_merge_adjacent_files('lake')")
        if expire:
            cur.execute("CALL ducklake_expire_snapshots('lake', versions => ?)", [expire])
        cur.execute("CALL ducklake_cleanup_old_files('lake', cleanup_all => true)")
        after = self.lake.rows("SELECT count(*) FROM ducklake_snapshots('lake')")[0][0]
        return {
            "snapshots_before": int(before),
            "snapshots_after": int(after),
            "kept": sorted(keep),
        }


def _run_all(cur: duckdb.DuckDBPyConnection, statements: Sequence[str]) -> None:
    for statement in statements:
        cur.execute(statement)
