"""One atomic RocksDB write per batch and partition for the worker's state table.

faust's RocksDB store puts every table write to the database as it happens. The worker writes
a batch's changed detector states and then its checkpoint (streams/worker/processor.py); a
process killed half-way through that loop would leave some states of the new batch next to
the old checkpoint, and the records re-read after the restart would be judged against states
that have already seen later events (a face check evicted by a later watermark, a settlement
already counted). `atomic_writes` collects the loop's puts and deletes in one
`rocksdict.WriteBatch` per partition and writes each batch in one call: after a crash the local
database holds all of a batch's states and its checkpoint, or none of them.

The changelog is sent after the local write (faust buffers its sends until the agent awaits),
and faust's recovery only replays changelog records past the offset it persisted, which were
already written locally. A worker that restores a partition from the changelog alone (a new
disk, or a rebalance to a worker that never held it) after a crash in the middle of the
changelog flush can still see part of the last batch; docs/reliability.md states this limit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from faust.streams import current_event


@contextlib.contextmanager
def atomic_writes(table: Any) -> Iterator[None]:
    """Within the block, the table's RocksDB puts and deletes are collected per partition and
    written when the block ends (one atomic `WriteBatch` each). Stores without `WriteBatch`
    support (faust's memory store) are written directly, as before."""
    store = table.data
    if not hasattr(store, "_db_for_partition") or not getattr(store, "use_rocksdict", False):
        yield
        return
    import rocksdict

    batches: dict[int, Any] = {}

    def batch_for(partition: int) -> Any:
        wb = batches.get(partition)
        if wb is None:
            wb = batches[partition] = rocksdict.WriteBatch(raw_mode=True)
        return wb

    def _set(key: bytes, value: bytes | None) -> None:
        event = current_event()
        assert event is not None, "table write outside an event (see streams/worker/app.py)"
        partition = event.message.partition
        store._key_index[key] = partition
        batch_for(partition).put(key, value)

    def _del(key: bytes) -> None:
        event = current_event()
        assert event is not None, "table delete outside an event (see streams/worker/app.py)"
        store._key_index.pop(key, None)
        batch_for(event.message.partition).delete(key)

    store._set, store._del = _set, _del  # instance attributes shadow the class's methods
    try:
        yield
    finally:
        del store._set, store._del
    for partition, wb in batches.items():
        store._db_for_partition(partition).write(wb)
