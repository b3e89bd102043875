"""Where LM Studio's home is, resolved exactly as LM Studio resolves it. Stdlib only.

Source: lmstudio-js ``packages/lms-common-server/src/findLMStudioHome.ts`` (facts sheet §1):

1. the trimmed content of ``realpath(homedir())/.lmstudio-home-pointer``, if it exists;
2. otherwise ``~/.cache/lm-studio`` if that folder exists (the pre-2024-12 default);
3. otherwise ``~/.lmstudio``.

LM Studio writes the pointer file in cases 2 and 3; lmsupervisor only reads, so
:func:`resolve_home` never writes. The simulator calls :func:`write_pointer` itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

POINTER_FILE = ".lmstudio-home-pointer"
LEGACY_HOME = Path(".cache") / "lm-studio"
DEFAULT_HOME = Path(".lmstudio")


@dataclass(frozen=True)
class HomeResolution:
    """The resolved LM Studio home.

    ``source`` is ``"pointer"``, ``"legacy"`` (``~/.cache/lm-studio``) or ``"default"``.
    ``pointer_error`` is set when a pointer file exists but cannot be read or is empty;
    resolution then falls through to the next rule, as LM Studio's would fail loudly.
    """

    home: Path
    source: str
    pointer_error: str | None = None


def resolve_home(user_home: Path) -> HomeResolution:
    """Resolve LM Studio's home for the user whose home folder is ``user_home``."""
    real_home = Path(os.path.realpath(user_home))
    pointer = real_home / POINTER_FILE
    pointer_error = None
    try:
        text = pointer.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        text = ""
        pointer_error = f"{pointer}: cannot read ({exc.__class__.__name__}: {exc})"
    else:
        if not text:
            pointer_error = f"{pointer}: the file is empty"
    if text:
        return HomeResolution(Path(text), "pointer")
    legacy = user_home / LEGACY_HOME
    if legacy.is_dir():
        return HomeResolution(legacy, "legacy", pointer_error)
    return HomeResolution(user_home / DEFAULT_HOME, "default", pointer_error)


def write_pointer(user_home: Path, home: Path) -> None:
    """Write the pointer file as LM Studio does after resolving a home (simulator only)."""
    (Path(os.path.realpath(user_home)) / POINTER_FILE).write_text(str(home), encoding="utf-8")
