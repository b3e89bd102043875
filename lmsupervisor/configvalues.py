"""The typed readers of configuration values, and the value checks the supervisor shares
with LM Studio's own files (design §4).

Each reader takes the TOML path of the value (``models[1].ttl``) and raises
:class:`ConfigError` naming it, what was expected and what was found
(``models[1].ttl: expected seconds as a number, got "10m"``, style rule 7). The public
checks (:func:`finite`, :func:`server_address`, :func:`server_port`) are also applied to
``http-server-config.json`` and to native-messaging requests; :mod:`lmsupervisor.config`
re-exports them, its import path for them.
"""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lmsupervisor.errors import ConfigError

MAX_SECONDS = 86_400.0  # upper bound of every duration: a day (a larger value is a typo, not a wish)
SHOWN_DIGITS = 20  # an integer in a message is shown whole up to this many digits, else by its length


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) >= 10**SHOWN_DIGITS:
        return f"an integer of {_digits(value)} digits"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)


def _digits(value: int) -> str:
    """How many decimal digits ``value`` has, as text; ``"more than N"`` past Python's
    int-to-text limit (``sys.get_int_max_str_digits()``, 4300), where ``str()`` raises
    (a TOML hex, octal or binary literal is read past it)."""
    try:
        return str(len(str(abs(value))))
    except ValueError:
        return f"more than {sys.get_int_max_str_digits()}"


def finite(value: object) -> bool:
    """Whether ``value`` is a finite number: any ``int`` (TOML and JSON integers have no
    bound: ``10**400`` is finite, and is never turned into a float, which it would
    overflow) or a ``float`` that is neither NaN nor an infinity. A bool is not a number."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def server_address(value: object) -> str | None:
    """``value`` as an address LM Studio's server can bind and lmsupervisor can reach, or
    None when it is not one.

    Accepted, as `lms server start --bind` and LM Studio's ``networkInterface`` take them
    (facts §2, §3): an IPv4 address (``127.0.0.1``, ``0.0.0.0``), an IPv6 address with or
    without brackets (``::1``, ``[::1]``, returned without them) and ``localhost`` (any
    case). Anything else is None: a ``host:port`` mistake (``localhost:1234``), a hostname,
    an impossible address (``999.1.1.1``), surrounding whitespace (``"0.0.0.0 "``: LM Studio
    does not trim it either), an empty string, or a value that is not a string.
    """
    if not isinstance(value, str):
        return None
    if value.lower() == "localhost":
        return "localhost"
    text = value[1:-1] if value.startswith("[") and value.endswith("]") else value
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def server_port(value: object) -> int | None:
    """``value`` as a TCP port LM Studio's server can listen on (an integer from 1 to
    65535, as ``http-server-config.json``'s ``port`` and `lms server start --port` take it,
    facts §2, §3), or None when it is not one: out of range, a boolean (JSON ``true`` is not
    a port), a float, a string, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 1 <= value <= 65535 else None


def fail(key: str, expected: str, value: Any) -> ConfigError:
    """The :class:`ConfigError` for ``key``: ``<key>: expected <expected>, got <value>``."""
    return ConfigError(f"{key}: expected {expected}, got {_describe(value)}", key=key)


def number(
    key: str,
    value: Any,
    *,
    minimum: float = 0.0,
    maximum: float = MAX_SECONDS,
    positive: bool = False,
    what: str = "seconds as a number",
) -> float:
    """A finite number in ``[minimum, maximum]`` (``> 0`` with ``positive``) as a float;
    NaN and infinity are refused, since they silently turn timers off or into busy loops.
    An integer is compared as an integer, so one too large for a float (``10**400``) is
    out of range like any other, never an OverflowError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(key, what, value)
    if not finite(value):
        raise fail(key, f"{what} (finite)", value)
    if value < minimum or (positive and value <= 0):
        raise fail(key, f"{what} {'> 0' if positive else f'>= {minimum:g}'}", value)
    if value > maximum:
        raise fail(key, f"{what} <= {maximum:g}", value)
    return float(value)


def integer(key: str, value: Any, lo: int, hi: int | None = None) -> int:
    """An integer from ``lo`` to ``hi`` (no upper bound when None); a bool is not one."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(key, "an integer", value)
    if value < lo or (hi is not None and value > hi):
        raise fail(key, f"an integer from {lo} to {hi}" if hi else f"an integer >= {lo}", value)
    return value


def string(key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
    """A string without NUL bytes, one of ``choices`` when they are given."""
    if not isinstance(value, str):
        raise fail(key, "a string", value)
    if "\x00" in value:
        raise ConfigError(f"{key}: expected text without NUL bytes, got {value!r}", key=key)
    if choices is not None and value not in choices:
        raise fail(key, "one of " + ", ".join(f'"{c}"' for c in choices), value)
    return value


def boolean(key: str, value: Any) -> bool:
    """``true`` or ``false``, nothing else (not 0, 1 or ``"yes"``)."""
    if not isinstance(value, bool):
        raise fail(key, "true or false", value)
    return value


def abs_path(key: str, value: Any) -> Path:
    """An absolute path (``~`` expanded); a relative one would depend on the service's cwd."""
    text = string(key, value)
    if not text:
        raise fail(key, "a path", value)
    path = Path(os.path.expanduser(text))
    if not path.is_absolute():
        raise fail(key, "an absolute path (or one starting with ~)", value)
    return path


def table(key: str, value: Any, allowed: set[str]) -> Mapping[str, Any]:
    """A TOML table whose keys are all in ``allowed``; an unknown key is an error listing the known ones."""
    if not isinstance(value, dict):
        raise fail(key, "a table", value)
    for name in value:
        if name not in allowed:
            known = ", ".join(sorted(allowed))
            full = f"{key}.{name}" if key else name
            where = f"[{key}]" if key else "the top level"
            raise ConfigError(f"{full}: unknown key (known keys of {where}: {known})", key=full)
    return value


def keys(cls: type) -> set[str]:
    """The TOML keys of a config dataclass: its field names."""
    return {f.name for f in fields(cls)}


def gpu(key: str, value: Any) -> str | float:
    """``"off"``, ``"max"``, or a ratio from 0.0 to 1.0 as a float."""
    if value in ("off", "max") and isinstance(value, str):
        return value
    if not finite(value) or not 0 <= value <= 1:
        raise fail(key, '"off", "max" or a number from 0.0 to 1.0', value)
    return float(value)


def listen_address(value: str) -> tuple[str, int] | None:
    """``"127.0.0.1:1235"`` -> ``("127.0.0.1", 1235)``, ``"[::1]:0"`` -> ``("::1", 0)``,
    ``"localhost:9464"`` -> ``("localhost", 9464)``; None for ``""`` or anything else (no
    port, a port outside 0..65535, a host that is not an IP address or localhost). Port 0:
    the system picks a free one."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        return None
    address = server_address(host)
    return None if address is None else (address, int(port))


def is_loopback(host: str) -> bool:
    """Whether a :func:`listen_address` host is reachable from this machine only."""
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def gpu_require(key: str, value: Any) -> str | bool:
    """``"auto"``, ``true`` or ``false`` (``[gpu] require``)."""
    if isinstance(value, bool):
        return value
    if value == "auto":
        return "auto"
    raise fail(key, '"auto", true or false', value)


def listen(key: str, value: Any, loopback_only: bool = False) -> str:
    """A ``"host:port"`` to listen on (:func:`listen_address`), or ``""`` for off; with
    ``loopback_only`` a host other machines can reach is refused."""
    text = string(key, value)
    if not text:
        return text
    address = listen_address(text)
    if address is None:
        raise fail(key, 'an address and port such as "127.0.0.1:0" or "[::1]:8080" ("" for off)', value)
    if loopback_only and not is_loopback(address[0]):
        raise fail(key, "a loopback address (127.0.0.1, ::1 or localhost): it serves this machine only", value)
    return text


def http_url(key: str, value: Any) -> str:
    """An ``http://`` or ``https://`` URL with a host."""
    text = string(key, value).strip()
    try:
        parts = urlsplit(text)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(key, "an http:// or https:// URL", value)
    return text
