"""Export and import: a JSON-lines dump of every referral with its whole history
(re-exported by :mod:`referralkit.storage`).

The first line is a header, ``{"format": "referralkit-dump", "version": 1}``; then one line
per referral, in id order: ``{"events": [...], "referral": {...}}`` with the snapshot and every
event, oldest first, as :func:`~referralkit.serialization.to_dict` writes them (keys sorted,
no spaces). The same store content always gives the same bytes, whatever the adapter, so
dumps can be compared with ``diff`` or a hash.

A dump holds PHI (it is the data): keep it where the database is kept. From a store opened
with a key ring (or given ``keys``), every PHI field and every event payload in the dump is
encrypted as in the store (AES-256-GCM, bound to the referral and field), the header says
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
'{"format":"referralkit-dump","version":1}\\n'
>>> load_dump(MemoryStore(), io.StringIO(buffer.getvalue()))
0
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any, Final, TextIO

from .._redaction import boundary
from ..crypto import KeyProvider, load_keys
from ..errors import EncryptionKeyError, StorageError, ValidationError
from ..events import replay
from ..model import Referral, ReferralEvent
from ..serialization import from_dict, to_dict
from ._base import History, ReferralStore, check_history
from ._files import private_replacement
from ._json import RecordCodec, decrypt_history, encrypt_history

__all__ = ["DUMP_FORMAT", "DUMP_VERSION", "dump", "load_dump"]

DUMP_FORMAT: Final = "referralkit-dump"
DUMP_VERSION: Final = 1


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
    written = 0
    for referral, events in store.export():
        if codec is not None:
            file.write(_line(encrypt_history(codec, referral, events)))
        else:
            data = {"events": [to_dict(e) for e in events], "referral": to_dict(referral)}
            file.write(_line(data))
        written += 1
    return written


def _on_line(where: str, error: ValidationError) -> ValidationError:
    """``error`` with its path prefixed by the line: ``line 7: referral.patient.mrn``."""
    return ValidationError(f"{where}: {error.path}" if error.path else where, error.reason)


def _history(text: str, number: int, verify: bool, codec: RecordCodec | None = None) -> History:
    where = f"line {number}"
    try:
        data = json.loads(text)
    except ValueError:
        raise ValidationError(where, "not valid JSON") from None
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
) -> int:
    """Read a dump written by :func:`dump` into ``store``; how many referrals were loaded.

    Every referral must be new to ``store``. Each line is checked (with ``verify``, also that
    its snapshot is the replay of its events) before it is written, and every ``batch``
    referrals are written in one transaction
    (:meth:`~referralkit.storage.ReferralStore.restore_many`): a bad line stops the load
    with a :class:`~referralkit.errors.ValidationError` naming it, after the batches before
    it. Load into an empty store and discard it if the load fails.

    An encrypted dump is decrypted with ``keys``, by default the key ring ``store`` was
    opened with.

    .. versionchanged:: 0.1
       ``keys``: encrypted dumps.
    """
    if not isinstance(store, ReferralStore):
        raise ValidationError("store", "expected a ReferralStore")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValidationError("batch", "expected a whole number >= 1")
    pending: list[History] = []
    loaded = 0
    header = False
    codec: RecordCodec | None = None
    for number, text in enumerate(file, 1):
        if not header:
            try:
                head = json.loads(text)
            except ValueError:
                head = None
            plain = {"format": DUMP_FORMAT, "version": DUMP_VERSION}
            if head not in (plain, {**plain, "encrypted": True}):
                raise ValidationError(
                    "line 1", f"not a {DUMP_FORMAT} version {DUMP_VERSION} header"
                )
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
        pending.append(_history(text, number, verify, codec))
        if len(pending) >= batch:
            store.restore_many(pending)
            loaded += len(pending)
            pending = []
    if not header:
        raise ValidationError("line 1", "the dump is empty (no header)")
    if pending:
        store.restore_many(pending)
        loaded += len(pending)
    return loaded
