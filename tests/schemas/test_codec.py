"""Tests of the single-object Avro codec (schemas/codec.py)."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    MAGIC,
    Codec,
    CodecError,
    CorruptRecordError,
    EncodeError,
    NotSingleObjectError,
    SchemaInfo,
    UnexpectedSchemaError,
    UnknownFingerprintError,
)

AVRO_DIR = Path(__file__).resolve().parents[2] / "schemas" / "avro"
STEMS = {
    "SettlementEvent": "settlement_event",
    "TraceScanEvent": "trace_scan_event",
    "FaceVerifyEvent": "face_verify_event",
    "Alert": "alert",
    "DeadLetter": "dead_letter",
    "SimLabel": "sim_label",
}
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z in epoch ms

# --------------------------------------------------------------------------- helpers


def crc64_avro(data: bytes) -> bytes:
    """CRC-64-AVRO straight from the spec's reference algorithm, as 8 little-endian bytes."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def raw_schema(name: str, version: int | None = None) -> dict[str, Any]:
    stem = STEMS[name]
    path = (
        AVRO_DIR / f"{stem}.avsc"
        if version is None
        else AVRO_DIR / "history" / f"{stem}.v{version}.avsc"
    )
    return json.loads(path.read_text("utf-8"))


def settlement_item(line_no: int, n_boxes: int) -> dict[str, Any]:
    return {
        "line_no": line_no,
        "item_code": f"XA01ABD075A00201010048{line_no}",
        "item_name": "盐酸二甲双胍缓释片",
        "item_type": "DRUG",
        "generic_group": "metformin_oral",
        "quantity": n_boxes,
        "unit_price_fen": 2350,
        "amount_fen": 2350 * n_boxes,
        "days_supply": 15 * n_boxes,
        "trace_codes": [f"8123456{line_no:03d}{box:010d}" for box in range(n_boxes)],
    }


SAMPLES: dict[str, dict[str, Any]] = {
    "SettlementEvent": {
        "event_id": "ST0000000001a2b3c4",
        "event_time": T0,
        "person_id": "440106199001011234",
        "institution_id": "H440106000001",
        "institution_type": "HOSPITAL",
        "institution_level": 3,
        "region_code": "440106",
        "doctor_id": "D440106000077",
        "pharmacist_id": "Y440106000012",
        "department": "internal",
        "visit_type": "OUTPATIENT",
        "admission_time": None,
        "discharge_time": None,
        "diagnosis_codes": ["E11.900", "I10.x00"],
        "items": [
            settlement_item(1, 2),
            settlement_item(2, 1),
            {
                "line_no": 3,
                "item_code": "001201000010000",
                "item_name": "普通门诊诊查费",
                "item_type": "SERVICE",
                "generic_group": None,
                "quantity": 1,
                "unit_price_fen": 1000,
                "amount_fen": 1000,
                "days_supply": None,
                "trace_codes": [],
            },
        ],
        "total_fen": 8050,
        "fund_paid_fen": 5635,
        "self_paid_fen": 2415,
        "channel": "FACE",
        "face_verify_id": "FV0000000009",
        "reversal_of": None,
    },
    "TraceScanEvent": {
        "event_id": "TS0000000042",
        "event_time": T0 + 1_234,
        "trace_code": "81234560010000000001",
        "product_code": "8123456",
        "drug_code": "XA01ABD075A002010100483",
        "scan_type": "SALE",
        "institution_id": "P440106000003",
        "region_code": "440106",
        "settlement_id": "ST0000000001a2b3c4",
        "batch_no": "B20250101",
        "operator_id": "Y440106000012",
    },
    "FaceVerifyEvent": {
        "event_id": "FV0000000009",
        "event_time": T0 - 60_000,
        "subject_type": "PATIENT",
        "subject_id": "440106199001011234",
        "purpose": "SETTLEMENT",
        "institution_id": "H440106000001",
        "region_code": "440106",
        "device_id": "DEV-0007",
        "device_lat": 23.1291,
        "device_lon": 113.2644,
        "match_score": 0.973,
        "liveness_passed": True,
        "result": "PASS",
        "settlement_id": "ST0000000001a2b3c4",
        "liveness_score": 0.91,
    },
    "Alert": {
        "alert_id": "9f2c1e0b7a6d5c4b3a29180f7e6d5c4b",
        "detector_id": "cross_institution_frequency",
        "detector_version": "1.0.0",
        "kind": "suspicious",
        "severity": 2,
        "score": 1.2,
        "entity_type": "person",
        "entity_id": "p_5e8a1c",
        "institution_id": "H440106000001",
        "region_code": "440106",
        "event_time": T0,
        "detected_at": T0 + 350,
        "amount_at_risk_fen": 5635,
        "evidence_event_ids": ["ST01", "ST02", "ST0000000001a2b3c4"],
        "explanation": "24小时内在6家不同机构就诊,阈值5",
        "config_version": "rules-2026.01",
    },
    "DeadLetter": {
        "dead_letter_id": "settlement/3/1234567/sink",
        "source_topic": "settlement",
        "source_partition": 3,
        "source_offset": 1_234_567,
        "record_timestamp": T0,
        "key": b"440106199001011234",
        "value": b"\xc3\x01\x00\xffgarbage",
        "reason_code": "unknown_fingerprint",
        "reason": "unknown writer schema fingerprint 0000000000000000",
        "detected_at": T0 + 10,
        "stage": "worker",
    },
    "SimLabel": {
        "label_id": "lbl-000017",
        "scenario": "cross_institution_hopping",
        "entity_type": "person",
        "entity_id": "440106199001011234",
        "event_ids": ["ST01", "ST02", "ST03"],
        "expected_detector": "cross_institution_frequency",
        "event_time": T0,
        "description": "同一参保人24小时内在6家机构就诊",
    },
}
NAMES = sorted(SAMPLES)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.default()


def all_encodings(codec: Codec) -> list[bytes]:
    return [codec.encode(name, SAMPLES[name]) for name in NAMES]


# --------------------------------------------------------------------------- loading


def test_default_is_a_cached_singleton() -> None:
    assert Codec.default() is Codec.default()


def test_loads_current_and_history_versions(codec: Codec) -> None:
    # the six original contracts have a v1 history; newer ones (Watermark, ...) start at v1
    assert set(NAMES) <= set(codec.names)
    fingerprints = set()
    for name in NAMES:
        current = codec.current(name)
        assert isinstance(current, SchemaInfo)
        assert (current.name, current.version) == (name, 2)
        assert codec.version(name, 1).version == 1
        fingerprints |= {current.fingerprint, codec.version(name, 1).fingerprint}
    assert len(fingerprints) == 2 * len(NAMES)


def test_unknown_name_or_version_is_a_key_error(codec: Codec) -> None:
    with pytest.raises(KeyError, match="Nope"):
        codec.current("Nope")
    with pytest.raises(KeyError):
        codec.encode_with_version("SettlementEvent", 7, SAMPLES["SettlementEvent"])


def test_current_version_follows_history_files(tmp_path: Path) -> None:
    (tmp_path / "history").mkdir()
    schema = raw_schema("SimLabel")
    v1 = raw_schema("SimLabel", 1)
    v2 = copy.deepcopy(v1)
    v2["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    for version, body in ((1, v1), (2, v2)):
        (tmp_path / "history" / f"sim_label.v{version}.avsc").write_text(json.dumps(body))
    (tmp_path / "sim_label.avsc").write_text(json.dumps(schema))
    loaded = Codec.from_dir(tmp_path)
    assert loaded.current("SimLabel").version == 3
    assert loaded.version("SimLabel", 2).fingerprint != loaded.current("SimLabel").fingerprint


def test_same_canonical_form_twice_is_rejected() -> None:
    schema = raw_schema("SimLabel")
    relabelled = dict(schema, doc="only the doc changed")
    with pytest.raises(ValueError, match="same canonical form"):
        Codec([(schema, 1), (relabelled, 2)])


# --------------------------------------------------------------------------- fingerprints


@pytest.mark.parametrize(
    ("schema", "expected"),
    [  # from apache/avro share/test/data/schema-tests.txt (Java signed longs)
        ('"null"', 7195948357588979594),
        ('"int"', 8247732601305521295),
        ('{"name":"x.y.foo","type":"record","fields":[]}', 5916914534497305771),
        (
            '{"name":"PigValue","type":"record","fields":'
            '[{"name":"value","type":["null","int","long","PigValue"]}]}',
            -1759257747318642341,
        ),
    ],
)
def test_crc64_avro_matches_spec_vectors(schema: str, expected: int) -> None:
    wire = (expected & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "little")
    assert crc64_avro(schema.encode()) == wire
    assert bytes.fromhex(fingerprint(schema, "CRC-64-AVRO")) == wire


def test_canonical_form_ignores_doc_and_logical_type() -> None:
    assert (
        to_parsing_canonical_form({"type": "long", "logicalType": "timestamp-millis"}) == '"long"'
    )
    record = {"fields": [], "type": "record", "name": "foo", "namespace": "x.y", "doc": "d"}
    assert to_parsing_canonical_form(record) == '{"name":"x.y.foo","type":"record","fields":[]}'


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("version", [1, 2])
def test_header_layout(codec: Codec, name: str, version: int) -> None:
    raw = raw_schema(name, None if version == 2 else version)
    expected_fp = crc64_avro(to_parsing_canonical_form(raw).encode("utf-8"))
    info = codec.version(name, version)
    assert info.fingerprint == expected_fp
    record = SAMPLES[name] if version == 2 else v1_record(name)
    data = codec.encode_with_version(name, version, record)
    assert data[:2] == b"\xc3\x01" == MAGIC
    assert data[2:10] == expected_fp == info.header[2:]
    assert codec.info(data) == info


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", NAMES)
def test_round_trip(codec: Codec, name: str) -> None:
    data = codec.encode(name, SAMPLES[name])
    assert codec.decode(data) == SAMPLES[name]
    assert codec.decode(data, expect=name) == SAMPLES[name]
    info, record = codec.decode_with_info(data)
    assert (info.name, info.version) == (name, 2)
    assert record == SAMPLES[name]


def test_decode_accepts_bytes_like(codec: Codec) -> None:
    data = codec.encode("TraceScanEvent", SAMPLES["TraceScanEvent"])
    for view in (bytearray(data), memoryview(data)):
        assert codec.decode(view) == SAMPLES["TraceScanEvent"]  # type: ignore[arg-type]


def test_decoded_types_are_plain(codec: Codec) -> None:
    settlement = codec.decode(codec.encode("SettlementEvent", SAMPLES["SettlementEvent"]))
    assert type(settlement["event_time"]) is int
    assert type(settlement["institution_type"]) is str
    assert len(settlement["items"]) == 3
    assert (
        settlement["items"][0]["trace_codes"]
        == SAMPLES["SettlementEvent"]["items"][0]["trace_codes"]
    )
    dead = codec.decode(codec.encode("DeadLetter", SAMPLES["DeadLetter"]))
    assert type(dead["record_timestamp"]) is int and type(dead["detected_at"]) is int
    assert type(dead["value"]) is bytes


def test_encode_fills_defaults(codec: Codec) -> None:
    record = {
        k: v for k, v in SAMPLES["SettlementEvent"].items() if k not in ("doctor_id", "items")
    }
    decoded = codec.decode(codec.encode("SettlementEvent", record))
    assert decoded["doctor_id"] is None and decoded["items"] == []


# --------------------------------------------------------------------------- evolution


def v2_only_fields(name: str) -> dict[str, Any]:
    """Fields added in v2, with their defaults."""
    old = {f["name"] for f in raw_schema(name, 1)["fields"]}
    return {f["name"]: f["default"] for f in raw_schema(name)["fields"] if f["name"] not in old}


def v1_record(name: str) -> dict[str, Any]:
    added = v2_only_fields(name)
    return {k: v for k, v in SAMPLES[name].items() if k not in added}


@pytest.mark.parametrize("name", NAMES)
def test_v1_record_decodes_with_current_reader(codec: Codec, name: str) -> None:
    added = v2_only_fields(name)
    assert added, f"{name} v2 should add fields"
    old = v1_record(name)
    data = codec.encode_with_version(name, 1, old)
    assert data[2:10] == codec.version(name, 1).fingerprint
    info, record = codec.decode_with_info(data)
    assert (info.name, info.version) == (name, 1)
    assert record == {**old, **added}
    assert list(record) == [f["name"] for f in raw_schema(name)["fields"]]
    assert codec.decode(data, expect=name) == record


def test_v1_writer_rejects_v2_only_fields(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="face_verify_id"):
        codec.encode_with_version("SettlementEvent", 1, SAMPLES["SettlementEvent"])


# --------------------------------------------------------------------------- typed errors


def test_reason_codes_are_stable() -> None:
    assert {
        cls.reason_code
        for cls in (
            NotSingleObjectError,
            UnknownFingerprintError,
            CorruptRecordError,
            UnexpectedSchemaError,
            EncodeError,
        )
    } == {
        "not_single_object",
        "unknown_fingerprint",
        "corrupt_avro",
        "unexpected_schema",
        "invalid_record",
    }
    assert all(issubclass(c, CodecError) for c in (NotSingleObjectError, EncodeError))


@pytest.mark.parametrize(
    "data", [b"", None, "text", b"\xc3", b"\xc3\x01\x00\x00", b"\xc3\x01" + bytes(7)]
)
def test_too_short_or_not_bytes(codec: Codec, data: bytes | None) -> None:
    with pytest.raises(NotSingleObjectError) as err:
        codec.decode(data)
    assert err.value.reason_code == "not_single_object"


def test_wrong_magic(codec: Codec) -> None:
    good = codec.encode("SimLabel", SAMPLES["SimLabel"])
    for bad in (b"\x00\x01" + good[2:], b"\xc3\x00" + good[2:], b'{"label_id": "x"}'):
        with pytest.raises(NotSingleObjectError, match="c301"):
            codec.decode(bad)
        with pytest.raises(NotSingleObjectError):
            codec.info(bad)


def test_unknown_fingerprint(codec: Codec) -> None:
    good = codec.encode("SimLabel", SAMPLES["SimLabel"])
    fp = bytes.fromhex("0123456789abcdef")
    with pytest.raises(UnknownFingerprintError, match="0123456789abcdef") as err:
        codec.decode(MAGIC + fp + good[10:])
    assert err.value.reason_code == "unknown_fingerprint"
    assert err.value.fingerprint == fp


def test_every_truncation_is_corrupt(codec: Codec) -> None:
    data = codec.encode("SettlementEvent", SAMPLES["SettlementEvent"])
    for end in range(10, len(data)):
        with pytest.raises(CorruptRecordError, match="SettlementEvent v2") as err:
            codec.decode(data[:end])
        assert err.value.reason_code == "corrupt_avro"


def test_truncated_old_version_names_the_version(codec: Codec) -> None:
    data = codec.encode_with_version("Alert", 1, v1_record("Alert"))
    with pytest.raises(CorruptRecordError, match="Alert v1"):
        codec.decode(data[:-3])


def test_trailing_bytes(codec: Codec) -> None:
    for data in all_encodings(codec):
        for junk in (b"\x00", b"trailing garbage"):
            with pytest.raises(CorruptRecordError, match="trailing"):
                codec.decode(data + junk)


def test_undecodable_body(codec: Codec) -> None:
    header = codec.current("TraceScanEvent").header
    with pytest.raises(CorruptRecordError, match="TraceScanEvent v2"):
        codec.decode(header + b"\x04\xff\xfe")  # invalid UTF-8 in event_id
    with pytest.raises(CorruptRecordError):
        codec.decode(header + b"\x00\x00\x00\x00\x00\x7f")  # enum index out of range


def test_expect_mismatch(codec: Codec) -> None:
    data = codec.encode("Alert", SAMPLES["Alert"])
    with pytest.raises(
        UnexpectedSchemaError, match="expected a SettlementEvent record, got Alert"
    ) as err:
        codec.decode(data, expect="SettlementEvent")
    assert err.value.reason_code == "unexpected_schema"
    with pytest.raises(KeyError):  # a typo in `expect` is a programming error
        codec.decode(data, expect="Alrt")


def test_encode_missing_required_field(codec: Codec) -> None:
    record = dict(SAMPLES["SettlementEvent"])
    del record["person_id"]
    with pytest.raises(EncodeError, match="person_id") as err:
        codec.encode("SettlementEvent", record)
    assert err.value.reason_code == "invalid_record"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("institution_level", "three"),
        ("total_fen", None),
        ("event_time", "2026-01-01"),
        ("channel", "FAX"),
        ("person_id", 12345),
        ("diagnosis_codes", "E11.900"),
    ],
)
def test_encode_wrong_type(codec: Codec, field: str, value: Any) -> None:
    record = dict(SAMPLES["SettlementEvent"], **{field: value})
    with pytest.raises(EncodeError, match=field):
        codec.encode("SettlementEvent", record)


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [  # misfits fastavro's writer alone would coerce silently
        ("SettlementEvent", "total_fen", 8050.5),
        ("SettlementEvent", "total_fen", 8050.0),
        ("SettlementEvent", "fund_paid_fen", True),
        ("SettlementEvent", "institution_level", 2**31),
        ("SettlementEvent", "event_time", 2**63),
        ("SettlementEvent", "diagnosis_codes", "E11.900"),
        ("SettlementEvent", "admission_time", 1.5),
        ("FaceVerifyEvent", "liveness_passed", 1),
        ("FaceVerifyEvent", "match_score", "0.97"),
        ("FaceVerifyEvent", "device_lat", True),
        ("Alert", "evidence_event_ids", {"ST01": 1}),
        ("DeadLetter", "record_timestamp", "2026-01-01"),
    ],
)
def test_encode_rejects_silent_coercions(codec: Codec, name: str, field: str, value: Any) -> None:
    with pytest.raises(EncodeError, match=rf"{name}\.{field} \(got {type(value).__name__}\)"):
        codec.encode(name, dict(SAMPLES[name], **{field: value}))


def test_encode_accepts_int_for_double_and_tuple_for_array(codec: Codec) -> None:
    record = dict(SAMPLES["FaceVerifyEvent"], device_lat=23, liveness_score=None)
    assert codec.decode(codec.encode("FaceVerifyEvent", record))["device_lat"] == 23.0
    alert = dict(SAMPLES["Alert"], evidence_event_ids=("ST01", "ST02"))
    assert codec.decode(codec.encode("Alert", alert))["evidence_event_ids"] == ["ST01", "ST02"]


def test_encode_wrong_type_in_nested_item(codec: Codec) -> None:
    record = copy.deepcopy(SAMPLES["SettlementEvent"])
    record["items"][1]["quantity"] = "2"
    with pytest.raises(EncodeError, match="quantity"):
        codec.encode("SettlementEvent", record)


def test_encode_unknown_field(codec: Codec) -> None:
    with pytest.raises(EncodeError, match="face_verify_Id"):
        codec.encode("SettlementEvent", dict(SAMPLES["SettlementEvent"], face_verify_Id="FV1"))


# --------------------------------------------------------------------------- properties

fingerprints = st.sampled_from(
    [Codec.default().version(name, v).fingerprint for name in NAMES for v in (1, 2)]
)
arbitrary_inputs = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda fp, body: MAGIC + fp + body, fingerprints, st.binary(max_size=300)),
)


def decode_or_codec_error(codec: Codec, data: bytes) -> type:
    try:
        record = codec.decode(data)
    except CodecError as err:
        assert isinstance(err.reason_code, str) and str(err)
        return type(err)
    assert isinstance(record, dict)
    return dict


@given(arbitrary_inputs)
@settings(max_examples=500, deadline=None)
def test_decode_arbitrary_bytes_returns_dict_or_codec_error(data: bytes) -> None:
    decode_or_codec_error(Codec.default(), data)


INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=30)
OPT_TEXT = st.none() | TEXT
items = st.fixed_dictionaries(
    {
        "line_no": INT32,
        "item_code": TEXT,
        "item_name": TEXT,
        "item_type": st.sampled_from(["DRUG", "CONSUMABLE", "SERVICE", "EXAM"]),
        "generic_group": OPT_TEXT,
        "quantity": INT32,
        "unit_price_fen": INT64,
        "amount_fen": INT64,
        "days_supply": st.none() | INT32,
        "trace_codes": st.lists(TEXT, max_size=4),
    }
)
settlements = st.fixed_dictionaries(
    {
        "event_id": TEXT,
        "event_time": INT64,
        "person_id": TEXT,
        "institution_id": TEXT,
        "institution_type": st.sampled_from(["HOSPITAL", "CLINIC", "PHARMACY"]),
        "institution_level": INT32,
        "region_code": TEXT,
        "doctor_id": OPT_TEXT,
        "pharmacist_id": OPT_TEXT,
        "department": OPT_TEXT,
        "visit_type": st.sampled_from(["OUTPATIENT", "INPATIENT", "PHARMACY"]),
        "admission_time": st.none() | INT64,
        "discharge_time": st.none() | INT64,
        "diagnosis_codes": st.lists(TEXT, max_size=4),
        "items": st.lists(items, max_size=5),
        "total_fen": INT64,
        "fund_paid_fen": INT64,
        "self_paid_fen": INT64,
        "channel": st.sampled_from(["CARD", "QR_CODE", "FACE"]),
        "face_verify_id": OPT_TEXT,
        "reversal_of": OPT_TEXT,
    }
)


@given(settlements)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_settlement_round_trip_is_identity(record: dict[str, Any]) -> None:
    codec = Codec.default()
    assert codec.decode(codec.encode("SettlementEvent", record), expect="SettlementEvent") == record


def mutate(rng: random.Random, data: bytes, donors: list[bytes]) -> bytes:
    buf = bytearray(data)
    if not buf:
        return rng.randbytes(rng.randint(0, 16))
    # Mostly keep the header so the mutation reaches the Avro decoder.
    lo = min(10, len(buf) - 1) if rng.random() < 0.85 else 0
    kind = rng.randrange(5)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 4)):
            buf[rng.randrange(lo, len(buf))] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        del buf[rng.randrange(lo, len(buf)) :]
    elif kind == 2:  # splice random bytes over a slice
        i = rng.randrange(lo, len(buf))
        j = min(len(buf), i + rng.randint(0, 16))
        buf[i:j] = rng.randbytes(rng.randint(0, 16))
    elif kind == 3:  # splice a slice of another valid record
        donor = rng.choice(donors)
        i, k = rng.randrange(lo, len(buf)), rng.randrange(len(donor))
        buf[i : i + rng.randint(0, 32)] = donor[k : k + rng.randint(1, 32)]
    else:  # byte set to an extreme value (varint lengths, union/enum indexes)
        buf[rng.randrange(lo, len(buf))] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])
    return bytes(buf)


def test_fuzz_mutated_encodings(codec: Codec) -> None:
    rng = random.Random(20260101)
    valid = all_encodings(codec) + [codec.encode_with_version(n, 1, v1_record(n)) for n in NAMES]
    outcomes: dict[type, int] = {}
    for _ in range(5_000):
        data = mutate(rng, rng.choice(valid), valid)
        kind = decode_or_codec_error(codec, data)
        outcomes[kind] = outcomes.get(kind, 0) + 1
    assert outcomes.get(CorruptRecordError, 0) > 1_000  # the body decoder was really exercised


def test_watermark_round_trip(codec: Codec) -> None:
    record = {"source": "input-3", "watermark_time": 1_795_000_000_000}
    data = codec.encode("Watermark", record)
    assert codec.decode(data, expect="Watermark") == record
    assert codec.current("Watermark").version == 1
