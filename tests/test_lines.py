"""
Tests for the sensor-line grammar (to become p2pstore.lines; for now in
p2pstore.records): parse_line, parse_plain_lines and the quick match of the
common form.
"""

from __future__ import annotations

from hypothesis import given, strategies as st
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

from .test_records import TS

NOW = "2024-01-02 03:04:05.000006"


def now() -> str:
    return NOW


def no_clock() -> str:
    raise AssertionError("the node's clock was read for a line with a timestamp")


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
