"""The worker's flush before acknowledging: it drains faust's buffer of table writes, and never
spins forever when that buffer cannot drain (a stopping worker, an unreachable broker)."""

from __future__ import annotations

import asyncio

import pytest

from streams.worker.app import ChangelogNotFlushed, _drain


class FakeBuffer:
    def __init__(self, size: int, sends_per_flush: int, should_stop: bool = False) -> None:
        self.size, self.sends, self.should_stop = size, sends_per_flush, should_stop
        self.flushes = 0

    async def flush(self) -> None:  # like faust's flush_atmost: may return with messages left
        self.flushes += 1
        self.size = max(0, self.size - self.sends)
        await asyncio.sleep(0)


class FakeProducer:
    def __init__(self, buffer: FakeBuffer) -> None:
        self.buffer, self.flushed = buffer, 0

    async def flush(self) -> None:
        self.flushed += 1


def test_drain_loops_until_the_buffer_is_empty() -> None:
    producer = FakeProducer(FakeBuffer(size=10, sends_per_flush=3))
    asyncio.run(_drain(producer))
    assert producer.buffer.size == 0 and producer.buffer.flushes == 4 and producer.flushed == 1


def test_drain_raises_when_the_buffer_is_stopping() -> None:
    producer = FakeProducer(FakeBuffer(size=5, sends_per_flush=0, should_stop=True))
    with pytest.raises(ChangelogNotFlushed, match="5 table writes not sent"):
        asyncio.run(_drain(producer))
    assert producer.flushed == 0  # nothing acknowledged after this


def test_drain_raises_after_its_timeout() -> None:
    producer = FakeProducer(FakeBuffer(size=5, sends_per_flush=0))
    with pytest.raises(ChangelogNotFlushed):
        asyncio.run(_drain(producer, timeout_s=0.05))
