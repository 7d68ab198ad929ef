"""Coverage, urgency and event rules, authored as data and compiled to engines.

See :doc:`/rules` for the format. The pieces:

- :mod:`~referralkit.rules.facts`: the fact model conditions are written against;
- :mod:`~referralkit.rules.model`: conditions, rules, rulesets, hit policies;
- :mod:`~referralkit.rules.loader`: TOML and dictionaries in, precise problems out;
- :mod:`~referralkit.rules.limits`: the limits every ruleset keeps, so that one that loads runs;
- :mod:`~referralkit.rules.engine`: the compiled python engine and hit-policy resolution;
- :mod:`~referralkit.rules.durable`: the same rules on durable-rules (imported on use: it
  needs the durable-rules package, which does not build on every Python);
- :mod:`~referralkit.rules.timeline`: event rules, patterns over a referral's events in time,
  evaluated in pure Python or on durable-rules;
- :mod:`~referralkit.rules.check`: static checks (``referralkit rules check``);
- :mod:`~referralkit.rules.policies`: coverage and urgency policies for the desk;
- :mod:`~referralkit.rules.provenance`: the rule versions a desk keeps in its store, and why
  a stored referral got its decisions (explain, replay).
"""

from __future__ import annotations

from ..model import RuleTrace
from .engine import Engine, Evaluation, PythonEngine, evaluate_condition, resolve
from .facts import FACTS, FactSpec, FactType, extract
from .loader import Problem, RulesetError, load, loads, parse
from .model import (
    Aggregation,
    All,
    Always,
    AnyOf,
    Compare,
    Condition,
    HitPolicy,
    Kind,
    Not,
    Op,
    Rule,
    Ruleset,
)

__all__ = [
    "FACTS",
    "Aggregation",
    "All",
    "Always",
    "AnyOf",
    "Compare",
    "Condition",
    "Engine",
    "Evaluation",
    "FactSpec",
    "FactType",
    "HitPolicy",
    "Kind",
    "Not",
    "Op",
    "Problem",
    "PythonEngine",
    "Rule",
    "RuleTrace",
    "Ruleset",
    "RulesetError",
    "evaluate_condition",
    "extract",
    "load",
    "loads",
    "parse",
    "resolve",
]
