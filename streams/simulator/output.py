"""Where simulated records go: Kafka topics, Avro container files, and the side files
(`labels.jsonl`, `institutions.jsonl`, `drugs.jsonl`) the backtest and the detectors read.

Counts are kept per topic and per scenario; nothing is dropped silently: a failed Kafka delivery
fails the run with the broker's reason once the rest has been flushed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from streams.simulator.config import local_text
from streams.simulator.events import EVENT_TOPICS, SCHEMAS, SIM_LABELS, SimRecord

log = logging.getLogger(__name__)

QUEUED_MAX = 50_000
"""Records the simulator may have queued but not yet delivered. An unbounded simulator runs
ahead of the broker; on a stop it delivers what it queued before it exits, which took over a
minute with the client's 500,000 on a busy machine (`fundwatch run`'s stop gave up on it)."""
UNCONFIRMED_ROUNDS = 3
"""How many times records acknowledged without an offset are produced again. librdkafka's
idempotent producer reports a retried batch that the broker answers with "duplicate sequence"
as delivered, with no offset: the broker says it has the batch. In the broker-restart test
(tests/faults/test_broker_restart.py) such a batch was once not in the topic (3 of 686 face
checks lost, 1 run in 13), so the simulator, standing in for the hospitals' systems, produces
them again: at least once, and every consumer is idempotent by event id."""
AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
SCHEMA_FILES = {
    "SettlementEvent": "settlement_event.avsc",
    "TraceScanEvent": "trace_scan_event.avsc",
    "FaceVerifyEvent": "face_verify_event.avsc",
    "SimLabel": "sim_label.avsc",
}


HEARTBEAT_MS = 3_600_000
WALL_HEARTBEAT_S = 0.2
"""Paced runs (`rate`, a live-like stream) also promise progress every this many seconds of
wall time, as a real ingest would: a stage fed by all input partitions (the institution stage)
judges an event once the sparsest partition has promised to be past it, and a simulated city
day compresses its quiet hours into seconds. With only the hourly promise the benchmark's p99
alert latency at 2,000 ev/s was 2.9 s; with a promise every simulated minute, 0.8 s."""
FINAL_MARGIN_MS = 2 * 86_400_000
"""The last watermark of a bounded run lies this far past its last event: end of input, so
every timer of the run's events (absence checks run at most a day late) fires."""


class DeliveryError(RuntimeError):
    """Kafka did not acknowledge every record."""


@dataclass(slots=True)
class Summary:
    """What a run wrote: events per topic, labels per scenario, span and speed."""

    events: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_TOPICS, 0))
    labels: dict[str, int] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None
    elapsed_s: float = 0.0
    interrupted: bool = False
    resent: int = 0
    """Records produced again because their acknowledgement carried no offset."""

    def count(self, rec: SimRecord) -> None:
        if rec.topic == SIM_LABELS:
            scenario = rec.record["scenario"]
            self.labels[scenario] = self.labels.get(scenario, 0) + 1
        else:
            self.events[rec.topic] += 1
        if self.first_ms is None:
            self.first_ms = rec.timestamp_ms
        self.last_ms = rec.timestamp_ms

    @property
    def total_events(self) -> int:
        return sum(self.events.values())

    @property
    def rate(self) -> float:
        return self.total_events / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """One line for the log (counts only: no identifiers)."""
        topics = ", ".join(f"{k} {v:,}" for k, v in self.events.items())
        labels = ", ".join(f"{k} {v}" for k, v in sorted(self.labels.items())) or "none"
        span = ""
        if self.first_ms is not None and self.last_ms is not None:
            span = f" from {local_text(self.first_ms)} to {local_text(self.last_ms)}"
        state = " (interrupted)" if self.interrupted else ""
        return (
            f"{self.total_events:,} events ({topics}){span} in {self.elapsed_s:,.1f}s "
            f"({self.rate:,.0f} events/s){state}; {sum(self.labels.values())} labels ({labels})"
        )


class Progress:
    """A rich progress bar on stderr: events, events/s and an ETA over the simulated span (or
    over `max_events` when the run is bounded by a count).

    Disabled (a no-op) when stderr is not a terminal or when asked to be quiet.
    """

    EVERY = 2048

    def __init__(
        self,
        start_ms: int,
        end_ms: int | None,
        enabled: bool = True,
        max_events: int | None = None,
    ) -> None:
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.max_events = max_events
        self._last: tuple[SimRecord, int] | None = None
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None
        self._n = 0
        self._t0 = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._progress = RichProgress(
                TextColumn("simulate"),
                BarColumn(),
                TextColumn("{task.fields[events]:>12,} events"),
                TextColumn("{task.fields[rate]:>9,.0f}/s"),
                TextColumn("at {task.fields[now]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            total = None if self.end_ms is None else self.end_ms - self.start_ms
            if self.max_events is not None:
                total = self.max_events
            self._progress.start()
            self._task = self._progress.add_task(
                "simulate", total=total, events=0, rate=0.0, now=""
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            if self._last is not None:
                self._update(*self._last)
            self._progress.stop()

    def advance(self, rec: SimRecord, events: int) -> None:
        self._n += 1
        if self._progress is None:
            return
        self._last = (rec, events)
        if self._n % self.EVERY == 0:
            self._update(rec, events)

    def _update(self, rec: SimRecord, events: int) -> None:
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        done = events if self.max_events is not None else rec.timestamp_ms - self.start_ms
        self._progress.update(
            self._task,
            completed=done,
            events=events,
            rate=events / elapsed,
            now=local_text(rec.timestamp_ms),
        )


class Pacer:
    """Smooth rate limit: the n-th event is released no earlier than n / rate seconds in.

    A slow consumer does not build up credit beyond one second (no catch-up bursts).
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.t0 = time.monotonic()
        self.n = 0

    def wait(self) -> None:
        self.n += 1
        due = self.t0 + self.n * self.interval
        now = time.monotonic()
        if due > now + 0.002:
            time.sleep(due - now)
        elif now - due > 1.0:
            self.t0, self.n = now, 0


def produce_to_kafka(
    settings: Any,
    records: Iterable[SimRecord],
    *,
    rate: float | None = None,
    max_events: int | None = None,
    progress: Progress | None = None,
    flush_timeout_s: float = 120.0,
    heartbeat_ms: int | None = HEARTBEAT_MS,
) -> Summary:
    """Produce records to the topics of `settings` (value: Avro single-object encoding, key:
    the entity, record timestamp: the event time). Raises DeliveryError if any record was not
    acknowledged; Ctrl-C stops producing, flushes what was sent and returns (interrupted).

    Every `heartbeat_ms` of simulated time (paced: also every WALL_HEARTBEAT_S of wall time),
    and once at the end of a bounded run, a Watermark record goes to every partition of the
    three input topics: the stream is in event-time order, so the simulator can promise that
    nothing earlier follows. Consumers advance event time with
    it (timers of absence checks, window expiry) even where a partition carries no events."""
    from schemas.codec import Codec
    from streams.kafka.clients import make_producer

    codec = Codec.default()
    topic_names = {name: getattr(settings.topics, name).name for name in SCHEMAS}
    producer = make_producer(settings, **{"queue.buffering.max.messages": QUEUED_MAX})
    heartbeat = _Heartbeat(producer, codec, [topic_names[t] for t in EVENT_TOPICS], heartbeat_ms)
    summary = Summary()
    failures: list[str] = []
    failed = [0]

    unconfirmed: list[tuple[str, bytes, bytes, int]] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None and (msg.offset() is None or msg.offset() < 0):
            # acknowledged without an offset: librdkafka took the broker's "duplicate
            # sequence" answer to a retried batch for success; after a broker restart such a
            # batch was once missing from the topic (see UNCONFIRMED below)
            unconfirmed.append((msg.topic(), msg.key(), msg.value(), msg.timestamp()[1]))
            return
        if err is not None:
            failed[0] += 1
            if len(failures) < 5:
                failures.append(f"{msg.topic()}: {err.str() if hasattr(err, 'str') else err}")

    pacer = Pacer(rate) if rate else None
    t0 = time.monotonic()
    produce, poll = producer.produce, producer.poll
    stop = threading.Event()
    restore = _sigint_sets(stop)
    try:
        for rec in _bounded(records, max_events):
            if stop.is_set():
                summary.interrupted = True
                break
            if pacer is not None and rec.topic != SIM_LABELS:
                pacer.wait()
            if rec.topic != SIM_LABELS:
                heartbeat.before(rec.timestamp_ms)
                if pacer is not None:
                    heartbeat.on_wall_clock(rec.timestamp_ms)
            value = codec.encode(rec.schema, rec.record)
            while True:
                try:
                    produce(
                        topic_names[rec.topic],
                        value=value,
                        key=rec.key.encode(),
                        timestamp=rec.timestamp_ms,
                        on_delivery=on_delivery,
                    )
                    break
                except BufferError:
                    poll(0.05)
            summary.count(rec)
            if progress is not None:
                progress.advance(rec, summary.total_events)
            if summary.total_events % 1000 == 0:
                poll(0)
            if failed[0]:
                break
        if summary.last_ms is not None and not summary.interrupted:
            heartbeat.final(summary.last_ms)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        restore()
    remaining = producer.flush(flush_timeout_s)
    for _ in range(UNCONFIRMED_ROUNDS):
        if not unconfirmed or remaining or failed[0]:
            break
        again = list(unconfirmed)
        unconfirmed.clear()
        summary.resent += len(again)
        log.warning(
            "%d record(s) acknowledged without an offset (a retried batch the broker called a "
            "duplicate): producing them again; consumers are idempotent by event id",
            len(again),
        )
        for topic, key, value, ts in again:
            produce(topic, value=value, key=key, timestamp=ts, on_delivery=on_delivery)
        remaining = producer.flush(flush_timeout_s)
    remaining += len(unconfirmed)
    summary.elapsed_s = time.monotonic() - t0
    if failed[0] or remaining:
        raise DeliveryError(
            f"Kafka did not acknowledge {failed[0] + remaining} record(s) "
            f"({remaining} still queued after {flush_timeout_s:.0f}s); "
            f"first errors: {'; '.join(failures) or 'timeout'}"
        )
    return summary


def _sigint_sets(stop: threading.Event) -> Any:
    """While producing, Ctrl-C (SIGINT) sets `stop`, which the loop checks per record, instead
    of raising KeyboardInterrupt wherever it lands: raised inside a delivery callback that
    `poll` runs, it made confluent-kafka return NULL (a SystemError, not an interruption).
    Only where SIGINT raises KeyboardInterrupt, in the main thread; returns what restores the
    handler."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        return lambda: None
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    return lambda: signal.signal(signal.SIGINT, previous)


class _Heartbeat:
    """Watermark records to every partition of the input topics, on simulated-time ticks."""

    def __init__(self, producer: Any, codec: Any, topics: list[str], every_ms: int | None) -> None:
        self.producer, self.codec, self.every_ms = producer, codec, every_ms
        self.topics = topics
        self.partitions: dict[str, list[int]] | None = None
        self.next_ms: int | None = None
        self.wall_at: float | None = None

    def _targets(self) -> dict[str, list[int]]:
        if self.partitions is None:
            from confluent_kafka import KafkaException

            partitions: dict[str, list[int]] = {}
            for topic in self.topics:
                deadline = time.monotonic() + 30
                while True:  # a topic created a moment ago may not be in the metadata yet
                    try:
                        meta = self.producer.list_topics(topic, timeout=10).topics.get(topic)
                    except KafkaException as exc:
                        meta, problem = None, str(exc)
                    else:
                        problem = str(meta.error) if meta is not None and meta.error else "absent"
                    if meta is not None and meta.error is None and meta.partitions:
                        partitions[topic] = sorted(meta.partitions)
                        break
                    if time.monotonic() > deadline:
                        raise DeliveryError(
                            f"cannot send watermarks: no metadata for {topic} ({problem})"
                        )
                    time.sleep(0.2)
            self.partitions = partitions
        return self.partitions

    def before(self, event_ms: int) -> None:
        if self.every_ms is None:
            return
        if self.next_ms is None:
            self.next_ms = (event_ms // self.every_ms + 1) * self.every_ms
        elif event_ms >= self.next_ms:
            self.send(event_ms // self.every_ms * self.every_ms)
            self.next_ms = (event_ms // self.every_ms + 1) * self.every_ms

    def on_wall_clock(self, event_ms: int) -> None:
        """Promise `event_ms` (the records come in event-time order: nothing earlier follows)
        if WALL_HEARTBEAT_S of wall time passed since the last promise."""
        if self.every_ms is None:
            return
        now = time.monotonic()
        if self.wall_at is None:
            self.wall_at = now
        elif now - self.wall_at >= WALL_HEARTBEAT_S:
            self.wall_at = now
            self.send(event_ms)

    def final(self, last_ms: int) -> None:
        if self.every_ms is not None:
            self.send(last_ms + FINAL_MARGIN_MS)

    def send(self, watermark_ms: int) -> None:
        value = self.codec.encode(
            "Watermark", {"source": "simulator", "watermark_time": watermark_ms}
        )
        for topic, partitions in self._targets().items():
            for partition in partitions:
                self.producer.produce(
                    topic, value=value, key=b"__watermark__", partition=partition,
                    timestamp=watermark_ms,
                )  # fmt: skip


def write_avro_files(
    out_dir: Path,
    records: Iterable[SimRecord],
    *,
    max_events: int | None = None,
    progress: Progress | None = None,
    seed: int = 0,
) -> Summary:
    """One Avro container file per topic (`<topic>.avro`, current schema, deflate) in `out_dir`.

    The sync marker derives from the seed, so the same run gives byte-identical files.
    """
    from fastavro import parse_schema
    from fastavro.write import Writer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    files = {}
    writers = {}
    t0 = time.monotonic()
    try:
        for topic, name in SCHEMAS.items():
            schema = parse_schema(json.loads((AVRO_DIR / SCHEMA_FILES[name]).read_text("utf-8")))
            files[topic] = (out_dir / f"{topic}.avro").open("wb")
            marker = hashlib.blake2b(f"{seed}:{topic}".encode(), digest_size=16).digest()
            writers[topic] = Writer(files[topic], schema, codec="deflate", sync_marker=marker)
        try:
            for rec in _bounded(records, max_events):
                writers[rec.topic].write(rec.record)
                summary.count(rec)
                if progress is not None:
                    progress.advance(rec, summary.total_events)
        except KeyboardInterrupt:
            summary.interrupted = True
        for writer in writers.values():
            writer.flush()
    finally:
        for fh in files.values():
            fh.close()
    summary.elapsed_s = time.monotonic() - t0
    return summary


def tee_labels(records: Iterable[SimRecord], path: Path) -> Iterator[SimRecord]:
    """Pass records through, writing each label as a JSON line to `path` on the way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for rec in records:
            if rec.topic == SIM_LABELS:
                fh.write(json.dumps(rec.record, ensure_ascii=False) + "\n")
            yield rec


def _bounded(records: Iterable[SimRecord], max_events: int | None) -> Iterator[SimRecord]:
    if max_events is None:
        yield from records
        return
    from streams.simulator.simulation import limit

    yield from limit(iter(records), max_events)
