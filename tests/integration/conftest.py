"""Fixtures of the integration tests: a short socket folder and real `lmsupervisor run` processes."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lmsupervisor.simulator.home import SimInstall
from tests.integration.test_nativehost import Browser
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


@pytest.fixture
def native_host(short_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Browser]]:
    """Factory: a real `lmsupervisor native-host --config <file>` process on pipes, as a browser
    starts it, in the simulated install's HOME, without ``LM_API_TOKEN``; the status socket is
    in ``short_dir`` (no supervisor unless the test starts one). Killed at teardown."""
    opened: list[Browser] = []

    def open_host(sim: SimInstall, config: str = "") -> Browser:
        path = tmp_path / f"host{len(opened)}.toml"
        path.write_text(config, encoding="utf-8")
        env = {**sim.env(), "LMSUPERVISOR_SOCKET": str(short_dir / "status.sock")}
        for var in ("LM_API_TOKEN", "LMSUPERVISOR_CONFIG", "XDG_CONFIG_HOME"):
            env.pop(var, None)
        argv = [sys.executable, "-m", "lmsupervisor", "native-host", "--config", str(path)]
        browser = Browser(argv, env, tmp_path / f"host{len(opened)}.err")
        opened.append(browser)
        return browser

    yield open_host
    for b in opened:
        if b.proc.poll() is None:
            b.proc.kill()
            b.proc.wait(5)
        for pipe in (b.stdin, b.stdout):
            if not pipe.closed:
                pipe.close()
        b.selector.close()
