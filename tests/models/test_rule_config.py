"""Rule configurations as data (models/rules/configs): loading, validation, building, stamping."""

from __future__ import annotations

import json
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest

from models.catalogue import BY_ID
from models.detectors import DETECTOR_CLASSES
from models.rules.config import (
    CONFIG_DIR,
    ENUMS,
    RuleConfigError,
    available_configs,
    field_docs,
    load_rule_config,
    param_types,
    validate_file,
)
from models.runner import default_detectors
from schemas.codec import AVRO_DIR, Codec
from tests.models import factories as f

PLACES = [f.HOSP, f.HOSP2, f.CLINIC, f.PHARM, f.PHARM2, f.PHARM3, "H440305000020"]


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def visits(n: int, person: str = "RY1") -> list[dict]:
    """One person settling at n distinct institutions, two hours apart."""
    return [
        f.settlement(f.at(0, 8 + 2 * k), person=person, institution=PLACES[k]) for k in range(n)
    ]


def fired(config_name: str | Path, events: list[dict], detector_id: str) -> list:
    config = load_rule_config(config_name)
    alerts, _ = f.run(config.build(f.registry()), events)
    return [a for a in alerts if a.detector_id == detector_id]


# --- the shipped configurations ------------------------------------------------------------


def test_default_config_equals_the_dataclass_defaults() -> None:
    config = load_rule_config("default")
    assert list(config.rules) == [cls.id for cls in DETECTOR_CLASSES]
    for cls in DETECTOR_CLASSES:
        rule = config.rules[cls.id]
        assert rule.params == cls.params_class(), cls.id
        assert rule.enabled and rule.kind == BY_ID[cls.id].kind, cls.id


def test_default_config_writes_out_every_parameter() -> None:
    """The file is the reference: every field with a value (TOML has no null) is spelled out."""
    data = tomllib.loads((CONFIG_DIR / "default.toml").read_text("utf-8"))
    for cls in DETECTOR_CLASSES:
        expected = {"enabled", "kind"} | {
            fl.name for fl in fields(cls.params_class) if fl.default is not None
        }
        if cls.id == "split_charging":
            expected.add("packages_version")
        assert set(data[cls.id]) == expected, cls.id


def test_default_config_builds_what_default_detectors_builds() -> None:
    built = load_rule_config().build(f.registry())
    plain = default_detectors(f.registry())
    assert [d.id for d in built] == [d.id for d in plain]
    assert [d.params for d in built] == [d.params for d in plain]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", available_configs())
def test_every_shipped_config_is_valid(name: str) -> None:
    assert validate_file(CONFIG_DIR / f"{name}.toml") == []
    assert {"default", "candidate"} <= set(available_configs())


def test_candidate_extends_default_and_overrides_only_what_it_names() -> None:
    default, candidate = load_rule_config("default"), load_rule_config("candidate")
    assert candidate.extends == ("default",)
    assert candidate.version != default.version
    assert candidate.rules["cross_institution_frequency"].params.max_institutions == 6  # type: ignore[attr-defined]
    assert candidate.rules["card_burst"].params.min_settlements == 5  # type: ignore[attr-defined]
    changed = {i for i in default.rules if default.rules[i] != candidate.rules[i]}
    assert changed == {"cross_institution_frequency", "card_burst"}


def test_enum_parameters_follow_the_avro_symbols() -> None:
    def symbols(schema_file: str, field: str) -> list[str]:
        schema = json.loads((AVRO_DIR / schema_file).read_text("utf-8"))
        return next(x["type"]["symbols"] for x in schema["fields"] if x["name"] == field)

    assert list(ENUMS["visit_types"]) == symbols("settlement_event.avsc", "visit_type")
    assert list(ENUMS["purposes"]) == symbols("face_verify_event.avsc", "purpose")
    assert set(ENUMS["subject_types"]) < set(symbols("face_verify_event.avsc", "subject_type"))


def test_every_parameter_has_a_supported_type_and_the_thresholds_are_documented() -> None:
    for cls in DETECTOR_CLASSES:
        assert param_types(cls.params_class)  # raises on a type the loader cannot check
    docs = field_docs(DETECTOR_CLASSES[0].params_class)
    assert (
        docs["max_institutions"]
        == "Fires when the distinct institutions in the window exceed this."
    )
    assert "severity is 2, then 3" in docs["severity_steps"]


# --- extends, overrides, enabled, kind ----------------------------------------------------


def test_a_file_without_extends_takes_the_dataclass_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "mini", 'version = "1"\n[card_burst]\nmin_settlements = 2\n')
    config = load_rule_config(path)
    assert (config.name, config.version, config.label) == ("mini", "1", "mini@1")
    assert config.rules["card_burst"].params.min_settlements == 2  # type: ignore[attr-defined]
    group_visit = next(c for c in DETECTOR_CLASSES if c.id == "group_visit")
    assert config.rules["group_visit"].params == group_visit.params_class()


def test_extends_chains_and_the_nearest_override_wins(tmp_path: Path) -> None:
    write(
        tmp_path, "base", 'version = "1"\n[card_burst]\nmin_settlements = 6\nwindow_minutes = 5\n'
    )
    write(tmp_path, "mid", 'version = "2"\nextends = "base"\n[card_burst]\nmin_settlements = 7\n')
    leaf = write(tmp_path, "leaf", 'version = "3"\nextends = "mid"\n')
    config = load_rule_config(leaf)
    params = config.rules["card_burst"].params
    assert (params.min_settlements, params.window_minutes) == (7, 5.0)  # type: ignore[attr-defined]
    assert config.extends == ("mid", "base") and config.version == "3"


def test_extends_falls_back_to_the_shipped_configs(tmp_path: Path) -> None:
    path = write(tmp_path, "mine", 'version = "x1"\nextends = "candidate"\n')
    rule = load_rule_config(path).rules["cross_institution_frequency"]
    assert rule.params.max_institutions == 6  # type: ignore[attr-defined]


def test_disabled_detectors_are_not_built(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "quiet",
        'version = "1"\nextends = "default"\n[cross_institution_frequency]\nenabled = false\n',
    )
    config = load_rule_config(path)
    ids = [d.id for d in config.build(f.registry())]
    assert "cross_institution_frequency" not in ids and len(ids) == len(DETECTOR_CLASSES) - 1
    assert fired(path, visits(7), "cross_institution_frequency") == []
    assert len(fired("default", visits(7), "cross_institution_frequency")) == 1


def test_kind_and_severity_come_from_the_config(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "promoted",
        'version = "1"\nextends = "default"\n'
        '[cross_institution_frequency]\nkind = "violation"\nseverity_steps = [1.1, 1.5]\n',
    )
    (alert,) = fired(path, visits(6), "cross_institution_frequency")
    assert alert.kind == "violation" and alert.severity == 2  # 6/5 = 1.2: over 1.1, under 1.5
    (plain,) = fired("default", visits(6), "cross_institution_frequency")
    assert plain.kind == "suspicious" and plain.severity == 1


def test_a_stricter_threshold_fires_less() -> None:
    six, seven = visits(6), visits(7)
    assert len(fired("default", six, "cross_institution_frequency")) == 1
    assert fired("candidate", six, "cross_institution_frequency") == []
    assert len(fired("candidate", seven, "cross_institution_frequency")) == 1
    burst = [f.settlement(f.at(1, 10, m), person="RY9", institution=f.PHARM) for m in range(4)]
    assert len(fired("default", burst, "card_burst")) == 1
    assert fired("candidate", burst, "card_burst") == []


# --- alerts record the configuration -------------------------------------------------------


def test_alerts_carry_the_config_label() -> None:
    alerts, _ = f.run(load_rule_config("candidate").build(f.registry()), visits(7))
    assert alerts and {a.config_version for a in alerts} == {"candidate@2026.12.2-rc1"}
    split = [
        f.settlement(
            f.at(0, 9),
            items=[f.exam("250305002"), f.exam("250305003"), f.exam("250305004")],
        )
    ]
    (alert,) = fired("default", split, "split_charging")
    assert alert.config_version == "default@2026.12.2"  # the config pins the package library


def test_detectors_built_without_a_config_are_unchanged() -> None:
    alerts, _ = f.run(default_detectors(f.registry()), visits(6))
    assert {a.config_version for a in alerts if a.detector_id != "split_charging"} == {None}


def test_the_config_version_survives_the_wire_and_old_alerts_decode_without_one() -> None:
    codec = Codec.default()
    (alert,) = fired("candidate", visits(7), "cross_institution_frequency")
    record = alert.to_record()
    assert codec.decode(codec.encode("Alert", record), expect="Alert") == record
    old = {k: v for k, v in record.items() if k != "config_version"}
    decoded = codec.decode(codec.encode_with_version("Alert", 1, old), expect="Alert")
    assert decoded == {**old, "config_version": None}


# --- errors name the file, the rule and the field -------------------------------------------

ERRORS = [
    ("cross_institution_frequency", "max_institutions = -2", "expected int >= 1, got -2"),
    ("cross_institution_frequency", "window_hours = -24", "expected number > 0, got -24"),
    ("card_burst", 'min_settlements = "four"', 'expected int, got "four"'),
    ("card_burst", "min_settlements = 4.0", "expected int, got 4.0"),
    ("card_burst", "min_setlements = 4", "unknown field (did you mean 'min_settlements'?)"),
    ("duplicate_billing", "severity_level = 4", "expected int in 1..3, got 4"),
    ("licence_lending", "severity_two_places = 0", "expected int in 1..3, got 0"),
    ("card_burst", 'kind = "bad"', 'expected "violation" or "suspicious", got "bad"'),
    ("card_burst", 'enabled = "yes"', 'expected true or false, got "yes"'),
    ("impersonation", "min_match_score = 1.5", "expected number in 0..1, got 1.5"),
    ("drug_swap", 'visit_types = ["ER"]', "expected a non-empty array of OUTPATIENT, INPATIENT"),
    ("maintenance_window", 'windows = [[7, "01:00", "04:00"]]', "expected [[weekday 0..6"),
    ("card_burst", "severity_steps = [2.0, 1.5]", "expected [step2, step3] with 1 <= step2"),
    ("card_burst", "severity_steps = [2.0]", "expected [number, number], got [2.0]"),
    ("odd_hour_sales", "start_hour = 6", "expected < end_hour (5), got 6"),
    ("split_charging", 'packages_version = "1.9"', "expected the library's version '2026.11.1'"),
    ("split_charging", 'packages_path = "missing.toml"', "expected an existing file"),
]


@pytest.mark.parametrize(("rule", "line", "message"), ERRORS)
def test_errors_name_the_file_the_rule_and_the_field(
    tmp_path: Path, rule: str, line: str, message: str
) -> None:
    path = write(tmp_path, "broken", f'version = "1"\n[{rule}]\n{line}\n')
    with pytest.raises(RuleConfigError) as info:
        load_rule_config(path)
    assert len(info.value.errors) == 1, info.value.errors
    field = line.split(" =")[0]
    assert info.value.errors[0].startswith(f"{path}: [{rule}] {field}: {message}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[card_brust]\nmin_settlements = 4\n", "[card_brust]: unknown detector id (did you mean"),
        ('colour = "red"\n', "colour: unknown key"),
    ],
)
def test_unknown_detectors_and_keys_are_named(tmp_path: Path, body: str, message: str) -> None:
    path = write(tmp_path, "broken", f'version = "1"\n{body}')
    (error,) = validate_file(path)
    assert error.startswith(f"{path}: {message}")


def test_the_example_of_the_issue_reads_exactly_so(tmp_path: Path) -> None:
    body = "[cross_institution_frequency]\nmax_institutions = -2\n"
    path = write(tmp_path, "strict", f'version = "1"\nextends = "default"\n{body}')
    assert validate_file(path) == [
        f"{path}: [cross_institution_frequency] max_institutions: expected int >= 1, got -2"
    ]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "many",
        '[card_burst]\nmin_settlements = 0\nwindow_minutes = "x"\n[nope]\n',
    )
    errors = validate_file(path)
    assert len(errors) == 4 and all(e.startswith(f"{path}: ") for e in errors)
    assert any("version: required" in e for e in errors)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'version = "1 2"\n',
            'version: expected a string of letters, digits and . + _ -, got "1 2"',
        ),
        ("version = 3\n", "version: expected a string"),
        ('version = "1"\n[card_burst\n', "invalid TOML"),
        ('version = "1"\nextends = "nowhere"\n', "extends: no configuration 'nowhere'"),
    ],
)
def test_file_level_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "top", text)
    (error,) = validate_file(path)
    assert error.startswith(f"{path}: {message}")


def test_an_error_in_a_parent_names_the_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent", 'version = "1"\n[card_burst]\nwindow_minutes = 0\n')
    child = write(tmp_path, "child", 'version = "2"\nextends = "parent"\n')
    assert validate_file(child) == [
        f"{parent}: [card_burst] window_minutes: expected number > 0, got 0"
    ]


def test_an_extends_cycle_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, "a", 'version = "1"\nextends = "b"\n')
    b = write(tmp_path, "b", 'version = "1"\nextends = "a"\n')
    (error,) = validate_file(b)
    assert error == f"{b}: extends: cycle b -> a -> b"


def test_an_unknown_config_name_lists_the_available_ones() -> None:
    with pytest.raises(RuleConfigError, match=r"no such rule configuration \(available: .*default"):
        load_rule_config("no-such-config")


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    library = (CONFIG_DIR.parent / "packages.toml").read_text("utf-8")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "packages.toml").write_text(library.replace("2026.11.1", "9.9"), "utf-8")
    path = write(
        tmp_path,
        "own",
        'version = "1"\n[split_charging]\npackages_path = "lib/packages.toml"\n'
        'packages_version = "9.9"\n',
    )
    rule = load_rule_config(path).rules["split_charging"]
    assert rule.params.packages_path == str(tmp_path / "lib" / "packages.toml")  # type: ignore[attr-defined]
