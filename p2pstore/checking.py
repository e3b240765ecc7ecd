"""
Checking a stored row against the record its origin signed: its fields are
a valid record (L{p2pstore.records.ENTRY}), its checksum is their HMAC under
the cluster key, and its derived columns (value, unit) match its
sensor_data.

Pure functions, no Twisted: the scrub of a running node and
C{p2pstore verify} of a stopped one both check rows with L{row_problem}.
"""

from __future__ import annotations

import hmac
from typing import Optional

from .records import CHECKSUM, ENTRY, SENSOR_DATA, Signer, is_node_id, parse_value_unit
from .schema import EPOCH, UNIT, VALUE

# Why a row is not its record, as quarantine and verify report it.
NOT_A_RECORD = "not a valid record"
BAD_CHECKSUM = "checksum mismatch"
BAD_DERIVED = "value or unit column does not match sensor_data"


def _field_problem(row: tuple) -> Optional[str]:
    for position, field in enumerate(ENTRY):
        value = row[position]
        if value is None and field.optional:
            continue
        if field.kind is int:
            if type(value) is not int or value < field.minimum:
                return f"{field.name} is {value!r}, not {field.wanted}"
        elif type(value) is not field.kind:
            return f"{field.name} is {value!r}, not {field.wanted}"
    if not is_node_id(row[EPOCH]):
        return f"epoch is {row[EPOCH]!r}, not a node id"
    return None


def row_problem(signer: Signer, origin: str, row: tuple) -> Optional[str]:
    """
    What is wrong with one stored row of ``origin``'s table, or C{None}
    when it is the record its origin signed.

    @param row: the row's columns in the order of
        L{p2pstore.schema.ROW_COLUMNS}.
    @return: a short reason starting with L{NOT_A_RECORD},
        L{BAD_CHECKSUM} or L{BAD_DERIVED}.
    """
    wrong = _field_problem(row)
    if wrong is not None:
        return f"{NOT_A_RECORD}: {wrong}"
    try:
        expected = signer.checksum_of(origin, row[EPOCH], *row[:CHECKSUM])
    except UnicodeEncodeError:
        return f"{NOT_A_RECORD}: a field holds text that is not UTF-8"
    given = row[CHECKSUM]
    if not (given.isascii() and hmac.compare_digest(expected, given)):
        return BAD_CHECKSUM
    value, unit = parse_value_unit(row[SENSOR_DATA])
    if (row[VALUE], row[UNIT]) != (value, unit):
        return BAD_DERIVED
    return None
