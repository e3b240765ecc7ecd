"""
Tests for p2pstore.records: the canonical encoding, the HMAC, record
validation and the value and unit parsed from a reading.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import attrs
from hypothesis import assume, given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.records import (
    BadRecord,
    Record,
    Signer,
    canonical_bytes,
    entry_of,
    parse_value_unit,
)

TS = "2020-04-20 23:20:18.231325"
ORIGIN = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
KEY = b"k" * 32


def record(**fields) -> Record:
    values = dict(
        origin=ORIGIN,
        epoch=EPOCH,
        entry_index=1,
        sensor_index=0,
        sensor_type="Temperature",
        sensor_data="39C",
        timestamp=TS,
        reading_id=None,
    )
    values.update(fields)
    return Record(**values)


class ParseValueUnitTests(SynchronousTestCase):
    """
    The numeric value and unit stored beside the value as sent.
    """

    def test_values(self):
        """
        A value that starts with a number splits into that number and the
        rest as unit; the seed's formats give the expected columns.
        """
        for text, expected in [
            ("1.798 atm", (1.798, "atm")),
            ("15% RH", (15.0, "% RH")),
            ("39C", (39.0, "C")),
            ("-3.5 C", (-3.5, "C")),
            ("+2", (2.0, None)),
            (".5V", (0.5, "V")),
            ("1e3 Pa", (1000.0, "Pa")),
            ("21.5 °C", (21.5, "°C")),
        ]:
            self.assertEqual(parse_value_unit(text), expected, text)

    def test_not_numbers(self):
        """
        A value that does not start with a number has no value and no unit;
        neither has one too large for a float (JSON cannot carry infinity)
        or written in non-ASCII digits.
        """
        for text in ["abc", "", "on", "C39", "- 3", ".", "nan", "inf", "Infinity", "1e999C", "\u0661\u0662 x"]:
            self.assertEqual(parse_value_unit(text), (None, None), text)

    def test_record_value_and_unit(self):
        """
        A record exposes the parsed value and unit of its sensor data.
        """
        r = record(sensor_data="1.798 atm")
        self.assertEqual((r.value, r.unit), (1.798, "atm"))
        r = record(sensor_data="open")
        self.assertEqual((r.value, r.unit), (None, None))


# Text that stresses a length-prefixed encoding: separators, quotes, line
# breaks, digits and netstring look-alikes, non-ASCII.
_tricky_pieces = st.sampled_from(
    [",", ":", '"', "'", "\n", "\r", "\\", "-", "0", "3", "3:abc,", "0:,", "1:-,", "é", "€", "𝄞", "\u2028", " "]
)
_tricky_text = st.lists(_tricky_pieces | st.text(max_size=4), max_size=8).map("".join)
text_fields = st.text(max_size=12) | _tricky_text
node_ids = st.text("0123456789abcdef", min_size=32, max_size=32)


@st.composite
def records(draw) -> Record:
    return Record(
        origin=draw(node_ids),
        epoch=draw(node_ids),
        entry_index=draw(st.integers(min_value=1, max_value=2**70)),
        sensor_index=draw(st.integers(min_value=0, max_value=2**70)),
        sensor_type=draw(text_fields),
        sensor_data=draw(text_fields),
        timestamp=draw(text_fields),
        reading_id=draw(st.none() | text_fields),
    )


_STRING_FIELDS = ["sensor_type", "sensor_data", "timestamp", "reading_id"]


def decode_canonical(data: bytes) -> tuple:
    """
    Read canonical bytes back into their fields: a left inverse of
    canonical_bytes, which is what makes the encoding injective.
    """
    prefix = b"p2pstore-record-v1\n"
    assert data.startswith(prefix)
    rest = data[len(prefix) :]
    fields = []
    for i in range(8):
        if i == 7 and rest == b"-":
            fields.append(None)
            rest = b""
            break
        length, colon, rest = rest.partition(b":")
        assert colon and length.isdigit()
        n = int(length)
        body, rest = rest[:n], rest[n:]
        assert rest[:1] == b",", data
        rest = rest[1:]
        fields.append(body.decode("utf-8"))
    assert rest == b"", data
    return tuple(fields)


def fields_of(r: Record) -> tuple:
    return (
        r.origin,
        r.epoch,
        str(r.entry_index),
        str(r.sensor_index),
        r.sensor_type,
        r.sensor_data,
        r.timestamp,
        r.reading_id,
    )


class CanonicalBytesTests(SynchronousTestCase):
    """
    The bytes a checksum covers identify the record's fields unambiguously.
    """

    @given(records())
    def test_decodable(self, r):
        """
        The encoding can be read back into exactly the record's fields, so
        no two records with different fields can share it.
        """
        self.assertEqual(decode_canonical(canonical_bytes(r)), fields_of(r))

    @given(records(), records())
    def test_injective(self, a, b):
        """
        Two records with different fields never encode alike.
        """
        assume(fields_of(a) != fields_of(b))
        self.assertNotEqual(canonical_bytes(a), canonical_bytes(b))

    @given(records(), st.data())
    def test_moving_text_between_fields(self, r, data):
        """
        Moving characters from one field into its neighbour (where a
        separator-based encoding would collide) changes the encoding.
        """
        first, second = data.draw(
            st.sampled_from(list(zip(_STRING_FIELDS, _STRING_FIELDS[1:]))), label="fields"
        )
        joined = getattr(r, first) + (getattr(r, second) or "")
        cut = data.draw(st.integers(0, len(joined)), label="cut")
        moved = attrs.evolve(r, **{first: joined[:cut], second: joined[cut:]})
        assume(fields_of(moved) != fields_of(r))
        self.assertNotEqual(canonical_bytes(moved), canonical_bytes(r))

    def test_missing_reading_id_differs_from_empty_and_dash(self):
        """
        No reading id, an empty one and ``-`` are three different records.
        """
        encodings = {canonical_bytes(record(reading_id=rid)) for rid in [None, "", "-", "1:-,"]}
        self.assertEqual(len(encodings), 4)

    def test_checksum_not_covered(self):
        """
        The checksum is not part of what it covers.
        """
        self.assertEqual(
            canonical_bytes(record(data_checksum="ab" * 32)), canonical_bytes(record())
        )

    def test_known_encoding(self):
        """
        The encoding is fixed: a change to it would make every node's stored
        checksums fail, so it is pinned here byte for byte.
        """
        self.assertEqual(
            canonical_bytes(record(sensor_data="1,2", reading_id="é")),
            b"p2pstore-record-v1\n32:" + ORIGIN.encode() + b",32:" + EPOCH.encode()
            + b",1:1,1:0,11:Temperature,3:1,2,26:" + TS.encode() + b",2:\xc3\xa9,",
        )
        self.assertTrue(canonical_bytes(record()).endswith(b"," + b"-"))


keys = st.binary(min_size=16, max_size=64)


def _tampered_text(data, text: str, label: str) -> str:
    """
    ``text`` with one byte of its UTF-8 changed; bytes that no longer decode
    arrive as lone surrogates, as a lenient decoder would hand them over.
    """
    raw = bytearray(text.encode("utf-8"))
    if not raw:
        return data.draw(st.text(min_size=1, max_size=3), label=label)
    at = data.draw(st.integers(0, len(raw) - 1), label=label + " position")
    raw[at] = data.draw(st.integers(0, 255).filter(lambda b: b != raw[at]), label=label + " byte")
    return bytes(raw).decode("utf-8", "surrogateescape")


def tamper(data, r: Record, fields: tuple = ("origin", "epoch")) -> Record:
    """
    ``r`` with one byte of one field (or of its checksum) changed; origin
    and epoch only where C{fields} has them.
    """
    field = data.draw(
        st.sampled_from(
            [*fields, "entry_index", "sensor_index", *_STRING_FIELDS, "data_checksum"]
        ),
        label="field",
    )
    old = getattr(r, field)
    if field in ("origin", "epoch"):
        # Any other byte would not be a node id at all (see the validator tests).
        at = data.draw(st.integers(0, 31), label="position")
        hexdigit = data.draw(st.sampled_from("0123456789abcdef").filter(lambda c: c != old[at]))
        new = old[:at] + hexdigit + old[at + 1 :]
    elif field in ("entry_index", "sensor_index"):
        low = 1 if field == "entry_index" else 0
        new = data.draw(
            st.sampled_from([old + 1, old * 10, max(low, old - 1), int(str(old)[::-1] or low)])
            | st.integers(min_value=low),
            label="index",
        )
        assume(new != old and new >= low)
    elif field == "reading_id" and (old is None or data.draw(st.booleans(), label="drop id")):
        new = data.draw(st.text(max_size=3), label="new id") if old is None else None
    else:
        new = _tampered_text(data, old, field)
    return attrs.evolve(r, **{field: new})


class SignerTests(SynchronousTestCase):
    """
    Records signed with the cluster key verify; anything else raises
    BadRecord.
    """

    @given(records(), keys)
    def test_round_trip(self, r, key):
        """
        A record signed with a key verifies with that key, and its checksum
        is a lowercase hex HMAC-SHA256.
        """
        signer = Signer.from_key(key)
        signed = signer.sign(r)
        self.assertEqual(signer.verify(signed), signed)
        self.assertRegex(signed.data_checksum, r"\A[0-9a-f]{64}\Z")
        self.assertEqual(attrs.evolve(signed, data_checksum=""), r)
        # A fresh signer from the same key agrees: nothing but the key matters.
        Signer.from_key(key).verify(signed)

    @given(records(), st.binary(min_size=0, max_size=200))
    def test_standard_hmac(self, r, key):
        """
        The checksum is the standard HMAC-SHA256 of the canonical bytes, as
        any other implementation computes it, for keys shorter and longer
        than SHA-256's 64-byte block.
        """
        expected = hmac.new(key, canonical_bytes(r), hashlib.sha256).hexdigest()
        self.assertEqual(Signer.from_key(key).checksum(r), expected)

    @given(records(), keys, st.data())
    def test_any_changed_byte_fails(self, r, key, data):
        """
        Changing any single byte of any field, or of the checksum, makes
        verification fail with BadRecord.
        """
        signer = Signer.from_key(key)
        tampered = tamper(data, signer.sign(r))
        self.assertRaises(BadRecord, signer.verify, tampered)

    def test_non_ascii_checksum(self):
        """
        A checksum with non-ASCII characters is a mismatch, not a crash.
        """
        signer = Signer.from_key(KEY)
        signed = signer.sign(record())
        for checksum in ["é" + signed.data_checksum[1:], signed.data_checksum + "\udcff", "", "€"]:
            self.assertRaises(BadRecord, signer.verify, attrs.evolve(signed, data_checksum=checksum))

    def test_unsigned_record_fails(self):
        """
        A record without a checksum does not verify.
        """
        self.assertRaises(BadRecord, Signer.from_key(KEY).verify, record())

    def test_uppercase_checksum_fails(self):
        """
        The checksum is compared exactly: the upper-case form of a valid one
        is not accepted.
        """
        signer = Signer.from_key(KEY)
        signed = signer.sign(record(sensor_data="1.798 atm"))
        self.assertRaises(
            BadRecord, signer.verify, attrs.evolve(signed, data_checksum=signed.data_checksum.upper())
        )

    # Keys of one length: HMAC pads short keys with zero bytes, so b"k" and
    # b"k\0" are the same key (harmless for random 32-byte keys).
    @given(records(), st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
    def test_other_key_fails(self, r, key, other):
        """
        A record signed with another cluster's key does not verify.
        """
        assume(key != other)
        signed = Signer.from_key(other).sign(r)
        self.assertRaises(BadRecord, Signer.from_key(key).verify, signed)

    @given(st.lists(records(), min_size=1, max_size=5), st.data())
    def test_valid_prefix(self, rs, data):
        """
        valid_prefix counts the entries of a batch up to the first whose
        checksum is wrong, as verify judges each record.
        """
        signer = Signer.from_key(KEY)
        signed = [signer.sign(attrs.evolve(r, origin=rs[0].origin, epoch=rs[0].epoch)) for r in rs]
        bad = data.draw(st.integers(0, len(signed)), label="first bad")
        if bad < len(signed):
            # Not the origin or epoch: a batch names them once for all.
            signed[bad] = tamper(data, signed[bad], fields=())
        entries = [entry_of(r) for r in signed]
        self.assertEqual(signer.valid_prefix(rs[0].origin, rs[0].epoch, entries), bad)
        self.assertEqual(signer.valid_prefix(rs[0].origin, rs[0].epoch, []), 0)

    def test_key_not_in_repr(self):
        """
        The key appears in no form in the signer's repr or str, nor in the
        error for a bad record.
        """
        key = bytes(range(200, 232))
        signer = Signer.from_key(key)
        error = self.assertRaises(BadRecord, signer.verify, record(data_checksum="00" * 32))
        for text in [repr(signer), str(signer), str(error), repr(error)]:
            for form in [repr(key), key.hex(), key.hex().upper(), base64.b64encode(key).decode(), key.decode("latin-1")]:
                self.assertNotIn(form, text)


class RecordValidatorTests(SynchronousTestCase):
    """
    A record cannot be built with a bad position or field type.
    """

    def test_good_record(self):
        """
        The smallest valid position is entry 1 from sensor 0.
        """
        r = record(entry_index=1, sensor_index=0)
        self.assertEqual((r.entry_index, r.sensor_index), (1, 0))

    def test_bad_node_ids(self):
        """
        Origin and epoch must be 32 lowercase hex characters.
        """
        for bad in [
            "",
            ORIGIN.upper(),
            ORIGIN[:-1],
            ORIGIN + "0",
            ORIGIN + "\n",
            "g" * 32,
            "0123456789abcdef-0123456789abcde",
            "１" * 32,
            ORIGIN.encode(),
            None,
            int(ORIGIN, 16),
        ]:
            for field in ["origin", "epoch"]:
                self.assertRaises((ValueError, TypeError), record, **{field: bad})

    def test_bad_indexes(self):
        """
        entry_index is an integer from 1, sensor_index from 0; floats, bools
        and digit strings are refused (they would sign differently from the
        equal integer).
        """
        for bad in [0, -1, 1.0, 1.5, True, "1", None]:
            self.assertRaises((ValueError, TypeError), record, entry_index=bad)
        for bad in [-1, 0.0, 2.5, False, "0", None]:
            self.assertRaises((ValueError, TypeError), record, sensor_index=bad)

    def test_bad_text_fields(self):
        """
        Text fields must be text; only reading_id may be missing.
        """
        for field in ["sensor_type", "sensor_data", "timestamp", "data_checksum"]:
            for bad in [None, b"39C", 39]:
                self.assertRaises(TypeError, record, **{field: bad})
        self.assertRaises(TypeError, record, reading_id=b"r1")
        self.assertIsNone(record(reading_id=None).reading_id)
