"""The shipped DDL files are what the table definitions render, for a server and a cluster."""

from __future__ import annotations

from pathlib import Path

from streams.store.tables import TABLES, ddl_script, render_ddl

INFRA = Path(__file__).resolve().parents[2] / "infra" / "clickhouse"


def test_shipped_server_ddl_is_current() -> None:
    assert (INFRA / "server.sql").read_text() == ddl_script("fundwatch")


def test_shipped_cluster_ddl_is_current() -> None:
    assert (INFRA / "cluster.sql").read_text() == ddl_script("fundwatch", "fundwatch_cluster")


def test_cluster_ddl_is_replicated_and_distributed() -> None:
    statements = render_ddl("fw", "c1")
    for table in TABLES:
        local = next(s for s in statements if f"`{table.name}_local` ON CLUSTER" in s)
        assert "ReplicatedReplacingMergeTree" in local
        dist = next(s for s in statements if f"`fw`.`{table.name}` ON CLUSTER" in s)
        assert f"Distributed('c1', 'fw', '{table.name}_local', {table.shard_key})" in dist


def test_every_table_orders_by_its_id() -> None:
    ids = {"settlements": "event_id", "settlement_items": "line_no", "trace_scans": "event_id",
           "face_verifications": "event_id", "alerts": "alert_id", "reviews": "review_id",
           "institution_hourly": "hour_start", "dead_letters": "dead_letter_id",
           "sim_labels": "label_id", "person_vault": "pseudonym"}  # fmt: skip
    ids.update(backtest_alerts="alert_id", backtest_runs="run_id")
    for table in TABLES:
        assert ids[table.name] in table.order_by
