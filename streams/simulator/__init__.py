"""`fundwatch simulate`: a synthetic region of Jiangxi with injected fraud and ground truth.

The streams (settlements, trace-code scans, face checks) come from a world of cities,
institutions, staff and insured people living a normal daily and weekly rhythm that stays under
every detector threshold of docs/detection.md; on top, every scenario of
`models.catalogue.SCENARIOS` is injected and labelled (SimLabel) with the detector expected to
catch it. Deterministic: the same seed, preset, start and sizes give the same bytes.

API (small on purpose)::

    from streams.simulator import SimConfig, Simulation, simulate, World, PRESETS
    from streams.simulator import produce_to_kafka, write_avro_files, tee_labels, Summary

    config = SimConfig(preset="tiny", seed=7, start_ms=parse_start("2026-11-02"))
    for rec in simulate(config):          # Iterator[SimRecord], in event-time order
        rec.topic, rec.key, rec.timestamp_ms, rec.schema, rec.record

    sim = Simulation(config)              # the same, with access to the world and counts
    sim.world.registry().dump(out_dir)    # institutions.jsonl, drugs.jsonl
    summary = produce_to_kafka(settings, tee_labels(sim.records(), out_dir / "labels.jsonl"),
                               rate=2000, max_events=None)
    summary = write_avro_files(out_dir, sim.records(), seed=config.seed)

- `SimRecord.topic` is a field name of `streams.config.Topics` (settlement, trace_scan,
  face_verify, sim_labels); `schema` the Avro record name; `record` a plain dict with int
  epoch-ms times, ready for `schemas.codec.Codec.encode`.
- `SimConfig(days=0)` is unbounded (day after day); `max_events` bounds the stream (labels are
  not counted, and only complete instances are labelled).
- Records are in event-time order: no late or out-of-order events are injected.

Modules: `world` (region, institutions, staff, population), `formulary` (drugs, items,
diagnoses), `behaviour` (normal life), `scenarios` (one injector per scenario), `acts`
(face checks, settlements, refunds), `inventory` (boxes and trace codes), `events` (records,
ids, the event-time heap), `simulation` (the engine), `output` (Kafka, Avro, labels), `cli`.
"""

from streams.simulator.config import PRESETS, Preset, SimConfig, parse_start
from streams.simulator.events import SimRecord
from streams.simulator.output import Summary, produce_to_kafka, tee_labels, write_avro_files
from streams.simulator.simulation import Simulation, simulate
from streams.simulator.world import World

__all__ = [
    "PRESETS",
    "Preset",
    "SimConfig",
    "SimRecord",
    "Simulation",
    "Summary",
    "World",
    "parse_start",
    "produce_to_kafka",
    "simulate",
    "tee_labels",
    "write_avro_files",
]
