"""`fundwatch simulate`: generate a synthetic region's events with labelled fraud.

The main CLI (streams/cli.py) wires `add_arguments` and `run_from_args` into its subcommand.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

from streams.simulator.config import PRESETS, SimConfig, local_text, parse_start

log = logging.getLogger("streams.simulator")

EPILOG = (
    """\
What it writes:
  --to kafka  the topics of the settings (settlement, trace-scan, face-verify, sim-labels):
              value = Avro single-object encoding, key = person / trace code / subject / label,
              record timestamp = event time
  --to avro   <out>/settlement.avro, trace_scan.avro, face_verify.avro, sim_labels.avro
  always      <out>/labels.jsonl (ground truth, one injected fraud instance per line),
              <out>/institutions.jsonl and drugs.jsonl (reference data for the detectors)

Presets (persons / institutions / days / default fraud rate):
"""
    + "\n".join(
        f"  {p.name:<6} {p.persons:>9,} insured, {p.institutions:>5,} institutions, "
        f"{p.days:>2} days, fraud rate {p.fraud_rate:g} (at least {p.min_instances} per scenario)"
        for p in PRESETS.values()
    )
    + """

The same --seed, --preset, --start and sizes give byte-identical output.
examples:
  fundwatch simulate --preset tiny --start 2026-11-02 --to avro --out /tmp/sim
  fundwatch simulate --preset small --rate 2000          # to Kafka, 2,000 events/s
  fundwatch simulate --preset small --forever            # day after day until Ctrl-C"""
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `fundwatch simulate`."""
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="small",
        help="world size: tiny (tests, two weeks in about a second), small, or city "
        "(millions of insured, a week); default: small",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=7,
        help="random seed; the same seed gives the same world and events (default: 7)",
    )
    parser.add_argument(
        "--start",
        type=parse_start,
        default=None,
        metavar="YYYY-MM-DD",
        help="first simulated day (00:00 Asia/Shanghai; a date-time is rounded down "
        "to its day); default: today minus --days, so the topics' 30-day "
        "retention keeps the whole run",
    )
    parser.add_argument(
        "--days",
        type=int,
        default=None,
        metavar="N",
        help="simulated days (default: the preset's); 0 = unbounded, like --forever",
    )
    parser.add_argument(
        "--forever",
        action="store_true",
        help="keep simulating day after day until Ctrl-C (flushes and exits cleanly)",
    )
    parser.add_argument(
        "--persons",
        type=int,
        default=None,
        metavar="N",
        help="insured persons (default: the preset's)",
    )
    parser.add_argument(
        "--institutions",
        type=int,
        default=None,
        metavar="N",
        help="designated institutions: hospitals, clinics, pharmacies (default: the preset's)",
    )
    parser.add_argument(
        "--events",
        type=int,
        default=None,
        metavar="N",
        help="stop after exactly N events (settlements, scans and face checks; labels are "
        "not counted and only complete instances are labelled); without --days the "
        "simulation runs past the preset's days until N events are out",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        metavar="N",
        help="produce at most N events per second, smoothly (default: as fast as possible)",
    )
    parser.add_argument(
        "--to",
        choices=("kafka", "avro"),
        default="kafka",
        help="kafka: produce to the configured broker (default); avro: write Avro files",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="directory for the Avro files, labels.jsonl and the registry "
        "(default: <data_dir>/sim/<seed>-<preset>)",
    )
    parser.add_argument(
        "--fraud-rate",
        type=float,
        default=None,
        metavar="R",
        help="injected instances per scenario per 10,000 insured per simulated day "
        "(default: the preset's; 0 = no fraud, normal behaviour only)",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bar and no summary on stderr (the summary is still logged)",
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    forever = getattr(args, "forever", False)
    # --forever, or --events without --days: unbounded days (the event count bounds the run).
    days = 0 if (forever or args.events is not None) and args.days is None else args.days
    if forever and args.days not in (None, 0):
        raise ValueError("--forever cannot be combined with --days N (use one or the other)")
    for name in ("days", "persons", "institutions", "events"):
        value = getattr(args, name, None)
        if value is not None and value < 0:
            raise ValueError(f"--{name} must be >= 0")
    if args.fraud_rate is not None and args.fraud_rate < 0:
        raise ValueError("--fraud-rate must be >= 0")
    if args.rate is not None and args.rate <= 0:
        raise ValueError("--rate must be > 0")
    start = args.start
    if start is None and days == 0:
        # Unbounded: start the preset's span ago, so there is history before "now".
        start = SimConfig(preset=args.preset).resolved_start_ms()
    return SimConfig(
        preset=args.preset,
        seed=args.seed,
        start_ms=start,
        days=days,
        persons=args.persons,
        institutions=args.institutions,
        fraud_rate=args.fraud_rate,
        max_events=args.events,
    )


def _warn_past_retention(settings: Any, start_ms: int) -> None:
    """Input topics age by event time: records older than their retention are deleted by the
    broker's next retention check (within a minute), before a worker or a backtest reads them."""
    retention = min(spec.retention_ms for spec in settings.topics.inputs())
    if retention < 0:
        return
    age_ms = int(time.time() * 1000) - start_ms
    if age_ms > retention:
        days = retention / 86_400_000
        log.warning(
            "--start is %.1f days ago but the input topics keep %g days (by event time): the "
            "broker deletes the older records within a minute; pick a later --start or raise "
            "FUNDWATCH_TOPICS__SETTLEMENT__RETENTION_MS (and the other inputs)",
            age_ms / 86_400_000,
            days,
        )


def run_from_args(args: argparse.Namespace, settings: Any) -> int:
    """Run `fundwatch simulate`; returns the exit code."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # started in the background by a shell or a parent that ignores SIGINT: Ctrl-C and
        # `fundwatch run`'s stop must still end the run cleanly (flush, then exit)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from streams.simulator.output import (
        DeliveryError,
        Progress,
        produce_to_kafka,
        tee_labels,
        write_avro_files,
    )
    from streams.simulator.simulation import Simulation

    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"fundwatch simulate: {exc}", file=sys.stderr)
        return 2
    sim = Simulation(config)
    out = args.out or Path(settings.data_dir) / "sim" / f"{config.seed}-{config.preset}"
    out.mkdir(parents=True, exist_ok=True)
    sim.world.registry().dump(out)
    sizes = sim.sizes
    log.info(
        "simulating %s: %s insured, %s institutions, %s from %s, seed %s, output %s",
        sizes.name,
        f"{sizes.persons:,}",
        len(sim.world.sites),
        f"{sizes.days} days" if sizes.days else "unbounded",
        local_text(sim.start_ms),
        config.seed,
        out,
    )
    records = tee_labels(sim.records(), out / "labels.jsonl")
    try:
        with Progress(
            sim.start_ms, sim.end_ms, enabled=not args.quiet, max_events=config.max_events
        ) as progress:
            if args.to == "kafka":
                from streams.stack.topics import ensure_topics

                ensure_topics(settings, settings.topics.all())
                _warn_past_retention(settings, sim.start_ms)
                summary = produce_to_kafka(
                    settings,
                    records,
                    rate=args.rate,
                    max_events=config.max_events,
                    progress=progress,
                )
            else:
                summary = write_avro_files(
                    out, records, max_events=config.max_events, progress=progress, seed=config.seed
                )
    except DeliveryError as exc:
        print(f"fundwatch simulate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # outside the produce loop (e.g. while building): nothing to flush
        print("fundwatch simulate: interrupted", file=sys.stderr)
        return 130
    finally:
        records.close()
    skipped = {k: v for k, v in sim.skipped.items() if v}
    line = summary.line() + (f"; skipped instances: {skipped}" if skipped else "")
    log.info("simulate: %s", line)
    if not args.quiet:
        print(f"simulate: {line}", file=sys.stderr)
    return 0
