"""Store fixtures: one embedded chDB engine per test process (chDB allows one data path per
process), and a fresh database per test inside it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from streams.config import Settings
from streams.store.client import Store


@pytest.fixture(scope="session")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings whose store is a chDB engine under a session temp dir."""
    return Settings(data_dir=tmp_path_factory.mktemp("fundwatch-data"))


@pytest.fixture(scope="session")
def _store_engine(store_settings: Settings) -> Iterator[Store]:
    store = Store(store_settings).open()  # holds the process lock for the session
    yield store
    store.close()


@pytest.fixture
def store(_store_engine: Store, store_settings: Settings) -> Iterator[Store]:
    """An open store on a database of its own, with the FundWatch schema."""
    db = Store(store_settings, database=f"t_{uuid.uuid4().hex[:10]}").open(lock=False)
    db.ensure_schema()
    yield db
    db.client.command(f"DROP DATABASE IF EXISTS `{db.database}`")
    db.close()
