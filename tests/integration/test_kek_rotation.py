"""KEK rotation (D25) against the real PostgreSQL: remaining users keep their data keys, the
forgotten one's old wrapped copies open with nothing left, and a crash at any step leaves a
state the next start recovers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from gateway.auth.crypto import CryptoError, MasterKey, unwrap_data_key
from gateway.iam import data_keys
from gateway.iam.kek import KEK_FILE, KekMissing, KekStore
from infra.postgres_server import Postgres
from projections import iam as iam_projection

pytestmark = pytest.mark.integration

MASTER = MasterKey(bytes(range(32)))
INST = "acme"


class Crash(Exception):
    """Stands in for the process dying at this point."""


@pytest.fixture
def conn(postgres: Postgres, unique: str) -> Iterator[psycopg.Connection[Any]]:
    postgres.ensure_database(f"kek_{unique}")
    with psycopg.connect(postgres.dsn(f"kek_{unique}"), autocommit=True) as c:
        iam_projection.migrate(c)
        yield c


def _keys(directory: Path) -> KekStore:
    return KekStore(directory, MASTER, INST)  # a fresh store: as in a new process


def _users(conn: psycopg.Connection[Any], keys: KekStore, n: int) -> dict[str, bytes]:
    return {f"u-{i}": data_keys.create_data_key(conn, keys, INST, f"u-{i}").key for i in range(n)}


def _wrapped(conn: psycopg.Connection[Any], user_id: str) -> tuple[str, str, bytes]:
    row = conn.execute(
        "SELECT key_id, kek_id, wrapped FROM iam_data_keys WHERE user_id = %s", (user_id,)
    ).fetchone()
    assert row is not None
    return str(row[0]), str(row[1]), bytes(row[2])


def _opens_with_anything_left(directory: Path, user_id: str, old: tuple[str, str, bytes]) -> bool:
    """Whether the old wrapped copy opens under the master key or any KEK file present."""
    key_id, _, blob = old
    wrappers: list[Any] = [MASTER]
    for path in directory.iterdir():
        try:
            kek = _keys(directory)._read(path)
        except CryptoError:
            kek = None
        if kek is not None:
            wrappers.append(kek)
    for wrapper in wrappers:
        try:
            unwrap_data_key(wrapper, INST, user_id, key_id, blob)
            return True
        except CryptoError:
            pass
    return False


def test_forget_rewraps_the_others_and_shreds_the_old_copies(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    directory = tmp_path / "iam"
    keys = _keys(directory)
    data = _users(conn, keys, 50)
    old = _wrapped(conn, "u-7")
    first = data_keys.current_kek_id(conn)
    assert first is not None and old[1] == first
    assert _opens_with_anything_left(directory, "u-7", old)  # control: the scan can succeed
    assert stat.S_IMODE((directory / KEK_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700

    gone, new_id, rewrapped = data_keys.rotate_kek(conn, keys, forget=("u-7",))

    assert gone == {"u-7": old[0]} and rewrapped == 49 and new_id not in (None, first)
    assert data_keys.current_kek_id(conn) == new_id
    assert data_keys.get_data_key(conn, keys, INST, "u-7") is None
    for uid, key in data.items():  # another process (fresh store) reads the others
        if uid != "u-7":
            dk = data_keys.get_data_key(conn, _keys(directory), INST, uid)
            assert dk is not None and dk.key == key
    assert not _opens_with_anything_left(directory, "u-7", old)
    assert sorted(p.name for p in directory.iterdir()) == ["kek", "kek.lock"]
    # Forgetting again, or someone already gone, still rotates (nothing to delete).
    assert data_keys.rotate_kek(conn, keys, forget=("u-7",))[0] == {}
    assert data_keys.get_data_key(conn, _keys(directory), INST, "u-8") is not None


def test_crash_after_commit_before_the_rename_is_finished_on_start(
    conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "iam"
    keys = _keys(directory)
    data = _users(conn, keys, 5)
    old = _wrapped(conn, "u-1")

    def crash(self: KekStore, kek: Any) -> None:
        raise Crash

    with monkeypatch.context() as m:
        m.setattr(KekStore, "install", crash)
        with pytest.raises(Crash):
            data_keys.rotate_kek(conn, keys, forget=("u-1",))
    # Committed: the database names the new KEK, which is still only the staged file.
    assert len(list(directory.glob("*.next"))) == 1
    assert data_keys.get_data_key(conn, _keys(directory), INST, "u-2") is not None  # readers cope
    # The old KEK file is still there until recovery (as the docs say) ...
    assert _opens_with_anything_left(directory, "u-1", old)
    # ... and the next start (IamService calls ensure_kek) finishes the rotation.
    assert data_keys.ensure_kek(conn, _keys(directory)) == data_keys.current_kek_id(conn)
    assert not list(directory.glob("*.next"))
    assert not _opens_with_anything_left(directory, "u-1", old)
    for uid in ("u-0", "u-2", "u-3", "u-4"):
        dk = data_keys.get_data_key(conn, _keys(directory), INST, uid)
        assert dk is not None and dk.key == data[uid]


def test_crash_while_shredding_the_old_file_is_finished_on_start(
    conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "iam"
    keys = _keys(directory)
    data = _users(conn, keys, 3)
    with monkeypatch.context() as m:
        m.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(Crash()))
        with pytest.raises(Crash):  # old file overwritten, new one not yet renamed
            data_keys.rotate_kek(conn, keys, forget=("u-0",))
    dk = data_keys.get_data_key(conn, _keys(directory), INST, "u-1")
    assert dk is not None and dk.key == data["u-1"]
    data_keys.ensure_kek(conn, _keys(directory))
    assert sorted(p.name for p in directory.iterdir()) == ["kek", "kek.lock"]
    dk = data_keys.get_data_key(conn, _keys(directory), INST, "u-2")
    assert dk is not None and dk.key == data["u-2"]


def test_crash_before_commit_keeps_the_old_kek_and_drops_the_staged_one(
    conn: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "iam"
    keys = _keys(directory)
    data = _users(conn, keys, 4)
    before = data_keys.current_kek_id(conn)

    def crash(*_: Any) -> bytes:
        raise Crash

    with monkeypatch.context() as m:  # dies while re-wrapping, after staging the new KEK
        m.setattr(data_keys, "wrap_data_key", crash)
        with pytest.raises(Crash):
            data_keys.rotate_kek(conn, keys, forget=("u-3",))
    assert data_keys.current_kek_id(conn) == before  # rolled back: u-3 is not forgotten yet
    assert len(list(directory.glob("*.next"))) == 1
    for uid, key in data.items():
        dk = data_keys.get_data_key(conn, _keys(directory), INST, uid)
        assert dk is not None and dk.key == key
    data_keys.ensure_kek(conn, _keys(directory))
    assert not list(directory.glob("*.next"))
    assert data_keys.rotate_kek(conn, _keys(directory), forget=("u-3",))[0].keys() == {"u-3"}
    assert data_keys.get_data_key(conn, _keys(directory), INST, "u-0") is not None


def test_master_wrapped_rows_move_under_a_kek_and_a_lost_kek_is_a_clear_error(
    conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    legacy = KekStore(None, MASTER, INST)  # rows written before D25: under the master key
    data = _users(conn, legacy, 3)
    assert {_wrapped(conn, u)[1] for u in data} == {""}
    directory = tmp_path / "iam"
    kek_id = data_keys.ensure_kek(conn, _keys(directory))
    assert kek_id is not None and {_wrapped(conn, u)[1] for u in data} == {kek_id}
    for uid, key in data.items():
        dk = data_keys.get_data_key(conn, _keys(directory), INST, uid)
        assert dk is not None and dk.key == key
    with pytest.raises(KekMissing, match="not in"):  # the files are gone (e.g. another host)
        data_keys.get_data_key(conn, _keys(tmp_path / "elsewhere"), INST, "u-0")
    (directory / KEK_FILE).chmod(0o644)
    with pytest.raises(CryptoError, match="chmod 600"):
        data_keys.get_data_key(conn, _keys(directory), INST, "u-0")
