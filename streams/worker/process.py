"""A `fundwatch worker` child process, and how far it has got.

`fundwatch run` starts one next to its sink; the end-to-end tests start several. Progress is
read from Kafka (the worker group's committed offsets against the end of its source topics),
not from the worker itself, so it is the same figure a second worker or an operator would see.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import KafkaException, TopicPartition

from streams.config import Settings
from streams.kafka.clients import make_offsets_reader
from streams.worker.routing import SOURCE_ROLES

log = logging.getLogger(__name__)


class WorkerProcess:
    """Start, watch and stop one worker."""

    def __init__(
        self,
        settings: Settings,
        registry: Path | None,
        name: str = "worker-1",
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        verbose: bool = False,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.name = name
        self.env = env if env is not None else os.environ.copy()
        self.log_path = log_path
        self.verbose = verbose  # INFO logs (restores, checkpoints, rebalances) in the log file
        self.proc: subprocess.Popen | None = None
        self._log = None

    def command(self) -> list[str]:
        """The child's command line (the benchmark's variants override it)."""
        cmd = [sys.executable, "-m", "streams.cli", *(["-v"] if self.verbose else []), "worker"]
        cmd += ["--name", self.name]
        if self.registry is not None:
            cmd += ["--registry", str(self.registry)]
        return cmd

    def start(self) -> WorkerProcess:
        cmd = self.command()
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=self._log or subprocess.DEVNULL,
            stderr=self._log or subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        log.info("worker %s started (pid %d)", self.name, self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 60) -> int:
        """SIGTERM (finish the batch, commit, close), SIGKILL if it does not exit in time."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("worker %s did not stop in %.0fs: killing it", self.name, timeout_s)
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def progress(self, attempts: int = 5) -> tuple[int, int]:
        """(committed, end) offsets summed over the worker's source topics; retries the
        transient errors of a broker that is still electing leaders or loading a group."""
        for attempt in range(attempts):
            try:
                return self._progress()
            except KafkaException:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)
        raise AssertionError("unreachable")

    def _progress(self) -> tuple[int, int]:
        offsets = self._offsets()
        return sum(c for _, c, _ in offsets), sum(e for _, _, e in offsets)

    def lagging(self) -> dict[str, int]:
        """`topic[partition]` → records not committed yet, for the partitions that lag."""
        return {name: end - done for name, done, end in self._offsets() if end > done}

    def _offsets(self) -> list[tuple[str, int, int]]:
        """(`topic[partition]`, committed offset, end offset) of every source partition."""
        s = self.settings
        names = [getattr(s.topics, role).name for role in SOURCE_ROLES]
        consumer = make_offsets_reader(s, s.worker_app_id)
        try:
            metadata = consumer.list_topics(timeout=10)
            tps = [
                TopicPartition(name, p)
                for name in names
                if name in metadata.topics
                for p in metadata.topics[name].partitions
            ]
            return [
                (
                    f"{tp.topic}[{tp.partition}]",
                    max(tp.offset, 0),
                    consumer.get_watermark_offsets(tp, timeout=10)[1],
                )
                for tp in consumer.committed(tps, timeout=10)
            ]
        finally:
            consumer.close()

    def wait_caught_up(self, timeout_s: float = 300, checks: int = 3) -> None:
        """Block until the worker has committed everything in its topics, `checks` times in a
        row one second apart (its own repartitioned records included)."""
        deadline = time.monotonic() + timeout_s
        stable = 0
        while stable < checks:
            if not self.alive():
                raise RuntimeError(
                    f"worker {self.name} exited with {self.proc and self.proc.returncode}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"worker {self.name} did not catch up: {self.progress()}, "
                    f"lagging {self.lagging()}"
                )
            try:
                committed, end = self.progress()
            except KafkaException as exc:  # e.g. the group coordinator is still loading
                log.info("worker progress unknown for now: %s", exc)
                committed, end = 0, 1
            stable = stable + 1 if committed >= end else 0
            time.sleep(1.0)
