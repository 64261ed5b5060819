from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from isthmus.errors import DecryptionFailed, MasterKeyError
from isthmus.vault import (
    KeyFile,
    Sealed,
    Vault,
    generate_master_key,
    load_master_keys,
    parse_master_keys,
    secret_aad,
)

AAD = secret_aad("ten_a", "integration:int_1", "apiKey")


def test_seal_then_open_gives_the_value_back() -> None:
    vault = Vault([generate_master_key()])
    sealed = vault.seal("sk_live_secret", AAD)
    assert b"sk_live_secret" not in sealed.ciphertext
    assert len(sealed.nonce) == 12
    assert vault.open(sealed, AAD) == "sk_live_secret"


def test_each_seal_uses_a_fresh_nonce() -> None:
    vault = Vault([generate_master_key()])
    assert vault.seal("x", AAD).nonce != vault.seal("x", AAD).nonce


@pytest.mark.parametrize(
    "other_aad",
    [
        secret_aad("ten_b", "integration:int_1", "apiKey"),  # another tenant
        secret_aad("ten_a", "integration:int_2", "apiKey"),  # another row
        secret_aad("ten_a", "integration:int_1", "password"),  # another field
    ],
)
def test_a_ciphertext_moved_elsewhere_does_not_open(other_aad: str) -> None:
    vault = Vault([generate_master_key()])
    sealed = vault.seal("sk_live_secret", AAD)
    with pytest.raises(DecryptionFailed, match="belongs to another record"):
        vault.open(sealed, other_aad)


def test_altered_ciphertext_does_not_open() -> None:
    vault = Vault([generate_master_key()])
    sealed = vault.seal("sk_live_secret", AAD)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(DecryptionFailed):
        vault.open(Sealed(sealed.key_id, sealed.nonce, flipped), AAD)


def test_newest_key_encrypts_and_every_known_key_decrypts() -> None:
    old, new = generate_master_key(), generate_master_key()
    sealed_old = Vault([old]).seal("v1", AAD)
    both = Vault([old, new])
    assert both.seal("v2", AAD).key_id == new.id
    assert both.open(sealed_old, AAD) == "v1"


def test_a_secret_under_a_missing_key_names_that_key() -> None:
    old, new = generate_master_key(), generate_master_key()
    sealed = Vault([old]).seal("v1", AAD)
    with pytest.raises(DecryptionFailed, match=old.id):
        Vault([new]).open(sealed, AAD)


def test_master_key_entries_round_trip() -> None:
    keys = [generate_master_key(), generate_master_key()]
    text = ",".join(k.encode() for k in keys)
    assert parse_master_keys(text) == keys
    assert parse_master_keys(text.replace(",", "\n")) == keys


_GOOD = base64.b64encode(b"k" * 32).decode()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no master key"),
        ("nocolon", "id:base64"),
        (f":{_GOOD}", "id:base64"),
        ("k1:not base64!", "not valid base64"),
        (f"k1:{base64.b64encode(b'short').decode()}", "32 bytes"),
        (f"k1:{_GOOD},k1:{_GOOD}", "appears twice"),
    ],
)
def test_bad_master_keys_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(MasterKeyError, match=message):
        parse_master_keys(text)


def test_key_repr_hides_the_material() -> None:
    key = generate_master_key()
    assert base64.b64encode(key.key).decode() not in repr(key)


def test_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = load_master_keys(home, None)
    path = home / "master.keys"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_keys(home, None) == first


def test_configured_keys_win_over_the_key_file(tmp_path: Path) -> None:
    KeyFile(tmp_path).load_or_create()
    key = generate_master_key()
    assert load_master_keys(tmp_path, key.encode()) == [key]
