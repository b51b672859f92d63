"""`fundwatch query` and `fundwatch store`: read-only SQL and schema management."""

from __future__ import annotations

import argparse
import sys
import textwrap

from streams.config import Settings
from streams.store.query import FORMATS, QueryError, render, run_query


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", help='the query, e.g. "SELECT count() FROM settlements FINAL"')
    parser.add_argument(
        "--format",
        "-f",
        choices=FORMATS,
        default=None,
        help="output format (default: table on a terminal, tsv otherwise)",
    )
    from streams.store.tables import TABLES, VIEWS

    tables = ", ".join(t.name for t in TABLES if t.name != "person_vault")  # privileged only
    views = ", ".join(v.name for v in VIEWS)
    parser.epilog = (
        f"Tables: {textwrap.fill(tables, 76, subsequent_indent='  ')}\n"
        f"Views: {textwrap.fill(views, 76, subsequent_indent='  ')}\n"
        "(in the configured database, default `fundwatch`).\n"
        "Rows are deduplicated at merge time: add FINAL for exact counts.\n"
        "While `fundwatch run` or `fundwatch sink` holds the embedded store, the query is\n"
        "sent to that process."
    )


def query_from_args(args: argparse.Namespace, settings: Settings) -> int:
    try:
        result = run_query(settings, args.sql)
    except QueryError as exc:
        print(f"fundwatch query: {exc}", file=sys.stderr)
        return 1
    fmt = args.format or ("table" if sys.stdout.isatty() else "tsv")
    if fmt == "table":
        from rich.console import Console
        from rich.table import Table

        from streams.store.query import to_jsonable

        table = Table(*result.columns, show_lines=False)
        for row in result.rows:
            table.add_row(*("NULL" if v is None else str(to_jsonable(v)) for v in row))
        console = Console()
        console.print(table)
        console.print(f"{len(result.rows)} rows", style="dim")
    else:
        text = render(result, fmt)
        if text:  # JSON lines of no rows: no line at all (not an empty one)
            print(text)
    return 0


def add_store_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        choices=("init", "ddl"),
        help="init: create the database and tables; ddl: print the DDL",
    )
    parser.add_argument(
        "--cluster",
        default=None,
        help="ddl for a cluster (ON CLUSTER, replicated + distributed tables)",
    )


def store_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from streams.store.client import Store, StoreError
    from streams.store.tables import ddl_script

    if args.action == "ddl":
        print(ddl_script(settings.clickhouse_database, args.cluster or settings.clickhouse_cluster))
        return 0
    try:
        with Store(settings) as store:
            store.ensure_schema()
    except StoreError as exc:
        print(f"fundwatch store: {exc}", file=sys.stderr)
        return 1
    print(f"schema ready in database {settings.clickhouse_database}")
    return 0
