"""
Tests for the check of a node's databases at start (p2pstore.damaged), on
real SQLite files damaged as a failing disk would.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pstore.damaged import SetAside, advice, check_databases, problem_of, set_aside

from .damage import flip_page

# 2026-12-06 05:00:00 UTC.
NOW = 1796533200.0


def database(path: Path, rows: int = 2000) -> Path:
    """
    A database in WAL mode with a table of ``rows`` rows, left with its WAL
    beside it.
    """
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE readings (n INTEGER PRIMARY KEY, data TEXT)")
    conn.executemany("INSERT INTO readings VALUES (?, ?)", [(n, "x" * 40) for n in range(rows)])
    conn.commit()
    conn.close()
    return path


class ProblemTests(SynchronousTestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def test_sound(self):
        """
        A sound database, or none at all, has no problem.
        """
        self.assertIsNone(problem_of(database(self.dir / "good.db")))
        self.assertIsNone(problem_of(self.dir / "missing.db"))

    def test_flipped_page(self):
        """
        Bytes flipped in a table's page: quick_check's findings.
        """
        path = database(self.dir / "bad.db")
        flip_page(path, "readings")
        problem = problem_of(path)
        self.assertIsNotNone(problem)
        self.assertTrue(
            problem.startswith("quick_check: ") or "malformed" in problem, problem
        )

    def test_not_a_database(self):
        """
        A file that is no database at all, as SQLite says it.
        """
        path = self.dir / "junk.db"
        path.write_bytes(b"\x13" * 8192)
        self.assertEqual(problem_of(path), "file is not a database")

    def test_unreadable_is_no_damage(self):
        """
        A path SQLite cannot open (here a directory) is not damage: the
        error is raised, and nothing is moved.
        """
        path = self.dir / "dir.db"
        path.mkdir()
        self.assertRaises(sqlite3.Error, problem_of, path)
        self.assertRaises(sqlite3.Error, check_databases, [path], NOW)
        self.assertTrue(path.is_dir())


class SetAsideTests(SynchronousTestCase):
    def setUp(self):
        self.dir = Path(self.mktemp())
        self.dir.mkdir()

    def test_moves_file_and_wal(self):
        """
        The database and its WAL and shared-memory files move to
        <name>.damaged-<UTC>, with nothing left under the old name.
        """
        path = self.dir / "self_sensor_data.db"
        for suffix, data in (("", b"db"), ("-wal", b"wal"), ("-shm", b"shm")):
            path.with_name(path.name + suffix).write_bytes(data)
        moved = set_aside(path, "file is not a database", NOW)
        self.assertEqual(moved.moved_to, self.dir / "self_sensor_data.db.damaged-20261206T050000Z")
        self.assertEqual(sorted(p.name for p in self.dir.iterdir()), [
            "self_sensor_data.db.damaged-20261206T050000Z",
            "self_sensor_data.db.damaged-20261206T050000Z-shm",
            "self_sensor_data.db.damaged-20261206T050000Z-wal",
        ])
        self.assertEqual((self.dir / "self_sensor_data.db.damaged-20261206T050000Z-wal").read_bytes(), b"wal")

    def test_check_moves_only_damaged(self):
        """
        check_databases leaves a sound file in place and moves a damaged
        one, saying what was wrong.
        """
        good = database(self.dir / "good.db")
        bad = self.dir / "bad.db"
        bad.write_bytes(b"\x13" * 8192)
        [moved] = check_databases([good, bad], NOW)
        self.assertEqual((moved.path, moved.problem), (bad, "file is not a database"))
        self.assertTrue(good.exists())
        self.assertFalse(bad.exists())
        self.assertTrue(moved.moved_to.exists())
        self.assertEqual(
            moved.status(),
            {"file": str(bad), "moved_to": str(moved.moved_to), "problem": "file is not a database"},
        )

    def test_advice(self):
        """
        The start's error line says where the file went and what happens to
        the readings, by which file it was and whether there are peers.
        """
        moved = SetAside(Path("/d/self_sensor_data.db"), Path("/d/x.damaged"), "file is not a database")
        line = advice(moved, own=True, peers=True)
        self.assertIn("/d/self_sensor_data.db is damaged (file is not a database): moved it aside to /d/x.damaged", line)
        self.assertIn("fetched back from its peers", line)
        self.assertIn("p2pstore verify", line)
        self.assertIn("only in the damaged file", advice(moved, own=True, peers=False))
        self.assertIn("fetched again from the peers", advice(moved, own=False, peers=True))
