"""`fundwatch bench`: every measured path in one run, on this machine, against the configured
broker and ClickHouse. See docs/performance.md for what each figure means."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from streams.config import Settings

log = logging.getLogger(__name__)

QUICK = {"preset": "tiny", "days": 14, "rate_seconds": 30.0, "max_events": 20_000}
PROFILE_EVENTS = 100_000  # a profile needs proportions, not the whole world
FULL = {"preset": "city", "days": 1, "rate_seconds": 60.0, "max_events": 100_000}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny world (two weeks, ~13k events): under two minutes",
    )
    parser.add_argument("--preset", default=None, help="world size (default: city; quick: tiny)")
    parser.add_argument("--days", type=int, default=None, help="simulated days (city: 1)")
    parser.add_argument("--events", type=int, default=None, help="cap the world's events")
    parser.add_argument("--seed", type=int, default=7, help="simulation seed (default 7)")
    parser.add_argument(
        "--rate", type=float, default=2000.0, help="offered load of the fixed-rate live phase"
    )
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=None,
        help="length of the fixed-rate phase (default 60; quick 30, or the whole world)",
    )
    parser.add_argument(
        "--max-events",
        type=int,
        default=None,
        help="events of the max-rate live phase (default 100,000; quick 20,000)",
    )
    parser.add_argument("--no-live", action="store_true", help="in-process paths only")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="also run the max-rate phase with this many worker processes in one group "
        "(phase max_<n>w; default 1: not run)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile the detectors, the worker logic and a live worker with pyinstrument "
        "(.local/bench/profile-*.txt)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output dir (.local/bench)")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from streams.stack import local_kafka

    console = Console(stderr=True)
    if settings.is_local_kafka:
        local_kafka.ensure_broker(settings)
    result = run_bench(args, settings, console.print)
    from streams.bench.report import print_tables, write_json

    out_dir = (args.out or settings.data_dir / "bench").resolve()
    latest, copy = write_json(result, out_dir)
    print_tables(result, Console())
    console.print(f"written: {latest} and {copy.name}")
    if result.get("live_error"):
        console.print(f"[red]the live phases failed:[/red] {result['live_error']}")
        return 1
    return 0


def _param(args: argparse.Namespace, name: str) -> Any:
    value = getattr(args, name)
    if value is not None:
        return value
    return (QUICK if args.quick else FULL)[name]


def run_bench(args: argparse.Namespace, settings: Settings, say: Any = print) -> dict[str, Any]:
    """Every phase; returns the result document (see report.REQUIRED_KEYS)."""
    from streams.bench import inprocess as ip
    from streams.bench.profiles import profile_call
    from streams.bench.report import ratio
    from streams.bench.workload import BenchTopics, Workload, new_run_id
    from streams.simulator.output import produce_to_kafka
    from streams.worker.build import tune_gc

    tune_gc()  # the in-process phases collect as the worker does

    out_dir = (args.out or settings.data_dir / "bench").resolve()  # chdb:// needs a full path
    run_id = new_run_id()
    work = out_dir / f"run-{run_id}"
    preset, days = _param(args, "preset"), _param(args, "days")
    started = time.monotonic()
    say(
        f"[bold]bench[/bold] {'quick' if args.quick else 'full'}: preset {preset}, {days} days, "
        f"seed {args.seed}, run {run_id}"
    )
    workload = Workload.build(preset, days, args.seed, args.events, work)
    summary = f"{preset} preset, {days} d, {workload.events:,} events, seed {args.seed}"
    say(f"world: {summary} (built in {workload.build_s:.1f}s)")
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "run_id": run_id,
        "machine": {"cpus": _cpus(), "python": sys.version.split()[0]},
        "workload": {
            "preset": preset,
            "days": days,
            "seed": args.seed,
            "events": workload.events,
            "summary": summary,
        },
        "kafka": settings.kafka_bootstrap,
        "store": "embedded chDB" if settings.is_embedded_store else "ClickHouse server",
        "loadavg_start": _loadavg(),
    }
    profiles: dict[str, list[tuple[str, float]]] = {}
    replay_topics = BenchTopics(settings, run_id, "replay", work / "replay").create()
    try:
        t0 = time.monotonic()
        produced = produce_to_kafka(replay_topics.settings, workload.records)
        say(f"produced {produced.total_events:,} events in {time.monotonic() - t0:.1f}s")

        floor = ip.measure_floor(replay_topics.settings)
        result["floor_eps"] = floor.eps
        say(f"floor: {floor.eps:,.0f} ev/s ({floor.events:,} events, {floor.control:,} watermarks)")

        # The replay before the in-process phases: its processes are forked from this one, and
        # after those phases they would inherit gigabytes of freed heap and copy it on write
        # (29,000 against 32,400 ev/s on the city day, 496 against 361 MB each of their own);
        # `fundwatch backtest` forks from a process that holds the registry and little else.
        engine = ip.run_backtest_engine(replay_topics.settings, workload.registry)
        result["replay_eps"] = engine.eps
        result["replay_workers"] = engine.workers
        result["replay_state"] = settings.backtest_state
        result["replay_note"] = (
            f"fundwatch backtest's judging (Kafka read + the worker's batch logic, the "
            f"configured rules, states as {settings.backtest_state}) on {engine.workers} "
            f"process(es), without its store writes"
        )
        result["replay_alerts"] = engine.alerts
        result["replay_private_mb"] = _mb(engine.private_bytes)
        say(
            f"replay (backtest engine, {engine.workers} processes, states as "
            f"{settings.backtest_state}): {engine.eps:,.0f} ev/s ({engine.alerts} alerts)"
        )
        if settings.backtest_state == "objects":  # and in the worker's packed form: the trade
            packed_settings = replay_topics.settings.model_copy(update={"backtest_state": "packed"})
            packed = ip.run_backtest_engine(packed_settings, workload.registry)
            result["replay_eps_packed"] = packed.eps
            result["replay_private_mb_packed"] = _mb(packed.private_bytes)
            result["replay_alerts_match_packed"] = packed.alert_ids == engine.alert_ids
            say(f"replay, states packed: {packed.eps:,.0f} ev/s ({packed.alerts} alerts)")
        by_workers = {str(engine.workers): engine.eps}
        if engine.workers > 1:  # and in one process: how the replay grows with processes
            one_settings = replay_topics.settings.model_copy(update={"backtest_workers": 1})
            one = ip.run_backtest_engine(one_settings, workload.registry)
            by_workers["1"] = one.eps
            result["replay_alerts_match_1"] = one.alert_ids == engine.alert_ids
            say(f"replay in one process: {one.eps:,.0f} ev/s ({one.alerts} alerts)")
        result["replay_eps_by_workers"] = {k: by_workers[k] for k in sorted(by_workers, key=int)}

        raw = ip.read_raw(replay_topics.settings)
        events = ip.decode_events(raw)
        det = ip.run_detectors(events, workload.registry)
        result["detectors_eps"] = det.eps
        result["detectors_cpu_s"] = det.cpu_s
        result["detectors_wall_s"] = det.elapsed_s
        result["detectors"] = [
            {"id": d, "us_per_event": us, "share": share} for d, us, share in det.per_detector()
        ]
        say(f"detectors: {det.eps:,.0f} ev/s, {det.alerts} alerts before the final flush")

        assert det.detector_set is not None
        state = ip.measure_state(det.detector_set.store)  # type: ignore[arg-type]
        result["state"] = {s.stage: s.as_dict() for s in state.stages.values()}
        result["state_by_detector"] = [
            {"id": d, "keys": k, "resident_bytes": r, "json_bytes": j, "resident_per_key": r / k}
            for d, k, r, j in state.detectors
            if k
        ]
        person = state.stages.get("person")
        result["bytes_per_person_objects"] = person.bytes_per_entity if person else None
        result["json_bytes_per_person"] = person.json_per_entity if person else None
        result["state_rss_delta_bytes"] = det.rss_delta_bytes
        say(f"state as objects: {person.bytes_per_entity if person else 0:,.0f} B per person")
        immediate = det.immediate
        det.detector_set = None  # free the state before the next phases

        proc = ip.run_processor(
            raw,
            workload.registry,
            settings.worker_batch_size,
            settings.topics.settlement.partitions,
        )
        result["processor_eps"] = proc.eps
        result["processor_cpu_s"] = proc.cpu_s
        result["processor_wall_s"] = proc.elapsed_s
        result["changelog_bytes_per_event"] = proc.changelog_bytes_per_event
        result["changelog_writes_per_event"] = (
            proc.changelog_writes / proc.events if proc.events else None
        )
        say(
            f"worker logic in-process: {proc.eps:,.0f} ev/s, "
            f"{proc.changelog_bytes_per_event:,.0f} changelog B/event"
        )
        result["packed"] = _packed_phase(raw, workload.registry, settings, proc, say)
        result["bytes_per_person_packed"] = result["packed"]["bytes_per_person"]
        result["state_mode"] = settings.worker_state  # the live worker's (the replay's: above)
        result["bytes_per_person"] = result[f"bytes_per_person_{settings.worker_state}"]

        if args.profile:
            say("profiling the detectors and the worker logic (pyinstrument)...")
            profiles["detectors"] = profile_call(
                out_dir / "profile-detectors.txt",
                lambda: ip.run_detectors(events[:PROFILE_EVENTS], workload.registry),
            )
            profiles["worker_logic"] = profile_call(
                out_dir / "profile-worker-logic.txt",
                lambda: ip.run_processor(
                    raw[:PROFILE_EVENTS],
                    workload.registry,
                    settings.worker_batch_size,
                    settings.topics.settlement.partitions,
                ),
            )
        raw, events = [], []  # free them before the live phases
    finally:
        replay_topics.delete()

    result["live"] = []
    for key in ("live_eps_per_worker", "live_p50_latency_s", "live_p99_latency_s"):
        result[key] = None
    if not args.no_live:
        try:
            _live_phases(args, settings, run_id, workload, immediate, out_dir, work, result,
                         profiles, say)  # fmt: skip
        except Exception as exc:  # keep the in-process figures: they are written all the same
            log.exception("live phases failed")
            result["live_error"] = f"{type(exc).__name__}: {exc}"
    if profiles:
        result["profiles"] = {  # sampled seconds per package, most first
            name: [[pkg, round(t, 3)] for pkg, t in packages[:15]]
            for name, packages in profiles.items()
        }
    floor_eps = result["floor_eps"]
    result["vs_floor"] = {
        k: ratio(result.get(k), floor_eps)
        for k in (
            "detectors_eps",
            "processor_eps",
            "replay_eps",
            "live_eps_per_worker",
            "faust_floor_eps",
        )
    }
    result["elapsed_s"] = time.monotonic() - started
    result["loadavg_end"] = _loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return result


def _mb(n: int | None) -> float | None:
    return None if n is None else n / 1_048_576


def _packed_phase(
    raw: list[Any], registry: Any, settings: Settings, objects: Any, say: Any
) -> dict[str, Any]:
    """The worker logic again over the packed table (`worker_state=packed`): its speed against
    the objects run's, its alerts (they must equal the objects run's) and what it holds per
    stage; `json_bytes` of a stage is then the size of its compressed blobs."""
    from streams.bench import inprocess as ip
    from streams.worker.state_table import make_state_table

    hot = settings.worker_state_hot_groups
    packed = ip.run_processor(
        raw,
        registry,
        settings.worker_batch_size,
        settings.topics.settlement.partitions,
        make_state_table(settings.model_copy(update={"worker_state": "packed"})),
    )
    stages = packed.state or {}
    person = stages.get("person")
    out = {
        "hot_groups": hot,
        "processor_eps": packed.eps,
        "processor_cpu_s": packed.cpu_s,
        "cpu_vs_objects": packed.cpu_s / objects.cpu_s if objects.cpu_s else None,
        "alerts_match": packed.alerts_by_detector == objects.alerts_by_detector,
        "loads_per_event": packed.loads / packed.events if packed.events else None,
        "packs_per_event": packed.packs / packed.events if packed.events else None,
        "bytes_per_person": person.bytes_per_entity if person else None,
        "blob_bytes_per_person": person.json_per_entity if person else None,
        "state": {s.stage: s.as_dict() for s in stages.values()},
    }
    say(
        f"worker logic, packed state ({hot} hot groups): {packed.eps:,.0f} ev/s, "
        f"{out['bytes_per_person'] or 0:,.0f} B per person"
        + ("" if out["alerts_match"] else " [bold red]ALERTS DIFFER[/bold red]")
    )
    return out


def _live_phases(
    args: argparse.Namespace,
    settings: Settings,
    run_id: str,
    workload: Any,
    immediate: set[str],
    out_dir: Path,
    work: Path,
    result: dict[str, Any],
    profiles: dict[str, list[tuple[str, float]]],
    say: Any,
) -> None:
    """The live phases: at the offered rate, at max, and (with --profile) under pyinstrument."""
    from streams.bench.live import run_live
    from streams.bench.profiles import report_from_file
    from streams.store.client import Store

    store_settings = settings
    if settings.is_embedded_store:  # an engine of its own: never the one `run` holds
        store_settings = settings.model_copy(update={"data_dir": out_dir / "store"})
    store = Store(store_settings).open()
    try:
        rate_events = min(workload.events, int(args.rate * _param(args, "rate_seconds")))
        max_events = min(workload.events, _param(args, "max_events"))
        phases: list[tuple[str, int, float | None]] = [
            ("rate", rate_events, args.rate),
            ("max", max_events, None),
            ("faust_floor", max_events, None),  # faust alone: no decode, no work (bare_faust)
        ]
        if args.workers > 1:  # the group's throughput with more worker processes
            phases.append((f"max_{args.workers}w", max_events, None))
        if args.profile:  # a phase of its own: the profiler must not slow the figures
            phases.append(("profile", min(max_events, 20_000), None))
        for phase, n, rate in phases:
            session = work / "live-worker.pyisession"
            profile = session if phase == "profile" else None
            live = run_live(
                settings,
                run_id,
                phase,
                workload,
                n,
                rate,
                store,
                work,
                immediate,
                say=say,
                profile_path=profile,
                bare=phase == "faust_floor",
                workers=args.workers if phase.startswith("max_") else 1,
            )
            if profile is not None:
                profiles["live_worker"] = report_from_file(
                    session, out_dir / "profile-live-worker.txt"
                )
            doc = dataclasses.asdict(live)
            doc["produced_eps"] = live.produced_eps
            result["live"].append(doc)
            say(
                f"live {phase}: worker {live.worker_eps:,.0f} ev/s, latency p50 "
                f"{live.latency.p50_s or 0:.2f}s p99 {live.latency.p99_s or 0:.2f}s "
                f"({live.latency.joined} alerts joined)"
            )
    finally:
        store.close()
    by = {p["phase"]: p for p in result["live"]}
    result["live_eps_per_worker"] = by["max"]["worker_eps"]
    result["faust_floor_eps"] = by["faust_floor"]["worker_eps"]
    if args.workers > 1:
        result["live_eps_workers"] = {
            "1": by["max"]["worker_eps"],
            str(args.workers): by[f"max_{args.workers}w"]["worker_eps"],
        }
    result["live_p50_latency_s"] = by["rate"]["latency"]["p50_s"]
    result["live_p99_latency_s"] = by["rate"]["latency"]["p99_s"]
    result["live_offered_eps"] = args.rate
    result["latency_note"] = (
        f"at an offered {args.rate:,.0f} ev/s: produce() -> the sink's ClickHouse insert of "
        "the alert returned (alerts raised by their triggering event; timer alerts apart)"
    )


def _loadavg() -> list[float]:
    """1/5/15-minute load averages: other processes on the machine skew the figures."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cpus() -> int:
    import os

    return os.cpu_count() or 0
