"""Tamper evidence for the access log: its hash chain, signed checkpoints, ``verify``.

HIPAA's integrity control (45 CFR 164.312(c)): each access-log record (:mod:`referralkit.access`)
carries ``chain``, the SHA-256 of the previous record's chain value and its own fields
(:func:`~referralkit.access.chain_hash`), written by the store in the append's transaction.
An edited, deleted or reordered record breaks the chain at that record. An attacker who can
write the database could recompute the whole chain; a *checkpoint* stops that:
:func:`checkpoint` records the chain's head (its ``seq`` and value), signed with an Ed25519
key kept outside the database, as a record of the log itself and, with ``out``, as a line of
a file kept elsewhere. :func:`verify` recomputes the chain, checks every checkpoint it finds
(in the log and in the file) against it and their signatures, and reports the first broken
link; a log that ends before a checkpoint's ``seq`` was truncated.

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
>>> report.ok, report.records, report.checkpoints
(True, 2, 1)
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

from ._redaction import boundary
from .access import GENESIS, AccessOutcome, AccessRecord, chain_hash
from .errors import ValidationError
from .storage import ReferralStore

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
    """The chain's head at ``seq`` (``chain``), made at ``at``, with an Ed25519
    ``signature`` (hex) over :meth:`message` when signed."""

    seq: int
    chain: str
    at: str
    signature: str | None = None

    def message(self) -> bytes:
        """What the signature covers."""
        return f"referralkit-access-log|{self.seq}|{self.chain}|{self.at}".encode("ascii")

    def to_json(self) -> dict[str, Any]:
        """The checkpoint as JSON data (a line of a checkpoint file)."""
        return attrs.asdict(self)

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
            )
        except (KeyError, TypeError, ValueError):
            raise ValidationError(where, "not a checkpoint") from None
        return made


@attrs.frozen
class VerifyReport:
    """What :func:`verify` found: ``records`` checked, ``checkpoints`` checked, and the first
    problem: the ``broken_at`` seq (None when the log is intact) with ``reason``."""

    records: int
    checkpoints: int
    broken_at: int | None = None
    reason: str | None = None

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
) -> Checkpoint:
    """Record the access log's head as a checkpoint: signed with ``signing_key`` (an Ed25519
    private key, PEM) when given, appended to the log as a ``checkpoint`` record and, with
    ``out``, as a JSON line to that file (keep it outside the database: it is what proves a
    truncation)."""
    key = None if signing_key is None else _private(signing_key)
    seq, chain = _head(store)
    when = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    unsigned = Checkpoint(seq, chain, when.isoformat())
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
    """Recompute the access log's hash chain and check every checkpoint (those recorded in
    the log and ``checkpoints``, e.g. :func:`read_checkpoints` of the file kept elsewhere):
    its chain value at its ``seq`` and, with ``public_key`` (Ed25519, PEM), its signature
    (then an unsigned checkpoint is a problem too). The report names the first problem."""
    key = None if public_key is None else _public(public_key)
    wanted: dict[int, list[Checkpoint]] = {}
    for mark in checkpoints:
        wanted.setdefault(mark.seq, []).append(mark)
    previous, count, last_seq = GENESIS, 0, 0
    for seq, fields, stored in store.access_chain():
        count += 1
        expected = chain_hash(previous, fields)
        if stored != expected:
            return VerifyReport(count, 0, seq, "the record or the one before it was changed")
        if fields[4] == CHECKPOINT_ACTION and fields[1] == CHECKPOINT_ACTOR:
            mark = Checkpoint.from_json(json.loads(fields[8] or "null"), f"record {seq}")
            wanted.setdefault(mark.seq, []).append(mark)
        previous, last_seq = expected, seq
    # the chain values the checkpoints name, read again (verified by the pass above)
    heads = (
        {seq: chain for seq, _, chain in store.access_chain() if seq in wanted} if wanted else {}
    )
    return _check_marks(count, last_seq, heads, wanted, key)


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
