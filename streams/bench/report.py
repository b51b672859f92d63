"""The benchmark's results: one JSON document (`.local/bench/latest.json` and a timestamped
copy) and rich tables."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REQUIRED_KEYS = (
    "floor_eps",
    "detectors_eps",
    "live_eps_per_worker",
    "live_p50_latency_s",
    "live_p99_latency_s",
    "replay_eps",
    "bytes_per_person",
)

TARGETS = {
    "live_eps_per_worker": ">= 5,000 ev/s per worker, every detector on",
    "live_p99_latency_s": "<= 2 s at an offered 2,000 ev/s",
    "replay_eps": ">= 25% of the floor",
    "bytes_per_person": "<= 300 bytes per tracked person",
}


def ratio(value: float | None, floor: float | None) -> float | None:
    if value is None or not floor:
        return None
    return value / floor


def write_json(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write latest.json and bench-<UTC time>.json; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str) + "\n"
    latest = out_dir / "latest.json"
    copy = out_dir / f"bench-{stamp}.json"
    copy.write_text(text, encoding="utf-8")
    latest.write_text(text, encoding="utf-8")
    return latest, copy


def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    if value is None:
        return "-"
    return fmt.format(value)


def print_tables(result: dict[str, Any], console: Console | None = None) -> None:
    """The headline table, the detectors sorted by cost, the state and the latency parts."""
    console = console or Console()
    floor = result.get("floor_eps")
    main = Table(title=f"FundWatch bench ({result['mode']}: {result['workload']['summary']})")
    main.add_column("path")
    main.add_column("figure", justify="right")
    main.add_column("× floor", justify="right")
    main.add_column("what was measured")
    replay_packed = [
        (
            "replay, packed",
            result["replay_eps_packed"],
            "ev/s",
            "the states packed as the worker keeps them (FUNDWATCH_BACKTEST_STATE=packed); a "
            f"process held {_num(result.get('replay_private_mb_packed'))} MB of its own "
            f"against {_num(result.get('replay_private_mb'))} as objects",
        )
    ] if result.get("replay_eps_packed") is not None else []  # fmt: skip
    rows = [
        ("floor", floor, "ev/s", "consume + fastavro decode (confluent-kafka), nothing else"),
        (
            "detectors",
            result.get("detectors_eps"),
            "ev/s",
            "DetectorSet (all detectors + aggregator) over pre-decoded events, in-process",
        ),
        (
            "worker logic",
            result.get("processor_eps"),
            "ev/s",
            "BatchProcessor over a dict table: decode, route, reorder, detect, JSON state",
        ),
        ("replay", result.get("replay_eps"), "ev/s", result.get("replay_note", "")),
        *(
            (f"replay, {n} process", eps, "ev/s", "the same judging in one process")
            for n, eps in result.get("replay_eps_by_workers", {}).items()
            if n != str(result.get("replay_workers", 1))
        ),
        *replay_packed,
        (
            "live worker",
            result.get("live_eps_per_worker"),
            "ev/s",
            "one worker subprocess at max offered load, input records committed / s",
        ),
        (
            "faust floor",
            result.get("faust_floor_eps"),
            "ev/s",
            "faust alone at max load: the worker's consumer set-up acknowledging every record",
        ),
    ]
    for name, value, unit, note in rows:
        r = ratio(value, floor) if name != "floor" else 1.0
        main.add_row(name, f"{_num(value)} {unit}", _num(r, "{:.2f}"), note)
    main.add_row(
        "latency p50 / p99",
        f"{_num(result.get('live_p50_latency_s'), '{:.2f}')} / "
        f"{_num(result.get('live_p99_latency_s'), '{:.2f}')} s",
        "",
        result.get("latency_note", ""),
    )
    packed = result.get("packed") or {}
    main.add_row(
        "state / person",
        f"{_num(result.get('bytes_per_person'))} B",
        "",
        f"worker_state={result.get('state_mode', 'objects')}: the figure of the configured mode",
    )
    main.add_row(
        "  as objects",
        f"{_num(result.get('bytes_per_person_objects'))} B",
        "",
        f"resident Python objects; JSON (changelog) {_num(result.get('json_bytes_per_person'))} B",
    )
    main.add_row(
        "  packed",
        f"{_num(result.get('bytes_per_person_packed'))} B",
        "",
        f"PackedTable, {packed.get('hot_groups', '?')} hot groups: blob "
        f"{_num(packed.get('blob_bytes_per_person'))} B; worker logic "
        f"{_num(packed.get('processor_eps'))} ev/s, "
        f"{_num(packed.get('cpu_vs_objects'), '{:.2f}')}x the CPU, alerts "
        f"{'equal' if packed.get('alerts_match') else 'DIFFER'}",
    )
    main.add_row(
        "changelog / event",
        f"{_num(result.get('changelog_bytes_per_event'))} B",
        "",
        "JSON of the states a batch changed, per input event",
    )
    console.print(main)

    det = Table(title="detectors by cost (µs per stream event, profile=True)")
    det.add_column("detector")
    det.add_column("µs/event", justify="right")
    det.add_column("share", justify="right")
    for row in result.get("detectors", []):
        det.add_row(row["id"], f"{row['us_per_event']:.2f}", f"{row['share']:.0%}")
    console.print(det)

    st = Table(
        title="detector state per stage: as objects (detectors, before the final flush) and "
        "packed (the worker logic's table at its end)"
    )
    columns = ("stage", "entities", "keys", "objects B/entity", "JSON B/entity", "packed B/entity")
    for col in columns:
        st.add_column(col, justify="right" if col != "stage" else "left")
    packed_state = packed.get("state", {})
    for name, s in result.get("state", {}).items():
        p = packed_state.get(name)
        st.add_row(
            name,
            f"{s['entities']:,}",
            f"{s['keys']:,}",
            f"{s['resident_bytes_per_entity']:,.0f}",
            f"{s['json_bytes_per_entity']:,.0f}",
            f"{p['resident_bytes_per_entity']:,.0f}" if p else "-",
        )
    console.print(st)

    live = Table(title="live phases (produce -> alert stored in ClickHouse)")
    for col in (
        "phase",
        "offered",
        "events",
        "worker ev/s",
        "p50 s",
        "p99 s",
        "detect p99 s",
        "store p99 s",
        "alerts joined/timer/stored",
    ):
        live.add_column(col, justify="right" if col != "phase" else "left")
    for p in result.get("live", []):
        lat = p["latency"]
        live.add_row(
            p["phase"],
            "max" if p["offered_eps"] is None else f"{p['offered_eps']:,.0f}",
            f"{p['events']:,}",
            _num(p["worker_eps"]),
            _num(lat["p50_s"], "{:.2f}"),
            _num(lat["p99_s"], "{:.2f}"),
            _num(lat["detect_p99_s"], "{:.2f}"),
            _num(lat["store_p99_s"], "{:.2f}"),
            f"{lat['joined']}/{lat['timer']}/{p['alerts_stored']}",
        )
    console.print(live)
