"""`fundwatch sink`: run the sink on its own (a deployment runs it as a service)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from streams.config import Settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--group",
        default=None,
        help="consumer group (default: FUNDWATCH_CONSUMER_GROUP, fundwatch-sink)",
    )
    parser.add_argument(
        "--idle-exit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit once nothing has arrived for this long and all is stored",
    )


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    """Run until SIGTERM/SIGINT (or --idle-exit): the batch in flight is stored and committed,
    then the consumer closes; exit 0. Exit 1 if the store (or, for dead letters, the broker) is
    unavailable at that point (the batch's offsets stay uncommitted and are re-read by the next
    sink)."""
    from streams.sink.metrics import serve_sink_metrics
    from streams.sink.service import BatchAbandoned, Sink
    from streams.stack.topics import ensure_topics
    from streams.store.client import Store, StoreError
    from streams.store.owner import QueryServer

    sink: Sink | None = None
    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True
        if sink is not None:
            sink.stop()  # the loop finishes the batch in flight, commits and returns

    # A signal stops the sink cleanly, even one that arrives while it starts.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    ensure_topics(settings, settings.topics.all())
    try:
        store = Store(settings).open()
    except StoreError as exc:
        print(f"fundwatch sink: {exc}", file=sys.stderr)
        return 1
    server = metrics = None
    try:
        store.ensure_schema()
        if store.embedded:
            server = QueryServer(store).start()
        sink = Sink(settings, store, group_id=args.group)
        if stop_requested:
            sink.stop()
        metrics = serve_sink_metrics(sink)
        sink.run(idle_timeout_s=args.idle_exit)
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    except BatchAbandoned as exc:
        print(f"fundwatch sink: {exc}", file=sys.stderr)
        return 1
    finally:
        if metrics is not None:
            metrics.close()
        if server is not None:
            server.close()
        store.close()
    return 0
