"""`fundwatch status`: the running components and the consumer-group lags, at a glance.

Components announce their /metrics and /health endpoints in `<data_dir>/metrics/*.json`
(streams/ops/metrics.py); this command scrapes each one, and reads the worker's and the sink's
consumer-group lag from Kafka directly (committed offsets against the end of each topic), so
the lags are shown even when nothing runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from streams.config import Settings
from streams.ops.metrics import metrics_dir

HELP = "show the running workers and sinks: health, throughput, dead letters, lag"
DESCRIPTION = """\
Show every running FundWatch component (worker, sink) found in <data_dir>/metrics/: its
health, events in and out, dead letters by reason code, consumer lag and the age of its last
batch, read from its /metrics and /health endpoints. Then the consumer-group lag of the worker
group (FUNDWATCH_WORKER_APP_ID) and the sink group (FUNDWATCH_CONSUMER_GROUP) per topic, read
from Kafka itself: committed offsets against the end of each topic.

Health is "ok", "unhealthy" (the endpoint answered 503: the store is unreachable, or records
wait and no batch has finished for FUNDWATCH_HEALTH_STALL_SECONDS), "unreachable" (no answer)
or "stale" (the announcing process is gone; --prune removes such entries)."""
EPILOG = """\
examples:
  fundwatch status                 tables for people
  fundwatch status --json | jq .   the same as JSON for scripts
  curl -s $(jq -r .url .local/metrics/sink-*.json)/metrics   scrape a component yourself"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="per-request timeout for endpoints and Kafka (default 2)",
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete the announcements of processes that are no longer running",
    )


@dataclass
class Component:
    """One announced component and what its endpoints said."""

    component: str
    name: str
    url: str
    pid: int | None
    file: str
    health: str = "unreachable"
    health_body: dict[str, Any] = field(default_factory=dict)
    events_in: dict[str, float] = field(default_factory=dict)  # per topic role
    events_out: dict[str, float] = field(default_factory=dict)  # per output (role, table...)
    alerts: dict[str, float] = field(default_factory=dict)  # per detector
    dead_letters: dict[str, float] = field(default_factory=dict)  # per reason code
    lag: float | None = None
    last_batch_age_s: float | None = None
    error: str | None = None


@dataclass
class GroupLag:
    group: str
    topic: str
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


# -- reading ---------------------------------------------------------------------------------
def discover(settings: Settings) -> list[dict[str, Any]]:
    """The announcements in <data_dir>/metrics/, each with the file it came from."""
    out = []
    for path in sorted(metrics_dir(settings).glob("*.json")):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        info["file"] = str(path)
        out.append(info)
    return out


def _pid_alive(info: dict[str, Any]) -> bool | None:
    """Whether the announcing process runs (None: another host, cannot tell)."""
    if info.get("host") not in (None, socket.gethostname()) or not info.get("pid"):
        return None
    try:
        os.kill(int(info["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:  # 503 carries the health body
        return exc.code, exc.read()


def summarize_metrics(component: Component, text: str, now: float | None = None) -> None:
    """Fill a component's figures from its Prometheus text."""
    now = time.time() if now is None else now
    prefix = f"fundwatch_{component.component}_"
    ins, outs, alerts, dead = {}, {}, {}, {}
    lag = None
    last = 0.0
    for family in text_string_to_metric_families(text):
        name = family.name.removeprefix(prefix)
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            labels = s.labels
            if name == "records_read":
                key = labels.get("role") or labels.get("topic", "")
                ins[key] = ins.get(key, 0) + s.value
            elif name == "records_stored" or name == "records_out":
                key = labels.get("role") or labels.get("topic", "")
                outs[key] = outs.get(key, 0) + s.value
            elif name == "alerts":
                alerts[labels["detector"]] = alerts.get(labels["detector"], 0) + s.value
            elif name == "dead_letters":
                dead[labels["reason"]] = dead.get(labels["reason"], 0) + s.value
            elif name == "consumer_lag":
                lag = (lag or 0) + s.value
            elif name == "last_batch_timestamp_seconds":
                last = s.value
    component.events_in, component.events_out = ins, outs
    component.alerts, component.dead_letters = alerts, dead
    component.lag = lag
    component.last_batch_age_s = round(now - last, 1) if last else None


def probe(info: dict[str, Any], timeout: float) -> Component:
    """Scrape one announced component."""
    c = Component(
        component=str(info.get("component", "?")),
        name=str(info.get("name", "?")),
        url=str(info.get("url", "")),
        pid=info.get("pid"),
        file=info["file"],
    )
    try:
        code, body = _get(c.url + "/health", timeout)
        c.health_body = json.loads(body or b"{}")
        c.health = "ok" if code == 200 else "unhealthy"
        code, body = _get(c.url + "/metrics", timeout)
        if code == 200:
            summarize_metrics(c, body.decode())
    except (OSError, ValueError) as exc:
        c.error = f"{type(exc).__name__}: {exc}"
        if _pid_alive(info) is False:
            c.health = "stale"
    return c


def group_lags(settings: Settings, timeout: float) -> tuple[list[GroupLag], str | None]:
    """Committed vs end offsets of the worker and sink groups, per topic; (rows, error)."""
    from confluent_kafka import KafkaException, TopicPartition

    from streams.kafka.clients import make_offsets_reader
    from streams.sink.service import SINK_ROLES
    from streams.worker.routing import SOURCE_ROLES

    groups = {
        settings.worker_app_id: [getattr(settings.topics, r).name for r in SOURCE_ROLES],
        settings.consumer_group: [getattr(settings.topics, r).name for r in SINK_ROLES],
    }
    rows: list[GroupLag] = []
    for group, names in groups.items():
        consumer = make_offsets_reader(
            settings, group, **{"socket.timeout.ms": max(1000, int(timeout * 1000))}
        )
        try:
            metadata = consumer.list_topics(timeout=timeout)
            for name in names:
                if name not in metadata.topics:
                    continue
                tps = [TopicPartition(name, p) for p in metadata.topics[name].partitions]
                committed = consumer.committed(tps, timeout=max(timeout, 5))
                end = sum(consumer.get_watermark_offsets(tp, timeout=timeout)[1] for tp in tps)
                rows.append(GroupLag(group, name, sum(max(tp.offset, 0) for tp in committed), end))
        except KafkaException as exc:
            return rows, f"Kafka at {settings.kafka_bootstrap}: {exc.args[0]}"
        finally:
            consumer.close()
    return rows, None


def collect_status(settings: Settings, timeout: float = 2.0) -> dict[str, Any]:
    """Everything `fundwatch status` shows, as plain data."""
    components = [probe(info, timeout) for info in discover(settings)]
    lags, error = group_lags(settings, timeout)
    return {
        "components": [asdict(c) for c in components],
        "groups": [{**asdict(g), "lag": g.lag} for g in lags],
        "kafka_error": error,
    }


# -- showing ---------------------------------------------------------------------------------
def _fmt_counts(counts: dict[str, float], limit: int = 4) -> str:
    """'total: biggest=n next=m +k more', zeros left out."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: -kv[1])
    if not items:
        return "0" if counts else "-"
    total = int(sum(v for _, v in items))
    text = " ".join(f"{k}={int(v)}" for k, v in items[:limit])
    more = f" +{len(items) - limit} more" if len(items) > limit else ""
    return f"{total}: {text}{more}"


def render(status: dict[str, Any], console: Any) -> None:
    """Rich tables of a `collect_status` result."""
    from rich.table import Table

    comps = status["components"]
    if not comps:
        console.print("no running components (nothing announced in the metrics directory)")
    else:
        table = Table(title="components", title_justify="left")
        for col in ("component", "name", "health", "events in", "events out", "dead letters"):
            table.add_column(col)
        table.add_column("lag", justify="right")
        table.add_column("last batch", justify="right")
        table.add_column("endpoint")
        colour = {"ok": "green", "unhealthy": "red", "stale": "yellow"}
        for c in comps:
            health = f"[{colour.get(c['health'], 'red')}]{c['health']}[/]"
            problems = c["health_body"].get("problems") or []
            if problems:
                health += "\n" + "; ".join(problems)
            out = _fmt_counts(c["events_out"])
            if c["alerts"]:
                out += f"\nalerts: {_fmt_counts(c['alerts'], 3)}"
            age = c["last_batch_age_s"]
            table.add_row(
                c["component"],
                c["name"],
                health,
                _fmt_counts(c["events_in"]),
                out,
                _fmt_counts(c["dead_letters"]),
                "-" if c["lag"] is None else str(int(c["lag"])),
                "-" if age is None else f"{age:.0f}s ago",
                c["url"],
            )
        console.print(table)
    groups = Table(title="consumer groups (from Kafka)", title_justify="left")
    for col in ("group", "topic", "committed", "end", "lag"):
        groups.add_column(col, justify="right" if col in ("committed", "end", "lag") else "left")
    for g in status["groups"]:
        groups.add_row(g["group"], g["topic"], str(g["committed"]), str(g["end"]), str(g["lag"]))
    console.print(groups)
    if status["kafka_error"]:
        console.print(f"[red]{status['kafka_error']}[/]")


def run_from_args(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    status = collect_status(settings, timeout=args.timeout)
    if args.prune:
        for c in status["components"]:
            if c["health"] == "stale":
                with contextlib.suppress(OSError):
                    os.unlink(c["file"])
        status["components"] = [c for c in status["components"] if c["health"] != "stale"]
    if args.json:
        print(json.dumps(status, indent=2, ensure_ascii=False))
    else:
        render(status, Console())
    return 0
