"""
Tests for p2pstore.tokens: the sensor tokens file and the HTTP token file,
their errors naming the file and the line, a reload that keeps the old
tokens when the new file is bad, and the comparison of a given token.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.tokens import (
    AccessFileError,
    load_http_token,
    load_sensor_tokens,
    loosely_readable,
    name_of,
    parse_http_token,
    parse_sensor_tokens,
)

BOILER = "b" * 32
ATTIC = "a1" * 10
PATH = Path("/etc/p2pstore/sensors")


class SensorTokensTests(SynchronousTestCase):
    """
    A sensor tokens file is one ``name token`` a line.
    """

    def test_parse(self) -> None:
        """
        Names and tokens are read; blank lines, comments and surrounding
        spaces are skipped.
        """
        text = f"# the sensors\n\nboiler {BOILER}\n   attic\t{ATTIC}  \n  # more later\n"
        self.assertEqual(
            parse_sensor_tokens(text, PATH),
            {"boiler": BOILER.encode(), "attic": ATTIC.encode()},
        )

    def test_empty(self) -> None:
        """
        A file of comments knows no sensors.
        """
        self.assertEqual(parse_sensor_tokens("# none yet\n", PATH), {})

    def assertBadLine(self, text: str, line: int, *words: str) -> None:
        error = self.assertRaises(AccessFileError, parse_sensor_tokens, text, PATH)
        self.assertIn(f"{PATH} line {line}:", str(error))
        for word in words:
            self.assertIn(word, str(error))
        # The message never repeats a token of the file.
        for token in (BOILER, ATTIC, "short"):
            self.assertNotIn(token, str(error))

    def test_bad_lines(self) -> None:
        """
        Each bad line is an error naming the file, the line number and what
        is wrong with it.
        """
        self.assertBadLine(f"boiler {BOILER}\nattic\n", 2, "expected 'name token'", "1 fields")
        self.assertBadLine(f"\n\nboiler {BOILER} extra\n", 3, "3 fields")
        self.assertBadLine("boiler short\n", 1, "at least 16 characters", "secrets.token_hex")
        self.assertBadLine(f"bo/iler {BOILER}\n", 1, "bad name 'bo/iler'")
        self.assertBadLine(f"-boiler {BOILER}\n", 1, "bad name")
        self.assertBadLine(f"boiler {BOILER}\nboiler {ATTIC}\n", 2, "'boiler' is named twice")
        self.assertBadLine(f"boiler {BOILER}\nattic {BOILER}\n", 2, "'attic' has the same token as 'boiler'")
        self.assertBadLine(f"boiler {BOILER}é\n", 1, "printable ASCII")

    def test_load_missing(self) -> None:
        """
        A file that is not there is an error naming it.
        """
        missing = Path(self.mktemp())
        error = self.assertRaises(AccessFileError, load_sensor_tokens, missing)
        self.assertIn(f"{missing}: no such file", str(error))


class ReloadTests(SynchronousTestCase):
    """
    A reload reads the file again; a bad file keeps the tokens read before.
    """

    def setUp(self) -> None:
        self.path = Path(self.mktemp())
        self.path.write_text(f"boiler {BOILER}\n")
        self.tokens = load_sensor_tokens(self.path)

    def test_reload(self) -> None:
        """
        A sensor added to the file is known after the reload.
        """
        self.path.write_text(f"boiler {BOILER}\nattic {ATTIC}\n")
        self.assertTrue(self.tokens.reload())
        self.assertEqual(sorted(self.tokens.value), ["attic", "boiler"])

    def test_bad_reload(self) -> None:
        """
        A file made bad, or removed, is logged with what is wrong, and the
        tokens before stay.
        """
        for change in (lambda: self.path.write_text("boiler\n"), self.path.unlink):
            change()
            with capturedLogs() as events:
                self.assertFalse(self.tokens.reload())
            self.assertEqual(self.tokens.value, {"boiler": BOILER.encode()})
            messages = [formatEvent(event) for event in events]
            self.assertEqual(len(messages), 1, messages)
            self.assertIn(str(self.path), messages[0])
            self.assertIn("stay in force", messages[0])

    def test_reload_logged(self) -> None:
        """
        reload_logged() says that it read the file.
        """
        with capturedLogs() as events:
            self.tokens.reload_logged()
        self.assertTrue(any(f"reloaded the sensor tokens of {self.path}" in formatEvent(e) for e in events))

    def test_loosely_readable(self) -> None:
        """
        A file others may read is told apart from one only its owner may.
        """
        os.chmod(self.path, 0o600)
        self.assertFalse(loosely_readable(self.path))
        os.chmod(self.path, 0o644)
        self.assertTrue(loosely_readable(self.path))


class HttpTokenTests(SynchronousTestCase):
    """
    An HTTP token file holds one token.
    """

    def test_parse(self) -> None:
        """
        The one line, stripped, is the token; comments may stand around it.
        """
        self.assertEqual(parse_http_token(f"# the readers' token\n {BOILER} \n\n", PATH), BOILER.encode())

    def test_bad(self) -> None:
        """
        No token, two tokens or a short one are errors naming the file.
        """
        for text, words in (
            ("", "found 0"),
            (f"{BOILER}\n{ATTIC}\n", "found 2"),
            ("short\n", "at least 16"),
            (f"{BOILER} {ATTIC}\n", "without spaces"),
        ):
            error = self.assertRaises(AccessFileError, parse_http_token, text, PATH)
            self.assertIn(str(PATH), str(error))
            self.assertIn(words, str(error))

    def test_load(self) -> None:
        """
        load_http_token() reads the file.
        """
        path = Path(self.mktemp())
        path.write_text(BOILER + "\n")
        self.assertEqual(load_http_token(path).value, BOILER.encode())


class NameOfTests(SynchronousTestCase):
    """
    name_of() finds the name of a token given, and only of a whole token.
    """

    def test_name_of(self) -> None:
        tokens = {"boiler": BOILER.encode(), "attic": ATTIC.encode()}
        self.assertEqual(name_of(tokens, BOILER.encode()), "boiler")
        self.assertEqual(name_of(tokens, ATTIC.encode()), "attic")
        for wrong in (b"", BOILER[:-1].encode(), BOILER.encode() + b"x", BOILER.upper().encode()):
            self.assertIsNone(name_of(tokens, wrong))
        self.assertIsNone(name_of({}, BOILER.encode()))
