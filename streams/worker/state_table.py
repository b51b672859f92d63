"""The worker's state table, kept compact in memory: one compressed blob per entity.

The table maps `<partition>|<detector id>|<state key>` to a detector state (plain JSON-able
dicts and lists). As Python objects a tracked person's states take about 3,600 bytes: the
containers cost six times their JSON. `PackedTable` groups the keys by entity (`<partition>|`
+ the state key up to its first `|`: the person, the trace code) and keeps each group as one
zstd frame of its JSON, compressed with a dictionary trained on the table's own first groups
(the detector ids and field names they all repeat): about 104 bytes per person in the city
world, 265 with the group's key, its dict slots and its share of the hot set. The groups in use
stay decoded in a small LRU (`hot_groups`); a group is encoded again only if it changed while
it was decoded. `make_state_table` keeps the busy stages with few entities (institutions,
doctors, peer groups) as plain objects.

It is an in-memory representation only: the changelog still carries one JSON value per key
(`encode_state`), so a restore reads what it always read. Reads of a missing key do not create
anything. States round-trip through JSON each time their group leaves the hot set, as they do
through the changelog on a restart (tuples come back as lists: a detector state must not depend
on the difference; docs/worker.md, "State in memory").
"""

from __future__ import annotations

import json
import logging
import sys
from collections import OrderedDict
from collections.abc import Collection, Iterator, MutableMapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import orjson
import zstandard

from models.detector import State

log = logging.getLogger(__name__)

PACKED_STAGES = ("person", "trace")
"""The stages `make_state_table` packs: their entities (persons, trace codes) grow with the
population; the others' (institutions, doctors, peer groups) with the supply side."""
PROGRESS = "__progress__"
"""Table key part of a partition's checkpoint (`<partition>|__progress__|`)."""
HOT_GROUPS = 256
"""Groups kept decoded (the least recently used is packed first); `worker_state_hot_groups`.
A batch of 2,000 events touches some 3,000 groups: a group read again after it left the hot
set costs a decompression and a JSON parse, one changed costs a JSON write and a compression."""
TRAIN_SAMPLES = 2_000
"""Groups packed before the compression dictionary is trained (they are kept as plain JSON
until then, and compressed with the dictionary once it exists)."""
RETRAIN_EVERY = 20
"""After the first training, every 20th group packed is sampled for the second."""
DICT_BYTES = 16_384
LEVEL = 3
_EXACT, _JSON = b"o", b"j"
"""The tag before a group's JSON: orjson reads it back exactly (it wrote it), or only
`json.loads` does (`json.dumps` wrote it: NaN, ±inf, an int beyond 64 bits, which orjson would
refuse or, for the int, silently read as a float)."""


_ORJSON_STRICT = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def encode_state(state: State) -> bytes:
    """A state as the changelog stores it: compact JSON (UTF-8), read back with `json.loads`.

    orjson writes it about 10× faster than `json.dumps`, and for what it accepts here (str keys,
    ints within 64 bits, finite floats, strings, lists, tuples, dicts, booleans, None) `json.loads`
    reads back exactly what it reads from `json.dumps(state, separators=(",", ":"))`: both write
    the shortest float text that round-trips; orjson writes non-ASCII as UTF-8, not as \\u
    escapes. Everything else goes to `json.dumps` as before: orjson writes NaN and ±inf as
    null (json.dumps: NaN, Infinity), so an output with a null in it is written again by
    json.dumps; orjson refuses a non-str key, an int beyond 64 bits, a subclass of str/int/dict/
    list, a dataclass or a datetime (the passthrough options), and json.dumps then writes or
    rejects it as it always did. (A UUID or a plain Enum, which json.dumps rejects and the
    state contract excludes, orjson would write as its value.)"""
    out = _orjson(state)
    return out if out is not None else json.dumps(state, separators=(",", ":")).encode()


def _orjson(state: State) -> bytes | None:
    """orjson's JSON of a state, or None where it would differ from `json.dumps`'s (above)."""
    try:
        out = orjson.dumps(state, option=_ORJSON_STRICT)
    except TypeError:  # orjson.JSONEncodeError
        return None
    return None if b"null" in out else out


def partition_items(table: MutableMapping[str, Any], partition: int) -> Iterator[tuple[str, Any]]:
    """(key, state) of one partition's keys, in any state table (a packed one without decoding
    the other partitions' groups)."""
    if isinstance(table, PackedTable):
        return table.partition_items(partition)
    prefix = f"{partition}|"
    return ((k, v) for k, v in table.items() if k.startswith(prefix))


def drop_partition(table: MutableMapping[str, Any], partition: int) -> None:
    """Forget one partition's keys (revoked, or read again after an aborted transaction)."""
    if isinstance(table, PackedTable):
        table.drop_partition(partition)
        return
    prefix = f"{partition}|"
    for key in [k for k in table if k.startswith(prefix)]:
        del table[key]


def batch_of(table: MutableMapping[str, Any]) -> AbstractContextManager[None]:
    """`PackedTable.batch()` for a packed table; nothing to do for the others."""
    return table.batch() if isinstance(table, PackedTable) else nullcontext()


def make_state_table(settings: Any) -> MutableMapping[str, Any]:
    """The worker's state table as `settings.worker_state` says: a dict, or a `PackedTable`
    that packs the person and trace-code stages (PACKED_STAGES) and keeps the others plain."""
    if settings.worker_state != "packed":
        return {}
    from streams.worker.routing import STAGE_OF_DETECTOR

    plain = {did for did, stage in STAGE_OF_DETECTOR.items() if stage not in PACKED_STAGES}
    return PackedTable(settings.worker_state_hot_groups, plain=plain | {PROGRESS})


class PackedTable(MutableMapping[str, Any]):
    """A `MutableMapping` of table keys to states, one compressed blob per entity group.

    The keys of the detectors in `plain` (and of any key without two `|`) are kept as a plain
    dict instead: the stages whose entities are few and busy (institutions, doctors, peer
    groups: thousands in a city, touched by every other event) would be packed and unpacked
    all the time for little memory."""

    def __init__(
        self,
        hot_groups: int = HOT_GROUPS,
        train_samples: int = TRAIN_SAMPLES,
        plain: Collection[str] = (),
    ) -> None:
        if hot_groups < 1:
            raise ValueError("hot_groups must be at least 1")
        self.hot_groups = hot_groups
        self._limit = hot_groups  # the hot set's bound now (none within `batch()`)
        self.train_samples = train_samples
        self._plain_ids = frozenset(plain)
        self._plain: dict[str, Any] = {}  # the keys of the `plain` detectors
        self._cold: dict[str, bytes] = {}  # every group, as last packed (hot ones maybe stale)
        self._hot: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._dirty: set[str] = set()  # hot groups changed since they were last packed
        self._count = 0  # keys in groups
        self._samples: list[bytes] | None = []  # groups sampled for the next training
        self._sample_every = 1
        self._compress: Any = None
        self._decompress: Any = None
        self.loads = 0  # groups decoded from their blob (misses of the hot set)
        self.packs = 0  # groups encoded (changed, then pushed out of the hot set)

    def _locate(self, key: str) -> str | None:
        """The group of a key, `<partition>|<entity>` (the entity: the state key up to its first
        `|`), or None for a key kept plain (a `plain` detector's, or one without two `|`)."""
        i = key.find("|")
        j = key.find("|", i + 1) if i >= 0 else -1
        if j < 0 or key[i + 1 : j] in self._plain_ids:
            return None
        e = key.find("|", j + 1)
        return key[:i] + (key[j:e] if e >= 0 else key[j:])

    # -- groups ------------------------------------------------------------------------------
    def _group(self, g: str) -> dict[str, Any] | None:
        """The decoded group, made the most recently used; None if it does not exist."""
        inner = self._hot.get(g)
        if inner is not None:
            self._hot.move_to_end(g)
            return inner
        blob = self._cold.get(g)
        if blob is None:
            return None
        inner = self._unpack(blob)
        self.loads += 1
        self._hot[g] = inner
        if len(self._hot) > self._limit:
            self._evict()
        return inner

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Keep every group the block touches decoded until it ends: a batch reads its states
        (through `CachedState`), then writes the changed ones back, and a hot set smaller than
        the batch's groups would decode each written group again (and pack it twice). At the
        end the hot set is cut back to `hot_groups`: the peak is one batch's groups."""
        self._limit = sys.maxsize
        try:
            yield
        finally:
            self._limit = self.hot_groups
            self._evict()

    def _peek(self, g: str) -> dict[str, Any]:
        """A group's content without touching the hot set (iteration)."""
        inner = self._hot.get(g)
        return inner if inner is not None else self._unpack(self._cold[g])

    def _evict(self) -> None:
        hot, dirty = self._hot, self._dirty
        while len(hot) > self.hot_groups:
            g, inner = hot.popitem(last=False)
            if g in dirty:
                dirty.discard(g)
                self._cold[g] = self._pack(inner)

    # -- encoding ----------------------------------------------------------------------------
    def _pack(self, inner: dict[str, Any]) -> bytes:
        self.packs += 1
        out = _orjson(inner)
        raw = _EXACT + out if out is not None else _JSON + encode_state(inner)
        samples = self._samples
        if samples is not None and self.packs % self._sample_every == 0:
            samples.append(raw)
            if len(samples) >= self.train_samples:
                self._train(samples)
        return raw if self._compress is None else self._compress(raw)

    def _unpack(self, blob: bytes) -> dict[str, Any]:
        """Every blob is compressed once a dictionary exists (`_train` compresses the others)."""
        raw = blob if self._decompress is None else self._decompress(blob)
        if raw[:1] == _EXACT:
            return orjson.loads(memoryview(raw)[1:])
        return json.loads(raw[1:])

    def _train(self, samples: list[bytes]) -> None:
        """Train a dictionary on the sampled groups and pack every group with it. Twice: on
        the first groups packed (until then they stay plain JSON), and again on a sample of
        the next RETRAIN_EVERY× as many, which look more like a running day than the first
        minutes of one (windows fuller, more detectors per entity)."""
        first = self._compress is None
        try:
            zdict = zstandard.train_dictionary(DICT_BYTES, samples, level=LEVEL)
        except zstandard.ZstdError as exc:  # too few or too alike samples: no dictionary
            log.info("state table: no compression dictionary (%s); compressing without", exc)
            zdict = None
        params = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=False,
            write_dict_id=False, write_content_size=True,
        )  # fmt: skip
        compressor = zstandard.ZstdCompressor(dict_data=zdict, compression_params=params)
        old = self._decompress
        decompressor = zstandard.ZstdDecompressor(
            dict_data=zdict, format=zstandard.FORMAT_ZSTD1_MAGICLESS
        )
        self._compress, self._decompress = compressor.compress, decompressor.decompress
        for g, blob in self._cold.items():
            raw = blob if old is None else old(blob)
            self._cold[g] = self._compress(raw)
        if first:
            self._samples = []
            self._sample_every = RETRAIN_EVERY
        else:
            self._samples = None
        log.debug("state table: dictionary trained on %d groups", len(samples))

    # -- MutableMapping ----------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        g = self._locate(key)
        if g is None:
            return self._plain[key]
        inner = self._group(g)
        if inner is None:
            raise KeyError(key)
        return inner[key]

    def get(self, key: str, default: Any = None) -> Any:
        g = self._locate(key)
        if g is None:
            return self._plain.get(key, default)
        inner = self._group(g)
        return default if inner is None else inner.get(key, default)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key, _MISSING) is not _MISSING

    def __setitem__(self, key: str, state: Any) -> None:
        g = self._locate(key)
        if g is None:
            self._plain[key] = state
            return
        inner = self._group(g)
        if inner is None:
            inner = self._hot[g] = {}
            if len(self._hot) > self._limit:
                self._evict()
        if key not in inner:
            self._count += 1
        inner[key] = state
        self._dirty.add(g)

    def __delitem__(self, key: str) -> None:
        g = self._locate(key)
        if g is None:
            del self._plain[key]
            return
        inner = self._group(g)
        if inner is None or key not in inner:
            raise KeyError(key)
        del inner[key]
        self._count -= 1
        if inner:
            self._dirty.add(g)
        else:
            self._forget(g)

    def pop(self, key: str, *default: Any) -> Any:
        g = self._locate(key)
        if g is None:
            return self._plain.pop(key, *default)
        inner = self._group(g)
        state = _MISSING if inner is None else inner.pop(key, _MISSING)
        if state is _MISSING:
            if default:
                return default[0]
            raise KeyError(key)
        self._count -= 1
        if inner:
            self._dirty.add(g)
        else:
            self._forget(g)
        return state

    def _forget(self, g: str) -> None:
        self._hot.pop(g, None)
        self._cold.pop(g, None)
        self._dirty.discard(g)

    def _groups(self) -> list[str]:
        return [*self._cold, *(g for g in self._hot if g not in self._cold)]

    def __iter__(self) -> Iterator[str]:
        yield from list(self._plain)
        for g in self._groups():
            yield from list(self._peek(g))

    def items(self) -> Iterator[tuple[str, Any]]:  # type: ignore[override]
        yield from list(self._plain.items())
        for g in self._groups():
            yield from list(self._peek(g).items())

    def partition_items(self, partition: int) -> Iterator[tuple[str, Any]]:
        """(key, state) of one partition's keys, without touching the hot set."""
        prefix = f"{partition}|"
        yield from [(k, v) for k, v in self._plain.items() if k.startswith(prefix)]
        for g in self._groups():
            if g.startswith(prefix):
                yield from list(self._peek(g).items())

    def drop_partition(self, partition: int) -> int:
        """Forget every key of a partition; returns how many there were."""
        prefix = f"{partition}|"
        plain = [k for k in self._plain if k.startswith(prefix)]
        for k in plain:
            del self._plain[k]
        dropped = 0
        for g in [g for g in self._groups() if g.startswith(prefix)]:
            dropped += len(self._peek(g))
            self._forget(g)
        self._count -= dropped
        return dropped + len(plain)

    def __len__(self) -> int:
        return self._count + len(self._plain)

    # -- size --------------------------------------------------------------------------------
    def groups(self) -> int:
        return len(self._groups())

    def packed(self) -> Iterator[tuple[str, bytes | None, dict[str, Any] | None]]:
        """(group, its blob or None, its decoded content if hot) of every group: what the
        table holds in memory, for the benchmark's state figures."""
        for g in self._groups():
            yield g, self._cold.get(g), self._hot.get(g)

    def content(self, group: str) -> dict[str, Any]:
        """A group's keys and states, decoded if need be (the hot set is left as it is)."""
        return self._peek(group)

    def index_bytes(self) -> int:
        """The size of the table's own dicts of groups (their slots, not their contents)."""
        return sys.getsizeof(self._cold) + sys.getsizeof(self._hot)

    def plain(self) -> dict[str, Any]:
        """The keys kept plain, as they are held."""
        return self._plain


_MISSING = object()
