"""Open the configured ClickHouse store: embedded chDB (chdb://path) or a server (http(s)://...).

Both go through clickhouse-connect's client API. The embedded engine can be opened by one process
at a time: `open_store` takes an exclusive lock next to the data directory, and a second process
gets `StoreBusyError` naming the owner (whose query endpoint `streams.store.owner` can reach).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from streams.config import Settings, redact_url
from streams.store.tables import BY_NAME, render_ddl

log = logging.getLogger(__name__)


class StoreError(Exception):
    """The store cannot be opened or used; the message says why and what to do."""


class StoreBusyError(StoreError):
    """The embedded store is held by another process."""

    def __init__(self, path: Path, owner: dict[str, Any] | None) -> None:
        self.path = path
        self.owner = owner or {}
        pid = self.owner.get("pid", "?")
        cmd = self.owner.get("command", "another fundwatch process")
        super().__init__(
            f"the embedded ClickHouse store {path} is in use by process {pid} ({cmd}); "
            "chDB can be opened by one process at a time"
        )


def chdb_path(url: str) -> Path:
    """The data directory of a chdb:// URL."""
    parsed = urlparse(url)
    return Path(parsed.netloc + parsed.path)


@dataclass
class StoreLock:
    """An exclusive flock on `<path>.lock`, with an owner file describing the holder."""

    path: Path
    _fd: int | None = None

    @property
    def lock_file(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    @property
    def owner_file(self) -> Path:
        return self.path.with_name(self.path.name + ".owner.json")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreBusyError(self.path, self.read_owner()) from None
        self._fd = fd
        self.write_owner({})

    def write_owner(self, extra: dict[str, Any]) -> None:
        """Describe this process as the owner (pid, command, and e.g. its query endpoint)."""
        import sys

        info = {"pid": os.getpid(), "command": " ".join(os.path.basename(a) for a in sys.argv[:2])}
        info.update(extra)
        tmp = self.owner_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
        os.replace(tmp, self.owner_file)

    def read_owner(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.owner_file.read_text())
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        self.owner_file.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class Store:
    """A ClickHouse database of FundWatch tables, embedded or on a server."""

    def __init__(self, settings: Settings, database: str | None = None) -> None:
        self.settings = settings
        self.url = settings.store_url
        self.database = database or settings.clickhouse_database
        self.embedded = settings.is_embedded_store
        self.lock: StoreLock | None = None
        self._client: Client | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self, *, lock: bool = True) -> Store:
        """Connect (and for chDB take the process lock). Idempotent."""
        if self._client is not None:
            return self
        if self.embedded and lock:
            self.lock = StoreLock(chdb_path(self.url))
            self.lock.acquire()
        try:
            self._client = self.new_client()
        except Exception as exc:
            self.close()
            raise StoreError(f"cannot open ClickHouse at {redact_url(self.url)}: {exc}") from exc
        log.info("store open: %s database=%s", redact_url(self.url), self.database)
        return self

    def new_client(self, **settings: Any) -> Client:
        """Another client on the same store (its own session: e.g. for read-only queries)."""
        if self.embedded:
            path = chdb_path(self.url)
            path.mkdir(parents=True, exist_ok=True)
            return clickhouse_connect.get_client(dsn=f"chdb://{path}", settings=settings or None)
        return clickhouse_connect.get_client(dsn=self.url, settings=settings or None)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def __enter__(self) -> Store:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        if self._client is None:
            raise StoreError("store is not open")
        return self._client

    # -- schema and data ---------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the database and tables if missing (idempotent)."""
        for statement in render_ddl(self.database, self.settings.clickhouse_cluster):
            self.client.command(statement)

    def insert_rows(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert rows whose values follow the table's insert column order."""
        names = BY_NAME[table].insert_columns
        self.client.insert(f"`{self.database}`.`{table}`", rows, column_names=names)

    def query_rows(
        self, sql: str, parameters: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple]:
        return self.client.query(sql, parameters=parameters, **kwargs).result_rows

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.query_rows(sql, parameters)
        return rows[0][0] if rows else None
