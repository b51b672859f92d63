"""Judge a backtest's history on several processes (`--workers`, `FUNDWATCH_BACKTEST_WORKERS`).

The worker's logic is partitioned: partition p of the input topics and of the repartition
topics is judged by stages of its own, with states of its own (`BatchProcessor`). So a replay
splits as a consumer group of live workers does: process i of n reads the input partitions
`p % n == i` from Kafka with a consumer of its own and judges them with replicas of its own
(one per configuration), and owns the repartition partitions `p % n == i`.

The processes run in rounds. In a round each process judges the repartitioned records the
previous round sent it, then up to ROUND_RECORDS new input records; then it sends every other
process the records (repartitioned copies and watermark promises) for that process's
partitions and receives theirs: a live worker reads its repartition topics the same way, a
batch after they were written. A process reads no further than SKEW_MS of event time past the
slowest one, so the stages that wait for every input partition's promise do not hold hours of
events. When every process has read its input and judged the end-of-range watermarks, the
rounds go on until none of them sends anything (the repartition topics run dry); then each
reports its alerts and counts to the parent, which merges them.

The processes are forked (Linux): they inherit the registry and the rule configurations
without copying them. The alerts equal a single process's (`tests/backtest/test_parallel.py`
compares them): the stages judge in event-time order whatever the batches.
"""

from __future__ import annotations

import gc
import logging
import marshal
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from models.alerts import Alert
from models.reference import Registry
from models.rules.config import RuleConfig
from schemas.codec import Codec
from streams.backtest.replica import MAX_DRAIN_ROUNDS, Replica, end_watermarks
from streams.backtest.sources import Input, SourceStats, kafka_records
from streams.config import Settings
from streams.worker.build import replay_gc
from streams.worker.processor import OutRecord, SourceRecord, WorkerStats

log = logging.getLogger(__name__)

ROUND_RECORDS = 2_000
"""Input records a process reads per round (the worker's batch)."""
SKEW_MS = 60 * 60_000
"""How far (event time) a process reads ahead of the slowest one still reading."""
PROGRESS_EVERY_S = 0.25


@dataclass
class Work:
    """What a process did: its rounds, where its wall time went (reading Kafka, judging,
    exchanging with its peers: sending, and waiting for the slower ones), and the
    end-of-range watermark records it judged."""

    read_s: float = 0.0
    judge_s: float = 0.0
    exchange_s: float = 0.0
    rounds: int = 0
    end_marks: int = 0
    private_bytes: int | None = None  # memory it held alone at the end (`_private_bytes`)


@dataclass
class Judged:
    """What one configuration raised over the whole input, and the processors' counts."""

    alerts: dict[str, Alert]
    stats: WorkerStats
    end_marks: int  # the end-of-range watermark records judged (counted in `stats.control`)
    private_bytes: int | None = None  # the most a process held alone (processes only)


def default_workers() -> int:
    """One process per CPU this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def backtest_workers(settings: Settings, source: str) -> int:
    """The processes a backtest judges on: `backtest_workers` (0: one per CPU) for a Kafka
    source where processes can be forked; 1 otherwise (a ClickHouse source is one query)."""
    if source != "kafka" or not can_fork():
        return 1
    return settings.backtest_workers or default_workers()


def judge_in_processes(
    settings: Settings,
    from_ms: int,
    to_ms: int,
    rule_sets: Sequence[RuleConfig],
    registry: Registry,
    workers: int,
    stats: SourceStats,
    now: int,
    on_total: Callable[[int], None] | None = None,
    on_read: Callable[[int], None] | None = None,
) -> list[Judged]:
    """Judge the input topics' records in [from, to) with every rule set, on `workers`
    processes; returns one `Judged` per rule set and adds the reads to `stats`."""
    if workers < 2:
        raise ValueError("judge_in_processes needs at least 2 workers")
    ctx = multiprocessing.get_context("fork")
    links: dict[tuple[int, int], tuple[Connection, Connection]] = {
        (i, j): ctx.Pipe() for i in range(workers) for j in range(i + 1, workers)
    }
    peers: list[dict[int, Connection]] = [{} for _ in range(workers)]
    for (i, j), (a, b) in links.items():
        peers[i][j], peers[j][i] = a, b
    reports = [ctx.Pipe(duplex=False) for _ in range(workers)]
    procs = [
        ctx.Process(
            target=_worker,
            name=f"fundwatch-backtest-{i}",
            args=(
                i,
                workers,
                peers[i],
                reports[i][1],
                settings,
                (from_ms, to_ms),
                rule_sets,
                registry,
                now,
            ),
            daemon=True,
        )
        for i in range(workers)
    ]
    log.info("backtest: judging on %d processes", workers)
    # what exists now (the registry, the configurations) is shared with the children: out of
    # the collector's sight, their collections do not touch (and so copy) its pages. (No
    # collection first: it would walk the caller's whole heap, the benchmark's decoded world.)
    gc.freeze()
    try:
        for p in procs:
            p.start()
    finally:
        gc.unfreeze()
    for a, b in links.values():  # the children hold them now
        a.close()
        b.close()
    for _, w in reports:
        w.close()
    try:
        results = _collect(procs, [r for r, _ in reports], stats, on_total, on_read)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)
        for r, _ in reports:
            r.close()
    merged = []
    marks = sum(w.end_marks for _, w in results)
    held = [w.private_bytes for _, w in results if w.private_bytes is not None]
    private = max(held) if held else None
    for k in range(len(rule_sets)):
        alerts: dict[str, Alert] = {}
        total = WorkerStats()
        for per_set, _ in results:
            a, s = per_set[k]
            for alert_id, alert in a.items():
                alerts.setdefault(alert_id, alert)
            _add_stats(total, s)
        merged.append(Judged(alerts, total, marks, private))
    return merged


def _collect(
    procs: list[Any],
    readers: list[Connection],
    stats: SourceStats,
    on_total: Callable[[int], None] | None,
    on_read: Callable[[int], None] | None,
) -> list[tuple[list[tuple[dict[str, Alert], WorkerStats]], Work]]:
    """Follow the processes' reports until each has sent its results; raise on a failure."""
    index = {id(r): i for i, r in enumerate(readers)}
    results: dict[int, tuple[list[tuple[dict[str, Alert], WorkerStats]], Work]] = {}
    totals: dict[int, int] = {}
    open_readers = list(readers)
    while open_readers:
        for conn in wait(open_readers):
            i = index[id(conn)]
            try:
                kind, *payload = conn.recv()  # type: ignore[union-attr]
            except EOFError:
                open_readers.remove(conn)
                if i not in results:
                    procs[i].join(timeout=5)
                    raise RuntimeError(
                        f"backtest process {i} ended without its results "
                        f"(exit code {procs[i].exitcode}; killed for memory?)"
                    ) from None
                continue
            if kind == "total":
                totals[i] = payload[0]
                if len(totals) == len(readers) and on_total is not None:
                    on_total(sum(totals.values()))
            elif kind == "read":
                if on_read is not None:
                    on_read(payload[0])
            elif kind == "done":
                per_set, source_stats, t = payload
                results[i] = (per_set, t)
                log.info(
                    "backtest process %d: %d records in %d rounds; reading %.1fs, judging "
                    "%.1fs, exchanging with the others %.1fs; holding %s MB of its own", i,
                    source_stats.read, t.rounds, t.read_s, t.judge_s, t.exchange_s,
                    "?" if t.private_bytes is None else f"{t.private_bytes / 1_048_576:,.0f}",
                )  # fmt: skip
                stats.total += source_stats.total
                stats.read += source_stats.read
                stats.out_of_range += source_stats.out_of_range
            elif kind == "error":
                raise RuntimeError(f"backtest process {i} failed:\n{payload[0]}")
    return [results[i] for i in range(len(readers))]


def _private_bytes() -> int | None:
    """The memory this process holds alone (`Private_Dirty`, Linux): what it allocated, and
    the pages inherited from the parent that it wrote to. None where it cannot be read."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _add_stats(total: WorkerStats, s: WorkerStats) -> None:
    for name in ("read", "processed", "unkeyed", "dead_lettered", "control", "replayed",
                 "duplicates", "alerts"):  # fmt: skip
        getattr(total, name).update(getattr(s, name))
    total.batches += s.batches


# -- in each process ---------------------------------------------------------------------------
def _worker(
    index: int,
    workers: int,
    peers: dict[int, Connection],
    report: Connection,
    settings: Settings,
    span: tuple[int, int],
    rule_sets: Sequence[RuleConfig],
    registry: Registry,
    now: int,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the run
    try:
        src_stats = SourceStats()
        read = [0]

        def count(n: int) -> None:
            read[0] += n

        from_ms, to_ms = span
        source = kafka_records(
            settings, from_ms, to_ms, src_stats, on_read=count, share=(index, workers)
        )
        report.send(("total", src_stats.total))
        replicas = [
            Replica.for_rules(rules, registry, settings, source.partitions, now)
            for rules in rule_sets
        ]
        with replay_gc():
            work = _rounds(index, workers, peers, source, replicas, to_ms, report, read)
        work.private_bytes = _private_bytes()
        per_set = [(r.alerts, r.proc.stats) for r in replicas]
        report.send(("done", per_set, src_stats, work))
    except BaseException:
        report.send(("error", traceback.format_exc()))
    finally:
        report.close()
        for conn in peers.values():
            conn.close()


def _rounds(
    index: int,
    workers: int,
    peers: dict[int, Connection],
    source: Input,
    replicas: list[Replica],
    to_ms: int,
    report: Connection,
    read: list[int],
) -> Work:
    """The rounds of process `index` until no process has anything left to send."""
    work = Work()
    records = source.records
    mine = [p for p in range(source.partitions) if p % workers == index]
    ends = [
        r
        for r in end_watermarks(source.topics, source.partitions, to_ms, Codec.default())
        if r.partition in mine
    ]
    work.end_marks = len(ends)
    horizon: int | None = None  # read up to this event time this round (None: no limit)
    waiting: SourceRecord | None = None  # the next record, read already (past the horizon)
    exhausted = ended = False
    drain = 0
    reported, last_report = 0, time.monotonic()
    while True:
        t0 = time.perf_counter()
        batch: list[SourceRecord] = []
        while not exhausted:
            if waiting is None:
                waiting = next(records, None)
                if waiting is None:
                    exhausted = True
                    break
            if len(batch) >= ROUND_RECORDS or (
                horizon is not None and (waiting.timestamp_ms or 0) > horizon
            ):
                break
            batch.append(waiting)
            waiting = None
        if exhausted and not ended:
            batch.extend(ends)
            ended = True
        t1 = time.perf_counter()
        # per process, per replica: records for its partitions; as plain tuples (pickled in
        # a fifth of the time a dataclass takes), the own ones as they are
        outgoing: list[list[list[Any]]] = [[[] for _ in replicas] for _ in range(workers)]
        decoded: list[list[dict[bytes, Any]]] = [[{} for _ in replicas] for _ in range(workers)]
        for k, rep in enumerate(replicas):
            for out in rep.run_batch(rep.take_feedback() + batch):
                owner = out.partition % workers
                if owner == index:
                    outgoing[owner][k].append(out)
                    continue
                outgoing[owner][k].append(
                    (out.role, out.key, out.value, out.timestamp_ms, out.partition, out.origin)
                )
                if out.event is not None:
                    decoded[owner][k][out.value] = out.event
        sent = sum(len(o) for per_peer in outgoing for o in per_peer)
        # where this process's input stands: the time of its next record (None: all read)
        position = None if waiting is None else (waiting.timestamp_ms or 0)
        note = (position, ended, sent)
        t2 = time.perf_counter()
        inbound = _exchange(index, peers, outgoing, _marshalled(decoded), note)
        work.read_s += t1 - t0
        work.judge_s += t2 - t1
        work.exchange_s += time.perf_counter() - t2
        work.rounds += 1
        for k, rep in enumerate(replicas):
            for j in range(workers):  # in process order: deterministic offsets
                if j == index:
                    rep.feed(outgoing[index][k])
                else:
                    records_in, events_in = inbound[j][0][k], inbound[j][1][k]
                    events = marshal.loads(events_in) if events_in is not None else {}
                    rep.feed([OutRecord(*t, events.get(t[2])) for t in records_in])
        notes = [note if j == index else inbound[j][2] for j in range(workers)]
        if all(n[1] for n in notes):
            if not any(n[2] for n in notes):
                break  # every input read and judged, nothing in flight
            drain += 1
            if drain > MAX_DRAIN_ROUNDS:
                raise RuntimeError("backtest: repartitioned records do not settle")
        positions = [n[0] for n in notes if n[0] is not None]
        horizon = min(positions) + SKEW_MS if positions else None
        now = time.monotonic()
        if read[0] > reported and now - last_report >= PROGRESS_EVERY_S:
            report.send(("read", read[0] - reported))
            reported, last_report = read[0], now
    if read[0] > reported:
        report.send(("read", read[0] - reported))
    return work


def _marshalled(decoded: list[list[dict[bytes, Any]]]) -> list[list[bytes | None]]:
    """The decoded events for each peer and replica, in `marshal`'s format: written four times
    faster than pickle's (the events are plain dicts, lists, strings and numbers), and read
    back in a quarter of a decode's time. None where an event is not plain data (the peer
    decodes the copies)."""
    out: list[list[bytes | None]] = []
    for per_peer in decoded:
        row: list[bytes | None] = []
        for events in per_peer:
            try:
                row.append(marshal.dumps(events) if events else None)
            except ValueError:  # an object marshal does not write
                row.append(None)
        out.append(row)
    return out


def _exchange(
    index: int,
    peers: dict[int, Connection],
    outgoing: list[list[list[Any]]],
    decoded: list[list[bytes | None]],
    note: tuple[int | None, bool, int],
) -> dict[int, tuple[list[list[Any]], list[bytes | None], tuple[int | None, bool, int]]]:
    """Send each peer its records and their decoded events, receive its own for us. Pairs
    talk in one order (the lower index sends first), so two processes never both block
    sending to each other."""
    got: dict[int, Any] = {}
    for j in sorted(peers):
        conn = peers[j]
        if index < j:
            conn.send((outgoing[j], decoded[j], note))
            got[j] = conn.recv()
        else:
            got[j] = conn.recv()
            conn.send((outgoing[j], decoded[j], note))
    return got
