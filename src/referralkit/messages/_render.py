"""The renderer: templates in a Jinja2 sandbox, texts from gettext catalogs, Babel formats."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import gettext
import logging
import re
import traceback
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from babel import Locale
from babel.dates import format_date, format_time
from babel.numbers import format_currency
from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    nodes,
    select_autoescape,
)
from jinja2.debug import rewrite_traceback_stack
from jinja2.exceptions import UndefinedError
from jinja2.ext import InternationalizationExtension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup, escape

from ..clocks import Cause
from ..errors import TemplateError, ValidationError
from ..model import Channel, ContactSystem, Referral
from . import _facts
from ._catalogs import (
    LOCALE_DIR,
    SOURCE_LANGUAGE,
    Catalog,
    find_catalogs,
    language_name,
    load_catalog,
    parse_locale,
)
from ._facts import FACTS, Phrase, read_facts
from ._model import CHANNELS_BY_MOMENT, Audience, Message, Moment, Money, Organization

__all__ = ["TEMPLATE_DIR", "Renderer"]

logger = logging.getLogger("referralkit.messages")

TEMPLATE_DIR: Final = Path(__file__).parent / "templates"
"""The templates shipped with referralkit; a deployment's folder is searched first."""

LAYOUT: Final = "_layout.html"
GENERIC_PREP: Final = "prep/generic.txt"
_HTML_EXTRA: Final = frozenset({"subject", "paragraphs"})
_PREP_MOMENTS: Final = frozenset({Moment.BOOKED, Moment.REMINDER})
_BLANK_LINES: Final = re.compile(r"\n{3,}")
_TRAILING_SPACE: Final = re.compile(r"[ \t]+$", re.MULTILINE)
_CONTACT_CHANNELS: Final = {
    ContactSystem.EMAIL: "email",
    ContactSystem.SMS: "sms",
    ContactSystem.PHONE: "phone",
}


def _no_none(value: object) -> object:
    # an optional fact printed without an {% if %} would read "None" to the patient; the
    # trial render at load time has every optional fact empty once, so this fails there
    if value is None:
        raise UndefinedError("an empty fact is printed; guard it with {% if ... %}")
    return value


_PLACEHOLDER: Final = re.compile(r"(%\(\w+\)s|%%)")


class _Environment(ImmutableSandboxedEnvironment):
    translations: gettext.NullTranslations | None = None
    """Set on a language's environment: its {% trans %} blocks are translated at compile time."""


class _CompiledTranslations(InternationalizationExtension):
    """``jinja2.ext.i18n`` that translates ``{% trans %}`` blocks when a template is compiled.

    The stock extension compiles each block to a ``gettext`` call made at every render,
    through the sandbox's call checks: measured here, 2.4 ms for the booked message, most
    of it in those calls. Each language has its own environment and its own compiled
    templates, so the translation can be looked up once, when the template is compiled, and
    the block becomes plain output with its placeholders (still autoescaped in HTML, still
    checked by ``finalize``). Same texts, same escaping, no call at render time. Blocks with
    plurals or a context fall back to the stock behaviour.
    """

    def _make_node(
        self,
        singular: str,
        plural: str | None,
        context: str | None,
        variables: dict[str, nodes.Expr],
        plural_expr: nodes.Expr | None,
        vars_referenced: bool,
        num_called_num: bool,
    ) -> nodes.Output:
        translations = getattr(self.environment, "translations", None)
        if translations is None or plural is not None or context is not None:
            return super()._make_node(  # pragma: no cover - no shipped template needs it
                singular,
                plural,
                context,
                variables,
                plural_expr,
                vars_referenced,
                num_called_num,
            )
        parts: list[nodes.Expr] = []
        for piece in _PLACEHOLDER.split(translations.gettext(singular)):
            if piece == "%%":
                parts.append(nodes.TemplateData("%"))
            elif piece.startswith("%("):
                name = piece[2:-2]
                if name not in variables:
                    raise TemplateSyntaxError(
                        f"the translation of {singular!r} uses {name!r}, which the text lacks", 0
                    )
                parts.append(variables[name])
            elif piece:
                parts.append(nodes.TemplateData(piece))
        return nodes.Output(parts)


@attrs.frozen
class _TemplateInfo:
    """What static analysis knows about one template source."""

    name: str
    names: frozenset[str]
    msgids: frozenset[str]
    references: tuple[str, ...]


@attrs.frozen
class _Language:
    """One catalog's environment, compiled templates and formatting locale."""

    catalog: Catalog
    env: _Environment
    templates: Mapping[str, Template]


def _allowed(name: str) -> frozenset[str] | None:
    """The names a template may use, from its file name; ``None`` for an unknown name."""
    stem, _, suffix = name.rpartition(".")
    if name.startswith("prep/") and suffix == "txt":
        return FACTS[Moment.BOOKED]
    if name == LAYOUT:
        return _facts.COMMON | _HTML_EXTRA
    if stem.startswith("_") and "/" not in stem:
        return FACTS[Moment.BOOKED] | FACTS[Moment.CONSULT_NOTE] | _HTML_EXTRA | {"prep"}
    try:
        moment = Moment(stem)
    except ValueError:
        return None
    extra = {"prep"} if moment in _PREP_MOMENTS else set()
    if suffix == "html":
        extra |= _HTML_EXTRA
    return FACTS[moment] | extra if suffix in ("txt", "html") else None


class Renderer:
    """Renders :class:`~referralkit.messages.Message` values from referrals.

    ``templates`` is a folder (or several) searched before the shipped templates, so a
    deployment overrides any of them by putting a file of the same name there (see
    :doc:`/howto-messages`); ``catalogs`` adds gettext catalog folders
    (``<folder>/<language>/LC_MESSAGES/referralkit.po``), searched before the shipped ones.
    ``organization`` is the voice the messages speak in; ``timezone`` the IANA zone that
    visit dates and times are shown in; ``default_language`` the language of messages to the
    referring clinician.

    Everything that can be checked is checked here, once: every template is parsed and
    compiled (syntax errors, unknown filters), every placeholder must be a fact its moment
    declares (:data:`~referralkit.messages.FACTS`), every included template must exist,
    every catalog must parse with consistent placeholders, and every moment is rendered in
    every language with sample facts, once with every optional fact present and once with
    none. A problem raises :class:`~referralkit.errors.TemplateError` naming the template
    and line. After that, templates are compiled; :meth:`render` only fills them in.

    >>> from referralkit.messages import Renderer
    >>> renderer = Renderer()
    >>> sorted(renderer.languages)
    ['en', 'es']
    """

    def __init__(
        self,
        *,
        templates: str | Path | Sequence[str | Path] | None = None,
        catalogs: str | Path | Sequence[str | Path] | None = None,
        organization: Organization | None = None,
        timezone: str = "UTC",
        default_language: str = SOURCE_LANGUAGE,
    ) -> None:
        self.organization = organization if organization is not None else Organization()
        if not isinstance(self.organization, Organization):
            raise ValidationError("organization", "expected an Organization")
        try:
            self.zone = zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            raise ValidationError("timezone", f"not an IANA time zone: {timezone!r}") from None
        self.default_language = default_language
        self.template_dirs = (*_paths(templates, "templates"), TEMPLATE_DIR)
        self.catalog_dirs = (*_paths(catalogs, "catalogs"), LOCALE_DIR)
        self._loader = ChoiceLoader([FileSystemLoader(str(d)) for d in self.template_dirs])
        self._paths = find_catalogs(self.catalog_dirs)
        self.languages: frozenset[str] = frozenset({SOURCE_LANGUAGE, *self._paths})
        """The languages a message can be written in (a catalog exists for each)."""
        # the stock extension, so that extract_translations sees the gettext calls
        probe = self._environment(Catalog(SOURCE_LANGUAGE, _NULL, frozenset()), compiled=False)
        self._info = {name: self._analyse(probe, name) for name in self._names()}
        self.preps: frozenset[str] = frozenset(
            name.removeprefix("prep/").removesuffix(".txt")
            for name in self._info
            if name.startswith("prep/")
        )
        """The specialties with their own preparation template (``generic`` for the rest)."""
        self._required()
        self._languages: dict[str, _Language] = {}
        self._resolved: dict[str, tuple[_Language, Locale]] = {}
        self._infos: dict[tuple[str, ...], tuple[frozenset[str], frozenset[str]]] = {}
        for language in sorted(self.languages):
            self._trial(self._language(language))

    # ------------------------------------------------------------------ loading and checks

    def _environment(self, catalog: Catalog, *, compiled: bool = True) -> _Environment:
        env = _Environment(
            loader=self._loader,
            autoescape=select_autoescape(enabled_extensions=("html",), default=False),
            undefined=StrictUndefined,
            extensions=[_CompiledTranslations if compiled else InternationalizationExtension],
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=_no_none,
            auto_reload=False,
            cache_size=-1,
        )
        # trimmed: a {% trans %} block's line breaks and indentation are not part of the text,
        # so the msgid is one line whatever the template's layout (pybabel: trimmed = true)
        env.policies["ext.i18n.trimmed"] = True
        env.install_gettext_translations(catalog.translations, newstyle=True)  # type: ignore[attr-defined]
        if compiled:
            env.translations = catalog.translations
        # every render copies the globals into a fresh context, through a ChainMap: keep only
        # what a message template can use (about 40 µs of a 250 µs render, measured here)
        for name in ("lipsum", "cycler", "joiner", "dict"):
            env.globals.pop(name, None)
        return env

    def _names(self) -> list[str]:
        names = sorted(set(self._loader.list_templates()))
        for name in names:
            if _allowed(name) is None:
                raise TemplateError(
                    name,
                    None,
                    "not a template referralkit knows: name it after a moment "
                    f"({', '.join(m.value for m in Moment)}) with .txt or .html, or start "
                    "it with '_' for a shared part, or put it under prep/",
                )
        return names

    def _source(self, env: _Environment, name: str) -> tuple[str, str | None]:
        source, filename, _ = self._loader.get_source(env, name)
        return source, filename

    def _analyse(self, env: _Environment, name: str) -> _TemplateInfo:
        source, filename = self._source(env, name)
        try:
            tree = env.parse(source, name, filename)
            env.compile(tree, name, filename)
        except TemplateSyntaxError as exc:
            raise TemplateError(name, exc.lineno, exc.message or "syntax error") from None
        allowed = _allowed(name) or frozenset()
        known = allowed | set(env.globals)
        for variable in sorted(meta.find_undeclared_variables(tree) - known):
            raise TemplateError(
                name,
                _line_of(tree, variable),
                f"unknown placeholder {variable!r}; this template may use: "
                f"{', '.join(sorted(allowed))}",
            )
        references = []
        for reference in meta.find_referenced_templates(tree):
            if reference is None:
                continue
            try:
                self._loader.get_source(env, reference)
            except TemplateNotFound:
                raise TemplateError(
                    name, _reference_line(tree, reference), f"{reference!r} does not exist"
                ) from None
            references.append(reference)
        msgids = frozenset(
            _msgid(message)
            for _, function, message in env.extract_translations(source)  # type: ignore[attr-defined]
            if function in ("gettext", "_") and _msgid(message)
        )
        return _TemplateInfo(
            name, frozenset(meta.find_undeclared_variables(tree)), msgids, tuple(references)
        )

    def _required(self) -> None:
        for moment in Moment:
            if f"{moment.value}.txt" not in self._info:
                raise TemplateError(f"{moment.value}.txt", None, "missing")
        for name in (LAYOUT, GENERIC_PREP):
            if name not in self._info:
                raise TemplateError(name, None, "missing")

    def _language(self, language: str) -> _Language:
        compiled = self._languages.get(language)
        if compiled is None:
            catalog = load_catalog(language, self._paths.get(language, []))
            env = self._environment(catalog)
            templates = {}
            for name in self._info:
                try:
                    template = env.get_template(name)
                except TemplateSyntaxError as exc:  # pragma: no cover - _analyse compiled it
                    raise TemplateError(name, exc.lineno, exc.message or "syntax error") from None
                # a plain dict, not Jinja's ChainMap of template and environment globals:
                # the same names, read once per render instead of through two mappings
                template.globals = dict(template.globals)
                templates[name] = template
            compiled = self._languages[language] = _Language(catalog, env, templates)
        return compiled

    def _trial(self, language: _Language) -> None:
        """Render every moment with sample facts, full and empty, to fail now, not at send."""
        for moment in Moment:
            specialties = sorted(self.preps) if moment in _PREP_MOMENTS else ["generic"]
            for specialty in specialties:
                for full in (True, False):
                    facts = _sample(moment, full, specialty)
                    self._fill(language, _locale(language.catalog.language), moment, facts, [])

    # ------------------------------------------------------------------ rendering

    def resolve(self, requested: str) -> tuple[str, Locale]:
        """The catalog language and formatting locale for a requested language tag.

        ``es-MX`` uses the ``es_MX`` catalog if there is one, else ``es``, and formats for
        ``es_MX``; a language without a catalog falls back to English.

        >>> from referralkit.messages import Renderer
        >>> language, locale = Renderer().resolve("es-MX")
        >>> language, str(locale)
        ('es', 'es_MX')
        """
        language, locale = self._resolve(requested)
        return language.catalog.language, locale

    def _resolve(self, requested: str) -> tuple[_Language, Locale]:
        found = self._resolved.get(requested)
        if found is None:
            locale = parse_locale(requested)
            candidates = [str(locale), locale.language] if locale is not None else []
            language = next((c for c in candidates if c in self.languages), SOURCE_LANGUAGE)
            if locale is None or (language == SOURCE_LANGUAGE and locale.language != "en"):
                locale = _locale(language)
            found = self._resolved[requested] = (self._language(language), locale)
        return found

    def render(
        self,
        referral: Referral,
        moment: Moment | str,
        *,
        language: str | None = None,
        version: int | None = None,
        cause: Cause | str | None = None,
        new_date: dt.date | None = None,
        estimate: Money | None = None,
    ) -> Message:
        """The message for ``moment`` about ``referral``.

        ``language`` overrides the reader's language (the patient's preferred language, or
        ``default_language`` for the referring clinician). ``version`` is the referral version
        the message is about (default: the referral's own); with the referral id and the
        moment it makes the message's idempotency key. :attr:`Moment.DELAYED` needs
        ``cause`` and takes the ``new_date`` expected; :attr:`Moment.NOT_COVERED` and
        :attr:`Moment.SELF_PAY` take an ``estimate`` of what the patient would pay.

        Raises :class:`~referralkit.errors.ValidationError` when the referral does not hold
        what the moment is about (a booked message with no booked visit).
        """
        if not isinstance(referral, Referral):
            raise ValidationError("referral", "expected a Referral")
        moment = _moment(moment)
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise ValidationError("version", "expected an int")
        patient = moment.audience is Audience.PATIENT
        requested = language or (
            referral.patient.preferred_language if patient else self.default_language
        )
        compiled, locale = self._resolve(requested)
        facts = read_facts(
            referral,
            moment,
            self.organization,
            self.zone,
            cause=cause,
            new_date=new_date,
            estimate=estimate,
        )
        if moment in _PREP_MOMENTS:
            facts["prep"] = self._prep(referral.specialty)
        phrase_missing: list[str] = []
        subject, text, sms, html, names = self._fill(
            compiled, locale, moment, facts, phrase_missing
        )
        used, missing = self._about(compiled, names)
        missing_all = tuple(sorted(missing | set(phrase_missing)))
        if missing_all:
            logger.warning(
                "%s message: %d text(s) have no %s translation and are shown in English",
                moment.value,
                len(missing_all),
                compiled.catalog.language,
            )
        number = referral.version if version is None else version
        return Message(
            referral_id=referral.id,
            moment=moment,
            version=number,
            key=f"{referral.id}/{moment.value}/{number}",
            subject=subject,
            text=text,
            sms=sms,
            html=html,
            language=compiled.catalog.language,
            locale=str(locale),
            requested_language=requested,
            interpreter=bool(facts.get("interpreter")),
            channels=_channels(referral, moment),
            facts={k: _raw(v) for k, v in facts.items() if k in used and k != "prep"},
            missing=missing_all,
            templates=names,
        )

    def _prep(self, specialty: str) -> str:
        return f"prep/{specialty}.txt" if specialty in self.preps else GENERIC_PREP

    def _fill(
        self,
        language: _Language,
        locale: Locale,
        moment: Moment,
        facts: Mapping[str, Any],
        missing: list[str],
    ) -> tuple[str, str, str, str | None, tuple[str, ...]]:
        catalog = language.catalog
        context = {name: _display(value, catalog, locale, missing) for name, value in facts.items()}
        if "interpreter_language" in context:
            context["interpreter_language"] = language_name(
                str(facts["interpreter_language"]), locale
            )
        context["language"] = catalog.language
        text_name = f"{moment.value}.txt"
        module = _run(language, text_name, lambda t: t.make_module(context))
        text = _tidy(str(module))
        subject = _tidy(str(getattr(module, "subject", "")))
        if not subject:
            raise TemplateError(text_name, None, "sets no subject ({% set subject %})")
        sms = _tidy(str(getattr(module, "sms", ""))) or subject
        html_name = f"{moment.value}.html"
        if html_name not in language.templates:
            html_name = LAYOUT
        # escaped here, in one pass over the text, rather than line by line in the sandbox
        paragraphs = [
            Markup(p.replace("\n", "<br>\n"))  # noqa: S704 - escape() made it safe
            for p in str(escape(text)).split("\n\n")
        ]
        html = _run(
            language,
            html_name,
            lambda t: t.render({**context, "subject": subject, "paragraphs": paragraphs}),
        ).strip()
        names: tuple[str, ...] = (text_name, html_name)
        if "prep" in facts:
            names += (str(facts["prep"]),)
        return subject, text, sms, html or None, names

    def _about(
        self, language: _Language, names: tuple[str, ...]
    ) -> tuple[frozenset[str], frozenset[str]]:
        """The fact names the templates use, and their texts the catalog lacks."""
        key = (language.catalog.language, *names)
        found = self._infos.get(key)
        if found is None:
            seen: set[str] = set()
            todo = list(names)
            while todo:
                name = todo.pop()
                if name not in seen:
                    seen.add(name)
                    todo.extend(self._info[name].references)
            infos = [self._info[name] for name in seen]
            used = frozenset().union(*(i.names for i in infos))
            msgids = frozenset().union(*(i.msgids for i in infos))
            missing = frozenset(m for m in msgids if not language.catalog.has(m))
            found = self._infos[key] = (used, missing)
        return found


_NULL: Final = load_catalog(SOURCE_LANGUAGE, []).translations


def _paths(value: str | Path | Sequence[str | Path] | None, name: str) -> list[Path]:
    if value is None:
        return []
    items = [value] if isinstance(value, str | Path) else list(value)
    paths = []
    for item in items:
        if not isinstance(item, str | Path):
            raise ValidationError(name, "expected a folder path or a list of them")
        path = Path(item)
        if not path.is_dir():
            raise ValidationError(name, f"not a folder: {str(path)!r}")
        paths.append(path)
    return paths


def _moment(value: object) -> Moment:
    try:
        return Moment(value)  # type: ignore[arg-type]  # checked here
    except ValueError:
        names = ", ".join(m.value for m in Moment)
        raise ValidationError("moment", f"expected a Moment ({names})") from None


def _locale(language: str) -> Locale:
    return parse_locale(language) or Locale("en")


def _display(value: Any, catalog: Catalog, locale: Locale, missing: list[str]) -> Any:
    """A raw fact as the template shows it: phrases translated, dates and money formatted."""
    if isinstance(value, Phrase):
        source = value.source
        if not catalog.has(source):
            missing.append(source)
        return catalog.translations.gettext(source)
    if isinstance(value, tuple):
        return [_display(item, catalog, locale, missing) for item in value]
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return _date(value, locale)
    if isinstance(value, dt.time):
        return _time(value, locale)
    if isinstance(value, Money):
        return format_currency(value.amount, value.currency, locale=locale)
    return value


# Babel formats a date in about 8 µs; a sweep over many referrals repeats the same few days
@functools.lru_cache(maxsize=4096)
def _date(value: dt.date, locale: Locale) -> str:
    return format_date(value, format="full", locale=locale)


@functools.lru_cache(maxsize=4096)
def _time(value: dt.time, locale: Locale) -> str:
    return format_time(value, format="short", locale=locale)


def _raw(value: Any) -> Any:
    """A fact as :attr:`Message.facts` keeps it: a phrase as its code, the rest unchanged."""
    if isinstance(value, Phrase):
        return value.code
    if isinstance(value, tuple):
        return tuple(_raw(item) for item in value)
    return value


def _run(language: _Language, name: str, call: Callable[[Template], Any]) -> Any:
    """Call into a template, turning any failure into a TemplateError at its line."""
    template = language.templates[name]
    try:
        return call(template)
    except TemplateError:
        raise
    except Exception:
        # Template.render() maps the traceback to template lines; make_module() does not
        exc = rewrite_traceback_stack()
        where, line = _where(exc, language, name)
        reason = exc.message if isinstance(exc, UndefinedError) and exc.message else str(exc)
        raise TemplateError(where, line, f"{type(exc).__name__}: {reason}") from None


def _where(exc: BaseException, language: _Language, default: str) -> tuple[str, int | None]:
    files = {t.filename: n for n, t in language.templates.items() if t.filename}
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename in files:
            return files[frame.filename], frame.lineno
    return default, None


def _line_of(tree: nodes.Template, variable: str) -> int | None:
    for node in tree.find_all(nodes.Name):
        if node.name == variable and node.ctx == "load":
            return node.lineno
    return None  # pragma: no cover - find_undeclared_variables found it in a Name


def _reference_line(tree: nodes.Template, reference: str) -> int | None:
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        target = getattr(node, "template", None)
        if isinstance(target, nodes.Const) and target.value == reference:
            return node.lineno
    return None  # pragma: no cover - find_referenced_templates found it in one of these


def _msgid(message: str | tuple[str | None, ...]) -> str:
    # a {% trans %} block with placeholders extracts as (msgid, None) under newstyle gettext
    found = message if isinstance(message, str) else message[0]
    return found or ""


def _tidy(text: str) -> str:
    """Trailing spaces dropped, runs of blank lines made one: a paragraph break."""
    if " \n" in text or "\t" in text or text.endswith(" "):
        text = _TRAILING_SPACE.sub("", text)
    return _BLANK_LINES.sub("\n\n", text).strip() if "\n\n\n" in text else text.strip()


def _channels(referral: Referral, moment: Moment) -> tuple[Channel, ...]:
    hints = CHANNELS_BY_MOMENT[moment]
    if moment.audience is not Audience.PATIENT:
        return hints
    reachable = {_CONTACT_CHANNELS[c.system] for c in referral.patient.contacts}
    reachable.add("mail")
    if referral.patient.interpreter_needed:
        # a call with an interpreter on the line reaches a patient whom writing may not
        hints = (Channel.PHONE, *(h for h in hints if h is not Channel.PHONE))
    return tuple(h for h in hints if h.value in reachable)


def _sample(moment: Moment, full: bool, specialty: str) -> dict[str, Any]:
    """Facts of the right types for a trial render: every optional present, or none."""
    day = dt.date(2026, 3, 3)
    values: dict[str, Any] = {
        "org_name": "Care team",
        "org_phone": "555-0100" if full else None,
        "org_website": "https://example.org" if full else None,
        "specialty": specialty,
        "specialty_name": Phrase("specialties", specialty),
        "first_name": "Ana",
        "interpreter": full,
        "interpreter_language": "es",
        "plan_name": "Plan" if full else None,
        "referring_name": "Clinic",
        "urgent": full,
        "reason_text": Phrase("reasons", "self-pay" if full else ""),
        "alternatives": (Phrase("alternatives", "payment plan"),) if full else (),
        "estimate": Money(decimal.Decimal("120")) if full else None,
        "answer_by": day if full else None,
        "expedited": full,
        "valid_to": day if full else None,
        "specialist_name": "Clinic" if full else None,
        "specialist_org": "Health" if full else None,
        "place": "Suite 1" if full else None,
        "visit_date": day,
        "visit_time": dt.time(9, 30),
        "minutes": 30,
        "cause_text": Phrase("causes", "insurance"),
        "new_date": day if full else None,
        "reference": "REF-1",
        "language": "en",
        "prep": GENERIC_PREP if specialty == "generic" else f"prep/{specialty}.txt",
    }
    wanted = FACTS[moment] | ({"prep"} if moment in _PREP_MOMENTS else set())
    return {name: values[name] for name in wanted}
