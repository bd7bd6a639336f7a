"""Key-encryption keys (KEKs): the files outside PostgreSQL that wrap the users' data keys (D25).

Theory of operation
-------------------
* An institution's data keys (``iam_data_keys``) are wrapped under its current KEK, whose id
  is the one row of ``iam_kek``. The KEK itself is never in PostgreSQL: it is the file
  ``<dir>/kek`` (mode 0600, directory 0700; ``<dir>`` is the master key's directory,
  ``<state>/consortium/iam/<inst>/`` locally), a JSON document ``{"kek_id", "sealed"}`` whose
  key is sealed under the master key. Neither the file without the master key, nor the master
  key and the database without the file, unwrap a data key.
* Forgetting a user (:func:`gateway.iam.data_keys.rotate_kek`) replaces the KEK: under an
  exclusive ``flock`` on ``<dir>/kek.lock`` the new KEK is written and fsynced as
  ``kek-<id>.next``; one PostgreSQL transaction deletes the user's row, re-wraps every other
  data key under the new KEK and records its id; after the commit :meth:`KekStore.install`
  overwrites the old ``kek`` file in place with random bytes (fsync), renames the staged file
  over it and fsyncs the directory. Every copy of the forgotten user's wrapped key (WAL, dead
  tuples, replicas, dumps) is then wrapped under a key that exists nowhere.
* Ordering makes every crash recoverable: the database is the truth about which KEK is
  current. Before the commit a crash leaves the old KEK current and a stale staged file
  (wraps nothing; deleted by the next :meth:`KekStore.recover`). After the commit and before
  the rename, the staged file *is* the current KEK: readers (:meth:`KekStore.find`) look for
  the current id in ``kek`` and then in ``kek-<id>.next``, and :meth:`KekStore.recover` (run
  when a service starts and before every rotation) finishes the rename, shredding the old
  file.
* ``directory=None`` is a test-only mode: data keys are wrapped under the master key itself
  (``kek_id`` ``""``, as before D25) and forgetting only deletes the row, which PostgreSQL's
  history keeps (the weakness D25 removes). The gateway, the CLI and ``pantheon up`` always
  give a directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from gateway.auth.crypto import (
    CryptoError,
    Kek,
    MasterKey,
    open_with_master,
    seal_with_master,
)

KEK_DIR_ENV = "PANTHEON_IAM_KEK_DIR"
KEK_FILE = "kek"
LOCK_FILE = "kek.lock"
STAGED_SUFFIX = ".next"


class KekMissing(CryptoError):
    """The KEK the database names is in no file (restored an old dump, or lost the files)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class KekStore:
    """One institution's KEK files (or, with ``directory=None``, the master key alone)."""

    def __init__(self, directory: Path | None, master: MasterKey, institution: str) -> None:
        self.directory = directory
        self.master = master
        self.institution = institution
        self._cached: Kek | None = None

    @property
    def legacy(self) -> bool:
        """True when data keys are wrapped under the master key (test-only mode)."""
        return self.directory is None

    def _dir(self) -> Path:
        if self.directory is None:
            raise CryptoError("no KEK directory configured")
        return self.directory

    def _purpose(self, kek_id: str) -> str:
        return f"kek:{self.institution}:{kek_id}"

    def current_path(self) -> Path:
        return self._dir() / KEK_FILE

    def staged_path(self, kek_id: str) -> Path:
        return self._dir() / f"{kek_id}{STAGED_SUFFIX}"

    # -- reading ----------------------------------------------------------------------------
    def _read(self, path: Path) -> Kek | None:
        """The KEK in ``path``; None if absent or not a KEK file (e.g. shredded bytes)."""
        try:
            mode = path.stat().st_mode
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CryptoError(f"cannot read {path}: {exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise CryptoError(f"{path} is accessible by others (mode {mode & 0o777:o}); chmod 600")
        try:
            doc = json.loads(raw)
            kek_id = str(doc["kek_id"])
            sealed = bytes.fromhex(doc["sealed"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        return Kek(kek_id, open_with_master(self.master, self._purpose(kek_id), sealed))

    def find(self, kek_id: str) -> Kek:
        """The KEK with id ``kek_id`` (current file, else the staged one of a rotation that
        committed but has not renamed yet); :class:`KekMissing` if it exists nowhere."""
        cached = self._cached
        if cached is not None and cached.kek_id == kek_id:
            return cached
        for attempt in range(3):
            for path in (self.current_path(), self.staged_path(kek_id), self.current_path()):
                kek = self._read(path)
                if kek is not None and kek.kek_id == kek_id:
                    self._cached = kek
                    return kek
            time.sleep(0.01 * (attempt + 1))  # a rotation may be renaming right now
        raise KekMissing(
            f"the key-encryption key {kek_id} named by the database is not in {self._dir()}: "
            "data keys cannot be unwrapped (see docs/deployment.md, Backups)"
        )

    # -- writing (under the lock) -----------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock on the institution's KEK files (across processes of this host)."""
        directory = self._dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def stage(self, kek: Kek) -> None:
        """Write ``kek`` as ``kek-<id>.next`` (0600, fsynced with its directory)."""
        path = self.staged_path(kek.kek_id)
        doc = {
            "kek_id": kek.kek_id,
            "sealed": seal_with_master(self.master, self._purpose(kek.kek_id), kek.key).hex(),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(json.dumps(doc) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(path.parent)

    def install(self, kek: Kek) -> None:
        """Make the staged ``kek`` current and destroy the previous KEK file (under the lock,
        after the database committed ``kek`` as current)."""
        current, staged = self.current_path(), self.staged_path(kek.kek_id)
        _shred_file(current)
        os.replace(staged, current)
        _fsync_dir(current.parent)
        self._cached = kek

    def recover(self, current_id: str) -> Kek:
        """Bring the files in line with the database's current KEK id (under the lock):
        finish an interrupted rename, delete staged files of rotations that never committed."""
        kek = self._read(self.current_path())
        if kek is None or kek.kek_id != current_id:
            staged = self._read(self.staged_path(current_id))
            if staged is None:
                raise KekMissing(
                    f"the key-encryption key {current_id} named by the database is not in "
                    f"{self._dir()} (see docs/deployment.md, Backups)"
                )
            self.install(staged)
            kek = staged
        for path in self._dir().glob(f"*{STAGED_SUFFIX}"):
            _shred_file(path)
            path.unlink(missing_ok=True)
        self._cached = kek
        return kek


def _shred_file(path: Path) -> None:
    """Overwrite ``path`` in place with random bytes and fsync it (best effort against the
    freed blocks of the old file; see D25 for what it cannot promise)."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        size = os.fstat(fd).st_size
        os.write(fd, secrets.token_bytes(max(size, 1)))
        os.fsync(fd)
    finally:
        os.close(fd)
