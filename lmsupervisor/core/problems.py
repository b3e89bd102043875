"""A problem: something wrong with the user's machine, with the fix. Pure data.

Problems are reported (``doctor``, ``GET /v1/status`` ``problems``), never raised: a
missing or corrupt LM Studio file is a problem, not a crash.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Problem:
    """``code`` is stable (tools match on it); ``severity`` is ``"error"`` or ``"warning"``."""

    code: str
    message: str
    fix: str
    severity: str = "error"

    def to_json(self) -> dict[str, Any]:
        """``{"code", "message", "fix", "severity"}``, as in the status ``problems`` list (design §5)."""
        return asdict(self)
