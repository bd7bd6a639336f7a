"""AES-GCM field encryption, data keys wrapped by the master key, crypto-shredding."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from gateway.auth.crypto import (
    ENV_VAR,
    CryptoError,
    Kek,
    MasterKey,
    create_master_key_file,
    load_master_key,
    new_data_key,
    new_kek,
    open_field,
    open_profile,
    open_text,
    open_with_master,
    profile_key_id,
    seal_field,
    seal_profile,
    seal_text,
    seal_with_master,
    unwrap_data_key,
    wrap_data_key,
)
from gateway.iam.kek import KekMissing, KekStore

MASTER = MasterKey(b"\x07" * 32)


def test_field_round_trip_and_binding() -> None:
    dk = new_data_key()
    sealed = seal_field(dk, "acme", "u-1", "email", "ada@example.org")
    assert b"ada@example.org" not in sealed
    assert open_field(dk, "acme", "u-1", "email", sealed) == "ada@example.org"
    for inst, user, name in (
        ("globex", "u-1", "email"),
        ("acme", "u-2", "email"),
        ("acme", "u-1", "name"),
    ):
        with pytest.raises(CryptoError):
            open_field(dk, inst, user, name, sealed)
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(CryptoError):
        open_field(dk, "acme", "u-1", "email", bytes(tampered))
    with pytest.raises(CryptoError):
        open_field(new_data_key(), "acme", "u-1", "email", sealed)
    with pytest.raises(CryptoError):
        open_field(dk, "acme", "u-1", "email", b"\x01short")


def test_data_key_wrapping_is_bound_to_institution_user_and_id() -> None:
    dk = new_data_key()
    wrapped = wrap_data_key(MASTER, "acme", "u-1", dk)
    assert dk.key not in wrapped
    assert unwrap_data_key(MASTER, "acme", "u-1", dk.key_id, wrapped).key == dk.key
    with pytest.raises(CryptoError):
        unwrap_data_key(MASTER, "acme", "u-2", dk.key_id, wrapped)
    with pytest.raises(CryptoError):
        unwrap_data_key(MasterKey(b"\x08" * 32), "acme", "u-1", dk.key_id, wrapped)


def test_profile_and_text() -> None:
    dk = new_data_key()
    blob = seal_profile(dk, "acme", "u-1", {"email": "ada@example.org", "display_name": "Ada L."})
    assert b"ada@example.org" not in blob and b"Ada L." not in blob
    assert profile_key_id(blob) == dk.key_id
    assert open_profile(dk, "acme", "u-1", blob) == {
        "email": "ada@example.org",
        "display_name": "Ada L.",
    }
    with pytest.raises(CryptoError):
        open_profile(new_data_key(), "acme", "u-1", blob)
    with pytest.raises(CryptoError):
        profile_key_id(b"not json")
    text = seal_text(dk, "acme", "u-1", "password_hash", "scrypt$...")
    assert (
        text.startswith("enc:v1:")
        and open_text(dk, "acme", "u-1", "password_hash", text) == "scrypt$..."
    )
    with pytest.raises(CryptoError):
        open_text(dk, "acme", "u-1", "password_hash", "scrypt$clear")


def test_master_sealing() -> None:
    sealed = seal_with_master(MASTER, "signing-key:acme:k1", b"secret")
    assert open_with_master(MASTER, "signing-key:acme:k1", sealed) == b"secret"
    with pytest.raises(CryptoError):
        open_with_master(MASTER, "signing-key:acme:k2", sealed)


def test_master_key_file_must_be_private(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "master.key"
    key = create_master_key_file(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_master_key(path) == key
    with pytest.raises(CryptoError, match="refusing to overwrite"):
        create_master_key_file(path)
    path.chmod(0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        load_master_key(path)
    with pytest.raises(CryptoError):
        load_master_key(tmp_path / "missing")


def test_master_key_from_environment_and_never_in_repr() -> None:
    raw = os.urandom(32)
    assert load_master_key(env={ENV_VAR: raw.hex()}).key == raw
    assert load_master_key(env={ENV_VAR: base64.urlsafe_b64encode(raw).decode()}).key == raw
    with pytest.raises(CryptoError):
        load_master_key(env={})
    with pytest.raises(CryptoError):
        load_master_key(env={ENV_VAR: "too short"})
    key = MasterKey(raw)
    assert raw.hex() not in repr(key) and repr(key) == "MasterKey(<redacted>)"
    dk = new_data_key()
    assert dk.key.hex() not in repr(dk)


def test_data_keys_wrapped_under_a_kek_are_bound_to_its_id() -> None:
    dk, kek = new_data_key(), new_kek()
    wrapped = wrap_data_key(kek, "acme", "u-1", dk)
    assert unwrap_data_key(kek, "acme", "u-1", dk.key_id, wrapped).key == dk.key
    for wrapper in (Kek("kek-other", kek.key), MASTER, MasterKey(kek.key), new_kek()):
        with pytest.raises(CryptoError):
            unwrap_data_key(wrapper, "acme", "u-1", dk.key_id, wrapped)
    assert kek.key.hex() not in repr(kek) and kek.kek_id in repr(kek)
    with pytest.raises(CryptoError):
        Kek("", kek.key)


def test_kek_files_are_sealed_private_and_replaced_atomically(tmp_path: Path) -> None:
    store = KekStore(tmp_path / "iam", MASTER, "acme")
    first, second = new_kek(), new_kek()
    with store.lock():
        store.stage(first)
        store.install(first)
        assert store.find(first.kek_id) == first
        text = (tmp_path / "iam" / "kek").read_text()
        assert first.key.hex() not in text and first.kek_id in text  # sealed by the master key
        with pytest.raises(CryptoError):  # another master key does not open it
            KekStore(tmp_path / "iam", MasterKey(b"\x09" * 32), "acme").find(first.kek_id)
        store.stage(second)
        assert KekStore(tmp_path / "iam", MASTER, "acme").find(second.kek_id) == second
        store.install(second)
    fresh = KekStore(tmp_path / "iam", MASTER, "acme")
    assert fresh.find(second.kek_id) == second
    with pytest.raises(KekMissing):
        fresh.find(first.kek_id)
    assert sorted(p.name for p in (tmp_path / "iam").iterdir()) == ["kek", "kek.lock"]
    assert {oct(p.stat().st_mode & 0o777) for p in (tmp_path / "iam").iterdir()} == {"0o600"}
