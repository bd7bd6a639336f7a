"""How to call ``pantheon`` from a new shell, for the commands the CLI prints (D36).

A printed command must run as typed in a new shell, where the virtualenv is not activated
and no ``PANTHEON_*`` variable is exported. So it names the console script by its path
(``.venv/bin/pantheon`` relative to the directory the user called from, absolute when that
directory is elsewhere) unless a plain ``pantheon`` on the default ``PATH`` is this very
script, and prefixes ``PANTHEON_STATE_DIR=...`` when the stack's state is not in the default
place (its ports and node count are recorded there: :mod:`infra.settings`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

from infra.settings import Settings, default_state_dir

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The ``PATH`` of a new login shell on Debian (what a user's terminal starts with)."""

CALLER_DIR = "PANTHEON_CALLER_DIR"
"""Set by ``./dev`` to the directory it was called from (it changes into the checkout)."""


def script() -> Path:
    """The ``pantheon`` console script of the running interpreter's environment."""
    return Path(sys.executable).parent / "pantheon"


def program() -> str:
    """``pantheon`` when a new shell finds this very script by that name, else its path."""
    own = script()
    found = shutil.which("pantheon", path=DEFAULT_PATH)
    if found is not None and Path(found).resolve() == own.resolve():
        return "pantheon"
    base = Path(os.environ.get(CALLER_DIR) or os.getcwd())
    try:
        return str(Path(os.path.relpath(own, base))) if own.is_relative_to(base) else str(own)
    except ValueError:
        return str(own)


def pantheon(*words: str, settings: Settings | None = None) -> str:
    """The shell command running ``pantheon WORDS...`` against the stack of ``settings``."""
    prefix = ""
    if settings is not None and settings.state_dir.resolve() != default_state_dir().resolve():
        prefix = f"PANTHEON_STATE_DIR={shlex.quote(str(settings.state_dir))} "
    return prefix + " ".join([program(), *map(_quoted, words)])


def _quoted(word: str) -> str:
    """``word`` as the shell reads it (placeholders such as ``<institution>`` stay bare)."""
    if re.fullmatch(r"[\w@%+=:,./<>-]+", word):
        return word
    return shlex.quote(word)
