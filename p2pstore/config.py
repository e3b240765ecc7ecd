"""
The config file of ``twistd p2pstore --config FILE``: a TOML file of
settings, read into the plain mapping L{p2pstore.settings.check_settings}
checks.

The file's keys are the command line's option names without the dashes in
front (``sensor-port = 12345``), all at the top level. Each takes the TOML
types natural to it (L{KINDS}); relative paths are relative to the file's
directory, since a service runs from ``/``. Every error names the file, and
the key when there is one.
"""

from __future__ import annotations

import datetime
import difflib
import tomllib
from pathlib import Path
from typing import Mapping, Optional

from .settings import ConfigError

# What each setting takes in the file. The values are handed on as the
# command line gives them: a string (a list for export).
PORT = "a port number (an integer) or an endpoint description (a string)"
NUMBER = "an integer"
TEXT = "a string"
PATH = "a path: a string"
DURATION = 'a duration with its unit, as a string ("10s", "5m")'
SIZE = 'a size with its unit, as a string ("500MB", "2GiB")'
LIST = "a string or an array of strings"
YES_NO = 'true, false, or a string ("accept" or "refuse")'

KINDS = {
    "data-dir": PATH,
    "sensor-port": PORT,
    "peer-port": PORT,
    "status-port": PORT,
    "peers": LIST,
    "secret-file": PATH,
    "max-line": NUMBER,
    "sync": TEXT,
    "unterminated-readings": YES_NO,
    "sensor-tokens": PATH,
    "sensor-allow": LIST,
    "http-token-file": PATH,
    "tls-cert": PATH,
    "tls-key": PATH,
    "peer-ca": PATH,
    "peer-tls-fingerprints": LIST,
    "scrub-rate": NUMBER,
    "max-disk": SIZE,
    "retain": DURATION,
    "min-copies": NUMBER,
    "on-full": TEXT,
    "ack-copies": NUMBER,
    "ack-timeout": DURATION,
    "commit-interval": DURATION,
    "export": LIST,
    "export-token-file": PATH,
    "export-takeover": DURATION,
}

# The settings that name a file or a directory: relative to the file's
# directory when given in it.
PATHS = frozenset(key for key, kind in KINDS.items() if kind == PATH)


class ConfigFileError(ConfigError):
    """
    The config file cannot be used: it cannot be read, it is not TOML, or
    one of its keys is unknown or has a bad value.

    ``str()`` names the file, then the key if the error is about one
    (``node.toml: sensor-port: port 99999 is out of range (1-65535)``).
    """

    def __init__(self, path: Path, setting: Optional[str], problem: str):
        super().__init__(setting, problem)
        self.path = path

    def __str__(self) -> str:
        if self.setting is None:
            return f"{self.path}: {self.problem}"
        return f"{self.path}: {self.setting}: {self.problem}"


def read_config(path: Path) -> dict[str, object]:
    """
    The settings of the config file at ``path``, keyed and valued as the
    command line gives them (``{"sensor-port": "12345", "export": [...]}``),
    with relative paths made relative to the file's directory.

    @raise ConfigFileError: the file cannot be read, is not TOML, or holds
        an unknown key or a value of the wrong type.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise ConfigFileError(path, None, f"cannot read it: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigFileError(path, None, f"is not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(path, None, f"is not valid TOML: {e}") from None
    return settings_of(table, path)


def settings_of(table: Mapping[str, object], path: Path) -> dict[str, object]:
    """
    The settings of a parsed config file ``table``, read from ``path``.
    """
    here = path.absolute().parent
    settings = {}
    for key, value in table.items():
        if key not in KINDS:
            raise ConfigFileError(path, None, _unknown(key, value))
        value = _value(path, key, value)
        if key in PATHS and value:
            value = str(here / value)
        settings[key] = value
    return settings


def _value(path: Path, key: str, value: object) -> object:
    """
    ``value`` as the command line would give ``key``'s, or a
    L{ConfigFileError} saying what type it should have been.
    """
    kind = KINDS[key]
    if isinstance(value, str):
        return [value] if key == "export" else value
    if isinstance(value, bool):
        if kind == YES_NO:
            return "accept" if value else "refuse"
    elif isinstance(value, int):
        if kind in (PORT, NUMBER):
            return str(value)
    elif isinstance(value, list) and kind == LIST:
        for item in value:
            if not isinstance(item, str):
                raise ConfigFileError(
                    path, key, f"expected an array of strings, but it holds {_type(item)} ({item!r})"
                )
        return list(value) if key == "export" else ",".join(value)
    raise ConfigFileError(path, key, f"expected {kind}, not {_type(value)}")


def _unknown(key: str, value: object) -> str:
    """
    What is wrong with an unknown ``key``, and what may have been meant.
    """
    if key == "config":
        return "'config' cannot be set in a config file: give --config on the command line"
    if isinstance(value, dict):
        return (
            f"unknown table [{key}]: the settings are keys at the top of the file, before any "
            "[table] line (sensor-port = 12345)"
        )
    # sensor_port for sensor-port, or a typo.
    close = difflib.get_close_matches(key.replace("_", "-").lower(), KINDS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see p2pstore.example.toml)"
    return f"unknown key {key!r}{hint}"


def _type(value: object) -> str:
    """
    The TOML type of ``value``, as an error names it.
    """
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date or time"
    return type(value).__name__

