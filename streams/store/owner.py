"""The owner endpoint: how other processes query the embedded store while it is held.

chDB can be opened by one process at a time. The process that owns it (e.g. `fundwatch run`)
serves read-only SQL on a loopback HTTP endpoint; the port and a random token go into the
owner file next to the store (mode 0600), and `fundwatch query` finds them there.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from streams.store.client import Store, StoreBusyError
from streams.store.query import QueryError, QueryResult, execute_read_only, to_jsonable

log = logging.getLogger(__name__)


class QueryServer:
    """Serves POST /query {"sql": ...} -> {"columns": [...], "rows": [[...]]} on 127.0.0.1."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.token = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        self._client = store.new_client()
        self._client.database = store.database
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def start(self) -> QueryServer:
        self._thread.start()
        if self.store.lock is not None:
            self.store.lock.write_owner({"query_port": self.port, "query_token": self.token})
        log.info("embedded store queries served on 127.0.0.1:%d", self.port)
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._client.close()

    def _run(self, sql: str) -> QueryResult:
        with self._lock:  # one chDB session, one query at a time
            return execute_read_only(self.store, sql, self._client)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/query":
                    return self._reply(404, {"error": "not found"})
                if not secrets.compare_digest(
                    self.headers.get("X-FundWatch-Token", ""), server.token
                ):
                    return self._reply(403, {"error": "bad token"})
                length = int(self.headers.get("Content-Length", "0"))
                try:
                    sql = json.loads(self.rfile.read(length))["sql"]
                    result = server._run(sql)
                except QueryError as exc:
                    return self._reply(400, {"error": str(exc)})
                except (ValueError, KeyError):
                    return self._reply(400, {"error": 'expected a JSON body {"sql": "..."}'})
                rows = [[to_jsonable(v) for v in row] for row in result.rows]
                self._reply(200, {"columns": result.columns, "rows": rows})

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("query endpoint: " + format, *args)

        return Handler


def query_owner(busy: StoreBusyError, sql: str, timeout_s: float = 60.0) -> QueryResult:
    """Send a read-only query to the process that holds the embedded store."""
    port, token = busy.owner.get("query_port"), busy.owner.get("query_token")
    if not port or not token:
        raise QueryError(
            f"{busy}. That process does not serve queries: wait for it to finish, stop it, "
            "or point FUNDWATCH_CLICKHOUSE_URL at a ClickHouse server."
        )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"Content-Type": "application/json", "X-FundWatch-Token": token},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise QueryError(detail) from exc
    except OSError as exc:
        raise QueryError(
            f"{busy}, and its query endpoint (port {port}) does not answer: {exc}. "
            "It may be busy or hung: retry, or stop it."
        ) from exc
    return QueryResult(body["columns"], [tuple(r) for r in body["rows"]])
