"""Repair feature values that DuckLake's catalog inlining changed (`driftlab repair`).

A store whose `features` tables were written without the Parquet-only option
(`Store._never_inline`: stores of an older format) may hold rows inlined in the catalog.
DuckLake keeps such a row's STRUCT as SQL text (`{'c': 'it''s', 'x': CAST('-0.0' AS
VARCHAR)}`) and reads it back with a cast that knows another escaping: `it's` comes back as
`its`, a backslash is dropped, and a `-0.0` makes every read of the table fail.
The text itself is intact, so the values can be recovered exactly:

1. each inlined row's text is parsed as the SQL it is (`parse_inlined`), a -0.0 kept as 0.0
   as every row is (`pipelines.schema.stored_number`);
2. it is written back in the form the cast reads exactly (`cast_text`), in the catalog;
3. every row is read back through DuckLake and compared, bit for bit, with what was parsed;
4. the inlined rows are moved into Parquet (`ducklake_flush_inlined_data`), keeping their
   snapshots: a model's training set read `AT (VERSION => n)` is repaired too.

Running it again finds nothing to do. It is safe while other processes use the store.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass
from typing import Any

import duckdb

from pipelines.schema import NUMERIC, FeatureSchema, stored_number
from pipelines.store.lake import METADATA, Lake
from pipelines.store.sql import identifier
from pipelines.store.tables import FEATURE_TABLES

logger = logging.getLogger(__name__)


class RepairError(RuntimeError):
    """A row that could not be recovered exactly; nothing was moved into Parquet."""


@dataclass(frozen=True)
class TableRepair:
    table: str
    inlined_rows: int  # rows found in the catalog
    rewritten: int  # of which the text had to be rewritten


def repair_inlined_features(lake: Lake, schema: FeatureSchema | None) -> list[TableRepair]:
    """Recover and move into Parquet the inlined rows of the `features` tables."""
    if schema is None:
        return []  # no features column yet: nothing can be wrong
    out = []
    for table in FEATURE_TABLES:
        found, rewritten = 0, 0
        for inlined in _inlined_tables(lake, table):
            n, fixed = _rewrite(lake, table, inlined, schema)
            found, rewritten = found + n, rewritten + fixed
        if found:
            _move_to_parquet(lake, table)
            logger.info("%s: %d inlined rows (%d rewritten) now Parquet", table, found, rewritten)
        out.append(TableRepair(table, found, rewritten))
    return out


def _move_to_parquet(lake: Lake, table: str) -> None:
    """Write `table`'s inlined rows into Parquet files, each with its snapshots."""
    lake.write(
        lambda cur: cur.execute(
            "CALL ducklake_flush_inlined_data('lake', table_name => ?)", [table]
        ),
        what=f"move {table}'s inlined rows into Parquet",
    )


def _rewrite(lake: Lake, table: str, inlined: str, schema: FeatureSchema) -> tuple[int, int]:
    """Rewrite the rows of one catalog table of inlined rows that DuckLake would misread;
    returns (rows, rewritten)."""
    name = f"{METADATA}.{identifier(inlined)}"
    rows = lake.rows(f"SELECT row_id, features FROM {name} WHERE features IS NOT NULL")
    fixes = {}
    for row_id, text in rows:
        values = _typed(parse_inlined(text), schema)
        if cast_text(values) != text:
            fixes[row_id] = values
    if fixes:
        with lake.commit_lock():
            lake.cursor().executemany(
                f"UPDATE {name} SET features = ? WHERE row_id = ?",
                [[cast_text(values), row_id] for row_id, values in fixes.items()],
            )
        _check_read_back(lake, table, fixes)
    return len(rows), len(fixes)


def _inlined_tables(lake: Lake, table: str) -> list[str]:
    """The catalog tables holding `table`'s inlined rows that have a `features` column (one
    per schema version: the first, made before the dataset schema was fixed, has none)."""
    names = [
        row[0]
        for row in lake.rows(
            f"""SELECT i.table_name FROM {METADATA}.ducklake_inlined_data_tables i
                JOIN {METADATA}.ducklake_table t USING (table_id)
                WHERE t.table_name = ? AND t.end_snapshot IS NULL""",
            [table],
        )
    ]
    return [name for name in names if _has_features(lake, name)]


def _has_features(lake: Lake, inlined: str) -> bool:
    try:
        lake.rows(f"SELECT features FROM {METADATA}.{identifier(inlined)} LIMIT 0")
    except duckdb.BinderException:
        return False
    return True


def _check_read_back(lake: Lake, table: str, expected: dict[int, dict[str, Any]]) -> None:
    """Raise unless DuckLake now reads every rewritten row as `expected`, bit for bit."""
    got = {
        row_id: features
        for row_id, features in lake.rows(
            f"SELECT rowid, features FROM lake.{identifier(table)} WHERE rowid IN "
            f"(SELECT unnest(?::BIGINT[]))",
            [list(expected)],
        )
    }
    wrong = [row_id for row_id, values in expected.items() if not _same(values, got.get(row_id))]
    if wrong:
        raise RepairError(
            f"{table}: {len(wrong)} rewritten rows still read back otherwise (row ids "
            f"{wrong[:10]}); nothing was moved into Parquet"
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return isinstance(b, float) and struct.pack("<d", a) == struct.pack("<d", b)
    return a == b


def _typed(values: Any, schema: FeatureSchema) -> dict[str, Any]:
    """The parsed struct with each field as its feature's type (numbers came as text when
    DuckLake wrote them with a CAST), numbers as the store keeps them (`stored_number`)."""
    if not isinstance(values, dict):
        raise RepairError(f"an inlined features value is not a struct: {values!r:.80}")
    kinds = {f.name: f.kind for f in schema.features}
    out = {}
    for name, value in values.items():
        if value is not None and kinds.get(name) == NUMERIC:
            value = stored_number(float(value))
        out[name] = value
    return out


# -- the two text forms ---------------------------------------------------------------------


def cast_text(value: Any) -> str:
    """A value as the text DuckDB's VARCHAR-to-STRUCT cast reads back exactly: strings
    quoted with backslash escapes, numbers as their shortest exact repr."""
    if value is None:
        return "NULL"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_quoted(k)}: {cast_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RepairError(f"a feature holds {value!r}, which driftlab never stores")
        return repr(value)
    if isinstance(value, str):
        return _quoted(value)
    raise RepairError(f"unexpected value in a features struct: {value!r:.80}")


def _quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_inlined(text: str) -> Any:
    """A value as DuckLake wrote it into the catalog: SQL literals (strings with `''`),
    `{'name': value, …}`, `[…]`, `NULL`, `CAST('…' AS VARCHAR)` and `CONCAT(…, chr(n), …)`."""
    parser = _Parser(text)
    value = parser.value()
    parser.skip()
    if parser.at < len(text):
        raise RepairError(f"unexpected text after a value at {parser.at}: {text!r:.80}")
    return value


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.at = 0

    def skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t\n\r":
            self.at += 1

    def expect(self, char: str) -> None:
        self.skip()
        if not self.text.startswith(char, self.at):
            raise RepairError(f"expected {char!r} at {self.at} in {self.text!r:.80}")
        self.at += len(char)

    def value(self) -> Any:
        self.skip()
        char = self.text[self.at : self.at + 1]
        if char == "{":
            return self.struct()
        if char == "[":
            return self.items("[", "]")
        if char == "'":
            return self.string()
        word = self.word()
        upper = word.upper()
        if upper == "NULL":
            return None
        if upper in {"TRUE", "FALSE"}:
            return upper == "TRUE"
        if upper == "CAST":
            self.expect("(")
            inner = self.value()
            self.skip()
            if self.word().upper() != "AS":
                raise RepairError(f"expected AS at {self.at} in {self.text!r:.80}")
            self.word()  # the type: the caller types the value
            self.expect(")")
            return inner
        if upper == "CONCAT":
            return "".join(self.items("(", ")"))
        if upper == "CHR":
            self.expect("(")
            code = self.word()
            self.expect(")")
            return chr(int(code))
        try:
            return float(word)
        except ValueError:
            raise RepairError(f"unexpected {word!r} at {self.at} in {self.text!r:.80}") from None

    def word(self) -> str:
        self.skip()
        start = self.at
        while self.at < len(self.text) and (
            self.text[self.at].isalnum() or self.text[self.at] in "_.+-"
        ):
            self.at += 1
        if self.at == start:
            raise RepairError(f"unexpected character at {start} in {self.text!r:.80}")
        return self.text[start : self.at]

    def string(self) -> str:
        self.expect("'")
        parts = []
        while True:
            end = self.text.find("'", self.at)
            if end < 0:
                raise RepairError(f"unterminated string in {self.text!r:.80}")
            parts.append(self.text[self.at : end])
            self.at = end + 1
            if self.text.startswith("'", self.at):  # '' is one quote
                parts.append("'")
                self.at += 1
                continue
            return "".join(parts)

    def items(self, opening: str, closing: str) -> list[Any]:
        self.expect(opening)
        out: list[Any] = []
        self.skip()
        if self.text.startswith(closing, self.at):
            self.at += 1
            return out
        while True:
            out.append(self.value())
            self.skip()
            if self.text.startswith(",", self.at):
                self.at += 1
                continue
            self.expect(closing)
            return out

    def struct(self) -> dict[str, Any]:
        self.expect("{")
        out: dict[str, Any] = {}
        self.skip()
        if self.text.startswith("}", self.at):
            self.at += 1
            return out
        while True:
            self.skip()
            key = self.string()
            self.expect(":")
            out[key] = self.value()
            self.skip()
            if self.text.startswith(",", self.at):
                self.at += 1
                continue
            self.expect("}")
            return out
