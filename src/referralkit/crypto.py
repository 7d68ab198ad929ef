"""PHI encrypted at rest: key rings, the :class:`KeyProvider` port and the blind index.

A store opened with a key ring (``open_store(url, keys=...)``; ``REFERRALKIT_KEYS=FILE`` for
the command line) encrypts every field the model declares PHI (``metadata={"phi": True}``,
see :func:`~referralkit.model.phi_fields`) in its snapshots (all of a snapshot's PHI values in
one ciphertext), and every event payload, with AES-256-GCM (the ``cryptography`` package).
Each ciphertext:

- carries the id of the key that made it, so a ring can hold old keys while a rotation
  (:func:`~referralkit.storage.rotate_keys`, ``referralkit keys rotate``) moves every
  record to the primary key;
- is bound to its place by GCM's associated data: the referral id and the record (a
  snapshot, with the list of its PHI field paths, ``patient.mrn``,
  ``communications.2.summary``, ..., and its clear part; ``event 3.0 payload``): a
  ciphertext copied to another referral, record or list of fields does not decrypt, it is a
  :class:`~referralkit.errors.CorruptRecordError`.

Equality lookups on PHI (a referral's patient id, which the store filters on) use a keyed
blind index: HMAC-SHA256 under the ring's index key, which never leaves the ring and is
not rotated with the encryption keys.

>>> ring = KeyRing.generate()
>>> ring.primary_id in ring.key_ids()
True
>>> ring.blind_index("patient.id", "p-1") == ring.blind_index("patient.id", "p-1")
True
>>> ring
KeyRing(<1 key>)

A key ring is a secret: its file (``referralkit keys init FILE``) is written with mode
0600, is never overwritten, and belongs outside the database and outside its backups.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import EncryptionKeyError, ValidationError

__all__ = [
    "KEYS_ENV",
    "KEY_RING_FORMAT",
    "KeyProvider",
    "KeyRing",
    "load_keys",
]

KEYS_ENV: Final = "REFERRALKIT_KEYS"
"""The environment variable the command line reads a key ring file's path from."""

KEY_RING_FORMAT: Final = "referralkit-keys"
"""The ``format`` member of a key ring file."""

_KEY_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")
_KEY_BYTES: Final = 32  # AES-256
_NONCE_BYTES: Final = 12  # GCM's 96-bit nonce


@runtime_checkable
class KeyProvider(Protocol):
    """Where a store gets its keys: the port a KMS adapter implements.

    A KMS keeps its master keys inside; an adapter unwraps the data keys a deployment stores
    (wrapped) at start-up and answers from memory: the store asks for a key on every
    encryption and decryption. :class:`KeyRing` is the embedded implementation.
    """

    @property
    def primary_id(self) -> str:
        """The id of the key new records are encrypted with."""
        ...

    def key(self, key_id: str) -> bytes:
        """The 32-byte AES-256 key ``key_id`` names; :class:`~referralkit.errors.EncryptionKeyError`
        when the provider does not hold it."""
        ...

    def index_key(self) -> bytes:
        """The HMAC key of the blind index (at least 32 bytes; never rotated)."""
        ...


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise EncryptionKeyError(f"the key ring's {what} is not base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        pass
    raise EncryptionKeyError(f"the key ring's {what} is not base64 text")


def _new_key_id(taken: Iterable[str] = ()) -> str:
    used = set(taken)
    while True:
        key_id = "k" + secrets.token_hex(4)
        if key_id not in used:
            return key_id


class KeyRing:
    """AES-256 keys by id, the primary one for new records, and the blind-index key.

    Build one with :meth:`generate`, read one with :meth:`load` (or :func:`load_keys`), add a
    new primary key with :meth:`with_new_key`; :meth:`save` writes one (mode 0600, never over
    an existing file). Implements :class:`KeyProvider`. Its ``repr`` shows no key.
    """

    __slots__ = ("_index", "_keys", "_primary")

    def __init__(self, keys: Mapping[str, bytes], primary: str, index_key: bytes) -> None:
        if not keys:
            raise ValidationError("keys", "a key ring needs at least one key")
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ValidationError("keys", "key ids are 1 to 40 letters, digits, - or _")
            if not isinstance(key, bytes) or len(key) != _KEY_BYTES:
                raise ValidationError("keys", f"key {key_id} is not 32 bytes (AES-256)")
        if primary not in keys:
            raise ValidationError("primary", "the primary key id is not in the ring")
        if not isinstance(index_key, bytes) or len(index_key) < _KEY_BYTES:
            raise ValidationError("index_key", "the blind-index key needs at least 32 bytes")
        self._keys = dict(keys)
        self._primary = primary
        self._index = index_key

    def __repr__(self) -> str:
        count = len(self._keys)
        return f"KeyRing(<{count} key{'s' if count != 1 else ''}>)"

    @classmethod
    def generate(cls) -> KeyRing:
        """A new ring: one fresh primary key and a fresh blind-index key."""
        key_id = _new_key_id()
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id, secrets.token_bytes(32))

    def with_new_key(self) -> KeyRing:
        """This ring plus a fresh key that becomes the primary (old keys stay, to read)."""
        key_id = _new_key_id(self._keys)
        keys = {**self._keys, key_id: AESGCM.generate_key(bit_length=256)}
        return KeyRing(keys, key_id, self._index)

    @property
    def primary_id(self) -> str:
        return self._primary

    def key_ids(self) -> list[str]:
        """Every key id in the ring."""
        return list(self._keys)

    def key(self, key_id: str) -> bytes:
        try:
            return self._keys[key_id]
        except KeyError:
            pass
        raise EncryptionKeyError(f"the key ring does not hold key {key_id!r}")

    def index_key(self) -> bytes:
        return self._index

    def blind_index(self, field: str, value: str) -> str:
        """The blind index of ``value`` in ``field``: HMAC-SHA256 under the index key."""
        return blind_index(self, field, value)

    # ------------------------------------------------------------------ files

    def to_json(self) -> str:
        """The ring as the JSON text of a key ring file (secret)."""
        return json.dumps(
            {
                "format": KEY_RING_FORMAT,
                "version": 1,
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "primary": self._primary,
                "keys": {k: _b64(v) for k, v in self._keys.items()},
                "index_key": _b64(self._index),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """The ring a key ring file's text holds; :class:`~referralkit.errors.EncryptionKeyError`
        when it is not one (the message never quotes the file)."""
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("format") != KEY_RING_FORMAT:
            raise EncryptionKeyError("not a referralkit key ring file")
        if data.get("version") != 1:
            raise EncryptionKeyError("unsupported key ring file version")
        keys = data.get("keys")
        if not isinstance(keys, dict):
            raise EncryptionKeyError("the key ring file has no keys")
        decoded = {str(k): _unb64(v, f"key {k}") for k, v in keys.items()}
        primary = data.get("primary")
        try:
            return cls(decoded, str(primary), _unb64(data.get("index_key"), "index key"))
        except ValidationError as error:
            raise EncryptionKeyError(f"the key ring file is invalid: {error.reason}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KeyRing:
        """Read the key ring file ``path``."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise EncryptionKeyError(
                f"cannot read the key ring file {os.fspath(path)} "
                f"({error.strerror or type(error).__name__})"
            ) from None
        except UnicodeDecodeError:
            raise EncryptionKeyError("not a referralkit key ring file") from None
        return cls.from_json(text)

    def save(self, path: str | os.PathLike[str], *, replace: bool = False) -> None:
        """Write the ring to ``path`` with mode 0600.

        A new file is never written over an existing one (a lost key is lost data) unless
        ``replace``: then the new text goes to a private temporary file renamed over
        ``path``, so the file is replaced whole or not at all.
        """
        target = os.fspath(path)
        text = self.to_json() + "\n"
        if not replace:
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                raise EncryptionKeyError(
                    f"{target} exists: a key ring is never overwritten"
                ) from None
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            return
        temporary = f"{target}.{secrets.token_hex(4)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


def load_keys(keys: KeyProvider | str | os.PathLike[str] | None) -> KeyProvider | None:
    """``keys`` as a provider: a provider as it is, a path read as a key ring file."""
    if keys is None or isinstance(keys, KeyProvider):
        return keys
    if isinstance(keys, str | os.PathLike):
        return KeyRing.load(keys)
    raise ValidationError("keys", "expected a KeyProvider, a key ring file path or None")


_HMAC_PADS: dict[bytes, tuple[Any, Any]] = {}
"""SHA-256 states after the inner and outer padded key of HMAC (RFC 2104), by index key."""


def _hmac_sha256(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256, equal to ``hmac.digest(key, message, "sha256")``: the two padded-key
    blocks hashed once per key and copied per message (building an HMAC per message was
    most of a blind index's cost: every referral written or rotated makes one)."""
    pads = _HMAC_PADS.get(key)
    if pads is None:
        block = (hashlib.sha256(key).digest() if len(key) > 64 else key).ljust(64, b"\0")
        pads = (
            hashlib.sha256(bytes(b ^ 0x36 for b in block)),
            hashlib.sha256(bytes(b ^ 0x5C for b in block)),
        )
        if len(_HMAC_PADS) >= 16:  # a few index keys per process: bounded all the same
            _HMAC_PADS.clear()
        _HMAC_PADS[key] = pads
    inner, outer = pads[0].copy(), pads[1].copy()
    inner.update(message)
    outer.update(inner.digest())
    return bytes(outer.digest())


def blind_index(provider: KeyProvider, field: str, value: str) -> str:
    """HMAC-SHA256 of ``value`` in ``field`` under ``provider``'s index key (hex, 128 bits)."""
    return "~b" + _hmac_sha256(provider.index_key(), f"{field}\x00{value}".encode())[:16].hex()


# --------------------------------------------------------------------------- field cipher

CIPHER_PREFIX: Final = "~e1:"
"""What a PHI value encrypted by referralkit starts with: ``~e1:<key id>:<base64>``."""


class FieldCipher:
    """AES-256-GCM over JSON values with associated data, for the stores (internal).

    One AESGCM object per key id, built once: building one costs more than encrypting a
    field.
    """

    __slots__ = ("_aead", "provider")

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self._aead: dict[str, AESGCM] = {}

    @property
    def primary_id(self) -> str:
        return self.provider.primary_id

    def aead(self, key_id: str) -> AESGCM:
        """The AES-GCM object of ``key_id`` (built once)."""
        return self._cipher(key_id)

    def _cipher(self, key_id: str) -> AESGCM:
        aead = self._aead.get(key_id)
        if aead is None:
            aead = self._aead[key_id] = AESGCM(self.provider.key(key_id))
        return aead

    def encrypt(self, plaintext: bytes, aad: bytes, key_id: str | None = None) -> str:
        key_id = key_id or self.provider.primary_id
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._cipher(key_id).encrypt(nonce, plaintext, aad)
        return f"{CIPHER_PREFIX}{key_id}:{_b64(nonce + sealed)}"

    def decrypt(self, token: Any, aad: bytes) -> bytes:
        """The plaintext of ``token``; :class:`InvalidTag` for anything that is not the
        ciphertext this place holds (the caller names the record);
        :class:`~referralkit.errors.EncryptionKeyError` for a key the provider lacks."""
        if not isinstance(token, str) or not token.startswith(CIPHER_PREFIX):
            raise InvalidTag
        key_id, _, body = token[len(CIPHER_PREFIX) :].partition(":")
        try:
            raw = base64.b64decode(body, validate=True)
        except ValueError:
            raise InvalidTag from None
        if len(raw) < _NONCE_BYTES + 16:
            raise InvalidTag
        return self._cipher(key_id).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], aad)

    def blind_index(self, field: str, value: str) -> str:
        return blind_index(self.provider, field, value)
