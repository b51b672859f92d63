"""`fundwatch backtest`: arguments, the store lock, progress, the table and the report."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from streams.config import Settings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Replay the input topics (or the raw ClickHouse tables, for history past Kafka's retention)
between two event times through a rule configuration, in-process and apart from the live
workers; store the alerts in backtest_alerts and a run record in backtest_runs; compare with
the simulator's labels, analysts' reviews and a baseline configuration (docs/backtest.md)."""

EPILOG = """\
examples:
  fundwatch backtest --from 2026-11-02 --to 2026-11-09 --config candidate --baseline default
  fundwatch backtest --from 2026-01-01 --to 2026-07-01 --config candidate --source clickhouse
  fundwatch query "SELECT detector_id, count() FROM backtest_alerts FINAL WHERE run_id = 'bt-…'
                   GROUP BY ALL\""""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument(
        "--from",
        dest="from_",
        required=True,
        metavar="TIME",
        help="first event time, YYYY-MM-DD or ISO date-time (local time Asia/Shanghai)",
    )
    parser.add_argument(
        "--to", required=True, metavar="TIME", help="end of the event times (exclusive)"
    )
    parser.add_argument(
        "--config", "-c", default="default", help="rule configuration name or TOML path"
    )
    parser.add_argument("--baseline", default=None, help="configuration to compare with")
    parser.add_argument("--run-id", default=None, help="default: a hash of the inputs")
    parser.add_argument("--source", choices=("kafka", "clickhouse"), default="kafka")
    parser.add_argument(
        "--labels", type=Path, default=None, help="labels.jsonl (default: sim_labels table)"
    )
    parser.add_argument("--top-k", type=int, default=20, help="k of precision at k (20)")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="where report.html goes (default <data dir>/backtest/<run_id>/, i.e. .local/...)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="processes to judge on, each reading its share of the input partitions (Kafka "
        "source; default FUNDWATCH_BACKTEST_WORKERS, 0 = one per CPU; 1 = this process)",
    )
    parser.add_argument(
        "--state",
        choices=("objects", "packed"),
        default=None,
        help="how the detector states are held: objects (fastest, about 3.6 KB per tracked "
        "person) or packed (about 280 B, 1.3x the time); default FUNDWATCH_BACKTEST_STATE "
        "(objects)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from models.rules.config import RuleConfigError
    from streams.backtest.report import comparison_table, write_html
    from streams.backtest.run import BacktestSpec
    from streams.backtest.sources import parse_time
    from streams.store.client import Store, StoreBusyError, StoreError
    from streams.worker.build import load_registry, tune_gc

    tune_gc()
    console = Console()
    err = Console(stderr=True)
    if args.workers is not None:
        if args.workers < 0:
            err.print("[red]backtest:[/] --workers must be 0 (one per CPU) or more")
            return 2
        settings = settings.model_copy(update={"backtest_workers": args.workers})
    if args.state is not None:
        settings = settings.model_copy(update={"backtest_state": args.state})
    try:
        spec = BacktestSpec(
            from_ms=parse_time(args.from_, "--from"),
            to_ms=parse_time(args.to, "--to"),
            config=args.config,
            baseline=args.baseline,
            source=args.source,
            run_id=args.run_id,
            labels_path=args.labels,
            top_k=args.top_k,
        )
    except ValueError as exc:
        err.print(f"[red]backtest:[/] {exc}")
        return 2
    store = Store(settings)
    try:
        store.open()
    except StoreBusyError as exc:
        err.print(
            f"[red]backtest:[/] {exc}. Stop it (the backtest writes its own tables and needs "
            "the store), or point FUNDWATCH_CLICKHOUSE_URL at a ClickHouse server."
        )
        return 1
    except StoreError as exc:
        err.print(f"[red]backtest:[/] {exc}")
        return 1
    try:
        store.ensure_schema()
        result = _run_with_progress(
            settings, spec, store, load_registry(settings), not args.no_progress
        )
    except (RuleConfigError, ValueError, RuntimeError, TimeoutError) as exc:
        err.print(f"[red]backtest:[/] {exc}")
        return 1
    finally:
        store.close()
    console.print(comparison_table(result))
    out_dir = args.report or settings.data_dir / "backtest" / result.run_id
    path = write_html(result, out_dir / "report.html")
    console.print(f"run {result.run_id} stored in backtest_runs / backtest_alerts; report: {path}")
    return 0


def _run_with_progress(settings, spec, store, registry, show: bool):  # type: ignore[no-untyped-def]
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    from streams.backtest.run import run_backtest

    class Rate(ProgressColumn):
        def render(self, task):  # type: ignore[no-untyped-def]
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} ev/s" if speed else "– ev/s")

    if not show or not sys.stderr.isatty():
        return run_backtest(settings, spec, store, registry)
    with Progress(
        TextColumn("[bold]backtest"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeRemainingColumn(),
        transient=False,
    ) as progress:
        task = progress.add_task("records", total=None)
        pending = [0]

        def on_read(n: int) -> None:  # rich takes a lock per update: advance in steps
            pending[0] += n
            if pending[0] >= 2_000:
                progress.advance(task, pending[0])
                pending[0] = 0

        result = run_backtest(
            settings,
            spec,
            store,
            registry,
            on_total=lambda n: progress.update(task, total=n),
            on_read=on_read,
        )
        progress.advance(task, pending[0])
        return result
