"""structlog setup: JSON lines when not on a terminal (journald, launchd), console on a TTY."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import structlog

# Listeners of every log event that passes the level (the dashboard's ring of recent events):
# each gets a copy of the event dict before it is rendered; one that raises is ignored.
TAPS: list[Callable[[dict[str, Any]], None]] = []


def _tap(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for tap in TAPS:
        with contextlib.suppress(Exception):
            tap(dict(event))
    return event


def configure(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for ``level`` (debug|info|warning|error) and ``fmt``
    (auto|json|console); events go to ``stream`` (default stderr)."""
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    renderer: structlog.typing.Processor
    if fmt == "json" or (fmt == "auto" and not tty):
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=tty)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _tap,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
