"""Read the CMS NPPES downloadable file (``npidata_pfile_*.csv``), streaming.

The National Plan and Provider Enumeration System publishes every NPI as one CSV row of 330
columns (the "Data Dissemination" file, several million rows, several GB).
:func:`~referralkit.directory.read_nppes` reads it a row at a time, by column name, so memory
stays flat whatever the file's size and column order; :func:`~referralkit.directory.load_nppes`
adds what it reads to a directory in batches.

Each active row becomes:

- an individual (``Entity Type Code`` 1): a :class:`Practitioner` (id and NPI the NPI; name
  from prefix, first, middle and last name and credential), a :class:`PractitionerRole` (id
  the NPI) with the row's taxonomy codes, the primary one (``Healthcare Provider Primary
  Taxonomy Switch_n`` = ``Y``) first, at a :class:`Location`;
- an organisation (``Entity Type Code`` 2): an :class:`Organization` (legal business name) and
  a :class:`HealthcareService` (id the NPI) with its taxonomy codes, at a :class:`Location`;
- the :class:`Location` (id ``<NPI>-practice``): the business practice location address.
  The file has no coordinates, so its position is unknown until a deployment geocodes it.

A deactivated NPI (the file publishes it with an empty entity type, or a deactivation date
and no reactivation date) is skipped and counted. A row that cannot be read (an NPI that is
not ten digits, an unknown entity type, a malformed taxonomy code) is refused with its line
and column, and the rest of the file loads. A header without the columns referralkit reads
raises :class:`~referralkit.errors.ValidationError` before anything is added.

NPPES has no network membership, languages or new-patient status: those come from a payer's
Plan-Net directory, or the deployment sets them.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring as _quote  # what json uses, ensure_ascii=False
from pathlib import Path
from typing import Any, Final, NamedTuple, TextIO

from ..errors import ValidationError
from ._model import (
    Address,
    Entry,
    HealthcareService,
    Location,
    Organization,
    Practitioner,
    PractitionerRole,
    trusted,
)
from ._port import Directory
from ._sql import _SEP, SqlDirectory
from .plannet import LoadReport, Refusal

__all__ = ["NPPES_COLUMNS", "load_nppes", "read_nppes"]

_TAXONOMY_SLOTS: Final = 15


def _header() -> tuple[str, ...]:
    """The column names of the NPPES data file, in the file's order (330 columns; the CMS
    "NPPES Data Dissemination – Readme", data file layout, and its CSV-to-JSON field map)."""
    head = [
        "NPI",
        "Entity Type Code",
        "Replacement NPI",
        "Employer Identification Number (EIN)",
        "Provider Organization Name (Legal Business Name)",
        "Provider Last Name (Legal Name)",
        "Provider First Name",
        "Provider Middle Name",
        "Provider Name Prefix Text",
        "Provider Name Suffix Text",
        "Provider Credential Text",
        "Provider Other Organization Name",
        "Provider Other Organization Name Type Code",
        "Provider Other Last Name",
        "Provider Other First Name",
        "Provider Other Middle Name",
        "Provider Other Name Prefix Text",
        "Provider Other Name Suffix Text",
        "Provider Other Credential Text",
        "Provider Other Last Name Type Code",
        "Provider First Line Business Mailing Address",
        "Provider Second Line Business Mailing Address",
        "Provider Business Mailing Address City Name",
        "Provider Business Mailing Address State Name",
        "Provider Business Mailing Address Postal Code",
        "Provider Business Mailing Address Country Code (If outside U.S.)",
        "Provider Business Mailing Address Telephone Number",
        "Provider Business Mailing Address Fax Number",
        "Provider First Line Business Practice Location Address",
        "Provider Second Line Business Practice Location Address",
        "Provider Business Practice Location Address City Name",
        "Provider Business Practice Location Address State Name",
        "Provider Business Practice Location Address Postal Code",
        "Provider Business Practice Location Address Country Code (If outside U.S.)",
        "Provider Business Practice Location Address Telephone Number",
        "Provider Business Practice Location Address Fax Number",
        "Provider Enumeration Date",
        "Last Update Date",
        "NPI Deactivation Reason Code",
        "NPI Deactivation Date",
        "NPI Reactivation Date",
        "Provider Sex Code",
        "Authorized Official Last Name",
        "Authorized Official First Name",
        "Authorized Official Middle Name",
        "Authorized Official Title or Position",
        "Authorized Official Telephone Number",
    ]
    for n in range(1, _TAXONOMY_SLOTS + 1):
        head += [
            f"Healthcare Provider Taxonomy Code_{n}",
            f"Provider License Number_{n}",
            f"Provider License Number State Code_{n}",
            f"Healthcare Provider Primary Taxonomy Switch_{n}",
        ]
    for n in range(1, 51):
        head += [
            f"Other Provider Identifier_{n}",
            f"Other Provider Identifier Type Code_{n}",
            f"Other Provider Identifier State_{n}",
            f"Other Provider Identifier Issuer_{n}",
        ]
    head += [
        "Is Sole Proprietor",
        "Is Organization Subpart",
        "Parent Organization LBN",
        "Parent Organization TIN",
        "Authorized Official Name Prefix Text",
        "Authorized Official Name Suffix Text",
        "Authorized Official Credential Text",
    ]
    head += [f"Healthcare Provider Taxonomy Group_{n}" for n in range(1, _TAXONOMY_SLOTS + 1)]
    head.append("Certification Date")
    return tuple(head)


NPPES_COLUMNS: Final = _header()
"""The 330 column names of the NPPES data file, in order. Before 2025 the file called
``Provider Sex Code`` ``Provider Gender Code``; referralkit reads neither."""

_PRACTICE = "Provider Business Practice Location Address"
_REQUIRED: Final = (
    "NPI",
    "Entity Type Code",
    "Provider Organization Name (Legal Business Name)",
    "Provider Last Name (Legal Name)",
    "Provider First Name",
    "NPI Deactivation Date",
    "NPI Reactivation Date",
    "Provider First Line Business Practice Location Address",
    "Provider Second Line Business Practice Location Address",
    f"{_PRACTICE} City Name",
    f"{_PRACTICE} State Name",
    f"{_PRACTICE} Postal Code",
    "Healthcare Provider Taxonomy Code_1",
    "Healthcare Provider Primary Taxonomy Switch_1",
)
_OPTIONAL: Final = (
    "Provider Middle Name",
    "Provider Name Prefix Text",
    "Provider Name Suffix Text",
    "Provider Credential Text",
    f"{_PRACTICE} Country Code (If outside U.S.)",
)
_NPI: Final = re.compile(r"\d{10}")
_TAXONOMY: Final = re.compile(r"[0-9]{3}[0-9A-Z]{6}X")
_BATCH: Final = 5_000

Item = Entry | Refusal


class _Columns:
    """Positions of the columns referralkit reads, found by name in the header."""

    def __init__(self, header: list[str]) -> None:
        where = {name.strip(): i for i, name in enumerate(header)}
        missing = [name for name in _REQUIRED if name not in where]
        if missing:
            raise ValidationError(
                "header", f"not an NPPES data file: missing column(s) {', '.join(missing)}"
            )
        self.width = len(header)
        self.at = {name: where.get(name) for name in (*_REQUIRED, *_OPTIONAL)}
        self.taxonomy = [
            (where[code], where.get(f"Healthcare Provider Primary Taxonomy Switch_{n}"), code)
            for n in range(1, _TAXONOMY_SLOTS + 1)
            if (code := f"Healthcare Provider Taxonomy Code_{n}") in where
        ]
        used = [i for i in self.at.values() if i is not None]
        used += [i for slot in self.taxonomy for i in slot[:2] if i is not None]
        self.needed = 1 + max(used)


def read_nppes(source: str | Path | TextIO, *, name: str | None = None) -> Iterator[Item]:
    """Every entry (or :class:`Refusal`) of an NPPES data file, a row at a time.

    ``source`` is a path or an open text file (``sys.stdin``); deactivated NPIs yield
    nothing (:func:`~referralkit.directory.load_nppes` counts them).
    """
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8", newline="") as handle:
            yield from _rows(handle, name or str(source))
    else:
        yield from _rows(source, name or str(getattr(source, "name", "<stream>")))


_DEACTIVATED = Refusal("", "", "deactivated")


def _rows(handle: Iterable[str], source: str) -> Iterator[Item]:
    for item in _scan(handle, source):
        if isinstance(item, _Provider):
            yield from _entries(item)
        else:
            yield item


def _scan(handle: Iterable[str], source: str) -> Iterator[_Provider | Refusal]:
    """What each record of the file holds: a checked :class:`_Provider`, a
    :class:`Refusal` with its line and column, or ``_DEACTIVATED``. Both loaders read
    this, so they check and refuse alike."""
    lines = iter(handle)
    header_line = next(lines, None)
    if header_line is None:
        raise ValidationError("header", "the file is empty")
    try:
        header = next(csv.reader([header_line]))
    except (csv.Error, StopIteration):
        raise ValidationError("header", "not a CSV file") from None
    cols = _Columns(header)
    at = cols.at
    npi_at, type_at = at["NPI"], at["Entity Type Code"]
    deact_at, react_at = at["NPI Deactivation Date"], at["NPI Reactivation Date"]
    assert npi_at is not None
    assert type_at is not None
    assert deact_at is not None
    assert react_at is not None
    for number, row in _records(lines, cols, header_line.startswith('"')):
        if row is None:
            yield Refusal(source, f"line {number}", "malformed CSV")
            continue
        if len(row) < cols.needed:
            if row == [] or row == [""]:
                continue
            yield Refusal(source, f"line {number}", "fewer columns than the header")
            continue
        npi = row[npi_at]
        if not _NPI.fullmatch(npi):
            yield Refusal(source, f"line {number}.NPI", "an NPI has 10 digits")
            continue
        kind = row[type_at]
        if not kind or (row[deact_at] and not row[react_at]):
            yield _DEACTIVATED
            continue
        try:
            yield _provider(row, cols, npi, kind)
        except ValidationError as error:
            yield Refusal(source, f"line {number}.{error.path}", error.reason)


def _records(
    lines: Iterator[str], cols: _Columns, quoted: bool
) -> Iterator[tuple[int, list[str] | None]]:
    """``(line number, fields)`` of each record; fields None for malformed CSV.

    The NPPES file quotes every field and most of its 330 are empty, so the csv module spends
    most of its time on columns referralkit never reads (measured: 18,500 rows/s for
    ``csv.reader`` against 74,000 for the split below). A record whose first ``cols.needed``
    fields hold no quote character is split on ``","`` up to the last column read; any other
    record (a quote or delimiter inside a field, a field spanning lines, a file that does not
    quote every field) goes through ``csv.reader``, so the result is the same either way.
    """
    needed = cols.needed
    number = 1
    for line in lines:
        number += 1
        start = number
        if line.count('"') % 2:  # a quoted field spans lines: join them for the csv module
            while True:
                more = next(lines, None)
                if more is None:
                    break
                number += 1
                line += more
                if not line.count('"') % 2:
                    break
        if quoted and line.startswith('"'):
            parts = line.split('","', needed)
            if len(parts) > needed:
                del parts[needed:]
                parts[0] = parts[0][1:]
                if '"' not in "".join(parts):
                    yield start, parts
                    continue
        try:
            yield start, next(csv.reader([line]), [])
        except csv.Error:
            yield start, None


def _text(row: list[str], at: int | None, column: str = "", limit: int = 200) -> str | None:
    if at is None:
        return None
    value = row[at].strip()
    if len(value) > limit:
        raise ValidationError(column, f"longer than {limit} characters")
    return value or None


_PRACTICE_LINE_1 = "Provider First Line Business Practice Location Address"
_PRACTICE_LINE_2 = "Provider Second Line Business Practice Location Address"
_NAME_PARTS: Final = (
    "Provider Name Prefix Text",
    "Provider First Name",
    "Provider Middle Name",
    "Provider Last Name (Legal Name)",
    "Provider Name Suffix Text",
)


class _Provider(NamedTuple):
    """One row's checked values: everything both loaders write."""

    individual: bool
    npi: str
    name: str  # the practitioner's full name, or the organisation's legal business name
    specialties: tuple[str, ...]
    address: dict[str, Any]  # Address's fields that differ from their defaults, in order


def _provider(row: list[str], cols: _Columns, npi: str, kind: str) -> _Provider:
    # Every value is checked here as the entries' validators would (non-blank or None,
    # length, NPI and NUCC code formats), so entries are built with `trusted` (see _model)
    # and rows are written without building entries at all.
    at = cols.at
    codes: list[str] = []
    primary: str | None = None
    for code_at, switch_at, column in cols.taxonomy:
        code = row[code_at]
        if not code or not (code := code.strip()):
            continue
        if not _TAXONOMY.fullmatch(code):
            raise ValidationError(column, "not a NUCC taxonomy code")
        if switch_at is not None and row[switch_at] == "Y" and primary is None:
            primary = code
        codes.append(code)
    if primary is not None:
        codes.insert(0, primary)
    specialties = tuple(dict.fromkeys(codes))
    address: dict[str, Any] = {}
    lines = tuple(
        x
        for x in (
            _text(row, at[_PRACTICE_LINE_1], _PRACTICE_LINE_1),
            _text(row, at[_PRACTICE_LINE_2], _PRACTICE_LINE_2),
        )
        if x
    )
    if lines:
        address["lines"] = lines
    for field, column, label, limit in _ADDRESS_PARTS:
        value = _text(row, at[column], label, limit)
        if value is not None:
            address[field] = value
    if kind == "1":
        parts = [_text(row, at[column], column) for column in _NAME_PARTS]
        name = " ".join(p for p in parts if p)
        if not name:
            raise ValidationError("Provider Last Name (Legal Name)", "an individual needs a name")
        credential = _text(row, at["Provider Credential Text"], "Provider Credential Text")
        if credential:
            name = f"{name}, {credential}"
        return _Provider(True, npi, name, specialties, address)
    if kind == "2":
        column = "Provider Organization Name (Legal Business Name)"
        legal_name = _text(row, at[column], column, 500)
        if legal_name is None:
            raise ValidationError(column, "an organization needs a name")
        return _Provider(False, npi, legal_name, specialties, address)
    raise ValidationError("Entity Type Code", "expected 1 (individual) or 2 (organization)")


_ADDRESS_PARTS: Final = (
    ("city", f"{_PRACTICE} City Name", "city", 200),
    ("state", f"{_PRACTICE} State Name", "state", 100),
    ("postal_code", f"{_PRACTICE} Postal Code", "postal code", 40),
    ("country", f"{_PRACTICE} Country Code (If outside U.S.)", "country", 100),
)


def _entries(p: _Provider) -> Iterator[Entry]:
    """The row's entries, the location last (``load_nppes`` counts rows by it)."""
    npi = p.npi
    address = trusted(Address, **p.address)
    location_id = f"{npi}-practice"
    if p.individual:
        yield trusted(Practitioner, id=npi, name=p.name, npi=npi)
        yield trusted(
            PractitionerRole,
            id=npi,
            practitioner_id=npi,
            specialties=p.specialties,
            location_ids=(location_id,),
        )
        yield trusted(Location, id=location_id, address=address)
    else:
        yield trusted(Organization, id=npi, name=p.name, npi=npi)
        yield trusted(
            HealthcareService,
            id=npi,
            name=p.name,
            organization_id=npi,
            specialties=p.specialties,
            location_ids=(location_id,),
        )
        yield trusted(Location, id=location_id, address=address, organization_id=npi)


def _db_rows(p: _Provider) -> tuple[tuple[str, str, str], ...]:
    """The ``directory_entries`` rows of :func:`_entries`, as the SQL directory's
    ``encode`` writes them (the fields that differ from their defaults, in field order,
    compact, non-ASCII kept: checked equal by tests/directory/test_nppes_sql.py), without
    building the entries. Strings from the file go through the escaper ``json`` itself uses;
    NPIs, location ids and NUCC codes have passed their patterns, so they need none (the
    json module's encoder, measured, took 40% of a row)."""
    npi = p.npi
    location_id = f"{npi}-practice"
    address = p.address
    fields = [
        f'"lines":[{",".join(map(_quote, value))}]'
        if key == "lines"
        else f'"{key}":{_quote(value)}'
        for key, value in address.items()
    ]
    place = f'{{"id":"{location_id}","address":{{{",".join(fields)}}}'
    codes = f',"specialties":["{_CODE_SEP.join(p.specialties)}"]' if p.specialties else ""
    name = _quote(p.name)
    if p.individual:
        return (
            ("Practitioner", npi, f'{{"id":"{npi}","name":{name},"npi":"{npi}"}}'),
            (
                "PractitionerRole",
                npi,
                f'{{"id":"{npi}","practitioner_id":"{npi}"{codes},'
                f'"location_ids":["{location_id}"]}}',
            ),
            ("Location", location_id, place + "}"),
        )
    return (
        ("Organization", npi, f'{{"id":"{npi}","name":{name},"npi":"{npi}"}}'),
        (
            "HealthcareService",
            npi,
            f'{{"id":"{npi}","name":{name},"organization_id":"{npi}"{codes},'
            f'"location_ids":["{location_id}"]}}',
        ),
        ("Location", location_id, f'{place},"organization_id":"{npi}"}}'),
    )


_CODE_SEP: Final = '","'


def _candidate_rows(p: _Provider) -> list[tuple[Any, ...]]:
    """The ``directory_candidates`` rows of the row's role or service, as
    ``candidate_rows`` writes them for the entries (checked equal by
    tests/directory/test_nppes_sql.py), but only the columns that vary: ``(code, NPI,
    count of codes, codes)`` of a role, ``(code, NPI, count of codes, name, codes)`` of a
    service; :func:`_candidate_statements` supplies the rest. Codes, NPIs and location ids
    hold no separator."""
    npi = p.npi
    codes = _SEP.join(p.specialties)
    n = len(p.specialties)
    held = p.specialties or ("",)
    if p.individual:
        return [(c, npi, n, codes) for c in held]
    name = p.name
    return [(c, npi, n, name, codes) for c in held]


_CANDIDATE_COLUMNS: Final = (
    "kind, code, id, coded, active, networks, practitioner_id, organization_id, name, "
    "specialties, languages, location_ids, accepting, telehealth, interpreter"
)


def _candidate_statements(sqlite: bool) -> tuple[str, str]:
    """The statements inserting :func:`_candidate_rows` of roles, then of services, with
    the columns every NPPES row has alike (active, no networks, languages or new-patient
    status, the ``<NPI>-practice`` location) written in: four or five parameters a row
    instead of fifteen (measured: binding was most of the candidates' cost). SQLite
    numbers its parameters, so the NPI is bound once; PostgreSQL reads them as a row of
    ``VALUES``."""
    insert = f"INSERT INTO directory_candidates ({_CANDIDATE_COLUMNS}) "
    if sqlite:
        return (
            f"{insert}VALUES ('PractitionerRole', ?1, ?2, ?3, 1, '', ?2, NULL, NULL, ?4, '', "
            "?2 || '-practice', NULL, 0, 0)",
            f"{insert}VALUES ('HealthcareService', ?1, ?2, ?3, 1, '', NULL, ?2, ?4, ?5, '', "
            "?2 || '-practice', NULL, 0, 0)",
        )
    return (
        f"{insert}SELECT 'PractitionerRole', v.c, v.i, v.n, 1, '', v.i, NULL, NULL, v.s, '', "  # noqa: S608 - constants
        "v.i || '-practice', NULL, 0, 0 "
        "FROM (VALUES (%s::text, %s::text, %s::integer, %s::text)) AS v (c, i, n, s)",
        f"{insert}SELECT 'HealthcareService', v.c, v.i, v.n, 1, '', NULL, v.i, v.m, v.s, '', "  # noqa: S608 - constants
        "v.i || '-practice', NULL, 0, 0 "
        "FROM (VALUES (%s::text, %s::text, %s::integer, %s::text, %s::text)) "
        "AS v (c, i, n, m, s)",
    )


def load_nppes(
    directory: Directory,
    source: str | Path | TextIO,
    *,
    batch: int = _BATCH,
    progress: Callable[[int], None] | None = None,
) -> LoadReport:
    """Add the providers of an NPPES data file to ``directory``, ``batch`` rows at a time;
    memory stays flat.

    ``progress`` is called after each batch with the number of rows read so far. The
    report counts entries added per kind, lists refused rows and counts deactivated NPIs in
    ``skipped``. A bad header raises before anything is added.

    Into a SQL directory (:class:`~referralkit.directory.SqlDirectory`), rows go straight
    into the tables, one transaction per batch, without building entries (checked the
    same, refused the same, stored the same: about six times faster, measured in
    ``benchmarks/bench_directory.py``); into any other directory, through
    :meth:`~referralkit.directory.Directory.add`.

    .. versionchanged:: 0.1
       Rows into a SQL directory are written without building entries.
    """
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8", newline="") as handle:
            return _load(directory, _scan(handle, str(source)), batch, progress)
    name = str(getattr(source, "name", "<stream>"))
    return _load(directory, _scan(source, name), batch, progress)


def _load(
    directory: Directory,
    items: Iterator[_Provider | Refusal],
    batch: int,
    progress: Callable[[int], None] | None,
) -> LoadReport:
    individuals = organizations = 0
    refused: list[Refusal] = []
    skipped = rows = 0
    sql = directory if isinstance(directory, SqlDirectory) else None
    entries: list[Entry] = []
    # SQL rows by (kind, id): the last row with an id wins within a batch, as add() does
    pending: dict[tuple[str, str], tuple[str, str, str]] = {}
    codes: dict[tuple[str, str], tuple[str, ...]] = {}
    candidates: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    in_batch = 0
    for item in items:
        rows += 1
        if isinstance(item, _Provider):
            if item.individual:
                individuals += 1
            else:
                organizations += 1
            if sql is not None:
                for row in _db_rows(item):
                    pending[(row[0], row[1])] = row
                role = ("PractitionerRole" if item.individual else "HealthcareService", item.npi)
                codes[role] = item.specialties
                candidates[role] = _candidate_rows(item)
            else:
                entries += _entries(item)
            in_batch += 1
            if in_batch >= batch:
                _flush(directory, sql, entries, pending, codes, candidates)
                in_batch = 0
                if progress is not None:
                    progress(rows)
        elif item is _DEACTIVATED:
            skipped += 1
        else:
            refused.append(item)
    _flush(directory, sql, entries, pending, codes, candidates)
    if progress is not None:
        progress(rows)
    added = {
        "Practitioner": individuals,
        "PractitionerRole": individuals,
        "Organization": organizations,
        "HealthcareService": organizations,
        "Location": individuals + organizations,
    }
    return LoadReport(
        {k: n for k, n in added.items() if n}, tuple(refused), skipped={"deactivated": skipped}
    )


def _flush(
    directory: Directory,
    sql: SqlDirectory | None,
    entries: list[Entry],
    pending: dict[tuple[str, str], tuple[str, str, str]],
    codes: dict[tuple[str, str], tuple[str, ...]],
    candidates: dict[tuple[str, str], list[tuple[Any, ...]]],
) -> None:
    if entries:
        directory.add(entries)
        entries.clear()
    if pending and sql is not None:
        specialties = [(kind, code, id) for (kind, id), held in codes.items() for code in held]
        specialties.sort()  # in key order too, and the entries (measured: SORTED)
        rows = sorted(pending.values())
        roles: list[tuple[Any, ...]] = []
        services: list[tuple[Any, ...]] = []
        for (kind, _), held in candidates.items():
            (roles if kind == "PractitionerRole" else services).extend(held)
        # in key order (code, id within a kind): inserted in fewer b-tree pages (measured)
        roles.sort()
        services.sort()
        role_sql, service_sql = _candidate_statements(sql._sqlite)
        sql._write_rows(rows, specialties, more=((service_sql, services), (role_sql, roles)))
        pending.clear()
        codes.clear()
        candidates.clear()
