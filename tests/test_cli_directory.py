"""``referralkit directory load`` and ``referralkit match``, against the public Plan-Net examples
and a generated NPPES file."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import attrs
import pytest

import referralkit as rk
from referralkit import cli
from referralkit.testing import FakeClock, sample_request, write_nppes

PLAN_NET = Path(__file__).parent / "data" / "plan-net-examples"
FILES = sorted(PLAN_NET.glob("*.json"))
LOADABLE = 32  # every example but the Endpoint


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


def intake(url: str, source: str = "REQ-0001", **changes: object) -> str:
    """A referral in the store at ``url``: the sample, by default in English, no coverage."""
    request = sample_request(source)
    patient = attrs.evolve(request.patient, preferred_language="en", interpreter_needed=False)
    request = attrs.evolve(request, **({"patient": patient, "coverage": None} | changes))
    with rk.ReferralDesk.open(url, clock=FakeClock()) as desk:
        return desk.intake(rk.Actor("c-1", {rk.Role.COORDINATOR}), request).id


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'referrals.db'}"


class TestDirectoryLoad:
    def test_every_plan_net_example_loads_or_is_refused_with_a_reason(self, url: str) -> None:
        """All 33 examples: 32 entries loaded by kind, the Endpoint refused and why, the two
        locations no example defines named, and the progress on stderr."""
        status, out, err = run(["directory", "load", "--db", url, *map(str, FILES)])
        assert status == 0
        assert f"loaded {LOADABLE} entries" in out
        assert "4 PractitionerRole" in out
        assert "refused: 1\n" in out
        assert "Endpoint-AcmeOfCTPortalEndpoint.json: resourceType" in out
        assert "Location/PharmLoc3" in out
        assert "33/33 FHIR files" in err
        directory = rk.directory.open_directory(url)
        assert directory.count() == LOADABLE
        directory.close()

    def test_files_in_any_order_load_the_same(self, tmp_path: Path) -> None:
        """A reference may point to a file given later: reversed order, the same result."""
        first, second = (f"sqlite:///{tmp_path / name}" for name in ("a.db", "b.db"))
        forward = run(["directory", "load", "--db", first, *map(str, FILES)])[1]
        backward = run(["directory", "load", "--db", second, *map(str, reversed(FILES))])[1]
        strip = [line for line in forward.splitlines() if "Endpoint" not in line]
        assert [line.replace(first, "") for line in strip] == [
            line.replace(second, "") for line in backward.splitlines() if "Endpoint" not in line
        ]

    def test_a_bundle_and_ndjson_load_as_the_single_files_do(
        self, tmp_path: Path, url: str
    ) -> None:
        """The examples as one Bundle and as NDJSON: the same entries."""
        resources = [json.loads(path.read_text(encoding="utf-8")) for path in FILES]
        bundle = tmp_path / "directory.json"
        bundle.write_text(
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": r} for r in resources],
                }
            )
        )
        ndjson = tmp_path / "directory.ndjson"
        ndjson.write_text("\n".join(json.dumps(r) for r in resources) + "\n")
        for path in (bundle, ndjson):
            target = f"sqlite:///{tmp_path / (path.suffix[1:] + '.db')}"
            status, out, _ = run(["directory", "load", "--db", target, str(path)])
            assert status == 0
            assert f"loaded {LOADABLE} entries" in out
            assert "refused: 1\n" in out

    def test_an_nppes_file_is_recognised_by_its_header(self, tmp_path: Path, url: str) -> None:
        """A generated NPPES file (any name) streams in; the summary counts its providers."""
        path = write_nppes(tmp_path / "npidata.txt", 200, seed=3)
        status, out, err = run(["directory", "load", "--db", url, str(path)])
        assert status == 0
        assert "from 0 FHIR and 1 NPPES file(s)" in out
        assert "kB of npidata.txt" in err
        directory = rk.directory.open_directory(url)
        roles = directory.count(rk.directory.PractitionerRole)
        services = directory.count(rk.directory.HealthcareService)
        directory.close()
        assert roles + services > 0
        assert f"{roles} PractitionerRole" in out

    def test_nppes_and_fhir_together(self, tmp_path: Path, url: str) -> None:
        """Both formats in one command."""
        path = write_nppes(tmp_path / "npi.csv", 20, seed=1)
        status, out, _ = run(["directory", "load", "--db", url, str(path), *map(str, FILES)])
        assert status == 0
        assert "from 33 FHIR and 1 NPPES file(s)" in out

    def test_a_missing_file_is_an_error_and_loads_nothing(self, tmp_path: Path, url: str) -> None:
        """A file that is not there: exit 2 before anything is loaded."""
        status, _, err = run(["directory", "load", "--db", url, str(FILES[0]), "nope.json"])
        assert status == 2
        assert "nope.json: no such file" in err
        assert not (tmp_path / "referrals.db").exists()

    def test_an_unreadable_file_is_refused_with_its_reason(self, tmp_path: Path, url: str) -> None:
        """A file that is not JSON (nor NPPES) is a refusal in the summary, not a crash."""
        bad = tmp_path / "notes.txt"
        bad.write_bytes(b"\xff\xfe not json")
        status, out, _ = run(["directory", "load", "--db", url, str(bad)])
        assert status == 0
        assert "loaded 0 entries (nothing)" in out
        assert "refused: 1" in out


class TestMatch:
    @pytest.fixture
    def loaded(self, url: str) -> str:
        assert run(["directory", "load", "--db", url, *map(str, FILES)])[0] == 0
        return url

    def test_a_table_of_candidates_with_reasons(self, loaded: str) -> None:
        """The cardiology role of the examples ranks first, with its reasons."""
        referral_id = intake(loaded)
        status, out, _ = run(["match", "--db", loaded, "--as-of", "2026-03-01", referral_id[:8]])
        assert status == 0
        assert out.startswith(f"Referral {referral_id}: specialty 207RC0000X, networks any")
        lines = out.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
        assert lines[header + 1].split()[:3][0] == "1"
        assert "PractitionerRole/JoeSmithRole3" in lines[header + 1]
        assert "as asked" in lines[header + 2]

    def test_exclusions_with_reasons(self, loaded: str) -> None:
        """A patient whose language nobody speaks: excluded, and the reason says so."""
        request = sample_request("REQ-0002")
        referral_id = intake(
            loaded, "REQ-0002", patient=attrs.evolve(request.patient, interpreter_needed=True)
        )
        status, out, _ = run(["match", "--db", loaded, referral_id])
        assert status == 0
        assert "No candidate." in out
        assert "PractitionerRole/JoeSmithRole3" in out.split("Excluded, ")[1]
        assert "does not list es and offers no interpreter" in out
        assert "does not speak the patient's language, no interpreter" in out

    def test_json(self, loaded: str) -> None:
        """--json: the same result as data."""
        referral_id = intake(loaded)
        status, out, _ = run(
            ["match", "--db", loaded, "--json", "--as-of", "2026-03-01", referral_id]
        )
        assert status == 0
        data = json.loads(out)
        assert data["referral"] == referral_id
        assert data["networks"] is None
        [first] = data["ranked"]
        assert first["reference"] == "PractitionerRole/JoeSmithRole3"
        assert {"factor", "points", "text"} <= set(first["reasons"][0])
        assert data["excluded"] == []
        assert (data["excluded_count"], data["excluded_by"]) == (0, {})

    def test_networks_are_listed(self, loaded: str) -> None:
        """With coverage, the header names its networks and out-of-network roles are excluded."""
        referral_id = intake(loaded, coverage=sample_request().coverage)
        status, out, _ = run(["match", "--db", loaded, referral_id])
        assert status == 0
        assert "networks acme-hmo-west" in out
        # counted from the network index, not listed unless asked
        counted = out.split("Excluded: ")[1]
        assert "not in the coverage networks (acme-hmo-west)" in counted
        assert "Excluded, " not in out
        status, every, _ = run(["match", "--db", loaded, "--excluded", "all", referral_id])
        assert status == 0
        listed = every.split("Excluded, ")[1]
        assert "PractitionerRole/" in listed
        assert "not in the coverage networks (acme-hmo-west)" in listed
        _, some, _ = run(["match", "--db", loaded, "--json", "--excluded", "1", referral_id])
        data = json.loads(some)
        assert data["excluded_by"]["network"] == data["excluded_count"] >= 1
        assert data["excluded"] == []
        assert run(["match", "--db", loaded, "--excluded", "-1", referral_id])[0] == 2

    def test_a_missing_store_is_an_error_and_is_not_created(self, tmp_path: Path) -> None:
        """match only reads: a mistyped path is exit 2 and no file appears."""
        path = tmp_path / "typo.db"
        status, _, err = run(["match", "--db", f"sqlite:///{path}", "abc"])
        assert status == 2
        assert err.startswith("referralkit: error: ")
        assert not path.exists()

    def test_an_unknown_referral_is_an_error(self, loaded: str) -> None:
        """No referral with that id: exit 2."""
        status, _, err = run(["match", "--db", loaded, "zzzz"])
        assert status == 2
        assert "no referral with id" in err
