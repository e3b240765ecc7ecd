"""
A node's identity on disk: its data directory, its node id and the
cluster key.

Run once at start-up, before the reactor runs; every failure is a
L{ConfigError} that names the setting and says what to do.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import uuid
from pathlib import Path
from typing import IO

from .records import is_node_id
from .settings import ConfigError
from .schema import SELF_DB, TABLES_SQL, origin_of, table_name

NODE_ID_FILE = "node.id"
KEY_FILE = "cluster.key"
LOCK_FILE = "p2pstore.lock"
KEY_BYTES = 32


def prepare_data_dir(path: Path) -> Path:
    """
    Create the data directory if it is missing and check it can be written.
    """
    if path.exists() and not path.is_dir():
        raise ConfigError("data-dir", f"{path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError("data-dir", f"cannot create {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError("data-dir", f"{path} is not writable by this user")
    return path


def lock_data_dir(path: Path) -> IO:
    """
    Take the data directory for this process. A second node on it would
    share this one's node id, files and sensor numbers, and each would
    report the other's readings wrongly.

    @return: the open lock file, holding this process's pid; the lock lasts
        while it is open here or in a process forked since (twistd's
        daemon), and ends with the last of them.
    @raise ConfigError: another process holds the directory.
    """
    lock_path = path / LOCK_FILE
    try:
        lock = open(lock_path, "a+")
    except OSError as e:
        raise ConfigError("data-dir", f"cannot open {lock_path}: {e.strerror}") from None
    _flock(lock, lock_path, fcntl.LOCK_EX, "in use by another p2pstore node{by}: stop it first, "
           "or give this node a data directory of its own")
    record_lock_holder(lock)
    return lock


def share_data_dir(path: Path):
    """
    Hold the data directory for a reader of its files (C{p2pstore verify})
    without changing it: a shared lock on ``p2pstore.lock``, which a
    running node's exclusive one refuses, and which keeps a node from
    starting on it meanwhile.

    @return: the open lock file (close it to let go), or C{None} when no
        node ever ran there (no lock file, which is not made here).
    @raise ConfigError: a running node holds the directory.
    """
    lock_path = path / LOCK_FILE
    try:
        lock = open(lock_path, "r")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ConfigError("data-dir", f"cannot open {lock_path}: {e.strerror}") from None
    _flock(lock, lock_path, fcntl.LOCK_SH, "in use by a running p2pstore node{by}: its files "
           "change while it runs, so stop it first (or check a copy of the directory)")
    return lock


def _flock(lock: IO, lock_path: Path, mode: int, in_use: str) -> None:
    """
    Take the ``mode`` lock (exclusive or shared) on an open lock file, or
    close it and raise.

    @param in_use: what to say when a node holds it, with ``{by}`` for the
        holder's pid.
    @raise ConfigError: the directory is in use, or cannot be locked.
    """
    try:
        fcntl.flock(lock.fileno(), mode | fcntl.LOCK_NB)
    except OSError as e:
        lock.seek(0)
        holder = lock.read().strip()
        lock.close()
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise ConfigError("data-dir", f"cannot lock {lock_path}: {e.strerror}") from None
        by = f" (pid {holder})" if holder.isdigit() else ""
        raise ConfigError("data-dir", f"{lock_path.parent} is " + in_use.format(by=by)) from None


def record_lock_holder(lock: IO) -> None:
    """
    Write this process's pid into the lock file, for the message a second
    node gets (twistd's daemon is not the process that took the lock).
    """
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()


def _write_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """
    Put ``data`` in a new file at ``path`` so that a crash leaves either no
    file or the whole of it: write a temporary file, fsync it, link it into
    place (failing if ``path`` exists), fsync the directory.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_new_key(path: Path) -> None:
    """
    Make a new cluster key at ``path``: L{KEY_BYTES} random bytes, mode
    0600 (only its owner reads it), written durably.

    @raise FileExistsError: ``path`` exists; it is left as it was.
    @raise OSError: the file cannot be made.
    """
    _write_durably(path, os.urandom(KEY_BYTES), 0o600)


def load_key(path: Path, create: bool = True) -> tuple[bytes, bool]:
    """
    Read the cluster key, or make one from 32 random bytes (mode 0600) when
    the file is missing and ``create`` is set.

    @param create: False for a key file the user named: a typo there must
        not silently make a new key that cuts the node off from its cluster.
    @return: the key, and whether it was just made.
    """
    if not path.exists():
        if not create:
            raise ConfigError(
                "secret-file",
                f"{path} does not exist: copy the cluster key "
                f"file of an existing node there (or leave --secret-file out to "
                f"make a new key in the data directory)"
            )
        try:
            write_new_key(path)
        except FileExistsError:
            pass
        except OSError as e:
            raise ConfigError("secret-file", f"cannot create {path}: {e.strerror}") from None
        else:
            return path.read_bytes(), True
    try:
        key = path.read_bytes()
    except OSError as e:
        raise ConfigError("secret-file", f"cannot read {path}: {e.strerror}") from None
    if len(key) < KEY_BYTES:
        # Never say anything about the content beyond its length. A shorter
        # key could be guessed offline from a handshake proof.
        raise ConfigError(
            "secret-file",
            f"{path} holds {len(key)} bytes; a cluster key needs "
            f"at least {KEY_BYTES} (copy the key file of an existing node)"
        )
    return key, False


def _origins_in(db: Path) -> list[str]:
    # The node ids of the readings tables in db.
    if not db.exists():
        return []
    try:
        # as_uri() quotes the path: a `#` or `?` in it would cut the URI.
        conn = sqlite3.connect(f"{db.absolute().as_uri()}?mode=ro", uri=True)
        try:
            rows = conn.execute(TABLES_SQL.format(db="main")).fetchall()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise ConfigError("data-dir", f"cannot read {db}: {e}") from None
    return [origin for (name,) in rows if (origin := origin_of(name)) is not None]


def resolve_node_id(data_dir: Path) -> tuple[str, bool]:
    """
    The node id from ``node.id``, adopting the one of an existing
    ``self_sensor_data.db`` table when ``node.id`` is missing, and making a
    new one on first start.

    A new or adopted id is not written here: see L{write_node_id}.

    @return: the node id, and whether it was just made or adopted.
    """
    id_file = data_dir / NODE_ID_FILE
    db = data_dir / SELF_DB
    in_db = _origins_in(db)
    if len(in_db) > 1:
        raise ConfigError(
            "data-dir",
            f"{db} holds readings of several nodes "
            f"({', '.join(map(table_name, in_db))}); keep one node's tables per data directory"
        )
    if id_file.exists():
        try:
            node_id = id_file.read_bytes().decode("ascii", "replace").strip()
        except OSError as e:
            raise ConfigError("data-dir", f"cannot read {id_file}: {e.strerror}") from None
        if not is_node_id(node_id):
            raise ConfigError(
                "data-dir",
                f"{id_file} does not hold a node id (32 lowercase hex "
                f"characters); restore it or remove it to adopt the database's id"
            )
        if in_db and in_db[0] != node_id:
            raise ConfigError(
                "data-dir",
                f"{id_file} says node {node_id} but {db} holds "
                f"{table_name(in_db[0])}; they belong to different nodes, so the node will "
                f"not start: put back the matching file"
            )
        return node_id, False
    if in_db:
        node_id = in_db[0]
    else:
        node_id = uuid.uuid4().hex
    return node_id, True


def write_node_id(data_dir: Path, node_id: str) -> None:
    """
    Write ``node.id``, once the node's own database holds its table.

    Not before: a first start that fails (a port in use) would leave a
    node.id beside no database, and the next start would take that for a
    node that lost its database.
    """
    _write_durably(data_dir / NODE_ID_FILE, (node_id + "\n").encode("ascii"))
