"""`fundwatch`: the one command-line entry point. Subcommands import their modules lazily."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from streams.config import Settings

DESCRIPTION = """\
FundWatch: streaming anomaly detection for the medical-insurance fund.
Settlement, trace-scan and face-verification events flow through Kafka into detectors,
and alerts, aggregates and raw events land in ClickHouse for analysts.

Configuration comes from FUNDWATCH_* environment variables or a .env file, e.g.
  FUNDWATCH_KAFKA_BOOTSTRAP=broker:9092   (default 127.0.0.1:19092, the local broker)
  FUNDWATCH_CLICKHOUSE_URL=https://user:pass@ch:8443/fundwatch  (default: embedded chDB in .local/)
`fundwatch config` prints the effective settings with secrets masked."""

EPILOG = """\
examples:
  fundwatch run --events 20000          simulate 20k events, ingest them, print a summary
  fundwatch query "SELECT visit_type, count() FROM settlements GROUP BY visit_type"
  fundwatch simulate --preset small --to avro --out /tmp/sim
  fundwatch infra status
  fundwatch rules list --config candidate"""


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streams.run import run_from_args

    return run_from_args(args, settings)


def _cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.simulator.cli import run_from_args

    return run_from_args(args, settings)


def _cmd_infra(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack.cli import run_from_args

    return run_from_args(args, settings)


def _cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from streams.sink.cli import run_from_args

    return run_from_args(args, settings)


def _cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.worker.cli import run_from_args

    return run_from_args(args, settings)


def _cmd_query(args: argparse.Namespace, settings: Settings) -> int:
    from streams.store.cli import query_from_args

    return query_from_args(args, settings)


def _cmd_store(args: argparse.Namespace, settings: Settings) -> int:
    from streams.store.cli import store_from_args

    return store_from_args(args, settings)


def _cmd_rules(args: argparse.Namespace, settings: Settings) -> int:
    from streams.rules_cli import run_from_args

    return run_from_args(args, settings)


def _cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from streams.ops.status import run_from_args

    return run_from_args(args, settings)


def _cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from streams.bench.cli import run_from_args

    return run_from_args(args, settings)


def _cmd_reidentify(args: argparse.Namespace, settings: Settings) -> int:
    from streams.reidentify import run_from_args

    return run_from_args(args, settings)


def _cmd_review(args: argparse.Namespace, settings: Settings) -> int:
    from streams.review_cli import run_from_args

    return run_from_args(args, settings)


def _cmd_backtest(args: argparse.Namespace, settings: Settings) -> int:
    from streams.backtest.cli import run_from_args

    return run_from_args(args, settings)


def _cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    import json

    print(json.dumps(settings.redacted(), indent=2, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fundwatch",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[..., int], help_: str, description: str | None = None):
        p = sub.add_parser(
            name,
            help=help_,
            description=description or help_,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=fn)
        return p

    from streams.run import add_arguments as run_args

    run_args(
        add(
            "run",
            _cmd_run,
            "bring the stack up, simulate a stream, ingest it, show progress",
            "Start the local broker (if configured), open the store, stream simulated events "
            "through Kafka into ClickHouse and show live progress. With --events N it exits 0 "
            "once all N are stored; without it, it runs until Ctrl-C.",
        )
    )

    from streams.simulator.cli import add_arguments as sim_args

    sim_args(
        add("simulate", _cmd_simulate, "generate a synthetic region's events with labelled fraud")
    )

    from streams.stack.cli import add_arguments as infra_args

    infra_args(add("infra", _cmd_infra, "install, start, stop or inspect the local Kafka broker"))

    from streams.sink.cli import add_arguments as sink_args

    sink_args(
        add("sink", _cmd_sink, "consume the topics and store raw events, alerts and dead letters")
    )

    from streams.worker.cli import add_arguments as worker_args

    worker_args(add("worker", _cmd_worker, "run a detection worker: events in, alerts out"))

    from streams.store.cli import add_query_arguments, add_store_arguments

    add_query_arguments(add("query", _cmd_query, "run a read-only SQL query against the store"))
    add_store_arguments(add("store", _cmd_store, "create the ClickHouse schema or print its DDL"))
    from streams.rules_cli import add_arguments as rules_args

    rules_args(
        add(
            "rules",
            _cmd_rules,
            "list, show or validate the rule configurations (detector parameters)",
        )
    )
    from streams.ops.status import HELP as status_help
    from streams.ops.status import add_arguments as status_args

    status_args(add("status", _cmd_status, status_help))
    from streams.bench.cli import add_arguments as bench_args

    bench_args(
        add(
            "bench",
            _cmd_bench,
            "measure throughput, latency and state size of every path (docs/performance.md)",
        )
    )
    from streams.reidentify import add_arguments as reidentify_args

    reidentify_args(
        add(
            "reidentify",
            _cmd_reidentify,
            "privileged: the person id behind a pseudonym (needs FUNDWATCH_REIDENTIFY_KEY)",
        )
    )
    from streams.review_cli import add_arguments as review_args

    review_args(
        add(
            "review",
            _cmd_review,
            "record an analyst's outcome of an alert (confirmed or rejected)",
        )
    )
    from streams.backtest.cli import add_arguments as backtest_args

    backtest_args(
        add(
            "backtest",
            _cmd_backtest,
            "replay history through a rule configuration and compare (docs/backtest.md)",
        )
    )
    add("config", _cmd_config, "print the effective configuration (secrets masked)")
    return parser


def setup_logging(verbosity: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = RichHandler(console=_stderr_console(), show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=level, handlers=[handler], format="%(name)s: %(message)s")
    for noisy in ("clickhouse_connect", "urllib3"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        settings = Settings()
    except Exception as exc:  # pydantic ValidationError: name the variable that is wrong
        print(f"fundwatch: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
