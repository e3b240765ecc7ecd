"""
Tests for p2pstore.records: sensor lines, the canonical encoding and the HMAC.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import attrs
from hypothesis import assume, given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.lines import (
    _PLAIN_LINE,
    _TIMESTAMP,
    _parse_fields,
    MAX_PLAIN_LINE,
    MAX_READING_ID,
    MAX_SENSOR_DATA,
    MAX_SENSOR_TYPE,
    BadLine,
    Reading,
    parse_line,
    parse_plain_lines,
)
from p2pstore.records import BadRecord, Record, Signer, canonical_bytes, entry_of, parse_value_unit

NOW = "2024-01-02 03:04:05.000006"
TS = "2020-04-20 23:20:18.231325"
ORIGIN = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
KEY = b"k" * 32


def now() -> str:
    return NOW


def no_clock() -> str:
    raise AssertionError("the node's clock was read for a line with a timestamp")


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


def field_text(limit: int):
    """
    Valid field text: no comma, no control or space characters (spaces
    inside a field are fine, but kept out so that stripping is not at issue).
    """
    chars = st.characters(
        blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters=","
    )
    return st.text(chars, min_size=1, max_size=limit)


class ParseLineAcceptsTests(SynchronousTestCase):
    """
    The lines a sensor may send, and what the node keeps of them.
    """

    def test_seed_formats(self):
        """
        The three lines the seed's simulator sends are stored exactly as sent.
        """
        for line, expected in [
            (
                b"Temperature,39C,2020-04-20 23:20:18.231325",
                Reading("Temperature", "39C", "2020-04-20 23:20:18.231325"),
            ),
            (
                b"Atm. Pressure,1.798 atm,2020-04-20 23:25:27.387164",
                Reading("Atm. Pressure", "1.798 atm", "2020-04-20 23:25:27.387164"),
            ),
            (
                b"Humidity,15% RH,2020-04-20 23:25:50.610889",
                Reading("Humidity", "15% RH", "2020-04-20 23:25:50.610889"),
            ),
        ]:
            self.assertEqual(parse_line(line, no_clock), expected)

    def test_two_fields_take_the_node_time(self):
        """
        A line without a timestamp is stamped with the node's own time.
        """
        self.assertEqual(
            parse_line(b"Temperature,39C", now), Reading("Temperature", "39C", NOW, None)
        )

    def test_four_fields_carry_a_reading_id(self):
        """
        A fourth field is the reading id the node deduplicates on.
        """
        self.assertEqual(
            parse_line(b"Temperature,39C,2020-04-20 23:20:18.231325,sim-7-42", no_clock),
            Reading("Temperature", "39C", "2020-04-20 23:20:18.231325", "sim-7-42"),
        )

    def test_timestamp_forms(self):
        """
        ISO-8601 timestamps with or without fraction, with a ``T`` separator
        and with a UTC offset are accepted and kept as sent.
        """
        for timestamp in [
            "2020-04-20 23:20:18",
            "2020-04-20 23:20:18.2",
            "2020-04-20 23:20:18.231325",
            "2020-04-20T23:20:18",
            "2020-04-20T23:20:18.231325",
            "2020-04-20T23:20:18Z",
            "2020-04-20 23:20:18+00:00",
            "2020-04-20T23:20:18.5+05:30",
            "2020-04-20T23:20:18-0800",
            "2020-04-20 23:20:18+02",
            "2020-02-29 00:00:00",
        ]:
            line = f"Temperature,39C,{timestamp}".encode()
            self.assertEqual(parse_line(line, no_clock).timestamp, timestamp)

    def test_surrounding_spaces_stripped(self):
        """
        Spaces around each field are not part of it; spaces inside are.
        """
        self.assertEqual(
            parse_line(b"  Atm. Pressure ,  1.798 atm\t, 2020-04-20 23:25:27 ,  r 1  ", no_clock),
            Reading("Atm. Pressure", "1.798 atm", "2020-04-20 23:25:27", "r 1"),
        )

    def test_limits_inclusive(self):
        """
        A sensor type of 40, a value of 80 and a reading id of 64 characters
        fit; the limits count characters, not UTF-8 bytes.
        """
        sensor_type = "é" * MAX_SENSOR_TYPE
        value = "v" * MAX_SENSOR_DATA
        reading_id = "ü" * MAX_READING_ID
        line = f"{sensor_type},{value},{TS},{reading_id}".encode()
        self.assertEqual(
            parse_line(line, no_clock), Reading(sensor_type, value, TS, reading_id)
        )

    def test_non_ascii_kept(self):
        """
        Non-ASCII text (quotes, units like °C) is stored as sent.
        """
        self.assertEqual(
            parse_line('"Küche" temp,21.5 °C'.encode(), now),
            Reading('"Küche" temp', "21.5 °C", NOW),
        )

    def test_line_ending_is_not_parsed_here(self):
        """
        parse_line gets a line without its ending (the protocol strips
        ``\\n`` and ``\\r\\n``); a carriage return inside a field is a control
        character, not a line break.
        """
        self.assertEqual(
            str(self.assertRaises(BadLine, parse_line, b"Temp\rerature,39C", now)),
            "control character in sensor type",
        )

    @given(
        field_text(MAX_SENSOR_TYPE),
        field_text(MAX_SENSOR_DATA),
        st.datetimes().map(lambda d: d.isoformat(sep=" ")),
        st.none() | field_text(MAX_READING_ID),
    )
    def test_valid_fields_round_trip(self, sensor_type, value, timestamp, reading_id):
        """
        Any line made of valid fields parses back to exactly those fields.
        """
        fields = [sensor_type, value, timestamp] + ([reading_id] if reading_id else [])
        self.assertEqual(
            parse_line(",".join(fields).encode(), no_clock),
            Reading(sensor_type, value, timestamp, reading_id),
        )

    @given(st.binary(max_size=300) | st.text(max_size=120).map(str.encode))
    def test_any_bytes_parse_or_raise_bad_line(self, line):
        """
        Whatever a sensor sends, parse_line either gives a reading within the
        limits or raises BadLine with a reason: never another exception.
        """
        try:
            reading = parse_line(line, now)
        except BadLine as e:
            self.assertTrue(str(e))
            self.assertNotIn("\n", str(e))
        else:
            self.assertTrue(1 <= len(reading.sensor_type) <= MAX_SENSOR_TYPE)
            self.assertTrue(1 <= len(reading.sensor_data) <= MAX_SENSOR_DATA)
            self.assertTrue(reading.timestamp.isascii())


class ParseLineRejectsTests(SynchronousTestCase):
    """
    Every line the node refuses, with the exact reason sent back as
    ``ERR <reason>``.
    """

    def assertRejected(self, line: bytes, reason: str) -> None:
        error = self.assertRaises(BadLine, parse_line, line, now)
        self.assertEqual(str(error), reason, f"for {line!r}")

    def test_not_utf8(self):
        """
        Bytes that are not UTF-8 (stray bytes, overlong forms, encoded
        surrogates) are rejected as ``not UTF-8``.
        """
        for line in [
            b"\xff\xfe",
            b"Temperature,39\xb0C," + TS.encode(),
            b"Temperature,\xc0\xaf," + TS.encode(),
            b"Temperature,\xed\xa0\x80," + TS.encode(),
            b"Temp\xe2\x82",
        ]:
            self.assertRejected(line, "not UTF-8")

    def test_empty_line(self):
        """
        An empty or all-blank line is ``empty line``.
        """
        for line in [b"", b" ", b"\t \t"]:
            self.assertRejected(line, "empty line")

    def test_missing_value(self):
        """
        A line with a single field is ``missing value``.
        """
        self.assertRejected(b"Temperature", "missing value")

    def test_too_many_fields(self):
        """
        More than four fields (for instance a value holding a comma) is
        ``too many fields``.
        """
        self.assertRejected(b"a,b," + TS.encode() + b",id,extra", "too many fields")
        self.assertRejected(b"Weight,1,000 kg," + TS.encode() + b",id", "too many fields")
        self.assertRejected(b",,,,", "too many fields")

    def test_empty_fields(self):
        """
        An empty or blank sensor type, value or reading id says which.
        """
        self.assertRejected(b",39C," + TS.encode(), "empty sensor type")
        self.assertRejected(b"  ,39C", "empty sensor type")
        self.assertRejected(b"Temperature,", "empty value")
        self.assertRejected(b"Temperature, ," + TS.encode(), "empty value")
        self.assertRejected(b"Temperature,39C," + TS.encode() + b",", "empty reading id")
        self.assertRejected(b"Temperature,39C," + TS.encode() + b",  ", "empty reading id")

    def test_too_long_fields(self):
        """
        A sensor type over 40, a value over 80, a reading id over 64
        characters is refused naming the field and the limit.
        """
        self.assertRejected(
            b"t" * (MAX_SENSOR_TYPE + 1) + b",39C", "sensor type longer than 40 characters"
        )
        self.assertRejected(
            b"Temperature," + b"v" * (MAX_SENSOR_DATA + 1), "value longer than 80 characters"
        )
        self.assertRejected(
            b"Temperature,39C," + TS.encode() + b"," + b"r" * (MAX_READING_ID + 1),
            "reading id longer than 64 characters",
        )

    def test_control_characters(self):
        """
        A control character inside a field is refused naming the field.
        """
        for char in ["\x00", "\x01", "\t", "\x1b", "\x7f", "\x85", "\x9b"]:
            self.assertRejected(
                f"Tem{char}p,39C".encode(), "control character in sensor type"
            )
            self.assertRejected(f"Temp,3{char}9C".encode(), "control character in value")
            self.assertRejected(
                f"Temp,39C,{TS},r{char}1".encode(), "control character in reading id"
            )
            self.assertRejected(f"Temp,39C,{TS[:4]}{char}{TS[4:]}".encode(), "bad timestamp")

    def test_bad_timestamps(self):
        """
        Anything but an ISO-8601 date and time, including impossible dates
        and times, is ``bad timestamp``.
        """
        for timestamp in [
            "",
            "now",
            "2020-04-20",
            "2020-04-20 23:20",
            "23:20:18",
            "20-04-20 23:20:18",
            "2020-4-20 23:20:18",
            "2020-04-20  23:20:18",
            "2020-04-20_23:20:18",
            "2020-04-20 23:20:18.",
            "2020-04-20 23:20:18.1234567",
            "2020-04-20 23:20:18 UTC",
            "2020-04-20 23:20:18+25:00",
            "2020-13-01 00:00:00",
            "2020-00-10 00:00:00",
            "2020-04-31 00:00:00",
            "2021-02-29 00:00:00",
            "2020-04-20 24:00:00",
            "2020-04-20 23:60:00",
            "2020-04-20 23:20:60",
            "１９９９-01-01 00:00:00",
            "٢٠٢٠-04-20 23:20:18",
            "1587424818",
        ]:
            self.assertRejected(f"Temperature,39C,{timestamp}".encode(), "bad timestamp")


# Lines near the common form: pieces that make the quick match of
# parse_line succeed, and pieces that must send it to the field by field
# checks (spaces around a field, long fields, non-ASCII, control
# characters, odd timestamps).
_line_fields = st.one_of(
    st.sampled_from(
        ["Temperature", "39C", "1.798 atm", "15% RH", "x", "", " ", " x", "x ", "\t", "é",
         "\x00", "\x85", "\x7f", "a b", "-", "+1e999", "x" * 40, "x" * 41, "x" * 64,
         "x" * 65, "x" * 80, "x" * 81]
    ),
    st.builds(
        "{}-{}-{}{}{}:{}:{}{}{}".format,
        st.sampled_from(["2020", "1999", "20", "１９９９"]),
        st.sampled_from(["04", "13", "00", "4", "02"]),
        st.sampled_from(["20", "31", "29", "30"]),
        st.sampled_from([" ", "T", "  ", "_"]),
        st.sampled_from(["23", "24", "00"]),
        st.sampled_from(["20", "60"]),
        st.sampled_from(["18", "60"]),
        st.sampled_from(["", ".231325", ".1", ".1234567", "."]),
        st.sampled_from(["", "Z", "+01:00", "-0530", "+25:00", "+01", " UTC", "z"]),
    ),
    st.text(max_size=6),
)


def _outcome(line: bytes, parse):
    try:
        return parse(line)
    except BadLine as e:
        return str(e)


class ParseLinePathsTests(SynchronousTestCase):
    """
    parse_line takes a quick path for the common form; it must decide every
    line exactly as the field by field checks do.
    """

    @given(st.lists(_line_fields, min_size=1, max_size=5))
    def test_same_as_field_by_field(self, fields):
        line = ",".join(fields).encode("utf-8", "surrogatepass")
        slow = _outcome(line, lambda b: _parse_fields(b.decode("utf-8"), now))
        if isinstance(slow, str) and "UTF-8" in slow:
            return
        self.assertEqual(_outcome(line, lambda b: parse_line(b, now)), slow)

    @given(
        st.lists(
            st.tuples(
                st.lists(_line_fields, min_size=1, max_size=5), st.sampled_from(["\n", "\r\n"])
            ),
            min_size=1,
            max_size=6,
        )
    )
    def test_chunk_same_as_each_line(self, lines):
        """
        parse_plain_lines takes a chunk only when every line is plain, and
        then reads each as parse_line does.
        """
        chunk = "".join(",".join(fields) + end for fields, end in lines).encode(
            "utf-8", "surrogatepass"
        )
        each = [
            _outcome(line[:-1] if line.endswith(b"\r") else line, lambda b: parse_line(b, now))
            for line in chunk.split(b"\n")[:-1]
        ]
        readings = parse_plain_lines(chunk, now)
        if readings is None:
            plain = all(isinstance(r, Reading) for r in each) and all(
                _PLAIN_LINE.match(line.decode().rstrip("\r")) for line in chunk.split(b"\n")[:-1]
            )
            self.assertFalse(plain, "a chunk of plain lines was refused")
        else:
            self.assertEqual(readings, each)
            self.assertTrue(all(type(r) is Reading for r in readings))

    def test_chunk_of_plain_lines(self):
        """
        The seed's lines, and the simulator's with reading ids, are taken a
        chunk at a time; a chunk with one line that is not is left to
        parse_line.
        """
        seed = b"Temperature,39C,2026-11-28 10:00:00.123456\r\nPressure,1.798 atm\n"
        self.assertEqual(
            parse_plain_lines(seed + b"Humidity,15% RH,2026-11-28T10:00:00Z,r1\n", now),
            [
                Reading("Temperature", "39C", "2026-11-28 10:00:00.123456"),
                Reading("Pressure", "1.798 atm", now()),
                Reading("Humidity", "15% RH", "2026-11-28T10:00:00Z", "r1"),
            ],
        )
        for bad in [b"\n", b"Temperature\n", b" x,1\n", b"x,1,2026-13-01 00:00:00\n", b"\xff,1\n"]:
            self.assertIsNone(parse_plain_lines(seed + bad, now), bad)

    def test_quick_path_taken(self):
        """
        The seed's line is matched in one step (else this test would pass
        without the quick path being used at all).
        """
        self.assertIsNotNone(_PLAIN_LINE.match("Temperature,39C,2026-11-28 10:00:00.123456,r1"))
        self.assertIsNotNone(_PLAIN_LINE.match("Pressure,1.798 atm"))

    def test_ascii_digits_only(self):
        """
        A timestamp in another script's digits is not plain, whatever the
        datetime module makes of it: a plain line is then no longer than
        MAX_PLAIN_LINE bytes, which the sensor protocol relies on.
        """
        for stamp in ["１９９９-01-01 00:00:00", "𝟐𝟎𝟐𝟔-11-28T10:00:00", "2026-11-28 10:00:0٠"]:
            self.assertIsNone(_PLAIN_LINE.match(f"Temperature,39C,{stamp}"), stamp)
            self.assertIsNone(_TIMESTAMP.match(stamp), stamp)
        longest = "T" * 40 + "," + "d" * 80 + ",2026-11-28T10:00:00.123456+01:00," + "r" * 64
        self.assertIsNotNone(_PLAIN_LINE.match(longest))
        self.assertEqual(len((longest + "\r").encode()), MAX_PLAIN_LINE)


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
