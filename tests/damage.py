"""
Damage to a stopped node's files, as another program or a failing disk
would do it: a row edited or deleted through sqlite3, bytes flipped in a
page of a readings table.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# Interior and leaf b-tree pages of a table (SQLite's file format, 1.6).
_INTERIOR_TABLE, _LEAF_TABLE = 0x05, 0x0D
FLIPPED = 64


def edit(path: Path, sql: str, params: tuple = ()) -> int:
    """
    Run one statement on a database file that no node has open, as a user
    of the sqlite3 tool would, and return how many rows it changed.
    """
    conn = sqlite3.connect(path)
    try:
        changed = conn.execute(sql, params).rowcount
        conn.commit()
    finally:
        conn.close()
    return changed


def leaf_page(path: Path, table: str) -> tuple[int, int]:
    """
    A leaf page of ``table`` in the file: ``(its offset, the page size)``.
    The first one under the table's root, found by reading the b-tree's
    pages (at most 10 levels down).
    """
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    data = path.read_bytes()
    page = root
    for _ in range(10):
        offset = (page - 1) * page_size
        header = offset + (100 if page == 1 else 0)
        kind = data[header]
        if kind == _LEAF_TABLE:
            return offset, page_size
        if kind != _INTERIOR_TABLE:
            raise AssertionError(f"page {page} of {path} is not a table page (type {kind})")
        # The first cell pointer, after the 12-byte interior header; the
        # cell begins with its left child's page number.
        cell = int.from_bytes(data[header + 12 : header + 14], "big")
        page = int.from_bytes(data[offset + cell : offset + cell + 4], "big")
    raise AssertionError(f"no leaf page of {table} found in {path}")


def flip_page(path: Path, table: str, count: int = FLIPPED) -> int:
    """
    Flip ``count`` bytes of a leaf page of ``table`` (its cell pointers,
    right after the page header), as a failing disk would: SQLite's
    C{quick_check} and C{integrity_check} then fail.

    @return: the page's offset in the file.
    """
    offset, page_size = leaf_page(path, table)
    if count > page_size - 8:
        raise ValueError(f"cannot flip {count} bytes of a {page_size}-byte page")
    data = bytearray(path.read_bytes())
    for at in range(offset + 8, offset + 8 + count):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    return offset
