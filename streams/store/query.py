"""Read-only queries against the configured store, from wherever the caller is.

- A ClickHouse server: a client with `readonly=1`.
- The embedded chDB store, free: open it (taking the lock) for the query's duration.
- The embedded store held by a running FundWatch process: that process serves read-only queries
  on a loopback endpoint (streams.store.owner) named in its owner file; the query goes there.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from streams.config import Settings
from streams.store.client import Store, StoreBusyError, StoreError

READ_ONLY_START = re.compile(r"^\s*(SELECT|WITH|SHOW|DESCRIBE|DESC|EXPLAIN|EXISTS)\b", re.I)
FORMATS = ("table", "tsv", "csv", "json")


class QueryError(Exception):
    """The query was refused or failed; the message is meant for the user."""


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[tuple[Any, ...]]


def check_read_only(sql: str) -> None:
    """Refuse anything but reads before it reaches the engine (which also runs readonly=1)."""
    stripped = re.sub(r"^\s*(--[^\n]*\n|/\*.*?\*/)*", "", sql, flags=re.S)
    if not READ_ONLY_START.match(stripped):
        raise QueryError(
            "only read-only queries are allowed (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS)"
        )


def execute_read_only(store: Store, sql: str, client: Any | None = None) -> QueryResult:
    """Run a read-only query on an open store, in a session that cannot write."""
    check_read_only(sql)
    own = client is None
    if client is None:
        client = store.new_client()
        client.database = store.database  # analysts write table names without the database
    try:
        result = client.query(sql, settings={"readonly": 1})
        return QueryResult(list(result.column_names), [tuple(r) for r in result.result_rows])
    except Exception as exc:
        raise QueryError(_first_line(str(exc))) from exc
    finally:
        if own:
            client.close()


def run_query(settings: Settings, sql: str) -> QueryResult:
    """Run a read-only query against the configured store, however it is currently held."""
    check_read_only(sql)
    store = Store(settings)
    try:
        store.open()
    except StoreBusyError as busy:
        from streams.store.owner import query_owner

        return query_owner(busy, sql)
    except StoreError as exc:
        raise QueryError(str(exc)) from exc
    try:
        return execute_read_only(store, sql)
    finally:
        store.close()


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def render(result: QueryResult, fmt: str) -> str:
    """The result as text in one of FORMATS ('table' is rendered by the CLI with rich)."""
    if fmt == "json":
        return "\n".join(
            json.dumps(
                dict(zip(result.columns, map(to_jsonable, row), strict=True)), ensure_ascii=False
            )
            for row in result.rows
        )
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow([_cell(v) for v in row])
    return buf.getvalue().rstrip("\n")


def _cell(value: Any) -> str:
    value = to_jsonable(value)
    if value is None:
        return r"\N"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)
