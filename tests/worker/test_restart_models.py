"""Restart equivalence of the online models (models/online) in the worker's processor.

`test_restart.py` runs every detector with its defaults; on its 5-day world the models barely
warm up, so here they run alone with short warm-ups, and each of them raises alerts: a
processor crashed at batch boundaries (after the state write, or before it) and resumed from
the table raises the alerts of an uninterrupted run (the models' states are plain JSON, copied
on write, so a crash after the write leaves the written states as they were).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from models.online import CostGrowth, DoctorProfile, PeerDeviation, SettlementAnomaly
from streams.worker import processor as worker_processor
from streams.worker.routing import REPARTITION_ROLES
from tests.worker import test_restart as restart

FIRED: Counter[str] = Counter()


class CountingProcessor(worker_processor.BatchProcessor):
    def process(self, records: list[Any]) -> Any:
        batch = super().process(records)
        FIRED.update(a.detector_id for a in batch.alerts)
        return batch


def models_processor(table: dict) -> worker_processor.BatchProcessor:
    detectors = [
        CostGrowth({"min_history_days": 2, "spike_z": 3.0}),
        PeerDeviation({"min_visits": 3, "min_peer_visits": 5}),
        SettlementAnomaly(
            {"warmup_events": 40, "window_size": 16, "min_calibration": 20, "alert_quantile": 0.97}
        ),
        DoctorProfile({"min_level": 1, "min_visits": 3, "min_peers": 2, "min_peer_visits": 6}),
    ]
    return CountingProcessor(detectors, table, partitions=restart.PARTITIONS)


@pytest.fixture(scope="module")
def log() -> restart.Log:
    return restart.make_log()


def run(log: restart.Log, crashes: set[int], before_state: bool = False) -> tuple[set[str], int]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(restart, "new_processor", models_processor)
        return restart.run(restart.Log(records=_copy(log)), crashes, before_state=before_state)


def _copy(log: restart.Log) -> Any:
    records = type(log.records)(list)
    for k, v in log.records.items():
        if k[0] not in REPARTITION_ROLES:
            records[k] = list(v)
    return records


@pytest.fixture(scope="module")
def reference(log: restart.Log) -> tuple[set[str], int]:
    FIRED.clear()
    out = run(log, set())
    assert {"cost_growth", "peer_deviation", "settlement_anomaly", "doctor_profile"} <= set(FIRED)
    return out


@pytest.mark.parametrize("crashes", [{4}, {12, 13}, {5, 30, 60}], ids=str)
def test_restarted_models_raise_the_same_alerts(
    log: restart.Log, reference: tuple[set[str], int], crashes: set[int]
) -> None:
    alerts, judged = run(log, crashes)
    assert alerts == reference[0]
    assert judged == reference[1]


@pytest.mark.parametrize("crashes", [{10}, {5, 40}], ids=str)
def test_a_kill_before_the_state_write_re_judges_the_models_with_the_same_alerts(
    log: restart.Log, reference: tuple[set[str], int], crashes: set[int]
) -> None:
    alerts, judged = run(log, crashes, before_state=True)
    assert alerts == reference[0]
    assert judged >= reference[1]


def test_duplicated_input_records_give_the_same_model_alerts(
    log: restart.Log, reference: tuple[set[str], int]
) -> None:
    """A producer's retry delivers a record twice: the models count its settlement once."""
    doubled = restart.Log(records=_copy(log))
    for src, recs in list(doubled.records.items()):
        out = []
        for i, rec in enumerate(recs):
            out.append(rec)
            if rec[0] != b"__watermark__" and i % 3 == 0:
                out.append(rec)
        doubled.records[src] = out
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(restart, "new_processor", models_processor)
        alerts, _ = restart.run(doubled, set())
    assert alerts == reference[0]
