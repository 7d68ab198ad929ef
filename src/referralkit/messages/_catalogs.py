"""Gettext catalogs: the ``.po`` files shipped in the package and those a deployment adds.

The ``.po`` files are the source of truth and the only catalog files in the package: each is
parsed with Babel and compiled in memory the first time a renderer needs its language
(about 15 ms for the Spanish catalog, once per process), so ``pip install .`` needs no build
step and no compiled ``.mo`` file can fall out of step with its ``.po``. ``nox -s i18n``
runs ``pybabel extract``, ``update`` and ``compile`` over the same files.
"""

from __future__ import annotations

import functools
import gettext
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

import attrs
from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import PoFileError, read_po
from babel.support import Translations

from ..errors import TemplateError

__all__ = ["DOMAIN", "LOCALE_DIR", "Catalog", "find_catalogs", "load_catalog", "parse_locale"]

DOMAIN: Final = "referralkit"
"""The gettext domain: catalogs are ``<dir>/<language>/LC_MESSAGES/referralkit.po``."""

LOCALE_DIR: Final = Path(__file__).parent / "locale"

SOURCE_LANGUAGE: Final = "en"


@attrs.frozen
class Catalog:
    """One language's translations, and which source texts they translate."""

    language: str
    translations: gettext.NullTranslations
    translated: frozenset[str]
    """The msgids with a translation that is neither empty nor fuzzy."""

    def has(self, msgid: str) -> bool:
        return self.language == SOURCE_LANGUAGE or msgid in self.translated


def find_catalogs(dirs: Iterable[Path]) -> dict[str, list[Path]]:
    """Language tag (``es``, ``pt_BR``) to its ``.po`` files, first directory first."""
    found: dict[str, list[Path]] = {}
    for directory in dirs:
        for po in sorted(directory.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
            found.setdefault(po.parent.parent.name, []).append(po)
    return found


def _read(path: Path, language: str) -> tuple[gettext.NullTranslations, frozenset[str]]:
    try:
        with path.open("rb") as file:
            catalog = read_po(file, locale=language, domain=DOMAIN, abort_invalid=True)
    except PoFileError as exc:
        # Babel counts the lines of a .po file from 0
        line = getattr(exc, "lineno", None)
        raise TemplateError(str(path), None if line is None else line + 1, str(exc)) from None
    except (OSError, UnknownLocaleError, ValueError) as exc:
        raise TemplateError(str(path), None, f"cannot read the catalog: {exc}") from None
    for message, errors in catalog.check():
        if errors:
            raise TemplateError(str(path), message.lineno, str(errors[0]))
    translated = frozenset(
        str(m.id) for m in catalog if m.id and isinstance(m.id, str) and m.string and not m.fuzzy
    )
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer, domain=DOMAIN), translated


def load_catalog(language: str, paths: Sequence[Path]) -> Catalog:
    """The translations of ``paths`` (the first one's messages win over later ones)."""
    if not paths:
        return Catalog(language, gettext.NullTranslations(), frozenset())
    first, *rest = (_read(path, language) for path in paths)
    translations, translated = first
    for more, more_translated in rest:
        translations.add_fallback(more)
        translated |= more_translated
    return Catalog(language, translations, translated)


@functools.lru_cache(maxsize=256)
def parse_locale(tag: str) -> Locale | None:
    """The Babel locale of a BCP 47 tag (``es-MX``) or ``None`` when Babel does not know it."""
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


@functools.lru_cache(maxsize=256)
def language_name(tag: str, reader: Locale) -> str:
    """The name of language ``tag`` in the reader's language (``Spanish``, ``español``)."""
    locale = parse_locale(tag)
    name = locale.get_language_name(reader) if locale is not None else None
    return name or tag
