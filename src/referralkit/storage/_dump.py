"""Export and import: a JSON-lines dump of every referral with its whole history
(re-exported by :mod:`referralkit.storage`).

The first line is a header, ``{"format": "referralkit-dump", "version": 3}``; then the
decision provenance the store keeps: one line per stored rule version, in digest order,
``{"rule_version": {"digest": ..., "document": ..., "kind": ..., "name": ...,
"recorded_at": ...}}``, and one per noted policy use, in the order they were noted,
``{"policy_use": {"at": ..., "digest": ..., "kind": ...}}`` (see
:meth:`~referralkit.storage.ReferralStore.save_rule_version`); then the access log
(:mod:`referralkit.access`), one line per record in ``seq`` order, ``{"access": {"action":
..., "actor": ..., "at": ..., "chain": ..., ...}}``: the fields its hash chain hashes, as the
store keeps them (a break-glass reason encrypted in an encrypted store), with its chain
value, so the loaded log verifies against the checkpoints made in the dumped store
(:mod:`referralkit.tamper`); then one line per referral, in
id order: ``{"events": [...], "referral": {...}}`` with the snapshot and every event, oldest
first, as :func:`~referralkit.serialization.to_dict` writes them (keys sorted, no spaces).
Version 1 dumps (referrals only) and version 2 dumps (no access log) still load. A store
that keeps no rule versions dumps none.
The same store content always gives the same bytes, whatever the adapter, so
dumps can be compared with ``diff`` or a hash.

A dump holds PHI (it is the data): keep it where the database is kept. From a store opened
with a key ring (or given ``keys``), every PHI field and every event payload in the dump is
encrypted as in the store (AES-256-GCM, bound to the referral and field; the rule versions
and policy uses, which describe no patient, are written as they are; an access record's
reason kept in clear is encrypted too, as ``reason_sealed``), the header says
``"encrypted": true``, and :func:`load_dump` needs the key ring to read it back; such a dump
is not byte-for-byte reproducible (every encryption draws a fresh nonce). Given a path,
:func:`dump` creates the file with mode 0600 (readable by its owner only). Errors while
reading one name the line and the field, never a value.

>>> import io
>>> from referralkit.storage import MemoryStore
>>> buffer = io.StringIO()
>>> dump(MemoryStore(), buffer)
0
>>> buffer.getvalue()
'{"format":"referralkit-dump","version":3}\\n'
>>> load_dump(MemoryStore(), io.StringIO(buffer.getvalue()))
0
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from typing import Any, Final, TextIO

from cryptography.exceptions import InvalidTag

from .._redaction import boundary
from ..access import GENESIS, chain_hash
from ..crypto import CIPHER_PREFIX, KeyProvider, load_keys
from ..errors import EncryptionKeyError, StorageError, ValidationError
from ..events import replay
from ..model import Referral, ReferralEvent
from ..serialization import from_dict, to_dict
from ._base import History, ReferralStore, check_history
from ._files import private_replacement
from ._json import RecordCodec, decrypt_history, encrypt_history
from ._versions import RuleVersion, check_digest, check_policy_kind

__all__ = ["DUMP_FORMAT", "DUMP_VERSION", "dump", "load_dump"]

DUMP_FORMAT: Final = "referralkit-dump"
DUMP_VERSION: Final = 3
_READABLE: Final = (1, 2, 3)  # the versions load_dump reads
# an access record's chain fields (referralkit.access.record_fields), by name
_ACCESS_FIELDS: Final = (
    "at",
    "actor",
    "roles",
    "organization",
    "action",
    "outcome",
    "referral_ids",
    "purpose",
    "reason",
    "grant",
    "flagged",
)
_CHECKPOINT: Final = ("referralkit-checkpoint", "checkpoint")
_ACCESS_BATCH: Final = 5_000


def _line(value: Any) -> str:
    # ASCII only: the file then reads back the same under any encoding, and a stray lone
    # surrogate in a free-text field cannot make the write fail half way
    return json.dumps(value, sort_keys=True, separators=(",", ":")) + "\n"


def _keys_of(store: ReferralStore, keys: Any) -> KeyProvider | None:
    given = load_keys(keys)
    if given is not None:
        return given
    found = getattr(store, "keys", None)
    return found if isinstance(found, KeyProvider) else None


@boundary
def dump(
    store: ReferralStore,
    file: TextIO | str | os.PathLike[str],
    *,
    keys: KeyProvider | str | os.PathLike[str] | None = None,
) -> int:
    """Write every referral in ``store`` with its events to ``file``; how many were written.

    ``file`` is an open text file, or a path: the dump is then written to a new file with
    mode 0600 beside it and renamed over it when complete, so the path never holds a half
    written dump nor one that others may read.

    Reads through :meth:`~referralkit.storage.ReferralStore.export`, which the SQL adapters
    serve from one consistent state of the database while writers carry on.

    The dump is encrypted with ``keys`` (a key ring or its file), by default the key ring
    ``store`` was opened with, if any.

    .. versionchanged:: 0.1
       ``file`` may be a path.
    .. versionchanged:: 0.1
       ``keys``; dumps of an encrypted store are encrypted.
    """
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    provider = _keys_of(store, keys)
    codec = RecordCodec(provider) if provider is not None else None
    if isinstance(file, str | os.PathLike):
        try:
            with (
                private_replacement(file) as temporary,
                open(temporary, "w", encoding="utf-8") as opened,
            ):
                return _write(store, opened, codec)
        except OSError as error:
            raise StorageError(
                f"cannot write the dump ({error.strerror or type(error).__name__})",
                driver_error=type(error).__name__,
            ) from None
    return _write(store, file, codec)


def _write(store: ReferralStore, file: TextIO, codec: RecordCodec | None) -> int:
    header: dict[str, Any] = {"format": DUMP_FORMAT, "version": DUMP_VERSION}
    if codec is not None:
        header["encrypted"] = True
    file.write(_line(header))
    for version in _provenance(store, "rule_versions"):
        file.write(
            _line(
                {
                    "rule_version": {
                        "digest": version.digest,
                        "document": version.document,
                        "kind": version.kind,
                        "name": version.name,
                        "recorded_at": version.recorded_at.isoformat(),
                    }
                }
            )
        )
    for kind, digest, at in _provenance(store, "policy_uses"):
        file.write(_line({"policy_use": {"at": at.isoformat(), "digest": digest, "kind": kind}}))
    for seq, fields, chain in store.access_chain():
        file.write(_line({"access": _access_line(seq, fields, chain, codec)}))
    written = 0
    for referral, events in store.export():
        if codec is not None:
            file.write(_line(encrypt_history(codec, referral, events)))
        else:
            data = {"events": [to_dict(e) for e in events], "referral": to_dict(referral)}
            file.write(_line(data))
        written += 1
    return written


def _reason_aad(seq: int, fields: Any) -> bytes:
    return f"dump\x00access {seq}\x00{fields[1]}\x00{fields[4]}\x00reason".encode(
        "utf-8", "surrogatepass"
    )


def _access_line(
    seq: int, fields: list[Any], chain: str, codec: RecordCodec | None
) -> dict[str, Any]:
    """An access record's dump line: its chain fields as stored, its ``seq`` and chain
    value; in an encrypted dump, a reason kept in clear (an unencrypted store's) as
    ``reason_sealed`` (encrypted, bound to the record's place in the log)."""
    data: dict[str, Any] = dict(zip(_ACCESS_FIELDS, fields, strict=True))
    data["seq"], data["chain"] = seq, chain
    reason = data["reason"]
    if (
        codec is not None
        and codec.cipher is not None
        and isinstance(reason, str)
        and not reason.startswith(CIPHER_PREFIX)
        and (fields[1], fields[4]) != _CHECKPOINT
    ):
        data["reason"] = None
        data["reason_sealed"] = codec.cipher.encrypt(
            reason.encode("utf-8", "surrogatepass"), _reason_aad(seq, fields)
        )
    return data


def _access_record(
    data: dict[str, Any], where: str, codec: RecordCodec | None
) -> tuple[list[Any], str]:
    """The chain fields and chain value of a dump's access line (its reason decrypted back
    to what the store kept)."""
    record = data["access"]
    keys = {*_ACCESS_FIELDS, "seq", "chain"}
    if (
        set(data) != {"access"}
        or not isinstance(record, dict)
        or set(record) - {"reason_sealed"} != keys
    ):
        raise ValidationError(f"{where}: access", "expected an access-log record")
    fields = [record[name] for name in _ACCESS_FIELDS]
    if not all(isinstance(fields[n], str) for n in (0, 1, 2, 4, 5, 6)) or not isinstance(
        record["chain"], str
    ):
        raise ValidationError(f"{where}: access", "expected an access-log record")
    sealed = record.get("reason_sealed")
    if sealed is not None:
        if codec is None or codec.cipher is None:
            raise ValidationError(f"{where}: access.reason_sealed", "an encrypted reason")
        try:
            plain = codec.cipher.decrypt(sealed, _reason_aad(int(record["seq"]), fields))
        except (ValueError, TypeError, InvalidTag):
            raise ValidationError(f"{where}: access.reason_sealed", "does not decrypt") from None
        fields[8] = plain.decode("utf-8", "surrogatepass")
    return fields, record["chain"]


def _provenance(store: ReferralStore, method: str) -> list[Any]:
    """The store's rule versions or policy uses; none from a store that keeps none."""
    try:
        found: list[Any] = getattr(store, method)()
    except NotImplementedError:
        return []
    return found


def _moment(value: object, path: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationError(path, "expected an ISO 8601 date and time with its UTC offset")
    return moment.astimezone(dt.UTC)


def _fields(data: dict[str, Any], name: str, where: str, keys: set[str]) -> dict[str, Any]:
    record = data[name]
    if set(data) != {name} or not isinstance(record, dict) or set(record) != keys:
        raise ValidationError(
            f"{where}: {name}", f"expected an object with {', '.join(sorted(keys))}"
        )
    return record


def _rule_version(data: dict[str, Any], where: str) -> RuleVersion:
    record = _fields(
        data, "rule_version", where, {"digest", "document", "kind", "name", "recorded_at"}
    )
    try:
        for key in ("digest", "document", "kind", "name"):
            if not isinstance(record[key], str):
                raise ValidationError(key, "expected a string")
        return RuleVersion(
            record["digest"],
            record["kind"],
            record["name"],
            record["document"],
            _moment(record["recorded_at"], "recorded_at"),
        )
    except ValidationError as error:
        raise _on_line(where, error.at("rule_version")) from None


def _policy_use(data: dict[str, Any], where: str) -> tuple[str, str, dt.datetime]:
    record = _fields(data, "policy_use", where, {"at", "digest", "kind"})
    try:
        return (
            check_policy_kind(record["kind"]),
            check_digest(record["digest"]),
            _moment(record["at"], "at"),
        )
    except ValidationError as error:
        raise _on_line(where, error.at("policy_use")) from None


def _on_line(where: str, error: ValidationError) -> ValidationError:
    """``error`` with its path prefixed by the line: ``line 7: referral.patient.mrn``."""
    return ValidationError(f"{where}: {error.path}" if error.path else where, error.reason)


def _parse(text: str, number: int) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValidationError(f"line {number}", "not valid JSON") from None


def _history(data: Any, number: int, verify: bool, codec: RecordCodec | None = None) -> History:
    where = f"line {number}"
    if not isinstance(data, dict) or set(data) != {"referral", "events"}:
        raise ValidationError(where, 'expected an object with "referral" and "events"')
    if not isinstance(data["events"], list):
        raise ValidationError(f"{where}: events", "expected a list")
    if codec is not None:
        decrypt_history(codec, data, where)
    try:
        referral = from_dict(Referral, data["referral"])
    except ValidationError as error:
        raise _on_line(where, error.at("referral")) from None
    events = []
    for index, item in enumerate(data["events"]):
        try:
            events.append(from_dict(ReferralEvent, item))
        except ValidationError as error:
            raise _on_line(where, error.at(f"events[{index}]")) from None
    try:
        check_history(referral, events)
    except ValidationError as error:
        raise _on_line(where, error) from None
    if verify and replay(events) != referral:
        raise ValidationError(where, "the snapshot is not the replay of its events")
    return referral, events


@boundary
def load_dump(
    store: ReferralStore,
    file: Iterable[str],
    *,
    verify: bool = True,
    batch: int = 500,
    keys: KeyProvider | str | os.PathLike[str] | None = None,
    signing_key: bytes | None = None,
) -> int:
    """Read a dump written by :func:`dump` into ``store``; how many referrals were loaded.

    Every referral must be new to ``store``. Each line is checked (with ``verify``, also that
    its snapshot is the replay of its events) before it is written, and every ``batch``
    referrals are written in one transaction
    (:meth:`~referralkit.storage.ReferralStore.restore_many`): a bad line stops the load
    with a :class:`~referralkit.errors.ValidationError` naming it, after the batches before
    it. Load into an empty store and discard it if the load fails.

    The rule versions and policy uses in the dump are restored first (in the order written,
    so :meth:`~referralkit.storage.ReferralStore.policy_in_force` answers as in the dumped
    store, and ``desk.explain`` finds the versions its stored decisions name); a dump holding
    them cannot be loaded into a store that keeps no rule versions
    (:class:`~referralkit.errors.StorageError`).

    An encrypted dump is decrypted with ``keys``, by default the key ring ``store`` was
    opened with.

    .. versionchanged:: 0.1
       ``keys``: encrypted dumps.
    .. versionchanged:: 0.2
       Version 2 dumps: rule versions and policy uses.
    .. versionchanged:: 0.2
       Version 3 dumps: the access log, restored exactly (with its chain values: with
       ``verify``, the chain is checked while it is read) into a store whose log is empty.
       When the log holds checkpoints, a ``restored`` checkpoint is recorded after the load
       (the events' chain is written anew: see :class:`referralkit.tamper.Checkpoint`),
       signed with ``signing_key`` (Ed25519, PEM) when given: ``verify`` with a public key
       refuses an unsigned one.
    """
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValidationError("batch", "expected a whole number >= 1")
    pending: list[History] = []
    loaded = 0
    header = False
    version = 0
    codec: RecordCodec | None = None
    access: list[tuple[list[Any], str]] = []
    restored = [GENESIS, GENESIS, False]  # the log's head, the chain read, a checkpoint seen
    for number, text in enumerate(file, 1):
        if not header:
            try:
                head = json.loads(text)
            except ValueError:
                head = None
            found = head.get("version") if isinstance(head, dict) else None
            plain = {"format": DUMP_FORMAT, "version": found}
            if found not in _READABLE or head not in (plain, {**plain, "encrypted": True}):
                raise ValidationError(
                    "line 1",
                    f"not a {DUMP_FORMAT} header of version "
                    + " or ".join(str(n) for n in _READABLE),
                )
            version = found
            if head != plain:
                provider = _keys_of(store, keys)
                if provider is None:
                    raise EncryptionKeyError(
                        "the dump is encrypted: load it into a store opened with its key ring"
                    )
                codec = RecordCodec(provider)
            header = True
            continue
        if not text.strip():
            continue
        data = _parse(text, number)
        if version >= 2 and isinstance(data, dict) and "rule_version" in data:
            _restore(store, "save_rule_version", _rule_version(data, f"line {number}"))
            continue
        if version >= 2 and isinstance(data, dict) and "policy_use" in data:
            _restore(store, "record_policy_use", *_policy_use(data, f"line {number}"))
            continue
        if version >= 3 and isinstance(data, dict) and "access" in data:
            fields, chain = _access_record(data, f"line {number}", codec)
            if verify and chain_hash(str(restored[1]), fields) != chain:
                raise ValidationError(f"line {number}", "the access log's chain breaks here")
            restored[1] = chain
            restored[2] = restored[2] or (fields[1], fields[4]) == _CHECKPOINT
            access.append((fields, chain))
            if len(access) >= _ACCESS_BATCH:
                _restore_access(store, access, restored)
            continue
        pending.append(_history(data, number, verify, codec))
        if len(pending) >= batch:
            store.restore_many(pending)
            loaded += len(pending)
            pending = []
    if not header:
        raise ValidationError("line 1", "the dump is empty (no header)")
    if pending:
        store.restore_many(pending)
        loaded += len(pending)
    _restore_access(store, access, restored)
    if restored[2]:
        from ..tamper import checkpoint  # (tamper imports the storage package)

        checkpoint(store, signing_key=signing_key, restored=True)
    return loaded


def _restore_access(
    store: ReferralStore, records: list[tuple[list[Any], str]], restored: list[Any]
) -> None:
    """Restore the access records read so far (after the log's head ``restored[0]``)."""
    if records:
        store.restore_access(records, str(restored[0]))
        restored[0] = records[-1][1]
        records.clear()


def _restore(store: ReferralStore, method: str, *arguments: Any) -> None:
    try:
        getattr(store, method)(*arguments)
    except NotImplementedError:
        raise StorageError(
            "the dump holds rule versions and this store keeps none: load it into a store "
            "that keeps them (memory, SQLite, PostgreSQL)"
        ) from None
