"""Credential encryption: AES-256-GCM under master keys that can be rotated.

Each secret is sealed with a random 12-byte nonce under the newest master key; the key id is
stored beside the ciphertext and the associated data binds it to ``tenant | owner | field``,
so a ciphertext copied onto another row does not open. Any known key decrypts; only the
newest encrypts, which is what lets ``isthmus master-key rotate`` re-encrypt and then retire
old keys.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from isthmus.errors import DecryptionFailed, MasterKeyError

KEY_FILE_NAME = "master.keys"
_KEY_BYTES = 32
_NONCE_BYTES = 12


@dataclass(frozen=True)
class MasterKey:
    id: str
    key: bytes

    def __repr__(self) -> str:  # never print key material
        return f"MasterKey(id={self.id!r})"

    def encode(self) -> str:
        return f"{self.id}:{base64.b64encode(self.key).decode()}"


@dataclass(frozen=True)
class Sealed:
    key_id: str
    nonce: bytes
    ciphertext: bytes


def generate_master_key() -> MasterKey:
    return MasterKey(id=f"mk{secrets.token_hex(4)}", key=AESGCM.generate_key(bit_length=256))


def parse_master_keys(text: str) -> list[MasterKey]:
    """Parse ``id:base64[,id:base64...]`` (commas or newlines), newest last."""
    keys: list[MasterKey] = []
    lines = (line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for raw in ",".join(lines).split(","):
        entry = raw.strip()
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        if not sep or not key_id:
            raise MasterKeyError("a master key entry must read 'id:base64-key'")
        try:
            material = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise MasterKeyError(f"master key {key_id!r} is not valid base64") from exc
        if len(material) != _KEY_BYTES:
            raise MasterKeyError(f"master key {key_id!r} must be 32 bytes (AES-256)")
        if any(k.id == key_id for k in keys):
            raise MasterKeyError(f"master key id {key_id!r} appears twice")
        keys.append(MasterKey(key_id, material))
    if not keys:
        raise MasterKeyError("no master key given")
    return keys


class KeyFile:
    """The embedded default: master keys in ``<home>/master.keys``, mode 0600, newest last."""

    def __init__(self, home: Path) -> None:
        self.path = home / KEY_FILE_NAME

    def load_or_create(self) -> list[MasterKey]:
        if not self.path.exists():
            # Of processes starting at once on a new data dir, one file wins; all read it.
            self.write([generate_master_key()], exclusive=True)
        return self.load()

    def load(self) -> list[MasterKey]:
        return parse_master_keys(self.path.read_text())

    def write(self, keys: Sequence[MasterKey], *, exclusive: bool = False) -> None:
        """Replace the file at once (never half written); ``exclusive``: only if there is none."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        # Created 0600 from the start: the key is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write("# isthmus master keys, newest last. Keep this file secret.\n")
                fh.writelines(k.encode() + "\n" for k in keys)
            if exclusive:
                with contextlib.suppress(FileExistsError):
                    os.link(tmp, self.path)
            else:
                os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


class Vault:
    """Seals and opens secrets; the last key given is the one that encrypts.

    ``reload`` (given when the keys come from the key file) is asked for the keys again when
    a secret names a key this vault does not know: ``isthmus master-key rotate`` run beside a
    live server adds its key to the file, and the server must go on reading what it rotated.
    """

    def __init__(
        self,
        keys: Sequence[MasterKey],
        *,
        reload: Callable[[], Sequence[MasterKey]] | None = None,
    ) -> None:
        self._reload = reload
        self._use(keys)

    def _use(self, keys: Sequence[MasterKey]) -> None:
        if not keys:
            raise MasterKeyError("the vault needs at least one master key")
        self._keys = {k.id: AESGCM(k.key) for k in keys}
        self.key_ids: tuple[str, ...] = tuple(k.id for k in keys)

    def _reloaded(self, key_id: str) -> AESGCM | None:
        if self._reload is None:
            return None
        try:
            keys = self._reload()
        except (OSError, MasterKeyError):
            return None  # an unreadable file must not cost the keys already held
        if any(k.id == key_id for k in keys):
            self._use(keys)
        return self._keys.get(key_id)

    @property
    def newest_key_id(self) -> str:
        return self.key_ids[-1]

    def seal(self, plaintext: str, aad: str) -> Sealed:
        nonce = os.urandom(_NONCE_BYTES)
        key_id = self.newest_key_id
        ciphertext = self._keys[key_id].encrypt(nonce, plaintext.encode(), aad.encode())
        return Sealed(key_id, nonce, ciphertext)

    def open(self, sealed: Sealed, aad: str) -> str:
        aead = self._keys.get(sealed.key_id) or self._reloaded(sealed.key_id)
        if aead is None:
            raise DecryptionFailed(
                f"secret was encrypted with master key {sealed.key_id!r}, which is not "
                "configured; add it back to the master keys"
            )
        try:
            return aead.decrypt(sealed.nonce, sealed.ciphertext, aad.encode()).decode()
        except InvalidTag as exc:
            raise DecryptionFailed(
                "secret does not decrypt for this record: it belongs to another record "
                "or was altered"
            ) from exc


def secret_aad(tenant_id: str, owner: str, field: str) -> str:
    """Associated data binding a secret to its tenant, owner row and field."""
    return f"{tenant_id}|{owner}|{field}"


def load_master_keys(home: Path, configured: str | None) -> list[MasterKey]:
    """Keys from ``ISTHMUS_MASTER_KEYS`` when set, else the generated key file."""
    if configured:
        return parse_master_keys(configured)
    return KeyFile(home).load_or_create()
