"""The ClickHouse tables analysts query, defined once as data and rendered as DDL.

The same definitions render for the embedded chDB store and a single server (ReplacingMergeTree)
and for a cluster (ReplicatedReplacingMergeTree `<table>_local` tables on every shard behind a
Distributed `<table>` sharded by the dedup key, so duplicates of an id meet on one shard).
Rows are deduplicated by their ORDER BY key at merge time: query with FINAL (or the views) for exact
counts. Times are DateTime64(3) in Asia/Shanghai; money is in fen (Int64) with yuan ALIAS columns.
The analyst views (`VIEWS`) are rendered after the tables; on a cluster they read the Distributed
tables, whose FINAL is exact per shard because every table is sharded by its dedup key.
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
    version: str | None = None  # ReplacingMergeTree version column: the highest one survives
    checks: tuple[tuple[str, str], ...] = ()  # (name, expression): CONSTRAINT name CHECK expr

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
        Column(
            "confirm_score",
            "Nullable(Float32)",
            "chance an analyst confirms it, from the review-trained ranker when stored",
        ),
    ),
    order_by="(toDate(event_time), ifNull(region_code, ''), ifNull(institution_id, ''), "
    "detector_id, alert_id)",
    shard_key="cityHash64(alert_id)",
)

INSTITUTION_HOURLY = Table(
    name="institution_hourly",
    comment="Settlements per institution and hour, from the aggregates topic. A late correction "
    "re-emits the hour with a higher revision: query with FINAL.",
    columns=(
        Column("institution_id", LC),
        Column("institution_type", LC, "HOSPITAL, CLINIC or PHARMACY"),
        Column("institution_level", "UInt8", "hospital level 1-3, 0 otherwise"),
        Column("region_code", LC, "six-digit division of the institution"),
        *_region_columns(),
        Column("hour_start", TS, "start of the hour (hours align in UTC and UTC+8)"),
        Column("settlements", "UInt32", "settlements in the hour, reversals excluded"),
        Column("reversals", "UInt32", "reversal settlements (冲正) in the hour"),
        Column("amount_fen", "Int64", "total amount, net of reversals"),
        Column("fund_paid_fen", "Int64", "fund-paid amount, net of reversals"),
        Column("self_paid_fen", "Int64", "self-paid amount, net of reversals"),
        _yuan("amount_yuan", "amount_fen", "total amount in yuan"),
        _yuan("fund_paid_yuan", "fund_paid_fen", "fund-paid amount in yuan"),
        _yuan("self_paid_yuan", "self_paid_fen", "self-paid amount in yuan"),
        Column("distinct_persons", "UInt32", "distinct persons settled in the hour (not additive)"),
        Column("doctors", "UInt32", "distinct doctors in the hour (not additive)"),
        Column("revision", "UInt32", "0 when the hour closed, +1 per late correction"),
        Column("computed_at", TS, "when the worker emitted this revision (wall clock)"),
    ),
    order_by="(region_code, institution_id, hour_start)",
    shard_key="cityHash64(institution_id)",
    partition_by="toYYYYMM(hour_start)",
    version="revision",
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

REVIEWS = Table(
    name="reviews",
    comment="Outcomes of alerts recorded by analysts (fundwatch review), every review step kept: "
    "the latest per alert is in the alert_outcomes view. A re-delivered review (same review_id) "
    "collapses.",
    columns=(
        Column("review_id", "String", "unique id of the review"),
        Column("alert_id", "String", "the reviewed alert"),
        Column("detector_id", "LowCardinality(Nullable(String))", "copied at review time"),
        Column("outcome", "Enum8('confirmed' = 1, 'rejected' = 2)"),
        Column("reviewer", LC, "analyst account (staff, not an insured person)"),
        Column("reviewed_at", TS),
        Column("note", "String"),
        *_lineage(),
    ),
    order_by="(alert_id, reviewed_at, review_id)",
    shard_key="cityHash64(alert_id)",
    partition_by="toYYYYMM(reviewed_at)",
    checks=(("known_outcome", "outcome IN ('confirmed', 'rejected')"),),
)

BACKTEST_ALERTS = Table(
    name="backtest_alerts",
    comment="Alerts of backtest runs (fundwatch backtest), kept apart from the live alerts: the "
    "alerts columns plus run_id. A re-run with the same id replaces its rows.",
    columns=(
        Column("run_id", "String", "backtest run (backtest_runs.run_id)"),
        *ALERTS.columns,
    ),
    order_by="(run_id, alert_id)",
    shard_key="cityHash64(run_id, alert_id)",
)

BACKTEST_RUNS = Table(
    name="backtest_runs",
    comment="One row per backtest run: configuration, input range, counts, speed and the "
    "comparison with labels and the baseline (metrics, JSON).",
    columns=(
        Column("run_id", "String", "hash of (config, baseline, source, from, to) unless given"),
        Column("config_label", LC, "<name>@<version> of the candidate configuration"),
        Column("config_version", LC, "version of the candidate configuration"),
        Column("baseline_label", "LowCardinality(Nullable(String))", "<name>@<version>"),
        Column("source", LC, "kafka or clickhouse"),
        Column("range_from", TS, "first event time replayed (inclusive)"),
        Column("range_to", TS, "end of the replayed event times (exclusive)"),
        Column("events_read", "UInt64", "records read in the range (watermarks excluded)"),
        Column("events_processed", "UInt64", "valid events judged"),
        Column("events_invalid", "UInt64", "undecodable or invalid events, skipped"),
        Column("alerts", "UInt64", "alerts of the candidate configuration"),
        Column("baseline_alerts", "UInt64", "alerts of the baseline configuration"),
        Column("started_at", TS, "wall clock"),
        Column("finished_at", TS, "wall clock"),
        Column("elapsed_s", "Float64"),
        Column("events_per_s", "Float64"),
        Column("metrics", "String", "JSON: per-detector comparison, counts by reason"),
    ),
    order_by="run_id",
    shard_key="cityHash64(run_id)",
    partition_by=None,
)

PERSON_VAULT = Table(
    name="person_vault",
    comment="Privileged: person pseudonym -> person id encrypted with FUNDWATCH_REIDENTIFY_KEY. "
    "Written by the sink only when that key is set; readable by fundwatch_reidentifier only.",
    columns=(
        Column("pseudonym", "String", "the keyed HMAC pseudonym stored in the other tables"),
        Column("ciphertext", "String", "v1: base64(nonce + AES-256-GCM of the person id)"),
        Column("sealed_at", TS),
    ),
    order_by="pseudonym",
    shard_key="cityHash64(pseudonym)",
    partition_by=None,
)

TABLES: tuple[Table, ...] = (
    SETTLEMENTS,
    SETTLEMENT_ITEMS,
    TRACE_SCANS,
    FACE_VERIFICATIONS,
    ALERTS,
    INSTITUTION_HOURLY,
    DEAD_LETTERS,
    SIM_LABELS,
    REVIEWS,
    BACKTEST_ALERTS,
    BACKTEST_RUNS,
    PERSON_VAULT,
)
BY_NAME = {t.name: t for t in TABLES}


@dataclass(frozen=True, slots=True)
class View:
    """A ready query for analysts. `query` names tables as `{db}.<table>`; its `--` comments say
    why it is written so and are kept in the shipped script (ClickHouse stores views without
    them; the COMMENT says what the view answers)."""

    name: str
    comment: str
    query: str

    def render(self, database: str, on_cluster: str) -> str:
        body = self.query.strip().replace("{db}", f"`{database}`")
        comment = self.comment.replace("'", "\\'")
        return (
            f"CREATE VIEW IF NOT EXISTS `{database}`.`{self.name}`{on_cluster} AS\n{body}\n"
            f"COMMENT '{comment}'"
        )


def _yuan_sum(fen: str) -> str:
    return f"toDecimal64(sum({fen}), 2) / 100"


REGION_DAILY = View(
    name="region_daily",
    comment="Per county (region_code) and local day: settlements, money, institutions, distinct "
    "persons and alerts by kind. Roll up to city_code / province_code with sum(), except "
    "distinct_persons.",
    query=f"""
-- Settlement counts and money come from institution_hourly FINAL (the latest revision of each
-- hour; an hour appears once the worker closes it). Distinct persons do NOT add up across hours,
-- institutions or regions (one person visits several), so they are counted here per region and
-- day from settlements FINAL; for a city or a province count them from settlements, never by
-- summing this column. Alerts are counted on the local day of their triggering event.
SELECT
    day,
    substring(region, 1, 2) AS province_code,
    substring(region, 1, 4) AS city_code,
    region AS region_code,
    sum(n_settlements) AS settlements,
    sum(n_reversals) AS reversals,
    sum(amount) AS amount_fen,
    sum(fund_paid) AS fund_paid_fen,
    {_yuan_sum("amount")} AS amount_yuan,
    {_yuan_sum("fund_paid")} AS fund_paid_yuan,
    sum(n_institutions) AS institutions,
    sum(n_persons) AS distinct_persons,
    sum(n_alerts) AS alerts,
    sum(n_violations) AS violations,
    sum(n_suspicious) AS suspicious,
    sum(at_risk) AS amount_at_risk_fen,
    {_yuan_sum("at_risk")} AS amount_at_risk_yuan
FROM
(
    SELECT
        toDate(hour_start) AS day,
        toString(region_code) AS region,
        sum(toUInt64(settlements)) AS n_settlements,
        sum(toUInt64(reversals)) AS n_reversals,
        sum(amount_fen) AS amount,
        sum(fund_paid_fen) AS fund_paid,
        toUInt64(uniqExact(institution_id)) AS n_institutions,
        toUInt64(0) AS n_persons,
        toUInt64(0) AS n_alerts,
        toUInt64(0) AS n_violations,
        toUInt64(0) AS n_suspicious,
        toInt64(0) AS at_risk
    FROM {{db}}.institution_hourly FINAL
    GROUP BY day, region
    UNION ALL
    -- persons with a settlement that day (reversals excluded, as in institution_hourly)
    SELECT
        toDate(event_time) AS day,
        toString(region_code) AS region,
        0, 0, 0, 0, 0,
        toUInt64(uniqExact(person_id)),
        0, 0, 0, 0
    FROM {{db}}.settlements FINAL
    WHERE reversal_of IS NULL
    GROUP BY day, region
    UNION ALL
    SELECT
        toDate(event_time) AS day,
        toString(assumeNotNull(region_code)) AS region,
        0, 0, 0, 0, 0, 0,
        count(),
        countIf(kind = 'violation'),
        countIf(kind = 'suspicious'),
        sum(amount_at_risk_fen)
    FROM {{db}}.alerts FINAL
    WHERE region_code IS NOT NULL
    GROUP BY day, region
)
GROUP BY day, region
ORDER BY day, region
""",
)

ALERTS_TODAY = View(
    name="alerts_by_detector_region_today",
    comment="Alerts on today's events (local day, Asia/Shanghai) by detector, kind and county, "
    "with money at risk; most alerts first.",
    query=f"""
-- "Today" is the local day of the triggering event (the alerts ORDER BY starts with it, so
-- only today's parts are read); alerts found today on yesterday's events are not in it.
-- Inner columns get names of their own: an alias equal to a column name would shadow it.
SELECT
    detector_id,
    kind,
    substring(region, 1, 2) AS province_code,
    substring(region, 1, 4) AS city_code,
    region AS region_code,
    count() AS alerts,
    countIf(severity = 3) AS high_severity,
    uniqExact(entity_id) AS entities,
    uniqExact(institution_id) AS institutions,
    sum(at_risk) AS amount_at_risk_fen,
    {_yuan_sum("at_risk")} AS amount_at_risk_yuan,
    min(event_time) AS first_event_time,
    max(event_time) AS last_event_time
FROM
(
    SELECT
        detector_id,
        kind,
        severity,
        entity_id,
        institution_id,
        toString(ifNull(region_code, '')) AS region,
        amount_at_risk_fen AS at_risk,
        event_time
    FROM {{db}}.alerts FINAL
    WHERE toDate(event_time) = toDate(now(), '{TZ}')
)
GROUP BY detector_id, kind, region
ORDER BY alerts DESC, amount_at_risk_fen DESC, detector_id, kind, region
""",
)

TOP_INSTITUTIONS = View(
    name="top_institutions",
    comment="Institutions ranked by alerts and by money at risk over the last 30 days, with the "
    "violation / suspicious split and their fund-paid volume for scale.",
    query="""
-- Ranked on alerts first, then money at risk; rank_by_amount ranks on money alone. The
-- fund-paid volume (institution_hourly, same 30 days) puts the money at risk in proportion.
SELECT
    rank() OVER (ORDER BY a.n_alerts DESC, a.at_risk DESC) AS rank_by_alerts,
    rank() OVER (ORDER BY a.at_risk DESC) AS rank_by_amount,
    a.institution AS institution_id,
    h.institution_type AS institution_type,
    substring(a.region, 1, 2) AS province_code,
    substring(a.region, 1, 4) AS city_code,
    a.region AS region_code,
    a.n_alerts AS alerts,
    a.n_violations AS violations,
    a.n_suspicious AS suspicious,
    a.n_detectors AS detectors,
    a.at_risk AS amount_at_risk_fen,
    a.violation_at_risk AS violation_amount_fen,
    a.suspicious_at_risk AS suspicious_amount_fen,
    toDecimal64(a.at_risk, 2) / 100 AS amount_at_risk_yuan,
    h.n_settlements AS settlements,
    h.fund_paid AS fund_paid_fen,
    if(h.fund_paid > 0, round(a.at_risk / h.fund_paid, 4), NULL) AS at_risk_share_of_fund_paid,
    a.last_alert_time AS last_alert_time
FROM
(
    SELECT
        toString(assumeNotNull(institution_id)) AS institution,
        toString(ifNull(any(region_code), '')) AS region,
        count() AS n_alerts,
        countIf(kind = 'violation') AS n_violations,
        countIf(kind = 'suspicious') AS n_suspicious,
        uniqExact(detector_id) AS n_detectors,
        sum(amount_at_risk_fen) AS at_risk,
        sumIf(amount_at_risk_fen, kind = 'violation') AS violation_at_risk,
        sumIf(amount_at_risk_fen, kind = 'suspicious') AS suspicious_at_risk,
        max(event_time) AS last_alert_time
    FROM {db}.alerts FINAL
    WHERE institution_id IS NOT NULL AND event_time >= now() - INTERVAL 30 DAY
    GROUP BY institution
) AS a
LEFT JOIN
(
    SELECT
        toString(institution_id) AS institution,
        toString(any(institution_type)) AS institution_type,
        sum(toUInt64(settlements)) AS n_settlements,
        sum(fund_paid_fen) AS fund_paid
    FROM {db}.institution_hourly FINAL
    WHERE hour_start >= now() - INTERVAL 30 DAY
    GROUP BY institution
) AS h ON a.institution = h.institution
ORDER BY rank_by_alerts, institution_id
""",
)

INSTITUTION_TIMELINE = View(
    name="institution_timeline",
    comment="Settlements and alerts of each institution interleaved by time (kind = settlement or "
    "alert). Filter with WHERE institution_id = ...",
    query="""
-- One row per settlement or alert; an alert sorts after the settlement that triggered it (same
-- event_time). related_ids: the original of a reversal, the evidence of an alert. person_id is a
-- pseudonym. The second branch takes its column names from the first.
SELECT *
FROM
(
    SELECT
        toString(institution_id) AS institution_id,
        event_time,
        'settlement' AS kind,
        event_id AS id,
        CAST(person_id, 'Nullable(String)') AS person_id,
        doctor_id,
        toString(if(reversal_of IS NULL, visit_type, 'REVERSAL')) AS label,
        CAST(NULL, 'Nullable(String)') AS alert_kind,
        CAST(NULL, 'Nullable(UInt8)') AS severity,
        total_fen AS amount_fen,
        CAST(fund_paid_fen, 'Nullable(Int64)') AS fund_paid_fen,
        arrayStringConcat(diagnosis_codes, ',') AS detail,
        if(reversal_of IS NULL, [], [assumeNotNull(reversal_of)]) AS related_ids
    FROM {db}.settlements FINAL
    UNION ALL
    SELECT
        toString(assumeNotNull(institution_id)),
        event_time,
        'alert',
        alert_id,
        if(entity_type = 'person', entity_id, NULL),
        if(entity_type = 'doctor', entity_id, NULL),
        toString(detector_id),
        toString(kind),
        severity,
        amount_at_risk_fen,
        NULL,
        explanation,
        evidence_event_ids
    FROM {db}.alerts FINAL
    WHERE institution_id IS NOT NULL
)
ORDER BY institution_id, event_time, kind = 'alert', id
""",
)

PERSON_TIMELINE = View(
    name="person_timeline",
    comment="Settlements, face checks and person alerts of each person pseudonym interleaved by "
    "time (kind = settlement, face_check or alert). Filter with WHERE person_id = ...",
    query="""
-- person_id is the pseudonym stored by the sink (streams.privacy): look a person up by the
-- pseudonym of their number, never by the number. Face checks are the PATIENT ones; alerts are
-- those whose entity is the person (entity_type = 'person'). Same event_time: settlement, then
-- face check, then alert. The other branches take their column names from the first.
SELECT *
FROM
(
    SELECT
        person_id,
        event_time,
        'settlement' AS kind,
        event_id AS id,
        CAST(institution_id, 'Nullable(String)') AS institution_id,
        CAST(region_code, 'Nullable(String)') AS region_code,
        doctor_id,
        toString(if(reversal_of IS NULL, visit_type, 'REVERSAL')) AS label,
        CAST(NULL, 'Nullable(String)') AS alert_kind,
        CAST(NULL, 'Nullable(UInt8)') AS severity,
        CAST(total_fen, 'Nullable(Int64)') AS amount_fen,
        CAST(fund_paid_fen, 'Nullable(Int64)') AS fund_paid_fen,
        arrayStringConcat(diagnosis_codes, ',') AS detail,
        if(reversal_of IS NULL, [], [assumeNotNull(reversal_of)]) AS related_ids
    FROM {db}.settlements FINAL
    UNION ALL
    SELECT
        subject_id,
        event_time,
        'face_check',
        event_id,
        toString(institution_id),
        toString(region_code),
        NULL,
        toString(purpose),
        NULL,
        NULL,
        NULL,
        NULL,
        concat(
            toString(result), ' match_score=', toString(round(match_score, 3)),
            if(liveness_passed, '', ' liveness_failed')
        ),
        if(settlement_id IS NULL, [], [assumeNotNull(settlement_id)])
    FROM {db}.face_verifications FINAL
    WHERE subject_type = 'PATIENT'
    UNION ALL
    SELECT
        entity_id,
        event_time,
        'alert',
        alert_id,
        institution_id,
        region_code,
        NULL,
        toString(detector_id),
        toString(kind),
        severity,
        amount_at_risk_fen,
        NULL,
        explanation,
        evidence_event_ids
    FROM {db}.alerts FINAL
    WHERE entity_type = 'person'
)
ORDER BY person_id, event_time, indexOf(['settlement', 'face_check', 'alert'], kind), id
""",
)

DOCTOR_DAILY = View(
    name="doctor_daily",
    comment="Per doctor, institution and local day (the deepest drill-down level): settlements, "
    "money and distinct persons.",
    query=f"""
-- From settlements FINAL: distinct persons need the rows, and a doctor per day is small.
-- A doctor practising at several institutions (多点执业) has one row per institution; reversals
-- are counted apart and their negative amounts netted, as in institution_hourly.
SELECT
    day,
    province_code,
    city_code,
    region_code,
    institution_id,
    doctor AS doctor_id,
    countIf(is_settlement) AS settlements,
    countIf(NOT is_settlement) AS reversals,
    sum(amount) AS amount_fen,
    sum(fund_paid) AS fund_paid_fen,
    {_yuan_sum("amount")} AS amount_yuan,
    {_yuan_sum("fund_paid")} AS fund_paid_yuan,
    uniqExactIf(person_id, is_settlement) AS distinct_persons
FROM
(
    SELECT
        toDate(event_time) AS day,
        province_code,
        city_code,
        region_code,
        institution_id,
        assumeNotNull(doctor_id) AS doctor,
        reversal_of IS NULL AS is_settlement,
        total_fen AS amount,
        fund_paid_fen AS fund_paid,
        person_id
    FROM {{db}}.settlements FINAL
    WHERE doctor_id IS NOT NULL
)
GROUP BY day, province_code, city_code, region_code, institution_id, doctor
ORDER BY day, region_code, institution_id, doctor_id
""",
)

ALERT_OUTCOMES = View(
    name="alert_outcomes",
    comment="The outcome of every reviewed alert: its latest review (confirmed or rejected), who "
    "and when, the first outcome and how many reviews it had.",
    query="""
-- The latest review decides (argMax over reviewed_at, review_id breaking ties); earlier steps
-- (first review, appeal, re-review) stay in reviews. FINAL drops re-delivered copies of a review.
-- Inner columns get names of their own: an alias equal to a column name would shadow it.
SELECT
    alert_id,
    argMax(detector, (at, rid)) AS detector_id,
    argMax(result, (at, rid)) AS outcome,
    argMax(who, (at, rid)) AS reviewer,
    argMax(text, (at, rid)) AS note,
    max(at) AS reviewed_at,
    argMin(result, (at, rid)) AS first_outcome,
    min(at) AS first_reviewed_at,
    count() AS reviews
FROM
(
    SELECT
        alert_id,
        detector_id AS detector,
        outcome AS result,
        reviewer AS who,
        note AS text,
        reviewed_at AS at,
        review_id AS rid
    FROM {db}.reviews FINAL
)
GROUP BY alert_id
ORDER BY alert_id
""",
)

VIEWS: tuple[View, ...] = (
    REGION_DAILY,
    ALERTS_TODAY,
    TOP_INSTITUTIONS,
    INSTITUTION_TIMELINE,
    PERSON_TIMELINE,
    DOCTOR_DAILY,
    ALERT_OUTCOMES,
)

ADDED_COLUMNS: tuple[tuple[str, str], ...] = (("alerts", "confirm_score"),)
"""(table, column) added after the table first shipped: `ALTER TABLE ... ADD COLUMN IF NOT
EXISTS` brings an existing store up to date (CREATE TABLE IF NOT EXISTS leaves it as it was)."""


def _engine(table: Table, cluster: str | None) -> str:
    version = f", {table.version}" if table.version else ""
    if cluster:
        return (
            "ReplicatedReplacingMergeTree("
            f"'/clickhouse/tables/{{shard}}/{{database}}/{{table}}', '{{replica}}'{version})"
        )
    return f"ReplacingMergeTree({table.version})" if table.version else "ReplacingMergeTree"


def render_ddl(database: str, cluster: str | None = None) -> list[str]:
    """DDL statements for every table, then every view: single node when cluster is None, else
    replicated local tables behind Distributed ones, with the views over the Distributed ones."""
    on_cluster = f" ON CLUSTER '{cluster}'" if cluster else ""
    statements = [f"CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}"]
    for table in TABLES:
        checks = [f"CONSTRAINT `{name}` CHECK {expr}" for name, expr in table.checks]
        cols = ",\n    ".join([*(c.render() for c in table.columns), *checks])
        parts = f"PARTITION BY {table.partition_by}\n" if table.partition_by else ""
        engine = _engine(table, cluster)
        name = f"{table.name}_local" if cluster else table.name
        statements.append(
            f"CREATE TABLE IF NOT EXISTS `{database}`.`{name}`{on_cluster} (\n    {cols}\n)\n"
            f"ENGINE = {engine}\n{parts}ORDER BY {table.order_by}\n"
            f"COMMENT '{table.comment}'"
        )
        if cluster:
            statements.append(
                f"CREATE TABLE IF NOT EXISTS `{database}`.`{table.name}`{on_cluster} "
                f"AS `{database}`.`{name}`\nENGINE = Distributed('{cluster}', '{database}', "
                f"'{name}', {table.shard_key})"
            )
    for table_name, column_name in ADDED_COLUMNS:
        column = next(c for c in BY_NAME[table_name].columns if c.name == column_name)
        for name in (f"{table_name}_local", table_name) if cluster else (table_name,):
            statements.append(
                f"ALTER TABLE `{database}`.`{name}`{on_cluster} "
                f"ADD COLUMN IF NOT EXISTS {column.render()}"
            )
    statements.extend(view.render(database, on_cluster) for view in VIEWS)
    return statements


def ddl_script(database: str, cluster: str | None = None) -> str:
    """The DDL as one SQL script (what `fundwatch store ddl` prints and infra/clickhouse ships):
    the tables, the views, then the roles (`streams/store/roles.py`; not for the embedded store)."""
    target = f"cluster '{cluster}'" if cluster else "a single server or the embedded store"
    head = (
        f"-- FundWatch ClickHouse schema for {target}.\n"
        "-- Generated by `fundwatch store ddl` from streams/store/tables.py.\n\n"
    )
    from streams.store.roles import role_statements

    statements = [*render_ddl(database, cluster), *role_statements(database, cluster)]
    return head + ";\n\n".join(statements) + ";\n"
