"""Live progress of `fundwatch run`: a rich dashboard on a terminal, log lines otherwise."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from streams.config import Settings
    from streams.sink.service import Sink

log = logging.getLogger(__name__)

TRY_QUERIES = (
    "SELECT detector_id, kind, count() AS n, sum(amount_at_risk) AS yuan FROM alerts FINAL "
    "GROUP BY detector_id, kind ORDER BY n DESC",
    "SELECT * FROM top_institutions LIMIT 10",
    "SELECT visit_type, count() AS n, sum(total_yuan) AS yuan FROM settlements FINAL "
    "GROUP BY visit_type",
    "SELECT scenario, count() FROM sim_labels FINAL GROUP BY scenario ORDER BY scenario",
    "SELECT reason_code, count() FROM dead_letters FINAL GROUP BY reason_code",
)


class Dashboard:
    """Refreshes from the sink's counters and the topics' end offsets in a background thread."""

    def __init__(
        self, sink: Sink, offsets: Any, start_offsets: dict, sim: Any, plain: bool
    ) -> None:
        from streams.run import Offsets

        self.sink = sink
        self.offsets = Offsets(offsets.settings, offsets.topics)  # its own client: own thread
        self.start = start_offsets
        self.sim = sim
        self.plain = plain
        self.console = Console(stderr=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dashboard", daemon=True)
        self._rates: deque[tuple[float, int]] = deque(maxlen=20)
        self._started = time.monotonic()

    def __enter__(self) -> Dashboard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.offsets.close()

    def _loop(self) -> None:
        if self.plain:
            while not self._stop.wait(5.0):
                log.warning("progress: %s", self._line())
            return
        with Live(
            self._render(), console=self.console, refresh_per_second=4, transient=False
        ) as live:
            while not self._stop.wait(0.5):
                live.update(self._render())
            live.update(self._render())

    def _produced(self) -> dict[str, int]:
        try:
            ends = self.offsets.read()
        except Exception:  # a slow broker must not kill the dashboard
            return {}
        out: dict[str, int] = {}
        for (topic, partition), end in ends.items():
            out[topic] = out.get(topic, 0) + end - self.start.get((topic, partition), 0)
        return out

    def _rate(self) -> float:
        stored = sum(s.stored + s.dead_lettered for s in self.sink.stats.topics.values())
        now = time.monotonic()
        self._rates.append((now, stored))
        (t0, n0), (t1, n1) = self._rates[0], self._rates[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def _render(self) -> Panel:
        produced = self._produced()
        table = Table(
            "topic", "produced", "read", "stored", "dead letters", "watermarks", "lag", box=None
        )
        for topic, st in sorted(list(self.sink.stats.topics.items())):
            table.add_row(
                topic,
                f"{produced.get(topic, 0):,}",
                f"{st.read:,}",
                f"{st.stored:,}",
                f"{st.dead_lettered:,}",
                f"{st.control:,}",
                f"{st.lag:,}",
            )
        stats = self.sink.stats
        sim = "running" if self.sim is not None and self.sim.poll() is None else "done"
        if self.sim is None:
            sim = "off"
        elapsed = time.monotonic() - self._started
        head = (
            f"[bold]{self._rate():,.0f}[/] events/s stored   elapsed {elapsed:,.0f}s"
            f"   batches {stats.batches}   simulator {sim}   sink {stats.state}"
        )
        return Panel(
            Group(head, table, *self._alert_panels()),
            title="FundWatch run",
            subtitle="Ctrl-C to stop",
        )

    def _alert_panels(self) -> list[Any]:
        stats = self.sink.stats
        if not stats.alerts_by_detector:
            return []
        counts = Table("detector", "alerts", box=None, title="alerts stored, by detector")
        for detector, n in stats.alerts_by_detector.most_common(10):
            counts.add_row(detector, f"{n:,}")
        latest = Table("event time", "kind", "explanation", box=None, title="latest alerts")
        for event_ms, _detector, kind, text in list(stats.latest_alerts):
            when = time.strftime("%m-%d %H:%M", time.localtime(event_ms / 1000))
            latest.add_row(when, kind, escape(text))  # "[detector_id] ..." is not markup
        return [counts, latest]

    def _line(self) -> str:
        parts = [f"{self._rate():,.0f} ev/s"]
        for topic, st in sorted(list(self.sink.stats.topics.items())):
            parts.append(f"{topic} stored={st.stored} dead={st.dead_lettered} lag={st.lag}")
        return "; ".join(parts)

    def print_summary(
        self, produced: dict[str, int], counts: dict[str, int], elapsed: float, settings: Settings
    ) -> None:
        out = Console()
        table = Table(
            "topic", "produced this run", "stored", "dead letters", "watermarks", title="Summary"
        )
        for topic, n in produced.items():
            st = self.sink.stats.topics.get(topic)
            stored, dead, control = (st.stored, st.dead_lettered, st.control) if st else (0, 0, 0)
            table.add_row(topic, f"{n:,}", f"{stored:,}", f"{dead:,}", f"{control:,}")
        out.print(table)
        rows = Table(
            "table", "rows (FINAL)", title=f"ClickHouse database {settings.clickhouse_database}"
        )
        for name, n in counts.items():
            rows.add_row(name, f"{n:,}")
        out.print(rows)
        if self.sink.stats.alerts_by_detector:
            by = Table("detector", "alerts", title="Alerts stored this run")
            for detector, n in sorted(self.sink.stats.alerts_by_detector.items()):
                by.add_row(detector, f"{n:,}")
            out.print(by)
        total = sum(produced.values())
        out.print(f"{total:,} records in {elapsed:,.1f}s ({total / max(elapsed, 1e-9):,.0f}/s)")
        out.print("Try:")
        for sql in TRY_QUERIES:
            out.print(f'  fundwatch query "{sql}"', soft_wrap=True, highlight=False)
