"""Decoded records -> ClickHouse rows, one function per topic (pure, no I/O).

Each function returns (table, row) pairs whose values follow `Table.insert_columns` order;
`tests/sink/test_rows.py` checks the arity against the table definitions. Person identifiers are
replaced by pseudonyms here, the last point before storage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.privacy import Pseudonymizer

Row = tuple[Any, ...]
Rows = list[tuple[str, Row]]
RowFn = Callable[[dict[str, Any], "Lineage", Pseudonymizer], Rows]


class Lineage:
    """Where a record came from, stored with its rows."""

    __slots__ = ("ingested_at", "offset", "partition", "schema_version")

    def __init__(self, partition: int, offset: int, schema_version: int, ingested_at: int) -> None:
        self.partition = partition
        self.offset = offset
        self.schema_version = schema_version
        self.ingested_at = ingested_at

    def tail(self) -> Row:
        return (self.partition, self.offset, self.schema_version, self.ingested_at)


def settlement_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    person = pseudo.pseudonym(r["person_id"])
    items = r["items"]
    out: Rows = [
        (
            "settlements",
            (
                r["event_id"], r["event_time"], person, r["institution_id"],
                r["institution_type"], r["institution_level"], r["region_code"], r["doctor_id"],
                r["pharmacist_id"], r["department"], r["visit_type"], r["admission_time"],
                r["discharge_time"], r["diagnosis_codes"], len(items), r["total_fen"],
                r["fund_paid_fen"], r["self_paid_fen"], r["channel"], r["face_verify_id"],
                r["reversal_of"], *lin.tail(),
            ),
        )
    ]  # fmt: skip
    for it in items:
        out.append(
            (
                "settlement_items",
                (
                    r["event_id"], it["line_no"], r["event_time"], person, r["institution_id"],
                    r["region_code"], r["visit_type"], it["item_code"], it["item_name"],
                    it["item_type"], it["generic_group"], it["quantity"], it["unit_price_fen"],
                    it["amount_fen"], it["days_supply"], it["trace_codes"],
                ),
            )
        )  # fmt: skip
    return out


def trace_scan_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    return [
        (
            "trace_scans",
            (
                r["event_id"], r["event_time"], r["trace_code"], r["product_code"], r["drug_code"],
                r["scan_type"], r["institution_id"], r["region_code"], r["settlement_id"],
                r["batch_no"], r["operator_id"], *lin.tail(),
            ),
        )
    ]  # fmt: skip


def face_verify_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    subject = r["subject_id"]
    if r["subject_type"] == "PATIENT":
        subject = pseudo.pseudonym(subject)
    return [
        (
            "face_verifications",
            (
                r["event_id"], r["event_time"], r["subject_type"], subject, r["purpose"],
                r["institution_id"], r["region_code"], r["device_id"], r["device_lat"],
                r["device_lon"], r["match_score"], r["liveness_passed"], r["liveness_score"],
                r["result"], r["settlement_id"], *lin.tail(),
            ),
        )
    ]  # fmt: skip


def alert_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    entity = r["entity_id"]
    if r["entity_type"] == "person":
        entity = pseudo.pseudonym(entity)
    return [
        (
            "alerts",
            (
                r["alert_id"], r["detector_id"], r["detector_version"], r["config_version"],
                r["kind"], r["severity"], r["score"], r["entity_type"], entity,
                r["institution_id"], r["region_code"], r["event_time"], r["detected_at"],
                r["amount_at_risk_fen"], r["evidence_event_ids"], r["explanation"],
                None,  # confirm_score: the sink's ranker fills it in (streams/sink/ranking.py)
            ),
        )
    ]  # fmt: skip


def institution_hour_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    """One row per emitted revision; the store keeps the highest (ReplacingMergeTree(revision))."""
    return [
        (
            "institution_hourly",
            (
                r["institution_id"], r["institution_type"], r["institution_level"],
                r["region_code"], r["hour_start"], r["settlements"], r["reversals"],
                r["amount_fen"], r["fund_paid_fen"], r["self_paid_fen"], r["distinct_persons"],
                r["doctors"], r["revision"], r["computed_at"],
            ),
        )
    ]  # fmt: skip


def dead_letter_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    return [
        (
            "dead_letters",
            (
                r["dead_letter_id"], r["source_topic"], r["source_partition"], r["source_offset"],
                r["record_timestamp"], r["key"], r["value"], r["reason_code"], r["reason"],
                r["stage"], r["detected_at"],
            ),
        )
    ]  # fmt: skip


def sim_label_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    entity = r["entity_id"]
    if r["entity_type"] == "person":
        entity = pseudo.pseudonym(entity)
    return [
        (
            "sim_labels",
            (
                r["label_id"], r["scenario"], r["entity_type"], entity, r["event_ids"],
                r["expected_detector"], r["event_time"], r["description"],
            ),
        )
    ]  # fmt: skip


def review_rows(r: dict[str, Any], lin: Lineage, pseudo: Pseudonymizer) -> Rows:
    return [
        (
            "reviews",
            (
                r["review_id"], r["alert_id"], r["detector_id"], r["outcome"], r["reviewer"],
                r["reviewed_at"], r["note"], *lin.tail(),
            ),
        )
    ]  # fmt: skip


# Topic role (a field name of streams.config.Topics) -> (Avro record name, row function)
HANDLERS: dict[str, tuple[str, RowFn]] = {
    "settlement": ("SettlementEvent", settlement_rows),
    "trace_scan": ("TraceScanEvent", trace_scan_rows),
    "face_verify": ("FaceVerifyEvent", face_verify_rows),
    "alerts": ("Alert", alert_rows),
    "aggregates": ("InstitutionHour", institution_hour_rows),
    "dead_letters": ("DeadLetter", dead_letter_rows),
    "sim_labels": ("SimLabel", sim_label_rows),
    "reviews": ("Review", review_rows),
}
