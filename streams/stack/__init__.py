"""The local stack: a single-node KRaft Kafka broker run from Maven jars, and topic management.

`fundwatch infra install|up|down|status` (streams.stack.cli) drives it; tests use
`local_kafka.ensure_broker` and `topics.ensure_topics` directly.
"""

from __future__ import annotations


class StackError(RuntimeError):
    """A failure the user can act on. `str()` is one line; `details` holds e.g. a log excerpt."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


__all__ = ["StackError"]
