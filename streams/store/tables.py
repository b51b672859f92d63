"""The ClickHouse tables analysts query, defined once as data and rendered as DDL.

The same definitions render for the embedded chDB store and a single server (ReplacingMergeTree)
and for a cluster (ReplicatedReplacingMergeTree `<table>_local` tables on every shard behind a
Distributed `<table>` sharded by the dedup key, so duplicates of an id meet on one shard).
Rows are deduplicated by their ORDER BY key at merge time: query with FINAL (or the views) for exact
counts. Times are DateTime64(3) in Asia/Shanghai; money is in fen (Int64) with yuan ALIAS columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TZ = "Asia/Shanghai"
TS = f"DateTime64(3, '{TZ}')"
NTS = f"Nullable({TS})"
LC = "LowCardinality(String)"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: str
    comment: str = ""
    expr: str | None = None  # for MATERIALIZED / ALIAS columns
    kind: Literal["", "MATERIALIZED", "ALIAS"] = ""

    def render(self) -> str:
        out = f"`{self.name}` {self.type}"
        if self.kind:
            out += f" {self.kind} {self.expr}"
        if self.comment:
            out += " COMMENT '" + self.comment.replace("'", "\\'") + "'"
        return out


@dataclass(frozen=True, slots=True)
class Table:
    name: str
    comment: str
    columns: tuple[Column, ...]
    order_by: str
    shard_key: str
    partition_by: str | None = "toYYYYMM(event_time)"
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def insert_columns(self) -> list[str]:
        """Columns a writer fills (not the MATERIALIZED / ALIAS ones), in DDL order."""
        return [c.name for c in self.columns if not c.kind]


def _region_columns(source: str = "region_code") -> tuple[Column, ...]:
    return (
        Column(
            "province_code",
            LC,
            "first two digits of the region",
            f"substring({source}, 1, 2)",
            "MATERIALIZED",
        ),
        Column(
            "city_code",
            LC,
            "first four digits of the region",
            f"substring({source}, 1, 4)",
            "MATERIALIZED",
        ),
    )


def _yuan(name: str, fen: str, comment: str) -> Column:
    return Column(name, "Decimal(18, 2)", comment, f"toDecimal64({fen}, 2) / 100", "ALIAS")


def _lineage() -> tuple[Column, ...]:
    return (
        Column("source_partition", "UInt16", "Kafka partition the record was read from"),
        Column("source_offset", "UInt64", "Kafka offset of the record"),
        Column("schema_version", "UInt8", "Avro schema version that wrote the record"),
        Column("ingested_at", TS, "when the sink stored the row (wall clock)"),
    )


SETTLEMENTS = Table(
    name="settlements",
    comment="One row per settlement (结算), from the settlement topic. Person ids are pseudonyms.",
    columns=(
        Column("event_id", "String", "settlement id"),
        Column("event_time", TS, "settlement time (event time)"),
        Column("person_id", "String", "pseudonym (keyed HMAC) of the insured person number"),
        Column("institution_id", LC),
        Column("institution_type", LC, "HOSPITAL, CLINIC or PHARMACY"),
        Column("institution_level", "UInt8", "hospital level 1-3, 0 otherwise"),
        Column("region_code", LC, "six-digit division of the institution"),
        *_region_columns(),
        Column("doctor_id", "Nullable(String)"),
        Column("pharmacist_id", "Nullable(String)"),
        Column("department", "LowCardinality(Nullable(String))"),
        Column("visit_type", LC, "OUTPATIENT, INPATIENT or PHARMACY"),
        Column("admission_time", NTS),
        Column("discharge_time", NTS),
        Column("diagnosis_codes", "Array(LowCardinality(String))", "ICD-10, main first"),
        Column("item_count", "UInt16"),
        Column("total_fen", "Int64"),
        Column("fund_paid_fen", "Int64"),
        Column("self_paid_fen", "Int64"),
        _yuan("total_yuan", "total_fen", "total amount in yuan"),
        _yuan("fund_paid_yuan", "fund_paid_fen", "fund-paid amount in yuan"),
        Column("channel", LC, "CARD, QR_CODE or FACE"),
        Column("face_verify_id", "Nullable(String)"),
        Column("reversal_of", "Nullable(String)", "original settlement id of a reversal"),
        *_lineage(),
    ),
    order_by="(region_code, institution_id, event_time, event_id)",
    shard_key="cityHash64(event_id)",
)

SETTLEMENT_ITEMS = Table(
    name="settlement_items",
    comment="One row per line item of a settlement.",
    columns=(
        Column("settlement_id", "String"),
        Column("line_no", "UInt16"),
        Column("event_time", TS),
        Column("person_id", "String", "pseudonym of the insured person"),
        Column("institution_id", LC),
        Column("region_code", LC),
        Column("visit_type", LC),
        Column("item_code", LC, "national item code"),
        Column("item_name", "String"),
        Column("item_type", LC, "DRUG, CONSUMABLE, SERVICE or EXAM"),
        Column("generic_group", "LowCardinality(Nullable(String))"),
        Column("quantity", "Int32"),
        Column("unit_price_fen", "Int64"),
        Column("amount_fen", "Int64"),
        _yuan("amount_yuan", "amount_fen", "line amount in yuan"),
        Column("days_supply", "Nullable(Int32)"),
        Column("trace_codes", "Array(String)"),
    ),
    order_by="(region_code, institution_id, event_time, settlement_id, line_no)",
    shard_key="cityHash64(settlement_id)",
)

TRACE_SCANS = Table(
    name="trace_scans",
    comment="One row per drug traceability-code scan.",
    columns=(
        Column("event_id", "String"),
        Column("event_time", TS),
        Column("trace_code", "String", "20 digits, first 7 = product"),
        Column("product_code", LC),
        Column("drug_code", LC),
        Column("scan_type", LC, "STOCK_IN, SALE or RETURN"),
        Column("institution_id", LC),
        Column("region_code", LC),
        *_region_columns(),
        Column("settlement_id", "Nullable(String)"),
        Column("batch_no", "Nullable(String)"),
        Column("operator_id", "Nullable(String)"),
        *_lineage(),
    ),
    order_by="(trace_code, event_time, event_id)",
    shard_key="cityHash64(trace_code)",
)

FACE_VERIFICATIONS = Table(
    name="face_verifications",
    comment="One row per face verification. Patient subject ids are pseudonyms.",
    columns=(
        Column("event_id", "String"),
        Column("event_time", TS),
        Column("subject_type", LC, "PATIENT, DOCTOR or PHARMACIST"),
        Column("subject_id", "String", "pseudonym for patients; D/Y code for staff"),
        Column("purpose", LC),
        Column("institution_id", LC),
        Column("region_code", LC),
        *_region_columns(),
        Column("device_id", "String"),
        Column("device_lat", "Float64"),
        Column("device_lon", "Float64"),
        Column("match_score", "Float32"),
        Column("liveness_passed", "Bool"),
        Column("liveness_score", "Nullable(Float32)"),
        Column("result", LC, "PASS or FAIL"),
        Column("settlement_id", "Nullable(String)"),
        *_lineage(),
    ),
    order_by="(region_code, institution_id, event_time, event_id)",
    shard_key="cityHash64(event_id)",
)

ALERTS = Table(
    name="alerts",
    comment="One row per alert id (re-emissions collapse). Person entity ids are pseudonyms.",
    columns=(
        Column("alert_id", "String", "hash of detector, version, entity and triggering event"),
        Column("detector_id", LC),
        Column("detector_version", LC),
        Column("config_version", "LowCardinality(Nullable(String))"),
        Column("kind", LC, "violation (明确违规) or suspicious (可疑)"),
        Column("severity", "UInt8", "1-3"),
        Column("score", "Float64"),
        Column("entity_type", LC),
        Column("entity_id", "String"),
        Column("institution_id", "LowCardinality(Nullable(String))"),
        Column("region_code", "LowCardinality(Nullable(String))"),
        Column("event_time", TS, "event time of the triggering event"),
        Column("detected_at", TS, "when the detector ran"),
        Column("amount_at_risk_fen", "Int64"),
        _yuan("amount_at_risk", "amount_at_risk_fen", "money at risk in yuan"),
        Column("evidence_event_ids", "Array(String)"),
        Column("explanation", "String", "for analysts, in Chinese"),
    ),
    order_by="(toDate(event_time), ifNull(region_code, ''), ifNull(institution_id, ''), "
    "detector_id, alert_id)",
    shard_key="cityHash64(alert_id)",
)

DEAD_LETTERS = Table(
    name="dead_letters",
    comment="Records that could not be processed, with their raw bytes and the reason.",
    columns=(
        Column("dead_letter_id", "String"),
        Column("source_topic", LC),
        Column("source_partition", "UInt16"),
        Column("source_offset", "UInt64"),
        Column("record_timestamp", NTS),
        Column("key", "Nullable(String)", "raw key bytes"),
        Column("value", "Nullable(String)", "raw value bytes"),
        Column("reason_code", LC),
        Column("reason", "String"),
        Column("stage", LC, "sink, worker or replay"),
        Column("detected_at", TS),
    ),
    order_by="(source_topic, source_partition, source_offset, dead_letter_id)",
    shard_key="cityHash64(dead_letter_id)",
    partition_by="toYYYYMM(detected_at)",
)

SIM_LABELS = Table(
    name="sim_labels",
    comment="Ground truth of the simulator: one row per injected fraud instance.",
    columns=(
        Column("label_id", "String"),
        Column("scenario", LC),
        Column("entity_type", LC),
        Column("entity_id", "String", "pseudonym when the entity is a person"),
        Column("event_ids", "Array(String)"),
        Column("expected_detector", LC),
        Column("event_time", TS),
        Column("description", "String"),
    ),
    order_by="(scenario, label_id)",
    shard_key="cityHash64(label_id)",
)

TABLES: tuple[Table, ...] = (
    SETTLEMENTS,
    SETTLEMENT_ITEMS,
    TRACE_SCANS,
    FACE_VERIFICATIONS,
    ALERTS,
    DEAD_LETTERS,
    SIM_LABELS,
)
BY_NAME = {t.name: t for t in TABLES}


def render_ddl(database: str, cluster: str | None = None) -> list[str]:
    """DDL statements for every table: single node when cluster is None, else replicated."""
    on_cluster = f" ON CLUSTER '{cluster}'" if cluster else ""
    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}"]
    for table in TABLES:
        cols = ",\n    ".join(c.render() for c in table.columns)
        parts = f"PARTITION BY {table.partition_by}\n" if table.partition_by else ""
        if cluster:
            local = f"`{database}`.`{table.name}_local`"
            engine = (
                "ReplicatedReplacingMergeTree("
                "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}')"
            )
            statements.append(
                f"CREATE TABLE IF NOT EXISTS {local}{on_cluster} (\n    {cols}\n)\n"
                f"ENGINE = {engine}\n{parts}ORDER BY {table.order_by}\n"
                f"COMMENT '{table.comment}'"
            )
            statements.append(
                f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}`{on_cluster} "
                f"AS {local}\nENGINE = Distributed('{cluster}', '{database}', "
                f"'{table.name}_local', {table.shard_key})"
            )
        else:
            statements.append(
                f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}` (\n    {cols}\n)\n"
                f"ENGINE = ReplacingMergeTree\n{parts}ORDER BY {table.order_by}\n"
                f"COMMENT '{table.comment}'"
            )
    return statements


def ddl_script(database: str, cluster: str | None = None) -> str:
    """The DDL as one SQL script (what `fundwatch store ddl` prints and infra/clickhouse ships)."""
    target = f"cluster '{cluster}'" if cluster else "a single server or the embedded store"
    head = (
        f"-- FundWatch ClickHouse schema for {target}.\n"
        "-- Generated by `fundwatch store ddl` from streams/store/tables.py.\n\n"
    )
    return head + ";\n\n".join(render_ddl(database, cluster)) + ";\n"
