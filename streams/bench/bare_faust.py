"""faust's own per-record floor: the worker's consumer set-up with nothing to do.

`python -m streams.bench.bare_faust` runs a faust app configured like `fundwatch worker`
(same broker, group, commit interval, stream buffer, batch size) with one agent over the three
input topics that acknowledges every record of each `take_events` batch and does nothing else:
no decode, no detectors, no table, no outputs. The benchmark times it like a live worker (its
committed offsets), so `faust_floor_eps` is the most any worker built on faust's per-record
stream can deliver on this machine, next to `floor_eps` (confluent-kafka + fastavro) and
`live_eps_per_worker` (the real worker).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from streams.config import Settings
from streams.worker.routing import INPUT_ROLES


def create_app(settings: Settings) -> Any:
    """The bare app: the worker's faust settings, one acknowledging agent, nothing else."""
    import faust

    from streams.worker.app import consumer_conf

    topics = settings.topics
    datadir = settings.data_dir / "bench" / f"{settings.worker_app_id}-bare"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(settings.worker_app_id, datadir=str(datadir), **consumer_conf(settings))
    source = app.topic(
        *(getattr(topics, role).name for role in INPUT_ROLES),
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(source, name="bare")
    async def bare(stream: Any) -> None:
        async for events in stream.take_events(
            settings.worker_batch_size, within=settings.worker_batch_seconds
        ):
            for ev in events:
                await stream.ack(ev)

    return app


def main() -> int:
    from faust.worker import Worker

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    app = create_app(Settings())
    Worker(app, loglevel="warn", quiet=True, redirect_stdouts=False).execute_from_commandline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
