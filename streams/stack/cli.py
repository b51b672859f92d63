"""`fundwatch infra install|up|down|status`: the local Kafka broker and the topics.

Exit codes: 0 ok, 1 failure (one-line reason on stderr), 3 `status` found no running broker.
"""

from __future__ import annotations

import argparse
import logging

from confluent_kafka import KafkaException
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from streams.config import Settings
from streams.stack import StackError, local_kafka
from streams.stack.topics import ensure_topics, format_retention, topic_configs

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_NOT_RUNNING = 0, 1, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `action` subcommands (install, up, down, status) to `parser`."""
    actions = parser.add_subparsers(dest="action", required=True, metavar="action")
    actions.add_parser("install", help="fetch the local Kafka broker's jars with Maven (once)")
    up = actions.add_parser("up", help="start (or reuse) the local broker, create the topics")
    up.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the broker (default 60)"
    )
    down = actions.add_parser("down", help="stop the local broker")
    down.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait after SIGTERM before SIGKILL (default 30)",
    )
    actions.add_parser("status", help="the broker and its topics (exit 3 when not running)")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    """Run the chosen action; returns the exit code."""
    out, err = Console(), Console(stderr=True)
    handlers = {"install": _install, "up": _up, "down": _down, "status": _status}
    try:
        return handlers[args.action](args, settings, out)
    except StackError as exc:
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        if exc.details:
            err.print(Text(exc.details, style="dim"), soft_wrap=True)
        return EXIT_FAILED
    except KafkaException as exc:
        err.print(
            Text.assemble(("error: ", "bold red"), f"Kafka: {exc.args[0].str()}"), soft_wrap=True
        )
        return EXIT_FAILED


def _install(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if not settings.is_local_kafka:
        out.print(f"Kafka is remote ({escape(settings.kafka_bootstrap)}): nothing to install.")
        return EXIT_OK
    _install_with_spinner(settings, out)
    return EXIT_OK


def _install_with_spinner(settings: Settings, out: Console) -> None:
    version = settings.local_kafka_version
    if local_kafka.is_installed(settings):
        local_kafka.find_java()
        out.print(
            f"Kafka {version} is installed ({escape(str(local_kafka.kafka_paths(settings).libs))})."
        )
        return
    with out.status(f"Fetching the Kafka {version} jars with Maven (first run: about a minute)..."):
        libs = local_kafka.install(settings)
    out.print(f"Installed Kafka {version} in {escape(str(libs))}.")


def _up(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if settings.is_local_kafka:
        _install_with_spinner(settings, out)
        with out.status(f"Starting the local broker on {settings.kafka_bootstrap}..."):
            handle = local_kafka.start(settings, timeout=args.timeout)
        if handle.reused:
            out.print(
                f"Reusing the broker already running: pid {handle.pid} on {handle.bootstrap}."
            )
        else:
            out.print(
                f"Started Kafka {handle.version}: pid {handle.pid} on {handle.bootstrap} "
                f"({handle.seconds:.1f} s)."
            )
    else:
        local_kafka.check_connectivity(settings, timeout=min(args.timeout, 15.0))
        out.print(f"Kafka at {escape(settings.kafka_bootstrap)} answers.")
    specs = settings.topics.all()
    created = ensure_topics(settings, specs)
    if created:
        out.print(f"Created topics: {', '.join(created)}.")
    else:
        out.print(f"All {len(specs)} topics exist.")
    _print_status(local_kafka.status(settings), settings, out)
    return EXIT_OK


def _down(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    if not settings.is_local_kafka:
        raise StackError(
            f"{settings.kafka_bootstrap} is not the local broker: `infra down` only stops the "
            f"broker FundWatch started (127.0.0.1:{settings.local_kafka_port})"
        )
    pid = local_kafka.stop(settings, timeout=args.timeout)
    if pid is None:
        out.print("No local broker is running.")
    else:
        out.print(f"Stopped the local broker (pid {pid}).")
    return EXIT_OK


def _status(args: argparse.Namespace, settings: Settings, out: Console) -> int:
    st = local_kafka.status(settings)
    _print_status(st, settings, out)
    return EXIT_OK if st.running else EXIT_NOT_RUNNING


def _print_status(st: local_kafka.BrokerStatus, settings: Settings, out: Console) -> None:
    broker = Table(show_header=False, box=None, padding=(0, 2))
    state = "[green]running[/]" if st.running else "[red]not running[/]"
    broker.add_row("Kafka", state + (f"  [yellow]{escape(st.problem)}[/]" if st.problem else ""))
    broker.add_row("bootstrap", escape(st.bootstrap))
    if st.managed:
        broker.add_row("pid", str(st.pid) if st.pid else "-")
        broker.add_row("version", st.version or settings.local_kafka_version)
        broker.add_row("data", escape(str(st.data_dir)))
    out.print(broker)
    if not st.running:
        return

    configured = {spec.name: spec for spec in settings.topics.all()}
    names = [name for name in configured if name in st.topics]
    names += [name for name in st.topics if name not in configured]
    retention = {}
    if names:
        retention = {
            name: cfg.get("retention.ms", "?")
            for name, cfg in topic_configs(settings, names).items()
        }
    table = Table(title="Topics", title_justify="left")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    table.add_column("retention", justify="right")
    for name in names:
        spec = configured.get(name)
        parts = str(st.topics[name])
        if spec is not None and st.topics[name] < spec.partitions:
            parts = f"[yellow]{parts} (< {spec.partitions})[/]"
        kept = retention.get(name, "?")
        table.add_row(escape(name), parts, format_retention(kept) if kept != "?" else "?")
    for name in configured:
        if name not in st.topics:
            table.add_row(escape(name), "[red]missing[/]", "")
    out.print(table)
