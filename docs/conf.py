"""Sphinx configuration: MyST Markdown, autodoc, doctests, the CLI reference from argparse;
builds offline, and the pages it builds need no network either (the lifecycle diagram is an
SVG drawn at build time, see ``_ext/lifecycle_svg.py``).

Build with ``sphinx-build -n -W --keep-going -b html docs docs/_build/html`` and run the
examples with ``-b doctest`` (pytest runs the same examples through ``--doctest-glob=*.md``).
"""

from __future__ import annotations

import doctest
import importlib
import re
import sys
from pathlib import Path
from typing import Any

import attrs

import referralkit

HERE = Path(__file__).parent
GENERATED = HERE / "_generated"
sys.path.insert(0, str(HERE / "_ext"))

from lifecycle_svg import lifecycle_svg  # noqa: E402 - found through the path set above

# -- project -------------------------------------------------------------------------------

project = "referralkit"
author = "referralkit developers"
copyright = "2026, referralkit developers"
release = referralkit.__version__
version = ".".join(release.split(".")[:2])

# -- general -------------------------------------------------------------------------------

extensions = [
    # myst-nb is myst-parser plus notebooks: MyST Markdown notebooks under notebooks/ are
    # executed at build time and shown with their outputs
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    # the CLI reference, generated from referralkit.cli.build_parser
    "sphinxarg.ext",
]
source_suffix = {".md": "myst-nb"}
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store"]
myst_heading_anchors = 3

# -- notebooks (myst-nb) -------------------------------------------------------------------

# Executed on every build, in the build's own environment (the docs extra brings the analytics
# extra and a kernel); an error in a cell fails the build. No widget JavaScript: it would load
# from a CDN, and the build must work offline.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 600
nb_ipywidgets_js: dict[str, dict[str, str]] = {}

# The build must work offline (CI and developer machines reach package registries only), so
# no inventory is fetched; the few outside types are listed in nitpick_ignore below.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Show defaults as written (``checklist=DEFAULT_CHECKLIST``), not as a long repr that the
# signature parser cannot read.
autodoc_preserve_defaults = True
# No sphinx.ext.napoleon: the docstrings are reStructuredText, and napoleon reads the first
# line of every attribute docstring as "type: description", so "``decision``: a
# CoverageDecision" on an EventType member would render ``decision`` as its type.

# The same flags pytest uses for the Markdown doctests (pyproject.toml), so an example that
# passes one runner passes the other.
doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# A snippet that needs an optional extra carries +EXTRA_<NAME> (conftest.py at the root of the
# repository explains them). The docs are built with every extra, so here they only need to be
# known; the HTML leaves them out (trim_doctest_flags).
_EXTRA_FLAGS = [
    doctest.register_optionflag(f"EXTRA_{name}")
    for name in ("ANALYTICS", "FHIR", "POSTGRES", "TEST")
]
_DURABLE_FLAG = doctest.register_optionflag("DURABLE_RULES")
doctest_test_doctest_blocks = ""

# Types from the standard library and dependencies that cannot resolve without an inventory.
nitpick_ignore_regex = [
    ("py:class", r"datetime\.(date|datetime|timedelta)"),
    # NamedTuple fields keep their annotations as written (``import datetime as dt``), and
    # the coordination modules' private helper classes appear in a few return types
    ("py:class", r"dt\.(date|datetime|timedelta)"),
    ("py:class", r"referralkit\.clocks\._\w+"),
    # what the record audit's checks read (a Referral, or the parts a SQL store extracts)
    ("py:class", r"referralkit\.discrepancies\._\w+"),
    ("py:class", r"referralkit\.storage\._snapshot\.\w+"),
    ("py:class", r"collections\.abc\.\w+"),
    ("py:class", r"enum\.StrEnum"),
    ("py:class", r"abc\.ABC"),
    ("py:class", r"pathlib\.Path"),
    ("py:class", r"os\.PathLike"),
    ("py:class", r"(pathlib\.)?Path"),
    # the analytics extra's types (pandas and matplotlib publish no inventory offline)
    ("py:class", r"(pd|pandas)\.\w+"),
    ("py:class", r"(matplotlib\.axes\.)?Axes"),
    ("py:func", r"attrs\.evolve"),
    ("py:class", r"statemachine\.statemachine\.(StateMachine|TModel)"),
    ("py:class", r"hypothesis\.strategies\.SearchStrategy"),
    # a TypeVar has no page of its own
    ("py:class", r"referralkit\.(serialization|_redaction)\.T"),
    ("py:obj", r"referralkit\._redaction\.T"),
    ("py:class", r"random\.Random"),
    ("py:class", r"argparse\.ArgumentParser"),
    ("py:class", r"hypothesis\.strategies\._internal\.core\.DataObject"),
    # a type alias (a Union) is documented as data, not as a class
    ("py:class", r"(referralkit\.rules\.model\.)?Condition"),
    # the type variables of the Directory port, and outside types in directory signatures
    ("py:class", r"referralkit\.directory\._port\.[EM]"),
    ("py:class", r"(decimal\.Decimal|io\.TextIOBase|httpx\.Client)"),
    # referralkit.messages
    ("py:class", r"babel\.core\.Locale"),
    ("py:class", r"decimal\.Decimal"),
    ("py:class", r"ssl\.SSLContext"),
    ("py:class", r"email\.message\.EmailMessage"),
    ("py:mod", r"email|smtplib"),
    # ReferralDesk.notify names the messages types only for type checkers (importing them
    # loads Jinja2 and Babel), so autodoc shows its annotations as written
    ("py:class", r"dt\.date"),
]

# The builtin ``type`` in annotations meets two documented attributes named ``type``
# (ReferralEvent.type, OutputSpec.type); without intersphinx (offline builds) Sphinx calls the
# reference ambiguous. Only that category is silenced: missing targets still fail the build.
suppress_warnings = ["ref.python"]
# sphinx-argparse's domain lacks ``resolve_any_xref``, so MyST warns once per Markdown link it
# tries against it; the links themselves resolve (a missing target is still an error).
suppress_warnings.append("myst.domains")

# -- HTML ----------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"referralkit {release}"

# -- generated pages -----------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    """Write ``text`` only when it changed, so an unchanged file does not force a rebuild."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _documented_home(name: str, obj: Any) -> str:
    """The documented module a public name of ``referralkit`` is described in."""
    module = getattr(obj, "__module__", None) or ""
    if not isinstance(obj, type) and not callable(obj):
        # a constant: the submodule whose __all__ exports it
        for modname in DOCUMENTED_MODULES:
            if name in getattr(importlib.import_module(modname), "__all__", ()):
                return modname
    # private implementation modules are documented under the package that re-exports them
    parts = module.split(".")
    while len(parts) > 2 and (parts[-1].startswith("_") or module not in DOCUMENTED_MODULES):
        parts.pop()
        module = ".".join(parts)
    return module


DOCUMENTED_MODULES = [
    "referralkit.model",
    "referralkit.errors",
    "referralkit.lifecycle",
    "referralkit.events",
    "referralkit.intake",
    "referralkit.desk",
    "referralkit.policy",
    "referralkit.privacy",
    "referralkit.clock",
    "referralkit.serialization",
    "referralkit.storage",
    "referralkit.storage.sqlite",
    "referralkit.storage.postgres",
    "referralkit.testing",
    "referralkit.testing.contract",
    "referralkit.rules",
    "referralkit.rules.facts",
    "referralkit.rules.model",
    "referralkit.rules.loader",
    "referralkit.rules.engine",
    "referralkit.rules.durable",
    "referralkit.rules.timeline",
    "referralkit.rules.policies",
    "referralkit.rules.check",
    "referralkit.rules.whatif",
    "referralkit.interop.fhir",
    "referralkit.synth",
    "referralkit.analytics",
    "referralkit.display",
    "referralkit.cli",
]


def _public_names() -> str:
    """A table of ``referralkit.__all__``: each name, what it is, and where it is described."""
    rows = ["| name | kind | module |", "|---|---|---|"]
    for name in referralkit.__all__:
        obj = getattr(referralkit, name)
        home = _documented_home(name, obj)
        if isinstance(obj, type):
            kind = "exception" if issubclass(obj, BaseException) else "class"
        elif callable(obj):
            kind = "function"
        else:
            kind = "constant"
        rows.append(f"| {{py:obj}}`~{home}.{name}` | {kind} | {{py:mod}}`{home}` |")
    return "\n".join(rows) + "\n"


def _facts_table() -> str:
    """The fact model rules are written against, from ``referralkit.rules.FACTS``."""
    from referralkit.rules import FACTS

    rows = ["| fact | type | values | meaning |", "|---|---|---|---|"]
    for name, spec in FACTS.items():
        values = ", ".join(spec.values) if spec.values else ""
        rows.append(f"| `{name}` | {spec.type.value} | {values} | {spec.doc} |")
    return "\n".join(rows) + "\n"


def _generate(_app: object) -> None:
    # The diagram is drawn from the transition table derived from the python-statemachine
    # class, so it cannot drift from the code.
    _write(GENERATED / "lifecycle.svg", lifecycle_svg())
    _write(GENERATED / "public-names.md", _public_names())
    _write(GENERATED / "facts.md", _facts_table())


def _candidates(target: str, context_module: str | None, context_class: str | None) -> Any:
    """Where else a ``referralkit`` name that did not resolve may be documented."""
    module, _, name = target.rpartition(".")
    # a name as the docstring's module sees it (:meth:`ReferralStore.claim` in a module that
    # imports ReferralStore from a private module)
    head, _, rest = target.partition(".")
    if context_module and context_module.startswith("referralkit"):
        obj = getattr(importlib.import_module(context_module), head, None)
        if isinstance(obj, type) and obj.__module__.startswith("referralkit"):
            yield f"{_documented_home(obj.__name__, obj)}.{obj.__qualname__}" + (
                f".{rest}" if rest else ""
            )
    if not module:
        # an unqualified name the package exports, e.g. :class:`CodeSystem` in a docstring
        # of a module that does not import it
        if name in referralkit.__all__:
            yield f"{_documented_home(name, getattr(referralkit, name))}.{name}"
        # a method named in a docstring a subclass inherits (:meth:`save` on MemoryStore):
        # inherited members are documented once, on the class that defines them
        if context_module and context_class:
            try:
                cls = getattr(importlib.import_module(context_module), context_class)
            except (ImportError, AttributeError):
                return
            for base in getattr(cls, "__mro__", ())[1:]:
                if base.__module__.startswith("referralkit"):
                    yield f"{_documented_home(base.__name__, base)}.{base.__qualname__}.{name}"
        return
    if not module.startswith("referralkit."):
        return
    # signatures name a type by the module that defines it (referralkit.storage._base.Query);
    # the reference documents it where users import it from (referralkit.storage.Query)
    parent = module
    while parent.count(".") > 1:
        parent = parent.rpartition(".")[0]
        yield f"{parent}.{name}"
    # a re-export named by the re-exporting module (referralkit.testing.FakeClock)
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return
    yield f"{_documented_home(name, obj)}.{name}"


def _resolve_reexport(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    """Resolve a Python reference to a ``referralkit`` object documented under another name."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    targets = _candidates(node.get("reftarget", ""), node.get("py:module"), node.get("py:class"))
    for candidate in targets:
        if candidate in domain.objects:
            return domain.resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], candidate, node, contnode
            )
    return None


def _attrs_defaults(
    app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None, ret: str
) -> tuple[str | None, str] | None:
    """Show an attrs class's defaults as values, not as its generated ``__init__`` spells them.

    With ``autodoc_preserve_defaults`` an attrs ``__init__`` reads
    ``status: Status = attr_dict['status'].default`` and ``payload: ... = NOTHING`` (a
    factory); this shows ``Status.DRAFT`` and ``dict()`` instead.
    """
    # imported here: pytest imports this file (--doctest-modules) where Sphinx is not installed
    from sphinx.util.inspect import object_description

    if what not in ("class", "exception") or signature is None or not attrs.has(obj):
        return None
    for field in attrs.fields(obj):
        default = field.default
        if isinstance(default, attrs.Factory):
            shown = f"{getattr(default.factory, '__name__', 'factory')}()"
            signature = re.sub(rf"(\b{field.name}: [^=]*= )NOTHING", rf"\g<1>{shown}", signature)
        elif default is not attrs.NOTHING:
            signature = signature.replace(
                f"attr_dict['{field.name}'].default", object_description(default)
            )
    return signature, ret


def setup(app: Any) -> None:
    app.connect("builder-inited", _generate)
    app.connect("missing-reference", _resolve_reexport)
    app.connect("autodoc-process-signature", _attrs_defaults)
