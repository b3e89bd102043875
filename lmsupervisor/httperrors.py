"""httpx's errors, translated where they enter: the one place that words a request that got
no answer, to LM Studio's server or to a notification receiver (style.md: httpx's
``map_httpcore_exceptions``).

:func:`map_http_errors` turns httpx's errors, and the ``TimeoutError`` of an overall
``asyncio`` deadline, into three kinds, in the same words for every caller:

- no answer in time (``httpx.TimeoutException``, ``TimeoutError``):
  ``no answer from <where> within <seconds> s``, raised ``from None``;
- no connection (``httpx.ConnectError``: refused, unreachable):
  ``cannot connect to <where>: <reason>``, raised ``from`` httpx's error;
- any other ``httpx.HTTPError`` (the connection broke, a protocol error):
  ``<where>: <ExceptionClass>: <detail>``, raised ``from`` httpx's error.

Each caller names its exception for each kind (:class:`ErrorKinds`): :data:`REST` for the
REST v1 client, :data:`PROBE` for the prober; the native host's chat has its own codes,
notifications their ``NotifyError``.
An error LM Studio *answers* (a status, an error body) is the caller's to word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from lmsupervisor.errors import ProbeError, RestConnectError, RestError, RestTimeoutError


@dataclass(frozen=True)
class ErrorKinds:
    """The exception a caller raises for each kind of unanswered request, built from the message."""

    no_answer: Callable[[str], Exception]  # no answer in time
    no_connection: Callable[[str], Exception]  # refused, unreachable
    broken: Callable[[str], Exception]  # any other httpx error: the connection broke, a protocol error


REST = ErrorKinds(RestTimeoutError, RestConnectError, RestError)
PROBE = ErrorKinds(ProbeError, ProbeError, ProbeError)


def no_answer(where: str, seconds: float) -> str:
    """The words for a request to ``where`` (a URL, or what was asked) unanswered after
    ``seconds``, whichever deadline fired: httpx's, ``asyncio``'s or the clock's."""
    return f"no answer from {where} within {seconds:g} s"


@contextmanager
def map_http_errors(where: str, seconds: float, kinds: ErrorKinds) -> Iterator[None]:
    """Translate httpx's errors (and ``TimeoutError``) raised in the block into ``kinds``'
    exceptions, worded as the module docstring says; ``where`` names the request (its URL),
    ``seconds`` its deadline. Everything else passes through unchanged."""
    try:
        yield
    except (TimeoutError, httpx.TimeoutException):
        raise kinds.no_answer(no_answer(where, seconds)) from None
    except httpx.ConnectError as exc:
        raise kinds.no_connection(f"cannot connect to {where}: {str(exc) or 'connection refused'}") from exc
    except httpx.HTTPError as exc:
        raise kinds.broken(f"{where}: {exc.__class__.__name__}: {exc}") from exc


def unanswered(exc: BaseException) -> bool:
    """Whether ``exc`` is :func:`map_http_errors`' translation of a request that got no HTTP
    answer at all (any kind), rather than an error about an answer that came."""
    return isinstance(exc.__cause__ or exc.__context__, TimeoutError | httpx.HTTPError)
