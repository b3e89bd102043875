"""Fixtures of the integration tests: a short socket folder and real `lmsupervisor run` processes."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_run import BASE_CONFIG, TWO_MODELS, Running


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short folder for sockets (AF_UNIX paths are limited to about 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lmsv", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def start(short_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    runs: list[Running] = []

    def start_run(
        sim: SimInstall, extra: str = TWO_MODELS, base: str = BASE_CONFIG, env: dict[str, str] | None = None
    ) -> Running:
        config = tmp_path / f"config{len(runs)}.toml"
        config.write_text(base + extra)
        run = Running(sim, short_dir / "status.sock", config, env)
        runs.append(run)
        return run

    yield start_run
    for run in runs:
        run.stop()
