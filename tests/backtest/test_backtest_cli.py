"""`fundwatch backtest` arguments and the embedded store's lock."""

from __future__ import annotations

import pytest

from streams.backtest.cli import run_from_args
from streams.cli import build_parser
from streams.config import Settings
from streams.store.client import Store


def test_arguments_parse() -> None:
    args = build_parser().parse_args(
        [
            "backtest",
            "--from",
            "2026-11-02",
            "--to",
            "2026-11-09T12:00",
            "--config",
            "candidate",
            "--baseline",
            "default",
            "--source",
            "clickhouse",
        ]
    )
    assert (args.from_, args.to, args.config, args.baseline) == (
        "2026-11-02", "2026-11-09T12:00", "candidate", "default")  # fmt: skip
    assert (args.source, args.run_id, args.report, args.top_k) == ("clickhouse", None, None, 20)
    assert args.workers is None  # FUNDWATCH_BACKTEST_WORKERS decides
    args = build_parser().parse_args(["backtest", "--from", "2026-11-02", "--to", "2026-11-03",
                                      "--workers", "3"])  # fmt: skip
    assert args.workers == 3


def test_a_negative_worker_count_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["backtest", "--from", "2026-11-02", "--to", "2026-11-03", "--workers", "-1"]
    )
    assert run_from_args(args, Settings()) == 2
    assert "--workers" in capsys.readouterr().err


def test_workers_and_state_reach_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.backtest import cli as backtest_cli

    class NoStore:
        def __init__(self, settings: Settings) -> None: ...
        def open(self) -> None: ...
        def ensure_schema(self) -> None: ...
        def close(self) -> None: ...

    seen: list[Settings] = []

    def stop(settings: Settings, *rest: object) -> None:
        seen.append(settings)
        raise RuntimeError("stopped before judging")

    monkeypatch.setattr("streams.store.client.Store", NoStore)
    monkeypatch.setattr(backtest_cli, "_run_with_progress", stop)
    argv = ["backtest", "--from", "2026-11-02", "--to", "2026-11-03"]
    assert run_from_args(build_parser().parse_args(argv), Settings()) == 1
    assert (seen[-1].backtest_state, seen[-1].backtest_workers) == ("objects", 0)  # defaults
    args = build_parser().parse_args([*argv, "--state", "packed", "--workers", "1"])
    assert run_from_args(args, Settings()) == 1
    assert (seen[-1].backtest_state, seen[-1].backtest_workers) == ("packed", 1)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--state", "compressed"])


def test_a_bad_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["backtest", "--from", "yesterday", "--to", "2026-11-09"])
    assert run_from_args(args, Settings()) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err


@pytest.mark.integration
def test_a_store_held_by_another_owner_fails_with_what_to_do(
    _store_engine: object, store_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The session's store fixture holds the chDB lock, as a live `fundwatch run` would."""
    args = build_parser().parse_args(["backtest", "--from", "2026-11-02", "--to", "2026-11-09"])
    assert run_from_args(args, store_settings) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "in use by process" in err
    assert "FUNDWATCH_CLICKHOUSE_URL" in err


@pytest.mark.integration
def test_the_latest_review_of_an_alert_decides(store: Store) -> None:
    from streams.backtest.run import load_reviews

    assert load_reviews(store) == {}
    rows = [
        ("r1", "a1", "card_burst", "confirmed", "analyst1", 1_000, "", 0, 0, 1, 1_000),
        ("r2", "a1", "card_burst", "rejected", "analyst2", 2_000, "appeal", 0, 1, 1, 2_000),
        ("r3", "a2", "card_burst", "confirmed", "analyst1", 1_500, "", 0, 2, 1, 1_500),
    ]
    store.insert_rows("reviews", rows)
    assert load_reviews(store) == {"a1": "rejected", "a2": "confirmed"}
