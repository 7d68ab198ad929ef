"""Text no store can keep is refused by the checking pass of a FHIR import, never at write.

JSON can spell a lone surrogate (``"\\ud800"``) and a NUL (``"\\u0000"``); ``json.loads`` turns
them into Python strings no database keeps (a lone surrogate is not UTF-8; PostgreSQL text holds
no NUL). The model refuses them, so :func:`~referralkit.interop.fhir.from_fhir` (the check pass
of ``fhir import``) refuses such a Bundle with its JSON path, and an import writes nothing,
instead of crashing half-way through the write pass (seen: 500 of 1,000 imported).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import pytest

from referralkit import ValidationError, cli
from referralkit.interop.fhir import FhirError, from_fhir, intake_from_fhir, to_fhir
from referralkit.storage import open_store
from referralkit.testing import sample_request

AT = dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC)


def bundle_text(source_id: str = "REQ-0001") -> str:
    """A valid Bundle (the sample referral, exported) as JSON text."""
    referral = sample_request(source_id).referral(f"r-{source_id}", AT, received=True)
    return json.dumps(to_fhir(referral), separators=(",", ":"))


# Where the bad text goes, as (JSON text to find, JSON text to put instead): an identifier
# (the patient's id), an MRN, a display, free text; the replacement spells the character as a
# JSON escape, exactly as an EHR's JSON would carry it.
PLACES = [
    ('"value":"pat-0001"', '"value":"pat-{bad}0001"'),
    ('"value":"MRN-000001"', '"value":"MRN-{bad}"'),
    ('"display":"Chest pain, unspecified"', '"display":"Chest {bad}pain"'),
    ('"family":"Example"', '"family":"Exa{bad}mple"'),
]
BAD = {"lone surrogate": "\\ud800", "low surrogate": "\\udfff", "NUL": "\\u0000"}


def spoiled(place: tuple[str, str], bad: str, source_id: str = "REQ-0001") -> dict[str, Any]:
    text = bundle_text(source_id)
    find, put = place
    assert find in text, find
    return json.loads(text.replace(find, put.format(bad=bad), 1))  # type: ignore[no-any-return]


class TestTheCheckingPassRefuses:
    @pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
    @pytest.mark.parametrize("place", PLACES, ids=[p[0].split(":")[0] for p in PLACES])
    def test_from_fhir_refuses_with_a_path(self, place: tuple[str, str], bad: str) -> None:
        """from_fhir (and intake_from_fhir) refuse the Bundle with a typed error naming the
        JSON path, without the value."""
        bundle = spoiled(place, bad)
        for read in (from_fhir, intake_from_fhir):
            with pytest.raises(FhirError) as info:
                read(bundle)
            assert isinstance(info.value, ValidationError)
            assert info.value.path.startswith("entry[")
            assert "\x00" not in str(info.value)
            assert ("surrogate" in str(info.value)) or ("NUL" in str(info.value))

    def test_the_untouched_bundle_imports(self) -> None:
        """Sanity: the Bundle is fine before the character goes in."""
        referral = from_fhir(json.loads(bundle_text()))
        assert referral.patient.mrn == "MRN-000001"


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(argv)
    return status, out.getvalue(), err.getvalue()


class TestImportWritesNothing:
    @pytest.mark.parametrize("bad", list(BAD.values()), ids=list(BAD))
    def test_a_bad_line_stops_the_import_before_any_write(self, tmp_path: Path, bad: str) -> None:
        """A file whose third Bundle holds the character: the import is refused at that line
        (exit 2, no traceback) and the store stays empty; a rerun fails the same way."""
        lines = [bundle_text(f"REQ-{n:04d}") for n in range(1, 6)]
        lines[2] = json.dumps(spoiled(PLACES[0], bad, "REQ-0003"))
        source = tmp_path / "bundles.ndjson"
        source.write_text("\n".join(lines) + "\n", encoding="utf-8")
        url = f"sqlite:///{tmp_path / 'target.db'}"
        for _ in range(2):
            status, _stdout, stderr = run_main(["fhir", "import", str(source), "--db", url])
            assert status == 2, stderr
            assert "Traceback" not in stderr
            assert "line 3" in stderr
            with open_store(url) as store:
                assert store.count() == 0
