"""Private modes for the data dir: what Fibric creates there is its owner's only.

The data dir holds API key hashes, sealed webhook secrets, the key that
unseals them and the receipt ledger; none of it is for other local users. So
the folders Fibric creates are 0700 and the files 0600, set explicitly where
each is created, so they hold under any umask (tests, embedding, the admin
CLI). `fibric serve` also sets umask 077, for the files libraries create
later on their own (DuckDB's WAL, recreated after every checkpoint).

What already exists is left as it is: a folder or file the operator made, or
opened up on purpose (a backup group reading the data dir, say), keeps its
mode. A data file readable by other users is logged as a warning when opened,
naming the fix, so data dirs made by earlier versions do not stay open
silently.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

log = logging.getLogger("fibric.store")


def make_private_dir(path: Path) -> None:
    """Create the folder `path`, and each missing parent, with mode 0700; an existing one keeps its mode."""
    if path.is_dir():
        return
    make_private_dir(path.parent)  # ends at an ancestor that exists ("." or "/" at worst)
    path.mkdir(mode=PRIVATE_DIR, exist_ok=True)  # exist_ok: another process may have just made it


def create_private_file(path: Path) -> bool:
    """Create `path` empty with mode 0600 unless it exists (then warn if others can read it); if created.

    For files a library opens by name afterwards: SQLite takes an empty file
    as an empty database, and gives its -wal and -shm the database file's mode.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        warn_if_shared(path)
        return False
    os.close(fd)
    return True


def restrict(path: Path) -> None:
    """Set mode 0600 on a file a library has just created (one that refuses a pre-made empty file)."""
    os.chmod(path, PRIVATE_FILE)


def warn_if_shared(path: Path) -> None:
    """Log a warning if the group or other users may read or write the data file `path`."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077:
        log.warning("%s has mode %04o: other local users may read it; Fibric creates data files 0600 "
                    "(chmod 600 it, and its -wal/-shm/.wal files, unless the sharing is on purpose)",
                    path, mode)
