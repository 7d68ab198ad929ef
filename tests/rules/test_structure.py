"""The rules package's modules import each other in one direction only (issue 9, item 24)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import referralkit.rules
from referralkit.rules import loader, timeline

PACKAGE = Path(referralkit.rules.__file__).parent


def imports(path: Path) -> set[str]:
    """The sibling modules of the rules package that ``path`` imports, at any depth of the
    module (a function-level import is still an import)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_rules_modules_form_no_import_cycle() -> None:
    """A topological order of the rules modules exists: no module reaches itself through its
    imports (loader and timeline used to import each other)."""
    graph = {path.stem: imports(path) for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    order = list(graphlib.TopologicalSorter(graph).static_order())
    assert order.index("_parser") < order.index("_patterns") < order.index("loader")
    assert order.index("_patterns") < order.index("_events_python") < order.index("timeline")
    assert order.index("_patterns") < order.index("_events_durable") < order.index("timeline")


def test_shared_parser_names_keep_their_public_homes() -> None:
    """Problem and RulesetError moved below loader and timeline; they are still importable
    from where users found them."""
    assert loader.Problem is referralkit.rules.Problem
    assert loader.RulesetError is referralkit.rules.RulesetError
    assert timeline.parse_event_ruleset is loader.parse_event_ruleset
