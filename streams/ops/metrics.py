"""A `/metrics` (Prometheus text format) and `/health` (JSON) endpoint for one process.

Each long-running component (`fundwatch worker`, `fundwatch sink`) owns a `CollectorRegistry`
and a `MetricsServer`: a small threaded HTTP server on `metrics_host` (default 127.0.0.1) and
a configured port (0: a free port the OS picks). The chosen address is written to
`<data_dir>/metrics/<component>-<name>.json`, which is how `fundwatch status` finds the running
components; the file is removed when the server closes.

Metrics are read lazily at scrape time by collectors over the counters the components keep
anyway, so the hot paths pay nothing for them; only histograms are fed per batch
(`BulkHistogram.observe_many`, one call for a whole batch).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streams.config import Settings

log = logging.getLogger(__name__)

Health = Callable[[], tuple[bool, dict[str, Any]]]

# Batch sizes (records) and durations / latencies (seconds). Latency is measured from the record
# timestamp (the event time), so a replay of history shows up in the last buckets.
SIZE_BUCKETS = (1, 10, 50, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86_400)


def metrics_dir(settings: Settings) -> Path:
    """Where running components announce their endpoints."""
    return settings.data_dir / "metrics"


class BulkHistogram(Collector):
    """A Prometheus histogram fed a batch at a time (prometheus_client's `Histogram.observe`
    takes a lock per value; a sink batch has 20,000)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        self.observe_many((value,))

    def observe_many(self, values: Iterable[float]) -> None:
        bounds = self.bounds
        counts = [0] * len(self._counts)
        total = 0.0
        for v in values:
            counts[bisect_left(bounds, v)] += 1
            total += v
        with self._lock:
            for i, n in enumerate(counts):
                self._counts[i] += n
            self._sum += total

    def snapshot(self) -> tuple[list[int], float]:
        """(per-bucket counts, not cumulative; +Inf last), sum."""
        with self._lock:
            return list(self._counts), self._sum

    def collect(self) -> Iterator[HistogramMetricFamily]:
        counts, total = self.snapshot()
        cumulative, buckets = 0, []
        for bound, n in zip((*self.bounds, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append((_le(bound), cumulative))
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


def _le(bound: float) -> str:
    if bound == float("inf"):
        return "+Inf"
    return str(int(bound)) if bound == int(bound) else repr(bound)


class MetricsServer:
    """Serve `/metrics` and `/health` on a daemon thread; announce the address in a file."""

    def __init__(
        self,
        settings: Settings,
        component: str,
        name: str,
        registry: CollectorRegistry,
        health: Health,
        port: int = 0,
    ) -> None:
        self.settings = settings
        self.component = component
        self.name = name
        self.registry = registry
        self.health = health
        self.port = port
        self.started = time.time()
        self.file = metrics_dir(settings) / f"{component}-{_safe(name)}.json"
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MetricsServer:
        handler = _handler(self.registry, self.health)
        self._httpd = ThreadingHTTPServer((self.settings.metrics_host, self.port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"metrics-{self.component}", daemon=True
        )
        self._thread.start()
        self._announce()
        log.info("%s %s: metrics and health on %s", self.component, self.name, self.url)
        return self

    def _announce(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "component": self.component,
            "name": self.name,
            "url": self.url,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started,
        }
        tmp = self.file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(self.file)

    def close(self) -> None:
        """Stop serving and withdraw the announcement (if it is still ours)."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        try:
            if json.loads(self.file.read_text()).get("pid") == os.getpid():
                self.file.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> MetricsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _handler(registry: CollectorRegistry, health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
                elif path == "/health":
                    ok, body = health()
                    payload = json.dumps(body, ensure_ascii=False).encode()
                    self._send(200 if ok else 503, "application/json", payload)
                else:
                    self._send(404, "text/plain", b"try /metrics or /health\n")
            except Exception as exc:  # a scrape must never take the component down
                log.warning("metrics endpoint %s failed: %r", path, exc)
                self._send(500, "text/plain", f"{type(exc).__name__}\n".encode())

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
            pass

    return Handler


def health_verdict(
    *,
    state: str,
    started: float,
    last_batch: float | None,
    lag: int | None,
    stall_s: float,
    problems: list[str] | None = None,
    waiting: int | None = None,
    **extra: Any,
) -> tuple[bool, dict[str, Any]]:
    """The common /health rule: unhealthy on any named problem, or when records wait to be read
    (`waiting`, default the lag) and no batch has completed for `stall_s` seconds."""
    now = time.time()
    problems = list(problems or [])
    since = last_batch if last_batch is not None else started
    waiting = lag if waiting is None else waiting
    if waiting and now - since > stall_s:
        problems.append(f"no batch for {now - since:.0f}s while {waiting} records wait")
    body = {
        "status": "ok" if not problems else "unhealthy",
        "state": state,
        "uptime_s": round(now - started, 1),
        "last_batch_age_s": round(now - last_batch, 1) if last_batch is not None else None,
        "lag": lag,
        **extra,
        "problems": problems,
    }
    return not problems, body
