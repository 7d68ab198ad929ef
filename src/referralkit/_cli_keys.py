"""The ``referralkit keys`` commands and the key ring every command opens stores with.

- ``referralkit keys init FILE``: write a new key ring (mode 0600; an existing file is
  never overwritten);
- ``referralkit keys add FILE``: add a new primary key to the ring (the old keys stay, to
  read what they encrypted); then ``keys rotate`` moves the records onto it;
- ``referralkit keys rotate --db URL [--keys FILE] [--batch N]``: re-encrypt every record not
  on the ring's primary key, in batches, while the store is in use; run it again after a
  crash to resume. On a store written without keys it encrypts the store (the migration).

Every command that opens a store opens it with the key ring the ``REFERRALKIT_KEYS``
environment variable names (:data:`~referralkit.crypto.KEYS_ENV`), the demo included.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

from .crypto import KEYS_ENV, KeyProvider, KeyRing
from .errors import ValidationError
from .storage import ReferralStore, open_store, rotate_keys

__all__ = ["add_keys_commands", "environment_keys", "open_keyed_store"]


def environment_keys() -> KeyProvider | None:
    """The key ring ``REFERRALKIT_KEYS`` names, or ``None`` when it is unset or empty."""
    path = os.environ.get(KEYS_ENV, "")
    return KeyRing.load(path) if path else None


def open_keyed_store(url: str, *, create: bool = True) -> ReferralStore:
    """:func:`~referralkit.storage.open_store` with the key ring of ``REFERRALKIT_KEYS``."""
    return open_store(url, create=create, keys=environment_keys())


def _init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ring = KeyRing.generate()
    ring.save(args.file)
    out.write(f"{args.file}: new key ring, primary key {ring.primary_id} (mode 0600)\n")
    out.write(f"keep it outside the database and its backups; use it with {KEYS_ENV}={args.file}\n")
    return 0


def _add(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    ring = KeyRing.load(args.file).with_new_key()
    ring.save(args.file, replace=True)
    out.write(
        f"{args.file}: new primary key {ring.primary_id} ({len(ring.key_ids())} keys); "
        "run `referralkit keys rotate --db URL` to move the records onto it\n"
    )
    return 0


def _rotate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    keys = KeyRing.load(args.keys) if args.keys else environment_keys()
    if keys is None:
        raise ValidationError("keys", f"give the key ring: --keys FILE or {KEYS_ENV}=FILE")
    with open_store(args.db, create=False, keys=keys) as store:

        def progress(last: str, rewritten: int) -> None:
            if args.verbose:
                err.write(f"rotated up to {last}: {rewritten} records rewritten\n")

        done = rotate_keys(store, batch=args.batch, progress=progress)
    out.write(
        f"{done.rewritten} records moved onto key {keys.primary_id} in {done.batches} batches\n"
    )
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("expected a whole number >= 1")
    return value


def add_keys_commands(commands: Any) -> None:
    """Add ``keys init``, ``keys add`` and ``keys rotate`` to the command line's
    sub-commands."""
    keys = commands.add_parser(
        "keys",
        help="key rings: create one, add a key, rotate a store onto it",
        description="Encryption at rest: key rings and key rotation.",
    )
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    init = key_commands.add_parser(
        "init", help="write a new key ring (mode 0600; never overwrites)"
    )
    init.add_argument("file", metavar="FILE")
    init.set_defaults(handler=_init)
    add = key_commands.add_parser("add", help="add a new primary key to a key ring")
    add.add_argument("file", metavar="FILE")
    add.set_defaults(handler=_add)
    rotate = key_commands.add_parser(
        "rotate",
        help="re-encrypt a store's records with the ring's primary key (resumable)",
        description=(
            "Move every record not on the key ring's primary key onto it, in batches, each "
            "one transaction, while the store is in use; run it again to resume after a "
            "crash. On a store written without keys, this encrypts it."
        ),
    )
    rotate.add_argument("--db", required=True, help="store URL")
    rotate.add_argument("--keys", help=f"key ring file (default: ${KEYS_ENV})")
    rotate.add_argument("--batch", type=_positive, default=500, help="referrals per batch (500)")
    rotate.add_argument("--verbose", action="store_true", help="report each batch on stderr")
    rotate.set_defaults(handler=_rotate)
