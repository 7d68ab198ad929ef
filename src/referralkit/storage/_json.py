"""JSON text for the SQL adapters: snapshots and event payloads as they are stored, and read
back.

Reading is where a store meets data it did not check: a row edited by hand, a file from a newer
referralkit, a disk error. A stored value that is not JSON, or that the model refuses, is a
:class:`~referralkit.errors.StorageError` naming the referral and (for a refused value) the
field, never the value: the row is PHI, and ``json.JSONDecodeError`` keeps the whole document
in its ``doc`` attribute.

Every record is written sealed: ``{"~c":"<key id>:<count>:<checksum>", ...}``, the record's
JSON with a first member that carries a truncated SHA-256 over the record's text and its row
(referral id; an event's version, index, time, actor, type), the key id when its PHI is
encrypted, and for an event the number of events its change wrote (so a lost event is seen).
:class:`RecordCodec` writes and verifies it, and with a key ring encrypts every PHI field of
a snapshot (the paths come from the model's PHI declaration, worked out once) and every event
payload with AES-256-GCM: a snapshot's PHI values as one ciphertext (format 2, see
:func:`_one_cipher`; the per-field format 1 of older stores is still read), a payload whole,
each bound to its referral and record by the associated data. A record
that fails its checksum or its tag is a :class:`~referralkit.errors.CorruptRecordError`
naming the referral; an encrypted record read without its key an
:class:`~referralkit.errors.EncryptionKeyError`. Rows written before sealing (no ``~c``
member) are read as they are.
"""

from __future__ import annotations

import binascii
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import re
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Final, TypeVar, cast

import attrs
from cryptography.exceptions import InvalidTag

from .._redaction import Sealed
from .._validators import PHI, JsonObject, storable_json
from ..crypto import CIPHER_PREFIX, FieldCipher, KeyProvider
from ..errors import CorruptRecordError, EncryptionKeyError, StorageError, ValidationError
from ..model import Referral, ReferralEvent
from ..serialization import from_dict, to_dict
from ._snapshot import AuditEvent, AuditSnapshot, Slow, audit_snapshot, fast_referral

__all__ = [
    "PLAIN",
    "RecordCodec",
    "change_sizes",
    "event_from_row",
    "events_by_referral",
    "payload_json",
    "referral_from_row",
    "snapshot_json",
]

T = TypeVar("T")


def snapshot_json(value: Any) -> str:
    """A model value (a referral) as compact JSON."""
    return _dumps(to_dict(value), "referral")


def payload_json(payload: Any) -> str:
    """An event payload as compact JSON.

    Payloads are JSON-compatible already (the desk builds them with ``to_dict``), so they are
    encoded directly, with ``to_dict`` only for what the encoder does not know (a datetime, a
    model value): the same text as ``json.dumps(to_dict(payload))`` at a third of the cost
    (walking every payload through the converter was 60% of a bulk intake's time).
    """
    if _PAYLOAD_ENCODE is None:  # pragma: no cover - CPython has the C encoder
        return _dumps(payload, "payload", default=to_dict)
    try:
        return "".join(_PAYLOAD_ENCODE(payload, 0))
    except (TypeError, ValueError, RecursionError):
        raise ValidationError(
            "payload", "is not JSON-compatible (or holds NaN or infinity)"
        ) from None


def _dumps(value: Any, path: str, default: Any = None) -> str:
    try:
        # allow_nan=False: NaN and infinity are not JSON, and PostgreSQL's json type refuses
        # them (the model refuses them first; this keeps a value built around it out too)
        return json.dumps(value, separators=(",", ":"), allow_nan=False, default=default)
    except (TypeError, ValueError):
        raise ValidationError(path, "is not JSON-compatible (or holds NaN or infinity)") from None


def _stored(cls: type[T], data: Any, what: str) -> T:
    """``cls`` from stored ``data`` (JSON text, or JSON the driver parsed already)."""
    problem = ""
    if isinstance(data, Sealed):
        data = data.reveal()
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError:
            problem = "is not valid JSON"
    if not problem:
        try:
            return from_dict(cls, data)
        except ValidationError as exc:
            problem = f"does not fit the model ({exc})"
    # raised outside the handlers: neither the decoder's error (its ``doc`` is the whole row)
    # nor the data travels with it
    del data
    raise StorageError(f"{what} {problem}", driver_error="")


def referral_from_row(snapshot: Any, referral_id: str) -> Referral:
    """The referral a stored snapshot holds; a corrupt one is a StorageError."""
    return _stored(Referral, snapshot, f"the stored snapshot of referral {referral_id!r}")


def event_from_row(row: tuple[Any, ...]) -> ReferralEvent:
    """The event a row ``(referral_id, version, idx, at, actor, type, payload)`` holds, with
    ``at`` as ISO text or a datetime and the payload as JSON text or parsed JSON."""
    referral_id, version, index, at, actor, kind, payload = row
    what = f"the stored event {version}.{index} of referral {referral_id!r}"
    broken = False
    if isinstance(payload, Sealed):
        payload = payload.reveal()
    if isinstance(payload, str | bytes):
        try:
            payload = json.loads(payload)
        except ValueError:
            broken = True
    if broken:
        del row, payload
        raise StorageError(f"{what} has a payload that is not valid JSON", driver_error="")
    if isinstance(payload, dict) and storable_json(payload):
        # decoded JSON: no tuples or non-string keys, and its text is storable; anything
        # else goes to the model as it is, to be refused with its path
        payload = JsonObject(payload)
    return _stored(
        ReferralEvent,
        {
            "referral_id": referral_id,
            "version": version,
            "index": index,
            "at": at,
            "actor": actor,
            "type": kind,
            "payload": payload,
        },
        what,
    )


# --------------------------------------------------------------------------- histories, fast

_loads: Final = json.loads
_fromiso: Final = dt.datetime.fromisoformat


def _stored_event(row: tuple[Any, ...]) -> ReferralEvent:
    """The event of a row this store wrote: the model's constructor, its validators and
    all, but not cattrs and not the payload's JSON checks.

    Measured here (``benchmarks/bench_analytics.py``): :func:`event_from_row` spends most of
    its 60 to 80 microseconds an event in cattrs and in checking that the payload survives a
    JSON round trip; the analytics read every event of every referral. A payload decoded by
    ``json.loads`` from text this store wrote (from a payload the model had checked) is JSON
    by construction, so it is marked :class:`~referralkit._validators.JsonObject` and the
    constructor skips that check. Anything else that is wrong with the row (text edited by
    hand) gets the StorageError :func:`event_from_row` gives, naming the row.
    """
    referral_id, version, index, at, actor, kind, payload = row
    if isinstance(payload, Sealed):
        payload = payload.reveal()
    event: ReferralEvent | None = None
    try:
        if isinstance(payload, str | bytes):
            payload = _loads(payload)
        if isinstance(at, str):  # SQLite keeps ISO text; the model takes datetimes
            at = _fromiso(at)
        if type(payload) is dict:
            event = ReferralEvent(referral_id, version, index, at, actor, kind, JsonObject(payload))
    except (ValueError, ValidationError):
        pass
    if event is None:
        del payload
        return event_from_row(row)  # refuses it with the usual StorageError
    return event


def events_by_referral(rows: Iterable[tuple[Any, ...]]) -> Iterator[list[ReferralEvent]]:
    """Rows ``(referral_id, version, idx, at, actor, type, payload)`` in referral id then
    history order, as one list of events per referral: what the SQL adapters'
    ``event_histories`` yield from one ordered pass over their events table."""
    for _, group in itertools.groupby(rows, key=lambda row: row[0]):
        yield [_stored_event(tuple(row)) for row in group]


# --------------------------------------------------------------------------- sealed records

_Plan = tuple[tuple[str, str, Any], ...]
"""Where PHI sits in a class's JSON: ``(field, kind, sub-plan)`` with kind ``"phi"`` (the
whole value is PHI), ``"one"`` (a model value with PHI inside) or ``"many"`` (a tuple of
them)."""


def _model_class(annotation: Any) -> tuple[str, type] | None:
    """``("one", X)`` for an attrs class ``X`` (or ``X | None``), ``("many", X)`` for
    ``tuple[X, ...]``; ``None`` for anything else."""
    if isinstance(annotation, type) and attrs.has(annotation):
        return "one", annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        item = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        return ("many", item) if isinstance(item, type) and attrs.has(item) else None
    inner = [a for a in args if a is not type(None)]
    if len(inner) == 1 and len(args) == 2:
        found = _model_class(inner[0])
        return found if found is not None and found[0] == "one" else None
    return None


_PLANS: dict[type, _Plan] = {}


def phi_plan(cls: type) -> _Plan:
    """The PHI paths of ``cls``, read from the model's declaration (``metadata={"phi":
    True}``) once per class: nothing here keeps its own list of PHI fields."""
    plan = _PLANS.get(cls)
    if plan is None:
        hints = typing.get_type_hints(cls)
        steps: list[tuple[str, str, Any]] = []
        for field in attrs.fields(cls):
            if field.metadata.get(PHI):
                steps.append((field.name, "phi", None))
                continue
            found = _model_class(hints[field.name])
            if found is not None:
                inner = phi_plan(found[1])
                if inner:
                    steps.append((field.name, found[0], inner))
        plan = _PLANS[cls] = tuple(steps)
    return plan


_b64: Final = binascii.b2a_base64


def _unb64(text: str) -> bytes:
    """Base64 as this store writes it (``_b64``: the standard alphabet, padded, no newline).

    Strict mode: also refuses anything else, and measured here 7× faster than the default
    mode (which skips stray characters one at a time: 130 µs for a 4 KB ciphertext)."""
    return binascii.a2b_base64(text, strict_mode=True)


_DUMP: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


# The C encoder built once and reused (``JSONEncoder.encode`` builds one per call: 7 µs for a
# diagnosis list where the reused one takes 2, measured here); no circularity check, as the
# model's values hold no cycles; NaN refused
_C_ENCODER: Final = getattr(json.encoder, "c_make_encoder", None)
_ENCODE: Final[Any] = (
    _C_ENCODER(
        None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    if _C_ENCODER is not None
    else None
)


# The same for event payloads, with ``to_dict`` for what JSON does not know (a datetime, a
# model value): the text ``json.dumps(payload, separators=(",", ":"), allow_nan=False,
# default=to_dict)`` gives, without building an encoder per payload
_PAYLOAD_ENCODE: Final[Any] = (
    _C_ENCODER(
        None, to_dict, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )
    if _C_ENCODER is not None
    else None
)


def _fast_dump(value: Any) -> str:
    if _ENCODE is None:  # pragma: no cover - CPython has the C encoder
        return str(_DUMP(value))
    return "".join(_ENCODE(value, 0))


_ESCAPE: Final = json.encoder.encode_basestring_ascii
_HEAD: Final = '{"~c":"'
# A seal a flipped bit made unrecognisable (``~`` or ``c`` changed): refused, not read as an
# old unsealed row
_DAMAGED_HEAD: Final = re.compile(r'\{"(?:~.|[^"]c)":"[^"]*"')
_PAYLOAD: Final = "~p"


def _snapshot_dump(data: Any) -> str:
    """A snapshot's JSON text: the reused C encoder (the text ``_dumps`` would give)."""
    try:
        return _fast_dump(data)
    except (TypeError, ValueError):
        raise ValidationError("referral", "is not JSON-compatible (or holds NaN)") from None


def _plaintext(value: Any, path: str) -> bytes:
    """A PHI value's JSON as bytes: text (most PHI) through the C string encoder alone."""
    if type(value) is str:
        return _ESCAPE(value).encode("ascii")
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    try:
        return _fast_dump(value).encode("ascii")
    except (TypeError, ValueError):
        raise ValidationError(path, "is not JSON-compatible (or holds NaN or infinity)") from None


def _from_plaintext(plain: bytes) -> Any:
    """The value of a decrypted plaintext; a plain string without escapes directly."""
    if plain[:1] == b'"' and plain[-1:] == b'"' and b"\\" not in plain and len(plain) > 1:
        return plain[1:-1].decode("ascii")
    return _loads(plain)


def _phi_leaves(
    data: Any, plan: _Plan, prefix: str, into: list[tuple[Any, str, str]], strict: bool = False
) -> None:
    """``(container, key, path)`` of every PHI value (not ``None``) the plan reaches; with
    ``strict`` (stored data), a part of the wrong shape is a TypeError."""
    walker = _WALKERS.get((plan, strict))
    if walker is None:
        walker = _WALKERS[plan, strict] = _compile_walker(plan, strict)
    walker(data, prefix, into)


_Walker = Callable[[Any, str, list[tuple[Any, str, str]]], None]
_WALKERS: dict[tuple[_Plan, bool], _Walker] = {}


def _compile_walker(plan: _Plan, strict: bool) -> _Walker:
    """The walk of ``plan`` as one generated function: the plan's steps unrolled (no call
    per model value, paths below the prefix made once), in the plan's order. Measured here
    a third of the recursive walk's cost on a full referral."""
    lines = ["def walk(d0, p, into):", "    add = into.append"]

    def emit(plan: _Plan, depth: int, base: str, const: str, indent: str) -> None:
        # ``d<depth>`` the dict at hand, its path's text ``base + const`` (a variable and
        # the constant part after it)
        data, value = f"d{depth}", f"v{depth}"
        if strict:
            lines.append(f"{indent}if type({data}) is not dict: raise TypeError")
        for name, kind, inner in plan:
            lines.append(f"{indent}{value} = {data}.get({name!r})")
            lines.append(f"{indent}if {value} is not None:")
            body = indent + "    "
            if kind == "phi":
                lines.append(f"{body}add(({data}, {name!r}, {base} + {const + name!r}))")
            elif kind == "one":
                lines.append(f"{body}d{depth + 1} = {value}")
                emit(inner, depth + 1, base, f"{const}{name}.", body)
            else:
                if strict:
                    lines.append(f"{body}if type({value}) is not list: raise TypeError")
                at, item = f"i{depth}", f"q{depth}"
                lines.append(f"{body}for {at}, d{depth + 1} in enumerate({value}):")
                step = f"{const}{name}."
                lines.append(f"{body}    {item} = {base} + {step!r} + str({at}) + '.'")
                emit(inner, depth + 1, item, "", body + "    ")

    emit(plan, 0, "p", "", "    ")
    namespace: dict[str, Any] = {}
    exec("\n".join(lines), namespace)  # noqa: S102 - source built above from the model's fields
    return cast(_Walker, namespace["walk"])


def _digest(context: str, key_id: str, count: str, body: str) -> str:
    text = f"{context}\x00{key_id}\x00{count}\x00{body}"
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _seal(body: str, context: str, key_id: str = "", count: str = "") -> str:
    head = f'{_HEAD}{key_id}:{count}:{_digest(context, key_id, count, body)}"'
    return head + ("}" if body == "{}" else "," + body[1:])


def _event_context(
    referral_id: Any, version: Any, index: Any, at: Any, actor: Any, kind: Any
) -> str:
    if isinstance(at, str):
        at = dt.datetime.fromisoformat(at)
    if isinstance(at, dt.datetime):
        at = at.astimezone(dt.UTC).isoformat()
    return f"{referral_id}\x00{version}\x00{index}\x00{at}\x00{actor}\x00{kind}"


def _open_field(
    cipher: FieldCipher,
    opened: dict[str, Any],
    token: Any,
    aad: bytes,
    referral_id: str,
    path: str,
) -> bytes:
    """The plaintext of one encrypted PHI value of a snapshot (``token``, as
    :meth:`RecordCodec._encrypt` wrote it), its associated data ``aad`` checked; ``opened``
    keeps each key id's decrypt for the rest of the record. A value that is not such a
    ciphertext, or does not open, is a :class:`CorruptRecordError` naming the referral and
    the field (never the value)."""
    try:
        if type(token) is not str or not token.startswith(CIPHER_PREFIX):
            raise ValueError
        key_id, colon, body = token[4:].partition(":")
        if not colon or len(body) < 40:  # a nonce and a tag take 28 bytes
            raise ValueError
        aead = opened.get(key_id)
        if aead is None:
            aead = opened[key_id] = cipher.aead(key_id).decrypt
        sealed = _unb64(body)
        plain: bytes = aead(sealed[:12], sealed[12:], aad)
    except (InvalidTag, ValueError, binascii.Error):
        raise _undecryptable(referral_id, path) from None
    return plain


def _undecryptable(referral_id: str, path: str) -> CorruptRecordError:
    return CorruptRecordError(referral_id, "snapshot", f"field {path} does not decrypt")


# --------------------------------------------------------------------------- snapshot format 2

SNAPSHOT_FORMAT: Final = 2
"""The format encrypted snapshots are written in: all of a record's PHI in one ciphertext.

Format 1 (stores written before it) encrypted each PHI field on its own (``~e1:<key
id>:<base64>`` in the field's place, the referral id and field path as associated data); it
is still read, and :func:`~referralkit.storage.rotate_keys` rewrites it in format 2."""

# The members a format 2 snapshot's body starts with, right after its seal: the format, the
# PHI field paths the ciphertext covers, the ciphertext
_FORMAT_2: Final = '{"~v":2,"~f":"'
_CIPHER_MEMBER: Final = '","~e":"'
_FORMAT_2_MEMBERS: Final = "," + _FORMAT_2[1:]
# a path's steps ("attachments.0.title" -> ("attachments", 0, "title")), worked out once
_STEPS: dict[str, tuple[str | int, ...]] = {}


def _snapshot_aad(referral_id: str, paths: str, clear: str) -> bytes:
    """The associated data of a format 2 snapshot's ciphertext: the referral id, the record
    kind, the list of PHI field paths it covers and the record's clear part (its JSON text).
    Moved to another row, to an event, onto another list of fields, or beside a clear part
    edited in any way (even with its checksum made again), it does not decrypt."""
    return f"{referral_id}\x00snapshot\x00{paths}\x00{clear}".encode("utf-8", "surrogatepass")


def _one_cipher(cipher: FieldCipher, data: dict[str, Any], referral_id: str, kid: str) -> str:
    """The stored text of a snapshot's JSON ``data`` (emptied of its PHI in place) in
    format 2: every PHI value the model declares (see :func:`phi_plan`; ``None`` values
    stay where they are) taken out of the record, in the plan's order, and encrypted as one
    JSON list with AES-256-GCM under key ``kid``; the record keeps the comma-separated list
    of the values' paths in clear beside the ciphertext::

        {"~c":"<key id>::<checksum>","~v":2,"~f":"patient.id,patient.mrn,...",
         "~e":"<base64: nonce, ciphertext, tag>", <the rest of the referral>}

    The associated data is :func:`_snapshot_aad`. One GCM call and one encoding per record
    instead of one per PHI field (25 on a full referral)."""
    leaves: list[tuple[Any, str, str]] = []
    _phi_leaves(data, phi_plan(Referral), "", leaves)
    paths = ",".join([path for _, _, path in leaves])
    plain = _snapshot_dump([container.pop(name) for container, name, _ in leaves])
    clear = _snapshot_dump(data)
    nonce = os.urandom(_NONCE)
    aad = _snapshot_aad(referral_id, paths, clear)
    token = _b64(nonce + cipher.aead(kid).encrypt(nonce, plain.encode("ascii"), aad), newline=False)
    body = _format_2(paths, token.decode("ascii"), clear)
    return _seal(body, referral_id + "\x00snapshot", kid)


def _format_2(paths: str, token: str, clear: str) -> str:
    tail = '"}' if clear == "{}" else '",' + clear[1:]
    return _FORMAT_2 + paths + _CIPHER_MEMBER + token + tail


_NONCE: Final = 12


def _format_2_parts(body: str, referral_id: str) -> tuple[str, str, str]:
    """``(paths, token, clear part)`` of a format 2 snapshot's body (see :func:`_one_cipher`),
    read from its text; a body that does not have that layout is a
    :class:`CorruptRecordError`."""
    start = len(_FORMAT_2)
    middle = body.find(_CIPHER_MEMBER, start)
    end = body.find('"', middle + len(_CIPHER_MEMBER)) if middle > 0 else -1
    tail = body[end:] if end > 0 else ""
    if tail == '"}':
        clear = "{}"
    elif tail.startswith('",'):
        clear = "{" + tail[2:]
    else:
        raise CorruptRecordError(referral_id, "snapshot", "its layout is damaged")
    return body[start:middle], body[middle + len(_CIPHER_MEMBER) : end], clear


def _opened_values(
    cipher: FieldCipher, kid: str, body: str, referral_id: str
) -> tuple[str, list[Any], str, bytes]:
    """``(paths, values, clear part, plaintext)`` of a format 2 snapshot's body sealed under
    key ``kid``: its ciphertext opened, the associated data checked, one value per path; a
    :class:`CorruptRecordError` naming the referral for anything else."""
    paths, token, clear = _format_2_parts(body, referral_id)
    try:
        if len(token) < 40:  # a nonce and a tag take 28 bytes
            raise ValueError
        raw = _unb64(token)
        plain = cipher.aead(kid).decrypt(
            raw[:_NONCE], raw[_NONCE:], _snapshot_aad(referral_id, paths, clear)
        )
        values = _loads(plain)
    except (InvalidTag, ValueError, binascii.Error):
        raise CorruptRecordError(referral_id, "snapshot", "its PHI does not decrypt") from None
    if type(values) is not list or len(values) != (paths.count(",") + 1 if paths else 0):
        raise CorruptRecordError(referral_id, "snapshot", "its PHI does not decrypt")
    return paths, values, clear, plain


def _steps(path: str) -> tuple[str | int, ...]:
    steps = _STEPS.get(path)
    if steps is None:
        steps = tuple(int(step) if step.isdigit() else step for step in path.split("."))
        if len(_STEPS) < 100_000:
            _STEPS[path] = steps
    return steps


def _open_one_cipher(
    cipher: FieldCipher, body: str, data: dict[str, Any], kid: str, referral_id: str
) -> None:
    """Decrypt, in place, the JSON ``data`` parsed from ``body``, a format 2 snapshot's body
    sealed under key ``kid`` (see :func:`_one_cipher`): its ciphertext opened (the referral
    id, the path list and the clear part checked as associated data) and every value put
    back at its path. A path with no place in the record is a :class:`CorruptRecordError`."""
    paths, values, _, _ = _opened_values(cipher, kid, body, referral_id)
    del data["~v"], data["~f"], data["~e"]
    if not values:
        return
    for path, value in zip(paths.split(","), values, strict=True):
        steps = _steps(path)
        node: Any = data
        try:
            for step in steps[:-1]:
                node = node[step]
        except (KeyError, IndexError, TypeError):
            node = None
        last = steps[-1]
        if type(node) is not dict or type(last) is not str or node.get(last) is not None:
            raise CorruptRecordError(referral_id, "snapshot", f"field {path} has no place")
        node[last] = value


class RecordCodec:
    """Seals, verifies, encrypts and decrypts the records of one store (see the module
    docs). ``provider`` is the store's key ring; ``None`` for an unencrypted store, whose
    records are still sealed with a checksum."""

    __slots__ = ("cipher",)

    def __init__(self, provider: KeyProvider | None = None) -> None:
        self.cipher = FieldCipher(provider) if provider is not None else None

    @property
    def encrypted(self) -> bool:
        """True when new records are encrypted."""
        return self.cipher is not None

    @property
    def key_id(self) -> str:
        """The key id new records carry ('' when unencrypted)."""
        return self.cipher.primary_id if self.cipher is not None else ""

    def patient_key(self, patient_id: str) -> str:
        """What the store keeps and filters on for a patient id: its blind index when
        encrypted."""
        if self.cipher is None:
            return patient_id
        return self.cipher.blind_index("patient.id", patient_id)

    def patient_keys(self, patient_id: str) -> list[str]:
        """Every form a patient id can be stored in (rows not yet encrypted keep it clear)."""
        if self.cipher is None:
            return [patient_id]
        return [self.patient_key(patient_id), patient_id]

    # ------------------------------------------------------------------ writing

    def snapshot_text(self, referral: Referral, key_id: str | None = None) -> str:
        """The stored text of a snapshot (format 2 when encrypted: see :func:`_one_cipher`)."""
        data = to_dict(referral)
        if self.cipher is None:
            return _seal(_snapshot_dump(data), referral.id + "\x00snapshot")
        return _one_cipher(self.cipher, data, referral.id, key_id or self.cipher.primary_id)

    def _encrypt(self, data: Any, plan: _Plan, referral_id: str, prefix: str, kid: str) -> None:
        """Encrypt, in place, every PHI value of ``data`` the plan reaches.

        The values are found first, then encrypted in one tight loop with one draw of
        nonces for the record: the per-field cost is then GCM itself (measured here, the
        per-call overheads of a method per field were as much again).
        """
        cipher = self.cipher
        assert cipher is not None
        leaves: list[tuple[Any, str, str]] = []
        _phi_leaves(data, plan, prefix, leaves)
        nonces = os.urandom(12 * len(leaves))
        seal = cipher.aead(kid).encrypt
        head = f"{CIPHER_PREFIX}{kid}:"
        context = referral_id + "\x00"
        at = 0
        escape = _ESCAPE
        for container, name, path in leaves:
            nonce = nonces[at : at + 12]
            at += 12
            aad = (context + path).encode("utf-8", "surrogatepass")
            value = container[name]
            # most PHI is text: the C string encoder alone
            plain = escape(value).encode("ascii") if type(value) is str else _plaintext(value, path)
            container[name] = head + _b64(nonce + seal(nonce, plain, aad), newline=False).decode(
                "ascii"
            )

    def payload_text(self, event: ReferralEvent, count: int, key_id: str | None = None) -> str:
        """The stored text of an event's payload; ``count`` is the number of events of its
        change."""
        return self.payload_text_of(
            payload_json(event.payload),
            (event.referral_id, event.version, event.index, event.at, event.actor, event.type),
            count,
            key_id,
        )

    def payload_text_of(
        self, body: str, row: Sequence[Any], count: int, key_id: str | None = None
    ) -> str:
        """The stored text of a payload's JSON ``body`` for the event row
        ``(referral_id, version, idx, at, actor, type)``."""
        referral_id, version, index = row[0], row[1], row[2]
        kid = ""
        if self.cipher is not None:
            kid = key_id or self.cipher.primary_id
            aad = f"{referral_id}\x00event {version}.{index}\x00payload".encode(
                "utf-8", "surrogatepass"
            )
            # the token is ASCII without quotes or backslashes (a key id and base64): what
            # FieldCipher.encrypt writes, with binascii's encoder
            nonce = os.urandom(_NONCE)
            sealed = self.cipher.aead(kid).encrypt(nonce, body.encode(), aad)
            token = _b64(nonce + sealed, newline=False).decode("ascii")
            body = f'{{"{_PAYLOAD}":"{CIPHER_PREFIX}{kid}:{token}"}}'
        return _seal(body, _event_context(*row), kid, str(count))

    # ------------------------------------------------------------------ reading

    @staticmethod
    def _text(stored: Any) -> str | None:
        if isinstance(stored, Sealed):
            stored = stored.reveal()
        if isinstance(stored, bytes):
            try:
                stored = stored.decode("utf-8")
            except UnicodeDecodeError:
                return None
        if isinstance(stored, dict):  # a driver that parsed JSON: its text, re-made exactly
            try:
                stored = _DUMP(stored)
            except (TypeError, ValueError):
                return None
        return stored if isinstance(stored, str) else None

    @staticmethod
    def unseal(text: str, context: str, referral_id: str, record: str) -> tuple[str, str, str]:
        """``(body, key id, count)`` of a sealed record's text, its checksum verified; an
        unsealed (older) record comes back as it is with ``count`` ``"-"``."""
        if not text.startswith(_HEAD):
            if _DAMAGED_HEAD.match(text):
                raise CorruptRecordError(referral_id, record, "its seal is damaged")
            return text, "", "-"
        end = text.find('"', len(_HEAD))
        parts = text[len(_HEAD) : end].split(":") if end > 0 else []
        rest = text[end + 1 :]
        if len(parts) != 3 or not rest:
            raise CorruptRecordError(referral_id, record, "its seal is damaged")
        if rest == "}":
            body = "{}"
        elif rest[0] == ",":
            body = "{" + rest[1:]
        else:
            raise CorruptRecordError(referral_id, record, "its seal is damaged")
        key_id, count, digest = parts
        if digest != _digest(context, key_id, count, body):
            raise CorruptRecordError(referral_id, record, "its checksum does not match")
        return body, key_id, count

    def _need_cipher(self, key_id: str, referral_id: str) -> FieldCipher:
        if self.cipher is None:
            raise EncryptionKeyError(
                f"referral {referral_id!r} is encrypted (key {key_id!r}): open the store with "
                "its key ring (open_store(url, keys=...), or REFERRALKIT_KEYS=FILE)"
            )
        return self.cipher

    def snapshot_data(self, stored: Any, referral_id: str) -> Any:
        """The verified, decrypted JSON data of a stored snapshot."""
        return self._snapshot_data(stored, referral_id)[0]

    def _snapshot_data(self, stored: Any, referral_id: str) -> tuple[Any, bool]:
        """:meth:`snapshot_data`, and whether the record was sealed (text this store wrote)."""
        text = self._text(stored)
        if text is None:
            raise CorruptRecordError(referral_id, "snapshot", "it is not JSON text")
        body, key_id, count = self.unseal(
            text, referral_id + "\x00snapshot", referral_id, "snapshot"
        )
        try:
            data = _loads(body)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise CorruptRecordError(referral_id, "snapshot", "it is not a JSON object")
        if key_id:
            cipher = self._need_cipher(key_id, referral_id)
            if body.startswith(_FORMAT_2):
                _open_one_cipher(cipher, body, data, key_id, referral_id)
            else:  # format 1: one ciphertext per PHI field (stores written before format 2)
                self._decrypt(cipher, data, phi_plan(Referral), referral_id, "")
        return data, count != "-"

    def _decrypt(
        self,
        cipher: FieldCipher,
        data: Any,
        plan: _Plan,
        referral_id: str,
        prefix: str,
    ) -> None:
        """Decrypt, in place, every PHI value of ``data`` the plan reaches (as
        :meth:`_encrypt`: the values found first, then one tight loop)."""
        leaves: list[tuple[Any, str, str]] = []
        try:
            _phi_leaves(data, plan, prefix, leaves, strict=True)
        except (AttributeError, TypeError):
            raise CorruptRecordError(referral_id, "snapshot", "its shape is wrong") from None
        context = referral_id + "\x00"
        opened: dict[str, Any] = {}
        for container, name, path in leaves:
            aad = (context + path).encode("utf-8", "surrogatepass")
            plain = _open_field(cipher, opened, container[name], aad, referral_id, path)
            try:
                container[name] = _from_plaintext(plain)
            except ValueError:
                raise _undecryptable(referral_id, path) from None

    def referral(self, stored: Any, referral_id: str) -> Referral:
        """The referral a stored snapshot holds, verified (and decrypted)."""
        data, sealed = self._snapshot_data(stored, referral_id)
        referral = None
        if sealed:
            # text this store wrote from a checked referral: built directly (see _snapshot);
            # anything the fast builder does not recognise is read (or refused) as below
            with contextlib.suppress(Slow):
                referral = fast_referral(data)
        if referral is None:
            referral = _stored(Referral, data, f"the stored snapshot of referral {referral_id!r}")
        if referral.id != referral_id:
            raise CorruptRecordError(referral_id, "snapshot", "it holds another referral")
        return referral

    def audited(self, stored: Any, referral_id: str, parts: Any) -> Referral | AuditSnapshot:
        """What the record audit reads of a stored snapshot: its :class:`AuditSnapshot`
        from ``parts`` (the JSON texts of the values at
        :data:`~referralkit.storage._snapshot.AUDIT_PATHS` and
        :data:`~referralkit.storage._snapshot.AUDIT_WHEN`, as the database extracted them from
        the stored text, or ``None``), once the record's seal is verified; the
        :class:`~referralkit.model.Referral` itself (:meth:`referral`) for a record the
        database cannot read for us: an encrypted or unsealed one, or anything
        :func:`~referralkit.storage._snapshot.audit_snapshot` does not recognise."""
        text = self._text(stored)
        if text is not None and text.startswith(_HEAD) and parts is not None:
            _, key_id, count = self.unseal(
                text, referral_id + "\x00snapshot", referral_id, "snapshot"
            )
            head, when = parts
            if not key_id and count != "-" and type(head) is str and type(when) is str:
                with contextlib.suppress(Slow, ValueError):
                    return audit_snapshot(referral_id, _loads(head), _loads(when))
        return self.referral(stored, referral_id)

    def payload_body(self, row: Sequence[Any], when: dt.datetime | None = None) -> tuple[str, str]:
        """``(payload JSON text, count)`` of an event row, verified and decrypted (``when``:
        the row's time already read from it, in UTC)."""
        referral_id = str(row[0])
        record = f"event {row[1]}.{row[2]}"
        text = self._text(row[6])
        if text is None:
            raise CorruptRecordError(referral_id, record, "its payload is not JSON text")
        try:
            at = row[3] if when is None else when
            context = _event_context(row[0], row[1], row[2], at, row[4], row[5])
        except (ValueError, TypeError, OverflowError):
            raise CorruptRecordError(referral_id, record, "its time is not a time") from None
        body, key_id, count = self.unseal(text, context, referral_id, record)
        if key_id:
            cipher = self._need_cipher(key_id, referral_id)
            aad = f"{referral_id}\x00event {row[1]}.{row[2]}\x00payload".encode(
                "utf-8", "surrogatepass"
            )
            try:
                token = _loads(body).get(_PAYLOAD)
                body = cipher.decrypt(token, aad).decode("utf-8")
            except (InvalidTag, ValueError, AttributeError):
                raise CorruptRecordError(
                    referral_id, record, "its payload does not decrypt"
                ) from None
        return body, count

    def event(self, row: Sequence[Any]) -> ReferralEvent:
        """The event of a row ``(referral_id, version, idx, at, actor, type, payload)``."""
        body, _ = self.payload_body(row)
        return event_from_row((*row[:6], body))

    def history(
        self, rows: Iterable[Sequence[Any]], referral_id: str, version: int | None = None
    ) -> list[ReferralEvent]:
        """The events of one referral's rows (in history order), each verified, and the
        history checked whole: versions 1, 2, ... (up to ``version``, the snapshot's, when
        given), each change with all the events it wrote."""
        events: list[ReferralEvent] = []
        counts: list[str] = []
        for row in rows:
            body, count = self.payload_body(row)
            # a sealed row is text this store wrote (the fast path's premise); an unsealed
            # one, from before sealing or edited by hand, gets every check
            build = _fast_event if count != "-" else event_from_row
            events.append(build((*row[:6], body)))
            counts.append(count)
        _check_whole(events, counts, referral_id, version)
        return events

    def selected(self, rows: Iterable[Sequence[Any]]) -> list[ReferralEvent]:
        """The events of some of one referral's rows (a selection by type, in history
        order), each verified and decrypted as :meth:`history` does; the history is not
        checked whole (a selection leaves events out by design)."""
        events: list[ReferralEvent] = []
        append = events.append
        for row in rows:
            event = _sealed_plain_event(row)
            if event is None:  # anything else: verified and decrypted the general way
                body, count = self.payload_body(row)
                build = _fast_event if count != "-" else event_from_row
                event = build((*row[:6], body))
            append(event)
        return events

    def selected_lazily(
        self, ids: Sequence[str], versions: dict[str, int], rows: list[Any]
    ) -> Iterator[tuple[str, int, list[ReferralEvent]]]:
        """For each of ``ids`` with a version in ``versions``, in the order of ``ids``: its
        id, that version and its events among ``rows`` (rows in referral id then history
        order, as one read selected them) up to that version, decoded as :meth:`selected`
        decodes them, one referral at a time, as the caller asks for it.

        What the sweep reads a page of referrals with (``_sweep_reads``): the events of a
        referral are decoded only when it is evaluated and, unless it has alerts to write,
        freed right after, so they never outlive the young generation of the garbage
        collector. A page decoded whole (thousands of events, each with its payload's
        dicts) lived long enough to be promoted, and every full collection that such
        promotions trigger walks the whole heap of the process. ``rows`` is emptied as it
        is read."""
        grouped = {k: list(g) for k, g in itertools.groupby(rows, key=lambda row: row[0])}
        rows.clear()
        for referral_id in ids:
            version = versions.get(referral_id)
            group = grouped.pop(referral_id, ())
            if version is not None:
                events = self.selected(group)
                del group
                yield referral_id, version, [e for e in events if e.version <= version]

    def audit_events(self, row: Sequence[Any] | None) -> list[ReferralEvent] | list[AuditEvent]:
        """What the store audit reads of a referral's last status change, ``row`` (``None``:
        no such event): verified and decrypted as :meth:`selected` does, then only its type
        and time built (:class:`AuditEvent`) when the row is sealed (text this store wrote
        from a checked event); an unsealed row, or a time of another type, is read whole
        (:meth:`selected`) and accepted or refused as every read does."""
        if row is None:
            return []
        at, kind = row[3], row[5]
        when = None
        if type(at) is str and type(kind) is str:
            with contextlib.suppress(ValueError):
                when = _fromiso(at)
        if when is None or when.tzinfo is not dt.UTC or when.fold:
            return self.selected((row,))
        _, count = self.payload_body(row, when)
        return [AuditEvent(kind, when)] if count != "-" else self.selected((row,))

    def histories(self, rows: Iterable[Sequence[Any]]) -> Iterator[list[ReferralEvent]]:
        """:func:`events_by_referral`, each row verified and decrypted."""
        for referral_id, group in itertools.groupby(rows, key=lambda row: row[0]):
            yield self.history(group, str(referral_id))

    # ------------------------------------------------------------------ the access log

    def reason_text(self, actor: str, action: str, reason: str | None) -> str | None:
        """The stored text of an access record's ``reason``: encrypted when the store has
        a key ring (a break-glass reason is free text, so PHI), except a checkpoint's (its
        chain value and signature, which :func:`referralkit.tamper.verify` reads without
        keys). The hash chain hashes this stored text, so ``verify`` needs no keys."""
        if reason is None or self.cipher is None or (actor, action) == _CHECKPOINT:
            return reason
        return self.cipher.encrypt(
            reason.encode("utf-8", "surrogatepass"), _reason_aad(actor, action)
        )

    def access_row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        """An access-log row ``seq, <ROW_COLUMNS>`` with its reason decrypted."""
        stored = row[9]
        if not isinstance(stored, str) or not stored.startswith(CIPHER_PREFIX):
            return tuple(row)
        record = f"access record {row[0]}"
        if self.cipher is None:
            raise EncryptionKeyError(
                f"{record} holds an encrypted reason: open the store with its key ring "
                "(open_store(url, keys=...), or REFERRALKIT_KEYS=FILE)"
            )
        try:
            plain = self.cipher.decrypt(stored, _reason_aad(str(row[2]), str(row[5])))
        except (InvalidTag, ValueError):
            raise CorruptRecordError("-", record, "its reason does not decrypt") from None
        return (*row[:9], plain.decode("utf-8", "surrogatepass"), *row[10:])


# a checkpoint record (referralkit.tamper): its reason is the checkpoint, no PHI, kept clear
_CHECKPOINT: Final = ("referralkit-checkpoint", "checkpoint")


def _reason_aad(actor: str, action: str) -> bytes:
    return f"access\x00{actor}\x00{action}\x00reason".encode("utf-8", "surrogatepass")


def _check_whole(
    events: Sequence[ReferralEvent], counts: Sequence[str], referral_id: str, version: int | None
) -> None:
    """A lost event (a row whose key a flipped bit moved elsewhere) is an error too."""
    if "-" in counts:  # rows from before sealing carry no counts
        return
    expected_version, expected_index, size = 1, 0, -1
    for event, count in zip(events, counts, strict=True):
        if event.index == 0 and expected_index == size:
            expected_version, expected_index = expected_version + 1, 0
        if expected_index == 0:
            size = int(count) if count.isdigit() else -1
        if (event.version, event.index) != (expected_version, expected_index) or count != str(size):
            raise CorruptRecordError(
                referral_id, f"event {event.version}.{event.index}", "the history has a gap"
            )
        expected_index += 1
    if events and expected_index != size:
        raise CorruptRecordError(referral_id, "history", "the last change lost events")
    # ``<``: a change saved after the snapshot's version was read may have added events
    if version is not None and (events[-1].version if events else 0) < version:
        raise CorruptRecordError(referral_id, "history", "events are missing")


def change_sizes(events: Sequence[ReferralEvent]) -> dict[tuple[str, int], int]:
    """How many of ``events`` each change (referral id, version) has: what each event's
    seal records."""
    sizes: dict[tuple[str, int], int] = {}
    for event in events:
        key = (event.referral_id, event.version)
        sizes[key] = sizes.get(key, 0) + 1
    return sizes


_EVENT_SETTERS: Final = tuple(
    ReferralEvent.__dict__[name].__set__
    for name in ("referral_id", "version", "index", "at", "actor", "type", "payload")
)
_new_object: Final = object.__new__


def _fast_event(row: tuple[Any, ...]) -> ReferralEvent:
    """The event of a sealed row (text this store wrote from an event the model had
    checked), built directly like a sealed snapshot (:mod:`._snapshot`): each value of the
    type the model gives it, without running the field validators again. A value of any
    other type (a time not in UTC as the driver returns it, a payload that is not a JSON
    object) goes to :func:`_stored_event`, which converts it or refuses it."""
    referral_id, version, index, at, actor, kind, payload = row
    try:
        data = _loads(payload) if type(payload) is str else None
        when = _fromiso(at) if type(at) is str else at
    except ValueError:
        return _stored_event(row)
    if (
        type(data) is dict
        and type(when) is dt.datetime
        and when.tzinfo is dt.UTC
        and not when.fold
        and type(referral_id) is str
        and type(version) is int
        and type(index) is int
        and type(actor) is str
        and type(kind) is str
    ):
        return _built_event(referral_id, version, index, when, actor, kind, data)
    return _stored_event(row)


def _built_event(
    referral_id: str,
    version: int,
    index: int,
    when: dt.datetime,
    actor: str,
    kind: str,
    data: dict[str, Any],
) -> ReferralEvent:
    """A :class:`ReferralEvent` of values already checked, built without its validators
    (what :func:`_fast_event` and :func:`_sealed_plain_event` make)."""
    event: ReferralEvent = _new_object(ReferralEvent)
    s_id, s_version, s_index, s_at, s_actor, s_type, s_payload = _EVENT_SETTERS
    s_id(event, referral_id)
    s_version(event, version)
    s_index(event, index)
    s_at(event, when)
    s_actor(event, actor)
    s_type(event, kind)
    s_payload(event, JsonObject(data))
    return event


def _sealed_plain_event(row: Sequence[Any]) -> ReferralEvent | None:
    """The event of a row ``(referral_id, version, idx, at, actor, type, payload)`` whose
    payload is sealed and not encrypted, its time in UTC as the store writes it: verified as
    :meth:`RecordCodec.payload_body` verifies it (the same context, the same checksum) and
    built as :func:`_fast_event` builds it, with the time parsed once (for the seal's
    context and the event both) and no intermediate row. ``None`` for any other row (an
    encrypted or unsealed payload, a time of another type or zone, a value not of the type
    the model gives it): the caller reads it the general way, which accepts it or raises the
    same error as ever. A checksum that does not match is the usual
    :class:`~referralkit.errors.CorruptRecordError`. (The sweep reads a few events of every
    open referral: this is most of its cost per event.)"""
    referral_id, version, index, at, actor, kind, stored = row
    text = stored.reveal() if type(stored) is Sealed else stored
    if (
        type(text) is not str
        or not text.startswith(_HEAD_UNENCRYPTED)
        or type(at) is not str
        or type(referral_id) is not str
        or type(version) is not int
        or type(index) is not int
        or type(actor) is not str
        or type(kind) is not str
    ):
        return None
    try:
        when = _fromiso(at)
    except ValueError:
        return None
    if when.tzinfo is not dt.UTC or when.fold:
        return None
    # as _event_context gives it: a time already in UTC is its own astimezone(UTC)
    context = f"{referral_id}\x00{version}\x00{index}\x00{when.isoformat()}\x00{actor}\x00{kind}"
    body, _, count = RecordCodec.unseal(text, context, referral_id, f"event {version}.{index}")
    try:
        data = _loads(body)
    except ValueError:
        return None
    if type(data) is not dict or count == "-":
        return None
    return _built_event(referral_id, version, index, when, actor, kind, data)


# a sealed record that is not encrypted: its seal's key id is empty
_HEAD_UNENCRYPTED: Final = _HEAD + ":"


PLAIN: Final = RecordCodec(None)
"""The codec of an unencrypted store."""


# --------------------------------------------------------------------------- key rotation


def record_key_id(stored: Any) -> str | None:
    """The key id a stored record's seal names ('' when sealed unencrypted, ``None`` when
    unsealed), read from its head without verifying it."""
    text = RecordCodec._text(stored)
    if text is None or not text.startswith(_HEAD):
        return None
    return text[len(_HEAD) : text.find(":", len(_HEAD))]


def rewrites(
    codec: RecordCodec,
    referrals: Sequence[Sequence[Any]],
    events: Sequence[Sequence[Any]],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """What a rotation batch writes: for rows ``(id, version, snapshot)`` and the event rows
    ``(referral_id, version, idx, at, actor, type, payload)`` of the same referrals, the
    ``(snapshot, patient key, id, version)`` and ``(payload, referral_id, version, idx)``
    updates that move every record not yet on ``codec``'s primary key onto it (each record
    verified and decrypted first), snapshots in format 2 (:data:`SNAPSHOT_FORMAT`). Records
    on the primary key already (snapshots in format 2) are left alone."""
    if codec.cipher is None:
        raise EncryptionKeyError("key rotation needs a key ring to rotate to")
    target = codec.cipher.primary_id
    snapshots: list[tuple[Any, ...]] = []
    for referral_id, version, stored in referrals:
        text = RecordCodec._text(stored)
        current = record_key_id(text)
        if current == target and _in_format_2(text):
            continue
        if current:
            # encrypted already: a format 2 record gets a new ciphertext in the same place
            # (the associated data, and so the whole record, checked; nothing parsed); one
            # on the target key already is left alone; format 1 goes the general way
            assert text is not None
            rekeyed = _rekeyed_snapshot(codec.cipher, text, referral_id, target)
            if rekeyed is None:
                continue
            if rekeyed is not _FORMAT_1:
                snapshots.append(
                    (
                        Sealed(rekeyed[0]),
                        Sealed(codec.patient_key(rekeyed[1])),
                        referral_id,
                        version,
                    )
                )
                continue
        # a record stored unencrypted, unsealed or in format 1: verified, then encrypted
        data = codec.snapshot_data(stored, referral_id)
        patient = data.get("patient")
        patient_id = patient.get("id") if isinstance(patient, dict) else None
        if not isinstance(patient_id, str):
            raise CorruptRecordError(referral_id, "snapshot", "it has no patient id")
        text = _one_cipher(codec.cipher, data, referral_id, target)
        snapshots.append(
            (Sealed(text), Sealed(codec.patient_key(patient_id)), referral_id, version)
        )
    payloads: list[tuple[Any, ...]] = []
    sizes: dict[tuple[Any, Any], int] = {}
    for row in events:
        sizes[row[0], row[1]] = sizes.get((row[0], row[1]), 0) + 1
    for row in events:
        current = record_key_id(row[6])
        if current == target:
            continue
        if current:
            moved = _rekeyed_payload(codec.cipher, row, target)
            if moved is not None:
                payloads.append((Sealed(moved), row[0], row[1], row[2]))
                continue
        body, count = codec.payload_body(row)
        if count == "-":  # unsealed: the change's size is counted from its rows
            count = str(sizes[row[0], row[1]])
        text = codec.payload_text_of(body, row[:6], int(count), target)
        payloads.append((Sealed(text), row[0], row[1], row[2]))
    return snapshots, payloads


_FORMAT_1: Final = ("", "")


def _in_format_2(text: str | None) -> bool:
    """Whether a sealed snapshot's text is in format 2 (read from its head, not verified)."""
    end = text.find('"', len(_HEAD)) if text is not None else -1
    return end > 0 and text is not None and text.startswith(_FORMAT_2_MEMBERS, end + 1)


def _rekeyed_snapshot(
    cipher: FieldCipher, text: str, referral_id: str, target: str
) -> tuple[str, str] | None:
    """The stored text of an encrypted snapshot moved onto key ``target``, and its patient
    id: the record verified (its checksum, then its ciphertext opened, which checks the
    referral id, the path list and the whole clear part as associated data), sealed again
    under ``target`` with a fresh nonce and the same associated data, the text around it
    untouched (nothing is parsed but the PHI values). ``None`` when the record is in
    format 2 on ``target`` already (nothing to do); ``_FORMAT_1`` when it is in format 1
    (the caller rewrites it through the model data)."""
    body, key_id, _ = RecordCodec.unseal(
        text, referral_id + "\x00snapshot", referral_id, "snapshot"
    )
    if not body.startswith(_FORMAT_2):
        return _FORMAT_1
    if key_id == target:
        return None
    paths, values, clear, plain = _opened_values(cipher, key_id, body, referral_id)
    fields = paths.split(",")
    patient_id = values[fields.index("patient.id")] if "patient.id" in fields else None
    if not isinstance(patient_id, str):
        raise CorruptRecordError(referral_id, "snapshot", "it has no patient id")
    nonce = os.urandom(_NONCE)
    sealed = cipher.aead(target).encrypt(nonce, plain, _snapshot_aad(referral_id, paths, clear))
    token = _b64(nonce + sealed, newline=False).decode("ascii")
    return _seal(_format_2(paths, token, clear), referral_id + "\x00snapshot", target), patient_id


def _rekeyed_payload(cipher: FieldCipher, row: Sequence[Any], target: str) -> str | None:
    """The stored text of an encrypted event payload (row ``(referral_id, version, idx,
    at, actor, type, payload)``) moved onto key ``target``: verified, opened and sealed
    again with a fresh nonce and the same associated data. ``None`` when the record is not
    the one ciphertext such a payload holds."""
    referral_id = str(row[0])
    record = f"event {row[1]}.{row[2]}"
    text = RecordCodec._text(row[6])
    if text is None:  # pragma: no cover - the caller read the key id from its text
        return None
    try:
        context = _event_context(*row[:6])
    except (ValueError, TypeError, OverflowError):
        raise CorruptRecordError(referral_id, record, "its time is not a time") from None
    body, key_id, count = RecordCodec.unseal(text, context, referral_id, record)
    prefix = '{"' + _PAYLOAD + '":"'
    if not key_id or not body.startswith(prefix) or not body.endswith('"}'):
        return None
    aad = f"{referral_id}\x00{record}\x00payload".encode("utf-8", "surrogatepass")
    try:
        plain = cipher.decrypt(body[len(prefix) : -2], aad)
    except (InvalidTag, ValueError):
        raise CorruptRecordError(referral_id, record, "its payload does not decrypt") from None
    body = prefix + cipher.encrypt(plain, aad, target) + '"}'
    return _seal(body, context, target, count)


# --------------------------------------------------------------------------- dumps


def encrypt_history(
    codec: RecordCodec, referral: Referral, events: Sequence[ReferralEvent]
) -> dict[str, Any]:
    """A dump line's data with every PHI field encrypted as the store encrypts it (the same
    associated data: a ciphertext moved to another line or field does not decrypt)."""
    cipher = codec._need_cipher("", referral.id)
    kid = cipher.primary_id
    data = to_dict(referral)
    codec._encrypt(data, phi_plan(Referral), referral.id, "", kid)
    items = []
    for event in events:
        item = to_dict(event)
        aad = f"{event.referral_id}\x00event {event.version}.{event.index}\x00payload"
        token = cipher.encrypt(payload_json(event.payload).encode(), aad.encode(), kid)
        item["payload"] = {_PAYLOAD: token}
        items.append(item)
    return {"events": items, "referral": data}


def decrypt_history(codec: RecordCodec, data: dict[str, Any], where: str) -> None:
    """Decrypt a dump line's data (from :func:`encrypt_history`) in place."""
    referral = data.get("referral")
    referral_id = referral.get("id") if isinstance(referral, dict) else None
    if not isinstance(referral_id, str):
        raise ValidationError(f"{where}: referral.id", "expected the referral's id")
    cipher = codec._need_cipher("", referral_id)
    codec._decrypt(cipher, referral, phi_plan(Referral), referral_id, "")
    for item in data.get("events") or ():
        if not isinstance(item, dict):
            continue
        aad = f"{referral_id}\x00event {item.get('version')}.{item.get('index')}\x00payload"
        payload = item.get("payload")
        try:
            token = payload.get(_PAYLOAD) if isinstance(payload, dict) else None
            item["payload"] = _loads(cipher.decrypt(token, aad.encode()))
        except (InvalidTag, ValueError):
            raise CorruptRecordError(
                referral_id, f"event {item.get('version')}.{item.get('index')}", "does not decrypt"
            ) from None
