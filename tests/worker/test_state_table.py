"""`PackedTable`: the worker's state table as one compressed blob per entity, which must behave
exactly like the dict it replaces, whatever leaves the hot set and when the dictionary is
trained; and the processor over it raises the alerts it raises over a plain table."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import Settings
from streams.worker.state_table import (
    PackedTable,
    drop_partition,
    make_state_table,
    partition_items,
)
from tests.worker import test_restart as restart


def test_keys_are_grouped_by_partition_and_entity() -> None:
    table = PackedTable(plain={"licence_lending"})
    for key in (
        "3|drug_over_supply|P0001",
        "3|settlement_anomaly|P0001",  # the same group
        "1|drug_over_supply|P0001",  # another partition: another group
        "3|peer_deviation|grp-1|P0001",  # the entity is the state key up to its first "|"
        "0|__progress__|",
        "0|licence_lending|D1",  # a plain detector
        "no-separators",  # not a table key: plain
    ):
        table[key] = {"k": key}
    assert sorted(g for g, _, _ in table.packed()) == ["0|", "1|P0001", "3|P0001", "3|grp-1"]
    assert sorted(table.plain()) == ["0|licence_lending|D1", "no-separators"]


@pytest.mark.parametrize("kind", ["dict", "packed"])
def test_partition_helpers_work_on_any_table(kind: str) -> None:
    table: Any = {} if kind == "dict" else PackedTable(hot_groups=1, plain={"b"})
    for p in range(3):
        table[f"{p}|a|P{p}"] = {"p": p}
        table[f"{p}|b|D{p}"] = {"p": p}
    assert dict(partition_items(table, 1)) == {"1|a|P1": {"p": 1}, "1|b|D1": {"p": 1}}
    drop_partition(table, 1)
    assert sorted(table) == ["0|a|P0", "0|b|D0", "2|a|P2", "2|b|D2"]


STATES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip
KEYS = st.builds(
    lambda p, d, e, rest: f"{p}|{d}|{e}{rest}",
    st.integers(0, 2),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from(["P1", "P2", "P3", "P4", "P5", "", "T9"]),
    st.sampled_from(["", "|x", "|y"]),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, STATES),
        st.tuples(st.just("del"), KEYS, st.none()),
        st.tuples(st.just("get"), KEYS, st.none()),
        st.tuples(st.just("drop"), st.integers(0, 2), st.none()),
        st.tuples(st.just("pop"), KEYS, st.none()),
        st.tuples(st.just("batch"), st.booleans(), st.none()),  # open / close `batch()`
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hot=st.integers(1, 4), train=st.integers(2, 12), plain=st.sets(st.just("b")))
def test_a_packed_table_behaves_as_a_dict(
    ops: list[Any], hot: int, train: int, plain: set[str]
) -> None:
    """Also with detector "b" kept plain."""
    table = PackedTable(hot_groups=hot, train_samples=train, plain=plain)
    model: dict[str, Any] = {}
    block = None
    for op, key, value in ops:
        if op == "batch":
            if key and block is None:
                block = table.batch()
                block.__enter__()
            elif not key and block is not None:
                block.__exit__(None, None, None)
                block = None
                assert len(table._hot) <= hot  # cut back at the end of the batch
        elif op == "pop":
            assert repr(table.pop(key, "missing")) == repr(model.pop(key, "missing"))
            if key not in model:
                with pytest.raises(KeyError):
                    table.pop(key)
        elif op == "set":
            table[key] = value
            model[key] = value
        elif op == "del":
            if key in model:
                del table[key]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del table[key]
        elif op == "get":  # repr: an int read back as a float would still compare equal
            assert repr(table.get(key, "missing")) == repr(model.get(key, "missing"))
            assert (key in table) == (key in model)
        else:
            gone = [k for k in model if k.startswith(f"{key}|")]
            assert table.drop_partition(key) == len(gone)
            for k in gone:
                del model[k]
        assert len(table) == len(model)
    assert repr(sorted(table.items())) == repr(sorted(model.items()))
    assert sorted(table) == sorted(model)
    for p in range(3):
        expected = {k: v for k, v in model.items() if k.startswith(f"{p}|")}
        assert dict(table.partition_items(p)) == expected


def test_values_json_cannot_write_plainly_come_back_from_a_packed_group() -> None:
    table = PackedTable(hot_groups=1, train_samples=2)
    states = {
        "0|a|P1": {
            "nan": math.nan,
            "inf": [math.inf, -math.inf],
            "big": 2**80,
            "low": -(2**63) - 1,
            "zh": "医保",
        },
        "0|b|P1": {"t": (1, 2)},
    }
    for key, state in states.items():
        table[key] = state
    for i in range(6):  # P1's group leaves the hot set and is packed
        table[f"1|a|Q{i}"] = {"i": i}
    back = table.get("0|a|P1")
    assert math.isnan(back["nan"])
    assert back["inf"] == [math.inf, -math.inf]
    assert back["big"] == 2**80 and isinstance(back["big"], int) and back["zh"] == "医保"
    assert back["low"] == -(2**63) - 1 and isinstance(back["low"], int)
    assert table.get("0|b|P1") == {"t": [1, 2]}  # as after a changelog restore
    assert table.loads >= 1


def test_groups_are_compressed_once_the_dictionary_is_trained() -> None:
    table = PackedTable(hot_groups=8, train_samples=50)
    state = {"w": {"t": [1796145612654, 1796145619999], "v": [["ST0000000071e55fa7ba", 938]]}}
    for i in range(2_000):
        for did in ("cross_institution_frequency", "drug_over_supply", "settlement_anomaly"):
            table[f"{i % 4}|{did}|P36011300{i:04d}"] = {**state, "due": 1796232012655 + i}
    blobs = [blob for _, blob, hot in table.packed() if hot is None]
    assert len(blobs) == 2_000 - 8
    plain = [b for b in blobs if b[:1] == b"{"]
    assert not plain  # the first groups, packed before the training, were compressed after it
    json_size = len(b'{"0|drug_over_supply|P360113000001":') * 3 + 3 * 80
    assert sum(map(len, blobs)) / len(blobs) < json_size / 4
    assert table.get("2|drug_over_supply|P360113001234") == {**state, "due": 1796232012655 + 1234}


def test_the_settings_choose_the_table() -> None:
    assert make_state_table(Settings(worker_state="objects")) == {}
    packed = make_state_table(Settings(worker_state="packed", worker_state_hot_groups=7))
    assert isinstance(packed, PackedTable) and packed.hot_groups == 7
    packed["0|licence_lending|D1"] = {"n": 1}  # the doctor stage: kept plain
    packed["0|__progress__|"] = {"src": {}}
    packed["0|drug_over_supply|P1"] = {"n": 2}  # the person stage: packed
    assert set(packed.plain()) == {"0|licence_lending|D1", "0|__progress__|"}
    assert [g for g, _, _ in packed.packed()] == ["0|P1"]
    with pytest.raises(ValueError):
        PackedTable(hot_groups=0)


@pytest.fixture(scope="module")
def log() -> restart.Log:
    return restart.make_log(days=3)


@pytest.fixture(scope="module")
def reference(log: restart.Log) -> tuple[set[str], int]:
    return restart.run(_copy(log), set())


def _copy(log: restart.Log) -> restart.Log:
    records = type(log.records)(list)
    for k, v in log.records.items():
        if k[0] not in restart.REPARTITION_ROLES:
            records[k] = list(v)
    return restart.Log(records=records)


@pytest.mark.parametrize(
    ("crashes", "policy"),
    [(set(), "all"), ({7}, "all"), ({3, 20}, "stages"), (set(), "stages")],
    ids=str,
)
def test_the_processor_over_a_packed_table_raises_the_same_alerts(
    log: restart.Log, reference: tuple[set[str], int], crashes: set[int], policy: str
) -> None:
    """A hot set of 4 groups packs almost every group between batches (and trains the
    dictionary early); restarts resume from the same table. Every stage packed, or as the
    worker packs them (person and trace stages; the others plain)."""
    if policy == "all":
        table = PackedTable(hot_groups=4, train_samples=100)
    else:
        made = make_state_table(Settings(worker_state="packed", worker_state_hot_groups=4))
        assert isinstance(made, PackedTable)
        table = made
        table.train_samples = 100
    alerts, judged = restart.run(_copy(log), crashes, table=table)
    assert reference[0] and alerts == reference[0]
    assert judged == reference[1]
    assert table.packs > 1_000 and table.loads > 1_000
    assert any(blob is not None and blob[:1] != b"{" for _, blob, _ in table.packed())


def test_the_worker_cli_chooses_the_state_form(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    from streams.worker import cli

    seen: list[Settings] = []
    monkeypatch.setattr(cli, "run_transactional", lambda s, name: seen.append(s) or 0)
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    for argv, expected in (([], "packed"), (["--state", "objects"], "objects")):
        assert cli.run_from_args(parser.parse_args(argv), Settings(worker_state="packed")) == 0
        assert seen[-1].worker_state == expected
    with pytest.raises(SystemExit):
        parser.parse_args(["--state", "rocks"])


def test_a_batch_keeps_its_groups_decoded_until_it_ends() -> None:
    """A batch reads its states, then writes the changed ones back: within `batch()` the
    write-back finds every group it read still decoded, whatever the hot set's size."""
    table = PackedTable(hot_groups=2, train_samples=1_000)
    keys = [f"0|person_det|P{i}" for i in range(10)]
    for k in keys:
        table[k] = {"n": 0}
    with table.batch():
        loads = table.loads
        states = [table[k] for k in keys]  # read (some groups decoded again)
        decoded = table.loads - loads
        for k, state in zip(keys, states, strict=True):
            table[k] = {"n": state["n"] + 1}  # written back: no group decoded again
        assert table.loads - loads == decoded
        assert len(table._hot) == len(keys)
    assert len(table._hot) == 2  # cut back to the hot set's size
    assert [table[k]["n"] for k in keys] == [1] * 10
    packs = table.packs
    for k in keys:  # outside a batch, a group pushed out is packed again when it changed
        table[k] = {"n": 2}
    assert table.packs > packs
