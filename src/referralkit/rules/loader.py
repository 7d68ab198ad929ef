"""Load rulesets from TOML files or dictionaries, refusing bad ones with precise problems.

A bad ruleset raises :class:`RulesetError`, whose ``problems`` each name the
file, the line (where it can be found), the rule id and the field. Every problem is reported,
not only the first.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._parser import MAX_DEPTH, Problem, RulesetError, _Parser
from ._patterns import parse_event_ruleset
from .limits import problems
from .model import Kind, Ruleset

__all__ = ["Problem", "RulesetError", "load", "loads", "parse"]


def parse(data: Any, *, source: str | None = None, text: str | None = None) -> Ruleset:
    """A :class:`Ruleset` from already-parsed data (the structure of the TOML format)."""
    parser = _Parser(source, text)
    header = data.get("ruleset") if isinstance(data, Mapping) else None
    if isinstance(header, Mapping) and header.get("kind") == Kind.EVENT.value:
        # event rules are patterns over time, not conditions over facts
        events = parse_event_ruleset(data, source=source, text=text)
        found = problems(events, text=text)
        if found:
            raise RulesetError(found)
        return events
    ruleset = parser.ruleset(data)
    if ruleset is None:
        raise RulesetError(parser.problems)
    found = problems(ruleset, text=text)
    if found:
        raise RulesetError(found)
    return ruleset


_TOML_LINE = re.compile(r"\(at line (\d+)")


def loads(text: str, *, source: str | None = None) -> Ruleset:
    """A :class:`Ruleset` from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = _TOML_LINE.search(str(exc))
        line = int(match.group(1)) if match else None
        raise RulesetError([Problem(f"invalid TOML: {exc}", source, line)]) from None
    except RecursionError:
        # tomllib parses nested tables recursively: hundreds of levels exhaust the stack
        message = f"nested too deeply to read (the limit is {MAX_DEPTH} levels of all/any/not)"
        raise RulesetError([Problem(message, source)]) from None
    return parse(data, source=source, text=text)


def load(path: str | Path) -> Ruleset:
    """A :class:`Ruleset` from a TOML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesetError([Problem(f"cannot read: {exc.strerror}", str(path))]) from None
    return loads(text, source=str(path))
