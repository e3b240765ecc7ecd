"""
Tests for p2pstore.wire: every peer message survives encode/decode, and
decode refuses anything else with BadMessage (and nothing but BadMessage).
"""

from __future__ import annotations

import json

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.records import ENTRY_FIELDS, Record, entry_of
from p2pstore.wire import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    Ack,
    Auth,
    BadMessage,
    MAX_DESTINATION,
    MAX_INTEGER,
    MAX_REASON,
    MAX_RECORDS,
    MAX_WANTED,
    Exported,
    Have,
    Held,
    Hello,
    Links,
    Ping,
    Pong,
    Pruned,
    Records,
    Repair,
    Want,
    decode,
    encode,
)

ORIGIN = "0123456789abcdef0123456789abcdef"
EPOCH = "fedcba9876543210fedcba9876543210"
NONCE = bytes(range(NONCE_BYTES))
PROOF = bytes(range(32, 64))
CHECKSUM = "ab" * 32


def line(verb: str, payload) -> bytes:
    return verb.encode("ascii") + b" " + json.dumps(payload).encode("utf-8")


def row(entry_index=1, **fields) -> list:
    values = [entry_index, 0, "Temperature", "39C", "2020-04-20 23:20:18.231325", None, CHECKSUM]
    for name, value in fields.items():
        values[ENTRY_FIELDS.index(name)] = value
    return values


def entry(entry_index=1, **fields) -> tuple:
    """
    A RECORDS entry, as decode makes it.
    """
    return tuple(row(entry_index, **fields))


def records_line(rows, origin=ORIGIN, epoch=EPOCH) -> bytes:
    return line("RECORDS", {"origin": origin, "epoch": epoch, "records": rows})


node_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
# Any text at all: commas, quotes, backslashes, newlines, non-ASCII
# (hypothesis leaves out lone surrogates, which UTF-8 cannot carry).
any_text = st.text()


@st.composite
def records_messages(draw) -> Records:
    origin = draw(node_ids)
    epoch = draw(node_ids)
    count = draw(st.integers(min_value=1, max_value=5))
    first = draw(st.integers(min_value=1, max_value=MAX_INTEGER - count + 1))
    entries = [
        (
            first + offset,
            draw(st.integers(min_value=0, max_value=MAX_INTEGER)),
            draw(any_text),
            draw(any_text),
            draw(any_text),
            draw(st.none() | any_text),
            draw(any_text),
        )
        for offset in range(count)
    ]
    return Records(origin, epoch, entries)


messages = st.one_of(
    st.builds(Hello, st.integers(), node_ids, st.binary(min_size=NONCE_BYTES, max_size=NONCE_BYTES)),
    st.builds(Auth, st.binary(min_size=32, max_size=32)),
    st.builds(
        Have,
        st.dictionaries(node_ids, st.dictionaries(node_ids, st.integers(min_value=0), max_size=3), max_size=3),
    ),
    records_messages(),
    st.builds(Ack, node_ids, node_ids, st.integers(min_value=0)),
    st.just(Ping()),
    st.just(Pong()),
    st.builds(
        Want,
        node_ids,
        node_ids,
        st.lists(st.integers(min_value=0, max_value=MAX_INTEGER), min_size=1, max_size=MAX_WANTED).map(tuple),
    ),
    records_messages().map(lambda r: Repair(r.origin, r.epoch, r.entries)),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | node_ids,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text() | node_ids, children, max_size=4),
    max_leaves=20,
)


class RoundTripTests(SynchronousTestCase):
    """
    What encode writes, decode reads back unchanged.
    """

    def test_examples(self):
        """
        One of each message decodes to an equal message.
        """
        for message in [
            Hello(PROTOCOL_VERSION, ORIGIN, NONCE),
            Auth(PROOF),
            Have({ORIGIN: {EPOCH: 7, ORIGIN: 0}}),
            Have({}),
            Records(ORIGIN, EPOCH, [entry(3), entry(4, reading_id="r-4")]),
            Ack(ORIGIN, EPOCH, 12),
            Links(frozenset({ORIGIN, EPOCH})),
            Links(frozenset()),
            Ping(),
            Pong(),
            Want(ORIGIN, EPOCH, (3, 9)),
            Repair(ORIGIN, EPOCH, [entry(3), entry(9)]),
            Have({ORIGIN: {EPOCH: 7, ORIGIN: 9}}, {(ORIGIN, EPOCH): 5}),
            Have({ORIGIN: {EPOCH: 7}}, {(ORIGIN, EPOCH): 8}),
            Pruned(ORIGIN, EPOCH, 1, 40, "retention"),
            Exported("http://h:8086/write?db=s&p=***", {(ORIGIN, EPOCH): 7, (EPOCH, ORIGIN): 0}),
        ]:
            self.assertEqual(decode(encode(message)), message)

    def test_held(self):
        """
        HELD, which nodes hold a log up to where, comes back unchanged.
        """
        for message in [
            Held(ORIGIN, EPOCH, {ORIGIN: 3}),
            Held(ORIGIN, EPOCH, {ORIGIN: 0, EPOCH: MAX_INTEGER}),
        ]:
            self.assertEqual(decode(encode(message)), message)
            self.assertTrue(encode(message).startswith(b"HELD "))

    @given(node_ids, node_ids, st.dictionaries(node_ids, st.integers(min_value=0, max_value=MAX_INTEGER), min_size=1, max_size=5))
    def test_any_held(self, origin, epoch, holders):
        """
        Any HELD naming at least one node round-trips on one line.
        """
        message = Held(origin, epoch, holders)
        encoded = encode(message)
        self.assertNotIn(b"\n", encoded)
        self.assertEqual(decode(encoded), message)

    def test_links_refused(self):
        """
        LINKS must list node ids.
        """
        for payload in [{}, {"nodes": "x"}, {"nodes": ["x"]}, {"nodes": [1]}, {"nodes": {}}]:
            self.assertRaises(BadMessage, decode, line("LINKS", payload))

    @given(messages)
    def test_any_message(self, message):
        """
        Any message, including records whose text fields hold commas,
        quotes, newlines and non-ASCII characters, round-trips, and its line
        never contains the line delimiter.
        """
        encoded = encode(message)
        self.assertNotIn(b"\n", encoded)
        self.assertEqual(decode(encoded), message)

    @given(records_messages())
    def test_entries_of_records(self, message):
        """
        A stored record's fields as L{entry_of} lists them come back as the
        same entry, and build the same record.
        """
        records = [
            Record(message.origin, message.epoch, *fields) for fields in message.entries
        ]
        sent = Records(message.origin, message.epoch, [entry_of(r) for r in records])
        received = decode(encode(sent))
        self.assertEqual(received, message)
        self.assertEqual(
            [Record(received.origin, received.epoch, *fields) for fields in received.entries],
            records,
        )

    def test_awkward_record_text(self):
        """
        A record whose fields hold every character a naive encoding would
        trip over comes back byte for byte.
        """
        message = Records(
            ORIGIN,
            EPOCH,
            [
                entry(
                    sensor_type='a,"b"\n\r\\c',
                    sensor_data="\u2028\u00e9\U0001f600 \x00\x7f\x85",
                    timestamp="",
                    reading_id="\n",
                )
            ],
        )
        encoded = encode(message)
        self.assertNotIn(b"\n", encoded)
        self.assertEqual(decode(encoded), message)

    def test_not_a_message(self):
        """
        Encoding something that is not a peer message is a programming
        error, not a line on the wire.
        """
        self.assertRaises(TypeError, encode, object())


class RefusalTests(SynchronousTestCase):
    """
    decode refuses, with BadMessage, every line that is not a well-formed
    message.
    """

    def assertRefused(self, *lines: bytes):
        for bad in lines:
            with self.subTest(line=bad):
                self.assertRaises(BadMessage, decode, bad)

    def test_unknown_verb(self):
        """
        A verb that is not one of the protocol's, in any case, is refused.
        """
        self.assertRefused(b"HELO {}", b"ping {}", b"GET / HTTP/1.1", b"", b" {}", b"PING\t{}", b"\x16\x03\x01")

    def test_not_json(self):
        """
        A payload that is not JSON, or missing, is refused.
        """
        self.assertRefused(b"PING", b"PING ", b"PING {", b"PING {}}", b"PING {'a': 1}", b"HAVE {\"a\":}")

    def test_not_an_object(self):
        """
        A payload that is JSON but not an object is refused, for every verb.
        """
        for verb in ["HELLO", "AUTH", "HAVE", "RECORDS", "ACK", "PING", "PONG"]:
            self.assertRefused(*[line(verb, payload) for payload in ([], 1, "x", None, True, [{}])])

    def test_deeply_nested(self):
        """
        Brackets nested past the JSON parser's recursion limit are refused,
        not raised as RecursionError.
        """
        self.assertRefused(b"PING " + b"[" * 100_000, b"HAVE " + b'{"a":' * 100_000)

    def test_not_utf8(self):
        """
        A payload that is not strict UTF-8 is refused: invalid bytes, a
        byte-order mark, or UTF-16 that json.loads would otherwise guess.
        """
        self.assertRefused(
            b"PING {\xff}",
            records_line([row(sensor_data="x")]).replace(b'"x"', b'"\xc3\x28"'),
            b"PING \xef\xbb\xbf{}",
            b"PING " + "{}".encode("utf-16-le"),
            b"PING " + "{}".encode("utf-32"),
        )

    def test_hello_fields(self):
        """
        HELLO needs an integer version (not a bool), a node id and a nonce of
        exactly NONCE_BYTES in hex.
        """
        good = {"v": 1, "node": ORIGIN, "nonce": NONCE.hex()}
        self.assertEqual(decode(line("HELLO", good)), Hello(1, ORIGIN, NONCE))
        bad = [
            {"node": ORIGIN, "nonce": NONCE.hex()},
            {**good, "v": True},
            {**good, "v": "1"},
            {**good, "v": 1.0},
        ]
        bad += [{**good, "node": node} for node in self.bad_node_ids()]
        bad += [{**good, "nonce": nonce} for nonce in self.bad_hex(NONCE_BYTES)]
        self.assertRefused(*[line("HELLO", payload) for payload in bad])

    def test_auth_proof(self):
        """
        AUTH needs a proof of exactly 32 bytes in hex.
        """
        self.assertEqual(decode(line("AUTH", {"proof": PROOF.hex()})), Auth(PROOF))
        self.assertRefused(
            line("AUTH", {}), *[line("AUTH", {"proof": proof}) for proof in self.bad_hex(32)]
        )

    def bad_node_ids(self) -> list:
        return [
            None,
            7,
            ORIGIN.upper(),
            ORIGIN[:-1],
            ORIGIN + "0",
            "g" * 32,
            " " + ORIGIN[1:],
            ORIGIN[:-1] + "\n",
            [ORIGIN],
        ]

    def bad_hex(self, size: int) -> list:
        return [
            None,
            12,
            "",
            "00" * (size - 1),
            "00" * (size + 1),
            "0" * (2 * size - 1),
            "zz" * size,
            " " + "0" * (2 * size - 1),
            # bytes.fromhex skips whitespace: right length, too few bytes.
            " " * (2 * size),
            "  " + "00" * (size - 1),
            "\u00e9" * (2 * size),
        ]

    def bad_indexes(self) -> list:
        return [-1, True, False, 1.0, 1.5, "1", None, [1]]

    def test_have_ranges(self):
        """
        A log held from past 1 is [first, last] in HAVE; one held from 1
        may be sent either way and reads as a plain position; a first
        index past last + 1, below 1, or a range not of two is refused.
        """
        self.assertEqual(
            encode(Have({ORIGIN: {EPOCH: 7}}, {(ORIGIN, EPOCH): 5})),
            b'HAVE {"' + ORIGIN.encode() + b'":{"' + EPOCH.encode() + b'":[5,7]}}',
        )
        self.assertEqual(decode(line("HAVE", {ORIGIN: {EPOCH: [1, 7]}})), Have({ORIGIN: {EPOCH: 7}}))
        self.assertRefused(
            *[
                line("HAVE", {ORIGIN: {EPOCH: bad}})
                for bad in ([9, 7], [0, 7], [1], [1, 2, 3], [1, -1], ["1", 2])
            ]
        )

    def test_pruned_fields(self):
        """
        PRUNED needs a range from 1 on and a reason of at most MAX_REASON
        characters.
        """
        good = {"origin": ORIGIN, "epoch": EPOCH, "first": 1, "last": 4, "reason": "retention"}
        self.assertEqual(decode(line("PRUNED", good)), Pruned(ORIGIN, EPOCH, 1, 4, "retention"))
        self.assertRefused(
            *[
                line("PRUNED", {**good, **change})
                for change in (
                    {"first": 0}, {"first": 5}, {"last": None}, {"reason": None},
                    {"reason": "x" * (MAX_REASON + 1)}, {"origin": "nope"},
                )
            ]
        )

    def test_exported_fields(self):
        """
        EXPORTED needs a destination of at most MAX_DESTINATION characters
        and logs of node ids to non-negative indexes.
        """
        good = {"destination": "http://h/write", "logs": {ORIGIN: {EPOCH: 3}}}
        self.assertEqual(
            decode(line("EXPORTED", good)), Exported("http://h/write", {(ORIGIN, EPOCH): 3})
        )
        self.assertRefused(
            *[
                line("EXPORTED", {**good, **change})
                for change in (
                    {"destination": ""}, {"destination": None},
                    {"destination": "x" * (MAX_DESTINATION + 1)}, {"logs": []},
                    {"logs": {"nope": {EPOCH: 3}}}, {"logs": {ORIGIN: {EPOCH: -1}}},
                    {"logs": {ORIGIN: [3]}},
                )
            ]
        )

    def test_have_fields(self):
        """
        HAVE maps node ids to objects mapping node ids to non-negative
        integers.
        """
        self.assertEqual(decode(line("HAVE", {ORIGIN: {EPOCH: 0}})), Have({ORIGIN: {EPOCH: 0}}))
        bad = [{node: {EPOCH: 1}} for node in self.bad_node_ids() if isinstance(node, str)]
        bad += [{ORIGIN: {node: 1}} for node in self.bad_node_ids() if isinstance(node, str)]
        bad += [{ORIGIN: n} for n in [1, [], None, "x"]]
        bad += [{ORIGIN: {EPOCH: n}} for n in self.bad_indexes()]
        self.assertRefused(*[line("HAVE", payload) for payload in bad])

    def test_ack_fields(self):
        """
        ACK needs node ids for origin and epoch and a non-negative integer
        position.
        """
        good = {"origin": ORIGIN, "epoch": EPOCH, "have": 0}
        self.assertEqual(decode(line("ACK", good)), Ack(ORIGIN, EPOCH, 0))
        bad = [{"origin": ORIGIN, "epoch": EPOCH}]
        bad += [{**good, "origin": node} for node in self.bad_node_ids()]
        bad += [{**good, "epoch": node} for node in self.bad_node_ids()]
        bad += [{**good, "have": n} for n in self.bad_indexes()]
        self.assertRefused(*[line("ACK", payload) for payload in bad])

    def test_records_ids(self):
        """
        RECORDS needs node ids for origin and epoch.
        """
        self.assertRefused(
            *[records_line([row()], origin=node) for node in self.bad_node_ids()],
            *[records_line([row()], epoch=node) for node in self.bad_node_ids()],
        )

    def test_records_empty(self):
        """
        RECORDS with no records, or no list of them, is refused.
        """
        self.assertRefused(
            records_line([]),
            records_line(None),
            records_line({}),
            records_line(row()),
            line("RECORDS", {"origin": ORIGIN, "epoch": EPOCH}),
        )

    def test_records_at_most_max(self):
        """
        A RECORDS line of MAX_RECORDS records is taken, one more is refused
        with the count in the reason.
        """
        full = [row(i) for i in range(1, MAX_RECORDS + 1)]
        self.assertEqual(len(decode(records_line(full)).entries), MAX_RECORDS)
        with self.assertRaises(BadMessage) as caught:
            decode(records_line(full + [row(MAX_RECORDS + 1)]))
        self.assertIn(f"{MAX_RECORDS + 1} records, more than {MAX_RECORDS}", str(caught.exception))

    def test_records_arity(self):
        """
        A record that is not a list of exactly seven fields is refused.
        """
        self.assertRefused(
            *[records_line([bad]) for bad in [row()[:6], row() + ["x"], row() + [None], [], {}, "1", 1, None]],
            records_line([row(1), row(2) + ["x"]]),
        )

    def test_records_indexes(self):
        """
        Entry indexes must be integers from 1 and sensor indexes integers
        from 0; bools and floats are refused even when they equal an integer,
        because they would sign differently.
        """
        self.assertEqual(decode(records_line([row(sensor_index=0)])).entries, [entry()])
        self.assertRefused(
            records_line([row(entry_index=0)]),
            *[records_line([row(entry_index=n)]) for n in self.bad_indexes()],
            *[records_line([row(sensor_index=n)]) for n in self.bad_indexes()],
        )

    def test_records_field_types(self):
        """
        The text fields must be strings; reading_id may also be null.
        """
        self.assertEqual(decode(records_line([row(reading_id="r")])).entries, [entry(reading_id="r")])
        bad = []
        for name in ["sensor_type", "sensor_data", "timestamp", "data_checksum"]:
            bad += [row(**{name: value}) for value in [None, 1, 1.5, True, [], {}]]
        bad += [row(reading_id=value) for value in [1, 1.5, False, [], {}]]
        self.assertRefused(*[records_line([bad_row]) for bad_row in bad])

    def test_records_consecutive(self):
        """
        The records of one batch have consecutive entry indexes, ascending.
        """
        self.assertEqual(
            [e[0] for e in decode(records_line([row(5), row(6), row(7)])).entries], [5, 6, 7]
        )
        self.assertRefused(
            records_line([row(1), row(3)]),
            records_line([row(2), row(1)]),
            records_line([row(1), row(1)]),
            records_line([row(1), row(2), row(2)]),
        )

    def test_want_fields(self):
        """
        WANT names a log and 1 to MAX_WANTED indexes.
        """
        self.assertEqual(
            decode(line("WANT", {"origin": ORIGIN, "epoch": EPOCH, "indexes": [4, 2]})),
            Want(ORIGIN, EPOCH, (4, 2)),
        )
        self.assertRefused(
            line("WANT", {"origin": ORIGIN, "epoch": EPOCH, "indexes": []}),
            line("WANT", {"origin": ORIGIN, "epoch": EPOCH, "indexes": list(range(MAX_WANTED + 1))}),
            line("WANT", {"origin": ORIGIN, "epoch": EPOCH, "indexes": [-1]}),
            line("WANT", {"origin": ORIGIN, "epoch": EPOCH, "indexes": "1"}),
            line("WANT", {"origin": "x", "epoch": EPOCH, "indexes": [1]}),
        )

    def test_held_fields(self):
        """
        HELD names a log by node ids and at least one node id, each with a
        non-negative integer index: no nodes, a bad node id or a negative
        (or non-integer) index is refused.
        """
        good = {"origin": ORIGIN, "epoch": EPOCH, "nodes": {EPOCH: 4}}
        self.assertEqual(decode(line("HELD", good)), Held(ORIGIN, EPOCH, {EPOCH: 4}))
        bad = [
            {"origin": ORIGIN, "epoch": EPOCH},
            {**good, "nodes": {}},
            {**good, "nodes": []},
            {**good, "nodes": [EPOCH, 4]},
            {**good, "nodes": None},
        ]
        bad += [{**good, "nodes": {node: 4}} for node in self.bad_node_ids() if isinstance(node, str)]
        bad += [{**good, "nodes": {EPOCH: 4, node: 4}} for node in self.bad_node_ids() if isinstance(node, str)]
        bad += [{**good, "nodes": {EPOCH: n}} for n in self.bad_indexes()]
        bad += [{**good, "origin": node} for node in self.bad_node_ids()]
        bad += [{**good, "epoch": node} for node in self.bad_node_ids()]
        self.assertRefused(*[line("HELD", payload) for payload in bad])

    def test_repair_indexes(self):
        """
        REPAIR's records need not be consecutive, but their indexes rise.
        """
        repair = decode(line("REPAIR", {"origin": ORIGIN, "epoch": EPOCH, "records": [row(2), row(7)]}))
        self.assertEqual([e[0] for e in repair.entries], [2, 7])
        self.assertRefused(
            line("REPAIR", {"origin": ORIGIN, "epoch": EPOCH, "records": [row(7), row(2)]}),
            line("REPAIR", {"origin": ORIGIN, "epoch": EPOCH, "records": [row(2), row(2)]}),
            line("REPAIR", {"origin": ORIGIN, "epoch": EPOCH, "records": []}),
            line("REPAIR", {"origin": ORIGIN, "epoch": EPOCH, "records": [row(2, sensor_index=-1)]}),
        )

    def test_records_indexes_too_large(self):
        """
        An index beyond SQLite's integers is refused: it could not be stored.
        """
        last = decode(records_line([row(MAX_INTEGER, sensor_index=MAX_INTEGER)]))
        self.assertEqual(last.entries, [entry(MAX_INTEGER, sensor_index=MAX_INTEGER)])
        self.assertRefused(
            records_line([row(MAX_INTEGER + 1)]),
            records_line([row(MAX_INTEGER), row(MAX_INTEGER + 1)]),
            records_line([row(sensor_index=MAX_INTEGER + 1)]),
        )

    def test_records_one_bad_row(self):
        """
        One bad record refuses the whole batch.
        """
        self.assertRefused(records_line([row(1), row(2), row(3, sensor_type=None)]))


class NeverRaisesOtherwiseTests(SynchronousTestCase):
    """
    Whatever a peer sends, decode returns a message or raises BadMessage:
    never another exception that would escape the protocol.
    """

    def assertDecodesOrRefuses(self, data: bytes):
        try:
            decode(data)
        except BadMessage:
            pass

    @given(st.binary(max_size=200))
    def test_arbitrary_bytes(self, data):
        """
        Arbitrary bytes.
        """
        self.assertDecodesOrRefuses(data)

    @given(st.sampled_from([b"HELLO", b"AUTH", b"HAVE", b"RECORDS", b"ACK", b"PING", b"PONG"]), st.binary(max_size=200))
    def test_known_verb_arbitrary_bytes(self, verb, data):
        """
        A known verb followed by arbitrary bytes.
        """
        self.assertDecodesOrRefuses(verb + b" " + data)

    @given(
        st.sampled_from(["HELLO", "AUTH", "HAVE", "RECORDS", "ACK", "PING", "PONG"]),
        st.dictionaries(
            st.sampled_from(["v", "node", "nonce", "proof", "origin", "epoch", "records", "have"]) | node_ids,
            json_values,
        ),
    )
    def test_arbitrary_json_objects(self, verb, payload):
        """
        A known verb with an arbitrary JSON object that uses the protocol's
        own keys, so that the shape checks themselves are exercised.
        """
        self.assertDecodesOrRefuses(line(verb, payload))

    @given(
        st.dictionaries(
            st.sampled_from(["origin", "epoch", "nodes"]) | node_ids,
            json_values | st.dictionaries(node_ids | st.text(), json_values, max_size=4),
        )
    )
    def test_held_arbitrary_json(self, payload):
        """
        HELD with an arbitrary JSON object that uses its own keys (and
        objects of node ids) decodes or is refused, and what decodes names
        only node ids with non-negative integer indexes.
        """
        try:
            message = decode(line("HELD", payload))
        except BadMessage:
            return
        self.assertTrue(message.holders)
        for node, last in message.holders.items():
            self.assertEqual((len(node), type(last)), (32, int))
            self.assertGreaterEqual(last, 0)

    @given(
        st.lists(
            st.tuples(
                st.integers(min_value=-1, max_value=MAX_INTEGER + 1) | json_values,
                st.integers(min_value=-1, max_value=MAX_INTEGER + 1) | json_values,
                any_text | json_values,
                any_text | json_values,
                any_text | json_values,
                st.none() | any_text | json_values,
                any_text | json_values,
            ).map(list),
            min_size=1,
            max_size=3,
        )
    )
    def test_records_as_record_checks(self, rows):
        """
        RECORDS rows whose fields are each either what a record holds or
        any JSON value are accepted exactly when every row makes a valid
        L{Record}, the indexes run on by one, and SQLite can store them.
        """
        def valid(row) -> bool:
            try:
                Record(ORIGIN, EPOCH, *row)
            except (TypeError, ValueError):
                return False
            return row[0] <= MAX_INTEGER and row[1] <= MAX_INTEGER

        acceptable = all(valid(r) for r in rows) and [r[0] for r in rows] == list(
            range(rows[0][0], rows[0][0] + len(rows))
        )
        try:
            message = decode(records_line(rows))
        except BadMessage:
            self.assertFalse(acceptable)
        else:
            self.assertTrue(acceptable)
            self.assertEqual(message.entries, [tuple(r) for r in rows])

    @given(st.lists(st.lists(json_values, min_size=7, max_size=7), min_size=1, max_size=3))
    def test_arbitrary_records(self, rows):
        """
        RECORDS with seven-field rows of arbitrary JSON values. Whatever is
        accepted makes valid records: decode checks what L{Record} does.
        """
        try:
            message = decode(records_line(rows))
        except BadMessage:
            return
        for fields in message.entries:
            Record(message.origin, message.epoch, *fields)
