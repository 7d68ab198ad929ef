"""referralkit fhir import / export: NDJSON Bundles in and out of a store, all or nothing,
idempotent by the ServiceRequest identifier, without tracebacks or PHI in the output."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

from referralkit import ReferralKitError, cli
from referralkit.events import replay
from referralkit.storage import open_store

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
        assert stderr == "[" + "#" * 30 + "] 4/4 bundles\n"
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

    def test_missing_file(self, tmp_path: Path) -> None:
        path = tmp_path / "nowhere.ndjson"
        _, stderr = self.check_refused(path, tmp_path, ": cannot read it")
        assert stderr == f"referralkit: error: {path}: cannot read it (No such file or directory)\n"

    def test_unexpected_failure_is_named_not_quoted(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An error that is not the library's own is reported by class, its message unsaid."""

        def boom(bundle: Any) -> None:
            raise KeyError(CANARY)

        monkeypatch.setattr(fhir, "from_fhir", boom)
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        self.check_refused(path, tmp_path, " line 1: cannot be converted (KeyError)")

    def test_not_a_referral(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(fhir, "from_fhir", lambda bundle: None)
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        self.check_refused(path, tmp_path, " line 1: cannot be converted (not a referral)")

    def test_snapshot_must_replay(
        self, demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(cli, "replay", lambda events: None)
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        self.check_refused(
            path, tmp_path, " line 1: the referral does not replay from its created event"
        )

    def test_bad_store_url(self, demo: Demo, tmp_path: Path) -> None:
        path = write(tmp_path / "one.ndjson", [demo.lines[0]])
        status, _, stderr = run_main(["fhir", "import", str(path), "--db", "nope://"])
        assert status == 2
        assert stderr.endswith(
            "referralkit: error: url: unsupported store scheme 'nope' "
            "(supported: memory, sqlite, postgresql)\n"
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
        assert status == 1
        assert stdout == ""
        assert stderr == "referralkit: error: no referral with id 'no-such-id'\n"

    def test_empty_store(self, tmp_path: Path) -> None:
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
        assert (status, stdout) == (1, "")
        assert stderr == (
            "referralkit: the fhir commands need the fhir extra: pip install 'referralkit[fhir]'\n"
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
