"""The durable engine: the same rules compiled to durable-rules JSON rulesets.

The python engine (:class:`~referralkit.rules.engine.PythonEngine`) is the default and the fast
path. :class:`DurableEngine` runs the same :class:`~referralkit.rules.model.Ruleset` on
durable-rules 2.0.28 (a Rete engine written in C) and gives the same answers: the same
matching rules, hence, through the shared :func:`~referralkit.rules.engine.resolve`, the same
decisions. The event rules of :mod:`referralkit.rules.timeline` run on the same adapter.

Safety by construction (DESIGN §5). durable-rules has sharp edges, each handled here once:

- **No background threads.** ``durable.lang`` and its global host are never imported. The
  adapter owns one private ``durable.engine.Host`` subclass whose ``_run`` (which starts
  two self-rearming ``threading.Timer`` chains that dispatch queued actions and timers from
  other threads) does nothing. Every action therefore runs synchronously inside the call that
  caused it, and no thread is left behind.
- **One lock.** durable-rules is not thread-safe (unlocked calls from threads crashed the
  process), so every call into the host, from every engine, holds one process-wide lock.
- **No state left behind.** Classification uses one constant session id. Under hit policy
  ``first`` it posts an event, which the first matching rule (failing any, the catch-all)
  consumes, so the session keeps nothing but durable's own state object; under the other
  policies it asserts a fact and then deletes the session.
- **A catch-all rule** with the lowest priority, so an event no rule matches never raises
  ``MessageNotHandledException``.
- **Unique event ids**, so identical fact values never raise ``MessageObservedException``.
- **Session limit, and memory.** A durable ruleset holds at most 1,024 sessions (its C
  ``createStateNode`` then returns ``ERR_OUT_OF_MEMORY``, a ``MemoryError``, after it has
  already linked a half-made session into its index), and each session of the shipped event
  rules costs about 260 KB of C memory (per-session hash indexes of every join). So the
  adapter keeps a registry of every live session per durable ruleset, shared by all the
  engines of the process, and never lets it pass :data:`SESSION_LIMIT`: opening one more
  deletes the least recently used first (its engine replays it when it needs it again).
  A session of an engine that is garbage-collected without closing its referrals is
  deleted on the next call (a finalizer queues it; it never calls into durable itself, as
  it may run inside a durable action). Should durable still raise ``MemoryError``, the
  adapter frees the old host (deletes every session it knows, then each ruleset: durable's
  ``delete_ruleset`` frees the ruleset's pools but not its sessions' memory, measured at
  about 260 MB per 1,000 sessions left behind), builds a new one, registers every ruleset
  again and retries the call once.
- **No PHI in errors.** Every durable exception becomes a
  :class:`~referralkit.errors.RulesError` naming the ruleset and the operation, never a fact
  value (durable's own exceptions embed the whole event); the original is not chained.
- **Rulesets cannot be unloaded.** durable-rules has no way to free a registered ruleset (its C
  ``delete_ruleset`` returns no memory, measured at about 0.1-0.2 MB per ruleset), so each is
  registered once per process under ``rk.<kind>.<name>.<version>``: compiling the same ruleset
  again reuses the registration, and a changed ruleset (a new version hash) gets a fresh name.
  A process that compiles thousands of distinct rulesets grows accordingly.

How conditions compile (each fact verified against durable-rules 2.0.28, see the tests):

- Fact names become positional keys (``f0``, ``f1``...): durable reads a dotted key as a path
  into nested objects. ``None`` values are dropped before posting, because durable's ``$ex``
  holds for a JSON ``null`` while an absent fact is ``None`` in the reference semantics.
- Every rule also tests a marker field, since durable matches rules against its own session
  state objects too (a bare ``$ex`` rule fired on them forever).
- ``eq``/``in``/comparisons are durable's equality, ``$or`` and ``$lt``...; ``ne`` and
  ``not_in`` add an explicit ``$ex`` (durable's ``$neq`` is already false on an absent field,
  but the reference semantics are stated, not left to that).
- durable has no negation of an arbitrary test on one event (its ``$not`` means "no *other*
  message matches"), so :class:`~referralkit.rules.model.Not` is pushed down to the comparisons
  (De Morgan), and the negation of a comparison is "missing, or the opposite comparison".
- ``prefix`` is ``$mt`` with the pattern ``<escaped prefix>.*``. The ``$mt`` dialect is
  Lua-like, not Python's: patterns are anchored at both ends, ``%`` escapes, and only
  ``% . ( ) * + ? [ ] { } |`` may be escaped (``%`` before any other punctuation is a compile
  error, code 501; a backslash does not escape). So ``C50.9`` is written ``C50%.9.*``:
  unescaped, its ``.`` would also match ``C50X9``.
- durable has no "does not match", so a negated prefix uses derived fields: the first *k*
  characters of the value for every prefix length *k* the rules use (``value[:k] != p`` for
  each prefix ``p`` of length *k*).
- List facts use ``$iany``/``$iall`` with ``$i`` (``$iall`` is false on an empty list, which
  is what ``all_in``/``all_prefix`` want; ``none_in``/``none_prefix`` are true on one, so the
  list's length is posted as a derived field and tested). No ``$or`` sits directly inside
  ``$iany``/``$iall``: durable then reads an uninitialised node field while building the
  ruleset (seen with valgrind), so ``$iany`` of an ``$or`` is distributed and ``$iall``'s
  ``$or`` is closed in an ``$and`` with an always-true ``$ex``.
- Dates are day ordinals; the evaluation day is posted too, and each rule's effective dates
  are part of its durable condition, so ``first`` skips rules not in force.
- Numbers: durable's JSON reader refuses an exponent without a fraction (``1e+16``, ``1e-05``:
  error 204), so such floats are posted as integers when integral and refused otherwise.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import itertools
import json
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final, TypeVar

import attrs

from ..errors import RulesError
from .engine import Evaluation, _Codegen, _TraceTable, resolve
from .facts import FACTS, FactType
from .limits import require
from .model import (
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

__all__ = ["DurableEngine", "mt_prefix"]

Facts = Mapping[str, Any]
Expr = dict[str, Any]
# a compiled condition: a durable expression, or a constant when it folds to one
Compiled = Expr | bool
T = TypeVar("T")

SESSION: Final = "rk"
"""The one session id of stateless classification."""

MARK: Final = "rk"
"""The marker field every posted message carries and every rule tests (durable also matches
rules against its own session-state objects, which lack it)."""

DAY: Final = "rk_day"
"""The evaluation day (an ordinal) in classification messages."""

SESSION_LIMIT: Final = 1_000
"""The most sessions the adapter keeps live per durable ruleset, across every engine of the
process: durable's own limit is 1,024 (see the module docstring)."""

MAX_RULES: Final = 60_000
"""durable priorities are 16-bit; rule ``i`` gets priority ``i + 1``, the catch-all the last."""

_MT_SPECIAL: Final = frozenset("%.()*+?[]{}|")


def mt_prefix(prefix: str) -> str:
    """The durable ``$mt`` pattern matching the strings that start with ``prefix``.

    >>> mt_prefix("C50.9")
    'C50%.9.*'
    >>> mt_prefix("99")
    '99.*'
    """
    return "".join("%" + ch if ch in _MT_SPECIAL else ch for ch in prefix) + ".*"


# --------------------------------------------------------------------------- the host


class _Runtime:
    """The process's one private durable host, its lock, and what is registered on it.

    Everything that touches durable goes through :meth:`call`, which holds the lock, maps
    durable's exceptions to :class:`RulesError`, and rebuilds the host after a ``MemoryError``.
    """

    def __init__(self) -> None:
        try:
            from durable import engine as durable_engine
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise RulesError(
                "the durable engine needs durable-rules (Python < 3.13 and a C compiler): "
                f"{type(exc).__name__}"
            ) from None
        self.lock = threading.RLock()

        class PrivateHost(durable_engine.Host):  # type: ignore[misc]
            """A durable host that never starts its background dispatch timers."""

            def _run(self) -> None:
                # durable's Host._run arms two threading.Timer chains (dispatch_ruleset,
                # dispatch_timers) that poll every ruleset from other threads, run actions
                # after post() has returned, and are never stopped. Actions here are
                # synchronous and run inside the call that caused them, and no rule uses
                # durable's wall-clock timers, so the dispatchers are not needed at all.
                return

        self.host_class: Any = PrivateHost
        self.host: Any = PrivateHost()
        self.generation = 0
        """Bumped whenever the host is rebuilt: sessions of older generations are gone."""
        self.definitions: dict[str, Callable[[], dict[str, Any]]] = {}
        self.sink: list[Any] = []
        """Where actions write what they saw; cleared by each call (under the lock)."""
        self.ids = itertools.count(1)
        self.rebuilds = 0
        self.live: dict[str, collections.OrderedDict[str, None]] = {}
        """Every live session the adapter opened, per durable ruleset, least recently used
        first (see :data:`SESSION_LIMIT`)."""
        self.orphans: collections.deque[tuple[str, str]] = collections.deque()
        """Sessions of garbage-collected engines, deleted on the next call."""

    # ------------------------------------------------------------- registration

    def ensure(self, name: str, build: Callable[[], dict[str, Any]]) -> None:
        """Register ruleset ``name`` (built by ``build``) unless it already is."""
        with self.lock:
            if name in self.definitions:
                return
            self.call(lambda host: host.register_rulesets({name: build()}), "register", name)
            self.definitions[name] = build

    def rebuild(self) -> None:
        """A new host with every ruleset registered again. The old host is freed, not used
        again (continuing on a host after its ``MemoryError`` crashed the process)."""
        self.free(self.host)
        host = self.host_class()
        for name, build in self.definitions.items():
            host.register_rulesets({name: build()})
        self.host = host
        self.generation += 1
        self.rebuilds += 1

    def free(self, host: Any) -> None:
        """Give back what ``host`` holds: every session the adapter knows (the stateless
        one of each ruleset too), then each ruleset. Only sessions the adapter opened are
        deleted: the half-made one a ``MemoryError`` leaves behind has no session id to
        free and is never looked up."""
        for name in self.definitions:
            for sid in (*self.live.get(name, ()), SESSION):
                discard_session(host, name, sid)
        self.live.clear()
        self.orphans.clear()
        try:
            import durable_rules_engine  # type: ignore[import-not-found]
        except ImportError:  # pragma: no cover - installed with durable-rules
            return
        # durable's Host keeps its Ruleset objects in _ruleset_directory and has no way to
        # delete one; the C binding does (delete_ruleset), and frees the ruleset's pools
        for ruleset in list(getattr(host, "_ruleset_directory", {}).values()):
            with contextlib.suppress(Exception):
                durable_rules_engine.delete_ruleset(ruleset._handle)

    # ------------------------------------------------------------- sessions

    def is_live(self, ruleset: str, sid: str) -> bool:
        """Whether session ``sid`` of ``ruleset`` is open (and counted)."""
        live = self.live.get(ruleset)
        return live is not None and sid in live

    def touch(self, ruleset: str, sid: str) -> None:
        """Mark a live session as the most recently used."""
        self.live[ruleset].move_to_end(sid)

    def open_session(self, host: Any, ruleset: str, sid: str) -> None:
        """Count session ``sid`` of ``ruleset`` as live (durable creates it on the first
        fact), deleting the least recently used sessions of the ruleset, whichever engine
        opened them, so that at most :data:`SESSION_LIMIT` are live."""
        live = self.live.setdefault(ruleset, collections.OrderedDict())
        live.pop(sid, None)
        while len(live) >= SESSION_LIMIT:
            old, _ = live.popitem(last=False)
            discard_session(host, ruleset, old)
        # a partial session of a failed call may exist: start clean
        discard_session(host, ruleset, sid)
        live[sid] = None

    def close_session(self, host: Any, ruleset: str, sid: str) -> None:
        """Delete a session the adapter opened (nothing if it is not live)."""
        live = self.live.get(ruleset)
        if live is not None and sid in live:
            del live[sid]
            discard_session(host, ruleset, sid)

    def orphan(self, ruleset: str, sids: Iterable[str]) -> None:
        """Queue the sessions of an engine that is being garbage-collected for deletion on
        the next call. A finalizer calls this: it takes no lock (the collector may run it
        in a thread that holds the lock, inside a durable action) and touches only a deque,
        whose appends are atomic."""
        self.orphans.extend((ruleset, sid) for sid in tuple(sids))

    def _reap(self, host: Any) -> None:
        while self.orphans:
            ruleset, sid = self.orphans.popleft()
            self.close_session(host, ruleset, sid)

    # ------------------------------------------------------------- calls

    def call(self, work: Callable[[Any], T], what: str, ruleset: str) -> T:
        """Run ``work(host)`` under the lock; after a ``MemoryError``, rebuild the host and
        run it once more. Any durable failure becomes a :class:`RulesError` without values."""
        with self.lock:
            try:
                try:
                    if self.orphans:
                        self._reap(self.host)
                    return work(self.host)
                except MemoryError:
                    self.rebuild()
                    return work(self.host)
            except RulesError:
                raise
            except Exception as exc:  # MemoryError included, when the retry failed too
                raise self.error(exc, what, ruleset) from None

    def error(self, exc: BaseException, what: str, ruleset: str) -> RulesError:
        """A :class:`RulesError` for ``exc`` that names its kind and durable's error code,
        never its message: durable's exceptions embed the whole event, which may be PHI."""
        kind = type(exc).__name__
        detail = ""
        found = re.search(r"error code: (\d+)", str(exc)) if kind == "error" else None
        if found:
            detail = f", durable error code {found.group(1)}"
        return RulesError(f"durable-rules: {what} failed on ruleset {ruleset!r} ({kind}{detail})")

    def next_id(self) -> int:
        """A fresh message id: durable refuses a repeated fact unless its ``id`` differs."""
        return next(self.ids)

    def state_exists(self, ruleset: str, sid: str) -> bool:
        """Whether durable holds a session ``sid`` for ``ruleset`` (for tests and checks)."""
        with self.lock:
            try:
                self.host.get_state(ruleset, sid)
            except Exception:
                # durable raises its C-level error (code 309) for an unknown session
                return False
            return True


_RUNTIME: _Runtime | None = None
_RUNTIME_LOCK: Final = threading.Lock()


def runtime() -> _Runtime:
    """The process's durable runtime, created on first use."""
    global _RUNTIME
    with _RUNTIME_LOCK:
        if _RUNTIME is None:
            _RUNTIME = _Runtime()
        return _RUNTIME


# --------------------------------------------------------------------------- values


def json_number(value: int | float, where: str) -> int | float:
    """``value`` in a form durable's JSON reader accepts (see the module docstring)."""
    if isinstance(value, int):  # bool included
        return value
    if not math.isfinite(value):
        raise RulesError(f"durable-rules cannot represent a non-finite number ({where})")
    text = repr(value)
    if "e" in text and "." not in text:
        if value.is_integer():
            return int(value)
        raise RulesError(f"durable-rules cannot represent this number's magnitude ({where})")
    return value


def _constant(value: Any, where: str) -> Any:
    if isinstance(value, dt.date):
        return value.toordinal()
    if isinstance(value, float):
        return json_number(value, where)
    return value


# --------------------------------------------------------------------------- compilation


def _all(items: Iterable[Compiled]) -> Compiled:
    kept: list[Expr] = []
    for item in items:
        if item is False:
            return False
        if item is not True:
            kept.append(item)
    if not kept:
        return True
    return kept[0] if len(kept) == 1 else {"$and": kept}


def _any(items: Iterable[Compiled]) -> Compiled:
    kept: list[Expr] = []
    for item in items:
        if item is True:
            return True
        if item is not False:
            kept.append(item)
    if not kept:
        return False
    return kept[0] if len(kept) == 1 else {"$or": kept}


@attrs.define
class _Field:
    """How one fact is posted: its key, and the derived fields the rules need."""

    name: str
    key: str
    type: FactType
    slices: set[int] = attrs.field(factory=set)
    """Prefix lengths whose slices a negated (or ``none_``) prefix test reads."""

    @property
    def length(self) -> str:
        return self.key + "n"

    @property
    def items(self) -> str:
        return self.key + "x"

    def slice(self, k: int) -> str:
        return f"{self.key}p{k}"


class _Compiler:
    """Conditions to durable expressions, with De Morgan push-down of :class:`Not`."""

    def __init__(self, ruleset: Ruleset) -> None:
        names = sorted(ruleset.facts_used())
        unknown = [n for n in names if n not in FACTS]
        if unknown:
            raise RulesError(f"ruleset {ruleset.name!r}: unknown facts {', '.join(unknown)}")
        self.fields = {n: _Field(n, f"f{i}", FACTS[n].type) for i, n in enumerate(names)}
        self.where = ruleset.name

    def condition(self, c: Condition, negate: bool = False) -> Compiled:
        if isinstance(c, Always):
            return not negate
        if isinstance(c, Not):
            return self.condition(c.item, not negate)
        if isinstance(c, All | AnyOf):
            parts = [self.condition(item, negate) for item in c.items]
            # not (a and b) == (not a) or (not b); not (a or b) == (not a) and (not b)
            conjunction = isinstance(c, All) != negate
            return _all(parts) if conjunction else _any(parts)
        if isinstance(c, Compare):
            return self.compare(c, negate)
        raise RulesError(f"ruleset {self.where!r}: the durable engine cannot compile {c!r}")

    def compare(self, c: Compare, negate: bool) -> Compiled:
        field = self.fields[c.fact]
        key = field.key
        where = f"ruleset {self.where!r}, fact {c.fact!r}"
        present: Expr = {"$ex": {key: 1}}
        missing: Expr = {"$nex": {key: 1}}
        op = c.op
        if op is Op.EXISTS:
            return missing if negate else present
        if op is Op.MISSING:
            return present if negate else missing
        if field.type is FactType.TEXT_LIST:
            return self.list_compare(field, op, c.value, negate, missing)
        values = c.value if isinstance(c.value, tuple) else (c.value,)
        consts = [_constant(v, where) for v in values]
        equal = _any({key: v} for v in consts)
        unequal = _all({"$neq": {key: v}} for v in consts)
        if op in (Op.EQ, Op.IN):
            # durable's equality (and $neq) is false on an absent field
            return _any([missing, unequal]) if negate else equal
        if op in (Op.NE, Op.NOT_IN):
            return _any([missing, equal]) if negate else _all([present, unequal])
        if op is Op.PREFIX:
            if negate:
                return _any([missing, self.no_prefix(field, values, key)])
            return _any({"$mt": {key: mt_prefix(p)}} for p in values)
        opposite = {Op.GT: "$lte", Op.GTE: "$lt", Op.LT: "$gte", Op.LTE: "$gt"}
        if op in opposite:
            if negate:
                return _any([missing, {opposite[op]: {key: consts[0]}}])
            return {"$" + op.value: {key: consts[0]}}
        raise RulesError(f"{where}: operator {op.value!r} does not apply")  # pragma: no cover

    def no_prefix(self, field: _Field, prefixes: Sequence[str], key: str | None) -> Compiled:
        """None of ``prefixes`` starts the value (``key``) or the list item (``$i``)."""
        tests: list[Compiled] = []
        for p in prefixes:
            field.slices.add(len(p))
            slot = field.slice(len(p)) if key is not None else f"$i.p{len(p)}"
            tests.append({"$neq": {slot: p}})
        return _all(tests)

    def list_compare(
        self, field: _Field, op: Op, value: Any, negate: bool, missing: Expr
    ) -> Compiled:
        key = field.key
        values: tuple[str, ...] = tuple(value)
        empty: Expr = {field.length: 0}
        nonempty: Expr = {"$gt": {field.length: 0}}
        # per item: "is one of the values" / "is none of them"
        member = _any({"$i": v} for v in values)
        stranger = _all({"$neq": {"$i": v}} for v in values)
        # per item: "starts with one of the prefixes" / "with none of them"
        prefixed = _any({"$mt": {"$i": mt_prefix(p)}} for p in values)

        def unprefixed() -> Compiled:
            return self.no_prefix(field, values, None)

        # $iany/$iall hold only on a present, non-empty list; a constant test folds to that.
        # An $or directly inside $iany/$iall makes durable's createAlpha read an
        # uninitialised node field (valgrind; it may then refuse the ruleset at random):
        # "some item is a or b" is written "some item is a, or some item is b", and "every
        # item is a or b" closes the $or in an $and with a test that always holds ($ex).
        def some(items: str, test: Compiled) -> Compiled:
            if isinstance(test, bool):
                return nonempty if test else False
            if "$or" in test:
                return _any({"$iany": {items: branch}} for branch in test["$or"])
            return {"$iany": {items: test}}

        def every(items: str, test: Compiled) -> Compiled:
            if isinstance(test, bool):
                return nonempty if test else False
            if "$or" in test:
                test = {"$and": [test, {"$ex": {"$i": 1}}]}
            return {"$iall": {items: test}}

        # each operator as (holds, fails), built lazily: only the one needed is compiled
        # (building "fails" for a prefix operator would post prefix slices for nothing);
        # "fails" includes the absent list
        table: dict[Op, tuple[Callable[[], Compiled], Callable[[], Compiled]]] = {
            Op.ANY_IN: (
                lambda: some(key, member),
                lambda: _any([missing, empty, every(key, stranger)]),
            ),
            Op.ALL_IN: (
                lambda: _all([nonempty, every(key, member)]),
                lambda: _any([missing, empty, some(key, stranger)]),
            ),
            Op.NONE_IN: (
                lambda: _any([empty, every(key, stranger)]),
                lambda: _any([missing, some(key, member)]),
            ),
            Op.ANY_PREFIX: (
                lambda: some(key, prefixed),
                lambda: _any([missing, empty, every(field.items, unprefixed())]),
            ),
            Op.ALL_PREFIX: (
                lambda: _all([nonempty, every(key, prefixed)]),
                lambda: _any([missing, empty, some(field.items, unprefixed())]),
            ),
            Op.NONE_PREFIX: (
                lambda: _any([empty, every(field.items, unprefixed())]),
                lambda: _any([missing, some(key, prefixed)]),
            ),
        }
        if op not in table:  # pragma: no cover - the loader refuses other operators on lists
            raise RulesError(f"operator {op.value!r} does not apply to a list")
        holds, fails = table[op]
        return fails() if negate else holds()


def _validity(rule: Rule) -> list[Compiled]:
    tests: list[Compiled] = []
    if rule.valid_from is not None:
        tests.append({"$gte": {DAY: rule.valid_from.toordinal()}})
    if rule.valid_to is not None:
        tests.append({"$lte": {DAY: rule.valid_to.toordinal()}})
    return tests


# --------------------------------------------------------------------------- the engine


class DurableEngine:
    """A ruleset compiled to a durable-rules JSON ruleset; the interface of
    :class:`~referralkit.rules.engine.PythonEngine`.

    Under hit policy ``first`` each evaluation posts one event (durable fires only the
    highest-priority rule it matches; rule ``i`` has priority ``i + 1``); under the other
    policies it asserts a fact, which fires every matching rule, and deletes the session.
    Thread-safe: every call holds the adapter's process-wide lock, so calls from several
    threads run one at a time. (The pattern's ``'.'`` is escaped: ``C50X9`` is not
    ``C50.9``.)

    >>> from referralkit.rules import loads
    >>> rs = loads('''
    ... [ruleset]
    ... name = "doc"
    ... kind = "coverage"
    ... [[rules]]
    ... id = "breast-cancer"
    ... when = { diagnoses = { any_prefix = ["C50.9"] } }
    ... then = { covered = "covered", pa_needed = "auth-needed" }
    ... ''')
    >>> engine = DurableEngine(rs)  # doctest: +DURABLE_RULES
    >>> day = dt.date(2026, 1, 1)
    >>> engine.matches({"diagnoses": ["C50.91"]}, day)  # doctest: +DURABLE_RULES
    [0]
    >>> engine.matches({"diagnoses": ["C50X9"]}, day)  # doctest: +DURABLE_RULES
    []
    """

    def __init__(self, ruleset: Ruleset) -> None:
        if ruleset.kind is Kind.EVENT:
            raise RulesError(
                f"ruleset {ruleset.name!r} holds event patterns: run it with "
                "referralkit.rules.timeline.EventRules"
            )
        if len(ruleset.rules) > MAX_RULES:
            raise RulesError(
                f"ruleset {ruleset.name!r}: the durable engine takes at most {MAX_RULES} rules"
            )
        require(ruleset)
        self.ruleset = ruleset
        self.name = f"rk.c.{ruleset.name}.{ruleset.version}"
        """The durable ruleset name: a changed ruleset (new version) gets a fresh one."""
        self._first = ruleset.hit_policy is HitPolicy.FIRST
        rules, compiler = _definition(ruleset)
        self.definition: Mapping[str, Any] = rules
        """The durable JSON ruleset (without its actions)."""
        self._fields = tuple(compiler.fields.values())
        # how each fact is posted, grouped by what it needs (this runs on every evaluation)
        plain = (FactType.TEXT, FactType.BOOLEAN, FactType.INTEGER)
        self._plain = tuple(
            (f.name, f.key) for f in self._fields if f.type in plain and not f.slices
        )
        self._dates = tuple((f.name, f.key) for f in self._fields if f.type is FactType.DATE)
        self._numbers = tuple((f.name, f.key) for f in self._fields if f.type is FactType.NUMBER)
        self._sliced = tuple(
            (f.name, f.key, tuple((k, f.slice(k)) for k in sorted(f.slices)))
            for f in self._fields
            if f.type is FactType.TEXT and f.slices
        )
        self._lists = tuple(
            (f.name, f.key, f.length, f.items, tuple((k, f"p{k}") for k in sorted(f.slices)))
            for f in self._fields
            if f.type is FactType.TEXT_LIST
        )
        self._runtime = runtime()
        self._runtime.ensure(
            self.name, functools.partial(_with_actions, json.dumps(rules), self._runtime.sink)
        )
        self._single = [resolve(ruleset, [i]) for i in range(len(ruleset.rules))]
        self._none = resolve(ruleset, [])
        self._traces = _TraceTable(ruleset, _Codegen())

    def __repr__(self) -> str:
        return f"DurableEngine({self.ruleset.name!r}, version={self.ruleset.version!r})"

    # ------------------------------------------------------------- messages

    def message(self, facts: Facts, day: dt.date) -> dict[str, Any]:
        """The durable message for ``facts`` on ``day`` (derived fields included; absent and
        ``None`` facts left out)."""
        get = facts.get
        message: dict[str, Any] = {MARK: 1, DAY: day.toordinal()}
        for name, key in self._plain:
            value = get(name)
            if value is not None:
                message[key] = value
        for name, key in self._dates:
            value = get(name)
            if value is not None:
                message[key] = value.toordinal()
        for name, key in self._numbers:
            value = get(name)
            if value is not None:
                message[key] = json_number(value, f"fact {name!r}")
        for name, key, slices in self._sliced:
            value = get(name)
            if value is not None:
                message[key] = value
                for k, slot in slices:
                    message[slot] = value[:k]
        for name, key, length, items_key, slices in self._lists:
            value = get(name)
            if value is not None:
                items = list(value)
                message[key] = items
                message[length] = len(items)
                if slices:
                    message[items_key] = [{slot: item[:k] for k, slot in slices} for item in items]
        return message

    # ------------------------------------------------------------- matching

    def matches(self, facts: Facts, day: dt.date) -> list[int]:
        """Indices of the matching active rules, in rule order; under ``first`` at most the
        first one."""
        message = self.message(facts, day)
        rt = self._runtime
        name = self.name
        first = self._first

        def work(host: Any) -> list[int]:
            sink = rt.sink
            sink.clear()
            message["sid"] = SESSION
            message["id"] = rt.next_id()
            try:
                if first:
                    # an event is consumed by the highest-priority rule that matches it (the
                    # catch-all, failing any other), so it leaves nothing in the session
                    host.post(name, message)
                else:
                    # a fact fires every rule that matches it; deleting the session is the
                    # cheapest way to remove it (measured: 35 us against 52 for a retract)
                    host.assert_fact(name, message)
                    host.delete_state(name, SESSION)
            except BaseException:
                discard_session(host, name, SESSION)
                raise
            # a rule whose condition durable splits into several paths may fire twice
            found = sorted(set(sink))
            sink.clear()
            return found

        found = rt.call(work, "evaluation", name)
        return found[:1] if first else found

    def first(self, facts: Facts, day: dt.date) -> int | None:
        """The index of the first matching active rule, or ``None``."""
        found = self.matches(facts, day)
        return found[0] if found else None

    def evaluate(self, facts: Facts, day: dt.date, *, explain: bool = False) -> Evaluation:
        """Match, resolve the hit policy, and (with ``explain``) say why each rule did or did
        not match, exactly as the python engine does."""
        if self._first:
            index = self.first(facts, day)
            evaluation = self._none if index is None else self._single[index]
        else:
            evaluation = resolve(self.ruleset, self.matches(facts, day))
        if explain:
            return attrs.evolve(evaluation, trace=self._traces.explain(facts, day))
        return evaluation


# --------------------------------------------------------------------------- capacity

_HASHSET: Final = 500
"""Tests kept below one node of durable's network: its C hash set of children has 512 slots,
and durable-rules 2.0.28 loops forever (``findAlpha`` in rete.c) looking for a free one when
all are taken, or refuses with error 106 (measured: 520 rules keyed on 520 specialties hung;
an ``any_in`` over 512 codes hung)."""
_LIST: Final = 120
"""``$nex`` tests below one node (durable: a list of 128, then error 107)."""
_BETAS: Final = 250
"""Rules ending on one node (durable: a list of 256, then error 108)."""


class _Alpha:
    """A node of durable's alpha network, as ``createAlpha`` (rete.c) builds it: tests are
    shared by equal (operator, field, value) below the same node, ``$iany``/``$iall`` never
    are, and an ``$or`` joins its branches in a fresh node."""

    __slots__ = ("array", "array_nex", "betas", "nex", "next")

    def __init__(self) -> None:
        self.next: dict[Any, _Alpha] = {}
        self.nex: dict[Any, _Alpha] = {}
        self.array: dict[Any, _Alpha] = {}
        self.array_nex: dict[Any, _Alpha] = {}
        self.betas = 0

    def child(self, key: Any, nex: bool, in_array: bool) -> _Alpha:
        table = (
            (self.array_nex if nex else self.array)
            if in_array
            else (self.nex if nex else self.next)
        )
        found = table.get(key)
        if found is None:
            found = table[key] = _Alpha()
            limit = _LIST if nex else _HASHSET
            if len(table) > limit:
                raise _CapacityError(f"more than {limit} different tests below one node")
        return found


class _CapacityError(RulesError):
    """A node of the simulated network went past durable's capacity."""


_fresh = itertools.count()


def _build(expr: Any, parent: _Alpha, in_array: bool) -> _Alpha:
    (key, value), *_ = expr.items()
    if key == "$and":
        node = parent
        for i, item in enumerate(value):
            node = _build(item, node, in_array and i == 0)
        return node
    if key == "$or":
        joined = _Alpha()
        for branch in value:
            end = _build(branch, parent, in_array)
            end.child(("forward", next(_fresh)), False, False)
        return joined
    if key in ("$iany", "$iall"):
        node = parent.child((key, next(_fresh)), False, in_array)
        (_, inner), *_ = value.items()
        _build(inner, node, True)
        return node
    return parent.child((key, json.dumps(value, sort_keys=True)), key == "$nex", in_array)


def capacity_problem(definition: Mapping[str, Any]) -> str | None:
    """Why durable-rules 2.0.28 cannot hold ``definition`` (its rules' conditions, as
    compiled), or ``None``. The network is simulated as durable's ``createAlpha`` builds it
    and each node checked against durable's fixed-size tables (see :data:`_HASHSET`): past
    them durable hangs or refuses the ruleset, so the engine refuses it first, by name."""
    root = _Alpha()
    for name, rule in definition.items():
        try:
            for element in rule["all"]:
                (_, expr), *_ = element.items()
                end = _build(expr, root, False)
                end.betas += 1
                if end.betas > _BETAS:
                    raise _CapacityError(f"more than {_BETAS} rules with the same condition")
        except _CapacityError as overflow:
            which = "the catch-all" if name == "catch" else f"rule #{int(name[1:]) + 1}"
            return (
                f"the durable engine cannot hold it: at {which}, {overflow} of durable's "
                "network (its tables are fixed-size; past them it hangs); run it on the "
                "python engine, or split the rule or the ruleset"
            )
    return None


def _definition(ruleset: Ruleset) -> tuple[dict[str, dict[str, Any]], _Compiler]:
    compiler = _Compiler(ruleset)
    rules: dict[str, dict[str, Any]] = {}
    marker: Expr = {MARK: 1}
    for i, rule in enumerate(ruleset.rules):
        test = _all([marker, *_validity(rule), compiler.condition(rule.when)])
        if test is False:
            continue  # can never match: nothing to register
        expr = test if isinstance(test, dict) else marker
        rules[f"r{i}"] = {"all": [{"m": expr}], "pri": i + 1}
    # the catch-all: lowest priority, so it fires only when no rule took the event
    rules["catch"] = {"all": [{"m": marker}], "pri": len(ruleset.rules) + 1}
    overflow = capacity_problem(rules)
    if overflow is not None:
        raise RulesError(f"ruleset {ruleset.name!r}: {overflow}")
    return rules, compiler


def compile_ruleset(ruleset: Ruleset) -> Mapping[str, Any]:
    """The durable JSON ruleset of ``ruleset`` (its rules' conditions, without actions),
    compiled and checked as :class:`DurableEngine` does but not registered: a
    :class:`~referralkit.errors.RulesError` says why the durable engine cannot run it. Needs
    no durable-rules installed (``rules check --engine durable`` uses it)."""
    if ruleset.kind is Kind.EVENT:
        raise RulesError(f"ruleset {ruleset.name!r} holds event patterns, not conditions")
    if len(ruleset.rules) > MAX_RULES:
        raise RulesError(
            f"ruleset {ruleset.name!r}: the durable engine takes at most {MAX_RULES} rules"
        )
    return _definition(ruleset)[0]


def _with_actions(text: str, sink: list[Any]) -> dict[str, Any]:
    """A fresh definition (durable mutates the one it is given) with its actions: rule ``r<i>``
    appends ``i`` to ``sink``; the catch-all does nothing."""
    definition: dict[str, Any] = json.loads(text)
    for rule_name, rule in definition.items():
        rule["run"] = _ignore if rule_name == "catch" else _recorder(sink, int(rule_name[1:]))
    return definition


def discard_session(host: Any, ruleset: str, sid: str) -> None:
    """Delete a durable session if there is one: durable raises (its C error 309) for a
    session it does not hold, and cleanup after a failure must not hide that failure."""
    with contextlib.suppress(Exception):
        host.delete_state(ruleset, sid)


def _ignore(c: Any) -> None:
    """The catch-all's action: nothing to do."""


def _recorder(sink: list[Any], index: int) -> Callable[[Any], None]:
    def record(c: Any) -> None:
        sink.append(index)

    return record
