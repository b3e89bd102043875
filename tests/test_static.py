"""ruff and mypy are part of the test suite, so the README's one test command checks them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUSY_SHARE

ROOT = Path(__file__).resolve().parent.parent
# Seconds each tool may take: its CPU need on an idle machine (mypy's cold run, no .mypy_cache as
# in a fresh clone: ~20 s; ruff: ~1 s) at the share of a core a test can count on while the suite
# runs (tests/conftest.py). The test's own timeout is the tool's plus a margin, so that the
# tool's timeout, with its message, fires first.
RUFF_TIMEOUT, MYPY_TIMEOUT, MARGIN = 1.0 / BUSY_SHARE, 20.0 / BUSY_SHARE, 30


@pytest.mark.timeout(RUFF_TIMEOUT + MARGIN)
def test_ruff_clean() -> None:
    """ruff finds nothing in the package, the tests or the benchmarks."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "lmsupervisor", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUFF_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(RUFF_TIMEOUT + MARGIN)
def test_ruff_format_clean() -> None:
    """`ruff format --check` would change nothing: the code is in the one house format."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "lmsupervisor", "tests", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUFF_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(MYPY_TIMEOUT + MARGIN)
def test_mypy_strict_clean() -> None:
    """mypy --strict (configured in pyproject.toml) finds nothing in the package, the tests or the benchmarks."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=MYPY_TIMEOUT, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
