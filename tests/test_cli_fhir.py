"""referralkit fhir import / export: NDJSON Bundles in and out of a store (a refused file writes
nothing, an import writes in batches with bounded memory), idempotent by the ServiceRequest
identifier, without tracebacks or PHI in the output."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import re
import sys
import tempfile
import tracemalloc
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit import ReferralKitError, cli
from referralkit.errors import StorageError
from referralkit.events import replay
from referralkit.storage import Change, open_store
from referralkit.storage import sqlite as sqlite_module
from referralkit.storage.sqlite import SQLiteStore

pytest.importorskip("fhir.resources")

from referralkit.interop import fhir  # needs the fhir extra

CANARY = "CANARY-PHI-7f3a"
DEMO_COUNT = 12


def run_main(argv: list[str]) -> tuple[int, str, str]:
    """Run ``main`` with redirected streams: status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def count(url: str) -> int:
    with open_store(url) as store:
        return store.count()


@attrs.frozen
class Demo:
    """A small demo database and its export."""

    url: str
    ids: list[str]
    lines: list[str]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """``referralkit demo`` into a SQLite file, then ``fhir export`` of it."""
    url = url_of(tmp_path_factory.mktemp("fhir-demo") / "demo.db")
    status, _, stderr = run_main(
        ["demo", "--count", str(DEMO_COUNT), "--weeks", "3", "--db", url, "--progress", "never"]
    )
    assert status == 0, stderr
    with open_store(url) as store:
        ids = sorted(r.id for r in store.query())
    status, stdout, stderr = run_main(["fhir", "export", "--db", url])
    assert status == 0, stderr
    return Demo(url, ids, stdout.splitlines())


@pytest.fixture(scope="module")
def many(demo: Demo) -> list[str]:
    """200 Bundle lines of distinct referrals (ids and identifiers), made from the demo's."""
    referrals = [fhir.from_fhir(json.loads(line)) for line in demo.lines]
    return [
        json.dumps(
            fhir.to_fhir(
                attrs.evolve(
                    referrals[i % len(referrals)], id=f"many-{i:03}", source_id=f"MANY-{i:03}"
                )
            ),
            separators=(",", ":"),
        )
        for i in range(200)
    ]


@pytest.fixture
def saves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every ``save_many`` call (one transaction each) to a SQLite store."""
    sizes: list[int] = []
    save_many = SQLiteStore.save_many

    def spy(self: SQLiteStore, changes: list[Change]) -> None:
        sizes.append(len(changes))
        save_many(self, changes)

    monkeypatch.setattr(SQLiteStore, "save_many", spy)
    return sizes


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def without_patient(line: str) -> str:
    """The Bundle on ``line`` with its Patient entry removed."""
    bundle = json.loads(line)
    bundle["entry"] = [
        e for e in bundle["entry"] if e.get("resource", {}).get("resourceType") != "Patient"
    ]
    return json.dumps(bundle)


def with_canary(line: str) -> str:
    """The Bundle on ``line`` with the Patient's family name set to the canary."""
    bundle = json.loads(line)
    for entry in bundle["entry"]:
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient":
            for name in resource.get("name", []):
                name["family"] = CANARY
    text = json.dumps(bundle)
    assert CANARY in text
    return text


class TestRoundTrip:
    """Export, import into a fresh store, export again."""

    def test_export_is_one_compact_bundle_per_referral_in_id_order(self, demo: Demo) -> None:
        assert len(demo.lines) == DEMO_COUNT == len(demo.ids)
        for line in demo.lines:
            bundle = json.loads(line)
            assert bundle["resourceType"] == "Bundle"
            assert bundle["type"] == "transaction"
            assert line == json.dumps(bundle, separators=(",", ":"))
        assert [fhir.from_fhir(json.loads(line)).id for line in demo.lines] == demo.ids

    def test_export_without_validation_writes_the_same_lines(self, demo: Demo) -> None:
        status, stdout, stderr = run_main(["fhir", "export", "--db", demo.url, "--no-validate"])
        assert status == 0, stderr
        assert stdout.splitlines() == demo.lines

    def test_round_trip(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "demo.ndjson", demo.lines)
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert status == 0, stderr
        assert stdout == f"imported {DEMO_COUNT} referrals (0 already present)\n"
        assert count(url) == DEMO_COUNT
        status, again, stderr = run_main(["fhir", "export", "--db", url])
        assert status == 0, stderr
        lines = again.splitlines()
        assert len(lines) == DEMO_COUNT
        for before, after in zip(demo.lines, lines, strict=True):
            original = fhir.from_fhir(json.loads(before))
            assert fhir.from_fhir(json.loads(after)) == attrs.evolve(original, version=1)

    def test_each_import_is_a_new_history(self, demo: Demo, tmp_path: Path) -> None:
        """One created event by fhir-import at the referral's updated_at; it replays."""
        path = write(tmp_path / "demo.ndjson", demo.lines[:3])
        url = url_of(tmp_path / "fresh.db")
        assert run_main(["fhir", "import", str(path), "--db", url])[0] == 0
        with open_store(url) as store:
            for line in demo.lines[:3]:
                original = fhir.from_fhir(json.loads(line))
                stored = store.load(original.id)
                events = store.events(original.id)
                assert stored == attrs.evolve(original, version=1)
                assert [(e.version, e.index, e.type, e.actor) for e in events] == [
                    (1, 0, "created", "fhir-import")
                ]
                assert events[0].at == original.updated_at
                assert replay(events) == stored
                assert stored.source_id == original.source_id

    def test_second_import_adds_nothing(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "demo.ndjson", demo.lines)
        url = url_of(tmp_path / "fresh.db")
        assert run_main(["fhir", "import", str(path), "--db", url])[0] == 0
        status, stdout, _ = run_main(["fhir", "import", str(path), "--db", url])
        assert status == 0
        assert stdout == f"imported 0 referrals ({DEMO_COUNT} already present)\n"
        assert count(url) == DEMO_COUNT

    def test_import_into_the_source_store_adds_nothing(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "demo.ndjson", demo.lines[:4])
        status, stdout, _ = run_main(["fhir", "import", str(path), "--db", demo.url])
        assert (status, stdout) == (0, "imported 0 referrals (4 already present)\n")
        assert count(demo.url) == DEMO_COUNT

    def test_duplicates_within_a_file(self, demo: Demo, tmp_path: Path) -> None:
        """The same Bundle twice, and another id under the same identifier: stored once."""
        bundle = json.loads(demo.lines[0])
        referral = fhir.from_fhir(bundle)
        renamed = fhir.to_fhir(attrs.evolve(referral, id="another-id"))
        assert fhir.from_fhir(renamed).source_id == referral.source_id
        lines = [demo.lines[0], "", demo.lines[0], json.dumps(renamed), demo.lines[1]]
        url = url_of(tmp_path / "fresh.db")
        status, stdout, _ = run_main(
            ["fhir", "import", str(write(tmp_path / "dup.ndjson", lines)), "--db", url]
        )
        assert (status, stdout) == (0, "imported 2 referrals (2 already present)\n")
        assert count(url) == 2

    def test_same_id_other_identifier_is_present(self, demo: Demo, tmp_path: Path) -> None:
        referral = fhir.from_fhir(json.loads(demo.lines[0]))
        other = fhir.to_fhir(attrs.evolve(referral, source_id="ANOTHER-SOURCE"))
        path = write(tmp_path / "one.ndjson", [json.dumps(other)])
        status, stdout, _ = run_main(["fhir", "import", str(path), "--db", demo.url])
        assert (status, stdout) == (0, "imported 0 referrals (1 already present)\n")

    def test_without_identifier_idempotent_by_id(self, demo: Demo, tmp_path: Path) -> None:
        referral = fhir.from_fhir(json.loads(demo.lines[0]))
        bundle = fhir.to_fhir(attrs.evolve(referral, source_id=None))
        assert fhir.from_fhir(bundle).source_id is None
        path = write(tmp_path / "anonymous.ndjson", [json.dumps(bundle)] * 2)
        url = url_of(tmp_path / "fresh.db")
        status, stdout, _ = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 1 referrals (1 already present)\n")
        status, stdout, _ = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 0 referrals (2 already present)\n")
        assert count(url) == 1

    def test_pretty_printed_bundle(self, demo: Demo, tmp_path: Path) -> None:
        path = tmp_path / "one.json"
        path.write_text("\n" + json.dumps(json.loads(demo.lines[2]), indent=2), encoding="utf-8")
        assert path.read_text(encoding="utf-8").count("\n") > 20
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 1 referrals (0 already present)\n"), stderr
        with open_store(url) as store:
            assert [r.id for r in store.query()] == [demo.ids[2]]

    def test_stdin(self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        data = "\ufeff" + "\n".join(demo.lines[:5]) + "\n\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode("utf-8"))))
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", "-", "--db", url])
        assert (status, stdout) == (0, "imported 5 referrals (0 already present)\n"), stderr
        assert count(url) == 5

    def test_bom_crlf_and_blank_lines(self, demo: Demo, tmp_path: Path) -> None:
        path = tmp_path / "windows.ndjson"
        text = "\ufeff\r\n" + "\r\n\r\n".join(demo.lines[:3]) + "\r\n  \r\n"
        path.write_bytes(text.encode("utf-8"))
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 3 referrals (0 already present)\n"), stderr

    def test_pretty_printed_bundle_with_bom_and_crlf(self, demo: Demo, tmp_path: Path) -> None:
        path = tmp_path / "one.json"
        pretty = json.dumps(json.loads(demo.lines[4]), indent=1).replace("\n", "\r\n")
        path.write_bytes(("\ufeff" + pretty + "\r\n").encode("utf-8"))
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 1 referrals (0 already present)\n"), stderr
        with open_store(url) as store:
            assert [r.id for r in store.query()] == [demo.ids[4]]

    def test_stdin_is_spooled_to_a_temporary_file_then_deleted(
        self,
        many: list[str],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        saves: list[int],
    ) -> None:
        """Standard input is read once, into a temporary file that both passes read."""
        spools: list[Any] = []
        temporary_file = tempfile.TemporaryFile

        def spool(*args: Any, **kwargs: Any) -> Any:
            spools.append(temporary_file(*args, **kwargs))
            return spools[-1]

        monkeypatch.setattr(tempfile, "TemporaryFile", spool)
        monkeypatch.setattr(cli, "IMPORT_BATCH", 2)
        data = "\n".join(many[:5]) + "\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode("utf-8"))))
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", "-", "--db", url])
        assert (status, stdout) == (0, "imported 5 referrals (0 already present)\n"), stderr
        assert saves == [2, 2, 1]
        assert len(spools) == 1
        assert spools[0].closed

    def test_stdin_as_text(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A text-only stdin (no binary buffer) works too."""
        monkeypatch.setattr(sys, "stdin", io.StringIO(demo.lines[0]))
        url = url_of(tmp_path / "fresh.db")
        assert run_main(["fhir", "import", "-", "--db", url])[:2] == (
            0,
            "imported 1 referrals (0 already present)\n",
        )

    def test_empty_file(self, tmp_path: Path) -> None:
        path = tmp_path / "empty.ndjson"
        path.write_text("\n  \n", encoding="utf-8")
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout, stderr) == (0, "imported 0 referrals (0 already present)\n", "")

    def test_progress_off_a_terminal_is_the_final_line(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "demo.ndjson", demo.lines[:4])
        url = url_of(tmp_path / "fresh.db")
        _, _, stderr = run_main(["fhir", "import", str(path), "--db", url])
        bar = "[" + "#" * 30 + "] 4/4 bundles"
        assert stderr == f"{bar} checked\n{bar} stored\n"
        _, _, stderr = run_main(["fhir", "export", "--db", url])
        assert stderr == "[" + "#" * 30 + "] 4/4 referrals\n"


class TestImportErrors:
    """A bad file: exit 2, the line and the path named, nothing written, no PHI, no traceback."""

    def check_refused(self, path: Path, tmp_path: Path, expected: str) -> tuple[str, str]:
        url = url_of(tmp_path / "target.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert status == 2
        assert stdout == ""
        assert stderr.startswith(f"referralkit: error: {path}{expected}"), stderr
        assert stderr.count("\n") == 1
        assert "Traceback" not in stderr
        assert CANARY not in stdout + stderr
        assert count(url) == 0
        return stdout, stderr

    def test_broken_line(self, demo: Demo, tmp_path: Path) -> None:
        broken = with_canary(demo.lines[2])[: len(demo.lines[2]) // 2]
        assert CANARY in broken
        path = write(
            tmp_path / "broken.ndjson",
            [with_canary(demo.lines[0]), demo.lines[1], broken, demo.lines[3]],
        )
        _, stderr = self.check_refused(path, tmp_path, " line 3: not valid JSON")
        assert stderr == f"referralkit: error: {path} line 3: not valid JSON\n"

    def test_bundle_without_patient(self, demo: Demo, tmp_path: Path) -> None:
        path = write(
            tmp_path / "nopatient.ndjson",
            [with_canary(demo.lines[0]), without_patient(with_canary(demo.lines[1]))],
        )
        _, stderr = self.check_refused(path, tmp_path, " line 2: ")
        expected = fhir.from_fhir  # the same error the library raises, with the line in front
        with pytest.raises(fhir.FhirError) as caught:
            expected(json.loads(without_patient(demo.lines[1])))
        assert caught.value.path
        assert stderr == (
            f"referralkit: error: {path} line 2: {caught.value.path}: {caught.value.reason}\n"
        )

    def test_later_bundle_without_patient_writes_nothing(self, demo: Demo, tmp_path: Path) -> None:
        """Valid bundles before the bad one are not written either (all or nothing)."""
        lines = [*demo.lines[:5], without_patient(demo.lines[5])]
        self.check_refused(write(tmp_path / "late.ndjson", lines), tmp_path, " line 6: ")

    def test_broken_pretty_printed_bundle_names_its_line(self, demo: Demo, tmp_path: Path) -> None:
        lines = json.dumps(json.loads(with_canary(demo.lines[0])), indent=2).split("\n")
        lines.insert(7, '"oops": ,')
        path = write(tmp_path / "broken.json", lines)
        self.check_refused(path, tmp_path, " line 8: not valid JSON")

    def test_refused_last_line_of_a_file_longer_than_a_batch_writes_nothing(
        self,
        many: list[str],
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        saves: list[int],
    ) -> None:
        """Every Bundle is checked before the first batch is written."""
        monkeypatch.setattr(cli, "IMPORT_BATCH", 3)
        lines = [*many[:10], without_patient(with_canary(many[10]))]
        self.check_refused(write(tmp_path / "late.ndjson", lines), tmp_path, " line 11: ")
        assert saves == []

    def test_refused_stdin_writes_nothing(
        self, many: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(cli, "IMPORT_BATCH", 2)
        data = "\n".join([*many[:6], "", without_patient(many[6])]) + "\n"
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode("utf-8"))))
        url = url_of(tmp_path / "target.db")
        status, stdout, stderr = run_main(["fhir", "import", "-", "--db", url])
        assert (status, stdout) == (2, "")
        assert stderr.startswith("referralkit: error: <stdin> line 8: "), stderr
        assert count(url) == 0

    def test_broken_first_line_of_ndjson(self, demo: Demo, tmp_path: Path) -> None:
        """A first line that is not JSON, followed by Bundles: NDJSON, broken on line 1."""
        broken = with_canary(demo.lines[0])[: len(demo.lines[0]) // 2]
        path = write(tmp_path / "broken.ndjson", ["", broken, demo.lines[1], demo.lines[2]])
        _, stderr = self.check_refused(path, tmp_path, " line 2: not valid JSON")
        assert stderr == f"referralkit: error: {path} line 2: not valid JSON\n"

    @pytest.mark.parametrize("first", [True, False])
    def test_too_deeply_nested(self, demo: Demo, tmp_path: Path, first: bool) -> None:
        """JSON nested deeper than the parser goes is not valid JSON, not a traceback."""
        deep = "[" * 100_000 + "]" * 100_000
        lines = [deep] if first else [demo.lines[0], deep]
        path = write(tmp_path / "deep.ndjson", lines)
        self.check_refused(path, tmp_path, f" line {len(lines)}: not valid JSON")

    def test_not_an_object(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "list.ndjson", [demo.lines[0], json.dumps([CANARY])])
        self.check_refused(path, tmp_path, " line 2: expected a JSON object (a FHIR Bundle)")

    def test_not_a_bundle(self, tmp_path: Path) -> None:
        path = write(tmp_path / "patient.ndjson", [json.dumps({"resourceType": "Patient"})])
        self.check_refused(path, tmp_path, " line 1")

    def test_not_utf8(self, demo: Demo, tmp_path: Path) -> None:
        path = tmp_path / "latin1.ndjson"
        path.write_bytes(demo.lines[0].encode() + b"\n" + CANARY.encode() + b"\xe9\n")
        self.check_refused(path, tmp_path, " line 2: not UTF-8 text")

    def test_not_utf8_in_a_pretty_printed_bundle(self, demo: Demo, tmp_path: Path) -> None:
        lines = json.dumps(json.loads(demo.lines[0]), indent=2).split("\n")
        path = tmp_path / "latin1.json"
        path.write_bytes(
            "\n".join(lines[:5]).encode()
            + b'\n"x\xe9": 1,\n'
            + b"\n".join(line.encode() for line in lines[5:])
        )
        self.check_refused(path, tmp_path, " line 6: not UTF-8 text")

    @pytest.mark.parametrize("fails", ["lines", "read"])
    def test_read_error_half_way(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fails: str
    ) -> None:
        """A file that opens but cannot be read to its end."""
        pretty = json.dumps(json.loads(demo.lines[0]), indent=2).encode()

        class Failing(io.BytesIO):
            def __next__(self) -> bytes:
                if fails == "lines":
                    raise OSError(5, "Input/output error")
                return super().__next__()

            def read(self, size: int | None = -1) -> bytes:
                raise OSError(5, "Input/output error")

        monkeypatch.setattr(cli, "open", lambda *args: Failing(pretty), raising=False)
        path = tmp_path / "unreadable.json"
        _, stderr = self.check_refused(path, tmp_path, ": cannot read it")
        assert stderr == f"referralkit: error: {path}: cannot read it (Input/output error)\n"

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nowhere.ndjson"
        _, stderr = self.check_refused(path, tmp_path, ": cannot read it")
        assert stderr == f"referralkit: error: {path}: cannot read it (No such file or directory)\n"

    def test_unexpected_failure_is_named_not_quoted(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An error that is not the library's own is reported by class, its message unsaid."""

        def boom(bundle: Any, **_: Any) -> None:
            raise KeyError(CANARY)

        monkeypatch.setattr(fhir, "from_fhir", boom)
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        self.check_refused(path, tmp_path, " line 1: cannot be converted (KeyError)")

    def test_not_a_referral(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(fhir, "from_fhir", lambda bundle, **_: None)
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        self.check_refused(path, tmp_path, " line 1: cannot be converted (not a referral)")

    def test_snapshot_must_replay(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Checked as each batch is built: a batch holding such a referral is not written."""
        monkeypatch.setattr(cli, "replay", lambda events: None)
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        url = url_of(tmp_path / "target.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert status == 2
        assert stdout == ""
        assert stderr.endswith(
            f"referralkit: error: {path} line 1: the referral does not replay from its created"
            " event\n"
        )
        assert count(url) == 0

    def test_bad_store_url(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        status, _, stderr = run_main(["fhir", "import", str(path), "--db", "nope://"])
        assert status == 2
        assert stderr.endswith(
            "referralkit: error: url: unsupported store scheme 'nope' "
            "(supported: memory, sqlite, postgresql)\n"
        )


class TestBatches:
    """pass 1 checks every Bundle, pass 2 writes IMPORT_BATCH referrals per transaction."""

    def test_several_transactions(
        self, many: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, saves: list[int]
    ) -> None:
        monkeypatch.setattr(cli, "IMPORT_BATCH", 5)
        path = write(tmp_path / "many.ndjson", many[:12])
        url = url_of(tmp_path / "fresh.db")
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 12 referrals (0 already present)\n"), stderr
        assert saves == [5, 5, 2]
        assert count(url) == 12

    def test_default_batch(self, many: list[str], tmp_path: Path, saves: list[int]) -> None:
        assert cli.IMPORT_BATCH == 500
        path = write(tmp_path / "many.ndjson", many)
        url = url_of(tmp_path / "fresh.db")
        assert run_main(["fhir", "import", str(path), "--db", url])[:2] == (
            0,
            "imported 200 referrals (0 already present)\n",
        )
        assert saves == [200]

    def test_duplicates_across_batches(
        self,
        demo: Demo,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        saves: list[int],
    ) -> None:
        """Duplicates of a referral written by an earlier batch, by identifier or by id."""
        monkeypatch.setattr(cli, "IMPORT_BATCH", 2)
        referral = fhir.from_fhir(json.loads(demo.lines[1]))
        same_source = json.dumps(fhir.to_fhir(attrs.evolve(referral, id="another-id")))
        same_id = json.dumps(fhir.to_fhir(attrs.evolve(referral, source_id="ANOTHER")))
        lines = [
            demo.lines[0],
            demo.lines[1],  # batch 1: lines 1, 2
            demo.lines[2],
            demo.lines[0],
            same_source,
            same_id,
            demo.lines[3],  # batch 2: lines 3, 7
            demo.lines[2],
            demo.lines[2],
        ]
        url = url_of(tmp_path / "fresh.db")
        path = write(tmp_path / "dup.ndjson", lines)
        status, stdout, _ = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 4 referrals (5 already present)\n")
        assert saves == [2, 2]
        with open_store(url) as store:
            assert sorted(r.id for r in store.query()) == sorted(demo.ids[:4])

    def test_a_rerun_completes_an_import_stopped_half_way(
        self, many: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A failure while writing keeps the batches written; the same command completes it."""
        monkeypatch.setattr(cli, "IMPORT_BATCH", 4)
        save_many = SQLiteStore.save_many
        calls: list[int] = []

        def second_fails(self: SQLiteStore, changes: list[Change]) -> None:
            calls.append(len(changes))
            if len(calls) == 2:
                raise StorageError("disk full")
            save_many(self, changes)

        path = write(tmp_path / "many.ndjson", many[:10])
        url = url_of(tmp_path / "fresh.db")
        with monkeypatch.context() as patch:
            patch.setattr(SQLiteStore, "save_many", second_fails)
            status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (2, "")
        assert stderr.endswith("referralkit: error: disk full\n")
        assert count(url) == 4
        status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
        assert (status, stdout) == (0, "imported 6 referrals (4 already present)\n"), stderr
        with open_store(url) as store:
            assert sorted(r.id for r in store.query()) == [f"many-{i:03}" for i in range(10)]


class TestMemory:
    """An import keeps one batch of referrals at a time, not the whole file."""

    def test_at_most_a_batch_of_referrals_alive(
        self, many: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The snapshots ``_created`` makes die with their batch (pass 1 keeps none)."""
        monkeypatch.setattr(cli, "IMPORT_BATCH", 5)
        alive: weakref.WeakSet[Any] = weakref.WeakSet()
        most = [0]
        created: Callable[..., Change] = cli._created

        def tracked(*args: Any, **kwargs: Any) -> Change:
            change = created(*args, **kwargs)
            alive.add(change[0])
            most[0] = max(most[0], len(alive))
            return change

        monkeypatch.setattr(cli, "_created", tracked)
        path = write(tmp_path / "many.ndjson", many[:40])
        url = url_of(tmp_path / "fresh.db")
        assert run_main(["fhir", "import", str(path), "--db", url])[:2] == (
            0,
            "imported 40 referrals (0 already present)\n",
        )
        assert 5 <= most[0] <= 6

    def test_peak_traced_memory_does_not_grow_with_the_file(
        self, many: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """200 Bundles of about 17 KiB, 10 per batch: a few MiB at most (holding them all,
        converted, took over 20 MiB)."""
        monkeypatch.setattr(cli, "IMPORT_BATCH", 10)
        path = write(tmp_path / "many.ndjson", many)
        assert path.stat().st_size > 200 * 10_000
        url = url_of(tmp_path / "fresh.db")
        tracemalloc.start()
        try:
            result = run_main(["fhir", "import", str(path), "--db", url])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert result[:2] == (0, "imported 200 referrals (0 already present)\n")
        assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB"


class Digest(io.TextIOBase):
    """A stdout that keeps only a hash and a line count of what is written to it."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.lines = 0

    def write(self, text: str) -> int:
        self.hash.update(text.encode("utf-8"))
        self.lines += text.count("\n")
        return len(text)


def traced_export(url: str) -> tuple[int, Digest]:
    """The peak traced memory of ``fhir export --no-validate`` of ``url``, and its output."""
    sink = Digest()
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
            status = cli.main(["fhir", "export", "--no-validate", "--db", url])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert status == 0
    return peak, sink


class TestExportMemory:
    """An export reads the store in pages and writes each Bundle as it is made."""

    def test_peak_traced_memory_does_not_grow_with_the_store(
        self, many: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Exporting 200 referrals, 10 per page, peaks at about what exporting 50 does (holding
        every referral and every line, as the export once did, took 4 times as much), and
        writes the same lines as a whole export into memory."""
        urls = {}
        for size in (50, 200):
            urls[size] = url_of(tmp_path / f"{size}.db")
            path = write(tmp_path / f"{size}.ndjson", many[:size])
            assert run_main(["fhir", "import", str(path), "--db", urls[size]])[0] == 0
        monkeypatch.setattr(sqlite_module, "_EXPORT_BATCH", 10)
        traced_export(urls[50])  # warm up: imports and caches are not what is measured
        small, _ = traced_export(urls[50])
        large, sink = traced_export(urls[200])
        status, whole, _ = run_main(["fhir", "export", "--no-validate", "--db", urls[200]])
        assert (status, sink.lines) == (0, 200)
        assert sink.hash.hexdigest() == hashlib.sha256(whole.encode("utf-8")).hexdigest()
        assert large < 1.5 * small, f"peak {large / 2**20:.1f} MiB vs {small / 2**20:.1f} MiB"

    def test_a_failure_names_its_referral_after_the_lines_before_it(
        self, demo: Demo, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Bundle that cannot be made stops the export with an error naming the referral;
        the Bundles before it have been written already, in id order."""
        to_fhir = fhir.to_fhir

        def refuse_the_third(referral: Any, *, validate: bool = False) -> Any:
            if referral.id == demo.ids[2]:
                raise fhir.FhirError("entry[0].resource.code", "not a valid code")
            return to_fhir(referral, validate=validate)

        monkeypatch.setattr(fhir, "to_fhir", refuse_the_third)
        status, stdout, stderr = run_main(["fhir", "export", "--db", demo.url])
        assert (status, stdout.splitlines()) == (2, demo.lines[:2])
        assert stderr == (
            f"referralkit: error: referral {demo.ids[2]}: entry[0].resource.code: "
            "not a valid code\n"
        )


class TestExport:
    """referralkit fhir export --id."""

    def test_one_id(self, demo: Demo) -> None:
        status, stdout, _ = run_main(["fhir", "export", "--db", demo.url, "--id", demo.ids[3]])
        assert status == 0
        lines = stdout.splitlines()
        assert len(lines) == 1
        assert lines[0] == demo.lines[3]

    def test_several_ids_in_id_order(self, demo: Demo) -> None:
        argv = ["fhir", "export", "--db", demo.url]
        for referral_id in (demo.ids[5], demo.ids[1], demo.ids[5]):
            argv += ["--id", referral_id]
        status, stdout, _ = run_main(argv)
        assert status == 0
        assert stdout.splitlines() == [demo.lines[1], demo.lines[5]]

    def test_unknown_id(self, demo: Demo) -> None:
        argv = ["fhir", "export", "--db", demo.url, "--id", demo.ids[0], "--id", "no-such-id"]
        status, stdout, stderr = run_main(argv)
        assert status == 2
        assert stdout == ""
        assert stderr == "referralkit: error: no referral with id 'no-such-id'\n"

    def test_empty_store(self, tmp_path: Path) -> None:
        open_store(url_of(tmp_path / "e.db")).close()
        status, stdout, stderr = run_main(["fhir", "export", "--db", url_of(tmp_path / "e.db")])
        assert (status, stdout, stderr) == (0, "", "")

    def test_conversion_error_names_the_referral(
        self, demo: Demo, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(referral: Any, *, validate: bool = False) -> None:
            raise fhir.FhirError("entry[0].resource.code", "not a valid code")

        monkeypatch.setattr(fhir, "to_fhir", refuse)
        status, stdout, stderr = run_main(["fhir", "export", "--db", demo.url])
        assert (status, stdout) == (2, "")
        assert stderr == (
            f"referralkit: error: referral {demo.ids[0]}: entry[0].resource.code: "
            "not a valid code\n"
        )

    def test_unexpected_failure_is_named_not_quoted(
        self, demo: Demo, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def boom(referral: Any, *, validate: bool = False) -> None:
            raise RuntimeError(CANARY)

        monkeypatch.setattr(fhir, "to_fhir", boom)
        status, stdout, stderr = run_main(["fhir", "export", "--db", demo.url, "--id", demo.ids[0]])
        assert (status, stdout) == (2, "")
        assert stderr == (
            f"referralkit: error: referral {demo.ids[0]}: cannot be exported (RuntimeError)\n"
        )
        assert CANARY not in stderr


class TestWithoutTheExtra:
    """Without fhir.resources both commands say how to install it."""

    @pytest.mark.parametrize(
        "argv", [["fhir", "import", "-", "--db", "memory://"], ["fhir", "export", "--db", "x"]]
    )
    def test_missing_extra(self, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "fhir.resources", None)
        status, stdout, stderr = run_main(argv)
        assert (status, stdout) == (2, "")
        assert stderr == (
            "referralkit: error: the fhir commands need the fhir extra: "
            'pip install "referralkit[fhir]" (in a checkout: pip install ".[fhir]")\n'
        )

    def test_usage(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli.main(["fhir", "import"]) == 2
        assert cli.main(["fhir", "export"]) == 2
        assert cli.main(["fhir"]) == 2
        assert "Traceback" not in capsys.readouterr().err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestTicker:
    """The progress helper of the fhir commands."""

    def test_terminal_redraws_at_most_ten_times_a_second(self) -> None:
        now = [0.0]
        stream = Terminal()
        with cli.Ticker(stream, 1000, "bundles", clock=lambda: now[0], width=10) as ticker:
            for done in range(1, 1001):
                now[0] += 0.001  # a thousand updates in one second
                ticker.update(done)
        text = stream.getvalue()
        assert text.startswith("\r[..........] 1/1000 bundles")
        assert text.endswith("\r[##########] 1000/1000 bundles\n")
        assert 10 <= text.count("\r") <= 12
        assert text.count("\n") == 1

    def test_off_a_terminal_only_the_final_line(self) -> None:
        stream = io.StringIO()
        with cli.Ticker(stream, 3, "referrals", width=3) as ticker:
            for done in range(1, 4):
                ticker.update(done)
        assert stream.getvalue() == "[###] 3/3 referrals\n"

    def test_error_ends_the_line_and_shows_no_final_bar(self) -> None:
        def fail(stream: io.StringIO) -> None:
            with cli.Ticker(stream, 5, "x", width=5) as ticker:
                ticker.update(2)
                raise ReferralKitError("stop")

        stream = Terminal()
        with pytest.raises(ReferralKitError):
            fail(stream)
        assert stream.getvalue() == "\r[##...] 2/5 x\n"
        quiet = io.StringIO()
        with pytest.raises(ReferralKitError):
            fail(quiet)
        assert quiet.getvalue() == ""

    def test_nothing_to_count(self) -> None:
        stream = Terminal()
        with cli.Ticker(stream, 0, "x") as ticker:
            ticker.update(0)
        assert stream.getvalue() == ""


def test_no_phi_in_a_refused_import_of_many_fields(demo: Demo, tmp_path: Path) -> None:
    """Every string of a Bundle replaced by the canary: whatever fails, the canary is unsaid."""

    def plant(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: (v if k in ("resourceType", "type") else plant(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [plant(v) for v in value]
        return CANARY if isinstance(value, str) else value

    planted = plant(copy.deepcopy(json.loads(demo.lines[0])))
    path = write(tmp_path / "canary.ndjson", [json.dumps(planted)])
    url = url_of(tmp_path / "target.db")
    status, stdout, stderr = run_main(["fhir", "import", str(path), "--db", url])
    assert CANARY not in stdout + stderr
    assert "Traceback" not in stderr
    assert status == 2
    assert re.match(rf"referralkit: error: {re.escape(str(path))} line 1", stderr)
    assert count(url) == 0
