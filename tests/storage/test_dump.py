"""JSON-lines dumps: a dump round-trips to an equal store in every adapter, byte for byte, and a
bad dump is refused with the line and field named, never a value."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from referralkit import (
    Actor,
    ConcurrencyError,
    FakeClock,
    MemoryStore,
    Query,
    ReferralDesk,
    ReferralStore,
    Role,
    StorageError,
    ValidationError,
    synth,
)
from referralkit.storage import DUMP_FORMAT, dump, load_dump, open_store

TEAM = (
    Actor("dump-coordinator", {Role.COORDINATOR}),
    Actor("dump-scheduler", {Role.SCHEDULER}),
    Actor("dump-specialist", {Role.SPECIALIST}),
    Actor("dump-referrer", {Role.REFERRER}),
)


@pytest.fixture(scope="module")
def lines() -> list[str]:
    """The dump of a simulated desk (60 requests, three weeks): rich histories with
    appointments, documents, communications, holds and closures."""
    clock = FakeClock(synth.DEFAULT_START)
    store = MemoryStore()
    desk = ReferralDesk(store, clock=clock, new_id=synth.id_factory(11))
    providers = synth.directory(11)
    requests = synth.population(60, 11, synth.DEFAULT_START, providers=providers)
    synth.simulate(desk, TEAM, clock, requests, weeks=3, seed=11, providers=providers)
    out = io.StringIO()
    assert dump(store, out) == store.count() > 50
    return out.getvalue().splitlines(keepends=True)


def _histories(lines: list[str]) -> list[str]:
    """The referral lines of a dump (after its header and its provenance lines)."""
    return [line for line in lines[1:] if line.startswith('{"events"')]


def dumped(store: ReferralStore) -> list[str]:
    out = io.StringIO()
    dump(store, out)
    return out.getvalue().splitlines(keepends=True)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReferralStore]:
    """An empty store of each adapter."""
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'copy.db'}"
    else:
        url = request.getfixturevalue("postgres_schema")
    store = open_store(url)
    yield store
    store.close()


class TestRoundTrip:
    def test_dump_load_dump_gives_identical_lines(
        self, lines: list[str], target: ReferralStore
    ) -> None:
        """memory → dump → adapter → dump: the same lines, byte for byte."""
        assert load_dump(target, lines) == len(_histories(lines))
        assert dumped(target) == lines

    def test_the_loaded_store_is_equal(self, lines: list[str], target: ReferralStore) -> None:
        """Every snapshot and every event loads back equal, and queries agree (loaded in
        batches of 7, so several transactions)."""
        load_dump(target, lines, batch=7)
        reference = _reload(lines)
        for referral in reference.query():
            assert target.load(referral.id) == referral
            assert target.events(referral.id) == reference.events(referral.id)
        for query in (Query(), Query(open_only=True), Query(order="updated", limit=10)):
            assert target.query(query) == reference.query(query)

    def test_file_round_trip(self, lines: list[str], tmp_path: Path) -> None:
        """A dump written to a file and read back from it (the CLI's path)."""
        path = tmp_path / "referrals.jsonl"
        path.write_text("".join(lines), encoding="ascii")
        copy = MemoryStore()
        with path.open(encoding="ascii") as file:
            load_dump(copy, file)
        with path.open("w", encoding="ascii") as file:
            dump(copy, file)
        assert path.read_text(encoding="ascii") == "".join(lines)

    def test_dump_is_ascii_and_sorted(self, lines: list[str]) -> None:
        assert all(line.isascii() for line in lines)
        assert json.loads(lines[0]) == {"format": DUMP_FORMAT, "version": 3}
        ids = [json.loads(line)["referral"]["id"] for line in _histories(lines)]
        assert ids == sorted(ids)

    def test_loading_over_existing_referrals_conflicts(self, lines: list[str]) -> None:
        store = _reload(lines)
        with pytest.raises(ConcurrencyError):
            load_dump(store, [lines[0], *_histories(lines)[:2]])


def _reload(lines: list[str]) -> MemoryStore:
    store = MemoryStore()
    load_dump(store, lines)
    return store


class TestBadDumps:
    CANARY = "PHI-CANARY-19610402"

    def test_no_header(self, lines: list[str]) -> None:
        for bad in ([], lines[1:], ['{"format":"referralkit-dump","version":4}\n']):
            with pytest.raises(ValidationError) as info:
                load_dump(MemoryStore(), bad)
            assert info.value.path == "line 1"

    @pytest.mark.parametrize(
        ("text", "path"),
        [
            ("not json", "line 2"),
            ("[1, 2]", "line 2"),
            ('{"referral": {}}', "line 2"),
            ('{"referral": {}, "events": {}}', "line 2: events"),
        ],
    )
    def test_malformed_lines(self, lines: list[str], text: str, path: str) -> None:
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [lines[0], text])
        assert info.value.path == path

    def test_bad_field_names_line_and_field_not_value(self, lines: list[str]) -> None:
        data = json.loads(_histories(lines)[0])
        data["referral"]["patient"]["birth_date"] = self.CANARY
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [lines[0], json.dumps(data)])
        assert info.value.path == "line 2: referral.patient.birth_date"
        assert self.CANARY not in str(info.value)

    def test_bad_event_names_its_index(self, lines: list[str]) -> None:
        data = json.loads(_histories(lines)[0])
        data["events"][1]["at"] = self.CANARY
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [lines[0], json.dumps(data)])
        assert info.value.path == "line 2: events[1].at"
        assert self.CANARY not in str(info.value)

    def test_snapshot_that_is_not_the_replay(self, lines: list[str]) -> None:
        """A snapshot edited behind the events' back is refused (unless verify=False)."""
        data = json.loads(_histories(lines)[0])
        data["referral"]["reason"] = self.CANARY
        edited = [lines[0], json.dumps(data)]
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), edited)
        assert info.value.path == "line 2"
        assert self.CANARY not in str(info.value)
        unchecked = MemoryStore()
        assert load_dump(unchecked, edited, verify=False) == 1

    def test_history_with_a_gap(self, lines: list[str]) -> None:
        data = json.loads(next(line for line in _histories(lines) if '"version":2' in line))
        data["events"] = [e for e in data["events"] if e["version"] != 2]
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [lines[0], json.dumps(data)])
        assert info.value.path.startswith("line 2: events[")

    def test_bad_arguments(self, lines: list[str]) -> None:
        with pytest.raises(ValidationError):
            load_dump(MemoryStore(), lines, batch=0)
        with pytest.raises(ValidationError):
            load_dump("memory://", lines)  # type: ignore[arg-type]
        with pytest.raises(ValidationError):
            dump("memory://", io.StringIO())  # type: ignore[arg-type]

    def test_blank_lines_are_skipped(self, lines: list[str]) -> None:
        store = MemoryStore()
        assert load_dump(store, [lines[0], "\n", _histories(lines)[0], "  \n"]) == 1


class TestProvenance:
    """Rule versions and policy uses travel with the referrals (dump version 2)."""

    def test_explain_after_load_into_sqlite(self, tmp_path: Path) -> None:
        """dump → load into a fresh SQLite store → ``desk.explain`` reproduces the stored
        decision with the stored rules, and the policies in force are the same."""
        start = synth.DEFAULT_START
        source = MemoryStore()
        desk = ReferralDesk(source, clock=FakeClock(start))
        made = desk.intake(TEAM[0], next(iter(synth.population(1, 5, start))))
        lines = dumped(source)
        assert any('"rule_version"' in line for line in lines)
        assert any('"policy_use"' in line for line in lines)
        copy = open_store(f"sqlite:///{tmp_path / 'copy.db'}")
        try:
            assert load_dump(copy, lines) == 1
            assert copy.rule_versions() == source.rule_versions()
            assert copy.policy_uses() == source.policy_uses()
            for kind in ("coverage", "urgency"):
                assert copy.policy_in_force(kind, start) == source.policy_in_force(kind, start)
            auditor = Actor("dump-auditor", {Role.AUDITOR})
            explained = ReferralDesk(copy, clock=FakeClock(start)).explain(auditor, made.id)
            assert explained.coverage is not None
            assert explained.coverage.reproduced is True
            assert explained.urgency is not None
            assert explained.urgency.reproduced is True
            assert "keeps no" not in str(explained)
            # the same, but for the access log's record of the explain
            assert [line for line in dumped(copy) if '"explain"' not in line] == lines
        finally:
            copy.close()

    def test_restored_into_every_store(self, target: ReferralStore) -> None:
        start = synth.DEFAULT_START
        source = MemoryStore()
        ReferralDesk(source, clock=FakeClock(start)).intake(
            TEAM[0], next(iter(synth.population(1, 5, start)))
        )
        lines = dumped(source)
        load_dump(target, lines)
        assert target.rule_versions() == source.rule_versions()
        assert target.policy_uses() == source.policy_uses()
        assert dumped(target) == lines

    def test_version_1_dumps_still_load(self, lines: list[str]) -> None:
        old = ['{"format":"referralkit-dump","version":1}\n']
        old += _histories(lines)
        store = _reload(old)
        assert store.count() == len(old) - 1
        assert store.rule_versions() == []
        # a version-1 dump holds referrals only
        with pytest.raises(ValidationError):
            load_dump(MemoryStore(), [old[0], next(x for x in lines if '"rule_version"' in x)])

    @pytest.mark.parametrize(
        ("text", "path"),
        [
            ('{"rule_version": {}}', "line 2: rule_version"),
            ('{"rule_version": 1, "x": 2}', "line 2: rule_version"),
            (
                '{"policy_use": {"at": "x", "digest": "0", "kind": "urgency"}}',
                "line 2: policy_use.digest",
            ),
            (
                '{"policy_use": {"at": "x", "digest": "' + "0" * 64 + '", "kind": "urgency"}}',
                "line 2: policy_use.at",
            ),
            (
                '{"policy_use": {"at": "2026-01-01T00:00:00", "digest": "'
                + "0" * 64
                + '", "kind": "urgency"}}',
                "line 2: policy_use.at",
            ),
            (
                '{"policy_use": {"at": "2026-01-01T00:00:00+00:00", "digest": "'
                + "0" * 64
                + '", "kind": "x"}}',
                "line 2: policy_use.kind",
            ),
        ],
    )
    def test_bad_provenance_lines(self, text: str, path: str) -> None:
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), ['{"format":"referralkit-dump","version":2}\n', text])
        assert info.value.path == path

    def test_bad_rule_version_names_line_and_field(self, lines: list[str]) -> None:
        line = next(x for x in lines if '"rule_version"' in x)
        data = json.loads(line)
        data["rule_version"]["document"] += " "
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [lines[0], json.dumps(data)])
        assert info.value.path == "line 2: rule_version.digest"
        data["rule_version"]["name"] = 5
        with pytest.raises(ValidationError) as info:
            load_dump(MemoryStore(), [lines[0], json.dumps(data)])
        assert info.value.path == "line 2: rule_version.name"

    def test_a_store_without_rule_versions(self, lines: list[str]) -> None:
        """An adapter that keeps no rule versions dumps none, and refuses a dump holding
        them with a clear error instead of dropping them."""

        class Unversioned(MemoryStore):
            rule_versions = ReferralStore.rule_versions  # type: ignore[assignment]
            policy_uses = ReferralStore.policy_uses  # type: ignore[assignment]
            save_rule_version = ReferralStore.save_rule_version  # type: ignore[assignment]
            record_policy_use = ReferralStore.record_policy_use  # type: ignore[assignment]

        store = Unversioned()
        load_dump(store, [lines[0], *_histories(lines)])
        assert dumped(store) == [lines[0], *_histories(lines)]
        for kind in ('"rule_version"', '"policy_use"'):
            line = next(x for x in lines if x.startswith("{" + kind))
            with pytest.raises(StorageError, match="keeps none"):
                load_dump(Unversioned(), [lines[0], line])
