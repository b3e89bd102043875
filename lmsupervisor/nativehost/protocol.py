"""The native-messaging wire: framing, answers, and the checks every request passes.

Wire format (Chrome "Native messaging protocol", MDN "Native messaging"): each message is
UTF-8 JSON preceded by its length as a 32-bit unsigned integer in native byte order.
Limits, from the same documents and the browsers' sources:

- host -> browser: at most 1 MiB (Chromium ``kMaximumNativeMessageSize``, Firefox
  ``MAX_READ = 1024 * 1024``); a larger answer would make the browser drop the
  connection, so it is replaced by an error answer (:data:`MAX_OUTGOING`).
- browser -> host: Chrome sends at most 64 MiB (its documented limit; Firefox allows up
  to 4 GiB). Anything larger is read, discarded and answered with an error, and the loop
  goes on (:data:`MAX_INCOMING`).

Requests are JSON objects with ``"action"``; an ``"id"`` (an integer, or a string of at
most :data:`MAX_ID_BYTES` bytes of UTF-8) is echoed in every answer to it; an id that
cannot be echoed (longer, or holding a lone UTF-16 surrogate, which has no UTF-8 form)
gets a ``bad_request`` answer without it. A ``"timeout"`` is seconds in (0,
:data:`MAX_TIMEOUT`]; anything else is ``bad_request``. So is JSON nested deeper than
Python's reader goes, and, in what is sent on to LM Studio, a NaN or an infinity, or a
string with a lone surrogate: the answer names the place (``settings.temperature``).
Answers: ``{"status": "success", "payload": {...}}`` or ``{"status": "error", "error":
"...", "code": "..."}``.

Pure: no asyncio, no httpx; :func:`read_frame` reads the stream it is given.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

from lmsupervisor.config import finite
from lmsupervisor.errors import NativeHostError, OversizedFrameError, TruncatedFrameError

MAX_OUTGOING = 1024 * 1024  # bytes of JSON, host -> browser (Chrome and Firefox)
MAX_INCOMING = 64 * 1024 * 1024  # bytes of JSON, browser -> host (Chrome's documented maximum)
HEADER = struct.Struct("=I")  # 32-bit unsigned, native byte order, no padding
MAX_ID_BYTES = 64 * 1024  # bytes of UTF-8: a longer "id" is refused, never echoed (it would crowd out the answer)
MAX_TIMEOUT = 3600.0  # seconds: the largest "timeout" a request may ask (as server.start_timeout)
SHOWN_CHARS = 40  # characters of a refused value's JSON quoted in an error answer


# -- framing ------------------------------------------------------------------------
def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: BinaryIO, limit: int = MAX_INCOMING) -> bytes | None:
    """Read one message body from ``stream`` (blocking); None when it ended cleanly.

    Raises :class:`TruncatedFrameError` if it ends inside a frame and
    :class:`OversizedFrameError` for a body over ``limit`` bytes (after discarding it,
    in 64 KiB pieces, so the next frame is read from the right place).
    """
    head = _read_exactly(stream, HEADER.size)
    if not head:
        return None
    if len(head) < HEADER.size:
        raise TruncatedFrameError(f"stdin ended inside a length prefix ({len(head)} of {HEADER.size} bytes)")
    (length,) = HEADER.unpack(head)
    if length > limit:
        left = length
        while left:
            chunk = stream.read(min(left, 65536))
            if not chunk:
                raise TruncatedFrameError(f"stdin ended inside an oversized message of {length} bytes")
            left -= len(chunk)
        raise OversizedFrameError(
            f"message of {length} bytes refused: browsers send at most {limit} bytes", code="too_large"
        )
    body = _read_exactly(stream, length)
    if len(body) < length:
        raise TruncatedFrameError(f"stdin ended inside a message ({len(body)} of {length} bytes)")
    return body


def _utf8(text: str) -> bytes:
    """``text`` as UTF-8, each lone UTF-16 surrogate (legal in JSON text and in Python
    strings, not in UTF-8) replaced by U+FFFD; a surrogate pair becomes its character."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")


def encode_frame(message: Mapping[str, Any], limit: int = MAX_OUTGOING) -> bytes:
    """Length prefix + UTF-8 JSON; never raises for text (lone surrogates become U+FFFD).
    Raises ValueError for NaN or an infinity (no JSON a browser parses) and TypeError for
    a value JSON cannot hold: :func:`lmsupervisor.nativehost.host.serve` answers an internal error instead.

    An answer over ``limit`` bytes (the browsers' 1 MiB) is replaced by a ``too_large``
    error answer saying so, so the browser never drops the connection. That answer
    echoes the request's ``id`` only if it still fits within ``limit``; otherwise the id
    is dropped and the error says so.
    """
    body = _utf8(json.dumps(message, ensure_ascii=False, allow_nan=False, separators=(",", ":")))
    if len(body) <= limit:
        return HEADER.pack(len(body)) + body
    small: dict[str, Any] = {
        "status": "error",
        "error": f"the answer is {len(body)} bytes, over the {limit} bytes a browser accepts from a native host"
        + ("; ask with settings.stream = true" if message.get("status") == "success" else ""),
        "code": "too_large",
    }
    plain = _utf8(json.dumps(small, ensure_ascii=False, separators=(",", ":")))
    if "id" in message:
        with_id = _utf8(json.dumps({**small, "id": message["id"]}, ensure_ascii=False, separators=(",", ":")))
        if len(with_id) <= limit:
            return HEADER.pack(len(with_id)) + with_id
        small["error"] += "; the request's id was dropped: echoed, it would make this answer too large as well"
        plain = _utf8(json.dumps(small, ensure_ascii=False, separators=(",", ":")))
    return HEADER.pack(len(plain)) + plain


def success(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A success answer: ``{"status": "success", "payload": {...}}`` (a copy of ``payload``)."""
    return {"status": "success", "payload": dict(payload)}


def failure(message: str, code: str = "internal") -> dict[str, Any]:
    """An error answer: ``{"status": "error", "error": message, "code": code}`` (codes: :class:`NativeHostError`)."""
    return {"status": "error", "error": message, "code": code}


# -- requests ---------------------------------------------------------------------------
def echo_id(value: Any) -> str | int | None:
    """The ``id`` to echo: a string or an integer (not a bool); None for anything else.

    Raises :class:`NativeHostError` (``bad_request``, the id not echoed) for an id that
    cannot be echoed: a string with a lone UTF-16 surrogate (``"\\ud800"`` is legal JSON
    text but has no UTF-8 form), or longer than :data:`MAX_ID_BYTES` bytes of UTF-8 (its
    echo would crowd the answer out of the browser's 1 MiB).
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    if isinstance(value, int):
        return value
    size = len(_encoded("id", value, "; use an integer or a plain string id (this answer carries none)"))
    if size > MAX_ID_BYTES:
        raise NativeHostError(
            f"id: expected at most {MAX_ID_BYTES} bytes, got {size}; use an integer or a short string id "
            "(this answer carries none)"
        )
    return value


def _encoded(path: str, text: str, advice: str = "") -> bytes:
    """``text`` as UTF-8. Raises :class:`NativeHostError` (``bad_request``) naming ``path``
    for a string holding a lone UTF-16 surrogate (``"\\ud800"`` is legal JSON text, but has
    no UTF-8 form, so it can neither be echoed nor sent on); ``advice`` ends the message."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NativeHostError(
            f"{path}: expected text, got a string with a lone UTF-16 surrogate (U+{ord(text[exc.start]):04X} at "
            f"character {exc.start}), which has no UTF-8 form{advice}"
        ) from None


def json_bytes(value: Any) -> bytes:
    """``value`` as compact UTF-8 JSON, the body LM Studio is sent (as httpx 0.28+ writes
    ``json=``; written here so every httpx writes it alike, and once). Raises ValueError for
    NaN or an infinity, UnicodeEncodeError (a ValueError) for a lone UTF-16 surrogate,
    RecursionError for nesting deeper than the writer goes."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def check_sendable(parts: Mapping[str, Any]) -> None:
    """Refuse request values that cannot be sent on to LM Studio as JSON: raises
    :class:`NativeHostError` (``bad_request``) naming the first offending place
    (``settings.temperature``, ``messages[0].content``): NaN or an infinity (Python's JSON
    reader takes ``NaN``, ``Infinity`` and ``1e999``; no JSON writer may send them), a
    string or object key with a lone UTF-16 surrogate (:func:`_encoded`), or nesting too
    deep for the writer (JSON the reader took can be that deep). ``parts`` maps each
    part's name to its value. The writer tries first, so a sound request costs one
    C-speed pass; only a refused one is walked to find the place."""
    try:
        json_bytes(parts)
    except RecursionError:
        raise NativeHostError(f"{' or '.join(parts)}: nested too deeply to be sent on as JSON") from None
    except ValueError as exc:
        for name, value in parts.items():
            _name_unsendable(name, value)
        raise NativeHostError(f"{' or '.join(parts)}: cannot be sent on as JSON ({exc})") from None


def _name_unsendable(path: str, value: Any) -> None:
    """Raise :class:`NativeHostError` for the first value under ``path`` that has no JSON
    form (see :func:`check_sendable`). Depth first over iterators: memory grows with the
    depth, not the size, and a place's name is spelled out only when it is refused."""
    names = [path]  # the name of each level down to the current item: "messages", "[0]", ".content"
    levels: list[Iterator[tuple[str, Any]]] = []
    item = value
    while True:
        if isinstance(item, float) and not finite(item):
            raise NativeHostError(
                f"{''.join(names)}: expected a finite number, got {json.dumps(item)}, which JSON cannot carry"
            )
        if isinstance(item, str):
            _encoded("".join(names), item)
        elif isinstance(item, dict | list):
            levels.append(_members(names, item))
            names.append("")
        while levels:  # the next item: the current level's next member, else the parent's
            member = next(levels[-1], None)
            if member is not None:
                names[-1], item = member
                break
            levels.pop()
            names.pop()
        else:
            return


def _members(names: list[str], item: dict[str, Any] | list[Any]) -> Iterator[tuple[str, Any]]:
    """``(".key", value)`` for an object (each key checked as text, named after ``names``
    as they are when it is reached), ``("[i]", value)`` for an array."""
    if isinstance(item, list):
        yield from ((f"[{i}]", v) for i, v in enumerate(item))
        return
    for key, v in item.items():
        _encoded(f"{''.join(names[:-1])} (a key)", key)
        yield f".{key}", v


def with_id(answer: dict[str, Any], request_id: Any) -> dict[str, Any]:
    """``answer`` echoing ``request_id`` (from :func:`echo_id`); ``answer`` itself when that is None."""
    return answer if request_id is None else {**answer, "id": request_id}


def read_seconds(msg: Mapping[str, Any], key: str, default: float) -> float:
    """``msg[key]`` (else ``default``) as seconds in (0, :data:`MAX_TIMEOUT`]; raises
    :class:`NativeHostError` (``bad_request``) naming ``key`` and the range for anything
    else: not a number, a bool, NaN, an infinity, zero, negative or larger (an integer of
    any size, ``10**400`` too, is compared as an integer: :func:`lmsupervisor.config.finite`)."""
    value = msg.get(key, default)
    if not finite(value) or not 0 < value <= MAX_TIMEOUT:
        shown = json.dumps(value)
        shown = shown if len(shown) <= SHOWN_CHARS else f"{shown[:SHOWN_CHARS]}... ({len(shown)} characters)"
        raise NativeHostError(f"{key}: expected seconds > 0 and <= {MAX_TIMEOUT:g}, got {shown}")
    return float(value)
