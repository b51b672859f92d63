"""A batch's state writes reach the worker's RocksDB all together or not at all."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest
from faust.streams import _current_event
from faust.types import TP

from streams.worker.atomic import atomic_writes


class _Message:
    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.tp = TP("source", partition)


class _Event:
    def __init__(self, partition: int) -> None:
        self.message = _Message(partition)


@pytest.fixture
def table(tmp_path: Path) -> Iterator[faust.Table]:
    app = faust.App(
        "atomic-test", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path)
    )
    yield app.Table("state", default=None, partitions=2, key_type=str)


@pytest.fixture(autouse=True)
def _restore_current_event() -> Iterator[None]:
    token = _current_event.set(None)
    yield
    _current_event.reset(token)


def _as_event(partition: int) -> _Event:
    """Make a record of `partition` faust's current event (the worker does the same)."""
    ev = _Event(partition)
    _current_event.set(weakref.ref(ev))
    return ev


def _keys(table: faust.Table, partition: int) -> list[bytes]:
    return sorted(table.data._db_for_partition(partition).keys())


def test_writes_land_when_the_block_ends(table: faust.Table) -> None:
    store = table.data
    ev = _as_event(1)
    with atomic_writes(table):
        store["1|a|k"] = {"n": 1}
        store["1|__progress__|"] = {"src": {}}
        assert _keys(table, 1) == []  # nothing on disk half-way through
    assert _keys(table, 1) == [b'"1|__progress__|"', b'"1|a|k"']
    assert store["1|a|k"] == {"n": 1}
    del ev


def test_a_failure_inside_the_block_writes_nothing(table: faust.Table) -> None:
    store = table.data
    ev = _as_event(0)
    with atomic_writes(table):
        store["0|a|k"] = {"n": 1}
    with pytest.raises(RuntimeError), atomic_writes(table):
        store["0|b|k"] = {"n": 2}
        del store["0|a|k"]
        raise RuntimeError("killed between two writes")
    assert _keys(table, 0) == [b'"0|a|k"']  # neither the put nor the delete happened
    assert store["0|a|k"] == {"n": 1}
    with atomic_writes(table):  # and the store writes directly again afterwards
        del store["0|a|k"]
    assert _keys(table, 0) == []
    del ev


def test_each_partition_gets_its_own_batch(table: faust.Table) -> None:
    store = table.data
    with atomic_writes(table):
        ev0 = _as_event(0)
        store["0|a|k"] = 1
        ev1 = _as_event(1)
        store["1|a|k"] = 2
    assert _keys(table, 0) == [b'"0|a|k"']
    assert _keys(table, 1) == [b'"1|a|k"']
    del ev0, ev1
