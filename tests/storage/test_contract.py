"""Every store adapter passes the one contract suite shipped in referralkit.testing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

from referralkit import Actor, FakeClock, ReferralDesk, Role, ValidationError
from referralkit.storage import MemoryStore, ReferralStore, open_store
from referralkit.storage.sqlite import SQLiteStore
from referralkit.testing import sample_request
from referralkit.testing.contract import StoreContract

ACTOR = Actor("contract-test", {Role.COORDINATOR})


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self) -> ReferralStore:
        return MemoryStore()


class DefaultsStore(MemoryStore):
    """A memory store using the interface's default ``count``, ``export`` and
    ``restore_many``: what a third-party adapter gets without writing them."""

    count = ReferralStore.count
    export = ReferralStore.export
    restore_many = ReferralStore.restore_many


class TestDerivedDefaults(StoreContract):
    """The defaults ReferralStore derives from the abstract methods meet the contract."""

    @pytest.fixture
    def store(self) -> ReferralStore:
        return DefaultsStore()

    def test_default_restore_checks_the_replay(self, store: ReferralStore) -> None:
        """The default restore_many replays each history, so it refuses a snapshot that is
        not the replay of its events (the adapters leave that check to load_dump)."""
        desk = ReferralDesk(store, clock=FakeClock(), new_id=lambda: "r-1")
        made = desk.intake(ACTOR, sample_request())
        history = list(store.export())
        other = DefaultsStore()
        with pytest.raises(ValidationError):
            other.restore_many([(attrs.evolve(made, owner="edited"), history[0][1])])
        other.restore_many(history)
        assert list(other.export()) == history


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


class TestPostgresStore(StoreContract):
    @pytest.fixture
    def store(self, postgres_schema: str) -> Iterator[ReferralStore]:
        store = open_store(postgres_schema)
        yield store
        store.close()


class UnversionedStore(MemoryStore):
    """An adapter written before 0.2: it keeps no rule versions (the interface defaults)."""

    save_rule_version = ReferralStore.save_rule_version  # type: ignore[assignment]
    find_rule_version = ReferralStore.find_rule_version  # type: ignore[assignment]
    record_policy_use = ReferralStore.record_policy_use  # type: ignore[assignment]
    policy_in_force = ReferralStore.policy_in_force  # type: ignore[assignment]
    rule_versions = ReferralStore.rule_versions  # type: ignore[assignment]
    policy_uses = ReferralStore.policy_uses  # type: ignore[assignment]


class TestUnversionedStore(StoreContract):
    """An adapter that keeps no rule versions says so, and passes the rest of the contract."""

    keeps_rule_versions = False

    @pytest.fixture
    def store(self) -> ReferralStore:
        return UnversionedStore()


def test_the_contract_holds_adapters_to_rule_versions() -> None:
    """The rule-version tests fail an adapter that claims to keep them and does not."""
    contract = StoreContract()
    with pytest.raises(NotImplementedError):
        contract.test_rule_version_saved_once_and_found(UnversionedStore())
    with pytest.raises(NotImplementedError):
        contract.test_policy_use_ordering(UnversionedStore())
