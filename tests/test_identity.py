"""
Tests for p2pstore.identity: the data directory, the node id and the
cluster key.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.identity import (
    KEY_BYTES,
    NODE_ID_FILE,
    ConfigError,
    load_key,
    prepare_data_dir,
    resolve_node_id,
    write_node_id,
)
from p2pstore.records import is_node_id
from p2pstore.schema import SELF_DB

OTHER_ID = "0123456789abcdef0123456789abcdef"


def make_self_db(data_dir: Path, *node_ids: str) -> None:
    """
    A self_sensor_data.db as the seed (or an earlier start) left it.
    """
    conn = sqlite3.connect(data_dir / SELF_DB)
    for node_id in node_ids:
        conn.execute(
            f"CREATE TABLE server_id_{node_id} (entry_index INTEGER, sensor_index INTEGER, "
            "sensor_type TEXT, sensor_data TEXT, timestamp TEXT)"
        )
    conn.commit()
    conn.close()


class PrepareDataDirTests(SynchronousTestCase):
    """
    The data directory is made when missing and refused when unusable.
    """

    def test_created_when_missing(self):
        """
        A missing data directory, parents included, is created.
        """
        path = Path(self.mktemp()) / "nested" / "p2pstore-data"
        self.assertEqual(prepare_data_dir(path), path)
        self.assertTrue(path.is_dir())

    def test_existing_kept(self):
        """
        An existing data directory is used as it is, its files untouched.
        """
        path = Path(self.mktemp())
        path.mkdir()
        (path / "node.id").write_text(OTHER_ID + "\n")
        prepare_data_dir(path)
        self.assertEqual((path / "node.id").read_text(), OTHER_ID + "\n")

    def test_file_refused(self):
        """
        A file where the data directory should be is refused naming
        --data-dir, and left alone.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"not a directory")
        error = self.assertRaises(ConfigError, prepare_data_dir, path)
        self.assertIn("--data-dir", str(error))
        self.assertIn(str(path), str(error))
        self.assertIn("file", str(error))
        self.assertEqual(path.read_bytes(), b"not a directory")

    def test_cannot_create(self):
        """
        A data directory that cannot be created (here below a file, which
        fails even for root) is refused naming --data-dir and the reason.
        """
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"")
        path = blocker / "p2pstore-data"
        error = self.assertRaises(ConfigError, prepare_data_dir, path)
        self.assertIn("--data-dir", str(error))
        self.assertIn("cannot create", str(error))
        self.assertIn("Not a directory", str(error))


class LoadKeyTests(SynchronousTestCase):
    """
    The cluster key is made once, kept private, and read back unchanged.
    """

    def test_made_when_missing(self):
        """
        A missing key file is made from 32 random bytes, readable only by
        the owner.
        """
        path = Path(self.mktemp())
        key, made = load_key(path)
        self.assertTrue(made)
        self.assertEqual(len(key), KEY_BYTES)
        self.assertEqual(path.read_bytes(), key)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)

    def test_private_whatever_the_umask(self):
        """
        Even under a permissive umask the new key file is mode 0600.
        """
        old = os.umask(0)
        try:
            path = Path(self.mktemp())
            load_key(path)
        finally:
            os.umask(old)
        self.assertEqual(stat.S_IMODE(path.stat().st_mode), 0o600)

    def test_read_back(self):
        """
        The second start reads the same key and does not rewrite it.
        """
        path = Path(self.mktemp())
        key, _ = load_key(path)
        again, made = load_key(path)
        self.assertEqual((again, made), (key, False))

    def test_keys_differ(self):
        """
        Two new keys are not alike: each comes from fresh random bytes.
        """
        self.assertNotEqual(load_key(Path(self.mktemp()))[0], load_key(Path(self.mktemp()))[0])

    def test_existing_key_used_as_is(self):
        """
        A key file copied from another node is used byte for byte, whatever
        its content, so nodes of one cluster share their key.
        """
        path = Path(self.mktemp())
        key = bytes(range(256)) + b"\n"
        path.write_bytes(key)
        self.assertEqual(load_key(path), (key, False))

    def test_too_short(self):
        """
        A key file too short to be a key is refused naming --secret-file,
        and the error never shows the key's bytes.
        """
        path = Path(self.mktemp())
        secret = b"hunter2-secret!"  # 15 bytes
        path.write_bytes(secret)
        error = str(self.assertRaises(ConfigError, load_key, path))
        self.assertIn("--secret-file", error)
        self.assertIn(str(path), error)
        self.assertIn("15 bytes", error)
        for form in [secret.decode(), secret.hex(), repr(secret), "hunter2"]:
            self.assertNotIn(form, error)
        self.assertEqual(path.read_bytes(), secret)

    def test_empty(self):
        """
        An empty key file is refused, not replaced by a new key (which would
        silently split the node from its cluster).
        """
        path = Path(self.mktemp())
        path.write_bytes(b"")
        error = str(self.assertRaises(ConfigError, load_key, path))
        self.assertIn("--secret-file", error)
        self.assertEqual(path.read_bytes(), b"")

    def test_directory_in_place(self):
        """
        A directory where the key file should be gives a clear error naming
        --secret-file.
        """
        path = Path(self.mktemp())
        path.mkdir()
        error = str(self.assertRaises(ConfigError, load_key, path))
        self.assertIn("--secret-file", error)
        self.assertIn(str(path), error)
        self.assertIn("Is a directory", error)

    def test_cannot_create(self):
        """
        A key file that cannot be created (below a file) gives a clear
        error naming --secret-file.
        """
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"")
        error = str(self.assertRaises(ConfigError, load_key, blocker / "cluster.key"))
        self.assertIn("--secret-file", error)
        self.assertIn("cannot create", error)


class ResolveNodeIdTests(SynchronousTestCase):
    """
    The node id is made once, kept in node.id, adopted from a seed
    database, and never silently changed.
    """

    def setUp(self):
        self.data_dir = Path(self.mktemp())
        self.data_dir.mkdir()

    def test_new_id(self):
        """
        On first start the node id is 32 lowercase hex characters. It is
        written to node.id only by write_node_id (once the node's database
        holds its table), so a first start that fails leaves no node.id.
        """
        node_id, made = resolve_node_id(self.data_dir)
        self.assertTrue(made)
        self.assertTrue(is_node_id(node_id))
        self.assertRegex(node_id, r"\A[0-9a-f]{32}\Z")
        self.assertFalse((self.data_dir / NODE_ID_FILE).exists())
        write_node_id(self.data_dir, node_id)
        self.assertEqual((self.data_dir / NODE_ID_FILE).read_text().strip(), node_id)

    def test_stable(self):
        """
        Every later start gets the same id.
        """
        node_id, _ = resolve_node_id(self.data_dir)
        write_node_id(self.data_dir, node_id)
        self.assertEqual(resolve_node_id(self.data_dir), (node_id, False))
        self.assertEqual(resolve_node_id(self.data_dir), (node_id, False))

    def test_ids_differ(self):
        """
        Two new data directories get two different ids.
        """
        other = Path(self.mktemp())
        other.mkdir()
        self.assertNotEqual(resolve_node_id(self.data_dir)[0], resolve_node_id(other)[0])

    def test_adopted_from_database(self):
        """
        Without node.id, the id of a seed database's ``server_id_<hex>``
        table is adopted (and then written to node.id).
        """
        make_self_db(self.data_dir, OTHER_ID)
        self.assertEqual(resolve_node_id(self.data_dir), (OTHER_ID, True))
        write_node_id(self.data_dir, OTHER_ID)
        self.assertEqual((self.data_dir / NODE_ID_FILE).read_text().strip(), OTHER_ID)
        self.assertEqual(resolve_node_id(self.data_dir), (OTHER_ID, False))

    def test_adopted_with_odd_characters_in_path(self):
        """
        The database is found in a data directory whose name holds
        characters that mean something in a URI.
        """
        for name in ["a#b", "c?d", "e%20f", "g h"]:
            data_dir = Path(self.mktemp()) / name
            data_dir.mkdir(parents=True)
            make_self_db(data_dir, OTHER_ID)
            self.assertEqual(resolve_node_id(data_dir), (OTHER_ID, True), name)

    def test_other_tables_ignored(self):
        """
        Tables that are not ``server_id_<32 hex>`` do not count as an id.
        """
        conn = sqlite3.connect(self.data_dir / SELF_DB)
        conn.execute("CREATE TABLE meta (key TEXT)")
        conn.execute("CREATE TABLE server_id_nothex (x)")
        conn.commit()
        conn.close()
        node_id, made = resolve_node_id(self.data_dir)
        self.assertTrue(made)
        self.assertNotEqual(node_id, "nothex")
        self.assertTrue(is_node_id(node_id))

    def test_matching_database(self):
        """
        node.id and a database holding the same id start normally.
        """
        make_self_db(self.data_dir, OTHER_ID)
        (self.data_dir / NODE_ID_FILE).write_text(OTHER_ID + "\n")
        self.assertEqual(resolve_node_id(self.data_dir), (OTHER_ID, False))

    def test_disagreement_refused(self):
        """
        When node.id and the database name different nodes, the node
        refuses to start and the error says both ids; nothing is changed.
        """
        mine = "fedcba9876543210fedcba9876543210"
        (self.data_dir / NODE_ID_FILE).write_text(mine + "\n")
        make_self_db(self.data_dir, OTHER_ID)
        error = str(self.assertRaises(ConfigError, resolve_node_id, self.data_dir))
        self.assertIn("--data-dir", error)
        self.assertIn(mine, error)
        self.assertIn(OTHER_ID, error)
        self.assertEqual((self.data_dir / NODE_ID_FILE).read_text(), mine + "\n")

    def test_several_nodes_refused(self):
        """
        A database holding the tables of two nodes is refused: which one is
        this node cannot be guessed.
        """
        second = "fedcba9876543210fedcba9876543210"
        make_self_db(self.data_dir, OTHER_ID, second)
        error = str(self.assertRaises(ConfigError, resolve_node_id, self.data_dir))
        self.assertIn(OTHER_ID, error)
        self.assertIn(second, error)
        self.assertFalse((self.data_dir / NODE_ID_FILE).exists())

    def test_garbage_node_id(self):
        """
        A node.id that does not hold a node id (wrong length, upper case,
        other text, binary bytes) is refused with a clear error, not
        replaced.
        """
        for content in [
            b"",
            b"hello\n",
            OTHER_ID.upper().encode(),
            OTHER_ID[:-1].encode(),
            OTHER_ID.encode() + b"0",
            b"\xff\xfe" + OTHER_ID.encode(),
            b"\x00" * 32,
        ]:
            (self.data_dir / NODE_ID_FILE).write_bytes(content)
            error = str(self.assertRaises(ConfigError, resolve_node_id, self.data_dir))
            self.assertIn("--data-dir", error)
            self.assertIn("node.id", error)
            self.assertEqual((self.data_dir / NODE_ID_FILE).read_bytes(), content)

    def test_surrounding_whitespace_accepted(self):
        """
        A node.id edited by hand with a trailing newline or spaces still
        works.
        """
        (self.data_dir / NODE_ID_FILE).write_text(f"  {OTHER_ID}\r\n")
        self.assertEqual(resolve_node_id(self.data_dir), (OTHER_ID, False))

    def test_node_id_directory(self):
        """
        A directory named node.id gives a clear error, not a traceback.
        """
        (self.data_dir / NODE_ID_FILE).mkdir()
        error = str(self.assertRaises(ConfigError, resolve_node_id, self.data_dir))
        self.assertIn("node.id", error)

    def test_database_not_sqlite(self):
        """
        A self_sensor_data.db that is not an SQLite file gives a clear error
        naming it.
        """
        (self.data_dir / SELF_DB).write_bytes(b"this is not a database" * 100)
        error = str(self.assertRaises(ConfigError, resolve_node_id, self.data_dir))
        self.assertIn(SELF_DB, error)
