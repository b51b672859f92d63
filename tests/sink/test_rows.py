"""Rows follow the table definitions, and person ids never reach a row in clear."""

from __future__ import annotations

import pytest

from streams.privacy import Pseudonymizer
from streams.sink.rows import HANDLERS, Lineage
from streams.store.tables import BY_NAME
from tests.records import RECORDS

PSEUDO = Pseudonymizer(b"test-key")
LINEAGE = Lineage(partition=3, offset=42, schema_version=2, ingested_at=1_700_000_000_000)


@pytest.mark.parametrize("role", sorted(HANDLERS))
def test_rows_match_table_columns(role: str) -> None:
    schema_name, to_rows = HANDLERS[role]
    rows = to_rows(RECORDS[schema_name](), LINEAGE, PSEUDO)
    assert rows
    for table, row in rows:
        assert len(row) == len(BY_NAME[table].insert_columns), table


def test_settlement_has_one_item_row_per_line_and_pseudonymised_person() -> None:
    record = RECORDS["SettlementEvent"]()
    rows = HANDLERS["settlement"][1](record, LINEAGE, PSEUDO)
    tables = [t for t, _ in rows]
    assert tables == ["settlements"] + ["settlement_items"] * len(record["items"])
    settlement = dict(zip(BY_NAME["settlements"].insert_columns, rows[0][1], strict=True))
    assert settlement["person_id"] == PSEUDO.pseudonym(record["person_id"])
    assert settlement["person_id"] != record["person_id"]
    assert settlement["item_count"] == len(record["items"])
    assert (settlement["source_partition"], settlement["source_offset"]) == (3, 42)
    for _, row in rows:
        assert record["person_id"] not in row


def test_staff_face_ids_stay_clear_patients_are_pseudonymised() -> None:
    record = RECORDS["FaceVerifyEvent"]()
    to_rows = HANDLERS["face_verify"][1]
    names = BY_NAME["face_verifications"].insert_columns
    patient = dict(zip(names, to_rows(record, LINEAGE, PSEUDO)[0][1], strict=True))
    assert patient["subject_id"] == PSEUDO.pseudonym(record["subject_id"])
    doctor = {**record, "subject_type": "DOCTOR", "subject_id": "D360102000001"}
    row = dict(zip(names, to_rows(doctor, LINEAGE, PSEUDO)[0][1], strict=True))
    assert row["subject_id"] == "D360102000001"


def test_pseudonyms_are_stable_and_keyed() -> None:
    other = Pseudonymizer(b"another-key")
    assert PSEUDO.pseudonym("36010200000000000001") == PSEUDO.pseudonym("36010200000000000001")
    assert PSEUDO.pseudonym("36010200000000000001") != other.pseudonym("36010200000000000001")
    assert PSEUDO.matches("36010200000000000001", PSEUDO.pseudonym("36010200000000000001"))
