"""Every store adapter passes the one contract suite shipped in referralkit.testing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from referralkit.storage import MemoryStore, ReferralStore, open_store
from referralkit.storage.sqlite import SQLiteStore
from referralkit.testing.contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[ReferralStore]:
        yield MemoryStore()


class TestSQLiteFileStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[ReferralStore]:
        store = open_store(f"sqlite:///{tmp_path / 'referrals.db'}")
        yield store
        store.close()


class TestSQLiteMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> Iterator[ReferralStore]:
        store = SQLiteStore(":memory:")
        yield store
        store.close()
