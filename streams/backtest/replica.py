"""The worker's batch logic in a backtest: a `Replica` judges batches of raw input records as a
live worker does (`BatchProcessor` in replay mode, its states as `Settings.backtest_state`
says), with what it repartitions fed back in-process instead of through Kafka; `judge` runs a
whole input through replicas in this process (`streams.backtest.parallel` runs them on
several)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from models.alerts import Alert
from models.detector import State
from models.reference import Registry
from models.rules.config import RuleConfig
from schemas.codec import Codec
from streams.backtest.sources import Input
from streams.config import Settings
from streams.worker.processor import BatchProcessor, OutRecord, SourceRecord
from streams.worker.routing import REPARTITION_ROLES, partition_of
from streams.worker.state_table import batch_of, make_state_table

MAX_DRAIN_ROUNDS = 100
"""Batches of repartitioned records alone after the input ends, before giving up."""


class Replica:
    """The worker's batch logic (`BatchProcessor`: stages per partition, reorder buffers,
    repartitioning, watermarks) over a state table in memory (the worker's packed form, or
    plain objects that are never written back: `Settings.backtest_state`), with the
    repartitioned records fed back in-process instead of through Kafka. The same objects and
    order as a live worker, so the same alerts, including those of detectors whose state is
    per partition (the online peer models see each partition's sample of the peers)."""

    def __init__(
        self,
        proc: BatchProcessor,
        partitions: int,
        now: int,
        on_write: Callable[[str, State | None], None] | None = None,
    ) -> None:
        """`on_write(table key, state or None)`: each changed state as it is written back
        (the benchmark sizes the changelog with it)."""
        self.proc = proc
        self.table = proc.table
        self.partitions = partitions
        self.now = now
        self.on_write = on_write
        self.alerts: dict[str, Alert] = {}  # by id: copies of one finding count once, as stored
        self._feedback: list[SourceRecord] = []
        self._offsets: dict[tuple[str, int], int] = {}

    @classmethod
    def for_rules(
        cls, rules: RuleConfig, registry: Registry, settings: Settings, partitions: int, now: int
    ) -> Replica:
        """A configuration's detectors over a state table as `settings.backtest_state` says
        (the worker's, or plain objects)."""
        form = settings.model_copy(update={"worker_state": settings.backtest_state})
        table = make_state_table(form)
        proc = BatchProcessor(
            rules.build(registry),
            table,
            settings.allowed_lateness_ms,
            partitions=partitions,
            now_ms=lambda: None,  # no wall-clock check: history is in the past by definition
            replay=True,  # no restarts; `feed` hands each copy its decoded input record
        )
        return cls(proc, partitions, now)

    def process(self, records: list[SourceRecord]) -> None:
        """A batch: the records repartitioned by the previous one first, then `records`."""
        outs = self.run_batch(self.take_feedback() + records)
        self.feed(outs)

    def run_batch(self, records: list[SourceRecord]) -> list[OutRecord]:
        """Judge a batch, keep its alerts, write its changed states to the table (those the
        processor writes back); return its repartitioned records, each with the partition the
        worker's producer would give it."""
        with batch_of(self.table):  # a packed table keeps the batch's groups decoded
            batch = self.proc.process(records)
            on_write = self.on_write
            for _, key, state in self.proc.dirty_state():
                if on_write is not None:
                    on_write(key, state)
                if state is None:
                    self.table.pop(key, None)
                else:
                    self.table[key] = state
        for item in batch.results:
            if isinstance(item, Alert):
                item.detected_at = self.now  # the run's start, not the wall clock per alert
                self.alerts.setdefault(item.alert_id, item)
        outs = []
        for out in batch.out:
            if out.role in REPARTITION_ROLES:
                if out.partition is None:  # where the worker's producer would put the key
                    out.partition = partition_of(out.key, self.partitions)
                outs.append(out)
        return outs

    def feed(self, outs: Iterable[OutRecord]) -> None:
        """Repartitioned records to read in the next batch, at the next offsets of their
        partitions, as a consumer of the repartition topics would."""
        offsets, feedback = self._offsets, self._feedback
        for out in outs:
            part = out.partition
            assert part is not None
            off = offsets.get((out.role, part), 0)
            offsets[(out.role, part)] = off + 1
            feedback.append(
                SourceRecord(
                    out.role,
                    out.role,
                    part,
                    off,
                    out.key,
                    out.value,
                    out.timestamp_ms,
                    origin=out.origin,
                    decoded=out.event,
                )
            )

    def take_feedback(self) -> list[SourceRecord]:
        feedback, self._feedback = self._feedback, []
        return feedback

    def drain(self) -> None:
        """Process fed-back records until none are left (the repartition topics run dry)."""
        for _ in range(MAX_DRAIN_ROUNDS):
            if not self._feedback:
                return
            self.process([])
        raise RuntimeError("backtest: repartitioned records do not settle")


def end_watermarks(
    topics: Mapping[str, str], partitions: int, time_ms: int, codec: Codec
) -> list[SourceRecord]:
    """A Watermark record at the end of the range on every input partition: the input is
    complete up to `--to`, so every stage moves to `to` − allowed lateness and the timers due by
    then fire, as in a worker that has read up to `--to`."""
    value = codec.encode("Watermark", {"source": "backtest", "watermark_time": time_ms})
    return [
        SourceRecord(role, name, p, 2**62, b"__watermark__", value, time_ms)
        for role, name in topics.items()
        for p in range(partitions)
    ]


def judge(source: Input, replicas: Sequence[Replica], end_ms: int, batch_size: int = 2_000) -> None:
    """Every record through every replica (one read of the input), in batches as a worker
    takes them, then the end-of-range watermarks."""
    batch: list[SourceRecord] = []
    for rec in source.records:
        batch.append(rec)
        if len(batch) >= batch_size:
            for r in replicas:
                r.process(batch)
            batch = []
    codec = Codec.default()
    batch.extend(end_watermarks(source.topics, source.partitions, end_ms, codec))
    for r in replicas:
        r.process(batch)
        r.drain()
