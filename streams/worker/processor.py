"""One batch of records in, alerts, repartitioned records and dead letters out.

This is the worker's logic without faust: the faust agent (streams/worker/app.py) hands it the
records of a `take_events` batch, sends what it returns, and lets it write its state to the
table. Tests drive it directly with a dict as the table.

State: one `DetectorSet` per (stage, partition), each with a write-back cache over the state
table (keys `<partition>|<detector id>|<state key>`, JSON values). A batch reads what it needs,
detectors mutate their states in memory, and `dirty_state(partition)` yields the writes for the
changelog at the end of the batch, before the batch's offsets are acknowledged.

Checkpoint: with the states, each batch writes a progress record per partition it touched
(`<partition>|__progress__|`): for each source topic, the next offset to read and the offsets
still held; for each channel, its event-time progress capped at the oldest record it still
holds. After a restart (or a rebalance) the records faust re-delivers from the committed offset
that were already judged are skipped (not re-applied, not re-forwarded), and each channel
resumes from its safe progress even if its input has nothing left to deliver. The cap keeps a
restored frontier from passing a held record before it is read again.
"""

from __future__ import annotations

import itertools
import logging
import time
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from models.alerts import Alert
from models.detector import SETTLEMENT, Detector, Event, State
from models.runner import DEFAULT_LATENESS_MS, DetectorSet, wall_clock_ms
from schemas.codec import Codec, CodecError
from schemas.validation import InvalidEvent, validate
from streams.sink.service import dead_letter_id
from streams.worker.routing import (
    CHANNELS_OF_STAGE,
    INPUT_ROLES,
    REPARTITION_ROLES,
    STAGES_OF_ROLE,
    TOPIC_OF_SCHEMA,
    detectors_by_stage,
    repartition_keys,
)
from streams.worker.state_table import PROGRESS, PackedTable, partition_items

log = logging.getLogger(__name__)

_DELETED = object()
_FRESH: tuple[bool, bool, None] = (False, False, None)
"""`_seen_before` of a record no process has read before."""
NEVER = -(2**62)
FORWARDED_CACHE = 20_000
"""Decoded events of the latest forwarded records, by value bytes (see `_remember_forwarded`)."""
GAP_REWIND_S = 10.0
"""How often the consumer is asked again to read a gap that has not closed."""
GAP_PATIENCE_S = 60.0
"""How long records past a gap in a source's offsets wait for the gap to be read (see
`_in_offset_order`) before the gap is taken as final and they are judged."""
DEDUP_HORIZON_MS = 60 * 60_000
"""How far behind a stage's watermark an event id is at least remembered, to drop a second
delivery of the same event (a producer's retry) instead of judging it twice. The ids are kept
by hour of event time, and an hour is forgotten once all of it is this far behind the watermark
(so an id is remembered for one to two horizons). Kept in memory only: a duplicate whose two
copies straddle a restart is judged twice (the rule detectors' windows ignore it; counting
models may count it twice)."""


@dataclass(slots=True)
class SourceRecord:
    """A consumed record, as the processor needs it."""

    role: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    ref: Any = None  # the caller's handle (the faust event), returned when the record is done
    origin: Origin | None = None  # of a repartitioned copy: the input record it copies
    # of a copy fed back in memory (the backtest): the decoded input record it copies
    decoded: dict[str, Any] | None = None


@dataclass(slots=True)
class _Held:
    """An event waiting in the reorder buffers of `pending` stages."""

    rec: SourceRecord
    event: dict[str, Any]
    pending: int
    failed: bool = False
    duplicate: bool = False


@dataclass(slots=True)
class _Gap:
    """Records of a source that arrived past its next expected offset, by offset."""

    since: float
    asked: float  # when the consumer was last asked to read the gap again
    records: dict[int, SourceRecord] = field(default_factory=dict)


@dataclass
class Batch:
    """What a batch produced: records to send, detector results, records done."""

    out: list[OutRecord] = field(default_factory=list)
    results: list[Any] = field(default_factory=list)  # alerts and aggregator records
    done: list[Any] = field(default_factory=list)  # SourceRecord.ref of finished records
    # (topic, partition, offset) to read again from: a gap the consumer must fill
    rewind: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def alerts(self) -> list[Alert]:
        return [a for a in self.results if isinstance(a, Alert)]


@dataclass(slots=True)
class OutRecord:
    """A record to produce: to the topic of `role`, with key, value, timestamp (and partition,
    for watermarks, which go to every partition rather than where a key hashes)."""

    role: str
    key: bytes
    value: bytes
    timestamp_ms: int
    partition: int | None = None
    origin: Origin | None = None  # of a forwarded copy (sent as a header, see `origin_header`)
    # of a forwarded copy: the input record as decoded (not produced; the backtest feeds it
    # back with the copy, `SourceRecord.decoded`)
    event: dict[str, Any] | None = None


Origin = tuple[str, int, int, int]
"""A forwarded copy's origin: input role, partition, offset, and the copy's number among the
copies of that record (a settlement goes to two staff keys of one topic)."""
ORIGIN_HEADER = "fw-origin"


def origin_header(origin: Origin) -> tuple[str, bytes]:
    return ORIGIN_HEADER, "|".join(map(str, origin)).encode()


def parse_origin(value: bytes) -> Origin | None:
    """The origin in a copy's header; None for a malformed one (the copy is judged normally)."""
    try:
        role, partition, offset, copy = value.decode().split("|")
        return role, int(partition), int(offset), int(copy)
    except ValueError:
        return None


@dataclass
class WorkerStats:
    read: Counter = field(default_factory=Counter)  # per source role
    processed: Counter = field(default_factory=Counter)  # judged by the detectors, once each
    unkeyed: Counter = field(default_factory=Counter)  # valid, but no detector keys them
    dead_lettered: Counter = field(default_factory=Counter)  # per reason code
    control: Counter = field(default_factory=Counter)  # watermark records per source role
    replayed: Counter = field(default_factory=Counter)  # re-delivered, judged before a restart
    duplicates: Counter = field(default_factory=Counter)  # an event id already judged (retries)
    alerts: Counter = field(default_factory=Counter)  # per detector id
    batches: int = 0

    def valid_events(self) -> int:
        """The valid input events: judged, or keyed by no detector (a stock-in scan)."""
        return sum(self.processed[r] + self.unkeyed[r] for r in INPUT_ROLES)


class CachedState:
    """StateStore for one partition: a write-back cache over the shared state table.

    Over a `PackedTable` the cache lasts one batch (`per_batch`): the table keeps the recently
    used groups decoded itself, and everything else compact. Over a dict or a faust table it
    keeps every state it has read (a faust table would decode each read again)."""

    __slots__ = ("_cache", "_dirty", "partition", "per_batch", "table")

    def __init__(self, table: MutableMapping[str, Any], partition: int) -> None:
        self.table = table
        self.partition = partition
        self.per_batch = isinstance(table, PackedTable)
        self._cache: dict[tuple[str, str], Any] = {}
        self._dirty: set[tuple[str, str]] = set()

    def _key(self, detector_id: str, key: str) -> str:
        return f"{self.partition}|{detector_id}|{key}"

    def get(self, detector_id: str, key: str) -> State | None:
        k = (detector_id, key)
        state = self._cache.get(k)
        if state is None:
            state = self.table.get(self._key(detector_id, key))
            self._cache[k] = state if state is not None else _DELETED
            return state
        return None if state is _DELETED else state

    def put(self, detector_id: str, key: str, state: State | None) -> None:
        k = (detector_id, key)
        self._cache[k] = _DELETED if state is None else state
        self._dirty.add(k)

    def preload(self, detector_id: str, key: str, state: State) -> None:
        self._cache[(detector_id, key)] = state

    def drain(self) -> Iterator[tuple[str, State | None]]:
        """(table key, state or None to delete) of every key changed since the last drain."""
        cache, table_key = self._cache, self._key
        for k in self._dirty:
            state = cache[k]
            if state is _DELETED:
                del cache[k]  # nothing to keep in memory for a deleted key
                yield table_key(*k), None
            else:
                yield table_key(*k), state
        self._dirty.clear()
        if self.per_batch:
            cache.clear()

    def cached_keys(self) -> int:
        return len(self._cache)


class ObjectStates:
    """StateStore for one partition of a processor whose states live only in memory and are
    never written back (a replay's processor over a plain dict: `BatchProcessor(replay=True)`): no
    table to read, no record of what changed, nothing kept for a deleted or absent key."""

    __slots__ = ("objects", "partition")
    per_batch = False

    def __init__(self, partition: int) -> None:
        self.partition = partition
        # read and written directly by `DetectorSet` (see `models.runner.StateStore`)
        self.objects: dict[tuple[str, str], State] = {}

    def get(self, detector_id: str, key: str) -> State | None:
        return self.objects.get((detector_id, key))

    def put(self, detector_id: str, key: str, state: State | None) -> None:
        if state is None:
            self.objects.pop((detector_id, key), None)
        else:
            self.objects[(detector_id, key)] = state

    def preload(self, detector_id: str, key: str, state: State) -> None:
        self.objects[(detector_id, key)] = state

    def drain(self) -> Iterator[tuple[str, State | None]]:
        return iter(())

    def cached_keys(self) -> int:
        return len(self.objects)


class BatchProcessor:
    """Decodes, routes, runs the detectors and collects what to send."""

    def __init__(
        self,
        detectors: list[Detector],
        table: MutableMapping[str, Any],
        allowed_lateness_ms: int = DEFAULT_LATENESS_MS,
        codec: Codec | None = None,
        partitions: int = 4,
        now_ms: Callable[[], int | None] = wall_clock_ms,
        start_offset: Callable[[str, int], int | None] | None = None,
        replay: bool = False,
    ) -> None:
        """`start_offset(topic, partition)`: where the consumer (re)starts reading a source
        partition (its committed offset, or the log start); given, each source's records are
        judged in offset order without a gap (`_in_offset_order`): the live worker. The
        backtest's raw-table source gives offsets in event-time order with gaps (watermarks,
        dead letters), and replays never rebalance.

        `replay=True`: a backtest's processor (`streams.backtest.replica.Replica`). It never
        restarts, so it writes no checkpoints and keeps no restart bookkeeping (read offsets,
        held offsets); its caller feeds the repartitioned copies back in memory with their
        decoded input records (`OutRecord.event` → `SourceRecord.decoded`), so it keeps no
        cache of forwarded events; and over a plain dict its states live only in its memory
        (`ObjectStates`: nothing reads the table back), while a `PackedTable` is written back
        as the worker writes it."""
        self.replay = replay
        self.codec = codec or Codec.default()
        self.start_offset = start_offset
        self.now_ms = now_ms  # the wall clock event times are validated against
        self.table = table
        self.stages = detectors_by_stage(detectors)
        # repartition topics whose stage has a detector to feed (none for the group stage of a
        # configuration without peer_deviation)
        # (an OrderedDict: evicting the oldest of a plain dict with `next(iter(d))` walks over
        # the slots its earlier evictions left empty, milliseconds per batch)
        self._forwarded_events: OrderedDict[bytes, dict[str, Any]] = OrderedDict()
        # per (repartition role, partition, origin role, origin partition): the highest
        # (offset, copy) of the copies read (see `_copy_seen`)
        self._origin_high: dict[tuple[str, int, str, int], tuple[int, int]] = {}
        # An input record goes only where a detector keys it: per (stage or repartition role,
        # input role), the `keys` of the detectors there that take that input. A stock-in scan,
        # which no detector reads, waits in no buffer and is copied nowhere; a patient's face
        # check skips the doctor stage, a staff clock-in the person stage.
        self._takers: dict[tuple[str, str], tuple[Callable[[Event], list[str]], ...]] = {
            (place, source): tuple(
                det.keys
                for stage in STAGES_OF_ROLE.get(place, (place,))
                for det in self.stages[stage]
                if source in det.topics
            )
            for place in (*self.stages, *REPARTITION_ROLES)
            for source in INPUT_ROLES
        }
        self.lateness = allowed_lateness_ms
        self.partitions = partitions
        self.sets: dict[tuple[str, int], DetectorSet] = {}
        self.stores: dict[int, CachedState | ObjectStates] = {}
        self.stats = WorkerStats()
        # event-time progress: per input channel (role, partition), and per repartition channel
        # the promise of every upstream input partition ("input-<i>")
        self.progress: dict[tuple[str, int], int] = {}
        self.upstream: dict[tuple[str, int], dict[str, int]] = {}
        self._forwarded_wm: dict[int, int] = {}
        self.buffers: dict[tuple[str, int], list] = {}
        # per buffer, how many of its first entries are in order (the rest arrived since)
        self._in_order: dict[tuple[str, int], int] = {}
        self._seq = itertools.count()
        self._held_offsets: dict[tuple[str, int], set[int]] = {}
        # checkpoint: next offset to read per source, the restored view of a previous process
        # (next offset, offsets it still held) per source, restored channel floors
        self._read_next: dict[tuple[str, int], int] = {}
        self._first_read: dict[tuple[str, int], int] = {}  # since assigned, for diagnostics
        # per source: (next offset, {held offset: the stages it still waited in, or None
        # for all of them}) as the previous process left them
        self._restored: dict[tuple[str, int], tuple[int, dict[int, tuple[str, ...] | None]]] = {}
        self._gaps: dict[tuple[str, int], _Gap] = {}  # records waiting for earlier offsets
        self._start: dict[tuple[str, int], int | None] = {}  # restart offsets, since opened
        self.floor: dict[tuple[str, int], int] = {}
        self._written: dict[int, Any] = {}
        self._batch_partitions: set[int] = set()
        # per (stage, partition): the event keys judged recently, by hour of event time
        self._seen: dict[tuple[str, int], dict[int, set[Any]]] = {}

    # -- state ------------------------------------------------------------------------------
    def _set_for(self, stage: str, partition: int) -> DetectorSet:
        ds = self.sets.get((stage, partition))
        if ds is None:
            if partition not in self.stores:
                self._open_partition(partition)
            ds = self.sets[(stage, partition)]
        return ds

    def _open_partition(self, partition: int) -> None:
        """First record of a partition in this process: load its states and timers."""
        store: CachedState | ObjectStates = (
            ObjectStates(partition)
            if self.replay and not isinstance(self.table, PackedTable)
            else CachedState(self.table, partition)
        )
        self.stores[partition] = store
        sets = {
            stage: DetectorSet(
                dets, store, allowed_lateness_ms=self.lateness, external_watermark=True
            )
            for stage, dets in self.stages.items()
        }
        for stage, ds in sets.items():
            self.sets[(stage, partition)] = ds
        restored = 0
        entries: dict[str, list[tuple[str, str, State]]] = {s: [] for s in sets}
        stage_of = {det.id: stage for stage, dets in self.stages.items() for det in dets}
        for table_key, state in partition_items(self.table, partition):
            if state is None:
                continue
            _, did, key = table_key.split("|", 2)
            if did == PROGRESS:
                self._restore_checkpoint(partition, state)
                continue
            stage = stage_of.get(did)
            if stage is None:
                continue
            if not store.per_batch:  # else the batches read it from the table as they need it
                store.preload(did, key, state)
            entries[stage].append((did, key, state))
            restored += 1
        for stage, items in entries.items():
            sets[stage].reindex(items)
        if restored:
            log.info(
                "partition %d: restored %d detector states from the table", partition, restored
            )

    def drop_partition(self, partition: int) -> None:
        """The partition was revoked: forget its in-memory state (the table keeps it)."""
        held = sum(len(self.buffers.get((stage, partition), ())) for stage in self.stages)
        log.info("partition %d revoked: %d held records left for the next owner", partition, held)
        self.stores.pop(partition, None)
        for stage in self.stages:
            self.sets.pop((stage, partition), None)
        for stage in self.stages:
            self.buffers.pop((stage, partition), None)  # unacknowledged: the next owner re-reads
            self._in_order.pop((stage, partition), None)
        # The held offsets stay: faust commits after this revocation hook runs, and the commit
        # guard must still refuse to pass them. They are reset when the partition is assigned.
        for progress in (self.progress, self.upstream):
            for key in [k for k in progress if k[1] == partition]:
                del progress[key]
        self._forwarded_wm.pop(partition, None)
        for stage in self.stages:
            self._seen.pop((stage, partition), None)
        for bookkeeping in (
            self._read_next,
            self._first_read,
            self._restored,
            self._gaps,
            self.floor,
            self._origin_high,
        ):
            for key in [k for k in bookkeeping if k[1] == partition]:
                del bookkeeping[key]
        self._written.pop(partition, None)
        self._batch_partitions.discard(partition)
        for key in [k for k in self._start if k[1] == partition]:
            del self._start[key]

    # -- checkpoint -------------------------------------------------------------------------
    def _restore_checkpoint(self, partition: int, saved: dict[str, Any]) -> None:
        for role, orole, opart, offset, copy in saved.get("org", ()):
            key = (role, partition, orole, opart)
            self._origin_high[key] = max(self._origin_high.get(key, (-1, -1)), (offset, copy))
        for topic, entry in saved.get("src", {}).items():
            nxt, held = entry[0], entry[1]
            waiting = entry[2] if len(entry) > 2 else {}
            self._restored[(topic, partition)] = (
                nxt,
                {o: tuple(waiting[str(o)]) if str(o) in waiting else None for o in held},
            )
        for role, value in saved.get("ch", {}).items():
            key = (role, partition)
            if role in INPUT_ROLES:
                self.progress[key] = max(self.progress.get(key, NEVER), value)
            else:
                self.floor[key] = max(self.floor.get(key, NEVER), value)
        log.info(
            "partition %d: resuming from a checkpoint (%d sources, %d channels)",
            partition, len(saved.get("src", {})), len(saved.get("ch", {})),
        )  # fmt: skip

    def _seen_before(self, rec: SourceRecord) -> tuple[bool, bool, tuple[str, ...] | None]:
        """(read, judged, stages) before the checkpoint, for a record delivered again: a record
        read before was forwarded then; one read and not held any more was also judged; one
        held is judged now in the stages it still waited in (`stages`; None: all of them),
        since the others judged it before the checkpoint and their states say so."""
        src = (rec.topic, rec.partition)
        if rec.offset >= self._read_next.get(src, -1):
            if src not in self._read_next:
                self._first_read[src] = rec.offset
            self._read_next[src] = rec.offset + 1
        restored = self._restored.get(src)
        if restored is None:
            return False, False, None
        # Kept for as long as the partition is assigned: after a rebalance faust may deliver
        # records of the old fetch position before it seeks back to the committed offset, so
        # the offsets do not arrive in one ascending pass.
        end, unread = restored
        if rec.offset >= end:
            return False, False, None
        if rec.offset in unread:  # held at the checkpoint: judged now, by this process
            return True, False, unread.pop(rec.offset)
        return True, True, None

    def _copy_seen(self, rec: SourceRecord, read_before: bool) -> bool:
        """A repartitioned copy whose input record was copied here before: a worker killed
        after sending a batch's copies and before its checkpoint forwards them again after the
        restart. Copies of one input partition arrive in its offset order, so one high-water
        mark per (channel, origin partition), kept in the checkpoint, finds the second copy
        even when a restart separates the two (the event-id dedup is in memory). Copies read
        before the checkpoint are the restored view's business (judged or held)."""
        assert rec.origin is not None
        orole, opart, offset, copy = rec.origin
        key = (rec.role, rec.partition, orole, opart)
        high = self._origin_high.get(key)
        if high is not None and (offset, copy) <= high and not read_before:
            return True
        if high is None or (offset, copy) > high:
            self._origin_high[key] = (offset, copy)
        return False

    def _checkpoint(self, partition: int) -> dict[str, Any]:
        """Where partition `partition` stands, consistent with the states written with it."""
        src: dict[str, list[Any]] = {}
        oldest: dict[str, int] = {}
        # per topic: held offset -> the stages it still waits in, and its role
        waiting: dict[str, dict[int, tuple[list[str], str]]] = {}
        for stage in self.stages:
            for t, _, _, _, held_rec in self.buffers.get((stage, partition), ()):
                rec = held_rec.rec
                if t < oldest.get(rec.role, -NEVER):
                    oldest[rec.role] = t
                by_offset = waiting.setdefault(rec.topic, {})
                entry = by_offset.get(rec.offset)
                if entry is None:
                    by_offset[rec.offset] = ([stage], rec.role)
                else:
                    entry[0].append(stage)
        partial: dict[str, dict[str, list[str]]] = {}
        for topic, by_offset in waiting.items():
            # only the records some stage has judged already: the others wait in all of
            # their stages (also a record in no buffer, waiting for a gap)
            partial[topic] = {
                str(offset): stages
                for offset, (stages, role) in by_offset.items()
                if len(stages) < len(STAGES_OF_ROLE[role])
            }
        for (topic, p), (end, unread) in self._restored.items():
            if p == partition:  # held by the previous process, not read again yet
                by_topic = partial.setdefault(topic, {})
                for offset, stages in unread.items():
                    if stages is not None:
                        by_topic[str(offset)] = list(stages)
                src[topic] = [end, sorted(unread)]
        for (topic, p), nxt in self._read_next.items():
            if p == partition:
                end, unread = src.get(topic, (nxt, []))
                held = set(self._held_offsets.get((topic, p), ())) | set(unread)
                src[topic] = [max(end, nxt), sorted(held)]
        for topic, item in src.items():
            # a stage that judged a held record must not judge it again after a restart
            item.append(partial.get(topic, {}))
        channels: dict[str, int] = {}
        for role in (*INPUT_ROLES, *REPARTITION_ROLES):
            value = min(self._channel(role, partition), oldest.get(role, -NEVER))
            if value != NEVER:
                channels[role] = value
        origins = [
            [role, orole, opart, *high]
            for (role, p, orole, opart), high in sorted(self._origin_high.items())
            if p == partition
        ]
        return {"src": src, "ch": channels, "org": origins}

    # -- event time -------------------------------------------------------------------------
    def _channel(self, role: str, partition: int) -> int:
        if role in INPUT_ROLES:
            return self.progress.get((role, partition), NEVER)
        floor = self.floor.get((role, partition), NEVER)  # restored from a checkpoint
        sources = self.upstream.get((role, partition))
        if sources is None or len(sources) < self.partitions:
            return floor  # not every upstream input partition has promised anything yet
        return max(floor, min(sources.values()))

    def _observe(self, rec: SourceRecord, time_ms: int, source: str | None) -> None:
        key = (rec.role, rec.partition)
        if rec.role in INPUT_ROLES:
            if time_ms > self.progress.get(key, NEVER):
                self.progress[key] = time_ms
        elif source is not None:
            sources = self.upstream.setdefault(key, {})
            if time_ms > sources.get(source, NEVER):
                sources[source] = time_ms

    def forward_watermarks(self) -> list[OutRecord]:
        """Promises to the repartition topics: for each input partition this worker reads,
        the slowest of its three input topics' progress, sent to every repartition partition."""
        out: list[OutRecord] = []
        for partition in sorted({p for (_, p) in self.progress}):
            wm = min(self.progress.get((role, partition), NEVER) for role in INPUT_ROLES)
            if wm == NEVER or wm <= self._forwarded_wm.get(partition, NEVER):
                continue
            self._forwarded_wm[partition] = wm
            value = self.codec.encode(
                "Watermark", {"source": f"input-{partition}", "watermark_time": wm}
            )
            for role in REPARTITION_ROLES:
                for target in range(self.partitions):
                    out.append(OutRecord(role, b"__watermark__", value, wm, target))
        return out

    def dirty_state(self) -> Iterator[tuple[int, str, State | None]]:
        """(partition, table key, state or None) to write before the batch is acknowledged."""
        for partition, store in self.stores.items():
            for table_key, state in store.drain():
                yield partition, table_key, state
        if self.replay:  # no checkpoints: a replay never restarts from its table
            self._batch_partitions.clear()
            return
        for partition in sorted(self._batch_partitions):
            if partition not in self.stores:
                continue
            checkpoint = self._checkpoint(partition)
            if checkpoint != self._written.get(partition):
                self._written[partition] = checkpoint
                yield partition, f"{partition}|{PROGRESS}|", checkpoint
        self._batch_partitions.clear()

    # -- records ----------------------------------------------------------------------------
    def process(self, records: list[SourceRecord]) -> Batch:
        """Run a batch. Events wait in their stage's reorder buffer until every input of the
        stage has moved past them, and are then judged in event-time order, so the alerts do
        not depend on how the inputs happened to interleave. Returns what to produce, the
        alerts raised, and the records that are done (to acknowledge): held records are not,
        so their offsets are not committed until they have been judged."""
        batch = Batch()
        touched: set[tuple[str, int]] = set()
        self.stats.batches += 1
        ordered = self._in_offset_order(records, batch) if self.start_offset else records
        # the loop runs per record: its lookups are made once per batch
        stores, read, buffer_of, held_offsets = (
            self.stores, self.stats.read, self._buffer, self._held_offsets
        )  # fmt: skip
        batch_partitions, takers, seq = self._batch_partitions, self._takers, self._seq
        out_append = batch.out.append
        # what was read before a restart, which offsets are held, and which copies came
        # already (forwarded again around a crash) matter only to a processor that can restart
        # (or was restored from a checkpoint): not to a replay's
        restartable = not self.replay or bool(self._restored)
        progress, carry = self.progress, self.replay
        for rec in ordered:
            if rec.partition not in stores:
                self._open_partition(rec.partition)  # restores its checkpoint first
                restartable = restartable or bool(self._restored)
            read[rec.role] += 1
            batch_partitions.add(rec.partition)
            forwarded, replay, waiting = self._seen_before(rec) if restartable else _FRESH
            try:
                event = self._decode(rec)
            except _Rejected as exc:
                if replay:  # dead-lettered before the restart
                    self.stats.replayed[rec.role] += 1
                else:
                    batch.out.append(self._dead_letter(rec, exc.reason_code, str(exc)))
                batch.done.append(rec.ref)
                continue
            if "_watermark" in event:
                self.stats.control[rec.role] += 1
                self._observe(rec, event["_watermark"], event["_source"])
                touched.update((stage, rec.partition) for stage in STAGES_OF_ROLE[rec.role])
                batch.done.append(rec.ref)
                continue
            if rec.origin is not None and restartable and self._copy_seen(rec, forwarded):
                self.stats.duplicates[rec.role] += 1  # forwarded twice around a crash
                batch.done.append(rec.ref)
                continue
            if replay:  # judged and forwarded before the restart: its progress only
                self.stats.replayed[rec.role] += 1
                if rec.role in INPUT_ROLES:
                    self._observe(rec, event["event_time"], None)
                    touched.update((stage, rec.partition) for stage in STAGES_OF_ROLE[rec.role])
                batch.done.append(rec.ref)
                continue
            if rec.role in INPUT_ROLES:
                ts = event["event_time"]
                if not forwarded:
                    copies = 0
                    # as decoded, whatever a detector does to its own copy
                    snapshot = dict(event) if carry else None
                    for role, key in repartition_keys(rec.role, event):
                        if _taken(takers[(role, rec.role)], event):
                            origin = (rec.role, rec.partition, rec.offset, copies)
                            out_append(
                                OutRecord(role, key.encode(), rec.value, ts, None, origin, snapshot)
                            )
                            copies += 1
                    if copies and not carry:
                        self._remember_forwarded(rec.value, event)
                channel = (rec.role, rec.partition)  # `_observe`, inlined
                if ts > progress.get(channel, NEVER):
                    progress[channel] = ts
            stages = STAGES_OF_ROLE[rec.role]
            if rec.role in INPUT_ROLES:
                touched.update((stage, rec.partition) for stage in stages)  # progress moved
                stages = tuple(st for st in stages if _taken(takers[(st, rec.role)], event))
                if not stages and waiting is None:  # no detector keys it: done
                    self.stats.unkeyed[rec.role] += 1
                    batch.done.append(rec.ref)
                    continue
            if waiting is not None:  # re-read: only the stages that had not judged it yet
                stages = tuple(stage for stage in stages if stage in waiting)
                if not stages:
                    batch.done.append(rec.ref)
                    continue
            held = _Held(rec, event, len(stages))
            if restartable:
                offsets = held_offsets.get((rec.topic, rec.partition))
                if offsets is None:
                    offsets = held_offsets[(rec.topic, rec.partition)] = set()
                offsets.add(rec.offset)
            # judged in (event time, topic, event id) order; `seq` keeps the sort off `held`
            entry = (event["event_time"], event["_topic"], event["event_id"], next(seq), held)
            for stage in stages:
                buffer_of(stage, rec.partition).append(entry)
                touched.add((stage, rec.partition))
        for stage, partition in sorted(touched):
            self._release(stage, partition, batch)
        batch.out.extend(self.forward_watermarks())
        batch.out.extend(self._outputs(batch.results))
        return batch

    def _in_offset_order(self, records: list[SourceRecord], batch: Batch) -> Iterator[SourceRecord]:
        """Each source's records in offset order, without a gap. After a rebalance faust can
        hand over a few records of its old fetch position before it seeks back to the
        committed offset: judged first, they would move a channel's event time past records
        that come only after the seek (a face check judged after its settlement). A record
        past the next expected offset (for the first record since the partition was opened:
        where the consumer restarts, `start_offset`) waits here, unacknowledged, and the batch
        asks the consumer to rewind to the expected offset (`Batch.rewind`, then the worker's
        timer, `due_rewinds`): faust drops a record of an old generation without delivering it
        again, and drops a re-read record older than one it has delivered, so a wait alone could
        be forever. A copy delivered again replaces the waiting one. A gap still open after
        GAP_PATIENCE_S is taken as final, with a warning."""
        now = time.monotonic()
        for src, gap in list(self._gaps.items()):
            if now - gap.since >= GAP_PATIENCE_S:
                first = min(gap.records)
                log.warning(
                    "%s[%d]: offsets %s..%d never arrived in %.0fs (deleted by retention?); "
                    "judging from %d", src[0], src[1], self._read_next.get(src, "?"), first - 1,
                    now - gap.since, first,
                )  # fmt: skip
                self._read_next[src] = first
                yield from self._unstash(src, batch)
        for rec in records:
            if rec.partition not in self.stores:
                self._open_partition(rec.partition)  # restores its checkpoint first
            src = (rec.topic, rec.partition)
            expected = self._expected(src)
            if expected is not None and rec.offset > expected:
                gap = self._gaps.get(src)
                if gap is None:
                    gap = self._gaps[src] = _Gap(now, now)
                    batch.rewind.append((rec.topic, rec.partition, expected))
                    log.info(
                        "%s[%d]@%d arrived before offset %d: held, and the consumer rewound to "
                        "it", rec.topic, rec.partition, rec.offset, expected,
                    )  # fmt: skip
                gap.records[rec.offset] = rec  # a copy delivered again replaces the first
                continue
            yield rec
            if src in self._gaps:
                yield from self._unstash(src, batch)

    def _unstash(self, src: tuple[str, int], batch: Batch) -> Iterator[SourceRecord]:
        """The waiting records of a source that are next in line; those whose offset was read
        meanwhile (delivered again after the seek) are dropped. Neither a dropped nor a
        replaced copy is acknowledged: faust would commit its offset past the gap."""
        gap = self._gaps[src]
        while gap.records:
            nxt = self._read_next.get(src, 0)
            for offset in [o for o in gap.records if o < nxt]:
                del gap.records[offset]
            rec = gap.records.pop(nxt, None)
            if rec is None:
                break
            yield rec  # judged by the caller, which moves the source's next offset past it
        if not gap.records:
            del self._gaps[src]

    def _expected(self, src: tuple[str, int]) -> int | None:
        """The next offset of a source in line to be judged: after the last one read, or,
        for the first record since the partition was opened, where the consumer restarts."""
        expected = self._read_next.get(src)
        if expected is None and self.start_offset is not None:
            expected = self._start.get(src)
            if expected is None:
                expected = self._start[src] = self.start_offset(*src)
        return expected

    def due_rewinds(self, now: float | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) of the gaps still open GAP_REWIND_S after the consumer
        was last asked to read them: the worker's timer seeks them again. (A seek can land
        while faust still hands over buffered records past the gap; faust then drops the
        re-read gap as older than what it delivered, and only a later seek brings it.)"""
        now = time.monotonic() if now is None else now
        due = []
        for (topic, partition), gap in self._gaps.items():
            expected = self._expected((topic, partition))
            if expected is not None and now - gap.asked >= GAP_REWIND_S:
                gap.asked = now
                due.append((topic, partition, expected))
        return due

    def waiting_for_gap(self) -> int:
        """Records waiting for earlier offsets of their source (see `_in_offset_order`)."""
        return sum(len(g.records) for g in self._gaps.values())

    def _buffer(self, stage: str, partition: int) -> list:
        buf = self.buffers.get((stage, partition))
        if buf is None:
            buf = self.buffers[(stage, partition)] = []
        return buf

    def _sort(self, buf: list, key: tuple[str, int]) -> None:
        """Put a buffer in order: a list whose first `_in_order` entries are, followed by what
        arrived since. The new entries are sorted, and merged with the old ones only where
        they overlap (they arrive nearly in order, mostly after what is held): a sort in C
        per batch instead of a heap push and pop per event, and no pass over a long buffer
        whose stage waits (a slow input)."""
        n = self._in_order.get(key, 0)
        if n >= len(buf):
            return
        fresh = buf[n:]
        fresh.sort()
        i = bisect_right(buf, fresh[0], 0, n)  # the held entries after the first new one
        if i == n:
            buf[n:] = fresh
        else:
            fresh.extend(buf[i:n])
            fresh.sort()  # two sorted runs: one merge
            buf[i:] = fresh
        self._in_order[key] = len(buf)

    def _frontier(self, stage: str, partition: int) -> int:
        return min(self._channel(c, partition) for c in CHANNELS_OF_STAGE[stage])

    def _release(self, stage: str, partition: int, batch: Batch) -> None:
        """Judge the buffered events every input has passed, in order, each after the timers
        due by its time − allowed lateness; then move the stage's watermark (firing due
        timers) to the slowest input's progress − allowed lateness. So what a timer sees does
        not depend on where the batches end (nor on how many processes judge)."""
        frontier = self._frontier(stage, partition)
        if frontier == NEVER:
            return
        buf = self._buffer(stage, partition)
        ds = self._set_for(stage, partition)
        seen = self._seen.setdefault((stage, partition), {})
        judge, results_extend, done_append = ds.process, batch.results.extend, batch.done.append
        held_offsets, processed = self._held_offsets, self.stats.processed
        lateness, advance = self.lateness, ds.advance
        stage_wm = ds.watermark_ms  # moved only by `advance` here (an external watermark)
        self._sort(buf, (stage, partition))
        released = 0
        hour_end = NEVER  # the hour of event time whose ids `ids` holds: [hour_end - 1 h, hour_end)
        ids: set[Any] = set()
        try:
            for t, _, _, _, held in buf:
                if t >= frontier:
                    break
                released += 1
                rec = held.rec
                event = held.event
                if not hour_end - DEDUP_HORIZON_MS <= t < hour_end:
                    hour = t // DEDUP_HORIZON_MS
                    hour_end = (hour + 1) * DEDUP_HORIZON_MS
                    ids = seen.get(hour)  # type: ignore[assignment]
                    if ids is None:
                        ids = seen[hour] = set()
                route = event.get("_route")
                key = event["event_id"] if route is None else (event["event_id"], route)
                if key in ids:
                    held.duplicate = True  # the same event delivered again: judged once
                else:
                    ids.add(key)
                if not held.failed and not held.duplicate:
                    if t - lateness > stage_wm:
                        # the timers due before this event fire first: a timer sees the events
                        # up to its deadline + lateness, however the batches cut the stream
                        stage_wm = t - lateness
                        results_extend(advance(stage_wm))
                    try:
                        results_extend(judge(event))
                    except Exception as exc:  # a detector bug must not stop the worker
                        log.exception(
                            "detector failure on %s[%d]@%d", rec.topic, rec.partition,
                            rec.offset,
                        )  # fmt: skip
                        held.failed = True
                        batch.out.append(
                            self._dead_letter(rec, "detector_error", f"{type(exc).__name__}: {exc}")
                        )
                held.pending -= 1
                if held.pending == 0:
                    done_append(rec.ref)
                    if held_offsets:  # none in a replay
                        offsets = held_offsets.get((rec.topic, rec.partition))
                        if offsets is not None:
                            offsets.discard(rec.offset)
                    if held.duplicate:
                        self.stats.duplicates[rec.role] += 1
                    elif not held.failed:
                        processed[rec.role] += 1
        finally:
            del buf[:released]
            self._in_order[(stage, partition)] = len(buf)
        wm = frontier - self.lateness
        if wm > ds.watermark_ms:
            batch.results.extend(ds.advance(wm))
        # forget the hours whose every id is a horizon behind the watermark
        cutoff = ds.watermark_ms - DEDUP_HORIZON_MS
        for hour in [h for h in seen if (h + 1) * DEDUP_HORIZON_MS <= cutoff]:
            del seen[hour]

    def held(self) -> int:
        """Events waiting in reorder buffers (a stage's slowest input has not passed them)."""
        return sum(len(b) for b in self.buffers.values())

    def held_records(self) -> int:
        """Records not yet acknowledged because a reorder buffer holds them (each counted once,
        whatever the number of stages it waits in)."""
        return sum(len(offsets) for offsets in self._held_offsets.values())

    def assigned(self, topic: str, partition: int) -> None:
        """A partition is assigned. faust passes the whole new assignment, including the
        partitions this worker keeps: their held records are still in the reorder buffers and
        must keep blocking commits. Only a partition that was revoked (or never opened)
        restarts from its committed offset with nothing held."""
        if partition not in self.stores:
            self._held_offsets.pop((topic, partition), None)

    def lowest_held(self, topic: str, partition: int) -> int | None:
        """The lowest offset of a record not yet done: nothing at or past it may be committed."""
        offsets = self._held_offsets.get((topic, partition))
        low = min(offsets) if offsets else None
        if (topic, partition) in self._gaps:  # nothing past the gap either
            expected = self._expected((topic, partition))
            if expected is not None:
                low = expected if low is None else min(low, expected)
        return low

    def reading(self, topic: str, partition: int) -> str:
        """Which offsets of a source this process has read since it was assigned."""
        src = (topic, partition)
        if src in self._read_next:
            text = f"read {self._first_read.get(src)}..{self._read_next[src] - 1} since assigned"
        else:
            text = "nothing read since assigned"
        gap = self._gaps.get(src)
        if gap is not None:
            text += f"; {len(gap.records)} records from offset {min(gap.records)} wait for the gap"
        return text

    def why_held(self, topic: str, partition: int) -> str:
        """Why the lowest held record of a source is not judged yet: for an operator's log."""
        low = self.lowest_held(topic, partition)
        if low is None:
            return "nothing held"
        parts = []
        for stage in self.stages:
            for t, _, _, _, held in self.buffers.get((stage, partition), ()):
                if held.rec.topic == topic and held.rec.offset == low:
                    channels = ", ".join(
                        f"{c}={self._describe_channel(c, partition)}"
                        for c in CHANNELS_OF_STAGE[stage]
                    )
                    parts.append(f"stage {stage} waits for event time {t} ({channels})")
        return "; ".join(parts) or f"offset {low} is in no reorder buffer"

    def _describe_channel(self, role: str, partition: int) -> str:
        value = self._channel(role, partition)
        text = "none" if value == NEVER else str(value)
        sources = self.upstream.get((role, partition))
        if role in REPARTITION_ROLES and (sources is None or len(sources) < self.partitions):
            text += f" [{len(sources or ())}/{self.partitions} upstream inputs promised]"
        return text

    def _outputs(self, results: list[Any]) -> list[OutRecord]:
        """Alerts to the alerts topic; aggregator records (plain dicts) to the aggregates one."""
        out = []
        for item in results:
            if isinstance(item, Alert):
                self.stats.alerts[item.detector_id] += 1
                out.append(self._alert_record(item))
            else:
                value = self.codec.encode("InstitutionHour", item)
                key = item["institution_id"].encode()
                out.append(OutRecord("aggregates", key, value, item["hour_start"]))
        return out

    def _remember_forwarded(self, value: Any, event: dict[str, Any]) -> None:
        """Keep the decoded event of a record just forwarded: its copies usually come back to
        this process within a batch or two, and need not be decoded again (the bytes are the
        same, so the event is). Bounded, oldest first out; a miss decodes as usual."""
        cache = self._forwarded_events
        cache[value] = dict(event)  # as decoded, whatever a detector does to its own copy
        if len(cache) > FORWARDED_CACHE:
            cache.popitem(last=False)

    def _decode(self, rec: SourceRecord) -> dict[str, Any]:
        if rec.value is None:
            raise _Rejected("empty_value", "record has no value")
        if rec.role not in INPUT_ROLES:
            known = rec.decoded
            if known is None:
                known = self._forwarded_events.get(rec.value)
            settlement_only = rec.role != "by_institution"
            if known is not None and (not settlement_only or known["_topic"] == SETTLEMENT):
                event = dict(known)  # a copy: `_route` is per copy
                if rec.role == "by_doctor":
                    event["_route"] = rec.key.decode() if rec.key else None
                return event
        try:
            info, event = self.codec.decode_with_info(rec.value)
        except CodecError as exc:
            raise _Rejected(exc.reason_code, str(exc)) from exc
        if info.name == "Watermark":
            return {"_watermark": event["watermark_time"], "_source": event["source"]}
        topic = TOPIC_OF_SCHEMA.get(info.name)
        expected = rec.role if rec.role in INPUT_ROLES else None
        if topic is None or (expected is not None and topic != expected):
            raise _Rejected("unexpected_schema", f"{rec.topic} does not carry {info.name} records")
        if rec.role in ("by_doctor", "by_group") and topic != "settlement":
            raise _Rejected("unexpected_schema", f"{rec.topic} carries settlements only")
        if expected is not None:
            # Inputs only: a repartitioned copy is the bytes of an input that passed, and
            # judging it again with a later clock could split one event between stages.
            try:
                validate(info.name, event, self.now_ms())
            except InvalidEvent as exc:
                raise _Rejected(exc.reason_code, str(exc)) from exc
        event["_topic"] = topic
        if rec.role == "by_doctor":
            event["_route"] = rec.key.decode() if rec.key else None
        return event

    def _alert_record(self, alert: Alert) -> OutRecord:
        value = self.codec.encode("Alert", alert.to_record())
        return OutRecord("alerts", alert.entity_id.encode(), value, alert.event_time)

    def _dead_letter(self, rec: SourceRecord, reason_code: str, reason: str) -> OutRecord:
        self.stats.dead_lettered[reason_code] += 1
        log.warning(
            "dead letter: %s[%d]@%d %s: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            reason_code,
            reason,
        )
        now = time.time_ns() // 1_000_000
        letter = {
            "dead_letter_id": dead_letter_id("worker", rec.topic, rec.partition, rec.offset),
            "source_topic": rec.topic,
            "source_partition": rec.partition,
            "source_offset": rec.offset,
            "record_timestamp": rec.timestamp_ms,
            "key": rec.key,
            "value": rec.value,
            "reason_code": reason_code,
            "reason": reason,
            "detected_at": now,
            "stage": "worker",
        }
        return OutRecord(
            "dead_letters", rec.topic.encode(), self.codec.encode("DeadLetter", letter), now
        )


def _taken(keys_of: tuple[Callable[[Event], list[str]], ...], event: Event) -> bool:
    """Whether one of these detectors keys the event."""
    for keys in keys_of:  # noqa: SIM110 (a loop: any() over a generator is slower here)
        if keys(event):
            return True
    return False


class _Rejected(Exception):
    def __init__(self, reason_code: str, message: str) -> None:
        super().__init__(message)
        self.reason_code = reason_code
