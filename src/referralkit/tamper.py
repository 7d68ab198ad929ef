"""Tamper evidence for the access log and the events: their hash chains, signed
checkpoints, ``verify``.

HIPAA's integrity control (45 CFR 164.312(c)): each access-log record (:mod:`referralkit.access`)
carries ``chain``, the SHA-256 of the previous record's chain value and its own fields
(:func:`~referralkit.access.chain_hash`), written by the store in the append's transaction.
The events (every referral's history) are chained the same way, one chain per store in
append order, by the same code (each event carries
its ``seq``, the key id and digest of its payload as stored, and its chain value; a key
rotation leaves the chain valid). An edited, deleted, inserted or reordered record or event
breaks its chain there. An attacker who can write the database could recompute a whole
chain; a *checkpoint* stops that: :func:`checkpoint` records both chains' heads (their
``seq`` and value), signed with an Ed25519 key kept outside the database, as a record of the
log itself and, with ``out``, as a line of a file kept elsewhere. :func:`verify` recomputes
both chains, checks every event's seal (the checksum of item 5, read without keys), checks
every checkpoint it finds (in the log and in the file) against the chains and their
signatures, and reports the first broken link; a chain that ends before a checkpoint's
``seq`` was truncated.

Run ``referralkit checkpoint --db URL --signing-key KEY --out FILE`` and ``referralkit verify
--db URL --checkpoints FILE --public-key KEY.pub`` in a scheduled job.

>>> import referralkit as rk
>>> from referralkit.testing import FakeClock, sample_request
>>> store = rk.open_store("memory://")
>>> desk = rk.ReferralDesk(store, clock=FakeClock())
>>> actor = rk.Actor("coord-1", {rk.Role.COORDINATOR})
>>> _ = desk.get(actor, desk.intake(actor, sample_request()).id)
>>> private, public = new_signing_key()
>>> mark = checkpoint(store, signing_key=private)
>>> report = verify(store, public_key=public)
>>> report.ok, report.records, report.events, report.checkpoints
(True, 2, 3, 1)
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._redaction import Sealed, boundary
from .access import GENESIS, AccessOutcome, AccessRecord, chain_hash
from .errors import CorruptRecordError, ValidationError
from .storage import ReferralStore
from .storage._chain import payload_problem
from .storage._json import RecordCodec, _event_context

__all__ = [
    "Checkpoint",
    "VerifyReport",
    "checkpoint",
    "new_signing_key",
    "read_checkpoints",
    "verify",
]

CHECKPOINT_ACTION: Final = "checkpoint"
CHECKPOINT_ACTOR: Final = "referralkit-checkpoint"


@attrs.frozen
class Checkpoint:
    """The access log's head at ``seq`` (``chain``) and the events' head at ``events_seq``
    (``events_chain``), made at ``at``, with an Ed25519 ``signature`` (hex) over
    :meth:`message` when signed. A checkpoint made before the events were chained has no
    events head (``None``).

    ``restored`` marks the checkpoint :func:`~referralkit.storage.load_dump` records after
    loading a dump's access log: the events were written anew (their chain restarts), so
    the events heads of the checkpoints before it (made in the dumped store) are not
    checked any more; their access-log heads still are.

    .. versionchanged:: 0.2
       ``events_seq``, ``events_chain`` and ``restored``.
    """

    seq: int
    chain: str
    at: str
    signature: str | None = None
    events_seq: int | None = None
    events_chain: str | None = None
    restored: bool = False

    def message(self) -> bytes:
        """What the signature covers."""
        text = f"referralkit-access-log|{self.seq}|{self.chain}|{self.at}"
        if self.events_seq is not None:
            text += f"|events|{self.events_seq}|{self.events_chain}"
        if self.restored:
            text += "|restored"
        return text.encode("ascii")

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as JSON data (a line of a checkpoint file)."""
        data = attrs.asdict(self)
        if self.events_seq is None:  # as written before the events were chained
            del data["events_seq"], data["events_chain"]
        if not self.restored:
            del data["restored"]
        return data

    @classmethod
    def from_json(cls, data: object, where: str) -> Checkpoint:
        """A checkpoint from JSON data; a malformed one is a ValidationError naming ``where``."""
        try:
            if not isinstance(data, dict):
                raise TypeError
            made = cls(
                seq=int(data["seq"]),
                chain=str(data["chain"]),
                at=str(data["at"]),
                signature=None if data.get("signature") is None else str(data["signature"]),
                events_seq=None if data.get("events_seq") is None else int(data["events_seq"]),
                events_chain=(
                    None if data.get("events_chain") is None else str(data["events_chain"])
                ),
                restored=data.get("restored") is True,
            )
        except (KeyError, TypeError, ValueError):
            raise ValidationError(where, "not a checkpoint") from None
        return made


@attrs.frozen
class VerifyReport:
    """What :func:`verify` found: access-log ``records`` checked, ``checkpoints`` checked,
    ``events`` checked, and the first problem: the ``broken_at`` seq (None when both chains
    are intact) of the chain ``broken_in`` (``"access log"`` or ``"events"``), with
    ``reason``.

    .. versionchanged:: 0.2
       ``events`` and ``broken_in``: the events' chain is verified too.
    """

    records: int
    checkpoints: int
    broken_at: int | None = None
    reason: str | None = None
    events: int = 0
    broken_in: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the chain and every checkpoint hold."""
        return self.reason is None


def new_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as PEM: (private PKCS#8, public SubjectPublicKeyInfo)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _private(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise ValidationError("signing_key", "not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValidationError("signing_key", "expected an Ed25519 key")
    return key


def _public(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise ValidationError("public_key", "not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValidationError("public_key", "expected an Ed25519 key")
    return key


def _head(store: ReferralStore) -> tuple[int, str]:
    seq, chain = 0, GENESIS
    for seq, _, chain in store.access_chain():  # noqa: B007 - the last one is the head
        pass
    return seq, chain


@boundary
def checkpoint(
    store: ReferralStore,
    *,
    signing_key: bytes | None = None,
    out: str | Path | None = None,
    now: dt.datetime | None = None,
    restored: bool = False,
) -> Checkpoint:
    """Record the heads of the access log's and the events' chains as a checkpoint: signed
    with ``signing_key`` (an Ed25519 private key, PEM) when given, appended to the log as a
    ``checkpoint`` record and, with ``out``, as a JSON line to that file (keep it outside the
    database: it is what proves a truncation).

    The events' head is read first: events appended meanwhile come after it. ``restored``
    is for :func:`~referralkit.storage.load_dump` (see :class:`Checkpoint`)."""
    key = None if signing_key is None else _private(signing_key)
    events_seq, events_chain = store.event_head()
    seq, chain = _head(store)
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    unsigned = Checkpoint(
        seq, chain, when.isoformat(), None, events_seq, events_chain, restored=restored
    )
    made = (
        unsigned
        if key is None
        else attrs.evolve(unsigned, signature=key.sign(unsigned.message()).hex())
    )
    line = json.dumps(made.to_json(), sort_keys=True)
    store.append_access(
        [
            AccessRecord(
                at=when,
                actor=CHECKPOINT_ACTOR,
                action=CHECKPOINT_ACTION,
                outcome=AccessOutcome.ALLOWED,
                reason=line,
            )
        ]
    )
    if out is not None:
        with open(out, "a", encoding="utf-8") as file:
            file.write(line + "\n")
    return made


def read_checkpoints(path: str | Path) -> list[Checkpoint]:
    """The checkpoints of a checkpoint file (one JSON object per line)."""
    found = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip():
                try:
                    data = json.loads(line)
                except ValueError:
                    raise ValidationError(f"{path}:{number}", "not JSON") from None
                found.append(Checkpoint.from_json(data, f"{path}:{number}"))
    return found


@boundary
def verify(
    store: ReferralStore,
    *,
    checkpoints: Iterable[Checkpoint] = (),
    public_key: bytes | None = None,
) -> VerifyReport:
    """Recompute the access log's and the events' hash chains and check every checkpoint
    (those recorded in the log and ``checkpoints``, e.g. :func:`read_checkpoints` of the
    file kept elsewhere): its chain values at its ``seq`` and ``events_seq`` and, with
    ``public_key`` (Ed25519, PEM), its signature (then an unsigned checkpoint is a problem
    too). Every event's payload is checked against the digest its link recorded, and its
    seal's checksum (the integrity check of every read) verified; no key ring is needed.
    The report names the first problem (the access log's before the events').

    .. versionchanged:: 0.2
       The events' chain is verified too.
    """
    key = None if public_key is None else _public(public_key)
    marks: list[Checkpoint] = list(checkpoints)
    wanted: dict[int, list[Checkpoint]] = {}
    previous, count, last_seq = GENESIS, 0, 0
    for seq, fields, stored in store.access_chain():
        count += 1
        expected = chain_hash(previous, fields)
        if stored != expected:
            return VerifyReport(
                count, 0, seq, "the record or the one before it was changed", 0, _ACCESS
            )
        if fields[4] == CHECKPOINT_ACTION and fields[1] == CHECKPOINT_ACTOR:
            marks.append(Checkpoint.from_json(json.loads(fields[8] or "null"), f"record {seq}"))
        previous, last_seq = expected, seq
    for mark in marks:
        wanted.setdefault(mark.seq, []).append(mark)
    # the chain values the checkpoints name, read again (verified by the pass above)
    heads = (
        {seq: chain for seq, _, chain in store.access_chain() if seq in wanted} if wanted else {}
    )
    report = _check_marks(count, last_seq, heads, wanted, key)
    if not report.ok:
        return attrs.evolve(report, broken_in=_ACCESS)
    return _verify_events(store, report, marks)


_ACCESS: Final = "access log"
_EVENTS: Final = "events"


def _verify_events(
    store: ReferralStore, report: VerifyReport, marks: list[Checkpoint]
) -> VerifyReport:
    """The events' chain and the checkpoints' events heads (their signatures are checked):
    those made since the last restore (see :class:`Checkpoint`)."""
    restart = max((mark.seq for mark in marks if mark.restored), default=-1)
    marks = [m for m in marks if m.seq > restart or (m.seq == restart and m.restored)]
    wanted = {mark.events_seq for mark in marks if mark.events_seq}
    heads: dict[int, str] = {}
    previous, count, last_seq = GENESIS, 0, 0
    for seq, fields, stored, text in store.event_chain():
        count += 1
        expected = chain_hash(previous, fields)
        problem = (
            "the event or the one before it was changed"
            if stored != expected
            else payload_problem(fields[-1], text) or _seal_problem(fields, text)
        )
        if problem is not None:
            return attrs.evolve(
                report, events=count, broken_at=seq, reason=problem, broken_in=_EVENTS
            )
        if seq in wanted:
            heads[seq] = expected
        previous, last_seq = expected, seq
    for mark in sorted(marks, key=lambda m: m.events_seq or 0):
        if not mark.events_seq:
            continue
        seq = mark.events_seq
        if seq > last_seq:
            reason = f"truncated: a checkpoint covers event {seq}"
            return attrs.evolve(
                report, events=count, broken_at=last_seq + 1, reason=reason, broken_in=_EVENTS
            )
        if heads.get(seq) != mark.events_chain:
            reason = "a checkpoint does not match the events' chain"
            return attrs.evolve(
                report, events=count, broken_at=seq, reason=reason, broken_in=_EVENTS
            )
    return attrs.evolve(report, events=count)


def _seal_problem(fields: list[Any], text: Sealed[str]) -> str | None:
    """Why an event's stored payload fails its seal's checksum (keyless), or ``None``."""
    referral_id, version, index, at, actor, kind = fields[:6]
    moment = dt.datetime.fromisoformat(at).replace(tzinfo=dt.UTC)
    context = _event_context(referral_id, version, index, moment, actor, kind)
    try:
        RecordCodec.unseal(text.reveal(), context, str(referral_id), f"event {version}.{index}")
    except CorruptRecordError:
        return "the event's payload fails its integrity check"
    return None


def _check_marks(
    count: int,
    last_seq: int,
    heads: dict[int, str],
    wanted: dict[int, list[Checkpoint]],
    key: Ed25519PublicKey | None,
) -> VerifyReport:
    checked = 0
    for seq in sorted(wanted):
        for mark in wanted[seq]:
            checked += 1
            if seq > last_seq:
                return VerifyReport(
                    count, checked, last_seq + 1, f"truncated: a checkpoint covers seq {seq}"
                )
            if seq and heads.get(seq) != mark.chain:
                return VerifyReport(count, checked, seq, "a checkpoint does not match the chain")
            if key is not None:
                if mark.signature is None:
                    return VerifyReport(count, checked, seq, "an unsigned checkpoint")
                try:
                    key.verify(bytes.fromhex(mark.signature), mark.message())
                except (InvalidSignature, ValueError):
                    return VerifyReport(count, checked, seq, "a checkpoint's signature is bad")
    return VerifyReport(count, checked)
