"""ruff and mypy are part of the test suite, so the README's one test command checks them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_clean() -> None:
    """ruff finds nothing in the package, the tests or the benchmarks."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "lmsupervisor", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_clean() -> None:
    """`ruff format --check` would change nothing: the code is in the one house format."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "lmsupervisor", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    """mypy --strict (configured in pyproject.toml) finds nothing in the package, the tests or the benchmarks."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
