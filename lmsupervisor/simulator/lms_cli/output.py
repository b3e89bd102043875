"""Where the simulated `lms` writes (facts §3: logger text on stderr, JSON and tables on stdout) and how it fails."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


def err(line: str) -> None:
    """Write ``line`` to stderr, where lms's logger writes (facts §3).

    Info is unprefixed; the ``W `` and ``Error: `` prefixes are part of ``line``."""
    sys.stderr.write(line + "\n")


def out(line: str) -> None:
    """Write ``line`` to stdout, where lms writes JSON, the ``ls``/``ps`` tables and ``lms status`` (facts §3)."""
    sys.stdout.write(line + "\n")


SPINNER_END = "\n\x1b[K\x1b[?25h"  # the spinner's last line cleared, the cursor shown again, no newline


def out_json(value: Any) -> None:
    """JSON on stdout, compact as JavaScript's ``JSON.stringify`` writes it."""
    out(json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def fail(line: str, code: int = 1) -> NoReturn:
    """Print ``line`` on stderr and end the command with exit ``code`` (default 1), as an lms error does (facts §3).

    Raises the private ``_Exit``, which :func:`main` turns into the exit code.
    """
    err(line)
    raise _Exit(code)
