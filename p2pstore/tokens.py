"""
The token files of L{p2pstore.access}: a sensor tokens file (one ``name
token`` a line) and an HTTP token file (one token), parsed with errors that
name the file and the line, and read again on a reload, and the
constant-time comparison of a token given.

Pure: no Twisted besides the logger.
"""

from __future__ import annotations

import hmac
import re
import stat
from pathlib import Path
from typing import Callable, Optional

from attrs import define, field
from twisted.logger import Logger

# A sensor's name: stored with its readings and shown in status.
SENSOR_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
# A token: printable ASCII without spaces, long enough not to be guessed.
TOKEN = re.compile(r"\A[\x21-\x7e]+\Z")
MIN_TOKEN = 16
# How to make one, for the error messages.
MAKE_TOKEN = "python3 -c 'import secrets; print(secrets.token_hex(16))'"

class AccessFileError(ValueError):
    """
    A token file cannot be used; the message names the file (and the line).
    """


def _read(path: Path, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AccessFileError(f"{path}: no such file (the {what})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AccessFileError(f"{path}: cannot read the {what} ({e})") from None


def _check_token(token: str, where: str) -> None:
    if not TOKEN.match(token):
        raise AccessFileError(f"{where}: a token is printable ASCII without spaces")
    if len(token) < MIN_TOKEN:
        raise AccessFileError(
            f"{where}: a token must have at least {MIN_TOKEN} characters (make one with {MAKE_TOKEN})"
        )


def parse_sensor_tokens(text: str, path: Path) -> dict[str, bytes]:
    """
    The tokens of a sensor tokens file, by name: one ``name token`` a line;
    blank lines and lines starting with ``#`` are skipped.

    @raise AccessFileError: a line is wrong; the message names the file and
        the line number.
    """
    tokens: dict[str, bytes] = {}
    seen: dict[bytes, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path} line {number}"
        fields = line.split()
        if len(fields) != 2:
            raise AccessFileError(f"{where}: expected 'name token', found {len(fields)} fields")
        name, token = fields
        if not SENSOR_NAME.match(name):
            raise AccessFileError(
                f"{where}: bad name {name!r} (1-64 letters, digits, '.', '_' or '-', "
                f"starting with a letter or digit)"
            )
        _check_token(token, where)
        if name in tokens:
            raise AccessFileError(f"{where}: {name!r} is named twice")
        if token.encode("ascii") in seen:
            other = seen[token.encode("ascii")]
            raise AccessFileError(f"{where}: {name!r} has the same token as {other!r}")
        tokens[name] = token.encode("ascii")
        seen[tokens[name]] = name
    return tokens


def parse_http_token(text: str, path: Path) -> bytes:
    """
    The token of an HTTP token file: its one line (``#`` comments and blank
    lines aside).

    @raise AccessFileError: not exactly one token.
    """
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), 1)
        if line.strip() and not line.strip().startswith("#")
    ]
    if len(lines) != 1:
        raise AccessFileError(f"{path}: expected one line holding the token, found {len(lines)}")
    number, token = lines[0]
    _check_token(token, f"{path} line {number}")
    return token.encode("ascii")


def loosely_readable(path: Path) -> bool:
    """
    Can users other than the owner read ``path``?
    """
    try:
        return bool(Path(path).stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False


@define
class ReloadableFile:
    """
    What a token file says, read at start and again by L{reload}: a reload
    that fails keeps what was read before, and logs why.

    @ivar value: what L{parse} made of the file.
    """

    path: Path
    parse: Callable[[str, Path], object]
    what: str
    value: object = field(default=None, repr=False)
    log = Logger()

    def __attrs_post_init__(self) -> None:
        if self.value is None:
            self.value = self.parse(_read(self.path, self.what), self.path)

    def reload(self) -> bool:
        """
        Read the file again.

        @return: whether it was read; if not, the old value stays.
        """
        try:
            self.value = self.parse(_read(self.path, self.what), self.path)
        except AccessFileError as e:
            self.log.error(
                "not reloaded: {problem}; the {what} read before stay in force: fix the file "
                "and send SIGHUP again",
                problem=str(e), what=self.what,
            )
            return False
        return True

    def reload_logged(self) -> None:
        """
        L{reload}, saying so in the log when it has read the file.
        """
        if self.reload():
            self.log.info("reloaded the {what} of {path}", what=self.what, path=str(self.path))


def load_sensor_tokens(path: Path) -> ReloadableFile:
    """
    @raise AccessFileError: the file cannot be read or has a bad line.
    """
    return ReloadableFile(Path(path), parse_sensor_tokens, "sensor tokens")


def load_http_token(path: Path) -> ReloadableFile:
    """
    @raise AccessFileError: the file cannot be read or holds no good token.
    """
    return ReloadableFile(Path(path), parse_http_token, "HTTP token")


def name_of(tokens: dict[str, bytes], given: bytes) -> Optional[str]:
    """
    The name whose token ``given`` is, or None: every token is compared, in
    constant time, so the time taken tells nothing of which nearly matched.
    """
    found = None
    for name, token in tokens.items():
        if hmac.compare_digest(token, given):
            found = name
    return found
