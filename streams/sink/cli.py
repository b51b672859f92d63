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
    from streams.sink.service import Sink
    from streams.stack.topics import ensure_topics
    from streams.store.client import Store, StoreError
    from streams.store.owner import QueryServer

    ensure_topics(settings, settings.topics.all())
    try:
        store = Store(settings).open()
    except StoreError as exc:
        print(f"fundwatch sink: {exc}", file=sys.stderr)
        return 1
    server = None
    try:
        store.ensure_schema()
        if store.embedded:
            server = QueryServer(store).start()
        sink = Sink(settings, store, group_id=args.group)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sink.stop())
        sink.run(idle_timeout_s=args.idle_exit)
    except KeyboardInterrupt:
        log.info("interrupted: stopping")
    finally:
        if server is not None:
            server.close()
        store.close()
    return 0
