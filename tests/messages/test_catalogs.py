"""The catalogs: Spanish complete, and every catalog up to date with the templates."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.pofile import read_po

from referralkit.messages import LOCALE_DIR, Renderer

ROOT = Path(__file__).resolve().parents[2]
# the mapping of babel.cfg, relative to the messages package
METHODS = [
    ("templates/**.txt", "jinja2"),
    ("templates/**.html", "jinja2"),
    ("**.py", "python"),
]
OPTIONS = {
    "templates/**.txt": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
    "templates/**.html": {"extensions": "jinja2.ext.i18n", "trimmed": "true"},
}
STALE = "catalogs are out of date with the templates: run `nox -s i18n` and translate"


def source_msgids() -> set[str]:
    """The texts pybabel extract finds in the package now (as `nox -s i18n` runs it)."""
    found = extract_from_dir(
        str(LOCALE_DIR.parent), METHODS, options_map=OPTIONS, keywords=DEFAULT_KEYWORDS
    )
    return {message if isinstance(message, str) else message[0] for *_, message, _, _ in found}


def catalog_msgids(path: Path) -> dict[str, str]:
    with path.open("rb") as file:
        catalog = read_po(file)
    return {
        str(m.id): "" if m.fuzzy else str(m.string)
        for m in catalog
        if m.id and isinstance(m.id, str)
    }


def test_the_template_lists_every_source_text() -> None:
    """referralkit.pot holds exactly the texts of the templates and phrase tables."""
    assert set(catalog_msgids(LOCALE_DIR / "referralkit.pot")) == source_msgids(), STALE


@pytest.mark.parametrize(
    "po", sorted(LOCALE_DIR.glob("*/LC_MESSAGES/referralkit.po")), ids=lambda p: p.parts[-3]
)
def test_each_catalog_matches_the_template(po: Path) -> None:
    """Every shipped catalog has the template's texts, no more and no fewer."""
    assert set(catalog_msgids(po)) == source_msgids(), STALE


def test_spanish_is_complete() -> None:
    """100% of the source texts have a Spanish translation that is neither empty nor fuzzy."""
    spanish = catalog_msgids(LOCALE_DIR / "es" / "LC_MESSAGES" / "referralkit.po")
    untranslated = sorted(msgid for msgid in source_msgids() if not spanish.get(msgid))
    assert untranslated == []


def test_shipped_languages() -> None:
    """English (the source) and Spanish are available out of the box."""
    assert Renderer().languages >= {"en", "es"}


def test_package_data_lists_the_message_files() -> None:
    """pyproject's package data globs match every template and catalog, so that
    `pip install .` installs them (setuptools expands the same globs)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["referralkit"]
    package = LOCALE_DIR.parent.parent
    covered = {path for pattern in patterns for path in package.glob(pattern)}
    files = {
        path
        for folder in ("templates", "locale")
        for path in (LOCALE_DIR.parent / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert files
    assert files <= covered
