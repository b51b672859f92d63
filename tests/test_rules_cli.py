"""`fundwatch rules list|show|validate`: output and exit codes (main called with argv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.detectors import DETECTOR_CLASSES
from models.rules.config import CONFIG_DIR
from streams.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["rules", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_detector_of_the_default_config(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(["list"], capsys)
    assert code == 0
    assert out.startswith("rule configuration default@2026.12.2 ")
    assert (
        "cross_institution_frequency  suspicious  graded x1.5/x2  yes      window_hours=24" in out
    )
    assert "max_institutions=5" in out and "max_events" not in out  # state bounds left out
    n = len(DETECTOR_CLASSES)  # the 19 rules and the online models
    assert out.rstrip().endswith(f"{n} of {n} detectors enabled")


def test_list_follows_the_setting_and_the_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FUNDWATCH_RULES_CONFIG", "candidate")
    code, out, _ = run(["list"], capsys)
    assert code == 0 and "candidate@2026.12.2-rc1" in out and "extends default" in out
    assert "max_institutions=6" in out
    quiet = tmp_path / "quiet.toml"
    quiet.write_text('version = "1"\nextends = "default"\n[card_burst]\nenabled = false\n')
    code, out, _ = run(["list", "--config", str(quiet)], capsys)
    n = len(DETECTOR_CLASSES)
    assert code == 0 and f"{n - 1} of {n} detectors enabled" in out
    assert next(ln for ln in out.splitlines() if ln.startswith("card_burst ")).split()[4] == "no"


def test_show_prints_values_defaults_and_meanings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["show", "cross_institution_frequency", "-c", "candidate"], capsys)
    assert code == 0
    assert "max_institutions = 6    (default 5)" in out
    assert "    Fires when the distinct institutions in the window exceed this." in out
    assert 'kind = "suspicious"' in out and "window_hours = 24.0\n" in out


def test_show_an_unknown_detector_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["show", "nope"], capsys)
    assert code == 1 and "unknown detector id 'nope'" in err


def test_an_unknown_config_fails_with_the_available_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(["list", "--config", "nope"], capsys)
    assert code == 1 and "no such rule configuration (available: candidate, default" in err


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(CONFIG_DIR / "default.toml"), str(CONFIG_DIR / "candidate.toml")]
    code, out, err = run(["validate", *files], capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == [
        f"{files[0]}: ok (default@2026.12.2)",
        f"{files[1]}: ok (candidate@2026.12.2-rc1)",
    ]


def test_validate_prints_every_error_and_exits_1(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "strict.toml"
    bad.write_text(
        'version = "1"\nextends = "default"\n'
        "[cross_institution_frequency]\nmax_institutions = -2\n[card_burst]\nseverity_steps = 2\n"
    )
    code, out, err = run(["validate", str(CONFIG_DIR / "default.toml"), str(bad)], capsys)
    assert code == 1 and "ok (default@2026.12.2)" in out
    assert err.splitlines() == [
        f"{bad}: [cross_institution_frequency] max_institutions: expected int >= 1, got -2",
        f"{bad}: [card_burst] severity_steps: expected [number, number], got 2",
    ]


def test_help_describes_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["rules", "--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    assert all(word in out for word in ("list", "show", "validate", "FUNDWATCH_RULES_CONFIG"))
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "list, show or validate the rule configurations" in capsys.readouterr().out
