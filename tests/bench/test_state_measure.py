"""The benchmark's state figures for a packed table: every group and plain key is counted once,
in its detector's stage, entities across partitions once, and the hot set's decoded groups
weigh more than their blobs."""

from __future__ import annotations

from streams.bench.inprocess import measure_packed
from streams.worker.state_table import PackedTable


def test_measure_packed_counts_groups_plain_keys_and_the_hot_set() -> None:
    table = PackedTable(hot_groups=2, train_samples=1_000, plain={"licence_lending"})
    for i in range(10):
        for did in ("drug_over_supply", "settlement_anomaly"):
            table[f"{i % 2}|{did}|P{i % 5}"] = {"w": [[1796145612654, "ST0001", i]]}
    table["0|licence_lending|D1"] = {"n": 1}
    table["3|trace_code_resale|81234"] = {"scans": [1, 2]}
    stages = measure_packed(table)
    person = stages["person"]
    # P0..P4, each in the partition of its i's: P0 holds i=0 and i=5, partitions 0 and 1
    assert person.entities == 5 and person.keys == 20
    assert stages["doctor"].entities == 1 and stages["doctor"].keys == 1
    assert stages["trace"].entities == 1
    blobs = [len(blob) for g, blob, _ in table.packed() if blob is not None and g != "3|81234"]
    assert person.json_bytes == sum(blobs) > 0  # the trace code's group is not the person's
    hot_only = PackedTable(hot_groups=100)
    hot_only.update({k: v for k, v in table.items()})
    assert measure_packed(hot_only)["person"].resident_bytes > person.resident_bytes
